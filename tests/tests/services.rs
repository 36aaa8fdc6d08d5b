//! Services end to end: three hosts with agents, a service whose backends are containers on
//! every host, clients on every host connecting to its VIP through the socket programs.
//! Servers and clients are this test's own threads inside the containers' namespaces.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use overlay_agent::dataplane::Maps;
use overlay_tests::{
    deployment::{Deployment, wait_for},
    monitor::{Monitor, events},
    scenario::blue,
    service_traffic::{
        create_service, spawn_in, vip_of, wait_backends, wait_healthy, wait_members,
    },
};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

/// A backend: on TCP, each connection is greeted with "<backend> <client's address>" and
/// every line it sends is answered with the backend's address; on UDP, each datagram with
/// the backend's address.
fn serve(ns: &str, me: Ipv4Addr) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap();
        let udp = UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap();
        tx.send(()).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(me.to_string().as_bytes(), from);
            }
        });
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let peer = conn.peer_addr().unwrap();
                let _ = writeln!(conn, "{me} {}", peer.ip());
                let mut lines = BufReader::new(conn.try_clone().unwrap()).lines();
                while let Some(Ok(_)) = lines.next() {
                    if writeln!(conn, "{me}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// What a client saw of one connection: which backend, as whom the backend saw it, what
/// getpeername said.
struct Seen {
    backend: Ipv4Addr,
    client_as_seen: Ipv4Addr,
    peer: SocketAddr,
}

fn connect(to: SocketAddr) -> std::io::Result<(TcpStream, Seen)> {
    let conn = TcpStream::connect_timeout(&to, Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let parse = |s: Option<&str>| -> std::io::Result<Ipv4Addr> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("greeting {line:?}")))
    };
    let seen = Seen {
        backend: parse(parts.next())?,
        client_as_seen: parse(parts.next())?,
        peer: conn.peer_addr()?,
    };
    Ok((conn, seen))
}

/// `n` connections to `to` from namespace `ns`, one after another: what each saw.
fn connections(ns: &str, to: SocketAddr, n: usize) -> Vec<std::io::Result<Seen>> {
    overlay_tests::netns::enter(ns, || {
        (0..n).map(|_| connect(to).map(|(_, seen)| seen)).collect()
    })
}

fn counter(d: &Deployment, host: usize, name: &str) -> u64 {
    d.hosts[host].counters().unwrap()[name]
}

#[test]
fn a_vip_spreads_sticks_keeps_the_source_and_follows_etcd() {
    let mut d = Deployment::new("svc", &[true, true, true]).unwrap();
    blue(&d);
    let out = create_service(
        &d,
        0,
        &[
            "web",
            "--network",
            "blue",
            "--port",
            "8080/tcp",
            "--port",
            "5353/udp",
        ],
    );
    let vip = vip_of(&out);
    let tcp = SocketAddr::from((vip, TCP_PORT));
    let udp = SocketAddr::from((vip, UDP_PORT));
    // Four backends on three hosts, a client on each host.
    let mut backends = Vec::new();
    for (host, name) in [(0, "b1"), (0, "b2"), (1, "b3"), (2, "b4")] {
        let (i, ip) = d
            .add_container_with(host, name, "blue", None, &["--service", "web"])
            .unwrap();
        serve(&d.container(i).name, ip);
        backends.push((i, ip));
    }
    let mut clients = Vec::new();
    for (host, name) in [(0, "c1"), (1, "c2"), (2, "c3")] {
        let (i, ip) = d.add_container(host, name, "blue", None).unwrap();
        clients.push((d.container(i).name.clone(), ip));
    }
    wait_backends(&d, vip, TCP_PORT, 4);
    wait_members(&d, &[3, 2, 2]);
    // What a node balances, as `maps` shows it.
    let shown: serde_json::Value =
        serde_json::from_str(&d.cli(1, &["maps", "services", "--json"]).unwrap()).unwrap();
    let web_tcp = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == TCP_PORT && s["proto"] == "tcp")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        (web_tcp["vip"].as_str(), web_tcp["backends"].as_u64()),
        (Some(vip.to_string().as_str()), Some(4))
    );
    let slots: serde_json::Value =
        serde_json::from_str(&d.cli(1, &["maps", "backends", "--json"]).unwrap()).unwrap();
    let of_web: Vec<&serde_json::Value> = slots
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["service"] == web_tcp["id"])
        .collect();
    assert_eq!(of_web.len(), 4, "{slots}");
    assert!(
        of_web
            .iter()
            .all(|b| b["healthy"] == true && b["port"] == TCP_PORT)
    );
    let table = d.cli(1, &["maps", "services"]).unwrap();
    assert!(table.contains(&vip.to_string()), "{table}");
    let listed = d.cli(2, &["service", "ls", "--json"]).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["vip"], vip.to_string(), "{listed}");
    assert_eq!(
        listed[0]["backends"].as_object().unwrap().len(),
        3,
        "{listed}"
    );

    // 1,000 connections from every host's client: spread within 10%, each backend seeing the
    // client's own address, getpeername showing the VIP.
    let balanced_before: u64 = (0..3).map(|h| counter(&d, h, "lb_balanced")).sum();
    let mut per_backend: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (i, (ns, me)) in clients.iter().enumerate() {
        let n = if i == 0 { 334 } else { 333 };
        for seen in connections(ns, tcp, n) {
            let seen = seen.unwrap_or_else(|e| panic!("{me} -> {tcp}: {e}"));
            assert_eq!(
                seen.client_as_seen, *me,
                "the backend sees the client's address"
            );
            assert_eq!(seen.peer, tcp, "getpeername shows the VIP");
            *per_backend.entry(seen.backend).or_default() += 1;
        }
    }
    eprintln!("1,000 connections over 4 backends: {per_backend:?}");
    assert_eq!(per_backend.len(), 4, "{per_backend:?}");
    for (b, n) in &per_backend {
        assert!(
            (225..=275).contains(n),
            "{b}: {n} of 1,000: {per_backend:?}"
        );
    }
    let balanced: u64 = (0..3).map(|h| counter(&d, h, "lb_balanced")).sum();
    assert!(
        balanced - balanced_before >= 1000,
        "{balanced_before} -> {balanced}"
    );

    // A connection stays with its backend while backends come and go.
    let (held, first) = overlay_tests::netns::enter(&clients[0].0, || connect(tcp)).unwrap();
    let ask = |mut conn: &TcpStream| -> Ipv4Addr {
        writeln!(conn, "again").unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    };
    let (i5, b5) = d
        .add_container_with(1, "b5", "blue", None, &["--service", "web"])
        .unwrap();
    serve(&d.container(i5).name, b5);
    wait_backends(&d, vip, TCP_PORT, 5);
    assert_eq!(ask(&held), first.backend, "after a backend was added");

    // A backend gone from etcd gets no new connection within a second: its record deleted
    // (its container still serving, so one sent there would be answered and seen).
    let (gone_i, gone) = *backends
        .iter()
        .find(|(_, ip)| *ip != first.backend)
        .unwrap();
    let gone_host = ["b1", "b2", "b3", "b4"][backends.iter().position(|b| b.1 == gone).unwrap()];
    let _ = gone_i;
    let removed = Instant::now();
    d.etcd_del(&format!("endpoints/blue/{gone}")).unwrap();
    let took = wait_backends(&d, vip, TCP_PORT, 4);
    let since = removed.elapsed();
    eprintln!(
        "backend {gone} ({gone_host}) deleted from etcd: out of every host's BACKENDS {} ms after etcdctl returned ({} ms after it started)",
        took.as_millis(),
        since.as_millis()
    );
    assert!(since < Duration::from_secs(1), "{since:?}");
    for (ns, me) in &clients {
        for seen in connections(ns, tcp, 40) {
            let seen = seen.unwrap_or_else(|e| panic!("{me} -> {tcp}: {e}"));
            assert_ne!(seen.backend, gone, "a removed backend got a new connection");
        }
    }
    assert_eq!(ask(&held), first.backend, "after a backend was removed");
    drop(held);

    // UDP: each request answered, the reply appearing to come from VIP:port.
    let replies = overlay_tests::netns::enter(&clients[1].0, || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (0..8)
            .map(|_| {
                sock.send_to(b"q", udp).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
            })
            .collect::<Vec<_>>()
    });
    let mut answered_by = std::collections::BTreeSet::new();
    for (backend, from) in &replies {
        assert_eq!(*from, udp, "the reply comes from the VIP: {replies:?}");
        answered_by.insert(backend.clone());
    }
    assert!(answered_by.len() >= 3, "datagrams spread: {replies:?}");

    // Connected UDP (what a DNS client does): one backend for the socket's life, its replies
    // from the VIP, its peer the VIP; each new socket the next backend.
    let connected = overlay_tests::netns::enter(&clients[1].0, || {
        (0..4)
            .map(|_| {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                sock.connect(udp).unwrap();
                let peer = sock.peer_addr().unwrap();
                let answers: Vec<(String, SocketAddr)> = (0..3)
                    .map(|_| {
                        sock.send(b"q").unwrap();
                        let mut buf = [0u8; 64];
                        let (n, from) = sock.recv_from(&mut buf).unwrap();
                        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
                    })
                    .collect();
                (peer, answers)
            })
            .collect::<Vec<_>>()
    });
    let mut sockets_answered_by = std::collections::BTreeSet::new();
    for (peer, answers) in &connected {
        assert_eq!(*peer, udp, "a connected socket's peer is the VIP");
        for (backend, from) in answers {
            assert_eq!(*from, udp, "the reply comes from the VIP: {connected:?}");
            assert_eq!(
                backend, &answers[0].0,
                "one backend per socket: {connected:?}"
            );
        }
        sockets_answered_by.insert(answers[0].0.clone());
    }
    assert!(
        sockets_answered_by.len() >= 3,
        "sockets spread: {connected:?}"
    );
}

#[test]
fn no_backend_is_refused_and_other_networks_and_the_host_are_left_alone() {
    let mut d = Deployment::new("svn", &[true, true]).unwrap();
    blue(&d);
    d.create_network("red", "10.20.0.0/16", 43).unwrap();
    let out = create_service(&d, 0, &["empty", "--network", "blue", "--port", "9999/tcp"]);
    let vip = vip_of(&out);
    let (c1, _) = d.add_container(0, "c1", "blue", None).unwrap();
    let (r1, _) = d.add_container(0, "r1", "red", None).unwrap();
    let c1 = d.container(c1).name.clone();
    let r1 = d.container(r1).name.clone();
    wait_backends(&d, vip, 9999, 0);
    // The monitor shows each decision: a refusal with no backend, a balanced connect with its.
    let monitor = Monitor::start(
        &d,
        0,
        &[
            "--type",
            "trace",
            "--reason",
            "lb_no_backend",
            "--reason",
            "lb_balanced",
        ],
    )
    .unwrap();
    // c1 only: red has no service, so no namespace of red is looked into.
    wait_members(&d, &[1, 0]);
    // No backend: ECONNREFUSED at once, counted; never a silent drop.
    let before = counter(&d, 0, "lb_no_backend");
    let to = SocketAddr::from((vip, 9999));
    let started = Instant::now();
    let err = overlay_tests::netns::enter(&c1, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(counter(&d, 0, "lb_no_backend"), before + 1);
    // A UDP service without backends: each datagram refused too.
    let out = create_service(&d, 0, &["dns", "--network", "blue", "--port", "53/udp"]);
    let dns = SocketAddr::from((vip_of(&out), 53));
    wait_backends(&d, vip_of(&out), 53, 0);
    let err = overlay_tests::netns::enter(&c1, || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.send_to(b"q", dns).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(counter(&d, 0, "lb_no_backend"), before + 2);

    // A backend appears: a container of red and the host itself are still not translated
    // (a red container at the VIP's address would be a red address; the host is no member).
    let (b1, b1_ip) = d
        .add_container_with(1, "b1", "blue", None, &["--service", "empty"])
        .unwrap();
    let b1 = d.container(b1).name.clone();
    let (listening, ready) = std::sync::mpsc::channel();
    spawn_in(&b1, move || {
        let l = TcpListener::bind(("0.0.0.0", 9999)).unwrap();
        let _ = listening.send(());
        for c in l.incoming() {
            drop(c);
        }
    });
    // The server listens before the first connection is sent to it (else its reset is the
    // refusal), and its node's health check has not found it closed meanwhile.
    ready.recv_timeout(Duration::from_secs(5)).unwrap();
    wait_healthy(&d, vip, 9999, 1);
    let balanced = counter(&d, 0, "lb_balanced");
    overlay_tests::netns::enter(&c1, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("c1 -> {to} (backend {b1_ip}): {e}"));
    assert_eq!(counter(&d, 0, "lb_balanced"), balanced + 1);
    let from_red = overlay_tests::netns::enter(&r1, || {
        TcpStream::connect_timeout(&to, Duration::from_millis(500))
    });
    assert!(from_red.is_err(), "red reached blue's VIP");
    let host_ns = d.hosts[0].name().to_string();
    let from_host = overlay_tests::netns::enter(&host_ns, || {
        TcpStream::connect_timeout(&to, Duration::from_millis(500))
    });
    assert!(from_host.is_err(), "the host's own socket was translated");
    assert_eq!(counter(&d, 0, "lb_balanced"), balanced + 1);
    assert_eq!(counter(&d, 0, "lb_no_backend"), before + 2);

    let lines = monitor.stop().unwrap();
    let seen = events(&lines);
    let service = format!("{vip}:9999");
    let refused: Vec<_> = seen
        .iter()
        .filter(|e| e["reason"] == "lb_no_backend")
        .collect();
    assert!(
        refused.iter().any(|e| e["hook"] == "sock-lb"
            && e["socket"]["service"] == service.as_str()
            && e["socket"]["backend"].is_null()),
        "no refusal event for {service}: {lines:#?}"
    );
    let backend = format!("{b1_ip}:9999");
    assert!(
        seen.iter().any(|e| e["reason"] == "lb_balanced"
            && e["socket"]["service"] == service.as_str()
            && e["socket"]["backend"] == backend.as_str()),
        "no balanced event to {backend}: {lines:#?}"
    );
}

#[test]
fn service_mistakes_get_one_line_and_leave_nothing() {
    let mut d = Deployment::new("sve", &[true]).unwrap();
    blue(&d);
    let (_, taken) = d.add_container(0, "x1", "blue", None).unwrap();
    let taken = taken.to_string();
    let x1 = d.container(0).name.clone();
    let out = create_service(
        &d,
        0,
        &[
            "web",
            "--network",
            "blue",
            "--port",
            "80/tcp",
            "--vip",
            "10.10.200.1",
        ],
    );
    assert_eq!(vip_of(&out), Ipv4Addr::new(10, 10, 200, 1));
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80",
            ],
            "PORT/tcp",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "0/tcp",
            ],
            "port 0",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80/sctp",
            ],
            "neither tcp nor udp",
        ),
        (
            &[
                "service",
                "create",
                "a/b",
                "--network",
                "blue",
                "--port",
                "80/tcp",
            ],
            "invalid service name",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "nope",
                "--port",
                "80/tcp",
            ],
            "network nope does not exist",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80/tcp",
                "--vip",
                "10.99.0.1",
            ],
            "not a host address",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80/tcp",
                "--vip",
                "10.10.0.1",
            ],
            "gateway",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80/tcp",
                "--vip",
                &taken,
            ],
            "already taken",
        ),
        (
            &[
                "service",
                "create",
                "a",
                "--network",
                "blue",
                "--port",
                "80/tcp",
                "--vip",
                "10.10.200.1",
            ],
            "already taken",
        ),
        (
            &[
                "service",
                "create",
                "web",
                "--network",
                "blue",
                "--port",
                "80/tcp",
            ],
            "already exists",
        ),
        (
            &["service", "rm", "nope", "--network", "blue"],
            "has no service nope",
        ),
        (
            &[
                "endpoint",
                "add",
                "y1",
                "--network",
                "blue",
                "--netns",
                &x1,
                "--service",
                "nope",
            ],
            "has no service nope",
        ),
        (
            &[
                "endpoint",
                "add",
                "y1",
                "--network",
                "blue",
                "--netns",
                &x1,
                "--service",
                "a b",
            ],
            "invalid service name",
        ),
        (&["network", "rm", "blue"], "still has"),
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
    // Nothing half-done: one service, one endpoint, y1's interface never made.
    let listed: serde_json::Value =
        serde_json::from_str(&d.cli(0, &["service", "ls", "--json"]).unwrap()).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let eps: serde_json::Value =
        serde_json::from_str(&d.cli(0, &["endpoint", "ls", "--json"]).unwrap()).unwrap();
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
    assert!(
        d.etcd_get_prefix("vips/").unwrap().contains("10.10.200.1"),
        "the VIP is held"
    );
    // The VIP is never given to a container, and rm frees it.
    let (_, next) = d
        .add_container(0, "x2", "blue", Some("10.10.200.2"))
        .unwrap();
    assert_eq!(next, Ipv4Addr::new(10, 10, 200, 2));
    let out = d
        .cli_output(
            0,
            &[
                "endpoint",
                "add",
                "x3",
                "--network",
                "blue",
                "--netns",
                &x1,
                "--ip",
                "10.10.200.1",
            ],
        )
        .unwrap();
    assert!(!out.status.success(), "a container took the VIP");
    d.cli(0, &["service", "rm", "web", "--network", "blue"])
        .unwrap();
    assert!(!d.etcd_get_prefix("vips/").unwrap().contains("10.10.200.1"));
}

/// The program `bpftool` says the pinned link at `pin` runs.
fn linked_program(pin: &std::path::Path) -> u64 {
    let out = overlay_tests::netns::sh(&format!("bpftool -j link show pinned {}", pin.display()))
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["prog_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn balancing_outlives_the_agent_and_a_restart_replaces_its_links() {
    let mut d = Deployment::new("svr", &[true]).unwrap();
    blue(&d);
    let out = create_service(&d, 0, &["web", "--network", "blue", "--port", "8080/tcp"]);
    let vip = vip_of(&out);
    let tcp = SocketAddr::from((vip, TCP_PORT));
    let (b, b_ip) = d
        .add_container_with(0, "b1", "blue", None, &["--service", "web"])
        .unwrap();
    serve(&d.container(b).name, b_ip);
    let (c, _) = d.add_container(0, "c1", "blue", None).unwrap();
    let c = d.container(c).name.clone();
    wait_backends(&d, vip, TCP_PORT, 1);
    wait_members(&d, &[2]);
    let pin = d.hosts[0].pins().cgroup_link("sock_connect4");
    let before = linked_program(&pin);
    let (held, first) = overlay_tests::netns::enter(&c, || connect(tcp)).unwrap();
    assert_eq!(first.backend, b_ip);
    // The agent gone: its pinned links and maps keep balancing.
    d.kill_agent(0);
    let seen = connections(&c, tcp, 5);
    assert!(
        seen.iter()
            .all(|s| s.as_ref().is_ok_and(|s| s.backend == b_ip))
    );
    // Restarted: its programs replace the old ones, which leave the cgroup (no second
    // translation, no pile of links); the held connection never noticed.
    d.restart_agent(0).unwrap();
    wait_for(Duration::from_secs(5), || linked_program(&pin) != before).unwrap();
    let root = overlay_agent::dataplane::cgroup2_root().unwrap();
    let attached =
        overlay_tests::netns::sh(&format!("bpftool -j cgroup show {}", root.display())).unwrap();
    let ids: Vec<u64> = serde_json::from_str::<serde_json::Value>(&attached)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert!(
        !ids.contains(&before),
        "the old program is still attached: {attached}"
    );
    assert!(ids.contains(&linked_program(&pin)), "{attached}");
    let seen = connections(&c, tcp, 5);
    assert!(
        seen.iter()
            .all(|s| s.as_ref().is_ok_and(|s| s.backend == b_ip))
    );
    let mut held = held;
    writeln!(held, "again").unwrap();
    let mut line = String::new();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), b_ip.to_string());
}

/// A TCP server on `TCP_PORT` in namespace `ns` that greets like `serve`'s and can be stopped:
/// its listener is closed when `stop` is set (connections to the port are then refused).
fn serve_until(ns: &str, me: Ipv4Addr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap();
        listener.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    let _ = writeln!(conn, "{me} {}", peer.ip());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => {}
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Whether every host's BACKENDS marks `ip` healthy (`true`) or not, in its TCP slot.
fn backend_healthy_everywhere(d: &Deployment, ip: Ipv4Addr, healthy: bool) -> bool {
    d.hosts.iter().all(|h| {
        Maps::open(&h.pins()).is_ok_and(|m| {
            m.backend_entries().filter_map(|e| e.ok()).any(|(_, b)| {
                b.ip == ip.octets()
                    && b.port() == TCP_PORT
                    && (b.flags & overlay_common::BACKEND_HEALTHY != 0) == healthy
            })
        })
    })
}

/// Health: a backend whose server stops answers no new connection within the checks' time
/// (two failed connects a second apart, measured), leaves `tasks.`, shows in `service ls`, and
/// comes back when it listens again; another node's claim about it is not believed.
#[test]
fn an_unanswering_backend_is_passed_over_until_it_answers_again() {
    use std::sync::{Arc, atomic::AtomicBool};
    let mut d = Deployment::new("svh", &[true, true]).unwrap();
    blue(&d);
    let out = create_service(&d, 0, &["web", "--network", "blue", "--port", "8080/tcp"]);
    let vip = vip_of(&out);
    let tcp = SocketAddr::from((vip, TCP_PORT));
    let (i1, b1) = d
        .add_container_with(0, "b1", "blue", None, &["--service", "web"])
        .unwrap();
    let (i2, b2) = d
        .add_container_with(1, "b2", "blue", None, &["--service", "web"])
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    serve_until(&d.container(i1).name, b1, stop.clone());
    serve(&d.container(i2).name, b2);
    let (ic, _) = d.add_container(1, "c1", "blue", None).unwrap();
    let client = d.container(ic).name.clone();
    wait_backends(&d, vip, TCP_PORT, 2);
    wait_members(&d, &[1, 2]);
    let reached = |n: usize| -> BTreeMap<Ipv4Addr, usize> {
        let mut by = BTreeMap::new();
        for seen in connections(&client, tcp, n) {
            let seen = seen.unwrap_or_else(|e| panic!("-> {tcp}: {e}"));
            *by.entry(seen.backend).or_default() += 1;
        }
        by
    };
    let tasks = || {
        overlay_tests::dns::query(
            d.container(ic),
            Ipv4Addr::new(10, 10, 0, 1),
            "tasks.web",
            hickory_proto::rr::RecordType::A,
            false,
        )
        .map(|r| {
            let mut a = r.addresses;
            a.sort();
            a
        })
        .unwrap_or_default()
    };
    assert_eq!(reached(10).len(), 2);

    // Host 1 claims host 0's backend fails: not believed (a node speaks for its own only).
    d.etcd_put(
        &format!("health/{}", d.hosts[1].name()),
        &format!(r#"{{"blue":{{"{b1}":[{TCP_PORT}]}}}}"#),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(backend_healthy_everywhere(&d, b1, true));
    assert_eq!(reached(10).len(), 2, "a forged claim moved no connection");
    assert_eq!(tasks().len(), 2);
    d.etcd_del(&format!("health/{}", d.hosts[1].name()))
        .unwrap();

    // b1's server stops: within the checks' time no host sends it a new connection.
    let stopped = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(Duration::from_secs(4), || {
        backend_healthy_everywhere(&d, b1, false)
    })
    .unwrap_or_else(|e| panic!("b1 unhealthy everywhere: {e}\n{}", d.hosts[0].log()));
    let took = stopped.elapsed();
    eprintln!(
        "b1's server stopped: passed over by every host after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(reached(20).keys().collect::<Vec<_>>(), [&b2]);
    assert_eq!(tasks(), [std::net::IpAddr::V4(b2)]);
    let ls = d.cli(1, &["service", "ls"]).unwrap();
    assert!(
        ls.contains(&format!("{b1} unhealthy (8080/tcp not answering)")),
        "{ls}"
    );
    let ls: serde_json::Value =
        serde_json::from_str(&d.cli(1, &["service", "ls", "--json"]).unwrap()).unwrap();
    assert_eq!(ls[0]["health"][b2.to_string()], "healthy", "{ls}");

    // It listens again: healthy within a check.
    let stop = Arc::new(AtomicBool::new(false));
    serve_until(&d.container(i1).name, b1, stop.clone());
    let listening = Instant::now();
    wait_for(Duration::from_secs(3), || {
        backend_healthy_everywhere(&d, b1, true)
    })
    .expect("b1 healthy again everywhere");
    eprintln!(
        "b1 listening again: balanced to by every host after {} ms",
        listening.elapsed().as_millis()
    );
    assert_eq!(reached(10).len(), 2);
    wait_for(Duration::from_secs(1), || tasks().len() == 2).expect("b1 back in tasks.web");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// fd00:10::/64 followed by the IPv4 address: every address of a dual-stack network, a
/// service's IPv6 VIP included, as the agent derives it.
fn v6(ip: Ipv4Addr) -> std::net::Ipv6Addr {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0xfd, 0, 0, 0x10]);
    a[12..].copy_from_slice(&ip.octets());
    std::net::Ipv6Addr::from(a)
}

/// Dual stack: a service's IPv6 VIP (its IPv4 VIP in the network's prefix) is what its name
/// answers for AAAA, and a connection to it reaches a backend's IPv6 address on either host,
/// the backend seeing the client's own IPv6 address and the client seeing the VIP as its peer;
/// UDP too, each reply shown as from the VIP.
#[test]
fn a_dual_stack_service_balances_over_ipv6_across_hosts() {
    let mut d = Deployment::new("sv6", &[true, true]).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    let out = create_service(
        &d,
        0,
        &[
            "web",
            "--network",
            "blue",
            "--port",
            "8080/tcp",
            "--port",
            "5353/udp",
        ],
    );
    let vip = vip_of(&out);
    let vip6 = SocketAddr::from((v6(vip), TCP_PORT));
    let udp6 = SocketAddr::from((v6(vip), UDP_PORT));
    let mut backends = Vec::new();
    for (host, name) in [(0, "b1"), (1, "b2")] {
        let (i, ip) = d
            .add_container_with(host, name, "blue", None, &["--service", "web"])
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_in(&d.container(i).name, move || {
            let listener = TcpListener::bind(("::", TCP_PORT)).unwrap();
            let udp = UdpSocket::bind(("::", UDP_PORT)).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(v6(ip).to_string().as_bytes(), from);
                }
            });
            tx.send(()).unwrap();
            for mut conn in listener.incoming().flatten() {
                let peer = conn.peer_addr().unwrap();
                let _ = writeln!(conn, "{} {}", v6(ip), peer.ip());
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        backends.push(v6(ip));
    }
    let (ic, c1) = d.add_container(0, "c1", "blue", None).unwrap();
    let client = d.container(ic).name.clone();
    wait_backends(&d, vip, TCP_PORT, 2);
    wait_members(&d, &[2, 1]);
    // The backends' IPv6 addresses answer once their duplicate address detection is done.
    for b in &backends {
        wait_for(Duration::from_secs(5), || {
            d.container(ic)
                .run(&format!("ping -6 -c 1 -W 1 {b}"))
                .is_ok()
        })
        .unwrap_or_else(|_| panic!("c1 reaches {b}"));
    }

    let aaaa = overlay_tests::dns::query(
        d.container(ic),
        Ipv4Addr::new(10, 10, 0, 1),
        "web",
        hickory_proto::rr::RecordType::AAAA,
        false,
    )
    .unwrap();
    assert_eq!(aaaa.addresses, [std::net::IpAddr::V6(v6(vip))]);

    let seen: Vec<(String, String, SocketAddr)> = overlay_tests::netns::enter(&client, || {
        (0..20)
            .map(|_| {
                let conn = TcpStream::connect_timeout(&vip6, Duration::from_secs(1))
                    .unwrap_or_else(|e| panic!("-> {vip6}: {e}"));
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = String::new();
                BufReader::new(conn.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let mut parts = line.split_whitespace().map(str::to_string);
                (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    conn.peer_addr().unwrap(),
                )
            })
            .collect()
    });
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for (backend, client_as_seen, peer) in &seen {
        assert_eq!(
            *client_as_seen,
            v6(c1).to_string(),
            "the client's own address"
        );
        assert_eq!(*peer, vip6, "getpeername shows the IPv6 VIP");
        *per_backend.entry(backend.clone()).or_default() += 1;
    }
    eprintln!("20 connections to {vip6}: {per_backend:?}");
    let expected: BTreeMap<String, usize> = backends.iter().map(|b| (b.to_string(), 10)).collect();
    assert_eq!(per_backend, expected);

    // A dual-stack socket connecting to the IPv4 VIP as `::ffff:VIP` (as Java's do) is
    // balanced too: only the `6` hook sees it.
    let mapped = SocketAddr::from((vip.to_ipv6_mapped(), TCP_PORT));
    // (The backends greet with their IPv6 address whatever the connection's family.)
    let greeting: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    let via_mapped = overlay_tests::netns::enter(&client, || {
        (0..4)
            .map(|_| {
                let conn = TcpStream::connect_timeout(&mapped, Duration::from_secs(1))
                    .unwrap_or_else(|e| panic!("-> {mapped}: {e}"));
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = String::new();
                BufReader::new(conn.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                (line, conn.peer_addr().unwrap())
            })
            .collect::<Vec<_>>()
    });
    for (line, peer) in &via_mapped {
        assert_eq!(*peer, mapped, "getpeername shows the mapped VIP");
        let mut parts = line.split_whitespace();
        let backend = parts.next().unwrap_or_default();
        assert!(greeting.iter().any(|b| b == backend), "{line}");
        assert_eq!(
            parts.next(),
            Some(c1.to_ipv6_mapped().to_string().as_str()),
            "the backend sees the client's IPv4 address: {line}"
        );
    }

    // UDP over IPv6: each datagram balanced (sendmsg6), each reply from the VIP (recvmsg6).
    let replies = overlay_tests::netns::enter(&client, || {
        let sock = UdpSocket::bind("[::]:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (0..4)
            .map(|_| {
                sock.send_to(b"q", udp6).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
            })
            .collect::<Vec<_>>()
    });
    let mut answered_by = std::collections::BTreeSet::new();
    for (backend, from) in &replies {
        assert_eq!(
            *from, udp6,
            "the reply comes from the IPv6 VIP: {replies:?}"
        );
        answered_by.insert(backend.clone());
    }
    assert_eq!(answered_by.len(), 2, "datagrams spread: {replies:?}");
}
