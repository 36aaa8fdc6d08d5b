//! IpamDriver: Docker's address requests answered from this node's slice of the overlay
//! network, as the CLI's `endpoint add` picks them, never from Docker's own per-daemon IPAM
//! (which would give the same address on two hosts). The pool's ID is the subnet itself: it
//! is all a later request needs to find the overlay network.
//!
//! On a dual-stack network (`--ipv6` and an IPv6 `--subnet`) the IPv6 pool's ID is its prefix,
//! and an endpoint's IPv6 address is the one the overlay derives from the IPv4 address handed
//! out just before (the prefix followed by the IPv4 address): nothing of IPv6 is claimed.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Driver,
    protocol::{
        AddressRef, GATEWAY_REQUEST, REQUEST_ADDRESS_TYPE, RequestAddress, RequestAddressReply,
        RequestPool, RequestPoolReply,
    },
};
use crate::{
    shared::ipam::{Cidr, MAX_SUBNET_PREFIX, Subnet6},
    store::schema::Network,
};

pub(super) fn request_pool(req: RequestPool) -> Result<RequestPoolReply> {
    ensure!(
        req.sub_pool.is_empty(),
        "--ip-range is not supported: each node takes its own slice of the subnet"
    );
    if req.v6 {
        ensure!(
            !req.pool.is_empty(),
            "--ipv6 needs an IPv6 --subnet such as fd00:20::/64 (the overlay derives each container's IPv6 address from its IPv4 one)"
        );
        let prefix: Subnet6 = req.pool.parse()?;
        return Ok(RequestPoolReply {
            pool_id: prefix.to_string(),
            pool: prefix.to_string(),
            data: BTreeMap::new(),
        });
    }
    ensure!(
        !req.pool.is_empty(),
        // Docker asks for the IPv4 pool first, with none given when the only --subnet is IPv6.
        "an IPv4 --subnet is needed (beside any IPv6 one): every host names the same overlay network by it, e.g. --subnet 10.20.0.0/16"
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

/// A pool ID of ours: an IPv4 subnet or an IPv6 prefix.
enum Pool {
    V4(Cidr),
    V6(Subnet6),
}

fn pool(id: &str) -> Result<Pool> {
    let pool = if id.contains(':') {
        id.parse().map(Pool::V6)
    } else {
        id.parse().map(Pool::V4)
    };
    pool.with_context(|| format!("pool {id:?} is not one of overlay-ebpf's"))
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
        let gateway = req
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_REQUEST);
        let subnet = match pool(&req.pool_id)? {
            Pool::V4(subnet) => subnet,
            Pool::V6(prefix) => return self.request_address6(prefix, &req.address, gateway).await,
        };
        let requested = parse_ip(&req.address)?;
        if let Some(ip) = requested {
            ensure!(
                subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast(),
                "{ip} is not a host address of {subnet}"
            );
        }
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
        let free = |ip: &Ipv4Addr| {
            !taken.contains(ip) && !pending.addresses.contains(ip) && Some(*ip) != reserved
        };
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
        pending.addresses.insert(ip);
        pending.awaiting_v6.insert(subnet, ip);
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

    /// The IPv6 address of the endpoint whose IPv4 address was just handed out on the
    /// network with `prefix` (see [`super::Pending::awaiting_v6`]); a gateway is only a label,
    /// as in IPv4: the given one, or the prefix followed by 255.255.255.255, which derives from
    /// no host's address.
    async fn request_address6(
        &self,
        prefix: Subnet6,
        requested: &str,
        gateway: bool,
    ) -> Result<RequestAddressReply> {
        let requested: Option<Ipv6Addr> = match requested.split('/').next().unwrap_or_default() {
            "" => None,
            text => Some(
                text.parse()
                    .with_context(|| format!("{text:?} is not an IPv6 address"))?,
            ),
        };
        if let Some(ip) = requested {
            ensure!(prefix.contains(ip), "{ip} is not in {prefix}");
        }
        let reply = |ip: Ipv6Addr| RequestAddressReply {
            address: format!("{ip}/{}", prefix.prefix()),
            data: BTreeMap::new(),
        };
        if gateway {
            return Ok(reply(
                requested.unwrap_or_else(|| prefix.address_of(Ipv4Addr::BROADCAST)),
            ));
        }
        let net = self
            .ctx
            .store
            .networks()
            .await?
            .into_iter()
            .find(|n| n.subnet6 == Some(prefix))
            .with_context(|| {
                format!("no overlay network has IPv6 prefix {prefix}; create it with -d overlay-ebpf --ipv6")
            })?;
        let mut pending = self.pending.lock().await;
        let ip4 = pending
            .awaiting_v6
            .remove(&net.subnet)
            .filter(|ip| pending.addresses.contains(ip))
            .with_context(|| {
                format!(
                    "no IPv4 address of {} was just handed out: the overlay derives an endpoint's IPv6 address from its IPv4 one",
                    net.subnet
                )
            })?;
        let ip = prefix.address_of(ip4);
        if let Some(asked) = requested {
            ensure!(
                asked == ip,
                "{asked} refused: the overlay derives an endpoint's IPv6 address from its IPv4 one ({ip} for {ip4}); choose the address with --ip"
            );
        }
        log::info!("address {ip} of network {} handed to Docker", net.name);
        Ok(reply(ip))
    }

    /// Only the pending set: an address CreateEndpoint claimed is released with the endpoint
    /// (DeleteEndpoint), which Docker calls first. An IPv6 address was never held.
    pub(super) async fn release_address(&self, req: AddressRef) {
        if let Ok(Some(ip)) = parse_ip(&req.address) {
            self.pending.lock().await.remove(ip);
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
        let v6 = request_pool(pool_req("fd00:20::/64", true)).unwrap();
        assert_eq!(
            (v6.pool_id.as_str(), v6.pool.as_str()),
            ("fd00:20::/64", "fd00:20::/64")
        );
        assert!(matches!(pool(&v6.pool_id), Ok(Pool::V6(_))));
        assert!(matches!(pool(&ok.pool_id), Ok(Pool::V4(_))));
        for (req, says) in [
            (pool_req("", false), "an IPv4 --subnet is needed"),
            (pool_req("fd00::/64", false), "is not a CIDR"),
            (pool_req("", true), "--ipv6 needs an IPv6 --subnet"),
            (pool_req("fd00::/120", true), "longer than /96"),
            (pool_req("10.20.0.0/16", true), "not an IPv6 prefix"),
            (pool_req("10.20.0.1/16", false), "did you mean 10.20.0.0/16"),
            (pool_req("10.20.0.0/31", false), "too small"),
        ] {
            let err = format!("{:#}", request_pool(req).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }
}
