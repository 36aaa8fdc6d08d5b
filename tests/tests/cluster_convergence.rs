//! The control plane end to end, a real etcd, agents as processes, hosts and containers in
//! network namespaces, every change made with the CLI: what etcd holds reaches every node's
//! maps, and what etcd must not hold (overlapping subnets, one slice twice, a bad value) does
//! not; at scale too.
use std::time::Duration;

use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    scenario::{all_pairs, blue, blue_pair, mac_of},
};

#[test]
fn three_hosts_every_pair_reaches_every_other_and_changes_reach_every_map() {
    let mut d = Deployment::new("ac3", &[true, true, true]).unwrap();
    blue(&d);
    let mut containers = Vec::new();
    for host in 0..3 {
        for n in 1..=2 {
            containers.push(
                d.add_container(host, &format!("c{}{n}", host + 1), "blue", None)
                    .unwrap(),
            );
        }
    }
    let ips: Vec<_> = containers.iter().map(|c| c.1).collect();
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "addresses are unique: {ips:?}");
    let failed = all_pairs(&d, &containers);
    assert!(failed.is_empty(), "unreachable: {failed:?}");

    // Removed: unreachable, and gone from every map of every host.
    let (gone_ns, gone_ip) = containers.remove(5);
    d.cli(2, &["endpoint", "rm", "c32"]).unwrap();
    for (i, host) in d.hosts.iter().enumerate() {
        wait_for(Duration::from_secs(2), || {
            let m = host.maps().unwrap();
            !m.arp.contains_key(&(42, gone_ip.octets()))
                && !m.fdb.contains_key(&(42, mac_of(gone_ip)))
                && !m.endpoints.contains_key(&(42, mac_of(gone_ip)))
        })
        .unwrap_or_else(|e| panic!("h{} still has {gone_ip}: {e}", i + 1));
    }
    assert!(!ping(d.container(containers[0].0), gone_ip));
    let _ = gone_ns;
    let out = d.cli(2, &["endpoint", "ls", "--json"]).unwrap();
    assert!(!out.contains(&gone_ip.to_string()), "{out}");

    // Added later: reachable from every host within a second of the CLI returning.
    let (late, late_ip) = d.add_container(1, "c23", "blue", None).unwrap();
    for &(from, from_ip) in containers.iter().filter(|c| c.0 != late) {
        let took = wait_for(Duration::from_secs(1), || {
            d.container(from)
                .output(&format!("ping -c 1 -W 0.2 {late_ip}"))
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|e| panic!("{from_ip} -> {late_ip}: {e}"));
        assert!(took < Duration::from_secs(1));
    }
    // Every local endpoint of h2 is served by its agent, with the program attached.
    let status = d.cli(1, &["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["agent"]["running"], true, "{status}");
    assert_eq!(status["etcd"]["reachable"], true, "{status}");
    assert_eq!(status["maps"]["endpoints"], 3, "{status}");
    assert_eq!(
        status["programs"]["from_container"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{status}"
    );
    assert_eq!(status["programs"]["from_underlay"][0], "eth1", "{status}");
    assert!(
        d.hosts[1].log().contains("FDB + vni 42"),
        "one log line per change"
    );
}

/// Overlapping subnets would let one address name two endpoints: `network create` refuses
/// them, and one written into etcd anyway (here with a name that sorts first, and an endpoint
/// at a blue container's address) is logged with its key and left out while blue, the older,
/// keeps serving; fixed, it is served.
#[test]
fn an_overlapping_network_is_refused_and_the_older_keeps_serving() {
    let (d, b1, b2) = blue_pair("acovl");
    let create = ["network", "create", "green", "--vni", "43", "--subnet"];
    let err = d
        .cli(0, &[&create[..], &["10.10.128.0/17"]].concat())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("subnet 10.10.128.0/17 overlaps network blue's 10.10.0.0/16"),
        "{err}"
    );
    let put = |key: &str, value: &str| d.etcd_put(key, value).unwrap();
    put("networks/aaa", r#"{"vni":43,"subnet":"10.10.0.0/16"}"#);
    let impostor = format!("endpoints/aaa/{}", b2.1);
    put(
        &impostor,
        r#"{"kind":"peer","mac":"02:42:0a:0a:ff:01","vtep":"10.0.0.9"}"#,
    );
    for h in &d.hosts {
        wait_for(Duration::from_secs(3), || {
            h.log().contains("not serving networks/aaa: subnet 10.10.0.0/16 overlaps network blue's 10.10.0.0/16")
        })
        .unwrap_or_else(|e| panic!("{e}: {}", h.log()));
        let maps = h.maps().unwrap();
        assert!(!maps.networks.contains_key(&43), "{:?}", maps.networks);
        assert!(maps.fdb.keys().all(|(vni, _)| *vni == 42));
    }
    assert!(ping(d.container(b1.0), b2.1), "blue keeps forwarding");
    let status = d.cli(0, &["status"]).unwrap();
    assert!(status.contains("networks/aaa"), "{status}");
    // Fixed: served (and its endpoint, now outside its subnet, is the one left out).
    put("networks/aaa", r#"{"vni":43,"subnet":"10.30.0.0/16"}"#);
    wait_for(Duration::from_secs(3), || {
        d.hosts[0].maps().unwrap().networks.contains_key(&43)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", d.hosts[0].log()));
    assert!(
        d.hosts[0]
            .log()
            .contains(&format!("not serving {impostor}"))
    );
    assert!(ping(d.container(b1.0), b2.1));
}

#[test]
fn nodes_asking_for_a_slice_at_the_same_moment_get_different_slices() {
    use overlay_agent::{
        shared::ipam::Cidr,
        store::{Store, schema::NetworkRecord},
    };
    let d = Deployment::new("acslice", &[false]).unwrap();
    blue(&d);
    let url = d.etcd.url.clone();
    // The test process reaches etcd from inside a host's namespace, like the agents.
    let slices: Vec<Cidr> = d.hosts[0].ns.enter(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::connect(&overlay_agent::store::Etcd::plain(&[url], "/overlay"))
                .await
                .unwrap();
            let net = NetworkRecord {
                vni: 42,
                subnet: "10.10.0.0/16".parse().unwrap(),
                port: 4789,
                mtu: None,
                slice_prefix: None,
                bum_rate: None,
                internal: false,
                subnet6: None,
            }
            .validate("blue")
            .unwrap();
            let claims = (0..8).map(|i| {
                let (store, net) = (store.clone(), net.clone());
                tokio::spawn(
                    async move { store.claim_slice(&net, &format!("n{i}")).await.unwrap() },
                )
            });
            let mut out = Vec::new();
            for c in claims.collect::<Vec<_>>() {
                out.push(c.await.unwrap());
            }
            // Asking again gives a node the slice it already holds.
            assert_eq!(store.claim_slice(&net, "n3").await.unwrap(), out[3]);
            out
        })
    });
    let mut unique = slices.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{slices:?}");
}

#[test]
fn a_bad_value_in_etcd_is_logged_with_its_key_and_skipped() {
    let (d, c1, c2) = blue_pair("acbad");
    let put = |key: &str, value: &str| d.etcd_put(key, value).unwrap();
    put("endpoints/blue/10.10.7.7", "{not json");
    put(
        "endpoints/blue/10.10.7.8",
        r#"{"kind":"peer","mac":"02:42:0a:0a:07:08","vtep":"banana"}"#,
    );
    put("networks/broken", r#"{"vni":"x"}"#);
    wait_for(Duration::from_secs(2), || {
        let log = d.hosts[0].log();
        log.contains("skipping /overlay/endpoints/blue/10.10.7.7")
            && log.contains("skipping /overlay/endpoints/blue/10.10.7.8")
            && log.contains("skipping /overlay/networks/broken")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", d.hosts[0].log()));
    assert!(
        ping(d.container(c1.0), c2.1),
        "the good entries keep forwarding"
    );
    // Fixed: served.
    put(
        "endpoints/blue/10.10.7.8",
        r#"{"kind":"peer","mac":"02:42:0a:0a:07:08","vtep":"10.0.0.9"}"#,
    );
    wait_for(Duration::from_secs(2), || {
        d.hosts[0]
            .maps()
            .unwrap()
            .fdb
            .contains_key(&(42, [2, 0x42, 10, 10, 7, 8]))
    })
    .unwrap();
    let status = d.cli(0, &["status"]).unwrap();
    assert!(
        status.contains("/overlay/endpoints/blue/10.10.7.7"),
        "{status}"
    );
}

#[test]
fn map_sizes_are_configurable_and_a_full_map_is_reported_not_truncated_silently() {
    let (mut d, c1, c2) = blue_pair("acfull");
    // h1 restarts with room for 16 entries per map: its pinned maps have another size.
    d.kill_agent(0);
    d.hosts[0].run_args = vec!["--max-entries".into(), "16".into()];
    d.restart_agent(0).unwrap();
    wait_for(Duration::from_secs(5), || {
        d.hosts[0].log().contains("programs switched over")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", d.hosts[0].log()));
    assert!(d.hosts[0].log().contains(
        "pinned maps hold 65536 entries each, --max-entries asks for 16: rebuilding them"
    ));
    assert!(ping(d.container(c1.0), c2.1));
    // 20 more remote MACs than fit.
    for i in 0..20 {
        d.etcd_put(
            &format!("endpoints/blue/10.10.200.{i}"),
            &format!(r#"{{"kind":"peer","mac":"02:42:0a:0a:c8:{i:02x}","vtep":"10.0.0.9"}}"#),
        )
        .unwrap();
    }
    wait_for(Duration::from_secs(5), || {
        d.hosts[0]
            .log()
            .contains("the map is full (max 16 entries); raise --max-entries")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", d.hosts[0].log()));
    let status: serde_json::Value =
        serde_json::from_str(&d.cli(0, &["status", "--json"]).unwrap()).unwrap();
    let _ = status;
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::env::temp_dir()
                .join(d.hosts[0].name().trim_end_matches("h1"))
                .join("run")
                .join(format!("{}.json", d.hosts[0].name())),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        file["map_write_failures"]["FDB"].as_u64().unwrap() > 0,
        "{file}"
    );
    // What fits is served: the real container still answers.
    assert_eq!(d.hosts[0].maps().unwrap().fdb.len(), 16);
    assert!(ping(d.container(c1.0), c2.1));
}

#[test]
fn listing_more_than_a_grpc_message_holds_reads_every_key_at_one_revision() {
    use overlay_agent::store::Store;
    let d = Deployment::new("aclist", &[false]).unwrap();
    let url = d.etcd.url.clone();
    let (count, listed_at, written_at) = d.hosts[0].ns.enter(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::connect(&overlay_agent::store::Etcd::plain(&[url], "/overlay"))
                .await
                .unwrap();
            // 12,000 values of 500 bytes: 6 MB, past gRPC's 4 MB limit, and three pages.
            let kvs: Vec<(String, String)> = (0..12_000)
                .map(|i| (format!("/overlay/bulk/{i:05}"), "x".repeat(500)))
                .collect();
            let written_at = store.put_many_raw(&kvs).await.unwrap();
            let (listed, listed_at) = store.list("/overlay/").await.unwrap();
            (listed.len(), listed_at, written_at)
        })
    });
    assert_eq!(count, 12_000);
    assert_eq!(listed_at, written_at);
}

/// The scale benchmark in small: thousands of endpoints listed at start, then a steady stream
/// of moves (the fast path) and changes only the full reconcile can apply; every followed
/// change must reach the map (the run fails on the first one lost).
#[test]
fn a_stream_of_changes_all_reach_the_maps() {
    let r = overlay_tests::scale::run(5000, 3, 300).unwrap();
    assert_eq!((r.endpoints, r.changes, r.samples), (5000, 900, 90));
}
