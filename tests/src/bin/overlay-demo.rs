//! The two-host demo: hosts h1 and h2 in network namespaces joined by a veth underlay, two
//! containers on each, the overlay between them; all-pairs ping, one iperf3 run, and h1's maps
//! as the CLI prints them. Everything it made is removed when it ends, Ctrl-C included.
use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};
use overlay_tests::{
    fixture::TEST_PIN_ROOT,
    topology::{Cluster, VNI},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stops between steps once Ctrl-C was pressed, so the cluster's Drop cleans up.
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
    match demo() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    println!("-- hosts h1 (VTEP 10.0.0.1) and h2 (VTEP 10.0.0.2) on a veth underlay, VNI {VNI}");
    let cluster = Cluster::overlay(
        "demo",
        &[
            &[[10, 10, 1, 2], [10, 10, 1, 3]],
            &[[10, 10, 2, 2], [10, 10, 2, 3]],
        ],
    )?;
    checkpoint()?;

    let all: Vec<_> = cluster.hosts.iter().flat_map(|h| &h.containers).collect();
    println!("-- all-pairs ping ({} containers)", all.len());
    let mut failed = 0;
    for from in &all {
        for to in all.iter().filter(|to| to.ip != from.ip) {
            checkpoint()?;
            let out = from.ns.output(&format!("ping -c 1 -W 2 {}", to.ip_str()))?;
            let ok = out.status.success();
            failed += usize::from(!ok);
            let rtt = String::from_utf8_lossy(&out.stdout)
                .split("time=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "-".into());
            println!(
                "   {:>10} -> {:<10} {} {rtt} ms",
                from.ip_str(),
                to.ip_str(),
                if ok { "ok  " } else { "FAIL" }
            );
        }
    }

    let (c1, c2) = (
        &cluster.hosts[0].containers[0],
        &cluster.hosts[1].containers[0],
    );
    println!("-- iperf3 TCP {} -> {} (3 s)", c1.ip_str(), c2.ip_str());
    checkpoint()?;
    c2.ns.run("iperf3 -s -D -1")?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = c1.ns.output(&format!("iperf3 -c {} -t 3", c2.ip_str()))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
    {
        println!("   {}", line.trim());
    }

    let h1 = &cluster.hosts[0];
    let agent = std::env::current_exe()?.with_file_name("overlay-agent");
    for table in ["fdb", "arp", "endpoints", "vteps", "stats"] {
        println!("-- h1: overlay-agent maps {table}");
        let out = Command::new(&agent)
            .args([
                "--pin-root",
                TEST_PIN_ROOT,
                "--node",
                &h1.ns.name,
                "maps",
                table,
            ])
            .output()
            .with_context(|| format!("running {}", agent.display()))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    if failed > 0 {
        bail!("{failed} pings failed");
    }
    println!("-- done; removing hosts, containers and pinned maps");
    Ok(())
}
