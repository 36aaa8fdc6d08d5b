//! The control plane of a whole cluster at scale (`cargo xtask bench --scale`): a real etcd
//! (one member, three, or three behind etcd's gRPC proxy) and N simulated nodes in this
//! process (sim_node.rs: the agent's own control-plane code over recorders), beside real
//! agents with real maps when asked.
//!
//! Per point: endpoints written in batches; then probes (one endpoint written at t0, the time
//! until each node has it: network programming latency); then an etcd outage longer than the
//! agent's DARK and a restart (the time until every node is watching again and has an endpoint
//! written after the restart, full nodes having relisted); etcd's RSS, CPU and db size, this
//! process's memory per node and per endpoint a full node holds.
//!
//! What is simulated, exactly: a full node runs the agent's listing, watch, copy of etcd,
//! fast path and full reconcile, with map writes recorded instead of made and no interfaces
//! (its own endpoints are left out, as on a node whose ports are missing); a light node
//! registers and watches like an agent, decodes and validates each endpoint, and holds
//! nothing (no copy, no listing: after an outage it resumes its watch where it was, which
//! is what the agent does when it was dark for less than DARK). No node runs the node syncs
//! (GRO, flood lists, egress, DNS), publishes its digest, or serves traffic.
use std::{
    net::Ipv4Addr,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use overlay_agent::{
    daemon::core::ControlPlane,
    dataplane::{state::MapState, writer::Recorder},
    model::cluster::ClusterState,
    shared::{ifnames, net::Mac},
    store::{Etcd, Store},
};
use serde_json::json;

use crate::{
    deployment::{Deployment, ETCD_IP, wait_for},
    sim_node::{self, Full, NodeStats},
};

pub const NETWORK: &str = "scale";
pub const VNI: u32 = 42;
/// 4 million addresses: room for every endpoint and probe of any point.
pub const SUBNET: &str = "10.64.0.0/10";
const PROXY_PORT: u16 = 23790;
/// How long a point sits idle while its CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EtcdKind {
    /// One member.
    Single,
    /// Three members; each node is given all three.
    Cluster,
    /// Three members behind one `etcd grpc-proxy`, which coalesces watches of one range.
    Proxy,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub endpoints: usize,
    /// How many of the nodes are full (the rest are light); at least 1.
    pub full: usize,
    pub etcd: EtcdKind,
    /// Real agents (real maps, in namespaces) beside the simulated nodes.
    pub real_agents: usize,
    pub probes: usize,
    /// How long etcd is down before it is restarted (0: no restart measured).
    pub outage: Duration,
}

/// One point's figures, as scale.json holds them.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub nodes: usize,
    pub full_nodes: usize,
    pub endpoints: usize,
    pub etcd: String,
    pub load_s: f64,
    /// Every light node registered and watching.
    pub light_start_s: f64,
    /// Every full node listed, reconciled and watching.
    pub full_start_s: f64,
    /// Network programming latency over every (probe, node but the probe's own).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The same over full nodes only (list, watch, fast path, recorded write).
    pub full_latency_p99_ms: f64,
    pub samples: usize,
    /// Probe arrivals that never came (within 30 s).
    pub missing: usize,
    pub relist_s: f64,
    /// etcd answered health checks throughout the recovery.
    pub etcd_stayed_up: bool,
    /// This process's memory per endpoint a full node holds (copy of etcd, maps, record).
    pub agent_bytes_per_endpoint: f64,
    /// This process's memory per light node (connection, lease, watch).
    pub light_bytes_per_node: f64,
    pub etcd_rss_bytes: u64,
    pub etcd_cpu_s: f64,
    pub etcd_db_bytes: u64,
    /// etcd's CPU while every node sat idle (watching, keeping its lease alive, nothing
    /// written), in percent of one core: what the nodes cost it just by being there.
    pub idle_etcd_cpu_pct: f64,
    /// This process's CPU over the same window (every simulated node's idle work).
    pub idle_nodes_cpu_pct: f64,
}

impl Point {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "nodes": self.nodes, "full_nodes": self.full_nodes, "endpoints": self.endpoints,
            "etcd": self.etcd, "load_s": self.load_s, "light_start_s": self.light_start_s,
            "full_start_s": self.full_start_s,
            "latency_p50_ms": self.latency_p50_ms, "latency_p99_ms": self.latency_p99_ms,
            "latency_max_ms": self.latency_max_ms, "full_latency_p99_ms": self.full_latency_p99_ms,
            "samples": self.samples, "missing": self.missing,
            "relist_s": self.relist_s, "etcd_stayed_up": self.etcd_stayed_up,
            "agent_bytes_per_endpoint": self.agent_bytes_per_endpoint,
            "light_bytes_per_node": self.light_bytes_per_node,
            "etcd_rss_bytes": self.etcd_rss_bytes, "etcd_cpu_s": self.etcd_cpu_s,
            "etcd_db_bytes": self.etcd_db_bytes,
            "idle_etcd_cpu_pct": self.idle_etcd_cpu_pct,
            "idle_nodes_cpu_pct": self.idle_nodes_cpu_pct,
        })
    }
}

pub struct SimFull {
    pub name: String,
    pub full: Arc<Full>,
    pub stats: Arc<NodeStats>,
}

pub struct SimLight {
    pub name: String,
    pub stats: Arc<NodeStats>,
}

/// The test bed: etcd, real agents, simulated nodes.
pub struct Bed {
    pub d: Deployment,
    rt: tokio::runtime::Runtime,
    /// What the simulated nodes are given (the proxy, or every member).
    endpoints: Vec<String>,
    admin: Store,
    pub opts: Options,
    pub full: Vec<SimFull>,
    pub light: Vec<SimLight>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    proxy: Option<Child>,
    /// Endpoints and probes written so far (the next address).
    written: usize,
}

/// Simulated node `i`'s name and VTEP (172.16.0.0/12 has room for a million).
pub fn sim_name(i: usize) -> String {
    format!("s{i}")
}

fn sim_vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + i as u32 + 1)
}

fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i as u32 + 1)
}

/// Endpoint `i`: a container on simulated node 1.. (node s0 has none of its own, so its view
/// is a node's without containers, like a real agent's beside it).
fn endpoint(nodes: usize, i: usize) -> (String, String) {
    let ip = address(i);
    let node = sim_name(1 + i % (nodes - 1).max(1));
    let name = format!("e{i}");
    let value = json!({
        "kind": "container", "name": name, "mac": Mac::from_ip(ip).to_string(),
        "node": node, "port": ifnames::port_name(NETWORK, &name),
    });
    (
        format!("/overlay/endpoints/{NETWORK}/{ip}"),
        value.to_string(),
    )
}

fn rss_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// User plus system CPU seconds of `pid` (fields 14 and 15 of /proc/pid/stat, in ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

/// Room for thousands of etcd connections, in this process and in the etcd it starts.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Bed {
    pub fn new(label: &str, opts: Options) -> Result<Self> {
        if opts.full == 0 || opts.full > opts.nodes {
            bail!("full nodes must be 1 to {} (the nodes)", opts.nodes);
        }
        raise_fd_limit();
        // At least one host, which runs the CLI (a legacy host's when no agent is asked for).
        let ours = if opts.real_agents == 0 {
            vec![false]
        } else {
            vec![true; opts.real_agents]
        };
        let mut d = match opts.etcd {
            EtcdKind::Single => Deployment::new(label, &ours)?,
            EtcdKind::Cluster | EtcdKind::Proxy => Deployment::with_etcd_members(label, &ours, 3)?,
        };
        d.create_network(NETWORK, SUBNET, VNI)?;
        let members = d.etcd.members();
        let mut proxy = None;
        let endpoints = if opts.etcd == EtcdKind::Proxy {
            let listen = format!("{ETCD_IP}:{PROXY_PORT}");
            let log = std::fs::File::create(d.dir().join("grpc-proxy.log"))?;
            proxy = Some(
                std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        d.etcd.wire(),
                        "etcd",
                        "grpc-proxy",
                        "start",
                    ])
                    .arg(format!("--endpoints={}", members.join(",")))
                    .arg(format!("--listen-addr={listen}"))
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting etcd grpc-proxy")?,
            );
            vec![format!("http://{listen}")]
        } else {
            members.clone()
        };
        let wire = d.etcd.wire().to_string();
        // Every thread of the runtime is made in the namespace that reaches etcd.
        let rt = crate::netns::runtime(&wire)?;
        let client = d.etcd.client();
        let admin = crate::netns::enter(&wire, || rt.block_on(Store::connect(&client)))?;
        // Room in the real agents' maps for every endpoint.
        let capacity = ((opts.endpoints + opts.probes + 64) * 5 / 4)
            .next_power_of_two()
            .max(1024);
        for h in 0..opts.real_agents {
            d.hosts[h].run_args = vec!["--max-entries".into(), capacity.to_string()];
            d.restart_agent(h)?;
        }
        let bed = Self {
            d,
            rt,
            endpoints,
            admin,
            opts,
            full: Vec::new(),
            light: Vec::new(),
            tasks: Vec::new(),
            proxy,
            written: 0,
        };
        if bed.proxy.is_some() {
            // The proxy answers once it reached a member.
            let store = bed.block(Store::connect(&Etcd::plain(&bed.endpoints, "/overlay")))?;
            drop(store);
        }
        Ok(bed)
    }

    /// Runs `fut` to completion from the namespace that reaches etcd.
    pub fn block<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        crate::netns::enter(self.d.etcd.wire(), || self.rt.block_on(fut))
    }

    /// Writes the endpoints, 100 per transaction; the revision after, and how long it took.
    pub fn load(&mut self) -> Result<(i64, Duration)> {
        let kvs: Vec<(String, String)> = (0..self.opts.endpoints)
            .map(|i| endpoint(self.opts.nodes, i))
            .collect();
        self.written = self.opts.endpoints;
        let started = Instant::now();
        let revision = self.block(self.admin.put_many_raw(&kvs))?;
        Ok((revision, started.elapsed()))
    }

    /// A node's own client, with the agent's bound on a request (half its lease TTL); an
    /// etcd too busy to answer within it is asked again, as an agent starting would.
    fn node_store(&self) -> Result<Store> {
        let mut tries = 0;
        loop {
            let connected = self.block(Store::connect_within(
                &Etcd::plain(&self.endpoints, "/overlay"),
                Duration::from_millis(sim_node::TTL as u64 * 500),
            ));
            tries += 1;
            match connected {
                Err(e) if tries < 10 => {
                    eprintln!("   {e:#}; connecting again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Starts the light nodes (all but the first `full`), watching from now on; when every
    /// one is watching, how long that took and this process's memory per light node.
    pub fn start_light(&mut self) -> Result<(Duration, f64)> {
        let before = rss_bytes("self");
        let started = Instant::now();
        for i in self.opts.full..self.opts.nodes {
            let store = self.node_store()?;
            let stats = Arc::new(NodeStats::default());
            let name = sim_name(i);
            let task = crate::netns::enter(self.d.etcd.wire(), || {
                self.rt.spawn(sim_node::run_light(
                    store,
                    name.clone(),
                    sim_vtep(i),
                    stats.clone(),
                ))
            });
            self.tasks.push(task);
            self.light.push(SimLight { name, stats });
        }
        let n = self.light.len();
        wait_for(Duration::from_secs(600), || {
            self.light
                .iter()
                .all(|l| l.stats.watching.load(Ordering::Relaxed))
        })
        .context("light nodes watching")?;
        let took = started.elapsed();
        let per = if n == 0 {
            0.0
        } else {
            (rss_bytes("self").saturating_sub(before)) as f64 / n as f64
        };
        Ok((took, per))
    }

    /// Starts the full nodes; once every one has listed, reconciled and caught up with
    /// `revision`, how long that took and this process's memory per endpoint each holds.
    pub fn start_full(&mut self) -> Result<(Duration, f64)> {
        let before = rss_bytes("self");
        let started = Instant::now();
        for i in 0..self.opts.full {
            let store = self.node_store()?;
            let stats = Arc::new(NodeStats::default());
            let name = sim_name(i);
            let full = Arc::new(Full {
                recorder: Recorder::default(),
                core: Arc::new(Mutex::new(ControlPlane::new(&name, MapState::default()))),
            });
            let task = crate::netns::enter(self.d.etcd.wire(), || {
                self.rt.spawn(sim_node::run_full(
                    store,
                    name.clone(),
                    sim_vtep(i),
                    full.clone(),
                    stats.clone(),
                ))
            });
            self.tasks.push(task);
            self.full.push(SimFull { name, full, stats });
        }
        wait_for(
            Duration::from_secs(60 + self.opts.endpoints as u64 / 100),
            || {
                self.full
                    .iter()
                    .all(|f| f.stats.watching.load(Ordering::Relaxed))
            },
        )
        .context("full nodes watching")?;
        // Caught up with every node's registration, light and full.
        let target = self.mark()?;
        wait_for(
            Duration::from_secs(60 + self.opts.endpoints as u64 / 100),
            || {
                self.full.iter().all(|f| {
                    f.stats.watching.load(Ordering::Relaxed)
                        && f.stats.revision.load(Ordering::Relaxed) >= target
                })
            },
        )
        .with_context(|| {
            format!(
                "full nodes listed and watching at revision {target}: {}",
                self.full
                    .iter()
                    .map(|f| f.stats.brief(&f.name))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let took = started.elapsed();
        let held = (self.opts.full * self.opts.endpoints.max(1)) as f64;
        Ok((took, rss_bytes("self").saturating_sub(before) as f64 / held))
    }

    /// Writes a key no node serves (nothing of ours parses it) and returns its revision: a
    /// node whose watch reached it has applied everything written before.
    fn mark(&self) -> Result<i64> {
        let now = format!("{:?}", Instant::now());
        self.block(self.admin.put_raw("/overlay/bench/mark", &now))
    }

    /// Writes one more endpoint (on the last simulated node); its address and t0.
    fn write_probe(&mut self) -> Result<(Ipv4Addr, Instant)> {
        let i = self.written;
        self.written += 1;
        let ip = address(i);
        let owner = sim_name(self.opts.nodes - 1);
        let name = format!("e{i}");
        let value = json!({
            "kind": "container", "name": name, "mac": Mac::from_ip(ip).to_string(),
            "node": owner, "port": ifnames::port_name(NETWORK, &name),
        });
        let key = format!("/overlay/endpoints/{NETWORK}/{ip}");
        let t0 = Instant::now();
        self.block(self.admin.put_raw(&key, &value.to_string()))?;
        Ok((ip, t0))
    }

    /// When `ip` reached each node but its owner (the last): full nodes' first, in ms after
    /// `t0`; None where it never came within `limit`.
    fn arrivals(&self, ip: Ipv4Addr, t0: Instant, limit: Duration) -> Vec<(bool, Option<f64>)> {
        let owner = sim_name(self.opts.nodes - 1);
        let deadline = t0 + limit;
        let octets = ip.octets();
        loop {
            let full: Vec<(bool, Option<f64>)> = self
                .full
                .iter()
                .filter(|f| f.name != owner)
                .map(|f| {
                    let at = f.full.recorder.arrived(VNI, octets);
                    (
                        true,
                        at.map(|a| a.saturating_duration_since(t0).as_secs_f64() * 1e3),
                    )
                })
                .collect();
            let light: Vec<(bool, Option<f64>)> = self
                .light
                .iter()
                .filter(|l| l.name != owner)
                .map(|l| {
                    let at = l.stats.probes.lock().unwrap().get(&ip).copied();
                    (
                        false,
                        at.map(|a| a.saturating_duration_since(t0).as_secs_f64() * 1e3),
                    )
                })
                .collect();
            let all: Vec<_> = full.into_iter().chain(light).collect();
            if all.iter().all(|(_, a)| a.is_some()) || Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Probes one at a time: (every sample, full nodes' samples, missing).
    pub fn probe(&mut self, count: usize) -> Result<(Vec<f64>, Vec<f64>, usize)> {
        let (mut all, mut full, mut missing) = (Vec::new(), Vec::new(), 0);
        for _ in 0..count {
            let (ip, t0) = self.write_probe()?;
            for (is_full, at) in self.arrivals(ip, t0, Duration::from_secs(30)) {
                match at {
                    Some(ms) => {
                        all.push(ms);
                        if is_full {
                            full.push(ms);
                        }
                    }
                    None => missing += 1,
                }
            }
            // Apart, so each probe measures a quiet cluster.
            std::thread::sleep(Duration::from_millis(200));
        }
        all.sort_by(f64::total_cmp);
        full.sort_by(f64::total_cmp);
        Ok((all, full, missing))
    }

    /// etcd down for `outage` (every member SIGKILLed), then started again: seconds from the
    /// restart until every node has an endpoint written right after it (full nodes having
    /// had their last changes replayed, or relisted, when the outage was longer than DARK),
    /// and whether etcd answered throughout. `compact`: etcd compacted first, at the last
    /// change every node has (a watch resumes after it), so no node's last changes can be
    /// replayed (each relists, paced as in a real cluster).
    pub fn outage(&mut self, outage: Duration, compact: bool) -> Result<(f64, bool)> {
        let count = |f: &SimFull| {
            [
                f.stats.listings.load(Ordering::Relaxed),
                f.stats.relists_planned.load(Ordering::Relaxed),
                f.stats.replayed.load(Ordering::Relaxed),
            ]
        };
        let before: Vec<[u64; 3]> = self.full.iter().map(count).collect();
        if compact {
            // Not at etcd's revision: writes outside the watched range (the real agent's
            // digest) move it past the last change any node heard.
            let last = self.mark()?;
            self.caught_up(last)?;
            self.d.etcd.compact_at(last)?;
        }
        self.d.etcd.stop();
        std::thread::sleep(outage);
        let restarted = Instant::now();
        self.d.etcd.restart()?;
        let pids = self.d.etcd.pids();
        let (ip, _) = self.write_probe()?;
        let arrived = self.arrivals(ip, restarted, Duration::from_secs(300));
        let up = pids
            .iter()
            .all(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        let missing = arrived.iter().filter(|(_, a)| a.is_none()).count();
        if missing > 0 {
            bail!(
                "{missing} nodes did not have the endpoint written after the restart within 300 s"
            );
        }
        if outage > overlay_agent::daemon::core::DARK {
            // Each resumed its watch on etcd's replay, relisted, or (a large cluster) resumed
            // it with the relist put off.
            for (f, was) in self.full.iter().zip(before) {
                if count(f).iter().zip(was).all(|(now, was)| *now <= was) {
                    bail!(
                        "full node {} neither had its changes replayed nor relisted nor planned to after the outage",
                        f.name
                    );
                }
            }
        }
        let secs = arrived
            .iter()
            .filter_map(|(_, a)| *a)
            .fold(0.0f64, f64::max)
            / 1e3;
        Ok((secs, up))
    }

    /// Every simulated node's stats, the full nodes' first.
    fn stats(&self) -> impl Iterator<Item = &NodeStats> + Clone {
        let full = self.full.iter().map(|f| &*f.stats);
        full.chain(self.light.iter().map(|l| &*l.stats))
    }

    /// Waits until every simulated node has applied `revision`.
    fn caught_up(&self, revision: i64) -> Result<()> {
        let all = self.stats();
        wait_for(Duration::from_secs(60), || {
            all.clone()
                .all(|s| s.revision.load(Ordering::Relaxed) >= revision)
        })
        .context("nodes catching up")?;
        Ok(())
    }

    /// The cluster as etcd holds it now, read into a copy as an agent would.
    pub fn cluster_now(&self) -> Result<ClusterState> {
        let keys = self.admin.keys().clone();
        let listing = self.block(self.admin.listing(&keys.all(), 0))?;
        let mut cp = ControlPlane::new("harness", MapState::default());
        cp.relisted(&keys, &listing.kvs);
        Ok(cp.cluster)
    }

    /// Every full node's recorded maps equal what `desired` computes for it from etcd now
    /// (after they caught up); Err names the first that differs and how.
    pub fn check_desired(&self) -> Result<()> {
        self.caught_up(self.mark()?)?;
        let cluster = self.cluster_now()?;
        for f in &self.full {
            let want = sim_node::desired_of(&cluster, &f.name);
            let have = f.full.recorder.with(|r| r.state.clone());
            if have != want {
                bail!(
                    "node {}: recorded maps differ from desired: {} FDB / {} ARP / {} VTEPS recorded, {} / {} / {} wanted",
                    f.name,
                    have.fdb.len(),
                    have.arp.len(),
                    have.vteps.len(),
                    want.fdb.len(),
                    want.arp.len(),
                    want.vteps.len()
                );
            }
        }
        Ok(())
    }

    /// etcd's and this process's CPU over `window` in which nothing is written, in percent of
    /// one core.
    pub fn idle_cpu(&self, window: Duration) -> (f64, f64) {
        let own = std::process::id();
        let (etcd0, own0, t0) = (self.etcd_cpu_s(), cpu_seconds(own), Instant::now());
        std::thread::sleep(window);
        let secs = t0.elapsed().as_secs_f64();
        (
            (self.etcd_cpu_s() - etcd0) / secs * 100.0,
            (cpu_seconds(own) - own0) / secs * 100.0,
        )
    }

    pub fn etcd_rss_bytes(&self) -> u64 {
        self.d
            .etcd
            .pids()
            .iter()
            .map(|p| rss_bytes(&p.to_string()))
            .sum()
    }

    pub fn etcd_cpu_s(&self) -> f64 {
        self.d.etcd.pids().iter().map(|p| cpu_seconds(*p)).sum()
    }

    pub fn etcd_db_bytes(&self) -> u64 {
        self.d
            .etcd
            .db_files()
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// How many of these nodes counted `stat` at least once.
fn having<'a>(
    stats: impl Iterator<Item = &'a NodeStats>,
    stat: fn(&NodeStats) -> &AtomicU64,
) -> usize {
    stats
        .filter(|s| stat(s).load(Ordering::Relaxed) > 0)
        .count()
}

/// One point, from start to figures.
pub fn run(opts: Options) -> Result<Point> {
    let mut bed = Bed::new("scl", opts.clone())?;
    let mut p = Point {
        nodes: opts.nodes,
        full_nodes: opts.full,
        endpoints: opts.endpoints,
        etcd: format!("{:?}", opts.etcd).to_lowercase(),
        ..Default::default()
    };
    eprintln!(
        "-- {} nodes ({} full), {} endpoints, etcd {}",
        opts.nodes, opts.full, opts.endpoints, p.etcd
    );
    let (_, took) = bed.load()?;
    p.load_s = took.as_secs_f64();
    eprintln!("   endpoints written in {:.1} s", p.load_s);
    let (took, per) = bed.start_light()?;
    (p.light_start_s, p.light_bytes_per_node) = (took.as_secs_f64(), per);
    eprintln!(
        "   {} light nodes watching after {:.1} s ({:.0} KiB each)",
        bed.light.len(),
        p.light_start_s,
        per / 1024.0
    );
    let (took, per) = bed.start_full()?;
    (p.full_start_s, p.agent_bytes_per_endpoint) = (took.as_secs_f64(), per);
    eprintln!(
        "   {} full nodes in sync after {:.1} s ({per:.0} bytes per endpoint each)",
        bed.full.len(),
        p.full_start_s
    );
    bed.check_desired()?;
    (p.idle_etcd_cpu_pct, p.idle_nodes_cpu_pct) = bed.idle_cpu(IDLE_WINDOW);
    eprintln!(
        "   idle for {IDLE_WINDOW:?}: etcd {:.0}% of a core, the nodes {:.0}%",
        p.idle_etcd_cpu_pct, p.idle_nodes_cpu_pct
    );
    let (all, full, missing) = bed.probe(opts.probes)?;
    p.latency_p50_ms = percentile(&all, 0.5);
    p.latency_p99_ms = percentile(&all, 0.99);
    p.latency_max_ms = all.last().copied().unwrap_or(f64::NAN);
    p.full_latency_p99_ms = percentile(&full, 0.99);
    (p.samples, p.missing) = (all.len(), missing);
    eprintln!(
        "   latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples, {missing} missing)",
        p.latency_p50_ms, p.latency_p99_ms, p.latency_max_ms, p.samples
    );
    p.etcd_rss_bytes = bed.etcd_rss_bytes();
    p.etcd_db_bytes = bed.etcd_db_bytes();
    if !opts.outage.is_zero() {
        let cpu = bed.etcd_cpu_s();
        let (secs, up) = bed.outage(opts.outage, false)?;
        (p.relist_s, p.etcd_stayed_up) = (secs, up);
        p.etcd_cpu_s = cpu;
        let full = || bed.full.iter().map(|f| &*f.stats);
        let (replayed, planned) = (
            having(full(), |s| &s.replayed),
            having(full(), |s| &s.relists_planned),
        );
        let light_replayed = having(bed.light.iter().map(|l| &*l.stats), |s| &s.replayed);
        // Why the others' replays did not vouch, each reason once with how many gave it.
        let mut unreplayed = std::collections::BTreeMap::<String, usize>::new();
        for s in bed.stats() {
            if let Some(why) = s.unreplayed.lock().unwrap().clone() {
                *unreplayed.entry(why).or_default() += 1;
            }
        }
        for (why, n) in &unreplayed {
            eprintln!("   {n} nodes' replay did not vouch: {why}");
        }
        // What core::relist_delay spreads every node's relist over, at this point's size.
        let window = overlay_agent::daemon::core::relist_window(opts.nodes, opts.endpoints);
        eprintln!(
            "   after a {:?} outage: every node in sync {secs:.1} s after the restart; of {} full nodes, {replayed} resumed on etcd's replay of their last changes, {planned} put a relist off (window {:.0} s); of {} light nodes, {light_replayed} had theirs replayed",
            opts.outage,
            bed.full.len(),
            window.as_secs_f64(),
            bed.light.len()
        );
        bed.check_desired()?;
    } else {
        p.etcd_cpu_s = bed.etcd_cpu_s();
    }
    Ok(p)
}
