//! `cargo xtask bench`: our overlay beside kernel vxlan and plain routing, in one run, in
//! alternating rounds; medians and ratios as a Markdown table, the raw runs as JSON, a chart
//! as SVG, all under target/bench/; then the per-program microbenchmark.
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;
use overlay_tests::{
    bench::{Family, Metric, Micro, Mode, Sample, Testbed, median, microbench},
    cluster_scale::EtcdKind,
    topology::Underlay,
};
use serde_json::json;

#[derive(Parser)]
#[command(name = "overlay-bench")]
struct Args {
    /// Rounds; each measures every mode once per metric, in a rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Which underlays: veth, wire (MTU 1500 and 9000), or all.
    #[arg(long, value_enum, default_value_t = Beds::All)]
    underlay: Beds,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Also measure our overlay with decapsulation in XDP instead of TC, in its own table.
    #[arg(long)]
    xdp_decap: bool,
    /// Also measure our overlay while a monitor traces every packet, in its own table.
    #[arg(long)]
    monitor: bool,
    /// The hosts' underlay is IPv6: VTEPs (ours and kernel vxlan's) and plain routing's next
    /// hops are fd00::<n>. Results go to bench6.md and bench6.json.
    #[arg(long, conflicts_with = "xdp_decap")]
    ipv6_underlay: bool,
    /// Only the one-agent control-plane benchmark, with this many endpoints.
    #[arg(long)]
    agent_scale: Option<u32>,
    /// Only the cluster's control plane at scale (cluster_scale.rs): etcd and simulated
    /// nodes; without --nodes, the points 100, 1,000 and 5,000 nodes. Writes scale.json,
    /// scale-cluster.md and scale.svg.
    #[arg(long)]
    scale: bool,
    /// Nodes of the one point to run (with --scale).
    #[arg(long, requires = "scale")]
    nodes: Option<usize>,
    /// Endpoints of the point(s) (with --scale; default 150,000).
    #[arg(long, requires = "scale")]
    endpoints: Option<usize>,
    /// Full simulated nodes per point (the rest are light; see cluster_scale.rs).
    #[arg(long, default_value_t = 10, requires = "scale")]
    full: usize,
    /// etcd: one member, three, or three behind etcd's gRPC proxy.
    #[arg(long, value_enum, default_value_t = EtcdKind::Single, requires = "scale")]
    etcd: EtcdKind,
    /// Changes per second during the scale benchmark's churn.
    #[arg(long, default_value_t = 1000)]
    churn_rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 30)]
    churn_seconds: u32,
    /// Only the multicast replication benchmark (five hosts: ours to 1, 2 and 4 members and
    /// unicast, kernel vxlan with head-end replication to the same).
    #[arg(long)]
    replication: bool,
    /// Only the services benchmark: a VIP balanced by our socket programs beside the same
    /// traffic sent straight to a backend and through kube-proxy-style nftables DNAT
    /// (connection rate, latency, throughput); writes services.md and services.json.
    #[arg(long)]
    services: bool,
    /// With --services: only these metrics (conn_rate, conn_rate_parallel, latency, tcp;
    /// repeatable), e.g. to measure one change quickly.
    #[arg(long = "metric", requires = "services")]
    metrics: Vec<String>,
    /// Only the per-program microbenchmark (no namespaces, a few seconds).
    #[arg(long)]
    micro_only: bool,
    /// Where the table, JSON and chart go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Beds {
    Veth,
    /// Both wire-like beds, MTU 1500 and 9000.
    Wire,
    Wire1500,
    Wire9000,
    All,
}

impl Beds {
    fn beds(self) -> Vec<Underlay> {
        let (w1500, w9000) = (Underlay::Wire { mtu: 1500 }, Underlay::Wire { mtu: 9000 });
        match self {
            Beds::Veth => vec![Underlay::Veth],
            Beds::Wire => vec![w1500, w9000],
            Beds::Wire1500 => vec![w1500],
            Beds::Wire9000 => vec![w9000],
            Beds::All => vec![Underlay::Veth, w1500, w9000],
        }
    }
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

type Runs = BTreeMap<(Underlay, Mode, Metric), Vec<Sample>>;

fn run(args: Args) -> Result<()> {
    overlay_tests::require_root();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.scale {
        return overlay_tests::scale_report::bench(
            args.nodes,
            args.endpoints,
            args.full,
            args.etcd,
            &args.out,
        );
    }
    if let Some(endpoints) = args.agent_scale {
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
    if args.replication {
        eprintln!("-- multicast replication: ours (five hosts with agents)");
        let mut rows = overlay_tests::replication::ours(args.seconds)?;
        // Let the kernel finish tearing the first bed down.
        std::thread::sleep(std::time::Duration::from_secs(5));
        eprintln!("-- multicast replication: kernel vxlan with head-end replication");
        rows.extend(overlay_tests::replication::kernel_vxlan(args.seconds)?);
        let table = overlay_tests::replication::markdown(&rows);
        std::fs::write(args.out.join("replication.md"), &table)?;
        println!("{table}");
        return Ok(());
    }
    if args.services {
        let table =
            overlay_tests::service_bench::run(args.rounds, args.seconds, &args.metrics, &args.out)?;
        println!("{table}");
        return Ok(());
    }
    if args.micro_only {
        for m in microbench(10_000, 5_000_000)? {
            println!("{:>7.1} ns  {}  ({})", m.ns, m.name, m.how);
        }
        return Ok(());
    }
    let underlays = args.underlay.beds();
    let (family, suffix) = match args.ipv6_underlay {
        false => (Family::Ipv4, ""),
        true => (Family::Ipv6, "6"),
    };
    let mut runs: Runs = BTreeMap::new();
    let mut raw = Vec::new();
    for (b, &underlay) in underlays.iter().enumerate() {
        // One underlay at a time: its modes alternate round by round; the next underlay's beds
        // are made only once this one's are gone.
        let tag = overlay_tests::unique(&format!("b{b}"));
        let mut modes = vec![Mode::Plain, Mode::KernelVxlan, Mode::Overlay];
        if underlay == Underlay::Veth {
            // The floor has no underlay: measured once, beside the veth bed.
            modes.push(Mode::Direct);
            if args.xdp_decap {
                modes.push(Mode::OverlayXdp);
            }
            if args.monitor {
                modes.push(Mode::OverlayTraced);
            }
        }
        let mut beds = Vec::new();
        for mode in modes {
            eprintln!("-- setting up {} on the {}", mode.name(), underlay.name());
            beds.push(Testbed::new(mode, &tag, underlay, family)?);
        }
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
                        "{lead}[{done:>2}/{total}] {} round {}/{}: {:<15} {:<24}",
                        underlay.key(),
                        round + 1,
                        args.rounds,
                        bed.mode.name(),
                        metric.name()
                    );
                    let s = bed.measure(metric, args.seconds)?;
                    raw.push(json!({
                        "underlay": underlay.key(), "round": round + 1, "mode": bed.mode.key(),
                        "metric": metric.key(), "value": s.value, "cpu": s.cpu,
                        "segments_per_skb": s.segments,
                    }));
                    runs.entry((underlay, bed.mode, metric))
                        .or_default()
                        .push(s);
                }
            }
        }
        eprintln!();
        drop(beds);
    }

    eprintln!("-- microbenchmark (BPF_PROG_TEST_RUN)");
    // Let the kernel finish tearing the test beds' namespaces down first.
    std::thread::sleep(std::time::Duration::from_secs(8));
    let micro = microbench(10_000, 5_000_000)?;

    let mut table = format!(
        "Medians of {} rounds, {} s each, modes alternating; two hosts in network namespaces, one container each; client on CPU 0, server on CPU 1{}.\n",
        args.rounds,
        args.seconds,
        match family {
            Family::Ipv4 => "",
            Family::Ipv6 => "; IPv6 underlay (VTEPs and next hops fd00::<n>, tunnels of 70 bytes)",
        }
    );
    for &underlay in &underlays {
        table.push_str(&markdown(&runs, underlay));
        std::fs::write(
            args.out
                .join(format!("bench{suffix}-{}.svg", underlay.key())),
            chart(&runs, underlay),
        )?;
    }
    table.push_str(&micro_table(&micro));
    if args.xdp_decap {
        table.push_str(&versus(&runs, Mode::OverlayXdp, "XDP / TC"));
    }
    if args.monitor {
        table.push_str(&versus(&runs, Mode::OverlayTraced, "traced / not"));
    }
    std::fs::write(args.out.join(format!("bench{suffix}.md")), &table)?;
    std::fs::write(
        args.out.join(format!("bench{suffix}.json")),
        serde_json::to_string_pretty(&json!({
            "rounds": args.rounds, "seconds": args.seconds, "runs": raw,
            "micro": micro.iter().map(|m| json!({"program": m.name, "ns": m.ns, "how": m.how})).collect::<Vec<_>>(),
        }))?,
    )?;
    println!("{table}");
    println!(
        "(written: {0}/bench{suffix}.md, bench{suffix}.json, bench{suffix}-<underlay>.svg)",
        args.out.display()
    );
    Ok(())
}

fn med(runs: &Runs, u: Underlay, mode: Mode, metric: Metric, what: What) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .get(&(u, mode, metric))?
        .iter()
        .filter_map(|s| match what {
            What::Value => Some(s.value),
            What::Cpu => s.cpu,
            What::Segments => s.segments,
        })
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

#[derive(Clone, Copy)]
enum What {
    Value,
    Cpu,
    Segments,
}

/// The targets, per underlay: on the veth bed what the first wave reached (no worse than
/// that), on a wire what the wire issue asks.
fn target(u: Underlay, metric: Metric) -> &'static str {
    match (u, metric) {
        (_, Metric::Udp64) => ">= 1.3x vxlan",
        (Underlay::Veth, Metric::Latency) => "<= 1.10x plain",
        (Underlay::Veth, _) => ">= 1.0x vxlan",
        (Underlay::Wire { .. }, Metric::Latency) => "<= 1.0x plain",
        (Underlay::Wire { .. }, Metric::Tcp1) => ">= 1.15x vxlan, CPU/GB <= 0.85x",
        (Underlay::Wire { .. }, Metric::Tcp4) => ">= 1.0x vxlan",
    }
}

fn met(
    u: Underlay,
    metric: Metric,
    to_plain: f64,
    to_vxlan: f64,
    cpu_to_vxlan: Option<f64>,
) -> bool {
    match (u, metric) {
        (_, Metric::Udp64) => to_vxlan >= 1.3,
        (Underlay::Veth, Metric::Latency) => to_plain <= 1.10,
        (Underlay::Veth, _) => to_vxlan >= 1.0,
        (Underlay::Wire { .. }, Metric::Latency) => to_plain <= 1.0,
        (Underlay::Wire { .. }, Metric::Tcp1) => {
            to_vxlan >= 1.15 && cpu_to_vxlan.is_some_and(|c| c <= 0.85)
        }
        (Underlay::Wire { .. }, Metric::Tcp4) => to_vxlan >= 1.0,
    }
}

const TABLE_MODES: [Mode; 4] = [Mode::Plain, Mode::KernelVxlan, Mode::Overlay, Mode::Direct];

fn markdown(runs: &Runs, u: Underlay) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n**{}**\n", u.name());
    let _ = writeln!(
        t,
        "| metric | plain routing | kernel vxlan | overlay (ours) | ours / plain | ours / kernel vxlan | target | met | direct veth (floor) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    let floor_of =
        |metric: Metric, what: What| med(runs, Underlay::Veth, Mode::Direct, metric, what);
    for metric in Metric::ALL {
        let v: Vec<Option<f64>> = TABLE_MODES
            .iter()
            .map(|&m| med(runs, u, m, metric, What::Value))
            .collect();
        let (Some(plain), Some(vxlan), Some(ours)) = (v[0], v[1], v[2]) else {
            continue;
        };
        let c: Vec<Option<f64>> = TABLE_MODES
            .iter()
            .map(|&m| med(runs, u, m, metric, What::Cpu))
            .collect();
        let cpu_ratio = c[2].zip(c[1]).map(|(o, k)| o / k);
        let floor = floor_of(metric, What::Value).map_or("-".to_string(), |f| format!("{f:.1}"));
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
            target(u, metric),
            if met(u, metric, rp, rv, cpu_ratio) {
                "yes"
            } else {
                "no"
            }
        );
        if let (Some(unit), Some(p), Some(k), Some(o)) = (metric.cpu_unit(), c[0], c[1], c[2]) {
            let _ = writeln!(
                t,
                "| &nbsp;&nbsp;{} ({unit}) | {p:.2} | {k:.2} | {o:.2} | {:.2}x | {:.2}x | lower is better | | {} |",
                metric.name(),
                o / p,
                o / k,
                floor_of(metric, What::Cpu).map_or("-".to_string(), |f| format!("{f:.2}"))
            );
        }
        if let Some(seg) = med(runs, u, Mode::Overlay, metric, What::Segments) {
            let _ = writeln!(
                t,
                "| &nbsp;&nbsp;{} (wire packets per skb at our decap) | | | {seg:.1} | | | | | |",
                metric.name()
            );
        }
    }
    t
}

fn micro_table(micro: &[Micro]) -> String {
    let mut t = String::new();
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

/// Our overlay as it runs by default against a variant of it, on the veth bed.
fn versus(runs: &Runs, variant: Mode, ratio: &str) -> String {
    let mut t = format!(
        "\n| metric | {} | {} | {ratio} |\n|---|---|---|---|\n",
        Mode::Overlay.name(),
        variant.name()
    );
    for metric in Metric::ALL {
        if let (Some(base), Some(other)) = (
            med(runs, Underlay::Veth, Mode::Overlay, metric, What::Value),
            med(runs, Underlay::Veth, variant, metric, What::Value),
        ) {
            let _ = writeln!(
                t,
                "| {} ({}) | {base:.1} | {other:.1} | {:.2}x |",
                metric.name(),
                metric.unit(),
                other / base
            );
        }
    }
    t
}

/// Grouped bars, each metric normalised to plain routing (= 1.0), so one axis fits all.
fn chart(runs: &Runs, u: Underlay) -> String {
    let name = u.name();
    let (w, h, left, top, bottom) = (760.0, 360.0, 50.0, 30.0, 60.0);
    let colors = ["#888888", "#d9822b", "#2b7bd9", "#cccccc"];
    let max = 1.6f64;
    let plot_h = h - top - bottom;
    let group_w = (w - left - 20.0) / Metric::ALL.len() as f64;
    let y = |v: f64| top + plot_h * (1.0 - (v / max).min(1.0));
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='18'>{name}: relative to plain routing (1.0 = the limit; for latency lower is better)</text>\n"
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
        let Some(plain) = med(runs, u, Mode::Plain, *metric, What::Value) else {
            continue;
        };
        let x0 = left + g as f64 * group_w + 15.0;
        let bar = (group_w - 30.0) / Mode::ALL.len() as f64;
        for (i, mode) in Mode::ALL.iter().enumerate() {
            let Some(v) = med(runs, u, *mode, *metric, What::Value)
                .or_else(|| med(runs, Underlay::Veth, *mode, *metric, What::Value))
            else {
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
