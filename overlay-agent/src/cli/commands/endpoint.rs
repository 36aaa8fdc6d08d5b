//! A container's attachment, made and removed (the CLI's `endpoint`, the CNI plugin and the
//! Docker driver are adapters onto it): the bridge, the veth pair, the address claimed, the
//! interface configured in the namespace; anything that fails undone.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, anyhow, bail};

use super::Ctx;
use super::claim::{reserve, undone, unregister};
use crate::cli::resolv_conf;
use crate::{
    netlink::{Netlink, Netns},
    shared::{
        ifnames::{self, port_alias, port_name},
        net::Mac,
    },
    store::schema::{self, Endpoint, Kind, Location, Network},
};

/// An endpoint's IPv6 address with its prefix length, on a dual-stack network.
pub(super) fn ipv6_of(net: &Network, ip: Ipv4Addr) -> Option<(Ipv6Addr, u8)> {
    Some((net.ipv6_of(ip)?, net.subnet6?.prefix()))
}

/// The MTU for a network's interfaces on this node.
pub(super) async fn mtu_here(ctx: &Ctx, net: &Network) -> Result<u32> {
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
/// Docker driver. Each is an adapter onto the functions below. Its endpoint name was checked
/// when it was made ([`Attach::new`]), so nothing below checks it again.
#[derive(Clone, Debug)]
pub struct Attach {
    name: String,
    network: String,
    /// The address (default: the next free one in this node's slice).
    pub ip: Option<Ipv4Addr>,
    /// The interface's name in the container (CNI_IFNAME); default the first free `ethN`.
    pub ifname: Option<String>,
    /// The interface's MTU, instead of the network's.
    pub mtu: Option<u32>,
    /// Who asks, when not the CLI (see `EndpointRecord::owner`).
    pub owner: Option<String>,
    /// The services of the network it is a backend of (each must exist).
    pub services: Vec<String>,
}

impl Attach {
    /// Endpoint `name` on `network` at `ip`; refuses a name no record may carry.
    pub fn new(name: String, network: String, ip: Option<Ipv4Addr>) -> Result<Self> {
        schema::check_name("endpoint", &name)?;
        Ok(Self {
            name,
            network,
            ip,
            ifname: None,
            mtu: None,
            owner: None,
            services: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn network(&self) -> &str {
        &self.network
    }
}

/// Serializes, per network and host, what makes or removes ports and the bridge: without it a
/// removal that finds the bridge empty could delete it while an attachment is putting its port
/// on it. CLI, CNI plugin and Docker driver are separate processes: a file lock.
async fn bridge_lock(net: &Network) -> Result<std::fs::File> {
    crate::shared::lock::exclusive(&net.bridge()).await
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
    /// A dual-stack network's IPv6 gateway (None: internal or IPv4 only), for the container's
    /// IPv6 default route.
    pub gateway6: Option<Ipv6Addr>,
    /// The network's resolver on this host (docs/names.md), for the container's resolv.conf.
    pub resolver: Option<Ipv4Addr>,
    /// On a dual-stack network, the endpoint's IPv6 address and the prefix's length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

/// One attempt at a time at each endpoint of this node (named by its port,
/// [`ifnames::endpoint_lock`]), across the CLI, the CNI plugin and the Docker driver: what an
/// earlier attempt left behind is judged and removed with nobody making it meanwhile. Taken
/// before the bridge lock, never after it.
pub(super) async fn endpoint_lock(port: &str) -> Result<std::fs::File> {
    crate::shared::lock::exclusive(&ifnames::endpoint_lock(port)).await
}

/// Makes way for a new attempt at endpoint `name` of `network` (its port `port`) by removing
/// what an earlier one left: a record of this node by that name whose port is gone (an
/// attempt that failed while etcd did not answer, and whose undo could not reach etcd either;
/// or a container that died without a DEL), and a port that no record names (an attempt
/// killed midway). Both are this node's, under this name, so asking for it again is asking
/// for them to be replaced. A record whose port exists is a live endpoint: refused.
async fn clear_leftovers(
    ctx: &Ctx,
    host: &Netlink,
    network: &str,
    name: &str,
    port: &str,
) -> Result<()> {
    if let Some(ep) = ctx.store.endpoint_named(&ctx.node, name).await? {
        if host.index(&port_of(&ep)).await?.is_some() {
            bail!(
                "endpoint {name} already exists on node {} ({} on network {}); remove it first",
                ctx.node,
                ep.ip,
                ep.network
            );
        }
        log::info!(
            "endpoint {name}: replacing the record ({} on network {}) an earlier attempt left without its interface",
            ep.ip,
            ep.network
        );
        ctx.store.delete_endpoint_if_unchanged(&ep).await?;
    }
    if host.index(port).await?.is_some() {
        if !leftover_port_is_ours(ctx, host, network, name, port).await? {
            bail!("interface {port} exists and is not endpoint {name}'s; remove it by hand");
        }
        log::info!("endpoint {name}: removing interface {port} an earlier attempt left");
        host.delete(port).await?;
    }
    Ok(())
}

/// Whether `port`, found by the name endpoint `name` of `network` derives and named by no
/// record of it, is that endpoint's leftover: its alias says so, or it has none (its maker
/// was killed between making and naming it) and no endpoint of this node claims it.
async fn leftover_port_is_ours(
    ctx: &Ctx,
    host: &Netlink,
    network: &str,
    name: &str,
    port: &str,
) -> Result<bool> {
    Ok(match host.alias(port).await? {
        Some(alias) => alias == port_alias(network, name),
        None => !ctx
            .store
            .endpoints(Some(network))
            .await?
            .iter()
            .any(|e| e.node() == Some(ctx.node.as_str()) && port_of(e) == port),
    })
}

/// The first half of an attachment, the whole of it for a runtime that moves and configures
/// the container's interface itself (Docker): the bridge, the veth pair, the address. The veth
/// exists before etcd names the endpoint, so an agent that sees the endpoint can attach to its
/// port at once. Anything that fails is undone, and what an earlier failed attempt left is
/// replaced.
pub async fn endpoint_make(ctx: &Ctx, req: &Attach, netns: Option<&str>) -> Result<Made> {
    let _turn = endpoint_lock(&port_name(&req.network, &req.name)).await?;
    make(ctx, req, netns).await
}

/// The services an attachment names are of its network, and exist: refused before anything
/// is made.
async fn check_services(ctx: &Ctx, req: &Attach) -> Result<()> {
    crate::store::services::check_memberships(req.services.clone())?;
    for name in &req.services {
        if ctx.store.service(&req.network, name).await?.is_none() {
            bail!(
                "network {} has no service {name} (overlay-agent service ls)",
                req.network
            );
        }
    }
    Ok(())
}

/// [`endpoint_make`], its caller holding the endpoint's lock.
async fn make(ctx: &Ctx, req: &Attach, netns: Option<&str>) -> Result<Made> {
    let net = ctx.store.network(&req.network).await?;
    check_services(ctx, req).await?;
    let host = Netlink::new()?;
    let (port, peer) = (
        port_name(&req.network, &req.name),
        ifnames::peer_name(&req.network, &req.name),
    );
    clear_leftovers(ctx, &host, &req.network, &req.name, &port).await?;
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
        let _ = drop_bridge_if_empty(&host, &net).await;
        return Err(e.context(format!("plumbing endpoint {}", req.name)));
    }
    let mut tried = None;
    let reserved = reserve(
        ctx,
        &net,
        req.ip,
        |ip| Endpoint {
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
            services: req.services.clone(),
            created: 0,
        },
        &mut tried,
    )
    .await;
    match reserved {
        Ok(endpoint) => Ok(Made {
            ipv6: ipv6_of(&net, endpoint.ip),
            endpoint,
            peer,
            mtu,
            prefix: net.subnet.prefix(),
            gateway: net.gateway(),
            gateway6: net.gateway6(),
            resolver: net.resolver(),
        }),
        Err(e) => {
            // The interface first: that needs no etcd, and etcd may be what failed.
            let _ = host.delete(&port).await;
            let _ = drop_bridge_if_empty(&host, &net).await;
            let left = match &tried {
                Some(ep) => unregister(ctx, ep).await.map(|why| (why, ep)),
                None => None,
            };
            Err(undone(e, &req.name, left))
        }
    }
}

/// Attaches a container (a network namespace) to a network: `endpoint_make`, then its side of
/// the pair moved in and configured (name, MAC, MTU, address with the subnet's prefix, which
/// brings the on-link route to the whole overlay, and a default route through the network's
/// gateway unless it is internal). Leaves nothing half-made.
pub async fn endpoint_add(ctx: &Ctx, req: &Attach, ns: &Netns) -> Result<Made> {
    let _turn = endpoint_lock(&port_name(&req.network, &req.name)).await?;
    let made = make(ctx, req, Some(ns.name())).await?;
    let ep = &made.endpoint;
    let configured = async {
        Netlink::new()?.move_to_netns(&made.peer, ns.file()).await?;
        let inner = Netlink::in_netns(ns.file())?;
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
        // Everything outside the overlay through this host (see egress.rs), over IPv4 and on
        // a dual-stack network over IPv6; a container that has a default route of that family
        // already (another network's, a runtime's) keeps it.
        let gateways = [made.gateway.map(IpAddr::V4), made.gateway6.map(IpAddr::V6)];
        for gw in gateways.into_iter().flatten() {
            if !inner.has_default_route(gw.is_ipv6()).await? {
                inner.add_default_route(gw).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = configured {
        // The veth goes away (and its peer, wherever it is), then the address goes back.
        let host = Netlink::new()?;
        let _ = host.delete(&port_of(ep)).await;
        if let Ok(net) = ctx.store.network(&ep.network).await {
            let _ = drop_bridge_if_empty(&host, &net).await;
        }
        let left = unregister(ctx, ep).await.map(|why| (why, ep));
        let e = e.context(format!("configuring it in {}", ns.name()));
        return Err(undone(e, &req.name, left));
    }
    // Names: what `ip netns exec` gives the namespace as /etc/resolv.conf. The attachment
    // works without it, so a failure is said, not undone.
    if let Some(resolver) = made.resolver {
        let entry = resolv_conf::Entry {
            endpoint: req.name.clone(),
            network: req.network.clone(),
            resolver,
        };
        if let Err(e) = resolv_conf::add(ns.name(), entry) {
            log::warn!("endpoint {}: {e:#}", req.name);
        }
    }
    Ok(made)
}

fn port_of(ep: &Endpoint) -> String {
    match &ep.location {
        Location::Node { port, .. } => port.clone(),
        Location::Peer { .. } => String::new(),
    }
}

/// Records the network namespace of this node's endpoint `name` (a runtime that learns it
/// after the endpoint is made: Docker's Join), if its record does not say it already.
pub async fn endpoint_set_netns(ctx: &Ctx, name: &str, netns: &str) -> Result<()> {
    let ep = ctx
        .store
        .endpoint_named(&ctx.node, name)
        .await?
        .ok_or_else(|| anyhow!("no endpoint {name} on node {}", ctx.node))?;
    if ep.netns.as_deref() == Some(netns) {
        return Ok(());
    }
    let with = Endpoint {
        netns: Some(netns.to_string()),
        ..ep.clone()
    };
    if !ctx.store.update_endpoint_if_unchanged(&ep, &with).await? {
        bail!("endpoint {name} changed while its namespace was recorded");
    }
    Ok(())
}

/// Removes an endpoint this node made (container or host address): etcd first, so every node
/// stops sending to it, then the interfaces, then the bridge if it is left empty. An endpoint
/// etcd no longer has whose port is still here (a removal whose etcd write was applied but
/// never answered) has its port removed: Ok(None).
pub async fn endpoint_rm(ctx: &Ctx, name: &str) -> Result<Option<Endpoint>> {
    if let Some(ep) = ctx.store.endpoint_named(&ctx.node, name).await? {
        let port = port_of(&ep);
        let _turn = endpoint_lock(&port).await?;
        remove(ctx, &ep.network, Some(&ep), &port).await?;
        return Ok(Some(ep));
    }
    let leftover = Netlink::new()?
        .links_by_name()
        .await?
        .into_iter()
        .find_map(|(port, link)| {
            let (network, of) = ifnames::endpoint_of_alias(link.alias.as_deref()?)?;
            (of == name && ifnames::is_port(&port)).then(|| (network.to_string(), port))
        });
    let Some((network, port)) = leftover else {
        bail!("no endpoint {name} on node {}", ctx.node);
    };
    let _turn = endpoint_lock(&port).await?;
    remove(ctx, &network, None, &port).await?;
    Ok(None)
}

/// `endpoint_rm` for runtimes that may ask twice or after a half-made attachment (CNI DEL,
/// Docker's DeleteEndpoint): whatever of endpoint `name` of `network` exists is removed, and
/// nothing existing is no error. When etcd does not answer, the interface goes all the same
/// (the container is going away) and the error says the record remains: the runtime's retry
/// removes it. The endpoint, if etcd had it.
pub async fn endpoint_release(ctx: &Ctx, network: &str, name: &str) -> Result<Option<Endpoint>> {
    let derived = port_name(network, name);
    let _turn = endpoint_lock(&derived).await?;
    let found = ctx.store.endpoint_named(&ctx.node, name).await;
    let ep = match found {
        Ok(ep) => ep.filter(|ep| ep.network == network),
        Err(e) => return Err(release_without_etcd(network, name, e).await),
    };
    let host = Netlink::new()?;
    let port = match &ep {
        Some(ep) => port_of(ep),
        // A half-made attachment: its port by the derived name, if it is its.
        None if leftover_port_is_ours(ctx, &host, network, name, &derived).await? => derived,
        None => String::new(),
    };
    if let Err(e) = remove(ctx, network, ep.as_ref(), &port).await {
        if !port.is_empty() {
            let _ = host.delete(&port).await;
        }
        return Err(e.context(format!(
            "endpoint {name}: its interface is removed, its etcd record is not yet"
        )));
    }
    Ok(ep)
}

/// [`endpoint_release`] when etcd cannot even be connected to (`e` says why): the local half.
/// The error to report, saying what remains.
pub async fn endpoint_release_local(network: &str, name: &str, e: anyhow::Error) -> anyhow::Error {
    match endpoint_lock(&port_name(network, name)).await {
        Ok(_turn) => release_without_etcd(network, name, e).await,
        Err(lock) => e.context(format!("endpoint {name}: {lock:#}")),
    }
}

/// The local half of [`endpoint_release`] when etcd cannot be reached: the port goes if its
/// alias says it is endpoint `name`'s (without etcd, an alias-less port cannot be told from
/// another endpoint's). The error to report, saying what remains.
async fn release_without_etcd(network: &str, name: &str, e: anyhow::Error) -> anyhow::Error {
    let port = port_name(network, name);
    let removed = async {
        let host = Netlink::new()?;
        if host.alias(&port).await? == Some(port_alias(network, name)) {
            host.delete(&port).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    match removed {
        Ok(()) => e.context(format!(
            "endpoint {name}: its interface is removed, its etcd record is not yet (ask again)"
        )),
        Err(local) => e.context(format!("endpoint {name}: {local:#}")),
    }
}

async fn remove(ctx: &Ctx, network: &str, ep: Option<&Endpoint>, port: &str) -> Result<()> {
    if let Some(ep) = ep {
        // Only the endpoint that was read: if its address has a new owner since, that one
        // stays.
        ctx.store.delete_endpoint_if_unchanged(ep).await?;
        if let Some(ns) = &ep.netns
            && let Err(e) = resolv_conf::remove(ns, &ep.name)
        {
            log::warn!("endpoint {}: {e:#}", ep.name);
        }
    }
    let host = Netlink::new()?;
    if !port.is_empty() {
        host.delete(port).await?;
    }
    if let Ok(net) = ctx.store.network(network).await {
        drop_bridge_if_empty(&host, &net).await?;
    }
    Ok(())
}

/// Deletes the network's bridge if no port is left on it.
pub(super) async fn drop_bridge_if_empty(host: &Netlink, net: &Network) -> Result<()> {
    let _lock = bridge_lock(net).await?;
    if let Some(bridge) = host.index(&net.bridge()).await?
        && host.bridge_ports(bridge).await? == 0
    {
        host.delete(&net.bridge()).await?;
    }
    Ok(())
}
