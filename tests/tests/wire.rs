//! On an underlay that behaves like a wire (senders segment to the MTU, receivers run GRO): the
//! agent's GRO helper gives our VXLAN port receive-side GRO, decapsulation sees merged packets,
//! and every path a merged packet takes delivers the exact bytes: into a container, to and
//! from a legacy kernel vxlan host, and through a container that forwards it with NAT (so it is
//! re-segmented, or encapsulated again, with the tunnel state GRO gave it).
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use overlay_common::Counter;
use overlay_tests::{
    deployment::{Deployment, LEGACY_IP, ping, wait_for},
    netns::Netns,
    topology::Underlay,
    transfer,
};

const WIRE: Underlay = Underlay::Wire { mtu: 1500 };

type Counters = BTreeMap<&'static str, u64>;

fn counters(d: &Deployment, host: usize) -> Counters {
    d.hosts[host].counters().unwrap()
}

fn moved(before: &Counters, after: &Counters, c: Counter) -> u64 {
    after[c.name()] - before[c.name()]
}

/// Network blue, one container on each host, each reaching the other.
fn blue(d: &mut Deployment) -> Vec<(usize, Ipv4Addr)> {
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let ours: Vec<usize> = (0..d.hosts.len()).filter(|&h| d.hosts[h].ours).collect();
    let containers: Vec<_> = ours
        .into_iter()
        .map(|h| d.add_container(h, &format!("c{h}"), "blue", None).unwrap())
        .collect();
    for &(from, _) in &containers {
        for &(_, to) in &containers {
            wait_for(Duration::from_secs(3), || ping(d.container(from), to)).unwrap();
        }
    }
    containers
}

/// A transfer from container `a` to container `b` arrives exact, in packets the receiving
/// host's decapsulation saw merged; returns the average segments per decapsulated skb.
fn merged_transfer(
    d: &Deployment,
    a: (usize, Ipv4Addr),
    b: (usize, Ipv4Addr),
    host_b: usize,
) -> f64 {
    let before = counters(d, host_b);
    transfer::exact(d.container(a.0), d.container(b.0), b.1, 5001, 64).unwrap();
    let after = counters(d, host_b);
    let decap = moved(&before, &after, Counter::Decap);
    let segments = moved(&before, &after, Counter::DecapSegments);
    assert!(decap > 0, "nothing was decapsulated");
    for c in [Counter::DropKernelVxlan, Counter::DropAdjustFailed] {
        assert_eq!(moved(&before, &after, c), 0, "{}", c.name());
    }
    segments as f64 / decap as f64
}

#[test]
fn tcp_on_a_wire_is_merged_before_decap_and_arrives_exact_both_ways() {
    let mut d = Deployment::on("wgro", &[true, true], WIRE).unwrap();
    let c = blue(&mut d);
    for (h, host) in d.hosts.iter().enumerate() {
        // The helper: an external (collect_md) vxlan device on our port, its sink attached.
        let link = host.ns.run("ip -d link show ovgro4789").unwrap();
        assert!(
            link.contains("external") && link.contains("dstport 4789") && link.contains(",UP"),
            "{link}"
        );
        let status: serde_json::Value =
            serde_json::from_str(&d.cli(h, &["status", "--json"]).unwrap()).unwrap();
        assert_eq!(status["agent"]["gro"]["4789"], "ovgro4789", "{status}");
        assert_eq!(status["programs"]["gro_sink"][0], "ovgro4789", "{status}");
    }
    // Without a GRO handler every wire packet is its own skb (1.0); with it, a TCP stream's
    // packets arrive in dozens.
    let there = merged_transfer(&d, c[0], c[1], 1);
    let back = merged_transfer(&d, c[1], c[0], 0);
    eprintln!("segments per decapsulated skb: {there:.1} there, {back:.1} back");
    assert!(
        there > 2.0 && back > 2.0,
        "GRO did not merge: {there:.2} / {back:.2}"
    );
    // The underlay's own UDP GRO (forwarding and fraglist) on as well: still exact.
    d.hosts[1]
        .ns
        .run("ethtool -K eth1 rx-udp-gro-forwarding on rx-gro-list on")
        .unwrap();
    merged_transfer(&d, c[0], c[1], 1);
}

#[test]
fn the_gro_helper_is_made_again_when_deleted_and_removed_with_its_last_network() {
    let mut d = Deployment::on("wgrolife", &[true], WIRE).unwrap();
    let exists = |d: &Deployment, dev: &str| {
        d.hosts[0]
            .ns
            .output(&format!("ip link show {dev}"))
            .unwrap()
            .status
            .success()
    };
    let pins = |d: &Deployment| d.hosts[0].pins().linked().unwrap();
    assert!(!exists(&d, "ovgro4789"), "no network yet, no helper");
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    wait_for(Duration::from_secs(3), || exists(&d, "ovgro4789")).unwrap();
    d.hosts[0].ns.run("ip link del ovgro4789").unwrap();
    wait_for(Duration::from_secs(3), || exists(&d, "ovgro4789"))
        .unwrap_or_else(|_| panic!("not made again: {}", d.hosts[0].log()));
    // A second port gets a helper of its own.
    d.create_network_with("red", "10.20.0.0/16", 43, &["--port", "4790"])
        .unwrap();
    // The device exists a moment before its sink is attached and pinned (make() in gro.rs):
    // wait for both.
    wait_for(Duration::from_secs(3), || {
        exists(&d, "ovgro4790") && pins(&d) == ["eth1", "ovgro4789", "ovgro4790"]
    })
    .unwrap_or_else(|_| panic!("pinned: {:?}", pins(&d)));
    d.cli(0, &["network", "rm", "blue"]).unwrap();
    // The device goes first (no moment with a socket and no sink), then the sink's pin.
    wait_for(Duration::from_secs(3), || {
        !exists(&d, "ovgro4789") && pins(&d) == ["eth1", "ovgro4790"]
    })
    .unwrap_or_else(|_| panic!("left: {:?}", pins(&d)));
    // A network removed while no agent runs: the next agent removes what the last one made.
    d.kill_agent(0);
    d.cli(0, &["network", "rm", "red"]).unwrap();
    d.start_agent(0).unwrap();
    wait_for(Duration::from_secs(5), || {
        !exists(&d, "ovgro4790") && pins(&d) == ["eth1"]
    })
    .unwrap_or_else(|_| panic!("left behind: {:?}\n{}", pins(&d), d.hosts[0].log()));
}

#[test]
fn a_legacy_kernel_vxlan_host_on_a_wire_exchanges_exact_bytes_both_ways() {
    let mut d = Deployment::on("wlegacy", &[true, false], WIRE).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let ours = d.add_container(0, "l1", "blue", None).unwrap();
    let legacy_ip = LEGACY_IP;
    d.join_legacy_host(1, "blue", ours.1).unwrap();
    wait_for(Duration::from_secs(3), || {
        ping(d.container(ours.0), legacy_ip)
    })
    .unwrap();
    let before = counters(&d, 0);
    transfer::exact(&d.hosts[1].ns, d.container(ours.0), ours.1, 5001, 32).unwrap();
    let after = counters(&d, 0);
    let merged = moved(&before, &after, Counter::DecapSegments) as f64
        / moved(&before, &after, Counter::Decap).max(1) as f64;
    assert!(
        merged > 2.0,
        "the kernel vxlan host's stream was not merged: {merged:.2}"
    );
    transfer::exact(d.container(ours.0), &d.hosts[1].ns, legacy_ip, 5002, 32).unwrap();

    // Refused while merged: a stream from the legacy host in full flight when its VTEP stops
    // being one of ours. Its merged packets are dropped and counted by us, and the kernel's
    // own vxlan path (the GRO helper's socket) never delivers one of them.
    // Spawned directly (`ip netns exec` becomes iperf3), so kill() below reaches iperf3 itself:
    // a killed `timeout` would leave it running.
    let container = d.container(ours.0);
    let server = container
        .command("iperf3")
        .args(["-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        container
            .run("ss -Htln sport = :5201")
            .is_ok_and(|o| !o.trim().is_empty())
    })
    .expect("iperf3 server listening");
    let client = d.hosts[1]
        .ns
        .command("iperf3")
        .arg("-c")
        .arg(ours.1.to_string())
        .args(["-t", "6"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Under a loaded machine iperf3 may take a while to start: wait until decap moves between
    // two reads 50 ms apart, so the VTEP leaves while the stream is in full flight.
    let mut flowing = counters(&d, 0);
    let started = wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = counters(&d, 0);
        let moving = moved(&flowing, &now, Counter::Decap) > 0;
        flowing = now;
        moving
    });
    d.leave_legacy_host(1, "blue").unwrap();
    let refused = counters(&d, 0);
    std::thread::sleep(Duration::from_secs(1));
    let later = counters(&d, 0);
    for mut p in [client, server] {
        let _ = p.kill();
        let _ = p.wait();
    }
    started.expect("the stream never started flowing");
    assert_eq!(
        moved(&refused, &later, Counter::Decap),
        0,
        "delivered after the VTEP left"
    );
    assert!(
        moved(&flowing, &later, Counter::DropUnknownVtep) > 0,
        "refusals not counted"
    );
    assert_eq!(moved(&flowing, &later, Counter::DropKernelVxlan), 0);
}

/// A container that forwards what it receives with NAT, as a proxy or a nested runtime does:
/// port 6000 to a container on a third host (the merged packet is encapsulated again, carrying
/// the tunnel state GRO gave it), port 6001 to a namespace behind it over a veth that does not
/// segment (the merged packet is segmented in software).
#[test]
fn a_merged_packet_forwarded_by_a_container_is_resegmented_and_reencapsulated_exactly() {
    let mut d = Deployment::on("wfwd", &[true, true, true], WIRE).unwrap();
    let c = blue(&mut d);
    let (client, proxy, target) = (c[0], c[1], c[2]);
    let behind = Netns::new(&format!("{}b", d.container(proxy.0).name)).unwrap();
    d.container(proxy.0)
        .run(&format!(
            "ip link add in0 type veth peer name eth0 netns {b} && \
             ip addr add 192.168.77.1/24 dev in0 && ip link set in0 up && \
             ethtool -K in0 tso off gso off >/dev/null && \
             sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 && \
             nft add table ip nat && \
             nft add chain ip nat pre {{ type nat hook prerouting priority -100 \\; }} && \
             nft add chain ip nat post {{ type nat hook postrouting priority 100 \\; }} && \
             nft add rule ip nat pre tcp dport 6000 dnat to {t}:6000 && \
             nft add rule ip nat pre tcp dport 6001 dnat to 192.168.77.2:6001 && \
             nft add rule ip nat post masquerade",
            b = behind.name,
            t = target.1
        ))
        .unwrap();
    behind
        .run("ip addr add 192.168.77.2/24 dev eth0 && ip link set eth0 up")
        .unwrap();
    let before: Vec<_> = (0..3).map(|h| counters(&d, h)).collect();
    transfer::exact(
        d.container(client.0),
        d.container(target.0),
        proxy.1,
        6000,
        32,
    )
    .unwrap_or_else(|e| panic!("through the proxy to the third host: {e:#}"));
    transfer::exact(d.container(client.0), &behind, proxy.1, 6001, 32)
        .unwrap_or_else(|e| panic!("through the proxy to the namespace behind it: {e:#}"));
    let after: Vec<_> = (0..3).map(|h| counters(&d, h)).collect();
    let proxy_host = 1;
    let merged = moved(
        &before[proxy_host],
        &after[proxy_host],
        Counter::DecapSegments,
    ) as f64
        / moved(&before[proxy_host], &after[proxy_host], Counter::Decap) as f64;
    assert!(
        merged > 2.0,
        "the proxy's host did not see merged packets: {merged:.2}"
    );
    for h in 0..3 {
        assert_eq!(
            moved(&before[h], &after[h], Counter::DropAdjustFailed),
            0,
            "host {h}: a re-encapsulation was refused"
        );
    }
    drop(behind);
}
