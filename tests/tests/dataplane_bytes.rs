//! BPF_PROG_TEST_RUN through the real compiled programs: exact bytes in, exact bytes out,
//! the verdict and the counter for every outcome.
use overlay_common::{Counter, programs};
use overlay_tests::{
    fixture::{Node, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, Verdict},
    lab::*,
    packet::{self, BROADCAST, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

#[test]
fn encap_produces_the_vxlan_packet_rfc7348_describes() {
    let mut lab = Lab::new("enc");
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
    assert_eq!(out.len(), inner.len() + 50);

    // Outer Ethernet: from the underlay interface to the resolved next hop.
    assert_eq!(out[0..6], NEXT_HOP_MAC, "outer destination MAC");
    assert_eq!(out[6..12], UNDERLAY_MAC, "outer source MAC");
    assert_eq!(out[12..14], ETH_P_IP.to_be_bytes(), "outer ethertype");
    // Outer IPv4.
    let ip = &out[14..34];
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
    // UDP.
    let udp = &out[34..42];
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
    assert_eq!(udp[6..8], [0, 0], "UDP checksum zero");
    // VXLAN: I flag, reserved zero, VNI 42.
    assert_eq!(out[42..50], [0x08, 0, 0, 0, 0, 0, 42, 0]);
    // The inner frame, untouched.
    assert_eq!(&out[50..], &inner[..]);
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
fn decap_delivers_exactly_the_inner_frame() {
    let mut lab = Lab::new("dec");
    let inner = c2_to_c1_ping();
    let pkt = vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &inner);
    let v = lab.expect(
        "c2 -> c1 over VXLAN",
        Underlay,
        &pkt,
        TC_ACT_REDIRECT,
        Counter::Decap,
    );
    assert_eq!(v.frame, inner);
}

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
    let reply = packet::eth(
        C1_MAC,
        C2_MAC,
        ETH_P_ARP,
        &packet::arp(2, C2_MAC, C2_IP, C1_MAC, C1_IP),
    );
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
    let vc1 = lab.vc1;
    let unknown = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, C1_IP, [0; 6], [10, 10, 9, 9]),
    );
    lab.expect(
        "who-has an unknown address",
        Container(vc1),
        &unknown,
        TC_ACT_OK,
        Counter::ArpMiss,
    );
    let gratuitous = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, C1_IP, [0; 6], C1_IP),
    );
    lab.expect(
        "gratuitous ARP",
        Container(vc1),
        &gratuitous,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let probe = packet::eth(
        BROADCAST,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(1, C1_MAC, [0; 4], [0; 6], C2_IP),
    );
    lab.expect(
        "RFC 5227 probe from 0.0.0.0",
        Container(vc1),
        &probe,
        TC_ACT_REDIRECT,
        Counter::ArpReply,
    );
    let reply = packet::eth(
        C3_MAC,
        C1_MAC,
        ETH_P_ARP,
        &packet::arp(2, C1_MAC, C1_IP, C3_MAC, C3_IP),
    );
    lab.expect(
        "an ARP reply",
        Container(vc1),
        &reply,
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    let other_vni = packet::eth(
        BROADCAST,
        C4_MAC,
        ETH_P_ARP,
        &packet::arp(1, C4_MAC, C1_IP, [0; 6], C2_IP),
    );
    let vc4 = lab.vc4;
    lab.expect(
        "c2 is not in VNI 43",
        Container(vc4),
        &other_vni,
        TC_ACT_OK,
        Counter::ArpMiss,
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

/// The link-local address the kernel derives from a MAC (modified EUI-64).
fn link_local(m: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xfe, 0x80]);
    a[8..].copy_from_slice(&[m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    a
}

/// An IPv6 packet of a container's, with the hop limit NDP requires (255).
fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    packet::ipv6(src, dst, next, 255, payload)
}

#[test]
fn a_container_speaks_ipv6_only_from_its_own_link_local_address() {
    let mut lab = Lab::new("c6");
    let vc1 = lab.vc1;
    let echo = [128, 0, 0, 0, 0, 1, 0, 1];
    let own = link_local(C1_MAC);
    let to_c2_icmp = |src, icmp: &[u8]| {
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &ipv6(src, link_local(C2_MAC), 58, icmp),
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
        &to_c2(link_local(C3_MAC)),
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
        &ipv6([0; 16], group, 58, &ns),
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
            &ipv6(own, link_local(C2_MAC), 58, &icmp),
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
        &na(link_local(C3_MAC)),
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
            &ipv6(own, group, 58, icmp),
        )
    };
    let advertisement = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut redirect = vec![137, 0, 0, 0, 0, 0, 0, 0];
    redirect.extend(link_local(C3_MAC));
    redirect.extend(link_local(C2_MAC));
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
    let cut = na(link_local(C3_MAC));
    lab.expect(
        "advertisement cut short",
        Container(vc1),
        &cut[..14 + 40 + 12],
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
}

#[test]
fn underlay_packets_that_are_not_ours_or_not_valid() {
    let mut lab = Lab::new("ubad");
    let inner = c2_to_c1_ping();
    let good = vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &inner);

    // Truncated at (and just past) every header boundary. Below Ethernet+IPv4+UDP nothing says
    // the packet is VXLAN, so the host gets it; from the UDP header on, it is ours and dropped.
    // (BPF_PROG_TEST_RUN itself refuses an IPv4 ethertype with less than an IPv4 header behind
    // it, so shorter ones are sent from a packet socket in the namespace tests.)
    for len in [34, 35, 41] {
        lab.expect(
            &format!("truncated to {len}"),
            Underlay,
            &good[..len],
            TC_ACT_OK,
            Counter::UnderlayPass,
        );
    }
    for len in [42, 49, 50, 63] {
        lab.expect(
            &format!("truncated to {len}"),
            Underlay,
            &good[..len],
            TC_ACT_SHOT,
            Counter::DropTooShort,
        );
    }

    let mut no_i_flag = good.clone();
    no_i_flag[42] = 0;
    lab.expect(
        "VXLAN without the I flag",
        Underlay,
        &no_i_flag,
        TC_ACT_SHOT,
        Counter::DropBadVxlan,
    );
    let mut reserved = good.clone();
    reserved[49] = 1;
    lab.expect(
        "VXLAN reserved bits set",
        Underlay,
        &reserved,
        TC_ACT_SHOT,
        Counter::DropBadVxlan,
    );

    let unknown_vni = vxlan_from_remote(999, REMOTE_VTEP, PORT, &inner);
    lab.expect(
        "unknown VNI",
        Underlay,
        &unknown_vni,
        TC_ACT_SHOT,
        Counter::DropUnknownVni,
    );
    let spoofed = vxlan_from_remote(VNI, [10, 0, 0, 66], PORT, &inner);
    lab.expect(
        "unknown source VTEP",
        Underlay,
        &spoofed,
        TC_ACT_SHOT,
        Counter::DropUnknownVtep,
    );
    let wrong_vni_for_vtep = vxlan_from_remote(OTHER_VNI, REMOTE_VTEP, PORT, &inner);
    lab.expect(
        "a VTEP of VNI 42 sending into VNI 43",
        Underlay,
        &wrong_vni_for_vtep,
        TC_ACT_SHOT,
        Counter::DropUnknownVtep,
    );
    let stranger = packet::eth(
        [0x02, 0x42, 9, 9, 9, 9],
        C2_MAC,
        ETH_P_IP,
        &packet::ipv4(C2_IP, C1_IP, 1, 0, &[0; 8]),
    );
    let to_nobody = vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &stranger);
    lab.expect(
        "inner MAC not local",
        Underlay,
        &to_nobody,
        TC_ACT_SHOT,
        Counter::DropNoEndpoint,
    );
    let bcast = packet::eth(
        BROADCAST,
        C2_MAC,
        ETH_P_ARP,
        &packet::arp(1, C2_MAC, C2_IP, [0; 6], C1_IP),
    );
    let flood = vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &bcast);
    lab.expect(
        "inner broadcast",
        Underlay,
        &flood,
        TC_ACT_SHOT,
        Counter::DropNoEndpoint,
    );

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

    let mut first_fragment = good.clone();
    first_fragment[20] = 0x20; // MF
    lab.expect(
        "outer first fragment",
        Underlay,
        &first_fragment,
        TC_ACT_OK,
        Counter::UnderlayFragment,
    );
    let mut later_fragment = good.clone();
    later_fragment[21] = 0x10; // offset 16 * 8
    lab.expect(
        "outer later fragment",
        Underlay,
        &later_fragment,
        TC_ACT_OK,
        Counter::UnderlayPass,
    );

    let other_port = vxlan_from_remote(VNI, REMOTE_VTEP, 4790, &inner);
    lab.expect(
        "UDP to another port",
        Underlay,
        &other_port,
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
    let v6 = packet::eth(UNDERLAY_MAC, NEXT_HOP_MAC, ETH_P_IPV6, &[0x60; 60]);
    lab.expect("IPv6", Underlay, &v6, TC_ACT_OK, Counter::UnderlayPass);
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
    let tcp = packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        ETH_P_IP,
        &packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 6, 0, &[0; 20]),
    );
    lab.expect("host TCP", Underlay, &tcp, TC_ACT_OK, Counter::UnderlayPass);
    let runt = packet::eth(UNDERLAY_MAC, NEXT_HOP_MAC, ETH_P_ARP, &[]);
    lab.expect(
        "runt: a bare Ethernet header",
        Underlay,
        &runt,
        TC_ACT_OK,
        Counter::UnderlayPass,
    );

    // And after all that, the good packet still goes through.
    lab.expect(
        "the valid packet",
        Underlay,
        &good,
        TC_ACT_REDIRECT,
        Counter::Decap,
    );
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

/// An IPv4 packet of `len` bytes in all from c1 to c2 (UDP), with DF set or not.
fn c1_to_c2_sized(len: usize, df: bool, proto: u8) -> Vec<u8> {
    let mut ip = packet::ipv4(C1_IP, C2_IP, proto, 0, &vec![0xab; len - 20]);
    if df {
        ip[6] = 0x40;
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = packet::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    packet::eth(C2_MAC, C1_MAC, ETH_P_IP, &ip)
}

/// The ICMP "fragmentation needed" the kernel's bridged vxlan device would send c1 for `frame`
/// (net/ipv4/ip_tunnel_core.c, iptunnel_pmtud_build_icmp): from c2 to c1, DF, id 0, the
/// original TTL, and the first 548 bytes of the packet quoted.
fn frag_needed(frame: &[u8], mtu: u16) -> Vec<u8> {
    let quote = &frame[14..14 + 548];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend(mtu.to_be_bytes());
    icmp.extend(quote);
    let c = packet::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0x02, 0x40, 0, 0, 0x40, 0, frame[22], 1, 0, 0];
    ip.extend(C2_IP);
    ip.extend(C1_IP);
    let c = packet::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend(icmp);
    packet::eth(C1_MAC, C2_MAC, ETH_P_IP, &ip)
}

/// A UDP packet with DF of exactly the tunnel's MTU is encapsulated; one byte more is answered
/// with ICMP "fragmentation needed" naming that MTU, byte for byte, which is returned.
fn expect_tunnel_mtu(lab: &mut Lab, mtu: usize) -> Verdict {
    let vc1 = lab.vc1;
    lab.expect(
        "exactly the tunnel's MTU",
        Container(vc1),
        &c1_to_c2_sized(mtu, true, 17),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    let big = c1_to_c2_sized(mtu + 1, true, 17);
    let v = lab.expect(
        "one byte more, with DF",
        Container(vc1),
        &big,
        TC_ACT_REDIRECT,
        Counter::DropFragNeeded,
    );
    assert_eq!(
        v.frame,
        frag_needed(&big, mtu as u16),
        "the ICMP error, byte for byte"
    );
    v
}

#[test]
fn a_packet_too_big_for_the_tunnel_is_answered_with_the_mtu_never_lost() {
    let mut lab = Lab::new("pmtu");
    let vc1 = lab.vc1;
    // ul0 has MTU 1500: the tunnel carries IP packets of up to 1450 bytes.
    let v = expect_tunnel_mtu(&mut lab, 1450);
    assert_eq!(
        packet::checksum(&v.frame[34..]),
        0,
        "ICMP checksum verifies"
    );
    // Without DF it is fragmented instead (the test after this one).
    // An ICMP error is never answered with another.
    let mut unreachable = c1_to_c2_sized(1500, true, 1);
    unreachable[34] = 3;
    lab.expect(
        "an ICMP error too big",
        Container(vc1),
        &unreachable,
        TC_ACT_SHOT,
        Counter::DropTooBig,
    );
    let mut echo = c1_to_c2_sized(1500, true, 1);
    echo[34] = 8;
    lab.expect(
        "an ICMP echo too big",
        Container(vc1),
        &echo,
        TC_ACT_REDIRECT,
        Counter::DropFragNeeded,
    );

    // A lowered underlay MTU and a route MTU towards the VTEP count too, once the cached next
    // hop is refreshed (100 ms). The FIB answers a route's MTU when it is locked, as for any
    // forwarded packet (ip_mtu_from_fib_result); learned PMTU exceptions always.
    for (change, path_mtu) in [
        ("ip link set ul0 mtu 1400", 1400u16),
        (
            "ip link set ul0 mtu 1500 && ip route add 10.0.0.2/32 dev ul0 mtu lock 1300",
            1300,
        ),
    ] {
        lab.ns.run(change).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let tunnel = path_mtu - 50;
        let v = lab.expect(
            &format!("{} bytes after {change}", tunnel + 1),
            Container(vc1),
            &c1_to_c2_sized(tunnel as usize + 1, true, 6),
            TC_ACT_REDIRECT,
            Counter::DropFragNeeded,
        );
        assert_eq!(v.frame[40..42], tunnel.to_be_bytes(), "after {change}");
        lab.expect(
            &format!("{tunnel} bytes after {change}"),
            Container(vc1),
            &c1_to_c2_sized(tunnel as usize, true, 6),
            TC_ACT_REDIRECT,
            Counter::Encap,
        );
    }
}

/// The fragments a router cuts IPv4 packet `ip` (no options) into for next-hop MTU `mtu`
/// (RFC 791 3.2): payload pieces of the MTU less the header rounded down to 8 bytes, each
/// behind a copy of the header with its length, offset and MF, and a new header checksum.
/// Offsets add to the packet's own, and the last piece keeps its MF.
fn fragments(ip: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let size = (mtu - 20) & !7;
    let field = u16::from_be_bytes([ip[6], ip[7]]);
    let payload = &ip[20..];
    payload
        .chunks(size)
        .enumerate()
        .map(|(k, piece)| {
            let mut h = ip[..20].to_vec();
            h[2..4].copy_from_slice(&((20 + piece.len()) as u16).to_be_bytes());
            let more = k * size + piece.len() < payload.len() || field & 0x2000 != 0;
            let offset = (field & 0x1fff) + (k * size / 8) as u16;
            h[6..8].copy_from_slice(&(offset | if more { 0x2000 } else { 0 }).to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = packet::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(piece);
            h
        })
        .collect()
}

/// UDP from c1 to c2 with `len` bytes of payload, its checksum as a sender that offloads it
/// leaves it (CHECKSUM_PARTIAL: the pseudo-header's sum, not complemented), and the packet as
/// it must arrive once reassembled (the full checksum).
fn udp_with_offloaded_checksum(len: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut udp = packet::udp(4000, 5000, &data);
    let mut pseudo = C1_IP.to_vec();
    pseudo.extend(C2_IP);
    pseudo.extend([0, 17]);
    pseudo.extend((udp.len() as u16).to_be_bytes());
    let seed = !packet::checksum(&pseudo);
    pseudo.extend(&udp);
    let full = match packet::checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&seed.to_be_bytes());
    let sent = packet::ipv4(C1_IP, C2_IP, 17, 0, &udp);
    udp[6..8].copy_from_slice(&full.to_be_bytes());
    let whole = packet::ipv4(C1_IP, C2_IP, 17, 0, &udp);
    (sent, whole)
}

#[test]
fn an_ipv4_packet_without_df_too_big_for_the_tunnel_is_fragmented() {
    let mut lab = Lab::new("frag");
    let vc1 = lab.vc1;
    let mark = |k: usize| overlay_common::wire::fragment_mark(k as u32, 1424);
    // 3000 bytes through a 1450 tunnel: pieces of 1424, 1424 and 132 bytes of payload.
    let (sent, whole) = udp_with_offloaded_checksum(3000 - 28);
    let frame = packet::eth(C2_MAC, C1_MAC, ETH_P_IP, &sent);
    let want: Vec<Vec<u8>> = fragments(&whole, 1450)
        .iter()
        .map(|f| packet::eth(C2_MAC, C1_MAC, ETH_P_IP, f))
        .collect();
    assert_eq!(want.len(), 3);

    // The original becomes the first fragment, sent back through the port; the others are
    // copies sent back through the port with their piece in the mark, cut when they come by.
    let v = lab.expect(
        "3000 bytes without DF",
        Container(vc1),
        &frame,
        TC_ACT_REDIRECT,
        Counter::Fragments,
    );
    assert_eq!(v.frame, want[0], "the first fragment, checksum completed");
    for (k, piece) in want.iter().enumerate().skip(1) {
        let before = lab.count(Counter::Fragments);
        let v = lab.send_marked(Container(vc1), &frame, mark(k));
        assert_eq!(v.code, TC_ACT_REDIRECT, "fragment {k}");
        assert_eq!(&v.frame, piece, "fragment {k}");
        assert_eq!(lab.count(Counter::Fragments), before + 1, "fragment {k}");
    }
    // Back through the port, each fits the tunnel and is wrapped as any packet.
    for (k, piece) in want.iter().enumerate() {
        let v = lab.expect(
            &format!("fragment {k} coming back"),
            Container(vc1),
            piece,
            TC_ACT_REDIRECT,
            Counter::Encap,
        );
        assert_eq!(v.frame[50..], piece[..], "fragment {k} inside VXLAN");
    }
    // What the receiver reassembles verifies.
    let mut udp = Vec::new();
    for f in &want {
        udp.extend_from_slice(&f[34..]);
    }
    let mut pseudo = C1_IP.to_vec();
    pseudo.extend(C2_IP);
    pseudo.extend([0, 17]);
    pseudo.extend((udp.len() as u16).to_be_bytes());
    pseudo.extend(&udp);
    assert_eq!(
        packet::checksum(&pseudo),
        0,
        "the reassembled UDP checksum verifies"
    );

    // A checksum that is not the offload seed is the sender's own: kept as it is, even wrong.
    let mut own = sent.clone();
    own[26..28].copy_from_slice(&[0x12, 0x34]);
    let v = lab.send(Container(vc1), &packet::eth(C2_MAC, C1_MAC, ETH_P_IP, &own));
    assert_eq!(v.code, TC_ACT_REDIRECT);
    assert_eq!(v.frame[40..42], [0x12, 0x34], "the sender's checksum");

    // A fragment (MF set, offset 800 bytes) is fragmented again: offsets add up, and every
    // piece, the last too, has MF.
    let mut fragment = packet::ipv4(C1_IP, C2_IP, 17, 0, &[0x5a; 2000]);
    fragment[6..8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
    fragment[10..12].copy_from_slice(&[0, 0]);
    let c = packet::checksum(&fragment[..20]);
    fragment[10..12].copy_from_slice(&c.to_be_bytes());
    let frame = packet::eth(C2_MAC, C1_MAC, ETH_P_IP, &fragment);
    let want = fragments(&fragment, 1450);
    let v = lab.send(Container(vc1), &frame);
    assert_eq!(v.frame[14..], want[0][..], "first piece of a fragment");
    let v = lab.send_marked(Container(vc1), &frame, mark(1));
    assert_eq!(
        v.frame[14..],
        want[1][..],
        "last piece of a fragment keeps MF"
    );

    // Not fragmented, dropped and counted: a header with options, SCTP (its CRC offload cannot
    // be completed here), and a copy whose piece lies past the end.
    let mut options = packet::ipv4(C1_IP, C2_IP, 17, 0, &[0; 1600]);
    options[0] = 0x46;
    options.splice(20..20, [1, 1, 1, 0]);
    options[2..4].copy_from_slice(&1624u16.to_be_bytes());
    for (what, frame, mark) in [
        (
            "IPv4 options",
            packet::eth(C2_MAC, C1_MAC, ETH_P_IP, &options),
            0,
        ),
        ("SCTP", c1_to_c2_sized(1500, false, 132), 0),
        (
            "a piece past the end",
            c1_to_c2_sized(1500, false, 17),
            mark(2),
        ),
    ] {
        let before = lab.count(Counter::DropTooBig);
        let v = lab.send_marked(Container(vc1), &frame, mark);
        assert_eq!(v.code, TC_ACT_SHOT, "{what}");
        assert_eq!(lab.count(Counter::DropTooBig), before + 1, "{what}");
    }
}

#[test]
fn an_ipv6_packet_too_big_for_the_tunnel_is_answered_with_packet_too_big() {
    let mut lab = Lab::new("pmtu6");
    let vc1 = lab.vc1;
    let (c1, c2) = (link_local(C1_MAC), link_local(C2_MAC));
    let to_c2 = |len: usize, next: u8, first: u8| {
        let mut payload = vec![0xcd; len - 40];
        payload[0] = first;
        packet::eth(C2_MAC, C1_MAC, ETH_P_IPV6, &ipv6(c1, c2, next, &payload))
    };
    lab.expect(
        "exactly the tunnel's MTU",
        Container(vc1),
        &to_c2(1450, 17, 0),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    let big = to_c2(1500, 17, 0);
    let v = lab.expect(
        "1500 bytes",
        Container(vc1),
        &big,
        TC_ACT_REDIRECT,
        Counter::DropFragNeeded,
    );
    // What iptunnel_pmtud_build_icmpv6 builds: from c2 to c1, the original hop limit, the
    // first 1232 bytes of the packet quoted, the checksum over the pseudo-header.
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend(1450u32.to_be_bytes());
    icmp.extend(&big[14..14 + 1232]);
    let mut pseudo = Vec::new();
    pseudo.extend(c2);
    pseudo.extend(c1);
    pseudo.extend((icmp.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    pseudo.extend(&icmp);
    let c = packet::checksum(&pseudo);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut want_ip = ipv6(c2, c1, 58, &icmp);
    want_ip[7] = big[14 + 7];
    assert_eq!(
        v.frame,
        packet::eth(C1_MAC, C2_MAC, ETH_P_IPV6, &want_ip),
        "the ICMPv6 error, byte for byte"
    );
    lab.expect(
        "an ICMPv6 error too big",
        Container(vc1),
        &to_c2(1500, 58, 1),
        TC_ACT_SHOT,
        Counter::DropTooBig,
    );
    lab.expect(
        "an echo request too big",
        Container(vc1),
        &to_c2(1500, 58, 128),
        TC_ACT_REDIRECT,
        Counter::DropFragNeeded,
    );
}

/// ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) and `msg`.
fn icmpv6_checksum(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> [u8; 2] {
    let mut p = Vec::new();
    p.extend(src);
    p.extend(dst);
    p.extend((msg.len() as u32).to_be_bytes());
    p.extend([0, 0, 0, 58]);
    p.extend(msg);
    packet::checksum(&p).to_be_bytes()
}

/// A neighbour solicitation from `src` for `target`, to the target's solicited-node group, as
/// Linux sends it (hop limit 255, with the source link-layer option unless `bare`).
fn solicitation(from_mac: [u8; 6], src: [u8; 16], target: [u8; 16], bare: bool) -> Vec<u8> {
    let mut dst = [0u8; 16];
    dst[..2].copy_from_slice(&[0xff, 0x02]);
    dst[11..13].copy_from_slice(&[1, 0xff]);
    dst[13..].copy_from_slice(&target[13..]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend(target);
    if !bare {
        icmp.extend([1, 1]);
        icmp.extend(from_mac);
    }
    let c = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&c);
    let group_mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
    packet::eth(group_mac, from_mac, ETH_P_IPV6, &ipv6(src, dst, 58, &icmp))
}

/// The advertisement c2's own kernel would send to `to` (ndisc_send_na for a multicast
/// solicitation): from its address, Solicited and Override, its MAC in the option.
fn advertisement_from_c2(to: [u8; 16]) -> Vec<u8> {
    let target = global(C2_IP);
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend(target);
    icmp.extend([2, 1]);
    icmp.extend(C2_MAC);
    let c = icmpv6_checksum(target, to, &icmp);
    icmp[2..4].copy_from_slice(&c);
    packet::eth(C1_MAC, C2_MAC, ETH_P_IPV6, &ipv6(target, to, 58, &icmp))
}

#[test]
fn neighbour_solicitations_for_overlay_addresses_are_answered_from_the_map() {
    let mut lab = Lab::new("ndp");
    let vc1 = lab.vc1;
    let (own, c2) = (global(C1_IP), global(C2_IP));
    for (what, src, bare) in [
        ("from its global address", own, false),
        ("without the source link-layer option", own, true),
        ("from its link-local address", link_local(C1_MAC), false),
    ] {
        let v = lab.expect(
            what,
            Container(vc1),
            &solicitation(C1_MAC, src, c2, bare),
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
            solicitation(C1_MAC, own, unknown, false),
        ),
        (
            "duplicate address detection",
            solicitation(C1_MAC, [0; 16], own, true),
        ),
        ("its own address", solicitation(C1_MAC, own, own, false)),
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
    let good = solicitation(C1_MAC, own, c2, false);
    let mut hop = good.clone();
    hop[14 + 7] = 64;
    let mut sum = good.clone();
    sum[14 + 40 + 2] ^= 0xff;
    let mut code = good.clone();
    code[14 + 40 + 1] = 1;
    let mut zero_option = good.clone();
    zero_option[14 + 40 + 24 + 1] = 0;
    let mut multicast_target = solicitation(C1_MAC, own, c2, false);
    multicast_target[14 + 40 + 8] = 0xff;
    for (what, frame, counter) in [
        ("hop limit 64", hop, Counter::DropBadNdp),
        ("a bad checksum", sum, Counter::DropBadNdp),
        ("code 1", code, Counter::DropBadNdp),
        ("an option of length 0", zero_option, Counter::DropBadNdp),
        ("a multicast target", multicast_target, Counter::DropBadNdp),
        (
            "another's MAC in the source link-layer option",
            solicitation(C1_MAC, own, c2, false)
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
            &ipv6(src, global(C2_IP), 58, &echo),
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
            &ipv6(global(C1_IP), global(C2_IP), 58, &icmp),
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
        &ipv6(global(C1_IP), global(C2_IP), 58, &echo),
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
        &solicitation(C4_MAC, link_local(C4_MAC), global(C2_IP), false),
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
            &ipv6(own, global(C2_IP), next, payload),
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
    let mut ns = solicitation(C1_MAC, own, global(C2_IP), false);
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

// --- An IPv6 underlay: the VTEPs are fd00::1 (ours) and fd00::2 (c2's) ---

#[test]
fn encap_over_an_ipv6_underlay_is_what_a_vxlan_device_sends() {
    let mut lab = Lab::new_ipv6_underlay("enc6");
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
    assert_eq!(out.len(), inner.len() + 70);
    assert_eq!(out[0..6], NEXT_HOP_MAC, "outer destination MAC");
    assert_eq!(out[6..12], UNDERLAY_MAC, "outer source MAC");
    assert_eq!(out[12..14], ETH_P_IPV6.to_be_bytes(), "outer ethertype");
    // Outer IPv6, as a vxlan device sends it (udp_tunnel6_xmit_skb): no extension headers.
    let ip = &out[14..54];
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
    let udp = &out[54..62];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!((32768..61000).contains(&sport), "source port {sport}");
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
        "UDP checksum zero, as with udp6zerocsumtx"
    );
    assert_eq!(out[62..70], [0x08, 0, 0, 0, 0, 0, 42, 0], "VXLAN");
    assert_eq!(&out[70..], &inner[..], "the inner frame, untouched");
}

#[test]
fn the_tunnel_mtu_over_an_ipv6_underlay_leaves_room_for_70_bytes() {
    expect_tunnel_mtu(&mut Lab::new_ipv6_underlay("pmtu6"), 1500 - 70);
}

#[test]
fn decap_from_an_ipv6_underlay_delivers_exactly_the_inner_frame() {
    let mut lab = Lab::new_ipv6_underlay("dec6");
    let inner = c2_to_c1_ping();
    let v = lab.expect(
        "c2 -> c1 over IPv6",
        Underlay,
        &vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, &inner),
        TC_ACT_REDIRECT,
        Counter::Decap,
    );
    assert_eq!(v.frame, inner);
    // Not IP inside (c2's ARP reply to c1): the protocol is left for the veth to parse. Its 42
    // bytes are less than adjust_room leaves behind outer IPv6 (see vxlan.rs,
    // short_from_ipv6), and arrive whole all the same.
    let arp = packet::eth(
        C1_MAC,
        C2_MAC,
        ETH_P_ARP,
        &packet::arp(2, C2_MAC, C2_IP, C1_MAC, C1_IP),
    );
    let v = lab.expect(
        "an ARP reply over IPv6",
        Underlay,
        &vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, &arp),
        TC_ACT_REDIRECT,
        Counter::Decap,
    );
    assert_eq!(v.frame, arp);
}

#[test]
fn ipv6_underlay_packets_that_are_not_ours_or_not_valid() {
    let mut lab = Lab::new_ipv6_underlay("hostile6");
    let inner = c2_to_c1_ping();
    let mut stranger = REMOTE_VTEP6;
    stranger[15] = 9;
    lab.expect(
        "from a VTEP that is not one of the VNI's",
        Underlay,
        &vxlan_from_remote6(VNI, stranger, PORT, &inner),
        TC_ACT_SHOT,
        Counter::DropUnknownVtep,
    );
    lab.expect(
        "for a VNI this node does not serve",
        Underlay,
        &vxlan_from_remote6(99, REMOTE_VTEP6, PORT, &inner),
        TC_ACT_SHOT,
        Counter::DropUnknownVni,
    );
    // The other family is never to this node's VTEP: the host's (whose GRO helper's socket
    // drops what it decapsulates, drop_kernel_vxlan).
    lab.expect(
        "IPv4 VXLAN on an IPv6 underlay",
        Underlay,
        &vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &inner),
        TC_ACT_OK,
        Counter::UnderlayPass,
    );
    lab.expect(
        "UDP to another port",
        Underlay,
        &vxlan_from_remote6(VNI, REMOTE_VTEP6, 4790, &inner),
        TC_ACT_OK,
        Counter::UnderlayPass,
    );
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
    let good = vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, &inner);
    let mut claims_less = good.clone();
    claims_less[18..20].copy_from_slice(&20u16.to_be_bytes());
    lab.expect(
        "a payload length shorter than VXLAN and a frame",
        Underlay,
        &claims_less,
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
    lab.expect(
        "cut after the VXLAN header",
        Underlay,
        &good[..14 + 40 + 16],
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
    // (A cut inside the IPv6 header itself cannot be run: the test-run refuses it.)
    lab.expect(
        "cut inside the UDP header",
        Underlay,
        &good[..14 + 40 + 4],
        TC_ACT_OK,
        Counter::UnderlayPass,
    );
    let mut flags = good.clone();
    flags[62] = 0x0c;
    lab.expect(
        "a reserved VXLAN flag set",
        Underlay,
        &flags,
        TC_ACT_SHOT,
        Counter::DropBadVxlan,
    );
}

/// The verifier walks every path of a program once per state it cannot merge with one already
/// seen. A change that multiplies the states (a flag it knows, carried through a loop; a
/// running count) costs every agent start and creeps towards the kernel's limit of 1,000,000
/// instructions: from_container went from 108,000 to 617,000 that way, and an agent restarted
/// on a loaded machine then took longer than its lease (packets lost). On 6.18 it takes
/// 174,000 now (from_underlay 7,200, with the checksum and ECN of issue 31); the budgets leave
/// room to grow, not to multiply.
#[test]
fn every_program_verifies_well_within_the_kernels_limit() {
    let mut node = Node::load(&overlay_tests::unique("vcost")).unwrap();
    for (name, budget) in [
        (programs::FROM_CONTAINER, 250_000),
        (programs::FROM_UNDERLAY, 20_000),
        (programs::GRO_SINK, 1_000),
        (programs::FRAGMENT, 20_000),
        (programs::FRAGMENT_FIRST, 40_000),
    ] {
        let verified = node
            .dataplane
            .program(name)
            .unwrap()
            .info()
            .unwrap()
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16+)");
        eprintln!("{name}: {verified} instructions verified (budget {budget})");
        assert!(
            verified <= budget,
            "{name}: {verified} instructions verified, over its budget of {budget}"
        );
    }
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

/// `inner` wrapped by the remote VTEP over either underlay, the outer ECN field `ecn`.
fn vxlan_with_outer_ecn(ipv6_underlay: bool, ecn: u8, inner: &[u8]) -> Vec<u8> {
    if ipv6_underlay {
        let mut p = vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, inner);
        p[15] |= ecn << 4;
        p
    } else {
        let udp = packet::udp(54321, PORT, &packet::vxlan(VNI, inner));
        packet::eth(
            UNDERLAY_MAC,
            NEXT_HOP_MAC,
            ETH_P_IP,
            &packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 17, ecn, &udp),
        )
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

/// The kernel's vxlan_bridge_1d.sh test_ecn_decap, and the rest of the table: every outer ECN
/// over every inner ECN, IPv4 and IPv6 inside, over both underlays; an IPv4 header's checksum
/// right after the rewrite; CE over Not-ECT dropped and counted.
#[test]
fn decap_passes_the_outer_ecn_on_as_rfc_6040_says() {
    for ipv6_underlay in [false, true] {
        let mut lab = if ipv6_underlay {
            Lab::new_ipv6_underlay("ecn6")
        } else {
            Lab::new("ecn")
        };
        for ipv6_inner in [false, true] {
            for outer in [NOT_ECT, ECT1, ECT0, CE] {
                for inner in [NOT_ECT, ECT1, ECT0, CE] {
                    let what = format!(
                        "outer {outer} over inner {inner} (IPv6 inside: {ipv6_inner}, IPv6 \
                         underlay: {ipv6_underlay})"
                    );
                    let pkt = vxlan_with_outer_ecn(
                        ipv6_underlay,
                        outer,
                        &c2_to_c1_with_ecn(ipv6_inner, inner),
                    );
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
        let arp = packet::eth(
            C1_MAC,
            C2_MAC,
            ETH_P_ARP,
            &packet::arp(2, C2_MAC, C2_IP, C1_MAC, C1_IP),
        );
        let v = lab.expect(
            "an ARP reply under CE",
            Underlay,
            &vxlan_with_outer_ecn(ipv6_underlay, CE, &arp),
            TC_ACT_REDIRECT,
            Counter::Decap,
        );
        assert_eq!(v.frame, arp);
    }
}

/// The same rule on the way to the bridge: remote broadcast (decap_flood).
#[test]
fn decap_of_a_broadcast_passes_the_outer_ecn_on_too() {
    let mut lab = Lab::new("ecnb");
    let flood = overlay_common::Flood {
        bridge: lab.vc1,
        ..Default::default()
    };
    lab.node.maps().flood.insert(VNI, flood, 0).unwrap();
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
        &vxlan_with_outer_ecn(false, CE, &broadcast(ECT0)),
        TC_ACT_REDIRECT,
        Counter::DecapFlood,
    );
    assert_eq!(v.frame, broadcast(CE));
    lab.expect(
        "CE over Not-ECT, broadcast",
        Underlay,
        &vxlan_with_outer_ecn(false, CE, &broadcast(NOT_ECT)),
        TC_ACT_SHOT,
        Counter::DropEcn,
    );
}

/// `pkt` (VXLAN over IPv4 or IPv6, no extension headers) with its outer UDP checksum computed.
fn with_udp_checksum(mut pkt: Vec<u8>, ipv6_underlay: bool) -> Vec<u8> {
    let (addrs, udp_at) = if ipv6_underlay {
        (14 + 8..14 + 40, 14 + 40)
    } else {
        (14 + 12..14 + 20, 14 + 20)
    };
    let c = packet::udp_checksum(&pkt[addrs], &pkt[udp_at..]);
    pkt[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
    pkt
}

/// The kernel drops a UDP datagram with a wrong checksum before its vxlan device sees it; zero
/// is "no checksum" (over IPv6 too on our ports, as udp6zerocsumrx). A test-run skb is
/// CHECKSUM_NONE: the program sums it, as it does for every packet nobody validated.
#[test]
fn a_wrong_outer_udp_checksum_is_dropped_a_right_one_or_zero_delivered() {
    for ipv6_underlay in [false, true] {
        let mut lab = if ipv6_underlay {
            Lab::new_ipv6_underlay("csum6")
        } else {
            Lab::new("csum")
        };
        let at = if ipv6_underlay {
            14 + 40 + 6
        } else {
            14 + 20 + 6
        };
        // Short and long inner frames: one piece of the sum, several and a rest.
        for inner in [c2_to_c1_ping(), c2_to_c1_sized(1400)] {
            let zero = vxlan_with_outer_ecn(ipv6_underlay, 0, &inner);
            let v = lab.expect(
                "checksum zero",
                Underlay,
                &zero,
                TC_ACT_REDIRECT,
                Counter::Decap,
            );
            assert_eq!(v.frame, inner);
            let right = with_udp_checksum(zero.clone(), ipv6_underlay);
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
    lab.node.maps().flood.insert(VNI, flood, 0).unwrap();
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

#[test]
fn vxlan_for_another_vtep_is_left_to_the_host() {
    // Found writing the fuzzer's model: from_underlay took any VXLAN to its port as its own,
    // whatever the outer destination. A node that routes the underlay (forwarding is on on
    // every node) decapsulated a tunnel packet between two other nodes: here 10.0.0.2's to
    // 10.0.0.3, delivered to c1 instead of forwarded (had the MAC been 10.0.0.3's container's,
    // dropped as drop_no_endpoint; a broadcast, flooded on this node's bridge too).
    let mut lab = Lab::new("transit");
    let inner = c2_to_c1_ping();
    let transit = readdressed(
        vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &inner),
        &[10, 0, 0, 3],
    );
    // The other family is never for our VTEP either: IPv6 "from" ::ffff:10.0.0.2 to
    // ::ffff:10.0.0.1, the maps' own form of the two IPv4 VTEPs, was decapsulated too.
    let mapped = overlay_common::vtep::from_v4;
    let mapped6 = readdressed(
        vxlan_from_remote6(VNI, mapped(REMOTE_VTEP), PORT, &inner),
        &mapped(LOCAL_VTEP),
    );
    for (what, frame) in [
        ("VXLAN from 10.0.0.2 to 10.0.0.3, through us", &transit),
        ("IPv6 VXLAN between IPv4-mapped VTEPs", &mapped6),
    ] {
        lab.expect(what, Underlay, frame, TC_ACT_OK, Counter::UnderlayPass);
    }
    let mut lab6 = Lab::new_ipv6_underlay("transit6");
    let mut fd00_3 = REMOTE_VTEP6;
    fd00_3[15] = 3;
    lab6.expect(
        "VXLAN from fd00::2 to fd00::3, through us",
        Underlay,
        &readdressed(vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, &inner), &fd00_3),
        TC_ACT_OK,
        Counter::UnderlayPass,
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
