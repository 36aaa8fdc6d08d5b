//! IGMP snooping (RFC 4541): which local ports are members of which IPv4 groups, learnt from
//! the containers' own reports and leaves (IGMPv1/v2 RFC 2236, v3 RFC 3376) as they pass. The
//! agent reads GROUPS, expires what stopped reporting, and tells the other nodes through etcd,
//! so a group's traffic is sent only to hosts with a member. Snooping never drops: the report
//! goes on as any multicast does. It hears only what storm control lets through (from_container
//! asks `flood::storm_limited` before snooping), and each port holds at most `MAX_GROUPS_PER_PORT` memberships, so
//! one container can neither churn nor fill what the node tracks and publishes for the others.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::TcContext};
use network_types::eth::EthHdr;
use overlay_common::{Counter, Endpoint, GroupKey, MAX_GROUPS_PER_PORT};

use crate::{
    maps::{GROUP_COUNT, GROUPS},
    stats::add,
};

const V1_REPORT: u8 = 0x12;
const V2_REPORT: u8 = 0x16;
const V2_LEAVE: u8 = 0x17;
const V3_REPORT: u8 = 0x22;
/// Group records of a v3 report looked at (a bounded loop for the verifier); a report with
/// more is rare (one per group the socket joined at once) and the rest comes with the next.
const V3_RECORDS: usize = 8;

/// Records what the IGMP message at `l4` (after the IPv4 header) says about `sender`.
#[inline(always)]
pub fn snoop(ctx: &TcContext, sender: &Endpoint, l4: usize) {
    let Ok(kind) = ctx.load::<u8>(l4) else {
        return;
    };
    match kind {
        V1_REPORT | V2_REPORT => {
            if let Ok(group) = ctx.load::<[u8; 4]>(l4 + 4) {
                join(ctx, sender, group);
            }
        }
        V2_LEAVE => {
            if let Ok(group) = ctx.load::<[u8; 4]>(l4 + 4) {
                leave(ctx, sender, group);
            }
        }
        V3_REPORT => v3(ctx, sender, l4),
        _ => {}
    }
}

fn v3(ctx: &TcContext, sender: &Endpoint, l4: usize) {
    let Ok(n) = ctx.load::<[u8; 2]>(l4 + 6) else {
        return;
    };
    let n = u16::from_be_bytes(n) as usize;
    let mut at = l4 + 8;
    for i in 0..V3_RECORDS {
        if i >= n {
            break;
        }
        // Record: type, aux data length (words), number of sources, group, sources, aux data.
        let Ok(head) = ctx.load::<[u8; 8]>(at) else {
            return;
        };
        let (kind, aux, sources) = (
            head[0],
            head[1] as usize,
            u16::from_be_bytes([head[2], head[3]]),
        );
        let group = [head[4], head[5], head[6], head[7]];
        match (kind, sources) {
            // MODE_IS_EXCLUDE, CHANGE_TO_EXCLUDE: every source (a join, as the kernel sends it).
            (2 | 4, _) => join(ctx, sender, group),
            // MODE_IS_INCLUDE, CHANGE_TO_INCLUDE with no source: not a member any more.
            (1 | 3, 0) => leave(ctx, sender, group),
            // Some sources: a member for those.
            (1 | 3 | 5, _) => join(ctx, sender, group),
            _ => {}
        }
        // Bounded: at most 65535 sources and 255 aux words, so `at` stays within a u32.
        at += 8 + 4 * sources as usize + 4 * aux;
        if at > 0xffff {
            return;
        }
    }
}

/// Whether `group` is an IPv4 multicast group membership decides (not link-local 224.0.0.0/24,
/// which goes to every host, as switches do; not a broadcast or unicast address).
#[inline(always)]
pub fn tracked(group: [u8; 4]) -> bool {
    (224..=239).contains(&group[0]) && !(group[0] == 224 && group[1] == 0 && group[2] == 0)
}

#[inline(always)]
fn key(ctx: &TcContext, sender: &Endpoint, group: [u8; 4]) -> GroupKey {
    GroupKey {
        vni: sender.vni,
        group,
        port: unsafe { (*ctx.skb.skb).ifindex },
    }
}

/// The group whose members alone get a frame for MAC `mac` carrying IPv4 destination `dst`:
/// `dst` when the frame goes to that group's own multicast MAC (RFC 1112: 01:00:5e and the
/// group's low 23 bits) and membership decides (`tracked`); else zeros, for what every host of
/// the network gets and storm control limits. Decided by the Ethernet destination, as a switch
/// does: a broadcast frame carrying 239.1.1.1 is a broadcast, not that group's traffic.
#[inline(always)]
pub fn group_of(mac: [u8; 6], dst: [u8; 4]) -> [u8; 4] {
    let own_mac = mac[0] == 0x01
        && mac[1] == 0x00
        && mac[2] == 0x5e
        && mac[3] == dst[1] & 0x7f
        && mac[4] == dst[2]
        && mac[5] == dst[3];
    if own_mac && tracked(dst) { dst } else { [0; 4] }
}

#[inline(always)]
fn join(ctx: &TcContext, sender: &Endpoint, group: [u8; 4]) {
    if !tracked(group) {
        return;
    }
    let key = key(ctx, sender, group);
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(seen) = GROUPS.get_ptr_mut(key) {
        // Already a member: the report keeps the membership alive.
        unsafe { *seen = now };
        add(Counter::GroupJoins, 1);
        return;
    }
    let count = GROUP_COUNT.get_ptr_mut(key.port);
    let held = count.map_or(0, |c| unsafe { *c });
    if held >= MAX_GROUPS_PER_PORT || GROUPS.insert(key, now, BPF_NOEXIST as u64).is_err() {
        add(Counter::GroupLimit, 1);
        return;
    }
    match count {
        Some(c) => unsafe { *c = held + 1 },
        None => {
            let _ = GROUP_COUNT.insert(key.port, 1, 0);
        }
    }
    add(Counter::GroupJoins, 1);
}

#[inline(always)]
fn leave(ctx: &TcContext, sender: &Endpoint, group: [u8; 4]) {
    if !tracked(group) {
        return;
    }
    let key = key(ctx, sender, group);
    if GROUPS.remove(key).is_ok()
        && let Some(c) = GROUP_COUNT.get_ptr_mut(key.port)
    {
        unsafe { *c = (*c).saturating_sub(1) };
    }
    add(Counter::GroupLeaves, 1);
}

/// Where IGMP starts in an IPv4 packet whose header is `ihl` words long.
#[inline(always)]
pub fn offset(ihl: u8) -> usize {
    EthHdr::LEN + (ihl & 0x0f) as usize * 4
}
