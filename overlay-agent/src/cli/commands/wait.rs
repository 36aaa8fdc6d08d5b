//! Waiting until this node's agent has served a change.
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::Ctx;
use crate::{
    dataplane::Maps,
    store::schema::{Endpoint, Location},
};

/// Waits until this node's agent has `ep` in its maps and, for an endpoint of this node, its
/// port's from_container attached (present), or `ep` out of its maps (absent). The agent
/// attaches a port only after writing its entries, and until then the endpoint's own ARP
/// requests go unanswered: "served" must mean both. False if it did not happen in time, or
/// no agent ever ran here.
pub async fn wait_served(ctx: &Ctx, ep: &Endpoint, present: bool) -> Result<bool> {
    let net = ctx
        .store
        .network(&ep.network)
        .await
        .context("reading the network back")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(maps) = Maps::open(&ctx.pins) else {
            return Ok(false);
        };
        let here = match &ep.location {
            Location::Peer { .. } => maps.fdb_entry(net.vni, ep.mac.0).is_some(),
            // PORTS by the port's ifindex now: a port made again under the same name (a
            // container restarted: DEL, then ADD) is served only once the agent saw the new one.
            Location::Node { port, .. } => {
                maps.endpoint(net.vni, ep.mac.0).is_some()
                    && (!present
                        || (ctx.pins.link(port).exists()
                            && crate::netlink::ifindex(port)
                                .is_some_and(|i| maps.port(i).is_some())))
            }
        };
        if here == present {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
