//! `teardown` on a real node: everything the agent made on it is removed.
use std::time::Duration;

use overlay_tests::{
    deployment::{ping, wait_for},
    scenario::blue_pair,
};

#[test]
fn teardown_removes_everything_the_agent_made_on_its_node() {
    let (mut d, c1, c2) = blue_pair("acdown");
    d.cli(0, &["host", "join", "--network", "blue"]).unwrap();
    assert!(ping(d.container(c2.0), c1.1));
    let err = d.cli(0, &["teardown"]).unwrap_err().to_string();
    assert!(
        err.contains("is running") && err.contains("stop it first"),
        "{err}"
    );

    d.kill_agent(0);
    let out = d.cli(0, &["teardown"]).unwrap();
    assert!(out.contains("2 endpoint(s) removed from etcd"), "{out}");
    let links = d.hosts[0].ns.run("ip -o link show").unwrap();
    for name in ["ovbr42", "ove", "ovh42", "ovhp42", "ovgro4789"] {
        assert!(!links.contains(name), "{name} left: {links}");
    }
    assert!(!d.hosts[0].pins().dir().exists(), "pins left");
    let tc = d.hosts[0].ns.run("bpftool net show dev eth1").unwrap();
    assert!(
        !tc.contains("from_underlay"),
        "program still attached: {tc}"
    );
    // The other node drops what lived there.
    wait_for(Duration::from_secs(2), || {
        d.hosts[1].maps().unwrap().fdb.is_empty()
    })
    .unwrap();
    let eps = d.cli(1, &["endpoint", "ls"]).unwrap();
    assert!(!eps.contains("t1") && !eps.contains("host.blue"), "{eps}");
    // The other node's own endpoint is untouched.
    assert_eq!(d.hosts[1].maps().unwrap().endpoints.len(), 1);
}
