//! The overlay's names, pure: from the cluster as etcd has it (and the services, once they
//! exist), what each network's resolver answers. Computed again after every change the agent
//! applies, so a name is gone from the answers as soon as its endpoint is gone from etcd.
//!
//! Per network, to that network's containers only: an endpoint's name, bare and as
//! `<name>.<network>`, to its IPv4 address (A) and, on a dual-stack network, its IPv6 one
//! (AAAA); a service's name to its virtual IP; `tasks.<service>` (and
//! `tasks.<service>.<network>`) to its healthy backends; an address of the subnet back to its
//! name (PTR). Names are compared in lower case (DNS names are case-insensitive, RFC 4343).
//!
//! What the overlay does not answer is either ours to deny (NXDOMAIN: a single label, a name
//! under any network's name, a reverse name of an overlay subnet) or the world's (forwarded,
//! unless the network is internal): a name of another network never leaves the node and is
//! never answered across networks.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{cluster::ClusterState, delta::Batch};
use crate::{
    shared::ipam::{Cidr, Subnet6},
    store::{
        schema::{Endpoint, Network},
        services::{Proto, Service},
    },
};

/// A service as the resolver needs it (the services' own schema is elsewhere: whoever reads
/// it hands the resolver these). `vip` None: the name answers the backends themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceName {
    pub network: String,
    pub name: String,
    /// Its virtual IPs: the IPv4 VIP and, on a dual-stack network, the IPv6 one (the IPv4 VIP
    /// in the network's prefix, balanced by the `6` socket programs). None: its name answers
    /// its backends.
    pub vips: Vec<IpAddr>,
    /// Its healthy backends only: what `tasks.<name>` answers.
    pub backends: Vec<IpAddr>,
}

impl ServiceName {
    /// The cluster's services as the zone names them: each to its VIP, `tasks.<name>` to its
    /// backends (their IPv6 addresses too on a dual-stack network) as etcd holds them now, so
    /// a backend's name goes with its endpoint record; a backend its own node finds not
    /// answering on one of the service's TCP ports is left out until it answers again.
    pub fn of(cluster: &ClusterState) -> Vec<ServiceName> {
        cluster
            .services
            .values()
            .map(|svc| Self::one(cluster, svc))
            .collect()
    }

    /// Service `svc` of `cluster` as the zone names it.
    fn one(cluster: &ClusterState, svc: &Service) -> ServiceName {
        let net = cluster.networks.get(&svc.network);
        let backends = cluster
            .backends_of(&svc.network, &svc.name)
            .filter(|ep| {
                svc.ports
                    .iter()
                    .all(|p| cluster.answers(ep, p.port, p.proto == Proto::Tcp))
            })
            .flat_map(|ep| {
                let v6 = net.and_then(|n| n.ipv6_of(ep.ip)).map(IpAddr::V6);
                std::iter::once(IpAddr::V4(ep.ip)).chain(v6)
            })
            .collect();
        ServiceName {
            network: svc.network.clone(),
            name: svc.name.clone(),
            vips: std::iter::once(IpAddr::V4(svc.vip))
                .chain(net.and_then(|n| n.ipv6_of(svc.vip)).map(IpAddr::V6))
                .collect(),
            backends,
        }
    }
}

/// The record types the zone knows; anything else asked of a name it has is NODATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Ptr,
    /// A and AAAA (a query for ANY).
    Any,
    Other,
}

/// What the resolver says to a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours and has these addresses of the kind asked (none: NODATA).
    Addresses(Vec<IpAddr>),
    /// A reverse name of ours: the address's name.
    Ptr(String),
    /// Ours, and no such name.
    NxDomain,
    /// Not ours: forwarded to the node's resolvers, or refused on an internal network.
    Outside,
}

/// One network's names. Endpoints' and services' are kept apart so that a change of either
/// is applied alone ([`Zone::update`]); a service's are asked first, as a service's name is
/// what its clients ask for and shadows an endpoint's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NetworkNames {
    subnet: Option<Cidr>,
    /// Lower-case name (no trailing dot) -> its endpoints' addresses, IPv4 and IPv6, sorted.
    endpoints: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Address -> the name its PTR gives (`<name>.<network>`): an endpoint's.
    reverse: BTreeMap<IpAddr, String>,
    /// A service's names (bare, qualified, `tasks.` both ways) -> its VIPs or backends.
    services: BTreeMap<String, BTreeSet<IpAddr>>,
    /// A VIP -> its service's qualified name.
    vips: BTreeMap<IpAddr, String>,
}

impl NetworkNames {
    /// Adds (`present`) or takes away what endpoint `ep` of `net` answers: its name, bare and
    /// qualified, to its addresses, and its addresses back to its name. An endpoint's
    /// addresses are its own (its key), so taking one away leaves every other's.
    fn endpoint(&mut self, net: &Network, ep: &Endpoint, present: bool) {
        // A record outside its subnet, or on the resolver's own address, is not served.
        if ep.name.is_empty() || !net.subnet.contains(ep.ip) || Some(ep.ip) == net.resolver() {
            return;
        }
        let mut addrs = vec![IpAddr::V4(ep.ip)];
        addrs.extend(net.ipv6_of(ep.ip).map(IpAddr::V6));
        let full = qualified(&ep.name, &net.name);
        for addr in &addrs {
            if present {
                self.reverse.insert(*addr, full.clone());
            } else {
                self.reverse.remove(addr);
            }
        }
        // Two endpoints of one name (on two nodes) both answer.
        for name in [ep.name.to_ascii_lowercase(), full] {
            if present {
                self.endpoints.entry(name).or_default().extend(&addrs);
            } else if let Some(set) = self.endpoints.get_mut(&name) {
                for addr in &addrs {
                    set.remove(addr);
                }
                if set.is_empty() {
                    self.endpoints.remove(&name);
                }
            }
        }
    }

    /// Service `svc`'s names: the name to its VIPs (its backends if it has none), `tasks.` to
    /// its backends, its VIPs back to its name.
    fn service(&mut self, svc: &ServiceName) {
        let backends: BTreeSet<IpAddr> = svc.backends.iter().copied().collect();
        let answer: BTreeSet<IpAddr> = if svc.vips.is_empty() {
            backends.clone()
        } else {
            svc.vips.iter().copied().collect()
        };
        let full = qualified(&svc.name, &svc.network);
        self.services
            .insert(svc.name.to_ascii_lowercase(), answer.clone());
        self.services.insert(full.clone(), answer);
        let tasks = format!("tasks.{}", svc.name.to_ascii_lowercase());
        self.services.insert(
            format!("{tasks}.{}", svc.network.to_ascii_lowercase()),
            backends.clone(),
        );
        self.services.insert(tasks, backends);
        for vip in &svc.vips {
            self.vips.insert(*vip, full.clone());
        }
    }

    /// Takes service `name`'s names away (those [`Self::service`] gave it).
    fn forget_service(&mut self, name: &str, network: &str) {
        let (bare, full) = (name.to_ascii_lowercase(), qualified(name, network));
        let tasks = format!("tasks.{bare}");
        let tasks_full = format!("{tasks}.{}", network.to_ascii_lowercase());
        for n in [&bare, &full, &tasks, &tasks_full] {
            self.services.remove(n);
        }
        self.vips.retain(|_, v| *v != full);
    }

    fn name(&self, name: &str) -> Option<&BTreeSet<IpAddr>> {
        self.services.get(name).or_else(|| self.endpoints.get(name))
    }

    fn ptr(&self, addr: &IpAddr) -> Option<&String> {
        self.vips.get(addr).or_else(|| self.reverse.get(addr))
    }
}

/// Every network's names, as of one state of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    networks: BTreeMap<String, NetworkNames>,
    /// Every network's name in lower case: names under them are the overlay's.
    suffixes: BTreeSet<String>,
    /// Every overlay subnet, IPv4 and IPv6: their reverse names are the overlay's.
    subnets: OverlaySubnets,
}

impl Zone {
    /// The zone of `cluster` with `services`: O(endpoints), after a listing.
    pub fn build(cluster: &ClusterState, services: &[ServiceName]) -> Self {
        let mut zone = Zone {
            subnets: OverlaySubnets::of(cluster.networks.values()),
            ..Zone::default()
        };
        for net in cluster.networks.values() {
            zone.suffixes.insert(net.name.to_ascii_lowercase());
            zone.networks.insert(
                net.name.clone(),
                NetworkNames {
                    subnet: Some(net.subnet),
                    ..Default::default()
                },
            );
        }
        for ep in cluster.endpoints.values() {
            if let (Some(net), Some(names)) = (
                cluster.networks.get(&ep.network),
                zone.networks.get_mut(&ep.network),
            ) {
                names.endpoint(net, ep, true);
            }
        }
        zone.set_services(services);
        zone
    }

    /// The zone brought from the cluster before `batch` to `cluster` (after it): the touched
    /// endpoints' names alone, and the services they are backends of, so a change costs what
    /// it touches, not a rebuild of 150,000 names (and of every service's backends) on every
    /// node. A network changed: built again; a service or a node's health: every service's.
    pub fn update(&mut self, cluster: &ClusterState, batch: &Batch) {
        if batch.networks {
            *self = Self::build(cluster, &ServiceName::of(cluster));
            return;
        }
        let mut touched = BTreeSet::new();
        for ((network, ip), before) in &batch.before {
            let (Some(net), Some(names)) = (
                cluster.networks.get(network),
                self.networks.get_mut(network),
            ) else {
                continue;
            };
            let after = cluster.endpoints.get(&(network.clone(), *ip));
            for ep in before.iter().chain(after) {
                touched.extend(ep.services.iter().map(|s| (network, s)));
            }
            if let Some(old) = before {
                names.endpoint(net, old, false);
            }
            if let Some(new) = after {
                names.endpoint(net, new, true);
            }
        }
        if batch.services {
            self.set_services(&ServiceName::of(cluster));
            return;
        }
        for (network, name) in touched {
            let Some(names) = self.networks.get_mut(network) else {
                continue;
            };
            names.forget_service(name, network);
            if let Some(svc) = cluster.services.get(&(network.clone(), name.clone())) {
                names.service(&ServiceName::one(cluster, svc));
            }
        }
    }

    /// Replaces every network's service names with `services`'.
    fn set_services(&mut self, services: &[ServiceName]) {
        for names in self.networks.values_mut() {
            names.services.clear();
            names.vips.clear();
        }
        for svc in services {
            if let Some(names) = self.networks.get_mut(&svc.network) {
                names.service(svc);
            }
        }
    }

    /// Whether `network` is in the zone (a network etcd has).
    pub fn has(&self, network: &str) -> bool {
        self.networks.contains_key(network)
    }

    /// The answer to a query for `name` (as asked: any case, with or without the trailing
    /// dot) of `kind` from a container of `network`.
    pub fn answer(&self, network: &str, name: &str, kind: Kind) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(names) = self.networks.get(network) else {
            // Not (or no longer) a network here: what is ours is still never asked outside.
            return if self.is_ours(&name) {
                Answer::NxDomain
            } else {
                Answer::Outside
            };
        };
        if kind == Kind::Ptr
            && let Some(addr) = reverse_address(&name)
        {
            if let Some(target) = names.ptr(&addr) {
                return Answer::Ptr(target.clone());
            }
            return if self.is_overlay_address(addr) {
                Answer::NxDomain
            } else {
                Answer::Outside
            };
        }
        if let Some(addrs) = names.name(&name) {
            let wanted = |a: &&IpAddr| match kind {
                Kind::A => a.is_ipv4(),
                Kind::Aaaa => a.is_ipv6(),
                Kind::Any => true,
                Kind::Ptr | Kind::Other => false,
            };
            return Answer::Addresses(addrs.iter().filter(wanted).copied().collect());
        }
        if self.is_ours(&name) {
            Answer::NxDomain
        } else {
            Answer::Outside
        }
    }

    /// A name the overlay answers for, whether or not it exists: a single label (no one
    /// outside resolves those, and asking the world would tell it our containers' names) and
    /// `tasks.<label>`,
    /// anything under a network's name, and the reverse names of the overlay's subnets.
    fn is_ours(&self, name: &str) -> bool {
        // `tasks.<service>` too: a service's, asked on the network it is not on.
        let single = |n: &str| !n.contains('.');
        if name.is_empty() || single(name) || name.strip_prefix("tasks.").is_some_and(single) {
            return true;
        }
        if self
            .suffixes
            .iter()
            .any(|s| name == s || name.ends_with(&format!(".{s}")))
        {
            return true;
        }
        reverse_address(name).is_some_and(|a| self.is_overlay_address(a))
    }

    /// An address of an overlay subnet (IPv4, or a dual-stack prefix).
    pub fn is_overlay_address(&self, addr: IpAddr) -> bool {
        self.subnets.contains(addr)
    }

    /// The overlay's subnets, to keep past the zone's lock.
    pub fn subnets(&self) -> OverlaySubnets {
        self.subnets.clone()
    }
}

/// Every overlay subnet, IPv4 and IPv6: what the resolver never forwards to and the metrics
/// server never answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlaySubnets {
    pub v4: Vec<Cidr>,
    pub v6: Vec<Subnet6>,
}

impl OverlaySubnets {
    pub fn of<'a>(networks: impl IntoIterator<Item = &'a Network>) -> Self {
        let mut s = Self::default();
        for n in networks {
            s.v4.push(n.subnet);
            s.v6.extend(n.subnet6);
        }
        s
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 one) is in one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.iter().any(|c| c.contains(ip)),
            IpAddr::V6(ip) => self.v6.iter().any(|c| c.contains(ip)),
        }
    }
}

/// The address `net`'s resolver answers on (`Network::resolver`), unless an endpoint holds it
/// (an internal network's container given the subnet's first address before the resolver took
/// it): that network has no resolver then, rather than two owners of one address.
pub fn resolver_address(cluster: &ClusterState, net: &Network) -> Option<Ipv4Addr> {
    let addr = net.resolver()?;
    let taken = cluster.endpoints.contains_key(&(net.name.clone(), addr));
    (!taken).then_some(addr)
}

/// `<name>.<network>` in lower case.
fn qualified(name: &str, network: &str) -> String {
    format!("{name}.{network}").to_ascii_lowercase()
}

/// The address of a reverse name (`d.c.b.a.in-addr.arpa`, the 32 nibbles of `ip6.arpa`).
fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut bits = 0u128;
    for n in nibbles.iter().rev() {
        if n.len() != 1 {
            return None;
        }
        bits = (bits << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(bits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::Keys;

    /// The cluster after putting `records` (key under /overlay, JSON value).
    fn cluster(records: &[(&str, &str)]) -> ClusterState {
        ClusterState::from_records(records)
    }

    /// A container endpoint's record, with the port its network and name derive.
    fn container(name: &str, mac: &str, node: &str, network: &str) -> String {
        let port = crate::shared::ifnames::port_name(network, name);
        format!(
            r#"{{"kind":"container","name":"{name}","mac":"{mac}","node":"{node}","port":"{port}"}}"#
        )
    }

    fn zone(services: &[ServiceName]) -> Zone {
        let web1_h1 = container("Web1", "02:42:0a:0a:01:02", "h1", "blue");
        let web1_h2 = container("web1", "02:42:0a:0a:02:02", "h2", "blue");
        let db = container("db", "02:42:0a:14:01:02", "h1", "red");
        let cluster = cluster(&[
            (
                "networks/blue",
                r#"{"vni":42,"subnet":"10.10.0.0/16","subnet6":"fd00:10::/64"}"#,
            ),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","internal":true}"#,
            ),
            ("endpoints/blue/10.10.1.2", web1_h1.as_str()),
            ("endpoints/blue/10.10.2.2", web1_h2.as_str()),
            ("endpoints/red/10.20.1.2", db.as_str()),
            (
                "endpoints/blue/10.10.9.2",
                r#"{"kind":"peer","name":"legacy","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#,
            ),
            (
                "endpoints/blue/10.10.9.3",
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:03","vtep":"10.0.0.9"}"#,
            ),
        ]);
        assert!(cluster.invalid.is_empty(), "{:?}", cluster.invalid);
        Zone::build(&cluster, services)
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn addrs(list: &[IpAddr]) -> Answer {
        Answer::Addresses(list.to_vec())
    }

    #[test]
    fn endpoints_answer_bare_and_under_their_network_in_any_case() {
        let z = zone(&[]);
        // Two endpoints of one name on two nodes: both.
        let both = addrs(&[v4("10.10.1.2"), v4("10.10.2.2")]);
        for name in ["web1", "WEB1", "web1.blue", "Web1.Blue.", "web1.blue."] {
            assert_eq!(z.answer("blue", name, Kind::A), both, "{name}");
        }
        // Dual stack: AAAA from the IPv4 address; ANY both.
        assert_eq!(
            z.answer("blue", "web1", Kind::Aaaa),
            addrs(&[v6("fd00:10::a0a:102"), v6("fd00:10::a0a:202")])
        );
        assert_eq!(
            z.answer("blue", "web1.blue", Kind::Any),
            addrs(&[
                v4("10.10.1.2"),
                v4("10.10.2.2"),
                v6("fd00:10::a0a:102"),
                v6("fd00:10::a0a:202")
            ])
        );
        // An IPv4-only network: the name is there, with no AAAA (NODATA, not NXDOMAIN).
        assert_eq!(z.answer("red", "db", Kind::Aaaa), addrs(&[]));
        assert_eq!(z.answer("red", "db", Kind::Other), addrs(&[]));
        // Peers with a name too; a nameless one is no name.
        assert_eq!(
            z.answer("blue", "legacy.blue", Kind::A),
            addrs(&[v4("10.10.9.2")])
        );
    }

    #[test]
    fn a_name_is_answered_only_to_its_own_network() {
        let z = zone(&[]);
        assert_eq!(z.answer("red", "web1", Kind::A), Answer::NxDomain);
        assert_eq!(z.answer("red", "web1.blue", Kind::A), Answer::NxDomain);
        assert_eq!(z.answer("blue", "db.red", Kind::A), Answer::NxDomain);
        assert_eq!(
            z.answer("red", "db.red", Kind::A),
            addrs(&[v4("10.20.1.2")])
        );
        // A network this node does not know: nothing of ours is answered there, nor sent out.
        assert_eq!(z.answer("green", "web1", Kind::A), Answer::NxDomain);
        assert_eq!(z.answer("green", "web1.blue", Kind::A), Answer::NxDomain);
        assert_eq!(z.answer("green", "example.com", Kind::A), Answer::Outside);
    }

    #[test]
    fn what_is_ours_is_denied_and_the_rest_goes_out() {
        let z = zone(&[]);
        for ours in ["nope", "nope.blue", "a.b.red", "blue", "x.BLUE."] {
            assert_eq!(z.answer("blue", ours, Kind::A), Answer::NxDomain, "{ours}");
        }
        for outside in ["example.com", "blue.example.com", "bluex", "x.bluex"] {
            let want = if outside.contains('.') {
                Answer::Outside
            } else {
                Answer::NxDomain
            };
            assert_eq!(z.answer("blue", outside, Kind::A), want, "{outside}");
        }
    }

    #[test]
    fn the_zone_follows_the_cluster_at_once() {
        let keys = Keys::new("/overlay");
        let mut cluster = cluster(&[
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            (
                "endpoints/blue/10.10.1.2",
                r#"{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a77fa8a"}"#,
            ),
        ]);
        let before = Zone::build(&cluster, &[]);
        assert_eq!(
            before.answer("blue", "c1", Kind::A),
            addrs(&[v4("10.10.1.2")])
        );
        cluster.delete(&keys, b"/overlay/endpoints/blue/10.10.1.2");
        let after = Zone::build(&cluster, &[]);
        assert_eq!(after.answer("blue", "c1", Kind::A), Answer::NxDomain);
        assert_eq!(after.answer("blue", "c1.blue", Kind::A), Answer::NxDomain);
    }

    #[test]
    fn services_answer_their_vip_and_tasks_their_healthy_backends() {
        let z = zone(&[
            ServiceName {
                network: "blue".into(),
                name: "Web".into(),
                vips: vec![v4("10.10.255.10")],
                backends: vec![v4("10.10.1.2"), v4("10.10.2.2")],
            },
            ServiceName {
                network: "blue".into(),
                name: "web1".into(),
                vips: vec![v4("10.10.255.11")],
                backends: vec![],
            },
            ServiceName {
                network: "red".into(),
                name: "rr".into(),
                vips: vec![],
                backends: vec![v4("10.20.1.2")],
            },
        ]);
        for name in ["web", "web.blue", "WEB.blue."] {
            assert_eq!(
                z.answer("blue", name, Kind::A),
                addrs(&[v4("10.10.255.10")]),
                "{name}"
            );
        }
        for name in ["tasks.web", "tasks.web.blue", "Tasks.Web."] {
            assert_eq!(
                z.answer("blue", name, Kind::A),
                addrs(&[v4("10.10.1.2"), v4("10.10.2.2")]),
                "{name}"
            );
        }
        // A service's name shadows an endpoint's; with no healthy backend, tasks is empty
        // (NODATA: the service exists).
        assert_eq!(
            z.answer("blue", "web1", Kind::A),
            addrs(&[v4("10.10.255.11")])
        );
        assert_eq!(z.answer("blue", "tasks.web1", Kind::A), addrs(&[]));
        // No VIP: the name answers its backends.
        assert_eq!(z.answer("red", "rr", Kind::A), addrs(&[v4("10.20.1.2")]));
        // Not across networks.
        assert_eq!(z.answer("red", "tasks.web", Kind::A), Answer::NxDomain);
        assert_eq!(
            z.answer("blue", "10.255.10.10.in-addr.arpa", Kind::Ptr),
            Answer::Ptr("web.blue".into())
        );
    }

    #[test]
    fn reverse_names_of_the_subnet_are_ours() {
        let z = zone(&[]);
        assert_eq!(
            z.answer("blue", "2.9.10.10.in-addr.arpa.", Kind::Ptr),
            Answer::Ptr("legacy.blue".into())
        );
        assert_eq!(
            z.answer("blue", "99.9.10.10.in-addr.arpa", Kind::Ptr),
            Answer::NxDomain
        );
        // Another network's address is not told to this one.
        assert_eq!(
            z.answer("blue", "2.1.20.10.in-addr.arpa", Kind::Ptr),
            Answer::NxDomain
        );
        assert_eq!(
            z.answer("blue", "8.8.8.8.in-addr.arpa", Kind::Ptr),
            Answer::Outside
        );
        // fd00:10::a0a:102, nibble by nibble from the last.
        let hex = format!(
            "{:032x}",
            u128::from("fd00:10::a0a:102".parse::<Ipv6Addr>().unwrap())
        );
        let six: Vec<String> = hex.chars().rev().map(String::from).collect();
        let six = format!("{}.ip6.arpa", six.join("."));
        assert_eq!(
            z.answer("blue", &six, Kind::Ptr),
            Answer::Ptr("web1.blue".into())
        );
        assert_eq!(
            z.answer("blue", &six.replacen('2', "f", 1), Kind::Ptr),
            Answer::NxDomain
        );
        for bad in ["1.2.3.in-addr.arpa", "a.2.3.4.in-addr.arpa", "1.ip6.arpa"] {
            assert_eq!(reverse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_endpoint_on_the_first_address_keeps_it() {
        let port = crate::shared::ifnames::port_name("red", "old");
        let old = format!(
            r#"{{"kind":"container","name":"old","mac":"02:42:0a:14:00:01","node":"h1","port":"{port}"}}"#
        );
        let cluster = cluster(&[
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","internal":true}"#,
            ),
            ("endpoints/red/10.20.0.1", old.as_str()),
        ]);
        let red = &cluster.networks["red"];
        assert_eq!(red.resolver(), Some("10.20.0.1".parse().unwrap()));
        assert_eq!(resolver_address(&cluster, red), None);
    }

    /// The zone changed batch by batch equals the zone built from scratch after each batch,
    /// over thousands of random batches: endpoints of one name on several addresses, renamed,
    /// moved in and out of a service, outside their subnet or on the resolver's address,
    /// services and their health coming and going, a network changing under them.
    #[test]
    fn an_updated_zone_is_the_zone_built_again() {
        use crate::model::testing::{write, xorshift};
        let keys = Keys::new("/overlay");
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut c = ClusterState::default();
        let blue = [
            r#"{"vni":42,"subnet":"10.10.0.0/16","subnet6":"fd00:10::/64"}"#,
            r#"{"vni":42,"subnet":"10.10.0.0/24"}"#,
        ];
        let mut b = Batch::default();
        write(
            &mut c,
            &mut b,
            &keys,
            "networks/blue".into(),
            Some(blue[0].into()),
        );
        let mut zone = Zone::build(&c, &ServiceName::of(&c));
        for round in 0..3000 {
            let mut b = Batch::default();
            for _ in 0..1 + next(4) {
                match next(20) {
                    0..=11 => {
                        // .1 is the resolver's; .0.x and .1.x are outside the /24 variant.
                        let ip = format!("10.10.{}.{}", next(2), 1 + next(6));
                        let key = format!("endpoints/blue/{ip}");
                        if next(3) == 0 {
                            write(&mut c, &mut b, &keys, key, None);
                            continue;
                        }
                        let name = ["a", "b", "A", "c"][next(4) as usize];
                        let port = crate::shared::ifnames::port_name("blue", name);
                        let services = ["", r#""web""#, r#""web","db""#][next(3) as usize];
                        let value = format!(
                            r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:0a:01:0{}","node":"h{}","port":"{port}","services":[{services}]}}"#,
                            next(9),
                            next(2)
                        );
                        write(&mut c, &mut b, &keys, key, Some(value));
                    }
                    12..=15 => {
                        let name = ["web", "db"][next(2) as usize];
                        let key = format!("services/blue/{name}");
                        let value = (next(3) != 0).then(|| {
                            format!(
                                r#"{{"vip":"10.10.255.{}","ports":[{{"port":80,"proto":"tcp"}}]}}"#,
                                250 + next(4)
                            )
                        });
                        write(&mut c, &mut b, &keys, key, value);
                    }
                    16..=18 => {
                        let value = (next(2) == 0).then(|| r#"{"h0":{"10.10.1.2":[80]}}"#.into());
                        write(&mut c, &mut b, &keys, "health/h0".into(), value);
                    }
                    _ => {
                        let value = blue[next(2) as usize].to_string();
                        write(&mut c, &mut b, &keys, "networks/blue".into(), Some(value));
                    }
                }
            }
            zone.update(&c, &b);
            let built = Zone::build(&c, &ServiceName::of(&c));
            assert_eq!(zone, built, "after batch {round}: {b:?}");
        }
        assert!(c.invalid.is_empty(), "{:?}", c.invalid);
    }
}
