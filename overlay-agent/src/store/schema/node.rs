//! What a node publishes: its record, its slices, its state digest, its multicast groups, its
//! backends' health, its endpoints' names.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Endpoint, check_vtep};

/// `nodes/<node>`: a live agent, present only while its lease is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub vtep: IpAddr,
    /// The underlay MTU, from which endpoint MTUs follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// etcd's create revision of its key (0 until read from etcd): of two nodes that claim one
    /// VTEP, the older is served.
    #[serde(skip)]
    pub created: i64,
}

impl NodeRecord {
    pub fn new(vtep: IpAddr, mtu: Option<u32>) -> Self {
        Self {
            vtep,
            mtu,
            created: 0,
        }
    }

    pub fn validate(self) -> Result<Self> {
        check_vtep(self.vtep)?;
        Ok(self)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRecord {
    pub node: String,
}

/// `~state/<node>`, under the node's lease: the digest of the forwarding entries its maps hold
/// (NETWORKS, FDB, ARP, VTEPS: the tables any node can compute for it from etcd) and the etcd
/// revision they reflect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateRecord {
    pub revision: i64,
    pub digest: String,
    pub entries: usize,
}

/// `groups/<node>` (leased): per VNI, the IPv4 multicast groups the node's containers reported
/// membership of (IGMP snooping), so other nodes send a group's traffic only where it is
/// wanted. `{"42":["239.1.1.1"]}`.
pub type GroupsRecord = BTreeMap<String, BTreeSet<Ipv4Addr>>;

/// `health/<node>` (leased): network -> endpoint address -> the service TCP ports that fail
/// their health check, as that node's agent probes its own backends. Empty when all answer.
/// Whoever reads it believes a node only about its own endpoints ([`crate::model::cluster`]).
pub type HealthRecord = BTreeMap<String, BTreeMap<Ipv4Addr, BTreeSet<u16>>>;

/// The TCP ports of endpoint `ep` that fail their health check, as its own node says in
/// `health` (node -> its record): a claim another node makes about it is never read, so a
/// node speaks for its own endpoints only. None: healthy (or not checked yet).
pub fn failing<'a>(
    health: &'a BTreeMap<String, HealthRecord>,
    ep: &Endpoint,
) -> Option<&'a BTreeSet<u16>> {
    health
        .get(ep.node()?)?
        .get(&ep.network)?
        .get(&ep.ip)
        .filter(|ports| !ports.is_empty())
}

/// Most groups a node publishes; beyond, its groups fall back to reaching every host.
pub const MAX_PUBLISHED_GROUPS: usize = 1024;

/// `names/<node>/<name>`: which endpoint a node's endpoint name refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub network: String,
    pub ip: Ipv4Addr,
}
