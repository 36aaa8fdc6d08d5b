//! The outer UDP checksum of VXLAN we receive, verified as the kernel's UDP receive path does
//! (`udp4_csum_init`, `udp6_csum_init`) before a vxlan device ever sees the packet: a wrong
//! non-zero checksum is a damaged packet, dropped. Zero means "none": legal over IPv4 (RFC 768),
//! and over IPv6 accepted on our ports as a vxlan device with `udp6zerocsumrx` accepts it (RFC
//! 6935/6936 allow it for tunnels; every node of ours sends zero, see vxlan.rs).
//!
//! Computed here only when nobody has: TC cannot read `skb->ip_summed`, but its helpers tell
//! the states apart (`state`). The kernel's own validation is trusted where it is one:
//! - GRO-merged packets (`gso_size` set): GRO validates every packet's checksum before it merges
//!   it (`udp_gro_receive`), and a packet whose checksum fails is not merged but arrives alone;
//!   a merged skb's one outer header could not be checked against 64 KB of segments anyway.
//! - CHECKSUM_UNNECESSARY: the NIC validated it.
//! - CHECKSUM_PARTIAL: sent on this machine (across a veth), where the checksum is left to
//!   offload and not written yet; the kernel's receive path trusts it too (`skb_csum_unnecessary`).
//!
//! Everything else (CHECKSUM_NONE, CHECKSUM_COMPLETE; every BPF_PROG_TEST_RUN skb) is summed here,
//! in 512-byte pieces (`checksum::over_range`), up to `MAX_SUMMED` bytes of UDP: a jumbo
//! frame's worth, more than any wire packet that was not merged. The verifier walks the loop
//! once per piece on every path that reaches it, and a 64 KB bound (128 pieces, twice: one copy
//! per underlay family) was refused outright ("the sequence of 8193 jumps is too complex").
//! A longer datagram that nobody validated (it could only come unmerged from this machine,
//! over an interface with an MTU beyond 9,216) is accepted unchecked.
use aya_ebpf::{
    bindings::{BPF_CSUM_LEVEL_DEC, BPF_CSUM_LEVEL_INC, BPF_CSUM_LEVEL_QUERY},
    helpers::{bpf_csum_level, bpf_csum_update},
    programs::TcContext,
};
use overlay_common::wire;

use crate::checksum;

/// The longest UDP datagram summed here: a 9,216-byte jumbo frame's.
const MAX_SUMMED: usize = 9216;

/// What the kernel knows of a packet's checksum, as TC's helpers reveal it.
#[derive(PartialEq, Eq)]
enum State {
    /// Already validated or still to be written: trusted.
    Trusted,
    /// Nobody has checked it.
    Unchecked,
}

/// `skb->ip_summed`, told apart without reading it: only CHECKSUM_UNNECESSARY answers the level
/// query; only CHECKSUM_COMPLETE lets `bpf_csum_update` add to its sum (adding 0 changes
/// nothing); of the other two, only CHECKSUM_NONE is raised to UNNECESSARY by the level's
/// increment, which the decrement then undoes exactly.
#[inline(always)]
fn state(ctx: &TcContext) -> State {
    let skb = ctx.skb.skb;
    if unsafe { bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY as u64) } >= 0 {
        return State::Trusted;
    }
    if unsafe { bpf_csum_update(skb, 0) } >= 0 {
        // CHECKSUM_COMPLETE: a sum over the packet, not a verdict. (Using it would save the
        // summing; packets that reach here unmerged are at most an MTU.)
        return State::Unchecked;
    }
    unsafe { bpf_csum_level(skb, BPF_CSUM_LEVEL_INC as u64) };
    if unsafe { bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY as u64) } >= 0 {
        unsafe { bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC as u64) };
        return State::Unchecked;
    }
    // CHECKSUM_PARTIAL.
    State::Trusted
}

/// Whether the UDP datagram at `OFF_UDP` (its header's `check` and `len` as on the wire) has
/// an acceptable checksum. Its IP header (IPv4 without options, or IPv6) starts at `off_ip`.
#[inline(always)]
pub fn acceptable<const OFF_UDP: usize>(
    ctx: &TcContext,
    off_ip: usize,
    check: [u8; 2],
    len: [u8; 2],
    ipv6: bool,
) -> bool {
    if check == [0, 0] {
        return true;
    }
    if unsafe { (*ctx.skb.skb).gso_size } != 0 || state(ctx) == State::Trusted {
        return true;
    }
    let len = u16::from_be_bytes(len);
    let seed = checksum::pseudo_tail(u32::from(len), wire::IPPROTO_UDP);
    // The addresses: the last 8 bytes of an IPv4 header, the last 32 of an IPv6 one.
    let seed = if ipv6 {
        checksum::over::<32>(ctx, off_ip + 8, seed)
    } else {
        checksum::over::<8>(ctx, off_ip + 12, seed)
    };
    let Ok(seed) = seed else {
        return false;
    };
    // Summed with its own checksum field, a right datagram folds to all ones.
    if usize::from(len) > MAX_SUMMED {
        return true;
    }
    match checksum::over_range::<MAX_SUMMED>(ctx, OFF_UDP, usize::from(len), seed) {
        Ok(sum) => checksum::finish(sum) == 0,
        Err(()) => false,
    }
}
