//! Frames built byte by byte, independently of the code under test, so a test compares the
//! dataplane's output with what RFC 7348 and RFC 826 say and not with itself.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet, no options, DF clear, TTL 64, valid header checksum.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet without extension headers, traffic class and flow label 0.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop_limit]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// fe80::/64 with the modified EUI-64 of `mac` (RFC 4291 appendix A): the link-local address
/// the kernel derives from a MAC.
pub fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xfe, 0x80]);
    a[8..].copy_from_slice(&[
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    a
}

/// ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) and `msg`.
pub fn icmpv6_checksum(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> [u8; 2] {
    let mut p = Vec::new();
    p.extend(src);
    p.extend(dst);
    p.extend((msg.len() as u32).to_be_bytes());
    p.extend([0, 0, 0, 58]);
    p.extend(msg);
    checksum(&p).to_be_bytes()
}

/// A neighbour solicitation from `src` for `target`, to the target's solicited-node group, as
/// Linux sends it (hop limit 255, with the source link-layer option unless `bare`).
pub fn solicitation(from_mac: [u8; 6], src: [u8; 16], target: [u8; 16], bare: bool) -> Vec<u8> {
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
    eth(
        group_mac,
        from_mac,
        ETH_P_IPV6,
        &ipv6(src, dst, 58, 255, &icmp),
    )
}

/// UDP with checksum zero (legal over IPv4, what VXLAN senders use).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The UDP checksum (RFC 768) of datagram `udp` between `addresses` (source then destination,
/// 4 or 16 bytes each), as a sender writes it: 0 goes on the wire as 0xffff.
pub fn udp_checksum(addresses: &[u8], udp: &[u8]) -> u16 {
    match l4_checksum(addresses, 17, udp) {
        0 => 0xffff,
        c => c,
    }
}

/// The checksum of TCP or UDP segment `l4` (protocol `proto`) between `addresses` (source
/// then destination, 4 or 16 bytes each) over the pseudo-header; a segment whose checksum
/// field is right sums to 0.
pub fn l4_checksum(addresses: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = addresses.to_vec();
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    pseudo.extend_from_slice(l4);
    checksum(&pseudo)
}

pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut p = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    p.extend_from_slice(inner);
    p
}

/// An ICMP echo request with a fixed payload.
pub fn icmp_echo(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"overlay-test-payload-0123456789");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// ARP for IPv4 over Ethernet (RFC 826); `op` 1 is a request, 2 a reply.
pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

/// The fragments a router cuts IPv4 packet `ip` (no options) into for next-hop MTU `mtu`
/// (RFC 791 3.2): payload pieces of the MTU less the header rounded down to 8 bytes, each
/// behind a copy of the header with its length, offset and MF, and a new header checksum.
/// Offsets add to the packet's own, and the last piece keeps its MF.
pub fn fragments(ip: &[u8], mtu: usize) -> Vec<Vec<u8>> {
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
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(piece);
            h
        })
        .collect()
}

/// RFC 1071 internet checksum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
