//! `overlay-bench --services`: a service's VIP balanced by our socket programs, beside the
//! same traffic sent straight to the backends and beside kube-proxy's nftables mode. Two
//! hosts with agents on a veth underlay; the clients on h1, two backends per mode on h2
//! (every mode spreads its connections over two, since two server namespaces cost more than
//! one); every mode on the same path through the overlay, so only how the VIP is resolved
//! differs.
//!
//! kube-proxy's mode is its whole table (`nft_rules`), on both sides: on a kube-proxy node
//! every pod packet crosses the host's netfilter, the client's node and the backend's, so
//! both pay for conntrack and the filter chains. Our dataplane redirects a container's
//! packets in TC, before its host's netfilter hooks, so a host's table would never see them:
//! the table sits in the client's and the nftables backends' own namespaces instead, where
//! their packets meet it.
//!
//! Measured: new TCP connections per second (connect, a 64-byte request, its reply, close),
//! one client at a time and sixteen at once, request latency (64-byte ping-pong on an
//! established connection) and iperf3 TCP throughput. Client and servers are this process's
//! own threads, pinned to one CPU each as the main benchmark pins its tools (the sixteen
//! clients are not pinned: both CPUs are the limit).
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    deployment::Deployment,
    netns::Netns,
    service_traffic::{create_service, spawn_in, vip_of, wait_backends, wait_members},
    topology::Underlay,
};

/// Where the client and the servers run (as in the main benchmark).
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;
/// The request/reply service (two backends) and the iperf3 one (one backend: iperf3's
/// control and data connections must meet the same server).
const RR_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;
/// The nftables mode's virtual IP, in its service range: in blue's subnet (the cluster's
/// pod range to kube-proxy), never given to anyone.
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 200, 1);
const NFT_SERVICE_CIDR: &str = "10.10.200.0/24";
const NFT_CLUSTER_CIDR: &str = "10.10.0.0/16";
const MESSAGE: usize = 64;
/// The parallel connection rate's clients, and each backend's server threads (more than
/// the clients, so no client ever waits for a free server).
const CLIENTS: usize = 16;
const SERVER_THREADS: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Mode {
    /// Our socket load balancer: connect() to the VIP.
    Vip,
    /// Straight to the backends' addresses, one connection to each in turn.
    Direct,
    /// kube-proxy's nftables table on the client's side and the backends'.
    Nft,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Vip, Mode::Direct, Mode::Nft];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vip => "VIP (ours, socket LB)",
            Mode::Direct => "straight to the backends",
            Mode::Nft => "kube-proxy nftables",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Mode::Vip => "vip",
            Mode::Direct => "direct",
            Mode::Nft => "nft",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Metric {
    ConnRate,
    ConnRateParallel,
    Latency,
    Throughput,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::ConnRate,
        Metric::ConnRateParallel,
        Metric::Latency,
        Metric::Throughput,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Metric::ConnRate => "new TCP connections, one client",
            Metric::ConnRateParallel => "new TCP connections, 16 clients at once",
            Metric::Latency => "request latency (64 B ping-pong)",
            Metric::Throughput => "TCP throughput (iperf3, 1 stream)",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Metric::ConnRate => "conn_rate",
            Metric::ConnRateParallel => "conn_rate_parallel",
            Metric::Latency => "latency",
            Metric::Throughput => "tcp",
        }
    }
    pub fn unit(self) -> &'static str {
        match self {
            Metric::ConnRate | Metric::ConnRateParallel => "conn/s",
            Metric::Latency => "µs",
            Metric::Throughput => "Gbit/s",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self != Metric::Latency
    }
}

/// The bed: the deployment, the two clients (the nftables one alone has conntrack, so the
/// others do not pay for it), the addresses each mode connects to, and the iperf3 servers.
pub struct Bed {
    // Its namespaces go with it, after Drop has stopped iperf3 inside them.
    d: Deployment,
    client: String,
    nft_client: String,
    vip: Ipv4Addr,
    iperf_vip: Ipv4Addr,
    /// The VIP's two backends, which the direct mode connects to in turn.
    backends: [Ipv4Addr; 2],
    iperf: Vec<Child>,
}

impl Bed {
    pub fn new() -> Result<Self> {
        let mut d = Deployment::on("sbn", &[true, true], Underlay::Veth)?;
        d.create_network("blue", "10.10.0.0/16", 42)?;
        let create = |name: &str, port: u16| {
            let port = format!("{port}/tcp");
            vip_of(&create_service(
                &d,
                0,
                &[name, "--network", "blue", "--port", &port],
            ))
        };
        let (vip, iperf_vip) = (create("rr", RR_PORT), create("bulk", IPERF_PORT));
        // b1 and b2 are the VIP's (and the direct mode's), k1 and k2 kube-proxy's; iperf3
        // listens on the first of each pair.
        let mut servers = Vec::new();
        for (name, services) in [("b1", "rr,bulk"), ("b2", "rr"), ("k1", ""), ("k2", "")] {
            let mut flags = Vec::new();
            for s in services.split(',').filter(|s| !s.is_empty()) {
                flags.extend(["--service", s]);
            }
            let (i, ip) = d.add_container_with(1, name, "blue", None, &flags)?;
            let ns = d.container(i).name.clone();
            serve_echo(&ns, RR_PORT);
            servers.push((i, ns, ip));
        }
        let (c, _) = d.add_container(0, "c1", "blue", None)?;
        let (n, _) = d.add_container(0, "n1", "blue", None)?;
        let client = d.container(c).name.clone();
        let nft_client = d.container(n).name.clone();
        wait_backends(&d, vip, RR_PORT, 2);
        wait_backends(&d, iperf_vip, IPERF_PORT, 1);
        wait_members(&d, &[2, 2]);
        let kube = [servers[2].2, servers[3].2];
        for ns in [n, servers[2].0, servers[3].0] {
            nft_rules(d.container(ns), &kube)?;
        }
        let mut iperf = Vec::new();
        for (_, ns, _) in [&servers[0], &servers[2]] {
            iperf.push(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{ns}"))
                    .args(["taskset", "-c", &SERVER_CPU.to_string()])
                    .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting iperf3 -s")?,
            );
        }
        let bed = Self {
            client,
            nft_client,
            vip,
            iperf_vip,
            backends: [servers[0].2, servers[1].2],
            iperf,
            d,
        };
        // Every mode answers, on every address, before anything is measured.
        for mode in Mode::ALL {
            let (ns, to) = bed.target(mode, RR_PORT);
            for to in to {
                crate::netns::enter(ns, || request(to))
                    .with_context(|| format!("{}: first request to {to}", mode.name()))?;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(bed)
    }

    /// Where `mode`'s client runs and what its connections go to, in turn.
    fn target(&self, mode: Mode, port: u16) -> (&str, [SocketAddr; 2]) {
        let both = |ip: Ipv4Addr| [(ip, port).into(); 2];
        match (mode, port) {
            (Mode::Vip, RR_PORT) => (&self.client, both(self.vip)),
            (Mode::Vip, _) => (&self.client, both(self.iperf_vip)),
            (Mode::Direct, RR_PORT) => (&self.client, self.backends.map(|ip| (ip, port).into())),
            (Mode::Direct, _) => (&self.client, both(self.backends[0])),
            (Mode::Nft, _) => (&self.nft_client, both(NFT_VIP)),
        }
    }

    /// One measurement of `metric` in `mode` for `seconds`.
    pub fn measure(&self, mode: Mode, metric: Metric, seconds: u32) -> Result<f64> {
        let run_for = Duration::from_secs(u64::from(seconds));
        match metric {
            Metric::ConnRate => {
                let (ns, to) = self.target(mode, RR_PORT);
                crate::netns::enter(ns, || {
                    pin(CLIENT_CPU);
                    connection_rate(to, run_for)
                })
            }
            Metric::ConnRateParallel => {
                let (ns, to) = self.target(mode, RR_PORT);
                parallel_connection_rate(ns, to, run_for)
            }
            Metric::Latency => {
                let (ns, to) = self.target(mode, RR_PORT);
                crate::netns::enter(ns, || ping_pong(to[0], run_for))
            }
            Metric::Throughput => {
                let (ns, to) = self.target(mode, IPERF_PORT);
                iperf(ns, to[0], seconds)
            }
        }
    }

    /// How many LB decisions h1 counted (a check that the VIP mode was balanced by us).
    pub fn balanced(&self) -> u64 {
        self.d.hosts[0]
            .counters()
            .ok()
            .and_then(|c| c.get("lb_balanced").copied())
            .unwrap_or(0)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for mut c in self.iperf.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// kube-proxy's nftables mode as it writes its table (pkg/proxy/nftables/proxier.go,
/// `setupNFTables` and `syncProxyRules`) for one ClusterIP service of two endpoints and one
/// of one (iperf3's), defaults otherwise (`--cluster-cidr` set, NodePorts on every local
/// address, no load-balancer source ranges): all eight base chains, so a packet meets the
/// filter chains before and after DNAT and every new connection the endpoint checks, the
/// `service-ips` verdict map, a service chain that picks an endpoint with
/// `numgen random mod N`, the endpoint chain's DNAT, and the masquerade check on the way out.
/// Priorities are numbers (dstnat -100, srcnat 100): Debian 12's nft 1.0.6 takes the names
/// only on the hooks they were first defined for.
fn nft_rules(ns: &Netns, backends: &[Ipv4Addr; 2]) -> Result<()> {
    let chain = |name: &str, lines: &[&str]| -> String {
        let mut c = format!("  chain {name} {{\n");
        for l in lines {
            c += &format!("    {l}\n");
        }
        c + "  }\n"
    };
    let base = |name: &str, kind: &str, hook: &str, priority: &str, jumps: &[&str]| {
        let mut lines = vec![format!(
            "type {kind} hook {hook} priority {priority}; policy accept;"
        )];
        lines.extend(jumps.iter().map(|j| j.to_string()));
        chain(name, &lines.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut t = String::from("table ip kube-proxy {\n");
    t += &format!(
        "  set cluster-ips {{\n    type ipv4_addr\n    elements = {{ {NFT_VIP} }}\n  }}\n"
    );
    for (map, key) in [
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
        ),
        ("no-endpoint-nodeports", "inet_proto . inet_service"),
        ("firewall-ips", "ipv4_addr . inet_proto . inet_service"),
        ("service-ips", "ipv4_addr . inet_proto . inet_service"),
        ("service-nodeports", "inet_proto . inet_service"),
    ] {
        t += &format!("  map {map} {{\n    type {key} : verdict\n  }}\n");
    }
    // The chains jumped to come first: nft resolves a jump only to a chain it has seen.
    t += &chain(
        "nodeport-endpoints-check",
        &["ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports"],
    );
    t += &chain(
        "service-endpoints-check",
        &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
    );
    t += &chain(
        "firewall-check",
        &["ip daddr . meta l4proto . th dport vmap @firewall-ips"],
    );
    t += &chain(
        "cluster-ips-check",
        &[
            "ip daddr @cluster-ips reject",
            &format!("ip daddr {{ {NFT_SERVICE_CIDR} }} drop"),
        ],
    );
    t += &chain(
        "mark-for-masquerade",
        &["meta mark set meta mark or 0x4000"],
    );
    t += &chain(
        "masquerading",
        &[
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark ^ 0x4000",
            "masquerade fully-random",
        ],
    );
    t += &chain("reject-chain", &["reject"]);
    // One ClusterIP service: its endpoint chains, its cluster-policy chain.
    let service = |name: &str, port: u16, endpoints: &[Ipv4Addr]| -> String {
        let base = format!("default/{name}/tcp/p{port}");
        let mut out = String::new();
        let mut picks = Vec::new();
        for (i, ip) in endpoints.iter().enumerate() {
            let ep = format!("endpoint-{i}-{base}__{ip}/{port}");
            out += &chain(
                &ep,
                &[
                    &format!("ip saddr {ip} jump mark-for-masquerade"),
                    &format!("meta l4proto tcp dnat to {ip}:{port}"),
                ],
            );
            picks.push(format!("{i} : goto {ep}"));
        }
        out += &chain(
            &format!("service-{base}"),
            &[
                &format!(
                    "ip daddr {NFT_VIP} tcp dport {port} ip saddr != {NFT_CLUSTER_CIDR} jump mark-for-masquerade"
                ),
                &format!(
                    "numgen random mod {} vmap {{ {} }}",
                    endpoints.len(),
                    picks.join(", ")
                ),
            ],
        );
        out
    };
    t += &service("rr", RR_PORT, backends);
    t += &service("bulk", IPERF_PORT, &backends[..1]);
    t += &chain(
        "services",
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ],
    );
    t += &base(
        "filter-prerouting",
        "filter",
        "prerouting",
        "-110",
        &["ct state new jump firewall-check"],
    );
    t += &base(
        "filter-input",
        "filter",
        "input",
        "-110",
        &[
            "ct state new jump nodeport-endpoints-check",
            "ct state new jump service-endpoints-check",
        ],
    );
    t += &base(
        "filter-forward",
        "filter",
        "forward",
        "-110",
        &[
            "ct state new jump service-endpoints-check",
            "ct state new jump cluster-ips-check",
        ],
    );
    t += &base(
        "filter-output",
        "filter",
        "output",
        "-110",
        &[
            "ct state new jump service-endpoints-check",
            "ct state new jump firewall-check",
        ],
    );
    t += &base(
        "filter-output-post-dnat",
        "filter",
        "output",
        "-90",
        &["ct state new jump cluster-ips-check"],
    );
    t += &base(
        "nat-prerouting",
        "nat",
        "prerouting",
        "-100",
        &["jump services"],
    );
    t += &base("nat-output", "nat", "output", "-100", &["jump services"]);
    t += &base(
        "nat-postrouting",
        "nat",
        "postrouting",
        "100",
        &["jump masquerading"],
    );
    t += "}\n";
    t += &format!(
        "add element ip kube-proxy service-ips {{ {NFT_VIP} . tcp . {RR_PORT} : goto service-default/rr/tcp/p{RR_PORT}, {NFT_VIP} . tcp . {IPERF_PORT} : goto service-default/bulk/tcp/p{IPERF_PORT} }}\n"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, &t)?;
    let out = ns.output(&format!("nft -f {}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!(
            "nft -f: {}\n{t}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A backend in `ns`: answers every 64-byte message with 64 bytes. SERVER_THREADS accept on
/// the one listener, each serving its connection to the end, all pinned to the server's CPU:
/// while one still takes in the reset that ended the last connection, another accepts the
/// next, so a client connecting again at once never waits on that (with one thread, a mode
/// that alternates two backends would beat one that always meets the same).
fn serve_echo(ns: &str, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let workers: Vec<_> = (0..SERVER_THREADS)
            .map(|_| {
                let listener = listener.try_clone().unwrap();
                std::thread::spawn(move || {
                    pin(SERVER_CPU);
                    let mut buf = [0u8; MESSAGE];
                    loop {
                        let Ok((mut conn, _)) = listener.accept() else {
                            continue;
                        };
                        let _ = conn.set_nodelay(true);
                        while conn.read_exact(&mut buf).is_ok() {
                            if conn.write_all(&buf).is_err() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
}

fn exchange(conn: &mut TcpStream, buf: &mut [u8; MESSAGE]) -> std::io::Result<()> {
    conn.write_all(buf)?;
    conn.read_exact(buf)
}

/// One connection, one request and its reply, closed.
fn request(to: SocketAddr) -> Result<()> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    exchange(&mut conn, &mut [0u8; MESSAGE])?;
    Ok(())
}

/// Connections per second, one after another for `run_for`, to `to`'s addresses in turn:
/// connect, request, reply, then close with a reset (SO_LINGER 0), as load generators do, so
/// that thousands of sockets in TIME_WAIT do not exhaust the client's ports in the middle of
/// a round.
fn connection_rate(to: [SocketAddr; 2], run_for: Duration) -> Result<f64> {
    let started = Instant::now();
    let n = connections(to, started, run_for)?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The connections one client makes from `started` until `run_for` has passed.
fn connections(to: [SocketAddr; 2], started: Instant, run_for: Duration) -> Result<u64> {
    let mut buf = [0u8; MESSAGE];
    let mut n = 0u64;
    while started.elapsed() < run_for {
        let to = to[n as usize % 2];
        let mut conn = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
        conn.set_nodelay(true)?;
        exchange(&mut conn, &mut buf).with_context(|| format!("request to {to}"))?;
        reset_on_close(&conn);
        n += 1;
    }
    Ok(n)
}

/// Connections per second from CLIENTS clients at once in `ns`, unpinned: the machine's two
/// CPUs are the limit, so what each connection costs them decides the rate.
fn parallel_connection_rate(ns: &str, to: [SocketAddr; 2], run_for: Duration) -> Result<f64> {
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let ns = ns.to_string();
            // Half of them start on the other address.
            let to = if i % 2 == 0 { to } else { [to[1], to[0]] };
            std::thread::spawn(move || {
                crate::netns::enter(&ns, || connections(to, started, run_for))
            })
        })
        .collect();
    let mut n = 0;
    for c in clients {
        n += c
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// SO_LINGER with a zero timeout: close() sends a reset and leaves no TIME_WAIT.
fn reset_on_close(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Mean round trip of a 64-byte message on one established connection, in µs.
fn ping_pong(to: SocketAddr, run_for: Duration) -> Result<f64> {
    pin(CLIENT_CPU);
    let mut conn = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
    conn.set_nodelay(true)?;
    let mut buf = [0u8; MESSAGE];
    // Warm the path (ARP, caches) before the clock starts.
    for _ in 0..100 {
        exchange(&mut conn, &mut buf)?;
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run_for {
        exchange(&mut conn, &mut buf)?;
        n += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// iperf3, one TCP stream from `ns` to `to`, in Gbit/s received.
fn iperf(ns: &str, to: SocketAddr, seconds: u32) -> Result<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["taskset", "-c", &CLIENT_CPU.to_string(), "iperf3", "-J"])
        .args(["-c", &to.ip().to_string(), "-p", &to.port().to_string()])
        .args(["-t", &seconds.to_string()])
        .output()
        .context("running iperf3")?;
    let json: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 to {to}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3 to {to}: {err}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3: no rate")
}

/// The whole benchmark: `rounds` rounds, each measuring every metric in every mode in a
/// rotating order (only the metrics whose keys `only` names, if any); medians and ratios to
/// `out`/services.md, the raw runs to services.json. Returns the table.
pub fn run(rounds: u32, seconds: u32, only: &[String], out: &std::path::Path) -> Result<String> {
    use std::collections::BTreeMap;
    let metrics: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|m| only.is_empty() || only.iter().any(|k| k == m.key()))
        .collect();
    if metrics.is_empty() {
        bail!(
            "no such metric among {:?}: {}",
            only,
            Metric::ALL.map(Metric::key).join(", ")
        );
    }
    let bed = Bed::new()?;
    let mut runs: BTreeMap<(Metric, Mode), Vec<f64>> = BTreeMap::new();
    let mut raw = Vec::new();
    let balanced_before = bed.balanced();
    let load_before = loadavg();
    let total = rounds as usize * metrics.len() * Mode::ALL.len();
    let mut done = 0;
    for round in 0..rounds as usize {
        for &metric in &metrics {
            for i in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(i + round) % Mode::ALL.len()];
                done += 1;
                eprintln!(
                    "[{done:>2}/{total}] round {}/{rounds}: {:<34} {}",
                    round + 1,
                    mode.name(),
                    metric.name()
                );
                let value = bed.measure(mode, metric, seconds)?;
                raw.push(serde_json::json!({
                    "round": round + 1, "mode": mode.key(), "metric": metric.key(),
                    "value": value, "unit": metric.unit(),
                }));
                runs.entry((metric, mode)).or_default().push(value);
            }
        }
    }
    let balanced = bed.balanced() - balanced_before;
    let load = (load_before, loadavg());
    drop(bed);
    let med = |metric, mode| -> f64 {
        let mut v = runs[&(metric, mode)].clone();
        crate::bench::median(&mut v)
    };
    let mut table = String::from(
        "| metric | straight to the backends | VIP (ours) | kube-proxy nftables | ours vs nftables | ours vs direct | target |\n|---|---|---|---|---|---|---|\n",
    );
    let mut verdicts = Vec::new();
    for &metric in &metrics {
        let (d, v, n) = (
            med(metric, Mode::Direct),
            med(metric, Mode::Vip),
            med(metric, Mode::Nft),
        );
        let fmt = |x: f64| match metric {
            Metric::ConnRate | Metric::ConnRateParallel => format!("{x:.0} {}", metric.unit()),
            Metric::Latency => format!("{x:.1} {}", metric.unit()),
            Metric::Throughput => format!("{x:.2} {}", metric.unit()),
        };
        // As a factor where more is better: ours / theirs, or theirs / ours for latency.
        let better = |ours: f64, theirs: f64| match metric.higher_is_better() {
            true => ours / theirs,
            false => theirs / ours,
        };
        let (vs_nft, vs_direct) = (better(v, n), better(v, d));
        let (target, met) = match metric {
            Metric::ConnRate | Metric::ConnRateParallel => ("≥ 1.3x nftables", vs_nft >= 1.3),
            _ => ("within 5% of direct", vs_direct >= 0.95),
        };
        verdicts.push(met);
        table += &format!(
            "| {} | {} | {} | {} | {vs_nft:.2}x | {vs_direct:.2}x | {target}: {} |\n",
            metric.name(),
            fmt(d),
            fmt(v),
            fmt(n),
            if met { "met" } else { "NOT met" }
        );
    }
    table += &format!(
        "\nMedians of {rounds} round(s) of {seconds} s per measurement, modes alternating; \
         ratios are \"how many times better\" (latency inverted). {balanced} connections \
         balanced by the socket programs during the run. Load average {:.2} before, {:.2} after \
         (2 CPUs; the client on CPU {CLIENT_CPU}, the servers on CPU {SERVER_CPU}).\n",
        load.0, load.1
    );
    std::fs::write(out.join("services.md"), &table)?;
    std::fs::write(
        out.join("services.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "rounds": rounds, "seconds": seconds, "balanced": balanced,
            "loadavg": [load.0, load.1], "runs": raw,
        }))?,
    )?;
    Ok(table)
}

/// The one-minute load average: how busy the machine was around the run.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
