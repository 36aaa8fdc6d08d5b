//! The control plane end to end, what goes wrong: agents killed and restarted, etcd down, maps
//! of another layout, containers whose namespace died without a DEL, a reboot. Traffic keeps
//! flowing and etcd and the maps come back to agree.
use std::{net::Ipv4Addr, time::Duration};

use overlay_agent::dataplane::pins::LAYOUT_VERSION;
use overlay_tests::{
    deployment::{Deployment, LEASE_TTL, flood_result, ping, ping_flood, wait_for},
    scenario::{blue, blue_pair, mac_of},
};

#[test]
fn a_killed_agents_entries_expire_with_its_lease_and_come_back_whole_on_restart() {
    let mut d = Deployment::new("ackill", &[true, true, true]).unwrap();
    blue(&d);
    let c1 = d.add_container(0, "k1", "blue", None).unwrap();
    let c2 = d.add_container(1, "k2", "blue", None).unwrap();
    let c3 = d.add_container(2, "k3", "blue", None).unwrap();
    assert!(ping(d.container(c1.0), c2.1));
    let before: Vec<_> = d.hosts.iter().map(|h| h.maps().unwrap()).collect();

    d.kill_agent(1);
    let killed = std::time::Instant::now();
    // h2's own dataplane keeps its state while no agent runs.
    assert_eq!(d.hosts[1].maps().unwrap(), before[1]);
    for other in [0, 2] {
        wait_for(Duration::from_secs(LEASE_TTL + 4), || {
            !d.hosts[other]
                .maps()
                .unwrap()
                .fdb
                .contains_key(&(42, mac_of(c2.1)))
        })
        .unwrap_or_else(|e| panic!("h{} kept h2's endpoint: {e}", other + 1));
        let took = killed.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "dropped before the lease could expire: {took:?}"
        );
        let m = d.hosts[other].maps().unwrap();
        assert!(!m.arp.contains_key(&(42, c2.1.octets())));
        assert!(
            !m.vteps
                .contains(&(42, overlay_common::vtep::from_v4([10, 0, 0, 2])))
        );
    }
    assert!(ping(d.container(c1.0), c3.1), "h1 <-> h3 unaffected");

    d.restart_agent(1).unwrap();
    for (i, want) in before.iter().enumerate() {
        wait_for(Duration::from_secs(3), || {
            d.hosts[i].maps().unwrap() == *want
        })
        .unwrap_or_else(|e| {
            panic!(
                "h{} after restart: {e}\nwant {want:?}\nhave {:?}",
                i + 1,
                d.hosts[i].maps().unwrap()
            )
        });
    }
    assert!(ping(d.container(c1.0), c2.1));
    assert!(ping(d.container(c3.0), c2.1));
    let log = d.hosts[1].log();
    assert!(
        log.contains("1 local endpoints and 2 remote MACs adopted"),
        "the restarted agent adopted the pinned maps: {log}"
    );
}

#[test]
fn traffic_flows_while_etcd_is_down_and_later_changes_arrive() {
    let (mut d, c1, c2) = blue_pair("acetcd");

    // A flood across the whole outage and the recovery: forwarding must never stop.
    let flood = ping_flood(d.container(c1.0), c2.1, 1000);
    d.etcd.stop();
    // Several lease TTLs: nothing may expire while nobody can renew it.
    std::thread::sleep(Duration::from_secs(LEASE_TTL * 3));
    assert!(
        d.hosts[0].log().contains("etcd unreachable"),
        "the agent says so"
    );
    d.etcd.restart().unwrap();
    let (sent, received) = flood_result(flood);
    eprintln!(
        "ping flood across an etcd outage of {} s and its recovery: {sent} sent, {received} received",
        LEASE_TTL * 3
    );
    assert_eq!(sent, received, "lost {} packets", sent - received);
    for h in &d.hosts {
        assert_eq!(
            h.maps().unwrap().fdb.len(),
            1,
            "each host kept the other's endpoint"
        );
    }

    let late = d.add_container(1, "e3", "blue", None).unwrap();
    wait_for(Duration::from_secs(10), || ping(d.container(c1.0), late.1))
        .expect("a change made after etcd came back reaches h1");
    assert!(ping(d.container(c1.0), c2.1));
    assert!(
        d.hosts[0]
            .maps()
            .unwrap()
            .fdb
            .contains_key(&(42, mac_of(late.1)))
    );
    // etcd renewed every lease when it came back: no agent registered again (with thousands
    // of nodes, each registration is an event for all of them).
    for h in &d.hosts {
        let log = h.log();
        assert_eq!(
            log.matches("registered under lease").count(),
            1,
            "the lease outlived the outage: {log}"
        );
        // Nor listed again: etcd, restarted, replayed the last changes each had applied as
        // it had applied them, so each watch resumed where it was.
        assert!(log.contains("(the same history)"), "{log}");
        assert_eq!(log.matches(" keys at revision ").count(), 1, "{log}");
    }
}

#[test]
fn a_host_cut_off_from_etcd_for_longer_than_its_lease_registers_again_when_it_is_back() {
    let (d, c1, c2) = blue_pair("accut");
    let h1 = &d.hosts[0].ns;
    // h1 alone loses etcd (its packets to it dropped: no reset, the connections hang) while
    // etcd runs on: its lease expires there, and h2 drops its endpoint.
    d.etcd.partition(h1, 0).unwrap();
    wait_for(Duration::from_secs(LEASE_TTL * 3 + 5), || {
        !d.hosts[1]
            .maps()
            .unwrap()
            .fdb
            .contains_key(&(42, mac_of(c1.1)))
    })
    .expect("h2 drops h1's endpoint once h1's lease expired");
    assert_eq!(
        d.hosts[0].maps().unwrap().fdb.len(),
        1,
        "h1, cut off, keeps serving what it had"
    );
    d.etcd.heal(h1).unwrap();
    // Back: etcd says the lease expired, so h1 registers under a new one, and h2 has h1's
    // endpoint again.
    wait_for(Duration::from_secs(20), || ping(d.container(c2.0), c1.1))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.hosts[0].log()));
    let log = d.hosts[0].log();
    assert_eq!(log.matches("registered under lease").count(), 2, "{log}");
    assert!(log.contains("expired"), "{log}");
}

#[test]
fn agents_killed_and_restarted_three_times_lose_no_packet() {
    let (mut d, c1, c2) = blue_pair("acloss");
    let flood = ping_flood(d.container(c1.0), c2.1, 600);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        d.kill_agent(0);
        d.kill_agent(1);
        std::thread::sleep(Duration::from_millis(300));
        d.restart_agent(0).unwrap();
        d.restart_agent(1).unwrap();
    }
    let (sent, received) = flood_result(flood);
    eprintln!(
        "continuous ping across 3 SIGKILL + restart of both agents: {sent} sent, {received} received, {} lost",
        sent - received
    );
    assert_eq!(sent, received, "lost {} packets", sent - received);
    for h in &d.hosts {
        assert_eq!(h.log().matches("registered under lease").count(), 4);
    }
}

#[test]
fn maps_of_another_layout_are_rebuilt_from_etcd_without_a_gap() {
    let (mut d, c1, c2) = blue_pair("aclayout");
    // What an agent of layout v1 would have left: its maps under another directory, still in
    // use by the programs it attached.
    d.kill_agent(0);
    let pins = d.hosts[0].pins();
    let old = pins.dir().join("maps-v1");
    std::fs::rename(pins.maps(), &old).unwrap();
    let flood = ping_flood(d.container(c1.0), c2.1, 200);
    std::thread::sleep(Duration::from_millis(300));
    d.restart_agent(0).unwrap();
    wait_for(Duration::from_secs(5), || {
        d.hosts[0].log().contains("programs switched over")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", d.hosts[0].log()));
    let (sent, received) = flood_result(flood);
    assert_eq!(sent, received, "lost {} packets", sent - received);
    let log = d.hosts[0].log();
    assert!(
        log.contains(&format!(
            "of another layout than this agent's (v{LAYOUT_VERSION}): rebuilding them from etcd"
        )),
        "{log}"
    );
    assert!(!old.exists(), "the old layout's maps are unpinned");
    assert!(ping(d.container(c2.0), c1.1));
    assert_eq!(d.hosts[0].maps().unwrap().endpoints.len(), 1);
}

#[test]
fn a_container_whose_namespace_dies_without_a_del_leaves_etcd_and_every_map() {
    let (mut d, c1, c2) = blue_pair("vanish");
    // A port the agent never attached (a value written by hand) is not a vanished container:
    // it stays, listed as a problem.
    let stray_ip = Ipv4Addr::new(10, 10, 0, 200);
    let host1 = d.hosts[0].name().to_string();
    d.etcd_put(
        &format!("endpoints/blue/{stray_ip}"),
        &format!(
            r#"{{"kind":"container","name":"stray","mac":"02:42:0a:0a:00:c8","node":"{host1}","port":"{}"}}"#,
            overlay_agent::shared::ifnames::port_name("blue", "stray")
        ),
    )
    .unwrap();
    // c2's namespace goes away as a killed runtime's would: its veth pair with it, no DEL.
    let ns = d.container(c2.0).name.clone();
    overlay_tests::netns::sh(&format!("ip netns del {ns}")).unwrap();
    let took = wait_for(Duration::from_secs(8), || {
        let eps = d.cli(0, &["endpoint", "ls", "--json"]).unwrap_or_default();
        !eps.contains("\"c2\"")
            && d.hosts.iter().all(|h| {
                h.maps()
                    .is_ok_and(|m| !m.arp.contains_key(&(42, c2.1.octets())))
            })
    })
    .unwrap_or_else(|_| panic!("c2 still there:\n{}", d.hosts[1].log()));
    assert!(
        took >= Duration::from_secs(2),
        "removed before its grace: {took:?}"
    );
    assert!(
        d.hosts[1].log().contains("its port is gone"),
        "{}",
        d.hosts[1].log()
    );
    let eps = d.cli(0, &["endpoint", "ls", "--json"]).unwrap();
    assert!(eps.contains("stray"), "{eps}");
    // The address is free again, and c1 is untouched.
    let again = d
        .add_container(1, "c2b", "blue", Some(&c2.1.to_string()))
        .unwrap();
    assert_eq!(again.1, c2.1);
    // `endpoint add` waits for its own node only; h1 follows within milliseconds.
    d.wait_arp_everywhere(42, &[c2.1], true).unwrap();
    assert!(ping(d.container(c1.0), c2.1));

    // Within the grace, the vanished container is removed by hand and its address taken by a
    // new one on the same node: the agent's removal must not take the new owner with it.
    let c3 = d.add_container(1, "c3", "blue", None).unwrap();
    let ns = d.container(c3.0).name.clone();
    overlay_tests::netns::sh(&format!("ip netns del {ns}")).unwrap();
    d.cli(1, &["endpoint", "rm", "c3"]).unwrap();
    let c3b = d
        .add_container(1, "c3b", "blue", Some(&c3.1.to_string()))
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let eps = d.cli(0, &["endpoint", "ls", "--json"]).unwrap();
    assert!(eps.contains("\"c3b\""), "{eps}\n{}", d.hosts[1].log());
    assert!(ping(d.container(c1.0), c3b.1));
}

#[test]
fn after_a_reboot_the_containers_that_did_not_come_back_leave_etcd() {
    let (mut d, c1, c2) = blue_pair("reboot");
    // h2 reboots: its agent, c2's namespace (with its port) and bpffs are all gone. Its own
    // reaping has nothing to go by (no pinned link says c2 was ever attached).
    d.kill_agent(1);
    let ns = d.container(c2.0).name.clone();
    overlay_tests::netns::sh(&format!("ip netns del {ns}")).unwrap();
    d.hosts[1].pins().remove().unwrap();
    d.restart_agent(1).unwrap();
    wait_for(Duration::from_secs(8), || {
        !d.cli(0, &["endpoint", "ls", "--json"])
            .unwrap_or_default()
            .contains("\"c2\"")
            && d.hosts[0]
                .maps()
                .is_ok_and(|m| !m.arp.contains_key(&(42, c2.1.octets())))
    })
    .unwrap_or_else(|_| panic!("c2 stranded:\n{}", d.hosts[1].log()));
    // A container that did come back (made again after the reboot) is served.
    let again = d.add_container(1, "c2b", "blue", None).unwrap();
    assert!(ping(d.container(c1.0), again.1));
}
