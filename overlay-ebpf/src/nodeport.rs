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
//!
//! On an IPv6 underlay the same, in IPv6 (PUB_FLOWS6, PUB_REPLY6): the client's packet goes
//! to the backend's IPv6 address, its IPv4 address within its dual-stack network's prefix; a
//! network without one has no backend an IPv6 client can reach (`published_no_backend`).
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{
        bpf_csum_diff, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_load_bytes,
    },
    maps::LruHashMap,
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::{
    Counter, FdbEntry, FlowBackend, FlowKey, FlowKey6, IpKey, MacKey, PUBLISHED_MAC_PREFIX,
    PublishedKey, ReplyVia, ServiceKey, VtepAddr, deliver, jump, vtep, wire,
};

use crate::{
    lb,
    maps::{
        ARP, CONFIG, ENDPOINTS, FDB, JUMP, NETWORKS, PUB_FLOWS, PUB_FLOWS6, PUB_REPLY, PUB_REPLY6,
        PUBLISHED, SERVICES,
    },
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
/// The same in an IPv6 packet without extension headers.
const IPV6_LEN: usize = 40;
const OFF_L4_6: usize = OFF_IP + IPV6_LEN;
const IP6_SRC: usize = OFF_IP + 8;
const IP6_DST: usize = OFF_IP + 24;
const SPORT6: usize = OFF_L4_6;
const DPORT6: usize = OFF_L4_6 + 2;

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

/// The flow of an IPv6 TCP or UDP packet at `ip` whose next header is TCP or UDP itself (no
/// extension header: a fragment or anything else is the host stack's); None for anything else.
#[inline(always)]
fn tuple6(ctx: &TcContext, ip: usize) -> Option<FlowKey6> {
    let h = ctx.load::<[u8; 8]>(ip).ok()?;
    let proto = h[6];
    if h[0] >> 4 != 6 || (proto != wire::IPPROTO_TCP && proto != wire::IPPROTO_UDP) {
        return None;
    }
    let p = ctx.load::<[u8; 4]>(ip + IPV6_LEN).ok()?;
    let mut t = FlowKey6 {
        src: [0; 16],
        dst: [0; 16],
        sport_be: u16::from_ne_bytes([p[0], p[1]]),
        dport_be: u16::from_ne_bytes([p[2], p[3]]),
        proto,
        _pad: [0; 3],
    };
    // The addresses straight into the key: a copy of the header, or of each address, would
    // cost the callers' stack frames 16 to 40 bytes more.
    load_into(ctx, ip + 8, &mut t.src)?;
    load_into(ctx, ip + 24, &mut t.dst)?;
    Some(t)
}

/// The 16 bytes at `offset`, read into `to`.
#[inline(always)]
fn load_into(ctx: &TcContext, offset: usize, to: &mut [u8; 16]) -> Option<()> {
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset as u32,
            to.as_mut_ptr().cast(),
            16,
        )
    };
    (r == 0).then_some(())
}

/// In `from_underlay`, a packet that is not VXLAN of ours: one to a published port of this
/// node is handed to the `nodeport_in` program (a tail call, which does not return: the
/// verifier walks that path in a program of its own, not in every path of
/// `from_underlay`); anything else returns, for the host stack.
#[inline(always)]
pub fn to_published(ctx: &TcContext) {
    if published(ctx).is_some() || published6(ctx).is_some() {
        // A tail call that fails (no program in the slot) returns: the host stack has it.
        unsafe { JUMP.tail_call(ctx, jump::NODEPORT_IN) };
    }
}

/// The `nodeport_in` program: a packet to a published port of this node, to its backend;
/// left to the host stack if it is not one after all.
pub fn handle_in(ctx: &TcContext) -> Verdict {
    match in4(ctx).or_else(|| in6(ctx)) {
        Some(Next::Done(v)) => v,
        // Encapsulated from this frame, not from below the family's: the two calls' stacks
        // one under the other were more than the verifier allows a chain of calls.
        Some(Next::Encap(vni, fdb)) => renamed(
            vxlan::encap(ctx, vni, unsafe { (*fdb).port }, fdb),
            Counter::Encap,
            Counter::PublishedIn,
        ),
        None => pass(Counter::UnderlayPass),
    }
}

/// What is left to do with a packet to a published port, rewritten for its backend.
enum Next {
    Done(Verdict),
    /// Encapsulated to the backend's node, in network `vni`, by FDB entry `fdb`.
    Encap(u32, *mut FdbEntry),
}

/// An IPv4 packet to a published port, to its backend. Each family is a call of its own:
/// both inlined in one frame were more stack than the verifier allows.
#[inline(never)]
fn in4(ctx: &TcContext) -> Option<Next> {
    let (t, service, vtep) = published(ctx)?;
    Some(to_backend(ctx, &t, &service, vtep))
}

/// An IPv6 packet to a published port, to its backend.
#[inline(never)]
fn in6(ctx: &TcContext) -> Option<Next> {
    let (t, service, vtep) = published6(ctx)?;
    Some(to_backend6(ctx, &t, &service, vtep))
}

/// A packet from the underlay to this node's VTEP address and a published port: its flow,
/// the service port it reaches, and the node's VTEP.
#[inline(always)]
fn published(ctx: &TcContext) -> Option<(FlowKey, ServiceKey, VtepAddr)> {
    let node = CONFIG.get(0)?;
    if vxlan::underlay_is_ipv6(node) {
        return None;
    }
    let own = vtep::v4(&node.vtep);
    let t = tuple(ctx, OFF_IP)?;
    if t.dst != own {
        return None;
    }
    Some((t, service_at(t.dport_be, t.proto)?, node.vtep))
}

/// The service port published on (`port_be`, `proto`), if any.
#[inline(always)]
fn service_at(port_be: u16, proto: u8) -> Option<ServiceKey> {
    let key = PublishedKey {
        port_be,
        proto,
        _pad: 0,
    };
    unsafe { PUBLISHED.get(key) }.copied()
}

/// [`published`] for an IPv6 underlay's packet.
#[inline(always)]
fn published6(ctx: &TcContext) -> Option<(FlowKey6, ServiceKey, VtepAddr)> {
    let node = CONFIG.get(0)?;
    if !vxlan::underlay_is_ipv6(node) {
        return None;
    }
    let t = tuple6(ctx, OFF_IP)?;
    if t.dst != node.vtep {
        return None;
    }
    Some((t, service_at(t.dport_be, t.proto)?, node.vtep))
}

/// Flow `t`'s backend: the one it was given, or at its first packet (or the first since the
/// LRU let it go) one now, kept for every later packet. None: the service has no backend,
/// and the host stack refuses the packet.
#[inline(always)]
fn flow_backend<K>(
    flows: &LruHashMap<K, FlowBackend>,
    t: &K,
    service: &ServiceKey,
) -> Option<FlowBackend> {
    if let Some(b) = flows.get_ptr(t) {
        return Some(unsafe { *b });
    }
    let chosen = choose(service)?;
    let _ = flows.insert(t, chosen, 0);
    Some(chosen)
}

/// The backend service port `service` gives a flow's first packet (None: it has none).
#[inline(always)]
fn choose(service: &ServiceKey) -> Option<FlowBackend> {
    let s = SERVICES.get_ptr(*service)?;
    let (id, count) = unsafe { ((*s).id, (*s).count) };
    let b = lb::select(id, count)?;
    Some(FlowBackend {
        vni: service.vni,
        ip: b.ip,
        port_be: b.port_be,
        _pad: 0,
    })
}

/// Where `backend` is: its MAC, and its FDB entry (remote) or its port (local). None: this node
/// cannot reach it (its network not served here), and the host stack refuses the packet, as
/// when there is no backend at all. Asked before anything is rewritten.
#[inline(always)]
fn locate(backend: &FlowBackend) -> Option<([u8; 6], Place)> {
    let mac = unsafe {
        ARP.get(IpKey {
            vni: backend.vni,
            ip: backend.ip,
        })
    }?
    .mac;
    let key = MacKey::new(backend.vni, mac);
    if let Some(fdb) = FDB.get_ptr_mut(key) {
        return (unsafe { (*fdb).port } != 0).then_some((mac, Place::Remote(fdb)));
    }
    let e = unsafe { ENDPOINTS.get(key) }?;
    Some((mac, Place::Local(e.ifindex, e.deliver)))
}

/// A backend's place: behind a VTEP (its FDB entry) or on this node (its port, how to deliver).
enum Place {
    Remote(*mut FdbEntry),
    Local(u32, u16),
}

/// The frame, its destination rewritten to the backend at `mac`, sent there: into its
/// container (after `remember` records where replies leave from), or left for the caller to
/// encapsulate to its node.
#[inline(always)]
fn send_to(
    ctx: &TcContext,
    vni: u32,
    mac: [u8; 6],
    place: Place,
    dport_be: u16,
    remember: impl FnOnce(),
) -> Next {
    // The inner source MAC tells the backend's node which published port the flow came in by.
    let [p0, p1] = dport_be.to_ne_bytes();
    let [m0, m1, m2, m3] = PUBLISHED_MAC_PREFIX;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Next::Done(drop(Counter::DropTooShort));
    };
    unsafe {
        (*eth).dst_addr = mac;
        (*eth).src_addr = [m0, m1, m2, m3, p0, p1];
    }
    match place {
        Place::Remote(fdb) => Next::Encap(vni, fdb),
        Place::Local(ifindex, how) => {
            remember();
            let verdict = if how == deliver::INGRESS {
                unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) }
            } else {
                unsafe { bpf_redirect_peer(ifindex, 0) }
            };
            Next::Done(redirected(Counter::PublishedIn, verdict))
        }
    }
}

#[inline(always)]
fn to_backend(ctx: &TcContext, t: &FlowKey, service: &ServiceKey, own_vtep: VtepAddr) -> Next {
    let Some(backend) = flow_backend(&PUB_FLOWS, t, service) else {
        return Next::Done(pass(Counter::PublishedNoBackend));
    };
    let Some((mac, place)) = locate(&backend) else {
        return Next::Done(pass(Counter::PublishedNoBackend));
    };
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
        return Next::Done(drop(Counter::DropAdjustFailed));
    }
    // The flow as rewritten, the other way: what the backend's replies carry.
    let reply = FlowKey {
        dst: backend.ip,
        dport_be: backend.port_be,
        ..*t
    }
    .reversed();
    send_to(ctx, backend.vni, mac, place, t.dport_be, || {
        remember(&PUB_REPLY, &reply, own_vtep, t.dport_be)
    })
}

/// [`to_backend`] for an IPv6 client: to the backend's IPv6 address.
#[inline(always)]
fn to_backend6(ctx: &TcContext, t: &FlowKey6, service: &ServiceKey, own_vtep: VtepAddr) -> Next {
    let Some(backend) = flow_backend(&PUB_FLOWS6, t, service) else {
        return Next::Done(pass(Counter::PublishedNoBackend));
    };
    // The backend's IPv6 address: its IPv4 address within its network's prefix, if it has one.
    let Some(net) = (unsafe { NETWORKS.get(backend.vni) }) else {
        return Next::Done(pass(Counter::PublishedNoBackend));
    };
    if net.prefix6 == [0; 12] {
        return Next::Done(pass(Counter::PublishedNoBackend));
    }
    let mut ip6 = [0u8; 16];
    ip6[..12].copy_from_slice(&net.prefix6);
    ip6[12..].copy_from_slice(&backend.ip);
    let Some((mac, place)) = locate(&backend) else {
        return Next::Done(pass(Counter::PublishedNoBackend));
    };
    if nat6(
        ctx,
        IP6_DST,
        &t.dst,
        &ip6,
        DPORT6,
        t.dport_be,
        backend.port_be,
        t.proto,
    )
    .is_err()
    {
        return Next::Done(drop(Counter::DropAdjustFailed));
    }
    let reply = FlowKey6 {
        dst: ip6,
        dport_be: backend.port_be,
        ..*t
    }
    .reversed();
    send_to(ctx, backend.vni, mac, place, t.dport_be, || {
        remember(&PUB_REPLY6, &reply, own_vtep, t.dport_be)
    })
}

/// Records (once per flow; a lookup refreshes the LRU) where the replies of flow `reply` leave
/// from: the ingress node's address and published port.
#[inline(always)]
fn remember<K>(map: &LruHashMap<K, ReplyVia>, reply: &K, ingress: VtepAddr, port_be: u16) {
    if map.get_ptr(reply).is_none() {
        let via = ReplyVia {
            ingress,
            port_be,
            _pad: 0,
        };
        let _ = map.insert(reply, via, 0);
    }
}

/// At decapsulation, for a local endpoint: a frame the ingress node `source` marked as a
/// published flow's (its inner source MAC) has the flow's replies recorded. An IPv4 flow
/// comes over an IPv4 underlay, an IPv6 one over an IPv6 underlay (`ipv6`): the ingress
/// address its replies leave from is of the client's family.
#[inline(always)]
pub fn at_decap(ctx: &TcContext, off_inner: usize, inner: &InnerEth, source: VtepAddr, ipv6: bool) {
    let src = inner.src();
    if src[..4] != PUBLISHED_MAC_PREFIX {
        return;
    }
    let port_be = u16::from_ne_bytes([src[4], src[5]]);
    match (u16::from_be(inner.ether_type), ipv6) {
        (wire::ETH_P_IP, false) => {
            let Some(t) = tuple(ctx, off_inner + EthHdr::LEN) else {
                return;
            };
            remember(&PUB_REPLY, &t.reversed(), source, port_be);
        }
        (wire::ETH_P_IPV6, true) => {
            let Some(t) = tuple6(ctx, off_inner + EthHdr::LEN) else {
                return;
            };
            remember(&PUB_REPLY6, &t.reversed(), source, port_be);
        }
        _ => {}
    }
}

/// A container's IPv4 unicast to no endpoint: if it is a backend's reply to a published
/// flow's client, sent to the client from the ingress address and published port.
#[inline(always)]
pub fn reply(ctx: &TcContext) -> Option<Verdict> {
    let t = tuple(ctx, OFF_IP)?;
    let via = *unsafe { PUB_REPLY.get(t) }?;
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
    Some(out_of_underlay())
}

/// [`reply`] for a container's IPv6 unicast: a backend's reply to an IPv6 client. A call of
/// its own: inlined, its 16-byte addresses would grow `from_container`'s stack frame past what
/// the verifier allows a chain of calls.
#[inline(never)]
pub fn reply6(ctx: &TcContext) -> Option<Verdict> {
    let t = tuple6(ctx, OFF_IP)?;
    // Read where it is (not copied onto the stack, for the same reason as tuple6's loads).
    let via = PUB_REPLY6.get_ptr(t)?;
    let (ingress, port_be) = unsafe { (&(*via).ingress, (*via).port_be) };
    if nat6(
        ctx, IP6_SRC, &t.src, ingress, SPORT6, t.sport_be, port_be, t.proto,
    )
    .is_err()
    {
        return Some(drop(Counter::DropAdjustFailed));
    }
    Some(out_of_underlay())
}

/// A rewritten reply sent out of the underlay device, routed by the kernel's FIB, which
/// resolves the next hop.
#[inline(always)]
fn out_of_underlay() -> Verdict {
    let Some(node) = CONFIG.get(0) else {
        return drop(Counter::DropAdjustFailed);
    };
    let v = unsafe { bpf_redirect_neigh(node.underlay_ifindex, core::ptr::null_mut(), 0, 0) };
    redirected(Counter::PublishedReply, v)
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

/// [`nat`] for IPv6: the 16-byte address at `addr_off` from `old_ip` to `new_ip` (the L4
/// checksum's pseudo-header by their difference; IPv6 has no header checksum) and the port.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nat6(
    ctx: &TcContext,
    addr_off: usize,
    old_ip: &[u8; 16],
    new_ip: &[u8; 16],
    port_off: usize,
    old_port: u16,
    new_port: u16,
    proto: u8,
) -> Result<(), ()> {
    let (check, mangled) = if proto == wire::IPPROTO_TCP {
        (OFF_L4_6 + 16, 0)
    } else {
        (OFF_L4_6 + 6, BPF_F_MARK_MANGLED_0 as u64)
    };
    // The helper only reads both: the callers' own arrays, not copies on the stack.
    let diff = unsafe {
        bpf_csum_diff(
            old_ip.as_ptr().cast_mut().cast(),
            16,
            new_ip.as_ptr().cast_mut().cast(),
            16,
            0,
        )
    };
    if diff < 0 {
        return Err(());
    }
    // Size 0: `to` is a checksum difference, not a field's new value.
    ctx.l4_csum_replace(check, 0, diff as u64, BPF_F_PSEUDO_HDR as u64 | mangled)
        .map_err(|_| ())?;
    ctx.l4_csum_replace(check, u64::from(old_port), u64::from(new_port), mangled | 2)
        .map_err(|_| ())?;
    ctx.store(addr_off, new_ip, 0).map_err(|_| ())?;
    ctx.store(port_off, &new_port, 0).map_err(|_| ())?;
    Ok(())
}
