//! The overlay's resolver on this node: for each network served here, a UDP and a TCP socket
//! on port 53 of the network's resolver address (`Network::resolver`, the gateway's), bound to
//! the network's bridge in the host's namespace. It answers the network's containers from the
//! zone (model/names.rs), which the agent swaps after every change it applies from etcd, with
//! TTL 0: a name is gone the moment its endpoint is gone from etcd, and no client keeps it
//! longer. Other names go to the node's resolvers (upstream.rs), except from an internal
//! network (REFUSED). The protocol is hickory-proto's; server.rs answers, upstream.rs forwards.
//!
//! A node sync like the others: `want` is the set of (network, address, bridge ifindex) to
//! listen on, `apply` binds what is missing and closes what is no longer wanted. A bridge
//! exists only while a container of its network is attached here, and one deleted and made
//! again has a new ifindex, which a socket bound to the old one would never hear from again:
//! the sockets follow the bridge's ifindex. They are bound with IP_FREEBIND, since the
//! address comes onto the bridge from the egress sync, a step later.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{sync::watch, task::JoinHandle};

use super::{Kernel, NodeSync, View};
use crate::{
    model::names::{Zone, resolver_address},
    shared::ipam::Cidr,
};

mod server;
mod upstream;

pub use upstream::DEFAULT_RESOLV_CONF;

/// DNS's port.
pub const PORT: u16 = 53;

/// What the resolver did with each query, for the metrics (`overlay_dns_queries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the zone (with its addresses, or none of the kind asked).
    Answered,
    /// A name of ours that does not exist.
    NxDomain,
    /// Sent to the node's resolvers, and their answer passed on.
    Forwarded,
    /// Not answered by policy: a name outside the overlay asked on an internal network, an
    /// opcode or class we do not serve.
    Refused,
    /// To be forwarded, but no resolver of the node answered.
    ServFail,
    /// Not a DNS query (does not parse, is a response, has no single question): dropped.
    Malformed,
    /// From an address outside the network's subnet: dropped.
    Foreign,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Answered,
        Outcome::NxDomain,
        Outcome::Forwarded,
        Outcome::Refused,
        Outcome::ServFail,
        Outcome::Malformed,
        Outcome::Foreign,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NxDomain => "nxdomain",
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::ServFail => "servfail",
            Outcome::Malformed => "malformed",
            Outcome::Foreign => "foreign",
        }
    }
}

/// Queries by outcome since the agent started, over every network.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; Outcome::ALL.len()]);

impl Counters {
    pub fn count(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize].load(Ordering::Relaxed)
    }
}

/// What every listener shares: the zone as last published, the counters, the node's
/// resolvers.
#[derive(Clone)]
pub struct Resolver {
    zone: watch::Receiver<Arc<Zone>>,
    counters: Arc<Counters>,
    upstream: Arc<upstream::Upstream>,
}

impl Resolver {
    /// Answers from `zone` (the agent sends each new zone into it), counts into `counters`,
    /// and forwards to the resolvers `resolv_conf` names.
    pub fn new(
        zone: watch::Receiver<Arc<Zone>>,
        counters: Arc<Counters>,
        resolv_conf: std::path::PathBuf,
    ) -> Self {
        Self {
            zone,
            counters,
            upstream: Arc::new(upstream::Upstream::new(resolv_conf)),
        }
    }
}

/// One network's listener as wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: Ipv4Addr,
    pub bridge: String,
    pub ifindex: u32,
    pub subnet: Cidr,
    /// Nothing is forwarded from an internal network.
    pub internal: bool,
}

/// The sockets of one network, served by two tasks; dropped, they stop.
struct Listening {
    spec: Listen,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The resolver sync: the listeners it runs, by network, and why one could not be made.
pub struct Names {
    resolver: Resolver,
    listening: BTreeMap<String, Listening>,
    failed: BTreeMap<String, String>,
}

impl Names {
    pub fn new(resolver: Resolver) -> Self {
        Self {
            resolver,
            listening: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Network -> where its resolver listens, or why it does not: for `status`.
    pub fn report(&self) -> BTreeMap<String, String> {
        let mut report: BTreeMap<String, String> = self
            .listening
            .iter()
            .map(|(net, l)| {
                (
                    net.clone(),
                    format!("{}:{PORT} on {}", l.spec.addr, l.spec.bridge),
                )
            })
            .collect();
        report.extend(self.failed.clone());
        report
    }

    fn start(&self, network: &str, spec: &Listen) -> Result<Listening> {
        let served = server::Served {
            network: network.to_string(),
            subnet: spec.subnet,
            internal: spec.internal,
        };
        let udp = bind(spec, Type::DGRAM, Protocol::UDP)?;
        let udp = tokio::net::UdpSocket::from_std(udp.into())
            .with_context(|| format!("registering the UDP socket of {}", spec.addr))?;
        let tcp = bind(spec, Type::STREAM, Protocol::TCP)?;
        tcp.listen(128)
            .with_context(|| format!("listening on TCP {}:{PORT}", spec.addr))?;
        let tcp = tokio::net::TcpListener::from_std(tcp.into())
            .with_context(|| format!("registering the TCP socket of {}", spec.addr))?;
        let server = Arc::new(server::Server::new(self.resolver.clone(), served));
        Ok(Listening {
            spec: spec.clone(),
            tasks: [
                tokio::spawn(server.clone().serve_udp(udp)),
                tokio::spawn(server.serve_tcp(tcp)),
            ],
        })
    }
}

/// A socket on `spec.addr`:53, on `spec.bridge` only (SO_BINDTODEVICE: a query that arrives
/// by another interface never reaches it, and replies leave by the bridge), bound before the
/// address is there (IP_FREEBIND).
fn bind(spec: &Listen, kind: Type, protocol: Protocol) -> Result<Socket> {
    let addr = SocketAddr::from((spec.addr, PORT));
    let what = || format!("{protocol:?} {addr} on {}", spec.bridge);
    let socket = Socket::new(Domain::IPV4, kind, Some(protocol)).with_context(what)?;
    socket.set_freebind_v4(true).with_context(what)?;
    socket.set_reuse_address(true).with_context(what)?;
    socket
        .bind_device(Some(spec.bridge.as_bytes()))
        .with_context(what)?;
    socket.set_nonblocking(true).with_context(what)?;
    socket.bind(&addr.into()).with_context(what)?;
    Ok(socket)
}

impl NodeSync for Names {
    type Want = BTreeMap<String, Listen>;

    fn want(&self, view: &View<'_>) -> Self::Want {
        let mut want = BTreeMap::new();
        for net in view.cluster.networks.values() {
            if !view.applied.networks.contains_key(&net.vni) {
                continue;
            }
            let Some(addr) = resolver_address(view.cluster, net) else {
                continue;
            };
            let bridge = net.bridge();
            // No bridge: no container of the network here, nobody to answer.
            let Some(ifindex) = (view.ifindex)(&bridge) else {
                continue;
            };
            want.insert(
                net.name.clone(),
                Listen {
                    addr,
                    bridge,
                    ifindex,
                    subnet: net.subnet,
                    internal: net.internal,
                },
            );
        }
        want
    }

    async fn apply(&mut self, want: Self::Want, _kernel: &mut Kernel<'_>) {
        self.listening
            .retain(|net, l| want.get(net) == Some(&l.spec));
        self.failed.retain(|net, _| want.contains_key(net));
        for (net, spec) in &want {
            if self.listening.contains_key(net) {
                continue;
            }
            match self.start(net, spec) {
                Ok(listening) => {
                    log::info!(
                        "network {net}: resolver listening on {}:{PORT} (UDP and TCP) on {}",
                        spec.addr,
                        spec.bridge
                    );
                    self.failed.remove(net);
                    self.listening.insert(net.clone(), listening);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.failed.get(net) != Some(&why) {
                        log::warn!("network {net}: no resolver: {why}; will retry");
                    }
                    self.failed.insert(net.clone(), why);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::state::MapState, syncs::testing};

    #[test]
    fn listens_on_each_served_network_with_a_bridge_here() {
        let cluster = testing::cluster(&[
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","internal":true}"#,
            ),
            ("networks/green", r#"{"vni":44,"subnet":"10.30.0.0/16"}"#),
        ]);
        let mut applied = MapState::default();
        for vni in [42, 43] {
            applied
                .networks
                .insert(vni, overlay_common::Network::new(4789, [0; 12]));
        }
        let (_tx, rx) = watch::channel(Arc::new(Zone::default()));
        let names = Names::new(Resolver::new(rx, Arc::default(), "/nonexistent".into()));
        // ovbr42 exists (index 7), ovbr43 does not: red has no container here yet.
        let want = names.want(&testing::view(&cluster, &applied));
        assert_eq!(
            want,
            BTreeMap::from([(
                "blue".to_string(),
                Listen {
                    addr: "10.10.0.1".parse().unwrap(),
                    bridge: "ovbr42".into(),
                    ifindex: 7,
                    subnet: "10.10.0.0/16".parse().unwrap(),
                    internal: false,
                }
            )])
        );
    }
}
