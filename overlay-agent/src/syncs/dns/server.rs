//! Answering one network's containers: a query in, a response out (or nothing, for what is
//! not a query from the network). Messages are parsed and written by hickory-proto; a
//! message it refuses is dropped and counted, never answered or a crash.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::{Outcome, Resolver};
use crate::{
    model::names::{Answer, Kind},
    shared::ipam::Cidr,
};

/// What a listener serves: one network.
#[derive(Clone, Debug)]
pub struct Served {
    pub network: String,
    pub subnet: Cidr,
    pub internal: bool,
}

/// TTL of every answer: 0, so no client or cache in a container keeps a name its endpoint no
/// longer has (Swarm's stale answers: moby#30134, #36797, #41405, #42833). The resolver is on
/// the container's own host; asking it again costs a round trip over a veth.
const TTL: u32 = 0;
/// A UDP answer's limit without EDNS (RFC 1035); with EDNS, what the client says, up to ours.
const UDP_PLAIN: usize = 512;
/// The EDNS payload we offer and accept at most (the DNS flag day 2020 value: no fragments).
const UDP_EDNS: u16 = 1232;
/// Queries in flight per network over UDP (each may wait on a forward); more are dropped, and
/// the client asks again.
const UDP_IN_FLIGHT: usize = 256;
/// TCP connections per network at once, and how long one may sit idle.
const TCP_CONNECTIONS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);

pub struct Server {
    resolver: Resolver,
    served: Served,
}

impl Server {
    pub fn new(resolver: Resolver, served: Served) -> Self {
        Self { resolver, served }
    }

    /// Whether `peer` may ask: an address of the network's subnet (the socket hears only its
    /// bridge).
    fn admits(&self, peer: SocketAddr) -> bool {
        let ok = matches!(peer.ip(), IpAddr::V4(v4) if self.served.subnet.contains(v4));
        if !ok {
            self.resolver.counters.count(Outcome::Foreign);
        }
        ok
    }

    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let in_flight = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    log::debug!("network {}: DNS over UDP: {e}", self.served.network);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if !self.admits(peer) {
                continue;
            }
            let Ok(turn) = in_flight.clone().try_acquire_owned() else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (server, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                if let Some(reply) = server.respond(&query, false).await {
                    let _ = socket.send_to(&reply, peer).await;
                }
                drop(turn);
            });
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        let connections = Arc::new(Semaphore::new(TCP_CONNECTIONS));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(got) => got,
                Err(e) => {
                    log::debug!("network {}: DNS over TCP: {e}", self.served.network);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if !self.admits(peer) {
                continue;
            }
            let Ok(turn) = connections.clone().try_acquire_owned() else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.connection(stream).await;
                drop(turn);
            });
        }
    }

    /// Length-prefixed queries (RFC 1035 4.2.2, RFC 7766) until the client closes, falls idle
    /// or sends what is no query.
    async fn connection(&self, mut stream: TcpStream) {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let Some(reply) = self.respond(&query, true).await else {
                return;
            };
            let Ok(len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut out = Vec::with_capacity(reply.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&reply);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// The response to `query` (raw), or None to drop it.
    pub async fn respond(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let counters = &self.resolver.counters;
        let Some(request) = parse_query(query) else {
            counters.count(Outcome::Malformed);
            return None;
        };
        let question = request.queries[0].clone();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = !self.served.internal;
        response.add_query(question.clone());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(UDP_EDNS);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query || question.query_class() != DNSClass::IN {
            counters.count(Outcome::Refused);
            response.metadata.response_code = if request.metadata.op_code != OpCode::Query {
                ResponseCode::NotImp
            } else {
                ResponseCode::Refused
            };
            return encode(&response, &request, tcp);
        }
        // The zone as of now, read under the channel's lock, which is held for no longer (the
        // agent changes the zone in place); a change published while this query waits on a
        // forward is the next query's.
        let kind = kind_of(question.query_type());
        let (answer, overlay) = {
            let zone = self.resolver.zone.borrow();
            let answer = zone.answer(&self.served.network, &question.name().to_ascii(), kind);
            let overlay = matches!(answer, Answer::Outside).then(|| zone.subnets());
            (answer, overlay.unwrap_or_default())
        };
        match answer {
            Answer::Addresses(addrs) => {
                response.metadata.authoritative = true;
                for addr in addrs {
                    let rdata = match addr {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    response.add_answer(Record::from_rdata(question.name().clone(), TTL, rdata));
                }
                counters.count(Outcome::Answered);
            }
            Answer::Ptr(target) => {
                response.metadata.authoritative = true;
                if let Ok(target) = Name::from_ascii(format!("{target}.")) {
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                }
                counters.count(Outcome::Answered);
            }
            Answer::NxDomain => {
                response.metadata.authoritative = true;
                response.metadata.response_code = ResponseCode::NXDomain;
                counters.count(Outcome::NxDomain);
            }
            Answer::Outside if self.served.internal => {
                // Not a statement that the name does not exist (NXDOMAIN would be, and could
                // be cached as one): this network is not given the world's names.
                response.metadata.response_code = ResponseCode::Refused;
                counters.count(Outcome::Refused);
            }
            Answer::Outside => {
                let exclude = |ip: IpAddr| overlay.contains(ip);
                match self.resolver.upstream.forward(query, tcp, exclude).await {
                    Ok(reply) => {
                        counters.count(Outcome::Forwarded);
                        return Some(reply);
                    }
                    Err(e) => {
                        log::debug!("forwarding {}: {e:#}", question.name());
                        response.metadata.response_code = ResponseCode::ServFail;
                        counters.count(Outcome::ServFail);
                    }
                }
            }
        }
        encode(&response, &request, tcp)
    }
}

/// A query we answer: parses, is a query, asks exactly one question. Anything else is
/// dropped (RFC 1035 leaves a server free to; a response to a response could loop).
fn parse_query(bytes: &[u8]) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    (message.metadata.message_type == MessageType::Query && message.queries.len() == 1)
        .then_some(message)
}

fn kind_of(t: RecordType) -> Kind {
    match t {
        RecordType::A => Kind::A,
        RecordType::AAAA => Kind::Aaaa,
        RecordType::PTR => Kind::Ptr,
        RecordType::ANY => Kind::Any,
        _ => Kind::Other,
    }
}

/// The response's bytes; over UDP, cut to what the client can take (the answers dropped and
/// TC set: it asks again over TCP).
fn encode(response: &Message, request: &Message, tcp: bool) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    let limit = match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, UDP_EDNS)),
        None => UDP_PLAIN,
    };
    if tcp || bytes.len() <= limit {
        return Some(bytes);
    }
    response.truncate().to_vec().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use tokio::sync::watch;

    use super::*;
    use crate::{model::names::Zone, syncs::testing};

    fn server(internal: bool) -> Server {
        let port = crate::shared::ifnames::port_name("blue", "c1");
        let c1 = format!(
            r#"{{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"{port}"}}"#
        );
        let mut records = vec![
            ("networks/blue", r#"{"vni":42,"subnet":"10.10.0.0/16"}"#),
            ("endpoints/blue/10.10.1.2", c1.as_str()),
        ];
        if internal {
            records[0].1 = r#"{"vni":42,"subnet":"10.10.0.0/16","internal":true}"#;
        }
        let cluster = testing::cluster(&records);
        let (tx, rx) = watch::channel(Arc::new(Zone::build(&cluster, &[])));
        std::mem::forget(tx);
        Server::new(
            Resolver::new(rx, Arc::default(), "/nonexistent".into()),
            Served {
                network: "blue".into(),
                subnet: "10.10.0.0/16".parse().unwrap(),
                internal,
            },
        )
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn answers_from_the_zone_with_ttl_zero() {
        let s = server(false);
        let reply = s.respond(&query("C1.blue.", RecordType::A), false).await;
        let reply = Message::from_vec(&reply.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.answers[0].ttl, 0);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A(Ipv4Addr::new(10, 10, 1, 2)))
        );
        let reply = s.respond(&query("nope.", RecordType::A), true).await;
        let reply = Message::from_vec(&reply.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(s.resolver.counters.get(Outcome::Answered), 1);
        assert_eq!(s.resolver.counters.get(Outcome::NxDomain), 1);
    }

    #[tokio::test]
    async fn garbage_is_dropped_and_counted() {
        let s = server(false);
        let mut response = Message::from_vec(&query("c1.", RecordType::A)).unwrap();
        response.metadata.message_type = MessageType::Response;
        for bad in [
            vec![],
            vec![0; 5],
            vec![0xff; 40],
            query("c1.", RecordType::A)[..15].to_vec(),
            response.to_vec().unwrap(),
        ] {
            assert_eq!(s.respond(&bad, false).await, None, "{bad:?}");
        }
        assert_eq!(s.resolver.counters.get(Outcome::Malformed), 5);
    }

    #[test]
    fn only_the_networks_subnet_may_ask() {
        let s = server(false);
        assert!(s.admits("10.10.1.2:5353".parse().unwrap()));
        for peer in ["10.20.1.2:53", "10.0.0.1:53", "[fd00:10::a0a:102]:53"] {
            assert!(!s.admits(peer.parse().unwrap()), "{peer}");
        }
        assert_eq!(s.resolver.counters.get(Outcome::Foreign), 3);
    }

    #[tokio::test]
    async fn an_internal_network_forwards_nothing() {
        let s = server(true);
        let reply = s
            .respond(&query("example.com.", RecordType::A), false)
            .await;
        let reply = Message::from_vec(&reply.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(!reply.metadata.recursion_available);
        assert_eq!(s.resolver.counters.get(Outcome::Refused), 1);
        assert_eq!(s.resolver.counters.get(Outcome::Forwarded), 0);
        // Its own names it answers.
        let reply = s.respond(&query("c1.", RecordType::A), false).await;
        let reply = Message::from_vec(&reply.unwrap()).unwrap();
        assert_eq!(reply.answers.len(), 1);
    }
}
