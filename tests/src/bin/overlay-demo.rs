//! The main demo: a local etcd and three hosts in network namespaces, each running
//! `overlay-agent run`, two containers per host attached with the CLI; then all-pairs ping
//! across hosts, one iperf3 run, and host 1's status and maps as the CLI prints them.
//! Everything it made is removed when it ends, Ctrl-C included.
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use overlay_tests::deployment::{Deployment, ETCD_IP, ping};

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
    let result = demo();
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

fn demo() -> Result<()> {
    println!(
        "-- etcd at https://{ETCD_IP}:2379, TLS only, client certificates required (made just now with openssl; agents and CLI get theirs from OVERLAY_ETCD_CACERT/_CERT/_KEY)"
    );
    println!(
        "-- hosts h1, h2, h3 (VTEPs 10.0.0.1-3) on a veth underlay, each running `overlay-agent run --underlay eth1`"
    );
    let mut d = Deployment::with_tls("demo", &[true, true, true])?;
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
    drop(d);
    Ok(())
}
