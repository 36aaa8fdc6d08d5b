//! A DNS client for the tests (hickory-proto's messages over plain sockets), run from inside a
//! namespace, and a stand-in for a node's upstream resolver that answers every A query with
//! one address and counts what it was asked.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

use crate::netns::Netns;

/// How long a query waits for its answer.
const WAIT: Duration = Duration::from_secs(2);

/// What a resolver answered.
#[derive(Clone, Debug)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub recursion_available: bool,
    /// The addresses of the A and AAAA records answered, in order.
    pub addresses: Vec<IpAddr>,
    pub ttls: Vec<u32>,
}

/// Asks `server`:53 for `name`'s records of type `t` from inside `ns`, over TCP or UDP.
pub fn query(ns: &Netns, server: Ipv4Addr, name: &str, t: RecordType, tcp: bool) -> Result<Reply> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, t));
    let bytes = m.to_vec()?;
    let reply = ns.enter(|| exchange(server, &bytes, tcp))?;
    let reply = Message::from_vec(&reply).context("the reply does not parse")?;
    // The name comes back as the resolver writes it (with the root label).
    let same = |a: &Query, b: &Query| {
        a.query_type() == b.query_type()
            && a.name().to_ascii().trim_end_matches('.')
                == b.name().to_ascii().trim_end_matches('.')
    };
    if reply.metadata.id != m.metadata.id
        || reply.queries.len() != 1
        || !same(&reply.queries[0], &m.queries[0])
    {
        bail!("a reply to another query: {reply:?}");
    }
    let addresses = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    Ok(Reply {
        rcode: reply.metadata.response_code,
        authoritative: reply.metadata.authoritative,
        recursion_available: reply.metadata.recursion_available,
        addresses,
        ttls: reply.answers.iter().map(|r| r.ttl).collect(),
    })
}

fn exchange(server: Ipv4Addr, bytes: &[u8], tcp: bool) -> Result<Vec<u8>> {
    let to = SocketAddr::from((server, 53));
    if tcp {
        use std::io::{Read as _, Write as _};
        let mut s = TcpStream::connect_timeout(&to, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        s.write_all(&out)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut reply)?;
        return Ok(reply);
    }
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(WAIT))?;
    s.connect(to)?;
    s.send(bytes)?;
    let mut buf = vec![0u8; 65535];
    let n = s
        .recv(&mut buf)
        .with_context(|| format!("no answer from {to}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Sends `bytes` to `server`:53 over UDP from inside `ns`, expecting nothing back.
pub fn send_raw(ns: &Netns, server: Ipv4Addr, bytes: &[u8]) -> Result<()> {
    ns.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(bytes, (server, 53))?;
        Ok(())
    })
}

/// A resolver on `addr`:53 (UDP) in a namespace: every A query gets [`Upstream::ANSWER`].
pub struct Upstream {
    pub asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

    pub fn start(ns: &Netns, addr: Ipv4Addr) -> Result<Self> {
        // A socket stays in the namespace it was made in, whichever thread then uses it.
        let socket = ns.enter(|| UdpSocket::bind((addr, 53)))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let asked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.message_type = MessageType::Response;
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                for query in &q.queries {
                    r.add_query(query.clone());
                    if query.query_type() == RecordType::A {
                        r.add_answer(Record::from_rdata(
                            query.name().clone(),
                            300,
                            RData::A(A(Self::ANSWER)),
                        ));
                    }
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        Ok(Self {
            asked,
            stop,
            thread: Some(thread),
        })
    }

    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
