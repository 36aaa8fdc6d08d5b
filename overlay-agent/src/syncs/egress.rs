//! The way out of the overlay: each node is the gateway of its own containers. On every node
//! that serves a network (unless it is internal), the network's bridge holds the gateway
//! address (the subnet's first host, the same everywhere, so a container's default route never
//! hairpins through another host), each local container has a /32 route to its bridge (for the
//! replies: the host has no route to the overlay otherwise, and a host-joined interface's
//! on-link route must not take them), and nftables masquerades what leaves for a destination
//! outside every overlay network, with the host's own address. The one owner of the `ip
//! overlay` table, which it writes whole through the `nft` JSON interface.
//!
//! Isolation stays Docker's: networks do not route into each other through their gateways
//! (forwarding between overlay bridges is dropped), and an internal network's bridge forwards
//! nothing (its containers have no gateway, and the dataplane drops what tries: drop_internal).
//!
//! An internal network's bridge holds the subnet's first address too, for the node's resolver
//! alone (syncs/dns/): the dataplane lets a container's DNS queries (UDP and TCP to port 53)
//! reach the host, the input rules here take them only to that address, and the /32 routes to
//! the network's containers carry the answers back. Nothing is forwarded into or out of the
//! bridge.
//!
//! A dual-stack network's way out over IPv6 is the same, from the same plan: the gateway's IPv6
//! address (`Network::gateway6`, the IPv4 gateway's inside the prefix) on the bridge as a /128,
//! /128 routes to the local containers' IPv6 addresses, the same isolation and masquerade in
//! an `ip6 overlay` table beside the `ip` one (present while a served network is dual-stack),
//! and IPv6 forwarding on (`netlink::ipv6_forwarding_all` says why it is the node's switch,
//! not a bridge's). The container finds the gateway by neighbour discovery: the dataplane
//! answers solicitations only for endpoints, and leaves this one to the bridge, where the
//! host answers for the address it holds.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Kernel, NodeSync, View};
use crate::{
    dataplane::state::MapState,
    model::{cluster::ClusterState, names::resolver_address},
    netlink::Netlink,
    shared::ipam::{Cidr, Subnet6},
};

/// nftables tables (families ip and ip6) that hold every rule of ours, and nothing else.
pub const TABLE: &str = "overlay";
/// The routing protocol number our /32 routes carry (`ip route show proto 79`), so they can be
/// told from anyone else's.
pub const ROUTE_PROTOCOL: u8 = 79;

/// The gateway is a /32 on the bridge: the host answers ARP for it there all the same, and no
/// on-link route to the subnet competes with a host-joined interface's.
const GATEWAY_PREFIX: u8 = 32;
/// The IPv6 gateway likewise: a /128, so the containers' prefix stays theirs alone.
const GATEWAY6_PREFIX: u8 = 128;

/// The nftables families of our two tables.
const FAMILIES: [&str; 2] = ["ip", "ip6"];

/// What the node must hold for the served networks' way out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bridge -> the gateway address it holds (as a /32: see [`GATEWAY_PREFIX`]).
    pub gateways: BTreeMap<String, Ipv4Addr>,
    /// Bridge -> the IPv6 gateway it holds, on dual-stack networks (a /128).
    pub gateways6: BTreeMap<String, Ipv6Addr>,
    /// Local containers of networks with a gateway: address (and on a dual-stack network its
    /// IPv6 one too) -> their bridge.
    pub routes: BTreeMap<IpAddr, String>,
    /// Subnets whose traffic leaving the overlay is masqueraded.
    pub masquerade: BTreeSet<Cidr>,
    /// IPv6 prefixes whose traffic leaving the overlay is masqueraded.
    pub masquerade6: BTreeSet<Subnet6>,
    /// Every served subnet: traffic to them is never NATed.
    pub overlay: BTreeSet<Cidr>,
    /// Every served IPv6 prefix, likewise.
    pub overlay6: BTreeSet<Subnet6>,
    /// Bridges of internal networks: nothing is forwarded from them.
    pub internal: BTreeSet<String>,
    /// Internal networks' bridges -> the address their resolver answers on (a /32, names
    /// only: the host takes nothing else from them).
    pub resolvers: BTreeMap<String, Ipv4Addr>,
}

/// The plan for what `applied` serves (pure).
pub fn plan(cluster: &ClusterState, applied: &MapState) -> Plan {
    let mut p = Plan::default();
    let served: BTreeMap<u32, _> = cluster
        .networks
        .values()
        .filter(|n| applied.networks.contains_key(&n.vni))
        .map(|n| (n.vni, n))
        .collect();
    for net in served.values() {
        p.overlay.insert(net.subnet);
        p.overlay6.extend(net.subnet6);
        if let (Some(gw6), Some(prefix)) = (net.gateway6(), net.subnet6) {
            p.gateways6.insert(net.bridge(), gw6);
            p.masquerade6.insert(prefix);
        }
        match net.gateway() {
            Some(gw) => {
                p.gateways.insert(net.bridge(), gw);
                p.masquerade.insert(net.subnet);
            }
            None => {
                p.internal.insert(net.bridge());
                if let Some(addr) = resolver_address(cluster, net) {
                    p.resolvers.insert(net.bridge(), addr);
                }
            }
        }
    }
    for ep in applied.endpoints.values() {
        if ep.deliver != overlay_common::deliver::PEER {
            continue;
        }
        // The gateway's replies, or the resolver's.
        if let Some(net) = served
            .get(&ep.vni)
            .filter(|n| n.gateway().is_some() || p.resolvers.contains_key(&n.bridge()))
        {
            let ip = Ipv4Addr::from(ep.ip);
            p.routes.insert(ip.into(), net.bridge());
            // The IPv6 gateway's replies (the resolver answers over IPv4 only).
            if net.gateway6().is_some()
                && let Some(ip6) = net.ipv6_of(ip)
            {
                p.routes.insert(ip6.into(), net.bridge());
            }
        }
    }
    p
}

fn prefix(c: &Cidr) -> Value {
    json!({"prefix": {"addr": c.network().to_string(), "len": c.prefix()}})
}

fn prefix6(s: &Subnet6) -> Value {
    json!({"prefix": {"addr": s.network().to_string(), "len": s.prefix()}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn iifname(name: &str) -> Value {
    ifname("iifname", "==", name)
}

fn iifname_not(name: &str) -> Value {
    ifname("iifname", "!=", name)
}

fn oifname(op: &str, name: &str) -> Value {
    ifname("oifname", op, name)
}

/// `meta iifname|oifname <op> name` (a trailing `*` is a wildcard, as in nft's own syntax).
fn ifname(key: &str, op: &str, name: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": name}})
}

/// Both tables, as one `nft -j` transaction that replaces what was there (ours from an
/// earlier run included: restarts adopt, never duplicate). The `ip6` table exists while a
/// served network is dual-stack. Pure.
pub fn ruleset(plan: &Plan) -> Value {
    let mut cmds = Vec::new();
    for family in FAMILIES {
        let table = json!({"table": {"family": family, "name": TABLE}});
        // Adding first makes the delete succeed when there is no table yet.
        cmds.push(json!({"add": table}));
        cmds.push(json!({"delete": table}));
        if family == "ip6" && plan.overlay6.is_empty() {
            continue;
        }
        cmds.push(json!({"add": table}));
        for (name, kind, hook, prio) in [
            ("postrouting", "nat", "postrouting", 100),
            ("forward", "filter", "forward", 0),
            ("input", "filter", "input", 0),
        ] {
            cmds.push(
                json!({"add": {"chain": {"family": family, "table": TABLE, "name": name,
                "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}}),
            );
        }
        cmds.extend(isolation(family, plan));
        if family == "ip" {
            cmds.extend(resolver_input(plan));
            let overlay: Vec<Value> = plan.overlay.iter().map(prefix).collect();
            cmds.extend(
                plan.masquerade.iter().map(|subnet| {
                    masquerade(family, prefix(subnet), Value::Array(overlay.clone()))
                }),
            );
        } else {
            let overlay: Vec<Value> = plan.overlay6.iter().map(prefix6).collect();
            cmds.extend(
                plan.masquerade6.iter().map(|subnet| {
                    masquerade(family, prefix6(subnet), Value::Array(overlay.clone()))
                }),
            );
        }
    }
    json!({"nftables": cmds})
}

/// The forward rules, the same for both families (they name interfaces only): networks do
/// not route into each other, nothing leaves an internal network, nothing is routed into one.
fn isolation(family: &str, plan: &Plan) -> Vec<Value> {
    let mut cmds = Vec::new();
    // With br_netfilter on (Docker loads it), frames bridged between two ports of one bridge
    // pass this hook too, in and out by that bridge: every rule names the bridge it comes
    // from and spares traffic that stays on it.
    for bridge in plan.gateways.keys() {
        // Networks never route into each other through their gateways.
        cmds.push(rule(
            family,
            "forward",
            vec![
                iifname(bridge),
                oifname("==", &crate::shared::ifnames::bridge_glob()),
                oifname("!=", bridge),
                json!({"counter": null}),
                json!({"drop": null}),
            ],
        ));
    }
    for bridge in &plan.internal {
        // Nothing leaves an internal network.
        cmds.push(rule(
            family,
            "forward",
            vec![
                iifname(bridge),
                oifname("!=", bridge),
                json!({"counter": null}),
                json!({"drop": null}),
            ],
        ));
    }
    for bridge in plan.resolvers.keys() {
        // The routes to its containers are for the resolver's answers: nothing is routed in.
        cmds.push(rule(
            family,
            "forward",
            vec![
                oifname("==", bridge),
                iifname_not(bridge),
                json!({"counter": null}),
                json!({"drop": null}),
            ],
        ));
    }
    cmds
}

/// Of what the dataplane lets reach the host from an internal network (IPv4 DNS queries),
/// only those to the resolver's address: not the host's other addresses, or the services on
/// them.
fn resolver_input(plan: &Plan) -> Vec<Value> {
    plan.resolvers
        .iter()
        .map(|(bridge, resolver)| {
            rule(
                "ip",
                "input",
                vec![
                    iifname(bridge),
                    json!({"match": {"op": "==", "left": {"meta": {"key": "pkttype"}}, "right": "host"}}),
                    json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": resolver.to_string()}}),
                    json!({"counter": null}),
                    json!({"drop": null}),
                ],
            )
        })
        .collect()
}

/// What leaves `subnet` for a destination outside every overlay network leaves with the
/// host's own address.
fn masquerade(family: &str, subnet: Value, overlay: Value) -> Value {
    rule(
        family,
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": family, "field": "saddr"}}, "right": subnet}}),
            json!({"match": {"op": "!=", "left": {"payload": {"protocol": family, "field": "daddr"}}, "right": {"set": overlay}}}),
            // Out of the overlay only: a broadcast bridged between containers (which
            // br_netfilter shows this hook) keeps its source.
            oifname("!=", &crate::shared::ifnames::bridge_glob()),
            json!({"counter": null}),
            json!({"masquerade": null}),
        ],
    )
}

/// Runs one `nft -j -f -` transaction.
fn nft(commands: &Value) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (package nftables)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(commands.to_string().as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the tables, if there are any (teardown).
pub fn remove_table() -> Result<()> {
    let mut cmds = Vec::new();
    for family in FAMILIES {
        let table = json!({"table": {"family": family, "name": TABLE}});
        cmds.extend([json!({"add": table}), json!({"delete": table})]);
    }
    nft(&json!({"nftables": cmds}))
}

/// The egress sync. What this agent last made: a sync with the same plan touches nothing but
/// cheap lookups.
#[derive(Default)]
pub struct Egress {
    table: Option<Value>,
}

impl NodeSync for Egress {
    type Want = Plan;

    fn want(&self, view: &View<'_>) -> Plan {
        plan(view.cluster, view.applied)
    }

    async fn apply(&mut self, want: Plan, kernel: &mut Kernel<'_>) {
        self.sync(kernel.netlink, &want).await;
    }
}

impl Egress {
    /// Brings addresses, routes, the table and forwarding in line with `plan`. Each part is
    /// tried on its own; failures are logged and retried on the next sync.
    async fn sync(&mut self, netlink: &Netlink, plan: &Plan) {
        let v4 = plan
            .gateways
            .iter()
            .chain(&plan.resolvers)
            .map(|(b, gw)| (b, IpAddr::from(*gw), GATEWAY_PREFIX));
        let v6 = plan
            .gateways6
            .iter()
            .map(|(b, gw)| (b, IpAddr::from(*gw), GATEWAY6_PREFIX));
        for (bridge, gw, len) in v4.chain(v6) {
            // A bridge exists once a container of the network is attached here.
            if let Ok(Some(_)) = netlink.index(bridge).await
                && let Err(e) = netlink.ensure_address(bridge, gw, len).await
            {
                log::warn!("address {gw} on {bridge}: {e:#}; will retry");
            }
        }
        if let Err(e) = self.sync_routes(netlink, plan).await {
            log::warn!("routes to the containers: {e:#}; will retry");
        }
        let table = ruleset(plan);
        if self.table.as_ref() != Some(&table) {
            match nft(&table) {
                Ok(()) => {
                    log::info!(
                        "nftables tables {TABLE}: masquerading {} network(s) ({} over IPv6 too), {} internal",
                        plan.masquerade.len(),
                        plan.masquerade6.len(),
                        plan.internal.len()
                    );
                    self.table = Some(table);
                }
                Err(e) => log::warn!("{e:#}; will retry"),
            }
        }
        if !plan.gateways.is_empty()
            && let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        {
            log::warn!("enabling IPv4 forwarding: {e}; will retry");
        }
        if !plan.gateways6.is_empty()
            && let Err(e) = crate::netlink::ipv6_forwarding_all()
        {
            log::warn!("enabling IPv6 forwarding: {e:#}; will retry");
        }
    }

    async fn sync_routes(&self, netlink: &Netlink, plan: &Plan) -> Result<()> {
        let mut wanted = BTreeMap::new();
        for (ip, bridge) in &plan.routes {
            if let Some(index) = netlink.index(bridge).await? {
                wanted.insert(*ip, index);
            }
        }
        let current: BTreeMap<IpAddr, u32> = netlink
            .host_routes(ROUTE_PROTOCOL)
            .await?
            .into_iter()
            .collect();
        for (ip, index) in &current {
            if wanted.get(ip) != Some(index) {
                netlink.del_host_route(*ip, *index, ROUTE_PROTOCOL).await?;
            }
        }
        for (ip, index) in &wanted {
            if current.get(ip) != Some(index) {
                netlink.add_host_route(*ip, *index, ROUTE_PROTOCOL).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn the_table_masquerades_what_leaves_every_overlay_and_isolates_networks() {
        let plan = Plan {
            gateways: BTreeMap::from([("ovbr42".into(), "10.10.0.1".parse().unwrap())]),
            routes: BTreeMap::new(),
            masquerade: BTreeSet::from([cidr("10.10.0.0/16")]),
            overlay: BTreeSet::from([cidr("10.10.0.0/16"), cidr("10.20.0.0/16")]),
            internal: BTreeSet::from(["ovbr43".into()]),
            resolvers: BTreeMap::from([("ovbr43".into(), "10.20.0.1".parse().unwrap())]),
            ..Plan::default()
        };
        let v = ruleset(&plan);
        let cmds = v["nftables"].as_array().unwrap();
        // Replace, not append: add, delete, add the table first.
        assert_eq!(cmds[0]["add"]["table"]["name"], TABLE);
        assert_eq!(cmds[1]["delete"]["table"]["name"], TABLE);
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        // blue's isolation and masquerade; red's: nothing out, nothing in, only the resolver.
        assert_eq!(rules.len(), 5);
        let input = rules.iter().find(|r| r["chain"] == "input").unwrap();
        assert_eq!(input["expr"][0]["match"]["right"], "ovbr43");
        assert_eq!(input["expr"][2]["match"]["right"], "10.20.0.1");
        let masq = rules.iter().find(|r| r["chain"] == "postrouting").unwrap();
        let expr = masq["expr"].as_array().unwrap();
        assert_eq!(expr[0]["match"]["right"]["prefix"]["addr"], "10.10.0.0");
        assert_eq!(expr[1]["match"]["op"], "!=");
        assert_eq!(
            expr[1]["match"]["right"]["set"].as_array().unwrap().len(),
            2
        );
        assert!(expr.iter().any(|e| e.get("masquerade").is_some()));
        assert!(
            rules
                .iter()
                .any(|r| r["expr"][0]["match"]["right"] == "ovbr43"),
            "{v}"
        );
    }

    #[test]
    fn the_plan_covers_the_networks_the_maps_serve() {
        use crate::syncs::testing;
        use overlay_common::Network;
        let cluster = testing::cluster(&[
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","internal":true}"#,
            ),
            ("networks/green", r#"{"vni":44,"subnet":"10.30.0.0/16"}"#),
        ]);
        let mut applied = MapState::default();
        applied.networks.insert(42, Network::new(4789, [0; 12]));
        applied.networks.insert(43, Network::new(4789, [0; 12]));
        let want = Egress::default().want(&testing::view(&cluster, &applied));
        assert_eq!(
            want.gateways,
            BTreeMap::from([("ovbr42".to_string(), "10.10.0.1".parse().unwrap())])
        );
        assert_eq!(want.masquerade, BTreeSet::from([cidr("10.10.0.0/16")]));
        assert_eq!(
            want.overlay,
            BTreeSet::from([cidr("10.10.0.0/16"), cidr("10.20.0.0/16")])
        );
        assert_eq!(want.internal, BTreeSet::from(["ovbr43".to_string()]));
        assert_eq!(
            want.resolvers,
            BTreeMap::from([("ovbr43".to_string(), "10.20.0.1".parse().unwrap())])
        );
        assert!(want.routes.is_empty());
    }

    #[test]
    fn a_dual_stack_network_gets_the_ipv6_way_out_from_the_same_plan() {
        use crate::syncs::testing;
        use overlay_common::Network;
        let cluster = testing::cluster(&[
            (
                "networks/blue",
                r#"{"vni":42,"subnet":"10.10.0.0/16","subnet6":"fd00:10::/64"}"#,
            ),
            (
                "networks/red",
                r#"{"vni":43,"subnet":"10.20.0.0/16","subnet6":"fd00:20::/64","internal":true}"#,
            ),
            ("networks/green", r#"{"vni":44,"subnet":"10.30.0.0/16"}"#),
        ]);
        let mut applied = MapState::default();
        for vni in [42, 43, 44] {
            applied.networks.insert(vni, Network::new(4789, [0; 12]));
        }
        let want = Egress::default().want(&testing::view(&cluster, &applied));
        // blue's gateway is 10.10.0.1 and fd00:10::a0a:1; red, internal, has no IPv6 one.
        assert_eq!(
            want.gateways6,
            BTreeMap::from([("ovbr42".to_string(), "fd00:10::a0a:1".parse().unwrap())])
        );
        let six: Subnet6 = "fd00:10::/64".parse().unwrap();
        assert_eq!(want.masquerade6, BTreeSet::from([six]));
        assert_eq!(want.overlay6.len(), 2);

        let v = ruleset(&want);
        let cmds = v["nftables"].as_array().unwrap();
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        let ip6: Vec<&&Value> = rules.iter().filter(|r| r["family"] == "ip6").collect();
        // Isolation of blue and green, red's nothing out and nothing in, blue's masquerade;
        // the resolver's input rule is IPv4's alone.
        assert_eq!(ip6.len(), 5, "{v}");
        let masq = ip6.iter().find(|r| r["chain"] == "postrouting").unwrap();
        let expr = masq["expr"].as_array().unwrap();
        assert_eq!(expr[0]["match"]["left"]["payload"]["protocol"], "ip6");
        assert_eq!(expr[0]["match"]["right"]["prefix"]["addr"], "fd00:10::");
        assert_eq!(expr[0]["match"]["right"]["prefix"]["len"], 64);
        assert_eq!(
            expr[1]["match"]["right"]["set"].as_array().unwrap().len(),
            2
        );

        // With no dual-stack network served, the ip6 table is only deleted.
        let v4only = ruleset(&Plan::default());
        let cmds = v4only["nftables"].as_array().unwrap();
        let ip6: Vec<&Value> = cmds
            .iter()
            .filter(|c| {
                c.as_object()
                    .unwrap()
                    .values()
                    .any(|o| o["table"]["family"] == "ip6" || o["family"] == "ip6")
            })
            .collect();
        assert_eq!(ip6.len(), 2, "{v4only}");
        assert!(ip6[1].get("delete").is_some());
    }
}
