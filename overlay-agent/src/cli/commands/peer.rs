//! A legacy host behind its own VTEP (`peer add`, `peer rm`).
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, anyhow, bail};

use super::Ctx;
use super::claim::{describe, reserve};
use crate::{
    shared::net::Mac,
    store::schema::{Endpoint, Kind, Location},
};

pub async fn peer_add(
    ctx: &Ctx,
    network: &str,
    ip: Ipv4Addr,
    mac: Mac,
    vtep: IpAddr,
) -> Result<Endpoint> {
    let ep = Endpoint {
        network: network.to_string(),
        ip,
        name: String::new(),
        mac,
        kind: Kind::Peer,
        location: Location::Peer { vtep },
        netns: None,
        owner: None,
        services: Vec::new(),
        created: 0,
    };
    // The MAC and the VTEP as a stored record's are checked (a VTEP must be one host's unicast
    // address), before anything else.
    ep.record().validate(network, &ip.to_string())?;
    let net = ctx.store.network(network).await?;
    for (node, record) in ctx.store.nodes().await? {
        // A cluster's underlay is of one family (agent.rs refuses a node of the other).
        if node == ctx.node && record.vtep.is_ipv6() != vtep.is_ipv6() {
            bail!(
                "VTEP {vtep} is not of this cluster's underlay family (node {} has VTEP {})",
                ctx.node,
                record.vtep
            );
        }
        // A peer is a host that is not ours: every node would send it what is meant for one
        // of its containers, and take its traffic for the peer's.
        if record.vtep == vtep {
            bail!("VTEP {vtep} is node {node}'s: a peer is a host that is not one of our nodes");
        }
    }
    // Nothing local to undo. A registration etcd applied but never answered is recognised
    // as this peer's when it is added again (`register`): the re-run just works.
    reserve(ctx, &net, Some(ip), |_| ep.clone(), &mut None).await
}

pub async fn peer_rm(ctx: &Ctx, network: &str, ip: Ipv4Addr) -> Result<Endpoint> {
    let ep = ctx
        .store
        .endpoint(network, ip)
        .await?
        .ok_or_else(|| anyhow!("network {network} has no endpoint {ip}"))?;
    if ep.kind != Kind::Peer {
        bail!(
            "{ip} in network {network} is not a peer but {}",
            describe(&ep)
        );
    }
    ctx.store.delete_endpoint(&ep).await?;
    Ok(ep)
}
