//! NetworkDriver: Docker networks onto overlay networks, Docker endpoints onto attachments.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::{
    Driver,
    protocol::{
        CreateEndpoint, CreateEndpointReply, CreateNetwork, EndpointInterface, EndpointRef,
        GENERIC_OPTIONS, INTERNAL, InterfaceName, JoinReply, NetworkRef, ROUTE_NEXTHOP,
        StaticRoute,
    },
    state::DockerNetwork,
};
use crate::{
    cli::commands::{self, Attach, NetworkSpec},
    shared::{
        ipam::{Cidr, Subnet6},
        net::Mac,
    },
    store::schema::{MAX_VNI, Network},
};

/// The endpoint's name in etcd: Docker's EndpointID is 64 hex digits, its first 12 are what
/// `docker` prints.
pub fn endpoint_name(endpoint_id: &str) -> String {
    format!("docker-{}", endpoint_id.get(..12).unwrap_or(endpoint_id))
}

/// The overlay network's name when `-o network=NAME` does not give one: from the subnet, so
/// every host derives the same.
pub fn default_network_name(subnet: Cidr) -> String {
    format!("docker-{}-{}", subnet.addr(), subnet.prefix())
}

/// The `-o` options we know: `vni=N`, `network=NAME`.
#[derive(Debug, Default, PartialEq, Eq)]
struct DriverOptions {
    vni: Option<u32>,
    network: Option<String>,
}

fn driver_options(options: &serde_json::Map<String, Value>) -> Result<DriverOptions> {
    let mut out = DriverOptions::default();
    for (key, value) in options {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match key.as_str() {
            "vni" => {
                out.vni = Some(
                    text.parse()
                        .ok()
                        .filter(|v| (1..=MAX_VNI).contains(v))
                        .with_context(|| {
                            let text = crate::shared::text::one_line(&text);
                            format!("-o vni={text}: a VNI is a number from 1 to {MAX_VNI}")
                        })?,
                )
            }
            "network" => out.network = Some(text),
            _ => bail!(
                "unknown option -o {}: overlay-ebpf knows -o vni=N and -o network=NAME",
                crate::shared::text::one_line(key)
            ),
        }
    }
    Ok(out)
}

/// The lowest VNI no network uses.
fn free_vni(networks: &[Network]) -> u32 {
    (1..=MAX_VNI)
        .find(|v| networks.iter().all(|n| n.vni != *v))
        .unwrap_or(MAX_VNI)
}

impl Driver {
    pub(super) async fn create_network(&self, req: CreateNetwork) -> Result<()> {
        let pools = req.ipv4_data.unwrap_or_default();
        let [pool] = pools.as_slice() else {
            bail!("one IPv4 --subnet is needed, Docker passed {}", pools.len());
        };
        let subnet: Cidr = pool.pool.parse()?;
        // --ipv6: a dual-stack overlay network, its IPv6 prefix the IPv6 --subnet.
        let subnet6: Option<Subnet6> = match req.ipv6_data.unwrap_or_default().as_slice() {
            [] => None,
            [pool] => Some(pool.pool.parse()?),
            more => bail!("at most one IPv6 --subnet, Docker passed {}", more.len()),
        };
        let internal = matches!(req.options.get(INTERNAL), Some(Value::Bool(true)));
        let opts = match req.options.get(GENERIC_OPTIONS) {
            Some(Value::Object(generic)) => driver_options(generic)?,
            _ => DriverOptions::default(),
        };
        let net = self
            .overlay_network(subnet, subnet6, &opts, internal)
            .await?;
        log::info!(
            "Docker network {} is overlay network {} (VNI {}, {}{}){}",
            short(&req.network_id),
            net.name,
            net.vni,
            net.subnet,
            subnet6.map_or(String::new(), |s| format!(" and {s}")),
            if internal { ", internal" } else { "" }
        );
        self.update_state(|s| {
            s.networks.insert(
                req.network_id,
                DockerNetwork {
                    network: net.name,
                    internal,
                },
            )
        })?;
        Ok(())
    }

    /// The overlay network for `subnet`: the one named by `-o network` or else the one with
    /// that subnet, made if there is none. Another host may make it at the same moment (or
    /// take the VNI we picked): then the next round finds theirs or picks another VNI. A
    /// Docker network with IPv6 needs an overlay network with that IPv6 prefix; one without
    /// may use a dual-stack overlay network (its containers then have IPv4 only).
    async fn overlay_network(
        &self,
        subnet: Cidr,
        subnet6: Option<Subnet6>,
        opts: &DriverOptions,
        internal: bool,
    ) -> Result<Network> {
        let store = &self.ctx.store;
        let mut last = None;
        for _ in 0..4 {
            let networks = store.networks().await?;
            let found = match &opts.network {
                Some(name) => networks.iter().find(|n| &n.name == name),
                None => networks.iter().find(|n| n.subnet == subnet),
            };
            if let Some(net) = found {
                ensure!(
                    net.subnet == subnet,
                    "overlay network {} has subnet {}, not {subnet}",
                    net.name,
                    net.subnet
                );
                if let Some(prefix) = subnet6 {
                    ensure!(
                        net.subnet6 == Some(prefix),
                        "overlay network {} has {}, not {prefix}",
                        net.name,
                        net.subnet6
                            .map_or("no IPv6 prefix".to_string(), |s| format!("IPv6 prefix {s}"))
                    );
                }
                if let Some(vni) = opts.vni {
                    ensure!(
                        net.vni == vni,
                        "overlay network {} has VNI {}, not {vni}",
                        net.name,
                        net.vni
                    );
                }
                return Ok(net.clone());
            }
            let net = NetworkSpec {
                name: opts
                    .network
                    .clone()
                    .unwrap_or_else(|| default_network_name(subnet)),
                subnet,
                vni: opts.vni.unwrap_or_else(|| free_vni(&networks)),
                port: overlay_common::wire::DEFAULT_VXLAN_PORT,
                mtu: None,
                slice_prefix: None,
                subnet6,
                bum_rate: None,
                // Docker's --internal makes an internal overlay network: no way out in the
                // dataplane either.
                internal,
            }
            .validate()?;
            match commands::network_create(store, &net).await {
                Ok(_) => {
                    log::info!("created overlay network {} in etcd", net.name);
                    return Ok(net);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Forgets the mapping only: the overlay network stays in etcd, other hosts use it.
    pub(super) fn delete_network(&self, req: NetworkRef) -> Result<()> {
        if let Some(gone) = self.update_state(|s| s.networks.remove(&req.network_id))? {
            log::info!(
                "Docker network {} (overlay network {}) removed here",
                short(&req.network_id),
                gone.network
            );
        }
        Ok(())
    }

    fn network_of(&self, network_id: &str) -> Result<DockerNetwork> {
        self.docker_network(network_id).with_context(|| {
            format!(
                "Docker network {} is unknown to this driver (no entry in {}); remove and create it again",
                short(network_id),
                self.state_file.display()
            )
        })
    }

    pub(super) async fn create_endpoint(&self, req: CreateEndpoint) -> Result<CreateEndpointReply> {
        let net = self.network_of(&req.network_id)?;
        let services = req.services();
        let iface = req.interface.unwrap_or_default();
        let ip: Ipv4Addr = iface
            .address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| {
                format!(
                    "Docker gave no IPv4 address ({:?}): create the network with --ipam-driver overlay-ebpf",
                    iface.address
                )
            })?;
        if !iface.address_ipv6.is_empty() {
            self.check_ipv6(&net.network, ip, &iface.address_ipv6)
                .await?;
        }
        let mac = Mac::from_ip(ip);
        if !iface.mac_address.is_empty() {
            let given: Mac = iface.mac_address.parse()?;
            ensure!(
                given == mac,
                "MAC {given} refused: the overlay derives an endpoint's MAC from its address ({mac} for {ip})"
            );
        }
        let name = endpoint_name(&req.endpoint_id);
        // A name refused (Docker's ID is outside input) fails like a failed make: the pending
        // address is let go below either way.
        let made = match Attach::new(name.clone(), net.network.clone(), Some(ip)) {
            Ok(mut attach) => {
                attach.owner = Some("docker".to_string());
                attach.services = services;
                commands::endpoint_make(&self.ctx, &attach, None).await
            }
            Err(e) => Err(e),
        };
        // Claimed in etcd now, or failed (Docker then gives the address back).
        self.pending.lock().await.remove(ip);
        if let Err(e) = &made
            && let Some(left) = e.downcast_ref::<commands::MayRemain>()
        {
            // Docker's next attempt comes with a new EndpointID, never replacing this one's
            // record: the driver, which outlives the attempt, finishes the undo itself.
            let (store, ep) = (self.ctx.store.clone(), left.0.clone());
            tokio::spawn(commands::unregister_eventually(store, ep));
        }
        let made = made?;
        log::info!(
            "endpoint {} ({ip}) on overlay network {}: {} for the container",
            name,
            net.network,
            made.peer
        );
        if !commands::wait_served(&self.ctx, &made.endpoint, true).await? {
            log::warn!(
                "node {}'s maps do not show endpoint {} yet; is `overlay-agent run` running for it?",
                self.ctx.node,
                name
            );
        }
        Ok(CreateEndpointReply {
            interface: EndpointInterface {
                mac_address: if iface.mac_address.is_empty() {
                    mac.to_string()
                } else {
                    String::new()
                },
                ..Default::default()
            },
        })
    }

    /// The IPv6 address Docker gives an endpoint must be the one the overlay derives from its
    /// IPv4 address (our IPAM hands out no other): the dataplane drops anything else it sends.
    async fn check_ipv6(&self, network: &str, ip: Ipv4Addr, given: &str) -> Result<()> {
        let net = self.ctx.store.network(network).await?;
        let want = net.ipv6_of(ip).with_context(|| {
            format!("overlay network {network} has no IPv6 prefix (Docker gave {given})")
        })?;
        let addr: Option<Ipv6Addr> = given.split('/').next().and_then(|a| a.parse().ok());
        ensure!(
            addr == Some(want),
            "IPv6 address {given} refused: the overlay derives {want} from {ip}; create the network with --ipam-driver overlay-ebpf"
        );
        Ok(())
    }

    /// Docker moves the peer into the container and names it eth<n>. No IPv4 Gateway: on an
    /// internal network Docker adds nothing, on another it adds its own docker_gwbridge
    /// interface with the default route and its own NAT, which Docker users know and expect
    /// (`docker network inspect docker_gwbridge`); our IPv4 gateway serves the CLI and CNI.
    /// docker_gwbridge has no IPv6, so a dual-stack network's IPv6 way out is ours
    /// (syncs/egress.rs): its IPv6 gateway, as `GatewayIPv6` and a `::/0` route.
    pub(super) async fn join(&self, req: EndpointRef) -> Result<JoinReply> {
        let network = self.endpoint_network(&req).await?;
        // The container's namespace is known only now: into its record, so the agent can
        // make it a member whose sockets are balanced to the network's services (it checks
        // the namespace holds the endpoint first). A failure costs balancing, not the Join.
        if !req.sandbox_key.is_empty() {
            let name = endpoint_name(&req.endpoint_id);
            if let Err(e) = commands::endpoint_set_netns(&self.ctx, &name, &req.sandbox_key).await {
                log::warn!("endpoint {name}: its namespace not recorded: {e:#}");
            }
        }
        let gateway6 = self
            .ctx
            .store
            .network(&network)
            .await
            .with_context(|| format!("reading overlay network {network}"))?
            .gateway6();
        Ok(JoinReply {
            interface_name: InterfaceName {
                src_name: crate::shared::ifnames::peer_name(
                    &network,
                    &endpoint_name(&req.endpoint_id),
                ),
                dst_prefix: "eth".to_string(),
            },
            gateway_ipv6: gateway6.map_or(String::new(), |gw| gw.to_string()),
            static_routes: gateway6
                .map(|gw| StaticRoute {
                    destination: "::/0".to_string(),
                    route_type: ROUTE_NEXTHOP,
                    next_hop: gw.to_string(),
                })
                .into_iter()
                .collect(),
        })
    }

    pub(super) async fn delete_endpoint(&self, req: EndpointRef) -> Result<()> {
        let name = endpoint_name(&req.endpoint_id);
        let network = match self.endpoint_network(&req).await {
            Ok(network) => network,
            // Neither the state nor etcd knows it: nothing of it is left to remove.
            Err(e) => {
                log::info!("endpoint {name}: nothing to remove ({e:#})");
                return Ok(());
            }
        };
        let gone = commands::endpoint_release(&self.ctx, &network, &name).await?;
        log::info!(
            "endpoint {name} of overlay network {network} removed{}",
            gone.map_or(String::new(), |ep| format!(" ({} released)", ep.ip))
        );
        Ok(())
    }

    /// The overlay network of a Docker endpoint: from the state, else from etcd's name record.
    async fn endpoint_network(&self, req: &EndpointRef) -> Result<String> {
        if let Some(net) = self.docker_network(&req.network_id) {
            return Ok(net.network);
        }
        let name = endpoint_name(&req.endpoint_id);
        match self.ctx.store.endpoint_named(&self.ctx.node, &name).await? {
            Some(ep) => Ok(ep.network),
            None => self.network_of(&req.network_id).map(|n| n.network),
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_docker_ids_and_subnets() {
        let id = "4f1c3a9e0b7d2c6e8a5f1b3d9c7e0a2f4b6d8c1e3a5f7b9d0c2e4a6f8b1d3c5e";
        assert_eq!(endpoint_name(id), "docker-4f1c3a9e0b7d");
        assert_eq!(endpoint_name("abc"), "docker-abc");
        let subnet = "10.20.0.0/16".parse().unwrap();
        assert_eq!(default_network_name(subnet), "docker-10.20.0.0-16");
        crate::store::schema::check_name("network", &default_network_name(subnet)).unwrap();
    }

    #[test]
    fn driver_options_are_checked() {
        let opts = |v: Value| driver_options(v.as_object().unwrap());
        assert_eq!(
            opts(serde_json::json!({"vni": "42", "network": "blue"})).unwrap(),
            DriverOptions {
                vni: Some(42),
                network: Some("blue".into())
            }
        );
        assert_eq!(
            opts(serde_json::json!({})).unwrap(),
            DriverOptions::default()
        );
        for (bad, says) in [
            (serde_json::json!({"vni": "0"}), "1 to 16777215"),
            (serde_json::json!({"vni": "x"}), "1 to 16777215"),
            (serde_json::json!({"vnl": "4"}), "unknown option -o vnl"),
        ] {
            let err = format!("{:#}", opts(bad).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }
}

/// `docker network create -o` options arrive as any JSON: read or refused in one line.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::fuzzing::{CASES, one_line, record};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn driver_options_are_read_or_refused_in_one_line(options in record(&["vni", "network"])) {
            match driver_options(options.as_object().unwrap()) {
                Ok(opts) => prop_assert!(opts.vni.is_none_or(|v| (1..=MAX_VNI).contains(&v))),
                Err(e) => one_line(&e)?,
            }
        }
    }
}
