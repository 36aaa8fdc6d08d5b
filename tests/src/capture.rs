//! A packet capture on a host's interface (tcpdump), decoded afterwards by tshark's own
//! dissectors: what crossed the wire, told by code that is not ours.
use std::{
    io::BufRead as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::netns::Netns;

pub struct Capture {
    child: Child,
    pcap: PathBuf,
}

impl Capture {
    /// Starts capturing `filter` (a pcap filter) on `iface` in `ns`; returns once tcpdump says
    /// it is listening, so nothing sent afterwards is missed.
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pcap =
            std::env::temp_dir().join(format!("overlay-capture-{}-{n}.pcap", std::process::id()));
        let mut child = ns
            .command("tcpdump")
            .args(["-i", iface, "-U", "-w"])
            .arg(&pcap)
            .arg(filter)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        let mut first = String::new();
        std::io::BufReader::new(child.stderr.take().context("tcpdump's stderr")?)
            .read_line(&mut first)?;
        ensure!(first.contains("listening"), "tcpdump: {first}");
        Ok(Self { child, pcap })
    }

    /// Stops the capture and decodes it: one row per packet, the tshark `fields` asked for
    /// (first occurrence of each), with `udp.port==4789` read as VXLAN.
    pub fn decode(mut self, fields: &[&str]) -> Result<Vec<Vec<String>>> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(&self.pcap).args([
            "-d",
            "udp.port==4789,vxlan",
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-E",
            "occurrence=f",
        ]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().context("running tshark")?;
        let _ = std::fs::remove_file(&self.pcap);
        if !out.status.success() {
            bail!("tshark: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect())
    }
}
