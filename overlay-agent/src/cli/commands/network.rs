//! `network create` and `network rm`.

use anyhow::Result;

use crate::{
    shared::ipam::{Cidr, Subnet6},
    store::{
        Store,
        schema::{self, Network},
    },
};

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
