//! `cargo xtask <setup|test|demo|bench|fuzz|docs|install|uninstall|docker-plugin>`: everything a fresh machine needs, in the order it needs it.
mod docker_plugin;
mod install;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "overlay's build, test and demo orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, rust-src for nightly, bpf-linker. Idempotent.
    Setup,
    /// Setup, then formatting, clippy and every test (unit, BPF_PROG_TEST_RUN, namespaces).
    Test {
        /// Also the long-running tests (`#[ignore]`d otherwise: a connection held idle through
        /// a VIP for 20 minutes).
        #[arg(long)]
        long: bool,
        /// Extra arguments for `cargo test` (a test name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, then the demo: etcd and three hosts with agents, in network namespaces.
    Demo {
        /// etcd members: 1 (TLS), or a cluster of 3 or 5 whose leader is killed at the end.
        #[arg(long, default_value_t = 1)]
        etcd_members: usize,
    },
    /// Release build, then our overlay beside kernel vxlan and plain routing, on a veth
    /// underlay and on one that behaves like a wire (MTU 1500 and 9000); writes
    /// target/bench/{bench.md,bench.json,bench-<underlay>.svg}.
    Bench {
        /// Rounds (modes alternate within each).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// veth, wire (MTU 1500 and 9000), wire1500, wire9000 or all.
        #[arg(long, default_value = "all")]
        underlay: String,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Also measure decapsulation in XDP instead of TC, in a table of its own.
        #[arg(long)]
        xdp_decap: bool,
        /// Also measure our overlay while a monitor traces every packet, in a table of its own.
        #[arg(long)]
        monitor: bool,
        /// The same over an IPv6 underlay (VTEPs fd00::<n>); writes bench6.md, bench6.json.
        #[arg(long)]
        ipv6_underlay: bool,
        /// Instead: the cost of multicast replication (five hosts; ours to 1, 2, 4 members
        /// and unicast; kernel vxlan with head-end replication).
        #[arg(long)]
        replication: bool,
        /// Instead: services, a VIP balanced by our socket programs beside the same traffic
        /// straight to a backend and through kube-proxy-style nftables DNAT (connection
        /// rate, latency, throughput); writes services.md, services.json.
        #[arg(long)]
        services: bool,
        /// With --services: only this metric (conn_rate, conn_rate_parallel, latency, tcp;
        /// repeatable), to measure one change quickly.
        #[arg(long = "metric", requires = "services")]
        metrics: Vec<String>,
        /// Instead: one agent's control plane with this many endpoints (convergence time,
        /// peak memory, then 1,000 changes/s for 30 s and their etcd-to-map lag).
        #[arg(long)]
        agent_scale: Option<u32>,
        /// Instead: the cluster's control plane at scale, a real etcd and simulated nodes
        /// (docs/scale.md); without --nodes the points 100, 1,000 and 5,000 nodes.
        #[arg(long)]
        scale: bool,
        /// With --scale: the nodes of one point.
        #[arg(long, requires = "scale")]
        nodes: Option<usize>,
        /// With --scale: the endpoints (default 150,000).
        #[arg(long, requires = "scale")]
        endpoints: Option<usize>,
        /// With --scale: single, cluster (three members) or proxy (etcd grpc-proxy before them).
        #[arg(long, default_value = "single", requires = "scale")]
        etcd: String,
    },
    /// Release build, then structure-aware frames through the loaded programs, each held
    /// against the reference model (half over an IPv4 underlay, half over IPv6); fails on any
    /// disagreement, showing the frame and the seed.
    Fuzz {
        /// Frames in all.
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// The seed (default: from the clock; printed either way).
        #[arg(long)]
        seed: Option<String>,
    },
    /// docs/cli.md and docs/json.md written again from the agent's own clap definitions and
    /// listing columns (a test fails while a file differs from what the binary renders).
    Docs,
    /// Release build, then overlay-agent in <prefix>/bin, the CNI plugin, man pages, shell
    /// completions, systemd units and /etc/overlay/agent.env (kept if it exists).
    Install {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Install the debug binaries already built instead (the tests do).
        #[arg(long)]
        debug: bool,
    },
    /// Removes exactly what install wrote under the same prefix (agent.env only if unchanged).
    Uninstall {
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Docker's managed plugin as a directory (config.json, rootfs/ with a static
    /// overlay-agent) for `docker plugin create overlay-ebpf DIR`.
    DockerPlugin {
        /// The plugin directory (default: target/docker-plugin).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Put this overlay-agent in the rootfs, with the shared libraries it needs, instead
        /// of building a static one (the tests give the debug binary).
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct LayoutArgs {
    #[arg(long, default_value = "/usr/local")]
    prefix: std::path::PathBuf,
    /// Where container runtimes look for CNI plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: std::path::PathBuf,
    /// Where the settings file goes (<sysconfdir>/overlay/agent.env).
    #[arg(long, default_value = "/etc")]
    sysconfdir: std::path::PathBuf,
}

impl LayoutArgs {
    fn layout(self) -> install::Layout {
        install::Layout {
            prefix: self.prefix,
            cni_bin_dir: self.cni_bin_dir,
            sysconfdir: self.sysconfdir,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::run(),
        Command::Test { long, args } => test(long, &args),
        Command::Demo { etcd_members } => demo(etcd_members),
        Command::Bench {
            rounds,
            underlay,
            seconds,
            xdp_decap,
            monitor,
            ipv6_underlay,
            replication,
            services,
            metrics,
            agent_scale,
            scale,
            nodes,
            endpoints,
            etcd,
        } => bench(
            rounds,
            &underlay,
            seconds,
            [xdp_decap, monitor, ipv6_underlay, replication, services],
            &metrics,
            agent_scale,
            scale.then_some(Scale {
                nodes,
                endpoints,
                etcd,
            }),
        ),
        Command::Fuzz { frames, seed } => fuzz(frames, seed.as_deref()),
        Command::Docs => docs(),
        Command::Install { layout, debug } => install::install(&layout.layout(), debug),
        Command::Uninstall { layout } => install::uninstall(&layout.layout()),
        Command::DockerPlugin { out, binary } => docker_plugin::build(
            &out.unwrap_or_else(docker_plugin::default_out),
            binary.as_deref(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(long: bool, args: &[String]) -> Result<()> {
    setup::run()?;
    util::clean_test_leftovers();
    util::step("cargo fmt --check")?;
    util::cargo(&["fmt", "--all", "--check"])?;
    util::step("cargo clippy (host crates)")?;
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    util::step("cargo clippy (eBPF programs, bpfel-unknown-none)")?;
    util::cargo_in(
        "overlay-ebpf",
        &[
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The namespace tests run the agent binary as users do: build it first.
    util::step("cargo build (binaries the tests run)")?;
    util::cargo(&["build", "--workspace", "--bins"])?;
    util::step("cargo test")?;
    let mut test_args = vec!["test", "--workspace", "--no-fail-fast"];
    if long || !args.is_empty() {
        test_args.push("--");
        test_args.extend(args.iter().map(String::as_str));
    }
    // The long tests are the ignored ones (no other test is ignored): they are listed as
    // "ignored" in every run without --long, never silently passed.
    if long {
        test_args.push("--include-ignored");
    }
    util::cargo_test(&test_args)
}

fn demo(etcd_members: usize) -> Result<()> {
    prepare_release()?;
    util::step("etcd, three hosts with their agents, six containers, one overlay")?;
    let members = etcd_members.to_string();
    util::run(
        util::workspace_root().join("target/release/overlay-demo"),
        &["--etcd-members", &members],
    )
}

/// `bench --scale`: one point, or the default points.
struct Scale {
    nodes: Option<usize>,
    endpoints: Option<usize>,
    etcd: String,
}

fn bench(
    rounds: u32,
    underlay: &str,
    seconds: u32,
    [xdp_decap, monitor, ipv6_underlay, replication, services]: [bool; 5],
    metrics: &[String],
    agent_scale: Option<u32>,
    scale: Option<Scale>,
) -> Result<()> {
    prepare_release()?;
    util::step(match (&scale, agent_scale, services) {
        (Some(_), ..) => "the cluster's control plane at scale: etcd and simulated nodes",
        (None, Some(_), _) => "one agent's control plane at scale: converge, memory, lag",
        (None, None, true) => "services: a VIP beside direct and nftables DNAT",
        (None, None, false) => "plain routing, kernel vxlan and our overlay, side by side",
    })?;
    let out = util::workspace_root().join("target/bench");
    let (rounds, seconds, out) = (
        rounds.to_string(),
        seconds.to_string(),
        out.to_string_lossy(),
    );
    let mut args = vec![
        "--rounds",
        &rounds,
        "--seconds",
        &seconds,
        "--underlay",
        underlay,
        "--out",
        &out,
    ];
    if xdp_decap {
        args.push("--xdp-decap");
    }
    if monitor {
        args.push("--monitor");
    }
    if ipv6_underlay {
        args.push("--ipv6-underlay");
    }
    if replication {
        args.push("--replication");
    }
    if services {
        args.push("--services");
    }
    for m in metrics {
        args.extend(["--metric", m]);
    }
    let endpoints = agent_scale.map(|n| n.to_string());
    if let Some(n) = &endpoints {
        args.extend(["--agent-scale", n]);
    }
    let point = scale.as_ref().map(|s| {
        (
            s.nodes.map(|n| n.to_string()),
            s.endpoints.map(|n| n.to_string()),
        )
    });
    if let (Some(s), Some((nodes, endpoints))) = (&scale, &point) {
        args.extend(["--scale", "--etcd", &s.etcd]);
        if let Some(n) = nodes {
            args.extend(["--nodes", n]);
        }
        if let Some(n) = endpoints {
            args.extend(["--endpoints", n]);
        }
    }
    util::run(
        util::workspace_root().join("target/release/overlay-bench"),
        &args,
    )
}

fn fuzz(frames: u64, seed: Option<&str>) -> Result<()> {
    prepare_release()?;
    util::step("frames through the programs, against the model")?;
    let frames = frames.to_string();
    let mut args = vec!["--frames", &frames];
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    util::run(
        util::workspace_root().join("target/release/overlay-fuzz"),
        &args,
    )
}

/// docs/cli.md and docs/json.md, as the agent's hidden `cli-reference` and `json-reference`
/// render them. No setup and no root: whoever changes the CLI has built the agent already.
fn docs() -> Result<()> {
    util::step("cargo build (overlay-agent)")?;
    util::cargo(&["build", "-p", "overlay-agent", "--bin", "overlay-agent"])?;
    let root = util::workspace_root();
    let agent = root.join("target/debug/overlay-agent");
    for (page, command) in [("cli.md", "cli-reference"), ("json.md", "json-reference")] {
        util::step(&format!("docs/{page} from `overlay-agent {command}`"))?;
        let out = std::process::Command::new(&agent)
            .arg(command)
            .output()
            .with_context(|| format!("running {}", agent.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "{} {command} failed ({}): {}",
                agent.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let path = root.join("docs").join(page);
        std::fs::write(&path, &out.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// What the demo and the benchmark need first: the machine set up, leftovers of a killed run
/// gone, and the release binaries (the agent, the demo, the benchmark) built.
fn prepare_release() -> Result<()> {
    setup::run()?;
    util::clean_test_leftovers();
    util::step("building (release)")?;
    util::cargo(&[
        "build",
        "--release",
        "-p",
        "overlay-agent",
        "-p",
        "overlay-tests",
        "--bins",
    ])
}
