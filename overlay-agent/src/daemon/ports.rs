//! The node's ports: from_container attached to each local endpoint's port, pinned links of
//! ports that are gone removed, and endpoints whose port vanished with their container reaped.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::Agent;
use crate::{
    dataplane::Dataplane,
    model::desired::endpoint_key,
    netlink::ifindex,
    shared::ifnames,
    store::{
        Store,
        schema::{Endpoint, Kind, Location},
    },
};

impl Agent {
    /// from_container on every local port; pinned links of ports that are gone removed.
    pub(super) fn attach_ports(&mut self) -> Result<()> {
        let mut wanted = BTreeSet::new();
        let mut vanished = BTreeMap::new();
        let refused: BTreeSet<&str> = self.core.problems.iter().map(|p| p.key.as_str()).collect();
        for ep in self.core.cluster.endpoints.values() {
            let Location::Node { node, port, .. } = &ep.location else {
                continue;
            };
            if node != &self.opts.node || !matches!(ep.kind, Kind::Container | Kind::Host) {
                continue;
            }
            let Some(index) = ifindex(port) else {
                // Attached once, by this process or (its link pinned) an earlier one, and gone
                // now. A port exists before etcd names its endpoint, so this is never an
                // attachment still being made.
                let known = self
                    .vanished
                    .get(&ep.name)
                    .filter(|(old, _)| old.created == ep.created)
                    .map(|(_, since)| *since);
                let was_attached = self.attached.iter().any(|(p, _)| p == port)
                    || self.opts.pins.link(port).exists()
                    || self.stranded_before.is_some_and(|r| ep.created <= r);
                if ep.kind == Kind::Container && (known.is_some() || was_attached) {
                    let since = known.unwrap_or_else(Instant::now);
                    vanished.insert(ep.name.clone(), (ep.clone(), since));
                }
                continue;
            };
            // Only a port desired() serves: its record names the port its node made for it,
            // the port's alias says it is that endpoint's, and no older endpoint claims it.
            // Never the underlay, `lo`, or another endpoint's port, whatever a record says.
            if refused.contains(endpoint_key(&ep.network, ep.ip).as_str())
                || !ifnames::is_port(port)
                || *port == self.opts.underlay
            {
                continue;
            }
            wanted.insert(port.clone());
            if self.attached.insert((port.clone(), index)) {
                if let Err(e) = self.dataplane.attach_container(port) {
                    self.attached.remove(&(port.clone(), index));
                    log::warn!("{e:#}");
                } else {
                    log::info!(
                        "from_container attached to {port} (endpoint {} {})",
                        ep.name,
                        ep.ip
                    );
                }
            }
        }
        // Entries gone from etcd (or whose port came back) are no longer candidates.
        self.vanished = vanished;
        self.attached.retain(|(port, _)| wanted.contains(port));
        // Ports' links only: the underlay's and the GRO helpers' are never of a port's shape
        // (run refuses an underlay named like one of ours).
        for name in self.opts.pins.linked()? {
            if ifnames::is_port(&name) && !wanted.contains(&name) {
                Dataplane::detach(&self.opts.pins, &name)?;
                log::info!("from_container link of {name} removed (its endpoint is gone)");
            }
        }
        Ok(())
    }

    /// Removes from etcd the endpoints whose port vanished VANISHED_GRACE ago or more; every
    /// node then drops them, and their addresses are free again.
    pub(super) async fn reap_vanished(&mut self, store: &Store) {
        let due: Vec<Endpoint> = self
            .vanished
            .values()
            .filter(|(_, since)| since.elapsed() >= VANISHED_GRACE)
            .map(|(ep, _)| ep.clone())
            .collect();
        for ep in due {
            match store.delete_endpoint_if_unchanged(&ep).await {
                Ok(removed) => {
                    if removed {
                        log::info!(
                            "endpoint {} ({} in network {}) removed from etcd: its port is gone (its container's network namespace died without a DEL)",
                            ep.name,
                            ep.ip,
                            ep.network
                        );
                    }
                    self.vanished.remove(&ep.name);
                }
                Err(e) => {
                    // etcd is slow or gone: the next tick tries again, and the loop is not
                    // held up by one timeout per endpoint.
                    log::warn!("removing vanished endpoint {}: {e:#}; will retry", ep.name);
                    break;
                }
            }
        }
    }
}

/// How long a container's port must have been gone before its endpoint leaves etcd.
const VANISHED_GRACE: Duration = Duration::from_secs(2);
