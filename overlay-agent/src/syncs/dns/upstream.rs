//! The node's own resolvers, for names outside the overlay: those /etc/resolv.conf names
//! (read again when it changes), tried in its order.
//!
//! Loopback resolvers (systemd-resolved's 127.0.0.53, a local dnsmasq) are kept: Docker must
//! skip them because a container cannot reach the host's loopback, but this resolver runs in
//! the host's namespace, where they answer, and they are what the host itself uses (split DNS,
//! a VPN's servers). Only one that cannot be reached is passed over, like any resolver that
//! does not answer: the next is tried. When every resolver in /etc/resolv.conf is a loopback
//! stub, systemd-resolved's own upstream list (/run/systemd/resolve/resolv.conf) follows
//! them, for an agent in a namespace of its own where the stub is not running.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

/// Where the node's resolvers are listed unless `run --resolv-conf` says otherwise.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the servers behind its stub.
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
/// How long one resolver has to answer; glibc waits 5 s for us, so two can be tried.
const TRY: Duration = Duration::from_secs(2);
/// Resolvers tried per query (glibc's MAXNS).
const MAX_TRIED: usize = 3;

pub struct Upstream {
    path: PathBuf,
    /// The list as last read, and the file's modification time then.
    cache: Mutex<(Option<SystemTime>, Vec<IpAddr>)>,
}

impl Upstream {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The resolvers to try, in order.
    fn servers(&self) -> Vec<IpAddr> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().expect("resolvers lock");
        if cache.0.is_none() || cache.0 != modified {
            let mut list = read(&self.path);
            if !list.is_empty() && list.iter().all(IpAddr::is_loopback) {
                list.extend(read(&PathBuf::from(RESOLVED_UPSTREAMS)));
            }
            if list.is_empty() {
                log::warn!(
                    "{}: no nameserver; names outside the overlay get SERVFAIL",
                    self.path.display()
                );
            }
            *cache = (modified, list);
        }
        cache.1.clone()
    }

    /// The answer of the first resolver that gives one to `query` (the client's bytes, sent
    /// under an ID of our own), with the client's ID put back. `exclude`: addresses never
    /// asked (the overlay's own: a node whose resolv.conf names one would ask itself).
    pub async fn forward(
        &self,
        query: &[u8],
        tcp: bool,
        exclude: impl Fn(IpAddr) -> bool,
    ) -> Result<Vec<u8>> {
        let question = Message::from_vec(query)
            .context("re-reading the query")?
            .queries;
        let mut last = None;
        let servers: Vec<IpAddr> = self
            .servers()
            .into_iter()
            .filter(|ip| !exclude(*ip))
            .take(MAX_TRIED)
            .collect();
        for server in servers {
            let server = SocketAddr::new(server, super::PORT);
            let mut ours = query.to_vec();
            ours[..2].copy_from_slice(&random_id().to_be_bytes());
            let tried = tokio::time::timeout(TRY, async {
                if tcp {
                    ask_tcp(server, &ours).await
                } else {
                    ask_udp(server, &ours, &question).await
                }
            })
            .await;
            match tried {
                Ok(Ok(mut reply)) => {
                    reply[..2].copy_from_slice(&query[..2]);
                    return Ok(reply);
                }
                Ok(Err(e)) => last = Some(e.context(format!("asking {server}"))),
                Err(_) => last = Some(anyhow::anyhow!("{server} did not answer in {TRY:?}")),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no resolver to ask")))
    }
}

/// Over UDP from a port of its own, connected (only the server's datagrams come in): the
/// first reply with our ID to our question.
async fn ask_udp(
    server: SocketAddr,
    query: &[u8],
    question: &[hickory_proto::op::Query],
) -> Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        let reply = &buf[..n];
        if n >= 2
            && reply[..2] == query[..2]
            && let Ok(m) = Message::from_vec(reply)
            && m.queries == question
        {
            return Ok(reply.to_vec());
        }
    }
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).context("query too long")?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    if reply.len() < 2 || reply[..2] != query[..2] {
        bail!("a reply to another query");
    }
    Ok(reply)
}

/// The nameservers a resolv.conf lists (resolv.conf(5)); nothing if it cannot be read.
fn read(path: &PathBuf) -> Vec<IpAddr> {
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

fn parse(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) cannot be told apart here: skipped.
            words.next()?.parse().ok()
        })
        .collect()
}

/// A query ID nobody on the path can guess (RFC 5452), from the kernel.
fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // SAFETY: getrandom writes at most the two bytes it is given.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != 2 {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return nanos as u16;
    }
    u16::from_ne_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_and_nothing_else() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver\tfd00::53\n\
                    options ndots:2\nnameserver fe80::1%eth0\nnameserver bogus\n nameserver 127.0.0.53\n";
        let want: Vec<IpAddr> = ["10.0.0.2", "fd00::53", "127.0.0.53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parse(text), want);
    }
}
