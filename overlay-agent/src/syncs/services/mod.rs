//! Service load balancing on this node: SERVICES and BACKENDS from etcd's services and the
//! endpoints that name them, MEMBERS from this node's own endpoints' namespaces, and the
//! socket programs attached at the cgroup v2 root once the cluster has a service.
//!
//! A backend leaves with its endpoint record (or its node's lease, which takes it out of the
//! maps): the watch delivers that in milliseconds and this sync runs right after, so a backend
//! gone from etcd gets no new connection within well under a second. Connections made before
//! stay where they are: the programs rewrote their address once, at connect().
//!
//! A backend port is written with `BACKEND_HEALTHY` unless its own node's agent says it does
//! not answer (`health/<node>`, probed by syncs/health.rs): the programs pass over it.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
};

use anyhow::{Context as _, Result, bail};
use overlay_common::{
    BACKEND_HEALTHY, Backend, BackendKey, MAX_BACKENDS, MAX_NETNS_NETWORKS, MAX_SERVICES, Members,
    Published, PublishedKey, Service as ServiceEntry, ServiceKey,
};

use tokio::sync::watch;

use super::{Kernel, NodeSync, View, backend_health::Target};
use crate::{
    model::cluster::ClusterState,
    netlink::{Netlink, netns_cookie, netns_path},
    shared::net::Mac,
    store::{
        schema::{Endpoint, Kind},
        services::Proto,
    },
};

/// What the service maps must hold, and whose namespaces are members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub services: BTreeMap<ServiceKey, ServiceEntry>,
    pub backends: BTreeMap<BackendKey, Backend>,
    /// This node's endpoints whose sockets are balanced, as their records describe them: each
    /// is checked against its namespace before it becomes a member.
    pub members: BTreeSet<Member>,
    /// This node's backends among the members, with their network and their services' TCP
    /// ports: what the health checks probe (once the member's namespace passed its check).
    pub probes: Probes,
    /// Published ports (nodeport.rs): (protocol, port) -> the service port they reach.
    pub published: BTreeMap<PublishedKey, Published>,
}

/// This node's backends among the members: their network and their services' TCP ports.
pub type Probes = BTreeMap<Member, (String, BTreeSet<u16>)>;

/// A local endpoint whose namespace's sockets the programs balance (to its network's services).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// The namespace as the record names it (`ip netns` name or a path).
    pub netns: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A service port's id: its slots in BACKENDS and its turn in LB_TURN. A hash of what names
/// it, so adding or removing another service never moves it (and never shows a connection
/// another service's slot in between); never 0.
pub fn service_id(network: &str, name: &str, port: u16, proto: u8) -> u32 {
    let h = crate::shared::hash::Fnv64::default()
        .write(network.as_bytes())
        .write(b"/")
        .write(name.as_bytes())
        .write(&port.to_le_bytes())
        .write(&[proto])
        .finish();
    ((h >> 32) as u32 ^ h as u32).max(1)
}

/// A service port the maps serve: which service it is, its key and id. Which ports those
/// are depends on the services and networks alone, never on a backend.
struct Port<'a> {
    network: &'a str,
    name: &'a str,
    key: ServiceKey,
    id: u32,
    port: u16,
    tcp: bool,
}

/// The service ports served, in the order [`wanted`] takes them (by service, then port), and
/// the published ports. A service whose network is unknown or whose VIP is not a host
/// address of it is left out (its record was logged with its key when it arrived); past
/// MAX_SERVICES ports, or a second port of one id, too.
fn layout(cluster: &ClusterState) -> (Vec<Port<'_>>, BTreeMap<PublishedKey, Published>) {
    let mut ports = Vec::new();
    let mut published = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for ((network, name), svc) in &cluster.services {
        let Some(net) = cluster.networks.get(network) else {
            continue;
        };
        if svc.check_in(net).is_err() {
            continue;
        }
        for port in &svc.ports {
            if keys.len() >= MAX_SERVICES as usize {
                break;
            }
            let proto = port.proto.number();
            let id = service_id(network, name, port.port, proto);
            // Two ports of 2^32 ids the same: the later (by name) is left out.
            if !ids.insert(id) {
                continue;
            }
            let key = ServiceKey::new(net.vni, svc.vip.octets(), port.port, proto);
            // Every node serves a service's published ports; two services publishing one
            // (which `service create` refuses) leave it to the first by name.
            for p in svc.publish.iter().filter(|p| p.target == port.port) {
                if p.proto.number() == proto {
                    published
                        .entry(PublishedKey::new(p.published, proto))
                        .or_insert(key);
                }
            }
            keys.insert(key);
            ports.push(Port {
                network,
                name,
                key,
                id,
                port: port.port,
                tcp: port.proto == Proto::Tcp,
            });
        }
    }
    (ports, published)
}

/// The backends of one service, by address: those the maps serve (a backend whose node's
/// lease is gone, or that lost a conflict, would take connections to nowhere), at most
/// MAX_BACKENDS.
fn backends<'a>(view: &View<'a>, network: &'a str, name: &str) -> Vec<&'a Endpoint> {
    let cluster = view.cluster;
    let Some(vni) = cluster.networks.get(network).map(|n| n.vni) else {
        return Vec::new();
    };
    let mut backends: Vec<&Endpoint> = cluster
        .backends_of(network, name)
        .filter(|ep| view.applied.arp.get(&(vni, ep.ip.octets())) == Some(&ep.mac.0))
        .collect();
    backends.sort_by_key(|ep| ep.ip);
    backends.truncate(MAX_BACKENDS as usize);
    backends
}

/// The backends of the service whose ports are being walked: `layout` puts a service's ports
/// side by side, so they are gathered once for all of them.
#[derive(Default)]
struct Current<'a> {
    of: Option<(&'a str, &'a str, Vec<&'a Endpoint>)>,
}

impl<'a> Current<'a> {
    fn backends(&mut self, view: &View<'a>, port: &Port<'a>) -> &[&'a Endpoint] {
        if self
            .of
            .as_ref()
            .is_none_or(|(n, s, _)| (*n, *s) != (port.network, port.name))
        {
            self.of = Some((
                port.network,
                port.name,
                backends(view, port.network, port.name),
            ));
        }
        self.of.as_ref().map_or(&[][..], |(_, _, b)| b.as_slice())
    }
}

/// One port's BACKENDS slots, in order.
fn slots<'e>(
    cluster: &'e ClusterState,
    port: &'e Port<'_>,
    backends: &'e [&Endpoint],
) -> impl Iterator<Item = (BackendKey, Backend)> + 'e {
    backends.iter().enumerate().map(move |(slot, ep)| {
        // A backend whose own node finds this port not answering keeps its slot (so no
        // other slot moves) without the flag: the programs pass over it.
        let flags = if cluster.answers(ep, port.port, port.tcp) {
            BACKEND_HEALTHY
        } else {
            0
        };
        (
            BackendKey {
                service: port.id,
                slot: slot as u32,
            },
            Backend::new(ep.ip.octets(), port.port, flags),
        )
    })
}

/// Pure: from the cluster and what the maps serve, everything rebuilt (O(backends)).
pub fn wanted(view: &View<'_>) -> Want {
    let cluster = view.cluster;
    let (ports, published) = layout(cluster);
    let mut want = Want {
        published,
        ..Want::default()
    };
    let mut current = Current::default();
    for port in &ports {
        let eps = current.backends(view, port);
        want.services.insert(
            port.key,
            ServiceEntry {
                id: port.id,
                count: eps.len() as u32,
            },
        );
        want.backends.extend(slots(cluster, port, eps));
    }
    (want.members, want.probes) = local(view, &want.services);
    want
}

/// The writes and removals that bring SERVICES and BACKENDS from one [`Want`] to another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub services: Vec<(ServiceKey, Option<ServiceEntry>)>,
    pub backends: Vec<(BackendKey, Option<Backend>)>,
}

impl Edit {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.backends.is_empty()
    }

    /// Makes `want`'s SERVICES and BACKENDS what the edit leads to.
    pub fn apply_to(&self, want: &mut Want) {
        for (key, entry) in &self.services {
            match entry {
                Some(e) => want.services.insert(*key, *e),
                None => want.services.remove(key),
            };
        }
        for (key, backend) in &self.backends {
            match backend {
                Some(b) => want.backends.insert(*key, *b),
                None => want.backends.remove(key),
            };
        }
    }
}

/// Pure: the edit that brings `old` (what [`wanted`] gave before the changes) to what it
/// gives now, redoing only the services in `touched`: O(their backends) instead of
/// O(every backend of every service). Right only while the services, networks and health
/// records are those of `old` (the ports served, their keys and ids, depend on nothing else)
/// and the maps served changed for touched endpoints alone (the fast path's batches); the
/// caller rebuilds with [`wanted`] otherwise.
pub fn edited(old: &Want, view: &View<'_>, touched: &BTreeSet<(String, String)>) -> Edit {
    let mut edit = Edit::default();
    if touched.is_empty() {
        return edit;
    }
    let cluster = view.cluster;
    let (ports, _) = layout(cluster);
    // A key two services share (one VIP twice, which `service create` refuses) counts the
    // backends of the last to write it, as in `wanted`.
    let last: BTreeMap<ServiceKey, usize> =
        ports.iter().enumerate().map(|(i, p)| (p.key, i)).collect();
    let mut current = Current::default();
    for (i, port) in ports.iter().enumerate() {
        if !touched.contains(&(port.network.to_string(), port.name.to_string())) {
            continue;
        }
        let eps = current.backends(view, port);
        if last.get(&port.key) == Some(&i) {
            let entry = ServiceEntry {
                id: port.id,
                count: eps.len() as u32,
            };
            if old.services.get(&port.key) != Some(&entry) {
                edit.services.push((port.key, Some(entry)));
            }
        }
        for (key, backend) in slots(cluster, port, eps) {
            if old.backends.get(&key) != Some(&backend) {
                edit.backends.push((key, Some(backend)));
            }
        }
        let beyond = BackendKey {
            service: port.id,
            slot: eps.len() as u32,
        };
        let end = BackendKey {
            service: port.id,
            slot: u32::MAX,
        };
        for (key, _) in old.backends.range(beyond..=end) {
            edit.backends.push((*key, None));
        }
    }
    edit
}

/// This node's members and the probes of its backends (see [`Want`]): O(endpoints), no
/// backend walked.
fn local(
    view: &View<'_>,
    services: &BTreeMap<ServiceKey, ServiceEntry>,
) -> (BTreeSet<Member>, Probes) {
    let cluster = view.cluster;
    let (mut members, mut probes) = (BTreeSet::new(), BTreeMap::new());
    let vni_of = |network: &str| cluster.networks.get(network).map(|n| n.vni);
    // Only a network with a service needs members: no namespace is looked into otherwise.
    let served: BTreeSet<u32> = services.keys().map(|k| k.vni).collect();
    for ep in cluster.endpoints.values() {
        if ep.kind != Kind::Container || ep.node() != Some(view.node) {
            continue;
        }
        let (Some(netns), Some(vni)) = (&ep.netns, vni_of(&ep.network)) else {
            continue;
        };
        if !served.contains(&vni) {
            continue;
        }
        if !view.applied.endpoints.contains_key(&(vni, ep.mac.0)) {
            continue;
        }
        let member = Member {
            netns: netns.clone(),
            vni,
            ip: ep.ip,
            mac: ep.mac,
        };
        let ports: BTreeSet<u16> = ep
            .services
            .iter()
            .filter_map(|name| cluster.services.get(&(ep.network.clone(), name.clone())))
            .flat_map(|svc| &svc.ports)
            .filter(|p| p.proto == Proto::Tcp)
            .map(|p| p.port)
            .collect();
        if !ports.is_empty() {
            probes.insert(member.clone(), (ep.network.clone(), ports));
        }
        members.insert(member);
    }
    (members, probes)
}

/// A namespace as last checked: which file it was (device, inode: a path can be bound to
/// another namespace since) and its cookie, or why it is not one of ours.
#[derive(Clone, Debug)]
struct Checked {
    file: (u64, u64),
    cookie: Result<u64, String>,
}

/// The services sync: what it learnt of each member's namespace, where the health checks
/// learn what to probe, and what it wrote to SERVICES, BACKENDS and PUBLISHED.
#[derive(Default)]
pub struct Services {
    checked: BTreeMap<Member, Checked>,
    probes: Option<watch::Sender<Vec<Target>>>,
    /// SERVICES, BACKENDS and PUBLISHED as written by the last run that succeeded, with the
    /// members and probes it wanted; None: to be made whole from the maps as they are.
    written: Option<Want>,
}

/// What a run does: rebuild and compare with the maps, or write an edit.
pub enum Plan {
    Whole(Want),
    Edit {
        edit: Edit,
        members: BTreeSet<Member>,
        probes: Probes,
    },
}

impl NodeSync for Services {
    type Want = Plan;

    /// After a batch the fast path applied, only the services its endpoints name are redone
    /// (150,000 backends rebuilt and compared with the maps after every batch and every
    /// second cost 140-170 ms); anything else, or nothing written yet, rebuilds.
    fn want(&self, view: &View<'_>) -> Plan {
        match &self.written {
            // This node's members and probes stay as they were: a batch that touched one of
            // its own endpoints is not the fast path's (everything changed then).
            Some(old) if !view.changes.everything && !view.changes.services => Plan::Edit {
                edit: edited(old, view, &view.changes.touched),
                members: old.members.clone(),
                probes: old.probes.clone(),
            },
            _ => Plan::Whole(wanted(view)),
        }
    }

    async fn apply(&mut self, plan: Plan, kernel: &mut Kernel<'_>) {
        let served = match &plan {
            Plan::Whole(want) => !want.services.is_empty(),
            Plan::Edit { .. } => self
                .written
                .as_ref()
                .is_some_and(|w| !w.services.is_empty()),
        };
        if served && let Err(e) = kernel.dataplane.attach_sock_lb() {
            log::warn!("socket load balancing: {e:#}; will retry");
        }
        let (members, probes) = match plan {
            Plan::Whole(want) => {
                let Want {
                    services,
                    backends,
                    members,
                    probes,
                    published,
                } = want;
                let written = Want {
                    services,
                    backends,
                    published,
                    members: members.clone(),
                    probes: probes.clone(),
                };
                let mut ok = true;
                match kernel
                    .maps
                    .sync_services(&written.services, &written.backends)
                {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "services: {} service port(s), {} backend slot(s) ({n} change(s))",
                        written.services.len(),
                        written.backends.len()
                    ),
                    Err(e) => {
                        ok = false;
                        log::warn!("{e:#}; will retry")
                    }
                }
                match kernel.maps.sync_published(&written.published) {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "services: {} published port(s) ({n} change(s))",
                        written.published.len()
                    ),
                    Err(e) => {
                        ok = false;
                        log::warn!("{e:#}; will retry")
                    }
                }
                self.written = ok.then_some(written);
                (members, probes)
            }
            Plan::Edit {
                edit,
                members,
                probes,
            } => {
                if let Some(written) = &mut self.written
                    && !edit.is_empty()
                {
                    match kernel.maps.edit_services(&edit.services, &edit.backends) {
                        Ok(()) => {
                            edit.apply_to(written);
                            log::debug!(
                                "services: {} service port(s), {} backend slot(s) written or removed",
                                edit.services.len(),
                                edit.backends.len()
                            );
                        }
                        Err(e) => {
                            // Made whole from the maps as they are at the next run.
                            log::warn!("{e:#}; will retry");
                            self.written = None;
                        }
                    }
                }
                (members, probes)
            }
        };
        let members_now = self.members(&members).await;
        self.send_probes(&probes);
        match kernel.maps.sync_members(&members_now) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "services: {} member namespace(s) ({n} change(s))",
                members_now.len()
            ),
            Err(e) => log::warn!("{e:#}; will retry"),
        }
    }
}

impl Services {
    /// The sync, handing the health checker (syncs/backend_health.rs) what to probe.
    pub fn new(probes: watch::Sender<Vec<Target>>) -> Self {
        Self {
            checked: BTreeMap::new(),
            probes: Some(probes),
            written: None,
        }
    }

    /// The local backends whose namespace passed its check, to the health checker.
    fn send_probes(&self, probes: &Probes) {
        let Some(tx) = &self.probes else { return };
        let targets: Vec<Target> = probes
            .iter()
            .filter_map(|(m, (network, ports))| {
                let checked = self.checked.get(m).filter(|c| c.cookie.is_ok())?;
                Some(Target {
                    network: network.clone(),
                    ip: m.ip,
                    netns: m.netns.clone(),
                    file: checked.file,
                    ports: ports.clone(),
                })
            })
            .collect();
        tx.send_if_modified(|now| {
            let changed = *now != targets;
            *now = targets;
            changed
        });
    }

    /// MEMBERS as it must be: each member's namespace checked (once per namespace file) to
    /// hold the endpoint's interface, with its MAC and address, before its cookie is trusted.
    async fn members(&mut self, members: &BTreeSet<Member>) -> BTreeMap<u64, Members> {
        self.checked.retain(|m, _| members.contains(m));
        let mut out: BTreeMap<u64, Members> = BTreeMap::new();
        for m in members {
            let path = netns_path(&m.netns);
            let Ok(meta) = std::fs::metadata(&path) else {
                // Gone with its container: its record follows.
                continue;
            };
            let file = (meta.dev(), meta.ino());
            let known = self.checked.get(m).filter(|c| c.file == file);
            // A success holds for the namespace's life; a refusal is asked again at the next
            // sync: the record is written before its interface is moved in and configured
            // (endpoint add), so a first look may come too early.
            if known.is_none_or(|c| c.cookie.is_err()) {
                let cookie = check(m).await.map_err(|e| format!("{e:#}"));
                if let Err(why) = &cookie
                    && known.and_then(|c| c.cookie.as_ref().err()) != Some(why)
                {
                    log::info!(
                        "services: endpoint {} (vni {}): namespace {} not (yet) a member: {why}",
                        m.ip,
                        m.vni,
                        m.netns
                    );
                }
                self.checked.insert(m.clone(), Checked { file, cookie });
            }
            let Some(Ok(cookie)) = self.checked.get(m).map(|c| c.cookie.clone()) else {
                continue;
            };
            let entry = out.entry(cookie).or_default();
            let n = entry.count as usize;
            if n < MAX_NETNS_NETWORKS && !entry.vnis[..n].contains(&m.vni) {
                entry.vnis[n] = m.vni;
                entry.count += 1;
            }
        }
        out
    }
}

/// The cookie of member `m`'s namespace, if that namespace holds an interface with `m`'s MAC
/// and address: a record names any path it likes, and only its own endpoint's namespace may
/// be balanced.
async fn check(m: &Member) -> Result<u64> {
    let ns = crate::netlink::open_netns(&m.netns)?;
    let inner = Netlink::in_netns(&ns)?;
    let Some(iface) = inner.name_with_mac(m.mac).await? else {
        bail!("it has no interface with MAC {}", m.mac);
    };
    let addrs = inner.ipv4_all(&iface).await?;
    if !addrs.contains(&m.ip) {
        bail!("its {iface} (MAC {}) does not hold {}", m.mac, m.ip);
    }
    netns_cookie(&ns).context("reading its cookie")
}

#[cfg(test)]
mod tests;
