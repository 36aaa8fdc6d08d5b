//! An endpoint's address claimed in etcd, and the undo of a claim: a registration whose
//! answer was lost may have been applied, so an undo removes exactly what was written and
//! never what someone took since.
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Result, bail, ensure};

use super::Ctx;
use crate::store::{
    Store,
    schema::{Endpoint, Location, Network},
};

/// Reserves an address for the endpoint `make` builds: `requested` if free, else the first
/// free one in this node's slice (claimed on first use). `tried` is the last registration
/// sent: when this fails, that one may have been applied all the same (its answer lost), and
/// is what the caller's undo removes.
pub(super) async fn reserve(
    ctx: &Ctx,
    net: &Network,
    requested: Option<Ipv4Addr>,
    make: impl Fn(Ipv4Addr) -> Endpoint,
    tried: &mut Option<Endpoint>,
) -> Result<Endpoint> {
    if let Some(ip) = requested {
        ensure!(
            net.subnet.contains(ip) && ip != net.subnet.network() && ip != net.subnet.broadcast(),
            "{ip} is not a host address of network {}'s subnet {}",
            net.name,
            net.subnet
        );
        ensure!(
            Some(ip) != net.resolver(),
            "{ip} is network {}'s {}",
            net.name,
            if net.internal { "resolver" } else { "gateway" }
        );
        let ep = make(ip);
        if register(ctx, &ep, tried).await? {
            return Ok(ep);
        }
        let owner = ctx.store.endpoint(&net.name, ip).await.ok().flatten();
        bail!(
            "{ip} is already taken in network {}{}",
            net.name,
            owner.map_or(String::new(), |o| format!(" by {}", describe(&o)))
        );
    }
    let slice = ctx.store.claim_slice(net, &ctx.node).await?;
    let taken = ctx.store.taken_addresses(&net.name).await?;
    // The gateway's, and on an internal network the resolver's (the same address).
    let reserved = net.resolver();
    for ip in slice
        .hosts()
        .filter(|ip| !taken.contains(ip) && Some(*ip) != reserved)
    {
        // Lost a race for this address: try the next.
        if register(ctx, &make(ip), tried).await? {
            return Ok(make(ip));
        }
    }
    bail!(
        "node {}'s slice {slice} of network {} has no free address",
        ctx.node,
        net.name
    )
}

/// Registers `ep`; Ok(false) if its address is someone else's. An address that holds exactly
/// this record already is ours: an earlier attempt's registration that etcd applied but never
/// answered (a peer added again, a retry).
async fn register(ctx: &Ctx, ep: &Endpoint, tried: &mut Option<Endpoint>) -> Result<bool> {
    *tried = Some(ep.clone());
    if ctx.store.create_endpoint(ep).await? {
        return Ok(true);
    }
    Ok(written(&ctx.store, ep).await?.is_some())
}

/// The endpoint etcd holds at `ep`'s address if it is exactly `ep` (this node's, this name,
/// this port: what this process wrote), with its create revision.
async fn written(store: &Store, ep: &Endpoint) -> Result<Option<Endpoint>> {
    let there = store.endpoint(&ep.network, ep.ip).await?;
    Ok(there.filter(|t| {
        Endpoint {
            created: 0,
            ..t.clone()
        } == *ep
    }))
}

pub(super) fn describe(ep: &Endpoint) -> String {
    match &ep.location {
        Location::Node { node, .. } => {
            format!("{} endpoint {} on node {node}", ep.kind.name(), ep.name)
        }
        Location::Peer { vtep } => format!("peer behind {vtep}"),
    }
}

/// How long an undo waits for etcd. It runs because something failed, often etcd itself: a
/// hung member must not double the time a failing command takes.
const UNDO_TIMEOUT: Duration = Duration::from_secs(2);

/// The undo of a registration: removes `ep`'s record if etcd holds exactly what was written,
/// never an address or name someone took since. An unknown outcome (no answer) may have been
/// applied, so this runs even then. None when done (or nothing was there); Some(why) when etcd
/// could not be asked: the record may remain (see [`MayRemain`]).
pub(super) async fn unregister(ctx: &Ctx, ep: &Endpoint) -> Option<String> {
    match tokio::time::timeout(UNDO_TIMEOUT, unwrite(&ctx.store, ep)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!(
            "etcd did not answer within {} s",
            UNDO_TIMEOUT.as_secs()
        )),
    }
}

/// Removes `ep`'s record if etcd holds exactly it: read, then delete what was read (its create
/// revision), so an address that changed hands in between is left to its new owner. Ok(true):
/// removed; Ok(false): not there.
async fn unwrite(store: &Store, ep: &Endpoint) -> Result<bool> {
    match written(store, ep).await? {
        Some(there) => store.delete_endpoint_if_unchanged(&there).await,
        None => Ok(false),
    }
}

/// A failed attempt's error, saying what the undo left (one line, the cause last). `left`:
/// why the undo could not confirm the registration `tried` gone, if it could not.
pub(super) fn undone(
    e: anyhow::Error,
    name: &str,
    left: Option<(String, &Endpoint)>,
) -> anyhow::Error {
    match left {
        None => e.context(format!("endpoint {name} not added, nothing left behind")),
        Some((why, tried)) => {
            log::debug!("undoing endpoint {name}'s registration: {why}");
            e.context(MayRemain(tried.clone()))
        }
    }
}

/// In a failed attachment's error: its registration may have been applied all the same (etcd
/// received it, then did not answer) and the undo could not reach etcd to remove it. A command
/// run again under the same name replaces it ([`clear_leftovers`]), a runtime's DEL removes
/// it; a caller that outlives the attempt and will not use the name again (the Docker driver:
/// a new EndpointID each time) finishes the undo with [`unregister_eventually`].
#[derive(Debug)]
pub struct MayRemain(pub Endpoint);

impl std::fmt::Display for MayRemain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "endpoint {} not added, its interface removed (its etcd record, if written, goes when it is added again)",
            self.0.name
        )
    }
}

/// How long [`unregister_eventually`] looks again after finding nothing, for a write etcd
/// received before it hung: that one is applied as soon as etcd resumes, which may be just
/// after a first look.
const SETTLE: Duration = Duration::from_secs(10);
/// When [`unregister_eventually`] gives up (etcd gone that long is an outage to repair).
const GIVE_UP: Duration = Duration::from_secs(600);

/// Finishes an undo that could not reach etcd ([`MayRemain`]): asks again with backoff until
/// etcd answers, then removes the record if it is exactly `ep`.
pub async fn unregister_eventually(store: Store, ep: Endpoint) {
    let started = tokio::time::Instant::now();
    let mut absent_since = None;
    let mut delay = Duration::from_millis(500);
    loop {
        match tokio::time::timeout(UNDO_TIMEOUT, unwrite(&store, &ep)).await {
            Ok(Ok(true)) => {
                log::info!(
                    "endpoint {}: its registration ({} on network {}), applied after its attempt failed, removed",
                    ep.name,
                    ep.ip,
                    ep.network
                );
                return;
            }
            Ok(Ok(false)) => {
                if absent_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed()
                    >= SETTLE
                {
                    return;
                }
            }
            Ok(Err(_)) | Err(_) => absent_since = None,
        }
        if started.elapsed() > GIVE_UP {
            log::warn!(
                "endpoint {}: etcd did not answer for {} s; its registration ({} on network {}) may remain: `overlay-agent endpoint rm {}` removes it",
                ep.name,
                GIVE_UP.as_secs(),
                ep.ip,
                ep.network,
                ep.name
            );
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
