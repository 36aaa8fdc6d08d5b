//! A packet from the underlay, seen at TC ingress of the underlay interface.
//!
//! Everything that is not VXLAN to one of our ports and to our VTEP passes untouched: the
//! host's own traffic (and what it routes) must never break. VXLAN to our port and VTEP is ours,
//! and is either delivered or dropped with a reason: valid header, a VNI this node serves, from
//! a VTEP of that VNI, for a local endpoint.
use aya_ebpf::{
    bindings::BPF_F_INGRESS,
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use overlay_common::{
    Counter, MacKey, VtepAddr, VtepKey, deliver,
    monitor::hook,
    vtep,
    wire::{self, VxlanHdr},
};

use crate::{
    ecn, flood,
    ipv6::{self, IPV6_LEN},
    maps::{CONFIG, ENDPOINTS, NETWORKS, VTEPS},
    monitor, nodeport,
    packet::{linearize, ptr_at},
    rx_checksum,
    stats::{Verdict, add, drop, pass, redirected},
    vxlan,
};

const OFF_IP: usize = EthHdr::LEN;
/// Where UDP starts behind an outer IPv4 header without options, and an outer IPv6 header
/// without extension headers.
const OFF_UDP: usize = OFF_IP + Ipv4Hdr::LEN;
const OFF_UDP6: usize = OFF_IP + IPV6_LEN;
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

pub fn handle(ctx: &TcContext) -> Verdict {
    // Not even Ethernet + IPv4 + UDP: nothing we could own.
    if !linearize(ctx, OFF_UDP + UdpHdr::LEN) {
        return pass(Counter::UnderlayPass);
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(Counter::UnderlayPass);
    };
    match u16::from_be(unsafe { (*eth).ether_type }) {
        wire::ETH_P_IP => from_ipv4(ctx),
        wire::ETH_P_IPV6 => from_ipv6(ctx),
        _ => pass(Counter::UnderlayPass),
    }
}

/// An IPv4 underlay's packet: VXLAN to one of our ports is ours.
#[inline(always)]
fn from_ipv4(ctx: &TcContext) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, OFF_IP) else {
        return pass(Counter::UnderlayPass);
    };
    let ip = unsafe { &*ip };
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    let frags = u16::from_be_bytes(ip.frags);
    let vxlan_port = if ip.proto == wire::IPPROTO_UDP {
        vxlan_to_us(ctx, ip, ihl, frags)
    } else {
        None
    };
    let Some(dport) = vxlan_port else {
        // Not VXLAN of ours: a published port's (nodeport.rs, its own program) or the host's.
        nodeport::to_published(ctx);
        return pass(Counter::UnderlayPass);
    };

    // VXLAN to our port from here on. Linux VTEPs never send options or fragments; leave those
    // to the host stack, which has no socket on the port and discards them.
    if ihl != Ipv4Hdr::LEN {
        return pass(Counter::UnderlayIpOptions);
    }
    if frags & IP_MF_OFFSET_MASK != 0 {
        return pass(Counter::UnderlayFragment);
    }
    let (source, claimed) = (vtep::from_v4(ip.src_addr), u16::from_be_bytes(ip.tot_len));
    // What the IP header claims to carry, from UDP on.
    let carried = (claimed as usize).saturating_sub(Ipv4Hdr::LEN);
    accept::<OFF_UDP>(ctx, dport, source, carried)
}

/// The UDP destination port of an IPv4 UDP packet (header `ip`, `ihl` bytes long) if it is
/// VXLAN to one of our ports and our VTEP. A later fragment carries no UDP header: nothing says
/// whose it is.
#[inline(always)]
fn vxlan_to_us(ctx: &TcContext, ip: &Ipv4Hdr, ihl: usize, frags: u16) -> Option<u16> {
    if frags & IP_MF_OFFSET_MASK != 0 && frags & 0x1fff != 0 {
        return None;
    }
    // UDP starts after the options, if any: read its port where it really is (directly in the
    // common case without options, which linearize made readable).
    let dport = if ihl == Ipv4Hdr::LEN {
        let udp = ptr_at::<UdpHdr>(ctx, OFF_UDP)?;
        u16::from_be_bytes(unsafe { (*udp).dst })
    } else {
        match ctx.load::<[u8; 2]>(EthHdr::LEN + ihl + 2) {
            Ok(dport) => u16::from_be_bytes(dport),
            Err(_) => return None,
        }
    };
    let mapped = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(ip.dst_addr),
    ];
    // A published port is never a VXLAN port (the agent refuses one).
    (vxlan::is_tunnel_port(dport) && to_our_vtep(mapped, false)).then_some(dport)
}

/// An IPv6 underlay's packet: VXLAN to one of our ports, right behind the IPv6 header, is ours.
/// Linux VTEPs send no extension headers; a packet with any (a fragment too) is left to the host
/// stack, whose only socket on our port is the GRO helper's, which drops and counts it.
#[inline(always)]
fn from_ipv6(ctx: &TcContext) -> Verdict {
    if !linearize(ctx, OFF_UDP6 + UdpHdr::LEN) {
        return pass(Counter::UnderlayPass);
    }
    let (Some(ip), Some(udp)) = (
        ptr_at::<[u8; IPV6_LEN]>(ctx, OFF_IP),
        ptr_at::<UdpHdr>(ctx, OFF_UDP6),
    ) else {
        return pass(Counter::UnderlayPass);
    };
    let ip = unsafe { &*ip };
    if ip[6] != wire::IPPROTO_UDP {
        // A published port's (nodeport.rs, its own program) or the host's.
        nodeport::to_published(ctx);
        return pass(Counter::UnderlayPass);
    }
    let dport = u16::from_be_bytes(unsafe { (*udp).dst });
    let dst = ipv6::words((&raw const ip[24]).cast());
    // (On an IPv4 node this also keeps out IPv6 "from" ::ffff:<a VTEP's IPv4 address>, which
    // the maps' mapped form of IPv4 VTEPs would otherwise have taken as that VTEP.)
    if !vxlan::is_tunnel_port(dport) || !to_our_vtep(dst, true) {
        nodeport::to_published(ctx);
        return pass(Counter::UnderlayPass);
    }
    let mut source = [0u8; 16];
    source.copy_from_slice(&ip[8..24]);
    let carried = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    accept::<OFF_UDP6>(ctx, dport, source, carried)
}

/// Whether `dst` (as words of the maps' 16-byte form) is this node's VTEP, in the node's
/// underlay family (`ipv6`: the packet's). VXLAN to another address is not ours, as a kernel
/// vxlan device's socket never sees it: transit through a node that routes the underlay
/// (forwarding is on on every node), another host's frames a switch floods, the other family.
/// Taken as ours, a tunnel packet between two other nodes was dropped here (`drop_no_endpoint`,
/// `drop_unknown_vni`...) and its broadcast delivered to this node's bridge.
#[inline(always)]
fn to_our_vtep(dst: [u32; 4], ipv6: bool) -> bool {
    match CONFIG.get(0) {
        Some(node) => vxlan::underlay_is_ipv6(node) == ipv6 && vxlan::words(&node.vtep) == dst,
        None => false,
    }
}

/// VXLAN to our port `dport` from `source`, its UDP header at `OFF_UDP_AT`, its IP header
/// claiming `carried` bytes from UDP on: delivered or dropped with a reason. One copy per
/// underlay family, so every offset is a constant to the verifier.
#[inline(always)]
fn accept<const OFF_UDP_AT: usize>(
    ctx: &TcContext,
    dport: u16,
    source: VtepAddr,
    carried: usize,
) -> Verdict {
    let off_vxlan = OFF_UDP_AT + UdpHdr::LEN;
    let off_inner = off_vxlan + VxlanHdr::LEN;
    let ipv6 = OFF_UDP_AT == OFF_UDP6;
    if !linearize(ctx, off_inner + EthHdr::LEN) {
        return drop(Counter::DropTooShort);
    }
    let (Some(udp), Some(vxlan), Some(inner)) = (
        ptr_at::<UdpHdr>(ctx, OFF_UDP_AT),
        ptr_at::<VxlanHdr>(ctx, off_vxlan),
        ptr_at::<EthHdr>(ctx, off_inner),
    ) else {
        return drop(Counter::DropTooShort);
    };
    let (udp, vxlan) = unsafe { (&*udp, &*vxlan) };
    let inner = vxlan::InnerEth::read(inner);
    let (udp_check, udp_len) = (udp.check, udp.len);
    // Headers that claim less than they carry: a truncated or forged packet.
    let least = UdpHdr::LEN + VxlanHdr::LEN + EthHdr::LEN;
    if (u16::from_be_bytes(udp.len) as usize) < least || carried < least {
        return drop(Counter::DropTooShort);
    }
    if !vxlan.is_valid() {
        return drop(Counter::DropBadVxlan);
    }
    let vni = vxlan.vni();
    let source = VtepKey { vni, ip: source };
    // One lookup on the way in: a VTEP of this VNI, sending to this VNI's port. Only a refusal
    // asks NETWORKS, to name the reason.
    match unsafe { VTEPS.get(source) } {
        Some(&port) if port == u32::from(dport) => {}
        _ => {
            return match unsafe { NETWORKS.get(vni) } {
                Some(network) if network.port == dport => drop(Counter::DropUnknownVtep),
                _ => drop(Counter::DropUnknownVni),
            };
        }
    }
    // Only now, from a VTEP of the VNI, is the datagram worth summing.
    if !rx_checksum::acceptable::<OFF_UDP_AT>(ctx, OFF_IP, udp_check, udp_len, ipv6) {
        return drop(Counter::DropBadChecksum);
    }
    // RFC 6040: what the outer ECN field does to the inner packet, decided (and a CE that
    // could not be passed on dropped) before anything is unwrapped. The inner IP header's
    // first 12 bytes (an IPv4 one's checksum among them) made readable, if they are there.
    linearize(ctx, off_inner + EthHdr::LEN + 12);
    let Ok(ecn) = ecn::on_decap(
        ctx,
        off_inner + EthHdr::LEN,
        inner.ether_type,
        outer_ecn(ctx, ipv6),
    ) else {
        return drop(Counter::DropEcn);
    };
    // Keyed by VNI: a frame can only ever reach an endpoint of the network it was sent in.
    let Some(to) = (unsafe { ENDPOINTS.get(MacKey::new(vni, inner.dst())) }) else {
        if flood::is_group(inner.dst()) {
            return flood::deliver(ctx, vni, &inner, ipv6, ecn);
        }
        return drop(Counter::DropNoEndpoint);
    };
    let (ifindex, how) = (to.ifindex, to.deliver);
    // A published port's flow, sent by its ingress node: where its replies leave from.
    nodeport::at_decap(ctx, off_inner, &inner, source.ip, ipv6);
    // With a GRO handler on our port (the agent's ovgro device), the wire's packets arrive
    // here merged: count how many this skb carries.
    let segments = unsafe { (*ctx.skb.skb).gso_segs }.max(1);

    // Before the outer headers go: the monitor's decap event names the VTEP and the VNI.
    monitor::trace(ctx, hook::FROM_UNDERLAY, Counter::Decap);
    if vxlan::decap(ctx, &inner, ipv6, ecn).is_err() {
        return drop(Counter::DropAdjustFailed);
    }
    add(Counter::DecapSegments, u64::from(segments));
    let inner_type = u16::from_be(inner.ether_type);
    let verdict = if how == deliver::INGRESS {
        unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) }
    } else if inner_type == wire::ETH_P_IP || inner_type == wire::ETH_P_IPV6 {
        unsafe { bpf_redirect_peer(ifindex, 0) }
    } else {
        // redirect_peer skips eth_type_trans, so skb->protocol would still say IPv4: send
        // anything else through the veth, whose peer parses it afresh.
        unsafe { bpf_redirect(ifindex, 0) }
    };
    redirected(Counter::Decap, verdict)
}

/// The outer header's ECN field (the IPv4 TOS's or the IPv6 traffic class's low bits).
#[inline(always)]
fn outer_ecn(ctx: &TcContext, ipv6: bool) -> u8 {
    let Some(b) = ptr_at::<[u8; 2]>(ctx, OFF_IP) else {
        return 0;
    };
    let b = unsafe { *b };
    if ipv6 { b[1] >> 4 } else { b[1] }
}
