//! BPF_PROG_TEST_RUN through the real compiled programs, the way in: VXLAN from the underlay
//! (either family) decapsulated into exactly the inner frame, and everything that is not ours
//! or not valid left to the host or dropped with its reason.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::*,
    packet::{self, BROADCAST, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
    per_family,
};

per_family! {
    fn decap_delivers_exactly_the_inner_frame(family) {
        let mut lab = family.lab("dec");
        let inner = c2_to_c1_ping();
        let v = lab.expect(
            "c2 -> c1 over VXLAN",
            Underlay,
            &family.vxlan_from_remote(VNI, PORT, &inner),
            TC_ACT_REDIRECT,
            Counter::Decap,
        );
        assert_eq!(v.frame, inner);
        // Not IP inside (c2's ARP reply to c1): the protocol is left for the veth to parse.
        // Over IPv6 its 42 bytes are less than adjust_room leaves behind the outer header (see
        // vxlan.rs, short_from_ipv6), and arrive whole all the same.
        let arp = c2_arp_reply_to_c1();
        let v = lab.expect(
            "an ARP reply",
            Underlay,
            &family.vxlan_from_remote(VNI, PORT, &arp),
            TC_ACT_REDIRECT,
            Counter::Decap,
        );
        assert_eq!(v.frame, arp);
    }
}

per_family! {
    fn underlay_packets_that_are_not_ours_or_not_valid(family) {
        let mut lab = family.lab("ubad");
        let inner = c2_to_c1_ping();
        let good = family.vxlan_from_remote(VNI, PORT, &inner);
        let (udp, vxlan) = (family.udp_at(), family.vxlan_at());

        // Truncated at (and just past) every header boundary. Below Ethernet+IP+UDP nothing
        // says the packet is VXLAN, so the host gets it; from the UDP header on, it is ours and
        // dropped. (BPF_PROG_TEST_RUN itself refuses an IP ethertype with less than an IP
        // header behind it, so shorter ones are sent from a packet socket in the namespace
        // tests.)
        for len in [udp, udp + 1, udp + 4, udp + 7] {
            lab.expect(
                &format!("truncated to {len}"),
                Underlay,
                &good[..len],
                TC_ACT_OK,
                Counter::UnderlayPass,
            );
        }
        for len in [vxlan, vxlan + 7, vxlan + 8, vxlan + 21] {
            lab.expect(
                &format!("truncated to {len}"),
                Underlay,
                &good[..len],
                TC_ACT_SHOT,
                Counter::DropTooShort,
            );
        }

        for (what, at, value) in [
            ("VXLAN without the I flag", vxlan, 0),
            ("a reserved VXLAN flag set", vxlan, 0x0c),
            ("VXLAN reserved bits set", vxlan + 7, 1),
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            lab.expect(what, Underlay, &bad, TC_ACT_SHOT, Counter::DropBadVxlan);
        }

        lab.expect(
            "unknown VNI",
            Underlay,
            &family.vxlan_from_remote(999, PORT, &inner),
            TC_ACT_SHOT,
            Counter::DropUnknownVni,
        );
        lab.expect(
            "unknown source VTEP",
            Underlay,
            &family.vxlan_from(VNI, 66, PORT, &inner),
            TC_ACT_SHOT,
            Counter::DropUnknownVtep,
        );
        lab.expect(
            "a VTEP of VNI 42 sending into VNI 43",
            Underlay,
            &family.vxlan_from_remote(OTHER_VNI, PORT, &inner),
            TC_ACT_SHOT,
            Counter::DropUnknownVtep,
        );
        let stranger = packet::eth(
            [0x02, 0x42, 9, 9, 9, 9],
            C2_MAC,
            ETH_P_IP,
            &packet::ipv4(C2_IP, C1_IP, 1, 0, &[0; 8]),
        );
        lab.expect(
            "inner MAC not local",
            Underlay,
            &family.vxlan_from_remote(VNI, PORT, &stranger),
            TC_ACT_SHOT,
            Counter::DropNoEndpoint,
        );
        let bcast = packet::eth(
            BROADCAST,
            C2_MAC,
            ETH_P_ARP,
            &packet::arp(1, C2_MAC, C2_IP, [0; 6], C1_IP),
        );
        lab.expect(
            "inner broadcast",
            Underlay,
            &family.vxlan_from_remote(VNI, PORT, &bcast),
            TC_ACT_SHOT,
            Counter::DropNoEndpoint,
        );

        // The other family is never to this node's VTEP: the host's (whose GRO helper's socket
        // drops what it decapsulates, drop_kernel_vxlan).
        lab.expect(
            "VXLAN over the other family",
            Underlay,
            &family.other().vxlan_from_remote(VNI, PORT, &inner),
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
        lab.expect(
            "UDP to another port",
            Underlay,
            &family.vxlan_from_remote(VNI, 4790, &inner),
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
        let mut vlan = good[..12].to_vec();
        vlan.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        vlan.extend_from_slice(&[0, 7]);
        vlan.extend_from_slice(&good[12..]);
        lab.expect(
            "VLAN-tagged",
            Underlay,
            &vlan,
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
        let arp = packet::eth(
            BROADCAST,
            NEXT_HOP_MAC,
            ETH_P_ARP,
            &packet::arp(1, NEXT_HOP_MAC, REMOTE_VTEP, [0; 6], LOCAL_VTEP),
        );
        lab.expect(
            "underlay ARP",
            Underlay,
            &arp,
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
        let runt = packet::eth(UNDERLAY_MAC, NEXT_HOP_MAC, ETH_P_ARP, &[]);
        lab.expect(
            "runt: a bare Ethernet header",
            Underlay,
            &runt,
            TC_ACT_OK,
            Counter::UnderlayPass,
        );

        match family {
            Family::Ipv4 => not_ours_over_ipv4(&mut lab, &good),
            Family::Ipv6 => not_ours_over_ipv6(&mut lab, &good),
        }

        // And after all that, the good packet still goes through.
        lab.expect(
            "the valid packet",
            Underlay,
            &good,
            TC_ACT_REDIRECT,
            Counter::Decap,
        );
    }
}

/// What only IPv4 has: options, fragments, a protocol field.
fn not_ours_over_ipv4(lab: &mut Lab, good: &[u8]) {
    let inner = c2_to_c1_ping();
    // Options: ihl 6, one NOP-padded option word; the UDP header moves 4 bytes back.
    let udp = packet::udp(54321, PORT, &packet::vxlan(VNI, &inner));
    let mut ip = packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 17, 0, &[]);
    ip[0] = 0x46;
    ip.extend_from_slice(&[1, 1, 1, 0]);
    ip.extend_from_slice(&udp);
    let len = ip.len() as u16;
    ip[2..4].copy_from_slice(&len.to_be_bytes());
    let with_options = packet::eth(UNDERLAY_MAC, NEXT_HOP_MAC, ETH_P_IP, &ip);
    lab.expect(
        "outer IPv4 with options",
        Underlay,
        &with_options,
        TC_ACT_OK,
        Counter::UnderlayIpOptions,
    );

    let mut first_fragment = good.to_vec();
    first_fragment[20] = 0x20; // MF
    lab.expect(
        "outer first fragment",
        Underlay,
        &first_fragment,
        TC_ACT_OK,
        Counter::UnderlayFragment,
    );
    let mut later_fragment = good.to_vec();
    later_fragment[21] = 0x10; // offset 16 * 8
    lab.expect(
        "outer later fragment",
        Underlay,
        &later_fragment,
        TC_ACT_OK,
        Counter::UnderlayPass,
    );

    let v6 = packet::eth(UNDERLAY_MAC, NEXT_HOP_MAC, ETH_P_IPV6, &[0x60; 60]);
    lab.expect("IPv6", Underlay, &v6, TC_ACT_OK, Counter::UnderlayPass);
    let tcp = packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        ETH_P_IP,
        &packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 6, 0, &[0; 20]),
    );
    lab.expect("host TCP", Underlay, &tcp, TC_ACT_OK, Counter::UnderlayPass);
}

/// What only IPv6 has: extension headers, a payload length that leaves the header out.
fn not_ours_over_ipv6(lab: &mut Lab, good: &[u8]) {
    let inner = c2_to_c1_ping();
    // VXLAN behind a hop-by-hop header (one PadN option): no Linux VTEP sends it, and the
    // host's only socket on the port (the GRO helper's) drops it.
    let mut hbh = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend(packet::udp(54321, PORT, &packet::vxlan(VNI, &inner)));
    let behind = packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        ETH_P_IPV6,
        &packet::ipv6(REMOTE_VTEP6, LOCAL_VTEP6, 0, 64, &hbh),
    );
    lab.expect(
        "behind an extension header",
        Underlay,
        &behind,
        TC_ACT_OK,
        Counter::UnderlayPass,
    );
    let mut claims_less = good.to_vec();
    claims_less[18..20].copy_from_slice(&20u16.to_be_bytes());
    lab.expect(
        "a payload length shorter than VXLAN and a frame",
        Underlay,
        &claims_less,
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
    // (A cut inside the IPv6 header itself cannot be run: the test-run refuses it.)
}

#[test]
fn a_frame_never_crosses_from_one_vni_to_another() {
    let mut lab = Lab::new("xvni");
    lab.node
        .maps()
        .set_vtep(OTHER_VNI, overlay_common::vtep::from_v4(REMOTE_VTEP))
        .unwrap();
    // c1's MAC sent in VNI 43: c1 is only an endpoint of VNI 42.
    let inner = c2_to_c1_ping();
    let pkt = vxlan_from_remote(OTHER_VNI, REMOTE_VTEP, PORT, &inner);
    lab.expect(
        "VNI 43 frame for a VNI 42 MAC",
        Underlay,
        &pkt,
        TC_ACT_SHOT,
        Counter::DropNoEndpoint,
    );
    // c4's MAC in VNI 43 is delivered.
    let inner = packet::eth(
        C4_MAC,
        C2_MAC,
        ETH_P_IP,
        &packet::ipv4(C2_IP, C1_IP, 1, 0, &packet::icmp_echo(1, 1)),
    );
    let pkt = vxlan_from_remote(OTHER_VNI, REMOTE_VTEP, PORT, &inner);
    let v = lab.expect(
        "VNI 43 frame for c4",
        Underlay,
        &pkt,
        TC_ACT_REDIRECT,
        Counter::Decap,
    );
    assert_eq!(v.frame, inner);
}

/// `frame` (outer IPv4 or IPv6 from `vxlan_from_remote`/`6`) sent to `dst` instead.
fn readdressed(mut frame: Vec<u8>, dst: &[u8]) -> Vec<u8> {
    if frame[12..14] == ETH_P_IP.to_be_bytes() {
        frame[30..34].copy_from_slice(dst);
        frame[24..26].fill(0);
        let c = packet::checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
    } else {
        frame[38..54].copy_from_slice(dst);
    }
    frame
}

per_family! {
    /// Found writing the fuzzer's model: from_underlay took any VXLAN to its port as its own,
    /// whatever the outer destination. A node that routes the underlay (forwarding is on on
    /// every node) decapsulated a tunnel packet between two other nodes: here 10.0.0.2's (or
    /// fd00::2's) to 10.0.0.3 (fd00::3), delivered to c1 instead of forwarded (had the MAC been
    /// 10.0.0.3's container's, dropped as drop_no_endpoint; a broadcast, flooded on this node's
    /// bridge too).
    fn vxlan_for_another_vtep_is_left_to_the_host(family) {
        let mut lab = family.lab("transit");
        let inner = c2_to_c1_ping();
        lab.expect(
            "VXLAN from VTEP 2 to VTEP 3, through us",
            Underlay,
            &readdressed(family.vxlan_from_remote(VNI, PORT, &inner), &family.vtep(3)),
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
        if family == Family::Ipv4 {
            // The other family is never for our VTEP either: IPv6 "from" ::ffff:10.0.0.2 to
            // ::ffff:10.0.0.1, the maps' own form of the two IPv4 VTEPs, was decapsulated too.
            let mapped = overlay_common::vtep::from_v4;
            let mapped6 = readdressed(
                vxlan_from_remote6(VNI, mapped(REMOTE_VTEP), PORT, &inner),
                &mapped(LOCAL_VTEP),
            );
            lab.expect(
                "IPv6 VXLAN between IPv4-mapped VTEPs",
                Underlay,
                &mapped6,
                TC_ACT_OK,
                Counter::UnderlayPass,
            );
        }
    }
}
