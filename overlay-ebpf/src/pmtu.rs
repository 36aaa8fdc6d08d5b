//! Path MTU discovery through the tunnel (RFC 1191, RFC 8201): a container's packet too big to
//! cross the underlay once wrapped is answered, never lost in silence (flannel #1279's "63 s
//! delay" was such a black hole). The answer is what the kernel's own bridged vxlan device
//! builds (`iptunnel_pmtud_build_icmp`, `..._icmpv6` in net/ipv4/ip_tunnel_core.c): an ICMP
//! "fragmentation needed" or ICMPv6 "packet too big" carrying the tunnel's MTU, from the
//! packet's destination to its source, quoting the packet up to 576 (IPv4) or 1280 (IPv6) bytes
//! in all, sent back to the container in place of the packet. Its stack then lowers the path
//! MTU for that destination and TCP resends smaller segments.
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::{Counter, wire};

use crate::{
    checksum,
    packet::{MacWords, ifindex, ptr_at},
    stats::{Verdict, drop, redirected},
};

const IPV6_LEN: usize = 40;
const ICMP_LEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv4's minimum reassembly size; no smaller path MTU is believed (RFC 1191).
pub const IPV4_MIN_MTU: u32 = 576;
const IPV6_MIN_MTU: u32 = 1280;
/// What is quoted of the packet: the rest of 576 / 1280 bytes after the new headers.
const QUOTE_V4: usize = IPV4_MIN_MTU as usize - Ipv4Hdr::LEN - ICMP_LEN;
const QUOTE_V6: usize = IPV6_MIN_MTU as usize - IPV6_LEN - ICMP_LEN;

/// Whether the frame (Ethernet, then the IPv4 or IPv6 packet `ether_type` names, in host
/// order) is too big for a tunnel of MTU `mtu`. A GSO packet is judged by the segments it will
/// be cut into, as the kernel does (`skb_gso_validate_network_len`).
#[inline(always)]
pub fn too_big(ctx: &TcContext, ether_type: u16, mtu: u32) -> bool {
    let l3_len = ctx.len().saturating_sub(EthHdr::LEN as u32);
    if l3_len <= mtu {
        return false;
    }
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    gso_size == 0 || segment_len(ctx, ether_type, gso_size) > mtu
}

/// The L3 length of each segment of a GSO packet: its headers and `gso_size` of payload.
#[inline(always)]
fn segment_len(ctx: &TcContext, ether_type: u16, gso_size: u32) -> u32 {
    let (l3, proto) = match ether_type {
        wire::ETH_P_IP => match ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) {
            Some(ip) => unsafe { (((*ip).vihl & 0x0f) as usize * 4, (*ip).proto) },
            None => return u32::MAX,
        },
        _ => match ptr_at::<[u8; IPV6_LEN]>(ctx, EthHdr::LEN) {
            Some(ip) => (IPV6_LEN, unsafe { (*ip)[6] }),
            None => return u32::MAX,
        },
    };
    let l4 = match proto {
        wire::IPPROTO_TCP => match ctx.load::<u8>(EthHdr::LEN + l3 + 12) {
            Ok(offset) => (offset >> 4) as u32 * 4,
            Err(_) => return u32::MAX,
        },
        wire::IPPROTO_UDP => 8,
        _ => 0,
    };
    l3 as u32 + l4 + gso_size
}

/// Replaces the too-big frame with the ICMP error that answers it and sends that back out of
/// the port it came in by; or drops it, counted, where no answer is allowed.
#[inline(never)]
pub fn reply(ctx: &TcContext, ether_type: u16, mtu: u32) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooShort);
    };
    let (from, to) = unsafe {
        (
            MacWords::read(&raw const (*eth).src_addr),
            MacWords::read(&raw const (*eth).dst_addr),
        )
    };
    let built = match ether_type {
        wire::ETH_P_IP => build_v4(ctx, mtu),
        wire::ETH_P_IPV6 => build_v6(ctx, mtu),
        _ => Err(()),
    };
    if built.is_err() {
        return drop(Counter::DropTooBig);
    }
    // Back to the sender, from the MAC it sent to (the kernel's eth_header with the two swapped).
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooBig);
    };
    from.write(unsafe { &raw mut (*eth).dst_addr });
    to.write(unsafe { &raw mut (*eth).src_addr });
    // Out of the host side of the sender's veth: into the sender's namespace.
    let verdict = unsafe { bpf_redirect(ifindex(ctx), 0) };
    redirected(Counter::DropFragNeeded, verdict)
}

#[repr(C)]
struct Icmp4Error {
    ip: Ipv4Hdr,
    icmp: [u8; ICMP_LEN],
}

/// ICMP "fragmentation needed" for an IPv4 packet with DF that is not itself an ICMP error.
#[inline(always)]
fn build_v4(ctx: &TcContext, mtu: u32) -> Result<(), ()> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(())?;
    let (vihl, frags, ttl, proto, src, dst) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).frags),
            (*ip).ttl,
            (*ip).proto,
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    // Without DF (or a fragment) the sender never asked for this; 0.0.0.0 cannot be answered.
    if mtu < IPV4_MIN_MTU || frags != wire::IP_DF || src == [0; 4] {
        return Err(());
    }
    if proto == IPPROTO_ICMP {
        let at = EthHdr::LEN + (vihl & 0x0f) as usize * 4;
        let kind = ctx.load::<u8>(at).map_err(|_| ())?;
        // Never an error about an error: unreachable, source quench, redirect, time exceeded,
        // parameter problem.
        if matches!(kind, 3 | 4 | 5 | 11 | 12) {
            return Err(());
        }
    }
    make_room(ctx, QUOTE_V4, Ipv4Hdr::LEN + ICMP_LEN)?;
    let h = ptr_at::<Icmp4Error>(ctx, EthHdr::LEN).ok_or(())?;
    let mut ip = Ipv4Hdr {
        vihl: 0x45,
        tos: 0,
        tot_len: (IPV4_MIN_MTU as u16).to_be_bytes(),
        id: [0; 2],
        frags: wire::IP_DF.to_be_bytes(),
        ttl,
        proto: IPPROTO_ICMP,
        check: [0; 2],
        src_addr: dst,
        dst_addr: src,
    };
    let ip_bytes = unsafe { &*(&ip as *const Ipv4Hdr as *const [u8; 20]) };
    ip.check = wire::ipv4_header_checksum(ip_bytes).to_be_bytes();
    let [m0, m1] = (mtu as u16).to_be_bytes();
    unsafe {
        (&raw mut (*h).ip).write_unaligned(ip);
        (&raw mut (*h).icmp).write_unaligned([3, 4, 0, 0, 0, 0, m0, m1]);
    }
    // Over the ICMP header and the quote: 556 bytes, in helper-sized pieces.
    let at = EthHdr::LEN + Ipv4Hdr::LEN;
    let sum = checksum::over::<512>(ctx, at, 0)?;
    let sum = checksum::over::<{ ICMP_LEN + QUOTE_V4 - 512 }>(ctx, at + 512, sum)?;
    let h = ptr_at::<Icmp4Error>(ctx, EthHdr::LEN).ok_or(())?;
    unsafe {
        (&raw mut (*h).icmp[2])
            .cast::<u16>()
            .write_unaligned(checksum::finish(sum))
    };
    Ok(())
}

#[repr(C)]
struct Icmp6Error {
    ip: [u8; IPV6_LEN],
    icmp: [u8; ICMP_LEN],
}

/// ICMPv6 "packet too big" for an IPv6 packet that is not itself an ICMPv6 error or redirect.
#[inline(always)]
fn build_v6(ctx: &TcContext, mtu: u32) -> Result<(), ()> {
    let ip = ptr_at::<[u32; IPV6_LEN / 4]>(ctx, EthHdr::LEN).ok_or(())?;
    let head = unsafe { (*ip)[1] };
    let [_, _, next, hop_limit] = head.to_ne_bytes();
    let (src, dst) = unsafe {
        let w = &*ip;
        ([w[2], w[3], w[4], w[5]], [w[6], w[7], w[8], w[9]])
    };
    if mtu < IPV6_MIN_MTU || src == [0; 4] {
        return Err(());
    }
    if next == IPPROTO_ICMPV6 {
        let kind = ctx.load::<u8>(EthHdr::LEN + IPV6_LEN).map_err(|_| ())?;
        // Errors are types below 128; 137 is a redirect.
        if kind < 128 || kind == 137 {
            return Err(());
        }
    }
    make_room(ctx, QUOTE_V6, IPV6_LEN + ICMP_LEN)?;
    let h = ptr_at::<Icmp6Error>(ctx, EthHdr::LEN).ok_or(())?;
    let payload_len = (ICMP_LEN + QUOTE_V6) as u16;
    let [l0, l1] = payload_len.to_be_bytes();
    let words = [
        u32::from_ne_bytes([0x60, 0, 0, 0]),
        u32::from_ne_bytes([l0, l1, IPPROTO_ICMPV6, hop_limit]),
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        src[0],
        src[1],
        src[2],
        src[3],
    ];
    let [m0, m1, m2, m3] = mtu.to_be_bytes();
    unsafe {
        (&raw mut (*h).ip)
            .cast::<[u32; IPV6_LEN / 4]>()
            .write_unaligned(words);
        (&raw mut (*h).icmp).write_unaligned([2, 0, 0, 0, m0, m1, m2, m3]);
    }
    // The pseudo-header (the reply's addresses), then the message: 1240 bytes in three pieces.
    let pseudo = checksum::ipv6_pseudo(&dst, &src, payload_len.into(), IPPROTO_ICMPV6);
    let at = EthHdr::LEN + IPV6_LEN;
    let sum = checksum::over::<512>(ctx, at, pseudo)?;
    let sum = checksum::over::<512>(ctx, at + 512, sum)?;
    let sum = checksum::over::<{ ICMP_LEN + QUOTE_V6 - 1024 }>(ctx, at + 1024, sum)?;
    let h = ptr_at::<Icmp6Error>(ctx, EthHdr::LEN).ok_or(())?;
    unsafe {
        (&raw mut (*h).icmp[2])
            .cast::<u16>()
            .write_unaligned(checksum::finish(sum))
    };
    Ok(())
}

/// Cuts the packet to its Ethernet header and the first `quote` bytes of its L3 packet, then
/// opens `headers` bytes behind the Ethernet header for the error's own headers. Trimming also
/// makes the skb linear and drops its GSO state (the helper is meant for such replies). The
/// packet is always longer than the quote: it is larger than an MTU that is at least 576 / 1280.
#[inline(always)]
fn make_room(ctx: &TcContext, quote: usize, headers: usize) -> Result<(), ()> {
    if (ctx.len() as usize) < EthHdr::LEN + quote {
        return Err(());
    }
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (EthHdr::LEN + quote) as u32, 0) } != 0 {
        return Err(());
    }
    ctx.adjust_room(headers as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| ())
}
