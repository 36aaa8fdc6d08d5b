//! An IPv6 underlay: every VTEP is an IPv6 address (`run --vtep fd00::N`), the outer headers are
//! IPv6/UDP, and a legacy host with a kernel vxlan device configured by hand over IPv6 joins.
//! tshark decodes what crosses the wire.
use std::{collections::BTreeMap, time::Duration};

use overlay_common::Counter;
use overlay_tests::{
    capture::Capture,
    deployment::{Deployment, LEGACY_IP, ping, wait_for},
    topology::Underlay,
    transfer,
};

type Counters = BTreeMap<&'static str, u64>;

fn moved(before: &Counters, after: &Counters, c: Counter) -> u64 {
    after[c.name()] - before[c.name()]
}

#[test]
fn two_hosts_and_a_kernel_vxlan_host_exchange_traffic_over_ipv6_vteps() {
    let mut d = Deployment::ipv6_underlay("u6", &[true, true, false], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    wait_for(Duration::from_secs(3), || ping(d.container(a1.0), a2.1)).unwrap();
    assert!(ping(d.container(a2.0), a1.1), "a2 -> a1");
    // Frames shorter than an IPv6 header behind the outer Ethernet header once unwrapped (a
    // 42-byte echo, as iperf3's opening UDP datagram is): the kernel's shrink alone refuses
    // them, both ways, over a veth that keeps the sender's encapsulation state.
    for (from, to) in [(a1.0, a2.1), (a2.0, a1.1)] {
        d.container(from)
            .run(&format!("ping -c 2 -i 0.2 -s 0 -W 1 {to}"))
            .unwrap_or_else(|e| panic!("a 42-byte echo to {to}: {e}"));
    }

    // The tunnel leaves room for the 40-byte outer IPv6 header.
    let mtu = d
        .container(a1.0)
        .run("cat /sys/class/net/eth0/mtu")
        .unwrap();
    assert_eq!(
        mtu.trim(),
        "1430",
        "a container's MTU on a 1500 IPv6 underlay"
    );
    let vteps = d.cli(0, &["maps", "vteps"]).unwrap();
    assert!(vteps.contains("fd00::2"), "h1's VTEPS: {vteps}");

    // Exact bytes both ways, in TCP segments as large as veth lets them be (GSO through the
    // IPv6 tunnel), while tshark watches h2's underlay.
    let capture = Capture::start(&d.hosts[1].ns, "eth1", "udp port 4789").unwrap();
    let before: Vec<Counters> = (0..2).map(|h| d.hosts[h].counters().unwrap()).collect();
    transfer::exact(d.container(a1.0), d.container(a2.0), a2.1, 5001, 16).unwrap();
    transfer::exact(d.container(a2.0), d.container(a1.0), a1.1, 5002, 16).unwrap();
    let after: Vec<Counters> = (0..2).map(|h| d.hosts[h].counters().unwrap()).collect();
    for h in 0..2 {
        assert!(
            moved(&before[h], &after[h], Counter::Encap) > 0,
            "h{h} encap"
        );
        assert!(
            moved(&before[h], &after[h], Counter::Decap) > 0,
            "h{h} decap"
        );
        for c in [
            Counter::DropUnknownVtep,
            Counter::DropAdjustFailed,
            Counter::DropKernelVxlan,
            Counter::DropNoRoute,
        ] {
            assert_eq!(moved(&before[h], &after[h], c), 0, "h{h} {}", c.name());
        }
    }
    let rows = capture
        .decode(&[
            "ipv6.src",
            "ipv6.dst",
            "udp.dstport",
            "udp.checksum",
            "vxlan.flags",
            "vxlan.vni",
            "ip.src",
            "ip.dst",
        ])
        .unwrap();
    let (a1_ip, a2_ip) = (a1.1.to_string(), a2.1.to_string());
    let way = |src: &str, dst: &str, inner_src: &str| {
        rows.iter()
            .filter(|r| r[0] == src && r[1] == dst && r[6] == inner_src)
            .count()
    };
    assert!(
        way("fd00::1", "fd00::2", &a1_ip) > 10 && way("fd00::2", "fd00::1", &a2_ip) > 10,
        "both ways in IPv6/UDP/VXLAN: {:?}",
        &rows[..rows.len().min(5)]
    );
    for r in &rows {
        assert_eq!(
            (r[2].as_str(), r[3].as_str(), r[4].as_str(), r[5].as_str()),
            ("4789", "0x0000", "0x0800", "42"),
            "port, zero UDP checksum, I flag alone, VNI: {r:?}"
        );
        // Empty for an inner ARP.
        assert!(
            r[6].is_empty() || r[6] == a1_ip || r[6] == a2_ip,
            "inner source: {r:?}"
        );
    }

    // A legacy host: a kernel vxlan device over IPv6 (udp6zerocsumtx/rx), joined with `peer
    // add --vtep fd00::3`. Both ways, by ping and exact TCP.
    d.join_legacy_host(2, "blue", a1.1).unwrap();
    let legacy = &d.hosts[2].ns;
    wait_for(Duration::from_secs(3), || ping(legacy, a1.1)).unwrap();
    assert!(ping(d.container(a1.0), LEGACY_IP), "a1 -> legacy host");
    transfer::exact(legacy, d.container(a1.0), a1.1, 5003, 8).unwrap();
    transfer::exact(d.container(a1.0), legacy, LEGACY_IP, 5004, 8).unwrap();

    // Broadcast over IPv6 both ways. The legacy host's broadcast (the recipe's all-zeros entry
    // sends it to h1) is decapsulated and flooded to h1's bridge.
    let before: Vec<Counters> = (0..2).map(|h| d.hosts[h].counters().unwrap()).collect();
    let _ = legacy.run("ping -b -c 2 -i 0.2 -W 1 10.10.255.255");
    // a1's ARP for an address nobody has goes to every host of the network: a copy to h2 and
    // one to the legacy host, through the GRO helper's tunnel key with IPv6 addresses.
    let _ = d.container(a1.0).run("ping -c 2 -W 1 10.10.99.99");
    let after: Vec<Counters> = (0..2).map(|h| d.hosts[h].counters().unwrap()).collect();
    assert!(
        moved(&before[0], &after[0], Counter::DecapFlood) >= 2,
        "the legacy host's broadcast reached h1's bridge"
    );
    assert!(
        moved(&before[0], &after[0], Counter::FloodCopies) >= 2,
        "a1's ARP copied to h2 and the legacy host"
    );
    assert!(
        moved(&before[1], &after[1], Counter::DecapFlood) >= 1,
        "a1's ARP reached h2"
    );
    // The legacy host's own device decodes what we send: its counters show no errors.
    let stats = legacy.run("ip -s -j link show vxlan0").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let rx = &stats[0]["stats64"]["rx"];
    assert!(rx["packets"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(rx["errors"].as_u64(), Some(0), "{stats}");
}

#[test]
fn a_node_or_peer_of_the_other_family_is_refused_in_one_line() {
    let mut d = Deployment::ipv6_underlay("u6fam", &[true, false], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();

    // An IPv4 VTEP in a cluster of IPv6 ones: the agent stops before it registers.
    d.hosts[1].run_args = vec!["--vtep".into(), "10.0.0.2".into()];
    let out = d
        .base_command(1)
        .args(["run", "--underlay", "eth1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an agent of the other family ran");
    assert!(
        err.contains("10.0.0.2") && err.contains("fd00::1") && err.contains("one family"),
        "{err}"
    );
    let nodes = d.etcd_get_prefix("nodes/").unwrap();
    assert!(!nodes.contains("10.0.0.2"), "registered anyway: {nodes}");

    // A peer of the other family, in one line, and nothing written.
    let out = d
        .cli_output(
            0,
            &[
                "peer",
                "add",
                "--network",
                "blue",
                "--ip",
                "10.10.0.200",
                "--mac",
                "02:00:00:00:00:c8",
                "--vtep",
                "10.0.0.9",
            ],
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not of this cluster's underlay family"),
        "{err}"
    );
    let eps = d.cli(0, &["endpoint", "ls"]).unwrap();
    assert!(!eps.contains("10.10.0.200"), "{eps}");
}

#[test]
fn on_a_wire_the_ipv6_tunnel_is_merged_on_receipt() {
    let mut d =
        Deployment::ipv6_underlay("u6wire", &[true, true], Underlay::Wire { mtu: 1500 }).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    wait_for(Duration::from_secs(3), || ping(d.container(a1.0), a2.1)).unwrap();
    // The GRO helper's socket (a collect_md device listens on IPv6 too) merges the wire's
    // 1500-byte IPv6/UDP/VXLAN packets, zero checksums and all.
    let before = d.hosts[1].counters().unwrap();
    transfer::exact(d.container(a1.0), d.container(a2.0), a2.1, 5001, 32).unwrap();
    let after = d.hosts[1].counters().unwrap();
    let merged = moved(&before, &after, Counter::DecapSegments) as f64
        / moved(&before, &after, Counter::Decap).max(1) as f64;
    assert!(
        merged > 2.0,
        "wire packets per decapsulated skb: {merged:.2}"
    );
    assert_eq!(moved(&before, &after, Counter::DropKernelVxlan), 0);
}
