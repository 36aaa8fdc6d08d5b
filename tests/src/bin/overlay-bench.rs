//! `cargo xtask bench`: our overlay beside kernel vxlan and plain routing, in one run, in
//! alternating rounds; medians and ratios as a Markdown table, the raw runs as JSON, a chart
//! as SVG, all under target/bench/; then the per-program microbenchmark.
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;
use overlay_tests::bench::{Metric, Micro, Mode, Sample, Testbed, median, microbench};
use serde_json::json;

#[derive(Parser)]
#[command(name = "overlay-bench")]
struct Args {
    /// Rounds; each measures every mode once per metric, in a rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Also measure our overlay with decapsulation in XDP instead of TC, in its own table.
    #[arg(long)]
    xdp_decap: bool,
    /// Only the control-plane scale benchmark, with this many endpoints.
    #[arg(long)]
    scale: Option<u32>,
    /// Changes per second during the scale benchmark's churn.
    #[arg(long, default_value_t = 1000)]
    churn_rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 30)]
    churn_seconds: u32,
    /// Only the per-program microbenchmark (no namespaces, a few seconds).
    #[arg(long)]
    micro_only: bool,
    /// Where the table, JSON and chart go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Runs = BTreeMap<(Mode, Metric), Vec<Sample>>;

fn run(args: Args) -> Result<()> {
    overlay_tests::require_root();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if let Some(endpoints) = args.scale {
        let r = overlay_tests::scale::run(endpoints, args.churn_seconds, args.churn_rate)?;
        let table = format!(
            "| endpoints | converge | peak RSS | changes | lag p50 | lag p99 | lag max | full reconcile lag (p50 / max) |\n|---|---|---|---|---|---|---|---|\n| {} | {:.2} s (target < 10 s) | {:.1} MB (target < 100 MB) | {} in {} s ({} sampled) | {:.1} ms | {:.1} ms (target < 100 ms) | {:.1} ms | {:.0} / {:.0} ms |\n",
            r.endpoints,
            r.converge.as_secs_f64(),
            r.peak_rss_mb,
            r.changes,
            r.seconds,
            r.samples,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.lag_max_ms,
            r.full_p50_ms,
            r.full_max_ms
        );
        std::fs::write(args.out.join("scale.md"), &table)?;
        println!("{table}");
        return Ok(());
    }
    if args.micro_only {
        for m in microbench(10_000, 5_000_000)? {
            println!("{:>7.1} ns  {}  ({})", m.ns, m.name, m.how);
        }
        return Ok(());
    }
    let tag = overlay_tests::unique("b");
    let mut beds = Vec::new();
    let mut modes = Mode::ALL.to_vec();
    if args.xdp_decap {
        modes.push(Mode::OverlayXdp);
    }
    for mode in modes {
        eprintln!("-- setting up {}", mode.name());
        beds.push(Testbed::new(mode, &tag)?);
    }
    let mut runs: Runs = BTreeMap::new();
    let mut raw = Vec::new();
    let total = args.rounds as usize * Metric::ALL.len() * beds.len();
    let mut done = 0;
    for round in 0..args.rounds as usize {
        for metric in Metric::ALL {
            // Rotate the order each round, so no mode always runs first (or last).
            for i in 0..beds.len() {
                let bed = &beds[(i + round) % beds.len()];
                done += 1;
                // One line rewritten in a terminal, one line each in a log.
                let lead = if unsafe { libc::isatty(2) } == 1 {
                    "\r"
                } else {
                    "\n"
                };
                eprint!(
                    "{lead}[{done:>2}/{total}] round {}/{}: {:<15} {:<24}",
                    round + 1,
                    args.rounds,
                    bed.mode.name(),
                    metric.name()
                );
                let s = bed.measure(metric, args.seconds)?;
                raw.push(json!({
                    "round": round + 1, "mode": bed.mode.key(), "metric": metric.key(),
                    "value": s.value, "cpu": s.cpu,
                }));
                runs.entry((bed.mode, metric)).or_default().push(s);
            }
        }
    }
    eprintln!();
    drop(beds);

    eprintln!("-- microbenchmark (BPF_PROG_TEST_RUN)");
    // Let the kernel finish tearing the test beds' namespaces down first.
    std::thread::sleep(std::time::Duration::from_secs(8));
    let micro = microbench(10_000, 5_000_000)?;

    let mut table = markdown(&runs, &micro, &args);
    if args.xdp_decap {
        table.push_str(&tc_versus_xdp(&runs));
    }
    std::fs::write(args.out.join("bench.md"), &table)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&json!({
            "rounds": args.rounds, "seconds": args.seconds, "runs": raw,
            "micro": micro.iter().map(|m| json!({"program": m.name, "ns": m.ns, "how": m.how})).collect::<Vec<_>>(),
        }))?,
    )?;
    std::fs::write(args.out.join("bench.svg"), chart(&runs))?;
    println!("{table}");
    println!(
        "(written: {0}/bench.md, bench.json, bench.svg)",
        args.out.display()
    );
    Ok(())
}

fn med(runs: &Runs, mode: Mode, metric: Metric, cpu: bool) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .get(&(mode, metric))?
        .iter()
        .filter_map(|s| if cpu { s.cpu } else { Some(s.value) })
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

/// The issue's targets, as (ratio to plain routing, ratio to kernel vxlan) bounds.
fn target(metric: Metric) -> &'static str {
    match metric {
        Metric::Latency => "<= 1.10x plain, <= 0.85x vxlan",
        Metric::Udp64 => ">= 1.3x vxlan",
        Metric::Tcp1 | Metric::Tcp4 => ">= 1.0x vxlan",
    }
}

fn met(metric: Metric, to_plain: f64, to_vxlan: f64) -> bool {
    match metric {
        Metric::Latency => to_plain <= 1.10 && to_vxlan <= 0.85,
        Metric::Udp64 => to_vxlan >= 1.3,
        Metric::Tcp1 | Metric::Tcp4 => to_vxlan >= 1.0,
    }
}

fn markdown(runs: &Runs, micro: &[Micro], args: &Args) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Medians of {} rounds, {} s each, modes alternating; two hosts in network namespaces on a veth underlay, one container each.\n",
        args.rounds, args.seconds
    );
    let _ = writeln!(
        t,
        "| metric | plain routing | kernel vxlan | overlay (ours) | ours / plain | ours / kernel vxlan | target | met | direct veth (floor) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for metric in Metric::ALL {
        let v: Vec<Option<f64>> = Mode::ALL
            .iter()
            .map(|&m| med(runs, m, metric, false))
            .collect();
        let (Some(plain), Some(vxlan), Some(ours)) = (v[0], v[1], v[2]) else {
            continue;
        };
        let floor = v[3].map_or("-".to_string(), |f| format!("{f:.1}"));
        let (rp, rv) = (ours / plain, ours / vxlan);
        let fmt = |x: f64| match metric {
            Metric::Tcp1 | Metric::Tcp4 => format!("{x:.1}"),
            Metric::Udp64 => format!("{x:.0}"),
            Metric::Latency => format!("{x:.1}"),
        };
        let _ = writeln!(
            t,
            "| {} ({}) | {} | {} | {} | {rp:.2}x | {rv:.2}x | {} | {} | {floor} |",
            metric.name(),
            metric.unit(),
            fmt(plain),
            fmt(vxlan),
            fmt(ours),
            target(metric),
            if met(metric, rp, rv) { "yes" } else { "no" }
        );
        if let Some(unit) = metric.cpu_unit() {
            let c: Vec<Option<f64>> = Mode::ALL
                .iter()
                .map(|&m| med(runs, m, metric, true))
                .collect();
            if let (Some(p), Some(k), Some(o)) = (c[0], c[1], c[2]) {
                let _ = writeln!(
                    t,
                    "| &nbsp;&nbsp;{} ({unit}) | {p:.2} | {k:.2} | {o:.2} | {:.2}x | {:.2}x | lower is better | | {} |",
                    metric.name(),
                    o / p,
                    o / k,
                    c[3].map_or("-".to_string(), |f| format!("{f:.2}"))
                );
            }
        }
    }
    let _ = writeln!(
        t,
        "\n| program (BPF_PROG_TEST_RUN) | ns per packet | how | target |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    for m in micro {
        let target = if m.name.starts_with("pass") {
            "< 20 ns"
        } else {
            "< 100 ns"
        };
        let _ = writeln!(t, "| {} | {:.1} | {} | {target} |", m.name, m.ns, m.how);
    }
    t
}

/// Our overlay with TC decapsulation against the same with XDP decapsulation.
fn tc_versus_xdp(runs: &Runs) -> String {
    let mut t = String::from(
        "\n| metric | ours, TC decap | ours, XDP decap | XDP / TC |\n|---|---|---|---|\n",
    );
    for metric in Metric::ALL {
        if let (Some(tc), Some(xdp)) = (
            med(runs, Mode::Overlay, metric, false),
            med(runs, Mode::OverlayXdp, metric, false),
        ) {
            let _ = writeln!(
                t,
                "| {} ({}) | {tc:.1} | {xdp:.1} | {:.2}x |",
                metric.name(),
                metric.unit(),
                xdp / tc
            );
        }
    }
    t
}

/// Grouped bars, each metric normalised to plain routing (= 1.0), so one axis fits all.
fn chart(runs: &Runs) -> String {
    let (w, h, left, top, bottom) = (760.0, 360.0, 50.0, 30.0, 60.0);
    let colors = ["#888888", "#d9822b", "#2b7bd9", "#cccccc"];
    let max = 1.6f64;
    let plot_h = h - top - bottom;
    let group_w = (w - left - 20.0) / Metric::ALL.len() as f64;
    let y = |v: f64| top + plot_h * (1.0 - (v / max).min(1.0));
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='18'>relative to plain routing (1.0 = the limit; for latency lower is better)</text>\n"
    );
    for tick in [0.0, 0.5, 1.0, 1.5] {
        let _ = writeln!(
            s,
            "<line x1='{left}' x2='{x2}' y1='{yt}' y2='{yt}' stroke='#ddd'/><text x='8' y='{ty}'>{tick:.1}</text>",
            x2 = w - 20.0,
            yt = y(tick),
            ty = y(tick) + 4.0
        );
    }
    for (g, metric) in Metric::ALL.iter().enumerate() {
        let Some(plain) = med(runs, Mode::Plain, *metric, false) else {
            continue;
        };
        let x0 = left + g as f64 * group_w + 15.0;
        let bar = (group_w - 30.0) / Mode::ALL.len() as f64;
        for (i, mode) in Mode::ALL.iter().enumerate() {
            let Some(v) = med(runs, *mode, *metric, false) else {
                continue;
            };
            let r = v / plain;
            let x = x0 + i as f64 * bar;
            let _ = writeln!(
                s,
                "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{:.1}' fill='{}'/><text x='{:.1}' y='{:.1}' font-size='10'>{r:.2}</text>",
                y(r),
                bar - 4.0,
                top + plot_h - y(r),
                colors[i],
                x,
                y(r) - 3.0
            );
        }
        let _ = writeln!(
            s,
            "<text x='{x0:.1}' y='{:.1}'>{} ({})</text>",
            h - bottom + 18.0,
            metric.name(),
            metric.unit()
        );
    }
    for (i, mode) in Mode::ALL.iter().enumerate() {
        let x = left + i as f64 * 170.0;
        let _ = writeln!(
            s,
            "<rect x='{x}' y='{}' width='12' height='12' fill='{}'/><text x='{}' y='{}'>{}</text>",
            h - 22.0,
            colors[i],
            x + 16.0,
            h - 12.0,
            mode.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
