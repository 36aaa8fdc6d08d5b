//! A simulated node for the scale harness (cluster_scale.rs): the agent's own control plane
//! (`daemon::core::ControlPlane`: listing, watch events, fast path, full reconcile from
//! `desired`) over a `Recorder` instead of kernel maps, with the agent's lease keepalive
//! (`daemon::lease::KeepAlive`) and the agent's watch (`store::Watch`, which asks for progress
//! when quiet and moves on silence).
//!
//! Two kinds. A *full* node is the agent minus its kernel: it lists everything, keeps a copy of
//! the cluster and of its maps, and is what the memory and latency figures of "a node" come
//! from. A *light* node registers under a lease and watches the whole prefix like an agent (so
//! etcd carries one connection, one lease and one watch per node, and fans every event out to
//! each), decodes and validates each endpoint event as the agent's copy does, and notes when
//! the probes arrived; it holds no copy and never lists. What the harness reports says which
//! figure came from which kind.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use overlay_agent::{
    daemon::{
        core::ControlPlane,
        lease::{self, KeepAlive},
        metrics::Metrics,
    },
    dataplane::{state::MapState, writer::Recorder},
    model::delta::Batch,
    netlink::Link,
    shared::backoff::{Sessions, jittered},
    store::{
        EventType, Store,
        replay::{Recent, Replayed},
        schema::{self, EndpointRecord, Key, NodeRecord},
    },
};

/// The lease TTL the simulated nodes are configured with (the agent's default), which
/// `lease::ttl_for` lengthens in a large cluster as the agent's does.
pub const TTL: i64 = 10;

/// What the harness reads of a node while it runs.
#[derive(Default)]
pub struct NodeStats {
    /// The revision whose events (or listing) the node has applied.
    pub revision: AtomicI64,
    /// Listings made (a full node relists after an outage longer than DARK that etcd could
    /// not vouch for by a replay).
    pub listings: AtomicU64,
    /// Relists put off after an outage (a large cluster's, `core::relist_delay`).
    pub relists_planned: AtomicU64,
    /// Outages after which etcd replayed the node's last changes as it applied them, so its
    /// watch resumed with no relist (store::replay).
    pub replayed: AtomicU64,
    /// Sessions begun (a lease lost begins another).
    pub sessions: AtomicU64,
    /// A watch is open and answered.
    pub watching: AtomicBool,
    /// Probes seen by a light node: address -> when its event arrived.
    pub probes: Mutex<HashMap<Ipv4Addr, Instant>>,
    /// Why etcd's last replay of its changes, if any, did not vouch for its history.
    pub unreplayed: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
}

impl NodeStats {
    /// A session's end, either kind: no longer watching, its error kept, then the agent's
    /// pause (jittered, longer while sessions keep failing fast) before the next begins.
    async fn session_ended(
        &self,
        why: Result<()>,
        name: &str,
        began: Instant,
        backoff: &mut Sessions,
    ) {
        self.watching.store(false, Ordering::Relaxed);
        if let Err(e) = why {
            *self.last_error.lock().unwrap() = Some(format!("{e:#}"));
        }
        tokio::time::sleep(backoff.next(began.elapsed(), name)).await;
    }

    /// For an error message: where the node stands.
    pub fn brief(&self, name: &str) -> String {
        format!(
            "{name}: revision {}, watching {}, {} listings, {} sessions, last error {:?}",
            self.revision.load(Ordering::Relaxed),
            self.watching.load(Ordering::Relaxed),
            self.listings.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed),
            self.last_error.lock().unwrap()
        )
    }
}

/// A full node's recorder and core, for the harness to compare with `desired`.
pub struct Full {
    pub recorder: Recorder,
    pub core: Arc<Mutex<ControlPlane>>,
}

pub fn record(vtep: Ipv4Addr) -> NodeRecord {
    NodeRecord::new(IpAddr::V4(vtep), Some(1500))
}

/// Simulated nodes have no interfaces: their own endpoints are left out (no port), every
/// other one is remote, as on a node whose containers are all elsewhere.
fn no_links(_: &str) -> Option<Link> {
    None
}

/// Runs a full node until the task is aborted: sessions (lease, listing, watch) for ever.
pub async fn run_full(
    store: Store,
    name: String,
    vtep: Ipv4Addr,
    full: Arc<Full>,
    stats: Arc<NodeStats>,
) {
    let mut writer = full.recorder.clone();
    let mut backoff = Sessions::default();
    loop {
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let why = full_session(&store, &name, vtep, &full, &mut writer, &stats).await;
        stats.session_ended(why, &name, began, &mut backoff).await;
    }
}

async fn full_session(
    store: &Store,
    name: &str,
    vtep: Ipv4Addr,
    full: &Full,
    writer: &mut Recorder,
    stats: &NodeStats,
) -> Result<()> {
    let keys = store.keys().clone();
    let own_key = keys.node(name);
    let (lease, stream, ttl) = lease::register(store, name, &record(vtep), TTL).await?;
    let mut keepalive = KeepAlive::spawn(store.clone(), stream, lease, ttl, Metrics::new());
    loop {
        // As the agent's session: through an outage, on the same lease.
        let all = keys.all();
        let listing = keepalive
            .retry(name, || store.listing(&all, 0), |_| {})
            .await?;
        stats.listings.fetch_add(1, Ordering::Relaxed);
        let mut revision = listing.revision;
        // Off the runtime's workers: thousands of nodes share them here, where each agent
        // has a process of its own, and a long reconcile must not silence their watches.
        tokio::task::block_in_place(|| {
            let mut core = full.core.lock().unwrap();
            core.relisted(&keys, &listing.kvs);
            drop(listing);
            core.reconcile(&no_links, writer);
        });
        stats.revision.store(revision, Ordering::Relaxed);
        let mut pause = Duration::ZERO;
        let mut heard = Instant::now();
        // As the agent's session: dark for long, etcd replays the last changes or the node
        // relists, now or, in a large cluster, at a moment of a window.
        let mut relist_due: Option<Instant> = None;
        'rewatch: loop {
            tokio::select! {
                _ = tokio::time::sleep(jittered(pause, name)) => {}
                why = &mut keepalive.lost => return Err(lease::lost(why)),
            }
            let mut watch = match store.watch(revision + 1).await {
                Ok(w) => w,
                Err(_) => {
                    pause = (pause * 2).clamp(Duration::from_millis(500), Duration::from_secs(2));
                    continue;
                }
            };
            if relist_after_dark(store, full, stats, heard, &mut relist_due).await {
                break 'rewatch;
            }
            stats.watching.store(true, Ordering::Relaxed);
            loop {
                let resp = tokio::select! {
                    msg = watch.message() => match msg {
                        Ok(resp) => resp,
                        Err(_) => {
                            // As the agent's session: dark since the member was last heard.
                            heard = heard.max(watch.heard());
                            stats.watching.store(false, Ordering::Relaxed);
                            pause = Duration::from_millis(100);
                            continue 'rewatch;
                        }
                    },
                    why = &mut keepalive.lost => return Err(lease::lost(why)),
                    _ = until(relist_due) => break 'rewatch,
                };
                heard = Instant::now();
                let mut batch = Batch::default();
                let mut next = Some(resp);
                let mut core = full.core.lock().unwrap();
                while let Some(resp) = next.take() {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        drop(core);
                        break 'rewatch;
                    }
                    if core.apply_events(&keys, &resp, &own_key, &mut batch) {
                        bail!("this node's key was deleted");
                    }
                    if let Some(last) = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv())
                        .map(|kv| kv.mod_revision())
                        .max()
                    {
                        revision = revision.max(last);
                    }
                    next = watch.ready();
                }
                if !(batch.is_empty() && core.in_sync) && core.fast_path(&batch, writer).is_err() {
                    tokio::task::block_in_place(|| core.reconcile(&no_links, writer));
                }
                stats.revision.store(revision, Ordering::Relaxed);
            }
        }
    }
}

/// As the agent's session (Agent::relist_after_dark, but for the history checks through the
/// leader): after a watch dark since `heard`, true to relist now; etcd is asked to replay the
/// node's last changes when it was dark for long.
async fn relist_after_dark(
    store: &Store,
    full: &Full,
    stats: &NodeStats,
    heard: Instant,
    due: &mut Option<Instant>,
) -> bool {
    let recent = {
        let core = full.core.lock().unwrap();
        if !overlay_agent::daemon::core::dark(heard, due) {
            return false;
        }
        core.recent.clone()
    };
    let replayed = store.replays(&recent).await;
    stats.note_replay(&replayed);
    let was = *due;
    let now = full
        .core
        .lock()
        .unwrap()
        .relist_after_replay(heard, replayed, due);
    if *due != was {
        stats.relists_planned.fetch_add(1, Ordering::Relaxed);
    }
    now
}

impl NodeStats {
    /// Counts a replay that vouched for the node's history, keeps why one did not.
    fn note_replay(&self, replayed: &Replayed) {
        match replayed {
            Replayed::Same(_) => {
                self.replayed.fetch_add(1, Ordering::Relaxed);
            }
            Replayed::Differs(why) | Replayed::Unknown(why) => {
                *self.unreplayed.lock().unwrap() = Some(why.clone());
            }
        }
    }
}

/// Ready at `due`; never, without one.
async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs a light node until aborted: registered under a lease, watching from the moment its
/// first watch begins (as an agent's watch begins where its listing ended: it never replays
/// what came before), resuming from where it was when a watch is lost, a new lease when the
/// old one is.
pub async fn run_light(store: Store, name: String, vtep: Ipv4Addr, stats: Arc<NodeStats>) {
    // Watching from revision 0: from etcd's revision when the watch begins.
    let mut revision = -1;
    // Its last changes, for etcd to replay after an outage as it would an agent's.
    let mut recent = Recent::default();
    let mut backoff = Sessions::default();
    loop {
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let why = light_session(&store, &name, vtep, &mut revision, &mut recent, &stats).await;
        stats.session_ended(why, &name, began, &mut backoff).await;
    }
}

async fn light_session(
    store: &Store,
    name: &str,
    vtep: Ipv4Addr,
    revision: &mut i64,
    recent: &mut Recent,
    stats: &NodeStats,
) -> Result<()> {
    let keys = store.keys().clone();
    let (lease, stream, ttl) = lease::register(store, name, &record(vtep), TTL).await?;
    let mut keepalive = KeepAlive::spawn(store.clone(), stream, lease, ttl, Metrics::new());
    let mut pause = Duration::ZERO;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(jittered(pause, name)) => {}
            why = &mut keepalive.lost => return Err(lease::lost(why)),
        }
        let mut watch = match store.watch(*revision + 1).await {
            Ok(w) => w,
            Err(_) => {
                pause = (pause * 2).clamp(Duration::from_millis(500), Duration::from_secs(2));
                continue;
            }
        };
        // What an agent asks of etcd after a long outage, here once the watch is open (its
        // request may have waited the outage out): it holds nothing to relist, so the answer
        // is only counted.
        if overlay_agent::daemon::core::dark(heard, &None) {
            stats.note_replay(&store.replays(recent).await);
        }
        stats.watching.store(true, Ordering::Relaxed);
        loop {
            let resp = tokio::select! {
                msg = watch.message() => match msg {
                    Ok(resp) => resp,
                    Err(_) => {
                        heard = heard.max(watch.heard());
                        stats.watching.store(false, Ordering::Relaxed);
                        pause = Duration::from_millis(100);
                        break;
                    }
                },
                why = &mut keepalive.lost => return Err(lease::lost(why)),
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                bail!("watch canceled (compacted at {})", resp.compact_revision());
            }
            let now = Instant::now();
            heard = now;
            recent.note(&resp);
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                if event.event_type() != EventType::Put {
                    continue;
                }
                // What the agent's copy does with an endpoint's value: decode and validate.
                if let Some(Key::Endpoint { network, ip }) = keys.parse(kv.key())
                    && let Ok(ep) = schema::decode::<EndpointRecord>(kv.value())
                        .and_then(|r| r.validate(&network, &ip))
                {
                    let mut probes = stats.probes.lock().unwrap();
                    if probes.len() < 64 {
                        probes.insert(ep.ip, now);
                    }
                }
            }
            stats.revision.store(*revision, Ordering::Relaxed);
        }
    }
}

/// What `desired` wants for a node with no interfaces, from a cluster listed now.
pub fn desired_of(cluster: &overlay_agent::model::cluster::ClusterState, node: &str) -> MapState {
    overlay_agent::model::desired::desired(cluster, node, &no_links).0
}
