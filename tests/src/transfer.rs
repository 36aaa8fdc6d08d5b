//! Checksummed TCP transfers between namespaces (tests/scripts/transfer.py): what arrives must be
//! byte for byte what was sent, whatever the path merged, re-segmented or rewrote on the way.
use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/transfer.py");

/// Sends `mib` MiB from `from` to `to_ip`:`port` (a listener started in `to`); Ok if the
/// receiver got exactly the sender's bytes. Bounded: 60 s at most.
pub fn exact(
    from: &Netns,
    to: &Netns,
    to_ip: impl Into<IpAddr>,
    port: u16,
    mib: u32,
) -> Result<()> {
    let (to_ip, port) = (to_ip.into().to_string(), port.to_string());
    compare(
        from,
        to,
        &["recv", &port],
        &["send", &to_ip, &port, &mib.to_string(), "7"],
    )
}

/// Sends one UDP datagram of each of `sizes` bytes from `from` to `to_ip`:`port`, without DF
/// (IP_PMTUDISC_DONT); Ok if all arrived, byte for byte, in order.
pub fn datagrams(
    from: &Netns,
    to: &Netns,
    to_ip: impl Into<IpAddr>,
    port: u16,
    sizes: &[usize],
) -> Result<()> {
    let (to_ip, port) = (to_ip.into().to_string(), port.to_string());
    let count = sizes.len().to_string();
    let mut send = vec!["udp-send", &to_ip, &port, "7"];
    let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    send.extend(sizes.iter().map(String::as_str));
    compare(from, to, &["udp-recv", &port, &count], &send)
}

/// Runs transfer.py with `recv` in `to` until it listens, then with `send` in `from`; Ok if both
/// printed the same length and digest.
fn compare(from: &Netns, to: &Netns, recv: &[&str], send: &[&str]) -> Result<()> {
    let script = |ns: &Netns| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            "60",
            "/usr/bin/python3",
            SCRIPT,
        ]);
        c
    };
    let mut receiver = script(to)
        .args(recv)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the receiver")?;
    let mut lines = BufReader::new(receiver.stdout.take().expect("piped")).lines();
    match lines.next() {
        Some(Ok(l)) if l == "listening" => {}
        other => {
            stop(&mut receiver);
            bail!("the receiver did not start: {other:?}");
        }
    }
    let sender = match script(from).args(send).output() {
        Ok(out) => out,
        Err(e) => {
            stop(&mut receiver);
            return Err(e).context("running the sender");
        }
    };
    let received = lines.next().transpose()?.unwrap_or_default();
    let _ = receiver.wait();
    let sent = String::from_utf8_lossy(&sender.stdout).trim().to_string();
    if !sender.status.success() || sent.is_empty() {
        bail!(
            "the sender failed ({}): {}",
            sender.status,
            String::from_utf8_lossy(&sender.stderr)
        );
    }
    if sent != received.trim() {
        bail!("sent {sent}, received {received:?}");
    }
    Ok(())
}

/// Ends a process started as `timeout ...`: SIGTERM, which `timeout` passes on to its child
/// (SIGKILL would end `timeout` alone and leave the child running).
fn stop(child: &mut std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
