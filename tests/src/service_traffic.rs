//! Traffic through a service's VIP for the tests and the benchmark: a backend that greets
//! and answers, a client connection held open, and the waits that say when every node
//! balances a service.
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use overlay_agent::dataplane::Maps;

use crate::deployment::{Deployment, wait_for};

/// Runs `f` on a thread of its own inside namespace `ns` (its sockets are the namespace's),
/// for as long as it runs: a server outlives this call.
pub fn spawn_in(ns: &str, f: impl FnOnce() + Send + 'static) {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    });
}

/// A TCP backend in `ns` on `port`: each connection is greeted with "<me> <client's address>"
/// and every line it sends is answered with "<me>", on a thread per connection (a thousand
/// held connections are a thousand parked threads). Returns once it listens.
pub fn serve_greeting(ns: &str, me: Ipv4Addr, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let Ok(peer) = conn.peer_addr() else { return };
                let mut reader = BufReader::new(conn);
                let mut out = reader.get_ref();
                if writeln!(out, "{me} {}", peer.ip()).is_err() {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    line.clear();
                    let mut out = reader.get_ref();
                    if writeln!(out, "{me}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("backend listening");
}

/// A client's connection to a `serve_greeting` backend, held open.
pub struct Held {
    reader: BufReader<TcpStream>,
    /// The backend that greeted it.
    pub backend: Ipv4Addr,
    /// The client's address as the backend saw it.
    pub client_as_seen: Ipv4Addr,
}

impl Held {
    /// Connects (from the calling thread's namespace) and reads the greeting.
    pub fn open(to: SocketAddr) -> std::io::Result<Self> {
        let conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace().map(str::parse::<Ipv4Addr>);
        match (parts.next(), parts.next()) {
            (Some(Ok(backend)), Some(Ok(client_as_seen))) => Ok(Self {
                reader,
                backend,
                client_as_seen,
            }),
            _ => Err(std::io::Error::other(format!("greeting {line:?}"))),
        }
    }

    /// One line there and its answer back: which backend answered.
    pub fn exchange(&mut self) -> std::io::Result<Ipv4Addr> {
        let mut out = self.reader.get_ref();
        writeln!(out, "again")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed by the backend"));
        }
        line.trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("answer {line:?}")))
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

/// `service create ARGS` on `host`; what it answered (its VIP: [`vip_of`]).
pub fn create_service(d: &Deployment, host: usize, args: &[&str]) -> String {
    d.cli(host, &[&["service", "create"], args].concat())
        .unwrap_or_else(|e| panic!("service create {}: {e:#}", args.join(" ")))
}

/// The VIP in `service create`'s answer
/// ("service web of network blue: VIP 10.10.255.254, ports 8080/tcp").
pub fn vip_of(out: &str) -> Ipv4Addr {
    out.split_once("VIP ")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no VIP in {out:?}"))
}

/// Every host's SERVICES has `vip:port` with `count` backends; how long that took.
pub fn wait_backends(d: &Deployment, vip: Ipv4Addr, port: u16, count: u32) -> Duration {
    wait_for(Duration::from_secs(5), || {
        d.hosts.iter().all(|h| {
            Maps::open(&h.pins()).is_ok_and(|m| !service_ids(&m, vip, port, count).is_empty())
        })
    })
    .unwrap_or_else(|e| panic!("{vip}:{port} with {count} backends everywhere: {e}"))
}

/// The ids of the service ports `vip:port` with `count` backends in `m`'s SERVICES.
fn service_ids(m: &Maps, vip: Ipv4Addr, port: u16, count: u32) -> Vec<u32> {
    m.service_entries()
        .filter_map(|e| e.ok())
        .filter(|(k, v)| k.vip == vip.octets() && k.port() == port && v.count == count)
        .map(|(_, v)| v.id)
        .collect()
}

/// Every host has service `vip:port` with `count` backends, each healthy: a backend added
/// before its server listened was found not answering by its node's first check, and gets
/// no connection until a later check passes.
pub fn wait_healthy(d: &Deployment, vip: Ipv4Addr, port: u16, count: u32) {
    wait_for(Duration::from_secs(5), || {
        d.hosts.iter().all(|h| {
            Maps::open(&h.pins()).is_ok_and(|m| {
                let ids = service_ids(&m, vip, port, count);
                !ids.is_empty()
                    && m.backend_entries().filter_map(|e| e.ok()).all(|(k, b)| {
                        !ids.contains(&k.service) || b.flags & overlay_common::BACKEND_HEALTHY != 0
                    })
            })
        })
    })
    .unwrap_or_else(|e| panic!("{vip}:{port} with {count} healthy backends everywhere: {e}"));
}

/// Every host's MEMBERS holds at least `n[host]` namespaces (their sockets are balanced).
pub fn wait_members(d: &Deployment, n: &[usize]) {
    wait_for(Duration::from_secs(5), || {
        d.hosts
            .iter()
            .zip(n)
            .all(|(h, &n)| Maps::open(&h.pins()).is_ok_and(|m| m.member_entries().count() >= n))
    })
    .unwrap_or_else(|e| panic!("members {n:?}: {e}"));
}
