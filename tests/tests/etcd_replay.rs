//! What a real etcd answers when a node asks it to replay its last changes after an outage
//! (`Store::replays`, store/replay.rs): the same changes after a restart, so the node resumes
//! with nothing to relist; other changes after a restore from an older snapshot written past
//! the node's revision (a revision ahead of the node's, the cluster id the same: the case
//! the other checks can miss); nothing to tell by once compacted past them.
use std::time::Duration;

use overlay_agent::store::{
    Store,
    replay::{Recent, Replayed},
};
use overlay_tests::deployment::Deployment;

/// Keys of the watched range that no agent reads as a record (a name of a node of no one).
fn key(tag: &str, i: usize) -> String {
    format!("/overlay/names/nobody/{tag}{i}")
}

#[test]
fn etcd_replays_a_nodes_last_changes_after_a_restart_and_not_after_a_restore() {
    let mut d = Deployment::new("erp", &[false]).unwrap();
    let client = d.etcd.client();
    let wire = d.etcd.wire().to_string();
    let rt = overlay_tests::netns::runtime(&wire).unwrap();
    let snapshot = d.dir().join("before.db");
    overlay_tests::netns::enter(&wire, || {
        let store = rt.block_on(Store::connect(&client));
        let store = store.unwrap();
        d.etcd.snapshot(&snapshot).unwrap();
        // What a node applied after the snapshot: five changes, one a delete, noted as its
        // watch delivered them.
        let recent = rt.block_on(async {
            let from = store.history().await.unwrap().revision + 1;
            let mut watch = store.watch(from).await.unwrap();
            for i in 0..5 {
                store.put_raw(&key("a", i), "{}").await.unwrap();
            }
            store.put_raw(&key("a", 0), "{\"again\":1}").await.unwrap();
            let mut recent = Recent::default();
            let last = store.put_raw(&key("a", 9), "{}").await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let resp = watch.message().await.unwrap();
                    recent.note(&resp);
                    let seen = resp.events().iter().filter_map(|e| e.kv());
                    if seen.map(|kv| kv.mod_revision()).max() >= Some(last) {
                        break;
                    }
                }
            })
            .await
            .expect("the watch delivered the node's changes");
            recent
        });

        // A restart: the same history.
        d.etcd.stop();
        d.etcd.restart().unwrap();
        let replayed = rt.block_on(store.replays(&recent));
        assert!(
            matches!(replayed, Replayed::Same(n) if n >= 7),
            "{replayed:?}"
        );

        // A restore from the snapshot, then written past the node's revision with other
        // changes: a revision ahead of the node's, as if nothing went back.
        d.etcd.restore(&snapshot).unwrap();
        let replayed = rt.block_on(async {
            for i in 0..20 {
                store.put_raw(&key("b", i), "{}").await.unwrap();
            }
            store.replays(&recent).await
        });
        assert!(
            matches!(&replayed, Replayed::Differs(why) if why.contains("history went back")),
            "{replayed:?}"
        );

        // Compacted past the node's changes: nothing to tell by.
        d.etcd.compact().unwrap();
        let replayed = rt.block_on(store.replays(&recent));
        assert!(
            matches!(&replayed, Replayed::Unknown(why) if why.contains("compacted")),
            "{replayed:?}"
        );
    });
}
