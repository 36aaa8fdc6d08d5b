//! IGMP snooping (RFC 4541): which local ports are members of which IPv4 groups, learnt from
//! the containers' own reports and leaves (IGMPv1/v2 RFC 2236, v3 RFC 3376) as they pass. The
//! agent reads GROUPS, expires what stopped reporting, and tells the other nodes through etcd,
//! so a group's traffic is sent only to hosts with a member. Snooping never drops: the report
//! goes on as any multicast does.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use network_types::eth::EthHdr;
use overlay_common::{Counter, Endpoint, GroupKey};

use crate::{maps::GROUPS, stats::add};

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

#[inline(always)]
fn join(ctx: &TcContext, sender: &Endpoint, group: [u8; 4]) {
    if !tracked(group) {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = GROUPS.insert(key(ctx, sender, group), now, 0);
    add(Counter::GroupJoins, 1);
}

#[inline(always)]
fn leave(ctx: &TcContext, sender: &Endpoint, group: [u8; 4]) {
    if !tracked(group) {
        return;
    }
    let _ = GROUPS.remove(key(ctx, sender, group));
    add(Counter::GroupLeaves, 1);
}

/// Where IGMP starts in an IPv4 packet whose header is `ihl` words long.
#[inline(always)]
pub fn offset(ihl: u8) -> usize {
    EthHdr::LEN + (ihl & 0x0f) as usize * 4
}
