//! The control plane at scale: many endpoints in etcd, one agent converging on them, then a
//! steady stream of changes and the lag from each etcd write to the map update it causes.
use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use overlay_agent::{dataplane::Maps, shared::net::Mac, store::Store};
use overlay_common::{MacKey, vtep};

use crate::{bench::median, deployment::Deployment};

pub struct ScaleReport {
    pub endpoints: usize,
    pub converge: Duration,
    pub peak_rss_mb: f64,
    pub changes: usize,
    pub seconds: u32,
    pub samples: usize,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// Lag of a change that needs the full reconcile (a node's record), median and max.
    pub full_p50_ms: f64,
    pub full_max_ms: f64,
}

const VNI: u32 = 42;

/// A change being followed: the FDB key, the VTEP it must come to show, when etcd was written.
type Sample = (MacKey, overlay_common::VtepAddr, Instant);
const VTEPS: u32 = 100;
/// How many changes that need the full reconcile are timed after the churn.
const STRUCTURAL: usize = 5;

/// Endpoint `i`: a peer at 10.64.0.0 + i, behind one of VTEPS addresses 10.0.1.x.
fn endpoint(i: u32, vtep_shift: u32) -> (String, Ipv4Addr, Mac, Ipv4Addr) {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i + 1);
    let vtep = Ipv4Addr::new(10, 0, 1, ((i + vtep_shift) % VTEPS + 1) as u8);
    let mac = Mac::from_ip(ip);
    let value = format!(r#"{{"kind":"peer","mac":"{mac}","vtep":"{vtep}"}}"#);
    (value, ip, mac, vtep)
}

fn key(ip: Ipv4Addr) -> String {
    format!("/overlay/endpoints/scale/{ip}")
}

fn vm_hwm_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn run(endpoints: u32, seconds: u32, rate: u32) -> Result<ScaleReport> {
    let mut d = Deployment::new("scale", &[true])?;
    d.create_network("scale", "10.64.0.0/10", VNI)?;
    d.kill_agent(0);
    let url = d.etcd.url.clone();
    // The test process reaches etcd from inside the host's namespace, like the agent: the
    // runtime's threads are made there, and every block_on runs there.
    let host = &d.hosts[0].ns;
    let rt = host.enter(tokio::runtime::Runtime::new)?;
    let store = host.enter(|| {
        rt.block_on(Store::connect(&overlay_agent::store::Etcd::plain(
            std::slice::from_ref(&url),
            "/overlay",
        )))
    })?;
    let kvs: Vec<(String, String)> = (0..endpoints)
        .map(|i| {
            let (value, ip, ..) = endpoint(i, 0);
            (key(ip), value)
        })
        .collect();
    eprintln!("-- writing {endpoints} endpoints into etcd");
    let loaded_at = host.enter(|| rt.block_on(store.put_many_raw(&kvs)))?;

    // Room for every endpoint: the agent sizes its maps and rebuilds them at this size.
    let capacity = (endpoints + endpoints / 4).next_power_of_two().max(1024);
    d.hosts[0].run_args = vec!["--max-entries".into(), capacity.to_string()];
    eprintln!("-- starting the agent (--max-entries {capacity})");
    let start = Instant::now();
    d.restart_agent(0)?;
    let pid = d.hosts[0].agent_pid().context("agent pid")?;
    loop {
        let applied = d.hosts[0]
            .status()
            .and_then(|s| s["revision"].as_i64())
            .unwrap_or(0);
        if applied >= loaded_at && d.hosts[0].log().contains("programs switched over") {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the agent did not converge in 120 s:\n{}", d.hosts[0].log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let converge = start.elapsed();
    let maps = Maps::open(&d.hosts[0].pins())?;
    let fdb = maps.fdb_entries().count();
    if fdb != endpoints as usize {
        bail!("converged with {fdb} FDB entries for {endpoints} endpoints");
    }
    eprintln!("-- converged in {converge:.2?}; now {rate} changes/s for {seconds} s");

    // Changes: endpoint i moves to the next VTEP. One in ten is followed into the map.
    let pending: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (pending, lags, done) = (pending.clone(), lags.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                || !pending.lock().unwrap().is_empty()
            {
                let now = Instant::now();
                pending.lock().unwrap().retain(|(key, vtep, at)| {
                    let seen = maps
                        .fdb_entry(key.vni, key.mac)
                        .is_some_and(|e| e.vtep == *vtep);
                    if seen {
                        lags.lock()
                            .unwrap()
                            .push(now.duration_since(*at).as_secs_f64() * 1e3);
                    }
                    // Give up on one after 10 s (it is then counted as lost, below).
                    !seen && now.duration_since(*at) < Duration::from_secs(10)
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs(1) / rate;
    let begin = Instant::now();
    d.hosts[0].ns.enter(|| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for n in 0..total {
                let due = begin + interval * n as u32;
                tokio::time::sleep_until(due.into()).await;
                let i = (n as u32 * 7919) % endpoints;
                let (value, ip, mac, vtep) = endpoint(i, 1 + n as u32 / endpoints);
                let store = store.clone();
                let (pending, sample) = (pending.clone(), n % 10 == 0);
                tasks.push(tokio::spawn(async move {
                    let at = Instant::now();
                    store.put_raw(&key(ip), &value).await?;
                    if sample {
                        pending.lock().unwrap().push((
                            MacKey::new(VNI, mac.0),
                            vtep::from_v4(vtep.octets()),
                            at,
                        ));
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(())
        })
    })?;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    poller.join().expect("poller");
    let mut lags = lags.lock().unwrap().clone();
    let samples = total / 10;
    if lags.len() < samples {
        bail!(
            "{} of {samples} sampled changes never reached the map",
            samples - lags.len()
        );
    }
    lags.sort_by(|a, b| a.total_cmp(b));
    let p99 = lags[(lags.len() * 99 / 100).min(lags.len() - 1)];

    // A node that moves its VTEP, with an endpoint, in one transaction: one batch that only the
    // full reconcile can apply.
    eprintln!("-- {STRUCTURAL} changes that need the full reconcile");
    let mut full = Vec::new();
    let (_, ip, mac, _) = endpoint(0, 0);
    for k in 0..STRUCTURAL {
        let vtep = Ipv4Addr::new(10, 0, 2, k as u8 + 1);
        let kvs = [
            (
                "/overlay/nodes/scale-node".to_string(),
                format!(r#"{{"vtep":"{vtep}"}}"#),
            ),
            (
                key(ip),
                format!(
                    r#"{{"kind":"container","name":"c","mac":"{mac}","node":"scale-node","port":"{}"}}"#,
                    overlay_agent::shared::ifnames::port_name("scale", "c")
                ),
            ),
        ];
        let at = Instant::now();
        d.hosts[0]
            .ns
            .enter(|| rt.block_on(store.put_many_raw(&kvs)))?;
        let want = MacKey::new(VNI, mac.0);
        let maps = Maps::open(&d.hosts[0].pins())?;
        while maps
            .fdb_entry(want.vni, want.mac)
            .is_none_or(|e| e.vtep != vtep::from_v4(vtep.octets()))
        {
            if at.elapsed() > Duration::from_secs(10) {
                bail!("a node's change did not reach the maps in 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        full.push(at.elapsed().as_secs_f64() * 1e3);
    }
    full.sort_by(|a, b| a.total_cmp(b));
    Ok(ScaleReport {
        endpoints: endpoints as usize,
        converge,
        peak_rss_mb: vm_hwm_mb(pid),
        changes: total,
        seconds,
        samples: lags.len(),
        lag_p50_ms: median(&mut lags.clone()),
        lag_p99_ms: p99,
        lag_max_ms: *lags.last().unwrap(),
        full_p50_ms: median(&mut full.clone()),
        full_max_ms: *full.last().unwrap(),
    })
}
