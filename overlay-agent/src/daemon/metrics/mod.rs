//! `run --metrics ADDR`: `/metrics` in the Prometheus text format, `/healthz` and `/readyz`,
//! served by a task of its own, to the host and never to the overlay ([`admission`]); at most
//! [`WALKS_AT_ONCE`] scrapes walk the maps at once.
//!
//! One owner: everything here is read at scrape time from what already exists — the pinned
//! maps (STATS, their contents and capacities), the pinned links, and the status the agent
//! publishes after every change of it — so no counter lives anywhere else. The agent only
//! records what it alone knows (how long each reconcile took, when etcd last renewed its lease)
//! through [`Metrics`], a cheap handle. A scrape never waits for the agent: it opens the maps
//! by their pins on a blocking thread of its own, and takes the published state under a lock
//! held only to clone it.
mod admission;
mod format;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use overlay_common::Counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

pub use self::admission::OverlaySubnets;
use crate::{
    dataplane::{Maps, PinDir, maps::pinned_capacity, pins::attachments},
    status::StatusFile,
    store::health::Probe,
    syncs::dns,
};

/// Scrapes that may walk the maps at once ([`Walkers`]). Each walk reads every entry with a
/// syscall; unbounded, a burst of requests was a burst of threads and memory (50 at once made
/// 50 threads). A scraper is one Prometheus or two; more wait their turn.
const WALKS_AT_ONCE: usize = 2;
/// How long a scrape waits for its turn before it is answered 503 (Prometheus' own scrape
/// timeout is 10 s by default).
const WALK_WAIT: Duration = Duration::from_secs(2);

/// The maps whose entries, capacity and failed writes are exported: those the reconcile
/// writes entry by entry.
fn exported() -> impl Iterator<Item = &'static str> {
    overlay_common::maps::reconciled().map(|m| m.name)
}

/// Which reconcile ran: the fast path (only other nodes' endpoints changed) or the full one.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileKind {
    Full,
    Fast,
}

impl ReconcileKind {
    fn label(self) -> &'static str {
        match self {
            ReconcileKind::Full => "full",
            ReconcileKind::Fast => "fast",
        }
    }
}

/// What the agent publishes for scrapes and readiness.
#[derive(Clone, Debug, Default)]
struct Published {
    status: StatusFile,
    /// Maps of another layout being rebuilt: the new ones do not forward yet.
    rebuilding: bool,
    /// When the lease etcd last renewed runs out (None: no lease, or etcd said it expired).
    lease_expires: Option<Instant>,
    /// Each etcd member as last probed (store/health.rs).
    etcd_members: Probe,
}

/// The agent's side: records reconcile durations and publishes its state. Clones share it.
#[derive(Clone)]
pub struct Metrics {
    published: Arc<Mutex<Published>>,
    /// Whose connections are refused: see [`admission`].
    overlay: Arc<Mutex<OverlaySubnets>>,
    reconcile: Family<ReconcileLabels, Histogram, fn() -> Histogram>,
    /// The resolvers' queries by outcome (syncs/dns/), counted where they are answered.
    dns: Arc<dns::Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // 100 µs (a fast-path batch) to ~26 s (a full reconcile of a very large cluster).
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        }
        Self {
            published: Arc::default(),
            overlay: Arc::default(),
            reconcile: Family::new_with_constructor(histogram),
            dns: Arc::default(),
        }
    }

    /// The counters the node's resolvers count their queries into.
    pub fn dns(&self) -> Arc<dns::Counters> {
        self.dns.clone()
    }

    pub fn reconciled(&self, kind: ReconcileKind, took: Duration) {
        self.reconcile
            .get_or_create(&ReconcileLabels { kind: kind.label() })
            .observe(took.as_secs_f64());
    }

    /// The status as the agent just wrote it, and whether it is rebuilding maps.
    pub fn publish(&self, status: &StatusFile, rebuilding: bool) {
        let mut p = self.published.lock().expect("metrics state lock");
        p.status = status.clone();
        p.rebuilding = rebuilding;
    }

    /// The cluster's networks as they are now: connections from their subnets are refused.
    pub fn overlay_networks(&self, subnets: OverlaySubnets) {
        *self.overlay.lock().expect("overlay subnets lock") = subnets;
    }

    /// The agent's prober saw the etcd members so.
    pub fn etcd_probed(&self, probe: Probe) {
        self.published
            .lock()
            .expect("metrics state lock")
            .etcd_members = probe;
    }

    /// What the prober last saw (the status file carries it too).
    pub fn last_etcd_probe(&self) -> Probe {
        self.published
            .lock()
            .expect("metrics state lock")
            .etcd_members
            .clone()
    }

    /// etcd answered a keepalive: the lease lives `ttl` seconds more (0 or less: it expired).
    pub fn lease_renewed(&self, ttl: i64) {
        let expires = (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl as u64));
        self.published
            .lock()
            .expect("metrics state lock")
            .lease_expires = expires;
    }
}

/// Binds `addr` now, so that a bad or taken address stops the agent before it touches anything.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: binding the metrics address"))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` from a task of its own, for as long
/// as the process runs.
pub fn spawn(listener: tokio::net::TcpListener, metrics: Metrics, pins: PinDir, underlay: String) {
    let mut registry = Registry::default();
    registry.register_with_unit(
        "overlay_reconcile_duration",
        "How long reconciles took, by kind: fast (only other nodes' endpoints changed) or full; _count is how many ran",
        Unit::Seconds,
        metrics.reconcile.clone(),
    );
    let node = Node {
        pins: pins.clone(),
        underlay: underlay.clone(),
        published: metrics.published.clone(),
        dns: metrics.dns.clone(),
    };
    registry.register_collector(Box::new(node.clone()));
    let walkers = Walkers::start(Arc::new(registry));
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let walkers = walkers.clone();
                let accept = headers.get(axum::http::header::ACCEPT);
                let openmetrics = format::wants_openmetrics(accept.and_then(|a| a.to_str().ok()));
                async move { scrape(walkers, openmetrics).await }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let node = node.clone();
                async move {
                    match node.readiness() {
                        Ok(why) => (StatusCode::OK, why + "\n"),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why + "\n"),
                    }
                }
            }),
        );
    if let Ok(addr) = listener.local_addr() {
        log::info!("serving /metrics, /healthz and /readyz on http://{addr}");
    }
    let listener = admission::Guarded {
        listener,
        overlay: metrics.overlay.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::warn!("the metrics server stopped: {e}");
        }
    });
}

/// The threads that walk the maps for scrapes: [`WALKS_AT_ONCE`] of them, made once. The
/// collector reads maps with one syscall per entry, which must not hold up the runtime's
/// workers, and a fixed set of threads bounds the walks by construction (a blocking pool grows
/// a thread per request waiting). A scrape waits [`WALK_WAIT`] at most for its turn, else it is
/// answered 503; its turn goes with the walk, so a client that hangs up frees it only once its
/// walk is done or skipped.
#[derive(Clone)]
struct Walkers {
    jobs: std::sync::mpsc::Sender<Walk>,
    turns: Arc<tokio::sync::Semaphore>,
}

struct Walk {
    _turn: tokio::sync::OwnedSemaphorePermit,
    reply: tokio::sync::oneshot::Sender<Result<String, std::fmt::Error>>,
}

impl Walkers {
    fn start(registry: Arc<Registry>) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Walk>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..WALKS_AT_ONCE {
            let (queue, registry) = (queue.clone(), registry.clone());
            let walker = move || {
                loop {
                    let Ok(walk) = queue.lock().expect("metrics walk queue").recv() else {
                        return;
                    };
                    if walk.reply.is_closed() {
                        continue; // its client hung up while it waited
                    }
                    let mut text = String::new();
                    let encoded = prometheus_client::encoding::text::encode(&mut text, &registry)
                        .map(|()| text);
                    let _ = walk.reply.send(encoded);
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("metrics-walk{i}"))
                .spawn(walker)
            {
                log::warn!("metrics: starting a walker thread: {e}");
            }
        }
        Self {
            jobs,
            turns: Arc::new(tokio::sync::Semaphore::new(WALKS_AT_ONCE)),
        }
    }

    /// The registry encoded by a walker; Err(why not) when none was free in time.
    async fn walk(&self) -> Result<Result<String, std::fmt::Error>, String> {
        let busy = || format!("busy: {WALKS_AT_ONCE} scrapes are reading the maps; try again");
        let turn = tokio::time::timeout(WALK_WAIT, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || "the metrics walkers are gone".to_string();
        self.jobs
            .send(Walk { _turn: turn, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

async fn scrape(walkers: Walkers, openmetrics: bool) -> impl IntoResponse {
    match walkers.walk().await {
        Ok(Ok(text)) if openmetrics => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, format::OPENMETRICS)],
            text,
        )
            .into_response(),
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, format::TEXT)],
            format::text_format(&text),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            why + "\n",
        )
            .into_response(),
    }
}

/// What a scrape reads: the node's pins and the state the agent published.
#[derive(Clone, Debug)]
struct Node {
    pins: PinDir,
    underlay: String,
    published: Arc<Mutex<Published>>,
    dns: Arc<dns::Counters>,
}

impl Node {
    fn published(&self) -> Published {
        self.published.lock().expect("metrics state lock").clone()
    }

    /// Ok(why) when ready, Err(why not) otherwise; see [`readiness`].
    fn readiness(&self) -> Result<String, String> {
        let linked = attachments(&self.pins, &self.underlay)
            .from_underlay
            .contains(&self.underlay);
        readiness(&self.published(), &self.underlay, linked, Instant::now())
    }
}

/// Ready: the maps were reconciled against etcd at least once by this process (so they hold
/// a revision etcd really had, not only what an earlier agent left), they are the maps the
/// programs forward with (no rebuild of another layout pending), and from_underlay is attached
/// to the underlay. Then either etcd is connected (every change is applied as it arrives) or it
/// is not and the dataplane keeps serving from the last state applied: ready too, because this
/// node forwards exactly what it did, and restarting it would not bring etcd back.
fn readiness(
    p: &Published,
    underlay: &str,
    underlay_linked: bool,
    now: Instant,
) -> Result<String, String> {
    let revision = p.status.revision;
    if revision == 0 {
        return Err("not ready: the maps have not been reconciled against etcd yet".into());
    }
    if p.rebuilding {
        return Err(
            "not ready: rebuilding maps of another layout from etcd (the old programs still forward)"
                .into(),
        );
    }
    if !underlay_linked {
        return Err(format!(
            "not ready: from_underlay is not attached to {underlay}"
        ));
    }
    let lease = match p.lease_expires {
        Some(t) if t > now => "lease alive",
        _ => "no lease",
    };
    if p.status.connected {
        Ok(format!(
            "ready: revision {revision} applied, etcd connected, {lease}"
        ))
    } else {
        Ok(format!(
            "ready: serving revision {revision} from the last state applied; etcd not connected"
        ))
    }
}

impl Collector for Node {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let p = self.published();
        let now = Instant::now();

        // STATS, summed over CPUs at scrape time.
        match Maps::open(&self.pins) {
            Ok(maps) => {
                match maps.counters() {
                    Ok(counters) => {
                        let mut family = encoder.encode_descriptor(
                            "overlay_packets",
                            "Packets by the verdict a program reached (encap, decap, local_deliver, the passes, drop_<reason>)",
                            None,
                            ConstCounter::new(0u64).metric_type(),
                        )?;
                        for (c, n) in counters.iter().filter(|(c, _)| c.is_outcome()) {
                            ConstCounter::new(*n)
                                .encode(family.encode_family(&[("outcome", c.name())])?)?;
                        }
                        let segments = counters
                            .iter()
                            .find(|(c, _)| *c == Counter::DecapSegments)
                            .map_or(0, |(_, n)| *n);
                        let counter = ConstCounter::new(segments);
                        counter.encode(encoder.encode_descriptor(
                            "overlay_decap_segments",
                            "Wire packets the decapsulated skbs carried (a GRO-merged skb counts its segments): divided by decap, the average merged per skb",
                            None,
                            counter.metric_type(),
                        )?)?;
                        let mut family = encoder.encode_descriptor(
                            "overlay_lb_decisions",
                            "Socket load balancing: connections or datagrams to a service VIP sent to a backend (balanced) or refused with ECONNREFUSED for want of a healthy one (no_backend)",
                            None,
                            ConstCounter::new(0u64).metric_type(),
                        )?;
                        for (c, n) in counters.iter() {
                            let decision = match c {
                                Counter::LbBalanced => "balanced",
                                Counter::LbNoBackend => "no_backend",
                                _ => continue,
                            };
                            ConstCounter::new(*n)
                                .encode(family.encode_family(&[("decision", decision)])?)?;
                        }
                    }
                    Err(e) => log::warn!("metrics: {e:#}"),
                }
                match maps.snapshot() {
                    Ok(s) => {
                        let sizes = exported().filter_map(|m| Some((m, s.len(m)?)));
                        let mut family = encoder.encode_descriptor(
                            "overlay_map_entries",
                            "Entries in each map the agent writes, read from the kernel",
                            None,
                            ConstGauge::new(0i64).metric_type(),
                        )?;
                        for (map, n) in sizes {
                            ConstGauge::new(n as i64)
                                .encode(family.encode_family(&[("map", map)])?)?;
                        }
                    }
                    Err(e) => log::warn!("metrics: {e:#}"),
                }
            }
            Err(e) => log::warn!("metrics: {e:#}"),
        }
        let mut family = encoder.encode_descriptor(
            "overlay_map_capacity_entries",
            "Entries each map can hold (--max-entries for the per-endpoint maps)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for map in exported() {
            if let Some(n) = pinned_capacity(&self.pins, map) {
                ConstGauge::new(i64::from(n)).encode(family.encode_family(&[("map", map)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "overlay_map_write_failures",
            "Map writes that failed (a full map, above all) since the agent started; each is retried",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for map in exported() {
            let n = p.status.map_write_failures.get(map).copied().unwrap_or(0);
            ConstCounter::new(n).encode(family.encode_family(&[("map", map)])?)?;
        }

        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            &mut encoder,
            "overlay_etcd_connected",
            "1 while the agent has a session with etcd (registered, listing or watching), else 0",
            i64::from(p.status.connected),
        )?;
        gauge(
            &mut encoder,
            "overlay_etcd_applied_revision",
            "The last etcd revision whose state the maps hold (0: none yet)",
            p.status.revision,
        )?;
        gauge(
            &mut encoder,
            "overlay_lease_alive",
            "1 while the node's lease is alive by etcd's last keepalive answer (its TTL not run out), else 0",
            i64::from(p.lease_expires.is_some_and(|t| t > now)),
        )?;
        gauge(
            &mut encoder,
            "overlay_problems",
            "Entries etcd holds that this node cannot serve (conflicts, bad values, ports not there)",
            p.status.problems.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "overlay_ready",
            "1 when /readyz answers 200, else 0",
            i64::from(self.readiness().is_ok()),
        )?;

        etcd_members(&mut encoder, &p.etcd_members)?;
        dns_queries(&mut encoder, &self.dns)?;

        let a = attachments(&self.pins, &self.underlay);
        let mut family = encoder.encode_descriptor(
            "overlay_programs_attached",
            "Pinned links per program: from_underlay on the underlay, from_container per port, gro_sink per GRO helper",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (program, links) in [
            ("from_underlay", &a.from_underlay),
            ("from_container", &a.from_container),
            ("gro_sink", &a.gro_sink),
        ] {
            ConstGauge::new(links.len() as i64)
                .encode(family.encode_family(&[("program", program)])?)?;
        }
        Ok(())
    }
}

/// Per etcd member as the agent last probed it: up, leader, how far behind. Nothing before
/// the first probe (a member never asked is not a member seen down).
fn etcd_members(encoder: &mut DescriptorEncoder, probe: &Probe) -> std::fmt::Result {
    if probe.unix == 0 {
        return Ok(());
    }
    type Value = fn(&crate::store::health::Member) -> Option<i64>;
    let gauges: [(&str, &str, Value); 3] = [
        (
            "overlay_etcd_member_up",
            "1 if the etcd member answered the agent's last status probe (each member asked alone, every 10 s), else 0",
            |m| Some(i64::from(m.reachable)),
        ),
        (
            "overlay_etcd_member_leader",
            "1 if the etcd member said it is the leader at the last probe, else 0",
            |m| Some(i64::from(m.leader)),
        ),
        (
            "overlay_etcd_member_raft_behind",
            "Raft entries the etcd member's log was behind the leader's at the last probe (absent: member or leader unreachable)",
            |m| m.behind.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        ),
    ];
    for (name, help, value) in gauges {
        let mut family =
            encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
        for m in &probe.members {
            if let Some(v) = value(m) {
                ConstGauge::new(v)
                    .encode(family.encode_family(&[("endpoint", m.endpoint.as_str())])?)?;
            }
        }
    }
    Ok(())
}

/// The resolvers' queries by outcome (`syncs::dns::Outcome`), every outcome from the start.
fn dns_queries(encoder: &mut DescriptorEncoder, counters: &dns::Counters) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        "overlay_dns_queries",
        "DNS queries the node's resolvers received, by outcome: answered (from the overlay's names), nxdomain, forwarded (to the node's resolvers), refused (outside names on an internal network, opcodes not served), servfail (no resolver of the node answered), malformed and foreign (from outside the network's subnet; both dropped)",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for outcome in dns::Outcome::ALL {
        ConstCounter::new(counters.get(outcome))
            .encode(family.encode_family(&[("outcome", outcome.name())])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(revision: i64, connected: bool) -> Published {
        Published {
            status: StatusFile {
                revision,
                connected,
                ..Default::default()
            },
            rebuilding: false,
            lease_expires: Some(Instant::now() + Duration::from_secs(10)),
            etcd_members: Probe::default(),
        }
    }

    #[test]
    fn etcd_members_are_gauges_per_endpoint_once_probed() {
        use crate::store::health::Member;
        #[derive(Debug)]
        struct Members(Probe);
        impl Collector for Members {
            fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
                etcd_members(&mut encoder, &self.0)
            }
        }
        let text = |probe: Probe| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(Members(probe)));
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        // Never probed: nothing (not a member seen down).
        assert!(!text(Probe::default()).contains("overlay_etcd_member"));
        let probe = Probe {
            unix: 1,
            members: vec![
                Member {
                    endpoint: "http://a:2379".into(),
                    reachable: true,
                    leader: true,
                    behind: Some(0),
                    ..Default::default()
                },
                Member {
                    endpoint: "http://b:2379".into(),
                    error: Some("refused".into()),
                    ..Default::default()
                },
            ],
        };
        let text = text(probe);
        for line in [
            "overlay_etcd_member_up{endpoint=\"http://a:2379\"} 1",
            "overlay_etcd_member_up{endpoint=\"http://b:2379\"} 0",
            "overlay_etcd_member_leader{endpoint=\"http://a:2379\"} 1",
            "overlay_etcd_member_leader{endpoint=\"http://b:2379\"} 0",
            "overlay_etcd_member_raft_behind{endpoint=\"http://a:2379\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("raft_behind{endpoint=\"http://b"), "{text}");
    }

    #[test]
    fn readiness_follows_its_definition() {
        let now = Instant::now();
        let r = |p: &Published, linked| readiness(p, "eth1", linked, now);
        assert!(
            r(&published(0, true), true)
                .unwrap_err()
                .contains("not been reconciled")
        );
        assert!(
            r(&published(7, true), true)
                .unwrap()
                .contains("revision 7 applied")
        );
        // etcd gone: the last state keeps serving.
        assert!(
            r(&published(7, false), true)
                .unwrap()
                .contains("last state")
        );
        assert!(r(&published(7, true), false).unwrap_err().contains("eth1"));
        let mut p = published(7, true);
        p.rebuilding = true;
        assert!(r(&p, true).unwrap_err().contains("rebuilding"));
    }

    #[test]
    fn reconcile_durations_are_exported_in_seconds_by_kind() {
        let m = Metrics::new();
        m.reconciled(ReconcileKind::Fast, Duration::from_micros(300));
        m.reconciled(ReconcileKind::Full, Duration::from_millis(20));
        m.reconciled(ReconcileKind::Full, Duration::from_millis(30));
        let mut registry = Registry::default();
        registry.register_with_unit(
            "overlay_reconcile_duration",
            "x",
            Unit::Seconds,
            m.reconcile.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("overlay_reconcile_duration_seconds_count{kind=\"full\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("overlay_reconcile_duration_seconds_count{kind=\"fast\"} 1"),
            "{text}"
        );
    }

    /// A collector that holds every walk until the gate opens, counting how many are inside.
    #[derive(Debug, Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        inside: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug)]
    struct Gated(Arc<Gate>);

    impl Collector for Gated {
        fn encode(&self, _: DescriptorEncoder) -> std::fmt::Result {
            use std::sync::atomic::Ordering::SeqCst;
            let gate = &self.0;
            let now = gate.inside.fetch_add(1, SeqCst) + 1;
            gate.most.fetch_max(now, SeqCst);
            let mut open = gate.open.lock().unwrap();
            while !*open {
                open = gate.opened.wait(open).unwrap();
            }
            gate.inside.fetch_sub(1, SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_walks_at_once_and_the_rest_are_told_busy() {
        let gate = Arc::new(Gate::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Gated(gate.clone())));
        let walkers = Walkers::start(Arc::new(registry));
        let walks: Vec<_> = (0..5)
            .map(|_| {
                let w = walkers.clone();
                tokio::spawn(async move { w.walk().await })
            })
            .collect();
        // Three wait WALK_WAIT for a turn that never comes, and are told why.
        tokio::time::sleep(WALK_WAIT + Duration::from_millis(500)).await;
        let (done, waiting): (Vec<_>, Vec<_>) = walks.into_iter().partition(|w| w.is_finished());
        assert_eq!((done.len(), waiting.len()), (3, 2));
        for w in done {
            let why = w.await.unwrap().unwrap_err();
            assert_eq!(why, "busy: 2 scrapes are reading the maps; try again");
        }
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
        for w in waiting {
            assert!(w.await.unwrap().unwrap().is_ok());
        }
        assert_eq!(gate.most.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The turns came back: the next walk goes at once.
        assert!(walkers.walk().await.unwrap().is_ok());
    }
}
