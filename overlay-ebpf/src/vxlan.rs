//! VXLAN encapsulation and decapsulation (RFC 7348), byte for byte what a Linux vxlan device puts
//! on the wire. Over an IPv4 underlay: outer IPv4 without options, DF clear, TTL 64, DSCP 0 and
//! the inner ECN (RFC 6040), UDP checksum zero. Over an IPv6 underlay: outer IPv6 without
//! extension headers, flow label 0, hop limit 64, the same traffic class, and a zero UDP
//! checksum, as a vxlan device with `udp6zerocsumtx` sends (RFC 6935/6936 allow it for tunnels;
//! the receiver needs `udp6zerocsumrx`, our decapsulation takes both). Both: source port from the
//! flow hash, I flag and 24-bit VNI.
use aya_ebpf::{
    bindings::{
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_FIB_LKUP_RET_FWD_DISABLED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc, bpf_get_prandom_u32,
        bpf_ktime_get_coarse_ns, bpf_redirect, bpf_redirect_neigh, bpf_skb_change_proto,
    },
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use overlay_common::{
    Counter, FdbEntry, NEXT_HOP_TTL_NS, NodeConfig,
    wire::{self, VxlanHdr},
};

use crate::{
    ecn, fragment,
    ipv6::IPV6_LEN,
    maps::{CLUSTER_PORTS, CONFIG, VXLAN_PORTS},
    packet::{MacWords, ptr_at},
    pmtu,
    stats::{Verdict, drop, redirected},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const EALREADY: i32 = 114;
const TTL: u8 = 64;

/// What follows the outer IP header once encapsulated, in either family.
#[repr(C)]
struct Tail {
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
}

/// Everything in front of the inner frame's payload over an IPv4 underlay: what one store
/// writes.
#[repr(C)]
struct Encapsulated {
    outer_eth: EthHdr,
    ip: Ipv4Hdr,
    tail: Tail,
}

/// The same over an IPv6 underlay. The header is bytes, written as words: an array of u32 would
/// pad the struct after the 14-byte Ethernet header.
#[repr(C)]
struct Encapsulated6 {
    outer_eth: EthHdr,
    ip: [u8; IPV6_LEN],
    tail: Tail,
}

/// Whether `dport` is the UDP port of a network this node serves.
#[inline(always)]
pub fn is_tunnel_port(dport: u16) -> bool {
    matches!(VXLAN_PORTS.get(dport as u32), Some(networks) if *networks != 0)
}

/// Refuses a container's UDP datagram (its header at `l4`) to a port VXLAN uses here. Sent to
/// another node's VTEP, it would leave through the container's gateway masqueraded to this
/// node's VTEP, which every other node accepts VXLAN from for the networks this node serves:
/// a container of one network could write frames into another (through any NAT, Docker's
/// `docker_gwbridge` too, so no firewall rule of ours can be the only guard). The ports are
/// those of every network of the cluster (CLUSTER_PORTS, from etcd), served here or not: a
/// legacy host's kernel vxlan device takes VXLAN from any source. A datagram too short to name
/// its port is no UDP any stack would take: refused too.
#[inline(always)]
pub fn not_to_tunnel_port(ctx: &TcContext, l4: usize) -> Result<(), Counter> {
    let Ok(dport) = ctx.load::<[u8; 2]>(l4 + 2) else {
        return Err(Counter::DropTooShort);
    };
    let dport = u16::from_be_bytes(dport);
    if is_tunnel_port(dport) || unsafe { CLUSTER_PORTS.get(u32::from(dport)) }.is_some() {
        return Err(Counter::DropTunnelPort);
    }
    Ok(())
}

/// Whether the node's underlay is IPv6.
#[inline(always)]
pub fn underlay_is_ipv6(node: &NodeConfig) -> bool {
    node.ipv6 != 0
}

/// Wraps the frame (an IPv4 or IPv6 packet in Ethernet) for the VTEP of FDB entry `fdb` and
/// sends it out of the underlay. The frame must be directly readable for its Ethernet header.
#[inline(always)]
pub fn encap(ctx: &TcContext, vni: u32, port: u16, fdb: *mut FdbEntry) -> Verdict {
    let Some(node) = CONFIG.get(0) else {
        return drop(Counter::DropNoRoute);
    };
    let ipv6 = underlay_is_ipv6(node);
    let Some(route) = route(ctx, node, fdb) else {
        return drop(Counter::DropNoRoute);
    };

    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooShort);
    };
    let inner = InnerEth::read(eth);
    // Too big to cross once wrapped: cut into IPv4 fragments where IPv4 allows it
    // (fragment.rs), else answered with an ICMP error (pmtu.rs). A copy the fragmenting
    // program sent back through the port goes to it again, to be cut to its piece.
    let ether_type = u16::from_be(inner.ether_type);
    let overhead = wire::encap_overhead(ipv6);
    let mtu = u32::from(route.mtu).saturating_sub(overhead as u32);
    let too_big = route.mtu != 0 && pmtu::too_big(ctx, ether_type, mtu);
    if fragment::wanted(ctx, ether_type, too_big) {
        return fragment::request(ctx, mtu);
    }
    if too_big {
        return pmtu::reply(ctx, ether_type, mtu);
    }
    let inner_tos = inner_traffic_class(ctx, inner.ether_type);
    let inner_len = ctx.len();
    let hash = flow_hash(ctx, inner.ether_type);

    // ENCAP flags set the inner header offsets and SKB_GSO_UDP_TUNNEL, so a 64 KB TSO packet
    // stays one skb and is segmented (or not at all, veth to veth) after us. FIXED_GSO keeps the
    // MSS: the container MTU already leaves room for the outer headers.
    let l3 = if ipv6 {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
    } else {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    };
    let flags =
        (BPF_F_ADJ_ROOM_FIXED_GSO | l3 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH)
            as u64
            | ((EthHdr::LEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    if let Err(e) = ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
        && !regrow(ctx, e, inner.ether_type, ipv6)
    {
        return drop(Counter::DropAdjustFailed);
    }

    let udp_len = (inner_len as usize + UdpHdr::LEN + VxlanHdr::LEN) as u16;
    let udp = UdpHdr {
        src: wire::flow_src_port(hash).to_be_bytes(),
        dst: port.to_be_bytes(),
        len: udp_len.to_be_bytes(),
        // Zero: allowed over IPv4 and what Linux, Cilium and Calico send; over IPv6 what
        // `udp6zerocsumtx` sends (a GSO packet's segments could not carry a checksum of their
        // own: BPF cannot ask for SKB_GSO_UDP_TUNNEL_CSUM).
        check: [0; 2],
    };
    let tos = wire::outer_ecn(inner_tos);
    // Written in place, field by field: the grown head is linear and private after
    // adjust_room. The inner Ethernet header moves from the front to behind VXLAN.
    let (outer_eth, tail) = if ipv6 {
        let Some(h) = ptr_at::<Encapsulated6>(ctx, 0) else {
            return drop(Counter::DropAdjustFailed);
        };
        write_ipv6_header(
            unsafe { &raw mut (*h).ip },
            tos,
            udp_len,
            &node.vtep,
            unsafe { &(*fdb).vtep },
        );
        unsafe { (&raw mut (*h).outer_eth, &raw mut (*h).tail) }
    } else {
        let Some(h) = ptr_at::<Encapsulated>(ctx, 0) else {
            return drop(Counter::DropAdjustFailed);
        };
        let ip = ipv4_header(tos, udp_len, node, unsafe { &(*fdb).vtep });
        unsafe {
            (&raw mut (*h).ip).write_unaligned(ip);
            (&raw mut (*h).outer_eth, &raw mut (*h).tail)
        }
    };
    // Zero unless resolved: the neighbour subsystem writes the outer MACs on redirect then.
    let outer_type = if ipv6 {
        wire::ETH_P_IPV6
    } else {
        wire::ETH_P_IP
    };
    unsafe {
        inner.write(&raw mut (*tail).inner_eth);
        route.hop.dmac.write(&raw mut (*outer_eth).dst_addr);
        route.hop.smac.write(&raw mut (*outer_eth).src_addr);
        (&raw mut (*outer_eth).ether_type).write_unaligned(outer_type.to_be());
        (&raw mut (*tail).udp).write_unaligned(udp);
        let [w0, w1] = VxlanHdr::words(vni);
        let v = (&raw mut (*tail).vxlan).cast::<u32>();
        v.write_unaligned(w0);
        v.add(1).write_unaligned(w1);
    }

    let ifindex = route.hop.ifindex;
    let verdict = match route.how {
        How::Resolved => unsafe { bpf_redirect(ifindex, 0) },
        // The kernel routes the outer header we wrote and resolves the next hop's MAC. (Handing
        // it the next hop the FIB named would save that route lookup for the few packets before
        // the neighbour is known, at the cost of 36 bytes of stack the ICMP reply needs.)
        How::KernelRoutes => unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) },
    };
    redirected(Counter::Encap, verdict)
}

/// The outer IPv4 header towards `vtep` (an IPv4 VTEP in the maps' mapped form).
#[inline(always)]
fn ipv4_header(tos: u8, udp_len: u16, node: &NodeConfig, vtep: &[u8; 16]) -> Ipv4Hdr {
    let mut ip = Ipv4Hdr {
        vihl: 0x45,
        tos,
        tot_len: (udp_len + Ipv4Hdr::LEN as u16).to_be_bytes(),
        // DF clear, as Linux sends by default; the ID must then be unpredictable-ish per packet.
        id: (unsafe { bpf_get_prandom_u32() } as u16).to_be_bytes(),
        frags: [0; 2],
        ttl: TTL,
        proto: wire::IPPROTO_UDP,
        check: [0; 2],
        src_addr: overlay_common::vtep::v4(&node.vtep),
        dst_addr: overlay_common::vtep::v4(vtep),
    };
    let ip_bytes = unsafe { &*(&ip as *const Ipv4Hdr as *const [u8; 20]) };
    ip.check = wire::ipv4_header_checksum(ip_bytes).to_be_bytes();
    ip
}

/// Writes the outer IPv6 header at `p`, word by word (a whole header built first would cost the
/// stack 40 bytes the verifier's 512 cannot spare): version 6, the traffic class, flow label 0
/// (a vxlan device's default), the UDP payload, hop limit 64, our VTEP to theirs.
#[inline(always)]
fn write_ipv6_header(
    p: *mut [u8; IPV6_LEN],
    tos: u8,
    udp_len: u16,
    src: &[u8; 16],
    dst: &[u8; 16],
) {
    let [l0, l1] = udp_len.to_be_bytes();
    let w = p.cast::<u32>();
    unsafe {
        w.write_unaligned(u32::from_ne_bytes([0x60 | (tos >> 4), tos << 4, 0, 0]));
        w.add(1)
            .write_unaligned(u32::from_ne_bytes([l0, l1, wire::IPPROTO_UDP, TTL]));
        // One word at a time, straight from the map values.
        let (s, d) = (src.as_ptr().cast::<u32>(), dst.as_ptr().cast::<u32>());
        for i in 0..4 {
            w.add(2 + i).write_unaligned(s.add(i).read());
            w.add(6 + i).write_unaligned(d.add(i).read());
        }
    }
}

/// The outer Ethernet addresses and the device towards a VTEP.
#[derive(Clone, Copy)]
struct Hop {
    dmac: MacWords,
    smac: MacWords,
    ifindex: u32,
}

/// What the FIB (or its cached answer) told us about the way to the remote VTEP. A struct
/// with every field always set, not an enum with data: the verifier refuses to copy the
/// uninitialised bytes an enum's shorter variants leave.
#[derive(Clone, Copy)]
struct Route {
    how: How,
    /// MACs valid when Resolved; the device in every case.
    hop: Hop,
    /// The path MTU towards the VTEP; 0 when not known (the kernel routes or resolves).
    mtu: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Route and neighbour known: the outer MACs are written here, plain redirect.
    Resolved,
    /// The neighbour is not resolved yet, or the FIB would not answer (forwarding off): the
    /// kernel routes on redirect and the neighbour subsystem fills in L2.
    KernelRoutes,
}

impl Route {
    #[inline(always)]
    fn via(how: How, ifindex: u32) -> Self {
        Self {
            how,
            hop: Hop {
                dmac: MacWords::ZERO,
                smac: MacWords::ZERO,
                ifindex,
            },
            mtu: 0,
        }
    }
}

/// A frame that came out of our own decapsulation as a GRO super-packet (a container that
/// forwards with NAT, say) still carries the tunnel state GRO gave it: `skb->encapsulation`
/// and SKB_GSO_UDP_TUNNEL, which no 6.18 helper clears (BPF_F_ADJ_ROOM_DECAP_L4_UDP is a 2026
/// bpf-next series), and the ENCAP flags refuse it with -EALREADY. That stale state already
/// describes the packet being built: decapsulation and encapsulation both move the same bytes
/// at the same offset, so the inner header offsets GRO set point at the inner headers again,
/// and the gso type is VXLAN's. So grow without the ENCAP flags; true if that worked. Only with
/// the inner family the same as the underlay's: the ENCAP flags are also what turns the skb's
/// protocol into the outer family.
#[inline(always)]
fn regrow(ctx: &TcContext, error: i64, inner_type: u16, ipv6: bool) -> bool {
    let outer = if ipv6 {
        wire::ETH_P_IPV6
    } else {
        wire::ETH_P_IP
    };
    error == -(EALREADY as i64)
        && u16::from_be(inner_type) == outer
        && ctx
            .adjust_room(
                wire::encap_overhead(ipv6) as i32,
                BPF_ADJ_ROOM_MAC,
                BPF_F_ADJ_ROOM_FIXED_GSO as u64,
            )
            .is_ok()
}

/// The way to the entry's VTEP on the underlay: the next hop cached in the FDB entry while it
/// is fresh, else the kernel's FIB and neighbour table, which stay the source of truth (the
/// cache only saves asking them for every packet, and is refreshed every NEXT_HOP_TTL_NS).
/// Two CPUs refreshing one entry write the same values; a reader racing a change of the
/// underlay neighbour may send one packet to a stale MAC, as the kernel's own caches can.
#[inline(always)]
fn route(ctx: &TcContext, node: &NodeConfig, fdb: *mut FdbEntry) -> Option<Route> {
    let e = fdb;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if unsafe { (*e).valid_until_ns } > now {
        return Some(Route {
            how: How::Resolved,
            hop: Hop {
                dmac: MacWords::read(unsafe { &raw const (*e).dmac }),
                smac: MacWords::read(unsafe { &raw const (*e).smac }),
                ifindex: unsafe { (*e).ifindex },
            },
            mtu: unsafe { (*e).mtu },
        });
    }
    let mut route = Route::via(How::KernelRoutes, 0);
    lookup(ctx, node, fdb, now, &mut route).then_some(route)
}

/// The FIB lookup behind [`route`], refreshing the entry's cache when it resolves; false when
/// there is no way. A function of its own, called once per entry per NEXT_HOP_TTL_NS: its
/// lookup struct (64 bytes) stays off the frame of the program that encapsulates, whose stack
/// the ICMP reply (pmtu.rs) needs too.
#[inline(never)]
fn lookup(ctx: &TcContext, node: &NodeConfig, e: *mut FdbEntry, now: u64, out: &mut Route) -> bool {
    let ipv6 = underlay_is_ipv6(node);
    let underlay = node.underlay_ifindex;
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.l4_protocol = wire::IPPROTO_UDP;
    fib.ifindex = underlay;
    let (src, dst) = (words(&node.vtep), words(unsafe { &(*e).vtep }));
    if ipv6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = src;
        fib.__bindgen_anon_4.ipv6_dst = dst;
    } else {
        // The last word of an IPv4 VTEP's mapped form is its address.
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = src[3];
        fib.__bindgen_anon_4.ipv4_dst = dst[3];
    }
    // Any length asks the FIB to check the MTU, and then it answers the route's (a route's
    // `mtu`, a learned PMTU exception, or the device's) in mtu_result on success.
    fib.__bindgen_anon_1.tot_len = 1;
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let hop = Hop {
                dmac: MacWords::read(&raw const fib.dmac),
                smac: MacWords::read(&raw const fib.smac),
                ifindex: fib.ifindex,
            };
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
            unsafe {
                hop.dmac.write(&raw mut (*e).dmac);
                hop.smac.write(&raw mut (*e).smac);
                (*e).ifindex = hop.ifindex;
                (*e).mtu = mtu;
                (*e).valid_until_ns = now + NEXT_HOP_TTL_NS;
            }
            *out = Route {
                how: How::Resolved,
                hop,
                mtu,
            };
            true
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            *out = Route::via(How::KernelRoutes, fib.ifindex);
            true
        }
        // bpf_fib_lookup answers only for devices with forwarding on (as on every Docker or
        // Kubernetes node). Without it, the kernel routes the packet itself on redirect.
        BPF_FIB_LKUP_RET_FWD_DISABLED => {
            *out = Route::via(How::KernelRoutes, underlay);
            true
        }
        _ => false,
    }
}

/// A VTEP address as the FIB and the tunnel key want it: four words in network byte order.
/// Four loads: every VTEP field of the maps' values is 4-byte aligned (built byte by byte, the
/// words cost the stack more than the verifier's 512 bytes allow).
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    // SAFETY: 16 readable bytes; the maps place every VtepAddr at a multiple of 4.
    unsafe { a.as_ptr().cast::<[u32; 4]>().read() }
}

/// The packet's own hash when the stack gave it one (locally generated traffic has it from its
/// socket); else a cheap hash of the IPv4 5-tuple; the flow dissector only for the rest.
#[inline(always)]
fn flow_hash(ctx: &TcContext, ether_type: u16) -> u32 {
    let own = unsafe { (*ctx.skb.skb).hash };
    if own != 0 {
        return own;
    }
    if u16::from_be(ether_type) == wire::ETH_P_IP
        && let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)
    {
        let ip = unsafe { &*ip };
        let l4 = ip.vihl == 0x45
            && (ip.proto == wire::IPPROTO_TCP || ip.proto == wire::IPPROTO_UDP)
            && u16::from_be_bytes(ip.frags) & 0x1fff == 0;
        let ports = if l4 {
            ptr_at::<u32>(ctx, EthHdr::LEN + Ipv4Hdr::LEN).map_or(0, |p| unsafe { *p })
        } else {
            0
        };
        return wire::ipv4_flow_hash(ip.src_addr, ip.dst_addr, ip.proto, ports);
    }
    unsafe { bpf_get_hash_recalc(ctx.skb.skb) }
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

/// An Ethernet header read out of the packet as integers, to be written back elsewhere.
#[derive(Clone, Copy)]
pub struct InnerEth {
    dst: MacWords,
    src: MacWords,
    /// Network byte order, as in the packet.
    pub ether_type: u16,
}

impl InnerEth {
    #[inline(always)]
    pub fn read(p: *const EthHdr) -> Self {
        unsafe {
            Self {
                dst: MacWords::read(&raw const (*p).dst_addr),
                src: MacWords::read(&raw const (*p).src_addr),
                ether_type: (&raw const (*p).ether_type).read_unaligned(),
            }
        }
    }

    #[inline(always)]
    pub fn dst(&self) -> [u8; 6] {
        self.dst.bytes()
    }

    #[inline(always)]
    pub fn src(&self) -> [u8; 6] {
        self.src.bytes()
    }

    #[inline(always)]
    fn write(&self, p: *mut EthHdr) {
        unsafe {
            self.dst.write(&raw mut (*p).dst_addr);
            self.src.write(&raw mut (*p).src_addr);
            (&raw mut (*p).ether_type).write_unaligned(self.ether_type);
        }
    }
}

/// `bpf_skb_adjust_room` judges a shrink by the protocol of the packet (the outer one, unless
/// a DECAP_L3 flag names the inner one): it refuses to leave less than an IPv6 header's 40
/// bytes behind the Ethernet header, so an inner frame of another kind shorter than 54 bytes
/// (an ARP) cannot be unwrapped from outer IPv6 by it alone. For every frame that short,
/// `bpf_skb_change_proto` first takes 20 bytes from behind the Ethernet header and calls the
/// packet IPv4: what is left is an IPv4 underlay's 50 bytes of headers, which the usual shrink
/// removes as over an IPv4 underlay (where an inner frame under 34 bytes fails too, and is
/// dropped as drop_adjust_failed). True if it did. (Padding the frame to 60 bytes with
/// `bpf_skb_change_tail` instead passed the BPF_PROG_TEST_RUN test but fails on a real skb
/// that crossed a veth from an encapsulation in the same kernel: change_tail refuses the
/// `skb->encapsulation` it keeps (-ENOTSUPP), and iperf3's 4-byte opening datagram was
/// dropped.)
#[inline(always)]
fn short_from_ipv6(ctx: &TcContext) -> Result<bool, ()> {
    if ctx.len() >= (wire::ENCAP_OVERHEAD_V6 + EthHdr::LEN + IPV6_LEN) as u32 {
        return Ok(false);
    }
    match unsafe { bpf_skb_change_proto(ctx.skb.skb, wire::ETH_P_IP.to_be(), 0) } {
        0 => Ok(true),
        _ => Err(()),
    }
}

/// Strips the outer Ethernet/IP/UDP/VXLAN headers (outer IPv6 if `ipv6`), leaving `inner` at
/// the front, its ECN field as the outer one made it (`ecn`, RFC 6040). The caller has checked
/// that all of them, and the inner Ethernet header, are there.
#[inline(always)]
pub fn decap(ctx: &TcContext, inner: &InnerEth, ipv6: bool, ecn: ecn::Rewrite) -> Result<(), ()> {
    // A short frame (never a GSO one) behind outer IPv6 is behind 50 bytes of IPv4-sized
    // headers after this.
    let ipv6 = ipv6 && !short_from_ipv6(ctx)?;
    // FIXED_GSO goes in the flags, not the mode (Calico #11160): a GRO'd packet keeps its MSS.
    let mut flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
    // skb->protocol must name the inner L3 for the stack that receives it. (Anything else is
    // sent through a veth, whose peer parses it afresh.)
    match u16::from_be(inner.ether_type) {
        wire::ETH_P_IPV6 if !ipv6 => flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6 as u64,
        wire::ETH_P_IP if ipv6 => flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4 as u64,
        _ => {}
    }
    let overhead = wire::encap_overhead(ipv6) as i32;
    ctx.adjust_room(-overhead, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| ())?;
    // The shrink removed the bytes from the outer IP header to the inner Ethernet header; the
    // outer Ethernet header is still in front, so the inner one is written over it, in place.
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(())?;
    inner.write(eth);
    ecn::apply(ctx, inner.ether_type, ecn);
    Ok(())
}
