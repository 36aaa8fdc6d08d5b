//! `service create / ls / rm`: load-balanced services of a network. A service is a record and
//! a VIP held in etcd (store/services.rs); its backends are the endpoints that name it
//! (`endpoint add --service`, the CNI key `services`, Docker's `com.overlay.service`), and
//! every node's agent balances its containers' connections to the VIP (syncs/services/).
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use serde_json::json;

use crate::{
    cli::inspect::{Col, Rows, text},
    store::{
        Store,
        schema::{self, Endpoint, HealthRecord, Network},
        services::{Publish, Service, ServicePort, ServiceRecord, check_vip},
    },
};

/// What `service create` asks for.
pub struct ServiceSpec {
    pub name: String,
    pub network: String,
    pub ports: Vec<ServicePort>,
    /// The VIP (default: the highest free address of the network's subnet).
    pub vip: Option<Ipv4Addr>,
    pub publish: Vec<Publish>,
}

impl ServiceSpec {
    /// Checks everything that can be checked without etcd, as a stored record is checked.
    fn validate(&self, vip: Ipv4Addr) -> Result<Service> {
        ServiceRecord {
            vip,
            ports: self.ports.clone(),
            publish: self.publish.clone(),
        }
        .validate(&self.network, &self.name)
    }
}

/// Creates a service and reserves its VIP; nothing is written unless both can be.
pub async fn service_create(store: &Store, spec: &ServiceSpec) -> Result<Service> {
    // The name and ports first, before etcd is asked anything.
    spec.validate(Ipv4Addr::UNSPECIFIED)?;
    let net = store.network(&spec.network).await?;
    check_published(store, spec).await?;
    if let Some(vip) = spec.vip {
        check_vip(&net, vip)?;
        let svc = spec.validate(vip)?;
        if store.create_service(&svc).await? {
            return Ok(svc);
        }
        bail!(
            "{vip} is already taken in network {} (an endpoint's or another service's)",
            net.name
        );
    }
    let taken = store.taken_addresses(&net.name).await?;
    for vip in from_the_top(&net).filter(|ip| !taken.contains(ip)) {
        // Lost a race for this address: try the next.
        let svc = spec.validate(vip)?;
        if store.create_service(&svc).await? {
            return Ok(svc);
        }
    }
    bail!("network {} has no free address for a VIP", net.name)
}

/// TCP ports of every node a published port would take from the node itself: SSH, etcd's
/// client and peer ports, and the metrics port the docs use (`--metrics-addr ...:9100`).
const NODE_TCP_PORTS: &[(u16, &str)] = &[
    (22, "SSH's"),
    (2379, "etcd's client port"),
    (2380, "etcd's peer port"),
    (9100, "the agent's metrics port"),
];

/// A published port is served on every node's underlay address: it may not be a port the
/// overlay or the node needs there (a network's VXLAN port, VXLAN's 4789 and 8472, the ports
/// of [`NODE_TCP_PORTS`]), nor one another service already publishes.
async fn check_published(store: &Store, spec: &ServiceSpec) -> Result<()> {
    if spec.publish.is_empty() {
        return Ok(());
    }
    let mut vxlan: Vec<u16> = store.networks().await?.iter().map(|n| n.port).collect();
    vxlan.extend([4789, 8472]);
    let others = store.services(None).await?;
    for p in &spec.publish {
        let proto = p.proto.number();
        if proto == overlay_common::proto::UDP && vxlan.contains(&p.published) {
            bail!(
                "cannot publish {p}: UDP port {} is VXLAN's on the nodes",
                p.published
            );
        }
        if proto == overlay_common::proto::TCP
            && let Some((_, what)) = NODE_TCP_PORTS.iter().find(|(n, _)| *n == p.published)
        {
            bail!("cannot publish {p}: TCP port {} is {what}", p.published);
        }
        if let Some(o) = others.iter().find(|o| {
            o.publish
                .iter()
                .any(|q| q.published == p.published && q.proto == p.proto)
        }) {
            bail!(
                "cannot publish {p}: service {} of network {} publishes it",
                o.name,
                o.network
            );
        }
    }
    Ok(())
}

/// The network's host addresses from the highest down, its gateway left out: VIPs come from
/// the end of the subnet as endpoints' addresses come from the slices at its start.
fn from_the_top(net: &Network) -> impl Iterator<Item = Ipv4Addr> + use<> {
    let (low, high) = (
        u32::from(net.subnet.network()),
        u32::from(net.subnet.broadcast()),
    );
    let gateway = net.gateway();
    (low + 1..high)
        .rev()
        .map(Ipv4Addr::from)
        .filter(move |ip| Some(*ip) != gateway)
}

/// Removes a service and frees its VIP. Its backends' endpoints keep naming it (a service
/// created again under the name has them back).
pub async fn service_rm(store: &Store, network: &str, name: &str) -> Result<Service> {
    store.delete_service(network, name).await
}

/// `service ls`'s table columns.
pub const SERVICE_COLUMNS: &[Col] = &[
    text("network"),
    text("name"),
    text("vip"),
    text("ports"),
    text("backends"),
];

/// `service ls`: each service, its VIP and ports, and its backends per node with their health
/// (`health`: every node's record, believed only about its own endpoints).
pub fn render(
    services: &[Service],
    endpoints: &[Endpoint],
    health: &BTreeMap<String, HealthRecord>,
    json: bool,
) -> String {
    // A backend's health: "healthy", or the TCP ports its node finds not answering.
    let health_of = |ep: &Endpoint| -> String {
        match schema::failing(health, ep) {
            None => "healthy".into(),
            Some(ports) => {
                let ports: Vec<String> = ports.iter().map(|p| format!("{p}/tcp")).collect();
                format!("unhealthy ({} not answering)", ports.join(","))
            }
        }
    };
    let health_map = |svc: &Service| -> BTreeMap<String, String> {
        endpoints
            .iter()
            .filter(|e| e.network == svc.network && e.services.contains(&svc.name))
            .map(|ep| (ep.ip.to_string(), health_of(ep)))
            .collect()
    };
    let backends = |svc: &Service| -> BTreeMap<String, Vec<Ipv4Addr>> {
        let mut by_node: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for ep in endpoints
            .iter()
            .filter(|e| e.network == svc.network && e.services.contains(&svc.name))
        {
            let node = ep.node().unwrap_or("(peer)").to_string();
            by_node.entry(node).or_default().push(ep.ip);
        }
        by_node
    };
    let ports = |svc: &Service| svc.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    if json {
        let all: Vec<_> = services
            .iter()
            .map(|s| {
                json!({
                    "network": s.network,
                    "name": s.name,
                    "vip": s.vip.to_string(),
                    "ports": ports(s),
                    "backends": backends(s),
                    "health": health_map(s),
                })
            })
            .collect();
        return serde_json::to_string_pretty(&all).expect("services serialize") + "\n";
    }
    Rows {
        columns: SERVICE_COLUMNS,
        rows: services
            .iter()
            .map(|s| {
                let health = health_map(s);
                let per_node: Vec<String> = backends(s)
                    .into_iter()
                    .map(|(node, ips)| {
                        let ips: Vec<String> = ips
                            .iter()
                            .map(|ip| {
                                let ip = ip.to_string();
                                match health.get(&ip).map(String::as_str) {
                                    Some("healthy") | None => ip,
                                    Some(why) => format!("{ip} {why}"),
                                }
                            })
                            .collect();
                        format!("{node}: {}", ips.join(","))
                    })
                    .collect();
                vec![
                    s.network.clone(),
                    s.name.clone(),
                    s.vip.to_string(),
                    ports(s).join(","),
                    if per_node.is_empty() {
                        "-".into()
                    } else {
                        per_node.join("; ")
                    },
                ]
            })
            .collect(),
    }
    .to_table()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{self, NetworkRecord};

    #[test]
    fn vips_come_from_the_top_of_the_subnet_never_the_gateway() {
        let net = |json: &str| {
            schema::decode::<NetworkRecord>(json.as_bytes())
                .unwrap()
                .validate("blue")
                .unwrap()
        };
        let top: Vec<Ipv4Addr> = from_the_top(&net(r#"{"vni":42,"subnet":"10.10.0.0/30"}"#))
            .take(3)
            .collect();
        // 10.10.0.1 is the gateway; .0 and .3 are not host addresses.
        assert_eq!(top, [Ipv4Addr::new(10, 10, 0, 2)]);
        let internal = net(r#"{"vni":42,"subnet":"10.10.0.0/30","internal":true}"#);
        assert_eq!(from_the_top(&internal).count(), 2);
    }
}
