//! What a container may send over IPv6 (RFC 4291, 4861). Containers have no IPv6 address of
//! ours yet, only the link-local one the kernel derives from their MAC (modified EUI-64), so
//! that and the unspecified address (duplicate address detection) are the only sources a
//! container may use; a neighbour advertisement may only speak for that same address. Without
//! this, a container could send as any other over the tunnel.
use aya_ebpf::programs::TcContext;
use network_types::eth::EthHdr;
use overlay_common::{Counter, Endpoint};

use crate::packet::{linearize, ptr_at};

const IPV6_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// ICMPv6 type, code, checksum, flags: the target address follows.
const NA_TARGET_AT: usize = 8;

/// The refusal's reason, or Ok if the frame may go on.
#[inline(always)]
pub fn check_source(ctx: &TcContext, sender: &Endpoint) -> Result<(), Counter> {
    if !linearize(ctx, EthHdr::LEN + IPV6_LEN) {
        return Err(Counter::DropTooShort);
    }
    let Some(ip) = ptr_at::<[u8; IPV6_LEN]>(ctx, EthHdr::LEN) else {
        return Err(Counter::DropTooShort);
    };
    let own = link_local(sender.mac);
    let src = words(unsafe { (&raw const (*ip)[8]).cast() });
    if src != own && src != [0; 4] {
        return Err(Counter::DropSpoofedIp);
    }
    if unsafe { (*ip)[6] } != NEXT_HEADER_ICMPV6 {
        return Ok(());
    }
    let at = EthHdr::LEN + IPV6_LEN;
    if !linearize(ctx, at + NA_TARGET_AT + 16) {
        // Too short to be an advertisement: whatever it is, it claims no address.
        return Ok(());
    }
    let Some(icmp) = ptr_at::<[u8; NA_TARGET_AT + 16]>(ctx, at) else {
        return Ok(());
    };
    if unsafe { (*icmp)[0] } == NEIGHBOR_ADVERTISEMENT
        && words(unsafe { (&raw const (*icmp)[NA_TARGET_AT]).cast() }) != own
    {
        return Err(Counter::DropSpoofedIp);
    }
    Ok(())
}

/// fe80::/64 with the interface identifier from the MAC (U/L bit flipped, ff:fe in the middle),
/// as four words in memory order.
#[inline(always)]
fn link_local(m: [u8; 6]) -> [u32; 4] {
    [
        u32::from_ne_bytes([0xfe, 0x80, 0, 0]),
        0,
        u32::from_ne_bytes([m[0] ^ 0x02, m[1], m[2], 0xff]),
        u32::from_ne_bytes([0xfe, m[3], m[4], m[5]]),
    ]
}

/// An address as four word loads: comparing byte arrays would call memcmp, which BPF lacks.
#[inline(always)]
fn words(p: *const u32) -> [u32; 4] {
    unsafe {
        [
            p.read_unaligned(),
            p.add(1).read_unaligned(),
            p.add(2).read_unaligned(),
            p.add(3).read_unaligned(),
        ]
    }
}
