//! IpamDriver: Docker's address requests answered from this node's slice of the overlay
//! network, as the CLI's `endpoint add` picks them, never from Docker's own per-daemon IPAM
//! (which would give the same address on two hosts). The pool's ID is the subnet itself: it
//! is all a later request needs to find the overlay network.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Driver,
    protocol::{
        AddressRef, GATEWAY_REQUEST, REQUEST_ADDRESS_TYPE, RequestAddress, RequestAddressReply,
        RequestPool, RequestPoolReply,
    },
};
use crate::{
    shared::ipam::{Cidr, MAX_SUBNET_PREFIX},
    store::schema::Network,
};

pub(super) fn request_pool(req: RequestPool) -> Result<RequestPoolReply> {
    ensure!(
        !req.v6 && !req.pool.contains(':'),
        "IPv6 is not supported: give an IPv4 --subnet such as 10.20.0.0/16"
    );
    ensure!(
        !req.pool.is_empty(),
        // Docker asks for the IPv4 pool first, with none given when the only --subnet is IPv6.
        "an IPv4 --subnet is needed (IPv6 is not supported): every host names the same overlay network by it, e.g. --subnet 10.20.0.0/16"
    );
    ensure!(
        req.sub_pool.is_empty(),
        "--ip-range is not supported: each node takes its own slice of the subnet"
    );
    let subnet: Cidr = req.pool.parse()?;
    ensure!(
        subnet.prefix() <= MAX_SUBNET_PREFIX,
        "subnet {subnet} is too small: at most /{MAX_SUBNET_PREFIX}"
    );
    Ok(RequestPoolReply {
        pool_id: subnet.to_string(),
        pool: subnet.to_string(),
        data: BTreeMap::new(),
    })
}

fn pool(id: &str) -> Result<Cidr> {
    id.parse()
        .with_context(|| format!("pool {id:?} is not one of overlay-ebpf's"))
}

fn with_prefix(ip: Ipv4Addr, subnet: Cidr) -> RequestAddressReply {
    RequestAddressReply {
        address: format!("{ip}/{}", subnet.prefix()),
        data: BTreeMap::new(),
    }
}

fn parse_ip(text: &str) -> Result<Option<Ipv4Addr>> {
    if text.is_empty() {
        return Ok(None);
    }
    let ip = text.split('/').next().unwrap_or(text);
    Ok(Some(ip.parse().with_context(|| {
        format!("{text:?} is not an IPv4 address")
    })?))
}

impl Driver {
    async fn network_with_subnet(&self, subnet: Cidr) -> Result<Option<Network>> {
        Ok(self
            .ctx
            .store
            .networks()
            .await?
            .into_iter()
            .find(|n| n.subnet == subnet))
    }

    pub(super) async fn request_address(&self, req: RequestAddress) -> Result<RequestAddressReply> {
        let subnet = pool(&req.pool_id)?;
        let requested = parse_ip(&req.address)?;
        if let Some(ip) = requested {
            ensure!(
                subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast(),
                "{ip} is not a host address of {subnet}"
            );
        }
        let gateway = req
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_REQUEST);
        if gateway {
            return self.gateway_label(subnet, requested).await;
        }
        let net = self.network_with_subnet(subnet).await?.with_context(|| {
            format!("no overlay network has subnet {subnet}; create it with -d overlay-ebpf")
        })?;
        // Held until the address is in the pending set: two requests never pick together.
        let mut pending = self.pending.lock().await;
        let taken = self.ctx.store.taken_addresses(&net.name).await?;
        // The gateway, and the resolver (the same address, on internal networks too), is each
        // node's own (egress.rs, syncs/dns/), never a container's.
        let reserved = net.resolver();
        let free =
            |ip: &Ipv4Addr| !taken.contains(ip) && !pending.contains(ip) && Some(*ip) != reserved;
        let ip = match requested {
            Some(ip) => {
                ensure!(free(&ip), "{ip} is already taken in network {}", net.name);
                ip
            }
            None => {
                let slice = self.ctx.store.claim_slice(&net, &self.ctx.node).await?;
                let Some(ip) = slice.hosts().find(|ip| free(ip)) else {
                    bail!(
                        "node {}'s slice {slice} of network {} has no free address",
                        self.ctx.node,
                        net.name
                    );
                };
                ip
            }
        };
        pending.insert(ip);
        log::info!("address {ip} of network {} handed to Docker", net.name);
        Ok(with_prefix(ip, subnet))
    }

    /// Docker wants a gateway address for every network; nothing uses it (Join returns no
    /// Gateway), so it is only a label: the given one, or the subnet's last host address
    /// that no endpoint holds. It is not claimed in etcd.
    async fn gateway_label(
        &self,
        subnet: Cidr,
        requested: Option<Ipv4Addr>,
    ) -> Result<RequestAddressReply> {
        if let Some(ip) = requested {
            return Ok(with_prefix(ip, subnet));
        }
        let taken = match self.network_with_subnet(subnet).await? {
            Some(net) => self.ctx.store.taken_addresses(&net.name).await?,
            None => Vec::new(),
        };
        // Subnets are /30 or larger: every address but the first and the last is a host's.
        let (first, last) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
        let ip = (first + 1..last)
            .rev()
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .with_context(|| format!("subnet {subnet} has no free address"))?;
        Ok(with_prefix(ip, subnet))
    }

    /// Only the pending set: an address CreateEndpoint claimed is released with the endpoint
    /// (DeleteEndpoint), which Docker calls first.
    pub(super) async fn release_address(&self, req: AddressRef) {
        if let Ok(Some(ip)) = parse_ip(&req.address) {
            self.pending.lock().await.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_req(pool: &str, v6: bool) -> RequestPool {
        RequestPool {
            pool: pool.into(),
            sub_pool: String::new(),
            v6,
        }
    }

    #[test]
    fn pools_are_ipv4_subnets() {
        let ok = request_pool(pool_req("10.20.0.0/16", false)).unwrap();
        assert_eq!(
            (ok.pool_id.as_str(), ok.pool.as_str()),
            ("10.20.0.0/16", "10.20.0.0/16")
        );
        for (req, says) in [
            (pool_req("", false), "an IPv4 --subnet is needed"),
            (pool_req("fd00::/64", false), "IPv6 is not supported"),
            (pool_req("", true), "IPv6 is not supported"),
            (pool_req("10.20.0.1/16", false), "did you mean 10.20.0.0/16"),
            (pool_req("10.20.0.0/31", false), "too small"),
        ] {
            let err = format!("{:#}", request_pool(req).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }
}
