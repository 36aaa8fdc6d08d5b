//! The real thing on one kernel: etcd (Debian's etcd-server) in the underlay segment's
//! namespace, hosts in namespaces each running `overlay-agent run` as a process, and every
//! change made with the `overlay-agent` CLI, exactly as a user would type it.
//!
//! Agents and CLI calls enter the host's *network* namespace only (`nsenter --net`): `ip netns
//! exec` would also give them a private /sys, and with it a private bpffs whose pins die with
//! the process.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use overlay_agent::dataplane::{Maps, PinDir, state::MapState};

use crate::{
    etcd_cluster::Member,
    fixture::TEST_PIN_ROOT,
    netns::Netns,
    topology::{Underlay, plug_host_on},
};

/// A legacy host's own address on the overlay, and its vxlan device's MAC (Docker's
/// convention for that address).
pub const LEGACY_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 200, 1);
pub const LEGACY_MAC: &str = "02:42:0a:0a:c8:01";

/// etcd's client address, on the underlay segment.
pub const ETCD_IP: &str = "10.0.0.254";
/// Short, so that tests of lease expiry are quick.
pub const LEASE_TTL: u64 = 3;

/// The `overlay-agent` binary built beside the running test or demo.
pub fn agent_binary() -> PathBuf {
    built_binary("overlay-agent")
}

/// A binary of the workspace built beside the running test or demo (`overlay-agent`,
/// `overlay-cni`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    for dir in exe.ancestors().skip(1).take(2) {
        let bin = dir.join(name);
        if bin.exists() {
            return bin;
        }
    }
    panic!(
        "no {name} binary beside {}: build it first (`cargo build -p overlay-agent`; `cargo xtask test` does)",
        exe.display()
    );
}

/// The deployment's etcd: one member in the underlay segment's namespace (every test but the
/// cluster's), or a cluster of members in namespaces of their own
/// ([`Etcd::cluster`](crate::etcd_cluster), with the faults a test inflicts on them).
pub struct Etcd {
    /// Where etcdctl runs: the underlay segment's namespace, which holds ETCD_IP.
    pub(crate) wire: String,
    pub(crate) members: Vec<Member>,
    /// Every member's client URL, comma-separated: what a client's `OVERLAY_ETCD` holds.
    pub url: String,
    /// Set: etcd speaks TLS only and wants a client certificate signed by `ca`.
    pub tls: Option<EtcdTls>,
}

/// The files a client of a TLS etcd needs.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

impl Etcd {
    /// Starts etcd inside `wire` (which must hold ETCD_IP) and waits until it answers.
    pub fn start(wire: &Netns, dir: &Path) -> Result<Self> {
        Self::start_as(wire, dir, None)
    }

    /// As [`Etcd::start`], speaking TLS only and requiring client certificates (made here,
    /// with openssl: a CA, etcd's certificate, a client certificate for user `overlay`).
    pub fn start_tls(wire: &Netns, dir: &Path) -> Result<Self> {
        let certs = dir.join("certs");
        crate::certs::make_ca_and_server(&certs, ETCD_IP)?;
        let (cert, key) = crate::certs::make_client(&certs, "ca", "overlay")?;
        let tls = EtcdTls {
            ca: certs.join("ca.pem"),
            cert,
            key,
            server_cert: certs.join("server.pem"),
            server_key: certs.join("server.key"),
        };
        Self::start_as(wire, dir, Some(tls))
    }

    fn start_as(wire: &Netns, dir: &Path, tls: Option<EtcdTls>) -> Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{ETCD_IP}:2379");
        let peer = "http://127.0.0.1:2380";
        let member = Member {
            name: "overlay".into(),
            ip: ETCD_IP.into(),
            netns: wire.name.clone(),
            _own_ns: None,
            data: dir.join("etcd"),
            log: dir.join("etcd.log"),
            child: None,
            paused: false,
            client_url: url.clone(),
            peer_url: peer.into(),
            initial_cluster: format!("overlay={peer}"),
            token: None,
        };
        let mut etcd = Self {
            wire: wire.name.clone(),
            members: vec![member],
            url,
            tls,
        };
        etcd.restart()?;
        Ok(etcd)
    }

    /// What etcdctl needs besides the endpoint: the client certificate when TLS is on.
    pub fn ctl_flags(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(t) => vec![
                format!("--cacert={}", t.ca.display()),
                format!("--cert={}", t.cert.display()),
                format!("--key={}", t.key.display()),
            ],
        }
    }

    /// Starts (again) every member on its data directory: everything written before is still
    /// there. All are started before any is waited for: a member of a cluster answers only
    /// once a quorum runs.
    pub fn restart(&mut self) -> Result<()> {
        for m in &mut self.members {
            m.spawn(self.tls.as_ref())?;
        }
        let flags = self.ctl_flags();
        for m in &self.members {
            m.wait_healthy(&flags)?;
        }
        Ok(())
    }

    /// Every running member's pid (`ip netns exec` execs etcd: the child is etcd).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.id()))
            .collect()
    }

    /// Every member's database file (bbolt's `member/snap/db`), whose size is etcd's db size.
    pub fn db_files(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .map(|m| m.data.join("member/snap/db"))
            .collect()
    }

    /// The namespace etcdctl and the clients of the tests reach the members from.
    pub fn wire(&self) -> &str {
        &self.wire
    }

    /// Every member's client URL.
    pub fn members(&self) -> Vec<String> {
        self.url.split(',').map(str::to_string).collect()
    }

    /// What a test's own client connects with (`Store::connect`, from [`Etcd::wire`]): every
    /// member, the agents' prefix.
    pub fn client(&self) -> overlay_agent::store::Etcd {
        overlay_agent::store::Etcd::plain(&self.members(), "/overlay")
    }

    /// Every member SIGKILLed.
    pub fn stop(&mut self) {
        for m in &mut self.members {
            m.stop();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct AgentHost {
    pub ns: Netns,
    /// Its underlay IPv4 address, 10.0.0.<i> (its VTEP unless `vtep6`).
    pub vtep: [u8; 4],
    /// On an IPv6 underlay ([`Deployment::ipv6_underlay`]), its VTEP fd00::<i>.
    pub vtep6: Option<std::net::Ipv6Addr>,
    /// Our agent runs here (false: a legacy host with a kernel vxlan device).
    pub ours: bool,
    agent: Option<Child>,
    log: PathBuf,
    /// Extra arguments for `overlay-agent run` on this host (from the next start on).
    pub run_args: Vec<String>,
    status_file: PathBuf,
}

impl AgentHost {
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// Its VTEP, of either family.
    pub fn vtep_addr(&self) -> std::net::IpAddr {
        self.vtep6
            .map_or(Ipv4Addr::from(self.vtep).into(), Into::into)
    }

    pub fn pins(&self) -> PinDir {
        PinDir::new(TEST_PIN_ROOT, self.name()).expect("pin dir")
    }

    /// What the host's maps hold now.
    pub fn maps(&self) -> Result<MapState> {
        Maps::open(&self.pins())?.snapshot()
    }

    /// The host's counters now, by name.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<&'static str, u64>> {
        Ok(Maps::open(&self.pins())?
            .counters()?
            .into_iter()
            .map(|(c, n)| (c.name(), n))
            .collect())
    }

    /// The agent's pid, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// The status file the agent writes after every reconcile.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(&self.status_file).ok()?).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Deployment {
    pub hosts: Vec<AgentHost>,
    pub etcd: Etcd,
    pub wire: Netns,
    /// Containers made by the tests, dropped (deleted) with the deployment.
    pub containers: Vec<Netns>,
    tag: String,
    dir: PathBuf,
    /// etcd authenticates users with the least-privilege roles of store/roles.rs: each host
    /// acts as its node's user, networks are made by `admin` ([`Deployment::with_roles`]).
    roles: bool,
    /// How `overlay-agent` is run (agent, CLI, plugins): a command to run it under (e.g.
    /// `setpriv` with fewer capabilities), then the binary (an installed one, say).
    pub agent_command: Vec<std::ffi::OsString>,
}

/// How clients reach the deployment's etcd.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Plain,
    /// TLS only, with client certificates.
    Tls,
    /// Plaintext, with users and the roles of store/roles.rs.
    Roles,
}

/// The etcd user that makes networks when [`Deployment::with_roles`].
pub const ADMIN_USER: &str = "admin";
/// etcd's root, with which the tests write past every role.
const ROOT: &str = "root:root-secret";

impl Deployment {
    /// Hosts h1.. on one underlay segment (10.0.0.<i>/24, forwarding on), etcd on
    /// 10.0.0.254; `ours[i]` says whether host i runs our agent (started here).
    pub fn new(label: &str, ours: &[bool]) -> Result<Self> {
        Self::on(label, ours, Underlay::Veth)
    }

    /// As [`Deployment::new`], the hosts on an underlay that behaves as `underlay` says.
    pub fn on(label: &str, ours: &[bool], underlay: Underlay) -> Result<Self> {
        Self::build(label, ours, underlay, Access::Plain, false)
    }

    /// As [`Deployment::new`], etcd a cluster of `members` (3 or 5) in namespaces of their own
    /// on the underlay segment ([`crate::etcd_cluster`]): agents, CLI, CNI plugin and Docker
    /// plugin are given every member's endpoint (`OVERLAY_ETCD` comma-separated), as an
    /// operator would give them.
    pub fn with_etcd_members(label: &str, ours: &[bool], members: usize) -> Result<Self> {
        Self::build_with(label, ours, Underlay::Veth, Access::Plain, false, members)
    }

    /// As [`Deployment::on`], the VTEPs on an IPv6 underlay: host i's eth1 also has
    /// fd00::<i>/64, and its agent runs with `--vtep fd00::<i>` (etcd stays on IPv4).
    pub fn ipv6_underlay(label: &str, ours: &[bool], underlay: Underlay) -> Result<Self> {
        Self::build(label, ours, underlay, Access::Plain, true)
    }

    /// As [`Deployment::new`], with an etcd that speaks TLS only and wants client
    /// certificates: agents and CLI get theirs from the environment, as a user's would.
    pub fn with_tls(label: &str, ours: &[bool]) -> Result<Self> {
        Self::build(label, ours, Underlay::Veth, Access::Tls, false)
    }

    /// As [`Deployment::new`], with etcd's authentication on and the least-privilege layout
    /// (store/roles.rs): `admin` may make networks, each node's user (the node's name) may
    /// write only what its node needs; every host's agent and CLI act as its node's user.
    pub fn with_roles(label: &str, ours: &[bool]) -> Result<Self> {
        Self::build(label, ours, Underlay::Veth, Access::Roles, false)
    }

    fn build(
        label: &str,
        ours: &[bool],
        underlay: Underlay,
        access: Access,
        ipv6: bool,
    ) -> Result<Self> {
        Self::build_with(label, ours, underlay, access, ipv6, 1)
    }

    fn build_with(
        label: &str,
        ours: &[bool],
        underlay: Underlay,
        access: Access,
        ipv6: bool,
        members: usize,
    ) -> Result<Self> {
        crate::require_root();
        let tag = crate::unique(label);
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let wire = crate::topology::switch(&format!("{tag}w"))?;
        wire.run(&format!(
            "ip link add etcd0 type veth peer name m0 && ip link set m0 master ul up && \
             ip addr add {ETCD_IP}/24 dev etcd0 && ip link set etcd0 up"
        ))?;
        // ETCD_IP stays the segment's own address with a cluster too: etcdctl runs from there.
        let etcd = match (access, members) {
            (Access::Tls, 1) => Etcd::start_tls(&wire, &dir)?,
            (_, 1) => Etcd::start(&wire, &dir)?,
            (Access::Plain, n) => Etcd::cluster(&wire, &dir, &tag, n)?,
            _ => bail!("an etcd cluster is plaintext, without users"),
        };
        let mut d = Self {
            hosts: Vec::new(),
            etcd,
            wire,
            containers: Vec::new(),
            tag: tag.clone(),
            dir,
            roles: false,
            agent_command: vec![agent_binary().into()],
        };
        if access == Access::Roles {
            let nodes: Vec<String> = (1..=ours.len()).map(|n| format!("{tag}h{n}")).collect();
            d.enable_roles(&nodes)?;
        }
        for (i, &is_ours) in ours.iter().enumerate() {
            let n = i + 1;
            let name = format!("{tag}h{n}");
            let ns = plug_host_on(&d.wire, &name, n, underlay)?;
            let vtep = [10, 0, 0, n as u8];
            let vtep6 = ipv6.then(|| crate::topology::vtep6(n));
            if ipv6 {
                crate::topology::add_vtep6(&ns, n)?;
            }
            // Resolve etcd's addresses before anything has to reach them in a hurry.
            for ip in d.etcd.ips() {
                let _ = ns.output(&format!("ping -c 1 -W 2 {ip}"));
            }
            PinDir::new(TEST_PIN_ROOT, &name)?.remove()?;
            d.hosts.push(AgentHost {
                log: d.dir.join(format!("agent-h{n}.log")),
                ns,
                vtep,
                vtep6,
                ours: is_ours,
                agent: None,
                run_args: vtep6
                    .map(|v| vec!["--vtep".to_string(), v.to_string()])
                    .unwrap_or_default(),
                status_file: d.dir.join("run").join(format!("{name}.json")),
            });
            if is_ours {
                d.start_agent(i)?;
            }
        }
        for i in 0..d.hosts.len() {
            if d.hosts[i].ours {
                d.wait_registered(i, 0)?;
            }
        }
        Ok(d)
    }

    /// `overlay-agent` as run on `host`: in its network namespace, with its node's flags (the
    /// agent, the CLI and the Docker plugin all start from here).
    pub fn base_command(&self, host: usize) -> Command {
        let h = &self.hosts[host];
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", h.name()))
            .args(&self.agent_command)
            // From the environment, as a user's shell would have it (a flag overrides it).
            .env("OVERLAY_ETCD", &self.etcd.url)
            .envs(self.etcd.tls.iter().flat_map(|t| {
                [
                    ("OVERLAY_ETCD_CACERT", t.ca.clone()),
                    ("OVERLAY_ETCD_CERT", t.cert.clone()),
                    ("OVERLAY_ETCD_KEY", t.key.clone()),
                ]
            }))
            .args(["--node", h.name()])
            .envs(
                self.roles
                    .then(|| self.credentials(h.name()))
                    .into_iter()
                    .flatten(),
            )
            .args(["--pin-root", TEST_PIN_ROOT])
            .arg("--run-dir")
            .arg(self.run_dir());
        cmd
    }

    pub fn start_agent(&mut self, host: usize) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.hosts[host].log)?;
        let child = self
            .base_command(host)
            .args([
                "run",
                "--underlay",
                "eth1",
                "--lease-ttl",
                &LEASE_TTL.to_string(),
            ])
            .args(&self.hosts[host].run_args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting overlay-agent run")?;
        self.hosts[host].agent = Some(child);
        Ok(())
    }

    fn registrations(&self, host: usize) -> usize {
        self.hosts[host]
            .log()
            .matches("registered under lease")
            .count()
    }

    /// Waits until the agent of `host` has registered more than `before` times.
    fn wait_registered(&self, host: usize, before: usize) -> Result<()> {
        wait_for(Duration::from_secs(20), || {
            self.registrations(host) > before
        })
        .map(drop)
        .with_context(|| {
            format!(
                "agent of h{} did not register:\n{}",
                host + 1,
                self.hosts[host].log()
            )
        })
    }

    /// Starts the agent of `host` again and waits until it is registered.
    pub fn restart_agent(&mut self, host: usize) -> Result<()> {
        let before = self.registrations(host);
        self.start_agent(host)?;
        self.wait_registered(host, before)
    }

    /// SIGTERM, as an operator's `systemctl stop` sends, and waits until it has exited.
    pub fn stop_agent(&mut self, host: usize) {
        if let Some(mut child) = self.hosts[host].agent.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill_agent(&mut self, host: usize) {
        if let Some(mut child) = self.hosts[host].agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the CLI on `host`; Err with its stderr if it fails.
    pub fn cli(&self, host: usize, args: &[&str]) -> Result<String> {
        stdout_of(args, self.cli_output(host, args)?)
    }

    pub fn cli_output(&self, host: usize, args: &[&str]) -> Result<Output> {
        self.cli_command(host, args)
            .output()
            .context("running overlay-agent")
    }

    fn cli_command(&self, host: usize, args: &[&str]) -> Command {
        let mut cmd = self.base_command(host);
        cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
        cmd
    }

    /// `network create` with the CLI on the first host.
    pub fn create_network(&self, name: &str, subnet: &str, vni: u32) -> Result<()> {
        self.create_network_with(name, subnet, vni, &[])
    }

    /// The same with more flags (`--internal`, `--bum-rate N`, `--port P`, ...).
    pub fn create_network_with(
        &self,
        name: &str,
        subnet: &str,
        vni: u32,
        flags: &[&str],
    ) -> Result<()> {
        let vni = vni.to_string();
        let mut args = vec!["network", "create", name, "--subnet", subnet, "--vni", &vni];
        args.extend(flags);
        if self.roles {
            return self.admin_cli(&args).map(drop);
        }
        self.cli(0, &args).map(drop)
    }

    /// Sets up etcd's users and roles (store/roles.rs) for `nodes`, then turns authentication
    /// on; each user's password is in `<dir>/<user>.password`.
    fn enable_roles(&mut self, nodes: &[String]) -> Result<()> {
        use overlay_agent::store::{roles, schema::Keys};
        let keys = Keys::new("/overlay");
        let mut steps: Vec<Vec<String>> = vec![vec!["user".into(), "add".into(), ROOT.into()]];
        let mut user = |name: &str, role: &str, grants: Vec<roles::Grant>| -> Result<()> {
            let password = format!("{name}-secret");
            std::fs::write(self.dir.join(format!("{name}.password")), &password)?;
            steps.push(vec!["role".into(), "add".into(), role.into()]);
            steps.extend(grants.iter().map(roles::Grant::etcdctl_args));
            steps.push(vec![
                "user".into(),
                "add".into(),
                format!("{name}:{password}"),
            ]);
            steps.push(vec![
                "user".into(),
                "grant-role".into(),
                name.into(),
                role.into(),
            ]);
            Ok(())
        };
        user(ADMIN_USER, roles::ADMIN_ROLE, roles::admin_grants(&keys))?;
        for node in nodes {
            user(
                node,
                &roles::node_role(node),
                roles::node_grants(&keys, node),
            )?;
        }
        steps.push(vec!["auth".into(), "enable".into()]);
        for step in steps {
            self.etcdctl(&step.join(" "))?;
        }
        self.roles = true;
        Ok(())
    }

    /// The environment that makes a command act as etcd user `user`.
    fn credentials(&self, user: &str) -> [(&'static str, String); 2] {
        [
            ("OVERLAY_ETCD_USER", user.to_string()),
            (
                "OVERLAY_ETCD_PASSWORD_FILE",
                self.dir
                    .join(format!("{user}.password"))
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// The CLI on the first host as etcd's [`ADMIN_USER`] (with [`Deployment::with_roles`]).
    pub fn admin_cli(&self, args: &[&str]) -> Result<String> {
        let out = self
            .cli_command(0, args)
            .envs(self.credentials(ADMIN_USER))
            .output()
            .context("running overlay-agent")?;
        stdout_of(args, out)
    }

    /// etcdctl as etcd user `user` (its password from its file): what that user may do.
    pub fn etcdctl_as(&self, user: &str, args: &str) -> Result<Output> {
        let password = std::fs::read_to_string(self.dir.join(format!("{user}.password")))?;
        self.wire
            .output(&format!(
                "ETCDCTL_API=3 etcdctl --endpoints {} --user {user}:{password} --command-timeout=3s {args}",
                self.etcd.url
            ))
            .context("running etcdctl")
    }

    /// A container namespace named `<tag><name>`, attached to `network` on `host` with the
    /// CLI; returns it and the address it got.
    pub fn add_container(
        &mut self,
        host: usize,
        name: &str,
        network: &str,
        ip: Option<&str>,
    ) -> Result<(usize, Ipv4Addr)> {
        self.add_container_with(host, name, network, ip, &[])
    }

    /// The same with more `endpoint add` flags (`--service web`, ...).
    pub fn add_container_with(
        &mut self,
        host: usize,
        name: &str,
        network: &str,
        ip: Option<&str>,
        flags: &[&str],
    ) -> Result<(usize, Ipv4Addr)> {
        let ns = Netns::new(&format!("{}{name}", self.tag))?;
        let mut args = vec![
            "endpoint",
            "add",
            name,
            "--network",
            network,
            "--netns",
            &ns.name,
        ];
        if let Some(ip) = ip {
            args.extend(["--ip", ip]);
        }
        args.extend(flags);
        let out = self.cli(host, &args)?;
        // "endpoint c1: 10.10.0.1 02:42:... on network blue, node h1"
        let addr = out
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no address in {out:?}"))?;
        self.containers.push(ns);
        self.wait_served_by_running_agents(addr);
        Ok((self.containers.len() - 1, addr))
    }

    /// Waits (a little, without failing) until every running agent has `ip` in its ARP map:
    /// the CLI returns once its own node serves the endpoint, and a ping before the other
    /// nodes follow loses its ARP request (tests failed so under full-suite load). A test
    /// that wants a node not to serve it just spends the wait.
    fn wait_served_by_running_agents(&self, ip: Ipv4Addr) {
        let _ = wait_for(Duration::from_secs(2), || {
            self.hosts
                .iter()
                .filter(|h| h.ours && h.agent_pid().is_some())
                .all(|h| {
                    h.maps()
                        .is_ok_and(|m| m.arp.keys().any(|(_, a)| *a == ip.octets()))
                })
        });
    }

    /// Waits until every host's ARP map has (`present`) or lacks each of `ips` in `vni`: the
    /// moment every node serves (or has dropped) them. A ping before that loses its ARP
    /// request.
    pub fn wait_arp_everywhere(&self, vni: u32, ips: &[Ipv4Addr], present: bool) -> Result<()> {
        wait_for(Duration::from_secs(5), || {
            self.hosts.iter().all(|h| {
                h.maps().is_ok_and(|m| {
                    ips.iter()
                        .all(|ip| m.arp.contains_key(&(vni, ip.octets())) == present)
                })
            })
        })
        .map(drop)
        .with_context(|| format!("{ips:?} present={present} not reached on every host"))
    }

    /// Where the agents write their status (`--run-dir`).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// This deployment's scratch directory (removed with it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn container(&self, index: usize) -> &Netns {
        &self.containers[index]
    }

    /// Container `index`'s IPv6 link-local address, once duplicate address detection is done
    /// with it.
    pub fn link_local(&self, index: usize) -> Result<String> {
        let mut found = String::new();
        wait_for(Duration::from_secs(5), || {
            let addr = self.containers[index]
                .run("ip -6 -o addr show dev eth0 scope link")
                .unwrap_or_default();
            found = addr
                .split_whitespace()
                .nth(3)
                .and_then(|a| a.split('/').next())
                .unwrap_or_default()
                .to_string();
            !addr.contains("tentative") && !found.is_empty()
        })
        .context("no link-local address")?;
        Ok(found)
    }

    /// Host `legacy` (not ours) joins network `network` (VNI 42, `10.10.0.0/16`) as the seed
    /// recipe does by hand, with the host itself on the overlay at [`LEGACY_IP`] behind a kernel
    /// vxlan device, knowing our endpoint `ours` on host 0; then `peer add` makes every node of
    /// ours know it. Returns once host 0's FDB has it.
    /// On an IPv6 underlay its device is as docs/architecture.md (`peer add`) says to make one
    /// there: `local` its VTEP, zero UDP checksums sent and accepted (`udp6zerocsumtx
    /// udp6zerocsumrx`).
    pub fn join_legacy_host(&self, legacy: usize, network: &str, ours: Ipv4Addr) -> Result<()> {
        self.join_legacy_host_on(legacy, network, ours, 4789)
    }

    /// [`Deployment::join_legacy_host`] for a network on UDP port `port`. The recipe of
    /// docs/architecture.md (`peer add`): our container's MAC in the device's FDB and an all-zeros entry towards host 0 (head-end
    /// replication, which carries its ARP requests to us), no static neighbour entry.
    pub fn join_legacy_host_on(
        &self,
        legacy: usize,
        network: &str,
        ours: Ipv4Addr,
        port: u16,
    ) -> Result<()> {
        let mac = overlay_agent::shared::net::Mac::from_ip(ours);
        let vtep = self.hosts[legacy].vtep_addr().to_string();
        let v6 = self.hosts[legacy].vtep6;
        let device = v6
            .map(crate::topology::kernel_vxlan_over_ipv6)
            .unwrap_or_default();
        let mtu = 1500 - overlay_common::wire::encap_overhead(v6.is_some());
        let first = self.hosts[0].vtep_addr();
        self.hosts[legacy].ns.run(&format!(
            "ip link add vxlan0 type vxlan id 42 dev eth1 dstport {port} {device} && \
             ip link set vxlan0 address {LEGACY_MAC} mtu {mtu} && \
             ip addr add {LEGACY_IP}/16 dev vxlan0 && ip link set vxlan0 up && \
             bridge fdb add to {mac} dst {first} dev vxlan0 && \
             bridge fdb append 00:00:00:00:00:00 dst {first} dev vxlan0"
        ))?;
        let ip = LEGACY_IP.to_string();
        self.cli(
            0,
            &[
                "peer",
                "add",
                "--network",
                network,
                "--ip",
                &ip,
                "--mac",
                LEGACY_MAC,
                "--vtep",
                &vtep,
            ],
        )?;
        let key = (42, overlay_agent::shared::net::Mac::from_ip(LEGACY_IP).0);
        wait_for(Duration::from_secs(2), || {
            self.hosts[0].maps().is_ok_and(|m| m.fdb.contains_key(&key))
        })?;
        Ok(())
    }

    /// `peer rm` of the legacy host [`Deployment::join_legacy_host`] joined; returns once host
    /// 0's FDB and VTEPS no longer have it.
    pub fn leave_legacy_host(&self, legacy: usize, network: &str) -> Result<()> {
        let ip = LEGACY_IP.to_string();
        self.cli(0, &["peer", "rm", "--network", network, "--ip", &ip])?;
        let mac = (42, overlay_agent::shared::net::Mac::from_ip(LEGACY_IP).0);
        let vtep = (
            42,
            overlay_common::vtep::from_ip(self.hosts[legacy].vtep_addr()),
        );
        wait_for(Duration::from_secs(2), || {
            self.hosts[0]
                .maps()
                .is_ok_and(|m| !m.fdb.contains_key(&mac) && !m.vteps.contains(&vtep))
        })?;
        Ok(())
    }

    /// Writes `value` at `/overlay/<key>` straight into etcd, as a hand (or a bug) would,
    /// past every check the CLI makes.
    pub fn etcd_put(&self, key: &str, value: &str) -> Result<()> {
        self.etcdctl(&format!("put /overlay/{key} '{value}'"))
            .map(drop)
    }

    /// Deletes `/overlay/<key>` straight from etcd.
    pub fn etcd_del(&self, key: &str) -> Result<()> {
        self.etcdctl(&format!("del /overlay/{key}")).map(drop)
    }

    /// Every key and value under `/overlay/<prefix>`, as etcdctl prints them.
    pub fn etcd_get_prefix(&self, prefix: &str) -> Result<String> {
        self.etcdctl(&format!("get --prefix /overlay/{prefix}"))
    }

    fn etcdctl(&self, args: &str) -> Result<String> {
        // Once authentication is on, as root: past every role, as a hand would.
        let root = if self.roles {
            format!("--user {ROOT}")
        } else {
            String::new()
        };
        self.wire.run(&format!(
            "ETCDCTL_API=3 etcdctl --endpoints {} {} {root} {args}",
            self.etcd.url,
            self.etcd.ctl_flags().join(" ")
        ))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_agent(i);
            let _ = self.hosts[i].pins().remove();
        }
        self.etcd.stop();
        self.containers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CLI command's stdout; Err with its stderr if it failed.
fn stdout_of(args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "overlay-agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 20 ms until it holds; Err after `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One ping with a short wait: true if answered.
pub fn ping(from: &Netns, to: Ipv4Addr) -> bool {
    from.output(&format!("ping -c 1 -W 1 {to}"))
        .is_ok_and(|o| o.status.success())
}

/// Pings from `from` to `to` every 10 ms for `count` packets, in the background; the handle
/// gives (sent, received).
pub fn ping_flood(from: &Netns, to: Ipv4Addr, count: u32) -> std::process::Child {
    std::process::Command::new("ip")
        .args([
            "netns", "exec", &from.name, "ping", "-q", "-i", "0.01", "-W", "1",
        ])
        .args(["-c", &count.to_string(), &to.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn flood_result(child: std::process::Child) -> (u32, u32) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "900 packets transmitted, 900 received, 0% packet loss, time 9012ms"
    let line = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or_else(|| panic!("{text}"));
    let num = |i: usize| line.split_whitespace().nth(i).unwrap().parse().unwrap();
    (num(0), num(3))
}
