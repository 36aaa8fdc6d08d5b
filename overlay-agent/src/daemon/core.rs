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
    store::{EventType, KeyValue, WatchResponse, schema::Keys},
};

/// How long a watch may go without hearing from etcd and still resume where it was: over
/// what moving off a failed member takes (store::watch's QUIET, SILENCE and ticks: 5.5 s at
/// most; a try's deadline), well under what stopping every member and restoring them takes.
/// Darker for longer: relist.
pub const DARK: std::time::Duration = std::time::Duration::from_secs(6);

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
}

/// What a full reconcile did.
pub struct Reconciled {
    /// The writes that failed, if any.
    pub report: ApplyReport,
    /// Problems met that the reconcile before did not meet.
    pub new_problems: Vec<Problem>,
}

impl ControlPlane {
    pub fn new(node: &str, applied: MapState) -> Self {
        Self {
            node: node.to_string(),
            cluster: ClusterState::default(),
            applied,
            in_sync: false,
            vtep_refs: VtepRefs::default(),
            problems: Vec::new(),
            changes: Changes::EVERYTHING,
        }
    }

    /// A listing: the cluster from scratch (whatever the listing lacks leaves the maps at the
    /// next full reconcile).
    pub fn relisted(&mut self, keys: &Keys, kvs: &[KeyValue]) {
        self.cluster = ClusterState::default();
        self.changes.everything = true;
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
