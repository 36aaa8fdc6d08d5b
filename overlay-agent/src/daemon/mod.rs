//! `overlay-agent run`: keeps one node's maps equal to what etcd says.
//!
//! The dataplane comes first and never waits for etcd: programs load (adopting pinned maps),
//! attach, and forward with whatever the maps hold. Then, per etcd session: register the node
//! under a lease, list everything with its revision, reconcile, and watch from the next
//! revision. A watch that fails or falls silent moves to another etcd member from the last
//! revision applied, and the lease keepalive moves likewise: one member dying, hanging or
//! losing the quorum costs no relist and no new lease. A compacted revision or a history gone
//! back (a cluster restored from a snapshot) relists and reconciles, which adds what is
//! missing and deletes what is stale; an expired lease ends the session.
//!
//! Here: the options, the agent's state and `run` (startup, adoption of pinned maps, the
//! signal loop). session.rs holds the etcd session, lease.rs the keepalive, reconcile.rs the
//! maps and the call to the node's syncs (syncs/), ports.rs the ports' attachments,
//! publish.rs what the node writes to etcd and to its status file, metrics/ `--metrics`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use overlay_common::{NodeConfig, vtep};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use self::metrics::Metrics;
use crate::{
    dataplane::{Dataplane, Maps, PinDir, maps, pins::LAYOUT_VERSION},
    model::names::Zone,
    netlink::{Netlink, ipv6_forwarding},
    shared::ifnames,
    status::{StatusFile, netns_id},
    store::schema::{self, Endpoint, NodeStateRecord},
    syncs::{Syncs, dns},
};

pub mod core;
pub mod lease;
pub mod metrics;
mod ports;
mod publish;
mod reconcile;
mod session;

use self::core::ControlPlane;
use lease::KeepAlive;

/// This node's VTEP is of the other family than the cluster's: fatal, not retried.
#[derive(Debug)]
struct OtherFamily(String);

impl std::fmt::Display for OtherFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtherFamily {}

pub struct Options {
    pub etcd: crate::store::Etcd,
    pub node: String,
    pub underlay: String,
    /// This node's VTEP, IPv4 or IPv6 (then the underlay is IPv6); default: the underlay's first
    /// IPv4 address.
    pub vtep: Option<IpAddr>,
    pub lease_ttl: i64,
    /// Capacity of each per-endpoint map.
    pub max_entries: u32,
    pub pins: PinDir,
    pub run_dir: PathBuf,
    /// Serve /metrics, /healthz and /readyz here (see metrics/).
    pub metrics: Option<std::net::SocketAddr>,
    /// The node's resolvers, for names outside the overlay (syncs/dns/upstream.rs).
    pub resolv_conf: PathBuf,
}

struct Agent {
    opts: Options,
    netlink: Netlink,
    dataplane: Dataplane,
    maps: Maps,
    vtep: IpAddr,
    underlay_mtu: Option<u32>,
    /// The agent's copy of etcd, what the maps hold, and the reconciles (core.rs).
    core: ControlPlane,
    /// Ports this process attached from_container to, by name and the ifindex it had then (a
    /// port deleted and made again under the same name needs attaching again).
    attached: BTreeSet<(String, u32)>,
    /// This node's containers whose port vanished after it was attached, and since when: the
    /// container's namespace died without a DEL (`ctr task kill`, a crashed runtime). Removed
    /// from etcd after VANISHED_GRACE (ports.rs), so their addresses do not leak.
    vanished: BTreeMap<String, (Endpoint, Instant)>,
    /// The agent found bpffs empty: see `stranded_before`.
    fresh: bool,
    /// Set once, at the first listing of an agent that found bpffs empty: this node's
    /// container endpoints created up to that revision whose ports are missing were stranded
    /// by a reboot (their namespaces, ports and pins all gone): they are reaped like vanished
    /// ones. Endpoints written later are judged as usual.
    stranded_before: Option<i64>,
    /// The map digest last published under this session's lease (`~state/<node>`).
    published: Option<NodeStateRecord>,
    /// The multicast groups last published under this session's lease (`groups/<node>`).
    published_groups: Option<schema::GroupsRecord>,
    /// The local backends' health as the checker last found it (syncs/backend_health.rs),
    /// and as last published under this session's lease (`health/<node>`).
    health: watch::Receiver<Option<schema::HealthRecord>>,
    published_health: Option<schema::HealthRecord>,
    /// The last reconcile could not list the node's interfaces: the next tick tries again.
    links_unread: bool,
    status: StatusFile,
    /// Rebuilding maps of another layout: attachments move over after the first full fill.
    switch_over_pending: bool,
    /// The node's syncs (GRO, flooding, tunnel guard, egress, MTU), and what they made.
    syncs: Syncs,
    /// What the metrics server reads: the published status, reconcile durations, the lease.
    metrics: Metrics,
    /// The names the networks' resolvers answer, swapped after every change applied
    /// (publish.rs): their listeners read the latest at each query.
    names: watch::Sender<Arc<Zone>>,
}

pub async fn run(opts: Options) -> Result<()> {
    // Bound before anything else: a taken or foreign address stops the agent untouched.
    let metrics_listener = match opts.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let netlink = Netlink::new()?;
    let underlay = &opts.underlay;
    // Link pins are named after interfaces, and only ports of our shapes get from_container:
    // an underlay of one of those shapes could be mistaken for a port and lose its program.
    if ifnames::is_our_interface(underlay) {
        bail!(
            "underlay {underlay} has the name of an interface the overlay makes; the underlay must be another interface"
        );
    }
    let underlay_ifindex = netlink.index(underlay).await?.ok_or_else(|| {
        anyhow!("underlay interface {underlay} does not exist in this network namespace")
    })?;
    let vtep = match opts.vtep {
        Some(v) => v,
        None => IpAddr::V4(netlink.ipv4(underlay).await?.ok_or_else(|| {
            anyhow!("underlay interface {underlay} has no IPv4 address; give --vtep (IPv4 or IPv6)")
        })?),
    };
    schema::check_vtep(vtep)?;
    if vtep.is_ipv6() {
        ipv6_forwarding(underlay)?;
    }
    let underlay_mtu = netlink.mtu(underlay).await?;

    // Maps of another layout: build ours from etcd first, and only then move the attachments
    // over, so the programs attached now keep forwarding with the old maps meanwhile.
    if let Some(pinned) = maps::pinned_max_entries(&opts.pins)
        && pinned != opts.max_entries
    {
        // Another size is another shape: set the maps aside like another layout's.
        let aside = opts
            .pins
            .dir()
            .join(format!("maps-v{LAYOUT_VERSION}-size{pinned}"));
        log::warn!(
            "pinned maps hold {pinned} entries each, --max-entries asks for {}: rebuilding them",
            opts.max_entries
        );
        std::fs::rename(opts.pins.maps(), &aside)
            .with_context(|| format!("setting {} aside", opts.pins.maps().display()))?;
    }
    let old_layouts = opts.pins.other_layouts();
    let rebuilding = !opts.pins.maps().exists() && !old_layouts.is_empty();
    // No maps of any layout: bpffs is empty, as after a reboot (or a teardown). Whatever this
    // node's containers were attached to is gone with it.
    let fresh = !opts.pins.maps().exists() && old_layouts.is_empty();
    let mut dataplane = Dataplane::load_sized(opts.pins.clone(), opts.max_entries)?;
    if rebuilding {
        log::warn!(
            "maps pinned at {} are of another layout than this agent's (v{LAYOUT_VERSION}): rebuilding them from etcd; the programs attached now keep forwarding with the old maps until the new ones are full",
            old_layouts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        dataplane.attach_underlay(underlay)?;
        opts.pins.remove_other_layouts()?;
    }
    let mut maps = dataplane.maps()?;
    maps.set_config(NodeConfig {
        vtep: vtep::from_ip(vtep),
        underlay_ifindex,
        ipv6: vtep.is_ipv6().into(),
    })?;
    let applied = maps.snapshot()?;
    log::info!(
        "node {}: from_underlay attached to {underlay} (VTEP {vtep}); {} local endpoints and {} remote MACs adopted from {}",
        opts.node,
        applied.endpoints.len(),
        applied.fdb.len(),
        opts.pins.dir().display()
    );
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("creating {}", opts.run_dir.display()))?;
    let status = StatusFile {
        node: opts.node.clone(),
        pid: std::process::id(),
        etcd: opts.etcd.endpoints.join(","),
        prefix: opts.etcd.prefix.clone(),
        access: Some(opts.etcd.clone()),
        pins: opts.pins.dir().to_path_buf(),
        netns: netns_id(),
        underlay: underlay.clone(),
        vtep: vtep.to_string(),
        ..Default::default()
    };
    let metrics = Metrics::new();
    let (names, zone) = watch::channel(Arc::new(Zone::default()));
    let resolver = dns::Resolver::new(zone, metrics.dns(), opts.resolv_conf.clone());
    // Each member on its own, from a task of its own: a hung member delays no session.
    let (probes, targets) = watch::channel(Vec::new());
    let health = crate::syncs::backend_health::spawn(targets)?;
    let probed = metrics.clone();
    crate::store::health::spawn_prober(opts.etcd.clone(), move |probe| probed.etcd_probed(probe));
    if let Some(listener) = metrics_listener {
        metrics::spawn(
            listener,
            metrics.clone(),
            opts.pins.clone(),
            opts.underlay.clone(),
        );
    }
    let core = ControlPlane::new(&opts.node, applied);
    let mut agent = Agent {
        opts,
        netlink,
        dataplane,
        maps,
        vtep,
        underlay_mtu,
        core,
        attached: BTreeSet::new(),
        vanished: BTreeMap::new(),
        fresh,
        stranded_before: None,
        published: None,
        published_groups: None,
        health,
        published_health: None,
        links_unread: false,
        status,
        switch_over_pending: rebuilding,
        syncs: Syncs::new(underlay_mtu, resolver, probes),
        metrics,
        names,
    };
    agent.write_status();

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut backoff = crate::shared::backoff::Sessions::default();
    loop {
        let began = Instant::now();
        tokio::select! {
            r = agent.session() => {
                match r {
                    Err(e) if e.is::<OtherFamily>() => return Err(e),
                    Err(e) => log::warn!("{e:#}; reconnecting"),
                    Ok(()) => {}
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        agent.status.connected = false;
        agent.write_status();
        // Jittered (after an outage every agent's session ends at once), and longer while
        // sessions keep failing fast (an overloaded etcd is not asked again at once).
        tokio::time::sleep(backoff.next(began.elapsed(), &agent.opts.node)).await;
    }
    // The lease is left to expire rather than revoked: a restart within the TTL keeps every
    // other node forwarding to us without a gap.
    agent.status.connected = false;
    agent.write_status();
    log::info!("stopping; the pinned programs and maps keep forwarding");
    Ok(())
}
