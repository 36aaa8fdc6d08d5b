//! Structure-aware frames for the fuzzer: valid frames of every kind the dataplane reads, built
//! from the lab's real addresses (so they reach the deep paths: c1/c2/c3's MACs and IPs, the
//! VNIs, the VTEPs, the port), then mutated (a field wrong, a length that lies, a checksum off,
//! a spoofed source) and cut at any offset.
use overlay_common::{vtep, wire};

use super::{
    model::{World, global, icmpv6_sum, link_local},
    rng::Rng,
};
use crate::{
    lab::{self, Hook},
    packet::{self, BROADCAST},
};

/// The shortest frame BPF_PROG_TEST_RUN takes (an Ethernet header).
pub const MIN_FRAME: usize = 14;
/// Payloads stay below this, so nothing is too big for the tunnel (see model.rs).
const MAX_PAYLOAD: usize = 1200;

/// Frame number `index` of the run seeded with `seed`, and where it enters.
pub fn frame(world: &World, seed: u64, index: u64) -> (Hook, Vec<u8>) {
    let mut rng = Rng::for_frame(seed, index);
    let (hook, mut f) = if rng.chance(55) {
        let sender = if rng.chance(3) {
            // Not a port: the underlay's own ifindex.
            (world.underlay, lab::C1_MAC, lab::C1_IP, lab::VNI)
        } else {
            let p = world.ports[rng.below(world.ports.len())];
            (p.ifindex, p.mac, p.ip, p.vni)
        };
        let f = container_frame(&mut rng, sender.1, sender.2, sender.3 == lab::VNI);
        (Hook::Container(sender.0), f)
    } else {
        (Hook::Underlay, underlay_frame(&mut rng, world))
    };
    mutate(&mut rng, &mut f);
    (hook, f)
}

/// Bytes flipped, a random cut, both, or nothing.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    if rng.chance(12) {
        for _ in 0..rng.range(1, 4) {
            let i = rng.below(f.len());
            f[i] ^= 1 << rng.below(8);
        }
    }
    if rng.chance(6) {
        let i = rng.below(f.len());
        f[i] = rng.byte();
    }
    if rng.chance(15) && f.len() > MIN_FRAME {
        // BPF_PROG_TEST_RUN refuses IP frames cut inside the IP header (model.rs): mostly
        // cut behind it, where the programs are.
        let header = match u16::from_be_bytes([f[12], f[13]]) {
            wire::ETH_P_IP => 20,
            wire::ETH_P_IPV6 => 40,
            _ => 0,
        };
        let shortest = if rng.chance(95) {
            (MIN_FRAME + header).min(f.len())
        } else {
            MIN_FRAME
        };
        f.truncate(rng.range(shortest, f.len()));
    }
}

/// Some MAC a frame might be sent to.
fn some_mac(rng: &mut Rng) -> [u8; 6] {
    match rng.below(10) {
        0 => lab::C1_MAC,
        1 | 2 => lab::C2_MAC,
        3 => lab::C3_MAC,
        4 => lab::C4_MAC,
        5 => BROADCAST,
        6 => [0x01, 0, 0x5e, rng.byte() & 0x7f, rng.byte(), rng.byte()],
        7 => [0x33, 0x33, 0xff, rng.byte(), rng.byte(), rng.byte()],
        8 => [0x02, 0x42, 10, 10, 1, rng.byte()],
        _ => rng.array(),
    }
}

fn some_ip4(rng: &mut Rng) -> [u8; 4] {
    match rng.below(10) {
        0 => lab::C1_IP,
        1 | 2 => lab::C2_IP,
        3 => lab::C3_IP,
        4 => [0; 4],
        5 => [255; 4],
        6 => [224, 0, 0, rng.byte()],
        7 => match rng.below(3) {
            // The group with a remote member (model.rs), the snooped ones, any.
            0 => [239, 1, 1, 1],
            1 => [239, 1, 0, rng.byte() & 63],
            _ => [239, rng.byte(), rng.byte(), rng.byte()],
        },
        8 => [10, 10, rng.byte() & 3, rng.byte()],
        _ => rng.array(),
    }
}

fn some_ip6(rng: &mut Rng) -> [u8; 16] {
    match rng.below(9) {
        0 => link_local(lab::C1_MAC),
        1 => link_local(lab::C3_MAC),
        2 => global(lab::PREFIX6, lab::C2_IP),
        3 => global(lab::PREFIX6, lab::C3_IP),
        4 => global(lab::PREFIX6, lab::C1_IP),
        5 => [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        6 => [0; 16],
        7 => global(lab::PREFIX6, [10, 10, 1, rng.byte()]),
        _ => rng.array(),
    }
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let n = if rng.chance(3) {
        rng.range(0, MAX_PAYLOAD)
    } else {
        rng.range(0, 64)
    };
    rng.bytes(n)
}

/// A frame a container with `mac`/`ip` (on the dual-stack network if `dual`) might send.
fn container_frame(rng: &mut Rng, mac: [u8; 6], ip: [u8; 4], dual: bool) -> Vec<u8> {
    let src_mac = if rng.chance(93) { mac } else { some_mac(rng) };
    match rng.below(20) {
        0..=4 => arp(rng, src_mac, mac, ip),
        5..=10 => {
            let dst_ip = some_ip4(rng);
            let src_ip = match rng.below(10) {
                0 => [0; 4],
                1 => some_ip4(rng),
                _ => ip,
            };
            let packet = ipv4(rng, src_ip, dst_ip);
            let group_mac = [0x01, 0, 0x5e, dst_ip[1] & 0x7f, dst_ip[2], dst_ip[3]];
            let dst_mac = if packet[9] == 2 && rng.chance(85) {
                // IGMP, as hosts send it: to a group MAC (snooping reads nothing else).
                rng.pick(&[group_mac, [0x01, 0, 0x5e, 0, 0, 0x16]])
            } else if rng.chance(20) && (224..240).contains(&dst_ip[0]) {
                group_mac
            } else {
                some_mac(rng)
            };
            packet::eth(dst_mac, src_mac, wire::ETH_P_IP, &packet)
        }
        11..=16 => {
            let own = [
                link_local(mac),
                if dual {
                    global(lab::PREFIX6, ip)
                } else {
                    link_local(mac)
                },
                [0; 16],
            ];
            let src = if rng.chance(90) {
                rng.pick(&own)
            } else {
                some_ip6(rng)
            };
            let (dst_mac, packet) = ipv6(rng, src, mac);
            packet::eth(dst_mac, src_mac, wire::ETH_P_IPV6, &packet)
        }
        17 => {
            // One or two VLAN tags, then anything.
            let inner = container_frame(rng, mac, ip, dual);
            let mut tagged = inner[..12].to_vec();
            for _ in 0..rng.range(1, 2) {
                tagged.extend_from_slice(&rng.pick(&[wire::ETH_P_8021Q, 0x88a8]).to_be_bytes());
                tagged.extend_from_slice(&rng.u16().to_be_bytes());
            }
            tagged.extend_from_slice(&inner[12..]);
            tagged
        }
        18 => {
            // Another ethertype, or an 802.3 length.
            let t = {
                let choices = [0x88cc, 0x8035, 0x0842, 0x0026, 0x05dc, rng.u16()];
                rng.pick(&choices)
            };
            packet::eth(some_mac(rng), src_mac, t, &payload(rng))
        }
        _ => {
            let mut f = packet::eth(some_mac(rng), src_mac, rng.u16(), &[]);
            f.extend(payload(rng));
            f
        }
    }
}

/// ARP of any hardware type: requests, replies, probes and announcements, some spoofed.
fn arp(rng: &mut Rng, src_mac: [u8; 6], mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let sha = if rng.chance(92) { mac } else { some_mac(rng) };
    let spa = match rng.below(10) {
        0 => [0; 4],
        1 => some_ip4(rng),
        _ => ip,
    };
    let tpa = match rng.below(8) {
        0 => spa,
        1 => [10, 10, 1, 99],
        _ => some_ip4(rng),
    };
    let op = match rng.below(10) {
        0 => 2,
        1 => rng.u16() & 7,
        _ => 1,
    };
    let tha = if rng.chance(80) {
        [0; 6]
    } else {
        some_mac(rng)
    };
    let mut a = packet::arp(op, sha, spa, tha, tpa);
    if rng.chance(25) {
        // RFC 826's hardware types 0..7 (6: IEEE 802), other protocols and lengths.
        a[0..2].copy_from_slice(&(rng.below(8) as u16).to_be_bytes());
    }
    if rng.chance(5) {
        a[2..4].copy_from_slice(
            &{
                let choices = [wire::ETH_P_IPV6, 0, rng.u16()];
                rng.pick(&choices)
            }
            .to_be_bytes(),
        );
    }
    if rng.chance(5) {
        a[4] = {
            let choices = [0, 6, 8, rng.byte()];
            rng.pick(&choices)
        };
        a[5] = {
            let choices = [4, 16, rng.byte()];
            rng.pick(&choices)
        };
    }
    if rng.chance(20) {
        let n = rng.range(1, 18);
        a.extend(rng.bytes(n));
    }
    // Now and then a reply to the remote container (the way back to a legacy host).
    let dst = match rng.below(10) {
        0..=7 => BROADCAST,
        8 => lab::C2_MAC,
        _ => some_mac(rng),
    };
    packet::eth(dst, src_mac, wire::ETH_P_ARP, &a)
}

/// IPv4 with options, fragments, any TOS, lying lengths and checksums; ICMP, UDP (the VXLAN
/// port too), TCP, IGMP of every version, or anything.
fn ipv4(rng: &mut Rng, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let (proto, l4) = match rng.below(10) {
        0 | 1 => (1, packet::icmp_echo(rng.u16(), rng.u16())),
        2 | 3 => {
            let dport = {
                let choices = [lab::PORT, 8472, 53, rng.u16()];
                rng.pick(&choices)
            };
            (17, packet::udp(rng.u16(), dport, &payload(rng)))
        }
        4 => {
            let mut t = rng.bytes(20);
            t[12] = 0x50;
            t.extend(payload(rng));
            (6, t)
        }
        5..=7 => (2, igmp(rng)),
        _ => (rng.byte(), payload(rng)),
    };
    let mut p = packet::ipv4(src, dst, proto, 0, &l4);
    if rng.chance(15) {
        // Options: NOPs, a record route, or noise, 4..40 bytes.
        let n = 4 * rng.range(1, 10);
        let opts = match rng.below(3) {
            0 => vec![1; n],
            1 => {
                let mut o = vec![7, n as u8 - 1, 4];
                o.resize(n, 0);
                o
            }
            _ => rng.bytes(n),
        };
        p.splice(20..20, opts);
        p[0] = 0x40 | (5 + n / 4) as u8;
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
    }
    if rng.chance(30) {
        p[1] = rng.byte();
    }
    let flags: u16 = match rng.below(10) {
        0..=3 => wire::IP_DF,
        4 => wire::IP_MF,
        5 => rng.u16() & wire::IP_OFFSET,
        6 => wire::IP_MF | (rng.u16() & wire::IP_OFFSET),
        _ => 0,
    };
    p[6..8].copy_from_slice(&flags.to_be_bytes());
    if rng.chance(5) {
        p[0] = rng.byte();
    }
    if rng.chance(5) {
        p[2..4].copy_from_slice(&rng.u16().to_be_bytes());
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl >= 20 && ihl <= p.len() {
        p[10..12].fill(0);
        let c = packet::checksum(&p[..ihl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if rng.chance(5) {
        p[10] ^= 0x55;
    }
    p
}

/// IGMPv1/v2 reports and leaves, v3 reports with any records.
fn igmp(rng: &mut Rng) -> Vec<u8> {
    // Mostly from 256 groups: ports join, rejoin and leave the same ones, and reach their
    // limit of memberships.
    let group = |rng: &mut Rng| match rng.below(8) {
        0 => [224, 0, 0, rng.byte()],
        1 => [rng.byte(), rng.byte(), rng.byte(), rng.byte()],
        2 => [239, rng.byte(), rng.byte(), rng.byte()],
        _ => [239, 1, rng.below(4) as u8, rng.below(64) as u8],
    };
    let mut m = match rng.below(5) {
        0..=3 => {
            let kind = {
                let choices = [0x12, 0x16, 0x17, 0x11, rng.byte()];
                rng.pick(&choices)
            };
            let mut m = vec![kind, 0, 0, 0];
            m.extend(group(rng));
            m
        }
        _ => {
            let n = rng.range(0, 12);
            let mut m = vec![0x22, 0, 0, 0, 0, 0];
            m.extend((n as u16 + u16::from(rng.chance(10))).to_be_bytes());
            for _ in 0..n {
                let sources = {
                    let choices = [0, 0, 1, 2, rng.range(0, 300)];
                    rng.pick(&choices)
                };
                let aux = {
                    let choices = [0, 0, 1, rng.range(0, 255)];
                    rng.pick(&choices)
                };
                m.extend([rng.range(0, 7) as u8, aux as u8]);
                m.extend((sources as u16).to_be_bytes());
                m.extend(group(rng));
                // Sources and aux data, or a record that claims more than it has.
                let have = if rng.chance(90) { sources.min(8) } else { 0 };
                m.extend(rng.bytes(4 * have));
                if aux < 4 {
                    m.extend(rng.bytes(4 * aux));
                }
            }
            m
        }
    };
    let c = packet::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// IPv6 behind 0..6 extension headers: neighbour and router messages (valid and not),
/// echoes, UDP, TCP, or anything. The Ethernet destination goes with it.
fn ipv6(rng: &mut Rng, src: [u8; 16], mac: [u8; 6]) -> ([u8; 6], Vec<u8>) {
    let solicited = |t: &[u8; 16]| -> ([u8; 6], [u8; 16]) {
        let mut d = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
        d[13..].copy_from_slice(&t[13..]);
        ([0x33, 0x33, 0xff, t[13], t[14], t[15]], d)
    };
    let mut hop_limit = 64;
    let (next, mut msg, dst_mac, dst): (u8, Vec<u8>, [u8; 6], [u8; 16]) = match rng.below(12) {
        0..=4 => {
            // A neighbour solicitation, mostly as Linux sends it.
            let target = some_ip6(rng);
            let (m, d) = if rng.chance(85) {
                solicited(&target)
            } else {
                (some_mac(rng), some_ip6(rng))
            };
            hop_limit = if rng.chance(90) { 255 } else { rng.byte() };
            let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
            msg.extend(target);
            if rng.chance(60) {
                let sll = if rng.chance(90) { mac } else { some_mac(rng) };
                let (kind, len) = match rng.below(10) {
                    0 => (1, 0),
                    1 => (2, 1),
                    2 => (1, 2),
                    _ => (1, 1),
                };
                msg.extend([kind, len]);
                msg.extend(sll);
                if len == 2 {
                    msg.extend([0; 8]);
                }
            }
            (58, msg, m, d)
        }
        5 => {
            let target = if rng.chance(50) { src } else { some_ip6(rng) };
            hop_limit = 255;
            let mut msg = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
            msg.extend(target);
            (58, msg, some_mac(rng), some_ip6(rng))
        }
        6 => {
            hop_limit = 255;
            let kind = rng.pick(&[133, 134, 137]);
            let mut msg = vec![kind, 0, 0, 0];
            let n = rng.pick(&[0, 4, 12, 36]);
            msg.extend(rng.bytes(n));
            let d = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
            (58, msg, [0x33, 0x33, 0, 0, 0, 2], d)
        }
        7 => {
            let mut msg = vec![128, 0, 0, 0];
            msg.extend(payload(rng));
            (58, msg, some_mac(rng), some_ip6(rng))
        }
        8 => {
            let dport = {
                let choices = [lab::PORT, 8472, 547, rng.u16()];
                rng.pick(&choices)
            };
            let u = packet::udp(rng.u16(), dport, &payload(rng));
            (17, u, some_mac(rng), some_ip6(rng))
        }
        9 => {
            let mut t = rng.bytes(20);
            t[12] = 0x50;
            (6, t, some_mac(rng), some_ip6(rng))
        }
        _ => (rng.byte(), payload(rng), some_mac(rng), some_ip6(rng)),
    };
    if next == 58 && msg.len() >= 4 {
        if rng.chance(8) {
            msg[1] = rng.byte();
        }
        let c = !(icmpv6_sum(&src, &dst, &msg) as u16);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        if rng.chance(5) {
            msg[3] ^= 1;
        }
    }
    // Extension headers in front: hop-by-hop, routing, destination options, fragment.
    let mut first = next;
    let chain = match rng.below(10) {
        0..=5 => 0,
        6 | 7 => rng.range(1, 2),
        _ => rng.range(3, 6),
    };
    for _ in 0..chain {
        let kind = rng.pick(&[0, 43, 60, 60, 44]);
        let len = if kind == 44 {
            0
        } else {
            rng.pick(&[0, 0, 1, 2])
        };
        let mut h = vec![first, len as u8];
        h.extend(rng.bytes(6 + 8 * len));
        if kind == 44 && rng.chance(70) {
            h[2..4].fill(0);
        }
        h.extend(msg);
        msg = h;
        first = kind;
    }
    let mut p = packet::ipv6(src, dst, first, hop_limit, &msg);
    if rng.chance(10) {
        p[1] = rng.byte();
    }
    if rng.chance(5) {
        p[4..6].copy_from_slice(&rng.u16().to_be_bytes());
    }
    (dst_mac, p)
}

/// A VXLAN packet (or not quite one) as a remote VTEP, an impostor or a host sends it, in
/// either underlay family.
/// An outer ECN field: mostly Not-ECT, else any (CE included, RFC 6040's cases).
fn outer_ecn(rng: &mut Rng) -> u8 {
    if rng.chance(70) {
        0
    } else {
        rng.below(4) as u8
    }
}

/// Mostly the zero checksum VXLAN senders use; else the right one, now and then damaged.
/// `addresses` and `udp_at` are where they lie in the IP packet `p`.
fn udp_checksum(rng: &mut Rng, p: &mut [u8], addresses: std::ops::Range<usize>, udp_at: usize) {
    if rng.chance(75) {
        return;
    }
    let mut c = packet::udp_checksum(&p[addresses], &p[udp_at..]);
    if rng.chance(30) {
        c ^= 1 << rng.below(16);
    }
    p[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
}

fn underlay_frame(rng: &mut Rng, world: &World) -> Vec<u8> {
    // c2's frame for this host, or anything a container might send.
    let inner = match rng.below(4) {
        0 => lab::c2_to_c1_ping(),
        _ => {
            let mut f = container_frame(rng, lab::C2_MAC, lab::C2_IP, true);
            if rng.chance(50) {
                let dst = rng.pick(&[lab::C1_MAC, lab::C3_MAC, lab::C4_MAC]);
                f[..6].copy_from_slice(&dst);
            }
            f
        }
    };
    let vni = match rng.below(10) {
        0..=6 => lab::VNI,
        7 | 8 => lab::OTHER_VNI,
        _ => rng.next_u64() as u32 & wire::VNI_MAX,
    };
    let mut vx = packet::vxlan(vni, &inner);
    if rng.chance(8) {
        vx[0] = {
            let choices = [0, 0x88, 0x0c, 0x80, rng.byte()];
            rng.pick(&choices)
        };
    }
    if rng.chance(4) {
        vx[rng.pick(&[1, 2, 3, 7])] = rng.byte();
    }
    let dport = if rng.chance(92) {
        lab::PORT
    } else {
        {
            let choices = [8472, 53, rng.u16()];
            rng.pick(&choices)
        }
    };
    let mut udp = packet::udp(rng.range(32768, 60999) as u16, dport, &vx);
    if rng.chance(5) {
        udp[4..6].copy_from_slice(
            &{
                let choices = [0, 8, 29, 30, rng.u16()];
                rng.pick(&choices)
            }
            .to_be_bytes(),
        );
    }
    let ipv6_outer = rng.chance(if world.ipv6_underlay { 80 } else { 20 });
    if ipv6_outer {
        let src = match rng.below(10) {
            0 => lab::LOCAL_VTEP6,
            1 => vtep::from_v4(lab::REMOTE_VTEP),
            2 => rng.array(),
            _ => lab::REMOTE_VTEP6,
        };
        let next = if rng.chance(95) { 17 } else { rng.byte() };
        let dst = match rng.below(12) {
            0 => lab::REMOTE_VTEP6,
            1 => vtep::from_v4(lab::LOCAL_VTEP),
            2 => rng.array(),
            _ => lab::LOCAL_VTEP6,
        };
        let mut p = packet::ipv6(src, dst, next, 64, &udp);
        p[1] |= outer_ecn(rng) << 4;
        udp_checksum(rng, &mut p, 8..40, 40);
        if rng.chance(5) {
            p[4..6].copy_from_slice(&rng.u16().to_be_bytes());
        }
        packet::eth(lab::UNDERLAY_MAC, lab::NEXT_HOP_MAC, wire::ETH_P_IPV6, &p)
    } else {
        let src = match rng.below(10) {
            0 => lab::LOCAL_VTEP,
            1 => [10, 0, 0, rng.byte()],
            2 => rng.array(),
            _ => lab::REMOTE_VTEP,
        };
        // Mostly to us; else in transit through this node to another VTEP, or anywhere.
        let dst = match rng.below(12) {
            0 => [10, 0, 0, 3],
            1 => rng.array(),
            _ => lab::LOCAL_VTEP,
        };
        let mut p = if rng.chance(96) {
            let mut p = packet::ipv4(src, dst, 17, outer_ecn(rng), &udp);
            udp_checksum(rng, &mut p, 12..20, 20);
            p
        } else {
            ipv4(rng, src, dst)
        };
        if rng.chance(4) {
            p[6..8].copy_from_slice(
                &{
                    let choices = [0x2000, 0x0001, 0x4000, rng.u16()];
                    rng.pick(&choices)
                }
                .to_be_bytes(),
            );
        }
        if rng.chance(4) {
            let n = 4 * rng.range(1, 10);
            p.splice(20..20, vec![1; n]);
            p[0] = 0x40 | (5 + n / 4) as u8;
        }
        if rng.chance(5) {
            p[2..4].copy_from_slice(
                &{
                    let choices = [0, 20, 49, 50, rng.u16()];
                    rng.pick(&choices)
                }
                .to_be_bytes(),
            );
        }
        if rng.chance(2) {
            p[9] = rng.byte();
        }
        packet::eth(lab::UNDERLAY_MAC, lab::NEXT_HOP_MAC, wire::ETH_P_IP, &p)
    }
}
