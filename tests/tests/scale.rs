//! The scale harness in small (cluster_scale.rs; `cargo xtask bench --scale` runs it big): 50
//! simulated nodes, 5 of them full, 5,000 endpoints, one real agent with real maps beside
//! them. Every full node ends equal to what `desired` computes from etcd, before and after two
//! etcd outages longer than DARK: a restart, after which etcd replays every node's last
//! changes and none relists; and a restart after a compaction, which leaves nothing to replay,
//! so each relists (at a moment of a window of 1.6 s, its watch resumed meanwhile, as in any
//! cluster of this size). The real agent does the same, and its maps equal the recorded maps
//! of the simulated node whose view is the same (s0: no containers of its own); every node
//! has every probe.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use overlay_agent::daemon::core::DARK;
use overlay_tests::{
    cluster_scale::{Bed, EtcdKind, Options},
    deployment::wait_for,
    sim_node::NodeStats,
};

/// `probes`: the endpoints written after the 5,000 (each outage writes one).
fn same_as_real_agent(bed: &Bed, probes: usize) {
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
        5000 + probes,
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
    same_as_real_agent(&bed, 3);
    let listed = |bed: &Bed| -> Vec<u64> {
        bed.full
            .iter()
            .map(|f| f.stats.listings.load(Ordering::Relaxed))
            .collect()
    };
    let stat = |bed: &Bed, stat: fn(&NodeStats) -> &AtomicU64| -> u64 {
        bed.full
            .iter()
            .map(|f| stat(&f.stats).load(Ordering::Relaxed))
            .sum()
    };
    // etcd restarted after an outage longer than DARK: its history is the one every node
    // applied, and asked to replay their last changes it says so; every node watches on from
    // where it was, with no relist.
    let before = listed(&bed);
    let (secs, up) = bed.outage(DARK + Duration::from_secs(2), false).unwrap();
    assert!(up, "etcd fell over after its restart");
    eprintln!("every node in sync {secs:.1} s after etcd's restart");
    assert_eq!(
        stat(&bed, |s| &s.replayed),
        5,
        "every full node's changes replayed"
    );
    assert_eq!(listed(&bed), before, "no full node relisted");
    assert_eq!(stat(&bed, |s| &s.relists_planned), 0, "nor planned to");
    wait_for(Duration::from_secs(10), || {
        bed.d.hosts[0]
            .log()
            .contains("(the same history): watching again where it was")
    })
    .unwrap_or_else(|_| {
        panic!(
            "the real agent resumed on the replay: {}",
            bed.d.hosts[0].log()
        )
    });
    bed.check_desired().unwrap();
    same_as_real_agent(&bed, 4);

    // The same, etcd compacted at its revision first: nothing to replay, so each node must
    // relist. 51 nodes of about 5,100 keys: a relist window of 1.6 s (core::relist_delay), so
    // each resumed its watch and relisted at a moment of it, the agent as the simulated ones.
    let before = listed(&bed);
    let (secs, up) = bed.outage(DARK + Duration::from_secs(2), true).unwrap();
    assert!(up, "etcd fell over during the relist");
    eprintln!("every node in sync {secs:.1} s after etcd's restart, compacted");
    assert_eq!(
        stat(&bed, |s| &s.relists_planned),
        5,
        "every full node put its relist off"
    );
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
        log.contains("etcd compacted the revisions to replay")
            && log.contains("watching again where it was, and relisting in"),
        "{log}"
    );
    bed.check_desired().unwrap();
    assert_eq!(
        bed.cluster_now().unwrap().endpoints.len(),
        5000 + 5,
        "endpoints and probes"
    );
}
