//! Services over time: a connection through a VIP holds no state of ours, so no timer of
//! ours can end it and no agent restart can break it. Idle connections held longer than any
//! timer we have (there is none for TCP), and a thousand open connections across a restart
//! of every agent, by SIGTERM and by SIGKILL.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use aya::maps::MapData;
use overlay_common::names;
use overlay_tests::{
    deployment::Deployment,
    scenario::blue,
    service_traffic::{Held, create_service, serve_greeting, vip_of, wait_backends, wait_members},
};

const PORT: u16 = 8080;

/// Service web (PORT/tcp) on network blue: its VIP and port.
fn web(d: &Deployment) -> SocketAddr {
    let out = create_service(
        d,
        0,
        &["web", "--network", "blue", "--port", &format!("{PORT}/tcp")],
    );
    SocketAddr::from((vip_of(&out), PORT))
}

/// Deletes `conn`'s LB_PEER value on `host`, the only thing of ours a balanced TCP socket
/// has (in its own storage; it only makes getpeername show the VIP). A socket storage map is
/// keyed by a socket's fd in the caller's process, which aya's maps do not offer: the bpf
/// syscall itself. Whether there was one.
fn forget_peer(d: &Deployment, host: usize, conn: &std::net::TcpStream) -> bool {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let path = d.hosts[host].pins().map(names::LB_PEER);
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let key: i32 = conn.as_raw_fd();
    let attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: (&raw const key) as u64,
        value: 0,
        flags: 0,
    };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &raw const attr,
            size_of::<ElemAttr>() as u32,
        )
    };
    rc == 0
}

/// A connection from h1 to a backend on h2 through the VIP, idle for `hold`: half way, both
/// agents stop (SIGTERM) and start again (the socket still shows the VIP: its LB_PEER value
/// is in a pinned map) and the client's node forgets the socket's value; then the connection
/// is used, and still reaches its backend.
fn idle_connection_kept(label: &str, hold: Duration) {
    let mut d = Deployment::new(label, &[true, true]).unwrap();
    blue(&d);
    let to = web(&d);
    let (b, b_ip) = d
        .add_container_with(1, "b1", "blue", None, &["--service", "web"])
        .unwrap();
    serve_greeting(&d.container(b).name, b_ip, PORT);
    let (c, c_ip) = d.add_container(0, "c1", "blue", None).unwrap();
    let client = d.container(c).name.clone();
    wait_backends(&d, to.ip().to_string().parse().unwrap(), PORT, 1);
    wait_members(&d, &[1, 1]);

    let mut held = overlay_tests::netns::enter(&client, || Held::open(to)).unwrap();
    assert_eq!((held.backend, held.client_as_seen), (b_ip, c_ip));
    assert_eq!(
        held.stream().peer_addr().unwrap(),
        to,
        "getpeername: the VIP"
    );
    assert_eq!(held.exchange().unwrap(), b_ip);
    // No keepalive: nothing crosses the connection while it idles.
    assert!(!socket_keepalive(held.stream()));

    let started = Instant::now();
    eprintln!("holding {to} -> {b_ip} idle for {} s", hold.as_secs());
    std::thread::sleep(hold / 2);
    for h in 0..2 {
        d.stop_agent(h);
        d.restart_agent(h).unwrap();
    }
    assert_eq!(
        held.stream().peer_addr().unwrap(),
        to,
        "getpeername after both agents restarted: still the VIP"
    );
    assert!(
        forget_peer(&d, 0, held.stream()),
        "the client's socket had an LB_PEER value"
    );
    std::thread::sleep(hold.saturating_sub(started.elapsed()));

    assert_eq!(
        held.exchange()
            .unwrap_or_else(|e| panic!("after {:?} idle: {e}", started.elapsed())),
        b_ip
    );
    // Its one value of ours gone, the socket shows its real peer: the connection used
    // nothing of ours after connect().
    assert_eq!(
        held.stream().peer_addr().unwrap(),
        SocketAddr::from((b_ip, PORT))
    );
    eprintln!(
        "used after {} s idle, both agents restarted, its LB_PEER value deleted",
        started.elapsed().as_secs()
    );
}

fn socket_keepalive(s: &std::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut on: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&raw mut on).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    on != 0
}

/// Longer than any timer of ours: TCP through a VIP has none (IPVS's is 900 s).
#[test]
fn an_idle_connection_outlives_our_timers_and_an_agent_restart() {
    idle_connection_kept("sli", Duration::from_secs(30));
}

#[test]
#[ignore = "holds a connection idle for 20 minutes: run by `cargo xtask test --long`"]
fn an_idle_connection_is_kept_for_twenty_minutes() {
    idle_connection_kept("sll", Duration::from_secs(20 * 60));
}

/// Three hosts, a backend and a client on each, 1,000 connections through the VIP held open;
/// every agent stopped by SIGTERM and started, then killed by SIGKILL and started: every
/// connection still carries data both ways, to the backend it started with.
#[test]
fn a_thousand_open_connections_survive_every_agent_restarting() {
    let mut d = Deployment::new("slr", &[true, true, true]).unwrap();
    blue(&d);
    let to = web(&d);
    let vip: Ipv4Addr = to.ip().to_string().parse().unwrap();
    for (host, name) in [(0, "b1"), (1, "b2"), (2, "b3")] {
        let (i, ip) = d
            .add_container_with(host, name, "blue", None, &["--service", "web"])
            .unwrap();
        serve_greeting(&d.container(i).name, ip, PORT);
    }
    let mut clients = Vec::new();
    for (host, name) in [(0, "c1"), (1, "c2"), (2, "c3")] {
        let (i, _) = d.add_container(host, name, "blue", None).unwrap();
        clients.push(d.container(i).name.clone());
    }
    wait_backends(&d, vip, PORT, 3);
    wait_members(&d, &[2, 2, 2]);

    let mut held: Vec<Held> = Vec::new();
    for (i, ns) in clients.iter().enumerate() {
        let n = if i == 0 { 334 } else { 333 };
        let mut some = overlay_tests::netns::enter(ns, || {
            (0..n)
                .map(|k| Held::open(to).unwrap_or_else(|e| panic!("{ns} #{k} -> {to}: {e}")))
                .collect::<Vec<_>>()
        });
        held.append(&mut some);
    }
    let mut per_backend: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for h in &held {
        *per_backend.entry(h.backend).or_default() += 1;
    }
    eprintln!("1,000 open connections: {per_backend:?}");
    assert_eq!(per_backend.len(), 3, "spread over every host's backend");

    let check = |held: &mut [Held], after: &str| {
        let started = Instant::now();
        for (k, h) in held.iter_mut().enumerate() {
            let answered = h
                .exchange()
                .unwrap_or_else(|e| panic!("connection #{k} to {} {after}: {e}", h.backend));
            assert_eq!(answered, h.backend, "connection #{k} {after}");
        }
        eprintln!(
            "{after}: all {} connections answered in {} ms",
            held.len(),
            started.elapsed().as_millis()
        );
    };
    check(&mut held, "before any restart");
    for h in 0..3 {
        d.stop_agent(h);
        d.restart_agent(h).unwrap();
    }
    check(
        &mut held,
        "after every agent was stopped (SIGTERM) and started",
    );
    for h in 0..3 {
        d.kill_agent(h);
        d.restart_agent(h).unwrap();
    }
    check(
        &mut held,
        "after every agent was killed (SIGKILL) and started",
    );
    // And the restarted agents balance new connections as before.
    let fresh = overlay_tests::netns::enter(&clients[1], || Held::open(to)).unwrap();
    assert!(per_backend.contains_key(&fresh.backend));
}
