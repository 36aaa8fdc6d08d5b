//! Which key holds what: the layout under a prefix, and what a key read back names.
use std::net::Ipv4Addr;

use crate::shared::ipam::Cidr;

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
    /// `~state/<node>`: what a node's maps hold, as a digest (for `doctor --cluster`). Under
    /// `~`, the last printable character, so that it sorts after every key the agents watch
    /// ([`Keys::watched_end`]): a digest changes on every node at every change of the maps,
    /// and as an event for every other node that was N² events a change (25 million at 5,000
    /// nodes) that no agent reads.
    pub fn states(&self) -> String {
        format!("{}/~state/", self.prefix)
    }

    /// Where the range the agents watch ends, from [`Keys::all`]: every key of the layout
    /// but what only operators read (the digests).
    pub fn watched_end(&self) -> String {
        format!("{}/~", self.prefix)
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
        format!("{}{node}", self.states())
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
