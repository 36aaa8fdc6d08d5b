//! Issue 25's cross-network injection, end to end: a container of one network sends, with an
//! ordinary UDP socket, VXLAN packets to another node's VTEP through its gateway. Masqueraded
//! to its own node's VTEP, which hosts endpoints of the other network, they would be
//! decapsulated into a container of that network. The dataplane drops them at the sender's
//! port (`drop_tunnel_port`), while the same gateway path still carries UDP to any other port.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    netns::Netns,
    topology::Underlay,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vxlan_inject.py");
const SENT: u32 = 5;

/// A UDP listener on `port` in `ns` for `seconds`; its count comes with [`count`].
fn listen(ns: &Netns, port: u16, seconds: u32) -> Child {
    let mut child = ns
        .command("/usr/bin/python3")
        .args([SCRIPT, "listen", &port.to_string(), &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn count(child: Child) -> u32 {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_container_cannot_inject_into_another_network_through_its_gateway() {
    let mut d = Deployment::on("xnet", &[true, true], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    d.create_network("red", "10.20.0.0/16", 43).unwrap();
    // h1 hosts both networks, so its VTEP is one h2 takes blue's VXLAN from.
    let r1 = d.add_container(0, "r1", "red", None).unwrap();
    let b1 = d.add_container(0, "b1", "blue", None).unwrap();
    let b2 = d.add_container(1, "b2", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[b1.1, b2.1], true).unwrap();
    assert!(ping(d.container(b1.0), b2.1));
    let h2 = Duration::from_secs(5);

    // The path is real: UDP from r1 to h2's underlay address leaves through r1's gateway.
    let probe = listen(&d.hosts[1].ns, 4790, 3);
    let send = |port: u16| {
        let out = d
            .container(r1.0)
            .run(&format!(
                "/usr/bin/python3 {SCRIPT} send 10.0.0.2 {port} 42 {} {} 9999 {SENT}",
                b2.1, b1.1
            ))
            .unwrap();
        assert_eq!(out.trim(), SENT.to_string(), "r1's socket sent them all");
    };
    wait_for(h2, || {
        d.container(r1.0)
            .run("ip route show default")
            .is_ok_and(|r| r.contains("via 10.20.0.1"))
    })
    .unwrap();
    send(4790);
    assert_eq!(
        count(probe),
        SENT,
        "UDP to another port reaches h2 through the gateway"
    );

    // The attack: VXLAN for blue, to h2's VTEP port, with a frame for b2 in it.
    let before = d.hosts[0].counters().unwrap()["drop_tunnel_port"];
    let victim = listen(d.container(b2.0), 9999, 3);
    send(4789);
    assert_eq!(
        count(victim),
        0,
        "no injected datagram reaches the blue container (h2 log:\n{})",
        d.hosts[1].log()
    );
    let dropped = d.hosts[0].counters().unwrap()["drop_tunnel_port"] - before;
    assert_eq!(
        dropped,
        u64::from(SENT),
        "each was dropped at r1's port on h1"
    );
    // The port of a network this node does not serve is guarded too (a legacy host of it
    // would decapsulate from anyone): the agent keeps every network's port in CLUSTER_PORTS.
    d.create_network_with("green", "10.30.0.0/16", 44, &["--port", "8472"])
        .unwrap();
    let guarded = |d: &Deployment| {
        let before = d.hosts[0].counters().unwrap()["drop_tunnel_port"];
        d.container(r1.0)
            .run(&format!(
                "/usr/bin/python3 {SCRIPT} send 10.0.0.2 8472 44 {} {} 9999 1",
                b2.1, b1.1
            ))
            .unwrap();
        d.hosts[0].counters().unwrap()["drop_tunnel_port"] > before
    };
    wait_for(h2, || guarded(&d)).expect("UDP to green's port 8472 dropped on h1");
    // Blue itself is unharmed.
    assert!(ping(d.container(b1.0), b2.1));
}
