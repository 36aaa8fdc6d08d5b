//! The overlay's interface MTUs follow the underlay's. A network without an MTU of its own gives
//! its interfaces the underlay's less the tunnel's 50 bytes (70 over IPv6); when the underlay's changes (jumbo
//! frames turned on, a link moved to a smaller one), the agent sets this node's interfaces of
//! those networks to the new value: the bridge, each endpoint's host-side port and its
//! interface inside the container. Until then, and for any interface it cannot reach, the
//! dataplane answers a packet too big for the tunnel with an ICMP error (pmtu.rs in the
//! programs), so nothing is lost in silence either way.
use super::{Kernel, NodeSync, View};
use crate::{
    model::cluster::ClusterState,
    netlink::{Netlink, open_netns},
    store::schema::{Endpoint, Location},
};

/// The MTU sync: it acts when the underlay's MTU changed since the interfaces were last set.
pub struct Mtu {
    /// The underlay MTU this node's interfaces were last set for (at start: the one they were
    /// made with).
    followed: Option<u32>,
}

impl Mtu {
    pub fn new(underlay_mtu: Option<u32>) -> Self {
        Self {
            followed: underlay_mtu,
        }
    }
}

/// One interface's MTU to set, in the order they are set.
#[derive(Debug)]
pub enum Setting {
    /// An endpoint of `network` on this node: its host-side port and its interface.
    Endpoint {
        network: String,
        /// Boxed: an endpoint is ten times a bridge's setting.
        endpoint: Box<Endpoint>,
        mtu: u32,
    },
    /// A network's bridge.
    Bridge { name: String, mtu: u32 },
}

/// What the MTU sync wants when the underlay's changed.
#[derive(Debug)]
pub struct Follow {
    pub underlay_mtu: u32,
    pub settings: Vec<Setting>,
}

impl NodeSync for Mtu {
    /// None while the underlay's MTU is the one the interfaces follow.
    type Want = Option<Follow>;

    fn want(&self, view: &View<'_>) -> Option<Follow> {
        let now = view.underlay_mtu?;
        (self.followed != Some(now)).then(|| Follow {
            underlay_mtu: now,
            settings: settings(view.cluster, view.node, now, view.ipv6),
        })
    }

    async fn apply(&mut self, want: Option<Follow>, kernel: &mut Kernel<'_>) {
        let Some(follow) = want else { return };
        for setting in &follow.settings {
            match setting {
                Setting::Endpoint {
                    network,
                    endpoint,
                    mtu,
                } => {
                    if let Err(e) = follow_endpoint(kernel.netlink, endpoint, *mtu).await {
                        log::warn!(
                            "endpoint {network}/{}: MTU not set to {mtu}: {e:#}",
                            endpoint.name
                        );
                    }
                }
                Setting::Bridge { name, mtu } => {
                    if let Err(e) = kernel.netlink.set_mtu(name, *mtu).await {
                        log::warn!("{e:#}");
                    }
                }
            }
        }
        self.followed = Some(follow.underlay_mtu);
    }
}

/// The MTU of every interface of this node (`node`) in networks without an MTU of their own,
/// for an underlay of `underlay_mtu` (IPv6 if `ipv6`): per network, its ports, then its bridge.
pub fn settings(cluster: &ClusterState, node: &str, underlay_mtu: u32, ipv6: bool) -> Vec<Setting> {
    let mut out = Vec::new();
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
            out.push(Setting::Endpoint {
                network: name.clone(),
                endpoint: Box::new(ep.clone()),
                mtu,
            });
        }
        out.push(Setting::Bridge {
            name: net.bridge(),
            mtu,
        });
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::state::MapState, shared::ifnames, syncs::testing};

    fn endpoint(net: &str, name: &str, node: &str) -> String {
        let port = ifnames::port_name(net, name);
        format!(
            r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:0a:01:02","node":"{node}","port":"{port}"}}"#
        )
    }

    #[test]
    fn a_changed_underlay_sets_this_nodes_ports_then_bridges_of_networks_without_their_own() {
        let (c1, c2, c3) = (
            endpoint("blue", "c1", "h1"),
            endpoint("blue", "c2", "h2"),
            endpoint("red", "c3", "h1"),
        );
        let cluster = testing::cluster(&[
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","mtu":1400}"#,
            ),
            ("endpoints/blue/10.10.1.2", &c1),
            ("endpoints/blue/10.10.1.3", &c2),
            ("endpoints/red/10.20.1.2", &c3),
        ]);
        let applied = MapState::default();
        let view = testing::view(&cluster, &applied);
        assert!(Mtu::new(Some(1500)).want(&view).is_none());
        let view = View {
            underlay_mtu: Some(9000),
            ..view
        };
        let follow = Mtu::new(Some(1500)).want(&view).unwrap();
        assert_eq!(follow.underlay_mtu, 9000);
        let set: Vec<String> = follow
            .settings
            .iter()
            .map(|s| match s {
                Setting::Endpoint {
                    network,
                    endpoint,
                    mtu,
                } => format!("{network}/{} {mtu}", endpoint.name),
                Setting::Bridge { name, mtu } => format!("{name} {mtu}"),
            })
            .collect();
        assert_eq!(set, ["blue/c1 8950", "ovbr42 8950"]);
    }
}
