//! The user-facing commands that change the cluster: networks, endpoints, peers, the host's own
//! address. Each checks its input before it writes anything, writes etcd through the store's
//! transactions, and does the node-local plumbing over netlink; the running agent picks the
//! change up from etcd and programs the maps.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use super::resolv_conf;
use crate::{
    dataplane::{Maps, PinDir},
    netlink::{Netlink, Netns},
    shared::{
        ifnames::{self, host_endpoint_name, port_alias, port_name},
        ipam::{Cidr, Subnet6},
        net::Mac,
    },
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
    pub subnet6: Option<Subnet6>,
    pub bum_rate: Option<u32>,
    pub internal: bool,
}

impl NetworkSpec {
    /// Checks everything that can be checked without etcd.
    pub fn validate(self) -> Result<Network> {
        schema::NetworkRecord {
            vni: self.vni,
            subnet: self.subnet,
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

/// What `network create` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// The network existed already with exactly these settings: an earlier attempt whose
    /// answer was lost (etcd did not answer in time, yet applied the write), or a script run
    /// twice. Nothing to do, so a re-run just works.
    Existed,
}

pub async fn network_create(store: &Store, net: &Network) -> Result<Created> {
    let Err(e) = store.create_network(net).await else {
        return Ok(Created::New);
    };
    match store.network(&net.name).await {
        Ok(there) if schema::encode(&there.record()) == schema::encode(&net.record()) => {
            Ok(Created::Existed)
        }
        _ => Err(e),
    }
}

pub async fn network_rm(store: &Store, name: &str) -> Result<()> {
    store.delete_network(name).await
}

// ---- endpoints ----

/// Reserves an address for the endpoint `make` builds: `requested` if free, else the first
/// free one in this node's slice (claimed on first use). `tried` is the last registration
/// sent: when this fails, that one may have been applied all the same (its answer lost), and
/// is what the caller's undo removes.
async fn reserve(
    ctx: &Ctx,
    net: &Network,
    requested: Option<Ipv4Addr>,
    make: impl Fn(Ipv4Addr) -> Endpoint,
    tried: &mut Option<Endpoint>,
) -> Result<Endpoint> {
    if let Some(ip) = requested {
        ensure!(
            net.subnet.contains(ip) && ip != net.subnet.network() && ip != net.subnet.broadcast(),
            "{ip} is not a host address of network {}'s subnet {}",
            net.name,
            net.subnet
        );
        ensure!(
            Some(ip) != net.resolver(),
            "{ip} is network {}'s {}",
            net.name,
            if net.internal { "resolver" } else { "gateway" }
        );
        let ep = make(ip);
        if register(ctx, &ep, tried).await? {
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
    // The gateway's, and on an internal network the resolver's (the same address).
    let reserved = net.resolver();
    for ip in slice
        .hosts()
        .filter(|ip| !taken.contains(ip) && Some(*ip) != reserved)
    {
        // Lost a race for this address: try the next.
        if register(ctx, &make(ip), tried).await? {
            return Ok(make(ip));
        }
    }
    bail!(
        "node {}'s slice {slice} of network {} has no free address",
        ctx.node,
        net.name
    )
}

/// Registers `ep`; Ok(false) if its address is someone else's. An address that holds exactly
/// this record already is ours: an earlier attempt's registration that etcd applied but never
/// answered (a peer added again, a retry).
async fn register(ctx: &Ctx, ep: &Endpoint, tried: &mut Option<Endpoint>) -> Result<bool> {
    *tried = Some(ep.clone());
    if ctx.store.create_endpoint(ep).await? {
        return Ok(true);
    }
    Ok(written(&ctx.store, ep).await?.is_some())
}

/// The endpoint etcd holds at `ep`'s address if it is exactly `ep` (this node's, this name,
/// this port: what this process wrote), with its create revision.
async fn written(store: &Store, ep: &Endpoint) -> Result<Option<Endpoint>> {
    let there = store.endpoint(&ep.network, ep.ip).await?;
    Ok(there.filter(|t| {
        Endpoint {
            created: 0,
            ..t.clone()
        } == *ep
    }))
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

/// How long an undo waits for etcd. It runs because something failed, often etcd itself: a
/// hung member must not double the time a failing command takes.
const UNDO_TIMEOUT: Duration = Duration::from_secs(2);

/// One attempt at a time at each endpoint of this node (named by its port,
/// [`ifnames::endpoint_lock`]), across the CLI, the CNI plugin and the Docker driver: what an
/// earlier attempt left behind is judged and removed with nobody making it meanwhile. Taken
/// before the bridge lock, never after it.
async fn endpoint_lock(port: &str) -> Result<std::fs::File> {
    crate::shared::lock::exclusive(&ifnames::endpoint_lock(port)).await
}

/// The undo of a registration: removes `ep`'s record if etcd holds exactly what was written,
/// never an address or name someone took since. An unknown outcome (no answer) may have been
/// applied, so this runs even then. None when done (or nothing was there); Some(why) when etcd
/// could not be asked: the record may remain (see [`MayRemain`]).
async fn unregister(ctx: &Ctx, ep: &Endpoint) -> Option<String> {
    match tokio::time::timeout(UNDO_TIMEOUT, unwrite(&ctx.store, ep)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!(
            "etcd did not answer within {} s",
            UNDO_TIMEOUT.as_secs()
        )),
    }
}

/// Removes `ep`'s record if etcd holds exactly it: read, then delete what was read (its create
/// revision), so an address that changed hands in between is left to its new owner. Ok(true):
/// removed; Ok(false): not there.
async fn unwrite(store: &Store, ep: &Endpoint) -> Result<bool> {
    match written(store, ep).await? {
        Some(there) => store.delete_endpoint_if_unchanged(&there).await,
        None => Ok(false),
    }
}

/// A failed attempt's error, saying what the undo left (one line, the cause last). `left`:
/// why the undo could not confirm the registration `tried` gone, if it could not.
fn undone(e: anyhow::Error, name: &str, left: Option<(String, &Endpoint)>) -> anyhow::Error {
    match left {
        None => e.context(format!("endpoint {name} not added, nothing left behind")),
        Some((why, tried)) => {
            log::debug!("undoing endpoint {name}'s registration: {why}");
            e.context(MayRemain(tried.clone()))
        }
    }
}

/// In a failed attachment's error: its registration may have been applied all the same (etcd
/// received it, then did not answer) and the undo could not reach etcd to remove it. A command
/// run again under the same name replaces it ([`clear_leftovers`]), a runtime's DEL removes
/// it; a caller that outlives the attempt and will not use the name again (the Docker driver:
/// a new EndpointID each time) finishes the undo with [`unregister_eventually`].
#[derive(Debug)]
pub struct MayRemain(pub Endpoint);

impl std::fmt::Display for MayRemain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "endpoint {} not added, its interface removed (its etcd record, if written, goes when it is added again)",
            self.0.name
        )
    }
}

/// How long [`unregister_eventually`] looks again after finding nothing, for a write etcd
/// received before it hung: that one is applied as soon as etcd resumes, which may be just
/// after a first look.
const SETTLE: Duration = Duration::from_secs(10);
/// When [`unregister_eventually`] gives up (etcd gone that long is an outage to repair).
const GIVE_UP: Duration = Duration::from_secs(600);

/// Finishes an undo that could not reach etcd ([`MayRemain`]): asks again with backoff until
/// etcd answers, then removes the record if it is exactly `ep`.
pub async fn unregister_eventually(store: Store, ep: Endpoint) {
    let started = tokio::time::Instant::now();
    let mut absent_since = None;
    let mut delay = Duration::from_millis(500);
    loop {
        match tokio::time::timeout(UNDO_TIMEOUT, unwrite(&store, &ep)).await {
            Ok(Ok(true)) => {
                log::info!(
                    "endpoint {}: its registration ({} on network {}), applied after its attempt failed, removed",
                    ep.name,
                    ep.ip,
                    ep.network
                );
                return;
            }
            Ok(Ok(false)) => {
                if absent_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed()
                    >= SETTLE
                {
                    return;
                }
            }
            Ok(Err(_)) | Err(_) => absent_since = None,
        }
        if started.elapsed() > GIVE_UP {
            log::warn!(
                "endpoint {}: etcd did not answer for {} s; its registration ({} on network {}) may remain: `overlay-agent endpoint rm {}` removes it",
                ep.name,
                GIVE_UP.as_secs(),
                ep.ip,
                ep.network,
                ep.name
            );
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
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
async fn drop_bridge_if_empty(host: &Netlink, net: &Network) -> Result<()> {
    let _lock = bridge_lock(net).await?;
    if let Some(bridge) = host.index(&net.bridge()).await?
        && host.bridge_ports(bridge).await? == 0
    {
        host.delete(&net.bridge()).await?;
    }
    Ok(())
}

// ---- the host's own address ----

/// Gives the node an address on the network: a veth pair whose one end holds the address and
/// whose other end is a bridge port like a container's. As with a container's, anything that
/// fails is undone, and what an earlier failed join left is replaced.
pub async fn host_join(ctx: &Ctx, network: &str, ip: Option<Ipv4Addr>) -> Result<Endpoint> {
    let net = ctx.store.network(network).await?;
    let (iface, port) = (ifnames::host_iface(net.vni), ifnames::host_port(net.vni));
    let name = host_endpoint_name(network);
    let _turn = endpoint_lock(&port).await?;
    let host = Netlink::new()?;
    let joined = host.index(&iface).await?.is_some();
    match ctx.store.endpoint_named(&ctx.node, &name).await? {
        Some(_) if joined => bail!(
            "node {} has already joined network {network} ({iface} exists)",
            ctx.node
        ),
        // Its interface gone: what a join that failed while etcd did not answer left.
        Some(stale) => {
            ctx.store.delete_endpoint_if_unchanged(&stale).await?;
        }
        // An interface no record names: a join killed midway.
        None if joined => {
            host.delete(&iface).await?;
        }
        None => {}
    }
    let mtu = mtu_here(ctx, &net).await?;
    let made = async {
        let bridge = host.ensure_bridge(&net.bridge(), mtu).await?;
        host.add_veth(&iface, &port, mtu).await?;
        // As a container's port says whose it is: the agent attaches to no port that does not.
        host.set_alias(&port, &port_alias(network, &name)).await?;
        host.attach_to_bridge(&port, bridge).await
    }
    .await;
    if let Err(e) = made {
        let _ = host.delete(&iface).await;
        let _ = drop_bridge_if_empty(&host, &net).await;
        return Err(e.context(format!("joining network {network}")));
    }
    let mut tried = None;
    let reserved = reserve(
        ctx,
        &net,
        ip,
        |ip| Endpoint {
            network: network.to_string(),
            ip,
            name: name.clone(),
            mac: Mac::from_ip(ip),
            kind: Kind::Host,
            location: Location::Node {
                node: ctx.node.clone(),
                port: port.clone(),
                iface: Some(iface.clone()),
            },
            netns: None,
            owner: None,
            services: Vec::new(),
            created: 0,
        },
        &mut tried,
    )
    .await;
    let configured = match reserved {
        Ok(ep) => async {
            host.configure(&iface, &iface, ep.mac, mtu, ep.ip, net.subnet.prefix())
                .await?;
            if let Some((addr, prefix)) = ipv6_of(&net, ep.ip) {
                host.add_ipv6(&iface, addr, prefix).await?;
            }
            Ok(ep)
        }
        .await
        .map_err(|e: anyhow::Error| e.context(format!("configuring {iface}"))),
        Err(e) => Err(e),
    };
    match configured {
        Ok(ep) => Ok(ep),
        Err(e) => {
            let _ = host.delete(&iface).await;
            let _ = drop_bridge_if_empty(&host, &net).await;
            let left = match &tried {
                Some(ep) => unregister(ctx, ep).await.map(|why| (why, ep)),
                None => None,
            };
            Err(undone(e, &name, left).context(format!("joining network {network}")))
        }
    }
}

pub async fn host_leave(ctx: &Ctx, network: &str) -> Result<Option<Endpoint>> {
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
        services: Vec::new(),
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
    // Nothing local to undo. A registration etcd applied but never answered is recognised
    // as this peer's when it is added again (`register`): the re-run just works.
    reserve(ctx, &net, Some(ip), |_| ep.clone(), &mut None).await
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
                if let Some(ns) = &ep.netns
                    && let Err(e) = resolv_conf::remove(ns, &ep.name)
                {
                    log::warn!("endpoint {}: {e:#}", ep.name);
                }
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
    crate::syncs::egress::remove_table()?;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(maps) = Maps::open(&ctx.pins) else {
            return Ok(false);
        };
        let here = match &ep.location {
            Location::Peer { .. } => maps.fdb_entry(net.vni, ep.mac.0).is_some(),
            // PORTS by the port's ifindex now: a port made again under the same name (a
            // container restarted: DEL, then ADD) is served only once the agent saw the new one.
            Location::Node { port, .. } => {
                maps.endpoint(net.vni, ep.mac.0).is_some()
                    && (!present
                        || (ctx.pins.link(port).exists()
                            && crate::netlink::ifindex(port)
                                .is_some_and(|i| maps.port(i).is_some())))
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
