//! The cost of multicast replication: one container sends a stream of 64-byte UDP datagrams
//! (iperf 2, which has multicast) to a group with members on N = 1, 2 and 4 other hosts, as
//! fast as it can, on our overlay (head-end replication with IGMP snooping) and on kernel vxlan
//! devices with head-end replication (an all-zeros FDB entry per member host, as a hand-made
//! config does); and on ours the same stream to one unicast destination. Five hosts on a veth
//! underlay, one container each. Counted from each namespace's own UDP counters
//! (/proc/net/snmp), so nothing depends on iperf's reports.
use std::{
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    deployment::{Deployment, wait_for},
    netns::Netns,
    topology::{Underlay, plug_host_on, switch},
};

const GROUP: &str = "239.1.1.1";
const HOSTS: usize = 5;
const SIZES: [usize; 3] = [1, 2, 4];

/// One measurement.
#[derive(Clone, Debug)]
pub struct Row {
    pub mode: &'static str,
    /// `multicast to N hosts` or `unicast to 1 host`.
    pub what: String,
    /// Datagrams per second the sender got out.
    pub sent_kpps: f64,
    /// Datagrams per second each receiving container got, on average.
    pub received_kpps: f64,
}

/// UDP datagrams (in, out) `ns` has counted since it was made.
fn udp_counts(ns: &Netns) -> Result<(u64, u64)> {
    let snmp = ns.run("cat /proc/net/snmp")?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no Udp counters in /proc/net/snmp");
    };
    let field = |name: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no {name}"))?;
        Ok(values.split_whitespace().nth(i).unwrap_or("0").parse()?)
    };
    Ok((field("InDatagrams")?, field("OutDatagrams")?))
}

fn spawn(ns: &Netns, cmd: &str) -> Result<Child> {
    ns.command("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {cmd} in {}", ns.name))
}

/// Servers joined to `GROUP` (or unicast ones) in `receivers`, one stream from `sender` to
/// `dest` for `seconds`; the sender's rate and the receivers' average.
fn measure(
    sender: &Netns,
    receivers: &[&Netns],
    dest: &str,
    join: bool,
    seconds: u32,
    ready: impl Fn() -> bool,
) -> Result<(f64, f64)> {
    let bind = if join {
        format!("-B {GROUP}")
    } else {
        String::new()
    };
    let mut servers = Vec::new();
    for r in receivers {
        servers.push(spawn(
            r,
            &format!("exec taskset -c 1 iperf -s -u {bind} -l 64"),
        )?);
    }
    let waited = wait_for(Duration::from_secs(10), &ready);
    let before: Vec<_> = receivers
        .iter()
        .map(|r| udp_counts(r))
        .collect::<Result<_>>()?;
    let sent_before = udp_counts(sender)?.1;
    let client = sender.output(&format!(
        "taskset -c 0 iperf -c {dest} -u -T 1 -l 64 -b 10G -t {seconds}"
    ));
    let sent = udp_counts(sender)?.1 - sent_before;
    std::thread::sleep(Duration::from_millis(300));
    let after: Vec<_> = receivers
        .iter()
        .map(|r| udp_counts(r))
        .collect::<Result<_>>()?;
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    waited.context("the members were not known in time")?;
    client?;
    let received: u64 = before.iter().zip(&after).map(|(b, a)| a.0 - b.0).sum();
    let secs = f64::from(seconds);
    Ok((
        sent as f64 / secs / 1000.0,
        received as f64 / receivers.len() as f64 / secs / 1000.0,
    ))
}

/// Ours: five hosts with agents, one container each.
pub fn ours(seconds: u32) -> Result<Vec<Row>> {
    let mut d = Deployment::on("repo", &[true; HOSTS], Underlay::Veth)?;
    // No storm limit: a stream to a group with members is never limited anyway, but the
    // unicast row and the groups' IGMP should not meet one either.
    d.create_network_with("bench", "10.10.0.0/16", 42, &["--bum-rate", "0"])?;
    let mut containers = Vec::new();
    for h in 0..HOSTS {
        containers.push(d.add_container(h, &format!("c{h}"), "bench", None)?);
    }
    let sender = d.container(containers[0].0);
    for c in &containers[1..] {
        sender.run(&format!("ping -c 1 -W 2 {}", c.1))?;
    }
    let mut rows = Vec::new();
    for n in SIZES {
        let receivers: Vec<&Netns> = containers[1..=n].iter().map(|c| d.container(c.0)).collect();
        // h1 sends to the group only once it knows all n members' hosts.
        let known = || {
            d.cli(0, &["maps", "groups", "--json"])
                .ok()
                .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                .and_then(|v| {
                    v.as_array()?
                        .iter()
                        .find(|r| r["group"] == GROUP && r["where"] == "remote")
                        .and_then(|r| r["members"].as_str().map(|m| m.split(',').count()))
                })
                == Some(n)
        };
        let (sent, received) = measure(sender, &receivers, GROUP, true, seconds, known)?;
        rows.push(Row {
            mode: "overlay (ours)",
            what: format!("multicast to {n} host(s)"),
            sent_kpps: sent,
            received_kpps: received,
        });
        // The members left with their servers: the next round starts from none.
        wait_for(Duration::from_secs(10), || !known())?;
    }
    let one = d.container(containers[1].0);
    let dest = containers[1].1.to_string();
    let (sent, received) = measure(sender, &[one], &dest, false, seconds, || true)?;
    rows.push(Row {
        mode: "overlay (ours)",
        what: "unicast to 1 host".into(),
        sent_kpps: sent,
        received_kpps: received,
    });
    Ok(rows)
}

/// Kernel vxlan: each host a vxlan device on a bridge with its container; the sender's
/// device has an all-zeros FDB entry per member host (head-end replication, no snooping).
pub fn kernel_vxlan(seconds: u32) -> Result<Vec<Row>> {
    let tag = crate::unique("repk");
    let wire = switch(&format!("{tag}w"))?;
    let mut hosts = Vec::new();
    let mut containers = Vec::new();
    for n in 1..=HOSTS {
        let host = plug_host_on(&wire, &format!("{tag}h{n}"), n, Underlay::Veth)?;
        let c = Netns::new(&format!("{tag}c{n}"))?;
        host.run(&format!(
            "ip link add br0 type bridge && ip link set br0 up && \
             ip link add vxlan0 mtu 1450 type vxlan id 42 dev eth1 local 10.0.0.{n} dstport 4789 nolearning && \
             ip link set vxlan0 master br0 up && \
             ip link add vc mtu 1450 type veth peer name eth0 netns {c} && ip link set vc master br0 up",
            c = c.name
        ))?;
        c.run(&format!(
            "ip link set lo up && ip link set eth0 mtu 1450 up && ip addr add 10.10.0.{n}/16 dev eth0 && \
             ip route add 224.0.0.0/4 dev eth0"
        ))?;
        hosts.push(host);
        containers.push(c);
    }
    let mut rows = Vec::new();
    for n in SIZES {
        for m in 2..=n + 1 {
            hosts[0].run(&format!(
                "bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst 10.0.0.{m}"
            ))?;
        }
        let receivers: Vec<&Netns> = containers[1..=n].iter().collect();
        let (sent, received) = measure(&containers[0], &receivers, GROUP, true, seconds, || true)?;
        rows.push(Row {
            mode: "kernel vxlan",
            what: format!("multicast to {n} host(s)"),
            sent_kpps: sent,
            received_kpps: received,
        });
        for m in 2..=n + 1 {
            let _ = hosts[0].run(&format!(
                "bridge fdb del 00:00:00:00:00:00 dev vxlan0 dst 10.0.0.{m}"
            ));
        }
    }
    drop(containers);
    drop(hosts);
    drop(wire);
    Ok(rows)
}

/// The table: sender rate and per-receiver rate, and ours against kernel vxlan.
pub fn markdown(rows: &[Row]) -> String {
    let mut t = String::from(
        "\n**Multicast replication** (64-byte UDP, iperf 2, veth underlay, five hosts)\n\n\
         | mode | stream | sent (kpps) | received per member (kpps) | received, ours / kernel vxlan |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        let kernel = rows
            .iter()
            .find(|k| k.mode == "kernel vxlan" && k.what == r.what && r.mode != k.mode);
        let ratio = kernel.map_or(String::new(), |k| {
            format!("{:.2}x", r.received_kpps / k.received_kpps.max(0.001))
        });
        t.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {ratio} |\n",
            r.mode, r.what, r.sent_kpps, r.received_kpps
        ));
    }
    t
}
