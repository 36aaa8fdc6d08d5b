//! The way out: containers on two hosts reach a "world" namespace on the underlay side (which
//! only the hosts can route to) by TCP and UDP through their own host's gateway, the world sees
//! the host's address, overlay traffic keeps the sender's own; an internal network has no way
//! out and its attempt is counted; networks do not route into each other; restarts adopt the
//! NAT table and teardown removes it. The same over IPv6 for dual-stack networks (egress6: the
//! world at fd99::100 on the underlay side).
use std::{
    process::{Child, Stdio},
    time::Duration,
};

use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    netns::Netns,
    topology::{Underlay, plug_host_on},
};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/echo_peer.py");
const WORLD: &str = "10.0.0.100";

/// The echo server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(ns: &Netns, addr: &str) -> Server {
    let mut child = ns
        .command("/usr/bin/python3")
        .args([SCRIPT, "serve", addr, "7000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Server(child)
}

/// The address `to`'s server saw `from` as, over `proto`; Err if there was no answer.
fn ask(from: &Netns, proto: &str, to: &str) -> Result<String, String> {
    let out = from
        .output(&format!("/usr/bin/python3 {SCRIPT} ask {proto} {to} 7000"))
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Our table's rules as `nft -j` lists them, on `ns`; None if there is no table.
fn nat_rules(ns: &Netns) -> Option<Vec<Value>> {
    let out = ns.output("nft -j list table ip overlay").unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule").cloned())
            .collect(),
    )
}

#[test]
fn containers_reach_the_world_through_their_own_host_and_internal_networks_cannot() {
    let mut d = Deployment::on("egr", &[true, true], Underlay::Veth).unwrap();
    let world = plug_host_on(
        &d.wire,
        &overlay_tests::unique("egrworld"),
        100,
        Underlay::Veth,
    )
    .unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    d.create_network("green", "10.30.0.0/16", 44).unwrap();
    d.create_network_with("red", "10.20.0.0/16", 43, &["--internal"])
        .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    let g1 = d.add_container(0, "g1", "green", None).unwrap();
    let r1 = d.add_container(0, "r1", "red", None).unwrap();
    assert!(ping(d.container(a1.0), a2.1));

    // The gateway is nobody's address, and it is the containers' default route.
    let routes = d.container(a1.0).run("ip route show default").unwrap();
    assert!(
        routes.contains("default via 10.10.0.1 dev eth0"),
        "{routes}"
    );
    assert_ne!(a1.1.to_string(), "10.10.0.1");
    let red_routes = d.container(r1.0).run("ip route show default").unwrap();
    assert!(red_routes.trim().is_empty(), "internal: {red_routes}");

    // Two containers on two hosts at once, TCP and UDP: the world sees each host's address.
    let _world_server = server(&world, WORLD);
    // The agents make the gateway, the routes and the table within a second of the endpoint.
    wait_for(Duration::from_secs(5), || {
        ask(d.container(a1.0), "udp", WORLD).is_ok() && ask(d.container(a2.0), "udp", WORLD).is_ok()
    })
    .unwrap_or_else(|_| {
        panic!(
            "no way out: {:?}\n{}",
            ask(d.container(a1.0), "udp", WORLD),
            d.hosts[0].log()
        )
    });
    for proto in ["tcp", "udp"] {
        let (c1, c2) = (d.container(a1.0), d.container(a2.0));
        let (seen1, seen2) = std::thread::scope(|s| {
            let t1 = s.spawn(|| ask(c1, proto, WORLD));
            let t2 = s.spawn(|| ask(c2, proto, WORLD));
            (t1.join().unwrap(), t2.join().unwrap())
        });
        assert_eq!(seen1.as_deref(), Ok("10.0.0.1"), "{proto} from a1");
        assert_eq!(seen2.as_deref(), Ok("10.0.0.2"), "{proto} from a2");
    }

    // Overlay traffic is never NATed: a2 sees a1's own address.
    let _a2_server = server(d.container(a2.0), "0.0.0.0");
    let a1_ip = a1.1.to_string();
    for proto in ["tcp", "udp"] {
        assert_eq!(
            ask(d.container(a1.0), proto, &a2.1.to_string()).as_deref(),
            Ok(a1_ip.as_str())
        );
    }

    // Networks do not route into each other through their gateways.
    let _g1_server = server(d.container(g1.0), "0.0.0.0");
    assert!(ask(d.container(a1.0), "udp", &g1.1.to_string()).is_err());

    // The internal network's container, even with a route and the bridge's MAC by hand, gets
    // nowhere, and its attempt is counted.
    let bridge_mac = d.hosts[0]
        .ns
        .run("cat /sys/class/net/ovbr43/address")
        .unwrap();
    d.container(r1.0)
        .run(&format!(
            "ip neigh replace 10.20.255.254 lladdr {} dev eth0 && ip route add default via 10.20.255.254 dev eth0",
            bridge_mac.trim()
        ))
        .unwrap();
    let before = d.hosts[0].counters().unwrap()["drop_internal"];
    assert!(ask(d.container(r1.0), "udp", WORLD).is_err());
    assert!(!ping(d.container(r1.0), WORLD.parse().unwrap()));
    let after = d.hosts[0].counters().unwrap()["drop_internal"];
    assert!(
        after > before,
        "drop_internal did not move ({before} -> {after}); flood: {}; stats {:?}",
        d.cli(0, &["maps", "flood"]).unwrap(),
        d.hosts[0].counters().unwrap()
    );

    // One table, the same rules, after a restart: adopted, not duplicated.
    let rules = nat_rules(&d.hosts[0].ns).expect("no table on h1");
    // Masquerade and isolation for blue and green each; red forwards nothing, has nothing
    // routed into it, and gives the host nothing but its resolver's queries.
    assert_eq!(rules.len(), 7, "{rules:?}");
    d.kill_agent(0);
    d.restart_agent(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let again = nat_rules(&d.hosts[0].ns).expect("no table after the restart");
    assert_eq!(again.len(), rules.len(), "{again:?}");
    assert_eq!(
        ask(d.container(a1.0), "tcp", WORLD).as_deref(),
        Ok("10.0.0.1")
    );
    let tables = d.hosts[0].ns.run("nft list tables").unwrap();
    assert_eq!(tables.matches("table ip overlay").count(), 1, "{tables}");

    // teardown leaves no table and no route of ours.
    d.kill_agent(0);
    d.cli(0, &["teardown"]).unwrap();
    assert!(
        nat_rules(&d.hosts[0].ns).is_none(),
        "table left after teardown"
    );
    let ours = d.hosts[0].ns.run("ip route show proto 79").unwrap();
    assert!(ours.trim().is_empty(), "routes left: {ours}");
}

/// The underlay's IPv6 prefix in egress6 (hosts fd99::<n>, the world fd99::100).
const WORLD6: &str = "fd99::100";

/// What the agents derive on blue: fd00:10::/64 followed by the IPv4 address.
fn blue6(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!(
        "fd00:10::{:x}:{:x}",
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]])
    )
}

/// The IPv6 way out of dual-stack networks: containers on two hosts reach a world address on
/// the underlay side by TCP and UDP through their own host's IPv6 gateway, masqueraded to the
/// host's address; overlay IPv6 keeps its source; dual-stack networks do not route into each
/// other over IPv6; an internal dual-stack network has no IPv6 gateway and no way out.
#[test]
fn dual_stack_containers_reach_the_world_over_ipv6_and_internal_networks_cannot() {
    let mut d = Deployment::on("egr6", &[true, true], Underlay::Veth).unwrap();
    let world = plug_host_on(
        &d.wire,
        &overlay_tests::unique("egr6world"),
        100,
        Underlay::Veth,
    )
    .unwrap();
    world
        .run(&format!("ip addr add {WORLD6}/64 dev eth1 nodad"))
        .unwrap();
    for (i, h) in d.hosts.iter().enumerate() {
        h.ns.run(&format!("ip addr add fd99::{}/64 dev eth1 nodad", i + 1))
            .unwrap();
    }
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    d.create_network_with("green", "10.30.0.0/16", 44, &["--subnet6", "fd00:30::/64"])
        .unwrap();
    d.create_network_with(
        "red",
        "10.20.0.0/16",
        43,
        &["--internal", "--subnet6", "fd00:20::/64"],
    )
    .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    let g1 = d.add_container(0, "g1", "green", None).unwrap();
    let r1 = d.add_container(0, "r1", "red", None).unwrap();

    // The IPv6 gateway (the IPv4 gateway's address in the prefix) is the default route, and
    // sits on the bridge as a /128; the internal network has neither.
    let routes = d.container(a1.0).run("ip -6 route show default").unwrap();
    assert!(
        routes.contains("default via fd00:10::a0a:1 dev eth0"),
        "{routes}"
    );
    let red_routes = d.container(r1.0).run("ip -6 route show default").unwrap();
    assert!(red_routes.trim().is_empty(), "internal: {red_routes}");

    let _world_server = server(&world, "::");
    wait_for(Duration::from_secs(5), || {
        ask(d.container(a1.0), "udp", WORLD6).is_ok()
            && ask(d.container(a2.0), "udp", WORLD6).is_ok()
    })
    .unwrap_or_else(|_| {
        panic!(
            "no IPv6 way out: {:?}\n{}",
            ask(d.container(a1.0), "udp", WORLD6),
            d.hosts[0].log()
        )
    });
    let bridge = d.hosts[0].ns.run("ip -6 addr show dev ovbr42").unwrap();
    assert!(bridge.contains("fd00:10::a0a:1/128"), "{bridge}");
    let ours = d.hosts[0].ns.run("ip -6 route show proto 79").unwrap();
    assert!(
        ours.contains(&format!("{} dev ovbr42", blue6(a1.1))),
        "{ours}"
    );
    for proto in ["tcp", "udp"] {
        let (c1, c2) = (d.container(a1.0), d.container(a2.0));
        let (seen1, seen2) = std::thread::scope(|s| {
            let t1 = s.spawn(|| ask(c1, proto, WORLD6));
            let t2 = s.spawn(|| ask(c2, proto, WORLD6));
            (t1.join().unwrap(), t2.join().unwrap())
        });
        assert_eq!(seen1.as_deref(), Ok("fd99::1"), "{proto} from a1");
        assert_eq!(seen2.as_deref(), Ok("fd99::2"), "{proto} from a2");
    }

    // Each container found the gateway by neighbour discovery on its own host: the bridge
    // there answered (a router), no other host's did.
    for (c, host) in [(a1.0, 0), (a2.0, 1)] {
        let mac = d.hosts[host]
            .ns
            .run("cat /sys/class/net/ovbr42/address")
            .unwrap();
        let neigh = d
            .container(c)
            .run("ip -6 neigh show fd00:10::a0a:1 dev eth0")
            .unwrap();
        assert!(
            neigh.contains(&format!("lladdr {} router", mac.trim())),
            "h{}'s bridge {mac}: {neigh}",
            host + 1
        );
    }

    // Overlay IPv6 is never NATed: a2 sees a1's own address.
    let _a2_server = server(d.container(a2.0), "::");
    for proto in ["tcp", "udp"] {
        assert_eq!(
            ask(d.container(a1.0), proto, &blue6(a2.1)).as_deref(),
            Ok(blue6(a1.1).as_str())
        );
    }

    // Networks do not route into each other over IPv6 through their gateways.
    let _g1_server = server(d.container(g1.0), "::");
    let g1_6 = format!(
        "fd00:30::a1e:{:x}",
        u16::from_be_bytes([g1.1.octets()[2], g1.1.octets()[3]])
    );
    let green = d.container(g1.0).run("ip -6 addr show dev eth0").unwrap();
    assert!(green.contains(&g1_6), "{green}");
    assert!(ask(d.container(a1.0), "udp", &g1_6).is_err());
    assert!(ask(d.container(a1.0), "tcp", &g1_6).is_err());

    // The internal network's container, with a route and the bridge's MAC by hand, gets
    // nowhere over IPv6 either.
    let bridge_mac = d.hosts[0]
        .ns
        .run("cat /sys/class/net/ovbr43/address")
        .unwrap();
    d.container(r1.0)
        .run(&format!(
            "ip -6 neigh replace fd00:20::ffff dev eth0 lladdr {} && ip -6 route add default via fd00:20::ffff dev eth0",
            bridge_mac.trim()
        ))
        .unwrap();
    assert!(ask(d.container(r1.0), "udp", WORLD6).is_err());
    let red = d.hosts[0].ns.run("ip -6 addr show dev ovbr43").unwrap();
    assert!(!red.contains("fd00:20::"), "internal bridge: {red}");

    // The ip6 table is adopted across a restart, and teardown removes it.
    let tables = d.hosts[0].ns.run("nft list tables").unwrap();
    assert_eq!(tables.matches("table ip6 overlay").count(), 1, "{tables}");
    d.kill_agent(0);
    d.restart_agent(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ask(d.container(a1.0), "tcp", WORLD6).as_deref(),
        Ok("fd99::1")
    );
    let tables = d.hosts[0].ns.run("nft list tables").unwrap();
    assert_eq!(tables.matches("table ip6 overlay").count(), 1, "{tables}");
    d.kill_agent(0);
    d.cli(0, &["teardown"]).unwrap();
    let tables = d.hosts[0].ns.run("nft list tables").unwrap();
    assert!(!tables.contains("overlay"), "left after teardown: {tables}");
    let ours = d.hosts[0].ns.run("ip -6 route show proto 79").unwrap();
    assert!(ours.trim().is_empty(), "routes left: {ours}");
}
