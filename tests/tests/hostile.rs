//! A corpus of hostile packets (tests/scripts/hostile_corpus.py, scapy) sent onto the underlay
//! and from inside a container while legitimate traffic runs beside it: nothing crashes,
//! nothing is delivered where it does not belong, every drop is counted under its reason, and
//! the legitimate flow loses nothing.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use overlay_tests::{
    corpus::corpus,
    deployment::{Deployment, flood_result, ping, ping_flood},
    monitor::{Monitor, events, lost},
    netns::captured,
    topology::Underlay,
};

/// The MAC the agent gives an endpoint, as scapy wants it.
fn mac(ip: Ipv4Addr) -> String {
    overlay_agent::shared::net::Mac::from_ip(ip).to_string()
}

fn counters(d: &Deployment, host: usize) -> BTreeMap<&'static str, u64> {
    d.hosts[host].counters().unwrap()
}

#[test]
fn hostile_packets_are_dropped_and_counted_while_legitimate_traffic_loses_nothing() {
    hostile("hostile", Underlay::Veth);
}

/// The same on an underlay that behaves like a wire, where the receiving veth runs GRO.
#[test]
fn hostile_packets_on_a_wire_are_dropped_and_counted_while_legitimate_traffic_loses_nothing() {
    hostile("hostilew", Underlay::Wire { mtu: 1500 });
}

fn hostile(label: &str, underlay: Underlay) {
    let mut d = Deployment::on(label, &[true, true], underlay).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    d.create_network("red", "10.20.0.0/16", 43).unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    let r2 = d.add_container(1, "r2", "red", None).unwrap();
    assert!(ping(d.container(a1.0), a2.1));
    let mac_str = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let underlay_args = serde_json::json!({
        "other_vni_mac": mac(r2.1),
        // The attacker needs no interface of its own: it writes frames straight onto the
        // wire-side end of h2's underlay, from any address it likes.
        "attacker_mac": "02:00:00:00:00:66",
        "attacker_ip": "10.0.0.66",
        "host_mac": mac_str(d.hosts[1].ns.mac("eth1").unwrap()),
        "host_ip": "10.0.0.2",
        "legit_vtep": "10.0.0.1",
        "sender_mac": mac(a1.1), "sender_ip": a1.1.to_string(),
        "victim_mac": mac(a2.1), "victim_ip": a2.1.to_string(),
    });
    let container_args = serde_json::json!({
        "my_mac": mac(a1.1), "my_ip": a1.1.to_string(),
        "peer_mac": mac(a2.1), "peer_ip": a2.1.to_string(),
        "other_vni_mac": mac(r2.1),
    });

    // IPv6 is left out: the hosts' own bridges announce themselves (DAD, MLD) locally.
    let red = d.container(r2.0).capture("not ip6 and not igmp").unwrap();
    // The corpus's broadcast (UDP to port 9) reaches every member of the network, by design.
    let blue = d
        .container(a2.0)
        .capture(&format!(
            "not ip6 and not igmp and not (icmp and src host {0}) and not (udp port 9 and src host {0})",
            a1.1
        ))
        .unwrap();
    // Every drop on h2 as an event (a burst no corpus reaches); on h1 only VNI 43's, of which
    // the container corpus (VNI 42) has none.
    let h2_monitor = Monitor::start(&d, 1, &["--burst", "1000000"]).unwrap();
    let h1_monitor = Monitor::start(&d, 0, &["--vni", "43"]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let flood = ping_flood(d.container(a1.0), a2.1, 500);
    let (h1_before, h2_before) = (counters(&d, 0), counters(&d, 1));
    // Straight into the wire-side end of h2's underlay (the bridge would forward runts too,
    // but only after learning; this way every frame surely reaches h2).
    let from_underlay = corpus(&d.wire, "underlay", "h2", underlay_args.clone());
    let from_container = corpus(d.container(a1.0), "container", "eth0", container_args);
    let (sent, received) = flood_result(flood);
    std::thread::sleep(Duration::from_millis(300));
    let (h1_after, h2_after) = (counters(&d, 0), counters(&d, 1));
    let (red, blue) = (captured(red), captured(blue));
    let (h2_events, h1_events) = (h2_monitor.stop().unwrap(), h1_monitor.stop().unwrap());

    eprintln!("underlay corpus: {from_underlay:?}\ncontainer corpus: {from_container:?}");
    // The counters that moved, and by how much.
    let moved = |a: &BTreeMap<&'static str, u64>, b: &BTreeMap<&'static str, u64>| {
        a.iter()
            .map(|(k, v)| (*k, v - b[k]))
            .filter(|(_, v)| *v > 0)
            .collect::<BTreeMap<_, _>>()
    };
    eprintln!(
        "h2 moved: {:?}\nh1 moved: {:?}",
        moved(&h2_after, &h2_before),
        moved(&h1_after, &h1_before)
    );
    let logs = |h: usize| {
        d.hosts[h]
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains(" - vni"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        sent,
        received,
        "legitimate traffic lost {} packets\nh1 moved {:?}\nh2 moved {:?}\nh1 logged:\n{}\nh2 logged:\n{}",
        sent - received,
        moved(&h1_after, &h1_before),
        moved(&h2_after, &h2_before),
        logs(0),
        logs(1)
    );
    for (host, sent, before, after) in [
        (
            "h2 (underlay corpus)",
            &from_underlay,
            &h2_before,
            &h2_after,
        ),
        (
            "h1 (container corpus)",
            &from_container,
            &h1_before,
            &h1_after,
        ),
    ] {
        for (reason, n) in sent {
            let moved = after[reason.as_str()] - before[reason.as_str()];
            if reason.starts_with("drop_") {
                // Nothing else sends such frames: every drop is the corpus's, each counted once.
                assert_eq!(moved, *n, "{host}: {reason} moved by {moved}, {n} sent");
            } else {
                assert!(moved >= *n, "{host}: {reason} moved by {moved}, {n} sent");
            }
        }
    }
    monitored(&h2_events, &from_underlay, &underlay_args);
    assert!(
        events(&h1_events).is_empty(),
        "monitor --vni 43 on h1 showed another VNI's drops: {h1_events:?}"
    );
    assert!(red.trim().is_empty(), "the red container received: {red}");
    assert!(
        blue.trim().is_empty(),
        "the blue container received: {blue}"
    );
    // Nothing crashed: both agents serve, the overlay works both ways.
    for h in 0..2 {
        let status: serde_json::Value =
            serde_json::from_str(&d.cli(h, &["status", "--json"]).unwrap()).unwrap();
        assert_eq!(status["agent"]["running"], true, "{status}");
    }
    assert!(ping(d.container(a2.0), a1.1));
}

/// `monitor --type drop --json` on the host the underlay corpus hit: one event per drop the
/// corpus caused, none lost, each with the fields its reason must show.
fn monitored(lines: &[serde_json::Value], sent: &BTreeMap<String, u64>, a: &serde_json::Value) {
    assert_eq!(lost(lines), (0, 0), "events were lost: {lines:?}");
    let events = events(lines);
    let mut by_reason = BTreeMap::<String, u64>::new();
    for e in &events {
        *by_reason
            .entry(e["reason"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let drops: BTreeMap<String, u64> = sent
        .iter()
        .filter(|(r, _)| r.starts_with("drop_"))
        .map(|(r, n)| (r.clone(), *n))
        .collect();
    assert_eq!(by_reason, drops, "events by reason, against the corpus");
    let (legit, attacker) = (a["legit_vtep"].as_str(), a["attacker_ip"].as_str());
    for e in &events {
        assert_eq!(e["type"], "drop", "{e}");
        let reason = e["reason"].as_str().unwrap();
        let vni = e["vni"].as_u64();
        let inner = &e["inner"];
        let outer = &e["outer"];
        assert!(e["len"].as_u64().unwrap() > 0, "{e}");
        if reason == "drop_kernel_vxlan" {
            // Decapsulated by the kernel already: the inner frame is all there is.
            assert_eq!(e["hook"], "gro-sink", "{e}");
            assert_eq!(inner["src_mac"], a["sender_mac"], "{e}");
            continue;
        }
        assert_eq!(e["hook"], "from-underlay", "{e}");
        assert_eq!(e["iface"], "eth1", "{e}");
        assert!(
            [legit, attacker].contains(&outer["src_vtep"].as_str()),
            "{e}"
        );
        assert_eq!(outer["dst_vtep"], a["host_ip"], "{e}");
        if reason == "drop_too_short" {
            assert_eq!(e["truncated"], true, "{e}");
            continue;
        }
        assert_eq!(outer["dst_port"], 4789, "{e}");
        assert_eq!(inner["src_mac"], a["sender_mac"], "{e}");
        assert_eq!(inner["src_ip"], a["sender_ip"], "{e}");
        assert_eq!(inner["proto"], "icmp", "{e}");
        match reason {
            "drop_unknown_vni" => assert!([Some(999), Some(0xFF_FFFF)].contains(&vni), "{e}"),
            "drop_unknown_vtep" => assert!(
                (vni == Some(42) && outer["src_vtep"] == a["attacker_ip"])
                    || (vni == Some(43) && outer["src_vtep"] == a["legit_vtep"]),
                "{e}"
            ),
            "drop_no_endpoint" => {
                assert_eq!(vni, Some(42), "{e}");
                assert!(
                    [a["other_vni_mac"].as_str(), Some("ff:ff:ff:ff:ff:ff")]
                        .contains(&inner["dst_mac"].as_str()),
                    "{e}"
                );
            }
            "drop_bad_vxlan" => assert_eq!(vni, Some(42), "{e}"),
            other => panic!("unexpected reason {other}: {e}"),
        }
    }
}
