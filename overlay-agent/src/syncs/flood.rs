//! The FLOOD map: for each network, where this node sends and delivers its broadcast and
//! multicast. Derived from what the maps already hold (the network's UDP port, its remote
//! VTEPs), the network's storm limit, and this node's interfaces (the network's bridge, the
//! port's GRO helper, whose collect_md vxlan device sends the copies). Node-local interfaces,
//! so it lives beside MapState, not in it: no other node could compute it, and `doctor
//! --cluster` compares only what any node can.
//!
//! Multicast to a group of its own goes only to hosts with a member: this node's memberships
//! come from IGMP snooping (GROUPS, expired here) and are published in etcd; MCAST holds, per
//! (VNI, group), the VTEPs of the other nodes that published it.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::Result;
use overlay_common::{Flood, GroupKey, GroupVteps, IpKey, MAX_FLOOD_VTEPS, VtepAddr, vtep};

use super::{Kernel, NodeSync, View};
use crate::{
    dataplane::{Maps, state::MapState},
    model::cluster::ClusterState,
    shared::ifnames,
    store::schema::{GroupsRecord, Location, MAX_PUBLISHED_GROUPS},
};

/// A served network's settings FLOOD carries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Broadcast and multicast per endpoint per second.
    pub bum_rate: u32,
    pub internal: bool,
}

/// What FLOOD must hold, and the networks with more remote VTEPs than a flood list holds.
/// `peers`: per VNI, the VTEPs of legacy hosts (`peer add`).
pub fn wanted(
    applied: &MapState,
    settings: &BTreeMap<u32, Settings>,
    peers: &BTreeMap<u32, BTreeSet<VtepAddr>>,
    resolve: &dyn Fn(&str) -> Option<u32>,
) -> (BTreeMap<u32, Flood>, Vec<(u32, usize)>) {
    let mut out = BTreeMap::new();
    let mut overflow = Vec::new();
    for (&vni, &network) in &applied.networks {
        let port = network.port;
        let mut flood = Flood {
            bridge: resolve(&crate::shared::ifnames::bridge(vni)).unwrap_or(0),
            tunnel: resolve(&ifnames::gro_device(port)).unwrap_or(0),
            rate_pps: settings.get(&vni).map_or(0, |s| s.bum_rate),
            internal: settings.get(&vni).is_some_and(|s| s.internal).into(),
            ..Flood::default()
        };
        // Legacy hosts first (every group goes to them), then the others, each sorted. Only
        // those the maps serve: a peer the reconcile left out (of the other family) is not one.
        let mut legacy = peers.get(&vni).cloned().unwrap_or_default();
        legacy.retain(|v| applied.vteps.contains(&(vni, *v)));
        let mut vteps: Vec<VtepAddr> = legacy.iter().copied().collect();
        vteps.extend(
            applied
                .vteps
                .iter()
                .filter(|(v, vtep)| *v == vni && !legacy.contains(vtep))
                .map(|(_, vtep)| *vtep),
        );
        flood.peers = legacy.len().min(MAX_FLOOD_VTEPS) as u32;
        if vteps.len() > MAX_FLOOD_VTEPS {
            overflow.push((vni, vteps.len()));
        }
        for (slot, vtep) in flood.vteps.iter_mut().zip(&vteps) {
            *slot = *vtep;
        }
        flood.count = vteps.len().min(MAX_FLOOD_VTEPS) as u32;
        out.insert(vni, flood);
    }
    (out, overflow)
}

/// Makes FLOOD equal to `wanted`; how many entries it wrote or removed.
pub fn sync(maps: &mut Maps, wanted: &BTreeMap<u32, Flood>) -> Result<usize> {
    maps.sync_flood(wanted)
}

/// Makes MCAST equal to `wanted`.
pub fn sync_groups(maps: &mut Maps, wanted: &BTreeMap<IpKey, GroupVteps>) -> Result<usize> {
    maps.sync_mcast(wanted)
}

/// How long a membership lasts without a report: IGMP's group membership interval (RFC 3376
/// 8.4: robustness 2 x query interval 125 s + response time 10 s). The network's bridge is the
/// querier that asks the containers again (see the agent).
pub const MEMBERSHIP_NS: u64 = 260_000_000_000;

/// This node's memberships from GROUPS, per VNI, expired ones removed from the map (and
/// each port's count in GROUP_COUNT made exact again); and whether there were more groups than
/// a node publishes.
pub fn local_groups(maps: &mut Maps, now_ns: u64) -> Result<(GroupsRecord, bool)> {
    let entries: Vec<(GroupKey, u64)> = maps.group_entries().collect::<Result<_>>()?;
    let mut live = Vec::with_capacity(entries.len());
    for (key, seen) in entries {
        if now_ns.saturating_sub(seen) > MEMBERSHIP_NS {
            let _ = maps.forget_group(&key);
        } else {
            live.push(key);
        }
    }
    recount(maps, &live)?;
    Ok(publishable(&live))
}

/// GROUP_COUNT from the memberships GROUPS holds: the dataplane counts as reports pass, two
/// CPUs may race on one port, and an expiry here must give the port its room back.
fn recount(maps: &mut Maps, live: &[GroupKey]) -> Result<()> {
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for key in live {
        *counts.entry(key.port).or_default() += 1;
    }
    maps.set_group_counts(&counts)
}

/// What a node publishes of its ports' memberships, at most MAX_PUBLISHED_GROUPS groups:
/// taken in turns, each port's first group, then each port's second, ..., so a container with
/// many groups cannot crowd out another's one (each port holds at most MAX_GROUPS_PER_PORT).
fn publishable(live: &[GroupKey]) -> (GroupsRecord, bool) {
    let mut per_port: BTreeMap<u32, Vec<(u32, [u8; 4])>> = BTreeMap::new();
    for key in live {
        per_port
            .entry(key.port)
            .or_default()
            .push((key.vni, key.group));
    }
    for groups in per_port.values_mut() {
        groups.sort_unstable();
    }
    let mut out = GroupsRecord::new();
    let (mut count, mut capped) = (0, false);
    let rounds = per_port.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for (vni, group) in per_port.values().filter_map(|g| g.get(round)) {
            let set = out.entry(vni.to_string()).or_default();
            if set.contains(&Ipv4Addr::from(*group)) {
                continue;
            }
            if count == MAX_PUBLISHED_GROUPS {
                capped = true;
                continue;
            }
            set.insert(Ipv4Addr::from(*group));
            count += 1;
        }
    }
    out.retain(|_, set| !set.is_empty());
    (out, capped)
}

/// Per VNI, the VTEPs of the legacy hosts (`peer add`) of the networks in `cluster`; never one
/// of our nodes' (desired.rs refuses such a peer).
pub fn peer_vteps(cluster: &ClusterState) -> BTreeMap<u32, BTreeSet<VtepAddr>> {
    let mut out: BTreeMap<u32, BTreeSet<VtepAddr>> = BTreeMap::new();
    for ep in cluster.endpoints.values() {
        if let (Location::Peer { vtep }, Some(net)) =
            (&ep.location, cluster.networks.get(&ep.network))
            && crate::model::desired::peer_refused(cluster, *vtep).is_none()
        {
            out.entry(net.vni).or_default().insert(vtep::from_ip(*vtep));
        }
    }
    out
}

/// MCAST from the groups other live nodes published: (VNI, group) -> their VTEPs, for the
/// networks this node serves.
pub fn wanted_groups(
    cluster: &ClusterState,
    me: &str,
    applied: &MapState,
) -> BTreeMap<IpKey, GroupVteps> {
    let mut lists: BTreeMap<IpKey, BTreeSet<VtepAddr>> = BTreeMap::new();
    for (node, groups) in &cluster.groups {
        let Some(record) = cluster.nodes.get(node).filter(|_| node != me) else {
            continue;
        };
        // A node whose VTEP is ours or an older node's is not served (desired.rs).
        if crate::model::desired::node_refused(cluster, me, node).is_some() {
            continue;
        }
        for (vni, set) in groups
            .iter()
            .filter(|(v, _)| applied.networks.contains_key(v))
        {
            for group in set {
                let key = IpKey {
                    vni: *vni,
                    ip: group.octets(),
                };
                lists
                    .entry(key)
                    .or_default()
                    .insert(vtep::from_ip(record.vtep));
            }
        }
    }
    lists
        .into_iter()
        .map(|(key, vteps)| {
            let mut v = GroupVteps::default();
            for (slot, vtep) in v.vteps.iter_mut().zip(&vteps) {
                *slot = *vtep;
            }
            v.count = vteps.len().min(MAX_FLOOD_VTEPS) as u32;
            (key, v)
        })
        .collect()
}

/// The flood sync: FLOOD and MCAST, and each served network's bridge an IGMP querier.
#[derive(Default)]
pub struct Flooding {
    /// Bridges (by ifindex) already made IGMP queriers.
    queriers: BTreeSet<u32>,
}

/// What the flood sync wants.
#[derive(Debug)]
pub struct Lists {
    /// FLOOD, per VNI.
    pub flood: BTreeMap<u32, Flood>,
    /// The networks with more remote VTEPs than a flood list holds, and how many they have.
    pub overflow: Vec<(u32, usize)>,
    /// MCAST.
    pub groups: BTreeMap<IpKey, GroupVteps>,
}

impl NodeSync for Flooding {
    type Want = Lists;

    fn want(&self, view: &View<'_>) -> Lists {
        let settings = view
            .cluster
            .networks
            .values()
            .map(|n| {
                let s = Settings {
                    bum_rate: n.bum_rate,
                    internal: n.internal,
                };
                (n.vni, s)
            })
            .collect();
        let peers = peer_vteps(view.cluster);
        let (flood, overflow) = wanted(view.applied, &settings, &peers, &view.ifindex);
        let groups = wanted_groups(view.cluster, view.node, view.applied);
        Lists {
            flood,
            overflow,
            groups,
        }
    }

    async fn apply(&mut self, want: Lists, kernel: &mut Kernel<'_>) {
        // The bridge asks its ports for their groups (IGMP general queries), so a container
        // that stays a member keeps reporting and its membership does not expire.
        for f in want.flood.values().filter(|f| f.bridge != 0) {
            if !self.queriers.contains(&f.bridge) {
                match crate::netlink::set_igmp_querier(f.bridge) {
                    Ok(()) => {
                        self.queriers.insert(f.bridge);
                    }
                    Err(e) => log::warn!("{e:#}; will retry"),
                }
            }
        }
        if let Err(e) = sync_groups(kernel.maps, &want.groups) {
            log::warn!("{e:#}; will retry");
        }
        match sync(kernel.maps, &want.flood) {
            Ok(0) => {}
            Ok(_) => {
                for (vni, n) in want.overflow {
                    log::warn!(
                        "VNI {vni} has {n} remote VTEPs: its broadcast and multicast reach the first {} only",
                        overlay_common::MAX_FLOOD_VTEPS
                    );
                }
            }
            Err(e) => log::warn!("{e:#}; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncs::testing;
    use overlay_common::Network;

    fn v4(c: u8, d: u8) -> VtepAddr {
        vtep::from_v4([10, 0, c, d])
    }

    #[test]
    fn a_network_floods_to_its_remote_vteps_through_its_ports_helper() {
        let mut s = MapState::default();
        s.networks.insert(42, Network::new(4789, [0; 12]));
        s.networks.insert(43, Network::new(8472, [0; 12]));
        s.vteps.insert((42, v4(0, 3)));
        s.vteps.insert((42, v4(0, 2)));
        s.vteps.insert((43, v4(0, 9)));
        let resolve = |name: &str| match name {
            "ovbr42" => Some(7),
            "ovgro4789" => Some(5),
            _ => None,
        };
        let blue = Settings {
            bum_rate: 100,
            internal: false,
        };
        let red = Settings {
            bum_rate: 0,
            internal: true,
        };
        let peers = BTreeMap::from([(43, BTreeSet::from([v4(0, 9)]))]);
        let (want, overflow) = wanted(
            &s,
            &BTreeMap::from([(42, blue), (43, red)]),
            &peers,
            &resolve,
        );
        assert!(overflow.is_empty());
        let blue = want[&42];
        assert_eq!(
            (blue.bridge, blue.tunnel, blue.rate_pps, blue.count),
            (7, 5, 100, 2)
        );
        assert_eq!(blue.vteps[..2], [v4(0, 2), v4(0, 3)]);
        let red = want[&43];
        assert_eq!(
            (red.bridge, red.tunnel, red.count, red.internal),
            (0, 0, 1, 1)
        );
        assert_eq!(blue.internal, 0);
        assert_eq!(red.vteps[0], v4(0, 9));
        assert_eq!((blue.peers, red.peers), (0, 1));
    }

    #[test]
    fn more_vteps_than_a_list_holds_are_reported() {
        let mut s = MapState::default();
        s.networks.insert(42, Network::new(4789, [0; 12]));
        for i in 0..(MAX_FLOOD_VTEPS as u8 + 3) {
            s.vteps.insert((42, v4(1, i)));
        }
        let (want, overflow) = wanted(&s, &BTreeMap::new(), &BTreeMap::new(), &|_| None);
        assert_eq!(overflow, vec![(42, MAX_FLOOD_VTEPS + 3)]);
        assert_eq!(want[&42].count as usize, MAX_FLOOD_VTEPS);
    }

    #[test]
    fn published_groups_are_shared_fairly_between_ports() {
        let key = |port: u32, n: u32| GroupKey {
            vni: 42,
            group: [239, (n >> 16) as u8, (n >> 8) as u8, n as u8],
            port,
        };
        // Port 1 holds far more groups than a node publishes; port 2 holds one.
        let mut live: Vec<GroupKey> = (0..MAX_PUBLISHED_GROUPS as u32 + 10)
            .map(|n| key(1, n + 1000))
            .collect();
        live.push(key(2, 7));
        let (out, capped) = publishable(&live);
        assert!(capped);
        let set = &out["42"];
        assert_eq!(set.len(), MAX_PUBLISHED_GROUPS);
        assert!(
            set.contains(&Ipv4Addr::new(239, 0, 0, 7)),
            "port 2's only group is published despite port 1's many"
        );
        // One group two ports hold counts once.
        let (out, capped) = publishable(&[key(1, 5), key(2, 5)]);
        assert!(!capped);
        assert_eq!(out["42"].len(), 1);
    }

    #[test]
    fn the_lists_come_from_the_maps_the_cluster_and_the_nodes_interfaces() {
        let cluster = testing::cluster(&[
            (
                "networks/blue",
                r#"{"vni":42,"subnet":"10.10.0.0/16","bum_rate":100}"#,
            ),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","port":8472,"internal":true}"#,
            ),
            ("nodes/h2", r#"{"vtep":"192.168.0.2"}"#),
            ("groups/h2", r#"{"42":["239.1.1.1"],"44":["239.1.1.2"]}"#),
        ]);
        let mut applied = MapState::default();
        applied.networks.insert(42, Network::new(4789, [0; 12]));
        applied.networks.insert(43, Network::new(8472, [0; 12]));
        applied.vteps.insert((42, vtep::from_v4([192, 168, 0, 2])));
        let want = Flooding::default().want(&testing::view(&cluster, &applied));
        let blue = want.flood[&42];
        assert_eq!(
            (
                blue.bridge,
                blue.tunnel,
                blue.rate_pps,
                blue.count,
                blue.internal
            ),
            (7, 5, 100, 1, 0)
        );
        let red = want.flood[&43];
        assert_eq!(
            (red.bridge, red.tunnel, red.count, red.internal),
            (0, 0, 0, 1)
        );
        assert!(want.overflow.is_empty());
        // h2's group of a network this node serves, not the other.
        let key = IpKey {
            vni: 42,
            ip: [239, 1, 1, 1],
        };
        assert_eq!(want.groups.keys().collect::<Vec<_>>(), vec![&key]);
        assert_eq!(want.groups[&key].count, 1);
    }
}
