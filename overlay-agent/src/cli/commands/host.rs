//! The node's own address on a network (`host join`, `host leave`).
use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use super::Ctx;
use super::claim::{reserve, undone, unregister};
use super::endpoint::{drop_bridge_if_empty, endpoint_lock, endpoint_rm, ipv6_of, mtu_here};
use crate::{
    netlink::Netlink,
    shared::{
        ifnames::{self, host_endpoint_name, port_alias},
        net::Mac,
    },
    store::schema::{Endpoint, Kind, Location},
};

/// Gives the node an address on the network: a veth pair whose one end holds the address and
/// whose other end is a bridge port like a container's. As with a container's, anything that
/// fails is undone, and what an earlier failed join left is replaced.
pub async fn host_join(ctx: &Ctx, network: &str, ip: Option<Ipv4Addr>) -> Result<Endpoint> {
    let net = ctx.store.network(network).await?;
    let (iface, port) = (ifnames::host_iface(net.vni), ifnames::host_port(net.vni));
    let name = host_endpoint_name(network);
    let _turn = endpoint_lock(&port).await?;
    let host = Netlink::new()?;
    let joined = host.index(&iface).await?.is_some();
    match ctx.store.endpoint_named(&ctx.node, &name).await? {
        Some(_) if joined => bail!(
            "node {} has already joined network {network} ({iface} exists)",
            ctx.node
        ),
        // Its interface gone: what a join that failed while etcd did not answer left.
        Some(stale) => {
            ctx.store.delete_endpoint_if_unchanged(&stale).await?;
        }
        // An interface no record names: a join killed midway.
        None if joined => {
            host.delete(&iface).await?;
        }
        None => {}
    }
    let mtu = mtu_here(ctx, &net).await?;
    let made = async {
        let bridge = host.ensure_bridge(&net.bridge(), mtu).await?;
        host.add_veth(&iface, &port, mtu).await?;
        // As a container's port says whose it is: the agent attaches to no port that does not.
        host.set_alias(&port, &port_alias(network, &name)).await?;
        host.attach_to_bridge(&port, bridge).await
    }
    .await;
    if let Err(e) = made {
        let _ = host.delete(&iface).await;
        let _ = drop_bridge_if_empty(&host, &net).await;
        return Err(e.context(format!("joining network {network}")));
    }
    let mut tried = None;
    let reserved = reserve(
        ctx,
        &net,
        ip,
        |ip| Endpoint {
            network: network.to_string(),
            ip,
            name: name.clone(),
            mac: Mac::from_ip(ip),
            kind: Kind::Host,
            location: Location::Node {
                node: ctx.node.clone(),
                port: port.clone(),
                iface: Some(iface.clone()),
            },
            netns: None,
            owner: None,
            services: Vec::new(),
            created: 0,
        },
        &mut tried,
    )
    .await;
    let configured = match reserved {
        Ok(ep) => async {
            host.configure(&iface, &iface, ep.mac, mtu, ep.ip, net.subnet.prefix())
                .await?;
            if let Some((addr, prefix)) = ipv6_of(&net, ep.ip) {
                host.add_ipv6(&iface, addr, prefix).await?;
            }
            Ok(ep)
        }
        .await
        .map_err(|e: anyhow::Error| e.context(format!("configuring {iface}"))),
        Err(e) => Err(e),
    };
    match configured {
        Ok(ep) => Ok(ep),
        Err(e) => {
            let _ = host.delete(&iface).await;
            let _ = drop_bridge_if_empty(&host, &net).await;
            let left = match &tried {
                Some(ep) => unregister(ctx, ep).await.map(|why| (why, ep)),
                None => None,
            };
            Err(undone(e, &name, left).context(format!("joining network {network}")))
        }
    }
}

pub async fn host_leave(ctx: &Ctx, network: &str) -> Result<Option<Endpoint>> {
    endpoint_rm(ctx, &host_endpoint_name(network)).await
}
