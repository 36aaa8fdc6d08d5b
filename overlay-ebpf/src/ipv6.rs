//! What a container may send over IPv6 (RFC 4291, 4861): from its own addresses only. Those are
//! the link-local address the kernel derives from its MAC (modified EUI-64), its address on a
//! dual-stack network (the network's prefix followed by its IPv4 address), and the unspecified
//! address (duplicate address detection). A neighbour advertisement may only speak for one of
//! its own addresses. Without this, a container could send as any other over the tunnel.
//!
//! A container is a host, never a router (RFC 4861 6.2, 8): its router advertisements and
//! redirects are refused, or one container could become every neighbour's default router and
//! see their traffic (Docker's CVE-2020-13401). Its router solicitations stay on its own host:
//! each node is the gateway of its own containers, so no router elsewhere has to hear them.
use aya_ebpf::programs::TcContext;
use network_types::eth::EthHdr;
use overlay_common::{Counter, Endpoint, wire};

use crate::{
    packet::{linearize, ptr_at},
    vxlan,
};

pub const IPV6_LEN: usize = 40;
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
pub const NEIGHBOR_SOLICITATION: u8 = 135;
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
pub const REDIRECT: u8 = 137;
/// ICMPv6 type, code, checksum, flags / reserved: the target address follows.
pub const ND_TARGET_AT: usize = 8;

/// What a frame that may go on is, for the caller.
pub enum Allowed {
    /// A neighbour solicitation (ndp.rs may answer it).
    Solicitation,
    /// A router solicitation: for this host only.
    RouterSolicitation,
    Other,
}

/// A container's own addresses, as words in memory order.
pub struct Own {
    link_local: [u32; 4],
    /// All zero when the network is IPv4 only.
    global: [u32; 4],
}

impl Own {
    #[inline(always)]
    pub fn of(sender: &Endpoint, prefix6: &[u8; 12]) -> Self {
        let p = |i: usize| {
            u32::from_ne_bytes([prefix6[i], prefix6[i + 1], prefix6[i + 2], prefix6[i + 3]])
        };
        let global = if *prefix6 == [0; 12] {
            [0; 4]
        } else {
            [p(0), p(4), p(8), u32::from_ne_bytes(sender.ip)]
        };
        Self {
            link_local: link_local(sender.mac),
            global,
        }
    }

    #[inline(always)]
    fn has(&self, a: [u32; 4]) -> bool {
        a == self.link_local || (a == self.global && self.global != [0; 4])
    }
}

/// The refusal's reason, or what the frame is if it may go on.
#[inline(always)]
pub fn check_source(ctx: &TcContext, own: &Own) -> Result<Allowed, Counter> {
    if !linearize(ctx, EthHdr::LEN + IPV6_LEN) {
        return Err(Counter::DropTooShort);
    }
    let Some(ip) = ptr_at::<[u8; IPV6_LEN]>(ctx, EthHdr::LEN) else {
        return Err(Counter::DropTooShort);
    };
    let src = words(unsafe { (&raw const (*ip)[8]).cast() });
    if !own.has(src) && src != [0; 4] {
        return Err(Counter::DropSpoofedIp);
    }
    let at = match upper_layer(ctx, unsafe { (*ip)[6] }) {
        Upper::At {
            proto: NEXT_HEADER_ICMPV6,
            at,
            fragmented: false,
        } => at,
        // The same guard as over IPv4 (vxlan.rs says why).
        Upper::At {
            proto: wire::IPPROTO_UDP,
            at,
            ..
        } => return vxlan::not_to_tunnel_port(ctx, at).map(|()| Allowed::Other),
        // NDP is never fragmented (RFC 6980; Linux drops it), a later fragment has no header.
        Upper::At { .. } | Upper::LaterFragment => return Ok(Allowed::Other),
        // Whatever hides behind it is refused unread.
        Upper::TooLong => return Err(Counter::DropSpoofedIp),
        Upper::Truncated => return Err(Counter::DropTooShort),
    };
    // The type first: a router advertisement without options is shorter than any neighbour
    // message, and must not pass as too short to matter.
    match ctx.load::<u8>(at) {
        Ok(ROUTER_ADVERTISEMENT | REDIRECT) => return Err(Counter::DropRouterMessage),
        Ok(ROUTER_SOLICITATION) => return Ok(Allowed::RouterSolicitation),
        Ok(NEIGHBOR_SOLICITATION | NEIGHBOR_ADVERTISEMENT) => {}
        _ => return Ok(Allowed::Other),
    }
    if !linearize(ctx, at + ND_TARGET_AT + 16) {
        // Too short to be a neighbour message: whatever it is, it claims no address.
        return Ok(Allowed::Other);
    }
    let Some(icmp) = ptr_at::<[u8; ND_TARGET_AT + 16]>(ctx, at) else {
        return Ok(Allowed::Other);
    };
    match unsafe { (*icmp)[0] } {
        NEIGHBOR_ADVERTISEMENT
            if !own.has(words(unsafe { (&raw const (*icmp)[ND_TARGET_AT]).cast() })) =>
        {
            Err(Counter::DropSpoofedIp)
        }
        NEIGHBOR_SOLICITATION => Ok(Allowed::Solicitation),
        _ => Ok(Allowed::Other),
    }
}

/// Extension headers read before giving up (a real chain has one or two).
const MAX_EXTENSIONS: usize = 4;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION: u8 = 60;
/// A fragment header's offset (in 8-byte units, shifted by 3) within its offset and flags.
const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;

/// What follows an IPv6 header's extension headers.
pub enum Upper {
    /// The upper-layer header `proto` at `at`, behind a fragment header of a first fragment
    /// when `fragmented`.
    At {
        proto: u8,
        at: usize,
        fragmented: bool,
    },
    /// A fragment other than the first: no upper-layer header in it.
    LaterFragment,
    /// More extension headers than this reads: nothing it hides was read.
    TooLong,
    /// An extension header cut short by the end of the packet.
    Truncated,
}

/// Walks the extension headers after the IPv6 header, whose next header is `first`.
#[inline(always)]
pub fn upper_layer(ctx: &TcContext, first: u8) -> Upper {
    let mut next = first;
    let mut at = EthHdr::LEN + IPV6_LEN;
    let mut fragmented = false;
    for _ in 0..MAX_EXTENSIONS {
        match next {
            HOP_BY_HOP | ROUTING | DESTINATION => {
                let Ok([n, len]) = ctx.load::<[u8; 2]>(at) else {
                    return Upper::Truncated;
                };
                next = n;
                at += (len as usize + 1) * 8;
            }
            FRAGMENT => {
                let Ok([n, _, o0, o1]) = ctx.load::<[u8; 4]>(at) else {
                    return Upper::Truncated;
                };
                if u16::from_be_bytes([o0, o1]) & FRAGMENT_OFFSET_MASK != 0 {
                    return Upper::LaterFragment;
                }
                next = n;
                at += 8;
                fragmented = true;
            }
            _ => break,
        }
    }
    match next {
        HOP_BY_HOP | ROUTING | DESTINATION | FRAGMENT => Upper::TooLong,
        proto => Upper::At {
            proto,
            at,
            fragmented,
        },
    }
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
pub fn words(p: *const u32) -> [u32; 4] {
    unsafe {
        [
            p.read_unaligned(),
            p.add(1).read_unaligned(),
            p.add(2).read_unaligned(),
            p.add(3).read_unaligned(),
        ]
    }
}
