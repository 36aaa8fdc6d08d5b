//! Receive-side GRO for the UDP ports our networks use.
//!
//! On a wire every packet is at most the MTU, and the receiver's GRO merges a flow's packets
//! back before the stack sees them. The kernel merges VXLAN only for a UDP port whose socket
//! registered a GRO handler (`udp4_gro_receive` looks the socket up; the vxlan device's socket
//! registers `vxlan_gro_receive`). Our dataplane has no socket, so without help each packet
//! would cross decapsulation and the container's stack alone (measured: 0.79x kernel vxlan).
//!
//! The help is one idle collect_md ("external") vxlan device per port, `ovgro<port>`: GRO runs
//! before TC ingress, so `from_underlay` receives the merged packets and redirects them before
//! the device's socket ever sees one. What reaches the socket all the same (outer fragments or
//! IP options that `from_underlay` leaves to the host, VXLAN arriving on another interface)
//! would be decapsulated and delivered by the kernel without our checks: the device's own
//! `gro_sink` program drops it and counts `drop_kernel_vxlan`, before the device is up.
//! No address and no IPv6 on it, so it never sends anything either.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};

use super::{Kernel, NodeSync, View};
use crate::{
    dataplane::{Dataplane, PinDir},
    netlink::Netlink,
    shared::ifnames,
};

/// The GRO sync: the helper devices this agent keeps, and why a port has none.
#[derive(Default)]
pub struct Gro {
    /// Port -> device and its ifindex, ready (sink attached, up).
    ready: BTreeMap<u16, (String, u32)>,
    /// Port -> why its device could not be made; retried on every sync.
    failed: BTreeMap<u16, String>,
    /// No helper of a port no longer used is left, this process's or an earlier one's.
    swept: bool,
}

impl NodeSync for Gro {
    /// Every UDP port a network in the maps uses.
    type Want = BTreeSet<u16>;

    fn want(&self, view: &View<'_>) -> BTreeSet<u16> {
        view.applied.networks.values().map(|n| n.port).collect()
    }

    async fn apply(&mut self, want: BTreeSet<u16>, kernel: &mut Kernel<'_>) {
        self.sync(kernel.netlink, kernel.dataplane, &want).await;
    }
}

impl Gro {
    /// Makes a device for every port in `wanted` and removes every helper (device or pinned
    /// sink) of a port not in it, whoever made it: a network may have gone while no agent ran.
    /// Costs one lookup per port when nothing changed.
    async fn sync(&mut self, netlink: &Netlink, dataplane: &mut Dataplane, wanted: &BTreeSet<u16>) {
        // A helper someone deleted, or deleted and made again, is made (or attached) again.
        self.ready
            .retain(|_, (name, index)| crate::netlink::ifindex(name) == Some(*index));
        if self.swept && self.failed.is_empty() && self.ready.keys().eq(wanted.iter()) {
            return;
        }
        for &port in wanted {
            if self.ready.contains_key(&port) {
                continue;
            }
            match make(netlink, dataplane, port).await {
                Ok(ready) => {
                    log::info!(
                        "{}: receive-side GRO for VXLAN on UDP {port} (an idle external vxlan device whose own traffic gro_sink drops)",
                        ready.0
                    );
                    self.failed.remove(&port);
                    self.ready.insert(port, ready);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.failed.get(&port) != Some(&why) {
                        log::warn!("no receive-side GRO for UDP {port}: {why}; will retry");
                    }
                    self.failed.insert(port, why);
                }
            }
        }
        self.failed.retain(|port, _| wanted.contains(port));
        self.swept = match self.sweep(netlink, dataplane.pins(), wanted).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{e:#}; will retry");
                false
            }
        };
    }

    /// Removes the devices and pinned sinks of helpers whose port is not wanted.
    async fn sweep(
        &mut self,
        netlink: &Netlink,
        pins: &PinDir,
        wanted: &BTreeSet<u16>,
    ) -> Result<()> {
        let stale: BTreeSet<String> = netlink
            .names()
            .await?
            .into_iter()
            .chain(pins.linked()?)
            .filter(|name| {
                ifnames::is_gro_device(name)
                    && !wanted.iter().any(|&p| ifnames::gro_device(p) == *name)
            })
            .collect();
        for name in stale {
            remove(netlink, pins, &name).await?;
            self.ready.retain(|_, (n, _)| *n != name);
            log::info!("{name} removed: no network uses its UDP port any more");
        }
        Ok(())
    }

    /// Port -> device name, or the error that keeps it from existing: for `status`.
    pub fn report(&self) -> BTreeMap<String, String> {
        self.ready
            .iter()
            .map(|(p, (n, _))| (p.to_string(), n.clone()))
            .chain(
                self.failed
                    .iter()
                    .map(|(p, why)| (p.to_string(), format!("error: {why}"))),
            )
            .collect()
    }
}

async fn make(netlink: &Netlink, dataplane: &mut Dataplane, port: u16) -> Result<(String, u32)> {
    let name = ifnames::gro_device(port);
    let index = netlink.ensure_vxlan_external(&name, port).await?;
    // Router solicitations and DAD would be its only traffic: a collect_md device has nowhere
    // to send them, but it would try.
    let sysctl = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if std::path::Path::new(&sysctl).exists() {
        std::fs::write(&sysctl, "1").with_context(|| format!("writing {sysctl}"))?;
    }
    // The sink first: the socket opens when the device comes up. A pinned link left by a
    // device of that name that was deleted is defunct and cannot be updated: attach afresh.
    if dataplane.attach_gro_sink(&name).is_err() {
        Dataplane::detach(dataplane.pins(), &name)?;
        dataplane.attach_gro_sink(&name)?;
    }
    netlink.up(&name).await?;
    Ok((name, index))
}

/// The device first, so there is never a moment with its socket open and no sink; then the
/// sink's pin, whose link died with the device.
async fn remove(netlink: &Netlink, pins: &PinDir, name: &str) -> Result<()> {
    netlink.delete(name).await?;
    Dataplane::detach(pins, name)
}

#[cfg(test)]
mod tests {
    use overlay_common::Network;

    use super::*;
    use crate::{dataplane::state::MapState, syncs::testing};

    #[test]
    fn a_device_for_each_port_the_maps_use() {
        let cluster = testing::cluster(&[]);
        let mut applied = MapState::default();
        applied.networks.insert(42, Network::new(4789, [0; 12]));
        applied.networks.insert(43, Network::new(8472, [0; 12]));
        applied.networks.insert(44, Network::new(4789, [0; 12]));
        let want = Gro::default().want(&testing::view(&cluster, &applied));
        assert_eq!(want, BTreeSet::from([4789, 8472]));
    }
}
