//! A legacy host (a kernel vxlan device joined with `peer add`) resolves our container's
//! address by ARP across the tunnel, with no static neighbour entry: its request reaches the
//! container through its all-zeros FDB entry (head-end replication), and the container's reply,
//! which is not IP and cannot be wrapped by `bpf_skb_adjust_room`, goes back through the GRO
//! helper device with a tunnel key (issue 31, the kernel's vxlan_bridge_1d.sh `ping_ipv4`). On
//! the default port and on flannel's 8472.
use std::time::Duration;

use overlay_tests::{
    deployment::{Deployment, LEGACY_IP, ping, wait_for},
    topology::Underlay,
};

fn ten_pings_from_the_legacy_host(port: u16) {
    let tag = format!("lgn{port}");
    let mut d = Deployment::on(&tag, &[true, false], Underlay::Veth).unwrap();
    let port_s = port.to_string();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--port", &port_s])
        .unwrap();
    let ours = d.add_container(0, "a1", "blue", None).unwrap();
    d.join_legacy_host_on(1, "blue", ours.1, port).unwrap();
    let legacy = &d.hosts[1].ns;
    let neighbours = legacy.output("ip neigh show dev vxlan0").unwrap();
    assert!(
        String::from_utf8_lossy(&neighbours.stdout)
            .trim()
            .is_empty(),
        "the recipe adds no neighbour entry: {}",
        String::from_utf8_lossy(&neighbours.stdout)
    );
    let out = legacy
        .output(&format!("ping -c 10 -i 0.2 -W 2 {}", ours.1))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10 packets transmitted, 10 received"),
        "legacy host -> our container over port {port}:\n{text}"
    );
    // What it learnt, it learnt by ARP.
    let neighbours = legacy.output("ip neigh show dev vxlan0").unwrap();
    let neighbours = String::from_utf8_lossy(&neighbours.stdout);
    assert!(
        neighbours.contains(&ours.1.to_string()) && !neighbours.contains("PERMANENT"),
        "{neighbours}"
    );
    // And the other way: the container's ARP is answered on its own host, from the map.
    wait_for(Duration::from_secs(3), || {
        ping(d.container(ours.0), LEGACY_IP)
    })
    .unwrap();
}

#[test]
fn a_legacy_host_resolves_our_container_by_arp_on_port_4789() {
    ten_pings_from_the_legacy_host(4789);
}

#[test]
fn a_legacy_host_resolves_our_container_by_arp_on_port_8472() {
    ten_pings_from_the_legacy_host(8472);
}
