//! The node's lease, kept alive from a task of its own so that no reconcile can delay it.
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use crate::store::{self, LeaseStream, Store, brief};

/// Keeps one lease alive from its own task, every quarter TTL; `lost` says why when it cannot.
/// The task ends with the session that made it, however that ends.
///
/// A keepalive stream that fails or goes unanswered moves, for the same lease, to another
/// member: only an expired lease (etcd says so, or no member renewed it for a whole TTL)
/// ends the session, so one member dying never withdraws this node's endpoints.
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
        let (tx, lost) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let why = keep_alive(&store, stream, lease, ttl, &metrics).await;
            let _ = tx.send(why);
        });
        Self { task, lost }
    }
}

/// The keepalive loop; returns why the lease is lost.
async fn keep_alive(
    store: &Store,
    stream: LeaseStream,
    lease: i64,
    ttl: i64,
    metrics: &Metrics,
) -> String {
    let ttl_span = Duration::from_secs(ttl.max(1) as u64);
    let mut tick = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 4).max(250)));
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
    let mut current = Some(stream);
    loop {
        tick.tick().await;
        // Until renewed once, or the lease is past saving.
        loop {
            let Some(on) = current.as_mut() else {
                if renewed.elapsed() >= ttl_span {
                    return format!(
                        "lease {lease:x} lost: no etcd member renewed it for {} s",
                        ttl_span.as_secs()
                    );
                }
                match store.keep_alive(lease).await {
                    Ok(Some(stream)) => {
                        // Opening it renewed the lease.
                        log::debug!(
                            "lease {lease:x} kept alive through {}",
                            store.member_url(stream.member)
                        );
                        renewed = Instant::now();
                        metrics.lease_renewed(ttl);
                        current = Some(stream);
                        break;
                    }
                    Ok(None) => {
                        metrics.lease_renewed(0);
                        return format!("lease {lease:x} expired");
                    }
                    Err(e) => {
                        log::warn!("{e:#}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
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
