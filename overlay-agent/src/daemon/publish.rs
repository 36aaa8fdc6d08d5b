//! What this node tells others and its operator: the map digest and multicast groups in etcd
//! (under the session's lease), the node record when the underlay's MTU changes, and the
//! status file with the metrics that read it; and the names the node's resolvers answer.
use std::sync::Arc;

use super::{Agent, metrics::OverlaySubnets};
use crate::{
    dataplane::monitor::monotonic_ns,
    model::{
        delta::Batch,
        names::{ServiceName, Zone},
    },
    status::status_path,
    store::{
        Store,
        schema::{self, NodeRecord, NodeStateRecord},
    },
    syncs::flood,
};

impl Agent {
    /// When the underlay's MTU changed: the node's record says so (new endpoints take it from
    /// there), and the MTU sync sets this node's interfaces after it (see syncs/mtu.rs).
    pub(super) async fn note_underlay_mtu(&mut self, store: &Store, lease: i64) {
        let Ok(Some(now)) = self.netlink.mtu(&self.opts.underlay).await else {
            return;
        };
        if self.underlay_mtu == Some(now) {
            return;
        }
        log::info!(
            "underlay {} MTU changed from {:?} to {now}: the overlay's interfaces follow",
            self.opts.underlay,
            self.underlay_mtu
        );
        self.underlay_mtu = Some(now);
        let record = NodeRecord::new(self.vtep, self.underlay_mtu);
        if let Err(e) = store.put_node(&self.opts.node, &record, lease).await {
            log::warn!("{e:#}");
        }
    }

    /// After a relist within a session (same lease): what etcd holds of this node's own
    /// records counts as published. A cluster restored from a snapshot may hold older
    /// versions of them, still under this lease (etcd renewed it): those are written again
    /// at the next tick, and what etcd already has is not (each put of the node, its groups
    /// or its health is an event for every other node). The digest, which no node watches,
    /// is simply published again.
    pub(super) async fn published_as_listed(&mut self, store: &Store, lease: i64) {
        let me = self.opts.node.as_str();
        let cluster = &self.core.cluster;
        self.published = None;
        self.published_groups = Some(
            cluster
                .groups
                .get(me)
                .map(|groups| {
                    groups
                        .iter()
                        .map(|(vni, set)| (vni.to_string(), set.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        );
        self.published_health = cluster.health.get(me).cloned();
        let record = NodeRecord::new(self.vtep, self.underlay_mtu);
        if cluster.nodes.get(me) != Some(&record)
            && let Err(e) = store.put_node(me, &record, lease).await
        {
            log::warn!("{e:#}");
        }
    }

    /// Publishes the digest of what the maps hold when it changed, so that `doctor --cluster`
    /// can tell a node that is behind or diverged. Only while the maps are what the last full
    /// reconcile wanted: a digest of half-written maps would say nothing.
    pub(super) async fn publish_state(&mut self, store: &Store, lease: i64) {
        if !self.core.in_sync || self.switch_over_pending {
            return;
        }
        let (digest, entries) = self.core.applied.digest();
        if self.published.as_ref().is_some_and(|p| p.digest == digest) {
            return;
        }
        let state = NodeStateRecord {
            revision: self.status.revision,
            digest,
            entries,
        };
        match store.put_state(&self.opts.node, &state, lease).await {
            Ok(()) => self.published = Some(state),
            Err(e) => log::warn!("{e:#}; will retry"),
        }
    }

    /// Publishes this node's multicast group memberships (IGMP snooping) when they changed;
    /// expired ones leave GROUPS here.
    pub(super) async fn publish_groups(&mut self, store: &Store, lease: i64) {
        let now = monotonic_ns();
        let groups = match flood::local_groups(&mut self.maps, now) {
            Ok((groups, capped)) => {
                if capped {
                    log::warn!(
                        "more than {} multicast groups joined on this node: the rest reach every host of their network",
                        schema::MAX_PUBLISHED_GROUPS
                    );
                }
                groups
            }
            Err(e) => {
                log::warn!("{e:#}; will retry");
                return;
            }
        };
        if self.published_groups.as_ref() == Some(&groups) {
            return;
        }
        match store.put_groups(&self.opts.node, &groups, lease).await {
            Ok(()) => self.published_groups = Some(groups),
            Err(e) => log::warn!("{e:#}; will retry"),
        }
    }

    /// Publishes the local backends' health when the checker's verdict changed (or this
    /// session has not published it yet): at once, not at the next tick, so a backend that
    /// stopped answering is passed over within the checks' own time.
    pub(super) async fn publish_health(&mut self, store: &Store, lease: i64) {
        // Nothing until the checker's first verdicts are in.
        let Some(health) = self.health.borrow_and_update().clone() else {
            return;
        };
        if self.published_health.as_ref() == Some(&health) {
            return;
        }
        // Every backend answering and etcd holding no claim of ours: nothing to say, and no
        // key for each of thousands of nodes without a failing backend (absent is healthy).
        let stored = self.core.cluster.health.get(&self.opts.node);
        if health.is_empty() && stored.is_none_or(|r| r.is_empty()) {
            self.published_health = Some(health);
            return;
        }
        match store.put_health(&self.opts.node, &health, lease).await {
            Ok(()) => self.published_health = Some(health),
            Err(e) => log::warn!("{e:#}; will retry"),
        }
    }

    /// The networks' names as the cluster has them now, for the resolvers (syncs/dns/): after
    /// every listing (`batch` None: built whole) and every batch of events (only what the
    /// batch touched), before anything else is done with it, so a name leaves the answers as
    /// soon as its endpoint leaves etcd. Changed in place: the resolvers read it under the
    /// channel's lock and keep no copy, so nothing is cloned.
    pub(super) fn publish_names(&self, batch: Option<&Batch>) {
        match batch {
            None => {
                let services = ServiceName::of(&self.core.cluster);
                self.names
                    .send_replace(Arc::new(Zone::build(&self.core.cluster, &services)));
            }
            Some(batch) => self.names.send_modify(|zone| {
                Arc::make_mut(zone).update(&self.core.cluster, batch);
            }),
        }
    }

    pub(super) fn write_status(&mut self) {
        self.status.etcd_members = self.metrics.last_etcd_probe();
        self.status.updated_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.status.problems = self
            .core
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.why.clone()))
            .chain(
                self.core
                    .cluster
                    .invalid
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .collect();
        let path = status_path(&self.opts.run_dir, &self.opts.node);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_string_pretty(&self.status).expect("status serializes");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path)) {
            log::warn!("writing {}: {e}", path.display());
        }
        self.metrics.publish(&self.status, self.switch_over_pending);
        self.metrics
            .overlay_networks(OverlaySubnets::of(self.core.cluster.networks.values()));
    }
}
