//! CLI dispatch only: each subcommand's work lives in the library modules.
use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use overlay_agent::{
    cli::services,
    store::services::{Publish, ServicePort},
};
use overlay_agent::{
    cli::{
        commands::{self, Ctx, NetworkSpec},
        doctor, graph,
        inspect::{self, Table},
        monitor, report,
    },
    daemon,
    dataplane::{PinDir, pins},
    netlink::Netns,
    runtimes::docker,
    shared::{
        ipam::{Cidr, Subnet6},
        net::Mac,
    },
    status,
    store::{self, Store, schema},
};
use overlay_common::Counter;

/// The version and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OVERLAY_GIT_REVISION"),
    ")"
);

const EXIT_CODES: &str = "Exit status:
  0  done (doctor: and nothing found)
  1  the command failed, and one line on stderr says why; what it had made is undone
     (doctor: it found something, or no etcd member answers)
  2  the command line is wrong (an unknown option, a value that does not parse)";

#[derive(Parser)]
#[command(
    name = "overlay-agent",
    version = VERSION,
    about = "eBPF VXLAN overlay: the node agent, and the CLI to its networks and maps",
    after_long_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Logs as lines for people, or as one JSON object per line for log shippers
    /// (`ts`, `level`, `target`, `msg`).
    #[arg(long, global = true, env = "OVERLAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// etcd endpoints, comma-separated.
    #[arg(long, global = true, env = "OVERLAY_ETCD", default_value = store::DEFAULT_ENDPOINT, value_delimiter = ',')]
    etcd: Vec<String>,
    /// This node's name; also selects its bpffs pin directory <pin-root>/<node>.
    #[arg(long, global = true, env = "OVERLAY_NODE", default_value_t = status::default_node())]
    node: String,
    /// Key prefix of the overlay's state in etcd.
    #[arg(long, global = true, env = "OVERLAY_PREFIX", default_value = schema::DEFAULT_PREFIX)]
    prefix: String,
    /// Where nodes pin their maps and links.
    #[arg(long, global = true, env = "OVERLAY_PIN_ROOT", default_value = pins::DEFAULT_ROOT)]
    pin_root: String,
    /// Where agents write their status (<run-dir>/<node>.json).
    #[arg(
        long,
        global = true,
        env = "OVERLAY_RUN_DIR",
        default_value = status::DEFAULT_RUN_DIR
    )]
    run_dir: PathBuf,
    /// The CA certificate (PEM) that signed etcd's (https:// endpoints).
    #[arg(long, global = true, env = "OVERLAY_ETCD_CACERT")]
    etcd_cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for an etcd with --client-cert-auth.
    #[arg(long, global = true, env = "OVERLAY_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "OVERLAY_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// An etcd user; its password from --etcd-password-file or OVERLAY_ETCD_PASSWORD.
    #[arg(long, global = true, env = "OVERLAY_ETCD_USER")]
    etcd_user: Option<String>,
    /// A file holding the etcd user's password (never the password itself on the command line).
    #[arg(long, global = true, env = "OVERLAY_ETCD_PASSWORD_FILE")]
    etcd_password_file: Option<PathBuf>,
}

impl Global {
    /// How this invocation reaches etcd.
    fn etcd(&self) -> store::Etcd {
        store::Etcd {
            endpoints: self.etcd.clone(),
            prefix: self.prefix.clone(),
            cacert: self.etcd_cacert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password_file: self.etcd_password_file.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: load and attach the programs, keep the maps equal to etcd.
    Run {
        /// The underlay interface VXLAN leaves and arrives by.
        #[arg(long, env = "OVERLAY_UNDERLAY")]
        underlay: String,
        /// This node's VTEP address, IPv4 or IPv6 (an IPv6 underlay: every node's must be)
        /// (default: the underlay's first IPv4 address).
        #[arg(long, env = "OVERLAY_VTEP")]
        vtep: Option<IpAddr>,
        /// Seconds without keepalive after which other nodes drop this node's endpoints.
        #[arg(long, env = "OVERLAY_LEASE_TTL", default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=86400))]
        lease_ttl: i64,
        /// Capacity of each per-endpoint map (FDB, ARP, ENDPOINTS, PORTS, VTEPS).
        #[arg(long, env = "OVERLAY_MAX_ENTRIES", default_value_t = overlay_common::DEFAULT_MAX_ENTRIES, value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
        max_entries: u32,
        /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
        /// 10.0.0.1:9100 or [::]:9100 (default: off).
        #[arg(long, env = "OVERLAY_METRICS", value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// The node's resolvers, which the overlay's resolver asks for names outside the
        /// overlay (docs/names.md).
        #[arg(long, env = "OVERLAY_RESOLV_CONF", value_name = "FILE", default_value = overlay_agent::syncs::dns::DEFAULT_RESOLV_CONF)]
        resolv_conf: PathBuf,
    },
    /// Create, list and remove overlay networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach containers (network namespaces) to a network, list and remove them.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Load-balanced services: a virtual IP per service in a network, whose connections the
    /// programs spread over its backends (endpoints added with --service).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Hosts that are not ours (a kernel vxlan device set up by hand) joining a network.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Give this node itself an address on a network.
    #[command(subcommand)]
    Host(HostCmd),
    /// Remove everything the agent made on this node: its endpoints and registration in etcd,
    /// its interfaces, pinned programs and maps. The agent must be stopped first.
    Teardown,
    /// The node's agent, etcd, attachments, map sizes and problems.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Compare the node's maps with what etcd says they must hold, and check its attachments,
    /// GRO helpers, MTUs and remote VTEPs. Exits 1 when something is wrong.
    Doctor {
        /// Every node instead: its published map digest against what etcd says.
        #[arg(long)]
        cluster: bool,
        #[arg(long)]
        json: bool,
    },
    /// Serve Docker's remote network driver and IPAM driver `overlay-ebpf` on a unix socket:
    /// `docker network create -d overlay-ebpf --ipam-driver overlay-ebpf --subnet S NAME`.
    DockerPlugin {
        /// The socket dockerd discovers the plugin by (its file name is the driver's name).
        #[arg(long, default_value = docker::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Where Docker's network IDs and their overlay networks are kept across restarts
        /// (default /var/lib/overlay/docker/<node>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Live events from the programs: each drop with its reason, hook, VNI, VTEPs, MACs,
    /// addresses and ports; with --type trace, what they forwarded. One monitor per node.
    Monitor {
        /// Which events: drops, traces (encap, decap, ARP replies, local delivery, passes) or
        /// all.
        #[arg(long = "type", value_enum, default_value = "drop")]
        kind: MonitorType,
        /// Only this VNI's.
        #[arg(long)]
        vni: Option<u32>,
        /// Only frames from or to this endpoint: NETWORK/NAME, NAME, a MAC or an address.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only these outcomes, comma-separated counter names (e.g. drop_unknown_vni).
        #[arg(long, value_delimiter = ',')]
        reason: Vec<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Events each CPU may send per millisecond; beyond it they are counted as lost.
        #[arg(long, default_value_t = overlay_common::monitor::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        burst: u32,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print one of the node's dataplane maps.
    Maps {
        #[arg(value_enum)]
        table: Table,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The cluster as a whole.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print this CLI's reference as markdown (docs/cli.md; `cargo xtask docs` writes it).
    #[command(hide = true)]
    CliReference,
    /// Print the listings' JSON schemas as markdown (docs/json.md; `cargo xtask docs`).
    #[command(hide = true)]
    JsonReference,
    /// Print the completion script for a shell (`cargo xtask install` puts it where the shell
    /// looks: e.g. /usr/share/bash-completion/completions/overlay-agent).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command into DIR (`cargo xtask install` puts them in
    /// <prefix>/share/man/man1).
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Draw the cluster from etcd: hosts (nodes and legacy VTEPs) holding their endpoints, each
    /// joined to its network. DOT for Graphviz (`| dot -Tsvg > cluster.svg`), or SVG made with
    /// Graphviz's `dot`.
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Svg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// docs/cli.md: every command's help, with the default node name (this machine's host name)
/// written as what it is, so the page is the same wherever it is rendered.
fn cli_reference() -> String {
    use clap::CommandFactory;
    let cmd = Cli::command().mut_arg("node", |a| a.default_value("<host name>"));
    overlay_agent::cli::reference::markdown(cmd)
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MonitorType {
    Drop,
    Trace,
    All,
}

#[derive(Subcommand)]
enum NetworkCmd {
    Create {
        name: String,
        #[arg(long)]
        subnet: Cidr,
        /// VXLAN network identifier, 1-16777215.
        #[arg(long)]
        vni: u32,
        /// UDP destination port of its VXLAN packets.
        #[arg(long, default_value_t = overlay_common::wire::DEFAULT_VXLAN_PORT)]
        port: u16,
        /// Interface MTU (default: each node's underlay MTU less 50).
        #[arg(long)]
        mtu: Option<u32>,
        /// Size of each node's address slice (default /24 of a /16).
        #[arg(long)]
        slice_prefix: Option<u8>,
        /// IPv6 prefix for a dual-stack network (at most /96, e.g. fd00:10::/64): each
        /// endpoint's IPv6 address is the prefix followed by its IPv4 address.
        #[arg(long)]
        subnet6: Option<Subnet6>,
        /// Broadcast and multicast frames per second each endpoint may send (storm control;
        /// 0: unlimited).
        #[arg(long, default_value_t = schema::DEFAULT_BUM_RATE)]
        bum_rate: u32,
        /// No gateway and no way out of the overlay: containers reach only its members.
        #[arg(long)]
        internal: bool,
    },
    Ls {
        #[arg(long)]
        json: bool,
    },
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum EndpointCmd {
    Add {
        name: String,
        #[arg(long)]
        network: String,
        /// A namespace name as `ip netns` makes it, or a path such as /proc/PID/ns/net.
        #[arg(long)]
        netns: String,
        /// The address (default: the next free one in this node's slice).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Make it a backend of this service of the network (repeatable; the service must
        /// exist).
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
    Ls {
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create a service: a VIP of the network (--vip, or its highest free address) and ports.
    Create {
        name: String,
        #[arg(long)]
        network: String,
        /// A port the VIP serves, PORT/tcp or PORT/udp (repeatable); backends serve the same.
        #[arg(long = "port", value_name = "PORT/PROTO", required = true)]
        ports: Vec<ServicePort>,
        /// The VIP (default: the highest free address of the network's subnet).
        #[arg(long)]
        vip: Option<Ipv4Addr>,
        /// A port published on every node's underlay address, PUBLISHED:TARGET/PROTO (TARGET/PROTO
        /// one of --port): clients anywhere reach the backends, which see their address.
        #[arg(long, value_name = "PUBLISHED:TARGET/PROTO")]
        publish: Vec<Publish>,
    },
    /// Services with their VIP, ports and backends per node.
    Ls {
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a service and free its VIP.
    Rm {
        name: String,
        #[arg(long)]
        network: String,
    },
}

#[derive(Subcommand)]
enum PeerCmd {
    Add {
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Ipv4Addr,
        #[arg(long)]
        mac: Mac,
        /// The peer host's underlay address (its VTEP), of the cluster's family.
        #[arg(long)]
        vtep: IpAddr,
    },
    Rm {
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Ipv4Addr,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    Join {
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
    },
    Leave {
        #[arg(long)]
        network: String,
    },
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
