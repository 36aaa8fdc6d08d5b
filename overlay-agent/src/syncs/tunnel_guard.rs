//! CLUSTER_PORTS: the UDP port of every network in the cluster, which no container may send to
//! (the dataplane drops it as `drop_tunnel_port`). A container's VXLAN packet for another
//! network, sent through its gateway to any VTEP, would be masqueraded to its node's VTEP and
//! decapsulated there; a legacy host's kernel vxlan device takes it from any source. So the
//! guard covers every network's port, not only those this node serves (VXLAN_PORTS).
use std::collections::BTreeMap;

use anyhow::Result;
use overlay_common::MAX_CLUSTER_PORTS;

use super::{Kernel, NodeSync, View};
use crate::{dataplane::Maps, model::cluster::ClusterState};

/// What CLUSTER_PORTS must hold: every valid network's port (etcd's records were validated on
/// the way in, so a record cannot make a container lose DNS by naming port 53), at most
/// MAX_CLUSTER_PORTS of them, lowest first.
pub fn wanted(cluster: &ClusterState) -> BTreeMap<u32, u32> {
    cluster
        .networks
        .values()
        .map(|n| (u32::from(n.port), 1))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .take(MAX_CLUSTER_PORTS as usize)
        .collect()
}

/// Makes CLUSTER_PORTS equal to `wanted`; how many entries it wrote or removed.
pub fn sync(maps: &mut Maps, wanted: &BTreeMap<u32, u32>) -> Result<usize> {
    maps.sync_cluster_ports(wanted)
}

/// The tunnel guard's sync.
pub struct TunnelGuard;

impl NodeSync for TunnelGuard {
    /// CLUSTER_PORTS: port -> 1.
    type Want = BTreeMap<u32, u32>;

    fn want(&self, view: &View<'_>) -> BTreeMap<u32, u32> {
        wanted(view.cluster)
    }

    async fn apply(&mut self, want: BTreeMap<u32, u32>, kernel: &mut Kernel<'_>) {
        if let Err(e) = sync(kernel.maps, &want) {
            log::warn!("{e:#}; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::state::MapState, syncs::testing};

    #[test]
    fn every_networks_port_is_guarded_served_here_or_not() {
        let cluster = testing::cluster(&[
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","port":8472}"#,
            ),
            (
                "networks/green",
                r#"{"vni":44,"subnet":"10.30.0.0/16","port":8472}"#,
            ),
        ]);
        let applied = MapState::default();
        let want = TunnelGuard.want(&testing::view(&cluster, &applied));
        assert_eq!(want, BTreeMap::from([(4789, 1), (8472, 1)]));
    }
}
