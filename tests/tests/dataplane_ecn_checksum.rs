//! BPF_PROG_TEST_RUN through the real compiled programs: what decapsulation checks and carries
//! over besides the frame, on both underlay families: the outer ECN field (RFC 6040) and the
//! outer UDP checksum.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::*,
    packet::{self, BROADCAST, ETH_P_IP, ETH_P_IPV6},
    per_family,
};

/// c2's frame to c1 carrying an IPv4 or IPv6 ping with ECN field `ecn` (the rest of the
/// traffic class 0), built whole for each value, so its IPv4 header checksum is computed from
/// scratch, never updated.
fn c2_to_c1_with_ecn(ipv6_inner: bool, ecn: u8) -> Vec<u8> {
    if ipv6_inner {
        let mut ip = packet::ipv6(global(C2_IP), global(C1_IP), 59, 64, b"no next header");
        ip[1] |= ecn << 4;
        packet::eth(C1_MAC, C2_MAC, ETH_P_IPV6, &ip)
    } else {
        c2_to_c1_ping_with_tos(ecn)
    }
}

const NOT_ECT: u8 = 0;

const ECT1: u8 = 1;

const ECT0: u8 = 2;

const CE: u8 = 3;

/// RFC 6040 section 4.2's table, written out: the inner ECN that arrives for (outer, inner),
/// None for a drop.
fn rfc6040(outer: u8, inner: u8) -> Option<u8> {
    match (outer, inner) {
        (CE, NOT_ECT) => None,
        (_, NOT_ECT) => Some(NOT_ECT),
        (CE, _) => Some(CE),
        (ECT1, ECT0) => Some(ECT1),
        (_, inner) => Some(inner),
    }
}

per_family! {
    /// The kernel's vxlan_bridge_1d.sh test_ecn_decap, and the rest of the table: every outer
    /// ECN over every inner ECN, IPv4 and IPv6 inside; an IPv4 header's checksum right after
    /// the rewrite; CE over Not-ECT dropped and counted.
    fn decap_passes_the_outer_ecn_on_as_rfc_6040_says(family) {
        let mut lab = family.lab("ecn");
        for ipv6_inner in [false, true] {
            for outer in [NOT_ECT, ECT1, ECT0, CE] {
                for inner in [NOT_ECT, ECT1, ECT0, CE] {
                    let what =
                        format!("outer {outer} over inner {inner} (IPv6 inside: {ipv6_inner})");
                    let pkt =
                        family.vxlan_with_outer_ecn(outer, &c2_to_c1_with_ecn(ipv6_inner, inner));
                    match rfc6040(outer, inner) {
                        Some(arrives) => {
                            let v =
                                lab.expect(&what, Underlay, &pkt, TC_ACT_REDIRECT, Counter::Decap);
                            assert_eq!(v.frame, c2_to_c1_with_ecn(ipv6_inner, arrives), "{what}");
                        }
                        None => {
                            lab.expect(&what, Underlay, &pkt, TC_ACT_SHOT, Counter::DropEcn);
                        }
                    }
                }
            }
        }
        // Not IP inside: nothing to mark, nothing to drop.
        let arp = c2_arp_reply_to_c1();
        let v = lab.expect(
            "an ARP reply under CE",
            Underlay,
            &family.vxlan_with_outer_ecn(CE, &arp),
            TC_ACT_REDIRECT,
            Counter::Decap,
        );
        assert_eq!(v.frame, arp);
    }
}

per_family! {
    /// The same rule on the way to the bridge: remote broadcast (decap_flood).
    fn decap_of_a_broadcast_passes_the_outer_ecn_on_too(family) {
        let mut lab = family.lab("ecnb");
        let flood = overlay_common::Flood {
            bridge: lab.vc1,
            ..Default::default()
        };
        lab.node.maps().tables_mut().flood.insert(VNI, flood, 0).unwrap();
        let broadcast = |ecn| {
            let udp = packet::udp(5000, 5000, b"to everyone");
            packet::eth(
                BROADCAST,
                C2_MAC,
                ETH_P_IP,
                &packet::ipv4(C2_IP, [10, 10, 255, 255], 17, ecn, &udp),
            )
        };
        let v = lab.expect(
            "CE over ECT(0), broadcast",
            Underlay,
            &family.vxlan_with_outer_ecn(CE, &broadcast(ECT0)),
            TC_ACT_REDIRECT,
            Counter::DecapFlood,
        );
        assert_eq!(v.frame, broadcast(CE));
        lab.expect(
            "CE over Not-ECT, broadcast",
            Underlay,
            &family.vxlan_with_outer_ecn(CE, &broadcast(NOT_ECT)),
            TC_ACT_SHOT,
            Counter::DropEcn,
        );
    }
}

per_family! {
    /// The kernel drops a UDP datagram with a wrong checksum before its vxlan device sees it;
    /// zero is "no checksum" (over IPv6 too on our ports, as udp6zerocsumrx). A test-run skb is
    /// CHECKSUM_NONE: the program sums it, as it does for every packet nobody validated.
    fn a_wrong_outer_udp_checksum_is_dropped_a_right_one_or_zero_delivered(family) {
        let mut lab = family.lab("csum");
        let at = family.udp_at() + 6;
        // Short and long inner frames: one piece of the sum, several and a rest.
        for inner in [c2_to_c1_ping(), c2_to_c1_sized(1400)] {
            let zero = family.vxlan_with_outer_ecn(0, &inner);
            let v = lab.expect(
                "checksum zero",
                Underlay,
                &zero,
                TC_ACT_REDIRECT,
                Counter::Decap,
            );
            assert_eq!(v.frame, inner);
            let right = family.with_udp_checksum(zero.clone());
            assert_ne!(right[at..at + 2], [0, 0]);
            let v = lab.expect(
                "the right checksum",
                Underlay,
                &right,
                TC_ACT_REDIRECT,
                Counter::Decap,
            );
            assert_eq!(v.frame, inner);
            let mut wrong = right.clone();
            wrong[at + 1] ^= 0x40;
            lab.expect(
                "a wrong checksum",
                Underlay,
                &wrong,
                TC_ACT_SHOT,
                Counter::DropBadChecksum,
            );
            // The checksum right, a payload byte damaged on the way.
            let mut damaged = right.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 0x01;
            lab.expect(
                "a damaged payload",
                Underlay,
                &damaged,
                TC_ACT_SHOT,
                Counter::DropBadChecksum,
            );
        }
    }
}

/// c2's IPv4 UDP datagram to c1, `len` bytes of frame in all.
fn c2_to_c1_sized(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 14 - 20 - 8).map(|i| i as u8).collect();
    let udp = packet::udp(5001, 5001, &payload);
    packet::eth(
        C1_MAC,
        C2_MAC,
        ETH_P_IP,
        &packet::ipv4(C2_IP, C1_IP, 17, 0, &udp),
    )
}
