//! Internet checksums (RFC 1071) over packet bytes, for the messages the programs build
//! themselves (ICMP errors, neighbour advertisements). Every sum here adds words as loaded from
//! memory, as `bpf_csum_diff` does, so the folded result is stored as it is.
use aya_ebpf::{helpers::bpf_csum_diff, programs::TcContext};

use crate::packet::ptr_at;

/// The ones' complement sum of the `N` packet bytes at `offset` (N a multiple of 4 and at most
/// 512, the helper's limit), added to `seed`.
#[inline(always)]
pub fn over<const N: usize>(ctx: &TcContext, offset: usize, seed: u32) -> Result<u32, ()> {
    let p = ptr_at::<[u8; N]>(ctx, offset).ok_or(())?;
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, seed) };
    if s < 0 { Err(()) } else { Ok(s as u32) }
}

/// The IPv6 pseudo-header's sum (RFC 8200 8.1): both addresses (as four words each, in memory
/// order), the upper-layer length and the next header.
#[inline(always)]
pub fn ipv6_pseudo(src: &[u32; 4], dst: &[u32; 4], len: u32, next: u8) -> u32 {
    // Spelled out: an iterator over the two arrays compiles to a loop the verifier refuses.
    let s = len.to_be() as u64
        + u32::from(next).to_be() as u64
        + src[0] as u64
        + src[1] as u64
        + src[2] as u64
        + src[3] as u64
        + dst[0] as u64
        + dst[1] as u64
        + dst[2] as u64
        + dst[3] as u64;
    fold32(s)
}

#[inline(always)]
fn fold32(mut s: u64) -> u32 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s as u32
}

/// The checksum field's value, in memory order.
#[inline(always)]
pub fn finish(s: u32) -> u16 {
    let mut s = s as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
