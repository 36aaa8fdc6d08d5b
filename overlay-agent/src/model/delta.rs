//! The fast path for the change a cluster makes all day long: endpoints on other nodes (or
//! peers) added, moved or removed. The full reconcile recomputes the node's maps from the whole
//! cluster, O(endpoints): ~100 ms at 100,000 endpoints on a small VM, which is the lag of every
//! change. Here the writes come from the touched endpoints alone, O(changes).
//!
//! It gives up (and the caller does the full reconcile) wherever the answer could depend on
//! the rest of the cluster or on this node: a network or node changed, one of this node's own
//! endpoints changed, an endpoint left out changed or would be left out (no network, outside
//! its subnet), or two entries claim one VNI or MAC. The caller takes it only while the maps
//! hold exactly what the last full reconcile wanted: then every remote endpoint not left out
//! contributes its entries and no other, and the result is the full reconcile's, problems
//! included.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use overlay_common::VtepAddr;

use crate::{
    dataplane::state::{Diff, MapState, TableDiff},
    model::{
        cluster::ClusterState,
        desired::{Placement, Problem, endpoint_key, placement},
    },
    store::schema::{Endpoint, Key, Keys},
};

/// What a batch of watch events touched, noted before each event is applied.
#[derive(Debug, Default)]
pub struct Batch {
    /// Endpoint keys touched, with the value each had before the batch (None: absent).
    pub before: BTreeMap<(String, Ipv4Addr), Option<Endpoint>>,
    /// A network or a node changed: only the full reconcile knows what that does.
    pub structural: bool,
    /// A network changed: the names are built again (model/names.rs).
    pub networks: bool,
    /// A service changed: nothing the reconcile writes, what the node syncs follow.
    pub services: bool,
}

impl Batch {
    /// Nothing the maps or the node syncs depend on was touched.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && !self.structural && !self.services
    }

    /// Notes `key` before a put or delete of it is applied to `cluster`.
    pub fn note(&mut self, cluster: &ClusterState, keys: &Keys, key: &[u8]) {
        match keys.parse(key) {
            Some(Key::Network(_)) => {
                self.structural = true;
                self.networks = true;
            }
            Some(Key::Node(_)) => self.structural = true,
            Some(Key::Endpoint { network, ip }) => {
                // An address that does not parse was never in the cluster, nor will be.
                if let Ok(ip) = ip.parse() {
                    let k = (network, ip);
                    let old = cluster.endpoints.get(&k).cloned();
                    self.before.entry(k).or_insert(old);
                }
            }
            // A backend's health changes what the services sync writes and `tasks.` answers.
            Some(Key::Service { .. } | Key::Health(_)) => self.services = true,
            // Groups are followed by the flood sync, not by the maps; a VIP's address is
            // held in its service's record too.
            Some(Key::Slice { .. } | Key::Name { .. } | Key::Groups(_) | Key::Vip { .. })
            | None => {}
        }
    }
}

/// What changed in the cluster and the maps since the node syncs last ran, for a sync that
/// redoes only that (syncs/services/): the services whose backends a fast-path batch
/// touched, or everything (a listing, a full reconcile, a write that failed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Anything may have changed: the maps were reconciled whole or read back.
    pub everything: bool,
    /// A network, service or health record changed: every service's ports and flags.
    pub services: bool,
    /// (network, service) named, before or after, by an endpoint a batch touched.
    pub touched: BTreeSet<(String, String)>,
}

impl Changes {
    /// Everything changed (nothing is known of the last run).
    pub const EVERYTHING: Changes = Changes {
        everything: true,
        services: true,
        touched: BTreeSet::new(),
    };

    /// Notes `batch`, once applied to `cluster` (which holds what the touched endpoints are
    /// now; the batch holds what they were).
    pub fn note(&mut self, cluster: &ClusterState, batch: &Batch) {
        self.everything |= batch.structural;
        self.services |= batch.services || batch.networks;
        for (key, before) in &batch.before {
            for ep in before.iter().chain(cluster.endpoints.get(key)) {
                for name in &ep.services {
                    self.touched.insert((key.0.clone(), name.clone()));
                }
            }
        }
    }
}

/// How many remote endpoints of each VNI sit behind each VTEP: VXLAN from a VTEP is accepted
/// for a VNI while its count is above zero.
#[derive(Debug, Default, PartialEq)]
pub struct VtepRefs(BTreeMap<(u32, VtepAddr), u32>);

impl VtepRefs {
    /// Counted from a full state (every FDB entry is one remote endpoint).
    pub fn count(state: &MapState) -> Self {
        let mut refs = BTreeMap::new();
        for (&(vni, _), &vtep) in &state.fdb {
            *refs.entry((vni, vtep)).or_insert(0) += 1;
        }
        Self(refs)
    }

    /// Takes the counts a delta computed, once its writes are made.
    pub fn commit(&mut self, delta: &Delta) {
        for &(k, n) in &delta.refs {
            if n == 0 {
                self.0.remove(&k);
            } else {
                self.0.insert(k, n);
            }
        }
    }
}

/// The writes a batch needs, and the VTEP counts after them.
#[derive(Debug)]
pub struct Delta {
    pub diff: Diff,
    refs: Vec<((u32, VtepAddr), u32)>,
}

/// The writes that bring `applied` (the maps, equal to the full reconcile's last answer, which
/// left out `problems`) in line with `cluster` after `batch`; Err says why only a full
/// reconcile can tell.
pub fn endpoint_delta(
    cluster: &ClusterState,
    me: &str,
    batch: &Batch,
    applied: &MapState,
    problems: &[Problem],
    refs: &VtepRefs,
) -> Result<Delta, &'static str> {
    if batch.structural {
        return Err("a network or node changed");
    }
    if problems.iter().any(|p| p.conflict) {
        return Err("two entries claim one VNI or MAC");
    }
    if !problems.is_empty()
        && batch.before.keys().any(|(net, ip)| {
            let key = endpoint_key(net, *ip);
            problems.iter().any(|p| p.key == key)
        })
    {
        return Err("an endpoint that was left out changed");
    }
    // No network is refused (that would be a conflict), so every one is served.
    // A remote endpoint's entries: VNI, MAC, IP, VTEP.
    let remote = |ep: &Endpoint| match placement(cluster, me, ep, |_| true) {
        Placement::Remote { vni, vtep } => Ok(Some((vni, ep.mac.0, ep.ip.octets(), vtep))),
        Placement::Absent => Ok(None),
        Placement::Local { .. } => Err("one of this node's endpoints changed"),
        Placement::LeftOut(_) => Err("an endpoint would be left out"),
    };

    // What each touched entry must hold afterwards (None: nothing), and the VTEP count changes.
    let mut fdb = BTreeMap::new();
    let mut arp = BTreeMap::new();
    let mut counts: BTreeMap<(u32, VtepAddr), i64> = BTreeMap::new();
    // Every old contribution out first, so an endpoint may take a MAC another one just freed.
    for old in batch.before.values().flatten() {
        if let Some((vni, mac, ip, vtep)) = remote(old)? {
            fdb.insert((vni, mac), None);
            arp.insert((vni, ip), None);
            *counts.entry((vni, vtep)).or_default() -= 1;
        }
    }
    for key in batch.before.keys() {
        let Some(new) = cluster.endpoints.get(key) else {
            continue;
        };
        let Some((vni, mac, ip, vtep)) = remote(new)? else {
            continue;
        };
        let taken = match fdb.get(&(vni, mac)) {
            Some(Some(_)) => true,
            Some(None) => false,
            None => applied.mac_taken(vni, mac),
        };
        if taken {
            return Err("a MAC would be used twice");
        }
        fdb.insert((vni, mac), Some(vtep));
        arp.insert((vni, ip), Some(mac));
        *counts.entry((vni, vtep)).or_default() += 1;
    }

    let mut diff = Diff {
        fdb: table(&applied.fdb, fdb),
        arp: table(&applied.arp, arp),
        ..Diff::default()
    };
    let mut new_refs = Vec::new();
    for (k, change) in counts.into_iter().filter(|(_, c)| *c != 0) {
        let n = i64::from(refs.0.get(&k).copied().unwrap_or(0)) + change;
        let n = u32::try_from(n).map_err(|_| "the VTEP counts are out of step")?;
        match (n > 0, applied.vteps.contains(&k)) {
            (true, false) => diff.vteps.set.push((k, ())),
            (false, true) => diff.vteps.remove.push(k),
            _ => {}
        }
        new_refs.push((k, n));
    }
    Ok(Delta {
        diff,
        refs: new_refs,
    })
}

/// The writes that make the touched entries of `actual` hold `want`.
fn table<K: Ord + Clone, V: PartialEq + Copy>(
    actual: &BTreeMap<K, V>,
    want: BTreeMap<K, Option<V>>,
) -> TableDiff<K, V> {
    let mut d = TableDiff::default();
    for (k, v) in want {
        match (v, actual.get(&k)) {
            (Some(v), cur) if cur != Some(&v) => d.set.push((k, v)),
            (None, Some(_)) => d.remove.push(k),
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::desired;

    /// A small deterministic generator: the test must fail the same way every time.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random endpoint value: mostly other nodes' and peers', sometimes a dead node's, and
    /// rarely (a problem lasts until its key is written again) this node's own, one outside
    /// the subnet, or one with a neighbour's MAC.
    fn endpoint(rng: &mut Rng) -> (String, String) {
        let net = match rng.below(200) {
            0 => "green", // no such network
            n => ["blue", "red"][n as usize % 2],
        };
        let host = rng.below(30) as u8 + 2;
        let ip = match rng.below(200) {
            0 => OUTSIDE.to_string(),
            _ if net == "red" => format!("10.20.1.{host}"),
            _ => format!("10.10.1.{host}"),
        };
        let mac_host = if rng.below(300) == 0 { host ^ 1 } else { host };
        let mac = format!("02:42:0a:0a:01:{mac_host:02x}");
        let node = match rng.below(100) {
            0 => "h1", // this node: its port does not exist
            n => ["h2", "h3", "h4"][n as usize % 3],
        };
        let value = match rng.below(4) {
            0 => format!(
                r#"{{"kind":"peer","mac":"{mac}","vtep":"10.0.0.{}"}}"#,
                7 + host % 3
            ),
            _ => format!(
                r#"{{"kind":"container","name":"c","mac":"{mac}","node":"{node}","port":"{}"}}"#,
                crate::shared::ifnames::port_name(net, "c")
            ),
        };
        (format!("/overlay/endpoints/{net}/{ip}"), value)
    }

    const OUTSIDE: &str = "10.99.1.2";

    /// Random batches of endpoint changes: whenever the fast path answers, its maps are the
    /// full reconcile's, VTEP counts included; whenever it declines, the full one takes over.
    #[test]
    fn the_fast_path_agrees_with_the_full_reconcile() {
        let keys = Keys::new("/overlay");
        let mut cluster = ClusterState::default();
        for (k, v) in [
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            ("networks/red", r#"{"vni":43,"subnet":"10.20.0.0/16"}"#),
            ("nodes/h1", r#"{"vtep":"10.0.0.1"}"#),
            ("nodes/h2", r#"{"vtep":"10.0.0.2"}"#),
            ("nodes/h3", r#"{"vtep":"10.0.0.3"}"#),
        ] {
            cluster
                .put(&keys, format!("/overlay/{k}").as_bytes(), v.as_bytes(), 0)
                .unwrap();
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut applied, mut problems) = desired(&cluster, "h1", &|_| None);
        let mut refs = VtepRefs::count(&applied);
        let (mut fast, mut full) = (0, 0);
        let (mut revision, mut created) = (100, BTreeMap::new());
        for _ in 0..3000 {
            let mut batch = Batch::default();
            let mut changes: Vec<_> = (0..=rng.below(4)).map(|_| endpoint(&mut rng)).collect();
            if rng.below(5) == 0 {
                // A bad value is fixed soon after; a delete cannot fail to parse.
                for net in ["blue", "red"] {
                    changes.push((format!("/overlay/endpoints/{net}/{OUTSIDE}"), String::new()));
                }
            }
            for (key, value) in changes {
                batch.note(&cluster, &keys, key.as_bytes());
                revision += 1;
                if value.is_empty() || rng.below(3) == 0 {
                    cluster.delete(&keys, key.as_bytes());
                    created.remove(&key);
                } else {
                    // As in etcd, a key keeps its create revision until it is deleted.
                    let at = *created.entry(key.clone()).or_insert(revision);
                    let _ = cluster.put(&keys, key.as_bytes(), value.as_bytes(), at);
                }
            }
            let (want, now_problems) = desired(&cluster, "h1", &|_| None);
            let delta = endpoint_delta(&cluster, "h1", &batch, &applied, &problems, &refs).ok();
            match delta {
                Some(delta) => {
                    fast += 1;
                    assert_eq!(delta.diff, Diff::between(&applied, &want), "{batch:#?}");
                    assert_eq!(now_problems, problems);
                    applied.apply(&delta.diff);
                    refs.commit(&delta);
                    assert_eq!(refs, VtepRefs::count(&applied));
                }
                None => {
                    full += 1;
                    applied = want;
                    refs = VtepRefs::count(&applied);
                }
            }
            problems = now_problems;
        }
        assert!(fast > 1000 && full > 100, "{fast} fast, {full} full");
    }

    #[test]
    fn changes_to_networks_nodes_or_this_node_take_the_full_path() {
        let keys = Keys::new("/overlay");
        let cluster = ClusterState::default();
        let empty = MapState::default();
        let refs = VtepRefs::default();
        let mut batch = Batch::default();
        batch.note(&cluster, &keys, b"/overlay/nodes/h9");
        assert!(endpoint_delta(&cluster, "h1", &batch, &empty, &[], &refs).is_err());

        let mut cluster = ClusterState::default();
        cluster
            .put(
                &keys,
                b"/overlay/networks/blue",
                br#"{"vni":42,"subnet":"10.10.0.0/16"}"#,
                0,
            )
            .unwrap();
        let mut batch = Batch::default();
        let key = b"/overlay/endpoints/blue/10.10.1.2";
        batch.note(&cluster, &keys, key);
        let value = format!(
            r#"{{"kind":"container","name":"c","mac":"02:42:0a:0a:01:02","node":"h1","port":"{}"}}"#,
            crate::shared::ifnames::port_name("blue", "c")
        );
        cluster.put(&keys, key, value.as_bytes(), 0).unwrap();
        assert_eq!(
            endpoint_delta(&cluster, "h1", &batch, &empty, &[], &refs).unwrap_err(),
            "one of this node's endpoints changed"
        );
        // Slices and names do not touch the maps at all.
        let mut batch = Batch::default();
        batch.note(&cluster, &keys, b"/overlay/slices/blue/10.10.1.0-24");
        batch.note(&cluster, &keys, b"/overlay/names/h1/c");
        let delta = endpoint_delta(&cluster, "h1", &batch, &empty, &[], &refs).unwrap();
        assert!(delta.diff.is_empty());
    }
}
