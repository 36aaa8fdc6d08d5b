//! Network namespaces as test hosts and containers, made with iproute2 like a user would.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// A named network namespace (`ip netns add`), deleted on drop with everything inside it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&format!("ip netns add {name}"))?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.run("ip link set lo up")?;
        Ok(ns)
    }

    /// Runs a shell command inside the namespace; fails with its output if it fails.
    pub fn run(&self, cmd: &str) -> Result<String> {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }

    /// `program` to be run inside the namespace (`ip netns exec`), for the caller to add
    /// arguments and spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// tcpdump of what arrives at the namespace's eth0 matching `filter`, until
    /// [`captured`] stops it.
    pub fn capture(&self, filter: &str) -> Result<Child> {
        self.capture_on("eth0", filter)
    }

    /// The same on interface `iface`.
    pub fn capture_on(&self, iface: &str, filter: &str) -> Result<Child> {
        self.command("tcpdump")
            .args(["-i", iface, "-Q", "in", "-n", "-l", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting tcpdump in {}", self.name))
    }

    /// Runs a shell command inside the namespace and returns its raw output, success or not.
    pub fn output(&self, cmd: &str) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .with_context(|| format!("running {cmd:?} in {}", self.name))
    }

    /// Sends raw Ethernet frames out of `iface` with a packet socket, exactly as given: what a
    /// peer (or a misbehaving one) puts on the wire, frames BPF_PROG_TEST_RUN would refuse
    /// included.
    pub fn inject(&self, iface: &str, frames: &[Vec<u8>]) -> Result<()> {
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
                      s.bind((sys.argv[1], 0))\n\
                      for f in sys.argv[2:]: s.send(bytes.fromhex(f))";
        let out = self.output(&format!("python3 -c '{script}' {iface} {}", hex.join(" ")))?;
        if !out.status.success() {
            bail!("inject: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace: BPF_PROG_TEST_RUN, FIB lookups and
    /// interface names all resolve in the calling thread's namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        enter(&self.name, f)
    }

    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        let out = self.run(&format!("cat /sys/class/net/{iface}/ifindex"))?;
        out.trim()
            .parse()
            .with_context(|| format!("ifindex of {iface} in {}", self.name))
    }

    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        let out = self.run(&format!("cat /sys/class/net/{iface}/address"))?;
        let mut mac = [0u8; 6];
        for (b, part) in mac.iter_mut().zip(out.trim().split(':')) {
            *b = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        // What `endpoint add` wrote for it (its resolv.conf), which `ip netns del` leaves.
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Runs `f` on a thread that has entered namespace `name` (see [`Netns::enter`]): for threads
/// that cannot borrow the [`Netns`].
pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A tokio runtime whose every thread is made in namespace `name` (threads keep the namespace
/// they were made in): for clients that reach etcd, or anything else, from there.
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    enter(name, || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    })
}

pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops a [`Netns::capture`] (SIGINT, so tcpdump flushes) and returns what it printed.
pub fn captured(mut child: Child) -> String {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}
