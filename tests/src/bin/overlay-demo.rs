//! The main demo: a local etcd and three hosts in network namespaces, each running
//! `overlay-agent run`, two containers per host attached with the CLI; then all-pairs ping
//! across hosts, one iperf3 run, and host 1's status and maps as the CLI prints them.
//! With `--etcd-members 3` (or 5) etcd is a cluster of that many members instead, and at the
//! end its leader is SIGKILLed while containers ping across hosts: the pings go on, a new
//! endpoint is served on every host, and `doctor` is clean on every node.
//! Everything it made is removed when it ends, Ctrl-C included.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use overlay_tests::deployment::{Deployment, ETCD_IP, flood_result, ping, wait_for};

#[derive(Parser)]
#[command(
    name = "overlay-demo",
    about = "etcd and three hosts with agents, in namespaces"
)]
struct Args {
    /// etcd members: 1 (TLS, client certificates) or a plaintext cluster of 3 or 5, whose
    /// leader is killed at the end.
    #[arg(long, default_value_t = 1)]
    etcd_members: usize,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stops between steps once Ctrl-C was pressed, so the deployment's Drop cleans up.
fn checkpoint() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let args = Args::parse();
    let result = demo(args.etcd_members);
    // The deployment is gone by now (dropped inside demo()), whatever happened.
    match result {
        Ok(()) => {
            println!("-- done; agents, etcd, hosts, containers and pinned maps removed");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("overlay-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the CLI on host `h` and shows it as a user would see it.
fn cli(d: &Deployment, h: usize, args: &[&str]) -> Result<String> {
    checkpoint()?;
    println!("h{}$ overlay-agent {}", h + 1, args.join(" "));
    let out = d.cli(h, args)?;
    for line in out.lines() {
        println!("    {line}");
    }
    Ok(out)
}

fn demo(members: usize) -> Result<()> {
    let mut d = match members {
        1 => {
            println!(
                "-- etcd at https://{ETCD_IP}:2379, TLS only, client certificates required (made just now with openssl; agents and CLI get theirs from OVERLAY_ETCD_CACERT/_CERT/_KEY)"
            );
            print_hosts();
            Deployment::with_tls("demo", &[true, true, true])?
        }
        3 | 5 => {
            print_hosts();
            let d = Deployment::with_etcd_members("demo", &[true, true, true], members)?;
            println!(
                "-- etcd: a cluster of {members} members (m1.. at 10.0.0.241..); agents and CLI get them all: OVERLAY_ETCD={}",
                d.etcd.url
            );
            d
        }
        n => bail!("--etcd-members {n}: 1, 3 or 5"),
    };
    cli(
        &d,
        0,
        &[
            "network",
            "create",
            "blue",
            "--subnet",
            "10.10.0.0/16",
            "--vni",
            "42",
        ],
    )?;

    let mut containers = Vec::new();
    for h in 0..3 {
        for n in 1..=2 {
            checkpoint()?;
            let name = format!("c{}{n}", h + 1);
            println!(
                "h{}$ overlay-agent endpoint add {name} --network blue --netns <{name}'s namespace>",
                h + 1
            );
            let (index, ip) = d.add_container(h, &name, "blue", None)?;
            println!("    {name}: {ip}");
            containers.push((name, index, ip));
        }
    }
    cli(&d, 0, &["endpoint", "ls"])?;

    println!(
        "-- all-pairs ping ({} containers, 3 hosts)",
        containers.len()
    );
    let mut failed = 0;
    for (from, from_ns, from_ip) in &containers {
        for (to, _, to_ip) in containers.iter().filter(|c| c.2 != *from_ip) {
            checkpoint()?;
            let out = d
                .container(*from_ns)
                .output(&format!("ping -c 1 -W 2 {to_ip}"))?;
            let ok = out.status.success();
            failed += usize::from(!ok);
            let rtt = String::from_utf8_lossy(&out.stdout)
                .split("time=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "-".into());
            println!(
                "   {from:>4} {from_ip:<10} -> {to:>4} {to_ip:<10} {} {rtt} ms",
                if ok { "ok  " } else { "FAIL" }
            );
        }
    }

    let (c1, c3) = (&containers[0], &containers[4]);
    println!(
        "-- iperf3 TCP {} ({}) -> {} ({}), 3 s",
        c1.0, c1.2, c3.0, c3.2
    );
    checkpoint()?;
    d.container(c3.1).run("iperf3 -s -D -1")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d
        .container(c1.1)
        .output(&format!("iperf3 -c {} -t 3", c3.2))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
    {
        println!("   {}", line.trim());
    }

    println!("-- h1's view");
    cli(&d, 0, &["status"])?;
    for table in ["fdb", "arp", "endpoints", "vteps", "stats"] {
        cli(&d, 0, &["maps", table])?;
    }
    if failed > 0 {
        bail!("{failed} pings failed");
    }
    if !ping(d.container(c1.1), c3.2) {
        bail!("the overlay stopped working during the demo");
    }
    if members > 1 {
        kill_the_leader(&mut d, c1.1, c3.2)?;
    }
    drop(d);
    Ok(())
}

fn print_hosts() {
    println!(
        "-- hosts h1, h2, h3 (VTEPs 10.0.0.1-3) on a veth underlay, each running `overlay-agent run --underlay eth1`"
    );
}

/// The etcd leader SIGKILLed while container `from` pings `to` at 50 pps: the pings go on, a
/// new endpoint is served on every host, `doctor` is clean on every node.
fn kill_the_leader(d: &mut Deployment, from: usize, to: Ipv4Addr) -> Result<()> {
    checkpoint()?;
    let leader = d.etcd.wait_leader()?;
    println!(
        "-- c11 pings {to} at 50 pps; the etcd leader, {}, is SIGKILLed",
        d.etcd.member(leader).name
    );
    let pings = d
        .container(from)
        .command("ping")
        .args(["-q", "-i", "0.02", "-W", "1", &to.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_secs(1));
    d.etcd.kill(leader);
    let start = Instant::now();
    println!("h2$ overlay-agent endpoint add c23 --network blue --netns <c23's namespace>");
    let (_, ip) = d.add_container(1, "c23", "blue", None)?;
    println!("    c23: {ip}");
    wait_for(Duration::from_secs(30), || {
        d.hosts.iter().all(|h| {
            h.maps()
                .is_ok_and(|m| m.arp.contains_key(&(42, ip.octets())))
        })
    })
    .context("c23 not served on every host")?;
    println!(
        "-- c23 served on every host {:.1} s after the kill; new leader {}",
        start.elapsed().as_secs_f64(),
        d.etcd
            .wait_leader()
            .map(|l| d.etcd.member(l).name.clone())?
    );
    for h in 0..3 {
        cli(d, h, &["doctor"])?;
    }
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(pings.id() as i32, libc::SIGINT) };
    let (sent, received) = flood_result(pings);
    println!("-- pings during the kill: {received} of {sent} answered");
    // The one in flight when ping was stopped may go unanswered.
    if sent.saturating_sub(received) > 1 {
        bail!("{} pings lost while the leader was killed", sent - received);
    }
    println!(
        "-- {} started again: it rejoins with its data",
        d.etcd.member(leader).name
    );
    d.etcd.start_member(leader)?;
    Ok(())
}
