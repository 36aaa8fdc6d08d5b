//! VXLAN encapsulation and decapsulation (RFC 7348), byte for byte what a Linux vxlan device puts
//! on the wire: outer IPv4 without options, DF clear, TTL 64, DSCP 0 and the inner ECN
//! (RFC 6040), UDP checksum zero, source port from the flow hash, I flag and 24-bit VNI.
use aya_ebpf::{
    bindings::{
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_OUTPUT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc, bpf_get_prandom_u32, bpf_redirect,
        bpf_redirect_neigh,
    },
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use overlay_common::{
    Counter,
    wire::{self, ENCAP_OVERHEAD, VxlanHdr},
};

use crate::{
    maps::CONFIG,
    packet::ptr_at,
    stats::{drop, redirected},
};

const AF_INET: u8 = 2;
const TTL: u8 = 64;

/// Everything in front of the inner frame's payload once encapsulated: what one store writes.
#[repr(C)]
struct Encapsulated {
    outer_eth: EthHdr,
    ip: Ipv4Hdr,
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
}

/// Wraps the frame (an IPv4 or IPv6 packet in Ethernet) for `vtep` and sends it out of the
/// underlay. The frame must be directly readable for its Ethernet header.
#[inline(always)]
pub fn encap(ctx: &TcContext, vni: u32, port: u16, vtep: [u8; 4]) -> i32 {
    let Some(node) = CONFIG.get(0) else {
        return drop(Counter::DropNoRoute);
    };

    // Route and next hop towards the VTEP, on the underlay only. The kernel's FIB and neighbour
    // table stay the source of truth: no MAC cache of ours to go stale when the underlay changes.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = wire::IPPROTO_UDP;
    fib.ifindex = node.underlay_ifindex;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(node.vtep);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(vtep);
    let route = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    let next_hop = match route as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => NextHop::Resolved,
        BPF_FIB_LKUP_RET_NO_NEIGH => NextHop::Unresolved,
        // bpf_fib_lookup answers only for devices with forwarding on (as on every Docker or
        // Kubernetes node). Without it, the kernel routes the packet itself on redirect.
        BPF_FIB_LKUP_RET_FWD_DISABLED => {
            fib.ifindex = node.underlay_ifindex;
            NextHop::KernelRoutes
        }
        _ => return drop(Counter::DropNoRoute),
    };

    let Some(inner_eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooShort);
    };
    let inner_eth = unsafe { *inner_eth };
    let inner_tos = inner_traffic_class(ctx, inner_eth.ether_type);
    let inner_len = ctx.len();
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };

    // ENCAP flags set the inner header offsets and SKB_GSO_UDP_TUNNEL, so a 64 KB TSO packet
    // stays one skb and is segmented (or not at all, veth to veth) after us. FIXED_GSO keeps the
    // MSS: the container MTU already leaves room for the 50 bytes.
    let flags = (BPF_F_ADJ_ROOM_FIXED_GSO
        | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        | ((EthHdr::LEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    if ctx
        .adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        return drop(Counter::DropAdjustFailed);
    }

    let udp_len = (inner_len as usize + UdpHdr::LEN + VxlanHdr::LEN) as u16;
    let mut ip = Ipv4Hdr {
        vihl: 0x45,
        tos: wire::outer_ecn(inner_tos),
        tot_len: (udp_len + Ipv4Hdr::LEN as u16).to_be_bytes(),
        // DF clear, as Linux sends by default; the ID must then be unpredictable-ish per packet.
        id: (unsafe { bpf_get_prandom_u32() } as u16).to_be_bytes(),
        frags: [0; 2],
        ttl: TTL,
        proto: wire::IPPROTO_UDP,
        check: [0; 2],
        src_addr: node.vtep,
        dst_addr: vtep,
    };
    let ip_bytes = unsafe { &*(&ip as *const Ipv4Hdr as *const [u8; 20]) };
    ip.check = wire::ipv4_header_checksum(ip_bytes).to_be_bytes();
    let headers = Encapsulated {
        outer_eth: EthHdr {
            dst_addr: fib.dmac,
            src_addr: fib.smac,
            ether_type: wire::ETH_P_IP.to_be(),
        },
        ip,
        udp: UdpHdr {
            src: wire::flow_src_port(hash).to_be_bytes(),
            dst: port.to_be_bytes(),
            len: udp_len.to_be_bytes(),
            // Zero is allowed over IPv4 and is what Linux, Cilium and Calico send.
            check: [0; 2],
        },
        vxlan: VxlanHdr::new(vni),
        inner_eth,
    };
    if ctx.store(0, &headers, 0).is_err() {
        return drop(Counter::DropAdjustFailed);
    }

    let verdict = match next_hop {
        NextHop::Resolved => unsafe { bpf_redirect(fib.ifindex, 0) },
        NextHop::Unresolved => {
            // Let the neighbour subsystem resolve the next hop the FIB named and fill in L2.
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            nh.nh_family = AF_INET as u32;
            nh.__bindgen_anon_1.ipv4_nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
            unsafe {
                bpf_redirect_neigh(
                    fib.ifindex,
                    &mut nh,
                    core::mem::size_of::<bpf_redir_neigh>() as i32,
                    0,
                )
            }
        }
        NextHop::KernelRoutes => unsafe {
            bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0)
        },
    };
    redirected(Counter::Encap, verdict)
}

/// What the FIB told us about the way to the remote VTEP.
enum NextHop {
    /// Route and neighbour known: the outer MACs are written here, plain redirect.
    Resolved,
    /// Route known, neighbour not resolved yet.
    Unresolved,
    /// The FIB would not answer (forwarding off); the kernel routes on redirect.
    KernelRoutes,
}

/// The inner TOS / traffic class, whose ECN bits the outer header inherits.
#[inline(always)]
fn inner_traffic_class(ctx: &TcContext, ether_type: u16) -> u8 {
    let Some(b) = ptr_at::<[u8; 2]>(ctx, EthHdr::LEN) else {
        return 0;
    };
    let b = unsafe { *b };
    match u16::from_be(ether_type) {
        wire::ETH_P_IP => b[1],
        wire::ETH_P_IPV6 => (b[0] << 4) | (b[1] >> 4),
        _ => 0,
    }
}

/// Strips the outer Ethernet/IPv4/UDP/VXLAN headers, leaving `inner_eth` at the front.
/// The caller has checked that all of them, and the inner Ethernet header, are there.
#[inline(always)]
pub fn decap(ctx: &TcContext, inner_eth: &EthHdr) -> Result<(), ()> {
    // FIXED_GSO goes in the flags, not the mode (Calico #11160): a GRO'd packet keeps its MSS.
    let mut flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
    if u16::from_be(inner_eth.ether_type) == wire::ETH_P_IPV6 {
        // skb->protocol must name the inner L3 for the stack that receives it.
        flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6 as u64;
    }
    ctx.adjust_room(-(ENCAP_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| ())?;
    // The shrink removed bytes 14..64 (outer IPv4..inner Ethernet); the outer Ethernet header is
    // still in front, so the inner one is written over it.
    ctx.store(0, inner_eth, 0).map_err(|_| ())
}
