//! Whole paths through real namespaces: containers on two hosts talking over our dataplane, and
//! a legacy host running the kernel's own vxlan device talking to ours.
use overlay_common::Counter;
use overlay_tests::{
    capture::Capture,
    topology::{Cluster, Container, VNI, ip_str, mac_str},
};

fn ping(from: &Container, to: &str) {
    let out = from
        .ns
        .output(&format!("ping -c 3 -i 0.2 -W 2 {to}"))
        .unwrap();
    assert!(
        out.status.success(),
        "ping {to} from {} failed:\n{}{}",
        from.ip_str(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a one-shot iperf3 server in `server_ns`, runs a one-second TCP test from `client`
/// against `server` (its address), returns bits per second. iperf3 now and then reports an
/// error of its own in the JSON (a daemonized server not listening yet, say), exit status 0
/// included: that is retried, twice, and shown if it persists.
fn iperf_tcp(
    client: &overlay_tests::netns::Netns,
    server_ns: &overlay_tests::netns::Netns,
    server: &str,
    reverse: bool,
) -> f64 {
    let mut last = String::new();
    // A retry uses another port: a server that never saw its client may still hold the last.
    for port in 5201..5204 {
        server_ns
            .run(&format!("iperf3 -s -D -1 -p {port}"))
            .unwrap();
        let out = client
            .output(&format!(
                "iperf3 -c {server} -p {port} -t 1 -J {}",
                if reverse { "-R" } else { "" }
            ))
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            assert!(out.status.success(), "iperf3 -c {server}: {last}");
            return bps;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("iperf3 -c {server} gave no result three times; the last: {last}");
}

#[test]
fn containers_on_two_hosts_reach_each_other() {
    let cluster = Cluster::overlay(
        "pth",
        &[&[[10, 10, 1, 2], [10, 10, 1, 3]], &[[10, 10, 2, 2]]],
    )
    .unwrap();
    let (h1, h2) = (&cluster.hosts[0], &cluster.hosts[1]);
    let (c1, c3, c2) = (&h1.containers[0], &h1.containers[1], &h2.containers[0]);

    ping(c1, &c2.ip_str());
    ping(c2, &c1.ip_str());
    ping(c1, &c3.ip_str());

    let encaps_before = h1.node().maps().counter(Counter::Encap).unwrap();
    let up = iperf_tcp(&c1.ns, &c2.ns, &c2.ip_str(), false);
    let encaps = h1.node().maps().counter(Counter::Encap).unwrap() - encaps_before;
    // One second of TCP encapsulated as GSO super-packets: far more than one MTU per encap.
    let bytes_per_encap = up / 8.0 / encaps as f64;
    eprintln!("{bytes_per_encap:.0} bytes per encapsulated packet");
    assert!(
        bytes_per_encap > 4.0 * 1450.0,
        "GSO packets were split before encap: {bytes_per_encap:.0} B each"
    );
    let down = iperf_tcp(&c1.ns, &c2.ns, &c2.ip_str(), true);
    eprintln!(
        "TCP c1 -> c2: {:.2} Gbit/s, c2 -> c1: {:.2} Gbit/s",
        up / 1e9,
        down / 1e9
    );
    assert!(
        up > 1e6 && down > 1e6,
        "TCP barely moved: {up} / {down} bit/s"
    );

    for (h, name) in [(h1, "h1"), (h2, "h2")] {
        let maps = h.node().maps();
        for c in [Counter::Encap, Counter::Decap, Counter::ArpReply] {
            assert!(
                maps.counter(c).unwrap() > 0,
                "{name}: {} stayed 0",
                c.name()
            );
        }
        for c in [
            Counter::DropUnknownVtep,
            Counter::DropUnknownVni,
            Counter::DropBadVxlan,
            Counter::ArpMiss,
        ] {
            assert_eq!(maps.counter(c).unwrap(), 0, "{name}: {}", c.name());
        }
    }
    assert!(
        h1.node().maps().counter(Counter::LocalDeliver).unwrap() > 0,
        "c1 <-> c3 went through the bridge"
    );
}

#[test]
fn a_legacy_host_with_a_kernel_vxlan_device_interoperates() {
    let mut cluster = Cluster::new("leg", &[true, false]).unwrap();
    cluster.hosts[0]
        .add_container("br42", [10, 10, 1, 2])
        .unwrap();
    cluster.hosts[0].serve_containers(VNI).unwrap();
    let (h1, legacy) = (&cluster.hosts[0], &cluster.hosts[1]);
    let c1 = &h1.containers[0];

    // The seed recipe from DESIGN.md, by hand, on the legacy host.
    let legacy_ip = "10.10.0.255";
    legacy
        .run(&format!(
            "ip link add vxlan0 type vxlan id {VNI} dev eth1 dstport 4789 && \
             ip addr add {legacy_ip}/16 dev vxlan0 && ip link set vxlan0 up && \
             ip neigh add {} lladdr {} dev vxlan0 nud permanent && \
             bridge fdb add to {} dst {} dev vxlan0",
            c1.ip_str(),
            mac_str(c1.mac),
            mac_str(c1.mac),
            ip_str(h1.vtep)
        ))
        .unwrap();
    // The reverse of the recipe on our side: what `peer add` will write.
    let vxlan0_mac = legacy.ns.mac("vxlan0").unwrap();
    h1.learn_remote(VNI, vxlan0_mac, [10, 10, 0, 255], legacy.vtep)
        .unwrap();

    let capture = Capture::start(&h1.ns, "eth1", "udp port 4789").unwrap();
    ping(c1, legacy_ip);
    let out = legacy
        .ns
        .output(&format!("ping -c 3 -i 0.2 -W 2 {}", c1.ip_str()))
        .unwrap();
    assert!(
        out.status.success(),
        "legacy host -> c1: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Decode the capture independently of our code: tshark's own VXLAN dissector.
    let rows = capture
        .decode(&[
            "ip.src",
            "ip.dst",
            "udp.dstport",
            "vxlan.flags",
            "vxlan.vni",
            "icmp.type",
        ])
        .unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    let text = lines.join("\n");

    assert!(
        lines.len() >= 12,
        "expected 3+3 pings each way in VXLAN, saw:\n{text}"
    );
    for line in &lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[2], "4789", "UDP port: {line}");
        assert_eq!(f[4], VNI.to_string(), "VNI: {line}");
        // tshark shows the flags as 16 bits: 0x0800 is the I flag alone.
        assert_eq!(f[3], "0x0800", "VXLAN flags: only I: {line}");
    }
    let ours = lines
        .iter()
        .filter(|l| l.starts_with("10.0.0.1,10.0.0.2"))
        .count();
    let theirs = lines
        .iter()
        .filter(|l| l.starts_with("10.0.0.2,10.0.0.1"))
        .count();
    assert!(
        ours >= 6 && theirs >= 6,
        "both directions in VXLAN: ours {ours}, theirs {theirs}\n{text}"
    );

    let up = iperf_tcp(&legacy.ns, &c1.ns, &c1.ip_str(), false);
    let down = iperf_tcp(&legacy.ns, &c1.ns, &c1.ip_str(), true);
    eprintln!(
        "TCP legacy -> c1: {:.2} Gbit/s, c1 -> legacy: {:.2} Gbit/s",
        up / 1e9,
        down / 1e9
    );
    assert!(
        up > 1e6 && down > 1e6,
        "TCP barely moved: {up} / {down} bit/s"
    );
}

#[test]
fn truncated_frames_on_the_wire_pass_to_the_host_and_break_nothing() {
    let cluster = Cluster::overlay("trunc", &[&[[10, 10, 1, 2]], &[[10, 10, 2, 2]]]).unwrap();
    let (h1, h2) = (&cluster.hosts[0], &cluster.hosts[1]);
    let (c1, c2) = (&h1.containers[0], &h2.containers[0]);
    ping(c2, &c1.ip_str());

    // A valid VXLAN packet from h2 to c1, cut at every length below Ethernet + IPv4: IPv4
    // ethertype with a partial IPv4 header, which nothing can identify as VXLAN.
    let h1_mac = h1.ns.mac("eth1").unwrap();
    let inner = overlay_tests::packet::eth(c1.mac, c2.mac, 0x0800, &[0x45; 40]);
    let udp = overlay_tests::packet::udp(40000, 4789, &overlay_tests::packet::vxlan(VNI, &inner));
    let ip = overlay_tests::packet::ipv4(h2.vtep, h1.vtep, 17, 0, &udp);
    let good = overlay_tests::packet::eth(h1_mac, [2, 0, 0, 0, 0, 0x22], 0x0800, &ip);
    let truncated: Vec<Vec<u8>> = (14..34).map(|len| good[..len].to_vec()).collect();

    let maps = h1.node().maps();
    let before = maps.counters().unwrap();
    cluster.wire.inject("h1", &truncated).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = maps.counters().unwrap();
    let delta = |c: Counter| {
        after.iter().find(|(k, _)| *k == c).unwrap().1
            - before.iter().find(|(k, _)| *k == c).unwrap().1
    };
    assert!(
        delta(Counter::UnderlayPass) >= truncated.len() as u64,
        "each truncated frame passes to the host: underlay_pass moved by {}",
        delta(Counter::UnderlayPass)
    );
    for (c, _) in after.iter().filter(|(c, _)| c.name().starts_with("drop_")) {
        assert_eq!(delta(*c), 0, "{} moved", c.name());
    }
    assert_eq!(delta(Counter::Decap), 0, "nothing truncated was delivered");
    // The overlay is unaffected.
    ping(c2, &c1.ip_str());
    ping(c1, &c2.ip_str());
}
