//! `overlay-bench --scale`: the points of cluster_scale.rs run one after another, then
//! target/bench/scale.json (one object per point), scale-cluster.md (the table) and scale.svg
//! (latency against nodes, drawn here: no plotting tool needed).
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result};

use crate::cluster_scale::{self, EtcdKind, Options, Point};

/// The points run without --nodes.
pub const DEFAULT_NODES: [usize; 3] = [100, 1000, 5000];
pub const DEFAULT_ENDPOINTS: usize = 150_000;

pub fn bench(
    nodes: Option<usize>,
    endpoints: Option<usize>,
    full: usize,
    etcd: EtcdKind,
    out: &Path,
) -> Result<()> {
    let points: Vec<usize> = nodes.map_or(DEFAULT_NODES.to_vec(), |n| vec![n]);
    let mut done = Vec::new();
    for n in points {
        let opts = Options {
            nodes: n,
            endpoints: endpoints.unwrap_or(DEFAULT_ENDPOINTS),
            full: full.min(n),
            etcd,
            real_agents: 0,
            probes: 10,
            outage: overlay_agent::daemon::core::DARK + Duration::from_secs(2),
        };
        let p = cluster_scale::run(opts).with_context(|| format!("the point of {n} nodes"))?;
        done.push(p);
        // Written after every point: a long run that fails later keeps what it measured.
        write(&done, out)?;
        // Let the kernel finish tearing the bed down.
        std::thread::sleep(Duration::from_secs(3));
    }
    println!("{}", table(&done));
    println!("{}", text_chart(&done));
    Ok(())
}

fn write(points: &[Point], out: &Path) -> Result<()> {
    let json: Vec<_> = points.iter().map(Point::json).collect();
    std::fs::write(
        out.join("scale.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(out.join("scale-cluster.md"), table(points))?;
    std::fs::write(out.join("scale.svg"), svg(points))?;
    Ok(())
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

pub fn table(points: &[Point]) -> String {
    let mut t = String::from(
        "| nodes (full) | endpoints | etcd | latency p50 / p99 / max | full nodes' p99 | relist after restart | per endpoint (full node) | per light node | etcd RSS | etcd CPU | etcd CPU idle | etcd db |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let _ = writeln!(
            t,
            "| {} ({}) | {} | {} | {:.0} / {:.0} / {:.0} ms{} | {:.0} ms | {:.1} s{} | {:.0} B | {:.0} KiB | {:.0} MiB | {:.0} s | {:.0}% | {:.0} MiB |",
            p.nodes,
            p.full_nodes,
            p.endpoints,
            p.etcd,
            p.latency_p50_ms,
            p.latency_p99_ms,
            p.latency_max_ms,
            if p.missing > 0 {
                format!(" ({} missing)", p.missing)
            } else {
                String::new()
            },
            p.full_latency_p99_ms,
            p.relist_s,
            if p.etcd_stayed_up {
                ""
            } else {
                " (etcd fell over)"
            },
            p.agent_bytes_per_endpoint,
            p.light_bytes_per_node / 1024.0,
            mib(p.etcd_rss_bytes as f64),
            p.etcd_cpu_s,
            p.idle_etcd_cpu_pct,
            mib(p.etcd_db_bytes as f64),
        );
    }
    t
}

/// p99 against nodes, one bar per point, for the terminal.
pub fn text_chart(points: &[Point]) -> String {
    let top = points
        .iter()
        .map(|p| p.latency_p99_ms)
        .fold(1.0f64, f64::max);
    let mut s = String::from("network programming latency p99 against nodes\n");
    for p in points {
        let bar = ((p.latency_p99_ms / top) * 50.0).round() as usize;
        let _ = writeln!(
            s,
            "{:>6} nodes |{} {:.0} ms",
            p.nodes,
            "#".repeat(bar),
            p.latency_p99_ms
        );
    }
    s
}

/// p50 and p99 against nodes (log scale), as a small SVG.
pub fn svg(points: &[Point]) -> String {
    let (w, h, m) = (480.0, 280.0, 50.0);
    let top = points
        .iter()
        .map(|p| p.latency_max_ms)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let xs: Vec<f64> = points
        .iter()
        .map(|p| (p.nodes.max(1) as f64).log10())
        .collect();
    let (lo, hi) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        xs.iter().copied().fold(0.0f64, f64::max).ceil().max(1.0),
    );
    let span = (hi - lo).max(1.0);
    let x = |v: f64| m + (v - lo) / span * (w - 2.0 * m);
    let y = |ms: f64| h - m - ms / top * (h - 2.0 * m);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<text x="{m}" y="20">network programming latency (ms) against nodes</text>
<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>
<text x="5" y="{}">{top:.0}</text><text x="5" y="{}">0</text>
"#,
        h - m,
        w - m,
        h - m,
        h - m,
        m + 4.0,
        h - m
    );
    for (series, colour, f) in [
        (
            "p50",
            "steelblue",
            (|p: &Point| p.latency_p50_ms) as fn(&Point) -> f64,
        ),
        ("p99", "firebrick", |p: &Point| p.latency_p99_ms),
        ("max", "gray", |p: &Point| p.latency_max_ms),
    ] {
        let pts: Vec<String> = points
            .iter()
            .zip(&xs)
            .map(|(p, v)| format!("{:.1},{:.1}", x(*v), y(f(p))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        if let Some((p, v)) = points.iter().zip(&xs).next_back() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{series}</text>"#,
                x(*v) + 4.0,
                y(f(p))
            );
        }
    }
    for (p, v) in points.iter().zip(&xs) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(*v),
            h - m + 15.0,
            p.nodes
        );
    }
    s.push_str("</svg>\n");
    s
}
