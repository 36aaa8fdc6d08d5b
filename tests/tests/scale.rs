//! The scale harness in small (cluster_scale.rs; `cargo xtask bench --scale` runs it big): 50
//! simulated nodes, 5 of them full, 5,000 endpoints, one real agent with real maps beside
//! them. Every full node ends equal to what `desired` computes from etcd, before and after an
//! etcd outage long enough to make them relist (each at a moment of a window of 1.6 s, its
//! watch resumed meanwhile, as in any cluster of this size); the real agent's maps equal the recorded maps
//! of the simulated node whose view is the same (s0: no containers of its own); every node
//! has every probe.
use std::{sync::atomic::Ordering, time::Duration};

use overlay_agent::daemon::core::DARK;
use overlay_tests::{
    cluster_scale::{Bed, EtcdKind, Options},
    deployment::wait_for,
};

fn same_as_real_agent(bed: &Bed) {
    let s0 = bed.full.iter().find(|f| f.name == "s0").unwrap();
    let recorded = || s0.full.recorder.with(|r| r.state.clone());
    // The agent catches up on its own time: its maps settle on what s0 recorded.
    let settled = wait_for(Duration::from_secs(30), || {
        bed.d.hosts[0].maps().is_ok_and(|m| m == recorded())
    });
    let real = bed.d.hosts[0].maps().unwrap();
    let sim = recorded();
    assert!(
        settled.is_ok(),
        "the real agent's maps differ from s0's recorded ones: FDB {} vs {}, ARP {} vs {}, VTEPS {} vs {}, digest {:?} vs {:?}",
        real.fdb.len(),
        sim.fdb.len(),
        real.arp.len(),
        sim.arp.len(),
        real.vteps.len(),
        sim.vteps.len(),
        real.digest(),
        sim.digest()
    );
    assert_eq!(
        sim.fdb.len(),
        5000 + 3,
        "every endpoint and probe but none of s0's own"
    );
}

#[test]
fn simulated_nodes_end_as_desired_and_agree_with_a_real_agent() {
    let opts = Options {
        nodes: 50,
        endpoints: 5000,
        full: 5,
        etcd: EtcdKind::Single,
        real_agents: 1,
        probes: 3,
        outage: DARK + Duration::from_secs(2),
    };
    let mut bed = Bed::new("scl", opts).unwrap();
    bed.load().unwrap();
    bed.start_light().unwrap();
    bed.start_full().unwrap();
    bed.check_desired().unwrap();
    let (all, full, missing) = bed.probe(3).unwrap();
    assert_eq!(missing, 0);
    // Every node but the probes' owner, three probes.
    assert_eq!(all.len(), 3 * 49);
    assert_eq!(full.len(), 3 * 5);
    same_as_real_agent(&bed);
    let listed = |bed: &Bed| -> Vec<u64> {
        bed.full
            .iter()
            .map(|f| f.stats.listings.load(Ordering::Relaxed))
            .collect()
    };
    let before = listed(&bed);
    let (secs, up) = bed.outage(DARK + Duration::from_secs(2)).unwrap();
    assert!(up, "etcd fell over during the relist");
    eprintln!("every node in sync {secs:.1} s after etcd's restart");
    // 51 nodes of about 5,100 keys: a relist window of 1.6 s (core::relist_delay), so each
    // node resumed its watch and relisted at a moment of it, the agent as the simulated ones.
    let planned: u64 = bed
        .full
        .iter()
        .map(|f| f.stats.relists_planned.load(Ordering::Relaxed))
        .sum();
    assert_eq!(planned, 5, "every full node put its relist off");
    wait_for(Duration::from_secs(10), || {
        listed(&bed).iter().zip(&before).all(|(now, was)| now > was)
    })
    .expect("every full node relisted within its window");
    wait_for(Duration::from_secs(10), || {
        bed.d.hosts[0]
            .log()
            .contains("relisting, as planned after the outage")
    })
    .unwrap_or_else(|_| {
        panic!(
            "the real agent relisted as planned: {}",
            bed.d.hosts[0].log()
        )
    });
    let log = bed.d.hosts[0].log();
    assert!(
        log.contains("watching again where it was, and relisting in"),
        "{log}"
    );
    bed.check_desired().unwrap();
    assert_eq!(
        bed.cluster_now().unwrap().endpoints.len(),
        5000 + 4,
        "endpoints and probes"
    );
}
