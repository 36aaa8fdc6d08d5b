//! ECN on decapsulation (RFC 6040 section 4.2, the normal mode; the kernel's
//! `INET_ECN_decapsulate`, which its vxlan device applies): congestion marked on the outer header
//! on the way must reach the inner packet, or the receiving transport never hears of it.
//!
//! | outer \ inner | Not-ECT | ECT(0) | ECT(1) | CE |
//! |---------------|---------|--------|--------|----|
//! | Not-ECT       | Not-ECT | ECT(0) | ECT(1) | CE |
//! | ECT(0)        | Not-ECT | ECT(0) | ECT(1) | CE |
//! | ECT(1)        | Not-ECT | ECT(1) | ECT(1) | CE |
//! | CE            | drop    | CE     | CE     | CE |
//!
//! (Encapsulation copies the inner ECN to the outer header: vxlan.rs.)
use aya_ebpf::programs::TcContext;
use network_types::eth::EthHdr;
use overlay_common::wire;

use crate::{checksum, packet::ptr_at};

const ECT1: u8 = 1;
const ECT0: u8 = 2;
const CE: u8 = 3;
const MASK: u8 = 3;

/// What decapsulation writes into the inner packet's ECN field: nothing (`KEEP`), or these
/// bits. Never Not-ECT, so 0 can mean "keep".
#[derive(Clone, Copy)]
pub struct Rewrite(u8);

impl Rewrite {
    pub const KEEP: Rewrite = Rewrite(0);
}

/// The table above for an outer ECN field `outer` (the outer TOS or traffic class) and the
/// inner packet whose IP header starts at `off_ip` (an IPv4 or IPv6 header by `ether_type`, in
/// network byte order); Err: CE over Not-ECT, to be dropped. Anything that is not IP, or whose
/// header is not there, is not ECN-capable and has nothing to learn: kept as it is.
#[inline(always)]
pub fn on_decap(ctx: &TcContext, off_ip: usize, ether_type: u16, outer: u8) -> Result<Rewrite, ()> {
    let Some(inner) = traffic_class(ctx, off_ip, ether_type) else {
        return Ok(Rewrite::KEEP);
    };
    let (outer, inner) = (outer & MASK, inner & MASK);
    if inner == 0 {
        // Not-ECT: a CE mark could not be passed on.
        return if outer == CE {
            Err(())
        } else {
            Ok(Rewrite::KEEP)
        };
    }
    Ok(match (outer, inner) {
        (CE, i) if i != CE => Rewrite(CE),
        (ECT1, ECT0) => Rewrite(ECT1),
        _ => Rewrite::KEEP,
    })
}

/// The traffic class (IPv4 TOS) of the IP header at `off_ip`, if the frame is IP and has it.
#[inline(always)]
fn traffic_class(ctx: &TcContext, off_ip: usize, ether_type: u16) -> Option<u8> {
    let b = unsafe { *ptr_at::<[u8; 2]>(ctx, off_ip)? };
    match u16::from_be(ether_type) {
        wire::ETH_P_IP => Some(b[1]),
        wire::ETH_P_IPV6 => Some((b[0] << 4) | (b[1] >> 4)),
        _ => None,
    }
}

/// Writes `rewrite` into the decapsulated frame's IP header (right behind its Ethernet header);
/// an IPv4 header's checksum is updated for the changed word (RFC 1624, eqn. 3), not
/// recomputed.
#[inline(always)]
pub fn apply(ctx: &TcContext, ether_type: u16, rewrite: Rewrite) {
    if rewrite.0 == 0 {
        return;
    }
    match u16::from_be(ether_type) {
        wire::ETH_P_IP => {
            // Version/IHL and TOS, then (at 10) the header checksum.
            let Some(h) = ptr_at::<[u8; 12]>(ctx, EthHdr::LEN) else {
                return;
            };
            let h = unsafe { &mut *h };
            let old = u16::from_be_bytes([h[0], h[1]]);
            h[1] = (h[1] & !MASK) | rewrite.0;
            let new = u16::from_be_bytes([h[0], h[1]]);
            let check = checksum::replace16(u16::from_be_bytes([h[10], h[11]]), old, new);
            [h[10], h[11]] = check.to_be_bytes();
        }
        wire::ETH_P_IPV6 => {
            // The traffic class spans the first two bytes; its ECN bits are byte 1's 0x30.
            let Some(h) = ptr_at::<[u8; 2]>(ctx, EthHdr::LEN) else {
                return;
            };
            let h = unsafe { &mut *h };
            h[1] = (h[1] & !(MASK << 4)) | (rewrite.0 << 4);
        }
        _ => {}
    }
}
