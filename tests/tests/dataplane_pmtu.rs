//! BPF_PROG_TEST_RUN through the real compiled programs: a packet too big for the tunnel,
//! answered byte for byte as the kernel's bridged vxlan device answers (ICMP "fragmentation
//! needed", ICMPv6 "packet too big"), or, IPv4 without DF, cut into fragments; the tunnel's
//! MTU on either underlay family.
use overlay_common::Counter;
use overlay_tests::{
    fixture::{TC_ACT_REDIRECT, TC_ACT_SHOT, Verdict},
    lab::*,
    packet::{self, ETH_P_IP, ETH_P_IPV6},
    per_family,
};

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

per_family! {
    /// The tunnel's MTU is the underlay's (1500) less what encapsulation adds: 50 bytes over
    /// IPv4, 70 over IPv6.
    fn the_tunnel_mtu_leaves_room_for_the_outer_headers(family) {
        expect_tunnel_mtu(&mut family.lab("mtu"), 1500 - family.overhead());
    }
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
    let want: Vec<Vec<u8>> = packet::fragments(&whole, 1450)
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
    let want = packet::fragments(&fragment, 1450);
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
    let (c1, c2) = (packet::link_local(C1_MAC), packet::link_local(C2_MAC));
    let to_c2 = |len: usize, next: u8, first: u8| {
        let mut payload = vec![0xcd; len - 40];
        payload[0] = first;
        packet::eth(
            C2_MAC,
            C1_MAC,
            ETH_P_IPV6,
            &container_ipv6(c1, c2, next, &payload),
        )
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
    let mut want_ip = container_ipv6(c2, c1, 58, &icmp);
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
