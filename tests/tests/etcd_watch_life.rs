//! The agent's watch (store::watch) on a three-member cluster: idle on the member that keeps
//! the node's lease alive, it sends no progress requests (the keepalive's answers prove the
//! member alive); alone on a member, it asks about once a second; and when its member hangs
//! (SIGSTOP), it is lost within seconds, the member last heard well within the agent's DARK
//! (so the node resumes elsewhere instead of relisting); beside a keepalive of a longer TTL (a
//! large cluster's), it waits for that keepalive and asks nothing.
use std::time::{Duration, Instant};

use overlay_agent::{
    daemon::{core::DARK, lease::KeepAlive, metrics::Metrics},
    store::{Store, schema::NodeRecord},
};
use overlay_tests::deployment::Deployment;

/// The suite's agents' TTL: a keepalive every 0.75 s.
const TTL: i64 = 3;

#[test]
fn an_idle_watch_asks_only_when_nothing_else_hears_its_member_and_notices_a_hang() {
    let mut d = Deployment::with_etcd_members("ewl", &[false], 3).unwrap();
    let (members, client) = (d.etcd.members(), d.etcd.client());
    let wire = d.etcd.wire().to_string();
    let etcd = &mut d.etcd;
    // Every thread of the runtime is made in the namespace that reaches etcd.
    let rt = overlay_tests::netns::runtime(&wire).unwrap();
    let (member, with_keepalive, alone, lost_after, dark) =
        overlay_tests::netns::enter(&wire, || {
            rt.block_on(async {
                let node = Store::connect(&client).await.unwrap();
                let record = NodeRecord::new("10.0.0.9".parse().unwrap(), Some(1500));
                let (lease, stream) = node.register_node("w1", &record, TTL).await.unwrap();
                let _keepalive = KeepAlive::spawn(node.clone(), stream, lease, TTL, Metrics::new());
                let from = node.history().await.unwrap().revision + 1;
                let mut watch = node.watch(from).await.unwrap();
                // A client of its own, with no lease: nothing else talks to its member.
                let other = Store::connect(&client).await.unwrap();
                let mut lonely = other.watch(from).await.unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(6), async {
                    tokio::join!(async { while watch.message().await.is_ok() {} }, async {
                        while lonely.message().await.is_ok() {}
                    })
                })
                .await;
                let member = watch.member().to_string();
                let (with_keepalive, alone) = (watch.asks(), lonely.asks());
                // Hang the watch's member; how long until the watch says so.
                let m = members.iter().position(|u| *u == member).unwrap();
                etcd.pause(m).unwrap();
                let hung = Instant::now();
                let lost = |mut w: overlay_agent::store::Watch| async move {
                    let why = tokio::time::timeout(Duration::from_secs(20), async {
                        loop {
                            if let Err(e) = w.message().await {
                                return e.to_string();
                            }
                        }
                    })
                    .await
                    .expect("a watch on a hung member was never lost");
                    (hung.elapsed(), w.heard().elapsed(), why)
                };
                // The lonely watch, too, when it is on the same member: its own requests
                // go unanswered.
                let same = lonely.member() == member;
                let ((lost_after, dark, why), alone_lost) = tokio::join!(lost(watch), async {
                    if same { Some(lost(lonely).await) } else { None }
                });
                println!("lost: {why}");
                if let Some((after, dark, why)) = alone_lost {
                    println!(
                        "the lonely watch lost after {after:?} (last heard {dark:?} before): {why}"
                    );
                    assert!(after < Duration::from_secs(5) && dark < DARK);
                }
                etcd.resume(m).unwrap();
                (member, with_keepalive, alone, lost_after, dark)
            })
        });
    println!(
        "watch on {member}: {with_keepalive} progress requests in 6 s idle beside the keepalive, \
         {alone} alone; the hung member noticed after {lost_after:?}, last heard {dark:?} before"
    );
    assert_eq!(
        with_keepalive, 0,
        "an idle watch on the keepalive's member asked for progress"
    );
    assert!(
        (2..=8).contains(&alone),
        "a watch alone on its member asked {alone} times in 6 s"
    );
    assert!(
        lost_after < Duration::from_secs(4),
        "the hung member was noticed after {lost_after:?}"
    );
    assert!(dark < DARK, "dark for {dark:?} when the watch was lost");
}

/// A cluster of over 1,000 nodes gives its nodes a longer lease (`lease::ttl_for`), renewed
/// less often (every 5 s at TTL 20): an idle watch beside the keepalive still waits for it
/// instead of asking between two renewals (which at 5,000 nodes of TTL 50 would be 3,700
/// requests a second).
#[test]
fn an_idle_watch_waits_for_a_slow_keepalive_and_asks_nothing() {
    const LONG_TTL: i64 = 20;
    let d = Deployment::new("ewlslow", &[false]).unwrap();
    let client = d.etcd.client();
    let wire = d.etcd.wire().to_string();
    let rt = overlay_tests::netns::runtime(&wire).unwrap();
    let asks = overlay_tests::netns::enter(&wire, || {
        rt.block_on(async {
            let node = Store::connect(&client).await.unwrap();
            let record = NodeRecord::new("10.0.0.9".parse().unwrap(), Some(1500));
            let (lease, stream) = node.register_node("w1", &record, LONG_TTL).await.unwrap();
            let _keepalive =
                KeepAlive::spawn(node.clone(), stream, lease, LONG_TTL, Metrics::new());
            let from = node.history().await.unwrap().revision + 1;
            let mut watch = node.watch(from).await.unwrap();
            // Two and a half renewals.
            let _ = tokio::time::timeout(Duration::from_secs(12), async {
                while watch.message().await.is_ok() {}
            })
            .await;
            watch.asks()
        })
    });
    assert_eq!(
        asks, 0,
        "an idle watch beside a keepalive every 5 s asked {asks} times in 12 s"
    );
}
