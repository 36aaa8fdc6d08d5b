//! etcd as production runs it: a cluster of three or five members, and the faults a test
//! inflicts on them (a member SIGKILLed and started again, SIGSTOPped and continued, a host cut
//! off from it, a rolling restart, compaction, a restore from a snapshot).
//!
//! Each member runs in a small namespace of its own plugged into the underlay segment (member
//! i at 10.0.0.(240+i), peers and clients on port 2380 and 2379), not in a host's namespace:
//! so a member and a host's agent die independently, peer traffic crosses the segment as it
//! does between machines, and cutting a host off from a member (an nftables drop in the host's
//! namespace) is a cut on the network, not one on a loopback. By convention member i is host
//! i's nearest, as if one ran on each host. etcdctl runs in the segment's namespace, which
//! holds ETCD_IP and is never cut off. Data and logs live in the deployment's directory;
//! everything is SIGKILLed and its namespace removed when the [`Etcd`] is dropped, after a
//! panic too.
//!
//! [`Member`] is the one etcd launcher: the single member of every other test runs through it.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    deployment::{Etcd, EtcdTls, wait_for},
    netns::Netns,
};

/// nftables table (in a host's namespace) holding a test's partitions.
const PARTITION_TABLE: &str = "overlay_test_partition";
/// How long a member may take to answer again after it was started.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15);

/// One etcd process and what it needs to start again on its data.
pub struct Member {
    pub name: String,
    /// Its address on the underlay segment.
    pub ip: String,
    /// The namespace it runs in.
    pub(crate) netns: String,
    /// Its namespace, when it has one of its own: held only to be removed (after the process)
    /// on drop.
    pub(crate) _own_ns: Option<Netns>,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
    pub(crate) paused: bool,
    pub client_url: String,
    pub(crate) peer_url: String,
    /// `--initial-cluster`: every member's name and peer URL.
    pub(crate) initial_cluster: String,
    /// `--initial-cluster-token` of a cluster (a single member keeps etcd's default).
    pub(crate) token: Option<String>,
}

impl Member {
    /// Starts etcd on its data directory (made from `--initial-cluster` if empty, rejoining
    /// with what it holds otherwise); returns without waiting for it to answer.
    pub(crate) fn spawn(&mut self, tls: Option<&EtcdTls>) -> Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // `ip netns exec` execs etcd: the child's pid is etcd's, for the signals below.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcd", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(
                self.token
                    .iter()
                    .flat_map(|t| ["--initial-cluster-token", t.as_str()]),
            )
            .args(tls.iter().flat_map(|t| {
                [
                    "--cert-file".into(),
                    t.server_cert.clone().into_os_string(),
                    "--key-file".into(),
                    t.server_key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    t.ca.clone().into_os_string(),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Waits until the member answers `endpoint health` (it has a leader and serves reads).
    pub(crate) fn wait_healthy(&self, ctl_flags: &[String]) -> Result<()> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while Instant::now() < deadline {
            let ok = etcdctl(&self.netns, &self.client_url, ctl_flags)
                .args(["--command-timeout=1s", "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "etcd member {} did not become healthy; its log:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGKILL: no chance to clean up, as in a crash (a stopped process dies too).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("etcd member {} is not running", self.name))?;
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            bail!(
                "signal to {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    fn running(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// etcdctl (API v3) in namespace `netns` towards `endpoints`.
fn etcdctl(netns: &str, endpoints: &str, flags: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, "etcdctl", "--endpoints", endpoints])
        .args(flags)
        .env("ETCDCTL_API", "3");
    c
}

/// What `etcdctl endpoint status -w json` says of one member.
struct Status {
    member_id: u64,
    leader: u64,
    revision: i64,
}

impl Etcd {
    /// A cluster of `members` (3 or 5) in namespaces `<tag>e<i>` plugged into `wire`'s bridge
    /// `ul`, data and logs under `dir`; returns once every member is healthy.
    pub fn cluster(wire: &Netns, dir: &Path, tag: &str, members: usize) -> Result<Self> {
        if !(1..=9).contains(&members) {
            bail!("{members} members: from 1 to 9");
        }
        let peer = |i: usize| format!("http://{}:2380", member_ip(i));
        let initial_cluster = (1..=members)
            .map(|i| format!("m{i}={}", peer(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut list = Vec::new();
        for i in 1..=members {
            let ns = Netns::new(&format!("{tag}e{i}"))?;
            let ip = member_ip(i);
            wire.run(&format!(
                "ip link add e{i} type veth peer name eth0 netns {} && ip link set e{i} master ul up",
                ns.name
            ))?;
            ns.run(&format!(
                "ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
            ))?;
            list.push(Member {
                name: format!("m{i}"),
                netns: ns.name.clone(),
                _own_ns: Some(ns),
                data: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                child: None,
                paused: false,
                client_url: format!("http://{ip}:2379"),
                peer_url: peer(i),
                ip,
                initial_cluster: initial_cluster.clone(),
                token: Some(tag.to_string()),
            });
        }
        let mut etcd = Self {
            wire: wire.name.clone(),
            url: list
                .iter()
                .map(|m| m.client_url.as_str())
                .collect::<Vec<_>>()
                .join(","),
            members: list,
            tls: None,
        };
        etcd.restart()?;
        etcd.wait_leader()?;
        Ok(etcd)
    }

    /// How many members the cluster has (1 for the single member of other tests).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Every member's address (what hosts resolve before anything hurries).
    pub fn ips(&self) -> Vec<String> {
        self.members.iter().map(|m| m.ip.clone()).collect()
    }

    /// etcdctl from the segment's namespace, towards `endpoints`, with a bounded wait.
    pub fn ctl(&self, endpoints: &str, args: &[&str]) -> Result<Output> {
        etcdctl(&self.wire, endpoints, &self.ctl_flags())
            .arg("--command-timeout=3s")
            .args(args)
            .output()
            .context("running etcdctl")
    }

    fn status(&self, i: usize) -> Result<Status> {
        let out = self.ctl(
            &self.members[i].client_url,
            &["--dial-timeout=1s", "endpoint", "status", "-w", "json"],
        )?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "member {}: {}",
                self.members[i].name,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let s = &json[0]["Status"];
        let (member_id, leader, revision) = (
            s["header"]["member_id"].as_u64(),
            s["leader"].as_u64(),
            s["header"]["revision"].as_i64(),
        );
        match (member_id, leader, revision) {
            (Some(member_id), Some(leader), Some(revision)) => Ok(Status {
                member_id,
                leader,
                revision,
            }),
            _ => bail!("member {}: no status in {json}", self.members[i].name),
        }
    }

    /// The member every running member names as leader (Err while they disagree or none is).
    pub fn leader(&self) -> Result<usize> {
        let statuses: Vec<(usize, Status)> = (0..self.members.len())
            .filter(|&i| self.members[i].running())
            .filter_map(|i| self.status(i).ok().map(|s| (i, s)))
            .collect();
        let Some((_, first)) = statuses.first() else {
            bail!("no member answers");
        };
        if first.leader == 0 || statuses.iter().any(|(_, s)| s.leader != first.leader) {
            bail!("the members do not agree on a leader");
        }
        statuses
            .iter()
            .find(|(_, s)| s.member_id == first.leader)
            .map(|(i, _)| *i)
            .context("the leader does not answer")
    }

    /// Waits until the running members agree on a leader that answers; returns it.
    pub fn wait_leader(&self) -> Result<usize> {
        let mut leader = 0;
        wait_for(HEALTHY_WITHIN, || self.leader().map(|l| leader = l).is_ok())
            .context("no leader")?;
        Ok(leader)
    }

    /// A member that is not the leader.
    pub fn follower(&self) -> Result<usize> {
        let leader = self.wait_leader()?;
        Ok((leader + 1) % self.members.len())
    }

    /// SIGKILLs member `i`: a crash; its data stays for [`Etcd::start_member`].
    pub fn kill(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again on its data (it rejoins); returns once it is healthy.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let tls = self.tls.clone();
        self.members[i].spawn(tls.as_ref())?;
        self.members[i].wait_healthy(&self.ctl_flags())
    }

    /// SIGSTOPs member `i`: a hung member, whose connections stay open and never answer (a
    /// stalled disk, a paused VM).
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.members[i].signal(libc::SIGSTOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONTs member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.members[i].signal(libc::SIGCONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    /// Cuts `host` off from member `i`'s client port: packets from the host to it are dropped
    /// (no reset, no error: the connections hang), in an nftables table of our own in the
    /// host's namespace. Member-to-member traffic is untouched.
    pub fn partition(&self, host: &Netns, i: usize) -> Result<()> {
        let ip = &self.members[i].ip;
        host.run(&format!(
            "nft add table inet {PARTITION_TABLE} && \
             nft add chain inet {PARTITION_TABLE} out '{{ type filter hook output priority 0; }}' && \
             nft add rule inet {PARTITION_TABLE} out ip daddr {ip} tcp dport 2379 drop"
        ))
        .map(drop)
    }

    /// Undoes every [`Etcd::partition`] of `host`.
    pub fn heal(&self, host: &Netns) -> Result<()> {
        host.run(&format!("nft delete table inet {PARTITION_TABLE}"))
            .map(drop)
    }

    /// Every member in turn stopped (SIGTERM, as an operator's restart does) and started
    /// again, the next only once it is healthy and the cluster has a leader.
    pub fn rolling_restart(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.members[i].signal(libc::SIGTERM)?;
            if let Some(mut child) = self.members[i].child.take() {
                child.wait()?;
            }
            self.start_member(i)?;
            self.wait_leader()?;
        }
        Ok(())
    }

    /// The cluster's revision now.
    pub fn revision(&self) -> Result<i64> {
        let leader = self.wait_leader()?;
        Ok(self.status(leader)?.revision)
    }

    /// Compacts the keyspace at the current revision (physically): a watch from any earlier
    /// revision is cancelled. Returns the revision.
    pub fn compact(&self) -> Result<i64> {
        let rev = self.revision()?;
        self.compact_at(rev)?;
        Ok(rev)
    }

    /// Compacts the keyspace at `rev` (physically): a watch from any earlier revision is
    /// cancelled.
    pub fn compact_at(&self, rev: i64) -> Result<()> {
        let out = self.ctl(&self.url, &["compact", "--physical", &rev.to_string()])?;
        if !out.status.success() {
            bail!("compact: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Saves a snapshot of the cluster (from the leader) at `path`.
    pub fn snapshot(&self, path: &Path) -> Result<()> {
        let leader = self.wait_leader()?;
        let out = self.ctl(
            &self.members[leader].client_url,
            &["snapshot", "save", &path.display().to_string()],
        )?;
        if !out.status.success() {
            bail!(
                "snapshot save: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Restores the cluster from snapshot `path`, as etcd's disaster recovery says: every
    /// member stopped, its data replaced by `etcdctl snapshot restore` (same names, peer URLs,
    /// `--initial-cluster` and token), all started again. Returns once there is a leader.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        self.stop();
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.data);
            let mut restore = etcdctl(&self.wire, &m.client_url, &[]);
            restore
                .args(["snapshot", "restore"])
                .arg(path)
                .args(["--name", &m.name, "--initial-cluster", &m.initial_cluster])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(
                    m.token
                        .iter()
                        .flat_map(|t| ["--initial-cluster-token", t.as_str()]),
                )
                .arg("--data-dir")
                .arg(&m.data);
            let out = restore
                .output()
                .context("running etcdctl snapshot restore")?;
            if !out.status.success() {
                bail!(
                    "snapshot restore for {}: {}",
                    m.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        self.restart()?;
        self.wait_leader().map(drop)
    }
}

/// Member i's (1-based) address on the underlay segment.
fn member_ip(i: usize) -> String {
    format!("10.0.0.{}", 240 + i)
}
