//! The control plane of one node without its kernel: the agent's copy of etcd (fed by a
//! listing and by watch events), what the maps hold, and the two reconciles (the fast path for
//! a batch of remote endpoints, the full one from `desired`) writing through a [`MapWriter`].
//!
//! The agent runs it over the kernel's maps; the scale harness (tests/src/cluster_scale.rs)
//! runs thousands of it over recorders, so what the harness measures is this code, not a copy.
use anyhow::Result;

use crate::{
    dataplane::{
        maps::ApplyReport,
        state::{Diff, MapState},
        writer::MapWriter,
    },
    model::{
        cluster::{Applied, ClusterState},
        delta::{Batch, Changes, VtepRefs, endpoint_delta},
        desired::{Problem, desired},
    },
    netlink::Link,
    store::{
        EventType, KeyValue, WatchResponse,
        replay::{Recent, Replayed},
        schema::Keys,
    },
};

/// How long a watch may go without hearing from etcd and resume where it was unasked: over
/// what moving off a failed member takes (store::watch's QUIET, SILENCE and ticks: 5.5 s at
/// most; a try's deadline), well under what stopping every member and restoring them takes.
/// Darker for longer: etcd is asked to replay the node's last events first (store::replay).
pub const DARK: std::time::Duration = std::time::Duration::from_secs(6);

/// What a listing costs etcd per key, about: 150,000 endpoints listed were 30 MB.
const LISTED_BYTES_PER_KEY: f64 = 200.0;
/// What all nodes' relists after an outage may ask of etcd together, in bytes a second: about
/// what one member on this project's 2-core test VM served three full nodes listing at once.
const RELIST_BYTES_PER_SECOND: f64 = 32e6;

/// The window [`relist_delay`] spreads `nodes` relists of `keys` keys each over.
pub fn relist_window(nodes: usize, keys: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64(
        nodes as f64 * keys as f64 * LISTED_BYTES_PER_KEY / RELIST_BYTES_PER_SECOND,
    )
}

/// After a watch dark for longer than [`DARK`] that etcd could not vouch for (a compaction
/// past the node's last changes, say): how long this node waits before it relists, its watch
/// resumed meanwhile. Every node went dark at once (an outage ends for all of them at once),
/// and every node listing everything at that moment is `nodes` x `keys` at once: 150 GB at
/// 5,000 nodes and 150,000 endpoints, which would take etcd down just as it came back. So
/// each relists at a random moment of a window that keeps their listings together under
/// RELIST_BYTES_PER_SECOND; the resumed watch keeps the node current meanwhile, and the
/// relist is only the check against a history etcd 3.4 may have rewritten without saying so
/// (a restored snapshot). Zero, relist now, when the window is under a second: any cluster
/// of a few nodes, or of few keys.
pub fn relist_delay(nodes: usize, keys: usize, who: &str) -> std::time::Duration {
    let window = relist_window(nodes, keys);
    if window < std::time::Duration::from_secs(1) {
        std::time::Duration::ZERO
    } else {
        crate::shared::backoff::spread(window, who)
    }
}

/// Whether a watch dark since `heard` must be vouched for before it resumes: dark for longer
/// than [`DARK`], with no relist planned still ahead. Then the caller asks etcd to replay the
/// node's last changes (`Store::replays` of [`ControlPlane::recent`]) and hands the answer to
/// [`ControlPlane::relist_after_replay`].
pub fn dark(heard: std::time::Instant, due: &Option<std::time::Instant>) -> bool {
    let now = std::time::Instant::now();
    now.duration_since(heard) > DARK && !due.is_some_and(|at| at > now)
}

pub struct ControlPlane {
    pub node: String,
    pub cluster: ClusterState,
    /// What the maps hold, as far as this process wrote or read them.
    pub applied: MapState,
    /// `applied` is exactly what the last full reconcile wanted: the fast path may build on it.
    pub in_sync: bool,
    /// Remote endpoints per (VNI, VTEP) in `applied`, kept for the fast path.
    pub vtep_refs: VtepRefs,
    /// What the last full reconcile left out, and why.
    pub problems: Vec<Problem>,
    /// What changed since the node syncs last ran (the caller clears it when they have).
    pub changes: Changes,
    /// The last events applied, for etcd to replay after an outage (store::replay).
    pub recent: Recent,
}

/// What a full reconcile did.
pub struct Reconciled {
    /// The writes that failed, if any.
    pub report: ApplyReport,
    /// Problems met that the reconcile before did not meet.
    pub new_problems: Vec<Problem>,
}

impl ControlPlane {
    /// After a watch dark since `heard` (see [`dark`]) and etcd's answer to the replay of
    /// [`Self::recent`]: true to relist now; false to resume the watch where it was. The same
    /// events replayed: the same history, nothing to relist (an etcd restarted). Others:
    /// another history (a restore), relist. No answer: the relist planned in `due`
    /// ([`relist_delay`]: at once in a small cluster, over a window in a large one). A planned
    /// relist whose moment passed while dark (dark() lets only those through) is still owed,
    /// whatever the replay says, and its moment is drawn anew: every node whose moment fell
    /// in a second outage would otherwise relist at its end together.
    pub fn relist_after_replay(
        &self,
        heard: std::time::Instant,
        replayed: Replayed,
        due: &mut Option<std::time::Instant>,
    ) -> bool {
        let now = std::time::Instant::now();
        let dark = now.duration_since(heard).as_secs_f32();
        let why = match replayed {
            Replayed::Differs(why) => {
                log::warn!("{why}; relisting");
                return true;
            }
            Replayed::Same(n) => {
                log::info!(
                    "no etcd member answered this node for {dark:.0} s; etcd replays the {n} changes it applied last as it applied them (the same history): watching again where it was"
                );
                if due.is_none() {
                    return false;
                }
                "a relist planned before this outage".to_string()
            }
            Replayed::Unknown(why) => why,
        };
        let delay = relist_delay(self.cluster.nodes.len(), self.cluster.records(), &self.node);
        if delay.is_zero() {
            log::warn!("no etcd member answered this node for {dark:.0} s ({why}); relisting");
            return true;
        }
        log::warn!(
            "no etcd member answered this node for {dark:.0} s ({why}); watching again where it was, and relisting in {:.0} s (every node of a cluster this size relisting at once would swamp etcd)",
            delay.as_secs_f32()
        );
        *due = Some(now + delay);
        false
    }

    pub fn new(node: &str, applied: MapState) -> Self {
        Self {
            node: node.to_string(),
            cluster: ClusterState::default(),
            applied,
            in_sync: false,
            vtep_refs: VtepRefs::default(),
            problems: Vec::new(),
            changes: Changes::EVERYTHING,
            recent: Recent::default(),
        }
    }

    /// A listing: the cluster from scratch (whatever the listing lacks leaves the maps at the
    /// next full reconcile).
    pub fn relisted(&mut self, keys: &Keys, kvs: &[KeyValue]) {
        self.cluster = ClusterState::default();
        self.changes.everything = true;
        self.recent.clear();
        for kv in kvs {
            self.put(keys, kv);
        }
    }

    pub fn put(&mut self, keys: &Keys, kv: &KeyValue) -> Applied {
        match self
            .cluster
            .put(keys, kv.key(), kv.value(), kv.create_revision())
        {
            Ok(applied) => applied,
            Err(e) => {
                log::warn!("skipping {}: {e:#}", String::from_utf8_lossy(kv.key()));
                Applied::Changed
            }
        }
    }

    /// Applies a watch response's events, noting in `batch` what they touch; true if
    /// `own_key` (this node's record) was deleted.
    pub fn apply_events(
        &mut self,
        keys: &Keys,
        resp: &WatchResponse,
        own_key: &str,
        batch: &mut Batch,
    ) -> bool {
        let mut own_deleted = false;
        self.recent.note(resp);
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            batch.note(&self.cluster, keys, kv.key());
            match event.event_type() {
                EventType::Put => {
                    self.put(keys, kv);
                }
                EventType::Delete => {
                    self.cluster.delete(keys, kv.key());
                    own_deleted |= kv.key() == own_key.as_bytes();
                }
            }
        }
        own_deleted
    }

    /// The fast path after a batch of events: the writes from the touched endpoints alone,
    /// when only remote endpoints changed and the maps hold the last full reconcile's answer.
    /// Err says why only the full reconcile can tell (the caller runs it).
    pub fn fast_path(
        &mut self,
        batch: &Batch,
        writer: &mut dyn MapWriter,
    ) -> Result<ApplyReport, &'static str> {
        // Noted whatever follows: a full reconcile, if it comes to that, notes everything.
        self.changes.note(&self.cluster, batch);
        if !self.in_sync {
            return Err("the maps are not known to hold the last full reconcile's answer");
        }
        let delta = endpoint_delta(
            &self.cluster,
            &self.node,
            batch,
            &self.applied,
            &self.problems,
            &self.vtep_refs,
        )?;
        let report = self.write(&delta.diff, writer);
        if report.is_clean() {
            self.applied.apply(&delta.diff);
            self.vtep_refs.commit(&delta);
        }
        Ok(report)
    }

    /// The full reconcile: the maps brought in line with what `desired` computes from the
    /// whole cluster.
    pub fn reconcile(
        &mut self,
        links: &dyn Fn(&str) -> Option<Link>,
        writer: &mut dyn MapWriter,
    ) -> Reconciled {
        self.changes.everything = true;
        let (want, problems) = desired(&self.cluster, &self.node, links);
        let new_problems = problems
            .iter()
            .filter(|p| !self.problems.contains(p))
            .cloned()
            .collect();
        self.problems = problems;
        let diff = Diff::between(&self.applied, &want);
        let report = if diff.is_empty() {
            ApplyReport::default()
        } else {
            self.write(&diff, writer)
        };
        if report.is_clean() {
            self.applied = want;
            self.in_sync = true;
            self.vtep_refs = VtepRefs::count(&self.applied);
        }
        Reconciled {
            report,
            new_problems,
        }
    }

    /// Makes the writes of `diff`. After a failure `applied` is read back from the writer and
    /// the next reconcile is a full one, which retries.
    fn write(&mut self, diff: &Diff, writer: &mut dyn MapWriter) -> ApplyReport {
        let report = writer.apply(diff);
        self.in_sync = report.is_clean();
        // Read back below: the syncs cannot know which entries moved.
        self.changes.everything |= !self.in_sync;
        if !self.in_sync
            && let Ok(actual) = writer.snapshot()
        {
            self.applied = actual;
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cluster_relists_at_once_and_a_large_one_over_a_window() {
        use std::time::Duration;
        assert_eq!(relist_delay(3, 100, "h1"), Duration::ZERO);
        assert_eq!(relist_delay(1_000, 100, "h1"), Duration::ZERO);
        // 50 nodes of 5,000 keys (the suite's scale test): 1.6 s.
        assert!(relist_delay(50, 5_000, "s1") < Duration::from_secs_f64(1.6));
        // 5,000 nodes of 150,000 keys: 150 GB at 32 MB/s, 78 minutes, and spread over them.
        let at: Vec<Duration> = (0..200)
            .map(|i| relist_delay(5_000, 150_000, &format!("s{i}")))
            .collect();
        assert!(at.iter().all(|d| *d < Duration::from_secs(4_700)));
        assert!(at.iter().any(|d| *d < Duration::from_secs(600)));
        assert!(at.iter().any(|d| *d > Duration::from_secs(4_000)));
    }
}
