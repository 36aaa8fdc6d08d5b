//! `cluster graph`: the cluster as etcd holds it, drawn with Graphviz. Each host (one of our
//! nodes, or a legacy VTEP an endpoint is a peer behind) is a box holding its endpoints; each
//! network is an ellipse its endpoints are joined to, in a colour of its own. Pure: the DOT
//! text comes from values; only [`svg`] runs a program (`dot`).
use std::{collections::BTreeMap, fmt::Write as _, io::Write as _, net::IpAddr};

use anyhow::{Context as _, Result, bail};

use crate::store::schema::{Endpoint, Location, Network, NodeRecord};

/// Colours for networks, in order of name; they repeat past the last.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// What the picture shows.
pub struct Cluster {
    pub networks: Vec<Network>,
    pub nodes: Vec<(String, NodeRecord)>,
    pub endpoints: Vec<Endpoint>,
}

/// A DOT string literal: names are checked when written, but a record is input like any other.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The host an endpoint is on: one of our nodes, or the legacy VTEP it is a peer behind.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Host {
    Node(String),
    Vtep(IpAddr),
}

fn host_of(ep: &Endpoint) -> Host {
    match &ep.location {
        Location::Node { node, .. } => Host::Node(node.clone()),
        Location::Peer { vtep } => Host::Vtep(*vtep),
    }
}

/// The cluster in Graphviz's DOT language.
pub fn dot(c: &Cluster) -> String {
    let mut networks: Vec<&Network> = c.networks.iter().collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let colour: BTreeMap<&str, &str> = networks
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), COLOURS[i % COLOURS.len()]))
        .collect();
    let mut hosts: BTreeMap<Host, Vec<&Endpoint>> = c
        .nodes
        .iter()
        .map(|(name, _)| (Host::Node(name.clone()), Vec::new()))
        .collect();
    for ep in &c.endpoints {
        hosts.entry(host_of(ep)).or_default().push(ep);
    }
    let vteps: BTreeMap<&str, IpAddr> = c.nodes.iter().map(|(n, r)| (n.as_str(), r.vtep)).collect();

    let mut out = String::from(
        "digraph overlay {\n  graph [rankdir=LR, fontname=\"Helvetica\", compound=true];\n  \
         node [fontname=\"Helvetica\", fontsize=10];\n  edge [arrowhead=none];\n",
    );
    for net in &networks {
        let mut label = format!("{}\nVNI {}\n{}", net.name, net.vni, net.subnet);
        if let Some(v6) = net.subnet6 {
            let _ = write!(label, "\n{v6}");
        }
        if net.internal {
            label += "\ninternal";
        }
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, style=filled, fillcolor={}, fontcolor=white, label={}];",
            quoted(&format!("net:{}", net.name)),
            quoted(colour[net.name.as_str()]),
            quoted(&label)
        );
    }
    for (i, (host, eps)) in hosts.iter().enumerate() {
        let label = match host {
            Host::Node(name) => match vteps.get(name.as_str()) {
                Some(vtep) => format!("node {name}\nVTEP {vtep}"),
                None => format!("node {name}\n(not registered)"),
            },
            Host::Vtep(vtep) => format!("legacy VTEP {vtep}"),
        };
        let _ = writeln!(
            out,
            "  subgraph cluster_{i} {{\n    label={};\n    style={};",
            quoted(&label),
            if matches!(host, Host::Node(_)) {
                "rounded"
            } else {
                "dashed"
            }
        );
        for ep in eps {
            let _ = writeln!(
                out,
                "    {} [shape=box, label={}];",
                quoted(&format!("ep:{}/{}", ep.network, ep.ip)),
                quoted(&format!("{}\n{}", ep.name, ep.ip))
            );
        }
        if eps.is_empty() {
            // Graphviz drops an empty cluster; a host without endpoints is still a host.
            let _ = writeln!(
                out,
                "    {} [shape=point, label=\"\"];",
                quoted(&format!("host:{i}"))
            );
        }
        out += "  }\n";
    }
    for ep in &c.endpoints {
        let line = colour.get(ep.network.as_str()).copied().unwrap_or("gray");
        let _ = writeln!(
            out,
            "  {} -> {} [color={}];",
            quoted(&format!("ep:{}/{}", ep.network, ep.ip)),
            quoted(&format!("net:{}", ep.network)),
            quoted(line)
        );
    }
    out += "}\n";
    out
}

/// `dot` rendered as SVG by Graphviz's `dot`.
pub fn svg(dot: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "Graphviz's dot is not installed (apt-get install graphviz), or use --format dot"
            ),
            _ => anyhow::Error::from(e).context("running dot"),
        })?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .context("writing to dot")?;
    let out = child.wait_with_output().context("running dot")?;
    if !out.status.success() {
        bail!(
            "dot failed: {}",
            crate::shared::text::one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{EndpointRecord, NetworkRecord};

    fn network(name: &str, vni: u32, subnet: &str) -> Network {
        crate::store::schema::decode::<NetworkRecord>(
            format!(r#"{{"vni":{vni},"subnet":"{subnet}"}}"#).as_bytes(),
        )
        .unwrap()
        .validate(name)
        .unwrap()
    }

    fn endpoint(net: &str, ip: &str, json: &str) -> Endpoint {
        crate::store::schema::decode::<EndpointRecord>(json.as_bytes())
            .unwrap()
            .validate(net, ip)
            .unwrap()
    }

    #[test]
    fn hosts_hold_their_endpoints_and_endpoints_join_their_networks() {
        let c = Cluster {
            networks: vec![
                network("blue", 42, "10.10.0.0/16"),
                network("red", 43, "10.20.0.0/16"),
            ],
            nodes: vec![
                (
                    "h1".into(),
                    NodeRecord::new("10.0.0.1".parse().unwrap(), None),
                ),
                (
                    "h2".into(),
                    NodeRecord::new("10.0.0.2".parse().unwrap(), None),
                ),
            ],
            endpoints: vec![
                endpoint(
                    "blue",
                    "10.10.1.2",
                    r#"{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a77fa8a"}"#,
                ),
                endpoint(
                    "red",
                    "10.20.9.9",
                    r#"{"kind":"peer","name":"leg\"acy","mac":"02:42:0a:14:09:09","vtep":"10.0.0.9"}"#,
                ),
            ],
        };
        let d = dot(&c);
        assert!(
            d.starts_with("digraph overlay {") && d.ends_with("}\n"),
            "{d}"
        );
        assert!(d.contains("label=\"node h1\\nVTEP 10.0.0.1\""), "{d}");
        assert!(d.contains("label=\"legacy VTEP 10.0.0.9\""), "{d}");
        assert!(
            d.contains("\"ep:blue/10.10.1.2\" -> \"net:blue\" [color=\"#1f77b4\"]"),
            "{d}"
        );
        assert!(
            d.contains("\"ep:red/10.20.9.9\" -> \"net:red\" [color=\"#d62728\"]"),
            "{d}"
        );
        // h2 has no endpoint and is still drawn; a quote in a name stays inside its string.
        assert!(d.contains("node h2") && d.contains("leg\\\"acy"), "{d}");
    }
}
