//! BPF_PROG_TEST_RUN through the real compiled programs, the way out: a container's frame
//! wrapped into exactly the VXLAN packet a Linux vxlan device sends (over either underlay
//! family), routed, and kept off the tunnel when its destination is local.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_REDIRECT, TC_ACT_SHOT, Verdict},
    lab::*,
    packet::{self, ETH_P_IP, ETH_P_IPV6},
    per_family,
};

per_family! {
    /// What a Linux vxlan device sends (RFC 7348; over IPv6, udp_tunnel6_xmit_skb with
    /// udp6zerocsumtx): outer headers from our VTEP to c2's, the inner frame untouched.
    fn encap_produces_the_vxlan_packet_rfc7348_describes(family) {
        let mut lab = family.lab("enc");
        let inner = c1_to_c2_ping(0xb9); // DSCP 46, ECN ECT(1)
        let vc1 = lab.vc1;
        let v = lab.expect(
            "c1 -> c2",
            Container(vc1),
            &inner,
            TC_ACT_REDIRECT,
            Counter::Encap,
        );
        let out = &v.frame;
        assert_eq!(out.len(), inner.len() + family.overhead());

        // Outer Ethernet: from the underlay interface to the resolved next hop.
        assert_eq!(out[0..6], NEXT_HOP_MAC, "outer destination MAC");
        assert_eq!(out[6..12], UNDERLAY_MAC, "outer source MAC");
        let ip = &out[14..family.udp_at()];
        match family {
            Family::Ipv4 => {
                assert_eq!(out[12..14], ETH_P_IP.to_be_bytes(), "outer ethertype");
                assert_eq!(ip[0], 0x45, "version 4, no options");
                assert_eq!(
                    ip[1], 0x01,
                    "DSCP 0 as Linux sends by default; ECN copied from the inner"
                );
                assert_eq!(
                    u16::from_be_bytes([ip[2], ip[3]]) as usize,
                    inner.len() + 36,
                    "total length"
                );
                assert_eq!(ip[6..8], [0, 0], "DF clear, no fragment offset");
                assert_eq!(ip[8], 64, "TTL");
                assert_eq!(ip[9], 17, "UDP");
                assert_eq!(
                    packet::checksum(ip),
                    0,
                    "the outer header checksum verifies"
                );
                assert_eq!(ip[12..16], LOCAL_VTEP, "outer source: our VTEP");
                assert_eq!(ip[16..20], REMOTE_VTEP, "outer destination: c2's VTEP");
            }
            Family::Ipv6 => {
                assert_eq!(out[12..14], ETH_P_IPV6.to_be_bytes(), "outer ethertype");
                // No extension headers.
                assert_eq!(
                    ip[0..4],
                    [0x60, 0x10, 0, 0],
                    "version 6; traffic class DSCP 0 with the inner ECN; flow label 0"
                );
                assert_eq!(
                    u16::from_be_bytes([ip[4], ip[5]]) as usize,
                    inner.len() + 16,
                    "payload length"
                );
                assert_eq!(ip[6..8], [17, 64], "UDP, hop limit 64");
                assert_eq!(ip[8..24], LOCAL_VTEP6, "outer source: our VTEP");
                assert_eq!(ip[24..40], REMOTE_VTEP6, "outer destination: c2's VTEP");
            }
        }
        let udp = &out[family.udp_at()..family.vxlan_at()];
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        assert!(
            (32768..61000).contains(&sport),
            "source port {sport} from the flow hash range"
        );
        assert_eq!(
            u16::from_be_bytes([udp[2], udp[3]]),
            PORT,
            "destination port"
        );
        assert_eq!(
            u16::from_be_bytes([udp[4], udp[5]]) as usize,
            inner.len() + 16,
            "UDP length"
        );
        assert_eq!(
            udp[6..8],
            [0, 0],
            "UDP checksum zero (over IPv6 as with udp6zerocsumtx)"
        );
        // VXLAN: I flag, reserved zero, VNI 42.
        assert_eq!(
            out[family.vxlan_at()..family.overhead()],
            [0x08, 0, 0, 0, 0, 0, 42, 0],
            "VXLAN"
        );
        assert_eq!(
            &out[family.overhead()..],
            &inner[..],
            "the inner frame, untouched"
        );
    }
}

#[test]
fn encap_without_forwarding_lets_the_kernel_route() {
    let mut lab = Lab::new("encnf");
    lab.ns
        .run("sysctl -qw net.ipv4.conf.all.forwarding=0 net.ipv4.conf.ul0.forwarding=0")
        .unwrap();
    let inner = c1_to_c2_ping(0);
    let vc1 = lab.vc1;
    let v = lab.expect(
        "c1 -> c2",
        Container(vc1),
        &inner,
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    // L2 is filled in by the neighbour subsystem after the program; the rest is ours.
    assert_eq!(v.frame[12..14], ETH_P_IP.to_be_bytes());
    assert_eq!(v.frame[26..34], [LOCAL_VTEP, REMOTE_VTEP].concat());
    assert_eq!(&v.frame[50..], &inner[..]);
}

#[test]
fn encap_without_a_route_is_dropped_and_counted() {
    let mut lab = Lab::new("encnr");
    lab.ns.run("ip route add blackhole 10.0.0.2/32").unwrap();
    let vc1 = lab.vc1;
    lab.expect(
        "no route to the VTEP",
        Container(vc1),
        &c1_to_c2_ping(0),
        TC_ACT_SHOT,
        Counter::DropNoRoute,
    );
}

#[test]
fn encap_source_port_follows_the_flow() {
    let mut lab = Lab::new("sport");
    let vc1 = lab.vc1;
    let flow = |sport: u16| {
        let udp = packet::udp(sport, 5001, b"payload");
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IP,
            &packet::ipv4(C1_IP, C2_IP, 17, 0, &udp),
        )
    };
    let outer_sport = |v: &Verdict| u16::from_be_bytes([v.frame[34], v.frame[35]]);
    let a1 = lab.send(Container(vc1), &flow(1000));
    let a2 = lab.send(Container(vc1), &flow(1000));
    assert_eq!(
        outer_sport(&a1),
        outer_sport(&a2),
        "one flow, one outer source port"
    );
    let ports: std::collections::BTreeSet<u16> = (0..16)
        .map(|i| outer_sport(&lab.send(Container(vc1), &flow(2000 + i))))
        .collect();
    assert!(
        ports.len() >= 8,
        "16 flows spread over only {} source ports",
        ports.len()
    );
}

#[test]
fn same_host_traffic_skips_the_bridge_and_the_tunnel() {
    let mut lab = Lab::new("local");
    let vc1 = lab.vc1;
    let icmp = packet::icmp_echo(1, 1);
    let frame = packet::eth(
        C3_MAC,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, C3_IP, 1, 0, &icmp),
    );
    let v = lab.expect(
        "c1 -> c3",
        Container(vc1),
        &frame,
        TC_ACT_REDIRECT,
        Counter::LocalDeliver,
    );
    assert_eq!(v.frame, frame, "local delivery does not rewrite the frame");
    assert_eq!(lab.count(Counter::Encap), 0);
}
