//! `run --metrics`: a real Prometheus scraping two agents reads back exactly what their maps
//! count and hold; /healthz and /readyz as docs/operations.md defines them, etcd down included;
//! bad paths, slow clients and concurrent scrapes never hold up the agent.
use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use overlay_agent::dataplane::maps::pinned_capacity;
use overlay_common::{Counter, names};
use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    prometheus::{Prometheus, http_get, http_get_accepting, sample},
};

type Container = (usize, Ipv4Addr);

/// What Prometheus puts in its Accept header; others get the text format 0.0.4.
const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// The address host `i`'s agent serves its metrics on (its underlay address).
fn metrics_addr(d: &Deployment, i: usize) -> String {
    let [a, b, c, e] = d.hosts[i].vtep;
    format!("{a}.{b}.{c}.{e}:9100")
}

/// Two hosts whose agents serve metrics, network blue, and a container on each that reaches
/// the other.
fn metrics_pair(label: &str) -> (Deployment, Container, Container) {
    let mut d = Deployment::new(label, &[true, true]).unwrap();
    for i in 0..2 {
        d.hosts[i].run_args = vec!["--metrics".into(), metrics_addr(&d, i)];
        d.kill_agent(i);
        d.restart_agent(i).unwrap();
    }
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    // The other node follows within milliseconds; a ping before that loses its ARP request.
    d.wait_arp_everywhere(42, &[c1.1, c2.1], true).unwrap();
    assert!(ping(d.container(c1.0), c2.1), "{}", d.hosts[0].log());
    (d, c1, c2)
}

/// GET `path` from host `i`'s agent, from the underlay (etcd's namespace).
fn get(d: &Deployment, i: usize, path: &str) -> (u16, String) {
    http_get(&d.wire, &metrics_addr(d, i), path)
        .unwrap_or_else(|e| panic!("GET {path} from h{}: {e:#}\n{}", i + 1, d.hosts[i].log()))
}

#[test]
fn prometheus_reads_back_what_the_maps_count_and_hold() {
    let (d, c1, c2) = metrics_pair("mp");
    let targets: Vec<String> = (0..2).map(|i| metrics_addr(&d, i)).collect();
    let prom = Prometheus::start(&d.wire, d.dir(), &targets).unwrap();
    for _ in 0..5 {
        assert!(ping(d.container(c1.0), c2.1));
        assert!(ping(d.container(c2.0), c1.1));
    }
    let q = |expr: &str| prom.value(&d.wire, expr);

    for (i, h) in d.hosts.iter().enumerate() {
        let inst = &targets[i];
        // A quiet moment: the containers send nothing more, so every outcome but
        // underlay_pass stands still, and Prometheus' latest scrape must show exactly the
        // kernel's sums. underlay_pass counts the scrapes and etcd's traffic themselves.
        let mut last = String::new();
        wait_for(Duration::from_secs(15), || {
            let counters = h.counters().unwrap();
            let mut differ = Vec::new();
            for c in Counter::ALL.iter().filter(|c| c.is_outcome()) {
                if *c == Counter::UnderlayPass {
                    continue;
                }
                let got = q(&format!(
                    "overlay_packets_total{{instance=\"{inst}\",outcome=\"{}\"}}",
                    c.name()
                ));
                if got != Some(counters[c.name()] as f64) {
                    differ.push(format!("{}: {got:?} vs {}", c.name(), counters[c.name()]));
                }
            }
            let segments = q(&format!(
                "overlay_decap_segments_total{{instance=\"{inst}\"}}"
            ));
            if segments != Some(counters["decap_segments"] as f64) {
                differ.push(format!("decap_segments: {segments:?}"));
            }
            last = differ.join(", ");
            differ.is_empty()
        })
        .unwrap_or_else(|e| panic!("h{}: {e}: {last}\n{}", i + 1, prom.log()));
        let counters = h.counters().unwrap();
        assert!(
            counters["encap"] >= 5 && counters["decap"] >= 5,
            "{counters:?}"
        );
        let pass = q(&format!(
            "overlay_packets_total{{instance=\"{inst}\",outcome=\"underlay_pass\"}}"
        ))
        .unwrap();
        assert!(pass > 0.0 && pass <= counters["underlay_pass"] as f64);
        // One series per outcome, none for the measure that is not one.
        let outcomes = prom
            .query(
                &d.wire,
                &format!("overlay_packets_total{{instance=\"{inst}\"}}"),
            )
            .unwrap();
        assert_eq!(
            outcomes.len(),
            Counter::ALL.iter().filter(|c| c.is_outcome()).count()
        );

        // Map entries as the kernel holds them, and capacities as the maps were made.
        let m = h.maps().unwrap();
        for (map, n) in [
            (names::FDB, m.fdb.len()),
            (names::ARP, m.arp.len()),
            (names::ENDPOINTS, m.endpoints.len()),
            (names::PORTS, m.ports.len()),
            (names::VTEPS, m.vteps.len()),
            (names::NETWORKS, m.networks.len()),
        ] {
            let entries = format!("overlay_map_entries{{instance=\"{inst}\",map=\"{map}\"}}");
            assert_eq!(q(&entries), Some(n as f64), "{entries}");
            let cap = format!("overlay_map_capacity_entries{{instance=\"{inst}\",map=\"{map}\"}}");
            let want = pinned_capacity(&h.pins(), map).unwrap();
            assert_eq!(q(&cap), Some(f64::from(want)), "{cap}");
            let failed =
                format!("overlay_map_write_failures_total{{instance=\"{inst}\",map=\"{map}\"}}");
            assert_eq!(q(&failed), Some(0.0), "{failed}");
        }
        assert_eq!(m.fdb.len(), 1, "one remote container");
        assert_eq!(
            pinned_capacity(&h.pins(), names::FDB),
            Some(overlay_common::DEFAULT_MAX_ENTRIES)
        );

        let one = |expr: String| assert_eq!(q(&expr), Some(1.0), "{expr}");
        one(format!("overlay_etcd_connected{{instance=\"{inst}\"}}"));
        one(format!("overlay_lease_alive{{instance=\"{inst}\"}}"));
        one(format!("overlay_ready{{instance=\"{inst}\"}}"));
        one(format!(
            "overlay_programs_attached{{instance=\"{inst}\",program=\"from_underlay\"}}"
        ));
        one(format!(
            "overlay_programs_attached{{instance=\"{inst}\",program=\"from_container\"}}"
        ));
        let gro = h
            .pins()
            .linked()
            .unwrap()
            .iter()
            .filter(|l| overlay_agent::shared::ifnames::is_gro_device(l))
            .count();
        assert_eq!(
            q(&format!(
                "overlay_programs_attached{{instance=\"{inst}\",program=\"gro_sink\"}}"
            )),
            Some(gro as f64)
        );
        let revision = h.status().unwrap()["revision"].as_i64().unwrap();
        assert!(revision > 0);
        assert_eq!(
            q(&format!(
                "overlay_etcd_applied_revision{{instance=\"{inst}\"}}"
            )),
            Some(revision as f64)
        );
        let full = q(&format!(
            "overlay_reconcile_duration_seconds_count{{instance=\"{inst}\",kind=\"full\"}}"
        ))
        .unwrap();
        assert!(full >= 1.0, "{full}");
    }
    // h2's container reached h1 through the fast path (only another node's endpoint changed).
    let fast = q(&format!(
        "overlay_reconcile_duration_seconds_count{{instance=\"{}\",kind=\"fast\"}}",
        targets[0]
    ))
    .unwrap();
    assert!(fast >= 1.0, "{fast}");
}

#[test]
fn readyz_is_ready_after_a_reconcile_and_while_etcd_is_down() {
    let (mut d, c1, c2) = metrics_pair("mr");
    for i in 0..2 {
        assert_eq!(get(&d, i, "/healthz"), (200, "ok\n".into()));
        let (code, body) = get(&d, i, "/readyz");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("etcd connected"), "{body}");
    }

    // etcd gone: the dataplane serves the last state, so still ready, and says why.
    d.etcd.stop();
    wait_for(Duration::from_secs(10), || {
        sample(&get(&d, 0, "/metrics").1, "overlay_etcd_connected") == Some(0.0)
    })
    .unwrap();
    let (code, body) = get(&d, 0, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("last state"), "{body}");
    assert!(ping(d.container(c1.0), c2.1));
    // Nothing renews the lease: it runs out after its TTL (3 s).
    wait_for(Duration::from_secs(6), || {
        sample(&get(&d, 0, "/metrics").1, "overlay_lease_alive") == Some(0.0)
    })
    .unwrap();

    // An agent started while etcd is down has not reconciled anything yet: not ready, though
    // alive, and the maps it adopted keep forwarding.
    d.kill_agent(1);
    d.start_agent(1).unwrap();
    wait_for(Duration::from_secs(10), || {
        http_get(&d.wire, &metrics_addr(&d, 1), "/healthz").is_ok_and(|(c, _)| c == 200)
    })
    .unwrap();
    let (code, body) = get(&d, 1, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body,
        "not ready: the maps have not been reconciled against etcd yet\n"
    );
    let metrics = get(&d, 1, "/metrics").1;
    assert_eq!(sample(&metrics, "overlay_ready"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "overlay_etcd_applied_revision"), Some(0.0));
    assert!(ping(d.container(c2.0), c1.1));

    d.etcd.restart().unwrap();
    for i in 0..2 {
        wait_for(Duration::from_secs(20), || {
            let (code, body) = get(&d, i, "/readyz");
            code == 200 && body.contains("etcd connected")
        })
        .unwrap_or_else(|e| panic!("h{}: {e}\n{}", i + 1, d.hosts[i].log()));
        wait_for(Duration::from_secs(5), || {
            sample(&get(&d, i, "/metrics").1, "overlay_lease_alive") == Some(1.0)
        })
        .unwrap();
    }
    assert!(ping(d.container(c1.0), c2.1));
}

#[test]
fn bad_paths_slow_clients_and_concurrent_scrapes_never_hold_up_the_agent() {
    let (mut d, _c1, c2) = metrics_pair("mb");
    for path in ["/", "/nope", "/metrics/x", "/readyz/../etc"] {
        assert_eq!(get(&d, 0, path).0, 404, "{path}");
    }
    // One client that connects and sends nothing, one that stops mid-request: both held open
    // for the whole test.
    let addr: std::net::SocketAddr = metrics_addr(&d, 0).parse().unwrap();
    let slow: Vec<std::net::TcpStream> = d.wire.enter(|| {
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let mut partial = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut partial, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
        vec![silent, partial]
    });

    // 20 clients scraping back to back for as long as a container is being added.
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes: Vec<_> = (0..20)
        .map(|_| {
            let (wire, addr, stop) = (d.wire.name.clone(), addr.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    // OpenMetrics, as Prometheus asks: its `# EOF` shows the scrape is whole.
                    let (code, body) =
                        http_get_accepting(&wire, &addr, "/metrics", Some(OPENMETRICS))?;
                    if code != 200
                        || sample(&body, "overlay_packets_total{outcome=\"encap\"}").is_none()
                        || !body.ends_with("# EOF\n")
                    {
                        anyhow::bail!("HTTP {code}: {body}");
                    }
                    answered += 1;
                }
                Ok::<_, anyhow::Error>(answered)
            })
        })
        .collect();
    // The agent keeps reconciling meanwhile: by the time `endpoint add` returns (it waits up to
    // 3 s for the node to serve the endpoint, and only says so if not), h1's maps have it.
    let c3 = d.add_container(0, "c3", "blue", None).unwrap();
    let mac = overlay_agent::shared::net::Mac::from_ip(c3.1).0;
    assert!(
        d.hosts[0]
            .maps()
            .unwrap()
            .endpoints
            .contains_key(&(42, mac)),
        "{}",
        d.hosts[0].log()
    );
    stop.store(true, Ordering::Relaxed);
    for s in scrapes {
        let answered = s.join().unwrap().unwrap();
        assert!(answered >= 1);
    }
    let after = get(&d, 0, "/metrics").1;
    assert_eq!(
        sample(&after, "overlay_map_entries{map=\"ENDPOINTS\"}"),
        Some(2.0),
        "{after}"
    );
    assert!(ping(d.container(c3.0), c2.1));
    drop(slow);
}

/// Host 1 alone, its agent serving metrics on every address ([::]:9100, the gateways'
/// included), network blue and a container on it; the container's address.
fn metrics_everywhere(label: &str) -> (Deployment, Container) {
    let mut d = Deployment::new(label, &[true]).unwrap();
    d.hosts[0].run_args = vec!["--metrics".into(), "[::]:9100".into()];
    d.kill_agent(0);
    d.restart_agent(0).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    (d, c1)
}

/// The agent's threads now (a scrape used to walk the maps on a thread of tokio's blocking
/// pool, which grows by one per walk running at once and keeps idle threads for 10 s).
fn threads(d: &Deployment) -> u32 {
    let pid = d.hosts[0].agent_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_container_is_refused_the_metrics_through_its_gateway_and_the_host_is_not() {
    let (d, c1) = metrics_everywhere("mg");
    let gateway = "10.10.0.1";
    // The agent makes the gateway within a second of the endpoint; the container reaches it.
    wait_for(Duration::from_secs(5), || {
        ping(d.container(c1.0), gateway.parse().unwrap())
    })
    .unwrap();
    let (code, body) = get(&d, 0, "/metrics");
    assert_eq!(code, 200, "the host's own scrape: {body}");
    // Through its gateway, to the gateway's address and to the host's underlay address: it
    // connects (the kernel answers the handshake), and the agent closes without a word.
    for addr in [format!("{gateway}:9100"), metrics_addr(&d, 0)] {
        for path in ["/metrics", "/healthz", "/readyz"] {
            let got = http_get(d.container(c1.0), &addr, path);
            let e = format!(
                "{:#}",
                got.as_ref().err().unwrap_or_else(|| panic!(
                    "GET {path} from the container to {addr} was answered: HTTP {:?}",
                    got.as_ref().map(|(code, _)| code)
                ))
            );
            assert!(
                !e.contains("connecting to"),
                "refused by routing, not by the agent: {e}"
            );
        }
    }
    // Still serving its host afterwards.
    assert_eq!(get(&d, 0, "/healthz"), (200, "ok\n".into()));
}

#[test]
fn fifty_scrapes_at_once_walk_the_maps_two_at_a_time() {
    let (d, _c1) = metrics_everywhere("mc");
    assert_eq!(get(&d, 0, "/metrics").0, 200);
    let before = threads(&d);
    let addr: std::net::SocketAddr = metrics_addr(&d, 0).parse().unwrap();
    // 50 connections opened first, then every request sent before any answer is read.
    let answers: Vec<(u16, String)> = d.wire.enter(|| {
        let mut conns: Vec<std::net::TcpStream> = (0..50)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for c in &mut conns {
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            std::io::Write::write_all(
                c,
                format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {OPENMETRICS}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
        }
        conns
            .into_iter()
            .map(|mut c| {
                let mut raw = String::new();
                std::io::Read::read_to_string(&mut c, &mut raw).unwrap();
                let code = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
                (code, raw)
            })
            .collect()
    });
    let after = threads(&d);
    // Each got an answer: the scrape, or 503 saying it is busy (none here, on a quiet node
    // whose walks take milliseconds, but the server may say so).
    for (code, raw) in &answers {
        match code {
            200 => assert!(raw.contains("overlay_packets_total") && raw.ends_with("# EOF\n")),
            503 => assert!(raw.contains("busy"), "{raw}"),
            _ => panic!("{raw}"),
        }
    }
    assert!(answers.iter().any(|(c, _)| *c == 200));
    // The walks ran on the agent's two walker threads: no thread was made for them (one for
    // anything else of the agent's meanwhile).
    assert!(
        after <= before + 1,
        "the agent went from {before} to {after} threads for 50 scrapes at once"
    );
}

/// Runs promtool with `args` in `dir`, feeding it `input`; what it said, if it failed or said
/// anything.
fn promtool(dir: &std::path::Path, args: &[&str], input: &str) -> Result<(), String> {
    use std::{io::Write as _, process::Stdio};
    let mut run = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus) is installed by cargo xtask setup");
    run.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "promtool {} ({}):\n{said}",
            args.join(" "),
            out.status
        )),
    }
}

/// What a Prometheus user's tools say of a real scrape and of the rules and dashboard we ship:
/// names, help, types and units as Prometheus' conventions want them (`promtool check
/// metrics`); the alerting rules valid and passing their own unit tests; and every metric the
/// rules and the dashboard query is one the agent exports, so a rename cannot leave them
/// watching nothing.
#[test]
fn promtool_passes_the_scrape_and_the_rules_and_they_query_what_exists() {
    let (d, _c1, _c2) = metrics_pair("pt");
    let mut body = String::new();
    // The etcd members' gauges appear with the first health probe.
    wait_for(Duration::from_secs(15), || {
        body = get(&d, 0, "/metrics").1;
        body.contains("overlay_etcd_member_up{")
    })
    .unwrap_or_else(|_| panic!("no etcd member gauges:\n{body}"));
    let lint = promtool(std::path::Path::new("."), &["check", "metrics"], &body);
    assert!(lint.is_ok(), "{}\n{body}", lint.unwrap_err());

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus");
    promtool(&rules, &["check", "rules", "overlay-rules.yml"], "").unwrap();
    promtool(&rules, &["test", "rules", "overlay-rules.test.yml"], "").unwrap();

    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for file in [
        rules.join("overlay-rules.yml"),
        deploy.join("grafana/overlay-dashboard.json"),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        let queried: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("overlay_"))
            .collect();
        let missing: Vec<_> = queried.iter().filter(|m| !exported.contains(*m)).collect();
        assert!(
            missing.is_empty(),
            "{} queries what no scrape has: {missing:?}",
            file.display()
        );
    }
}
