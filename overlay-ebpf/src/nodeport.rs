//! Published ports: TCP and UDP to `node:published` on any node's underlay address reach a
//! service's backends, and the backend sees the client's own address (Cilium's NodePort with
//! DSR, `bpf/lib/nodeport.h`, for IPv4 over our VXLAN).
//!
//! - The ingress node (`from_underlay`): a packet to its own VTEP address and a published port
//!   is given a backend at its flow's first packet (PUB_FLOWS, so the flow stays with it), its
//!   destination rewritten to backend:port, and delivered into the local backend or
//!   encapsulated to the backend's node. The inner source MAC of what it encapsulates says
//!   "published, port P" ([`PUBLISHED_MAC_PREFIX`]).
//! - The backend's node (`from_underlay` at decap, or the ingress itself for a local backend)
//!   records where the flow came in (PUB_REPLY: the ingress address and published port).
//! - The backend's reply (`from_container`, to an address of no endpoint) matching PUB_REPLY
//!   leaves straight for the client with its source rewritten to ingress:published (direct
//!   server return). docs/services.md says why DSR and not back through the ingress node.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::{
    Counter, FlowBackend, FlowKey, IpKey, MacKey, PUBLISHED_MAC_PREFIX, PublishedKey, ReplyVia,
    deliver, jump, vtep, wire,
};

use crate::{
    lb,
    maps::{ARP, CONFIG, ENDPOINTS, FDB, JUMP, PUB_FLOWS, PUB_REPLY, PUBLISHED, SERVICES},
    packet::ptr_at,
    stats::{Verdict, drop, pass, redirected},
    vxlan::{self, InnerEth},
};

const OFF_IP: usize = EthHdr::LEN;
const OFF_L4: usize = OFF_IP + Ipv4Hdr::LEN;
const IP_CHECK: usize = OFF_IP + 10;
const IP_SRC: usize = OFF_IP + 12;
const IP_DST: usize = OFF_IP + 16;
const SPORT: usize = OFF_L4;
const DPORT: usize = OFF_L4 + 2;

/// The flow of an IPv4 TCP or UDP packet at `ip` (its header without options, not a
/// fragment), its ports at `ip + 20`; None for anything else.
#[inline(always)]
fn tuple(ctx: &TcContext, ip: usize) -> Option<FlowKey> {
    let h = ctx.load::<[u8; 20]>(ip).ok()?;
    let proto = h[9];
    if h[0] != 0x45
        || (proto != wire::IPPROTO_TCP && proto != wire::IPPROTO_UDP)
        || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0
    {
        return None;
    }
    let p = ctx.load::<[u8; 4]>(ip + Ipv4Hdr::LEN).ok()?;
    Some(FlowKey {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        sport_be: u16::from_ne_bytes([p[0], p[1]]),
        dport_be: u16::from_ne_bytes([p[2], p[3]]),
        proto,
        _pad: [0; 3],
    })
}

/// In `from_underlay`, a packet that is not VXLAN of ours: one to a published port of this
/// node is handed to the `nodeport_in` program (a tail call, which does not return: the
/// verifier walks that path in a program of its own, not in every path of
/// `from_underlay`); anything else returns, for the host stack.
#[inline(always)]
pub fn to_published(ctx: &TcContext) {
    if published(ctx).is_some() {
        // A tail call that fails (no program in the slot) returns: the host stack has it.
        unsafe { JUMP.tail_call(ctx, jump::NODEPORT_IN) };
    }
}

/// The `nodeport_in` program: a packet to a published port of this node, to its backend;
/// left to the host stack if it is not one after all.
pub fn handle_in(ctx: &TcContext) -> Verdict {
    let Some((t, service, vtep)) = published(ctx) else {
        return pass(Counter::UnderlayPass);
    };
    to_backend(ctx, &t, &service, vtep)
}

/// A packet from the underlay to this node's VTEP address and a published port: its flow,
/// the service port it reaches, and the node's VTEP.
#[inline(always)]
fn published(
    ctx: &TcContext,
) -> Option<(
    FlowKey,
    overlay_common::ServiceKey,
    overlay_common::VtepAddr,
)> {
    let node = CONFIG.get(0)?;
    if vxlan::underlay_is_ipv6(node) {
        return None;
    }
    let own = vtep::v4(&node.vtep);
    let t = tuple(ctx, OFF_IP)?;
    if t.dst != own {
        return None;
    }
    let key = PublishedKey {
        port_be: t.dport_be,
        proto: t.proto,
        _pad: 0,
    };
    let service = *unsafe { PUBLISHED.get(key) }?;
    Some((t, service, node.vtep))
}

#[inline(always)]
fn to_backend(
    ctx: &TcContext,
    t: &FlowKey,
    service: &overlay_common::ServiceKey,
    own_vtep: overlay_common::VtepAddr,
) -> Verdict {
    let backend = match PUB_FLOWS.get_ptr(*t) {
        Some(b) => unsafe { *b },
        None => {
            // The flow's first packet (or the first since the LRU let it go): a backend now,
            // kept for every later packet. No backend: the host stack refuses it.
            let Some(s) = SERVICES.get_ptr(*service) else {
                return pass(Counter::PublishedNoBackend);
            };
            let (id, count) = unsafe { ((*s).id, (*s).count) };
            let Some(b) = lb::select(id, count) else {
                return pass(Counter::PublishedNoBackend);
            };
            let chosen = FlowBackend {
                vni: service.vni,
                ip: b.ip,
                port_be: b.port_be,
                _pad: 0,
            };
            let _ = PUB_FLOWS.insert(*t, chosen, 0);
            chosen
        }
    };
    let Some(mac) = (unsafe {
        ARP.get(IpKey {
            vni: backend.vni,
            ip: backend.ip,
        })
    })
    .map(|a| a.mac) else {
        return pass(Counter::PublishedNoBackend);
    };
    // Where the backend is, asked before anything is rewritten: a backend this node cannot
    // reach (its network not served here) leaves the packet to the host stack, which refuses
    // it, as when there is no backend at all.
    let key = MacKey::new(backend.vni, mac);
    let fdb = FDB.get_ptr_mut(key);
    let local = match fdb {
        Some(_) => None,
        None => unsafe { ENDPOINTS.get(key) }.map(|e| (e.ifindex, e.deliver)),
    };
    let reachable = match fdb {
        Some(f) => (unsafe { (*f).port }) != 0,
        None => local.is_some(),
    };
    if !reachable {
        return pass(Counter::PublishedNoBackend);
    }
    if nat(
        ctx,
        IP_DST,
        t.dst,
        backend.ip,
        DPORT,
        t.dport_be,
        backend.port_be,
        t.proto,
    )
    .is_err()
    {
        return drop(Counter::DropAdjustFailed);
    }
    // The inner source MAC tells the backend's node which published port the flow came in by.
    let [p0, p1] = t.dport_be.to_ne_bytes();
    let [m0, m1, m2, m3] = PUBLISHED_MAC_PREFIX;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooShort);
    };
    unsafe {
        (*eth).dst_addr = mac;
        (*eth).src_addr = [m0, m1, m2, m3, p0, p1];
    }
    if let Some(fdb) = fdb {
        let v = vxlan::encap(ctx, backend.vni, unsafe { (*fdb).port }, fdb);
        return renamed(v, Counter::Encap, Counter::PublishedIn);
    }
    let Some((ifindex, how)) = local else {
        return drop(Counter::DropNoEndpoint);
    };
    let reply = FlowKey {
        src: backend.ip,
        dst: t.src,
        sport_be: backend.port_be,
        dport_be: t.sport_be,
        proto: t.proto,
        _pad: [0; 3],
    };
    remember(&reply, own_vtep, t.dport_be);
    let verdict = if how == deliver::INGRESS {
        unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) }
    } else {
        unsafe { bpf_redirect_peer(ifindex, 0) }
    };
    redirected(Counter::PublishedIn, verdict)
}

/// Records (once per flow; a lookup refreshes the LRU) where the replies of flow `reply` leave
/// from: the ingress node's address and published port.
#[inline(always)]
fn remember(reply: &FlowKey, ingress: overlay_common::VtepAddr, port_be: u16) {
    if PUB_REPLY.get_ptr(*reply).is_none() {
        let via = ReplyVia {
            ingress,
            port_be,
            _pad: 0,
        };
        let _ = PUB_REPLY.insert(*reply, via, 0);
    }
}

/// At decapsulation, for a local endpoint: a frame the ingress node `source` marked as a
/// published flow's (its inner source MAC) has the flow's replies recorded.
#[inline(always)]
pub fn at_decap(
    ctx: &TcContext,
    off_inner: usize,
    inner: &InnerEth,
    source: overlay_common::VtepAddr,
) {
    let src = inner.src();
    if src[..4] != PUBLISHED_MAC_PREFIX || u16::from_be(inner.ether_type) != wire::ETH_P_IP {
        return;
    }
    let Some(t) = tuple(ctx, off_inner + EthHdr::LEN) else {
        return;
    };
    let reply = FlowKey {
        src: t.dst,
        dst: t.src,
        sport_be: t.dport_be,
        dport_be: t.sport_be,
        proto: t.proto,
        _pad: [0; 3],
    };
    remember(&reply, source, u16::from_ne_bytes([src[4], src[5]]));
}

/// A container's IPv4 unicast to no endpoint: if it is a backend's reply to a published
/// flow's client, sent to the client from the ingress address and published port.
#[inline(always)]
pub fn reply(ctx: &TcContext) -> Option<Verdict> {
    let t = tuple(ctx, OFF_IP)?;
    let via = *unsafe { PUB_REPLY.get(t) }?;
    let node = CONFIG.get(0)?;
    let ingress = vtep::v4(&via.ingress);
    if nat(
        ctx,
        IP_SRC,
        t.src,
        ingress,
        SPORT,
        t.sport_be,
        via.port_be,
        t.proto,
    )
    .is_err()
    {
        return Some(drop(Counter::DropAdjustFailed));
    }
    // Routed by the kernel's FIB from the underlay device, which resolves the next hop.
    let v = unsafe { bpf_redirect_neigh(node.underlay_ifindex, core::ptr::null_mut(), 0, 0) };
    Some(redirected(Counter::PublishedReply, v))
}

/// `v` with outcome `from` renamed `to` (a drop keeps its reason).
#[inline(always)]
fn renamed(v: Verdict, from: Counter, to: Counter) -> Verdict {
    if v.counter == from {
        Verdict { counter: to, ..v }
    } else {
        v
    }
}

/// Rewrites the IPv4 address at `addr_off` from `old_ip` to `new_ip` and the port at
/// `port_off` from `old_port` to `new_port` (both as the packet holds them), with the IP and
/// TCP/UDP checksums (a UDP checksum of zero, none, stays zero).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nat(
    ctx: &TcContext,
    addr_off: usize,
    old_ip: [u8; 4],
    new_ip: [u8; 4],
    port_off: usize,
    old_port: u16,
    new_port: u16,
    proto: u8,
) -> Result<(), ()> {
    let (check, mangled) = if proto == wire::IPPROTO_TCP {
        (OFF_L4 + 16, 0)
    } else {
        (OFF_L4 + 6, BPF_F_MARK_MANGLED_0 as u64)
    };
    let (o, n) = (
        u64::from(u32::from_ne_bytes(old_ip)),
        u64::from(u32::from_ne_bytes(new_ip)),
    );
    ctx.l4_csum_replace(check, o, n, BPF_F_PSEUDO_HDR as u64 | mangled | 4)
        .map_err(|_| ())?;
    ctx.l4_csum_replace(check, u64::from(old_port), u64::from(new_port), mangled | 2)
        .map_err(|_| ())?;
    ctx.l3_csum_replace(IP_CHECK, o, n, 4).map_err(|_| ())?;
    ctx.store(addr_off, &new_ip, 0).map_err(|_| ())?;
    ctx.store(port_off, &new_port, 0).map_err(|_| ())?;
    Ok(())
}
