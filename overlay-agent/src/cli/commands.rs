//! The user-facing commands that change the cluster: networks, endpoints, peers, the host's own
//! address. Each checks its input before it writes anything, writes etcd through the store's
//! transactions, and does the node-local plumbing over netlink; the running agent picks the
//! change up from etcd and programs the maps.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use overlay_common::MacKey;

use crate::{
    dataplane::{Maps, PinDir},
    ifnames::{self, host_endpoint_name, port_alias, port_name},
    ipam::Cidr,
    net::Mac,
    plumbing::{Netlink, open_netns},
    store::{
        Store,
        schema::{self, Endpoint, Kind, Location, Network},
    },
};

/// Who is acting: the node's name, its pins (to see when its agent has served a change), and
/// etcd.
pub struct Ctx {
    pub store: Store,
    pub node: String,
    pub pins: PinDir,
}

// ---- networks ----

pub struct NetworkSpec {
    pub name: String,
    pub subnet: Cidr,
    pub vni: u32,
    pub port: u16,
    pub mtu: Option<u32>,
    pub slice_prefix: Option<u8>,
    pub subnet6: Option<String>,
    pub bum_rate: Option<u32>,
    pub internal: bool,
}

impl NetworkSpec {
    /// Checks everything that can be checked without etcd.
    pub fn validate(self) -> Result<Network> {
        schema::NetworkRecord {
            vni: self.vni,
            subnet: self.subnet.to_string(),
            port: self.port,
            mtu: self.mtu,
            slice_prefix: self.slice_prefix,
            subnet6: self.subnet6,
            bum_rate: self.bum_rate,
            internal: self.internal,
        }
        .validate(&self.name)
    }
}

pub async fn network_create(store: &Store, net: &Network) -> Result<()> {
    store.create_network(net).await
}

pub async fn network_rm(store: &Store, name: &str) -> Result<()> {
    store.delete_network(name).await
}

// ---- endpoints ----

/// Reserves an address for the endpoint `make` builds: `requested` if free, else the first
/// free one in this node's slice (claimed on first use).
async fn reserve(
    ctx: &Ctx,
    net: &Network,
    requested: Option<Ipv4Addr>,
    make: impl Fn(Ipv4Addr) -> Endpoint,
) -> Result<Endpoint> {
    if let Some(ip) = requested {
        ensure!(
            net.subnet.contains(ip) && ip != net.subnet.network() && ip != net.subnet.broadcast(),
            "{ip} is not a host address of network {}'s subnet {}",
            net.name,
            net.subnet
        );
        ensure!(
            Some(ip) != net.gateway(),
            "{ip} is network {}'s gateway",
            net.name
        );
        let ep = make(ip);
        if ctx.store.create_endpoint(&ep).await? {
            return Ok(ep);
        }
        let owner = ctx.store.endpoint(&net.name, ip).await.ok().flatten();
        bail!(
            "{ip} is already taken in network {}{}",
            net.name,
            owner.map_or(String::new(), |o| format!(" by {}", describe(&o)))
        );
    }
    let slice = ctx.store.claim_slice(net, &ctx.node).await?;
    let taken = ctx.store.taken_addresses(&net.name).await?;
    let gateway = net.gateway();
    for ip in slice
        .hosts()
        .filter(|ip| !taken.contains(ip) && Some(*ip) != gateway)
    {
        // Lost a race for this address: try the next.
        if ctx.store.create_endpoint(&make(ip)).await? {
            return Ok(make(ip));
        }
    }
    bail!(
        "node {}'s slice {slice} of network {} has no free address",
        ctx.node,
        net.name
    )
}

fn describe(ep: &Endpoint) -> String {
    match &ep.location {
        Location::Node { node, .. } => {
            format!("{} endpoint {} on node {node}", ep.kind.name(), ep.name)
        }
        Location::Peer { vtep } => format!("peer behind {vtep}"),
    }
}

/// An endpoint's IPv6 address with its prefix length, on a dual-stack network.
fn ipv6_of(net: &Network, ip: Ipv4Addr) -> Option<(Ipv6Addr, u8)> {
    Some((net.ipv6_of(ip)?, net.subnet6?.prefix()))
}

/// The MTU for a network's interfaces on this node.
async fn mtu_here(ctx: &Ctx, net: &Network) -> Result<u32> {
    let node = ctx.store.node(&ctx.node).await.ok().flatten();
    Ok(net.mtu_on(
        node.as_ref().and_then(|n| n.mtu),
        node.is_some_and(|n| n.vtep.is_ipv6()),
    ))
}

/// The first free `ethN` in a container (eth0 unless it is on several networks).
async fn free_eth(inner: &Netlink) -> Result<String> {
    for i in 0..16 {
        let name = format!("eth{i}");
        if inner.index(&name).await?.is_none() {
            return Ok(name);
        }
    }
    bail!("the container already has eth0 to eth15")
}

/// What a container's attachment is made of, whoever asks for it: the CLI, the CNI plugin, the
/// Docker driver. Each is an adapter onto the functions below.
#[derive(Clone, Debug, Default)]
pub struct Attach {
    pub name: String,
    pub network: String,
    /// The address (default: the next free one in this node's slice).
    pub ip: Option<Ipv4Addr>,
    /// The interface's name in the container (CNI_IFNAME); default the first free `ethN`.
    pub ifname: Option<String>,
    /// The interface's MTU, instead of the network's.
    pub mtu: Option<u32>,
    /// Who asks, when not the CLI (see `EndpointRecord::owner`).
    pub owner: Option<String>,
}

/// Serializes, per network and host, what makes or removes ports and the bridge: without it a
/// removal that finds the bridge empty could delete it while an attachment is putting its port
/// on it. CLI, CNI plugin and Docker driver are separate processes: a file lock.
async fn bridge_lock(net: &Network) -> Result<std::fs::File> {
    crate::lock::exclusive(&net.bridge()).await
}

/// An attachment whose veth pair is on the network's bridge and whose address is claimed in
/// etcd; its container side, `peer`, is still in the host.
pub struct Made {
    pub endpoint: Endpoint,
    pub peer: String,
    pub mtu: u32,
    pub prefix: u8,
    /// The network's gateway (None: internal), for the container's default route.
    pub gateway: Option<Ipv4Addr>,
    /// On a dual-stack network, the endpoint's IPv6 address and the prefix's length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

/// The first half of an attachment, the whole of it for a runtime that moves and configures
/// the container's interface itself (Docker): the bridge, the veth pair, the address. The veth
/// exists before etcd names the endpoint, so an agent that sees the endpoint can attach to its
/// port at once. Anything that fails is undone.
pub async fn endpoint_make(ctx: &Ctx, req: &Attach, netns: Option<&str>) -> Result<Made> {
    schema::check_name("endpoint", &req.name)?;
    let net = ctx.store.network(&req.network).await?;
    let host = Netlink::new()?;
    let (port, peer) = (
        port_name(&req.network, &req.name),
        ifnames::peer_name(&req.network, &req.name),
    );
    if host.index(&port).await?.is_some() {
        bail!(
            "interface {port} for endpoint {} already exists; remove the endpoint first",
            req.name
        );
    }
    let mtu = match req.mtu {
        Some(mtu) => mtu,
        None => mtu_here(ctx, &net).await?,
    };
    let lock = bridge_lock(&net).await?;
    let mut created = false;
    let made = async {
        let bridge = host.ensure_bridge(&net.bridge(), mtu).await?;
        host.add_veth(&port, &peer, mtu).await?;
        created = true;
        host.set_alias(&port, &port_alias(&req.network, &req.name))
            .await?;
        host.attach_to_bridge(&port, bridge).await
    }
    .await;
    drop(lock);
    if let Err(e) = made {
        // Only what this call made: a pair that already existed is someone else's.
        if created {
            let _ = host.delete(&port).await;
        }
        return Err(e.context(format!("plumbing endpoint {}", req.name)));
    }
    let reserved = reserve(ctx, &net, req.ip, |ip| Endpoint {
        network: req.network.clone(),
        ip,
        name: req.name.clone(),
        mac: Mac::from_ip(ip),
        kind: Kind::Container,
        location: Location::Node {
            node: ctx.node.clone(),
            port: port.clone(),
            iface: None,
        },
        netns: netns.map(str::to_string),
        owner: req.owner.clone(),
        created: 0,
    })
    .await;
    match reserved {
        Ok(endpoint) => Ok(Made {
            ipv6: ipv6_of(&net, endpoint.ip),
            endpoint,
            peer,
            mtu,
            prefix: net.subnet.prefix(),
            gateway: net.gateway(),
        }),
        Err(e) => {
            let _ = host.delete(&port).await;
            Err(e)
        }
    }
}

/// Attaches a container (a network namespace) to a network: `endpoint_make`, then its side of
/// the pair moved in and configured (name, MAC, MTU, address with the subnet's prefix, which
/// brings the on-link route to the whole overlay, and a default route through the network's
/// gateway unless it is internal). Leaves nothing half-made.
pub async fn endpoint_add(ctx: &Ctx, req: &Attach, netns: &str) -> Result<Made> {
    let ns = open_netns(netns)?;
    let made = endpoint_make(ctx, req, Some(netns)).await?;
    let ep = &made.endpoint;
    let configured = async {
        Netlink::new()?.move_to_netns(&made.peer, &ns).await?;
        let inner = Netlink::in_netns(&ns)?;
        inner.up("lo").await?;
        let eth = match &req.ifname {
            Some(name) => name.clone(),
            None => free_eth(&inner).await?,
        };
        inner
            .configure(&made.peer, &eth, ep.mac, made.mtu, ep.ip, made.prefix)
            .await?;
        if let Some((addr, prefix)) = made.ipv6 {
            inner.add_ipv6(&eth, addr, prefix).await?;
        }
        // Everything outside the overlay through this host (see egress.rs); a container that
        // has a default route already (another network's, a runtime's) keeps it.
        match made.gateway {
            Some(gw) if !inner.has_default_route().await? => inner.add_default_route(gw).await,
            _ => Ok(()),
        }
    }
    .await;
    if let Err(e) = configured {
        // The address goes back, the veth (and its peer, wherever it is) goes away.
        let _ = ctx.store.delete_endpoint(ep).await;
        let _ = Netlink::new()?.delete(&port_of(ep)).await;
        return Err(e.context(format!("configuring endpoint {} in {netns}", req.name)));
    }
    Ok(made)
}

fn port_of(ep: &Endpoint) -> String {
    match &ep.location {
        Location::Node { port, .. } => port.clone(),
        Location::Peer { .. } => String::new(),
    }
}

/// Removes an endpoint this node made (container or host address): etcd first, so every node
/// stops sending to it, then the interfaces, then the bridge if it is left empty.
pub async fn endpoint_rm(ctx: &Ctx, name: &str) -> Result<Endpoint> {
    let ep = ctx
        .store
        .endpoint_named(&ctx.node, name)
        .await?
        .ok_or_else(|| anyhow!("no endpoint {name} on node {}", ctx.node))?;
    remove(ctx, &ep.network, Some(&ep), &port_of(&ep)).await?;
    Ok(ep)
}

/// `endpoint_rm` for runtimes that may ask twice or after a half-made attachment (CNI DEL,
/// Docker's DeleteEndpoint): whatever of endpoint `name` of `network` exists is removed, and
/// nothing existing is no error. The endpoint, if etcd had it.
pub async fn endpoint_release(ctx: &Ctx, network: &str, name: &str) -> Result<Option<Endpoint>> {
    let ep = ctx
        .store
        .endpoint_named(&ctx.node, name)
        .await?
        .filter(|ep| ep.network == network);
    let port = match &ep {
        Some(ep) => port_of(ep),
        // A half-made attachment: its port by the derived name, if the port says it is its,
        // or says nothing (its maker was killed between making and naming it) and no endpoint
        // of this node claims it.
        None => {
            let port = port_name(network, name);
            let ours = match Netlink::new()?.alias(&port).await? {
                Some(alias) => alias == port_alias(network, name),
                None => !ctx
                    .store
                    .endpoints(Some(network))
                    .await?
                    .iter()
                    .any(|e| e.node() == Some(ctx.node.as_str()) && port_of(e) == port),
            };
            if ours { port } else { String::new() }
        }
    };
    remove(ctx, network, ep.as_ref(), &port).await?;
    Ok(ep)
}

async fn remove(ctx: &Ctx, network: &str, ep: Option<&Endpoint>, port: &str) -> Result<()> {
    if let Some(ep) = ep {
        // Only the endpoint that was read: if its address has a new owner since, that one
        // stays.
        ctx.store.delete_endpoint_if_unchanged(ep).await?;
    }
    let host = Netlink::new()?;
    if !port.is_empty() {
        host.delete(port).await?;
    }
    if let Ok(net) = ctx.store.network(network).await {
        let _lock = bridge_lock(&net).await?;
        if let Some(bridge) = host.index(&net.bridge()).await?
            && host.bridge_ports(bridge).await? == 0
        {
            host.delete(&net.bridge()).await?;
        }
    }
    Ok(())
}

// ---- the host's own address ----

/// Gives the node an address on the network: a veth pair whose one end holds the address and
/// whose other end is a bridge port like a container's.
pub async fn host_join(ctx: &Ctx, network: &str, ip: Option<Ipv4Addr>) -> Result<Endpoint> {
    let net = ctx.store.network(network).await?;
    let (iface, port) = (ifnames::host_iface(net.vni), ifnames::host_port(net.vni));
    let host = Netlink::new()?;
    if host.index(&iface).await?.is_some() {
        bail!(
            "node {} has already joined network {network} ({iface} exists)",
            ctx.node
        );
    }
    let mtu = mtu_here(ctx, &net).await?;
    let made = async {
        let bridge = host.ensure_bridge(&net.bridge(), mtu).await?;
        host.add_veth(&iface, &port, mtu).await?;
        // As a container's port says whose it is: the agent attaches to no port that does not.
        host.set_alias(&port, &port_alias(network, &host_endpoint_name(network)))
            .await?;
        host.attach_to_bridge(&port, bridge).await
    }
    .await;
    if let Err(e) = made {
        let _ = host.delete(&iface).await;
        return Err(e.context(format!("joining network {network}")));
    }
    let reserved = reserve(ctx, &net, ip, |ip| Endpoint {
        network: network.to_string(),
        ip,
        name: host_endpoint_name(network),
        mac: Mac::from_ip(ip),
        kind: Kind::Host,
        location: Location::Node {
            node: ctx.node.clone(),
            port: port.clone(),
            iface: Some(iface.clone()),
        },
        netns: None,
        owner: None,
        created: 0,
    })
    .await;
    let ep = match reserved {
        Ok(ep) => ep,
        Err(e) => {
            let _ = host.delete(&iface).await;
            return Err(e);
        }
    };
    let configured = async {
        host.configure(&iface, &iface, ep.mac, mtu, ep.ip, net.subnet.prefix())
            .await?;
        match ipv6_of(&net, ep.ip) {
            Some((addr, prefix)) => host.add_ipv6(&iface, addr, prefix).await,
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = configured {
        let _ = ctx.store.delete_endpoint(&ep).await;
        let _ = host.delete(&iface).await;
        return Err(e.context(format!("joining network {network}")));
    }
    Ok(ep)
}

pub async fn host_leave(ctx: &Ctx, network: &str) -> Result<Endpoint> {
    endpoint_rm(ctx, &host_endpoint_name(network)).await
}

// ---- peers ----

pub async fn peer_add(
    ctx: &Ctx,
    network: &str,
    ip: Ipv4Addr,
    mac: Mac,
    vtep: IpAddr,
) -> Result<Endpoint> {
    let ep = Endpoint {
        network: network.to_string(),
        ip,
        name: String::new(),
        mac,
        kind: Kind::Peer,
        location: Location::Peer { vtep },
        netns: None,
        owner: None,
        created: 0,
    };
    // The MAC and the VTEP as a stored record's are checked (a VTEP must be one host's unicast
    // address), before anything else.
    ep.record().validate(network, &ip.to_string())?;
    let net = ctx.store.network(network).await?;
    for (node, record) in ctx.store.nodes().await? {
        // A cluster's underlay is of one family (agent.rs refuses a node of the other).
        if node == ctx.node && record.vtep.is_ipv6() != vtep.is_ipv6() {
            bail!(
                "VTEP {vtep} is not of this cluster's underlay family (node {} has VTEP {})",
                ctx.node,
                record.vtep
            );
        }
        // A peer is a host that is not ours: every node would send it what is meant for one
        // of its containers, and take its traffic for the peer's.
        if record.vtep == vtep {
            bail!("VTEP {vtep} is node {node}'s: a peer is a host that is not one of our nodes");
        }
    }
    reserve(ctx, &net, Some(ip), |_| ep.clone()).await
}

pub async fn peer_rm(ctx: &Ctx, network: &str, ip: Ipv4Addr) -> Result<Endpoint> {
    let ep = ctx
        .store
        .endpoint(network, ip)
        .await?
        .ok_or_else(|| anyhow!("network {network} has no endpoint {ip}"))?;
    if ep.kind != Kind::Peer {
        bail!(
            "{ip} in network {network} is not a peer but {}",
            describe(&ep)
        );
    }
    ctx.store.delete_endpoint(&ep).await?;
    Ok(ep)
}

// ---- teardown ----

/// What `teardown` removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub endpoints: usize,
    pub interfaces: Vec<String>,
    pub etcd: Option<String>,
}

/// Removes everything the agent and its commands made on this node: its endpoints and
/// registration in etcd (when reachable), its interfaces, its pinned programs, links and maps,
/// and its status file. Refuses while the node's agent runs: it would put it all back.
pub async fn teardown(
    node: &str,
    pins: &PinDir,
    run_dir: &std::path::Path,
    store: Result<Store>,
) -> Result<Teardown> {
    let status_file = crate::status::status_path(run_dir, node);
    if let Ok(agent) = crate::status::running(run_dir, node) {
        bail!(
            "the agent of node {node} is running (pid {}); stop it first",
            agent.pid
        );
    }
    let mut done = Teardown::default();
    match store {
        Ok(store) => {
            let mine: Vec<Endpoint> = store
                .endpoints(None)
                .await?
                .into_iter()
                .filter(|e| e.node() == Some(node))
                .collect();
            for ep in &mine {
                store.delete_endpoint(ep).await?;
            }
            done.endpoints = mine.len();
            store.delete_node(node).await?;
        }
        Err(e) => done.etcd = Some(format!("{e:#}")),
    }
    let host = Netlink::new()?;
    for name in host.names().await? {
        if ifnames::is_our_interface(&name) && host.delete(&name).await? {
            done.interfaces.push(name);
        }
    }
    // The routes to containers went with the bridges; the NAT table is left to remove.
    crate::egress::remove_table()?;
    pins.remove()?;
    let _ = std::fs::remove_file(&status_file);
    Ok(done)
}

// ---- waiting for the agent ----

/// Waits until this node's agent has `ep` in its maps and, for an endpoint of this node, its
/// port's from_container attached (present), or `ep` out of its maps (absent). The agent
/// attaches a port only after writing its entries, and until then the endpoint's own ARP
/// requests go unanswered: "served" must mean both. False if it did not happen in time, or
/// no agent ever ran here.
pub async fn wait_served(ctx: &Ctx, ep: &Endpoint, present: bool) -> Result<bool> {
    let net = ctx
        .store
        .network(&ep.network)
        .await
        .context("reading the network back")?;
    let key = MacKey::new(net.vni, ep.mac.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(maps) = Maps::open(&ctx.pins) else {
            return Ok(false);
        };
        let here = match &ep.location {
            Location::Peer { .. } => maps.fdb.get(&key, 0).is_ok(),
            // PORTS by the port's ifindex now: a port made again under the same name (a
            // container restarted: DEL, then ADD) is served only once the agent saw the new one.
            Location::Node { port, .. } => {
                maps.endpoints.get(&key, 0).is_ok()
                    && (!present
                        || (ctx.pins.link(port).exists()
                            && crate::netlink::ifindex(port)
                                .is_some_and(|i| maps.ports.get(&i, 0).is_ok())))
            }
        };
        if here == present {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
