//! Three hosts on a real three-member etcd cluster (tests/src/etcd_cluster.rs), a container on
//! each, and the faults production etcd clusters see: the leader SIGKILLed, a follower hung
//! (SIGSTOP), a host cut off from its nearest member, a rolling restart, compaction past a
//! stopped agent's watch, a restore from an older snapshot. During each, containers of
//! different hosts ping each other at 50 pps; after each, a new endpoint must be served on
//! every host (the time from the command's start is printed, one line per fault, for the
//! docs), `doctor` must be clean on every node, and no ping may be lost. Then the CLI and the
//! CNI plugin during a leader change and a hung member: they succeed, or fail in one line
//! leaving nothing behind. Docker `run` the same; and five members with two of them killed.
use std::{
    net::Ipv4Addr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use overlay_agent::{runtimes::cni::endpoint_name, shared::ifnames::port_name};
use overlay_tests::{
    deployment::{Deployment, flood_result, wait_for},
    docker::{DockerHost, IMAGE},
    netns::Netns,
    runtimes::{cni, plugin_entry},
};

const VNI: u32 = 42;
/// The targets: a new endpoint served everywhere this soon after the fault began.
const AFTER_LEADER_KILL: Duration = Duration::from_secs(3);
const WITH_HUNG_MEMBER: Duration = Duration::from_secs(5);
/// For the other faults (a cut-off member hangs as a hung one does).
const AFTER_OTHER_FAULTS: Duration = Duration::from_secs(5);
/// How long a CLI or CNI command may take before it must have failed (it must never hang).
const COMMAND_BOUND: Duration = Duration::from_secs(30);
/// A command may fail only after trying the healthy members for its bound: a quorum is up
/// during every fault here, so giving up sooner is giving up without retrying elsewhere.
const GIVES_UP_NOT_BEFORE: Duration = Duration::from_secs(3);

/// Three hosts with our agents on three etcd members, network blue, container c<i> on host i.
struct Scene {
    d: Deployment,
    /// Container c<i+1>'s index in `d.containers` and address.
    c: Vec<(usize, Ipv4Addr)>,
}

fn scene(label: &str) -> Scene {
    scene_on(label, 3)
}

fn scene_on(label: &str, members: usize) -> Scene {
    let mut d = Deployment::with_etcd_members(label, &[true; 3], members).unwrap();
    d.create_network("blue", "10.10.0.0/16", VNI).unwrap();
    let c: Vec<_> = (0..3)
        .map(|h| {
            d.add_container(h, &format!("c{}", h + 1), "blue", None)
                .unwrap()
        })
        .collect();
    let ips: Vec<_> = c.iter().map(|c| c.1).collect();
    d.wait_arp_everywhere(VNI, &ips, true).unwrap();
    Scene { d, c }
}

/// Pings at 50 pps between containers of different hosts, until [`Pings::lost`].
struct Pings(Vec<(String, Child)>);

impl Scene {
    /// Pings from c<a> to c<b> for each (a, b) of `pairs` (0-based hosts).
    fn pings(&self, pairs: &[(usize, usize)]) -> Pings {
        Pings(
            pairs
                .iter()
                .map(|&(a, b)| {
                    let child = self
                        .d
                        .container(self.c[a].0)
                        .command("ping")
                        .args(["-q", "-i", "0.02", "-W", "1"])
                        .arg(self.c[b].1.to_string())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap();
                    (format!("c{} -> c{}", a + 1, b + 1), child)
                })
                .collect(),
        )
    }

    fn all_pings(&self) -> Pings {
        self.pings(&[(0, 1), (1, 2), (2, 0)])
    }

    /// `endpoint add <name>` on `host` with the CLI (the first attempt must work), then waits
    /// until every host with a running agent has it in its ARP map. Prints and returns the time
    /// from the command's start.
    fn served_everywhere(&mut self, host: usize, name: &str, what: &str) -> (Duration, Ipv4Addr) {
        let ns = Netns::new(&format!("{}{name}", overlay_tests::unique("ecl"))).unwrap();
        let start = Instant::now();
        let out = self
            .d
            .cli_output(
                host,
                &[
                    "endpoint",
                    "add",
                    name,
                    "--network",
                    "blue",
                    "--netns",
                    &ns.name,
                ],
            )
            .unwrap();
        let command = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{what}: `endpoint add {name}` on h{} failed after {:.1} s: {}",
            host + 1,
            start.elapsed().as_secs_f64(),
            stderr.trim()
        );
        let ip: Ipv4Addr = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap();
        self.d.containers.push(ns);
        let hosts: Vec<usize> = (0..3)
            .filter(|&h| self.d.hosts[h].agent_pid().is_some())
            .collect();
        wait_for(Duration::from_secs(60), || {
            hosts.iter().all(|&h| self.has(h, ip))
        })
        .unwrap_or_else(|_| {
            panic!(
                "{what}: {name} ({ip}) not served on every host within 60 s; missing on {:?}",
                hosts
                    .iter()
                    .filter(|&&h| !self.has(h, ip))
                    .collect::<Vec<_>>()
            )
        });
        let took = start.elapsed();
        println!(
            "{what}: served everywhere in {:.1} s (the command took {:.1} s)",
            took.as_secs_f64(),
            command.as_secs_f64()
        );
        (took, ip)
    }

    /// Whether host `h`'s ARP map has `ip` on blue.
    fn has(&self, h: usize, ip: Ipv4Addr) -> bool {
        self.d.hosts[h]
            .maps()
            .is_ok_and(|m| m.arp.contains_key(&(VNI, ip.octets())))
    }

    /// Every agent's log lines above INFO, by host.
    fn warnings(&self) -> String {
        self.d
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(h, host)| {
                host.log()
                    .lines()
                    .filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG "))
                    .map(|l| format!("h{}: {l}", h + 1))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `doctor` on every host with a running agent is clean (within 10 s).
    fn doctor_clean(&self, what: &str) {
        for h in (0..3).filter(|&h| self.d.hosts[h].agent_pid().is_some()) {
            let mut last = String::new();
            let clean = wait_for(Duration::from_secs(10), || {
                let out = self.d.cli_output(h, &["doctor"]).unwrap();
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                out.status.success()
            });
            assert!(
                clean.is_ok(),
                "{what}: doctor on h{} not clean:\n{last}",
                h + 1
            );
        }
    }
}

impl Pings {
    /// Stops every ping and asserts none was lost (but the one in flight when stopped); on a
    /// loss, shows what the agents of `s` warned of.
    fn none_lost(self, s: &Scene, what: &str) {
        let mut lines = Vec::new();
        let mut lost = false;
        for (pair, child) in self.0 {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let (sent, received) = flood_result(child);
            lines.push(format!("{pair}: {received}/{sent}"));
            lost |= sent.saturating_sub(received) > 1 || sent < 10;
        }
        println!("{what}: pings {}", lines.join(", "));
        assert!(
            !lost,
            "{what}: pings lost: {}\nthe agents' warnings:\n{}",
            lines.join(", "),
            s.warnings()
        );
    }
}

/// The targets are measured figures (docs/etcd-cluster.md), met on a quiet machine; the suite
/// runs many tests at once on two cores, where an election alone can take longer. So a test
/// fails at twice the target (a member that stalls the client, as before issue 26, costs tens
/// of seconds) and says when only the target was missed.
fn assert_within(what: &str, took: Duration, target: Duration) {
    let verdict = if took <= target {
        "target met"
    } else {
        "over target"
    };
    println!(
        "{what}: served everywhere in {:.1} s ({verdict}: {} s)",
        took.as_secs_f64(),
        target.as_secs()
    );
    assert!(
        took <= target * 2,
        "{what}: served everywhere in {:.1} s, twice the target of {} s",
        took.as_secs_f64(),
        target.as_secs()
    );
}

#[test]
fn the_leader_killed_then_a_follower_hung_for_20_s() {
    let mut s = scene("ecll");
    let pings = s.all_pings();

    let leader = s.d.etcd.wait_leader().unwrap();
    s.d.etcd.kill(leader);
    let (took, _) = s.served_everywhere(1, "k1", "leader kill");
    s.doctor_clean("leader kill");
    assert_within("leader kill", took, AFTER_LEADER_KILL);
    s.d.etcd.start_member(leader).unwrap();
    s.d.etcd.wait_leader().unwrap();

    let follower = s.d.etcd.follower().unwrap();
    s.d.etcd.pause(follower).unwrap();
    let paused = Instant::now();
    let (took, k2) = s.served_everywhere(2, "k2", "hung member");
    s.doctor_clean("hung member");
    // A removal while it hangs, too.
    let rm = Instant::now();
    s.d.cli(2, &["endpoint", "rm", "k2"])
        .unwrap_or_else(|e| panic!("hung member: {e}"));
    wait_for(Duration::from_secs(30), || (0..3).all(|h| !s.has(h, k2))).unwrap();
    println!(
        "hung member: removal gone everywhere in {:.1} s",
        rm.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed()));
    s.d.etcd.resume(follower).unwrap();
    s.d.etcd.wait_leader().unwrap();
    s.served_everywhere(0, "k3", "hung member resumed");
    s.doctor_clean("hung member resumed");
    pings.none_lost(&s, "leader kill, hung member");
    assert_within("hung member", took, WITH_HUNG_MEMBER);
}

#[test]
fn a_host_cut_off_from_its_nearest_member_then_a_rolling_restart() {
    let mut s = scene("eclp");
    let pings = s.all_pings();

    // Member i is host i's nearest: cut h1 (its agent and CLI) off from m1. Then, as h1's
    // connections may run to any member, from each of the others in turn.
    let mut worst = Duration::ZERO;
    for m in 0..3 {
        let what = format!("partition from m{}", m + 1);
        let h1 = &s.d.hosts[0].ns;
        s.d.etcd.partition(h1, m).unwrap();
        // The cut bites: h1 cannot reach the member, the others still can.
        let url = &s.d.etcd.member(m).client_url;
        assert!(
            h1.run(&format!("curl -sf -m 1 {url}/health")).is_err(),
            "{what}: h1 still reaches {url}"
        );
        s.d.hosts[1]
            .ns
            .run(&format!("curl -sf -m 2 {url}/health"))
            .unwrap();
        let cut = Instant::now();
        let (took, _) = s.served_everywhere(0, &format!("p{m}a"), &what);
        worst = worst.max(took);
        let (took, _) = s.served_everywhere(1, &format!("p{m}b"), &format!("{what}, added on h2"));
        worst = worst.max(took);
        s.doctor_clean(&what);
        // Longer than a lease TTL: h1 must keep its registration (the pings to c1 tell).
        std::thread::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed()));
        s.d.etcd.heal(&s.d.hosts[0].ns).unwrap();
    }
    assert_within("partition", worst, AFTER_OTHER_FAULTS);

    let restart = Instant::now();
    s.d.etcd.rolling_restart().unwrap();
    println!(
        "rolling restart: three members in {:.1} s",
        restart.elapsed().as_secs_f64()
    );
    let (took, _) = s.served_everywhere(2, "r1", "rolling restart");
    s.doctor_clean("rolling restart");
    pings.none_lost(&s, "partition, rolling restart");
    assert_within("rolling restart", took, AFTER_OTHER_FAULTS);
}

#[test]
fn compaction_past_a_stopped_agents_watch_then_a_restore_from_an_older_snapshot() {
    let mut s = scene("eclc");
    // h3's agent is stopped for a while (its lease expires, its endpoints leave the others by
    // design): the pings stay between h1 and h2.
    let pings = s.pings(&[(0, 1), (1, 0)]);
    s.d.kill_agent(2);
    let (_, x1) = s.served_everywhere(0, "x1", "agent stopped");
    let (_, x2) = s.served_everywhere(1, "x2", "agent stopped");
    s.d.cli(0, &["endpoint", "rm", "x1"]).unwrap();
    let rev = s.d.etcd.compact().unwrap();
    println!("compacted at revision {rev}, past h3's watch");
    let start = Instant::now();
    s.d.restart_agent(2).unwrap();
    let caught_up = wait_for(Duration::from_secs(30), || {
        s.has(2, x2) && !s.has(2, x1) && s.has(2, s.c[0].1) && s.has(2, s.c[1].1)
    });
    assert!(
        caught_up.is_ok(),
        "h3 did not catch up after the compaction (x2 {}, x1 {}):\n{}",
        s.has(2, x2),
        s.has(2, x1),
        s.d.hosts[2].log()
    );
    println!(
        "compaction: the restarted agent caught up in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // c3 is back everywhere once h3 registered again.
    wait_for(Duration::from_secs(10), || {
        (0..3).all(|h| s.has(h, s.c[2].1))
    })
    .unwrap();
    let (took, _) = s.served_everywhere(0, "x3", "compaction");
    s.doctor_clean("compaction");
    pings.none_lost(&s, "compaction");
    assert_within("compaction", took, AFTER_OTHER_FAULTS);

    // A snapshot, two endpoints after it, then the cluster restored from the snapshot: they
    // never happened, and must leave every map on every node.
    let pings = s.all_pings();
    let snapshot = s.d.dir().join("before.db");
    s.d.etcd.snapshot(&snapshot).unwrap();
    let snapshot_rev = s.d.etcd.revision().unwrap();
    let (_, y1) = s.served_everywhere(1, "y1", "before restore");
    let (_, y2) = s.served_everywhere(2, "y2", "before restore");
    let start = Instant::now();
    let newest = s.d.etcd.revision().unwrap();
    s.d.etcd.restore(&snapshot).unwrap();
    println!(
        "restore: snapshot at revision {snapshot_rev}, the cluster was at {newest}, restored at {}",
        s.d.etcd.revision().unwrap()
    );
    let gone = wait_for(Duration::from_secs(30), || {
        (0..3).all(|h| !s.has(h, y1) && !s.has(h, y2))
    });
    if gone.is_err() {
        let stale: Vec<usize> = (0..3).filter(|&h| s.has(h, y1) || s.has(h, y2)).collect();
        let logs: Vec<String> = stale
            .iter()
            .map(|&h| format!("h{}'s log:\n{}", h + 1, s.d.hosts[h].log()))
            .collect();
        panic!(
            "after the restore, y1/y2 still served on hosts {:?}\n{}",
            stale
                .iter()
                .map(|h| format!("h{}", h + 1))
                .collect::<Vec<_>>(),
            logs.join("\n")
        );
    }
    println!(
        "restore: endpoints newer than the snapshot gone everywhere {:.1} s after the restore began",
        start.elapsed().as_secs_f64()
    );
    let eps = s.d.cli(0, &["endpoint", "ls"]).unwrap();
    assert!(!eps.contains("y1") && !eps.contains("y2"), "{eps}");
    let (took, _) = s.served_everywhere(0, "z1", "restore");
    s.doctor_clean("restore");
    pings.none_lost(&s, "restore");
    assert_within("restore", took, AFTER_OTHER_FAULTS);

    // The same, told to the agents only after other clients of the cluster wrote on: the
    // restored cluster's revision is then past the one each agent watched, and revisions alone
    // no longer show that history went back. (The agents are SIGSTOPped across the restore; the
    // restore renews every lease, so none expires.)
    let pings = s.all_pings();
    let snapshot = s.d.dir().join("before2.db");
    s.d.etcd.snapshot(&snapshot).unwrap();
    let (_, w1) = s.served_everywhere(0, "w1", "before the second restore");
    let newest = s.d.etcd.revision().unwrap();
    let agents: Vec<i32> = (0..3)
        .map(|h| s.d.hosts[h].agent_pid().unwrap() as i32)
        .collect();
    for &pid in &agents {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    let start = Instant::now();
    s.d.etcd.restore(&snapshot).unwrap();
    let mut rev = s.d.etcd.revision().unwrap();
    let mut n = 0;
    while rev <= newest + 5 {
        let out =
            s.d.etcd
                .ctl(&s.d.etcd.url, &["put", &format!("/another-app/k{n}"), "v"])
                .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
        rev = s.d.etcd.revision().unwrap();
    }
    for &pid in &agents {
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    println!(
        "second restore: the agents watched up to revision {newest}; another client wrote the restored cluster to {rev} before they woke"
    );
    let gone = wait_for(Duration::from_secs(30), || (0..3).all(|h| !s.has(h, w1)));
    assert!(
        gone.is_ok(),
        "after the second restore, w1 still served on hosts {:?}\nh1's log:\n{}",
        (0..3)
            .filter(|&h| s.has(h, w1))
            .map(|h| format!("h{}", h + 1))
            .collect::<Vec<_>>(),
        s.d.hosts[0].log()
    );
    println!(
        "second restore: w1 gone everywhere {:.1} s after the restore began",
        start.elapsed().as_secs_f64()
    );
    s.served_everywhere(1, "z2", "second restore");
    s.doctor_clean("second restore");
    pings.none_lost(&s, "second restore");
}

/// The outcome of one command during a fault: it worked, or it failed in one line after
/// retrying (within the bound); the caller then checks that a failure left nothing.
fn judged(what: &str, ok: bool, message: &str, took: Duration) -> bool {
    println!(
        "{what}: {} in {:.1} s{}",
        if ok { "ok" } else { "failed" },
        took.as_secs_f64(),
        if ok {
            String::new()
        } else {
            format!(": {}", message.trim())
        }
    );
    assert!(
        took <= COMMAND_BOUND,
        "{what}: took {:.1} s",
        took.as_secs_f64()
    );
    assert!(
        ok || message.trim().lines().count() == 1,
        "{what}: not one line: {message}"
    );
    assert!(
        ok || took >= GIVES_UP_NOT_BEFORE,
        "{what}: gave up after {:.1} s without retrying on a healthy member: {}",
        took.as_secs_f64(),
        message.trim()
    );
    ok
}

/// What [`commands_during`] made: the endpoint's name or CNI attachment's id, whether it came
/// from CNI, and whether its removal failed (to be run again once the fault is over).
type Made = (String, bool, bool);

/// CLI `endpoint add` + `rm` and CNI ADD + DEL on `host`, while a fault lasts; returns what
/// must be absent once the fault is over.
fn commands_during(s: &Scene, host: usize, fault: &str, tag: &str) -> Vec<Made> {
    let d = &s.d;
    let mut check = Vec::new();
    // The CLI.
    let name = format!("cli{tag}");
    let ns = Netns::new(&format!("{}{name}", overlay_tests::unique("ecl"))).unwrap();
    let start = Instant::now();
    let out = d
        .cli_output(
            host,
            &[
                "endpoint",
                "add",
                &name,
                "--network",
                "blue",
                "--netns",
                &ns.name,
            ],
        )
        .unwrap();
    let added = judged(
        &format!("{fault}: CLI endpoint add"),
        out.status.success(),
        &String::from_utf8_lossy(&out.stderr),
        start.elapsed(),
    );
    let mut removed = true;
    if added {
        let start = Instant::now();
        let out = d.cli_output(host, &["endpoint", "rm", &name]).unwrap();
        removed = judged(
            &format!("{fault}: CLI endpoint rm"),
            out.status.success(),
            &String::from_utf8_lossy(&out.stderr),
            start.elapsed(),
        );
    }
    check.push((name, false, !removed));
    // The CNI plugin, as a runtime calls it.
    let id = format!("cni{tag}");
    let cns = Netns::new(&format!("{}{id}", overlay_tests::unique("ecl"))).unwrap();
    let path = format!("/run/netns/{}", cns.name);
    let env = [
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let entry = plugin_entry(d, host, "blue").to_string();
    let add = cni(d, host, "ADD", &env, entry.as_bytes()).unwrap();
    let added = judged(
        &format!("{fault}: CNI ADD"),
        add.ok,
        &format!("{} {}", add.msg(), add.stderr.trim()),
        add.took,
    );
    let mut removed = true;
    if added {
        let del = cni(d, host, "DEL", &env, entry.as_bytes()).unwrap();
        removed = judged(
            &format!("{fault}: CNI DEL"),
            del.ok,
            &format!("{} {}", del.msg(), del.stderr.trim()),
            del.took,
        );
    }
    // A failed DEL is run again as a runtime would; it needs the namespace no more.
    check.push((id, true, !removed));
    drop((ns, cns));
    check
}

/// Every key under `/overlay/` now.
fn etcd_keys(s: &Scene) -> std::collections::BTreeSet<String> {
    let out =
        s.d.etcd
            .ctl(
                &s.d.etcd.url,
                &["get", "--prefix", "/overlay/", "--keys-only"],
            )
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Once the fault is over: a removal that failed during it works now, and nothing of `check`
/// is left on `host` or in etcd (no endpoint, no interface).
fn nothing_left(s: &Scene, host: usize, check: &[Made]) {
    for (name, is_cni, _) in check.iter().filter(|c| c.2) {
        if *is_cni {
            let env = [
                ("CNI_CONTAINERID", name.as_str()),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", "eth0"),
            ];
            let entry = plugin_entry(&s.d, host, "blue").to_string();
            let del = cni(&s.d, host, "DEL", &env, entry.as_bytes()).unwrap();
            assert!(del.ok, "CNI DEL again: {del:?}");
        } else {
            s.d.cli(host, &["endpoint", "rm", name]).unwrap();
        }
    }
    let eps = s.d.cli(host, &["endpoint", "ls", "--json"]).unwrap();
    for (name, is_cni, _) in check {
        let name = if *is_cni {
            endpoint_name("blue-cni", name, "eth0")
        } else {
            name.clone()
        };
        assert!(
            !eps.contains(&format!("\"{name}\"")),
            "etcd still has endpoint {name}"
        );
        let port = port_name("blue", &name);
        assert!(
            s.d.hosts[host]
                .ns
                .run(&format!("ip link show {port}"))
                .is_err(),
            "interface {port} of {name} left behind on h{}",
            host + 1
        );
    }
}

#[test]
fn cli_and_cni_during_a_leader_change_and_during_a_hung_member() {
    let mut s = scene("eclx");
    let pings = s.all_pings();

    // Whatever worked was undone and whatever failed made nothing: etcd's keys are as before
    // (no endpoint, no address reservation).
    let before = etcd_keys(&s);
    let leader = s.d.etcd.wait_leader().unwrap();
    s.d.etcd.kill(leader);
    let check = commands_during(&s, 0, "leader change", "a");
    s.d.etcd.start_member(leader).unwrap();
    s.d.etcd.wait_leader().unwrap();
    nothing_left(&s, 0, &check);
    assert_eq!(etcd_keys(&s), before, "leader change: etcd's keys changed");

    let follower = s.d.etcd.follower().unwrap();
    s.d.etcd.pause(follower).unwrap();
    let check = commands_during(&s, 1, "hung member", "b");
    s.d.etcd.resume(follower).unwrap();
    s.d.etcd.wait_leader().unwrap();
    nothing_left(&s, 1, &check);
    assert_eq!(etcd_keys(&s), before, "hung member: etcd's keys changed");

    s.served_everywhere(2, "e1", "after the commands");
    s.doctor_clean("after the commands");
    pings.none_lost(&s, "commands during faults");
}

/// `docker run` on `docker` while a fault lasts: it works (and the container is removed), or it
/// fails in one line of ours leaving nothing (no endpoint, no map entry, etcd's keys as before).
fn docker_run_during(s: &Scene, docker: &DockerHost, fault: &str, name: &str) {
    let before = etcd_keys(s);
    let start = Instant::now();
    let out = docker
        .docker_output(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "red",
            IMAGE,
            "sleep",
            "1000",
        ])
        .unwrap();
    let took = start.elapsed();
    // Docker adds its own hint line ("Run 'docker run --help' for more information").
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("'docker run --help'"))
        .collect();
    judged(
        &format!("{fault}: docker run"),
        out.status.success(),
        &message.join("\n"),
        took,
    );
    // Whatever happened, the container goes; then etcd and the maps must be as before.
    let _ = docker.docker_output(&["rm", "-f", name]);
    wait_for(Duration::from_secs(10), || etcd_keys(s) == before).unwrap_or_else(|_| {
        panic!(
            "{fault}: docker run left etcd keys behind: {:?}",
            etcd_keys(s).difference(&before).collect::<Vec<_>>()
        )
    });
}

#[test]
fn docker_run_during_a_leader_change_and_during_a_hung_member() {
    let mut s = scene("ecld");
    let docker = DockerHost::start(&s.d, 0, "ecldk").unwrap();
    docker
        .create_network("red", &["--subnet", "10.30.0.0/16"])
        .unwrap();
    // A first container claims h1's address slice of red (kept by the node, by design), so
    // that etcd's keys before and after each run below compare.
    docker.run("d0", "red").unwrap();
    docker.docker(&["rm", "-f", "d0"]).unwrap();
    let pings = s.all_pings();

    let leader = s.d.etcd.wait_leader().unwrap();
    s.d.etcd.kill(leader);
    docker_run_during(&s, &docker, "leader change", "d1");
    s.d.etcd.start_member(leader).unwrap();

    let follower = s.d.etcd.follower().unwrap();
    s.d.etcd.pause(follower).unwrap();
    docker_run_during(&s, &docker, "hung member", "d2");
    s.d.etcd.resume(follower).unwrap();
    s.d.etcd.wait_leader().unwrap();

    s.served_everywhere(1, "e2", "after docker run");
    s.doctor_clean("after docker run");
    pings.none_lost(&s, "docker run during faults");
    drop(docker);
}

#[test]
fn five_members_two_of_them_killed_leader_first() {
    let mut s = scene_on("ecl5", 5);
    let pings = s.all_pings();
    let leader = s.d.etcd.wait_leader().unwrap();
    let other = (leader + 2) % 5;
    s.d.etcd.kill(leader);
    s.d.etcd.kill(other);
    let (took, _) = s.served_everywhere(0, "f1", "five members, two killed");
    s.doctor_clean("five members, two killed");
    pings.none_lost(&s, "five members, two killed");
    assert_within("five members, two killed", took, AFTER_LEADER_KILL);
}
