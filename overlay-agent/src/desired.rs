//! What one node's maps should hold, given the cluster: a pure function of etcd's contents,
//! the node's name, and which of its interfaces exist. Everything that cannot be served (an
//! endpoint outside its network, a MAC used twice, a port that is not there) is left out and
//! reported, never half-applied.
use std::{collections::BTreeSet, net::Ipv4Addr};

use overlay_common::{Endpoint, VtepAddr, deliver, vtep};

use crate::{
    cluster::ClusterState,
    dataplane::state::MapState,
    store::schema::{self, Kind, Location, Network},
};

/// An entry left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub why: String,
    /// Refused because another entry holds the same VNI or MAC: which of the two is served
    /// depends on the other one, so only a full reconcile can follow changes to either.
    pub conflict: bool,
}

/// `resolve` maps a local interface name to its ifindex (None: not there, yet or any more).
pub fn desired(
    cluster: &ClusterState,
    me: &str,
    resolve: &dyn Fn(&str) -> Option<u32>,
) -> (MapState, Vec<Problem>) {
    let mut s = MapState::default();
    let mut problems = Vec::new();
    let mut problem =
        |conflict: bool, key: String, why: String| problems.push(Problem { key, why, conflict });

    // Networks, oldest first: of two that claim one VNI (their traffic would mix) or
    // overlapping subnets (one address would name two endpoints), the older is served, so a bad
    // write never takes down a network that works.
    let mut networks: Vec<&Network> = cluster.networks.values().collect();
    networks.sort_by_key(|n| n.created); // stable: by name among equals
    let mut served: Vec<&Network> = Vec::new();
    for net in networks {
        let key = || format!("networks/{}", net.name);
        if let Some(first) = served.iter().find(|f| f.vni == net.vni) {
            let why = format!(
                "VNI {} is already network {}'s; ignored",
                net.vni, first.name
            );
            problem(true, key(), why);
        } else if let Some(first) = served.iter().find(|f| f.subnet.overlaps(&net.subnet)) {
            let why = format!(
                "subnet {} overlaps network {}'s {}; ignored",
                net.subnet, first.name, first.subnet
            );
            problem(true, key(), why);
        } else {
            served.push(net);
            s.networks.insert(net.vni, net.entry());
        }
    }
    let served: BTreeSet<&str> = served.iter().map(|n| n.name.as_str()).collect();

    // Endpoints, oldest first: of two that claim one MAC, the older is served.
    let mut endpoints: Vec<_> = cluster.endpoints.values().collect();
    endpoints.sort_by_key(|ep| ep.created); // stable: by key among equals
    for ep in endpoints {
        let key = || endpoint_key(&ep.network, ep.ip);
        let (vni, vtep) = match placement(cluster, me, ep, |n| served.contains(n)) {
            Placement::LeftOut(why) => {
                problem(false, key(), why);
                continue;
            }
            Placement::Absent => continue,
            Placement::Remote { vni, vtep } => (vni, Some(vtep)),
            Placement::Local { vni } => (vni, None),
        };
        let (mac, ip) = (ep.mac.0, ep.ip.octets());
        if s.mac_taken(vni, mac) {
            let why = format!("MAC {} is used twice in {}", ep.mac, ep.network);
            problem(true, key(), why);
            continue;
        }
        if let Some(vtep) = vtep {
            s.add_remote(vni, mac, ip, vtep);
            continue;
        }
        // One of this node's own endpoints.
        let Location::Node { port, iface, .. } = &ep.location else {
            continue;
        };
        let Some(port_ifindex) = resolve(port) else {
            problem(
                false,
                key(),
                format!("interface {port} does not exist on this node"),
            );
            continue;
        };
        let (ifindex, how) = match (ep.kind, iface) {
            (Kind::Host, Some(iface)) => match resolve(iface) {
                Some(i) => (i, deliver::INGRESS),
                None => {
                    problem(
                        false,
                        key(),
                        format!("interface {iface} does not exist on this node"),
                    );
                    continue;
                }
            },
            _ => (port_ifindex, deliver::PEER),
        };
        let local = Endpoint {
            ifindex,
            vni,
            mac,
            deliver: how,
            ip,
        };
        s.endpoints.insert((vni, mac), local);
        s.ports.insert(port_ifindex, local);
        s.arp.insert((vni, ip), mac);
    }
    (s, problems)
}

/// How a problem names an endpoint.
pub fn endpoint_key(network: &str, ip: Ipv4Addr) -> String {
    format!("endpoints/{network}/{ip}")
}

/// Where an endpoint stands for this node, before MAC conflicts are settled.
#[derive(Debug, PartialEq)]
pub enum Placement {
    /// Not served, and why: a problem of its own, never a conflict.
    LeftOut(String),
    /// Not served and not a problem: its network was refused (that network is the problem),
    /// or it is on a node whose lease is dead (it is back with the node).
    Absent,
    /// Behind another node's VTEP, or a peer's.
    Remote { vni: u32, vtep: VtepAddr },
    /// On this node.
    Local { vni: u32 },
}

/// `served` says whether a network won its VNI and subnet (see [`desired`]).
pub fn placement(
    cluster: &ClusterState,
    me: &str,
    ep: &schema::Endpoint,
    served: impl Fn(&str) -> bool,
) -> Placement {
    let Some(net) = cluster.networks.get(&ep.network) else {
        return Placement::LeftOut(format!("network {} does not exist", ep.network));
    };
    if !served(&ep.network) {
        return Placement::Absent;
    }
    if !net.subnet.contains(ep.ip) {
        return Placement::LeftOut(format!(
            "{} is outside {}'s subnet {}",
            ep.ip, ep.network, net.subnet
        ));
    }
    let vni = net.vni;
    // Another node's endpoint is reachable only while that node's lease lives.
    let vtep = match &ep.location {
        Location::Node { node, .. } if node == me => return Placement::Local { vni },
        Location::Node { node, .. } => cluster.nodes.get(node).map(|n| n.vtep),
        Location::Peer { vtep } => Some(*vtep),
    };
    match vtep {
        // Our packets cannot reach a VTEP of the other family, nor its ours.
        Some(vtep)
            if cluster
                .nodes
                .get(me)
                .is_some_and(|mine| mine.vtep.is_ipv6() != vtep.is_ipv6()) =>
        {
            Placement::LeftOut(format!(
                "its VTEP {vtep} is not of this node's underlay family"
            ))
        }
        Some(vtep) => Placement::Remote {
            vni,
            vtep: vtep::from_ip(vtep),
        },
        None => Placement::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::Keys;

    fn cluster(kvs: &[(&str, &str)]) -> ClusterState {
        let keys = Keys::new("/overlay");
        let mut c = ClusterState::default();
        // Created in the order given.
        for (created, (k, v)) in (1..).zip(kvs) {
            let _ = c.put(
                &keys,
                format!("/overlay/{k}").as_bytes(),
                v.as_bytes(),
                created,
            );
        }
        c
    }

    fn container(node: &str, port: &str, mac: &str) -> String {
        format!(
            r#"{{"kind":"container","name":"c","mac":"{mac}","node":"{node}","port":"{port}"}}"#
        )
    }

    const BLUE: &str = r#"{"vni":42,"subnet":"10.10.0.0/16"}"#;

    #[test]
    fn local_remote_and_peer_endpoints() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("nodes/h1", r#"{"vtep":"10.0.0.1"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.10.1.2",
                &container("h1", "ove1", "02:42:0a:0a:01:02"),
            ),
            (
                "endpoints/blue/10.10.2.2",
                &container("h2", "ove2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.9.2",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#,
            ),
            (
                "endpoints/blue/10.10.1.1",
                r#"{"kind":"host","mac":"02:42:0a:0a:01:01","node":"h1","port":"ovhp42","iface":"ovh42"}"#,
            ),
        ]);
        let resolve = |name: &str| match name {
            "ove1" => Some(7),
            "ovhp42" => Some(8),
            "ovh42" => Some(9),
            _ => None,
        };
        let (s, problems) = desired(&c, "h1", &resolve);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.networks.get(&42).map(|n| n.port), Some(4789));
        let local = s.endpoints[&(42, [2, 0x42, 10, 10, 1, 2])];
        assert_eq!((local.ifindex, local.deliver), (7, deliver::PEER));
        assert_eq!(s.ports[&7], local);
        let host = s.endpoints[&(42, [2, 0x42, 10, 10, 1, 1])];
        assert_eq!((host.ifindex, host.deliver), (9, deliver::INGRESS));
        assert_eq!(s.ports[&8], host, "the host sends through its bridge port");
        assert_eq!(
            s.fdb[&(42, [2, 0x42, 10, 10, 2, 2])],
            vtep::from_v4([10, 0, 0, 2])
        );
        assert_eq!(
            s.fdb[&(42, [2, 0x42, 10, 10, 9, 2])],
            vtep::from_v4([10, 0, 0, 9])
        );
        assert_eq!(s.arp.len(), 4);
        assert_eq!(
            s.vteps.iter().copied().collect::<Vec<_>>(),
            [
                (42, vtep::from_v4([10, 0, 0, 2])),
                (42, vtep::from_v4([10, 0, 0, 9]))
            ],
            "only VTEPs with endpoints in the VNI, never our own"
        );
    }

    #[test]
    fn a_dead_nodes_endpoints_leave_the_maps() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            (
                "endpoints/blue/10.10.2.2",
                &container("h2", "ove2", "02:42:0a:0a:02:02"),
            ),
        ]);
        let (s, problems) = desired(&c, "h1", &|_| None);
        assert!(problems.is_empty());
        assert!(s.fdb.is_empty() && s.arp.is_empty() && s.vteps.is_empty());
    }

    #[test]
    fn what_cannot_be_served_is_left_out_and_reported() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("networks/copy", r#"{"vni":42,"subnet":"10.20.0.0/16"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.99.0.2",
                &container("h2", "x", "02:42:0a:63:00:02"),
            ),
            (
                "endpoints/blue/10.10.2.2",
                &container("h2", "x", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.2.3",
                &container("h2", "y", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.1.2",
                &container("h1", "gone", "02:42:0a:0a:01:02"),
            ),
            (
                "endpoints/red/10.10.1.2",
                &container("h2", "x", "02:42:0a:0a:01:07"),
            ),
        ]);
        let (s, problems) = desired(&c, "h1", &|_| None);
        let whys: Vec<_> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.why))
            .collect();
        assert_eq!(whys.len(), 5, "{whys:#?}");
        for want in [
            "already network blue's",
            "outside",
            "used twice",
            "does not exist on this node",
            "network red does not exist",
        ] {
            assert!(whys.iter().any(|w| w.contains(want)), "{want}: {whys:#?}");
        }
        assert_eq!(s.fdb.len(), 1, "the first owner of the MAC stays");
        assert_eq!(s.networks.len(), 1);
    }

    #[test]
    fn one_mac_in_two_vnis_is_two_entries() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("networks/green", r#"{"vni":43,"subnet":"10.20.0.0/16"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.10.2.2",
                &container("h2", "x", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/green/10.20.2.2",
                &container("h2", "y", "02:42:0a:0a:02:02"),
            ),
        ]);
        let (s, problems) = desired(&c, "h1", &|_| None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.fdb.len(), 2);
        assert!(s.fdb.contains_key(&(42, [2, 0x42, 10, 10, 2, 2])));
        assert!(s.fdb.contains_key(&(43, [2, 0x42, 10, 10, 2, 2])));
    }

    /// A bad write never takes down what works: of two claims on one VNI, one address range or
    /// one MAC, the older key keeps it, whatever the names sort as.
    #[test]
    fn of_two_claims_the_older_is_served() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.10.2.3",
                &container("h2", "x", "02:42:0a:0a:02:03"),
            ),
            // Newer, and sorting first: a subnet inside blue's, a VNI that is blue's.
            ("networks/aaa", r#"{"vni":44,"subnet":"10.10.5.0/24"}"#),
            ("networks/abc", r#"{"vni":42,"subnet":"10.30.0.0/16"}"#),
            (
                "endpoints/aaa/10.10.5.2",
                &container("h2", "y", "02:42:0a:0a:05:02"),
            ),
            // Newer, with a lower address: the MAC of 10.10.2.3.
            (
                "endpoints/blue/10.10.2.2",
                &container("h2", "z", "02:42:0a:0a:02:03"),
            ),
        ]);
        let (s, problems) = desired(&c, "h1", &|_| None);
        let whys: Vec<_> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.why.as_str(), p.conflict))
            .collect();
        assert_eq!(
            whys,
            [
                (
                    "networks/aaa",
                    "subnet 10.10.5.0/24 overlaps network blue's 10.10.0.0/16; ignored",
                    true
                ),
                (
                    "networks/abc",
                    "VNI 42 is already network blue's; ignored",
                    true
                ),
                (
                    "endpoints/blue/10.10.2.2",
                    "MAC 02:42:0a:0a:02:03 is used twice in blue",
                    true
                ),
            ]
        );
        assert_eq!(s.networks.keys().copied().collect::<Vec<_>>(), [42]);
        assert_eq!(
            s.arp.keys().copied().collect::<Vec<_>>(),
            [(42, [10, 10, 2, 3])],
            "the older endpoint keeps its MAC; the refused network serves nothing"
        );
    }
}
