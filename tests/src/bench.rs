//! The side-by-side benchmark's test beds and measurements: two hosts on an underlay (a plain
//! veth, or one that behaves like a wire: see [`Underlay`]), one container on each, in each
//! mode. Every measurement runs the same tool the same way in each mode, pinned the same way
//! (client on CPU 0, server on CPU 1), so the modes differ only in the path a packet takes.
use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use overlay_agent::dataplane::{Dataplane, Maps};
use overlay_common::{Counter, wire::encap_overhead};

use crate::{
    deployment::Deployment,
    netns::Netns,
    topology::{Underlay, add_vtep6, kernel_vxlan_over_ipv6, plug_host_on, vtep6},
};

/// The family of the hosts' underlay addresses: VTEPs, and plain routing's next hops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    /// `fd00::<n>` beside `10.0.0.<n>`; VTEPs are these, plain routing goes through them too
    /// (IPv4 routes with an IPv6 next hop, RFC 5549).
    Ipv6,
}

impl Family {
    /// Host `n`'s underlay address of this family.
    fn host(self, n: u8) -> String {
        match self {
            Family::Ipv4 => format!("10.0.0.{n}"),
            Family::Ipv6 => vtep6(n as usize).to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// No overlay: containers routed by their hosts (the limit on this machine).
    Plain,
    /// The kernel's vxlan device on a bridge with static fdb/neigh entries (Docker, flannel).
    KernelVxlan,
    /// Ours, driven by its agent and etcd.
    Overlay,
    /// The two containers joined by one veth pair, no host in between: the floor this machine
    /// puts under every path (what is left is scheduling and wake-ups).
    Direct,
    /// Ours with decapsulation in XDP (`xdp_decap`) instead of TC: `--xdp-decap` only.
    OverlayXdp,
    /// Ours while `overlay-agent monitor --type trace` listens on both hosts: every packet
    /// asks for an event (the costliest listener; a drop listener costs a forwarded packet
    /// nothing). `--monitor` only.
    OverlayTraced,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Plain, Mode::KernelVxlan, Mode::Overlay, Mode::Direct];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain routing",
            Mode::KernelVxlan => "kernel vxlan",
            Mode::Overlay => "overlay (ours)",
            Mode::Direct => "direct veth (floor)",
            Mode::OverlayXdp => "ours, XDP decap",
            Mode::OverlayTraced => "ours, monitor tracing",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::KernelVxlan => "kernel_vxlan",
            Mode::Overlay => "overlay",
            Mode::Direct => "direct",
            Mode::OverlayXdp => "overlay_xdp",
            Mode::OverlayTraced => "overlay_traced",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Tcp1,
    Tcp4,
    Udp64,
    Latency,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Tcp1, Metric::Tcp4, Metric::Udp64, Metric::Latency];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream",
            Metric::Tcp4 => "TCP 4 streams",
            Metric::Udp64 => "UDP 64 B rate",
            Metric::Latency => "latency 64 B ping-pong",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Metric::Tcp1 => "tcp1_gbps",
            Metric::Tcp4 => "tcp4_gbps",
            Metric::Udp64 => "udp64_kpps",
            Metric::Latency => "latency_us",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Tcp1 | Metric::Tcp4 => "Gbit/s",
            Metric::Udp64 => "kpps",
            Metric::Latency => "us",
        }
    }

    /// Lower is better only for latency.
    pub fn higher_is_better(self) -> bool {
        self != Metric::Latency
    }

    /// What CPU time is reported per.
    pub fn cpu_unit(self) -> Option<&'static str> {
        match self {
            Metric::Tcp1 | Metric::Tcp4 => Some("CPU s/GB"),
            Metric::Udp64 => Some("CPU s/Mpkt"),
            Metric::Latency => None,
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Sample {
    pub value: f64,
    /// CPU seconds (all cores, from /proc/stat) per GB or per million packets.
    pub cpu: Option<f64>,
    /// Ours only: wire packets per skb the receiving host decapsulated (GRO merging).
    pub segments: Option<f64>,
}

/// Two hosts, one container each, the client in the first and the server in the second.
pub struct Testbed {
    pub mode: Mode,
    client: String,
    server: String,
    server_ip: Ipv4Addr,
    servers: Vec<Child>,
    _xdp: Vec<Dataplane>,
    // Dropped last: what the namespaces and processes belong to.
    _deployment: Option<Deployment>,
    _namespaces: Vec<Netns>,
}

/// A wire namespace with bridge `ul` and two hosts h1, h2 (eth1 10.0.0.<i>/24, and fd00::<i>
/// over IPv6; forwarding on).
fn underlay(tag: &str, underlay: Underlay, family: Family) -> Result<Vec<Netns>> {
    let wire = crate::topology::switch(&format!("{tag}w"))?;
    let mut out = vec![wire];
    for n in 1..=2 {
        let host = plug_host_on(&out[0], &format!("{tag}h{n}"), n, underlay)?;
        if family == Family::Ipv6 {
            add_vtep6(&host, n)?;
        }
        out.push(host);
    }
    if family == Family::Ipv6 {
        // A fresh IPv6 link resolves neighbours only once it settles (about a second, its
        // link-local address and the switch port): a bed measured before would start with
        // unanswered solicitations.
        let (h1, h2) = (&out[1], &out[2]);
        crate::deployment::wait_for(Duration::from_secs(10), || {
            h1.output(&format!("ping -6 -c 1 -W 1 {}", vtep6(2)))
                .is_ok_and(|o| o.status.success())
        })
        .context("h1 cannot reach h2 over the IPv6 underlay")?;
        let _ = h2.output(&format!("ping -6 -c 1 -W 1 {}", vtep6(1)));
    }
    Ok(out)
}

impl Testbed {
    /// `tag` names this bed's namespaces; `u` is the underlay between the two hosts (the
    /// direct veth pair has none), `family` that of its addresses.
    pub fn new(mode: Mode, tag: &str, u: Underlay, family: Family) -> Result<Self> {
        let mut bed = match mode {
            Mode::Plain => Self::plain(tag, u, family)?,
            Mode::KernelVxlan => Self::kernel_vxlan(tag, u, family)?,
            Mode::Overlay | Mode::OverlayXdp | Mode::OverlayTraced => {
                Self::overlay(mode, tag, u, family)?
            }
            Mode::Direct => Self::direct(tag)?,
        };
        bed.start_servers()?;
        Ok(bed)
    }

    fn plain(tag: &str, u: Underlay, family: Family) -> Result<Self> {
        let mut ns = underlay(&format!("{tag}p"), u, family)?;
        let via = match family {
            Family::Ipv4 => "via",
            Family::Ipv6 => "via inet6",
        };
        // Containers at the underlay's MTU: nothing to encapsulate.
        let mtu = u.mtu();
        for n in 1..=2u8 {
            let c = Netns::new(&format!("{tag}pc{n}"))?;
            let other = 3 - n;
            ns[n as usize].run(&format!(
                "ip link add vc mtu {mtu} type veth peer name eth0 mtu {mtu} netns {c} && \
                 ip addr add 10.{n}.{n}.1/24 dev vc && ip link set vc up && \
                 ip route add 10.{other}.{other}.0/24 {via} {hop}",
                c = c.name,
                hop = family.host(other),
            ))?;
            c.run(&format!(
                "ip addr add 10.{n}.{n}.2/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via 10.{n}.{n}.1"
            ))?;
            ns.push(c);
        }
        Ok(Self {
            mode: Mode::Plain,
            client: ns[3].name.clone(),
            server: ns[4].name.clone(),
            server_ip: Ipv4Addr::new(10, 2, 2, 2),
            servers: Vec::new(),
            _xdp: Vec::new(),
            _deployment: None,
            _namespaces: ns,
        })
    }

    fn direct(tag: &str) -> Result<Self> {
        let a = Netns::new(&format!("{tag}d1"))?;
        let b = Netns::new(&format!("{tag}d2"))?;
        a.run(&format!(
            "ip link add eth0 type veth peer name eth0 netns {} && \
             ip addr add 10.3.3.1/24 dev eth0 && ip link set eth0 up",
            b.name
        ))?;
        b.run("ip addr add 10.3.3.2/24 dev eth0 && ip link set eth0 up")?;
        Ok(Self {
            mode: Mode::Direct,
            client: a.name.clone(),
            server: b.name.clone(),
            server_ip: Ipv4Addr::new(10, 3, 3, 2),
            servers: Vec::new(),
            _xdp: Vec::new(),
            _deployment: None,
            _namespaces: vec![a, b],
        })
    }

    fn kernel_vxlan(tag: &str, u: Underlay, family: Family) -> Result<Self> {
        let mut ns = underlay(&format!("{tag}k"), u, family)?;
        let ipv6 = family == Family::Ipv6;
        let overlay_mtu = u.mtu() - encap_overhead(ipv6) as u32;
        let local = |n: u8| match family {
            Family::Ipv4 => String::new(),
            Family::Ipv6 => format!(" {}", kernel_vxlan_over_ipv6(vtep6(n as usize))),
        };
        let mac = |n: u8| format!("02:42:0a:0a:0{}:01", n - 1);
        for n in 1..=2u8 {
            let c = Netns::new(&format!("{tag}kc{n}"))?;
            let other = 3 - n;
            ns[n as usize].run(&format!(
                "ip link add br0 type bridge && ip link set br0 up && \
                 ip link add vxlan0 mtu {overlay_mtu} type vxlan id 42 dev eth1 dstport 4789 nolearning{local} && \
                 ip link set vxlan0 master br0 up && \
                 bridge fdb add {peer_mac} dev vxlan0 dst {remote} && \
                 ip link add vc mtu {overlay_mtu} type veth peer name eth0 netns {c} && \
                 ip link set vc master br0 up",
                peer_mac = mac(other),
                local = local(n),
                remote = family.host(other),
                c = c.name
            ))?;
            c.run(&format!(
                "ip link set eth0 address {} mtu {overlay_mtu} up && \
                 ip addr add 10.10.{}.1/16 dev eth0 && \
                 ip neigh add 10.10.{}.1 lladdr {} dev eth0 nud permanent",
                mac(n),
                n - 1,
                other - 1,
                mac(other)
            ))?;
            ns.push(c);
        }
        Ok(Self {
            mode: Mode::KernelVxlan,
            client: ns[3].name.clone(),
            server: ns[4].name.clone(),
            server_ip: Ipv4Addr::new(10, 10, 1, 1),
            servers: Vec::new(),
            _xdp: Vec::new(),
            _deployment: None,
            _namespaces: ns,
        })
    }

    fn overlay(mode: Mode, tag: &str, u: Underlay, family: Family) -> Result<Self> {
        let xdp = mode == Mode::OverlayXdp;
        let label = match mode {
            Mode::OverlayXdp => "x",
            Mode::OverlayTraced => "t",
            _ => "o",
        };
        // The agent gives containers the underlay's MTU less the tunnel's by itself.
        let label = format!("{tag}{label}");
        let mut d = match family {
            Family::Ipv4 => Deployment::on(&label, &[true, true], u)?,
            Family::Ipv6 => Deployment::ipv6_underlay(&label, &[true, true], u)?,
        };
        d.create_network("bench", "10.10.0.0/16", 42)?;
        let (client, _) = d.add_container(0, "c1", "bench", None)?;
        let (server, server_ip) = d.add_container(1, "c2", "bench", None)?;
        let mut xdp_programs = Vec::new();
        if xdp {
            // A second copy of the programs on each host's pinned maps, with xdp_decap on the
            // underlay; the containers' eth0 need NAPI (GRO) to take XDP-redirected frames.
            for host in &d.hosts {
                let mut dp = Dataplane::load(host.pins())?;
                host.ns.enter(|| dp.attach_xdp_decap("eth1"))?;
                xdp_programs.push(dp);
            }
            // And checksums computed by the sender: a CHECKSUM_PARTIAL skb turned into an XDP
            // frame and back arrives with CHECKSUM_NONE and no checksum ever filled in (measured:
            // TCP cannot even connect without this; ICMP, checksummed in software, can).
            for c in [client, server] {
                d.container(c).run("ethtool -K eth0 gro on tx off")?;
            }
        }
        let mut listeners = Vec::new();
        if mode == Mode::OverlayTraced {
            for h in 0..d.hosts.len() {
                listeners.push(
                    d.base_command(h)
                        .args(["monitor", "--type", "trace"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .context("starting overlay-agent monitor")?,
                );
            }
        }
        Ok(Self {
            mode,
            _xdp: xdp_programs,
            client: d.container(client).name.clone(),
            server: d.container(server).name.clone(),
            server_ip,
            servers: listeners,
            _deployment: Some(d),
            _namespaces: Vec::new(),
        })
    }

    /// The client's and the server's namespaces and the server's address, for measuring by
    /// hand (perf, tcpdump) beside a bed.
    pub fn endpoints(&self) -> (&str, &str, Ipv4Addr) {
        (&self.client, &self.server, self.server_ip)
    }

    fn start_servers(&mut self) -> Result<()> {
        for cmd in [
            format!("taskset -c {SERVER_CPU} iperf3 -s"),
            format!(
                "taskset -c {SERVER_CPU} sockperf sr -i {} -p 11111",
                self.server_ip
            ),
        ] {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.server,
                    "sh",
                    "-c",
                    &format!("exec {cmd}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {cmd}"))?;
            self.servers.push(child);
        }
        std::thread::sleep(Duration::from_millis(500));
        // Warm up ARP, the FDB and the caches.
        let out = self.client_output(&format!("ping -c 3 -i 0.2 -W 1 {}", self.server_ip))?;
        if !out.contains(" 0% packet loss") {
            bail!(
                "{}: the client cannot reach the server: {out}",
                self.mode.name()
            );
        }
        Ok(())
    }

    fn client_output(&self, cmd: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "sh", "-c", cmd])
            .output()
            .with_context(|| format!("running {cmd}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
    }

    pub fn measure(&self, metric: Metric, seconds: u32) -> Result<Sample> {
        let ip = self.server_ip;
        let decap_before = self.decap_counts();
        let cpu_before = busy_cpu_seconds()?;
        let (value, amount) = match metric {
            Metric::Tcp1 | Metric::Tcp4 => {
                let streams = if metric == Metric::Tcp1 { 1 } else { 4 };
                let json = self.iperf(&format!("-c {ip} -t {seconds} -P {streams}"))?;
                let received = &json["end"]["sum_received"];
                let bps = received["bits_per_second"]
                    .as_f64()
                    .context("iperf3: no rate")?;
                let bytes = received["bytes"].as_f64().context("iperf3: no bytes")?;
                (bps / 1e9, bytes / 1e9)
            }
            Metric::Udp64 => {
                let json = self.iperf(&format!("-c {ip} -t {seconds} -u -l 64 -b 0"))?;
                let received = &json["end"]["sum_received"];
                let packets = received["packets"].as_f64().context("iperf3: no packets")?
                    - received["lost_packets"].as_f64().unwrap_or(0.0);
                let secs = received["seconds"].as_f64().context("iperf3: no seconds")?;
                (packets / secs / 1e3, packets / 1e6)
            }
            Metric::Latency => {
                let out = self.client_output(&format!(
                    "taskset -c {CLIENT_CPU} sockperf pp -i {ip} -p 11111 -m 64 -t {seconds}"
                ))?;
                let us = out
                    .split("Latency is ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<f64>().ok())
                    .with_context(|| format!("sockperf printed no latency: {out}"))?;
                (us, 0.0)
            }
        };
        let cpu = busy_cpu_seconds()? - cpu_before;
        let segments = match (decap_before, self.decap_counts()) {
            (Some((d0, s0)), Some((d1, s1))) if d1 > d0 => {
                Some((s1 - s0) as f64 / (d1 - d0) as f64)
            }
            _ => None,
        };
        Ok(Sample {
            value,
            cpu: (amount > 0.0).then(|| cpu / amount),
            segments,
        })
    }

    /// Ours: (skbs decapsulated, wire packets they carried) on the server's host so far.
    fn decap_counts(&self) -> Option<(u64, u64)> {
        // xdp_decap counts decapsulations but not segments (XDP sees no GRO).
        if !matches!(self.mode, Mode::Overlay | Mode::OverlayTraced) {
            return None;
        }
        let d = self._deployment.as_ref()?;
        let maps = Maps::open(&d.hosts[1].pins()).ok()?;
        let get = |c: Counter| maps.counter(c).ok();
        Some((get(Counter::Decap)?, get(Counter::DecapSegments)?))
    }

    /// One iperf3 run, and once more if it fails: at full UDP rate on two cores iperf3's own
    /// control connection now and then times out ("unable to read from stream socket"),
    /// which says nothing of the path. The retry is reported, never hidden.
    fn iperf(&self, args: &str) -> Result<Value> {
        self.iperf_once(args).or_else(|e| {
            eprintln!("\n{}: {e:#}; once more", self.mode.name());
            std::thread::sleep(Duration::from_secs(1));
            self.iperf_once(args)
        })
    }

    fn iperf_once(&self, args: &str) -> Result<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "sh", "-c"])
            .arg(format!("taskset -c {CLIENT_CPU} iperf3 {args} -J"))
            .output()
            .context("running iperf3")?;
        let json: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("iperf3 {args}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if let Some(err) = json["error"].as_str() {
            bail!("iperf3 {args}: {err}");
        }
        Ok(json)
    }
}

/// Where the client and the server run, in every mode alike: never competing for one CPU, and
/// never moved between CPUs by the scheduler in the middle of a measurement.
const CLIENT_CPU: u32 = 0;
const SERVER_CPU: u32 = 1;

impl Drop for Testbed {
    fn drop(&mut self) {
        // Processes outlive their namespace's name: stop them before it goes.
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU time spent not idle, all cores, since boot.
fn busy_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = fields.iter().take(8).sum::<f64>() - fields[3] - fields[4];
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / hz)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One program's cost per packet, from BPF_PROG_TEST_RUN.
#[derive(Clone, Debug)]
pub struct Micro {
    pub name: &'static str,
    pub ns: f64,
    pub how: String,
}

/// Nanoseconds per packet for encapsulation, decapsulation and the pass-through of traffic
/// that is not ours.
///
/// The kernel runs a program `repeat` times on the *same* skb, so a program that rewrites the
/// packet (encap grows it, decap strips it) would be timed on its own output after the first
/// run. Those two are therefore timed one run per call, many calls, taking the median, less
/// the timer's own cost per call (measured as pass-through timed once per call minus
/// pass-through timed over millions of runs). Pass-through does not change the packet and is
/// timed over millions of runs directly.
pub fn microbench(calls: u32, repeat: u32) -> Result<Vec<Micro>> {
    use crate::{lab::*, packet};
    use overlay_common::programs;

    let mut lab = Lab::new("micro");
    let encap = c1_to_c2_ping(0);
    let decap = vxlan_from_remote(VNI, REMOTE_VTEP, PORT, &c2_to_c1_ping());
    let other = packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        packet::ETH_P_IP,
        &packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 6, 0, &[0u8; 40]),
    );
    let local = packet::eth(
        C3_MAC,
        C1_MAC,
        packet::ETH_P_IP,
        &packet::ipv4(C1_IP, C3_IP, 1, 0, &packet::icmp_echo(7, 1)),
    );
    let (vc1, underlay) = (lab.vc1, lab.underlay);
    let node = &mut lab.node;
    lab.ns.enter(|| -> Result<Vec<Micro>> {
        // The lowest of five medians: another process waking on this 2-core machine (or a
        // namespace being torn down) only ever adds time.
        let once = |node: &mut crate::fixture::Node, program: &str, ifindex: u32, frame: &[u8]| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let mut ns = Vec::with_capacity(calls as usize);
                for _ in 0..calls {
                    ns.push(node.time(program, ifindex, frame, 1)?.1.as_nanos() as f64);
                }
                best = best.min(median(&mut ns));
            }
            Ok::<f64, anyhow::Error>(best)
        };
        let pass_many = node
            .time(programs::FROM_UNDERLAY, underlay, &other, repeat)?
            .1
            .as_nanos() as f64;
        let pass_once = once(node, programs::FROM_UNDERLAY, underlay, &other)?;
        let timer = (pass_once - pass_many).max(0.0);
        let encap_once = once(node, programs::FROM_CONTAINER, vc1, &encap)?;
        let decap_once = once(node, programs::FROM_UNDERLAY, underlay, &decap)?;
        let local_many = node
            .time(programs::FROM_CONTAINER, vc1, &local, repeat)?
            .1
            .as_nanos() as f64;
        let local_once = once(node, programs::FROM_CONTAINER, vc1, &local)?;
        let per_call =
            format!("lowest median of 5x{calls} single runs, less {timer:.0} ns timer cost");
        Ok(vec![
            Micro {
                name: "encap (from_container, ICMP to a remote container)",
                ns: encap_once - timer,
                how: per_call.clone(),
            },
            Micro {
                name: "decap (from_underlay, VXLAN for a local container)",
                ns: decap_once - timer,
                how: per_call,
            },
            Micro {
                name: "same-host delivery (from_container, ICMP to a local container)",
                ns: local_many,
                how: format!(
                    "average of {repeat} runs (single runs less timer cost: {:.0} ns)",
                    local_once - timer
                ),
            },
            Micro {
                name: "pass-through (from_underlay, TCP for the host)",
                ns: pass_many,
                how: format!("average of {repeat} runs"),
            },
        ])
    })
}
