//! What the agent's watch hears: every key of the layout but the map digests
//! (`~state/<node>`). Every node publishes its digest whenever its maps change, so as an event
//! for every other node one change of the cluster was N² events (25 million at 5,000 nodes)
//! that no agent reads; only `doctor --cluster` does, with a read of its own.
use std::time::Duration;

use overlay_agent::store::{
    Store,
    schema::{NodeRecord, NodeStateRecord},
};
use overlay_tests::deployment::Deployment;

#[test]
fn a_nodes_digest_is_no_event_for_the_others_and_the_keys_after_it_in_the_layout_are() {
    let d = Deployment::new("ewr", &[false]).unwrap();
    let client = d.etcd.client();
    let wire = d.etcd.wire().to_string();
    let rt = overlay_tests::netns::runtime(&wire).unwrap();
    let heard: Vec<String> = overlay_tests::netns::enter(&wire, || {
        rt.block_on(async {
            let store = Store::connect(&client).await.unwrap();
            let record = NodeRecord::new("10.0.0.9".parse().unwrap(), Some(1500));
            let (lease, _stream) = store.register_node("w1", &record, 10).await.unwrap();
            let from = store.history().await.unwrap().revision + 1;
            let mut watch = store.watch(from).await.unwrap();
            let state = NodeStateRecord {
                revision: from,
                digest: "9f2c000000000000".into(),
                entries: 3,
            };
            store.put_state("w1", &state, lease).await.unwrap();
            // The last keys of the layout that agents read, on either side of the digests.
            store.put_raw("/overlay/slices/blue/x", "{}").await.unwrap();
            store
                .put_raw("/overlay/vips/blue/10.9.0.1", "{}")
                .await
                .unwrap();
            let mut heard = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                while !heard.iter().any(|k: &String| k.contains("/vips/")) {
                    let resp = watch.message().await.unwrap();
                    heard.extend(
                        resp.events()
                            .iter()
                            .filter_map(|e| e.kv())
                            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()),
                    );
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the vips key never came; heard {heard:?}"));
            // The digest is in etcd, where doctor --cluster reads it.
            assert_eq!(store.node_states().await.unwrap()["w1"].entries, 3);
            heard
        })
    });
    assert_eq!(
        heard,
        ["/overlay/slices/blue/x", "/overlay/vips/blue/10.9.0.1"],
        "the digest was not heard, the keys around it were"
    );
}
