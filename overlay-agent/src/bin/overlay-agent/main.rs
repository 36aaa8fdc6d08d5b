//! CLI dispatch only: the command tree is args.rs, each subcommand's work lives in the
//! library modules.
mod args;

use std::{io::Write as _, process::ExitCode};

use anyhow::Result;
use overlay_agent::cli::services;
use overlay_agent::{
    cli::{
        commands::{self, Ctx, NetworkSpec},
        doctor, graph,
        inspect::{self},
        monitor, report,
    },
    daemon,
    dataplane::PinDir,
    netlink::Netns,
    runtimes::docker,
    store::{self, Store, schema},
};
use overlay_common::Counter;

use crate::args::*;

/// docs/cli.md: every command's help, with the default node name (this machine's host name)
/// written as what it is, so the page is the same wherever it is rendered.
fn cli_reference() -> String {
    use clap::CommandFactory;
    let cmd = Cli::command().mut_arg("node", |a| a.default_value("<host name>"));
    overlay_agent::cli::reference::markdown(cmd)
}

async fn run(cli: Cli) -> Result<()> {
    // What only renders the command tree needs no node, etcd or kernel.
    match &cli.command {
        Command::CliReference => {
            print!("{}", cli_reference());
            return Ok(());
        }
        Command::JsonReference => {
            print!("{}", overlay_agent::cli::reference::json_reference());
            return Ok(());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let script = overlay_agent::cli::reference::completions(Cli::command(), *shell);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            return Ok(());
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let cmd = Cli::command().mut_arg("node", |a| a.default_value("<host name>"));
            let pages = overlay_agent::cli::reference::man_pages(cmd, dir)?;
            println!("{} man pages in {}", pages.len(), dir.display());
            return Ok(());
        }
        _ => {}
    }
    let g = cli.global;
    schema::check_name("node", &g.node)?;
    let pins = PinDir::new(&g.pin_root, &g.node)?;
    let ctx = || async {
        Ok::<_, anyhow::Error>(Ctx {
            store: Store::connect(&g.etcd()).await?,
            node: g.node.clone(),
            pins: pins.clone(),
        })
    };
    match cli.command {
        Command::Run {
            underlay,
            vtep,
            lease_ttl,
            max_entries,
            metrics,
            resolv_conf,
        } => {
            daemon::run(daemon::Options {
                etcd: g.etcd(),
                node: g.node.clone(),
                underlay,
                vtep,
                lease_ttl,
                max_entries,
                pins: pins.clone(),
                run_dir: g.run_dir.clone(),
                metrics,
                resolv_conf,
            })
            .await?
        }
        Command::Network(cmd) => {
            // Input is checked before etcd is asked anything.
            let spec = match &cmd {
                NetworkCmd::Create {
                    name,
                    subnet,
                    vni,
                    port,
                    mtu,
                    slice_prefix,
                    subnet6,
                    bum_rate,
                    internal,
                } => Some(
                    NetworkSpec {
                        name: name.clone(),
                        subnet: *subnet,
                        vni: *vni,
                        port: *port,
                        mtu: *mtu,
                        slice_prefix: *slice_prefix,
                        subnet6: *subnet6,
                        bum_rate: Some(*bum_rate),
                        internal: *internal,
                    }
                    .validate()?,
                ),
                _ => None,
            };
            let ctx = ctx().await?;
            match cmd {
                NetworkCmd::Create { .. } => {
                    let net = spec.expect("validated above");
                    let done = match commands::network_create(&ctx.store, &net).await? {
                        commands::Created::New => "created",
                        commands::Created::Existed => "exists already with these settings",
                    };
                    let v6 = net.subnet6.map(|s| format!(" and {s}")).unwrap_or_default();
                    println!(
                        "network {} {done}: VNI {}, subnet {}{v6}, UDP port {}, /{} per node",
                        net.name, net.vni, net.subnet, net.port, net.slice_prefix
                    );
                }
                NetworkCmd::Ls { json } => {
                    let nets = ctx.store.networks().await?;
                    let eps = ctx.store.endpoints(None).await?;
                    print!("{}", report::render(&report::networks(&nets, &eps), json));
                }
                NetworkCmd::Rm { name } => {
                    commands::network_rm(&ctx.store, &name).await?;
                    println!("network {name} removed");
                }
            }
        }
        Command::Endpoint(EndpointCmd::Add {
            name,
            network,
            netns,
            ip,
            services,
        }) => {
            // The name and the namespace are checked, and the namespace opened, once: before
            // etcd is asked anything.
            let mut req = commands::Attach::new(name, network, ip)?;
            req.services = services;
            let ns = Netns::open(&netns)?;
            let ctx = ctx().await?;
            let made = commands::endpoint_add(&ctx, &req, &ns).await?;
            let ep = made.endpoint;
            let v6 = made
                .ipv6
                .map(|(a, _)| format!(" and {a}"))
                .unwrap_or_default();
            println!(
                "endpoint {}: {} {} on network {}, node {}{v6}",
                req.name(),
                ep.ip,
                ep.mac,
                req.network(),
                ctx.node
            );
            served(&ctx, &ep, true).await?;
        }
        Command::Endpoint(EndpointCmd::Ls { network, json }) => {
            let ctx = ctx().await?;
            let eps = ctx.store.endpoints(network.as_deref()).await?;
            let nets = ctx.store.networks().await?;
            print!("{}", report::render(&report::endpoints(&eps, &nets), json));
        }
        Command::Endpoint(EndpointCmd::Rm { name }) => {
            let ctx = ctx().await?;
            match commands::endpoint_rm(&ctx, &name).await? {
                Some(ep) => {
                    println!("endpoint {name} ({}) removed", ep.ip);
                    served(&ctx, &ep, false).await?;
                }
                None => println!("endpoint {name}: etcd had it no more; its interface is removed"),
            }
        }
        Command::Service(cmd) => {
            let store = Store::connect(&g.etcd()).await?;
            match cmd {
                ServiceCmd::Create {
                    name,
                    network,
                    ports,
                    vip,
                    publish,
                } => {
                    let spec = services::ServiceSpec {
                        name,
                        network,
                        ports,
                        vip,
                        publish,
                    };
                    let svc = services::service_create(&store, &spec).await?;
                    let ports: Vec<String> = svc.ports.iter().map(|p| p.to_string()).collect();
                    println!(
                        "service {} of network {}: VIP {}, ports {}",
                        svc.name,
                        svc.network,
                        svc.vip,
                        ports.join(",")
                    );
                }
                ServiceCmd::Ls { network, json } => {
                    let all = store.services(network.as_deref()).await?;
                    let eps = store.endpoints(network.as_deref()).await?;
                    let health = store.health_records().await?;
                    print!("{}", services::render(&all, &eps, &health, json));
                }
                ServiceCmd::Rm { name, network } => {
                    let svc = services::service_rm(&store, &network, &name).await?;
                    println!(
                        "service {name} of network {network} removed, VIP {} freed",
                        svc.vip
                    );
                }
            }
        }
        Command::Peer(cmd) => {
            let ctx = ctx().await?;
            match cmd {
                PeerCmd::Add {
                    network,
                    ip,
                    mac,
                    vtep,
                } => {
                    commands::peer_add(&ctx, &network, ip, mac, vtep).await?;
                    println!("peer {ip} ({mac}) behind VTEP {vtep} joined network {network}");
                }
                PeerCmd::Rm { network, ip } => {
                    commands::peer_rm(&ctx, &network, ip).await?;
                    println!("peer {ip} left network {network}");
                }
            }
        }
        Command::Host(cmd) => {
            let ctx = ctx().await?;
            match cmd {
                HostCmd::Join { network, ip } => {
                    let ep = commands::host_join(&ctx, &network, ip).await?;
                    println!(
                        "node {} joined network {network} as {} ({})",
                        ctx.node, ep.ip, ep.mac
                    );
                    served(&ctx, &ep, true).await?;
                }
                HostCmd::Leave { network } => {
                    let released = commands::host_leave(&ctx, &network)
                        .await?
                        .map_or("etcd had its address no more".to_string(), |ep| {
                            format!("{} released", ep.ip)
                        });
                    println!("node {} left network {network} ({released})", ctx.node);
                }
            }
        }
        Command::Teardown => {
            let store = Store::connect(&g.etcd()).await;
            let done = commands::teardown(&g.node, &pins, &g.run_dir, store).await?;
            println!(
                "node {}: {} endpoint(s) removed from etcd, interfaces removed: {}, pinned programs and maps removed",
                g.node,
                done.endpoints,
                if done.interfaces.is_empty() {
                    "none".to_string()
                } else {
                    done.interfaces.join(" ")
                }
            );
            if let Some(e) = done.etcd {
                eprintln!(
                    "overlay-agent: note: etcd left as it was ({e}); run teardown again once it is reachable"
                );
            }
        }
        Command::DockerPlugin { socket, state_dir } => {
            let store = Store::connect_retrying(&g.etcd(), std::time::Duration::from_secs(5)).await;
            let ctx = Ctx {
                store,
                node: g.node.clone(),
                pins: pins.clone(),
            };
            let state_dir = state_dir.unwrap_or_else(|| docker::default_state_dir(&g.node));
            docker::serve(ctx, docker::Options { socket, state_dir }).await?
        }
        Command::Cluster(ClusterCmd::Graph { format }) => {
            let ctx = ctx().await?;
            let cluster = graph::Cluster {
                networks: ctx.store.networks().await?,
                nodes: ctx.store.nodes().await?,
                endpoints: ctx.store.endpoints(None).await?,
            };
            let dot = graph::dot(&cluster);
            match format {
                GraphFormat::Dot => print!("{dot}"),
                GraphFormat::Svg => std::io::stdout().write_all(&graph::svg(&dot)?)?,
            }
        }
        Command::Status { json } => print!(
            "{}",
            report::status(&g.node, &pins, &g.run_dir, &g.etcd(), json).await?
        ),
        Command::Doctor { cluster, json } => {
            let etcd = g.etcd();
            let (members, store) = tokio::join!(store::health::probe(&etcd), Store::connect(&etcd));
            if members.reachable() == 0 {
                // Each member's own reason says more than the client's one for them all.
                let why: Vec<String> = members
                    .members
                    .iter()
                    .map(|m| format!("{}: {}", m.endpoint, m.error.as_deref().unwrap_or("?")))
                    .collect();
                anyhow::bail!("no etcd member answers ({})", why.join("; "));
            }
            let store = store?;
            let healthy = if cluster {
                let report = doctor::check_cluster(&store, &members).await?;
                print!("{}", doctor::render_cluster(&report, json));
                report.healthy()
            } else {
                let report = doctor::check(&g.node, &pins, &g.run_dir, &store, members).await?;
                print!("{}", doctor::render(&report, json));
                report.findings.is_empty()
            };
            if !healthy {
                std::process::exit(1);
            }
        }
        Command::Monitor {
            kind,
            vni,
            endpoint,
            reason,
            json,
            burst,
            count,
        } => {
            let (drops, traces) = match kind {
                MonitorType::Drop => (true, false),
                MonitorType::Trace => (false, true),
                MonitorType::All => (true, true),
            };
            let reasons = monitor_reasons(&reason, drops, traces)?;
            let endpoint = match endpoint {
                Some(spec) => Some(
                    monitor::EndpointMatch::resolve(&spec, async || {
                        Store::connect(&g.etcd()).await
                    })
                    .await?,
                ),
                None => None,
            };
            let opts = monitor::Options {
                filter: monitor::Filter {
                    drops,
                    traces,
                    vni,
                    endpoint,
                    reasons,
                },
                json,
                burst,
                count,
            };
            monitor::run(&pins, opts, &mut std::io::stdout().lock()).await?
        }
        Command::Maps { table, json } => print!("{}", inspect::render(&pins, table, json)?),
        // Printed above, before the node's name is checked.
        Command::CliReference
        | Command::JsonReference
        | Command::Completions { .. }
        | Command::Man { .. } => {}
    }
    Ok(())
}

/// The counters `--reason` names, each of a kind `--type` shows.
fn monitor_reasons(names: &[String], drops: bool, traces: bool) -> Result<Vec<Counter>> {
    names
        .iter()
        .map(|name| {
            let Some(c) = Counter::ALL
                .iter()
                .find(|c| c.is_monitored() && c.name() == name)
            else {
                anyhow::bail!(
                    "unknown reason {name}: one of {}",
                    Counter::ALL
                        .iter()
                        .filter(|c| c.is_monitored())
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            match (c.is_drop(), drops, traces) {
                (true, true, _) | (false, _, true) => Ok(*c),
                (true, false, _) => anyhow::bail!("{name} is a drop: add --type drop or all"),
                (false, _, false) => anyhow::bail!("{name} is a trace: add --type trace or all"),
            }
        })
        .collect()
}

/// Says whether this node's agent has picked the change up (it is the one that programs maps).
async fn served(ctx: &Ctx, ep: &schema::Endpoint, present: bool) -> Result<()> {
    if !commands::wait_served(ctx, ep, present).await? {
        eprintln!(
            "overlay-agent: note: node {}'s maps do not show this yet; is `overlay-agent run` running for it?",
            ctx.node
        );
    }
    Ok(())
}

/// An empty setting is an unset one: `OVERLAY_VTEP=` in a systemd EnvironmentFile, or a Docker
/// managed plugin's setting left at "" (Docker passes every declared one), means the default,
/// not an empty value (clap would take "" as a node name or a certificate's path). `empty`
/// says whether the variable named is set and empty.
fn without_empty_settings(
    mut cmd: clap::Command,
    empty: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> clap::Command {
    let ids: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(empty))
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        cmd = cmd.mut_subcommand(sub, |c| without_empty_settings(c, empty));
    }
    cmd
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let set_and_empty =
        |name: &std::ffi::OsStr| std::env::var_os(name).is_some_and(|v| v.is_empty());
    let matches = without_empty_settings(Cli::command(), &set_and_empty).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(cli.global.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("overlay-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` picks what is logged (info by default); `--log-format` how.
fn init_logging(format: LogFormat) {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let LogFormat::Json = format {
        logger.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_micros().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    logger.init();
}

/// An empty OVERLAY_NODE or OVERLAY_UNDERLAY is no setting at all, at the top and in a
/// subcommand; a setting with a value is still read.
#[cfg(test)]
#[test]
fn empty_settings_are_unset() {
    use clap::CommandFactory as _;
    let empty = |name: &std::ffi::OsStr| name == "OVERLAY_NODE" || name == "OVERLAY_UNDERLAY";
    let cmd = without_empty_settings(Cli::command(), &empty);
    let env = |cmd: &clap::Command, id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env().map(|e| e.to_os_string()))
    };
    assert_eq!(env(&cmd, "node"), None);
    assert_eq!(env(&cmd, "etcd"), Some("OVERLAY_ETCD".into()));
    let run = cmd.find_subcommand("run").unwrap();
    assert_eq!(env(run, "underlay"), None);
    assert_eq!(env(run, "vtep"), Some("OVERLAY_VTEP".into()));
}

/// docs/json.md is what this binary renders: a changed column fails here until it is written
/// again (`cargo xtask docs`).
#[cfg(test)]
#[test]
fn docs_json_md_is_what_the_binary_renders() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md");
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        written == overlay_agent::cli::reference::json_reference(),
        "docs/json.md is not what `overlay-agent json-reference` renders: run `cargo xtask docs`"
    );
}

/// docs/cli.md is what this binary renders: a changed command, option or help text fails here
/// until the page is written again.
#[cfg(test)]
#[test]
fn docs_cli_md_is_what_the_binary_renders() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        written == cli_reference(),
        "docs/cli.md is not what `overlay-agent cli-reference` renders: run `cargo xtask docs`"
    );
}

/// What users type is outside input: any arguments parse or are refused, never a panic, and a
/// value our parsers refuse (CIDRs, MACs, IPs, VNIs, ports, IPv6 prefixes) says so in one line
/// (clap prints it after its own "invalid value" line).
#[cfg(test)]
mod fuzz {
    use clap::{Parser, error::ErrorKind};
    use overlay_agent::{shared::ipam::Subnet6, store::schema};
    use proptest::prelude::*;

    use super::Cli;

    const VALUES: &[&str] = &[
        "",
        "10.10.0.0/16",
        "10.10.0.1/16",
        "10.10.0.0/33",
        "10.10.0.0/31",
        "10.10.0.0",
        "fd00:10::/64",
        "fd00:10::/97",
        "fd00::1",
        "::ffff:10.0.0.2",
        "10.0.0.2",
        "02:42:0a:0a:01:02",
        "02:42:0a:0a:01",
        "02:42:0a:0a:01:02:03",
        "zz:42:0a:0a:01:02",
        "0",
        "42",
        "16777215",
        "16777216",
        "4294967296",
        "-1",
        "65535",
        "65536",
        "a\nb",
        "--vni",
        "blue",
    ];

    fn arg() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(VALUES).prop_map(String::from),
            1 => any::<String>(),
            1 => "[0-9a-f.:/\n-]{0,24}",
        ]
    }

    /// A clap refusal caused by one of our parsers must show that parser's error in one line.
    fn one_line_cause(e: &clap::Error) -> Result<(), TestCaseError> {
        if e.kind() == ErrorKind::ValueValidation
            && let Some(cause) = std::error::Error::source(e)
        {
            let shown = cause.to_string();
            prop_assert!(!shown.contains('\n'), "{shown:?}");
        }
        Ok(())
    }

    fn one_line<T>(r: anyhow::Result<T>) -> Result<(), TestCaseError> {
        if let Err(e) = r {
            let shown = format!("{e:#}");
            prop_assert!(!shown.contains('\n'), "{shown:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn network_create(name in arg(), subnet in arg(), vni in arg(), port in arg(), subnet6 in arg()) {
            let argv = [
                "overlay-agent", "network", "create", &name, "--subnet", &subnet, "--vni", &vni,
                "--port", &port, "--subnet6", &subnet6,
            ];
            if let Err(e) = Cli::try_parse_from(argv) {
                one_line_cause(&e)?;
            }
            // What the command checks once clap has parsed.
            one_line(schema::check_name("network", &name))?;
            one_line(subnet6.parse::<Subnet6>())?;
            if let Ok(vni) = vni.parse::<u32>() {
                one_line(schema::check_vni(vni))?;
            }
        }

        #[test]
        fn peer_add(network in arg(), ip in arg(), mac in arg(), vtep in arg()) {
            let argv = [
                "overlay-agent", "peer", "add", "--network", &network, "--ip", &ip, "--mac", &mac,
                "--vtep", &vtep,
            ];
            if let Err(e) = Cli::try_parse_from(argv) {
                one_line_cause(&e)?;
            }
        }

        #[test]
        fn any_arguments(args in prop::collection::vec(arg(), 0..8)) {
            let argv = std::iter::once("overlay-agent".to_string()).chain(args);
            if let Err(e) = Cli::try_parse_from(argv) {
                one_line_cause(&e)?;
            }
        }
    }
}
