//! Least privilege in etcd (issue 25): etcd's authentication on, with the roles of
//! store/roles.rs (docs/operations.md, "etcd over TLS, with a user of its own"). Each node's
//! agent, CLI and CNI plugin work as the node's user, networks are made by the administrator's, and a node's
//! user cannot write what its node never needs to: another node's registration, state, groups
//! or names, nor a network.
use std::time::Duration;

use overlay_tests::deployment::{Deployment, ping};

#[test]
fn each_node_writes_only_what_it_needs() {
    // The agents start as their nodes' users: registering under a lease, keeping it alive and
    // listing and watching the prefix work with the node's role.
    let mut d = Deployment::with_roles("roles", &[true, true]).unwrap();
    let (h1, h2) = (d.hosts[0].name().to_string(), d.hosts[1].name().to_string());

    // A node cannot make a network: one line that says why, and nothing written.
    let out = d
        .cli_output(
            0,
            &[
                "network",
                "create",
                "blue",
                "--subnet",
                "10.73.0.0/16",
                "--vni",
                "73",
            ],
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(!d.etcd_get_prefix("networks/").unwrap().contains("blue"));

    // The administrator makes it; the nodes attach containers (slices, addresses and names
    // claimed in transactions), and they reach each other across hosts.
    d.create_network("blue", "10.73.0.0/16", 73).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    d.wait_arp_everywhere(73, &[c1.1, c2.1], true).unwrap();
    assert!(ping(d.container(c1.0), c2.1), "{}", d.hosts[0].log());
    assert!(ping(d.container(c2.0), c1.1), "{}", d.hosts[1].log());
    // The CNI plugin acts as its node (the agent's credentials, from its status).
    let c3 = overlay_tests::netns::Netns::new("ovt-rolesc3").unwrap();
    let reply = overlay_tests::runtimes::cni_add(&d, 0, "roles-c3", &c3.name, "blue").unwrap();
    assert!(reply.ok, "{reply:?}");
    // A host joins; a legacy peer is added and removed; an endpoint is removed.
    d.cli(1, &["host", "join", "--network", "blue"]).unwrap();
    d.cli(
        0,
        &[
            "peer",
            "add",
            "--network",
            "blue",
            "--ip",
            "10.73.200.1",
            "--mac",
            "02:42:0a:49:c8:01",
            "--vtep",
            "10.0.0.9",
        ],
    )
    .unwrap();
    d.cli(
        0,
        &["peer", "rm", "--network", "blue", "--ip", "10.73.200.1"],
    )
    .unwrap();

    // Longer than a lease (3 s): the keepalives go through, and the agents publish their
    // state under it.
    std::thread::sleep(Duration::from_secs(5));
    let keys = d.etcd_get_prefix("").unwrap();
    for key in [
        format!("/overlay/nodes/{h1}"),
        format!("/overlay/nodes/{h2}"),
        format!("/overlay/~state/{h1}"),
        format!("/overlay/~state/{h2}"),
        format!("/overlay/groups/{h1}"),
    ] {
        assert!(keys.contains(&key), "{key} missing:\n{keys}");
    }
    for (i, h) in d.hosts.iter().enumerate() {
        assert!(
            !h.log().contains("permission denied"),
            "h{}:\n{}",
            i + 1,
            h.log()
        );
    }
    d.cli(1, &["endpoint", "rm", "c2"]).unwrap();
    d.wait_arp_everywhere(73, &[c2.1], false).unwrap();

    // What h1's user may not write, tried directly: each refused by etcd (etcdctl logs its
    // retry before its error line).
    for key in [
        format!("/overlay/nodes/{h2}"),
        format!("/overlay/nodes/{h1}0"),
        format!("/overlay/~state/{h2}"),
        format!("/overlay/groups/{h2}"),
        // Its backends' health: h1 cannot speak for h2's (nor would anyone believe it).
        format!("/overlay/health/{h2}"),
        format!("/overlay/names/{h2}/c9"),
        "/overlay/networks/x".to_string(),
        "/elsewhere/x".to_string(),
    ] {
        let out = d.etcdctl_as(&h1, &format!("put {key} junk")).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(!out.status.success(), "{key}: {out:?}");
        assert_eq!(
            err.lines().last(),
            Some("Error: etcdserver: permission denied"),
            "{key}: {err}"
        );
        let out = d.etcdctl_as(&h1, &format!("del {key}")).unwrap();
        assert!(!out.status.success(), "del {key}: {out:?}");
    }
    // ... and what it may: its own keys, and any network's endpoints (claims are not per
    // node: see docs/operations.md for what that leaves a compromised node).
    for key in [
        format!("/overlay/names/{h1}/probe"),
        // Its own backends' health (written only once one fails: none does here).
        format!("/overlay/health/{h1}"),
        "/overlay/endpoints/blue/10.73.250.1".to_string(),
    ] {
        let out = d.etcdctl_as(&h1, &format!("put {key} junk")).unwrap();
        assert!(out.status.success(), "{key}: {out:?}");
        let out = d.etcdctl_as(&h1, &format!("del {key}")).unwrap();
        assert!(out.status.success(), "{key}: {out:?}");
    }
    // The administrator cannot pose as a node either.
    let out = d
        .etcdctl_as(
            overlay_tests::deployment::ADMIN_USER,
            &format!("put /overlay/nodes/{h1} junk"),
        )
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    // Everything still works.
    let c4 = d.add_container(1, "c4", "blue", None).unwrap();
    d.wait_arp_everywhere(73, &[c4.1], true).unwrap();
    assert!(ping(d.container(c1.0), c4.1), "{}", d.hosts[0].log());
}
