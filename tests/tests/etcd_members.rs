//! `status`, `doctor` and the metrics show each etcd member: reachable or why not, which one
//! leads, how far behind the leader's log it is. One live member beside dead ones: an address
//! on the underlay that nobody answers (a host gone: every packet to it lost) and a port nobody
//! listens on (a member restarting: refused at once).
use std::time::{Duration, Instant};

use overlay_tests::{
    deployment::{Deployment, ETCD_IP, wait_for},
    prometheus::{http_get, sample},
};

/// Nobody has this address on the underlay: connections to it hang until their deadline.
const GONE: &str = "http://10.0.0.253:2379";

fn refused() -> String {
    format!("http://{ETCD_IP}:2479")
}

#[test]
fn status_doctor_and_metrics_show_each_member() {
    let mut d = Deployment::new("efmem", &[true]).unwrap();
    let live = d.etcd.url.clone();
    let metrics = "10.0.0.1:9100";
    // The agent knows a member that refuses it beside the live one.
    let both = format!("{live},{}", refused());
    d.hosts[0].run_args = vec![
        "--metrics".into(),
        metrics.into(),
        "--etcd".into(),
        both.clone(),
    ];
    d.kill_agent(0);
    d.restart_agent(0).unwrap();

    // status, given a member that is gone: the live one reachable and leader, the gone one
    // unreachable with a one-line reason, within the probe's deadline.
    let with_gone = format!("{live},{GONE}");
    let started = Instant::now();
    let out = d
        .cli(0, &["status", "--json", "--etcd", &with_gone])
        .unwrap();
    let took = started.elapsed();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let members = status["etcd"]["members"].as_array().unwrap();
    println!("status with a member gone took {took:?}: {members:#?}");
    assert_eq!(members.len(), 2, "{out}");
    assert_eq!(members[0]["endpoint"], live.as_str());
    assert_eq!(members[0]["reachable"], true);
    assert_eq!(members[0]["leader"], true);
    assert_eq!(members[0]["behind"], 0);
    assert!(members[0]["raft_index"].as_u64().unwrap() > 0);
    assert_eq!(members[1]["endpoint"], GONE);
    assert_eq!(members[1]["reachable"], false);
    assert_eq!(members[1]["leader"], false);
    let why = members[1]["error"].as_str().unwrap();
    assert!(!why.is_empty() && !why.contains('\n'), "{why:?}");
    let text = d.cli(0, &["status", "--etcd", &with_gone]).unwrap();
    println!("{text}");
    assert!(
        text.contains(&format!("etcd members    1 of 2 reachable, leader {live}")),
        "{text}"
    );

    // The agent probes on its own: its metrics and its status file say what it saw.
    let up = |e: &str| format!("overlay_etcd_member_up{{endpoint=\"{e}\"}}");
    let leader = |e: &str| format!("overlay_etcd_member_leader{{endpoint=\"{e}\"}}");
    let behind = |e: &str| format!("overlay_etcd_member_raft_behind{{endpoint=\"{e}\"}}");
    let mut scraped = String::new();
    wait_for(Duration::from_secs(15), || {
        scraped = http_get(&d.wire, metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        sample(&scraped, &up(&live)).is_some()
    })
    .unwrap_or_else(|_| panic!("no member gauges: {scraped}\n{}", d.hosts[0].log()));
    assert_eq!(sample(&scraped, &up(&live)), Some(1.0), "{scraped}");
    assert_eq!(sample(&scraped, &leader(&live)), Some(1.0));
    assert_eq!(sample(&scraped, &behind(&live)), Some(0.0));
    assert_eq!(sample(&scraped, &up(&refused())), Some(0.0));
    assert_eq!(sample(&scraped, &leader(&refused())), Some(0.0));
    assert_eq!(sample(&scraped, &behind(&refused())), None);
    for name in ["overlay_etcd_member_up", "overlay_etcd_member_leader"] {
        assert!(scraped.contains(&format!("# HELP {name} ")), "{scraped}");
    }
    wait_for(Duration::from_secs(5), || {
        d.hosts[0].status().is_some_and(|s| {
            s["etcd_members"]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2 && m[0]["leader"] == true)
        })
    })
    .expect("the agent's status file has its last probe");
    let text = d.cli(0, &["status", "--etcd", &both]).unwrap();
    assert!(text.contains("agent saw       1 of 2 reachable"), "{text}");

    // doctor: a member down is a warning (etcd works on with a majority), the maps are still
    // checked and clean; no member at all is one line and a failure.
    let out = d.cli_output(0, &["doctor", "--etcd", &both]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("clean"), "{stdout}");
    assert!(stdout.contains("1 warning(s)"), "{stdout}");
    assert!(stdout.contains(&refused()), "{stdout}");
    let out = d.cli_output(0, &["doctor", "--etcd", &refused()]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no etcd member answers"), "{stderr}");
}

/// A three-member cluster: all reachable, exactly one leader; the leader killed, the dead one
/// is reported (status, metrics, doctor's warning) and exactly one of the others leads.
#[test]
fn three_members_one_leader_and_a_killed_one_is_reported() {
    let mut d = Deployment::with_etcd_members("efm3", &[true], 3).unwrap();
    let metrics = "10.0.0.1:9100";
    d.hosts[0].run_args = vec!["--metrics".into(), metrics.into()];
    d.kill_agent(0);
    d.restart_agent(0).unwrap();
    let members = |d: &Deployment| -> Vec<serde_json::Value> {
        let out = d.cli(0, &["status", "--json"]).unwrap();
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["etcd"]["members"].as_array().unwrap().clone()
    };
    let leaders = |m: &[serde_json::Value]| m.iter().filter(|m| m["leader"] == true).count();
    let seen = members(&d);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|m| m["reachable"] == true), "{seen:#?}");
    assert_eq!(leaders(&seen), 1, "{seen:#?}");
    let leader = d.etcd.wait_leader().unwrap();
    let url = d.etcd.member(leader).client_url.clone();
    assert!(
        seen.iter()
            .any(|m| m["endpoint"] == url.as_str() && m["leader"] == true),
        "{url} leads: {seen:#?}"
    );
    assert!(
        seen.iter()
            .all(|m| m["behind"].as_u64().is_some_and(|b| b < 100)),
        "{seen:#?}"
    );

    // The leader killed: reported dead in one line, one of the others leads.
    d.etcd.kill(leader);
    d.etcd.wait_leader().unwrap();
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(10), || {
        seen = members(&d);
        leaders(&seen) == 1
    })
    .unwrap_or_else(|_| panic!("not one leader: {seen:#?}"));
    let dead = seen.iter().find(|m| m["endpoint"] == url.as_str()).unwrap();
    assert_eq!(dead["reachable"], false, "{seen:#?}");
    let why = dead["error"].as_str().unwrap();
    assert!(!why.contains('\n'), "{why:?}");
    println!("after killing {url}: {seen:#?}");

    // The agent's next probe (every 10 s) says the same.
    let up = format!("overlay_etcd_member_up{{endpoint=\"{url}\"}}");
    let mut scraped = String::new();
    wait_for(Duration::from_secs(25), || {
        scraped = http_get(&d.wire, metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        sample(&scraped, &up) == Some(0.0)
    })
    .unwrap_or_else(|_| panic!("{up} not 0: {scraped}"));
    let leading: f64 = (0..3)
        .map(|i| d.etcd.member(i).client_url.clone())
        .filter_map(|u| {
            sample(
                &scraped,
                &format!("overlay_etcd_member_leader{{endpoint=\"{u}\"}}"),
            )
        })
        .sum();
    assert_eq!(leading, 1.0, "{scraped}");

    // doctor: the dead member is a warning; the node's maps are checked and clean.
    let stdout = d.cli(0, &["doctor"]).unwrap();
    println!("{stdout}");
    assert!(
        stdout.contains("clean") && stdout.contains("1 warning(s)"),
        "{stdout}"
    );
    assert!(stdout.contains(&url), "{stdout}");
    // doctor --cluster: the same warning, and every node in sync.
    let stdout = d.cli(0, &["doctor", "--cluster"]).unwrap();
    println!("{stdout}");
    assert!(
        stdout.contains("1 etcd warning(s)") && stdout.contains(&url),
        "{stdout}"
    );
}
