//! `overlay-agent doctor`: is this node what etcd says it must be? It computes the node's maps
//! from etcd exactly as the agent does (`desired`), reads the maps back from the kernel, and
//! names every entry that differs; then it checks what the maps cannot show: the agent
//! running, programs attached where they must be, the GRO helpers, the ports' MTUs, and
//! whether every remote VTEP answers on the underlay.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use overlay_common::{names, vtep::to_ip};

use anyhow::Result;
use serde::Serialize;

use crate::{
    dataplane::{Maps, PinDir, state::Diff},
    model::{cluster::ClusterState, desired::desired},
    netlink::{Link, Netlink},
    shared::{ifnames, net::Mac},
    status,
    store::{
        Store,
        health::Probe,
        schema::{Kind, Location},
    },
};

/// One thing wrong, where, and why it matters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// What was checked: `agent`, `map FDB`, `attachment`, `gro`, `mtu`, `vtep`.
    pub check: String,
    /// The entry, interface or address concerned.
    pub item: String,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub node: String,
    /// The etcd revision the maps were compared with.
    pub revision: i64,
    /// How many entries etcd says the node's maps must hold.
    pub entries: usize,
    pub findings: Vec<Finding>,
    /// What deserves a look but breaks nothing yet (an etcd member down while a majority
    /// answers): not a failure.
    pub warnings: Vec<Finding>,
    /// Each etcd member as this run probed it.
    pub etcd_members: Probe,
}

/// A member this far behind the leader's raft log is reported: it is catching up slowly or
/// not at all (a healthy one is a few entries behind at most).
const FAR_BEHIND: u64 = 1000;

/// The etcd members' findings: (errors, warnings). No leader, or no member answering, is an
/// error (etcd accepts no writes); a member down or far behind is a warning, as etcd works on
/// with a majority.
pub fn member_findings(probe: &Probe) -> (Vec<Finding>, Vec<Finding>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let finding = |item: &str, why: String| Finding {
        check: "etcd member".into(),
        item: item.into(),
        why,
    };
    let all = probe
        .members
        .iter()
        .map(|m| m.endpoint.as_str())
        .collect::<Vec<_>>()
        .join(",");
    if probe.reachable() == 0 {
        errors.push(finding(
            &all,
            "no member answers: etcd is unreachable from this node".into(),
        ));
        return (errors, warnings);
    }
    for m in &probe.members {
        if !m.reachable {
            warnings.push(finding(
                &m.endpoint,
                format!(
                    "unreachable ({}): etcd works on while a majority of members answers",
                    m.error.as_deref().unwrap_or("no answer")
                ),
            ));
        } else if m.behind.is_some_and(|b| b > FAR_BEHIND) {
            warnings.push(finding(
                &m.endpoint,
                format!(
                    "{} raft entries behind the leader",
                    m.behind.unwrap_or_default()
                ),
            ));
        }
    }
    let leaders: Vec<&str> = probe.leaders().map(|m| m.endpoint.as_str()).collect();
    let known = probe.members.iter().find(|m| !m.leader_id.is_empty());
    match (leaders.as_slice(), known) {
        ([], None) => errors.push(finding(
            &all,
            "no leader: no member knows one, so etcd accepts no writes (a majority is down or partitioned)".into(),
        )),
        ([], Some(m)) => warnings.push(finding(
            &all,
            format!(
                "the leader (member {}) is not among the members this node reaches",
                m.leader_id
            ),
        )),
        ([_], _) => {}
        (many, _) => warnings.push(finding(
            &many.join(","),
            "several members say they lead: one of them is partitioned and has not noticed yet"
                .into(),
        )),
    }
    (errors, warnings)
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// Each entry that differs, as a finding: `missing` (etcd wants it, the map lacks it or holds
/// another value) or `stale` (the map holds what etcd no longer wants).
pub fn map_findings(diff: &Diff) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut f = |map: &str, item: String, why: &str| {
        out.push(Finding {
            check: format!("map {map}"),
            item,
            why: why.to_string(),
        })
    };
    const MISSING: &str = "missing or different: etcd says the map must hold it";
    const STALE: &str = "stale: the map holds it, etcd does not";
    for (vni, net) in &diff.networks.set {
        f(
            names::NETWORKS,
            format!("vni {vni} port {}", net.port),
            MISSING,
        );
    }
    for vni in &diff.networks.remove {
        f(names::NETWORKS, format!("vni {vni}"), STALE);
    }
    for ((vni, mac), vtep) in &diff.fdb.set {
        f(
            names::FDB,
            format!("vni {vni} {} -> {}", Mac(*mac), to_ip(*vtep)),
            MISSING,
        );
    }
    for (vni, mac) in &diff.fdb.remove {
        f(names::FDB, format!("vni {vni} {}", Mac(*mac)), STALE);
    }
    for ((vni, a), mac) in &diff.arp.set {
        f(
            names::ARP,
            format!("vni {vni} {} -> {}", ip(*a), Mac(*mac)),
            MISSING,
        );
    }
    for (vni, a) in &diff.arp.remove {
        f(names::ARP, format!("vni {vni} {}", ip(*a)), STALE);
    }
    for ((vni, vtep), ()) in &diff.vteps.set {
        f(names::VTEPS, format!("vni {vni} {}", to_ip(*vtep)), MISSING);
    }
    for (vni, vtep) in &diff.vteps.remove {
        f(names::VTEPS, format!("vni {vni} {}", to_ip(*vtep)), STALE);
    }
    for ((vni, mac), e) in &diff.endpoints.set {
        let what = format!(
            "vni {vni} {} ({} ifindex {})",
            Mac(*mac),
            ip(e.ip),
            e.ifindex
        );
        f(names::ENDPOINTS, what, MISSING);
    }
    for (vni, mac) in &diff.endpoints.remove {
        f(names::ENDPOINTS, format!("vni {vni} {}", Mac(*mac)), STALE);
    }
    for (ifindex, e) in &diff.ports.set {
        let what = format!("ifindex {ifindex} ({} {})", ip(e.ip), Mac(e.mac));
        f(names::PORTS, what, MISSING);
    }
    for ifindex in &diff.ports.remove {
        f(names::PORTS, format!("ifindex {ifindex}"), STALE);
    }
    out
}

/// What etcd says now, and at which revision.
async fn cluster_now(store: &Store) -> Result<(ClusterState, i64)> {
    let (kvs, revision) = store.list(&store.keys().all()).await?;
    let mut cluster = ClusterState::default();
    for kv in &kvs {
        // A bad value is the agent's to report (`status`); here it is simply not wanted.
        let _ = cluster.put(store.keys(), kv.key(), kv.value(), kv.create_revision());
    }
    Ok((cluster, revision))
}

/// How many entries `cluster` says the maps must hold, and how they differ.
fn compare(
    cluster: &ClusterState,
    node: &str,
    pins: &PinDir,
    links: &BTreeMap<String, Link>,
) -> Result<(usize, Vec<Finding>)> {
    let (want, _) = desired(cluster, node, &|name: &str| links.get(name).cloned());
    let have = Maps::open(pins)?.snapshot()?;
    let entries = want.fdb.len()
        + want.arp.len()
        + want.vteps.len()
        + want.endpoints.len()
        + want.ports.len()
        + want.networks.len();
    Ok((entries, map_findings(&Diff::between(&have, &want))))
}

/// Checks node `node`. Map differences are confirmed by a second look a second later, so a
/// change the agent is applying right now is not reported as drift.
pub async fn check(
    node: &str,
    pins: &PinDir,
    run_dir: &Path,
    store: &Store,
    etcd_members: Probe,
) -> Result<Report> {
    let (mut findings, warnings) = member_findings(&etcd_members);
    let status = match status::running(run_dir, node) {
        Ok(s) => Some(s),
        Err(e) => {
            findings.push(Finding {
                check: "agent".into(),
                item: node.into(),
                why: format!("{e:#}: nothing keeps the maps equal to etcd"),
            });
            status::last_status(run_dir, node).ok()
        }
    };
    let netlink = Netlink::new()?;
    let mut here = netlink.links_by_name().await?;
    let (mut cluster, mut revision) = cluster_now(store).await?;
    let (mut entries, mut drift) = compare(&cluster, node, pins, &here)?;
    if !drift.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first: BTreeSet<Finding> = drift.into_iter().collect();
        here = netlink.links_by_name().await?;
        (cluster, revision) = cluster_now(store).await?;
        (entries, drift) = compare(&cluster, node, pins, &here)?;
        drift.retain(|f| first.contains(f));
    }
    findings.extend(drift);

    // Programs attached where they must be: the underlay, every local port, every GRO helper.
    let links: BTreeSet<String> = pins.linked().unwrap_or_default().into_iter().collect();
    let attachment = |item: &str, why: String| Finding {
        check: "attachment".into(),
        item: item.into(),
        why,
    };
    if let Some(s) = &status
        && !links.contains(&s.underlay)
    {
        findings.push(attachment(
            &s.underlay,
            "from_underlay is not attached: no VXLAN arrives".into(),
        ));
    }
    let node_mtu = cluster.nodes.get(node).and_then(|n| n.mtu);
    let ipv6_underlay = cluster.nodes.get(node).is_some_and(|n| n.vtep.is_ipv6());
    for ep in cluster.endpoints.values() {
        let Location::Node { node: n, port, .. } = &ep.location else {
            continue;
        };
        if n != node || !matches!(ep.kind, Kind::Container | Kind::Host) {
            continue;
        }
        let Some(mtu) = netlink.mtu(port).await? else {
            findings.push(attachment(
                port,
                format!("endpoint {} ({}): its port does not exist", ep.name, ep.ip),
            ));
            continue;
        };
        if !links.contains(port) {
            findings.push(attachment(
                port,
                format!(
                    "endpoint {} ({}): from_container is not attached",
                    ep.name, ep.ip
                ),
            ));
        }
        if let Some(net) = cluster.networks.get(&ep.network) {
            let most = net.mtu_on(node_mtu, ipv6_underlay);
            if mtu > most {
                findings.push(Finding {
                    check: "mtu".into(),
                    item: port.clone(),
                    why: format!(
                        "endpoint {} has MTU {mtu}, above network {}'s {most} on this node: full-size frames cannot be encapsulated",
                        ep.name, net.name
                    ),
                });
            }
        }
    }
    let ports: BTreeSet<u16> = cluster
        .networks
        .values()
        .filter(|n| {
            cluster
                .endpoints
                .values()
                .any(|e| e.network == n.name && e.node() == Some(node))
        })
        .map(|n| n.port)
        .collect();
    for port in ports {
        let device = ifnames::gro_device(port);
        if netlink.index(&device).await?.is_none() || !links.contains(&device) {
            findings.push(Finding {
                check: "gro".into(),
                item: device,
                why: format!(
                    "no GRO helper with its sink for UDP port {port}: on a real wire every packet is decapsulated alone"
                ),
            });
        }
    }

    // Every remote VTEP this node sends to answers on the underlay.
    let (want, _) = desired(&cluster, node, &|name: &str| here.get(name).cloned());
    let vteps: BTreeSet<IpAddr> = want.fdb.values().map(|v| to_ip(*v)).collect();
    let probes: Vec<_> = vteps
        .into_iter()
        .map(|vtep| {
            let child = tokio::process::Command::new("ping")
                .args(["-c", "1", "-W", "1", "-q", &vtep.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            (vtep, child)
        })
        .collect();
    for (vtep, probe) in probes {
        if !probe.await.is_ok_and(|s| s.success()) {
            findings.push(Finding {
                check: "vtep".into(),
                item: vtep.to_string(),
                why: "does not answer ping on the underlay: frames for its endpoints are lost"
                    .into(),
            });
        }
    }
    Ok(Report {
        node: node.into(),
        revision,
        entries,
        findings,
        warnings,
        etcd_members,
    })
}

// ---- the whole cluster ----

/// One node as `doctor --cluster` sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    pub node: String,
    /// `in sync`, `behind`, `diverged`, `not publishing`, `down`.
    pub state: String,
    /// The etcd revision the node's published digest reflects.
    pub revision: Option<i64>,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub revision: i64,
    pub nodes: Vec<NodeVerdict>,
    /// The etcd members as this node reaches them: errors (no leader) fail the check,
    /// warnings (a member down while a majority answers) do not.
    pub etcd_errors: Vec<Finding>,
    pub etcd_warnings: Vec<Finding>,
}

impl ClusterReport {
    pub fn healthy(&self) -> bool {
        self.nodes.iter().all(|n| n.state == "in sync") && self.etcd_errors.is_empty()
    }
}

/// The digest node `node`'s maps must have for `cluster` (its ports taken as present and
/// their endpoints': a port that is missing or not its endpoint's shows as a difference, as it
/// is one).
fn expected(cluster: &ClusterState, node: &str) -> String {
    let aliases: BTreeMap<&str, String> = cluster
        .endpoints
        .values()
        .filter(|ep| ep.node() == Some(node))
        .filter_map(|ep| match &ep.location {
            Location::Node { port, .. } => {
                Some((port.as_str(), ifnames::port_alias(&ep.network, &ep.name)))
            }
            Location::Peer { .. } => None,
        })
        .collect();
    let present = |name: &str| {
        Some(Link {
            ifindex: 1,
            alias: aliases.get(name).cloned(),
        })
    };
    desired(cluster, node, &present).0.digest().0
}

async fn cluster_pass(store: &Store) -> Result<ClusterReport> {
    let (now, revision) = cluster_now(store).await?;
    let states = store.node_states().await?;
    let mut nodes = Vec::new();
    for name in now.nodes.keys() {
        let verdict = |state: &str, at: Option<i64>, why: String| NodeVerdict {
            node: name.clone(),
            state: state.into(),
            revision: at,
            why,
        };
        let Some(state) = states.get(name) else {
            nodes.push(verdict(
                "not publishing",
                None,
                "its agent publishes no map digest (an older agent, or not yet in sync)".into(),
            ));
            continue;
        };
        let at = Some(state.revision);
        if state.digest == expected(&now, name) {
            nodes.push(verdict(
                "in sync",
                at,
                format!("{} entries as etcd says", state.entries),
            ));
            continue;
        }
        let then = match store.list_at(&store.keys().all(), state.revision).await {
            Ok((kvs, _)) => {
                let mut then = ClusterState::default();
                for kv in &kvs {
                    let _ = then.put(store.keys(), kv.key(), kv.value(), kv.create_revision());
                }
                Some(then)
            }
            Err(_) => None,
        };
        nodes.push(match then {
            Some(then) if expected(&then, name) == state.digest => verdict(
                "behind",
                at,
                format!(
                    "its maps are what etcd said at revision {}; changes since (now {revision}) have not reached them",
                    state.revision
                ),
            ),
            Some(_) => verdict(
                "diverged",
                at,
                format!(
                    "its maps are not what etcd said at revision {} (the one they claim to reflect): run `overlay-agent --node {name} doctor` there",
                    state.revision
                ),
            ),
            None => verdict(
                "diverged",
                at,
                format!(
                    "its maps are not what etcd says now, and revision {} is compacted away",
                    state.revision
                ),
            ),
        });
    }
    // Nodes that own endpoints but have no live lease.
    let owners: BTreeSet<&str> = now.endpoints.values().filter_map(|e| e.node()).collect();
    for node in owners.into_iter().filter(|n| !now.nodes.contains_key(*n)) {
        nodes.push(NodeVerdict {
            node: node.into(),
            state: "down".into(),
            revision: None,
            why: "it has endpoints but no live lease: no agent runs there, the others do not serve them".into(),
        });
    }
    Ok(ClusterReport {
        revision,
        nodes,
        etcd_errors: Vec::new(),
        etcd_warnings: Vec::new(),
    })
}

/// Every node's published map digest against what etcd says. A node is reported only if it
/// still differs two seconds later: agents publish within a second of a change.
pub async fn check_cluster(store: &Store, etcd_members: &Probe) -> Result<ClusterReport> {
    let mut report = cluster_pass(store).await?;
    if !report.healthy() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        report = cluster_pass(store).await?;
    }
    (report.etcd_errors, report.etcd_warnings) = member_findings(etcd_members);
    Ok(report)
}

pub fn render_cluster(report: &ClusterReport, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(report).expect("serializable") + "\n";
    }
    let mut out = format!("etcd revision {}\n", report.revision);
    for n in &report.nodes {
        let at = n.revision.map_or("-".to_string(), |r| r.to_string());
        out += &format!("  {:<24} {:<15} {:>8}  {}\n", n.node, n.state, at, n.why);
    }
    for (what, findings) in [
        ("problem", &report.etcd_errors),
        ("warning", &report.etcd_warnings),
    ] {
        if !findings.is_empty() {
            out += &format!("{} etcd {what}(s):\n", findings.len());
            for f in findings {
                out += &format!("  {:<14} {:<40} {}\n", f.check, f.item, f.why);
            }
        }
    }
    out
}

/// The report as lines for a terminal, or as JSON.
pub fn render(report: &Report, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(report).expect("serializable") + "\n";
    }
    let line = |f: &Finding| format!("  {:<14} {:<40} {}\n", f.check, f.item, f.why);
    let mut out = if report.findings.is_empty() {
        format!(
            "node {}: clean ({} map entries equal to etcd at revision {}, programs attached, GRO helpers in place, every VTEP answers)\n",
            report.node, report.entries, report.revision
        )
    } else {
        let mut out = format!(
            "node {}: {} problem(s) (etcd revision {}):\n",
            report.node,
            report.findings.len(),
            report.revision
        );
        out.extend(report.findings.iter().map(line));
        out
    };
    if !report.warnings.is_empty() {
        out += &format!("{} warning(s):\n", report.warnings.len());
        out.extend(report.warnings.iter().map(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::state::MapState, store::health::Member};

    fn member(endpoint: &str, reachable: bool, leader: bool, leader_id: &str) -> Member {
        Member {
            endpoint: endpoint.into(),
            reachable,
            leader,
            leader_id: leader_id.into(),
            error: (!reachable).then(|| "refused".into()),
            behind: reachable.then_some(0),
            ..Default::default()
        }
    }

    #[test]
    fn a_member_down_is_a_warning_no_leader_or_no_member_an_error() {
        let probe = |members| Probe { unix: 1, members };
        // One of three down, the leader up: a warning only.
        let (errors, warnings) = member_findings(&probe(vec![
            member("a", true, true, "1"),
            member("b", true, false, "1"),
            member("c", false, false, ""),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].item, "c");
        assert!(warnings[0].why.contains("refused"), "{warnings:?}");
        // The leader is the one down, the others still follow it: a warning.
        let (errors, warnings) = member_findings(&probe(vec![
            member("a", false, false, ""),
            member("b", true, false, "1"),
        ]));
        assert!(errors.is_empty());
        assert!(
            warnings.iter().any(|w| w.why.contains("leader (member 1)")),
            "{warnings:?}"
        );
        // Reachable members that know no leader: an error.
        let (errors, _) = member_findings(&probe(vec![
            member("a", true, false, ""),
            member("b", false, false, ""),
        ]));
        assert!(errors[0].why.starts_with("no leader"), "{errors:?}");
        // Nobody answers: one error.
        let (errors, warnings) = member_findings(&probe(vec![member("a", false, false, "")]));
        assert_eq!((errors.len(), warnings.len()), (1, 0));
        assert!(errors[0].why.starts_with("no member answers"));
    }

    #[test]
    fn every_difference_is_named_with_its_map_and_direction() {
        let mut want = MapState::default();
        want.add_remote(
            42,
            [2, 0x42, 10, 10, 1, 1],
            [10, 10, 1, 1],
            overlay_common::vtep::from_v4([10, 0, 0, 2]),
        );
        let mut have = want.clone();
        have.fdb.clear();
        have.arp
            .insert((42, [10, 10, 9, 9]), [2, 0x42, 10, 10, 9, 9]);
        let findings = map_findings(&Diff::between(&have, &want));
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(findings[0].check, "map FDB");
        assert_eq!(findings[0].item, "vni 42 02:42:0a:0a:01:01 -> 10.0.0.2");
        assert!(findings[0].why.starts_with("missing"));
        assert_eq!(findings[1].check, "map ARP");
        assert_eq!(findings[1].item, "vni 42 10.10.9.9");
        assert!(findings[1].why.starts_with("stale"));
    }
}
