//! What a hostile container tries against the dataplane (issue 25), through the real compiled
//! programs with BPF_PROG_TEST_RUN: a VXLAN packet for another network sent through the
//! gateway, ARP of another hardware type carrying another container's address, broadcast
//! dressed up as a multicast group to dodge storm control, a flood of IGMP joins.
use overlay_common::{Counter, Flood, GroupKey, MAX_GROUPS_PER_PORT};
use overlay_tests::{
    fixture::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::*,
    packet::{self, BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

/// The bridge's MAC as a container sees its gateway: a MAC that is no endpoint.
const GATEWAY_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x0a, 0x00, 0x01];
const UDP: u8 = 17;

/// c1's UDP datagram to `dst`:`dport` through the MAC `via`, carrying a VXLAN packet for VNI 43
/// (the other network) with a frame for c4 in it: the cross-network injection of issue 25.
fn injection(via: [u8; 6], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let inner = packet::eth(
        C4_MAC,
        [0x02, 0x42, 10, 11, 1, 9],
        ETH_P_IP,
        &packet::ipv4([10, 11, 1, 9], C1_IP, 1, 0, &packet::icmp_echo(9, 9)),
    );
    let udp = packet::udp(40000, dport, &packet::vxlan(OTHER_VNI, &inner));
    packet::eth(
        via,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, dst, UDP, 0, &udp),
    )
}

/// An IPv4 packet's flags and fragment offset set (header checksum left as it was: the
/// programs do not read it).
fn with_frag(mut frame: Vec<u8>, more: bool, offset8: u16) -> Vec<u8> {
    let v = offset8 | if more { 0x2000 } else { 0 };
    frame[20..22].copy_from_slice(&v.to_be_bytes());
    frame
}

#[test]
fn a_container_cannot_send_vxlan_to_any_vtep_through_its_gateway() {
    let mut lab = Lab::new("inj");
    let (vc1, vc4) = (lab.vc1, lab.vc4);
    for (what, frame) in [
        (
            "to another node's VTEP through the gateway",
            injection(GATEWAY_MAC, REMOTE_VTEP, PORT),
        ),
        (
            "to this node's own VTEP",
            injection(GATEWAY_MAC, LOCAL_VTEP, PORT),
        ),
        (
            "to another container (which could forward it)",
            injection(C2_MAC, C2_IP, PORT),
        ),
        (
            "as the first of several fragments",
            with_frag(injection(GATEWAY_MAC, REMOTE_VTEP, PORT), true, 0),
        ),
    ] {
        lab.expect(
            what,
            Container(vc1),
            &frame,
            TC_ACT_SHOT,
            Counter::DropTunnelPort,
        );
    }
    // IPv4 options move the UDP header: still found.
    let mut with_options = injection(GATEWAY_MAC, REMOTE_VTEP, PORT);
    with_options[14] = 0x46;
    with_options.splice(34..34, [1, 1, 1, 0]);
    lab.expect(
        "behind IPv4 options",
        Container(vc1),
        &with_options,
        TC_ACT_SHOT,
        Counter::DropTunnelPort,
    );
    // From the other network's container too: the port is every network's guard.
    let mut from_c4 = injection(GATEWAY_MAC, REMOTE_VTEP, PORT);
    from_c4[6..12].copy_from_slice(&C4_MAC);
    lab.expect(
        "from VNI 43",
        Container(vc4),
        &from_c4,
        TC_ACT_SHOT,
        Counter::DropTunnelPort,
    );
    // What is not refused: another UDP port, a later fragment (no UDP header in it), DNS.
    lab.expect(
        "UDP to a port no network uses",
        Container(vc1),
        &injection(GATEWAY_MAC, REMOTE_VTEP, PORT + 1),
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    lab.expect(
        "a later fragment whose bytes look like a VXLAN port",
        Container(vc1),
        &with_frag(injection(GATEWAY_MAC, REMOTE_VTEP, PORT), false, 185),
        TC_ACT_OK,
        Counter::ContainerPass,
    );
    lab.expect(
        "UDP to another container on another port",
        Container(vc1),
        &injection(C2_MAC, C2_IP, 53),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    // The port of a network of the cluster this node does not serve: a legacy host's kernel
    // vxlan device would take it from anyone.
    lab.node
        .maps()
        .tables_mut()
        .cluster_ports
        .insert(8472u32, 1u32, 0)
        .unwrap();
    lab.expect(
        "to a port another network of the cluster uses",
        Container(vc1),
        &injection(GATEWAY_MAC, [10, 0, 0, 9], 8472),
        TC_ACT_SHOT,
        Counter::DropTunnelPort,
    );
    // A first fragment too short to hold the ports is no UDP any stack takes.
    let mut runt = packet::eth(
        GATEWAY_MAC,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, REMOTE_VTEP, UDP, 0, &[0x9c, 0x40, 0x12]),
    );
    runt = with_frag(runt, false, 0);
    lab.expect(
        "UDP cut inside its ports",
        Container(vc1),
        &runt,
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
}

#[test]
fn a_container_cannot_send_vxlan_over_ipv6_either() {
    let mut lab = Lab::new("inj6");
    let vc1 = lab.vc1;
    let own = global(C1_IP);
    let datagram = packet::udp(40000, PORT, &packet::vxlan(OTHER_VNI, &[0; 14]));
    let to_c2 = |next: u8, payload: &[u8]| {
        let ip = packet::ipv6(own, global(C2_IP), next, 64, payload);
        packet::eth(C2_MAC, C1_MAC, ETH_P_IPV6, &ip)
    };
    let fragment = |offset8: u16, next: u8, payload: &[u8]| {
        let mut h = vec![next, 0];
        h.extend((offset8 << 3 | 1).to_be_bytes());
        h.extend([0, 0, 0, 7]);
        h.extend(payload);
        h
    };
    let options = |next: u8, payload: &[u8]| {
        let mut h = vec![next, 0, 1, 4, 0, 0, 0, 0];
        h.extend(payload);
        h
    };
    for (what, frame) in [
        ("plain", to_c2(UDP, &datagram)),
        (
            "behind destination options",
            to_c2(60, &options(UDP, &datagram)),
        ),
        (
            "in a first fragment",
            to_c2(44, &fragment(0, UDP, &datagram)),
        ),
        (
            "in a first fragment behind hop-by-hop",
            to_c2(0, &options(44, &fragment(0, UDP, &datagram))),
        ),
    ] {
        lab.expect(
            what,
            Container(vc1),
            &frame,
            TC_ACT_SHOT,
            Counter::DropTunnelPort,
        );
    }
    lab.expect(
        "a later fragment",
        Container(vc1),
        &to_c2(44, &fragment(100, UDP, &datagram)),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
    lab.expect(
        "a fragment header cut short",
        Container(vc1),
        &to_c2(44, &[UDP, 0]),
        TC_ACT_SHOT,
        Counter::DropTooShort,
    );
    lab.expect(
        "another port",
        Container(vc1),
        &to_c2(UDP, &packet::udp(40000, 53, b"query")),
        TC_ACT_REDIRECT,
        Counter::Encap,
    );
}

/// ARP with hardware type `htype` (the builder's is 1).
fn arp_of_type(htype: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = packet::arp(1, sha, spa, [0; 6], tpa);
    a[0..2].copy_from_slice(&htype.to_be_bytes());
    packet::eth(BROADCAST, C1_MAC, ETH_P_ARP, &a)
}

#[test]
fn arp_of_ieee802_hardware_type_is_checked_like_ethernet() {
    let mut lab = Lab::new("arp6");
    let vc1 = lab.vc1;
    lab.expect(
        "type 6 claiming c3's address",
        Container(vc1),
        &arp_of_type(6, C1_MAC, C3_IP, C2_IP),
        TC_ACT_SHOT,
        Counter::DropSpoofedIp,
    );
    lab.expect(
        "type 6 with c3's MAC",
        Container(vc1),
        &arp_of_type(6, C3_MAC, C1_IP, C2_IP),
        TC_ACT_SHOT,
        Counter::DropSpoofedMac,
    );
    // An honest type 6 request is answered as the owner's kernel would, over Ethernet.
    let v = lab.expect(
        "type 6 who-has c2",
        Container(vc1),
        &arp_of_type(6, C1_MAC, C1_IP, C2_IP),
        TC_ACT_REDIRECT,
        Counter::ArpReply,
    );
    let reply = c2_arp_reply_to_c1();
    assert_eq!(v.frame, reply);
    // Types Linux ignores on Ethernet stay on the bridge, whatever they claim.
    lab.expect(
        "type 7 claiming c3's address",
        Container(vc1),
        &arp_of_type(7, C1_MAC, C3_IP, C2_IP),
        TC_ACT_OK,
        Counter::ContainerPass,
    );
}

/// VNI 42 floods with storm limit `rate` (no remote VTEP, no GRO helper: nothing is copied).
fn storm_limit(lab: &Lab, rate: u32) {
    let mut maps = lab.node.maps();
    let flood = Flood {
        rate_pps: rate,
        ..Flood::default()
    };
    maps.tables_mut().flood.insert(VNI, flood, 0).unwrap();
}

/// c1's UDP to the IPv4 group `group` through the Ethernet destination `mac`.
fn to_group(mac: [u8; 6], group: [u8; 4]) -> Vec<u8> {
    let udp = packet::udp(5000, 5001, b"tick");
    packet::eth(
        mac,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, group, UDP, 0, &udp),
    )
}

#[test]
fn storm_control_goes_by_the_ethernet_destination() {
    let mut lab = Lab::new("storm");
    let vc1 = lab.vc1;
    storm_limit(&lab, 1);
    let group = [239, 1, 1, 1];
    let shot = |lab: &mut Lab, frame: &[u8]| {
        (0..3)
            .filter(|_| lab.send(Container(vc1), frame).code == TC_ACT_SHOT)
            .count()
    };
    // Three within a second, one allowed: at least one of them dropped (two if no window
    // boundary fell between them).
    let disguised = shot(&mut lab, &to_group(BROADCAST, group));
    assert!(
        disguised >= 1,
        "Ethernet broadcast carrying a group address is broadcast: storm-limited"
    );
    let group_mac = [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01];
    assert_eq!(
        shot(&mut lab, &to_group(group_mac, group)),
        0,
        "the group's own traffic goes only to members and is not limited"
    );
    // A group MAC that is not this group's: not membership traffic either.
    let other_mac = [0x01, 0x00, 0x5e, 0x02, 0x02, 0x02];
    assert!(shot(&mut lab, &to_group(other_mac, group)) >= 1);
    assert!(lab.count(Counter::DropStorm) >= 2);
}

/// An IGMPv2 membership report for `group` from c1, as its kernel sends it.
fn igmp_v2_report(group: [u8; 4], from: ([u8; 6], [u8; 4])) -> Vec<u8> {
    let mut igmp = vec![0x16, 0, 0, 0];
    igmp.extend(group);
    let c = packet::checksum(&igmp);
    igmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mac = [0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3]];
    packet::eth(
        mac,
        from.0,
        ETH_P_IP,
        &packet::ipv4(from.1, group, 2, 0, &igmp),
    )
}

/// An IGMPv3 report (to 224.0.0.22, which every host gets) joining `group`.
fn igmp_v3_join(group: [u8; 4]) -> Vec<u8> {
    let mut igmp = vec![0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
    igmp.extend(group);
    let c = packet::checksum(&igmp);
    igmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mac = [0x01, 0x00, 0x5e, 0, 0, 0x16];
    packet::eth(
        mac,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, [224, 0, 0, 22], 2, 0, &igmp),
    )
}

fn memberships(lab: &Lab, port: u32) -> Vec<GroupKey> {
    let maps = lab.node.maps();
    maps.group_entries()
        .map(|e| e.unwrap().0)
        .filter(|k| k.port == port)
        .collect()
}

#[test]
fn one_container_cannot_fill_the_nodes_group_memberships() {
    let mut lab = Lab::new("igmpcap");
    let vc1 = lab.vc1;
    let vc3 = lab.ns.ifindex("vc3").unwrap();
    let group = |n: u32| [239, 9, (n >> 8) as u8, n as u8];
    for n in 0..MAX_GROUPS_PER_PORT + 10 {
        let v = lab.send(Container(vc1), &igmp_v2_report(group(n), (C1_MAC, C1_IP)));
        assert_eq!(v.code, TC_ACT_OK, "a report is never dropped by snooping");
    }
    assert_eq!(
        memberships(&lab, vc1).len(),
        MAX_GROUPS_PER_PORT as usize,
        "c1 holds its limit, no more"
    );
    assert_eq!(lab.count(Counter::GroupLimit), 10);
    // A report for a group c1 holds refreshes it; c3 still has all its room.
    lab.send(Container(vc1), &igmp_v2_report(group(0), (C1_MAC, C1_IP)));
    assert_eq!(lab.count(Counter::GroupLimit), 10);
    lab.send(Container(vc3), &igmp_v2_report(group(0), (C3_MAC, C3_IP)));
    assert_eq!(memberships(&lab, vc3).len(), 1, "c3's join is recorded");
    // A leave gives the room back.
    let mut leave = igmp_v2_report(group(1), (C1_MAC, C1_IP));
    leave[14 + 20] = 0x17;
    lab.send(Container(vc1), &leave);
    lab.send(Container(vc1), &igmp_v2_report(group(500), (C1_MAC, C1_IP)));
    assert_eq!(lab.count(Counter::GroupLimit), 10);
    assert!(memberships(&lab, vc1).iter().any(|k| k.group == group(500)));
}

#[test]
fn igmp_reports_storm_control_dropped_are_not_snooped() {
    let mut lab = Lab::new("igmpstorm");
    let vc1 = lab.vc1;
    storm_limit(&lab, 1);
    let mut recorded = 0;
    for n in 0..4u8 {
        let v = lab.send(Container(vc1), &igmp_v3_join([239, 7, 7, n]));
        let joined = memberships(&lab, vc1)
            .iter()
            .any(|k| k.group == [239, 7, 7, n]);
        assert_eq!(
            joined,
            v.code != TC_ACT_SHOT,
            "report {n}: snooped exactly when storm control let it through"
        );
        recorded += usize::from(joined);
    }
    assert!(recorded < 4, "the storm limit dropped some");
}
