//! The control plane end to end: hosts that run no agent of ours joining the overlay, a
//! legacy host's kernel vxlan device (`peer add`) and the node's own host (`host join`).
use std::net::Ipv4Addr;

use overlay_tests::{
    deployment::{Deployment, ping},
    scenario::blue,
};

#[test]
fn a_legacy_host_joined_with_peer_add_talks_to_our_containers_both_ways() {
    let mut d = Deployment::new("aclegacy", &[true, false]).unwrap();
    blue(&d);
    let ours = d.add_container(0, "l1", "blue", None).unwrap();
    // The legacy host, set up by hand as the seed recipe does, with the host itself on the
    // overlay at 10.10.200.1, then `peer add`.
    d.join_legacy_host(1, "blue", ours.1).unwrap();
    assert!(
        ping(d.container(ours.0), Ipv4Addr::new(10, 10, 200, 1)),
        "ours -> legacy"
    );
    assert!(
        d.hosts[1]
            .ns
            .output(&format!("ping -c 1 -W 1 {}", ours.1))
            .unwrap()
            .status
            .success(),
        "legacy -> ours"
    );
    let out = d.cli(0, &["endpoint", "ls"]).unwrap();
    assert!(out.contains("peer") && out.contains("10.0.0.2"), "{out}");
    d.leave_legacy_host(1, "blue").unwrap();
}

#[test]
fn the_host_joins_a_network_and_reaches_containers_on_every_node() {
    let mut d = Deployment::new("achost", &[true, true]).unwrap();
    blue(&d);
    let c2 = d.add_container(1, "j2", "blue", None).unwrap();
    let c1 = d.add_container(0, "j1", "blue", None).unwrap();
    let out = d.cli(0, &["host", "join", "--network", "blue"]).unwrap();
    let host_ip: Ipv4Addr = out.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(
        d.hosts[0]
            .ns
            .output(&format!("ping -c 1 -W 1 {}", c2.1))
            .unwrap()
            .status
            .success()
    );
    assert!(
        d.hosts[0]
            .ns
            .output(&format!("ping -c 1 -W 1 {}", c1.1))
            .unwrap()
            .status
            .success()
    );
    assert!(ping(d.container(c2.0), host_ip));
    d.cli(0, &["host", "leave", "--network", "blue"]).unwrap();
    assert!(!ping(d.container(c2.0), host_ip));
}
