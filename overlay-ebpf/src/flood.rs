//! Broadcast and multicast across hosts (RFC 7348 section 4.2, head-end replication): one copy
//! per remote VTEP of the network, cloned to the network port's collect_md vxlan device with
//! that VTEP in its tunnel key (the kernel writes the outer headers and resolves the next hop,
//! as it does for the legacy hosts we interoperate with); the frame itself is left to the
//! bridge for the local members. Arriving copies are sent out of the local bridge, which floods
//! its ports: every member once, never the sender, never another network.
use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_TUNINFO_IPV6, BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::{bpf_clone_redirect, bpf_ktime_get_ns, bpf_redirect, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use overlay_common::{
    BumWindow, Counter, Endpoint, FdbEntry, Flood, IpKey, MAX_FLOOD_VTEPS, NodeConfig, VtepAddr,
    monitor::hook, vtep,
};

use crate::{
    ecn, igmp,
    maps::{BUM_RATE, CONFIG, FLOOD, MCAST},
    monitor,
    packet::ifindex,
    stats::{self, Verdict, drop, pass, redirected},
    vxlan::{self, words},
};

const TTL: u8 = 64;

/// Whether a destination MAC is a group address (broadcast included).
#[inline(always)]
pub fn is_group(mac: [u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// A container's broadcast or multicast: rate-limited, replicated to the network's remote
/// VTEPs (for an IPv4 group of its own, `ip_dst`, only those with members: IGMP snooping), and
/// left to the bridge. `local`: the outcome when there is nobody remote.
#[inline(always)]
pub fn replicate(ctx: &TcContext, sender: &Endpoint, local: Counter, ip_dst: [u8; 4]) -> Verdict {
    let Some(flood) = FLOOD.get_ptr(sender.vni) else {
        return pass(local);
    };
    let rate = unsafe { (*flood).rate_pps };
    if limited(rate, ip_dst) && over_rate(ifindex(ctx), rate) {
        return drop(Counter::DropStorm);
    }
    let tunnel = unsafe { (*flood).tunnel };
    let Some(node) = CONFIG.get(0) else {
        return pass(local);
    };
    if tunnel == 0 {
        return pass(local);
    }
    // One branch on the underlay's family, then code for that family alone, which the
    // verifier walks once each. With a flag tested in the loops instead, from_container
    // took 473,000 verified instructions rather than 166,000 (the kernel's limit is 1M, and
    // each costs an agent's start time).
    if vxlan::underlay_is_ipv6(node) {
        to_hosts::<true>(ctx, sender, local, ip_dst, flood, tunnel, node)
    } else {
        to_hosts::<false>(ctx, sender, local, ip_dst, flood, tunnel, node)
    }
}

/// [`replicate`]'s copies through the collect_md device `tunnel`, over an underlay of one
/// family (`V6`).
#[inline(always)]
fn to_hosts<const V6: bool>(
    ctx: &TcContext,
    sender: &Endpoint,
    local: Counter,
    ip_dst: [u8; 4],
    flood: *const Flood,
    tunnel: u32,
    node: &NodeConfig,
) -> Verdict {
    let count = unsafe { (*flood).count };
    let mut key = tunnel_key::<V6>(sender.vni, node);
    let skb = ctx.skb.skb;
    let every_host = unsafe { &raw const (*flood).vteps };
    // Copies are counted in the map as they go: a running total is a constant the verifier
    // knows, another on every path through the loop, so no two paths merge, and two loops
    // in a row (members, then legacy hosts) multiply them (144,000 more verified
    // instructions).
    let Some(sent) = stats::slot(Counter::FloodCopies) else {
        return pass(local);
    };
    if igmp::tracked(ip_dst) {
        // A group of its own: the hosts with a member, and the legacy hosts (which cannot
        // say), none of them if nobody remote reported one.
        let key_group = IpKey {
            vni: sender.vni,
            ip: ip_dst,
        };
        let peers = unsafe { (*flood).peers };
        let group = MCAST.get_ptr(key_group);
        if group.is_none() && peers == 0 {
            return pass(local);
        }
        if let Some(g) = group {
            let (list, n) = unsafe { (&raw const (*g).vteps, (*g).count) };
            copies::<V6>(skb, &mut key, tunnel, list, n, sent);
        }
        copies::<V6>(skb, &mut key, tunnel, every_host, peers, sent);
    } else {
        // Broadcast, link-local groups, IPv6 multicast: every host of the network.
        if count == 0 {
            return pass(local);
        }
        copies::<V6>(skb, &mut key, tunnel, every_host, count, sent);
    }
    pass(Counter::Flood)
}

/// Whether `vni` is an internal network (no way out of the overlay).
#[inline(always)]
pub fn internal(vni: u32) -> bool {
    FLOOD
        .get_ptr(vni)
        .is_some_and(|f| unsafe { (*f).internal } != 0)
}

/// A container's frame that `bpf_skb_adjust_room` cannot wrap (anything but IP: an ARP reply
/// to a legacy host's request, which reached the container flooded), for a MAC of network
/// `vni` behind the remote VTEP of `fdb`: sent whole through the network port's collect_md
/// device with that VTEP in its tunnel key, as a flood copy is.
#[inline(always)]
pub fn to_remote(ctx: &TcContext, vni: u32, fdb: *const FdbEntry) -> Verdict {
    let tunnel = FLOOD.get_ptr(vni).map_or(0, |f| unsafe { (*f).tunnel });
    let Some(node) = CONFIG.get(0) else {
        return pass(Counter::ContainerPass);
    };
    if tunnel == 0 {
        return pass(Counter::ContainerPass);
    }
    let (skb, remote) = (ctx.skb.skb, unsafe { &(*fdb).vtep });
    let set = if vxlan::underlay_is_ipv6(node) {
        set_tunnel_key::<true>(skb, &mut tunnel_key::<true>(vni, node), remote)
    } else {
        set_tunnel_key::<false>(skb, &mut tunnel_key::<false>(vni, node), remote)
    };
    if set != 0 {
        return drop(Counter::DropNoRoute);
    }
    redirected(Counter::Encap, unsafe { bpf_redirect(tunnel, 0) })
}

/// A tunnel key for network `vni` from our VTEP, over an underlay of one family (`V6`); the
/// remote VTEP is set per copy ([`set_tunnel_key`]).
#[inline(always)]
fn tunnel_key<const V6: bool>(vni: u32, node: &NodeConfig) -> bpf_tunnel_key {
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    key.tunnel_ttl = TTL;
    if V6 {
        // Addresses as they are on the wire (IPv4 ones are in host order).
        key.__bindgen_anon_3.local_ipv6 = words(&node.vtep);
    } else {
        key.__bindgen_anon_3.local_ipv4 = u32::from_be_bytes(vtep::v4(&node.vtep));
    }
    key
}

/// `key` towards `remote`, set on the skb for the collect_md device to use; the helper's
/// result (0: set).
#[inline(always)]
fn set_tunnel_key<const V6: bool>(
    skb: *mut __sk_buff,
    key: &mut bpf_tunnel_key,
    remote: &VtepAddr,
) -> i64 {
    // Zero outer UDP checksum, as our own encapsulation sends.
    let flags = if V6 {
        BPF_F_ZERO_CSUM_TX | BPF_F_TUNINFO_IPV6
    } else {
        BPF_F_ZERO_CSUM_TX
    } as u64;
    if V6 {
        key.__bindgen_anon_1.remote_ipv6 = words(remote);
    } else {
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(vtep::v4(remote));
    }
    unsafe {
        bpf_skb_set_tunnel_key(
            skb,
            key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            flags,
        )
    }
}

/// One copy to each of the first `count` VTEPs of `list`, through the collect_md device
/// `tunnel`; each that went is counted in `sent`.
#[inline(always)]
fn copies<const V6: bool>(
    skb: *mut __sk_buff,
    key: &mut bpf_tunnel_key,
    tunnel: u32,
    list: *const [VtepAddr; MAX_FLOOD_VTEPS],
    count: u32,
    sent: *mut u64,
) {
    for i in 0..MAX_FLOOD_VTEPS {
        if i as u32 >= count {
            break;
        }
        let set = set_tunnel_key::<V6>(skb, key, unsafe { &(*list)[i] });
        if set == 0 && unsafe { bpf_clone_redirect(skb, tunnel, 0) } == 0 {
            // Per-CPU slot: no other writer can race us.
            unsafe { *sent += 1 };
        }
    }
}

/// Whether storm control (at `rate` per second) applies to a frame for group `ip_dst`: to what
/// floods every host of the network (broadcast, link-local groups, IPv6 multicast). A group's
/// own traffic goes only where members asked for it, and a market data or media stream must not
/// be cut to the storm limit.
#[inline(always)]
fn limited(rate: u32, ip_dst: [u8; 4]) -> bool {
    rate != 0 && !igmp::tracked(ip_dst)
}

/// Whether `sender`'s next frame for group `ip_dst` would be dropped by storm control, without
/// counting it (replicate counts it as it goes).
#[inline(always)]
pub fn storm_limited(ctx: &TcContext, sender: &Endpoint, ip_dst: [u8; 4]) -> bool {
    let Some(flood) = FLOOD.get_ptr(sender.vni) else {
        return false;
    };
    let rate = unsafe { (*flood).rate_pps };
    if !limited(rate, ip_dst) {
        return false;
    }
    let window = unsafe { bpf_ktime_get_ns() } >> 30;
    match unsafe { BUM_RATE.get(ifindex(ctx)) } {
        Some(w) => w.window == window && w.sent >= u64::from(rate),
        None => false,
    }
}

/// One more frame from `port` this second: over `rate`?
#[inline(always)]
fn over_rate(port: u32, rate: u32) -> bool {
    let window = unsafe { bpf_ktime_get_ns() } >> 30;
    match BUM_RATE.get_ptr_mut(port) {
        Some(w) if unsafe { (*w).window } == window => {
            // Racy across CPUs by at most a frame or two: a storm limit, not an accountant.
            let sent = unsafe { (*w).sent };
            if sent >= u64::from(rate) {
                return true;
            }
            unsafe { (*w).sent = sent + 1 };
            false
        }
        _ => {
            let _ = BUM_RATE.insert(port, BumWindow { window, sent: 1 }, 0);
            false
        }
    }
}

/// A remote broadcast or multicast frame (checks passed): decapsulated and sent out of the
/// network's bridge here, which floods it to the local members.
#[inline(always)]
pub fn deliver(
    ctx: &TcContext,
    vni: u32,
    inner: &vxlan::InnerEth,
    ipv6: bool,
    ecn: ecn::Rewrite,
) -> Verdict {
    let bridge = match FLOOD.get_ptr(vni) {
        Some(f) => unsafe { (*f).bridge },
        None => 0,
    };
    if bridge == 0 {
        return drop(Counter::DropNoEndpoint);
    }
    // Before the outer headers go: the monitor's event names the VTEP and the VNI.
    monitor::trace(ctx, hook::FROM_UNDERLAY, Counter::DecapFlood);
    if vxlan::decap(ctx, inner, ipv6, ecn).is_err() {
        return drop(Counter::DropAdjustFailed);
    }
    redirected(Counter::DecapFlood, unsafe { bpf_redirect(bridge, 0) })
}
