//! Typed access to a node's pinned maps. Opening them from their pins (rather than through the
//! loader) serves the running agent and the CLI alike, in another process or after a restart.
use anyhow::{Context as _, Result, anyhow};
use std::collections::BTreeMap;

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use overlay_common::{
    ArpEntry, Backend, BackendKey, Counter, Endpoint, FdbEntry, Flood, GroupKey, GroupVteps, IpKey,
    MacKey, MapKind, MapSpec, Members, Network, NodeConfig, Published, PublishedKey, Service,
    ServiceKey, VtepAddr, VtepKey, names, vtep::to_ip,
};

use super::{
    PinDir,
    state::{Diff, MapState, TableDiff},
};
use crate::shared::net::{Mac, ip};

/// A node's pinned maps, opened. Only typed methods reach them from outside dataplane/: the
/// aya handles stay here ([`Tables`] is for the privileged tests' fixtures alone).
pub struct Maps {
    tables: Tables,
}

/// The aya handle of every map [`Maps`] opens.
#[doc(hidden)]
pub struct Tables {
    pub fdb: HashMap<MapData, MacKey, FdbEntry>,
    pub arp: HashMap<MapData, IpKey, ArpEntry>,
    pub endpoints: HashMap<MapData, MacKey, Endpoint>,
    pub ports: HashMap<MapData, u32, Endpoint>,
    pub vteps: HashMap<MapData, VtepKey, u32>,
    pub networks: HashMap<MapData, u32, Network>,
    pub vxlan_ports: Array<MapData, u32>,
    pub config: Array<MapData, NodeConfig>,
    pub stats: PerCpuArray<MapData, u64>,
    pub flood: HashMap<MapData, u32, Flood>,
    pub groups: HashMap<MapData, GroupKey, u64>,
    pub group_count: HashMap<MapData, u32, u32>,
    pub cluster_ports: HashMap<MapData, u32, u32>,
    pub mcast: HashMap<MapData, IpKey, GroupVteps>,
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: HashMap<MapData, BackendKey, Backend>,
    pub members: HashMap<MapData, u64, Members>,
    pub published: HashMap<MapData, PublishedKey, Published>,
}

/// Opens one pinned map, with an error that names it and says where it was looked for.
pub(super) fn open<T>(pins: &PinDir, name: &str) -> Result<T>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::fmt::Display,
{
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        anyhow!(
            "map {name} at {}: {e} (is an agent running for this node, or was it torn down?)",
            path.display()
        )
    })?;
    let kind = MapSpec::of(name)
        .ok_or_else(|| anyhow!("map {name} is not one of overlay_common::MAPS"))?
        .kind;
    let map = match kind {
        MapKind::Hash => Map::HashMap(data),
        MapKind::LruHash => Map::LruHashMap(data),
        MapKind::Array => Map::Array(data),
        MapKind::PerCpuArray => Map::PerCpuArray(data),
        MapKind::RingBuf => Map::RingBuf(data),
        MapKind::ProgArray => Map::ProgramArray(data),
        MapKind::SkStorage => Map::SkStorage(data),
    };
    T::try_from(map).map_err(|e| anyhow!("map {name} at {}: {e}", path.display()))
}

impl Maps {
    pub fn open(pins: &PinDir) -> Result<Self> {
        let tables = Tables {
            fdb: open(pins, names::FDB)?,
            arp: open(pins, names::ARP)?,
            endpoints: open(pins, names::ENDPOINTS)?,
            ports: open(pins, names::PORTS)?,
            vteps: open(pins, names::VTEPS)?,
            networks: open(pins, names::NETWORKS)?,
            vxlan_ports: open(pins, names::VXLAN_PORTS)?,
            config: open(pins, names::CONFIG)?,
            stats: open(pins, names::STATS)?,
            flood: open(pins, names::FLOOD)?,
            groups: open(pins, names::GROUPS)?,
            group_count: open(pins, names::GROUP_COUNT)?,
            cluster_ports: open(pins, names::CLUSTER_PORTS)?,
            mcast: open(pins, names::MCAST)?,
            services: open(pins, names::SERVICES)?,
            backends: open(pins, names::BACKENDS)?,
            members: open(pins, names::MEMBERS)?,
            published: open(pins, names::PUBLISHED)?,
        };
        Ok(Self { tables })
    }

    /// The aya handles themselves, for tests that write what no agent would (a storm limit, a
    /// membership). Nothing in the agent uses this: the typed methods are its way in.
    #[doc(hidden)]
    pub fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    pub fn set_config(&mut self, config: NodeConfig) -> Result<()> {
        self.tables
            .config
            .set(0, config, 0)
            .context("writing CONFIG")
    }

    pub fn config(&self) -> Result<NodeConfig> {
        self.tables.config.get(&0, 0).context("reading CONFIG")
    }

    /// Serves `vni` on UDP `network.port`. Derived from NETWORKS and kept equal to it here:
    /// VXLAN_PORTS, and the port carried in the VNI's FDB and VTEPS values.
    pub fn set_network(&mut self, vni: u32, network: Network) -> Result<()> {
        let old = self.tables.networks.get(&vni, 0).ok();
        self.tables
            .networks
            .insert(vni, network, 0)
            .with_context(|| format!("NETWORKS: inserting VNI {vni}"))?;
        for port in old.iter().chain([&network]).map(|n| n.port) {
            self.recount_vxlan_port(port)?;
        }
        if old.map(|n| n.port) != Some(network.port) {
            self.set_port_of(vni, network.port)?;
        }
        Ok(())
    }

    pub fn remove_network(&mut self, vni: u32) -> Result<()> {
        let old = self.tables.networks.get(&vni, 0).ok();
        remove(&mut self.tables.networks, &vni, names::NETWORKS)?;
        match old {
            Some(network) => {
                self.recount_vxlan_port(network.port)?;
                self.set_port_of(vni, 0)
            }
            None => Ok(()),
        }
    }

    /// The UDP port of `vni` (0 when not served) as the per-packet values carry it.
    fn port_of(&self, vni: u32) -> u16 {
        self.tables.networks.get(&vni, 0).map_or(0, |n| n.port)
    }

    /// Rewrites the port in every FDB and VTEPS value of `vni`.
    fn set_port_of(&mut self, vni: u32, port: u16) -> Result<()> {
        let fdb: Vec<(MacKey, FdbEntry)> = self
            .tables
            .fdb
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(k, _)| k.vni == vni)
            .collect();
        for (k, v) in fdb {
            self.tables
                .fdb
                .insert(k, FdbEntry::new(v.vtep, port), 0)
                .context("FDB: insert")?;
        }
        let vteps: Vec<VtepKey> = self
            .tables
            .vteps
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.vni == vni)
            .collect();
        for k in vteps {
            self.tables
                .vteps
                .insert(k, u32::from(port), 0)
                .context("VTEPS: insert")?;
        }
        Ok(())
    }

    /// VXLAN_PORTS[port] = how many networks use `port`.
    fn recount_vxlan_port(&mut self, port: u16) -> Result<()> {
        let mut users = 0u32;
        for entry in self.tables.networks.iter() {
            let (_, network) = entry.context("reading NETWORKS")?;
            users += u32::from(network.port == port);
        }
        self.tables
            .vxlan_ports
            .set(u32::from(port), users, 0)
            .with_context(|| format!("VXLAN_PORTS: setting port {port}"))
    }

    /// A container on this host: where frames for its MAC go, and what it may send as.
    pub fn set_local_endpoint(&mut self, ep: Endpoint) -> Result<()> {
        self.tables
            .endpoints
            .insert(MacKey::new(ep.vni, ep.mac), ep, 0)
            .context("ENDPOINTS: insert")?;
        self.tables
            .ports
            .insert(ep.ifindex, ep, 0)
            .context("PORTS: insert")?;
        self.set_arp(ep.vni, ep.ip, ep.mac)
    }

    pub fn remove_local_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        remove(
            &mut self.tables.endpoints,
            &MacKey::new(ep.vni, ep.mac),
            names::ENDPOINTS,
        )?;
        remove(&mut self.tables.ports, &ep.ifindex, names::PORTS)?;
        self.remove_arp(ep.vni, ep.ip)
    }

    /// A MAC on another host, behind `vtep`.
    pub fn set_fdb(&mut self, vni: u32, mac: [u8; 6], vtep: VtepAddr) -> Result<()> {
        self.tables
            .fdb
            .insert(
                MacKey::new(vni, mac),
                FdbEntry::new(vtep, self.port_of(vni)),
                0,
            )
            .context("FDB: insert")
    }

    pub fn remove_fdb(&mut self, vni: u32, mac: [u8; 6]) -> Result<()> {
        remove(&mut self.tables.fdb, &MacKey::new(vni, mac), names::FDB)
    }

    pub fn set_arp(&mut self, vni: u32, ip: [u8; 4], mac: [u8; 6]) -> Result<()> {
        self.tables
            .arp
            .insert(IpKey { vni, ip }, ArpEntry::new(mac), 0)
            .context("ARP: insert")
    }

    pub fn remove_arp(&mut self, vni: u32, ip: [u8; 4]) -> Result<()> {
        remove(&mut self.tables.arp, &IpKey { vni, ip }, names::ARP)
    }

    /// Accept VXLAN for `vni` from `vtep` (on the VNI's port).
    pub fn set_vtep(&mut self, vni: u32, vtep: VtepAddr) -> Result<()> {
        let port = u32::from(self.port_of(vni));
        self.tables
            .vteps
            .insert(VtepKey { vni, ip: vtep }, port, 0)
            .context("VTEPS: insert")
    }

    pub fn remove_vtep(&mut self, vni: u32, vtep: VtepAddr) -> Result<()> {
        remove(
            &mut self.tables.vteps,
            &VtepKey { vni, ip: vtep },
            names::VTEPS,
        )
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = self
                    .tables
                    .stats
                    .get(&(c as u32), 0)
                    .with_context(|| format!("STATS: reading {}", c.name()))?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }

    pub fn counter(&self, counter: Counter) -> Result<u64> {
        Ok(self
            .counters()?
            .into_iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, n)| n))
    }
}

/// Lookups: whether the agent has served something yet, and what a port is for.
impl Maps {
    /// The FDB entry of remote MAC `mac` in `vni`.
    pub fn fdb_entry(&self, vni: u32, mac: [u8; 6]) -> Option<FdbEntry> {
        self.tables.fdb.get(&MacKey::new(vni, mac), 0).ok()
    }

    /// The local endpoint with MAC `mac` in `vni`.
    pub fn endpoint(&self, vni: u32, mac: [u8; 6]) -> Option<Endpoint> {
        self.tables.endpoints.get(&MacKey::new(vni, mac), 0).ok()
    }

    /// The local endpoint whose host-side port has `ifindex`.
    pub fn port(&self, ifindex: u32) -> Option<Endpoint> {
        self.tables.ports.get(&ifindex, 0).ok()
    }
}

/// Listings, for the views (`maps`, `report`): every entry of a map, each read or its error
/// ("reading FDB: ...").
impl Maps {
    pub fn fdb_entries(&self) -> impl Iterator<Item = Result<(MacKey, FdbEntry)>> + '_ {
        entries(&self.tables.fdb, names::FDB)
    }

    pub fn arp_entries(&self) -> impl Iterator<Item = Result<(IpKey, ArpEntry)>> + '_ {
        entries(&self.tables.arp, names::ARP)
    }

    pub fn endpoint_entries(&self) -> impl Iterator<Item = Result<(MacKey, Endpoint)>> + '_ {
        entries(&self.tables.endpoints, names::ENDPOINTS)
    }

    pub fn vtep_entries(&self) -> impl Iterator<Item = Result<(VtepKey, u32)>> + '_ {
        entries(&self.tables.vteps, names::VTEPS)
    }

    pub fn network_entries(&self) -> impl Iterator<Item = Result<(u32, Network)>> + '_ {
        entries(&self.tables.networks, names::NETWORKS)
    }

    pub fn flood_entries(&self) -> impl Iterator<Item = Result<(u32, Flood)>> + '_ {
        entries(&self.tables.flood, names::FLOOD)
    }

    /// This node's multicast memberships (port, group) and when each was last reported.
    pub fn group_entries(&self) -> impl Iterator<Item = Result<(GroupKey, u64)>> + '_ {
        entries(&self.tables.groups, names::GROUPS)
    }

    /// The remote members of each group.
    pub fn mcast_entries(&self) -> impl Iterator<Item = Result<(IpKey, GroupVteps)>> + '_ {
        entries(&self.tables.mcast, names::MCAST)
    }

    /// The service ports this node balances.
    pub fn service_entries(&self) -> impl Iterator<Item = Result<(ServiceKey, Service)>> + '_ {
        entries(&self.tables.services, names::SERVICES)
    }

    /// Their backends, by service id and slot.
    pub fn backend_entries(&self) -> impl Iterator<Item = Result<(BackendKey, Backend)>> + '_ {
        entries(&self.tables.backends, names::BACKENDS)
    }

    /// The published ports of every node, and the service port each reaches.
    pub fn published_entries(
        &self,
    ) -> impl Iterator<Item = Result<(PublishedKey, Published)>> + '_ {
        entries(&self.tables.published, names::PUBLISHED)
    }

    /// The namespaces whose sockets are balanced, by netns cookie.
    pub fn member_entries(&self) -> impl Iterator<Item = Result<(u64, Members)>> + '_ {
        entries(&self.tables.members, names::MEMBERS)
    }
}

/// The node syncs' small tables, rewritten whole from what they want (syncs/).
impl Maps {
    /// Makes FLOOD equal to `wanted`; how many entries it wrote or removed.
    pub fn sync_flood(&mut self, wanted: &BTreeMap<u32, Flood>) -> Result<usize> {
        sync_table(&mut self.tables.flood, wanted, names::FLOOD)
    }

    /// Makes MCAST equal to `wanted`; how many entries it wrote or removed.
    pub fn sync_mcast(&mut self, wanted: &BTreeMap<IpKey, GroupVteps>) -> Result<usize> {
        sync_table(&mut self.tables.mcast, wanted, names::MCAST)
    }

    /// Makes CLUSTER_PORTS equal to `wanted`; how many entries it wrote or removed.
    pub fn sync_cluster_ports(&mut self, wanted: &BTreeMap<u32, u32>) -> Result<usize> {
        sync_table(&mut self.tables.cluster_ports, wanted, names::CLUSTER_PORTS)
    }

    /// Makes SERVICES and BACKENDS equal to `services` and `backends`, in the order that
    /// never shows a connection a slot that is not its service's: new and changed backends
    /// first, then the services (their counts), then the backends no service counts any
    /// more. How many entries it wrote or removed.
    pub fn sync_services(
        &mut self,
        services: &BTreeMap<ServiceKey, Service>,
        backends: &BTreeMap<BackendKey, Backend>,
    ) -> Result<usize> {
        let mut changes = upsert_table(&mut self.tables.backends, backends, names::BACKENDS)?;
        changes += sync_table(&mut self.tables.services, services, names::SERVICES)?;
        changes += prune_table(&mut self.tables.backends, backends, names::BACKENDS)?;
        Ok(changes)
    }

    /// Writes and removes exactly these SERVICES and BACKENDS entries (an edit from
    /// syncs/services/, which knows what the maps hold): slots first, then the counts, then
    /// the slots beyond them, as [`Maps::sync_services`] orders them, so that no count ever
    /// names a slot not written.
    pub fn edit_services(
        &mut self,
        services: &[(ServiceKey, Option<Service>)],
        backends: &[(BackendKey, Option<Backend>)],
    ) -> Result<()> {
        for (key, backend) in backends {
            if let Some(b) = backend {
                write(&mut self.tables.backends, key, b, names::BACKENDS)?;
            }
        }
        for (key, entry) in services {
            match entry {
                Some(e) => write(&mut self.tables.services, key, e, names::SERVICES)?,
                None => remove(&mut self.tables.services, key, names::SERVICES)?,
            }
        }
        for (key, backend) in backends {
            if backend.is_none() {
                remove(&mut self.tables.backends, key, names::BACKENDS)?;
            }
        }
        Ok(())
    }

    /// Makes PUBLISHED equal to `wanted` (published port -> service port); how many entries
    /// it wrote or removed.
    pub fn sync_published(&mut self, wanted: &BTreeMap<PublishedKey, Published>) -> Result<usize> {
        sync_table(&mut self.tables.published, wanted, names::PUBLISHED)
    }

    /// Makes MEMBERS equal to `wanted`; how many entries it wrote or removed.
    pub fn sync_members(&mut self, wanted: &BTreeMap<u64, Members>) -> Result<usize> {
        sync_table(&mut self.tables.members, wanted, names::MEMBERS)
    }

    /// Forgets one membership from GROUPS (an expired one).
    pub fn forget_group(&mut self, key: &GroupKey) -> Result<()> {
        remove(&mut self.tables.groups, key, names::GROUPS)
    }

    /// Makes GROUP_COUNT hold `counts` (port ifindex -> memberships): every count written, a
    /// port with none removed (one that fails to go is left for the next time).
    pub fn set_group_counts(&mut self, counts: &BTreeMap<u32, u32>) -> Result<()> {
        let stale: Vec<u32> = self
            .tables
            .group_count
            .keys()
            .filter_map(|k| k.ok())
            .filter(|port| !counts.contains_key(port))
            .collect();
        for port in stale {
            let _ = self.tables.group_count.remove(&port);
        }
        for (&port, &n) in counts {
            self.tables
                .group_count
                .insert(port, n, 0)
                .with_context(|| format!("GROUP_COUNT: port {port}"))?;
        }
        Ok(())
    }
}

/// Every entry of `map`, each read or its error.
fn entries<'a, K: Pod, V: Pod>(
    map: &'a HashMap<MapData, K, V>,
    name: &'static str,
) -> impl Iterator<Item = Result<(K, V)>> + 'a {
    map.iter()
        .map(move |e| e.with_context(|| format!("reading {name}")))
}

/// Above this many writes in one reconcile, each table logs one summary line (entries at debug).
const LOG_EACH_UP_TO: usize = 64;

impl Maps {
    /// Reads back everything the agent manages.
    pub fn snapshot(&self) -> Result<MapState> {
        let mut s = MapState::default();
        for e in self.tables.networks.iter() {
            let (vni, net) = e.context("reading NETWORKS")?;
            s.networks.insert(vni, net);
        }
        for e in self.tables.fdb.iter() {
            let (k, v) = e.context("reading FDB")?;
            s.fdb.insert((k.vni, k.mac), v.vtep);
        }
        for e in self.tables.arp.iter() {
            let (k, v) = e.context("reading ARP")?;
            s.arp.insert((k.vni, k.ip), v.mac);
        }
        for e in self.tables.vteps.iter() {
            let (k, _) = e.context("reading VTEPS")?;
            s.vteps.insert((k.vni, k.ip));
        }
        for e in self.tables.endpoints.iter() {
            let (k, v) = e.context("reading ENDPOINTS")?;
            s.endpoints.insert((k.vni, k.mac), v);
        }
        for e in self.tables.ports.iter() {
            let (k, v) = e.context("reading PORTS")?;
            s.ports.insert(k, v);
        }
        Ok(s)
    }

    /// Makes the writes of `diff`: every set before any remove, so an entry that moves is never
    /// missing in between. One log line per write (or per table for a large batch). A write
    /// that fails (a full map, above all) does not stop the others: it is counted per table in
    /// the report, for the caller to log and show, and retried on the next reconcile.
    pub fn apply(&mut self, diff: &Diff) -> ApplyReport {
        let each = diff.len() <= LOG_EACH_UP_TO;
        let mut report = ApplyReport::default();
        let mut done = |table: &'static str, sign: char, what: String, r: Result<()>| match r {
            Ok(()) if each => log::info!("{table} {sign} {what}"),
            Ok(()) => log::debug!("{table} {sign} {what}"),
            Err(e) => {
                let f = report.failures.entry(table).or_default();
                f.0 += 1;
                f.1 = format!("{e:#}");
            }
        };
        let ep = |e: &Endpoint| format!("{} {} ifindex {}", ip(e.ip), Mac(e.mac), e.ifindex);
        for &(vni, net) in &diff.networks.set {
            let r = self.set_network(vni, net);
            done(
                names::NETWORKS,
                '+',
                format!("vni {vni} port {}", net.port),
                r,
            );
        }
        for &((vni, ip_), mac) in &diff.arp.set {
            let r = self.set_arp(vni, ip_, mac);
            done(
                names::ARP,
                '+',
                format!("vni {vni} {} -> {}", ip(ip_), Mac(mac)),
                r,
            );
        }
        for &((vni, vtep), ()) in &diff.vteps.set {
            let r = self.set_vtep(vni, vtep);
            done(names::VTEPS, '+', format!("vni {vni} {}", to_ip(vtep)), r);
        }
        for &((vni, mac), vtep) in &diff.fdb.set {
            let r = self.set_fdb(vni, mac, vtep);
            done(
                names::FDB,
                '+',
                format!("vni {vni} {} -> {}", Mac(mac), to_ip(vtep)),
                r,
            );
        }
        for ((vni, mac), e) in &diff.endpoints.set {
            let r = self
                .tables
                .endpoints
                .insert(MacKey::new(*vni, *mac), e, 0)
                .context("ENDPOINTS: insert");
            done(names::ENDPOINTS, '+', format!("vni {vni} {}", ep(e)), r);
        }
        for (ifindex, e) in &diff.ports.set {
            let r = self
                .tables
                .ports
                .insert(*ifindex, e, 0)
                .context("PORTS: insert");
            done(
                names::PORTS,
                '+',
                format!("ifindex {ifindex}: {}", ep(e)),
                r,
            );
        }
        for &ifindex in &diff.ports.remove {
            let r = remove(&mut self.tables.ports, &ifindex, names::PORTS);
            done(names::PORTS, '-', format!("ifindex {ifindex}"), r);
        }
        for &(vni, mac) in &diff.endpoints.remove {
            let r = remove(
                &mut self.tables.endpoints,
                &MacKey::new(vni, mac),
                names::ENDPOINTS,
            );
            done(names::ENDPOINTS, '-', format!("vni {vni} {}", Mac(mac)), r);
        }
        for &(vni, mac) in &diff.fdb.remove {
            let r = self.remove_fdb(vni, mac);
            done(names::FDB, '-', format!("vni {vni} {}", Mac(mac)), r);
        }
        for &(vni, vtep) in &diff.vteps.remove {
            let r = self.remove_vtep(vni, vtep);
            done(names::VTEPS, '-', format!("vni {vni} {}", to_ip(vtep)), r);
        }
        for &(vni, ip_) in &diff.arp.remove {
            let r = self.remove_arp(vni, ip_);
            done(names::ARP, '-', format!("vni {vni} {}", ip(ip_)), r);
        }
        for &vni in &diff.networks.remove {
            let r = self.remove_network(vni);
            done(names::NETWORKS, '-', format!("vni {vni}"), r);
        }
        if !each {
            let summary = |name: &str, (n, r): (usize, usize)| {
                if n + r > 0 {
                    log::info!("{name}: {n} set, {r} removed");
                }
            };
            summary(names::NETWORKS, counts(&diff.networks));
            summary(names::FDB, counts(&diff.fdb));
            summary(names::ARP, counts(&diff.arp));
            summary(names::VTEPS, counts(&diff.vteps));
            summary(names::ENDPOINTS, counts(&diff.endpoints));
            summary(names::PORTS, counts(&diff.ports));
        }
        report
    }
}

/// The capacity the node's pinned FDB was created with (every per-endpoint map shares it), if
/// maps of this layout are pinned.
pub fn pinned_max_entries(pins: &PinDir) -> Option<u32> {
    pinned_capacity(pins, names::FDB)
}

/// The capacity pinned map `name` of this layout was created with, if it is pinned.
pub fn pinned_capacity(pins: &PinDir, name: &str) -> Option<u32> {
    MapData::from_pin(pins.map(name))
        .ok()?
        .info()
        .ok()
        .map(|i| i.max_entries())
}

/// Writes that failed in one apply, per map: how many, and the last error.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub failures: std::collections::BTreeMap<&'static str, (u64, String)>,
}

impl ApplyReport {
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }
}

fn counts<K, V>(d: &TableDiff<K, V>) -> (usize, usize) {
    (d.set.len(), d.remove.len())
}

/// Writes one entry, the error naming the map and the key.
fn write<K: aya::Pod + std::fmt::Debug, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    value: &V,
    name: &str,
) -> Result<()> {
    map.insert(key, value, 0)
        .with_context(|| format!("{name}: writing {key:?}"))
}

/// Removing what is already gone is not an error: every map operation is idempotent.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &str,
) -> Result<()> {
    match map.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(anyhow!("{name}: remove: {e}")),
    }
}

/// Makes a hash map equal to `wanted`, writing only what differs; how many entries it wrote
/// or removed. For the small node-local maps rewritten whole on every sync.
fn sync_table<K, V>(
    map: &mut HashMap<MapData, K, V>,
    wanted: &BTreeMap<K, V>,
    name: &str,
) -> Result<usize>
where
    K: Pod + Ord + std::fmt::Debug,
    V: Pod + PartialEq,
{
    Ok(upsert_table(map, wanted, name)? + prune_table(map, wanted, name)?)
}

/// The writes of [`sync_table`]: every entry of `wanted` the map does not hold as it is.
fn upsert_table<K, V>(
    map: &mut HashMap<MapData, K, V>,
    wanted: &BTreeMap<K, V>,
    name: &str,
) -> Result<usize>
where
    K: Pod + Ord + std::fmt::Debug,
    V: Pod + PartialEq,
{
    let current: BTreeMap<K, V> = map
        .iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {name}"))?;
    let mut changes = 0;
    for (key, value) in wanted {
        if current.get(key) != Some(value) {
            write(map, key, value, name)?;
            changes += 1;
        }
    }
    Ok(changes)
}

/// The removals of [`sync_table`]: every key `wanted` does not have.
fn prune_table<K, V>(
    map: &mut HashMap<MapData, K, V>,
    wanted: &BTreeMap<K, V>,
    name: &str,
) -> Result<usize>
where
    K: Pod + Ord + std::fmt::Debug,
    V: Pod,
{
    let stale: Vec<K> = map
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {name}"))?
        .into_iter()
        .filter(|k| !wanted.contains_key(k))
        .collect();
    for key in &stale {
        map.remove(key)
            .with_context(|| format!("{name}: removing {key:?}"))?;
    }
    Ok(stale.len())
}
