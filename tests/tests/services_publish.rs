//! Published ports end to end: three hosts with agents, a service with backends on two of
//! them, and a client outside the overlay (a namespace on the underlay segment that is no
//! node) connecting to every node's underlay address on the published port. The backend must
//! see the outside client's own address, replies must come from the address and port the
//! client used, and a connection must stay on one backend.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use overlay_tests::{
    deployment::{Deployment, wait_for},
    scenario::blue,
    service_traffic::{create_service, spawn_in},
    topology::plug_host,
};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const TCP_PUBLISHED: u16 = 30080;
const UDP_PUBLISHED: u16 = 30053;
/// The outside client's address on the underlay segment (hosts are 10.0.0.1-3).
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
/// Bytes sent each way through one published connection.
const TRANSFER: usize = 4 << 20;

/// The byte at offset `i` of a transfer: not a repeating pattern a wrong offset would match.
fn byte_at(i: usize) -> u8 {
    ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A sum over bytes that notices one changed, swapped or missing.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A backend: each TCP connection is greeted with "<backend> <peer address>"; then "ask"
/// is answered with the backend's address, "send N" makes it read N bytes and answer their
/// digest, "recv N" makes it write N bytes. Each UDP datagram is answered with
/// "<backend> <peer address>". On `any`'s family: "0.0.0.0", or "::" for IPv6 clients.
fn serve(ns: &str, me: Ipv4Addr, any: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind((any, TCP_PORT)).unwrap();
        let udp = UdpSocket::bind((any, UDP_PORT)).unwrap();
        tx.send(()).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{me} {}", from.ip()).as_bytes(), from);
            }
        });
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let peer = conn.peer_addr().unwrap();
                let _ = writeln!(conn, "{me} {}", peer.ip());
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let ok = match words.as_slice() {
                        ["ask"] => writeln!(conn, "{me}").is_ok(),
                        ["send", n] => {
                            let mut data = vec![0; n.parse().unwrap()];
                            reader.read_exact(&mut data).is_ok()
                                && writeln!(conn, "{}", digest(&data)).is_ok()
                        }
                        ["recv", n] => {
                            let data: Vec<u8> = (0..n.parse().unwrap()).map(byte_at).collect();
                            conn.write_all(&data).is_ok()
                        }
                        _ => false,
                    };
                    if !ok {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// One connection to a published port: the stream (its reader) and what the greeting said.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    backend: Ipv4Addr,
    client_as_seen: Ipv4Addr,
}

impl Conn {
    fn open(to: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        // The peer the client's socket talks to is the address and port it connected to:
        // replies come from them.
        assert_eq!(stream.peer_addr()?, to);
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace().map(|s| s.parse::<Ipv4Addr>());
        let (Some(Ok(backend)), Some(Ok(client_as_seen))) = (parts.next(), parts.next()) else {
            return Err(std::io::Error::other(format!("greeting {line:?}")));
        };
        Ok(Conn {
            stream,
            reader,
            backend,
            client_as_seen,
        })
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn ask(&mut self) -> Ipv4Addr {
        writeln!(self.stream, "ask").unwrap();
        self.line().parse().unwrap()
    }

    /// TRANSFER bytes each way, checked end to end.
    fn transfer(&mut self) {
        let data: Vec<u8> = (0..TRANSFER).map(|i| byte_at(i ^ 0x5a5a)).collect();
        writeln!(self.stream, "send {TRANSFER}").unwrap();
        self.stream.write_all(&data).unwrap();
        assert_eq!(self.line(), digest(&data).to_string(), "upload intact");
        writeln!(self.stream, "recv {TRANSFER}").unwrap();
        let mut back = vec![0; TRANSFER];
        self.reader.read_exact(&mut back).unwrap();
        let want: Vec<u8> = (0..TRANSFER).map(byte_at).collect();
        assert!(back == want, "download intact");
    }
}

/// Service web on blue, its TCP and UDP ports published, with backends b1 and b2 on hosts 1
/// and 2 serving on `any`'s family; host 3 only serves the network (a container of its own).
/// The backends' addresses.
fn publish_web(d: &mut Deployment, any: &'static str) -> BTreeSet<Ipv4Addr> {
    create_service(
        d,
        0,
        &[
            "web",
            "--network",
            "blue",
            "--port",
            &format!("{TCP_PORT}/tcp"),
            "--port",
            &format!("{UDP_PORT}/udp"),
            "--publish",
            &format!("{TCP_PUBLISHED}:{TCP_PORT}/tcp"),
            "--publish",
            &format!("{UDP_PUBLISHED}:{UDP_PORT}/udp"),
        ],
    );
    let mut backends = BTreeSet::new();
    for (host, name) in [(0, "b1"), (1, "b2")] {
        let (i, ip) = d
            .add_container_with(host, name, "blue", None, &["--service", "web"])
            .unwrap();
        serve(&d.container(i).name, ip, any);
        backends.insert(ip);
    }
    d.add_container(2, "c3", "blue", None).unwrap();
    backends
}

fn counter(d: &Deployment, host: usize, name: &str) -> u64 {
    d.hosts[host].counters().unwrap()[name]
}

fn node(host: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, host as u8 + 1)
}

#[test]
fn published_ports_reach_backends_on_every_host_with_the_client_address() {
    let mut d = Deployment::new("pub", &[true, true, true]).unwrap();
    blue(&d);
    let tcp_publish = format!("{TCP_PUBLISHED}:{TCP_PORT}/tcp");
    let mut backends = publish_web(&mut d, "0.0.0.0");
    let outside = plug_host(&d.wire, &overlay_tests::unique("pubo"), 200).unwrap();

    // What every node serves, as `maps published` shows it.
    let shown: serde_json::Value =
        serde_json::from_str(&d.cli(2, &["maps", "published", "--json"]).unwrap()).unwrap();
    let row = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == TCP_PUBLISHED && r["proto"] == "tcp")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(row["target"], TCP_PORT, "{shown}");

    // A published port refuses what the nodes need, in one line, and nothing is made.
    for (publish, why) in [
        ("4789:8080/udp", "VXLAN"),
        ("2379:8080/tcp", "etcd"),
        (tcp_publish.as_str(), "publishes it"),
        ("30081:81/tcp", "not one of its ports"),
    ] {
        let port = if publish.ends_with("udp") {
            "8080/udp"
        } else {
            "8080/tcp"
        };
        let err = d
            .cli(
                0,
                &[
                    "service",
                    "create",
                    "other",
                    "--network",
                    "blue",
                    "--port",
                    port,
                    "--publish",
                    publish,
                ],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{publish}: {err}");
    }

    // Every node's address, published port: the backends (remote ones too), the outside
    // client's own address seen by them.
    let mut seen = BTreeSet::new();
    for host in 0..3 {
        let to = SocketAddr::from((node(host), TCP_PUBLISHED));
        wait_for(Duration::from_secs(10), || {
            outside.enter(|| Conn::open(to).is_ok())
        })
        .unwrap_or_else(|e| panic!("{to} from outside: {e}\n{}", d.hosts[host].log()));
        let mut here = BTreeSet::new();
        for _ in 0..20 {
            let c = outside
                .enter(|| Conn::open(to))
                .unwrap_or_else(|e| panic!("{to}: {e}"));
            assert_eq!(c.client_as_seen, OUTSIDE, "the backend sees the client");
            assert!(backends.contains(&c.backend), "{}", c.backend);
            here.insert(c.backend);
        }
        assert_eq!(here, backends, "{to} spreads over both backends");
        seen.extend(here.iter().copied());

        // One connection stays on its backend, and carries megabytes intact each way.
        outside.enter(|| {
            let mut c = Conn::open(to).unwrap();
            for _ in 0..10 {
                assert_eq!(c.ask(), c.backend, "a connection stays on its backend");
            }
            c.transfer();
            assert_eq!(c.ask(), c.backend);
        });
        eprintln!("{to}: backends {here:?}, {TRANSFER} bytes each way intact");
    }
    assert_eq!(seen, backends);

    // A connection held while a backend joins stays where it is; new ones reach the new one.
    let to = SocketAddr::from((node(2), TCP_PUBLISHED));
    let mut held = outside.enter(|| Conn::open(to)).unwrap();
    let (i, b3) = d
        .add_container_with(2, "b3", "blue", None, &["--service", "web"])
        .unwrap();
    serve(&d.container(i).name, b3, "0.0.0.0");
    wait_for(Duration::from_secs(10), || {
        outside.enter(|| (0..6).any(|_| Conn::open(to).is_ok_and(|c| c.backend == b3)))
    })
    .unwrap_or_else(|e| panic!("{b3} joins {to}: {e}"));
    for _ in 0..5 {
        assert_eq!(
            held.ask(),
            held.backend,
            "a held connection stays on its backend"
        );
    }
    drop(held);
    backends.insert(b3);
    for host in 0..2 {
        assert!(counter(&d, host, "published_reply") > 0);
    }
    for host in 0..3 {
        assert!(counter(&d, host, "published_in") >= 20, "host {host}");
    }

    // UDP: a reply from the address and port asked, from a backend that saw the client.
    outside.enter(|| {
        for host in 0..3 {
            let to = SocketAddr::from((node(host), UDP_PUBLISHED));
            let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock
                .send_to(b"hi", to)
                .and_then(|_| sock.recv_from(&mut buf))
                .unwrap_or_else(|e| panic!("udp {to}: {e}"));
            assert_eq!(from, to, "the reply comes from the published address");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let (backend, client) = text.split_once(' ').unwrap();
            assert!(backends.contains(&backend.parse().unwrap()), "{text}");
            assert_eq!(client, OUTSIDE.to_string(), "{text}");
        }
    });

    // A published port with no backend refuses (the host stack's RST, or its ICMP port
    // unreachable for UDP), counted.
    create_service(
        &d,
        0,
        &[
            "empty",
            "--network",
            "blue",
            "--port",
            "9000/tcp",
            "--port",
            "9001/udp",
            "--publish",
            "30090:9000/tcp",
            "--publish",
            "30091:9001/udp",
        ],
    );
    let empty = SocketAddr::from((node(0), 30090));
    let before = counter(&d, 0, "published_no_backend");
    wait_for(Duration::from_secs(5), || {
        outside.enter(|| {
            TcpStream::connect_timeout(&empty, Duration::from_secs(1))
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        }) && counter(&d, 0, "published_no_backend") > before
    })
    .unwrap_or_else(|e| panic!("{empty} refused and counted: {e}"));
    // Node 2 may not have the new service's published ports yet: until it has, its host
    // stack refuses all the same, but uncounted.
    let empty_udp = SocketAddr::from((node(1), 30091));
    let before = counter(&d, 1, "published_no_backend");
    wait_for(Duration::from_secs(5), || {
        let refused = outside.enter(|| {
            let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            sock.connect(empty_udp).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.send(b"hi").unwrap();
            sock.recv(&mut [0u8; 16])
        });
        assert_eq!(
            refused.map_err(|e| e.kind()).unwrap_err(),
            ErrorKind::ConnectionRefused,
            "{empty_udp}: the host stack's ICMP port unreachable"
        );
        counter(&d, 1, "published_no_backend") > before
    })
    .unwrap_or_else(|e| panic!("{empty_udp} refused and counted: {e}"));

    // `service rm` closes the port: the host stack answers again, and refuses.
    d.cli(0, &["service", "rm", "web", "--network", "blue"])
        .unwrap();
    let to = SocketAddr::from((node(1), TCP_PUBLISHED));
    wait_for(Duration::from_secs(5), || {
        outside.enter(|| {
            TcpStream::connect_timeout(&to, Duration::from_secs(1))
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        })
    })
    .unwrap_or_else(|e| panic!("{to} refused after service rm: {e}"));
    drop(outside);
}

/// On an IPv6 underlay, a client outside the overlay reaches every node's IPv6 address on the
/// published ports: backends on two hosts (their IPv6 addresses in the dual-stack network's
/// prefix) see the client's own IPv6 address, and replies come from the address and port it
/// asked.
#[test]
fn published_ports_over_an_ipv6_underlay() {
    use overlay_tests::topology::{Underlay, add_vtep6, vtep6};
    let mut d = Deployment::ipv6_underlay("pub6", &[true, true, true], Underlay::Veth).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    let backends = publish_web(&mut d, "::");
    let outside = plug_host(&d.wire, &overlay_tests::unique("pub6o"), 200).unwrap();
    add_vtep6(&outside, 200).unwrap();
    let client = vtep6(200);

    for host in 0..3 {
        let to = SocketAddr::from((vtep6(host + 1), TCP_PUBLISHED));
        let open = || -> std::io::Result<(Ipv4Addr, String, TcpStream)> {
            let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            assert_eq!(stream.peer_addr()?, to);
            let mut line = String::new();
            BufReader::new(stream.try_clone()?).read_line(&mut line)?;
            let (backend, seen) = line
                .trim()
                .split_once(' ')
                .ok_or_else(|| std::io::Error::other(format!("greeting {line:?}")))?;
            Ok((backend.parse().unwrap(), seen.to_string(), stream))
        };
        wait_for(Duration::from_secs(10), || outside.enter(|| open().is_ok()))
            .unwrap_or_else(|e| panic!("{to} from outside: {e}\n{}", d.hosts[host].log()));
        let mut here = BTreeSet::new();
        for _ in 0..12 {
            let (backend, seen, _) = outside.enter(open).unwrap();
            assert_eq!(seen, client.to_string(), "the backend sees the client");
            here.insert(backend);
        }
        assert_eq!(here, backends, "{to} spreads over both backends");
        // Megabytes each way, intact (the checksums of every rewritten segment right).
        outside.enter(|| {
            let (_, _, mut stream) = open().unwrap();
            let data: Vec<u8> = (0..TRANSFER).map(|i| byte_at(i ^ 0x5a5a)).collect();
            writeln!(stream, "send {TRANSFER}").unwrap();
            stream.write_all(&data).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(
                line.trim(),
                digest(&data).to_string(),
                "upload to {to} intact"
            );
            writeln!(stream, "recv {TRANSFER}").unwrap();
            let mut back = vec![0; TRANSFER];
            reader.read_exact(&mut back).unwrap();
            let want: Vec<u8> = (0..TRANSFER).map(byte_at).collect();
            assert!(back == want, "download from {to} intact");
        });
        // UDP: the reply from the address and port asked.
        outside.enter(|| {
            let to = SocketAddr::from((vtep6(host + 1), UDP_PUBLISHED));
            let sock = UdpSocket::bind(("::", 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 128];
            let (n, from) = sock
                .send_to(b"hi", to)
                .and_then(|_| sock.recv_from(&mut buf))
                .unwrap_or_else(|e| panic!("udp {to}: {e}"));
            assert_eq!(from, to, "the reply comes from the published address");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.ends_with(&client.to_string()), "{text}");
        });
    }
    for host in 0..3 {
        assert!(counter(&d, host, "published_in") >= 12, "host {host}");
    }
    for host in 0..2 {
        assert!(counter(&d, host, "published_reply") > 0, "host {host}");
    }
}
