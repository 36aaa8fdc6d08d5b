//! Keeping the maps equal to what the cluster wants: the fast path for a batch of remote
//! endpoints and the full reconcile (both in core.rs, over the kernel's maps), the failed
//! writes' report, and the switch-over to rebuilt maps; then the
//! node's syncs, which follow the maps.
use std::time::Instant;

use anyhow::Result;

use super::{Agent, metrics::ReconcileKind};
use crate::{
    dataplane::{maps::ApplyReport, pins::LAYOUT_VERSION},
    model::delta::Batch,
    netlink::ifindex,
    syncs::{Kernel, View, When},
};

impl Agent {
    /// After a batch of events: the fast path when only remote endpoints changed and the maps
    /// are known to be right, else the full reconcile (core.rs decides and writes).
    pub(super) async fn reconcile_batch(&mut self, batch: &Batch, revision: i64) {
        let started = Instant::now();
        if !self.switch_over_pending {
            match self.core.fast_path(batch, &mut self.maps) {
                Ok(report) => {
                    self.note_failures(&report);
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
        let done = self
            .core
            .reconcile(&|name: &str| links.get(name).cloned(), &mut self.maps);
        for p in &done.new_problems {
            log::warn!("not serving {}: {}", p.key, p.why);
        }
        let complete = done.report.is_clean();
        self.note_failures(&done.report);
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

    /// Logs the writes that failed, per map, and counts them in the status.
    fn note_failures(&mut self, report: &ApplyReport) {
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
            self.core.applied.fdb.len(),
            self.core.applied.endpoints.len()
        );
        Ok(())
    }

    /// The node's syncs, after the maps changed or on the tick (see syncs/); the status shows
    /// the GRO devices they keep and where the resolvers listen.
    pub(super) async fn sync_node(&mut self, when: When) {
        let view = View {
            cluster: &self.core.cluster,
            applied: &self.core.applied,
            node: &self.opts.node,
            underlay_mtu: self.underlay_mtu,
            ipv6: self.vtep.is_ipv6(),
            ifindex,
            rebuilding: self.switch_over_pending,
            changes: &self.core.changes,
        };
        let mut kernel = Kernel {
            netlink: &self.netlink,
            dataplane: &mut self.dataplane,
            maps: &mut self.maps,
        };
        self.syncs.run(&view, &mut kernel, when).await;
        // The syncs have seen what changed (while rebuilding they ran in part: the
        // switch-over's reconcile notes everything again).
        self.core.changes = Default::default();
        let (gro, resolvers) = (self.syncs.gro_report(), self.syncs.names_report());
        if gro != self.status.gro || resolvers != self.status.resolvers {
            self.status.gro = gro;
            self.status.resolvers = resolvers;
            self.write_status();
        }
    }
}
