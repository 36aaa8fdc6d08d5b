//! `networks/<net>`: a network's record and the network it describes.
use std::net::Ipv4Addr;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use super::checks::default_port;
use super::{check_name, check_port, check_vni};
use crate::shared::{
    ifnames,
    ipam::{self, Cidr, Subnet6},
};

/// `networks/<net>` as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub vni: u32,
    pub subnet: Cidr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// None: the underlay's MTU less the 50 bytes of VXLAN, per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_prefix: Option<u8>,
    /// Broadcast and multicast frames per second one endpoint may send (storm control); None:
    /// [`DEFAULT_BUM_RATE`], 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bum_rate: Option<u32>,
    /// No gateway and no way out of the overlay (`network create --internal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// The IPv6 prefix of a dual-stack network (`--subnet6`); None: IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Subnet6>,
}

/// Broadcast and multicast per endpoint per second, unless a network says otherwise: far more
/// than ARP, DHCP, mDNS or VRRP send, far less than a storm.
pub const DEFAULT_BUM_RATE: u32 = 1000;

/// A network, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: Cidr,
    pub port: u16,
    pub mtu: Option<u32>,
    pub slice_prefix: u8,
    /// Broadcast and multicast frames per second per endpoint; 0: unlimited.
    pub bum_rate: u32,
    /// No gateway, no way out.
    pub internal: bool,
    /// Dual-stack: each endpoint's IPv6 address derives from its IPv4 one.
    pub subnet6: Option<Subnet6>,
    /// etcd's create revision of its key (0 until read from etcd): of two networks that claim
    /// one VNI or overlapping subnets, the older is served.
    pub created: i64,
}

impl NetworkRecord {
    pub fn validate(self, name: &str) -> Result<Network> {
        check_name("network", name)?;
        check_vni(self.vni)?;
        let subnet = self.subnet;
        ensure!(
            subnet.prefix() <= ipam::MAX_SUBNET_PREFIX,
            "subnet {subnet} is too small: at most /{}",
            ipam::MAX_SUBNET_PREFIX
        );
        check_port(self.port)?;
        if let Some(mtu) = self.mtu {
            ensure!(
                (68..=65535).contains(&mtu),
                "MTU {mtu} is out of range (68-65535)"
            );
        }
        let slice_prefix = self
            .slice_prefix
            .unwrap_or_else(|| ipam::default_slice_prefix(subnet));
        ensure!(
            (subnet.prefix()..=ipam::MAX_SUBNET_PREFIX).contains(&slice_prefix),
            "slice prefix /{slice_prefix} must lie between the subnet's /{} and /{}",
            subnet.prefix(),
            ipam::MAX_SUBNET_PREFIX
        );
        Ok(Network {
            name: name.to_string(),
            vni: self.vni,
            subnet,
            port: self.port,
            mtu: self.mtu,
            slice_prefix,
            bum_rate: self.bum_rate.unwrap_or(DEFAULT_BUM_RATE),
            internal: self.internal,
            subnet6: self.subnet6,
            created: 0,
        })
    }
}

impl Network {
    pub fn record(&self) -> NetworkRecord {
        NetworkRecord {
            vni: self.vni,
            subnet: self.subnet,
            port: self.port,
            mtu: self.mtu,
            slice_prefix: Some(self.slice_prefix),
            bum_rate: Some(self.bum_rate),
            internal: self.internal,
            subnet6: self.subnet6,
        }
    }

    /// The IPv6 address of the endpoint whose IPv4 address is `ip`, on a dual-stack network.
    pub fn ipv6_of(&self, ip: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
        self.subnet6.map(|s| s.address_of(ip))
    }

    /// The network as the dataplane's NETWORKS map holds it.
    pub fn entry(&self) -> overlay_common::Network {
        overlay_common::Network::new(self.port, self.subnet6.map_or([0; 12], |s| s.first96()))
    }

    /// The address containers route everything outside the overlay through: the subnet's
    /// first host address, the same on every node, served by each node for its own containers
    /// (on the network's bridge). None for an internal network.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (!self.internal)
            .then(|| self.subnet.hosts().next())
            .flatten()
    }

    /// The IPv6 gateway of a dual-stack network: the IPv4 gateway's IPv6 address
    /// ([`Network::ipv6_of`]), held beside it on the bridge. None for an internal or IPv4-only
    /// network.
    pub fn gateway6(&self) -> Option<std::net::Ipv6Addr> {
        self.ipv6_of(self.gateway()?)
    }

    /// The address the network's containers ask for names (the node's resolver, on the
    /// bridge): the subnet's first host, so the gateway's on a network with one; on an
    /// internal network it is held on the bridge for names only. Never an endpoint's.
    pub fn resolver(&self) -> Option<Ipv4Addr> {
        self.subnet.hosts().next()
    }

    /// The bridge this network's endpoints hang off on every node (Docker's `ov-<vni>`).
    pub fn bridge(&self) -> String {
        ifnames::bridge(self.vni)
    }

    /// The MTU of the network's interfaces on a node whose underlay has `underlay_mtu` and is
    /// IPv6 if `ipv6` (the outer header is 20 bytes longer).
    pub fn mtu_on(&self, underlay_mtu: Option<u32>, ipv6: bool) -> u32 {
        let encap = overlay_common::wire::encap_overhead(ipv6) as u32;
        self.mtu
            .unwrap_or_else(|| underlay_mtu.unwrap_or(1500).saturating_sub(encap))
    }
}
