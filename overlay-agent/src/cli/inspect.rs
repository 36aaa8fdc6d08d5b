//! What `overlay-agent maps ...` prints: every map as rows, rendered as an aligned table for
//! people or as JSON for machines (the bar is `cilium-dbg bpf tunnel list -o json`).
use anyhow::Result;
use overlay_common::vtep::to_ip;
use serde_json::{Map as JsonObject, Value};

use crate::{
    dataplane::{Maps, PinDir},
    shared::net::{Mac, ip},
};

/// `overlay-agent maps <table> [--json]`: the node's map as text.
pub fn render(pins: &PinDir, table: Table, json: bool) -> Result<String> {
    let rows = rows(&Maps::open(pins)?, table)?;
    Ok(if json {
        serde_json::to_string_pretty(&rows.to_json())? + "\n"
    } else {
        rows.to_table()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    /// Remote MAC -> VTEP
    Fdb,
    /// Overlay IPv4 -> MAC
    Arp,
    /// Local endpoints (containers on this host)
    Endpoints,
    /// VTEPs accepted per VNI
    Vteps,
    /// VNIs served, with their UDP port
    Networks,
    /// Packet counters, summed over CPUs
    Stats,
    /// Multicast groups per VNI: local member ports (IGMP snooping) and remote member VTEPs
    Groups,
    /// Per VNI: where broadcast and multicast go (remote VTEPs, the local bridge, the storm
    /// limit), and whether the network is internal
    Flood,
    /// Service ports balanced here: VNI, VIP, port, protocol, id, backend count
    Services,
    /// Each service port's backends by slot: address, port, healthy
    Backends,
    /// Network namespaces whose sockets are balanced (by netns cookie), with their VNIs
    Members,
}

/// What a column's cells are in JSON; the table shows every cell as text, `-` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A JSON number; `-` (or anything that is not a number, e.g. `unlimited`) is null.
    Number,
    /// `yes` / `no` as JSON true / false.
    Flag,
}

/// A column: its name (the JSON key, upper-cased for the table's header) and its kind. The
/// JSON of a listing is one object per row, each key always of one type (or null), so a
/// script can rely on it (docs/json.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Col {
    pub name: &'static str,
    pub kind: Kind,
}

pub const fn text(name: &'static str) -> Col {
    Col {
        name,
        kind: Kind::Text,
    }
}

pub const fn number(name: &'static str) -> Col {
    Col {
        name,
        kind: Kind::Number,
    }
}

pub const fn flag(name: &'static str) -> Col {
    Col {
        name,
        kind: Kind::Flag,
    }
}

/// Columns and rows, cells already formatted; sorted so output is stable.
pub struct Rows {
    pub columns: &'static [Col],
    pub rows: Vec<Vec<String>>,
}

/// The columns of a map's listing: its JSON schema (docs/json.md is rendered from these).
pub fn columns(table: Table) -> &'static [Col] {
    match table {
        Table::Fdb => const { &[number("vni"), text("mac"), text("vtep")] },
        Table::Arp => const { &[number("vni"), text("ip"), text("mac")] },
        Table::Endpoints => {
            const {
                &[
                    number("vni"),
                    text("mac"),
                    text("ip"),
                    number("ifindex"),
                    text("kind"),
                ]
            }
        }
        Table::Vteps => const { &[number("vni"), text("vtep")] },
        Table::Networks => const { &[number("vni"), number("port")] },
        Table::Flood => {
            const {
                &[
                    number("vni"),
                    text("remote_vteps"),
                    text("bridge"),
                    text("sent_by"),
                    number("bum_rate_pps"),
                    flag("internal"),
                ]
            }
        }
        Table::Groups => const { &[number("vni"), text("group"), text("where"), text("members")] },
        Table::Services => {
            const {
                &[
                    number("vni"),
                    text("vip"),
                    number("port"),
                    text("proto"),
                    number("id"),
                    number("backends"),
                ]
            }
        }
        Table::Backends => {
            const {
                &[
                    number("service"),
                    number("slot"),
                    text("ip"),
                    number("port"),
                    flag("healthy"),
                ]
            }
        }
        Table::Members => const { &[number("netns_cookie"), text("vnis")] },
        Table::Stats => const { &[text("counter"), number("packets")] },
    }
}

pub fn rows(maps: &Maps, table: Table) -> Result<Rows> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    match table {
        Table::Fdb => {
            for e in maps.fdb_entries() {
                let (k, v) = e?;
                rows.push(vec![
                    k.vni.to_string(),
                    Mac(k.mac).to_string(),
                    to_ip(v.vtep).to_string(),
                ]);
            }
        }
        Table::Arp => {
            for e in maps.arp_entries() {
                let (k, v) = e?;
                rows.push(vec![
                    k.vni.to_string(),
                    ip(k.ip).to_string(),
                    Mac(v.mac).to_string(),
                ]);
            }
        }
        Table::Endpoints => {
            for e in maps.endpoint_entries() {
                let (_, v) = e?;
                rows.push(vec![
                    v.vni.to_string(),
                    Mac(v.mac).to_string(),
                    ip(v.ip).to_string(),
                    v.ifindex.to_string(),
                    if v.deliver == overlay_common::deliver::INGRESS {
                        "host"
                    } else {
                        "container"
                    }
                    .to_string(),
                ]);
            }
        }
        Table::Vteps => {
            for e in maps.vtep_entries() {
                let (k, _) = e?;
                rows.push(vec![k.vni.to_string(), to_ip(k.ip).to_string()]);
            }
        }
        Table::Networks => {
            for e in maps.network_entries() {
                let (vni, n) = e?;
                rows.push(vec![vni.to_string(), n.port.to_string()]);
            }
        }
        Table::Flood => {
            let name = |ifindex: u32| match ifindex {
                0 => "-".to_string(),
                i => crate::netlink::iface_name(i).unwrap_or_else(|| i.to_string()),
            };
            for e in maps.flood_entries() {
                let (vni, f) = e?;
                let vteps: Vec<String> = f
                    .remote_vteps()
                    .iter()
                    .map(|v| to_ip(*v).to_string())
                    .collect();
                rows.push(vec![
                    vni.to_string(),
                    if vteps.is_empty() {
                        "-".into()
                    } else {
                        vteps.join(",")
                    },
                    name(f.bridge),
                    name(f.tunnel),
                    match f.rate_pps {
                        0 => "unlimited".into(),
                        r => r.to_string(),
                    },
                    (if f.internal != 0 { "yes" } else { "no" }).into(),
                ]);
            }
        }
        Table::Groups => {
            for e in maps.group_entries() {
                let (k, _) = e?;
                let port = crate::netlink::iface_name(k.port).unwrap_or_else(|| k.port.to_string());
                rows.push(vec![
                    k.vni.to_string(),
                    ip(k.group).to_string(),
                    "local".into(),
                    port,
                ]);
            }
            for e in maps.mcast_entries() {
                let (k, v) = e?;
                let vteps: Vec<String> =
                    v.members().iter().map(|t| to_ip(*t).to_string()).collect();
                rows.push(vec![
                    k.vni.to_string(),
                    ip(k.ip).to_string(),
                    "remote".into(),
                    vteps.join(","),
                ]);
            }
        }
        Table::Services => {
            for e in maps.service_entries() {
                let (k, v) = e?;
                rows.push(vec![
                    k.vni.to_string(),
                    ip(k.vip).to_string(),
                    k.port().to_string(),
                    proto_name(k.proto),
                    v.id.to_string(),
                    v.count.to_string(),
                ]);
            }
        }
        Table::Backends => {
            for e in maps.backend_entries() {
                let (k, v) = e?;
                rows.push(vec![
                    k.service.to_string(),
                    k.slot.to_string(),
                    ip(v.ip).to_string(),
                    v.port().to_string(),
                    (if v.flags & overlay_common::BACKEND_HEALTHY != 0 {
                        "yes"
                    } else {
                        "no"
                    })
                    .into(),
                ]);
            }
        }
        Table::Members => {
            for e in maps.member_entries() {
                let (cookie, m) = e?;
                let vnis: Vec<String> = m.vnis().iter().map(|v| v.to_string()).collect();
                rows.push(vec![cookie.to_string(), vnis.join(",")]);
            }
        }
        Table::Stats => {
            for (c, n) in maps.counters()? {
                rows.push(vec![c.name().to_string(), n.to_string()]);
            }
            return Ok(Rows {
                columns: columns(table),
                rows,
            });
        }
    }
    rows.sort_by_key(|row| natural_key(row));
    Ok(Rows {
        columns: columns(table),
        rows,
    })
}

fn proto_name(proto: u8) -> String {
    match proto {
        overlay_common::proto::TCP => "tcp".into(),
        overlay_common::proto::UDP => "udp".into(),
        other => other.to_string(),
    }
}

/// Sort numbers as numbers (VNI 9 before VNI 10), everything else as text.
fn natural_key(row: &[String]) -> Vec<(u64, String)> {
    row.iter()
        .map(|cell| (cell.parse::<u64>().unwrap_or(u64::MAX), cell.clone()))
        .collect()
}

impl Rows {
    pub fn to_table(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.name.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(
            self.columns
                .iter()
                .map(|c| c.name.to_uppercase())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect(),
        );
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    /// An array of objects, one per row; each column's cells of its [`Kind`], `-` as null.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let mut obj = JsonObject::new();
                    for (col, cell) in self.columns.iter().zip(row) {
                        obj.insert(col.name.to_string(), json_cell(col.kind, cell));
                    }
                    Value::Object(obj)
                })
                .collect(),
        )
    }
}

fn json_cell(kind: Kind, cell: &str) -> Value {
    match (kind, cell) {
        (_, "-") => Value::Null,
        (Kind::Text, _) => Value::from(cell),
        (Kind::Number, _) => cell
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| cell.parse::<i64>().map(Value::from))
            .unwrap_or(Value::Null),
        (Kind::Flag, "yes") => Value::Bool(true),
        (Kind::Flag, "no") => Value::Bool(false),
        (Kind::Flag, _) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        Rows {
            columns: const { &[number("vni"), text("mac"), text("vtep")] },
            rows: vec![
                vec!["42".into(), "02:42:0a:0a:03:02".into(), "10.0.0.1".into()],
                vec!["7".into(), "02:42:0a:0a:04:02".into(), "10.0.0.2".into()],
            ],
        }
    }

    #[test]
    fn each_column_keeps_its_json_type_whatever_its_cells_look_like() {
        let rows = Rows {
            columns: const {
                &[
                    text("name"),
                    number("mtu"),
                    flag("internal"),
                    number("rate"),
                ]
            },
            rows: vec![
                vec!["42".into(), "1450".into(), "yes".into(), "unlimited".into()],
                vec!["c1".into(), "-".into(), "no".into(), "1000".into()],
            ],
        };
        assert_eq!(
            rows.to_json(),
            serde_json::json!([
                {"name": "42", "mtu": 1450, "internal": true, "rate": null},
                {"name": "c1", "mtu": null, "internal": false, "rate": 1000},
            ])
        );
    }

    #[test]
    fn table_is_aligned_with_a_header() {
        let t = sample().to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "VNI  MAC                VTEP");
        assert_eq!(lines[1], "42   02:42:0a:0a:03:02  10.0.0.1");
    }

    #[test]
    fn json_has_typed_fields() {
        let j = sample().to_json();
        assert_eq!(j[0]["vni"], 42);
        assert_eq!(j[0]["mac"], "02:42:0a:0a:03:02");
        assert_eq!(j[1]["vtep"], "10.0.0.2");
    }
}
