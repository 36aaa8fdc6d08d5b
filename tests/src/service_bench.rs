//! `overlay-bench --services`: a service's VIP balanced by our socket programs, beside the
//! same traffic sent straight to a backend and beside nftables DNAT rules of the shape
//! kube-proxy's nftables mode writes. Two hosts with agents on a veth underlay; the client
//! on h1, two backends on h2 (the nftables rules spread over the same two); every mode on
//! the same path through the overlay, so only how the VIP is resolved differs.
//!
//! Measured: new TCP connections per second (connect, a 64-byte request, its reply, close),
//! request latency (64-byte ping-pong on an established connection) and iperf3 TCP
//! throughput. Client and server are this process's own threads, pinned to one CPU each as
//! the main benchmark pins its tools.
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
    service_traffic::{spawn_in, vip_of, wait_backends, wait_members},
    topology::Underlay,
};

/// Where the client and the servers run (as in the main benchmark).
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;
/// The request/reply service (two backends) and the iperf3 one (one backend: iperf3's
/// control and data connections must meet the same server).
const RR_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;
/// The nftables mode's virtual IP: in blue's subnet, never given to anyone.
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 200, 1);
const MESSAGE: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Mode {
    /// Our socket load balancer: connect() to the VIP.
    Vip,
    /// Straight to a backend's address.
    Direct,
    /// nftables DNAT in kube-proxy's shape, in the client's namespace.
    Nft,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Vip, Mode::Direct, Mode::Nft];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vip => "VIP (ours, socket LB)",
            Mode::Direct => "straight to a backend",
            Mode::Nft => "nftables DNAT (kube-proxy shape)",
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
    Latency,
    Throughput,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::ConnRate, Metric::Latency, Metric::Throughput];
    pub fn name(self) -> &'static str {
        match self {
            Metric::ConnRate => "new TCP connections",
            Metric::Latency => "request latency (64 B ping-pong)",
            Metric::Throughput => "TCP throughput (iperf3, 1 stream)",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Metric::ConnRate => "conn_rate",
            Metric::Latency => "latency",
            Metric::Throughput => "tcp",
        }
    }
    pub fn unit(self) -> &'static str {
        match self {
            Metric::ConnRate => "conn/s",
            Metric::Latency => "µs",
            Metric::Throughput => "Gbit/s",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self != Metric::Latency
    }
}

/// The bed: the deployment, the two clients (the nftables one alone has conntrack, so the
/// others do not pay for it), the addresses each mode connects to, and iperf3's server.
pub struct Bed {
    // Its namespaces go with it, after Drop has stopped iperf3 inside one of them.
    d: Deployment,
    client: String,
    nft_client: String,
    vip: Ipv4Addr,
    iperf_vip: Ipv4Addr,
    backend: Ipv4Addr,
    iperf: Option<Child>,
}

impl Bed {
    pub fn new() -> Result<Self> {
        let mut d = Deployment::on("sbn", &[true, true], Underlay::Veth)?;
        d.create_network("blue", "10.10.0.0/16", 42)?;
        let create = |name: &str, port: u16| -> Result<Ipv4Addr> {
            let out = d.cli(
                0,
                &[
                    "service",
                    "create",
                    name,
                    "--network",
                    "blue",
                    "--port",
                    &format!("{port}/tcp"),
                ],
            )?;
            Ok(vip_of(&out))
        };
        let vip = create("rr", RR_PORT)?;
        let iperf_vip = create("bulk", IPERF_PORT)?;
        let mut backends = Vec::new();
        for (name, services) in [("b1", "rr,bulk"), ("b2", "rr")] {
            let mut flags = Vec::new();
            for s in services.split(',') {
                flags.extend(["--service", s]);
            }
            let (i, ip) = d.add_container_with(1, name, "blue", None, &flags)?;
            let ns = d.container(i).name.clone();
            serve_echo(&ns, RR_PORT);
            backends.push((ns, ip));
        }
        let (c, _) = d.add_container(0, "c1", "blue", None)?;
        let (n, _) = d.add_container(0, "n1", "blue", None)?;
        let client = d.container(c).name.clone();
        let nft_client = d.container(n).name.clone();
        wait_backends(&d, vip, RR_PORT, 2);
        wait_backends(&d, iperf_vip, IPERF_PORT, 1);
        wait_members(&d, &[2, 2]);
        let ips: Vec<Ipv4Addr> = backends.iter().map(|b| b.1).collect();
        nft_rules(d.container(n), &ips)?;
        let iperf = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", backends[0].0))
            .args(["taskset", "-c", &SERVER_CPU.to_string()])
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let bed = Self {
            client,
            nft_client,
            vip,
            iperf_vip,
            backend: backends[0].1,
            iperf: Some(iperf),
            d,
        };
        // Every mode answers before anything is measured.
        for mode in Mode::ALL {
            let (ns, to) = bed.target(mode, RR_PORT);
            crate::netns::enter(ns, || request(to))
                .with_context(|| format!("{}: first request to {to}", mode.name()))?;
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(bed)
    }

    /// Where `mode`'s client runs and what it connects to.
    fn target(&self, mode: Mode, port: u16) -> (&str, SocketAddr) {
        match (mode, port) {
            (Mode::Vip, RR_PORT) => (&self.client, (self.vip, port).into()),
            (Mode::Vip, _) => (&self.client, (self.iperf_vip, port).into()),
            (Mode::Direct, _) => (&self.client, (self.backend, port).into()),
            (Mode::Nft, _) => (&self.nft_client, (NFT_VIP, port).into()),
        }
    }

    /// One measurement of `metric` in `mode` for `seconds`.
    pub fn measure(&self, mode: Mode, metric: Metric, seconds: u32) -> Result<f64> {
        let run_for = Duration::from_secs(u64::from(seconds));
        match metric {
            Metric::ConnRate => {
                let (ns, to) = self.target(mode, RR_PORT);
                crate::netns::enter(ns, || connection_rate(to, run_for))
            }
            Metric::Latency => {
                let (ns, to) = self.target(mode, RR_PORT);
                crate::netns::enter(ns, || ping_pong(to, run_for))
            }
            Metric::Throughput => {
                let (ns, to) = self.target(mode, IPERF_PORT);
                iperf(ns, to, seconds)
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
        if let Some(mut c) = self.iperf.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// kube-proxy's nftables mode, for one service of two endpoints: a `service-ips` verdict map
/// from VIP . proto . port to the service's chain, which picks an endpoint chain with
/// `numgen random mod 2`, which DNATs to it; reached from the nat hooks of prerouting and
/// output (pkg/proxy/nftables/proxier.go). In the client's own namespace: our dataplane
/// redirects a container's packets in TC, before its host's netfilter hooks, so a table on
/// the host would never see them; in the client's namespace its output hook does, with the
/// same conntrack and NAT work per connection.
fn nft_rules(client: &Netns, backends: &[Ipv4Addr]) -> Result<()> {
    let chain = |name: &str, lines: &[String]| -> String {
        let mut c = format!("  chain {name} {{\n");
        for l in lines {
            c += &format!("    {l}\n");
        }
        c + "  }\n"
    };
    let svc = "service-BENCH-default/rr/tcp/p7000";
    let bulk = "service-BENCH-default/bulk/tcp/p5201";
    let mut rules = String::from("table ip kube-proxy {\n");
    rules += "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }\n";
    rules += &chain(
        "mark-for-masquerade",
        &["meta mark set meta mark or 0x4000".into()],
    );
    rules += &chain(
        "services",
        &["ip daddr . meta l4proto . th dport vmap @service-ips".into()],
    );
    for hook in ["prerouting", "output"] {
        rules += &chain(
            &format!("nat-{hook}"),
            &[
                format!("type nat hook {hook} priority -100; policy accept;"),
                "jump services".into(),
            ],
        );
    }
    let mut picks = Vec::new();
    for (i, ip) in backends.iter().enumerate() {
        let name = format!("endpoint-{i}-default/rr/tcp/p7000__{ip}/{RR_PORT}");
        rules += &chain(
            &name,
            &[
                format!("ip saddr {ip} jump mark-for-masquerade"),
                format!("meta l4proto tcp dnat to {ip}:{RR_PORT}"),
            ],
        );
        picks.push(format!("{i} : goto {name}"));
    }
    rules += &chain(
        svc,
        &[format!(
            "numgen random mod {} vmap {{ {} }}",
            backends.len(),
            picks.join(", ")
        )],
    );
    // iperf3's port: one endpoint, the backend iperf3 listens on.
    let ep = format!(
        "endpoint-0-default/bulk/tcp/p5201__{}/{IPERF_PORT}",
        backends[0]
    );
    rules += &chain(
        &ep,
        &[format!(
            "meta l4proto tcp dnat to {}:{IPERF_PORT}",
            backends[0]
        )],
    );
    rules += &chain(
        bulk,
        &[format!("numgen random mod 1 vmap {{ 0 : goto {ep} }}")],
    );
    rules += "}\n";
    rules += &format!(
        "add element ip kube-proxy service-ips {{ {NFT_VIP} . tcp . {RR_PORT} : goto {svc}, {NFT_VIP} . tcp . {IPERF_PORT} : goto {bulk} }}\n"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", client.name));
    std::fs::write(&path, &rules)?;
    let out = client.output(&format!("nft -f {}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!(
            "nft -f: {}\n{rules}",
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

/// A backend in `ns`: answers every 64-byte message with 64 bytes. Four threads accept on
/// the one listener, each serving its connection to the end, all pinned to the server's CPU:
/// while one still takes in the reset that ended the last connection, another accepts the
/// next, so a client connecting again at once never waits on that (with one thread, a mode
/// that alternates two backends would beat one that always meets the same).
fn serve_echo(ns: &str, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let workers: Vec<_> = (0..4)
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

/// Connections per second, one after another for `run_for`: connect, request, reply, then
/// close with a reset (SO_LINGER 0), as load generators do, so that thousands of sockets in
/// TIME_WAIT do not exhaust the client's ports in the middle of a round.
fn connection_rate(to: SocketAddr, run_for: Duration) -> Result<f64> {
    pin(CLIENT_CPU);
    let mut buf = [0u8; MESSAGE];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run_for {
        let mut conn = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
        conn.set_nodelay(true)?;
        exchange(&mut conn, &mut buf).with_context(|| format!("request to {to}"))?;
        reset_on_close(&conn);
        n += 1;
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
/// rotating order; medians and ratios to `out`/services.md, the raw runs to services.json.
/// Returns the table.
pub fn run(rounds: u32, seconds: u32, out: &std::path::Path) -> Result<String> {
    use std::collections::BTreeMap;
    let bed = Bed::new()?;
    let mut runs: BTreeMap<(Metric, Mode), Vec<f64>> = BTreeMap::new();
    let mut raw = Vec::new();
    let balanced_before = bed.balanced();
    let load_before = loadavg();
    let total = rounds as usize * Metric::ALL.len() * Mode::ALL.len();
    let mut done = 0;
    for round in 0..rounds as usize {
        for metric in Metric::ALL {
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
        "| metric | straight to a backend | VIP (ours) | nftables DNAT | ours vs nftables | ours vs direct | target |\n|---|---|---|---|---|---|---|\n",
    );
    let mut verdicts = Vec::new();
    for metric in Metric::ALL {
        let (d, v, n) = (
            med(metric, Mode::Direct),
            med(metric, Mode::Vip),
            med(metric, Mode::Nft),
        );
        let fmt = |x: f64| match metric {
            Metric::ConnRate => format!("{x:.0} {}", metric.unit()),
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
            Metric::ConnRate => ("≥ 1.3x nftables", vs_nft >= 1.3),
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
