//! Internet checksums (RFC 1071) over packet bytes, for the messages the programs build
//! themselves (ICMP errors, neighbour advertisements). Every sum here adds words as loaded from
//! memory, as `bpf_csum_diff` does, so the folded result is stored as it is.
use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_skb_load_bytes},
    programs::TcContext,
};

use crate::{maps::SCRATCH, packet::ptr_at};

/// How many bytes `bpf_csum_diff` sums in one call.
const PIECE: usize = 512;

/// The ones' complement sum of the `N` packet bytes at `offset` (N a multiple of 4 and at most
/// 512, the helper's limit), added to `seed`.
#[inline(always)]
pub fn over<const N: usize>(ctx: &TcContext, offset: usize, seed: u32) -> Result<u32, ()> {
    let p = ptr_at::<[u8; N]>(ctx, offset).ok_or(())?;
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, seed) };
    if s < 0 { Err(()) } else { Ok(s as u32) }
}

/// The ones' complement sum of the `len` packet bytes at `offset`, wherever they lie (linear or
/// paged), added to `seed`; up to `MAX` bytes (64 KB at most), Err beyond. The bytes are copied
/// into a per-CPU scratch buffer a piece at a time: whole pieces in a loop of constant sizes
/// (which the verifier walks once per piece: the bound is what it costs), then the rest, padded
/// with zeros as RFC 1071 pads an odd length.
#[inline(always)]
pub fn over_range<const MAX: usize>(
    ctx: &TcContext,
    offset: usize,
    len: usize,
    seed: u32,
) -> Result<u32, ()> {
    let buf = SCRATCH.get_ptr_mut(0).ok_or(())?;
    let skb = ctx.skb.skb.cast();
    let mut sum = seed;
    let pieces = len / PIECE;
    if len > MAX || pieces > 65536 / PIECE {
        return Err(());
    }
    for i in 0..(MAX.min(65536) / PIECE) {
        if i >= pieces {
            break;
        }
        let at = (offset + i * PIECE) as u32;
        if unsafe { bpf_skb_load_bytes(skb, at, buf.cast(), PIECE as u32) } != 0 {
            return Err(());
        }
        let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.cast(), PIECE as u32, sum) };
        if s < 0 {
            return Err(());
        }
        sum = s as u32;
    }
    // Never above 511, but the verifier must see the helpers' sizes bounded, and the
    // optimiser would drop a check it can prove redundant: hidden from it.
    let rest = core::hint::black_box(len % PIECE);
    if rest == 0 {
        return Ok(sum);
    }
    if rest >= PIECE {
        return Err(());
    }
    // The four bytes after the rest are the padding a partial last word is summed with.
    unsafe { buf.cast::<u8>().add(rest).cast::<u32>().write_unaligned(0) };
    let at = (offset + pieces * PIECE) as u32;
    if unsafe { bpf_skb_load_bytes(skb, at, buf.cast(), rest as u32) } != 0 {
        return Err(());
    }
    let words = ((rest + 3) & !3) as u32;
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.cast(), words, sum) };
    if s < 0 { Err(()) } else { Ok(s as u32) }
}

/// The IPv4 pseudo-header's sum (RFC 768, RFC 793): both addresses, the protocol and the
/// upper-layer length.
#[inline(always)]
pub fn ipv4_pseudo(src: [u8; 4], dst: [u8; 4], len: u32, proto: u8) -> u32 {
    let s = u32::from_ne_bytes(src) as u64
        + u32::from_ne_bytes(dst) as u64
        + len.to_be() as u64
        + u32::from(proto).to_be() as u64;
    fold32(s)
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

/// The pseudo-header's words other than the addresses, for either family (its sum is the same
/// whichever way the fields are laid out): the upper-layer length and the protocol.
#[inline(always)]
pub fn pseudo_tail(len: u32, proto: u8) -> u32 {
    fold32(len.to_be() as u64 + u32::from(proto).to_be() as u64)
}

/// A checksum field (as a number) after one 16-bit word it covers changed from `old` to `new`:
/// RFC 1624, eqn. 3, HC' = ~(~HC + ~m + m'), which never yields the -0 that eqn. 2 can.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!check) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
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
