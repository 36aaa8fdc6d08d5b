//! BPF_PROG_TEST_RUN through the real compiled programs: ARP requests and neighbour
//! solicitations answered in place from the maps, byte for byte as the owner's kernel would
//! answer, what is left to the bridge, and ARP replies to legacy hosts sent back whole through
//! the tunnel.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::*,
    packet::{self, BROADCAST, ETH_P_ARP, ETH_P_IPV6},
};

#[test]
fn arp_request_is_answered_from_the_map() {
    let mut lab = Lab::new("arp");
    let vc1 = lab.vc1;
    let request = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, C1_IP, [0; 6], C2_IP),
    );
    let v = lab.expect(
        "who-has c2",
        Container(vc1),
        &request,
        TC_ACT_REDIRECT,
        Counter::ArpReply,
    );
    let reply = c2_arp_reply_to_c1();
    assert_eq!(v.frame, reply);

    // A unicast re-validation probe (what a STALE neighbour entry sends) is answered too.
    let probe = packet::eth(
        C2_MAC,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, C1_IP, [0; 6], C2_IP),
    );
    let v = lab.expect(
        "unicast probe",
        Container(vc1),
        &probe,
        TC_ACT_REDIRECT,
        Counter::ArpReply,
    );
    assert_eq!(v.frame, reply);
}

#[test]
fn arp_edge_cases_stay_local() {
    let mut lab = Lab::new("arpx");
    let (vc1, vc4) = (lab.vc1, lab.vc4);
    // ARP over Ethernet from `mac` to `dst`: (op, sender address, target MAC, target address).
    let arp = |dst, mac, (op, spa, tha, tpa)| {
        packet::eth(dst, mac, ETH_P_ARP, &packet::arp(op, mac, spa, tha, tpa))
    };
    for (what, port, frame, code, counter) in [
        (
            "who-has an unknown address",
            vc1,
            arp(BROADCAST, C1_MAC, (1, C1_IP, [0; 6], [10, 10, 9, 9])),
            TC_ACT_OK,
            Counter::ArpMiss,
        ),
        (
            "gratuitous ARP",
            vc1,
            arp(BROADCAST, C1_MAC, (1, C1_IP, [0; 6], C1_IP)),
            TC_ACT_OK,
            Counter::ContainerPass,
        ),
        (
            "RFC 5227 probe from 0.0.0.0",
            vc1,
            arp(BROADCAST, C1_MAC, (1, [0; 4], [0; 6], C2_IP)),
            TC_ACT_REDIRECT,
            Counter::ArpReply,
        ),
        (
            "an ARP reply",
            vc1,
            arp(C3_MAC, C1_MAC, (2, C1_IP, C3_MAC, C3_IP)),
            TC_ACT_OK,
            Counter::ContainerPass,
        ),
        (
            "c2 is not in VNI 43",
            vc4,
            arp(BROADCAST, C4_MAC, (1, C1_IP, [0; 6], C2_IP)),
            TC_ACT_OK,
            Counter::ArpMiss,
        ),
    ] {
        lab.expect(what, Container(port), &frame, code, counter);
    }
}

/// A legacy host's ARP request reaches our container flooded (its all-zeros FDB entry); the
/// container's unicast reply is not IP, which bpf_skb_adjust_room cannot wrap, so it goes
/// whole to the network port's collect_md device with the remote VTEP in its tunnel key (here
/// the lab's underlay stands in for that device). Without the device it stays local, as does
/// a gratuitous reply.
#[test]
fn an_arp_reply_to_a_remote_mac_goes_back_through_the_tunnel() {
    let mut lab = Lab::new("arpt");
    let vc1 = lab.vc1;
    let reply = packet::eth(
        C2_MAC,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(2, C1_MAC, C1_IP, C2_MAC, C2_IP),
    );
    lab.expect(
        "no GRO helper device yet",
        Container(vc1),
        &reply,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let flood = overlay_common::Flood {
        tunnel: lab.underlay,
        ..Default::default()
    };
    lab.node
        .maps()
        .tables_mut()
        .flood
        .insert(VNI, flood, 0)
        .unwrap();
    let v = lab.expect(
        "c1 answers c2's request",
        Container(vc1),
        &reply,
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    // Whole: the device writes the outer headers.
    assert_eq!(v.frame, reply);
    let gratuitous = packet::eth(
        C2_MAC,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(2, C1_MAC, C1_IP, C2_MAC, C1_IP),
    );
    lab.expect(
        "a gratuitous reply",
        Container(vc1),
        &gratuitous,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let spoofed = packet::eth(
        C2_MAC,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(2, C1_MAC, C3_IP, C2_MAC, C2_IP),
    );
    lab.expect(
        "a reply for another's address",
        Container(vc1),
        &spoofed,
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
}

/// The advertisement c2's own kernel would send to `to` (ndisc_send_na for a multicast
/// solicitation): from its address, Solicited and Override, its MAC in the option.
fn advertisement_from_c2(to: [u8; 16]) -> Vec<u8> {
    let target = global(C2_IP);
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend(target);
    icmp.extend([2, 1]);
    icmp.extend(C2_MAC);
    let c = packet::icmpv6_checksum(target, to, &icmp);
    icmp[2..4].copy_from_slice(&c);
    packet::eth(
        C1_MAC,
        C2_MAC,
        ETH_P_IPV6,
        &container_ipv6(target, to, 58, &icmp),
    )
}

#[test]
fn neighbour_solicitations_for_overlay_addresses_are_answered_from_the_map() {
    let mut lab = Lab::new("ndp");
    let vc1 = lab.vc1;
    let (own, c2) = (global(C1_IP), global(C2_IP));
    for (what, src, bare) in [
        ("from its global address", own, false),
        ("without the source link-layer option", own, true),
        (
            "from its link-local address",
            packet::link_local(C1_MAC),
            false,
        ),
    ] {
        let v = lab.expect(
            what,
            Container(vc1),
            &packet::solicitation(C1_MAC, src, c2, bare),
            TC_ACT_REDIRECT,
            Counter::NdpReply,
        );
        assert_eq!(v.frame, advertisement_from_c2(src), "{what}: byte for byte");
    }

    // Left to the network: the owner (or nobody) answers, as without us.
    let unknown = global([10, 10, 9, 9]);
    for (what, frame) in [
        (
            "an address nobody has",
            packet::solicitation(C1_MAC, own, unknown, false),
        ),
        (
            "duplicate address detection",
            packet::solicitation(C1_MAC, [0; 16], own, true),
        ),
        (
            "its own address",
            packet::solicitation(C1_MAC, own, own, false),
        ),
    ] {
        lab.expect(
            what,
            Container(vc1),
            &frame,
            TC_ACT_OK,
            Counter::ContainerPass,
        );
    }

    // What RFC 4861 7.1.1 discards, discarded and counted.
    let good = packet::solicitation(C1_MAC, own, c2, false);
    let mut hop = good.clone();
    hop[14 + 7] = 64;
    let mut sum = good.clone();
    sum[14 + 40 + 2] ^= 0xff;
    let mut code = good.clone();
    code[14 + 40 + 1] = 1;
    let mut zero_option = good.clone();
    zero_option[14 + 40 + 24 + 1] = 0;
    let mut multicast_target = packet::solicitation(C1_MAC, own, c2, false);
    multicast_target[14 + 40 + 8] = 0xff;
    for (what, frame, counter) in [
        ("hop limit 64", hop, Counter::DropBadNdp),
        ("a bad checksum", sum, Counter::DropBadNdp),
        ("code 1", code, Counter::DropBadNdp),
        ("an option of length 0", zero_option, Counter::DropBadNdp),
        ("a multicast target", multicast_target, Counter::DropBadNdp),
        (
            "another's MAC in the source link-layer option",
            packet::solicitation(C1_MAC, own, c2, false)
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 14 + 40 + 24 + 7 { b ^ 1 } else { *b })
                .collect(),
            Counter::DropSpoofedMac,
        ),
    ] {
        lab.expect(what, Container(vc1), &frame, TC_ACT_SHOT, counter);
    }
}
