//! A frame a container sent, seen at TC ingress of the host side of its veth.
//!
//! Order: identify the sender (PORTS), refuse spoofed sources (IPv4, ARP, IPv6 and its
//! neighbour advertisements) and router messages, answer ARP and neighbour solicitations from
//! the map, then forward unicast: straight into a local container, or VXLAN to the remote
//! VTEP. A container's UDP to a port VXLAN uses is refused wherever it goes (vxlan.rs says
//! why). Broadcast and multicast are replicated to the network's other hosts (flood.rs) and
//! left to the bridge for local members (router solicitations to the bridge alone); anything else
//! (unknown unicast, non-IP) is left to the bridge, which only reaches local ports. From an
//! internal network, only a DNS query reaches the host (its resolver is on the bridge).
use aya_ebpf::{
    bindings::BPF_F_INGRESS,
    helpers::{bpf_redirect, bpf_redirect_peer},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::{Counter, Endpoint, MacKey, deliver, wire};

use crate::{
    arp, flood, igmp, ipv6,
    maps::{ENDPOINTS, FDB, NETWORKS, PORTS},
    ndp, nodeport,
    packet::{ifindex, linearize, ptr_at},
    stats::{Verdict, drop, pass, redirected},
    vxlan,
};

pub fn handle(ctx: &aya_ebpf::programs::TcContext) -> Verdict {
    // Ethernet + IPv4 header, or Ethernet + ARP: whichever is shorter must be readable.
    if !linearize(ctx, EthHdr::LEN) {
        return drop(Counter::DropTooShort);
    }
    let Some(sender) = (unsafe { PORTS.get(ifindex(ctx)) }) else {
        // Not a port we manage (the agent attached us before registering it, or it is gone).
        return pass(Counter::ContainerPass);
    };
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(Counter::DropTooShort);
    };
    let eth = unsafe { *eth };
    if eth.src_addr != sender.mac {
        return drop(Counter::DropSpoofedMac);
    }
    match u16::from_be(eth.ether_type) {
        wire::ETH_P_ARP => arp::answer(ctx, sender),
        wire::ETH_P_IP => {
            if !linearize(ctx, EthHdr::LEN + Ipv4Hdr::LEN) {
                return drop(Counter::DropTooShort);
            }
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
                return drop(Counter::DropTooShort);
            };
            let (src, dst, proto, vihl, frags) = unsafe {
                (
                    (*ip).src_addr,
                    (*ip).dst_addr,
                    (*ip).proto,
                    (*ip).vihl,
                    (*ip).frags,
                )
            };
            // 0.0.0.0 is what a DHCP client sends from before it has an address.
            if src != sender.ip && src != [0; 4] {
                return drop(Counter::DropSpoofedIp);
            }
            let l4 = igmp::offset(vihl);
            // Only a first fragment (or a whole datagram) carries the UDP header; a later one
            // cannot be reassembled without it.
            if proto == wire::IPPROTO_UDP
                && u16::from_be_bytes(frags) & IP_OFFSET_MASK == 0
                && let Err(reason) = vxlan::not_to_tunnel_port(ctx, l4)
            {
                return drop(reason);
            }
            let group = igmp::group_of(eth.dst_addr, dst);
            // Snooped only what storm control will let through: a port over its limit is not
            // heard, and cannot churn GROUPS faster than its limit. Only reports to a group
            // address: no host sends them elsewhere.
            if proto == IPPROTO_IGMP
                && flood::is_group(eth.dst_addr)
                && !flood::storm_limited(ctx, sender, group)
            {
                igmp::snoop(ctx, sender, l4);
            }
            let to = Unicast::Ipv4 { proto, frags, l4 };
            forward(ctx, sender, eth.dst_addr, true, group, to)
        }
        wire::ETH_P_IPV6 => {
            // A dual-stack network's prefix: the sender's own address and those NDP answers.
            let prefix6 = unsafe { NETWORKS.get(sender.vni) }.map_or([0; 12], |n| n.prefix6);
            match ipv6::check_source(ctx, &ipv6::Own::of(sender, &prefix6)) {
                Ok(ipv6::Allowed::Solicitation) => ndp::answer(ctx, sender, &prefix6, eth.dst_addr)
                    .unwrap_or_else(|| {
                        forward(ctx, sender, eth.dst_addr, true, NO_GROUP, Unicast::Any)
                    }),
                // Left to the bridge: never replicated to the network's other hosts.
                Ok(ipv6::Allowed::RouterSolicitation) => pass(Counter::ContainerPass),
                Ok(ipv6::Allowed::Other) => {
                    forward(ctx, sender, eth.dst_addr, true, NO_GROUP, Unicast::Ipv6)
                }
                Err(reason) => drop(reason),
            }
        }
        // A VLAN tag still in the frame is a second one: the kernel takes the first off before
        // TC. Behind it, an ARP or IP packet no check here read, which the receiving container's
        // kernel unwraps when the outer tag is an 802.1p priority tag (VLAN 0,
        // __netif_receive_skb_core): a same-host neighbour's ARP cache poisoned, or IP from any
        // source. Refused rather than let through unread, as a too-long IPv6 extension chain.
        wire::ETH_P_8021Q | wire::ETH_P_8021AD => drop(Counter::DropSpoofedIp),
        // Other ethertypes cannot be grown by bpf_skb_adjust_room: local only.
        _ => forward(ctx, sender, eth.dst_addr, false, NO_GROUP, Unicast::Any),
    }
}

/// IPv4 protocol number of IGMP.
const IPPROTO_IGMP: u8 = 2;
/// An IPv4 header's fragment offset (in 8-byte units) within its flags and offset field.
const IP_OFFSET_MASK: u16 = 0x1fff;
/// The IPv4 group of a frame that has none (IPv6, other ethertypes).
const NO_GROUP: [u8; 4] = [0; 4];

/// DNS's port: the node's resolver listens on it on each network's bridge.
const DNS_PORT: u16 = 53;

/// What a frame carries, for an internal network's one way to the host: an IPv4 DNS query
/// ([`dns_query`]), let through to the host, whose nftables input rules take it only to the
/// resolver's address (syncs/egress.rs). Read only when it matters: not on the fast path.
#[derive(Clone, Copy)]
enum Unicast {
    Ipv4 {
        proto: u8,
        frags: [u8; 2],
        l4: usize,
    },
    /// An IPv6 packet the sender may send (its source checked).
    Ipv6,
    Any,
}

/// UDP or TCP to port 53, in a whole datagram or its first fragment (a later one has no port).
#[inline(always)]
fn dns_query(ctx: &aya_ebpf::programs::TcContext, proto: u8, frags: [u8; 2], l4: usize) -> bool {
    (proto == wire::IPPROTO_UDP || proto == wire::IPPROTO_TCP)
        && u16::from_be_bytes(frags) & IP_OFFSET_MASK == 0
        && ctx
            .load::<[u8; 2]>(l4 + 2)
            .is_ok_and(|port| u16::from_be_bytes(port) == DNS_PORT)
}

/// Unicast to a known MAC of the sender's network: local delivery or encapsulation; group
/// traffic (`group`: the IPv4 group whose members alone get it, `igmp::group_of`) to the
/// network's hosts.
#[inline(always)]
fn forward(
    ctx: &aya_ebpf::programs::TcContext,
    sender: &Endpoint,
    dst: [u8; 6],
    ip: bool,
    group: [u8; 4],
    unicast: Unicast,
) -> Verdict {
    let key = MacKey::new(sender.vni, dst);
    // Remote first: that is the path where every nanosecond shows (a MAC is never in both).
    if ip && let Some(fdb) = FDB.get_ptr_mut(key) {
        // The network's port lives in the entry: 0 means it is not (or no longer) served.
        let port = unsafe { (*fdb).port };
        if port == 0 {
            return pass(Counter::ContainerPass);
        }
        return vxlan::encap(ctx, sender.vni, port, fdb);
    }
    if let Some(local) = unsafe { ENDPOINTS.get(key) } {
        return deliver_local(local);
    }
    // IPv4 and IPv6 broadcast and multicast reach the network's other hosts too. Other
    // ethertypes stay local (STP, LLDP and their like must never cross a switch).
    if ip && flood::is_group(dst) {
        return flood::replicate(ctx, sender, Counter::ContainerPass, group);
    }
    // A backend's reply to a client of a published port (nodeport.rs): straight to it.
    let reply = match unicast {
        Unicast::Ipv4 { .. } => nodeport::reply(ctx),
        Unicast::Ipv6 => nodeport::reply6(ctx),
        Unicast::Any => None,
    };
    if let Some(verdict) = reply {
        return verdict;
    }
    // Unicast for no endpoint: the gateway's way out, which an internal network has not; its
    // resolver it has.
    if ip && flood::internal(sender.vni) {
        let to_resolver = match unicast {
            Unicast::Ipv4 { proto, frags, l4 } => dns_query(ctx, proto, frags, l4),
            Unicast::Ipv6 | Unicast::Any => false,
        };
        if !to_resolver {
            return drop(Counter::DropInternal);
        }
    }
    pass(Counter::ContainerPass)
}

/// Hands a frame to a local endpoint, skipping the bridge.
#[inline(always)]
pub fn deliver_local(to: &Endpoint) -> Verdict {
    let verdict = if to.deliver == deliver::INGRESS {
        unsafe { bpf_redirect(to.ifindex, BPF_F_INGRESS as u64) }
    } else {
        // Straight into the container's namespace: no second pass through a veth xmit and
        // backlog queue (kernel commit 9aa1206e8f48).
        unsafe { bpf_redirect_peer(to.ifindex, 0) }
    };
    redirected(Counter::LocalDeliver, verdict)
}
