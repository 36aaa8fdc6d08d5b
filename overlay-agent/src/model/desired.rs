//! What one node's maps should hold, given the cluster: a pure function of etcd's contents,
//! the node's name, and which of its interfaces exist. Everything that cannot be served (an
//! endpoint outside its network, a MAC used twice, a port that is not there or not its own)
//! is left out and reported, never half-applied.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use overlay_common::{Endpoint, VtepAddr, deliver, vtep};

use crate::{
    dataplane::state::MapState,
    model::cluster::ClusterState,
    netlink::Link,
    shared::ifnames,
    store::schema::{self, Kind, Location, Network},
};

/// An entry left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub why: String,
    /// Refused because another entry holds the same VNI, MAC or VTEP: which of the two
    /// is served depends on the other one, so only a full reconcile can follow changes to
    /// either.
    pub conflict: bool,
}

/// `links` gives a local interface by name (None: not there, yet or any more).
pub fn desired(
    cluster: &ClusterState,
    me: &str,
    links: &dyn Fn(&str) -> Option<Link>,
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

    // Nodes whose VTEP is ours or an older node's: their endpoints are not served (the node
    // record is the problem).
    for node in cluster.nodes.keys() {
        if let Some(why) = node_refused(cluster, me, node) {
            problem(true, format!("nodes/{node}"), why);
        }
    }

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
        // This node names each endpoint it made (`names/<node>/<name>`, in the transaction that
        // made it): a record it did not make, even one whose port is rightly derived, is not
        // served, so nobody can claim a port of ours ahead of the endpoint it is for.
        let named = cluster
            .names
            .get(&(me.to_string(), ep.name.clone()))
            .is_some_and(|n| n.network == ep.network && n.ip == ep.ip);
        if !named {
            let why = format!(
                "this node did not make it (names/{me}/{} does not name {} in {})",
                ep.name, ep.ip, ep.network
            );
            problem(false, key(), why);
            continue;
        }
        let Some(link) = links(port) else {
            problem(
                false,
                key(),
                format!("interface {port} does not exist on this node"),
            );
            continue;
        };
        // The name is derived from the record (validated), the alias from the port's maker:
        // a port someone else made under that name, or a hash collision, is not this
        // endpoint's.
        let alias = ifnames::port_alias(&ep.network, &ep.name);
        if link.alias.as_deref() != Some(alias.as_str()) {
            let why = format!(
                "interface {port} is not this endpoint's port (its alias is {:?}, not {alias:?})",
                link.alias.as_deref().unwrap_or_default()
            );
            problem(false, key(), why);
            continue;
        }
        let (ifindex, how) = match (ep.kind, iface) {
            (Kind::Host, Some(iface)) => match links(iface) {
                Some(i) => (i.ifindex, deliver::INGRESS),
                None => {
                    problem(
                        false,
                        key(),
                        format!("interface {iface} does not exist on this node"),
                    );
                    continue;
                }
            },
            _ => (link.ifindex, deliver::PEER),
        };
        let local = Endpoint {
            ifindex,
            vni,
            mac,
            deliver: how,
            ip,
        };
        s.endpoints.insert((vni, mac), local);
        s.ports.insert(link.ifindex, local);
        s.arp.insert((vni, ip), mac);
    }
    (s, problems)
}

/// Why the VTEP of node `node` cannot be used from node `me`: it is `me`'s own (we would send
/// to ourselves what is meant for it), or an older node's (it would receive another node's
/// traffic). None: it can (or `node` is `me`, or not registered).
pub fn node_refused(cluster: &ClusterState, me: &str, node: &str) -> Option<String> {
    let record = cluster.nodes.get(node).filter(|_| node != me)?;
    if cluster.nodes.get(me).is_some_and(|m| m.vtep == record.vtep) {
        return Some(format!(
            "its VTEP {} is this node's own; ignored",
            record.vtep
        ));
    }
    // The oldest claim on the VTEP is its holder (by create revision, then name).
    let (_, holder) = cluster.vtep_holder(record.vtep)?;
    (holder != node).then(|| {
        format!(
            "its VTEP {} is already node {holder}'s; ignored",
            record.vtep
        )
    })
}

/// Why a peer (a host that is not ours) cannot be behind `vtep`: a registered node has it, so
/// a peer there would be one of our nodes, or this node itself.
pub fn peer_refused(cluster: &ClusterState, vtep: IpAddr) -> Option<String> {
    let (_, node) = cluster.vtep_holder(vtep)?;
    Some(format!(
        "its VTEP {vtep} is node {node}'s: a peer cannot be one of our nodes"
    ))
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
    if let (Kind::Host, Location::Node { port, .. }) = (ep.kind, &ep.location)
        && *port != ifnames::host_port(vni)
    {
        return Placement::LeftOut(format!(
            "port {port} is not network {}'s host port ({})",
            ep.network,
            ifnames::host_port(vni)
        ));
    }
    // Another node's endpoint is reachable only while that node's lease lives, and its VTEP
    // is its own.
    let vtep = match &ep.location {
        Location::Node { node, .. } if node == me => return Placement::Local { vni },
        Location::Node { node, .. } if node_refused(cluster, me, node).is_some() => None,
        Location::Node { node, .. } => cluster.nodes.get(node).map(|n| n.vtep),
        Location::Peer { vtep } => match peer_refused(cluster, *vtep) {
            Some(why) => return Placement::LeftOut(why),
            None => Some(*vtep),
        },
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::{shared::ifnames::port_name, store::schema::Keys};

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

    /// Container `name` of `net` on `node`, its port the one its node makes for it.
    fn container(net: &str, name: &str, node: &str, mac: &str) -> String {
        format!(
            r#"{{"kind":"container","name":"{name}","mac":"{mac}","node":"{node}","port":"{}"}}"#,
            port_name(net, name)
        )
    }

    /// A port as `endpoint add` leaves it: its alias names its endpoint.
    fn port_of(ifindex: u32, net: &str, name: &str) -> Option<Link> {
        Some(Link {
            ifindex,
            alias: Some(ifnames::port_alias(net, name)),
        })
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
                &container("blue", "c1", "h1", "02:42:0a:0a:01:02"),
            ),
            (
                "endpoints/blue/10.10.2.2",
                &container("blue", "c2", "h2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.9.2",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#,
            ),
            (
                "endpoints/blue/10.10.1.1",
                r#"{"kind":"host","name":"host.blue","mac":"02:42:0a:0a:01:01","node":"h1","port":"ovhp42","iface":"ovh42"}"#,
            ),
            ("names/h1/c1", r#"{"network":"blue","ip":"10.10.1.2"}"#),
            (
                "names/h1/host.blue",
                r#"{"network":"blue","ip":"10.10.1.1"}"#,
            ),
        ]);
        let c1_port = port_name("blue", "c1");
        let links = |name: &str| match name {
            n if n == c1_port => port_of(7, "blue", "c1"),
            "ovhp42" => port_of(8, "blue", "host.blue"),
            "ovh42" => Some(Link {
                ifindex: 9,
                alias: None,
            }),
            _ => None,
        };
        let (s, problems) = desired(&c, "h1", &links);
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
                &container("blue", "c2", "h2", "02:42:0a:0a:02:02"),
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
                &container("blue", "x", "h2", "02:42:0a:63:00:02"),
            ),
            (
                "endpoints/blue/10.10.2.2",
                &container("blue", "x", "h2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.2.3",
                &container("blue", "y", "h2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.1.2",
                &container("blue", "gone", "h1", "02:42:0a:0a:01:02"),
            ),
            ("names/h1/gone", r#"{"network":"blue","ip":"10.10.1.2"}"#),
            (
                "endpoints/red/10.10.1.2",
                &container("red", "x", "h2", "02:42:0a:0a:01:07"),
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

    /// Issue 25: a record that names a port which is not its own (the underlay, `lo`, another
    /// endpoint's, one without its alias) serves nothing and disturbs nothing that works.
    #[test]
    fn a_port_that_is_not_the_endpoints_own_is_refused() {
        let c1_port = port_name("blue", "c1");
        let links = |name: &str| match name {
            n if n == c1_port => port_of(7, "blue", "c1"),
            // Made by someone else under the derived name of `stray`: no alias.
            n if n == port_name("blue", "stray") => Some(Link {
                ifindex: 11,
                alias: None,
            }),
            "ovhp42" => port_of(8, "blue", "someone else"),
            "ovh42" => port_of(9, "blue", "host.blue"),
            "u1" => port_of(1, "blue", "evil"),
            _ => None,
        };
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("nodes/h1", r#"{"vtep":"10.0.0.1"}"#),
            // c1's name at another address, planted before c1 was made (so older): this node
            // did not make it, so c1's port is c1's all the same.
            (
                "endpoints/blue/10.10.0.250",
                &container("blue", "c1", "h1", "02:42:0a:0a:00:fa"),
            ),
            (
                "endpoints/blue/10.10.1.2",
                &container("blue", "c1", "h1", "02:42:0a:0a:01:02"),
            ),
            ("names/h1/c1", r#"{"network":"blue","ip":"10.10.1.2"}"#),
            ("names/h1/stray", r#"{"network":"blue","ip":"10.10.0.251"}"#),
            (
                "names/h1/host.blue",
                r#"{"network":"blue","ip":"10.10.1.1"}"#,
            ),
            (
                "endpoints/blue/10.10.0.251",
                &container("blue", "stray", "h1", "02:42:0a:0a:00:fb"),
            ),
            (
                "endpoints/blue/10.10.1.1",
                r#"{"kind":"host","name":"host.blue","mac":"02:42:0a:0a:01:01","node":"h1","port":"ovhp42","iface":"ovh42"}"#,
            ),
            // Another network's host port.
            (
                "endpoints/blue/10.10.1.3",
                r#"{"kind":"host","name":"host.blue","mac":"02:42:0a:0a:01:03","node":"h1","port":"ovhp43","iface":"ovh43"}"#,
            ),
            // The issue's record: refused by the schema, so it never reaches desired().
            (
                "endpoints/blue/10.10.0.252",
                r#"{"kind":"container","name":"evil","mac":"02:42:0a:0a:00:fc","node":"h1","port":"u1"}"#,
            ),
        ]);
        assert!(
            c.invalid.keys().any(|k| k.ends_with("10.10.0.252")),
            "{:?}",
            c.invalid
        );
        let (s, problems) = desired(&c, "h1", &links);
        let whys: BTreeMap<_, _> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.why.as_str()))
            .collect();
        assert_eq!(whys.len(), 4, "{whys:#?}");
        assert!(whys["endpoints/blue/10.10.0.250"].contains("this node did not make it"));
        assert!(whys["endpoints/blue/10.10.0.251"].contains("not this endpoint's port"));
        assert!(whys["endpoints/blue/10.10.1.1"].contains("not this endpoint's port"));
        assert!(whys["endpoints/blue/10.10.1.3"].contains("not network blue's host port"));
        assert_eq!(
            s.ports.keys().copied().collect::<Vec<_>>(),
            [7],
            "c1 alone is served"
        );
        assert_eq!(s.ports[&7].mac, [2, 0x42, 10, 10, 1, 2]);
    }

    /// Addresses that are one of our nodes' are no peer's, and a node cannot take this node's
    /// VTEP or an older node's.
    #[test]
    fn a_vtep_is_one_nodes_own() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("nodes/h1", r#"{"vtep":"10.0.0.1"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            ("nodes/h3", r#"{"vtep":"10.0.0.1"}"#),
            ("nodes/h4", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.10.2.2",
                &container("blue", "c2", "h2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/blue/10.10.3.2",
                &container("blue", "c3", "h3", "02:42:0a:0a:03:02"),
            ),
            (
                "endpoints/blue/10.10.4.2",
                &container("blue", "c4", "h4", "02:42:0a:0a:04:02"),
            ),
            (
                "endpoints/blue/10.10.9.1",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:01","vtep":"10.0.0.1"}"#,
            ),
            (
                "endpoints/blue/10.10.9.2",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.2"}"#,
            ),
            (
                "endpoints/blue/10.10.9.9",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:09","vtep":"10.0.0.9"}"#,
            ),
        ]);
        let (s, problems) = desired(&c, "h1", &|_| None);
        let whys: BTreeMap<_, _> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.why.as_str()))
            .collect();
        assert_eq!(whys.len(), 4, "{whys:#?}");
        assert!(whys["nodes/h3"].contains("this node's own"));
        assert!(whys["nodes/h4"].contains("already node h2's"));
        assert!(whys["endpoints/blue/10.10.9.1"].contains("is node h1's"));
        assert!(whys["endpoints/blue/10.10.9.2"].contains("is node h2's"));
        assert_eq!(
            s.fdb.keys().map(|(_, mac)| mac[5]).collect::<Vec<_>>(),
            [2, 9],
            "c2 behind h2 and the real peer only"
        );
    }

    #[test]
    fn one_mac_in_two_vnis_is_two_entries() {
        let c = cluster(&[
            ("networks/blue", BLUE),
            ("networks/green", r#"{"vni":43,"subnet":"10.20.0.0/16"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            (
                "endpoints/blue/10.10.2.2",
                &container("blue", "x", "h2", "02:42:0a:0a:02:02"),
            ),
            (
                "endpoints/green/10.20.2.2",
                &container("green", "y", "h2", "02:42:0a:0a:02:02"),
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
                &container("blue", "x", "h2", "02:42:0a:0a:02:03"),
            ),
            // Newer, and sorting first: a subnet inside blue's, a VNI that is blue's.
            ("networks/aaa", r#"{"vni":44,"subnet":"10.10.5.0/24"}"#),
            ("networks/abc", r#"{"vni":42,"subnet":"10.30.0.0/16"}"#),
            (
                "endpoints/aaa/10.10.5.2",
                &container("aaa", "y", "h2", "02:42:0a:0a:05:02"),
            ),
            // Newer, with a lower address: the MAC of 10.10.2.3.
            (
                "endpoints/blue/10.10.2.2",
                &container("blue", "z", "h2", "02:42:0a:0a:02:03"),
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
