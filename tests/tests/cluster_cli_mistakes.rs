//! The CLI against a real cluster: every mistake gets one clear line and changes nothing.

use overlay_tests::{deployment::Deployment, scenario::blue};

#[test]
fn mistakes_get_one_clear_line_and_change_nothing() {
    let mut d = Deployment::new("acerr", &[true]).unwrap();
    blue(&d);
    d.add_container(0, "x1", "blue", Some("10.10.0.5")).unwrap();
    let netns = d.container(0).name.clone();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "network",
                "create",
                "blue",
                "--subnet",
                "10.20.0.0/16",
                "--vni",
                "7",
            ],
            "already exists",
        ),
        (
            &[
                "network",
                "create",
                "red",
                "--subnet",
                "10.20.0.0/16",
                "--vni",
                "42",
            ],
            "already used by network blue",
        ),
        (
            &[
                "network",
                "create",
                "red",
                "--subnet",
                "10.20.0.0",
                "--vni",
                "7",
            ],
            "is not a CIDR",
        ),
        (
            &[
                "network",
                "create",
                "red",
                "--subnet",
                "10.20.0.0/16",
                "--vni",
                "16777216",
            ],
            "24 bits",
        ),
        (
            &[
                "endpoint",
                "add",
                "y",
                "--network",
                "blue",
                "--netns",
                "no-such-ns",
            ],
            "does not exist",
        ),
        (
            &[
                "endpoint",
                "add",
                "y",
                "--network",
                "nope",
                "--netns",
                &netns,
            ],
            "network nope does not exist",
        ),
        (
            &[
                "endpoint",
                "add",
                "y",
                "--network",
                "blue",
                "--netns",
                &netns,
                "--ip",
                "10.99.0.1",
            ],
            "not a host address of network blue",
        ),
        (
            &[
                "endpoint",
                "add",
                "y",
                "--network",
                "blue",
                "--netns",
                &netns,
                "--ip",
                "10.10.0.5",
            ],
            "already taken in network blue by container endpoint x1",
        ),
        (&["endpoint", "rm", "nobody"], "no endpoint nobody"),
        (&["network", "rm", "blue"], "still has 1 endpoint"),
        (
            &[
                "peer",
                "add",
                "--network",
                "blue",
                "--ip",
                "10.10.9.9",
                "--mac",
                "zz",
                "--vtep",
                "10.0.0.9",
            ],
            "invalid MAC",
        ),
    ];
    for (args, want) in cases {
        let out = d.cli_output(0, args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if !err.contains("For more information") {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        }
    }
    // etcd unreachable: said plainly, with the address.
    let out = d
        .cli_output(0, &["--etcd", "http://10.0.0.253:2379", "network", "ls"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etcd unreachable at http://10.0.0.253:2379"),
        "{err}"
    );
    // Nothing changed: one network, one endpoint, its interface still there.
    let eps = d.cli(0, &["endpoint", "ls", "--json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&eps)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let nets = d.cli(0, &["network", "ls", "--json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&nets)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
