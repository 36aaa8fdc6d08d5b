//! The node's lease, kept alive from a task of its own so that no reconcile can delay it.
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use crate::{
    shared::backoff::jittered,
    store::{self, LeaseStream, Store, brief, schema::NodeRecord},
};

/// How many lease renewals a second all nodes together ask of etcd's leader at most, by
/// default. Each node renews every quarter TTL, so at the agent's default TTL of 10 s a
/// thousand nodes ask 400 a second; beyond that the TTL grows with the cluster instead of
/// the leader's load. Measured: one member at 5,000 nodes of TTL 10 s (2,000 renewals a
/// second, on the two cores it shared with the nodes) renewed late, leases expired, and
/// every expiry and re-registration was an event for every node (docs/scale.md).
pub const RENEWALS_PER_SECOND: i64 = 400;

/// The TTL a node registers with when `nodes` are registered (itself included): at least
/// `configured`, and long enough that every node renewing every quarter TTL asks the leader
/// for no more than [`RENEWALS_PER_SECOND`]: 10 s up to 1,000 nodes, 50 s at 5,000 (where
/// Kubernetes waits 40 to 50 s before it calls a node lost). A lost node is noticed that
/// much later; the price of not losing live ones.
pub fn ttl_for(configured: i64, nodes: usize) -> i64 {
    let needed = (nodes as u64)
        .saturating_mul(4)
        .div_ceil(RENEWALS_PER_SECOND as u64);
    configured.max(needed.min(i64::MAX as u64) as i64)
}

/// Registers `node` under a new lease, its TTL [`ttl_for`] the nodes registered (this one
/// counted): the lease, its keepalive stream and the TTL.
pub async fn register(
    store: &Store,
    node: &str,
    record: &NodeRecord,
    configured: i64,
) -> anyhow::Result<(i64, LeaseStream, i64)> {
    // Counting this node, if it is not registered yet.
    let ttl = ttl_for(configured, store.node_count().await? + 1);
    let (lease, stream) = store.register_node(node, record, ttl).await?;
    Ok((lease, stream, ttl))
}

/// Why the session ends, from what [`KeepAlive::lost`] said (or its task ending unsaid).
pub fn lost(why: Result<String, tokio::sync::oneshot::error::RecvError>) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        why.unwrap_or_else(|_| "the lease keepalive stopped".into())
    )
}

/// Keeps one lease alive from its own task, every quarter TTL; `lost` says why when it cannot.
/// The task ends with the session that made it, however that ends.
///
/// A keepalive stream that fails or goes unanswered moves, for the same lease, to another
/// member: only etcd saying the lease expired ends the session, so one member dying never
/// withdraws this node's endpoints. Not even a whole etcd outage ends it: etcd gives every
/// lease a fresh TTL when its leader comes back, so the lease outlives any outage, and a node
/// that re-registered under a new lease instead would be an event for every other node (at
/// 5,000 nodes coming back at once, 25 million deliveries). A node cut off from a cluster that
/// kept running learns that its lease expired as soon as it reaches a member again.
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    pub lost: tokio::sync::oneshot::Receiver<String>,
}

impl KeepAlive {
    pub fn spawn(
        store: Store,
        stream: LeaseStream,
        lease: i64,
        ttl: i64,
        metrics: Metrics,
    ) -> Self {
        store.note_renew_every(renew_every(ttl));
        let (tx, lost) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let why = keep_alive(&store, stream, lease, ttl, &metrics).await;
            let _ = tx.send(why);
        });
        Self { task, lost }
    }
}

impl KeepAlive {
    /// Runs `attempt` until it succeeds, for as long as the lease lives: a session (and its
    /// lease, and so this node's registration) outlives an etcd outage instead of ending with
    /// its first failed request. Between tries a pause, jittered for `who`, from half a second
    /// doubling to 5 s; `failed` hears every failure. Err once the lease is lost.
    pub async fn retry<T, Fut>(
        &mut self,
        who: &str,
        mut attempt: impl FnMut() -> Fut,
        mut failed: impl FnMut(&anyhow::Error),
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut pause = Duration::from_millis(500);
        loop {
            let why = tokio::select! {
                r = attempt() => match r {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                },
                why = &mut self.lost => return Err(lost(why)),
            };
            failed(&why);
            tokio::select! {
                _ = tokio::time::sleep(jittered(pause, who)) => {}
                why = &mut self.lost => return Err(lost(why)),
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// How often a lease of `ttl` seconds is renewed: every quarter TTL, three tries to spare.
fn renew_every(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(1) as u64 * 1000 / 4).max(250))
}

/// The first pause between tries when no member answers, doubling to half the TTL.
const RETRY: Duration = Duration::from_millis(400);

/// The keepalive loop; returns why the lease is lost.
async fn keep_alive(
    store: &Store,
    stream: LeaseStream,
    lease: i64,
    ttl: i64,
    metrics: &Metrics,
) -> String {
    let ttl_span = Duration::from_secs(ttl.max(1) as u64);
    let mut tick = tokio::time::interval(renew_every(ttl));
    // A renewal takes milliseconds; a member that has not answered one within a second (a
    // quarter TTL if shorter) is hung or cut off from the leader: the lease moves at once,
    // and the watch with it (see store::watch), long before etcd itself would cancel it.
    let patience = (ttl_span / 4).clamp(Duration::from_millis(500), Duration::from_secs(1));
    // With one member there is nowhere to move: a stream given up on a member that is only
    // slow is one more stream for it to open, and its watch restarted with it (at 5,000
    // nodes on one busy etcd that loop never ended). Wait for the answer up to half the TTL.
    let patience = if store.member_count() == 1 {
        patience.max(ttl_span / 2)
    } else {
        patience
    };
    let mut renewed = Instant::now();
    // How long unrenewed when last said so; the pause before the next try on no member.
    let (mut said, mut retry) = (Duration::ZERO, RETRY);
    let mut current = Some(stream);
    loop {
        tick.tick().await;
        // Until renewed once, or the lease is past saving.
        loop {
            let Some(on) = current.as_mut() else {
                match store.keep_alive(lease).await {
                    Ok(Some(stream)) => {
                        // Opening it renewed the lease.
                        log::debug!(
                            "lease {lease:x} kept alive through {}",
                            store.member_url(stream.member)
                        );
                        renewed = Instant::now();
                        (said, retry) = (Duration::ZERO, RETRY);
                        metrics.lease_renewed(ttl);
                        current = Some(stream);
                        break;
                    }
                    Ok(None) => {
                        metrics.lease_renewed(0);
                        return format!("lease {lease:x} expired");
                    }
                    Err(e) => {
                        // Said once a TTL, not on every try of a long outage.
                        if renewed.elapsed() >= said + ttl_span {
                            said = renewed.elapsed();
                            log::warn!(
                                "{e:#}; lease {lease:x} not renewed for {:.0} s, still trying",
                                said.as_secs_f32()
                            );
                        }
                        // Every node lost etcd at the same instant: spread the tries.
                        tokio::time::sleep(jittered(retry, &lease.to_string())).await;
                        retry = (retry * 2).min(ttl_span / 2);
                        continue;
                    }
                }
            };
            let answer = tokio::time::timeout(patience, async {
                on.keeper.keep_alive().await?;
                on.stream.message().await
            })
            .await;
            let why = match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    renewed = Instant::now();
                    // Proof of life for the watch on the same member (store::watch).
                    store.member_heard(on.member);
                    metrics.lease_renewed(r.ttl());
                    break;
                }
                Ok(Ok(Some(_))) => {
                    metrics.lease_renewed(0);
                    return format!("lease {lease:x} expired");
                }
                Ok(Ok(None)) => "the lease keepalive stream ended".to_string(),
                Ok(Err(e)) => format!("lease keepalive failed: {}", brief(&e)),
                Err(_) => format!(
                    "no lease keepalive answer within {}",
                    store::members::secs(patience)
                ),
            };
            // The move itself is said once, by the store, when a request first lands elsewhere.
            log::info!(
                "etcd member {}: {why}; keeping lease {lease:x} alive elsewhere",
                store.member_url(on.member)
            );
            store.member_failed(on.member, &why);
            current = None;
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_grows_with_the_cluster_past_a_thousand_nodes() {
        assert_eq!(ttl_for(10, 1), 10);
        assert_eq!(ttl_for(10, 1_000), 10);
        assert_eq!(ttl_for(10, 1_001), 11);
        assert_eq!(ttl_for(10, 2_500), 25);
        assert_eq!(ttl_for(10, 5_000), 50);
        assert_eq!(
            ttl_for(3, 10),
            3,
            "a short TTL asked for in a small cluster stays"
        );
        assert_eq!(ttl_for(120, 5_000), 120, "a longer one asked for stays");
        // Renewals a second at the TTL chosen, never above the bound.
        for n in [1usize, 999, 1_000, 1_001, 4_999, 5_000, 100_000] {
            assert!(
                n as i64 * 4 <= RENEWALS_PER_SECOND * ttl_for(2, n),
                "{n} nodes"
            );
        }
    }
}
