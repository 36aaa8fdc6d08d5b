//! Keeping the maps equal to what the cluster wants: the fast path for a batch of remote
//! endpoints, the full reconcile, the writes, and the switch-over to rebuilt maps; then the
//! node's syncs, which follow the maps.
use std::time::Instant;

use anyhow::Result;

use super::{Agent, metrics::ReconcileKind};
use crate::{
    dataplane::{pins::LAYOUT_VERSION, state::Diff},
    model::{
        delta::{Batch, VtepRefs, endpoint_delta},
        desired::desired,
    },
    netlink::ifindex,
    syncs::{Kernel, View, When},
};

impl Agent {
    /// After a batch of events: the fast path when only remote endpoints changed and the maps
    /// are known to be right, else the full reconcile.
    pub(super) async fn reconcile_batch(&mut self, batch: &Batch, revision: i64) {
        let started = Instant::now();
        if self.in_sync && !self.switch_over_pending {
            match endpoint_delta(
                &self.cluster,
                &self.opts.node,
                batch,
                &self.applied,
                &self.problems,
                &self.vtep_refs,
            ) {
                Ok(delta) => {
                    if self.write_maps(&delta.diff) {
                        self.applied.apply(&delta.diff);
                        self.vtep_refs.commit(&delta);
                    }
                    self.metrics
                        .reconciled(ReconcileKind::Fast, started.elapsed());
                    self.status.revision = revision;
                    self.write_status();
                    return;
                }
                Err(why) => log::debug!("full reconcile: {why}"),
            }
        }
        self.reconcile(revision).await;
    }

    /// Brings maps and attachments in line with the cluster. Failures are logged and retried
    /// on the next reconcile; they never stop the agent.
    pub(super) async fn reconcile(&mut self, revision: i64) {
        let started = Instant::now();
        // The node's interfaces with their aliases: a port is served only if it says it is
        // its endpoint's.
        let links = match self.netlink.links_by_name().await {
            Ok(links) => links,
            Err(e) => {
                log::warn!("{e:#}; will retry");
                self.links_unread = true;
                return;
            }
        };
        self.links_unread = false;
        let (want, problems) = desired(&self.cluster, &self.opts.node, &|name: &str| {
            links.get(name).cloned()
        });
        for p in problems.iter().filter(|p| !self.problems.contains(p)) {
            log::warn!("not serving {}: {}", p.key, p.why);
        }
        self.problems = problems;
        let diff = Diff::between(&self.applied, &want);
        let complete = diff.is_empty() || self.write_maps(&diff);
        if complete {
            self.applied = want;
            self.in_sync = true;
            self.vtep_refs = VtepRefs::count(&self.applied);
        }
        if self.switch_over_pending
            && complete
            && let Err(e) = self.switch_over()
        {
            log::warn!("{e:#}; will retry");
        }
        // Ports are attached once their maps entries are in: a new program never meets an
        // empty map.
        if !self.switch_over_pending
            && let Err(e) = self.attach_ports()
        {
            log::warn!("{e:#}");
        }
        self.metrics
            .reconciled(ReconcileKind::Full, started.elapsed());
        self.status.revision = revision;
        self.write_status();
    }

    /// Makes the writes of `diff`; true if all went in. A failure is logged per map and
    /// counted in the status, `applied` is read back from the kernel, and the next reconcile
    /// is a full one, which retries.
    fn write_maps(&mut self, diff: &Diff) -> bool {
        let report = self.maps.apply(diff);
        self.in_sync = report.is_clean();
        if self.in_sync {
            return true;
        }
        for (table, (n, last)) in &report.failures {
            let full = ["E2BIG", "too long", "No space"]
                .iter()
                .any(|s| last.contains(s));
            log::warn!(
                "{table}: {n} write(s) failed ({last}){}; will retry",
                if full {
                    format!(
                        ": the map is full (max {} entries); raise --max-entries",
                        self.opts.max_entries
                    )
                } else {
                    String::new()
                }
            );
            *self
                .status
                .map_write_failures
                .entry((*table).to_string())
                .or_default() += n;
        }
        if let Ok(actual) = self.maps.snapshot() {
            self.applied = actual;
        }
        false
    }

    /// The rebuilt maps are full: the underlay's attachment moves to the new programs (ports
    /// follow in attach_ports) and the old layout's maps are unpinned.
    fn switch_over(&mut self) -> Result<()> {
        self.dataplane.attach_underlay(&self.opts.underlay)?;
        self.switch_over_pending = false;
        self.attach_ports()?;
        self.opts.pins.remove_other_layouts()?;
        log::info!(
            "maps of layout v{LAYOUT_VERSION} filled ({} remote MACs, {} local endpoints); programs switched over, old maps unpinned",
            self.applied.fdb.len(),
            self.applied.endpoints.len()
        );
        Ok(())
    }

    /// The node's syncs, after the maps changed or on the tick (see syncs/); the status shows
    /// the GRO devices they keep and where the resolvers listen.
    pub(super) async fn sync_node(&mut self, when: When) {
        let view = View {
            cluster: &self.cluster,
            applied: &self.applied,
            node: &self.opts.node,
            underlay_mtu: self.underlay_mtu,
            ipv6: self.vtep.is_ipv6(),
            ifindex,
            rebuilding: self.switch_over_pending,
        };
        let mut kernel = Kernel {
            netlink: &self.netlink,
            dataplane: &mut self.dataplane,
            maps: &mut self.maps,
        };
        self.syncs.run(&view, &mut kernel, when).await;
        let (gro, resolvers) = (self.syncs.gro_report(), self.syncs.names_report());
        if gro != self.status.gro || resolvers != self.status.resolvers {
            self.status.gro = gro;
            self.status.resolvers = resolvers;
            self.write_status();
        }
    }
}
