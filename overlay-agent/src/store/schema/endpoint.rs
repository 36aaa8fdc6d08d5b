//! `endpoints/<net>/<ip>`: an endpoint's record and the endpoint it describes.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::check_name;
use super::check_vtep;
use crate::shared::{ifnames, net::Mac};

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
        let services = crate::store::services::check_memberships(self.services)?;
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
