//! The etcd layout: which key holds what, and the JSON each value carries. Everything that
//! knows a key's shape or a value's fields lives here.
//!
//! ```text
//! <prefix>/networks/<net>              {"vni":42,"subnet":"10.10.0.0/16","port":4789,"mtu":1450,"slice_prefix":24,"bum_rate":1000}
//! <prefix>/nodes/<node>                {"vtep":"10.0.0.1","mtu":1500}         under the node's lease
//! <prefix>/slices/<net>/<a.b.c.d-len>  {"node":"h1"}                          created in a transaction
//! <prefix>/endpoints/<net>/<ip>        {"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02",
//!                                       "node":"h1","port":"ove1a2b3c4d","netns":"c1"}
//! <prefix>/names/<node>/<name>         {"network":"blue","ip":"10.10.1.2"}   endpoint names per node
//! <prefix>/groups/<node>                {"42":["239.1.1.1"]}                   under the node's lease
//! <prefix>/health/<node>                {"blue":{"10.10.1.2":[80]}}            under the node's lease
//! <prefix>/services/<net>/<name>       {"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"}]}
//! <prefix>/vips/<net>/<ip>             {"service":"web"}      a service's VIP, held like an address
//! ```
//! An endpoint that is a backend of services names them: `"services":["web"]` (store/services.rs).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::shared::{
    ifnames,
    ipam::{self, Cidr, Subnet6},
    net::Mac,
};

pub const DEFAULT_PREFIX: &str = "/overlay";
/// 24 bits (RFC 7348); 0 is refused because it reads as "unset".
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The keys under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// A key of ours, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Network(String),
    Node(String),
    Slice {
        network: String,
        slice: String,
    },
    Endpoint {
        network: String,
        ip: String,
    },
    Name {
        node: String,
        name: String,
    },
    /// `groups/<node>`: the IPv4 multicast groups a node's containers are members of.
    Groups(String),
    /// `health/<node>`: the TCP ports of a node's backends that fail their health check.
    Health(String),
    /// `services/<net>/<name>`: a load-balanced service of a network.
    Service {
        network: String,
        name: String,
    },
    /// `vips/<net>/<ip>`: the address a service's VIP holds (no endpoint may take it).
    Vip {
        network: String,
        ip: String,
    },
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything the agent watches.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn networks(&self) -> String {
        format!("{}/networks/", self.prefix)
    }
    pub fn network(&self, net: &str) -> String {
        format!("{}/networks/{net}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    /// `state/<node>`: what a node's maps hold, as a digest (for `doctor --cluster`).
    pub fn states(&self) -> String {
        format!("{}/state/", self.prefix)
    }
    pub fn groups(&self, node: &str) -> String {
        format!("{}/groups/{node}", self.prefix)
    }

    /// `health/<node>`: the failing TCP ports of the node's own backends.
    pub fn health(&self, node: &str) -> String {
        format!("{}/health/{node}", self.prefix)
    }

    pub fn all_health(&self) -> String {
        format!("{}/health/", self.prefix)
    }
    pub fn state(&self, node: &str) -> String {
        format!("{}/state/{node}", self.prefix)
    }
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }
    pub fn all_slices(&self) -> String {
        format!("{}/slices/", self.prefix)
    }
    pub fn slices(&self, net: &str) -> String {
        format!("{}/slices/{net}/", self.prefix)
    }
    pub fn slice(&self, net: &str, slice: Cidr) -> String {
        format!("{}/slices/{net}/{}", self.prefix, slice.key())
    }
    pub fn all_endpoints(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }
    pub fn endpoints(&self, net: &str) -> String {
        format!("{}/endpoints/{net}/", self.prefix)
    }
    pub fn endpoint(&self, net: &str, ip: Ipv4Addr) -> String {
        format!("{}/endpoints/{net}/{ip}", self.prefix)
    }
    pub fn names(&self, node: &str) -> String {
        format!("{}/names/{node}/", self.prefix)
    }
    pub fn name(&self, node: &str, name: &str) -> String {
        format!("{}/names/{node}/{name}", self.prefix)
    }
    pub fn all_services(&self) -> String {
        format!("{}/services/", self.prefix)
    }
    pub fn services(&self, net: &str) -> String {
        format!("{}/services/{net}/", self.prefix)
    }
    pub fn service(&self, net: &str, name: &str) -> String {
        format!("{}/services/{net}/{name}", self.prefix)
    }
    pub fn all_vips(&self) -> String {
        format!("{}/vips/", self.prefix)
    }
    pub fn vips(&self, net: &str) -> String {
        format!("{}/vips/{net}/", self.prefix)
    }
    pub fn vip(&self, net: &str, ip: Ipv4Addr) -> String {
        format!("{}/vips/{net}/{ip}", self.prefix)
    }

    /// None for a key outside our layout (ignored, so a newer agent's keys do not disturb us).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let s = |i: usize| parts[i].to_string();
        Some(match parts.as_slice() {
            ["networks", _] => Key::Network(s(1)),
            ["nodes", _] => Key::Node(s(1)),
            ["slices", _, _] => Key::Slice {
                network: s(1),
                slice: s(2),
            },
            ["endpoints", _, _] => Key::Endpoint {
                network: s(1),
                ip: s(2),
            },
            ["groups", _] => Key::Groups(s(1)),
            ["health", _] => Key::Health(s(1)),
            ["names", _, _] => Key::Name {
                node: s(1),
                name: s(2),
            },
            ["services", _, _] => Key::Service {
                network: s(1),
                name: s(2),
            },
            ["vips", _, _] => Key::Vip {
                network: s(1),
                ip: s(2),
            },
            _ => return None,
        })
    }
}

/// Names of networks, nodes and endpoints become key segments and interface-name inputs.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ensure!(
        ok,
        "invalid {what} name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
    );
    Ok(())
}

pub fn check_vni(vni: u32) -> Result<()> {
    ensure!(
        (1..=MAX_VNI).contains(&vni),
        "VNI {vni} is out of range: a VXLAN network identifier has 24 bits (1-{MAX_VNI})"
    );
    Ok(())
}

/// UDP ports a network may not use although they are free here: another protocol's
/// well-known port (IANA), which a host or a firewall on the path treats as that protocol's.
/// VXLAN's own 4789 and Linux's default 8472 are the ports to use.
const OTHER_PROTOCOLS_PORTS: &[(u16, &str)] = &[
    (1194, "OpenVPN"),
    (1701, "L2TP"),
    (1812, "RADIUS"),
    (1813, "RADIUS accounting"),
    (2049, "NFS"),
    (2152, "GTP-U"),
    (2379, "etcd's client"),
    (2380, "etcd's peer"),
    (3478, "STUN/TURN"),
    (3784, "BFD"),
    (3785, "BFD echo"),
    (4500, "IPsec NAT traversal (IKE)"),
    (4784, "BFD multihop"),
    (4791, "RoCEv2"),
    (5060, "SIP"),
    (5353, "mDNS"),
    (5355, "LLMNR"),
    (6081, "GENEVE"),
    (8285, "flannel's UDP backend"),
    (51820, "WireGuard"),
];

/// A network's VXLAN UDP port: not 0, not a system port (below 1024: DNS, NTP, IKE's 500, ...),
/// not another protocol's well-known port.
pub fn check_port(port: u16) -> Result<()> {
    ensure!(port != 0, "UDP port 0 is not a port");
    ensure!(
        port >= 1024,
        "UDP port {port} is a system port (below 1024, another protocol's); VXLAN uses 4789"
    );
    if let Some((_, what)) = OTHER_PROTOCOLS_PORTS.iter().find(|(p, _)| *p == port) {
        bail!("UDP port {port} is {what}'s; VXLAN uses 4789 (or Linux's default, 8472)");
    }
    Ok(())
}

/// Whether `vtep` can be a tunnel endpoint: a unicast address of one host that packets can be
/// sent to and come from. A node's or a peer's VTEP that is not would make every node send its
/// traffic (and flood copies) to the broadcast address, a multicast group, itself, ...
pub fn check_vtep(vtep: IpAddr) -> Result<()> {
    let class = match vtep {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            if first == 0 {
                "unspecified (0.0.0.0/8, \"this network\")"
            } else if v4.is_loopback() {
                "a loopback address"
            } else if v4.is_broadcast() {
                "the broadcast address"
            } else if v4.is_multicast() {
                "a multicast address"
            } else if first >= 240 {
                "reserved (240.0.0.0/4)"
            } else if v4.is_link_local() {
                "link-local (169.254.0.0/16)"
            } else {
                return Ok(());
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                "unspecified"
            } else if v6.is_loopback() {
                "a loopback address"
            } else if v6.is_multicast() {
                "a multicast address"
            } else if v6.is_unicast_link_local() {
                "link-local (fe80::/10)"
            } else if v6.to_ipv4_mapped().is_some() {
                "an IPv4-mapped IPv6 address (give the IPv4 address itself)"
            } else if v6.segments()[..6] == [0; 6] {
                "an IPv4-compatible IPv6 address (deprecated; give the IPv4 address itself)"
            } else {
                return Ok(());
            }
        }
    };
    bail!("{vtep} cannot be a VTEP: it is {class}")
}

fn default_port() -> u16 {
    overlay_common::wire::DEFAULT_VXLAN_PORT
}

/// `networks/<net>` as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub vni: u32,
    pub subnet: Cidr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// None: the underlay's MTU less the 50 bytes of VXLAN, per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_prefix: Option<u8>,
    /// Broadcast and multicast frames per second one endpoint may send (storm control); None:
    /// [`DEFAULT_BUM_RATE`], 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bum_rate: Option<u32>,
    /// No gateway and no way out of the overlay (`network create --internal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// The IPv6 prefix of a dual-stack network (`--subnet6`); None: IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Subnet6>,
}

/// Broadcast and multicast per endpoint per second, unless a network says otherwise: far more
/// than ARP, DHCP, mDNS or VRRP send, far less than a storm.
pub const DEFAULT_BUM_RATE: u32 = 1000;

/// A network, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: Cidr,
    pub port: u16,
    pub mtu: Option<u32>,
    pub slice_prefix: u8,
    /// Broadcast and multicast frames per second per endpoint; 0: unlimited.
    pub bum_rate: u32,
    /// No gateway, no way out.
    pub internal: bool,
    /// Dual-stack: each endpoint's IPv6 address derives from its IPv4 one.
    pub subnet6: Option<Subnet6>,
    /// etcd's create revision of its key (0 until read from etcd): of two networks that claim
    /// one VNI or overlapping subnets, the older is served.
    pub created: i64,
}

impl NetworkRecord {
    pub fn validate(self, name: &str) -> Result<Network> {
        check_name("network", name)?;
        check_vni(self.vni)?;
        let subnet = self.subnet;
        ensure!(
            subnet.prefix() <= ipam::MAX_SUBNET_PREFIX,
            "subnet {subnet} is too small: at most /{}",
            ipam::MAX_SUBNET_PREFIX
        );
        check_port(self.port)?;
        if let Some(mtu) = self.mtu {
            ensure!(
                (68..=65535).contains(&mtu),
                "MTU {mtu} is out of range (68-65535)"
            );
        }
        let slice_prefix = self
            .slice_prefix
            .unwrap_or_else(|| ipam::default_slice_prefix(subnet));
        ensure!(
            (subnet.prefix()..=ipam::MAX_SUBNET_PREFIX).contains(&slice_prefix),
            "slice prefix /{slice_prefix} must lie between the subnet's /{} and /{}",
            subnet.prefix(),
            ipam::MAX_SUBNET_PREFIX
        );
        Ok(Network {
            name: name.to_string(),
            vni: self.vni,
            subnet,
            port: self.port,
            mtu: self.mtu,
            slice_prefix,
            bum_rate: self.bum_rate.unwrap_or(DEFAULT_BUM_RATE),
            internal: self.internal,
            subnet6: self.subnet6,
            created: 0,
        })
    }
}

impl Network {
    pub fn record(&self) -> NetworkRecord {
        NetworkRecord {
            vni: self.vni,
            subnet: self.subnet,
            port: self.port,
            mtu: self.mtu,
            slice_prefix: Some(self.slice_prefix),
            bum_rate: Some(self.bum_rate),
            internal: self.internal,
            subnet6: self.subnet6,
        }
    }

    /// The IPv6 address of the endpoint whose IPv4 address is `ip`, on a dual-stack network.
    pub fn ipv6_of(&self, ip: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
        self.subnet6.map(|s| s.address_of(ip))
    }

    /// The network as the dataplane's NETWORKS map holds it.
    pub fn entry(&self) -> overlay_common::Network {
        overlay_common::Network::new(self.port, self.subnet6.map_or([0; 12], |s| s.first96()))
    }

    /// The address containers route everything outside the overlay through: the subnet's
    /// first host address, the same on every node, served by each node for its own containers
    /// (on the network's bridge). None for an internal network.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (!self.internal)
            .then(|| self.subnet.hosts().next())
            .flatten()
    }

    /// The IPv6 gateway of a dual-stack network: the IPv4 gateway's IPv6 address
    /// ([`Network::ipv6_of`]), held beside it on the bridge. None for an internal or IPv4-only
    /// network.
    pub fn gateway6(&self) -> Option<std::net::Ipv6Addr> {
        self.ipv6_of(self.gateway()?)
    }

    /// The address the network's containers ask for names (the node's resolver, on the
    /// bridge): the subnet's first host, so the gateway's on a network with one; on an
    /// internal network it is held on the bridge for names only. Never an endpoint's.
    pub fn resolver(&self) -> Option<Ipv4Addr> {
        self.subnet.hosts().next()
    }

    /// The bridge this network's endpoints hang off on every node (Docker's `ov-<vni>`).
    pub fn bridge(&self) -> String {
        ifnames::bridge(self.vni)
    }

    /// The MTU of the network's interfaces on a node whose underlay has `underlay_mtu` and is
    /// IPv6 if `ipv6` (the outer header is 20 bytes longer).
    pub fn mtu_on(&self, underlay_mtu: Option<u32>, ipv6: bool) -> u32 {
        let encap = overlay_common::wire::encap_overhead(ipv6) as u32;
        self.mtu
            .unwrap_or_else(|| underlay_mtu.unwrap_or(1500).saturating_sub(encap))
    }
}

/// `nodes/<node>`: a live agent, present only while its lease is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub vtep: IpAddr,
    /// The underlay MTU, from which endpoint MTUs follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// etcd's create revision of its key (0 until read from etcd): of two nodes that claim one
    /// VTEP, the older is served.
    #[serde(skip)]
    pub created: i64,
}

impl NodeRecord {
    pub fn new(vtep: IpAddr, mtu: Option<u32>) -> Self {
        Self {
            vtep,
            mtu,
            created: 0,
        }
    }

    pub fn validate(self) -> Result<Self> {
        check_vtep(self.vtep)?;
        Ok(self)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRecord {
    pub node: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A container's eth0, behind a veth whose host side is `port`.
    Container,
    /// The node itself (`host join`): `iface` holds the address, `port` is its bridge side.
    Host,
    /// A host that is not ours (a kernel vxlan device), behind `vtep`.
    Peer,
}

impl Kind {
    /// As it is stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Host => "host",
            Kind::Peer => "peer",
        }
    }
}

/// `endpoints/<net>/<ip>` as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<IpAddr>,
    /// Who made it, when not a person with the CLI: `cni:<network config name>`,
    /// `docker`. A runtime's garbage collection only ever touches its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The services of its network it is a backend of: it leaves them with its record (or
    /// its node's lease), so no second record can go stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// Where an endpoint lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// On one of our nodes; frames for it leave the bridge by `port`, and it is reached at
    /// `iface` when that is not the container behind `port` (the host's own address).
    Node {
        node: String,
        port: String,
        iface: Option<String>,
    },
    Peer {
        vtep: IpAddr,
    },
}

/// An endpoint, validated (but not yet checked against its network: that may arrive later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub name: String,
    pub mac: Mac,
    pub kind: Kind,
    pub location: Location,
    pub netns: Option<String>,
    /// Who made it (`cni:<config name>`, `docker`); None: the CLI.
    pub owner: Option<String>,
    /// The services (of its network) it is a backend of, sorted, each once.
    pub services: Vec<String>,
    /// etcd's create revision of its key (0 until read from etcd): of two endpoints that claim
    /// one MAC, the older is served.
    pub created: i64,
}

impl EndpointRecord {
    pub fn validate(self, network: &str, ip: &str) -> Result<Endpoint> {
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("{ip:?} in the key is not an IPv4 address"))?;
        let mac: Mac = self.mac.parse()?;
        if mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
            bail!("MAC {mac} is not a unicast address");
        }
        let kind = self.kind.context("missing field `kind`")?;
        let location = match kind {
            Kind::Peer => {
                let vtep = self.vtep.context("a peer needs `vtep`")?;
                check_vtep(vtep)?;
                Location::Peer { vtep }
            }
            Kind::Container | Kind::Host => {
                let node = self.node.context("missing field `node`")?;
                check_name("node", &node)?;
                check_name("endpoint", &self.name)?;
                let port = self.port.context("missing field `port`")?;
                // A record is input from any node, never a command: it may name only the port
                // its node made for it, or it could make a node attach its programs to the
                // underlay, `lo`, or another endpoint's port.
                let iface = if kind == Kind::Host {
                    let leg = ifnames::host_leg(&port).with_context(|| {
                        format!(
                            "port {port:?} is not a host port ({})",
                            ifnames::host_port_shape()
                        )
                    })?;
                    let iface = self.iface.context("a host endpoint needs `iface`")?;
                    ensure!(
                        iface == leg,
                        "iface {iface:?} is not host port {port}'s other leg ({leg})"
                    );
                    Some(iface)
                } else {
                    let own = ifnames::port_name(network, &self.name);
                    ensure!(
                        port == own,
                        "port {port:?} is not endpoint {}'s own port ({own}, derived from its network and name)",
                        self.name
                    );
                    None
                };
                Location::Node { node, port, iface }
            }
        };
        let services = super::services::check_memberships(self.services)?;
        Ok(Endpoint {
            network: network.to_string(),
            ip,
            name: self.name,
            mac,
            kind,
            location,
            netns: self.netns,
            owner: self.owner,
            services,
            created: 0,
        })
    }
}

impl Endpoint {
    pub fn record(&self) -> EndpointRecord {
        let mut rec = EndpointRecord {
            kind: Some(self.kind),
            name: self.name.clone(),
            mac: self.mac.to_string(),
            netns: self.netns.clone(),
            owner: self.owner.clone(),
            services: self.services.clone(),
            ..Default::default()
        };
        match &self.location {
            Location::Node { node, port, iface } => {
                rec.node = Some(node.clone());
                rec.port = Some(port.clone());
                rec.iface = iface.clone();
            }
            Location::Peer { vtep } => rec.vtep = Some(*vtep),
        }
        rec
    }

    pub fn node(&self) -> Option<&str> {
        match &self.location {
            Location::Node { node, .. } => Some(node),
            Location::Peer { .. } => None,
        }
    }
}

/// `state/<node>`, under the node's lease: the digest of the forwarding entries its maps hold
/// (NETWORKS, FDB, ARP, VTEPS: the tables any node can compute for it from etcd) and the etcd
/// revision they reflect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateRecord {
    pub revision: i64,
    pub digest: String,
    pub entries: usize,
}

/// `groups/<node>` (leased): per VNI, the IPv4 multicast groups the node's containers reported
/// membership of (IGMP snooping), so other nodes send a group's traffic only where it is
/// wanted. `{"42":["239.1.1.1"]}`.
pub type GroupsRecord = BTreeMap<String, BTreeSet<Ipv4Addr>>;

/// `health/<node>` (leased): network -> endpoint address -> the service TCP ports that fail
/// their health check, as that node's agent probes its own backends. Empty when all answer.
/// Whoever reads it believes a node only about its own endpoints ([`crate::model::cluster`]).
pub type HealthRecord = BTreeMap<String, BTreeMap<Ipv4Addr, BTreeSet<u16>>>;

/// The TCP ports of endpoint `ep` that fail their health check, as its own node says in
/// `health` (node -> its record): a claim another node makes about it is never read, so a
/// node speaks for its own endpoints only. None: healthy (or not checked yet).
pub fn failing<'a>(
    health: &'a BTreeMap<String, HealthRecord>,
    ep: &Endpoint,
) -> Option<&'a BTreeSet<u16>> {
    health
        .get(ep.node()?)?
        .get(&ep.network)?
        .get(&ep.ip)
        .filter(|ports| !ports.is_empty())
}

/// Most groups a node publishes; beyond, its groups fall back to reaching every host.
pub const MAX_PUBLISHED_GROUPS: usize = 1024;

/// `names/<node>/<name>`: which endpoint a node's endpoint name refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub network: String,
    pub ip: Ipv4Addr,
}

/// Parses a stored value, with an error that says what was wrong with it.
pub fn decode<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Result<T> {
    const MAX: usize = 64 * 1024;
    ensure!(
        value.len() <= MAX,
        "value of {} bytes is larger than any record ({MAX} at most)",
        value.len()
    );
    serde_json::from_slice(value).map_err(|e| {
        anyhow::anyhow!(
            "not a valid record: {}",
            crate::shared::text::one_line(&e.to_string())
        )
    })
}

pub fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/overlay/");
        assert_eq!(k.network("blue"), "/overlay/networks/blue");
        assert_eq!(
            k.parse(k.network("blue").as_bytes()),
            Some(Key::Network("blue".into()))
        );
        assert_eq!(
            k.parse(k.endpoint("blue", Ipv4Addr::new(10, 10, 1, 2)).as_bytes()),
            Some(Key::Endpoint {
                network: "blue".into(),
                ip: "10.10.1.2".into()
            })
        );
        let slice: Cidr = "10.10.3.0/24".parse().unwrap();
        assert_eq!(k.slice("blue", slice), "/overlay/slices/blue/10.10.3.0-24");
        assert_eq!(k.parse(b"/overlay/networks/blue/extra"), None);
        assert_eq!(k.parse(b"/overlayx/networks/blue"), None);
        assert_eq!(k.parse(b"/other/networks/blue"), None);
    }

    #[test]
    fn networks_validate() {
        let rec = |json: &str| decode::<NetworkRecord>(json.as_bytes()).unwrap();
        let net = rec(r#"{"vni":42,"subnet":"10.10.0.0/16"}"#)
            .validate("blue")
            .unwrap();
        assert_eq!((net.port, net.slice_prefix, net.mtu), (4789, 24, None));
        assert_eq!(net.mtu_on(Some(1500), false), 1450);
        assert_eq!(net.mtu_on(Some(1500), true), 1430);
        assert_eq!(net.bridge(), "ovbr42");
        for (json, want) in [
            (r#"{"vni":16777216,"subnet":"10.10.0.0/16"}"#, "24 bits"),
            (r#"{"vni":0,"subnet":"10.10.0.0/16"}"#, "24 bits"),
            (r#"{"vni":42,"subnet":"10.10.0.0"}"#, "not a CIDR"),
            (r#"{"vni":42,"subnet":"10.10.0.0/31"}"#, "too small"),
            (r#"{"vni":42,"subnet":"10.10.0.0/16","port":0}"#, "port 0"),
            (
                r#"{"vni":42,"subnet":"10.10.0.0/16","slice_prefix":8}"#,
                "slice prefix",
            ),
        ] {
            // A subnet that is not one fails as the record is read; the rest, as it is checked.
            let err = decode::<NetworkRecord>(json.as_bytes())
                .and_then(|r| r.validate("blue"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
        assert!(decode::<NetworkRecord>(br#"{"vni":"42"}"#).is_err());
        assert!(decode::<NetworkRecord>(b"{not json").is_err());
        assert!(decode::<NetworkRecord>(&vec![b' '; 100_000]).is_err());
    }

    #[test]
    fn endpoints_validate() {
        let rec = |json: &str| decode::<EndpointRecord>(json.as_bytes()).unwrap();
        let ep = rec(
            r#"{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a77fa8a"}"#,
        )
        .validate("blue", "10.10.1.2")
        .unwrap();
        let host = rec(
            r#"{"kind":"host","name":"host.blue","mac":"02:42:0a:0a:01:01","node":"h1","port":"ovhp42","iface":"ovh42"}"#,
        )
        .validate("blue", "10.10.1.1")
        .unwrap();
        assert_eq!(host.record().validate("blue", "10.10.1.1").unwrap(), host);
        assert_eq!(ep.node(), Some("h1"));
        assert_eq!(ep.record().validate("blue", "10.10.1.2").unwrap(), ep);
        let peer = rec(r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#)
            .validate("blue", "10.10.9.2")
            .unwrap();
        assert_eq!(
            peer.location,
            Location::Peer {
                vtep: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))
            }
        );
        for (json, ip, want) in [
            (
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:02"}"#,
                "10.10.9.2",
                "vtep",
            ),
            (
                r#"{"kind":"peer","mac":"zz","vtep":"10.0.0.9"}"#,
                "10.10.9.2",
                "MAC",
            ),
            (
                r#"{"kind":"peer","mac":"ff:ff:ff:ff:ff:ff","vtep":"10.0.0.9"}"#,
                "10.10.9.2",
                "unicast",
            ),
            (
                r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#,
                "10.10.9",
                "IPv4",
            ),
            (
                r#"{"kind":"container","name":"c9","mac":"02:42:0a:0a:09:02","node":"h1"}"#,
                "10.10.9.2",
                "port",
            ),
        ] {
            let err = format!("{:#}", rec(json).validate("blue", ip).unwrap_err());
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    /// A record may name only the port its node made for it: never the underlay, `lo`, a
    /// bridge, or another endpoint's port (issue 25: one such record took a node off the
    /// network).
    #[test]
    fn a_record_names_only_its_own_port() {
        let container = |name: &str, port: &str| {
            decode::<EndpointRecord>(
                format!(
                    r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:47:00:fa","node":"h1","port":"{port}"}}"#
                )
                .as_bytes(),
            )
            .unwrap()
            .validate("blue", "10.71.0.250")
        };
        container("c1", &ifnames::port_name("blue", "c1")).unwrap();
        for port in [
            "u1",
            "eth1",
            "lo",
            "ovbr42",
            "ovgro4789",
            "ovhp42",
            &ifnames::port_name("blue", "c2"),
            &ifnames::port_name("red", "c1"),
            "",
        ] {
            let err = format!("{:#}", container("c1", port).unwrap_err());
            assert!(
                err.contains("is not endpoint c1's own port"),
                "{port}: {err}"
            );
        }
        let err = format!("{:#}", container("a/b", "x").unwrap_err());
        assert!(err.contains("invalid endpoint name"), "{err}");
        let host = |port: &str, iface: &str| {
            decode::<EndpointRecord>(
                format!(
                    r#"{{"kind":"host","name":"host.blue","mac":"02:42:0a:47:00:fa","node":"h1","port":"{port}","iface":"{iface}"}}"#
                )
                .as_bytes(),
            )
            .unwrap()
            .validate("blue", "10.71.0.250")
        };
        host("ovhp42", "ovh42").unwrap();
        for (port, iface, says) in [
            ("eth1", "ovh42", "not a host port"),
            ("lo", "ovh42", "not a host port"),
            ("ovhp042", "ovh42", "not a host port"),
            (
                &ifnames::port_name("blue", "c1"),
                "ovh42",
                "not a host port",
            ),
            ("ovhp42", "eth1", "other leg"),
            ("ovhp42", "ovh43", "other leg"),
        ] {
            let err = format!("{:#}", host(port, iface).unwrap_err());
            assert!(err.contains(says), "{port} {iface}: {err}");
        }
    }

    #[test]
    fn addresses_that_cannot_be_vteps_are_refused() {
        for good in ["10.0.0.9", "192.0.2.1", "fd00::9", "2001:db8::1"] {
            check_vtep(good.parse().unwrap()).unwrap();
        }
        for (bad, class) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.1.2.3", "loopback"),
            ("224.0.0.1", "multicast"),
            ("239.1.1.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("169.254.1.1", "link-local"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.9", "IPv4-mapped"),
            ("::10.0.0.9", "IPv4-compatible"),
        ] {
            let err = check_vtep(bad.parse().unwrap()).unwrap_err().to_string();
            assert!(
                err.contains(class) && err.contains("cannot be a VTEP"),
                "{bad}: {err}"
            );
            // From etcd too: a node's record and a peer's.
            let node = decode::<NodeRecord>(format!(r#"{{"vtep":"{bad}"}}"#).as_bytes()).unwrap();
            assert!(node.validate().is_err(), "{bad}");
            let peer = decode::<EndpointRecord>(
                format!(r#"{{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"{bad}"}}"#).as_bytes(),
            )
            .unwrap();
            assert!(peer.validate("blue", "10.10.9.2").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_network_port_is_no_other_protocols() {
        for good in [4789, 8472, 4790, 1024, 10000, 65535] {
            check_port(good).unwrap();
        }
        for (bad, says) in [
            (0, "not a port"),
            (53, "system port"),
            (500, "system port"),
            (1023, "system port"),
            (4500, "IPsec"),
            (51820, "WireGuard"),
            (6081, "GENEVE"),
            (2379, "etcd"),
            (2380, "etcd"),
            (5353, "mDNS"),
            (5355, "LLMNR"),
            (1701, "L2TP"),
            (1194, "OpenVPN"),
            (4791, "RoCEv2"),
            (3784, "BFD"),
            (4784, "BFD"),
        ] {
            let err = check_port(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            // A record from etcd with it is refused too.
            let rec = decode::<NetworkRecord>(
                format!(r#"{{"vni":42,"subnet":"10.10.0.0/16","port":{bad}}}"#).as_bytes(),
            )
            .unwrap();
            assert!(rec.validate("blue").is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        check_name("network", "blue-1.a_b").unwrap();
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name("network", bad).is_err(), "{bad}");
        }
    }
}

/// etcd's values and keys are outside input: another agent's version, a hand edit, a bad
/// actor with write access. Decoding and validating any of them never panics, and every
/// refusal is one line (it is logged with its key and skipped).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::fuzzing::{CASES, input, one_line, plausible_string, refused};

    const A_NETWORK: &str = r#"{"vni":42,"subnet":"10.10.0.0/16","port":4789,"mtu":1450,"slice_prefix":24,"bum_rate":1000,"internal":true,"subnet6":"fd00:10::/64"}"#;
    const A_NODE: &str = r#"{"vtep":"10.0.0.1","mtu":1500}"#;
    const AN_ENDPOINT: &str = r#"{"kind":"host","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a2b3c4d","iface":"ovh42","netns":"c1","vtep":"10.0.0.2","owner":"cni:podman","services":["web","dns"]}"#;
    const A_STATE: &str = r#"{"revision":7,"digest":"ab12","entries":3,"node":"h1","network":"blue","ip":"10.10.1.2","42":["239.1.1.1"]}"#;
    const NETWORK: &[&str] = &[
        "vni",
        "subnet",
        "port",
        "mtu",
        "slice_prefix",
        "bum_rate",
        "internal",
        "subnet6",
    ];
    const NODE: &[&str] = &["vtep", "mtu"];
    const ENDPOINT: &[&str] = &[
        "kind", "name", "mac", "node", "port", "iface", "netns", "vtep", "owner", "services",
    ];
    const OTHERS: &[&str] = &[
        "node", "network", "ip", "revision", "digest", "entries", "42", "43", "0",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn network_records(value in input(A_NETWORK, NETWORK), name in plausible_string()) {
            match decode::<NetworkRecord>(&value) {
                Ok(rec) => refused(rec.validate(&name))?,
                Err(e) => one_line(&e)?,
            }
        }

        #[test]
        fn endpoint_records(
            value in input(AN_ENDPOINT, ENDPOINT),
            network in plausible_string(),
            ip in plausible_string(),
        ) {
            match decode::<EndpointRecord>(&value) {
                Ok(rec) => refused(rec.validate(&network, &ip))?,
                Err(e) => one_line(&e)?,
            }
        }

        #[test]
        fn node_group_name_slice_and_state_records(
            value in input(A_STATE, OTHERS),
            node in input(A_NODE, NODE),
        ) {
            refused(decode::<NodeRecord>(&node))?;
            refused(decode::<GroupsRecord>(&value))?;
            refused(decode::<HealthRecord>(&value))?;
            refused(decode::<NameRecord>(&value))?;
            refused(decode::<SliceRecord>(&value))?;
            refused(decode::<NodeStateRecord>(&value))?;
        }

        #[test]
        fn names_and_vnis(name in plausible_string(), vni in any::<u32>()) {
            refused(check_name("network", &name))?;
            refused(check_vni(vni))?;
        }

        #[test]
        fn any_key_parses_or_is_ignored(key in any::<Vec<u8>>()) {
            let _ = Keys::new(DEFAULT_PREFIX).parse(&key);
        }

        #[test]
        fn keys_of_valid_names_parse_back(
            a in "[a-z0-9][a-z0-9._-]{0,20}",
            b in "[a-z0-9][a-z0-9._-]{0,20}",
            prefix in prop::sample::select(&["/overlay", "/overlay/", "/x/y", ""][..]),
        ) {
            let keys = Keys::new(prefix);
            let parse = |k: String| keys.parse(k.as_bytes());
            prop_assert_eq!(parse(keys.network(&a)), Some(Key::Network(a.clone())));
            prop_assert_eq!(parse(keys.node(&a)), Some(Key::Node(a.clone())));
            prop_assert_eq!(parse(keys.groups(&a)), Some(Key::Groups(a.clone())));
            prop_assert_eq!(parse(keys.health(&a)), Some(Key::Health(a.clone())));
            prop_assert_eq!(
                parse(keys.name(&a, &b)),
                Some(Key::Name { node: a.clone(), name: b.clone() })
            );
            // A key one segment deeper is not ours.
            prop_assert_eq!(parse(format!("{}/{b}", keys.network(&a))), None);
        }
    }
}
