//! The cluster as etcd describes it, held in memory by the agent: every valid record under the
//! prefix, by key. Applying a put or a delete is idempotent, so a replayed or relisted event
//! changes nothing; a value that does not parse is treated as absent, so what the agent serves
//! depends only on what etcd holds, never on the order events arrived in.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::Result;

use crate::store::{
    schema::{
        self, Endpoint, EndpointRecord, Key, Keys, NameRecord, Network, NetworkRecord, NodeRecord,
    },
    services::{Service, ServiceRecord},
};

#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub networks: BTreeMap<String, Network>,
    /// Nodes whose lease is alive.
    pub nodes: BTreeMap<String, NodeRecord>,
    pub endpoints: BTreeMap<(String, Ipv4Addr), Endpoint>,
    /// Node -> VNI -> the multicast groups its containers are members of. Followed by the
    /// agent's flood sync (every second), not by a map reconcile.
    pub groups: BTreeMap<String, BTreeMap<u32, BTreeSet<Ipv4Addr>>>,
    /// (node, endpoint name) -> the endpoint a node's name refers to (`names/<node>/<name>`,
    /// written by that node with the endpoint, in one transaction): what says which of two
    /// records claiming one of its ports is the one it made.
    pub names: BTreeMap<(String, String), NameRecord>,
    /// (network, name) -> a load-balanced service (`services/<net>/<name>`). Followed by the
    /// services sync, not by a map reconcile.
    pub services: BTreeMap<(String, String), Service>,
    /// Node -> what its agent says of its own backends' health (`health/<node>`): the TCP
    /// ports that fail. Read only through [`ClusterState::failing`], which believes a node
    /// about its own endpoints alone.
    pub health: BTreeMap<String, schema::HealthRecord>,
    /// Keys whose value was refused, with why: shown by `status`.
    pub invalid: BTreeMap<String, String>,
    /// (network, service) -> the addresses of the endpoints naming it, kept with `endpoints`
    /// (only this file changes either): what a service's backends are read from, so that
    /// finding them costs what they are, not a walk over 150,000 endpoints per service on
    /// every change.
    backends: BTreeMap<(String, String), BTreeSet<Ipv4Addr>>,
    /// VTEP -> the nodes claiming it, oldest first (create revision, then name), kept with
    /// `nodes`: whose a VTEP is, asked for every endpoint by the reconcile, in O(log nodes)
    /// rather than a walk over 5,000 nodes per endpoint.
    vtep_claims: BTreeMap<IpAddr, BTreeSet<(i64, String)>>,
}

/// What one event did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Unchanged,
    /// Not a key the dataplane depends on (slices, names, unknown keys).
    Ignored,
}

impl ClusterState {
    /// How many records this copy holds: about how many keys listing etcd again returns.
    pub fn records(&self) -> usize {
        self.networks.len()
            + self.nodes.len()
            + self.endpoints.len()
            + self.groups.len()
            + self.names.len()
            + self.services.len()
            + self.health.len()
    }

    /// Applies a put; `created` is etcd's create revision of the key (who came first decides
    /// conflicts). An error means the value was refused (and whatever the key held before is
    /// gone); the caller logs it with the key.
    pub fn put(&mut self, keys: &Keys, key: &[u8], value: &[u8], created: i64) -> Result<Applied> {
        let Some(parsed) = keys.parse(key) else {
            return Ok(Applied::Ignored);
        };
        let name = String::from_utf8_lossy(key).into_owned();
        match self.decode_into(&parsed, value, created) {
            Ok(applied) => {
                self.invalid.remove(&name);
                Ok(applied)
            }
            Err(e) => {
                self.remove(&parsed);
                self.invalid.insert(name, format!("{e:#}"));
                Err(e)
            }
        }
    }

    fn decode_into(&mut self, key: &Key, value: &[u8], created: i64) -> Result<Applied> {
        Ok(match key {
            Key::Network(name) => {
                let mut net = schema::decode::<NetworkRecord>(value)?.validate(name)?;
                net.created = created;
                changed(self.networks.insert(name.clone(), net.clone()), &net)
            }
            Key::Node(name) => {
                schema::check_name("node", name)?;
                let mut node = schema::decode::<NodeRecord>(value)?.validate()?;
                node.created = created;
                let old = self.nodes.insert(name.clone(), node.clone());
                if let Some(old) = &old {
                    self.index_node(name, old, false);
                }
                self.index_node(name, &node, true);
                changed(old, &node)
            }
            Key::Endpoint { network, ip } => {
                let mut ep = schema::decode::<EndpointRecord>(value)?.validate(network, ip)?;
                ep.created = created;
                let old = self.endpoints.insert((network.clone(), ep.ip), ep.clone());
                if let Some(old) = &old {
                    self.index_backend(old, false);
                }
                self.index_backend(&ep, true);
                changed(old, &ep)
            }
            Key::Groups(node) => {
                let record: schema::GroupsRecord = schema::decode(value)?;
                let mut groups = BTreeMap::new();
                for (vni, set) in record {
                    let vni: u32 = vni
                        .parse()
                        .map_err(|_| anyhow::anyhow!("VNI {vni:?} is not a number"))?;
                    groups.insert(vni, set);
                }
                self.groups.insert(node.clone(), groups);
                Applied::Ignored
            }
            Key::Health(node) => {
                let record: schema::HealthRecord = schema::decode(value)?;
                self.health.insert(node.clone(), record);
                // Followed by the services sync and the names, not by a map reconcile.
                Applied::Ignored
            }
            Key::Name { node, name } => {
                let record: NameRecord = schema::decode(value)?;
                self.names.insert((node.clone(), name.clone()), record);
                // Written with its endpoint, in one transaction: the endpoint's event is what
                // changes the maps.
                Applied::Ignored
            }
            Key::Service { network, name } => {
                let svc = schema::decode::<ServiceRecord>(value)?.validate(network, name)?;
                // Checked against its network now if it is known (the services sync checks
                // again, as a network may come or change later).
                if let Some(net) = self.networks.get(network) {
                    svc.check_in(net)?;
                }
                self.services.insert((network.clone(), name.clone()), svc);
                Applied::Ignored
            }
            Key::Slice { .. } | Key::Vip { .. } => Applied::Ignored,
        })
    }

    pub fn delete(&mut self, keys: &Keys, key: &[u8]) -> Applied {
        let Some(parsed) = keys.parse(key) else {
            return Applied::Ignored;
        };
        let was_invalid = self
            .invalid
            .remove(&String::from_utf8_lossy(key).into_owned())
            .is_some();
        if self.remove(&parsed) || was_invalid {
            Applied::Changed
        } else {
            Applied::Unchanged
        }
    }

    fn remove(&mut self, key: &Key) -> bool {
        match key {
            Key::Network(name) => self.networks.remove(name).is_some(),
            Key::Node(name) => match self.nodes.remove(name) {
                Some(old) => {
                    self.index_node(name, &old, false);
                    true
                }
                None => false,
            },
            Key::Endpoint { network, ip } => match ip.parse::<Ipv4Addr>() {
                Ok(ip) => match self.endpoints.remove(&(network.clone(), ip)) {
                    Some(old) => {
                        self.index_backend(&old, false);
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            },
            Key::Groups(node) => {
                self.groups.remove(node);
                false
            }
            Key::Health(node) => {
                self.health.remove(node);
                false
            }
            Key::Name { node, name } => {
                self.names.remove(&(node.clone(), name.clone()));
                false
            }
            Key::Service { network, name } => {
                self.services.remove(&(network.clone(), name.clone()));
                false
            }
            Key::Slice { .. } | Key::Vip { .. } => false,
        }
    }
}

impl ClusterState {
    /// The endpoints of `network` that name service `service`, by address.
    pub fn backends_of<'a>(
        &'a self,
        network: &'a str,
        service: &str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.backends
            .get(&(network.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .filter_map(move |ip| self.endpoints.get(&(network.to_string(), *ip)))
    }

    /// The node that holds `vtep`: the oldest of those claiming it (create revision, then
    /// name), with its create revision.
    pub fn vtep_holder(&self, vtep: IpAddr) -> Option<(i64, &str)> {
        let (created, name) = self.vtep_claims.get(&vtep)?.first()?;
        Some((*created, name.as_str()))
    }

    /// Adds (`present`) or removes node `name`'s claim on its VTEP.
    fn index_node(&mut self, name: &str, node: &NodeRecord, present: bool) {
        let claim = (node.created, name.to_string());
        if present {
            self.vtep_claims.entry(node.vtep).or_default().insert(claim);
        } else if let Some(set) = self.vtep_claims.get_mut(&node.vtep) {
            set.remove(&claim);
            if set.is_empty() {
                self.vtep_claims.remove(&node.vtep);
            }
        }
    }

    /// Adds (`present`) or removes `ep`'s address under each service it names.
    fn index_backend(&mut self, ep: &Endpoint, present: bool) {
        for svc in &ep.services {
            let key = (ep.network.clone(), svc.clone());
            if present {
                self.backends.entry(key).or_default().insert(ep.ip);
            } else if let Some(set) = self.backends.get_mut(&key) {
                set.remove(&ep.ip);
                if set.is_empty() {
                    self.backends.remove(&key);
                }
            }
        }
    }

    /// The TCP ports of endpoint `ep` that fail their health check, as its own node's agent
    /// says (`health/<node>`): a claim another node makes about it is never read, so a node
    /// speaks for its own endpoints only. A backend nobody has checked yet is healthy.
    pub fn failing(&self, ep: &Endpoint) -> Option<&BTreeSet<u16>> {
        schema::failing(&self.health, ep)
    }

    /// Whether `ep` answers on `port` (UDP ports are never checked: always true).
    pub fn answers(&self, ep: &Endpoint, port: u16, tcp: bool) -> bool {
        !tcp || self.failing(ep).is_none_or(|f| !f.contains(&port))
    }
}

fn changed<T: PartialEq>(old: Option<T>, new: &T) -> Applied {
    if old.as_ref() == Some(new) {
        Applied::Unchanged
    } else {
        Applied::Changed
    }
}

/// For tests of whatever reads a cluster (the model, the syncs).
#[cfg(test)]
impl ClusterState {
    /// The cluster after putting `records` (key under /overlay, JSON value).
    pub fn from_records(records: &[(&str, &str)]) -> Self {
        let keys = Keys::new("/overlay");
        let mut c = ClusterState::default();
        for (key, value) in records {
            c.put(
                &keys,
                format!("/overlay/{key}").as_bytes(),
                value.as_bytes(),
                1,
            )
            .unwrap();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &[u8] = br#"{"vni":42,"subnet":"10.10.0.0/16"}"#;
    /// c1 of blue, with the port derived from its network and name (ifnames::port_name).
    const EP: &[u8] = br#"{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a77fa8a"}"#;

    #[test]
    fn puts_and_deletes_are_idempotent() {
        let keys = Keys::new("/overlay");
        let mut s = ClusterState::default();
        let net = b"/overlay/networks/blue";
        assert_eq!(s.put(&keys, net, NET, 0).unwrap(), Applied::Changed);
        assert_eq!(s.put(&keys, net, NET, 0).unwrap(), Applied::Unchanged);
        let ep = b"/overlay/endpoints/blue/10.10.1.2";
        assert_eq!(s.put(&keys, ep, EP, 0).unwrap(), Applied::Changed);
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.delete(&keys, ep), Applied::Changed);
        assert_eq!(s.delete(&keys, ep), Applied::Unchanged);
        assert_eq!(
            s.put(&keys, b"/overlay/slices/blue/10.10.1.0-24", b"junk", 0)
                .unwrap(),
            Applied::Ignored
        );
        assert_eq!(
            s.put(&keys, b"/elsewhere/x", b"junk", 0).unwrap(),
            Applied::Ignored
        );
    }

    /// The backend index follows every put, change, delete and refused value: it always says
    /// what a walk over the endpoints would.
    #[test]
    fn backends_of_follows_the_endpoints() {
        let keys = Keys::new("/overlay");
        let mut s = ClusterState::default();
        let walk = |s: &ClusterState, svc: &str| -> Vec<Ipv4Addr> {
            let mut v: Vec<_> = s
                .endpoints
                .values()
                .filter(|e| e.network == "blue" && e.services.iter().any(|n| n == svc))
                .map(|e| e.ip)
                .collect();
            v.sort();
            v
        };
        let indexed = |s: &ClusterState, svc: &str| -> Vec<Ipv4Addr> {
            s.backends_of("blue", svc).map(|e| e.ip).collect()
        };
        let record = |name: &str, services: &str| {
            let port = crate::shared::ifnames::port_name("blue", name);
            format!(
                r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:0a:01:02","node":"h1","port":"{port}","services":[{services}]}}"#
            )
        };
        let steps: &[(&str, Option<String>)] = &[
            ("10.10.1.2", Some(record("a", r#""web""#))),
            ("10.10.1.3", Some(record("b", r#""web","db""#))),
            ("10.10.1.2", Some(record("a", r#""db""#))),
            (
                "10.10.1.3",
                Some(r#"{"kind":"container","mac":"nope"}"#.into()),
            ),
            ("10.10.1.4", Some(record("c", r#""web""#))),
            ("10.10.1.2", None),
            ("10.10.1.3", Some(record("b", ""))),
        ];
        for (ip, value) in steps {
            let key = format!("/overlay/endpoints/blue/{ip}");
            match value {
                Some(v) => {
                    let _ = s.put(&keys, key.as_bytes(), v.as_bytes(), 0);
                }
                None => {
                    s.delete(&keys, key.as_bytes());
                }
            }
            for svc in ["web", "db"] {
                assert_eq!(indexed(&s, svc), walk(&s, svc), "{svc} after {ip}");
            }
        }
        assert_eq!(
            indexed(&s, "web"),
            ["10.10.1.4".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(!s.backends.contains_key(&("blue".into(), "db".into())));
    }

    /// The VTEP index follows node records put, moved, refused and deleted, each at its own
    /// create revision: the holder is always the oldest claim a walk over the nodes finds.
    #[test]
    fn vtep_holder_follows_the_nodes() {
        let keys = Keys::new("/overlay");
        let mut s = ClusterState::default();
        let walk = |s: &ClusterState, vtep: &str| -> Option<(i64, String)> {
            let vtep: IpAddr = vtep.parse().unwrap();
            s.nodes
                .iter()
                .filter(|(_, r)| r.vtep == vtep)
                .map(|(n, r)| (r.created, n.clone()))
                .min()
        };
        let steps: &[(&str, Option<&str>, i64)] = &[
            ("b", Some("10.0.0.1"), 5),
            ("a", Some("10.0.0.1"), 5),
            ("c", Some("10.0.0.1"), 3),
            ("c", Some("10.0.0.2"), 3),
            ("a", Some("nope"), 9),
            ("b", None, 0),
            ("d", Some("fd00::1"), 1),
            ("e", Some("10.0.0.1"), 7),
        ];
        for (node, vtep, created) in steps {
            let key = format!("/overlay/nodes/{node}");
            match vtep {
                Some(v) => {
                    let value = format!(r#"{{"vtep":"{v}"}}"#);
                    let _ = s.put(&keys, key.as_bytes(), value.as_bytes(), *created);
                }
                None => {
                    s.delete(&keys, key.as_bytes());
                }
            }
            for vtep in ["10.0.0.1", "10.0.0.2", "fd00::1"] {
                let held = s
                    .vtep_holder(vtep.parse().unwrap())
                    .map(|(c, n)| (c, n.to_string()));
                assert_eq!(held, walk(&s, vtep), "{vtep} after {node}");
            }
        }
        assert_eq!(s.vtep_holder("10.0.0.1".parse().unwrap()), Some((7, "e")));
    }

    #[test]
    fn a_bad_value_is_refused_recorded_and_recovers_when_fixed() {
        let keys = Keys::new("/overlay");
        let mut s = ClusterState::default();
        let ep = b"/overlay/endpoints/blue/10.10.1.2";
        s.put(&keys, ep, EP, 0).unwrap();
        let err = s
            .put(&keys, ep, br#"{"kind":"container","mac":"nope"}"#, 0)
            .unwrap_err();
        assert!(format!("{err:#}").contains("MAC"), "{err:#}");
        assert!(
            s.endpoints.is_empty(),
            "a refused value leaves nothing behind"
        );
        assert_eq!(s.invalid.len(), 1);
        s.put(&keys, ep, EP, 0).unwrap();
        assert_eq!(s.endpoints.len(), 1);
        assert!(s.invalid.is_empty());
        // Wrong types, a bad key segment, and a node with a broken record.
        assert!(
            s.put(&keys, b"/overlay/networks/red", br#"{"vni":"x"}"#, 0)
                .is_err()
        );
        assert!(
            s.put(&keys, b"/overlay/endpoints/blue/999.1.1.1", EP, 0)
                .is_err()
        );
        assert!(
            s.put(&keys, b"/overlay/nodes/h2", br#"{"vtep":"10.0.0"}"#, 0)
                .is_err()
        );
        assert_eq!(s.invalid.len(), 3);
        assert_eq!(s.delete(&keys, b"/overlay/networks/red"), Applied::Changed);
        assert_eq!(s.invalid.len(), 2);
    }

    #[test]
    fn services_flow_in_and_a_bad_one_is_skipped_with_its_key() {
        let keys = Keys::new("/overlay");
        let mut s = ClusterState::default();
        s.put(&keys, b"/overlay/networks/blue", NET, 0).unwrap();
        let web = b"/overlay/services/blue/web";
        let rec = br#"{"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"}]}"#;
        s.put(&keys, web, rec, 0).unwrap();
        assert_eq!(s.services.len(), 1);
        // Outside its network's subnet, or on its gateway: refused, recorded, gone.
        for bad in [
            &br#"{"vip":"10.99.0.1","ports":[{"port":80,"proto":"tcp"}]}"#[..],
            br#"{"vip":"10.10.0.1","ports":[{"port":80,"proto":"tcp"}]}"#,
            br#"{"vip":"10.10.0.9","ports":[{"port":0,"proto":"tcp"}]}"#,
        ] {
            assert!(s.put(&keys, web, bad, 0).is_err());
            assert!(s.services.is_empty());
            assert!(s.invalid.contains_key("/overlay/services/blue/web"));
        }
        s.put(&keys, web, rec, 0).unwrap();
        assert!(s.invalid.is_empty());
        s.delete(&keys, web);
        assert!(s.services.is_empty());
        // A VIP's key changes nothing here.
        assert_eq!(
            s.put(
                &keys,
                b"/overlay/vips/blue/10.10.255.254",
                br#"{"service":"web"}"#,
                0
            )
            .unwrap(),
            Applied::Ignored
        );
    }
}
