//! The overlay's interface MTUs follow the underlay's. A network without an MTU of its own gives
//! its interfaces the underlay's less the tunnel's 50 bytes (70 over IPv6); when the underlay's changes (jumbo
//! frames turned on, a link moved to a smaller one), the agent sets this node's interfaces of
//! those networks to the new value: the bridge, each endpoint's host-side port and its
//! interface inside the container. Until then, and for any interface it cannot reach, the
//! dataplane answers a packet too big for the tunnel with an ICMP error (pmtu.rs in the
//! programs), so nothing is lost in silence either way.
use crate::{
    cluster::ClusterState,
    plumbing::{Netlink, open_netns},
    store::schema::{Endpoint, Location},
};

/// Sets every interface of this node (`node`) in networks without an MTU of their own to what
/// an underlay of `underlay_mtu` (IPv6 if `ipv6`) allows. Each failure is logged with its
/// interface; the rest goes on.
pub async fn follow(
    netlink: &Netlink,
    cluster: &ClusterState,
    node: &str,
    underlay_mtu: u32,
    ipv6: bool,
) {
    for (name, net) in &cluster.networks {
        if net.mtu.is_some() {
            continue;
        }
        let mtu = net.mtu_on(Some(underlay_mtu), ipv6);
        let local = cluster.endpoints.values().filter(|ep| {
            &ep.network == name
                && matches!(&ep.location, Location::Node { node: n, .. } if n == node)
        });
        // Ports first: a bridge takes on its ports' smallest MTU unless told otherwise.
        for ep in local {
            if let Err(e) = follow_endpoint(netlink, ep, mtu).await {
                log::warn!("endpoint {name}/{}: MTU not set to {mtu}: {e:#}", ep.name);
            }
        }
        let bridge = net.bridge();
        if let Err(e) = netlink.set_mtu(&bridge, mtu).await {
            log::warn!("{e:#}");
        }
    }
}

/// The endpoint's host-side port, and its interface: in its container (found by its MAC), or
/// on the host for a host-joined one.
async fn follow_endpoint(netlink: &Netlink, ep: &Endpoint, mtu: u32) -> anyhow::Result<()> {
    let Location::Node { port, iface, .. } = &ep.location else {
        return Ok(());
    };
    netlink.set_mtu(port, mtu).await?;
    match (&ep.netns, iface) {
        (Some(ns), _) => {
            let inner = Netlink::in_netns(&open_netns(ns)?)?;
            if let Some(name) = inner.name_with_mac(ep.mac).await? {
                inner.set_mtu(&name, mtu).await?;
            }
        }
        (None, Some(iface)) => {
            netlink.set_mtu(iface, mtu).await?;
        }
        (None, None) => {}
    }
    Ok(())
}
