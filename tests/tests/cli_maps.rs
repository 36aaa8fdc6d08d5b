//! `overlay-agent maps ...` against a node's real pinned maps.
use overlay_agent::{
    cli::inspect::{Table, render},
    dataplane::PinDir,
};
use overlay_common::{Endpoint, Network, deliver, vtep};
use overlay_tests::{
    fixture::{Node, TEST_PIN_ROOT},
    require_root, unique,
};

#[test]
fn maps_print_as_tables_and_json() {
    require_root();
    let node = Node::load(&unique("cli")).unwrap();
    let mut maps = node.maps();
    maps.set_network(42, Network::new(4789, [0; 12])).unwrap();
    maps.set_fdb(42, [2, 0x42, 10, 10, 2, 2], vtep::from_v4([10, 0, 0, 2]))
        .unwrap();
    maps.set_arp(42, [10, 10, 2, 2], [2, 0x42, 10, 10, 2, 2])
        .unwrap();
    maps.set_vtep(42, vtep::from_v4([10, 0, 0, 2])).unwrap();
    maps.set_local_endpoint(Endpoint {
        ifindex: 7,
        vni: 42,
        mac: [2, 0x42, 10, 10, 1, 2],
        deliver: deliver::PEER,
        ip: [10, 10, 1, 2],
    })
    .unwrap();
    let pins = node.pins();

    assert_eq!(
        render(pins, Table::Fdb, false).unwrap(),
        "VNI  MAC                VTEP\n42   02:42:0a:0a:02:02  10.0.0.2\n"
    );
    let arp: serde_json::Value =
        serde_json::from_str(&render(pins, Table::Arp, true).unwrap()).unwrap();
    assert_eq!(
        arp.as_array().unwrap().len(),
        2,
        "the remote and the local endpoint: {arp}"
    );
    assert_eq!(arp[0]["ip"], "10.10.1.2");
    assert_eq!(arp[1]["mac"], "02:42:0a:0a:02:02");
    let eps: serde_json::Value =
        serde_json::from_str(&render(pins, Table::Endpoints, true).unwrap()).unwrap();
    assert_eq!(eps[0]["ifindex"], 7);
    assert_eq!(eps[0]["kind"], "container");
    assert!(
        render(pins, Table::Vteps, false)
            .unwrap()
            .contains("42   10.0.0.2")
    );
    assert!(
        render(pins, Table::Networks, false)
            .unwrap()
            .contains("42   4789")
    );
    let stats: serde_json::Value =
        serde_json::from_str(&render(pins, Table::Stats, true).unwrap()).unwrap();
    assert!(
        stats
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["counter"] == "encap" && c["packets"] == 0)
    );
}

#[test]
fn a_missing_map_is_a_one_line_error_that_names_it() {
    require_root();
    let node = unique("nonode");
    let pins = PinDir::new(TEST_PIN_ROOT, &node).unwrap();
    let err = format!("{:#}", render(&pins, Table::Fdb, false).unwrap_err());
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains("map FDB at"), "names the map: {err}");
    assert!(
        err.contains(&format!(
            "{TEST_PIN_ROOT}/{node}/maps-v{}/FDB",
            overlay_agent::dataplane::pins::LAYOUT_VERSION
        )),
        "says where: {err}"
    );
}

#[test]
fn a_networks_port_follows_into_the_fdb_and_vtep_values() {
    require_root();
    let node = Node::load(&unique("port")).unwrap();
    let mut maps = node.maps();
    let net = |port| Network::new(port, [0; 12]);
    // Learned before the network exists: port 0, which the programs treat as "not served".
    maps.set_fdb(42, [2, 0x42, 10, 10, 2, 2], vtep::from_v4([10, 0, 0, 2]))
        .unwrap();
    maps.set_vtep(42, vtep::from_v4([10, 0, 0, 2])).unwrap();
    let port = |maps: &overlay_agent::dataplane::Maps| {
        let (_, fdb) = maps.fdb_entries().next().unwrap().unwrap();
        let (_, vtep) = maps.vtep_entries().next().unwrap().unwrap();
        (fdb.port, vtep)
    };
    assert_eq!(port(&maps), (0, 0));
    maps.set_network(42, net(4789)).unwrap();
    assert_eq!(port(&maps), (4789, 4789));
    maps.set_network(42, net(8472)).unwrap();
    assert_eq!(port(&maps), (8472, 8472));
    maps.remove_network(42).unwrap();
    assert_eq!(port(&maps), (0, 0));
}
