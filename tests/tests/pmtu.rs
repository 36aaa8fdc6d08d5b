//! Path MTU through the tunnel, on an underlay that behaves like a wire (a frame larger than the
//! MTU never crosses it): containers whose interface MTU is larger than the tunnel's learn the
//! tunnel's MTU from the ICMP errors the dataplane sends them, and their TCP completes.
//! Without those errors, every full-sized segment would vanish and the connection would hang.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use overlay_common::Counter;
use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    topology::Underlay,
    transfer,
};

const WIRE: Underlay = Underlay::Wire { mtu: 1500 };

fn counter(d: &Deployment, host: usize, which: Counter) -> u64 {
    let c: BTreeMap<_, _> = d.hosts[host].counters().unwrap();
    c[which.name()]
}

fn frag_needed(d: &Deployment, host: usize) -> u64 {
    counter(d, host, Counter::DropFragNeeded)
}

type Container = (usize, Ipv4Addr);

/// Two hosts on the wire bed, network blue with `flags`, container a1 on the first and a2 on
/// the second, both served everywhere.
fn two_hosts(label: &str, flags: &[&str]) -> (Deployment, Container, Container) {
    let mut d = Deployment::on(label, &[true, true], WIRE).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, flags)
        .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[a1.1, a2.1], true).unwrap();
    (d, a1, a2)
}

/// The trap Docker users fall into: the network's interface MTU set to the underlay's, 50
/// bytes more than the tunnel carries.
const TOO_LARGE: &[&str] = &["--mtu", "1500"];

#[test]
fn containers_with_an_mtu_larger_than_the_tunnel_learn_it_and_tcp_completes() {
    let (d, a1, a2) = two_hosts("pmtu", TOO_LARGE);
    wait_for(Duration::from_secs(3), || ping(d.container(a1.0), a2.1)).unwrap();
    let (c1, c2) = (d.container(a1.0), d.container(a2.0));
    assert!(
        c1.run("ip -o link show eth0").unwrap().contains("mtu 1500"),
        "the container has the network's MTU"
    );

    // tracepath starts at the interface's 1500 and reports what the path allows.
    let trace = c1.run(&format!("tracepath -n -m 3 {}", a2.1)).unwrap();
    assert!(trace.contains("pmtu 1450"), "tracepath:\n{trace}");

    let before = frag_needed(&d, 0);
    c1.run("ip route flush cache").unwrap();
    let out = c1
        .output(&format!("ping -M do -s 1472 -c 2 -i 0.3 -W 1 {}", a2.1))
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1450") || text.contains("mtu=1450"),
        "ping with DF at 1500 bytes:\n{text}"
    );
    assert!(frag_needed(&d, 0) > before, "drop_frag_needed moved");

    // Both ends advertise an MSS for 1500 bytes, so only path MTU discovery can make TCP fit.
    for ((from, to), (to_ip, port)) in [((c1, c2), (a2.1, 5001)), ((c2, c1), (a1.1, 5002))] {
        // Forget what the last run taught: a learned path MTU also lowers the MSS a
        // receiver advertises.
        for c in [from, to] {
            c.run("ip route flush cache").unwrap();
        }
        transfer::exact(from, to, to_ip, port, 16)
            .unwrap_or_else(|e| panic!("TCP to {to_ip} through a 1450 tunnel: {e:#}"));
    }
    assert!(frag_needed(&d, 1) > 0, "h2 answered a2's segments too");
}

#[test]
fn an_ipv6_container_learns_the_tunnel_mtu_from_packet_too_big() {
    let (d, a1, a2) = two_hosts("pmtu6", TOO_LARGE);
    let c1 = d.container(a1.0);
    let target = d.link_local(a2.0).unwrap();
    let target = format!("{target}%eth0");
    wait_for(Duration::from_secs(5), || {
        c1.run(&format!("ping -6 -c 1 -W 1 {target}")).is_ok()
    })
    .expect("a1 reaches a2 over IPv6");

    let trace = c1.run(&format!("tracepath -6 -n -m 3 {target}")).unwrap();
    assert!(trace.contains("pmtu 1450"), "tracepath -6:\n{trace}");

    let before = frag_needed(&d, 0);
    c1.run("ip -6 route flush cache").unwrap();
    let out = c1
        .output(&format!("ping -6 -M do -s 1452 -c 2 -i 0.3 -W 1 {target}"))
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu=1450") || text.contains("mtu = 1450") || text.contains("mtu: 1450"),
        "ping -6 with 1500 bytes:\n{text}"
    );
    assert!(frag_needed(&d, 0) > before, "drop_frag_needed moved");
}

/// What a router does with an IPv4 packet without DF too big for its next hop, and what the
/// kernel does on a routed overlay (flannel): the dataplane fragments it, the receiving
/// container reassembles. ICMP echo (replies never set DF), packets the sender already
/// fragmented, and UDP datagrams whose checksum the sender left to offload all arrive whole.
#[test]
fn ipv4_without_df_too_big_for_the_tunnel_is_fragmented_and_arrives_whole() {
    let (d, a1, a2) = two_hosts("pmtunodf", TOO_LARGE);
    let (c1, c2) = (d.container(a1.0), d.container(a2.0));
    wait_for(Duration::from_secs(3), || ping(c1, a2.1)).unwrap();
    let before = [0, 1].map(|h| counter(&d, h, Counter::Fragments));
    let too_big = [0, 1].map(|h| counter(&d, h, Counter::DropTooBig));

    // 1500 bytes: sent whole by a1 (its MTU), cut in two on h1; the reply, no DF either, on h2.
    // 5000 bytes: fragmented by a1 into 1500-byte pieces, each of them cut again.
    for size in [1472, 5000] {
        let out = c1
            .output(&format!("ping -M dont -s {size} -c 3 -i 0.2 -W 2 {}", a2.1))
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(" 0% packet loss"),
            "ping -M dont -s {size} through a 1450 tunnel:\n{text}"
        );
    }
    // Three 1500-byte requests, and three of the four pieces of each 5000-byte one, each cut in
    // two; the same of the replies.
    let after = [0, 1].map(|h| counter(&d, h, Counter::Fragments));
    for (host, what) in [(0, "a1's requests"), (1, "a2's replies")] {
        assert!(
            after[host] >= before[host] + 2 * (3 + 3 * 3),
            "h{} cut {what}: {before:?} -> {after:?}",
            host + 1
        );
    }

    // UDP both ways, checksums completed by the dataplane before it cuts (the veth offloads
    // them): a wrong checksum would make the receiving kernel drop the datagram. The underlay
    // completes offloaded checksums in software, as a NIC does in hardware: a first fragment
    // left in CHECKSUM_PARTIAL would have its checksum "completed" a second time, wrongly.
    for h in &d.hosts {
        h.ns.run("ethtool -K eth1 tx off").unwrap();
    }
    let sizes = [1472, 1473, 3000, 8000, 100, 1422, 65000];
    transfer::datagrams(c1, c2, a2.1, 5004, &sizes)
        .unwrap_or_else(|e| panic!("UDP without DF from a1 to a2: {e:#}"));
    transfer::datagrams(c2, c1, a1.1, 5005, &sizes)
        .unwrap_or_else(|e| panic!("UDP without DF from a2 to a1: {e:#}"));
    assert_eq!(
        [0, 1].map(|h| counter(&d, h, Counter::DropTooBig)),
        too_big,
        "nothing dropped as too big"
    );
}

#[test]
fn interfaces_follow_a_change_of_the_underlay_mtu() {
    let (mut d, a1, a2) = two_hosts("pmtuf", &[]);
    let eth0_mtu = |d: &Deployment, c: usize| {
        d.container(c)
            .run("cat /sys/class/net/eth0/mtu")
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(eth0_mtu(&d, a1.0), 1450);
    let h1 = &d.hosts[0].ns;
    for (underlay, want) in [(1400, 1350), (1500, 1450)] {
        h1.run(&format!("ip link set eth1 mtu {underlay}")).unwrap();
        wait_for(Duration::from_secs(5), || eth0_mtu(&d, a1.0) == want)
            .unwrap_or_else(|_| panic!("a1's eth0 did not follow the underlay to {want}"));
        assert_eq!(eth0_mtu(&d, a2.0), 1450, "h2's underlay did not change");
        let ports = h1.run("ip -o link show master ovbr42").unwrap();
        assert!(
            ports.lines().all(|l| l.contains(&format!("mtu {want} "))),
            "host-side ports:\n{ports}"
        );
        transfer::exact(d.container(a2.0), d.container(a1.0), a1.1, 5003, 8)
            .unwrap_or_else(|e| panic!("TCP after the underlay went to {underlay}: {e:#}"));
    }
    // A container made after the change takes the new MTU from the node's record.
    h1.run("ip link set eth1 mtu 1400").unwrap();
    wait_for(Duration::from_secs(5), || eth0_mtu(&d, a1.0) == 1350).unwrap();
    let a3 = d.add_container(0, "a3", "blue", None).unwrap();
    assert_eq!(eth0_mtu(&d, a3.0), 1350);
}
