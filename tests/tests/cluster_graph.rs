//! `cluster graph`: the cluster drawn from etcd, as DOT and through Graphviz as SVG.
use overlay_tests::deployment::Deployment;

#[test]
fn the_graph_shows_every_host_endpoint_and_network_and_dot_renders_it() {
    let mut d = Deployment::new("gr", &[true, true]).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    d.create_network("red", "10.20.0.0/16", 43).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    let c3 = d.add_container(1, "c3", "red", None).unwrap();
    let peer = [
        "--network",
        "red",
        "--ip",
        "10.20.99.9",
        "--mac",
        "02:42:0a:14:63:09",
    ];
    d.cli(
        0,
        &[&["peer", "add"][..], &peer, &["--vtep", "10.0.0.9"]].concat(),
    )
    .unwrap();

    let dot = d.cli(0, &["cluster", "graph"]).unwrap();
    for (host, vtep) in [(0, "10.0.0.1"), (1, "10.0.0.2")] {
        let label = format!("node {}\\nVTEP {vtep}", d.hosts[host].name());
        assert!(dot.contains(&label), "{label} in\n{dot}");
    }
    assert!(dot.contains("legacy VTEP 10.0.0.9"), "{dot}");
    for (net, ip) in [("blue", c1.1), ("blue", c2.1), ("red", c3.1)] {
        let edge = format!("\"ep:{net}/{ip}\" -> \"net:{net}\"");
        assert!(dot.contains(&edge), "{edge} in\n{dot}");
    }
    assert!(
        dot.contains("\"ep:red/10.20.99.9\" -> \"net:red\""),
        "{dot}"
    );

    let svg = d.cli(0, &["cluster", "graph", "--format", "svg"]).unwrap();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for text in [
        "c1",
        "c3",
        "legacy VTEP",
        "10.20.99.9",
        "VNI 42",
        "10.20.0.0/16",
    ] {
        assert!(svg.contains(text), "{text} in the SVG");
    }
}
