//! The command line's tree (clap): every command, option and its help. main.rs dispatches
//! it; `cli::reference` renders it as docs/cli.md, man pages and completions.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand};

use overlay_agent::{
    cli::inspect::Table,
    dataplane::pins,
    runtimes::docker,
    shared::{
        ipam::{Cidr, Subnet6},
        net::Mac,
    },
    status,
    store::{
        self, schema,
        services::{Publish, ServicePort},
    },
    syncs,
};

/// The version and the commit it was built from (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OVERLAY_GIT_REVISION"),
    ")"
);

pub const EXIT_CODES: &str = "Exit status:
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
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Logs as lines for people, or as one JSON object per line for log shippers
    /// (`ts`, `level`, `target`, `msg`).
    #[arg(long, global = true, env = "OVERLAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// etcd endpoints, comma-separated.
    #[arg(long, global = true, env = "OVERLAY_ETCD", default_value = store::DEFAULT_ENDPOINT, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// This node's name; also selects its bpffs pin directory <pin-root>/<node>.
    #[arg(long, global = true, env = "OVERLAY_NODE", default_value_t = status::default_node())]
    pub node: String,
    /// Key prefix of the overlay's state in etcd.
    #[arg(long, global = true, env = "OVERLAY_PREFIX", default_value = schema::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Where nodes pin their maps and links.
    #[arg(long, global = true, env = "OVERLAY_PIN_ROOT", default_value = pins::DEFAULT_ROOT)]
    pub pin_root: String,
    /// Where agents write their status (<run-dir>/<node>.json).
    #[arg(
        long,
        global = true,
        env = "OVERLAY_RUN_DIR",
        default_value = status::DEFAULT_RUN_DIR
    )]
    pub run_dir: PathBuf,
    /// The CA certificate (PEM) that signed etcd's (https:// endpoints).
    #[arg(long, global = true, env = "OVERLAY_ETCD_CACERT")]
    pub etcd_cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for an etcd with --client-cert-auth.
    #[arg(long, global = true, env = "OVERLAY_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "OVERLAY_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// An etcd user; its password from --etcd-password-file or OVERLAY_ETCD_PASSWORD.
    #[arg(long, global = true, env = "OVERLAY_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (never the password itself on the command line).
    #[arg(long, global = true, env = "OVERLAY_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl Global {
    /// How this invocation reaches etcd.
    pub fn etcd(&self) -> store::Etcd {
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
pub enum Command {
    /// Run the node agent: load and attach the programs, keep the maps equal to etcd.
    Run {
        /// The underlay interface VXLAN leaves and arrives by.
        #[arg(long, env = "OVERLAY_UNDERLAY")]
        underlay: String,
        /// This node's VTEP address, IPv4 or IPv6 (an IPv6 underlay: every node's must be)
        /// (default: the underlay's first IPv4 address).
        #[arg(long, env = "OVERLAY_VTEP")]
        vtep: Option<IpAddr>,
        /// Seconds without keepalive after which other nodes drop this node's endpoints: at
        /// least this, and nodes/100 when registering among over 1,000 nodes (in a cluster
        /// whose nodes all registered at its size, etcd's leader renews at most 400 leases a
        /// second).
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
        #[arg(long, env = "OVERLAY_RESOLV_CONF", value_name = "FILE", default_value = syncs::dns::DEFAULT_RESOLV_CONF)]
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
pub enum ClusterCmd {
    /// Draw the cluster from etcd: hosts (nodes and legacy VTEPs) holding their endpoints, each
    /// joined to its network. DOT for Graphviz (`| dot -Tsvg > cluster.svg`), or SVG made with
    /// Graphviz's `dot`.
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Svg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MonitorType {
    Drop,
    Trace,
    All,
}

#[derive(Subcommand)]
pub enum NetworkCmd {
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
pub enum EndpointCmd {
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
pub enum ServiceCmd {
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
pub enum PeerCmd {
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
pub enum HostCmd {
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
