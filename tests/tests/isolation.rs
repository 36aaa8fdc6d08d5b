//! Issue 25, "Isolation holds under attack": an etcd record is input from any node (one that
//! may be compromised), never a command. A record that names a port which is not its own, a
//! VTEP that cannot be one, or a well-known port of another protocol is logged with its key,
//! listed by `status`, and disturbs nothing that works; it leaves nothing behind when it goes.
//! The CLI refuses the same in one line, with nothing written.
use std::{net::Ipv4Addr, time::Duration};

use overlay_agent::shared::ifnames::port_name;
use overlay_tests::deployment::{Deployment, ping, wait_for};

/// Two hosts on VNI 71 (10.71.0.0/16), a container on each; both ways answered.
fn pair(label: &str) -> (Deployment, (usize, Ipv4Addr), (usize, Ipv4Addr)) {
    let mut d = Deployment::new(label, &[true, true]).unwrap();
    d.create_network("blue", "10.71.0.0/16", 71).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    d.wait_arp_everywhere(71, &[c1.1, c2.1], true).unwrap();
    assert_pings(&d, c1, c2, "at the start");
    (d, c1, c2)
}

/// Both ways across hosts; a lost first echo (an ARP refresh) is allowed one retry.
fn assert_pings(d: &Deployment, c1: (usize, Ipv4Addr), c2: (usize, Ipv4Addr), when: &str) {
    for (from, to) in [(c1, c2), (c2, c1)] {
        let ok = ping(d.container(from.0), to.1) || ping(d.container(from.0), to.1);
        assert!(
            ok,
            "{when}: {} cannot reach {}\nh1:\n{}\nh2:\n{}",
            from.1,
            to.1,
            d.hosts[0].log(),
            d.hosts[1].log()
        );
    }
}

/// The problems `overlay-agent status --json` lists on `host`, as "key: why" lines.
fn problems(d: &Deployment, host: usize) -> Vec<String> {
    let out = d.cli(host, &["status", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["problems"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, why)| format!("{k}: {}", why.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `host`'s status lists a problem for a key ending in `key` (or none, when
/// `listed` is false); the problem's line.
fn wait_problem(d: &Deployment, host: usize, key: &str, listed: bool) -> String {
    let mut found = String::new();
    wait_for(Duration::from_secs(5), || {
        let all = problems(d, host);
        let hit = all
            .iter()
            .find(|p| p.split(": ").next().unwrap().ends_with(key));
        found = hit.cloned().unwrap_or_default();
        hit.is_some() == listed
    })
    .unwrap_or_else(|_| {
        panic!(
            "{key} listed={listed} not reached on h{}: {:?}\n{}",
            host + 1,
            problems(d, host),
            d.hosts[host].log()
        )
    });
    found
}

fn log_lines_naming(d: &Deployment, host: usize, key: &str) -> usize {
    d.hosts[host]
        .log()
        .lines()
        .filter(|l| l.contains(key))
        .count()
}

/// The issue's measurement: `endpoints/blue/10.71.0.250` naming h1's underlay as its port cut
/// every container on h1 off, and deleting the record did not repair it. So do `lo`, another
/// endpoint's port, and c1's own port claimed by a second record: each is refused with its
/// key and logged once, cross-host ping keeps working throughout, and after the record is
/// deleted everything still works and nothing is listed.
#[test]
fn a_record_naming_a_port_that_is_not_its_own_takes_no_node_off_the_network() {
    let (mut d, c1, c2) = pair("isolport");
    let h1 = d.hosts[0].name().to_string();
    let key = "endpoints/blue/10.71.0.250";
    let record = |name: &str, port: &str| {
        format!(
            r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:47:00:fa","node":"{h1}","port":"{port}"}}"#
        )
    };
    let c1_port = port_name("blue", "c1");
    let c2_port = port_name("blue", "c2");
    for (case, value, says) in [
        (
            "h1's underlay",
            record("evil", "eth1"),
            "is not endpoint evil's own port",
        ),
        (
            "lo",
            record("evil", "lo"),
            "is not endpoint evil's own port",
        ),
        (
            "c1's port (on h1)",
            record("evil", &c1_port),
            "is not endpoint evil's own port",
        ),
        (
            "c2's port (on h2)",
            record("evil", &c2_port),
            "is not endpoint evil's own port",
        ),
        ("h1's bridge", record("evil", "ovbr71"), "is not endpoint"),
        // A second record for c1, its port rightly derived: h1 did not make it (its
        // `names/<h1>/c1` names c1's own address), so c1 keeps its port.
        (
            "c1's port, under c1's name",
            record("c1", &c1_port),
            "did not make it",
        ),
    ] {
        let logged = log_lines_naming(&d, 0, key);
        d.etcd_put(key, &value).unwrap();
        let line = wait_problem(&d, 0, key, true);
        assert!(line.contains(says), "{case}: {line}");
        // Let a few reconciles (one a second while a problem is listed) pass.
        std::thread::sleep(Duration::from_millis(2500));
        assert_pings(&d, c1, c2, case);
        assert_eq!(
            log_lines_naming(&d, 0, key) - logged,
            1,
            "{case}: logged once\n{}",
            d.hosts[0].log()
        );
        let maps = d.hosts[0].maps().unwrap();
        assert_eq!(maps.ports.len(), 1, "{case}: only c1's port: {maps:?}");
        assert!(
            !maps.arp.contains_key(&(71, [10, 71, 0, 250])),
            "{case}: {maps:?}"
        );
        d.etcd_del(key).unwrap();
        wait_problem(&d, 0, key, false);
        std::thread::sleep(Duration::from_millis(500));
        assert_pings(&d, c1, c2, &format!("{case}, deleted"));
    }
    // h2 refused each as well (a record is invalid for every node), and listed none after.
    assert!(problems(&d, 1).is_empty(), "{:?}", problems(&d, 1));
    assert!(problems(&d, 0).is_empty(), "{:?}", problems(&d, 0));

    // A record planted under the name of a container not made yet, its port rightly derived
    // (and so older than the container's own): the container, once made, is served all the
    // same, and the planted record is not.
    let planted = "endpoints/blue/10.71.0.251";
    d.etcd_put(
        planted,
        &format!(
            r#"{{"kind":"container","name":"c3","mac":"02:42:0a:47:00:fb","node":"{h1}","port":"{}"}}"#,
            port_name("blue", "c3")
        ),
    )
    .unwrap();
    let c3 = d.add_container(0, "c3", "blue", None).unwrap();
    d.wait_arp_everywhere(71, &[c3.1], true).unwrap();
    assert_pings(&d, c3, c2, "a record planted for c3");
    let line = wait_problem(&d, 0, planted, true);
    assert!(line.contains("did not make it"), "{line}");
    let maps = d.hosts[0].maps().unwrap();
    assert!(
        !maps.arp.contains_key(&(71, [10, 71, 0, 251])),
        "the planted record is not served: {maps:?}"
    );
}

fn stderr_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "succeeded: {out:?}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

/// `peer add` with an address that cannot be a VTEP, or one of our nodes' VTEPs, and `network
/// create` with another protocol's port: refused in one line, nothing written. The same
/// written into etcd by hand: logged with its key, listed, and nothing else disturbed.
#[test]
fn vteps_and_ports_that_cannot_be_ours_are_refused() {
    let (d, c1, c2) = pair("isolvtep");
    let h1_vtep = Ipv4Addr::from(d.hosts[0].vtep).to_string();
    let h2_vtep = Ipv4Addr::from(d.hosts[1].vtep).to_string();
    for (vtep, says) in [
        ("255.255.255.255", "it is the broadcast address"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("239.1.2.3", "multicast"),
        ("169.254.0.9", "link-local"),
        (h1_vtep.as_str(), "is node"),
        (h2_vtep.as_str(), "is node"),
    ] {
        let out = d
            .cli_output(
                0,
                &[
                    "peer",
                    "add",
                    "--network",
                    "blue",
                    "--ip",
                    "10.71.200.1",
                    "--mac",
                    "02:42:0a:47:c8:01",
                    "--vtep",
                    vtep,
                ],
            )
            .unwrap();
        let line = stderr_line(&out);
        eprintln!("peer add --vtep {vtep}: {line}");
        assert!(line.contains(says), "{vtep}: {line}");
    }
    for (port, says) in [("4500", "IPsec"), ("51820", "WireGuard"), ("53", "system")] {
        let out = d
            .cli_output(
                0,
                &[
                    "network",
                    "create",
                    "red",
                    "--subnet",
                    "10.72.0.0/16",
                    "--vni",
                    "72",
                    "--port",
                    port,
                ],
            )
            .unwrap();
        let line = stderr_line(&out);
        eprintln!("network create --port {port}: {line}");
        assert!(line.contains(says), "{port}: {line}");
    }
    let written = d.etcd_get_prefix("").unwrap();
    assert!(
        !written.contains("10.71.200.1") && !written.contains("networks/red"),
        "{written}"
    );

    // Written by hand: a peer behind the broadcast address, a peer behind h2's VTEP, a node
    // claiming h1's VTEP, a node behind the broadcast address, a network on IKE's port.
    let evil_node = "evil";
    let cases = [
        (
            "endpoints/blue/10.71.200.1",
            r#"{"kind":"peer","mac":"02:42:0a:47:c8:01","vtep":"255.255.255.255"}"#.to_string(),
            "broadcast",
        ),
        (
            "endpoints/blue/10.71.200.2",
            format!(r#"{{"kind":"peer","mac":"02:42:0a:47:c8:02","vtep":"{h2_vtep}"}}"#),
            "a peer cannot be one of our nodes",
        ),
        (
            "nodes/evil",
            format!(r#"{{"vtep":"{h1_vtep}"}}"#),
            "this node's own",
        ),
        (
            "nodes/evil2",
            r#"{"vtep":"255.255.255.255"}"#.to_string(),
            "broadcast",
        ),
        (
            "networks/red",
            r#"{"vni":72,"subnet":"10.72.0.0/16","port":4500}"#.to_string(),
            "IPsec",
        ),
    ];
    for (key, value, says) in &cases {
        d.etcd_put(key, value).unwrap();
        let line = wait_problem(&d, 0, key, true);
        assert!(line.contains(says), "{key}: {line}");
        assert!(
            d.hosts[0].log().contains(key),
            "{key} not logged\n{}",
            d.hosts[0].log()
        );
    }
    // An endpoint behind the node that claims h1's VTEP: never sent to (h1 would send to
    // itself).
    d.etcd_put(
        "endpoints/blue/10.71.201.1",
        &format!(
            r#"{{"kind":"container","name":"e1","mac":"02:42:0a:47:c9:01","node":"{evil_node}","port":"{}"}}"#,
            port_name("blue", "e1")
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let maps = d.hosts[0].maps().unwrap();
    assert!(
        !maps.arp.contains_key(&(71, [10, 71, 201, 1]))
            && !maps.arp.contains_key(&(71, [10, 71, 200, 1]))
            && !maps.arp.contains_key(&(71, [10, 71, 200, 2])),
        "{maps:?}"
    );
    assert_eq!(
        maps.vteps.len(),
        1,
        "h2's VTEP only, none of the bad ones: {maps:?}"
    );
    assert!(!maps.networks.contains_key(&72), "{maps:?}");
    assert_pings(&d, c1, c2, "with the bad records");
    for (key, _, _) in &cases {
        d.etcd_del(key).unwrap();
    }
    d.etcd_del("endpoints/blue/10.71.201.1").unwrap();
    for (key, _, _) in &cases {
        wait_problem(&d, 0, key, false);
    }
    assert_pings(&d, c1, c2, "after the bad records went");
}
