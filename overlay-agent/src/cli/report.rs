//! What `network ls`, `endpoint ls` and `status` print, as tables or JSON (the same [`Rows`] as
//! the maps use, so every listing looks and parses alike).
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::{
    cli::inspect::{Col, Rows, flag, number, text},
    dataplane::{
        Maps, PinDir,
        pins::{Attachments, attachments},
    },
    status::{self, StatusFile, status_path},
    store::{
        Store,
        health::{self, Probe},
        schema::{Endpoint, Location, Network},
    },
};

/// `networks`'s columns: its JSON schema (docs/json.md).
pub const NETWORK_COLUMNS: &[Col] = &[
    text("name"),
    number("vni"),
    text("subnet"),
    text("subnet6"),
    number("port"),
    number("mtu"),
    text("slice"),
    number("endpoints"),
];

/// `endpoints`'s columns: its JSON schema (docs/json.md).
pub const ENDPOINT_COLUMNS: &[Col] = &[
    text("network"),
    text("ip"),
    text("ip6"),
    text("mac"),
    text("kind"),
    text("name"),
    text("node"),
    text("vtep"),
    text("port"),
];

/// `etcd_members`'s columns: its JSON schema (docs/json.md).
pub const ETCD_MEMBER_COLUMNS: &[Col] = &[
    text("endpoint"),
    flag("reachable"),
    flag("leader"),
    number("raft_term"),
    number("raft_index"),
    number("behind"),
    text("version"),
    text("error"),
];

pub fn render(rows: &Rows, json: bool) -> String {
    if json {
        serde_json::to_string_pretty(&rows.to_json()).expect("rows serialize") + "\n"
    } else {
        rows.to_table()
    }
}

pub fn networks(nets: &[Network], endpoints: &[Endpoint]) -> Rows {
    Rows {
        columns: NETWORK_COLUMNS,
        rows: nets
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.vni.to_string(),
                    n.subnet.to_string(),
                    n.subnet6.map_or("-".into(), |s| s.to_string()),
                    n.port.to_string(),
                    n.mtu.map_or("auto".into(), |m| m.to_string()),
                    format!("/{}", n.slice_prefix),
                    endpoints
                        .iter()
                        .filter(|e| e.network == n.name)
                        .count()
                        .to_string(),
                ]
            })
            .collect(),
    }
}

/// Endpoints, with their IPv6 address where their network (one of `nets`) is dual-stack.
pub fn endpoints(eps: &[Endpoint], nets: &[Network]) -> Rows {
    let ip6 = |e: &Endpoint| {
        nets.iter()
            .find(|n| n.name == e.network)
            .and_then(|n| n.ipv6_of(e.ip))
            .map_or("-".into(), |a| a.to_string())
    };
    Rows {
        columns: ENDPOINT_COLUMNS,
        rows: eps
            .iter()
            .map(|e| {
                let (node, vtep, port) = match &e.location {
                    Location::Node { node, port, .. } => (node.clone(), "-".into(), port.clone()),
                    Location::Peer { vtep } => ("-".into(), vtep.to_string(), "-".into()),
                };
                vec![
                    e.network.clone(),
                    e.ip.to_string(),
                    ip6(e),
                    e.mac.to_string(),
                    e.kind.name().to_string(),
                    if e.name.is_empty() {
                        "-".into()
                    } else {
                        e.name.clone()
                    },
                    node,
                    vtep,
                    port,
                ]
            })
            .collect(),
    }
}

/// `overlay-agent status`: node, agent, etcd, attachments, map sizes, problems.
pub async fn status(
    node: &str,
    pins: &PinDir,
    run_dir: &Path,
    etcd: &crate::store::Etcd,
    as_json: bool,
) -> Result<String> {
    let file: Option<StatusFile> = std::fs::read(status_path(run_dir, node))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let agent_running = file.as_ref().is_some_and(status::alive);
    let etcd_state = async {
        match Store::connect(etcd).await {
            Ok(store) => match store.list(&store.keys().all()).await {
                Ok((_, rev)) => Ok(rev),
                Err(e) => Err(format!("{e:#}")),
            },
            Err(e) => Err(format!("{e:#}")),
        }
    };
    // Each member alone, beside the whole: which of them answer, which leads.
    let (etcd_state, members) = tokio::join!(etcd_state, health::probe(etcd));
    let underlay = file
        .as_ref()
        .map(|f| f.underlay.clone())
        .unwrap_or_default();
    let Attachments {
        from_underlay,
        from_container,
        gro_sink,
    } = attachments(pins, &underlay);
    let maps = Maps::open(pins).ok();
    let counts = maps.as_ref().and_then(|m| m.snapshot().ok()).map(|s| {
        json!({
            "networks": s.networks.len(), "fdb": s.fdb.len(), "arp": s.arp.len(),
            "vteps": s.vteps.len(), "endpoints": s.endpoints.len(), "ports": s.ports.len(),
        })
    });
    let flood = maps.as_ref().map(flood_summary);
    let value = json!({
        "node": node,
        "agent": {
            "running": agent_running,
            "pid": file.as_ref().map(|f| f.pid),
            "connected_to_etcd": file.as_ref().is_some_and(|f| f.connected && agent_running),
            "revision_applied": file.as_ref().map(|f| f.revision),
            "updated_unix": file.as_ref().map(|f| f.updated_unix),
            "vtep": file.as_ref().map(|f| f.vtep.clone()),
            "map_write_failures": file.as_ref().map(|f| f.map_write_failures.clone()).unwrap_or_default(),
            "gro": file.as_ref().map(|f| f.gro.clone()).unwrap_or_default(),
            "resolvers": file.as_ref().map(|f| f.resolvers.clone()).unwrap_or_default(),
            "etcd_members": file.as_ref().map(|f| f.etcd_members.clone()),
        },
        "etcd": {
            "endpoints": etcd.endpoints.join(","),
            "reachable": etcd_state.is_ok(),
            "revision": etcd_state.as_ref().ok(),
            "error": etcd_state.as_ref().err(),
            "members": members.members,
        },
        "programs": {
            "from_underlay": from_underlay,
            "from_container": from_container,
            "gro_sink": gro_sink,
        },
        "maps": counts,
        "flood": flood,
        "problems": file.as_ref().map(|f| f.problems.clone()).unwrap_or_default(),
    });
    if as_json {
        return Ok(serde_json::to_string_pretty(&value)? + "\n");
    }
    Ok(status_text(&value))
}

/// The etcd members as one probe saw them, a row each.
pub fn etcd_members(probe: &Probe) -> Rows {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    Rows {
        columns: ETCD_MEMBER_COLUMNS,
        rows: probe
            .members
            .iter()
            .map(|m| {
                let known = |v: String| if m.reachable { v } else { "-".into() };
                vec![
                    m.endpoint.clone(),
                    yes(m.reachable),
                    known(yes(m.leader)),
                    known(m.raft_term.to_string()),
                    known(m.raft_index.to_string()),
                    m.behind.map_or("-".into(), |b| b.to_string()),
                    known(m.version.clone()),
                    m.error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    }
}

/// One line: how many members answered and who leads.
fn members_summary(probe: &Probe) -> String {
    let leaders: Vec<&str> = probe.leaders().map(|m| m.endpoint.as_str()).collect();
    let leader = match leaders.as_slice() {
        [] => "NO LEADER reachable".to_string(),
        [one] => format!("leader {one}"),
        many => format!("SEVERAL say they lead: {}", many.join(", ")),
    };
    format!(
        "{} of {} reachable, {leader}",
        probe.reachable(),
        probe.members.len()
    )
}

/// Per VNI: where its broadcast goes, its groups with members here and elsewhere.
fn flood_summary(m: &Maps) -> Value {
    let mut out = serde_json::Map::new();
    for (vni, f) in m.flood_entries().flatten() {
        let vteps: Vec<String> = f
            .remote_vteps()
            .iter()
            .map(|v| overlay_common::vtep::to_ip(*v).to_string())
            .collect();
        let local: std::collections::BTreeSet<[u8; 4]> = m
            .group_entries()
            .flatten()
            .filter(|(k, _)| k.vni == vni)
            .map(|(k, _)| k.group)
            .collect();
        let remote = m
            .mcast_entries()
            .flatten()
            .filter(|(k, _)| k.vni == vni)
            .count();
        out.insert(
            vni.to_string(),
            json!({"remote_vteps": vteps, "legacy": f.peers, "groups_here": local.len(),
                   "groups_elsewhere": remote, "internal": f.internal != 0}),
        );
    }
    Value::Object(out)
}

fn status_text(v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let list = |v: &Value| {
        let items: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    let a = &v["agent"];
    let agent = if a["running"] == true {
        format!(
            "running (pid {}), {} etcd, revision {} applied, VTEP {}",
            s(&a["pid"]),
            if a["connected_to_etcd"] == true {
                "connected to"
            } else {
                "NOT connected to"
            },
            s(&a["revision_applied"]),
            s(&a["vtep"])
        )
    } else if a["pid"].is_null() {
        "never ran on this node".into()
    } else {
        format!(
            "not running (last pid {}); the pinned dataplane keeps forwarding",
            s(&a["pid"])
        )
    };
    let e = &v["etcd"];
    let etcd = if e["reachable"] == true {
        format!(
            "{} reachable, revision {}",
            s(&e["endpoints"]),
            s(&e["revision"])
        )
    } else {
        format!("UNREACHABLE: {}", s(&e["error"]))
    };
    let maps = match v["maps"].as_object() {
        Some(m) => m
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => "not loaded".into(),
    };
    let failures = match a["map_write_failures"].as_object() {
        Some(f) if !f.is_empty() => f
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    };
    let gro = match a["gro"].as_object() {
        Some(g) if !g.is_empty() => g
            .iter()
            .map(|(port, dev)| format!("UDP {port}: {}", s(dev)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    };
    let resolvers = match a["resolvers"].as_object() {
        Some(r) if !r.is_empty() => r
            .iter()
            .map(|(net, at)| format!("{net}: {}", s(at)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    };
    let problems = match v["problems"].as_object() {
        Some(p) if !p.is_empty() => p
            .iter()
            .map(|(k, why)| format!("\n  {k}: {}", s(why)))
            .collect::<String>(),
        _ => "none".into(),
    };
    let flood = match v["flood"].as_object() {
        Some(f) if !f.is_empty() => f
            .iter()
            .map(|(vni, n)| {
                format!(
                    "\n  VNI {vni}: broadcast to {}; groups: {} here, {} elsewhere{}",
                    list(&n["remote_vteps"]),
                    s(&n["groups_here"]),
                    s(&n["groups_elsewhere"]),
                    if n["internal"] == true {
                        "; internal"
                    } else {
                        ""
                    }
                )
            })
            .collect::<String>(),
        _ => "none".into(),
    };
    let probe_of = |v: &Value| serde_json::from_value::<Probe>(v.clone()).ok();
    let members = probe_of(&json!({"unix": 1, "members": e["members"]})).unwrap_or_default();
    let mut etcd = format!(
        "{etcd}\netcd members    {}\n{}",
        members_summary(&members),
        indent(&etcd_members(&members).to_table())
    );
    if let Some(seen) = probe_of(&a["etcd_members"]).filter(|p| p.unix > 0) {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(seen.unix);
        etcd += &format!("agent saw       {} ({ago} s ago)", members_summary(&seen));
    } else {
        etcd.pop();
    }
    format!(
        "node            {}\nagent           {agent}\netcd            {etcd}\nfrom_underlay   {}\nfrom_container  {}\ngro             {gro}\nresolvers       {resolvers}\nmaps            {maps}\nflood           {flood}\nfailed writes   {failures}\nproblems        {problems}\n",
        s(&v["node"]),
        list(&v["programs"]["from_underlay"]),
        list(&v["programs"]["from_container"]),
    )
}

/// `text` with every line indented under a status label.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("                {l}\n"))
        .collect()
}
