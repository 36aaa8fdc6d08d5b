//! Names (issue 30): two hosts, three networks (blue dual-stack, red, vault internal), each
//! host's agent answering its own containers on their network's gateway address. From inside a
//! container: an endpoint on the other host by its bare name and as `<name>.<network>`, A and
//! AAAA, over UDP and TCP, with TTL 0; nothing for another network's container; names outside
//! the overlay forwarded to the node's resolver (a stand-in on the underlay), except from the
//! internal network, which resolves its own names and forwards nothing; a malformed packet
//! counted, the server answering on; a name gone right after `endpoint rm` returns; the
//! namespace's resolv.conf written and removed; the resolver following a bridge made again.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use overlay_tests::{
    deployment::{Deployment, wait_for},
    dns::{Reply, Upstream, query, send_raw},
    prometheus::{http_get, sample},
    service_traffic::create_service,
};

const ETCD_WIRE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const BLUE_DNS: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const RED_DNS: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const VAULT_DNS: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);

fn metrics_addr(d: &Deployment, i: usize) -> String {
    let [a, b, c, e] = d.hosts[i].vtep;
    format!("{a}.{b}.{c}.{e}:9100")
}

/// Host `i`'s resolvers' count of queries with `outcome`.
fn counted(d: &Deployment, i: usize, outcome: &str) -> f64 {
    let (_, text) = http_get(&d.wire, &metrics_addr(d, i), "/metrics").unwrap();
    sample(
        &text,
        &format!("overlay_dns_queries_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no overlay_dns_queries_total for {outcome} in {text}"))
}

/// The IPv6 address a dual-stack network with prefix fd00:10::/64 gives `ip`.
fn blue6(ip: Ipv4Addr) -> IpAddr {
    let [a, b, c, e] = ip.octets();
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0x10,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, e]),
    ))
}

fn resolv_conf(d: &Deployment, container: usize) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns")
        .join(&d.container(container).name)
        .join("resolv.conf")
}

#[test]
fn names_resolve_across_hosts_per_network_and_vanish_with_their_endpoint() {
    let mut d = Deployment::new("nm", &[true, true]).unwrap();
    // The nodes' own resolver, as their /etc/resolv.conf would name it.
    let upstream = Upstream::start(&d.wire, ETCD_WIRE).unwrap();
    let conf = d.dir().join("upstream-resolv.conf");
    std::fs::write(&conf, format!("nameserver {ETCD_WIRE}\n")).unwrap();
    for i in 0..2 {
        d.hosts[i].run_args = vec![
            "--resolv-conf".into(),
            conf.display().to_string(),
            "--metrics".into(),
            metrics_addr(&d, i),
        ];
        d.kill_agent(i);
        d.restart_agent(i).unwrap();
    }
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    d.create_network("red", "10.20.0.0/16", 43).unwrap();
    d.create_network_with("vault", "10.30.0.0/16", 44, &["--internal"])
        .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    let r1 = d.add_container(0, "r1", "red", None).unwrap();
    let v1 = d.add_container(0, "v1", "vault", None).unwrap();
    let v2 = d.add_container(1, "v2", "vault", None).unwrap();

    // `endpoint add` told the namespace where its names are.
    let conf_a1 = std::fs::read_to_string(resolv_conf(&d, a1.0)).unwrap();
    assert!(
        conf_a1.contains("nameserver 10.10.0.1\n") && conf_a1.contains("search blue\n"),
        "{conf_a1}"
    );
    let conf_v1 = std::fs::read_to_string(resolv_conf(&d, v1.0)).unwrap();
    assert!(conf_v1.contains("nameserver 10.30.0.1\n"), "{conf_v1}");

    let ask = |c: usize, server: Ipv4Addr, name: &str, t: RecordType, tcp: bool| {
        query(d.container(c), server, name, t, tcp)
    };
    let a = |c: usize, server: Ipv4Addr, name: &str| ask(c, server, name, RecordType::A, false);
    // The resolver listens once the bridge is there and the agent's next sync has run.
    wait_for(Duration::from_secs(5), || {
        a(a1.0, BLUE_DNS, "a2").is_ok_and(|r| r.addresses == [IpAddr::V4(a2.1)])
    })
    .unwrap_or_else(|_| {
        panic!(
            "a2 never resolved from a1: {:?}\n{}",
            a(a1.0, BLUE_DNS, "a2"),
            d.hosts[0].log()
        )
    });

    // a2 lives on the other host: bare, qualified, in any case, over UDP and TCP; TTL 0.
    for tcp in [false, true] {
        for name in ["a2", "a2.blue", "A2.Blue.", "a2.blue."] {
            let r = ask(a1.0, BLUE_DNS, name, RecordType::A, tcp).unwrap();
            assert_eq!(r.rcode, ResponseCode::NoError, "{name}");
            assert!(r.authoritative, "{name}");
            assert_eq!(r.addresses, [IpAddr::V4(a2.1)], "{name} tcp={tcp}");
            assert_eq!(r.ttls, [0], "{name}");
        }
        let r = ask(a1.0, BLUE_DNS, "a2.blue", RecordType::AAAA, tcp).unwrap();
        assert_eq!(r.addresses, [blue6(a2.1)], "AAAA tcp={tcp}");
    }
    // An IPv4-only network has the name, without AAAA.
    let r = ask(r1.0, RED_DNS, "r1", RecordType::AAAA, false).unwrap();
    assert_eq!((r.rcode, r.addresses.len()), (ResponseCode::NoError, 0));

    // Another network's container is told nothing of it, bare or qualified.
    for name in ["a2", "a2.blue", "a1.blue"] {
        let r = a(r1.0, RED_DNS, name).unwrap();
        assert_eq!(r.rcode, ResponseCode::NXDomain, "{name} from red");
        assert!(r.addresses.is_empty());
    }
    // Nor is a query from blue's container to red's resolver address heard: that address is
    // on red's bridge, and blue's container is not there.
    assert!(a(a1.0, RED_DNS, "r1").is_err());

    // Names outside the overlay go to the node's resolver, and its answer comes back.
    let before = upstream.asked();
    let r = a(a1.0, BLUE_DNS, "www.example.com").unwrap();
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(r.addresses, [IpAddr::V4(Upstream::ANSWER)]);
    assert!(r.recursion_available);
    assert!(upstream.asked() > before);
    assert!(counted(&d, 0, "forwarded") >= 1.0);

    // The internal network resolves its own names, across hosts, and forwards nothing.
    wait_for(Duration::from_secs(5), || {
        a(v1.0, VAULT_DNS, "v2").is_ok_and(|r| r.addresses == [IpAddr::V4(v2.1)])
    })
    .unwrap_or_else(|_| {
        panic!(
            "v2 never resolved from v1: {:?}\n{}",
            a(v1.0, VAULT_DNS, "v2"),
            d.hosts[0].log()
        )
    });
    let r = ask(v1.0, VAULT_DNS, "v2.vault", RecordType::A, true).unwrap();
    assert_eq!(r.addresses, [IpAddr::V4(v2.1)]);
    let asked = upstream.asked();
    let refused = counted(&d, 0, "refused");
    let r: Reply = a(v1.0, VAULT_DNS, "www.example.com").unwrap();
    assert_eq!(r.rcode, ResponseCode::Refused);
    assert!(!r.recursion_available);
    assert_eq!(
        upstream.asked(),
        asked,
        "an internal network's query went out"
    );
    assert_eq!(counted(&d, 0, "refused"), refused + 1.0);
    // Its one way to the host is the resolver: another port of that address stays shut, and
    // so does port 53 of the host's other addresses. A resolver on the host's underlay
    // address answers blue's container (through its gateway), never vault's, even routed
    // there by hand.
    assert!(
        d.container(v1.0)
            .output("timeout 2 bash -c 'echo > /dev/tcp/10.30.0.1/22'")
            .is_ok_and(|o| !o.status.success())
    );
    let h1 = Ipv4Addr::from(d.hosts[0].vtep);
    let on_host = Upstream::start(&d.hosts[0].ns, h1).unwrap();
    let r = a(a1.0, h1, "www.example.com").unwrap();
    assert_eq!(r.addresses, [IpAddr::V4(Upstream::ANSWER)]);
    d.container(v1.0)
        .run(&format!("ip route add {h1}/32 via {VAULT_DNS} dev eth0"))
        .unwrap();
    assert!(a(v1.0, h1, "www.example.com").is_err());
    assert_eq!(
        on_host.asked(),
        1,
        "vault's container reached the host's other address"
    );
    drop(on_host);

    // Garbage to the resolver is counted and dropped; the resolver answers on.
    let malformed = counted(&d, 0, "malformed");
    for junk in [&b"\x00"[..], &[0xff; 64][..], b"GET / HTTP/1.1\r\n\r\n"] {
        send_raw(d.container(a1.0), BLUE_DNS, junk).unwrap();
    }
    wait_for(Duration::from_secs(2), || {
        counted(&d, 0, "malformed") >= malformed + 3.0
    })
    .unwrap_or_else(|_| panic!("malformed: {malformed} -> {}", counted(&d, 0, "malformed")));
    assert_eq!(
        a(a1.0, BLUE_DNS, "a2").unwrap().addresses,
        [IpAddr::V4(a2.1)]
    );

    // Gone from etcd, gone from the answers: asked again the moment `endpoint rm` returns,
    // allowing only the watch's delay.
    d.cli(1, &["endpoint", "rm", "a2"]).unwrap();
    let returned = Instant::now();
    let mut asked = 0;
    loop {
        asked += 1;
        let r = a(a1.0, BLUE_DNS, "a2");
        if r.as_ref().is_ok_and(|r| r.rcode == ResponseCode::NXDomain) {
            break;
        }
        assert!(
            returned.elapsed() < Duration::from_secs(1),
            "a2 still answered 1 s after endpoint rm: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "a2 answered NXDOMAIN {:.1} ms after `endpoint rm` returned (query {asked})",
        returned.elapsed().as_secs_f64() * 1000.0
    );
    for (name, t) in [("a2.blue", RecordType::A), ("a2.blue", RecordType::AAAA)] {
        let r = ask(a1.0, BLUE_DNS, name, t, false).unwrap();
        assert_eq!(r.rcode, ResponseCode::NXDomain, "{name} {t}");
    }

    // `status` says where each network's resolver listens.
    let status = d.cli(0, &["status"]).unwrap();
    assert!(
        status.contains("blue: 10.10.0.1:53 on ovbr42")
            && status.contains("vault: 10.30.0.1:53 on ovbr44"),
        "{status}"
    );

    // The namespace's resolv.conf goes with its endpoint.
    d.cli(0, &["endpoint", "rm", "a1"]).unwrap();
    assert!(!resolv_conf(&d, a1.0).exists());
    assert!(resolv_conf(&d, v1.0).exists());

    // a1 was blue's last container on h1: its bridge went with it. A new one makes the bridge
    // again (another ifindex), and the resolver follows it there.
    let a3 = d.add_container(0, "a3", "blue", None).unwrap();
    let a = |c: usize, server: Ipv4Addr, name: &str| {
        query(d.container(c), server, name, RecordType::A, false)
    };
    wait_for(Duration::from_secs(5), || {
        a(a3.0, BLUE_DNS, "a3.blue").is_ok_and(|r| r.addresses == [IpAddr::V4(a3.1)])
    })
    .unwrap_or_else(|_| {
        panic!(
            "no resolver on blue's new bridge: {:?}\n{}",
            a(a3.0, BLUE_DNS, "a3.blue"),
            d.hosts[0].log()
        )
    });
}

/// A service's name answers its VIP and `tasks.<service>` its backends, on every host; a
/// backend that leaves is gone from `tasks.` right after `endpoint rm` returns.
#[test]
fn a_service_resolves_to_its_vip_and_its_tasks_to_the_backends() {
    let mut d = Deployment::new("ns", &[true, true]).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    create_service(
        &d,
        0,
        &[
            "web",
            "--network",
            "blue",
            "--port",
            "80/tcp",
            "--vip",
            "10.10.255.10",
        ],
    );
    let b1 = d
        .add_container_with(0, "b1", "blue", None, &["--service", "web"])
        .unwrap();
    let b2 = d
        .add_container_with(1, "b2", "blue", None, &["--service", "web"])
        .unwrap();
    let client = d.add_container(1, "cl", "blue", None).unwrap();
    let ns = d.container(client.0);
    let ask = |name: &str| query(ns, BLUE_DNS, name, RecordType::A, false).unwrap();
    let vip: IpAddr = "10.10.255.10".parse().unwrap();
    for name in ["web", "web.blue", "WEB"] {
        let r = ask(name);
        assert_eq!(
            (r.rcode, r.addresses.clone()),
            (ResponseCode::NoError, vec![vip]),
            "{name}"
        );
    }
    let mut tasks = ask("tasks.web").addresses;
    tasks.sort();
    assert_eq!(tasks, [IpAddr::V4(b1.1), IpAddr::V4(b2.1)]);

    d.cli(0, &["endpoint", "rm", "b1"]).unwrap();
    // b1 left etcd before endpoint rm returned; host 2 learns it within its watch's delay.
    let took = wait_for(Duration::from_secs(1), || {
        ask("tasks.web.blue").addresses == [IpAddr::V4(b2.1)]
    })
    .expect("b1 is gone from tasks.web within 1 s");
    println!("tasks.web without b1 {took:?} after endpoint rm returned");
    d.cli(0, &["service", "rm", "web", "--network", "blue"])
        .unwrap();
    wait_for(Duration::from_secs(1), || {
        ask("web").rcode == ResponseCode::NXDomain
    })
    .expect("the service's name goes with it");
}
