//! One etcd session: register under a lease, list, reconcile, watch; move to another member
//! when a watch fails or falls silent, and relist when the history was compacted or went back.
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Agent, KeepAlive, OtherFamily, core, lease};
use crate::{
    model::delta::Batch,
    netlink::ifindex,
    shared::backoff::jittered,
    store::{
        EventType, Store,
        history::History,
        schema::{self, Key, NodeRecord},
    },
    syncs::When,
};

impl Agent {
    /// One session, from connecting to its end: an error says why it ended (`run` connects
    /// again, unless it is an OtherFamily).
    pub(super) async fn session(&mut self) -> Result<()> {
        // A session ends only when etcd said its lease expired (or a request of its own
        // failed): connect again well within one TTL, so that a node that lost its lease is
        // back before the others have long done without it.
        let max_delay =
            Duration::from_millis((self.opts.lease_ttl as u64 * 1000 / 4).clamp(200, 5000));
        // A request tries the members for half a lease TTL (3 to 10 s): long enough for an
        // election and a hung member, short enough that the keepalive can tell in time.
        let bound = Duration::from_millis(self.opts.lease_ttl as u64 * 500)
            .clamp(Duration::from_secs(3), Duration::from_secs(10));
        let store = Store::connect_retrying_within(&self.opts.etcd, max_delay, bound).await;
        self.same_family(&store).await?;
        let record = NodeRecord::new(self.vtep, self.underlay_mtu);
        let (lease, stream, ttl) =
            lease::register(&store, &self.opts.node, &record, self.opts.lease_ttl).await?;
        // The lease is kept alive by a task of its own: a long reconcile (or a busy machine)
        // must never delay a keepalive into another node dropping ours.
        self.metrics.lease_renewed(ttl);
        let mut keepalive =
            KeepAlive::spawn(store.clone(), stream, lease, ttl, self.metrics.clone());
        // A new lease: the digest is published again under it.
        self.published = None;
        self.published_groups = None;
        self.published_health = None;
        log::info!(
            "connected to etcd at {}; node {} registered under lease {lease:x} (TTL {ttl} s)",
            store.endpoints_url(),
            self.opts.node
        );
        self.status.connected = true;
        let own_key = store.keys().node(&self.opts.node);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The health checker's verdicts, published as soon as they change.
        let mut health = self.health.clone();
        // Listings made in this session: the first follows the registration, which
        // publishes everything anew under the new lease.
        let mut listings = 0u64;
        loop {
            // Through an outage the session lives on, and so its lease: nothing for the
            // other nodes to hear (5,000 re-registrations would be 25 million events).
            let all = store.keys().all();
            let listing = keepalive
                .retry(
                    &self.opts.node.clone(),
                    || store.listing(&all, 0),
                    |e| {
                        log::warn!("etcd unreachable: {e:#}; listing again");
                        self.etcd_reached(false);
                    },
                )
                .await?;
            self.etcd_reached(true);
            let (kvs, revision) = (listing.kvs, listing.revision);
            // Every event up to `seen.revision` is in `self.core.cluster`; only events move it (a
            // progress header, and an events header while catching up, may run ahead of what
            // the stream delivered). With the highest raft term met: etcd's history never
            // goes back from there unless the cluster was replaced.
            let mut seen = listing.history;
            // The latest change this node knows of, to ask a cluster whose history may have
            // gone back whether it still has it (see history_went_back).
            let mut latest = kvs
                .iter()
                .max_by_key(|kv| kv.mod_revision())
                .map(|kv| (kv.key().to_vec(), kv.mod_revision()));
            match store.history().await {
                Ok(now) => seen.raft_index = now.raft_index,
                Err(e) => log::warn!("{e:#}"),
            }
            if self.fresh && self.stranded_before.is_none() {
                self.stranded_before = Some(revision);
            }
            // From scratch: whatever the listing lacks leaves the maps at the reconcile.
            self.core.relisted(store.keys(), &kvs);
            if listings > 0 {
                self.published_as_listed(&store, lease).await;
            }
            listings += 1;
            self.publish_names(None);
            log::info!(
                "listed {} keys at revision {revision}; watching from {}",
                kvs.len(),
                revision + 1
            );
            // After a long outage in a large cluster: when this node relists, its watch
            // resumed meanwhile.
            let mut relist_due: Option<Instant> = None;
            self.reconcile(revision).await;
            self.sync_node(When::Change).await;
            // A watch that fails moves to another member from `seen.revision` on, without a
            // relist; only a compacted revision or a history gone back calls for one.
            // Watches that fail at once (no member has a leader) are retried ever more slowly;
            // with no member to watch on at all, for as long as the lease lives.
            let mut pause = Duration::ZERO;
            let mut first = true;
            // When the last watch last heard from etcd (its member, by any stream).
            let mut heard = Instant::now();
            'rewatch: loop {
                tokio::select! {
                    // Jittered: every node lost the same etcd at the same instant.
                    _ = tokio::time::sleep(jittered(pause, &self.opts.node)) => {}
                    why = &mut keepalive.lost => {
                        return Err(lease::lost(why))
                    }
                }
                // A watch lost (every member restarting is one way to lose it) may come back
                // to a restored cluster that was already written past our revision.
                if !first && let Some(why) = history_went_back(&store, &seen, &latest).await {
                    log::warn!("{why}; relisting");
                    break 'rewatch;
                }
                let resuming = !first;
                first = false;
                let mut watch = match store.watch(seen.revision + 1).await {
                    Ok(watch) => watch,
                    Err(e) => {
                        log::warn!("etcd unreachable: {e:#}; trying again");
                        self.etcd_reached(false);
                        pause =
                            (pause * 2).clamp(Duration::from_millis(500), Duration::from_secs(2));
                        continue 'rewatch;
                    }
                };
                // Dark for long (no member answered, or this process was stopped; the request
                // itself may have waited the outage out): a restore may have happened
                // meanwhile that the checks above cannot tell apart (a young cluster restored
                // and written past our revision, same id, same term, a raft log as long).
                // etcd replaying this node's last changes as it applied them settles it, asked
                // now that a member answers; without that answer, a relist, now or, in a large
                // cluster, paced (see ControlPlane::relist_after_replay).
                if resuming
                    && self
                        .relist_after_dark(&store, &seen, &latest, heard, &mut relist_due)
                        .await
                {
                    break 'rewatch;
                }
                let opened = Instant::now();
                'watch: loop {
                    tokio::select! {
                        msg = watch.message() => {
                            let resp = match msg {
                                Ok(resp) => {
                                    heard = Instant::now();
                                    self.etcd_reached(true);
                                    resp
                                }
                                Err(e) => {
                                    // The member may have been heard since the watch's
                                    // last message (its keepalive answers): dark counts
                                    // from then.
                                    heard = heard.max(watch.heard());
                                    log::warn!("{e:#}; watching again from revision {}", seen.revision + 1);
                                    pause = if opened.elapsed() < Duration::from_secs(2) {
                                        (pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
                                    } else {
                                        Duration::ZERO
                                    };
                                    continue 'rewatch;
                                }
                            };
                            let mut revision = self.status.revision;
                            let mut batch = Batch::default();
                            let mut next = Some(resp);
                            // Apply everything already received, then reconcile once.
                            while let Some(resp) = next.take() {
                                if resp.canceled() || resp.compact_revision() > 0 {
                                    log::warn!(
                                        "watch canceled (compacted at revision {}): {}; relisting",
                                        resp.compact_revision(),
                                        resp.cancel_reason()
                                    );
                                    break 'rewatch;
                                }
                                if let Some(h) = resp.header() {
                                    let now = History::of(h);
                                    if now.behind(&seen).is_some()
                                        && let Some(why) = history_went_back(&store, &seen, &latest).await
                                    {
                                        log::warn!("{why} (watching on {}); relisting", watch.member());
                                        break 'rewatch;
                                    }
                                    seen.raft_term = seen.raft_term.max(now.raft_term);
                                }
                                if self.core.apply_events(store.keys(), &resp, &own_key, &mut batch) {
                                    bail!("this node's key was deleted (its lease expired?); registering again");
                                }
                                if let Some(last) = resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max() {
                                    seen.revision = seen.revision.max(last);
                                }
                                if let Some(kv) = resp
                                    .events()
                                    .iter()
                                    .filter(|e| e.event_type() == EventType::Put)
                                    .filter_map(|e| e.kv())
                                    .max_by_key(|kv| kv.mod_revision())
                                {
                                    latest = Some((kv.key().to_vec(), kv.mod_revision()));
                                }
                                // What the maps hold, never a header's revision: etcd 3.4
                                // may send a progress header (or, catching up, an events
                                // header) ahead of events still on their way.
                                revision = seen.revision;
                                next = watch.ready();
                            }
                            self.publish_names(Some(&batch));
                            // Events that change nothing the maps hold (other nodes' digests, names,
                            // slices) need no reconcile, nor a status write each.
                            if batch.is_empty() && self.core.in_sync && !self.switch_over_pending {
                                self.status.revision = revision;
                                continue 'watch;
                            }
                            self.reconcile_batch(&batch, revision).await;
                            self.sync_node(When::Change).await;
                        }
                        why = &mut keepalive.lost => {
                            return Err(lease::lost(why))
                        }
                        _ = tick.tick() => {
                            if relist_due.is_some_and(|due| due <= Instant::now()) {
                                log::info!("relisting, as planned after the outage");
                                break 'rewatch;
                            }
                            // A port that did not exist yet may have appeared, or an attached
                            // one vanished with its container.
                            let port_gone = self.attached.iter().any(|(p, i)| ifindex(p) != Some(*i));
                            if !self.core.problems.is_empty() || port_gone || self.links_unread {
                                self.reconcile(self.status.revision).await;
                            }
                            self.reap_vanished(&store).await;
                            if self.status.etcd_members != self.metrics.last_etcd_probe() {
                                self.write_status();
                            }
                            self.note_underlay_mtu(&store, lease).await;
                            self.publish_state(&store, lease).await;
                            self.publish_groups(&store, lease).await;
                            self.publish_health(&store, lease).await;
                            self.sync_node(When::Tick).await;
                        }
                        Ok(()) = health.changed() => {
                            self.publish_health(&store, lease).await;
                        }
                    }
                }
            }
        }
    }

    /// A cluster's VTEPs are of one family: a node of the other is refused before it registers
    /// (its packets could not reach theirs, nor theirs its).
    async fn same_family(&self, store: &Store) -> Result<()> {
        let (kvs, _) = store.list(&store.keys().nodes()).await?;
        for kv in &kvs {
            let Some(Key::Node(node)) = store.keys().parse(kv.key()) else {
                continue;
            };
            if node == self.opts.node {
                continue;
            }
            // A bad record is the reconcile's to report, with its key.
            if let Ok(other) = schema::decode::<NodeRecord>(kv.value())
                && other.vtep.is_ipv6() != self.vtep.is_ipv6()
            {
                return Err(OtherFamily(format!(
                    "node {}'s VTEP {} and node {node}'s VTEP {} are not of one family: a cluster's underlay is IPv4 or IPv6, not both",
                    self.opts.node, self.vtep, other.vtep
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// A watch header behind what this node has seen: a member lagging a little, or a cluster
/// restored from an older snapshot. A read through the leader tells which; Some(why) if the
/// history went back.
async fn history_went_back(
    store: &Store,
    seen: &History,
    latest: &Option<(Vec<u8>, i64)>,
) -> Option<String> {
    match store.history().await {
        Ok(now) if now.behind(seen).is_some() => now.behind(seen),
        // The same history by every count: unless it no longer has the latest change this
        // node applied, or its own last write (a young cluster restored and written past
        // our revision looks the same otherwise).
        Ok(_) => {
            if let Some((key, at)) = latest
                && let Ok(false) = store.written_at(key, *at).await
            {
                return Some(format!(
                    "etcd's history went back: revision {at} no longer wrote {} (a cluster restored from a snapshot?)",
                    String::from_utf8_lossy(key)
                ));
            }
            match store.lost_writes().await {
                Ok(lost) => lost.map(|why| format!("{why} (a cluster restored from a snapshot?)")),
                Err(e) => {
                    log::debug!("{e:#}");
                    None
                }
            }
        }
        // Cannot tell: the watch goes on (or fails, and says why); the next response asks
        // again.
        Err(e) => {
            log::debug!("{e:#}");
            None
        }
    }
}

impl Agent {
    /// After a watch dark since `heard`, asked once it is open again (a member answers):
    /// true to relist now. Dark for long ([`core::dark`]), the history checks are asked again
    /// (during the outage they could not be), then etcd's replay of this node's last changes
    /// ([`ControlPlane::relist_after_replay`](core::ControlPlane::relist_after_replay)).
    async fn relist_after_dark(
        &self,
        store: &Store,
        seen: &History,
        latest: &Option<(Vec<u8>, i64)>,
        heard: Instant,
        due: &mut Option<Instant>,
    ) -> bool {
        if !core::dark(heard, due) {
            return false;
        }
        if let Some(why) = history_went_back(store, seen, latest).await {
            log::warn!("{why}; relisting");
            return true;
        }
        let replayed = store.replays(&self.core.recent).await;
        self.core.relist_after_replay(heard, replayed, due)
    }

    /// Whether etcd answers this session (`status`, `/readyz`, `overlay_etcd_connected`),
    /// written out when it changes.
    fn etcd_reached(&mut self, reached: bool) {
        if self.status.connected != reached {
            self.status.connected = reached;
            self.write_status();
        }
    }
}
