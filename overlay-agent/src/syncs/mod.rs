//! The node's syncs: each one keeps one kind of node-local kernel state equal to what the
//! cluster and the maps want: the GRO devices, the flood lists with their IGMP queriers, the
//! tunnel guard, the way out (egress), the interfaces' MTU, service load balancing (with the
//! health checks of local backends, backend_health.rs), and the resolver's sockets (dns/).
//!
//! Every sync has one shape, [`NodeSync`]: a pure `want` computed from what the node knows
//! ([`View`]), and an idempotent `apply` that makes the kernel hold it ([`Kernel`]).
//! [`Syncs::run`] is the one place that runs them all, in the order they depend on each other.
//! A new sync is a file here with a struct that implements `NodeSync`, a field of `Syncs`, and
//! one line in `run`.
use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::{
    dataplane::{Dataplane, Maps, state::MapState},
    model::{cluster::ClusterState, delta::Changes},
    netlink::Netlink,
};

pub mod backend_health;
pub mod dns;
pub mod egress;
pub mod flood;
pub mod gro;
pub mod mtu;
pub mod services;
pub mod tunnel_guard;

/// What a sync decides from: the cluster as etcd has it, the maps as this agent wrote them,
/// and the node.
pub struct View<'a> {
    pub cluster: &'a ClusterState,
    /// What the maps hold: a sync serves what the maps serve, never more.
    pub applied: &'a MapState,
    /// This node's name.
    pub node: &'a str,
    /// The underlay's MTU as last read.
    pub underlay_mtu: Option<u32>,
    /// The underlay (and so every VTEP) is IPv6.
    pub ipv6: bool,
    /// An interface's index now, by name (`netlink::ifindex`; a table in tests).
    pub ifindex: fn(&str) -> Option<u32>,
    /// Maps of another layout are being rebuilt: until the switch-over, `applied` is half
    /// full and the programs attached still read the old maps.
    pub rebuilding: bool,
    /// What changed since the syncs last ran (a sync may redo only that).
    pub changes: &'a Changes,
}

/// What a sync writes through.
pub struct Kernel<'a> {
    pub netlink: &'a Netlink,
    pub dataplane: &'a mut Dataplane,
    pub maps: &'a mut Maps,
}

/// One node sync.
pub(crate) trait NodeSync {
    /// What the kernel should hold.
    type Want;

    /// Pure: from the view, and from what this sync last made when it acts on a change only.
    fn want(&self, view: &View<'_>) -> Self::Want;

    /// Makes the kernel hold `want`; idempotent, and cheap when it already does. Failures are
    /// logged and retried at the next run: they never stop the agent.
    async fn apply(&mut self, want: Self::Want, kernel: &mut Kernel<'_>);
}

/// Why the syncs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The maps may have changed: after a listing, or a batch of events.
    Change,
    /// Every second: an interface made or removed since, the underlay's MTU read again.
    Tick,
}

/// Every node sync, and what each remembers of what it made.
pub struct Syncs {
    gro: gro::Gro,
    flooding: flood::Flooding,
    guard: tunnel_guard::TunnelGuard,
    egress: egress::Egress,
    mtu: mtu::Mtu,
    names: dns::Names,
    services: services::Services,
}

impl Syncs {
    /// `underlay_mtu`: the underlay's MTU when the agent started, which the interfaces already
    /// have (the MTU sync follows changes only); `resolver`: what the networks' resolvers
    /// answer from.
    /// `probes`: where the services sync tells the health checker what to probe.
    pub fn new(
        underlay_mtu: Option<u32>,
        resolver: dns::Resolver,
        probes: watch::Sender<Vec<backend_health::Target>>,
    ) -> Self {
        Self {
            gro: gro::Gro::default(),
            flooding: flood::Flooding::default(),
            guard: tunnel_guard::TunnelGuard,
            egress: egress::Egress::default(),
            mtu: mtu::Mtu::new(underlay_mtu),
            names: dns::Names::new(resolver),
            services: services::Services::new(probes),
        }
    }

    /// Runs the syncs: the one place that does.
    pub(crate) async fn run(&mut self, view: &View<'_>, kernel: &mut Kernel<'_>, when: When) {
        // The interfaces follow the underlay whatever the maps hold; the tick is what reads
        // the underlay's MTU again.
        if when == When::Tick {
            step(&mut self.mtu, view, kernel).await;
        }
        // The rest derive from the maps: not from half-built ones.
        if view.rebuilding {
            return;
        }
        // GRO first: a flood list names its port's GRO device by ifindex.
        step(&mut self.gro, view, kernel).await;
        step(&mut self.flooding, view, kernel).await;
        step(&mut self.guard, view, kernel).await;
        step(&mut self.egress, view, kernel).await;
        // After egress, which puts the resolver's address on the bridge.
        step(&mut self.names, view, kernel).await;
        step(&mut self.services, view, kernel).await;
    }

    /// Port -> GRO device, or the error that keeps it from existing: for `status`.
    pub fn gro_report(&self) -> BTreeMap<String, String> {
        self.gro.report()
    }

    /// Network -> where its resolver listens here, or why it does not: for `status`.
    pub fn names_report(&self) -> BTreeMap<String, String> {
        self.names.report()
    }
}

async fn step<S: NodeSync>(sync: &mut S, view: &View<'_>, kernel: &mut Kernel<'_>) {
    let want = sync.want(view);
    sync.apply(want, kernel).await;
}

/// A cluster and maps for the syncs' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The cluster after putting `records` (key under /overlay, JSON value).
    pub fn cluster(records: &[(&str, &str)]) -> ClusterState {
        ClusterState::from_records(records)
    }

    /// `cluster` and `applied` seen from node h1 over an IPv4 underlay of MTU 1500, with
    /// `ovbr42` at index 7 and `ovgro4789` at 5.
    pub fn view<'a>(cluster: &'a ClusterState, applied: &'a MapState) -> View<'a> {
        View {
            cluster,
            applied,
            node: "h1",
            underlay_mtu: Some(1500),
            ipv6: false,
            ifindex: |name| match name {
                "ovbr42" => Some(7),
                "ovgro4789" => Some(5),
                _ => None,
            },
            rebuilding: false,
            changes: &EVERYTHING,
        }
    }

    static EVERYTHING: Changes = Changes::EVERYTHING;
}
