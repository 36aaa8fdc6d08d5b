//! `doctor` against a real cluster: drift named by node, map and entry, and every node's
//! published digest compared with etcd.
use std::time::Duration;

use overlay_tests::{
    deployment::{Deployment, wait_for},
    scenario::blue_pair,
};

#[test]
fn doctor_names_drift_by_node_map_and_entry_and_is_clean_after_the_fix() {
    let (mut d, _c1, c2) = blue_pair("doctor");
    let doctor = |d: &Deployment| -> (bool, serde_json::Value) {
        let out = d.cli_output(0, &["doctor", "--json"]).unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.success(), report)
    };
    let clean = |d: &Deployment| {
        wait_for(Duration::from_secs(5), || doctor(d).0)
            .unwrap_or_else(|_| panic!("not clean: {:#}", doctor(d).1));
    };
    clean(&d);
    let (_, report) = doctor(&d);
    // NETWORKS, ENDPOINTS and PORTS for c1, ARP for both, FDB and VTEPS for c2.
    assert_eq!(report["entries"], 7, "{report:#}");

    // An FDB entry deleted by hand: the agent hears nothing of it, the doctor names it.
    let c2_mac = overlay_agent::shared::net::Mac::from_ip(c2.1);
    let key: String = 42u32
        .to_le_bytes()
        .iter()
        .chain(c2_mac.0.iter())
        .chain([0u8, 0].iter())
        .map(|b| format!("{b:02x} "))
        .collect();
    let fdb = d.hosts[0].pins().map("FDB");
    overlay_tests::netns::sh(&format!(
        "bpftool map delete pinned {} key hex {key}",
        fdb.display()
    ))
    .unwrap();
    let (ok, report) = doctor(&d);
    assert!(!ok, "{report:#}");
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["check"], "map FDB");
    let item = findings[0]["item"].as_str().unwrap();
    assert!(
        item.contains(&c2_mac.to_string()) && item.contains("10.0.0.2"),
        "{item}"
    );
    assert_eq!(report["node"], d.hosts[0].name());
    // The fix: a restarted agent writes what its maps lack.
    d.kill_agent(0);
    d.restart_agent(0).unwrap();
    clean(&d);

    // The agent stopped while etcd changes: the doctor says so, and names what is missing.
    d.kill_agent(0);
    let c3 = d.add_container(1, "c3", "blue", None).unwrap();
    let (ok, report) = doctor(&d);
    assert!(!ok);
    let text = report["findings"].to_string();
    assert!(
        text.contains("\"agent\"") && text.contains("not running"),
        "{text}"
    );
    for map in ["map FDB", "map ARP"] {
        assert!(text.contains(map), "{text}");
    }
    assert!(text.contains(&c3.1.to_string()), "{text}");
    d.restart_agent(0).unwrap();
    clean(&d);
}

#[test]
fn doctor_cluster_compares_every_nodes_published_digest_with_etcd() {
    let (mut d, _c1, _c2) = blue_pair("doccl");
    let cluster = |d: &Deployment| -> (bool, serde_json::Value) {
        let out = d.cli_output(0, &["doctor", "--cluster", "--json"]).unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.success(), report)
    };
    let state_of = |report: &serde_json::Value, node: &str| -> String {
        report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .map_or("absent".into(), |n| {
                n["state"].as_str().unwrap().to_string()
            })
    };
    let h2 = d.hosts[1].name().to_string();
    wait_for(Duration::from_secs(5), || cluster(&d).0)
        .unwrap_or_else(|_| panic!("{:#}", cluster(&d).1));
    let (_, report) = cluster(&d);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 2, "{report:#}");

    // A digest that is not what h2's maps must hold (written by hand at the current
    // revision): h2 is named as diverged, h1 stays in sync.
    d.etcd_put(
        &format!("~state/{h2}"),
        r#"{"revision":1000000,"digest":"0000000000000000","entries":1}"#,
    )
    .unwrap();
    let (ok, report) = cluster(&d);
    assert!(!ok);
    assert_eq!(state_of(&report, &h2), "diverged", "{report:#}");
    assert_eq!(
        state_of(&report, d.hosts[0].name()),
        "in sync",
        "{report:#}"
    );
    // h2's next change republishes the truth.
    d.add_container(1, "c3", "blue", None).unwrap();
    wait_for(Duration::from_secs(5), || cluster(&d).0)
        .unwrap_or_else(|_| panic!("{:#}", cluster(&d).1));

    // h2's agent gone past its lease: down, with endpoints nobody serves.
    d.kill_agent(1);
    wait_for(Duration::from_secs(10), || {
        state_of(&cluster(&d).1, &h2) == "down"
    })
    .unwrap_or_else(|_| panic!("{:#}", cluster(&d).1));
    d.restart_agent(1).unwrap();
    wait_for(Duration::from_secs(5), || cluster(&d).0)
        .unwrap_or_else(|_| panic!("{:#}", cluster(&d).1));
}
