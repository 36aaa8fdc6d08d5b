//! Health checks of this node's own backends: for each local backend and each TCP port of its
//! services, a TCP connect every second, from inside the backend's own network namespace to its
//! own address, with a one-second timeout. Two failures in a row make the port unhealthy, one
//! success healthy again. The result is published as `health/<node>` (daemon/publish.rs), read
//! by every node's services sync (the programs pass over the port) and by the names
//! (`tasks.<service>` leaves the backend out).
//!
//! Why from inside the namespace: it reaches every backend, those of internal networks (no
//! gateway, so the host has no address to connect from) as well, and tests exactly what the
//! container's own stack answers on its address; the path to it is the overlay's part, checked
//! by its own tests. Only the backend's node checks: it alone reaches its containers without
//! the network between (another node's verdict would mix the path with the server).
//!
//! UDP ports are not checked (no answer is owed to an empty datagram). A backend whose
//! namespace the agent cannot open (a Docker sandbox in another mount namespace) or that does
//! not hold the endpoint's interface (checked by the services sync) is not checked, and stays
//! healthy. One task does every check, at most [`MAX_CONCURRENT`] at a time; the sockets are
//! made by one thread ([`NetnsSockets`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    time::Duration,
};

use anyhow::{Result, anyhow, bail};
use futures::{StreamExt, stream};
use tokio::sync::watch;

use crate::{
    netlink::{NetnsSockets, open_netns},
    store::schema::HealthRecord,
};

/// How often each port is checked, and how long a connect may take.
pub const PERIOD: Duration = Duration::from_secs(1);
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Failures in a row that make a port unhealthy.
pub const FAILURES: u32 = 2;
/// Checks in flight at once.
pub const MAX_CONCURRENT: usize = 64;

/// A local backend to check, as the services sync found it: its namespace (by name and by
/// file, checked to hold the endpoint's interface) and its services' TCP ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub network: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    /// (device, inode) of the namespace file when it was checked: a path bound to another
    /// namespace since is not looked into.
    pub file: (u64, u64),
    pub ports: BTreeSet<u16>,
}

/// (network, address, port) of one check.
type Check = (String, Ipv4Addr, u16);

/// Starts the checker: it follows `targets` and publishes its verdicts (the failing ports)
/// on the returned channel, which changes only when a verdict does. None until
/// [`FAILURES`] rounds are done: a fresh agent (a restart) calls nothing healthy before it
/// could have called it unhealthy.
pub fn spawn(
    targets: watch::Receiver<Vec<Target>>,
) -> Result<watch::Receiver<Option<HealthRecord>>> {
    let sockets = NetnsSockets::start()?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: BTreeMap<Check, u32> = BTreeMap::new();
        let mut rounds = 0u32;
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let targets = targets.borrow().clone();
            // Owned, so that the checks' futures borrow nothing (the runtime may move them).
            let checks: Vec<(Target, u16)> = targets
                .iter()
                .flat_map(|t| t.ports.iter().map(move |p| (t.clone(), *p)))
                .collect();
            let results: Vec<(Check, Option<Result<()>>)> = stream::iter(checks)
                .map(|(t, port)| {
                    let sockets = sockets.clone();
                    async move {
                        let verdict = probe(&sockets, &t, port).await;
                        ((t.network, t.ip, port), verdict)
                    }
                })
                .buffer_unordered(MAX_CONCURRENT)
                .collect()
                .await;
            let checked: BTreeSet<&Check> = results.iter().map(|(c, _)| c).collect();
            failures.retain(|c, _| checked.contains(c));
            for (check, result) in &results {
                // No verdict (the namespace is gone or another): the count stays.
                let Some(result) = result else { continue };
                let count = failures.entry(check.clone()).or_default();
                let (net, ip, port) = check;
                match result {
                    Ok(()) => {
                        if *count >= FAILURES {
                            log::info!("backend {ip}:{port} of {net} answers again: healthy");
                        }
                        *count = 0;
                    }
                    Err(e) => {
                        *count = count.saturating_add(1);
                        if *count == FAILURES {
                            log::warn!(
                                "backend {ip}:{port} of {net}: {e:#}, {FAILURES} times in a row: unhealthy"
                            );
                        }
                    }
                }
            }
            let mut record = HealthRecord::new();
            for ((net, ip, port), _) in failures.iter().filter(|(_, n)| **n >= FAILURES) {
                record
                    .entry(net.clone())
                    .or_default()
                    .entry(*ip)
                    .or_default()
                    .insert(*port);
            }
            rounds = rounds.saturating_add(1);
            if rounds < FAILURES {
                continue;
            }
            tx.send_if_modified(|now| {
                let changed = now.as_ref() != Some(&record);
                *now = Some(record);
                changed
            });
        }
    });
    Ok(rx)
}

/// One check: None when there is nothing to check (the namespace gone or not the one checked).
async fn probe(sockets: &NetnsSockets, t: &Target, port: u16) -> Option<Result<()>> {
    let ns = open_netns(&t.netns).ok()?;
    let meta = ns.metadata().ok()?;
    if (meta.dev(), meta.ino()) != t.file {
        return None;
    }
    Some(connect(sockets, ns, t.ip, port).await)
}

async fn connect(sockets: &NetnsSockets, ns: std::fs::File, ip: Ipv4Addr, port: u16) -> Result<()> {
    let stream = sockets.tcp_socket(ns).await?;
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    match tokio::time::timeout(TIMEOUT, socket.connect(SocketAddr::from((ip, port)))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("connect: {e}")),
        Err(_) => bail!("no answer in {TIMEOUT:?}"),
    }
}
