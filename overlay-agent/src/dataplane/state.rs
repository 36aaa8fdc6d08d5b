//! The contents of a node's forwarding maps as plain values: what the agent wants them to hold
//! (computed from etcd) and what they hold (read back from the kernel) are the same type, and
//! a diff of the two is exactly the map writes to make. `VXLAN_PORTS` is derived from
//! `NETWORKS` by [`super::Maps`], and `CONFIG` is set once at start, so neither appears here.
use std::collections::{BTreeMap, BTreeSet};

use overlay_common::{Endpoint, Network, VtepAddr, names, vtep};

/// A VTEP as the digest hashes it: an IPv4 one by its four bytes, as before VTEPs could be
/// IPv6, so the digests of agents on either side of that change agree.
fn digested(v: &VtepAddr) -> &[u8] {
    if vtep::is_v4(v) { &v[12..] } else { v }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapState {
    /// VNI -> outer UDP port and IPv6 prefix.
    pub networks: BTreeMap<u32, Network>,
    /// (VNI, MAC) -> VTEP of a remote endpoint.
    pub fdb: BTreeMap<(u32, [u8; 6]), VtepAddr>,
    /// (VNI, IP) -> MAC, local and remote.
    pub arp: BTreeMap<(u32, [u8; 4]), [u8; 6]>,
    /// (VNI, VTEP) accepted as a source of VXLAN.
    pub vteps: BTreeSet<(u32, VtepAddr)>,
    /// (VNI, MAC) -> local endpoint, for delivery.
    pub endpoints: BTreeMap<(u32, [u8; 6]), Endpoint>,
    /// Host-side ifindex -> local endpoint, for what a port may send.
    pub ports: BTreeMap<u32, Endpoint>,
}

impl MapState {
    /// A digest of the tables any node can compute for another from etcd alone (NETWORKS, FDB,
    /// ARP, VTEPS; ENDPOINTS and PORTS hold local ifindexes), and how many entries it covers:
    /// two nodes' views of one node compare by it.
    pub fn digest(&self) -> (String, usize) {
        let mut h = crate::shared::hash::Fnv64::default();
        for (vni, net) in &self.networks {
            h.write(b"n")
                .write(&vni.to_le_bytes())
                .write(&net.port.to_le_bytes());
            // IPv4-only networks hash as before IPv6 existed.
            if net.prefix6 != [0; 12] {
                h.write(&net.prefix6);
            }
        }
        for ((vni, mac), vtep) in &self.fdb {
            h.write(b"f")
                .write(&vni.to_le_bytes())
                .write(mac)
                .write(digested(vtep));
        }
        for ((vni, ip), mac) in &self.arp {
            h.write(b"a").write(&vni.to_le_bytes()).write(ip).write(mac);
        }
        for (vni, vtep) in &self.vteps {
            h.write(b"v")
                .write(&vni.to_le_bytes())
                .write(digested(vtep));
        }
        let entries = self.networks.len() + self.fdb.len() + self.arp.len() + self.vteps.len();
        (format!("{:016x}", h.finish()), entries)
    }

    /// How many entries map `map` holds here; None for a map this state does not hold (every
    /// map but the reconciled ones of `overlay_common::MAPS`).
    pub fn len(&self, map: &str) -> Option<usize> {
        Some(match map {
            names::FDB => self.fdb.len(),
            names::ARP => self.arp.len(),
            names::ENDPOINTS => self.endpoints.len(),
            names::PORTS => self.ports.len(),
            names::VTEPS => self.vteps.len(),
            names::NETWORKS => self.networks.len(),
            _ => return None,
        })
    }

    /// A remote endpoint: its MAC behind `vtep`, its address, and VXLAN accepted from `vtep`.
    pub fn add_remote(&mut self, vni: u32, mac: [u8; 6], ip: [u8; 4], vtep: VtepAddr) {
        self.fdb.insert((vni, mac), vtep);
        self.arp.insert((vni, ip), mac);
        self.vteps.insert((vni, vtep));
    }

    /// Whether a local or remote endpoint already holds `mac` in `vni`.
    pub fn mac_taken(&self, vni: u32, mac: [u8; 6]) -> bool {
        self.endpoints.contains_key(&(vni, mac)) || self.fdb.contains_key(&(vni, mac))
    }

    /// Makes the writes of `diff` to these values, as [`super::Maps::apply`] makes them to the
    /// maps: afterwards `Diff::between(old, self)` is `diff` again.
    pub fn apply(&mut self, diff: &Diff) {
        fn table<K: Ord + Clone, V: Clone>(t: &mut BTreeMap<K, V>, d: &TableDiff<K, V>) {
            for (k, v) in &d.set {
                t.insert(k.clone(), v.clone());
            }
            for k in &d.remove {
                t.remove(k);
            }
        }
        table(&mut self.networks, &diff.networks);
        table(&mut self.fdb, &diff.fdb);
        table(&mut self.arp, &diff.arp);
        table(&mut self.endpoints, &diff.endpoints);
        table(&mut self.ports, &diff.ports);
        for (k, ()) in &diff.vteps.set {
            self.vteps.insert(*k);
        }
        for k in &diff.vteps.remove {
            self.vteps.remove(k);
        }
    }
}

/// The writes that turn one map's contents into another's.
#[derive(Clone, Debug, PartialEq)]
pub struct TableDiff<K, V> {
    pub set: Vec<(K, V)>,
    pub remove: Vec<K>,
}

impl<K, V> TableDiff<K, V> {
    pub fn len(&self) -> usize {
        self.set.len() + self.remove.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn diff_table<K: Ord + Clone, V: PartialEq + Clone>(
    actual: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> TableDiff<K, V> {
    TableDiff {
        set: desired
            .iter()
            .filter(|(k, v)| actual.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        remove: actual
            .keys()
            .filter(|k| !desired.contains_key(k))
            .cloned()
            .collect(),
    }
}

fn diff_set<K: Ord + Clone>(actual: &BTreeSet<K>, desired: &BTreeSet<K>) -> TableDiff<K, ()> {
    TableDiff {
        set: desired
            .difference(actual)
            .map(|k| (k.clone(), ()))
            .collect(),
        remove: actual.difference(desired).cloned().collect(),
    }
}

/// Every write needed, table by table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    pub networks: TableDiff<u32, Network>,
    pub fdb: TableDiff<(u32, [u8; 6]), VtepAddr>,
    pub arp: TableDiff<(u32, [u8; 4]), [u8; 6]>,
    pub vteps: TableDiff<(u32, VtepAddr), ()>,
    pub endpoints: TableDiff<(u32, [u8; 6]), Endpoint>,
    pub ports: TableDiff<u32, Endpoint>,
}

impl<K, V> Default for TableDiff<K, V> {
    fn default() -> Self {
        Self {
            set: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl Diff {
    pub fn between(actual: &MapState, desired: &MapState) -> Self {
        Self {
            networks: diff_table(&actual.networks, &desired.networks),
            fdb: diff_table(&actual.fdb, &desired.fdb),
            arp: diff_table(&actual.arp, &desired.arp),
            vteps: diff_set(&actual.vteps, &desired.vteps),
            endpoints: diff_table(&actual.endpoints, &desired.endpoints),
            ports: diff_table(&actual.ports, &desired.ports),
        }
    }

    pub fn len(&self) -> usize {
        self.networks.len()
            + self.fdb.len()
            + self.arp.len()
            + self.vteps.len()
            + self.endpoints.len()
            + self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_the_reconciled_maps() {
        let state = MapState::default();
        for map in overlay_common::MAPS {
            assert_eq!(
                state.len(map.name).is_some(),
                map.reconciled,
                "{}",
                map.name
            );
        }
    }

    #[test]
    fn diff_sets_what_differs_and_removes_what_is_stale() {
        let mut actual = MapState::default();
        actual
            .fdb
            .insert((42, [2; 6]), vtep::from_v4([10, 0, 0, 2]));
        actual
            .fdb
            .insert((42, [3; 6]), vtep::from_v4([10, 0, 0, 3]));
        actual.vteps.insert((42, vtep::from_v4([10, 0, 0, 3])));
        let mut desired = MapState::default();
        desired
            .fdb
            .insert((42, [2; 6]), vtep::from_v4([10, 0, 0, 2])); // unchanged
        desired
            .fdb
            .insert((42, [4; 6]), vtep::from_v4([10, 0, 0, 4])); // new
        desired.vteps.insert((42, vtep::from_v4([10, 0, 0, 4])));
        let d = Diff::between(&actual, &desired);
        assert_eq!(
            d.fdb.set,
            vec![((42, [4; 6]), vtep::from_v4([10, 0, 0, 4]))]
        );
        assert_eq!(d.fdb.remove, vec![(42, [3; 6])]);
        assert_eq!(d.vteps.set, vec![((42, vtep::from_v4([10, 0, 0, 4])), ())]);
        assert_eq!(d.vteps.remove, vec![(42, vtep::from_v4([10, 0, 0, 3]))]);
        assert_eq!(d.len(), 4);
        assert!(Diff::between(&desired, &desired).is_empty());
    }

    #[test]
    fn a_changed_value_is_one_set_not_a_remove() {
        let mut actual = MapState::default();
        actual
            .fdb
            .insert((42, [2; 6]), vtep::from_v4([10, 0, 0, 2]));
        let mut desired = MapState::default();
        desired
            .fdb
            .insert((42, [2; 6]), vtep::from_v4([10, 0, 0, 9])); // moved to another VTEP
        let d = Diff::between(&actual, &desired);
        assert_eq!(d.fdb.set.len(), 1);
        assert!(d.fdb.remove.is_empty());
    }
}
