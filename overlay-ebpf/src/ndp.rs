//! Neighbour discovery answered in place (RFC 4861), IPv6's mirror of arp.rs: a container's
//! solicitation for an address of its dual-stack network is answered from the ARP map (the
//! address carries the owner's IPv4 address, see ipv6.rs), so no solicitation leaves the host
//! for a known address. The advertisement is the one the owner's own Linux stack sends for a
//! multicast solicitation (ndisc_send_na): from the target address to the soliciting one, hop
//! limit 255, Solicited and Override set, Router clear (a container is a host), and the target
//! link-layer address option. Anything else (duplicate address detection, unicast probes, a
//! target we do not know, options we do not read) goes on as before: the owner answers itself.
use aya_ebpf::{
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use network_types::eth::EthHdr;
use overlay_common::{Counter, Endpoint, IpKey};

use crate::{
    checksum,
    ipv6::{IPV6_LEN, NEIGHBOR_ADVERTISEMENT, NEXT_HEADER_ICMPV6, words},
    maps::ARP,
    packet::{MacWords, ifindex, linearize, ptr_at},
    stats::{Verdict, drop, redirected},
};

/// ICMPv6 header and target: a solicitation without options.
const NS_LEN: usize = 24;
/// With the source link-layer address option: what Linux sends.
const NS_WITH_SLLA_LEN: usize = 32;
/// The advertisement: header, target, target link-layer address option.
const NA_LEN: usize = 32;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const HOP_LIMIT: u8 = 255;

/// A solicitation as far as it is read: IPv6 header, ICMPv6 header and target.
#[repr(C)]
struct Solicitation {
    ip: [u32; IPV6_LEN / 4],
    icmp: [u8; 8],
    target: [u32; 4],
}

/// The answer to the solicitation `ctx` holds (ipv6.rs checked its source), if it is one to
/// answer; None leaves it to the network.
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    sender: &Endpoint,
    prefix6: &[u8; 12],
    dst_mac: [u8; 6],
) -> Option<Verdict> {
    // Address resolution goes to the solicited-node group; a unicast probe goes to its owner.
    // (The caller's copy of the MAC: a bounds check of the Ethernet header here would be
    // folded by LLVM into ipv6.rs's check at a variable offset, which the verifier cannot
    // follow.)
    if dst_mac[0] & 1 == 0 || *prefix6 == [0; 12] {
        return None;
    }
    if !linearize(ctx, EthHdr::LEN + IPV6_LEN + NS_LEN) {
        return Some(drop(Counter::DropTooShort));
    }
    let ns = ptr_at::<Solicitation>(ctx, EthHdr::LEN)?;
    let (head, src, dst, icmp, target) = unsafe {
        let n = &*ns;
        (
            n.ip[1].to_ne_bytes(),
            [n.ip[2], n.ip[3], n.ip[4], n.ip[5]],
            [n.ip[6], n.ip[7], n.ip[8], n.ip[9]],
            n.icmp,
            words(n.target.as_ptr()),
        )
    };
    let [l0, l1, next, hop_limit] = head;
    // Behind extension headers (ipv6.rs let it through): left to the owner.
    if next != NEXT_HEADER_ICMPV6 {
        return None;
    }
    let len = u16::from_be_bytes([l0, l1]) as usize;
    // RFC 4861 7.1.1: what a node must silently discard.
    if hop_limit != HOP_LIMIT || icmp[1] != 0 || len < NS_LEN {
        return Some(drop(Counter::DropBadNdp));
    }
    let target_bytes = target[0].to_ne_bytes();
    if target_bytes[0] == 0xff {
        return Some(drop(Counter::DropBadNdp));
    }
    // Duplicate address detection (from ::) is for the whole network to hear.
    if src == [0; 4] {
        return None;
    }
    let mut sum = checksum::ipv6_pseudo(&src, &dst, len as u32, NEXT_HEADER_ICMPV6);
    sum = checksum::over::<NS_LEN>(ctx, EthHdr::LEN + IPV6_LEN, sum).ok()?;
    match len {
        NS_LEN => {}
        NS_WITH_SLLA_LEN => {
            let at = EthHdr::LEN + IPV6_LEN + NS_LEN;
            if !linearize(ctx, at + 8) {
                return Some(drop(Counter::DropTooShort));
            }
            let opt = ptr_at::<[u8; 8]>(ctx, at)?;
            let opt = unsafe { *opt };
            if opt[1] == 0 {
                return Some(drop(Counter::DropBadNdp));
            }
            if opt[0] != OPT_SOURCE_LL || opt[1] != 1 {
                return None;
            }
            if [opt[2], opt[3], opt[4], opt[5], opt[6], opt[7]] != sender.mac {
                return Some(drop(Counter::DropSpoofedMac));
            }
            sum = checksum::over::<8>(ctx, at, sum).ok()?;
        }
        // More options than Linux sends: the owner reads them itself.
        _ => return None,
    }
    if checksum::finish(sum) != 0 {
        return Some(drop(Counter::DropBadNdp));
    }
    // One of the network's addresses: the prefix, then the owner's IPv4 address.
    let prefix =
        |i: usize| u32::from_ne_bytes([prefix6[i], prefix6[i + 1], prefix6[i + 2], prefix6[i + 3]]);
    if [target[0], target[1], target[2]] != [prefix(0), prefix(4), prefix(8)] {
        return None;
    }
    let owner = unsafe {
        ARP.get(IpKey {
            vni: sender.vni,
            ip: target[3].to_ne_bytes(),
        })
    }?;
    let mac = owner.mac;
    if mac == sender.mac {
        return None;
    }

    // The advertisement, in place of the solicitation.
    let total = (EthHdr::LEN + IPV6_LEN + NA_LEN) as u32;
    if ctx.len() != total && unsafe { bpf_skb_change_tail(ctx.skb.skb, total, 0) } != 0 {
        return Some(drop(Counter::DropAdjustFailed));
    }
    // The frame is being rewritten: from here on, a failure is a drop, never a pass.
    let Some(na) = ptr_at::<Advertisement>(ctx, 0) else {
        return Some(drop(Counter::DropAdjustFailed));
    };
    let [l0, l1] = (NA_LEN as u16).to_be_bytes();
    unsafe {
        MacWords::read(&sender.mac).write(&raw mut (*na).eth.dst_addr);
        MacWords::read(&owner.mac).write(&raw mut (*na).eth.src_addr);
        (*na).ip = [
            u32::from_ne_bytes([0x60, 0, 0, 0]),
            u32::from_ne_bytes([l0, l1, NEXT_HEADER_ICMPV6, HOP_LIMIT]),
            target[0],
            target[1],
            target[2],
            target[3],
            src[0],
            src[1],
            src[2],
            src[3],
        ];
        // Solicited and Override.
        (*na).icmp = [NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0x60, 0, 0, 0];
        (*na).target = target;
        (*na).option = [
            OPT_TARGET_LL,
            1,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5],
        ];
    }
    let sum = checksum::ipv6_pseudo(&target, &src, NA_LEN as u32, NEXT_HEADER_ICMPV6);
    let (Ok(sum), Some(na)) = (
        checksum::over::<NA_LEN>(ctx, EthHdr::LEN + IPV6_LEN, sum),
        ptr_at::<Advertisement>(ctx, 0),
    ) else {
        return Some(drop(Counter::DropAdjustFailed));
    };
    unsafe {
        (&raw mut (*na).icmp[2])
            .cast::<u16>()
            .write_unaligned(checksum::finish(sum))
    };
    let verdict = unsafe { bpf_redirect(ifindex(ctx), 0) };
    Some(redirected(Counter::NdpReply, verdict))
}

/// Packed: the IPv6 header's words start 14 bytes in, which C layout would pad to 16.
#[repr(C, packed)]
struct Advertisement {
    eth: EthHdr,
    ip: [u32; IPV6_LEN / 4],
    icmp: [u8; 8],
    target: [u32; 4],
    option: [u8; 8],
}
