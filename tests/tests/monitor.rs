//! `overlay-agent monitor` on two hosts: a flood of drops while it listens (nothing forwarded
//! is lost, every drop is shown or counted as lost), trace events for one endpoint, and the
//! ways a monitor ends: a reader that goes away, a second monitor, bad arguments.
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use overlay_agent::dataplane::monitor::MonitorMaps;
use overlay_tests::{
    corpus::corpus,
    deployment::{Deployment, flood_result, ping, ping_flood, wait_for},
    monitor::{Monitor, events, lost},
    topology::Underlay,
};

fn mac(ip: std::net::Ipv4Addr) -> String {
    overlay_agent::shared::net::Mac::from_ip(ip).to_string()
}

#[test]
fn a_drop_flood_while_the_monitor_listens_loses_no_forwarded_packet_and_every_drop_is_accounted_for()
 {
    let mut d = Deployment::on("monflood", &[true, true], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    // Both nodes serve both first: a ping before that loses its ARP request.
    d.wait_arp_everywhere(42, &[a1.1, a2.1], true).unwrap();
    assert!(ping(d.container(a1.0), a2.1));
    // One event per CPU per millisecond: a raw-socket flood is far above that.
    let monitor = Monitor::start(&d, 1, &["--burst", "1"]).unwrap();
    let before = d.hosts[1].counters().unwrap()["drop_unknown_vni"];
    let legit = ping_flood(d.container(a1.0), a2.1, 1000);
    let args = serde_json::json!({
        "count": 50_000,
        "attacker_mac": "02:00:00:00:00:66",
        "host_mac": d.hosts[1].ns.mac("eth1").unwrap().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        "host_ip": "10.0.0.2",
        "legit_vtep": "10.0.0.1",
        "sender_mac": mac(a1.1), "sender_ip": a1.1.to_string(),
        "victim_mac": mac(a2.1), "victim_ip": a2.1.to_string(),
    });
    let sent = corpus(&d.wire, "flood", "h2", args)["drop_unknown_vni"];
    let (pings, answered) = flood_result(legit);
    // The monitor reports its losses once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = monitor.stop().unwrap();
    let dropped = d.hosts[1].counters().unwrap()["drop_unknown_vni"] - before;
    let shown = events(&lines)
        .iter()
        .filter(|e| e["reason"] == "drop_unknown_vni")
        .count() as u64;
    let (rate_limited, ring_full) = lost(&lines);
    eprintln!(
        "flood: {sent} sent, {dropped} dropped; monitor showed {shown}, lost {rate_limited} to the rate limit and {ring_full} to a full ring; pings {answered}/{pings}"
    );
    assert_eq!(pings, answered, "the flood cost forwarded packets");
    assert_eq!(dropped, sent, "every flood frame is a counted drop");
    assert!(rate_limited > 0, "a flood over the burst must be limited");
    assert_eq!(
        shown + rate_limited + ring_full,
        dropped,
        "every drop is shown or counted as lost"
    );
    assert!(shown > 0, "the monitor showed nothing of the flood");
}

#[test]
fn trace_events_show_one_endpoints_frames_encapsulated_on_one_host_and_decapsulated_on_the_other() {
    let mut d = Deployment::on("montrace", &[true, true], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let b1 = d.add_container(0, "b1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    assert!(ping(d.container(a1.0), a2.1));
    let h1 = Monitor::start(&d, 0, &["--type", "trace", "--endpoint", "blue/a2"]).unwrap();
    let h2 = Monitor::start(&d, 1, &["--type", "trace", "--reason", "decap"]).unwrap();
    // b1 -> a1 stays on h1 and is not a2's: filtered out.
    assert!(ping(d.container(b1.0), a1.1));
    assert!(ping(d.container(a1.0), a2.1));
    std::thread::sleep(Duration::from_millis(300));
    let (h1, h2) = (h1.stop().unwrap(), h2.stop().unwrap());
    let encaps: Vec<_> = events(&h1)
        .into_iter()
        .filter(|e| e["reason"] == "encap")
        .collect();
    assert!(!encaps.is_empty(), "no encap traced on h1: {h1:?}");
    for e in &encaps {
        assert_eq!(e["type"], "trace", "{e}");
        assert_eq!(e["vni"], 42, "{e}");
        assert_eq!(e["outer"]["src_vtep"], "10.0.0.1", "{e}");
        assert_eq!(e["outer"]["dst_vtep"], "10.0.0.2", "{e}");
        assert_eq!(e["inner"]["dst_ip"], a2.1.to_string(), "{e}");
        assert_eq!(e["inner"]["proto"], "icmp", "{e}");
    }
    for e in events(&h1) {
        let inner = &e["inner"];
        let (a2_ip, a2_mac) = (a2.1.to_string(), mac(a2.1));
        // Its address, or its MAC (its own IPv6 multicast, from :: or its link-local one).
        assert!(
            inner["src_ip"] == a2_ip.as_str()
                || inner["dst_ip"] == a2_ip.as_str()
                || inner["src_mac"] == a2_mac.as_str()
                || inner["dst_mac"] == a2_mac.as_str(),
            "--endpoint blue/a2 showed another's frame: {e}"
        );
    }
    let decaps = events(&h2);
    assert!(!decaps.is_empty(), "no decap traced on h2");
    for e in decaps {
        assert_eq!(e["reason"], "decap", "--reason decap showed {e}");
        assert_eq!(e["hook"], "from-underlay", "{e}");
        assert_eq!(e["vni"], 42, "{e}");
        assert_eq!(e["outer"]["src_vtep"], "10.0.0.1", "{e}");
        assert_eq!(e["inner"]["dst_mac"], mac(a2.1), "{e}");
    }
}

#[test]
fn a_monitor_ends_cleanly_when_its_reader_goes_away_and_refuses_what_it_cannot_do() {
    let mut d = Deployment::on("monend", &[true, true], Underlay::Veth).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    assert!(ping(d.container(a1.0), a2.1));
    let listening = || {
        MonitorMaps::open(&d.hosts[0].pins())
            .unwrap()
            .listening()
            .unwrap()
    };
    assert_eq!(listening().traces_until_ns, 0);

    // A reader that takes two events and hangs up, while traffic goes on.
    let mut child = d
        .base_command(0)
        .args(["monitor", "--type", "trace", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let legit = ping_flood(d.container(a1.0), a2.1, 300);
    {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let e: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(e["type"], "trace", "{e}");
        }
        assert_ne!(listening().traces_until_ns, 0, "the programs were not told");
    }
    wait_for(Duration::from_secs(5), || {
        child.try_wait().unwrap().is_some()
    })
    .expect("the monitor kept running after its reader went away");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        listening(),
        Default::default(),
        "the programs still report to nobody"
    );
    let (sent, received) = flood_result(legit);
    assert_eq!(sent, received);

    // One reader per node: a second monitor is refused while one runs, welcome after.
    let first = Monitor::start(&d, 0, &[]).unwrap();
    let second = d.cli_output(0, &["monitor"]).unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("another monitor"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    first.stop().unwrap();
    Monitor::start(&d, 0, &[]).unwrap().stop().unwrap();

    // Bad arguments: one clear line, and nothing told to the programs.
    for (args, says) in [
        (vec!["monitor", "--reason", "bogus"], "unknown reason bogus"),
        (vec!["monitor", "--reason", "encap"], "encap is a trace"),
        (
            vec!["monitor", "--type", "trace", "--reason", "drop_no_route"],
            "drop_no_route is a drop",
        ),
        (
            vec!["monitor", "--endpoint", "blue/nobody"],
            "no endpoint blue/nobody",
        ),
    ] {
        let out = d.cli_output(0, &args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(listening(), Default::default());
}
