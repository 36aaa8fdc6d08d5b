//! BPF_PROG_TEST_RUN through the real compiled programs: what a container may send. A frame
//! from another MAC or address (IPv4, ARP, IPv6 link-local or dual-stack, behind extension
//! headers or a second VLAN tag), a router's message, or UDP to a tunnel port is dropped and
//! counted; what is not for the overlay is left to the bridge.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::*,
    packet::{self, BROADCAST, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

#[test]
fn container_frames_that_are_not_for_the_overlay_or_not_allowed() {
    let mut lab = Lab::new("cbad");
    let (vc1, vc4) = (lab.vc1, lab.vc4);
    let icmp = packet::icmp_echo(1, 1);
    let to_c2 = |src_mac, src_ip| {
        packet::eth(
            C2_MAC,
            src_mac,
            ETH_P_IP,
            &packet::ipv4(src_ip, C2_IP, 1, 0, &icmp),
        )
    };

    lab.expect(
        "forged source MAC",
        Container(vc1),
        &to_c2(C3_MAC, C1_IP),
        TC_ACT_SHOT,
        Counter::DropSpoofedMac,
    );
    lab.expect(
        "forged source IP",
        Container(vc1),
        &to_c2(C1_MAC, C3_IP),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    let arp_lie = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, C3_IP, [0; 6], C2_IP),
    );
    lab.expect(
        "ARP claiming c3's address",
        Container(vc1),
        &arp_lie,
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    let arp_mac_lie = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C3_MAC, C1_IP, [0; 6], C2_IP),
    );
    lab.expect(
        "ARP with another sender MAC",
        Container(vc1),
        &arp_mac_lie,
        TC_ACT_SHOT,
        Counter::DropSpoofedMac,
    );
    let arp_runt = packet::eth(BROADCAST, C1_MAC, ETH_P_ARP, &[0, 1, 8, 0]);
    lab.expect(
        "truncated ARP",
        Container(vc1),
        &arp_runt,
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
    let unknown = packet::eth(
        [0x02, 0x42, 9, 9, 9, 9],
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, [10, 10, 9, 9], 1, 0, &icmp),
    );
    lab.expect(
        "unknown destination MAC",
        Container(vc1),
        &unknown,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let bcast = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, [10, 10, 255, 255], 17, 0, &packet::udp(68, 67, b"x")),
    );
    lab.expect(
        "broadcast",
        Container(vc1),
        &bcast,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let lldp = packet::eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], C1_MAC, 0x88cc, &[0; 32]);
    lab.expect(
        "non-IP",
        Container(vc1),
        &lldp,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    // c4 is in VNI 43: c2's MAC is only known in VNI 42, so nothing is encapsulated.
    let cross = packet::eth(
        C2_MAC,
        C4_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, C2_IP, 1, 0, &icmp),
    );
    lab.expect(
        "VNI 43 frame for a VNI 42 MAC",
        Container(vc4),
        &cross,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let stranger = packet::eth(
        C2_MAC,
        [2, 0, 0, 0, 0, 9],
        ETH_P_IP,
        &packet::ipv4(C1_IP, C2_IP, 1, 0, &icmp),
    );
    let underlay = lab.underlay;
    lab.expect(
        "a port the agent does not manage",
        Container(underlay),
        &stranger,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
}

#[test]
fn a_container_speaks_ipv6_only_from_its_own_link_local_address() {
    let mut lab = Lab::new("c6");
    let vc1 = lab.vc1;
    let echo = [128, 0, 0, 0, 0, 1, 0, 1];
    let own = packet::link_local(C1_MAC);
    let to_c2_icmp = |src, icmp: &[u8]| {
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(src, packet::link_local(C2_MAC), 58, icmp),
        )
    };
    let to_c2 = |src| to_c2_icmp(src, &echo);
    lab.expect(
        "from its own link-local address",
        Container(vc1),
        &to_c2(own),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    lab.expect(
        "from c3's link-local address",
        Container(vc1),
        &to_c2(packet::link_local(C3_MAC)),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    let mut global = [0u8; 16];
    global[..4].copy_from_slice(&[0xfd, 0, 0, 0x10]);
    global[15] = 3;
    lab.expect(
        "from an address that is nobody's",
        Container(vc1),
        &to_c2(global),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    // Duplicate address detection: a solicitation from :: to the solicited-node group.
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..].copy_from_slice(&[1, 0xff, own[13], own[14], own[15]]);
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend(own);
    let dad = packet::eth(
        [0x33, 0x33, 0xff, own[13], own[14], own[15]],
        C1_MAC,
        ETH_P_IPV6,
        &container_ipv6([0; 16], group, 58, &ns),
    );
    lab.expect(
        "duplicate address detection",
        Container(vc1),
        &dad,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    // Neighbour advertisements: for its own address, and one claiming c3's.
    let na = |target: [u8; 16]| {
        let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        icmp.extend(target);
        icmp.extend([2, 1]);
        icmp.extend(C1_MAC);
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(own, packet::link_local(C2_MAC), 58, &icmp),
        )
    };
    lab.expect(
        "advertising its own address",
        Container(vc1),
        &na(own),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    lab.expect(
        "advertising c3's address",
        Container(vc1),
        &na(packet::link_local(C3_MAC)),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    // A container is a host: no router advertisement (even bare, shorter than any neighbour
    // message) and no redirect; its router solicitations go to the bridge only.
    let mut all_nodes = [0u8; 16];
    all_nodes[..2].copy_from_slice(&[0xff, 0x02]);
    all_nodes[15] = 1;
    let mut all_routers = all_nodes;
    all_routers[15] = 2;
    let to_group = |group: [u8; 16], icmp: &[u8]| {
        packet::eth(
            [0x33, 0x33, 0, 0, 0, group[15]],
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(own, group, 58, icmp),
        )
    };
    let advertisement = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut redirect = vec![137, 0, 0, 0, 0, 0, 0, 0];
    redirect.extend(packet::link_local(C3_MAC));
    redirect.extend(packet::link_local(C2_MAC));
    for (what, frame, code, counter) in [
        (
            "a router advertisement",
            to_group(all_nodes, &advertisement),
            TC_ACT_SHOT,
            Counter::DropRouterMessage,
        ),
        (
            "a redirect",
            to_c2_icmp(own, &redirect),
            TC_ACT_SHOT,
            Counter::DropRouterMessage,
        ),
        (
            "a router solicitation",
            to_group(all_routers, &[133, 0, 0, 0, 0, 0, 0, 0]),
            TC_ACT_OK,
            Counter::ContainerPass,
        ),
    ] {
        lab.expect(what, Container(vc1), &frame, code, counter);
    }
    // Cut inside the target address: it claims nothing, and the receiver's kernel discards it.
    // (A cut inside the IPv6 header itself cannot be run: BPF_PROG_TEST_RUN refuses it.)
    let cut = na(packet::link_local(C3_MAC));
    lab.expect(
        "advertisement cut short",
        Container(vc1),
        &cut[..14 + 40 + 12],
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
}

#[test]
fn a_container_speaks_only_from_its_own_address_on_a_dual_stack_network() {
    let mut lab = Lab::new("ds6");
    let (vc1, vc4) = (lab.vc1, lab.vc4);
    let echo = [128, 0, 0, 0, 0, 1, 0, 1];
    let to_c2 = |src| {
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(src, global(C2_IP), 58, &echo),
        )
    };
    lab.expect(
        "from its own address",
        Container(vc1),
        &to_c2(global(C1_IP)),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    lab.expect(
        "from c3's address",
        Container(vc1),
        &to_c2(global(C3_IP)),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    let na = |target: [u8; 16]| {
        let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend(target);
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(global(C1_IP), global(C2_IP), 58, &icmp),
        )
    };
    lab.expect(
        "advertising its own address",
        Container(vc1),
        &na(global(C1_IP)),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    lab.expect(
        "advertising c2's address",
        Container(vc1),
        &na(global(C2_IP)),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    // c4 has c1's IPv4 address in VNI 43, which is IPv4 only: no IPv6 address is its own but
    // its link-local one, and nobody answers for fd00:10::.
    let from_c4 = packet::eth(
        C2_MAC,
        C4_MAC,
        ETH_P_IPV6,
        &container_ipv6(global(C1_IP), global(C2_IP), 58, &echo),
    );
    lab.expect(
        "c4 from the address c1 has in VNI 42",
        Container(vc4),
        &from_c4,
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    lab.expect(
        "c4 soliciting in an IPv4-only network",
        Container(vc4),
        &packet::solicitation(C4_MAC, packet::link_local(C4_MAC), global(C2_IP), false),
        TC_ACT_OK,
        Counter::ContainerPass,
    );
}

/// `payload` behind a destination options header (8 bytes of padding) carrying `next`.
fn behind_destination_options(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![next, 0, 1, 4, 0, 0, 0, 0];
    v.extend(payload);
    v
}

#[test]
fn ipv6_that_is_malformed_or_hides_behind_extension_headers() {
    let mut lab = Lab::new("bad6");
    let vc1 = lab.vc1;
    let own = global(C1_IP);
    let na_for = |target: [u8; 16]| {
        let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend(target);
        icmp
    };
    let to_c2 = |next: u8, payload: &[u8]| {
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(own, global(C2_IP), next, payload),
        )
    };
    // An advertisement for c2's address behind a destination options header is still one.
    lab.expect(
        "NA for c2 behind destination options",
        Container(vc1),
        &to_c2(60, &behind_destination_options(58, &na_for(global(C2_IP)))),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    lab.expect(
        "NA for itself behind destination options",
        Container(vc1),
        &to_c2(60, &behind_destination_options(58, &na_for(own))),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    // Five extension headers: more than the check reads, refused rather than let through.
    let mut chain = na_for(global(C2_IP));
    for _ in 0..5 {
        chain = behind_destination_options(if chain[0] == 136 { 58 } else { 60 }, &chain);
    }
    lab.expect(
        "a chain of five extension headers",
        Container(vc1),
        &to_c2(60, &chain),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    // A chain whose header length runs past the end, a fragment, UDP behind hop-by-hop: they
    // claim no address and go on (the receiver's stack judges them).
    let mut runaway = behind_destination_options(58, &na_for(global(C2_IP)));
    runaway[1] = 200;
    for (what, frame) in [
        (
            "an extension header running past the end",
            to_c2(60, &runaway),
        ),
        (
            "a fragment header",
            to_c2(44, &[58, 0, 0, 1, 0, 0, 0, 1, 136, 0, 0, 0]),
        ),
        (
            "UDP behind hop-by-hop",
            to_c2(0, &behind_destination_options(17, &[0; 12])),
        ),
        ("ICMPv6 cut after its type", to_c2(58, &[136])),
    ] {
        lab.expect(
            what,
            Container(vc1),
            &frame,
            TC_ACT_REDIRECT,
            Counter::Encap,
        );
    }
    // A solicitation behind extension headers is not answered: left to the network.
    let mut ns = packet::solicitation(C1_MAC, own, global(C2_IP), false);
    let icmp = ns.split_off(14 + 40);
    ns[14 + 6] = 60;
    let len = (icmp.len() + 8) as u16;
    ns[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
    ns.extend(behind_destination_options(58, &icmp));
    lab.expect(
        "NS behind destination options",
        Container(vc1),
        &ns,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
}

#[test]
fn a_frame_hidden_behind_a_second_vlan_tag_is_refused() {
    // Found writing the fuzzer's model: from_container left VLAN-tagged frames to the bridge
    // or delivered them unread. The kernel strips a frame's first tag before TC, so a tag still in the frame
    // is a second one, and the receiving kernel unwraps an outer 802.1p priority tag (VLAN 0)
    // and takes what is behind it: here an ARP reply from c1 claiming c2's address, for c3.
    let mut lab = Lab::new("qinq");
    let vc1 = lab.vc1;
    let spoof = packet::arp(2, C1_MAC, C2_IP, C3_MAC, C3_IP);
    for tpid in [ETH_P_8021Q, 0x88a8] {
        let mut frame = packet::eth(C3_MAC, C1_MAC, tpid, &[0, 0]);
        frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        frame.extend_from_slice(&spoof);
        lab.expect(
            &format!("ARP behind a {tpid:#06x} tag, VLAN 0"),
            Container(vc1),
            &frame,
            TC_ACT_SHOT,
            Counter::DropSpoofedIp,
        );
    }
}
