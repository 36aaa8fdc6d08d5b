//! One client per etcd member, and the one path every request takes to the cluster.
//!
//! etcd-client puts all endpoints behind one balanced channel: it tracks no leader, never
//! retries elsewhere, and one member that accepts connections but never answers (a stalled
//! disk, a paused VM, SIGSTOP) stalls it. So each member gets a client of its own, connected
//! to it alone and asking with require-leader (a member cut off from the quorum then says
//! "no leader" at once instead of hanging). A request goes to the preferred member under a
//! deadline of its own; a passing failure (see [`transient`]) or silence moves it to the next
//! member after a short jittered backoff, until the total bound; a member that timed out or
//! refused is avoided for a while. The member that answers becomes the preferred one, and
//! the move is logged once, not per request.
use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_client::{Client, ConnectOptions};

use super::{
    brief,
    transient::{Verdict, classify},
};

/// How long one request may wait for one member's answer.
pub const PER_TRY: Duration = Duration::from_secs(2);
/// How long all tries of one request may take, over all members: an election (1 s by default)
/// and a member or two timing out fit in it.
pub const BOUND: Duration = Duration::from_secs(10);
/// How long a member that timed out or refused is passed over (unless all are).
const AVOID: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(400);
/// Less time than this left in the bound: no use trying again.
const MIN_TRY: Duration = Duration::from_millis(100);

pub struct Members {
    members: Vec<Member>,
    options: ConnectOptions,
    preferred: AtomicUsize,
    list: String,
    /// How often this client's lease keepalive hears its member, in ms (0: no keepalive): a
    /// quiet watch on that member waits that long for it before asking (store::watch).
    renew_every_ms: AtomicU64,
}

struct Member {
    url: String,
    /// Made on first use: with etcd's authentication, making it is a request of its own.
    client: tokio::sync::Mutex<Option<Client>>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    avoid_until: Option<Instant>,
    /// How often it was found failing (timed out, refused, lost its leader): a stream on it
    /// moves when this grows, even while the stream itself still gets answers.
    strikes: u64,
    last_error: Option<String>,
    last_answer: Option<Instant>,
}

/// What this client knows of one member, for status and metrics (no request made).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberState {
    pub url: String,
    /// Requests go to it first.
    pub preferred: bool,
    /// Passed over for now: it timed out or refused lately.
    pub avoided: bool,
    /// Its last failure, if it has failed since it last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Milliseconds since it last answered, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms_ago: Option<u64>,
}

/// One try of a request.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// The member tried (an index for [`Members::failed`] and [`Members::url`]).
    pub member: usize,
    /// An earlier try may have committed this very request.
    pub maybe_applied: bool,
}

impl Members {
    pub fn new(endpoints: &[String], options: ConnectOptions) -> Self {
        Self {
            members: endpoints
                .iter()
                .map(|url| Member {
                    url: url.clone(),
                    client: tokio::sync::Mutex::new(None),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            options: options.with_require_leader(true),
            preferred: AtomicUsize::new(0),
            list: endpoints.join(","),
            renew_every_ms: AtomicU64::new(0),
        }
    }

    pub fn list(&self) -> &str {
        &self.list
    }

    /// How many members this client knows.
    pub fn count(&self) -> usize {
        self.members.len()
    }

    pub fn url(&self, member: usize) -> &str {
        &self.members[member].url
    }

    pub fn states(&self) -> Vec<MemberState> {
        let now = Instant::now();
        let preferred = self.preferred.load(Ordering::Relaxed);
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let h = m.health.lock().unwrap_or_else(|e| e.into_inner());
                MemberState {
                    url: m.url.clone(),
                    preferred: i == preferred,
                    avoided: h.avoid_until.is_some_and(|t| t > now),
                    last_error: h.last_error.clone(),
                    answered_ms_ago: h.last_answer.map(|t| (now - t).as_millis() as u64),
                }
            })
            .collect()
    }

    /// `op` on one member after another until one answers, a failure is an answer, or
    /// `bound` has passed. Err: the words after "what:", naming each member's last failure
    /// when none answered.
    pub async fn call<T, F, Fut>(
        &self,
        per_try: Duration,
        bound: Duration,
        op: F,
    ) -> Result<T, String>
    where
        F: FnMut(Client, Attempt) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_since(Instant::now(), per_try, bound, op).await
    }

    /// As [`Members::call`], for a request begun at `started` (by a [`Members::race`]).
    pub async fn call_since<T, F, Fut>(
        &self,
        started: Instant,
        per_try: Duration,
        bound: Duration,
        mut op: F,
    ) -> Result<T, String>
    where
        F: FnMut(Client, Attempt) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut maybe_applied = false;
        let mut last: Vec<Option<String>> = vec![None; self.members.len()];
        let mut at = self.pick(None);
        loop {
            let attempt = Attempt {
                member: at,
                maybe_applied,
            };
            // The last try gets what is left of the bound, never more.
            let patience = per_try
                .min(bound.saturating_sub(started.elapsed()))
                .max(MIN_TRY);
            let tried = tokio::time::timeout(patience, async {
                let client = self.client(at).await?;
                op(client, attempt).await
            })
            .await;
            let (why, avoid) = match tried {
                Ok(Ok(answer)) => {
                    self.answered(at);
                    return Ok(answer);
                }
                Ok(Err(e)) => match classify(&e) {
                    Verdict::Fail => return Err(brief(&e)),
                    Verdict::Retry { maybe_applied: m } => {
                        maybe_applied |= m;
                        let why = brief(&e);
                        let avoid = !cluster_wide(&why);
                        (why, avoid)
                    }
                },
                Err(_) => {
                    maybe_applied = true;
                    (format!("no answer within {}", secs(patience)), true)
                }
            };
            self.failed(at, &why, avoid);
            last[at] = Some(why);
            if started.elapsed() + backoff + MIN_TRY >= bound {
                let each: Vec<String> = last
                    .iter()
                    .enumerate()
                    .filter_map(|(i, why)| Some(format!("{}: {}", self.url(i), why.as_ref()?)))
                    .collect();
                return Err(format!(
                    "no member answered within {} ({})",
                    secs(bound),
                    each.join("; ")
                ));
            }
            // Clients that failed together do not retry together.
            tokio::time::sleep(crate::shared::backoff::jittered(backoff, "")).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            at = self.pick(Some(at));
        }
    }

    /// `op` on every member at once; the first to answer becomes the preferred member. For a
    /// new client's first request: a process that starts on a hung member would otherwise
    /// pay a whole try's deadline before it moves on. Err if none answered within `per_try`
    /// (each member's failure noted).
    pub async fn race<T, F, Fut>(&self, per_try: Duration, op: F) -> Result<T, String>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        use futures::stream::{FuturesUnordered, StreamExt as _};
        let op = &op;
        let mut tries: FuturesUnordered<_> = (0..self.members.len())
            .map(|i| async move {
                let tried = tokio::time::timeout(per_try, async {
                    let client = self.client(i).await?;
                    op(client).await
                })
                .await;
                (i, tried)
            })
            .collect();
        let mut last = None;
        while let Some((i, tried)) = tries.next().await {
            match tried {
                Ok(Ok(answer)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    self.answered(i);
                    return Ok(answer);
                }
                Ok(Err(e)) => {
                    let why = brief(&e);
                    self.failed(i, &why, !cluster_wide(&why));
                    last = Some(why);
                }
                Err(_) => {
                    let why = format!("no answer within {}", secs(per_try));
                    self.failed(i, &why, true);
                    last = Some(why);
                }
            }
        }
        Err(last.unwrap_or_else(|| "no member".into()))
    }

    /// Notes that `member` failed (a request, or a stream that went silent), to be passed
    /// over for a while if `avoid`.
    pub fn failed(&self, member: usize, why: &str, avoid: bool) {
        let mut h = self.members[member]
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.last_error = Some(why.to_string());
        if avoid {
            h.strikes += 1;
            if self.members.len() > 1 {
                h.avoid_until = Some(Instant::now() + AVOID);
            }
        }
    }

    /// How often `member` was found failing, and its last failure.
    pub fn strikes(&self, member: usize) -> (u64, Option<String>) {
        let h = self.members[member]
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (h.strikes, h.last_error.clone())
    }

    /// `member` said something on a stream (a lease keepalive answer): it is alive, whatever
    /// the preferred member is.
    pub fn note_heard(&self, member: usize) {
        self.members[member]
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_answer = Some(Instant::now());
    }

    /// The lease keepalive renews every `period` (a quarter of its TTL, which grows with the
    /// cluster: 12.5 s at 5,000 nodes).
    pub fn set_renew_every(&self, period: Duration) {
        self.renew_every_ms
            .store(period.as_millis() as u64, Ordering::Relaxed);
    }

    /// See [`Members::set_renew_every`]; zero without a keepalive.
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(self.renew_every_ms.load(Ordering::Relaxed))
    }

    /// When `member` last answered this client (a request, or a stream's message noted with
    /// [`Members::note_heard`]).
    pub fn heard(&self, member: usize) -> Option<Instant> {
        self.members[member]
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_answer
    }

    fn answered(&self, member: usize) {
        {
            let mut h = self.members[member]
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            h.avoid_until = None;
            h.last_error = None;
            h.last_answer = Some(Instant::now());
        }
        let was = self.preferred.load(Ordering::Relaxed);
        if was != member
            && self
                .preferred
                .compare_exchange(was, member, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Said once per move, and only when the member left had failed (not when it was
            // merely avoided a moment longer than needed).
            let why = self.members[was]
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_error
                .clone();
            match why {
                Some(why) => log::warn!(
                    "etcd member {}: {why}; using {}",
                    self.url(was),
                    self.url(member)
                ),
                None => log::debug!("etcd: using member {}", self.url(member)),
            }
        }
    }

    /// The member to try: the preferred one first, then the next one after `after`, passing
    /// over avoided members unless every one is (then the one whose avoidance ends first).
    fn pick(&self, after: Option<usize>) -> usize {
        let n = self.members.len();
        let start = match after {
            None => self.preferred.load(Ordering::Relaxed),
            Some(i) => (i + 1) % n,
        };
        let now = Instant::now();
        let until = |i: usize| {
            self.members[i]
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .avoid_until
                .filter(|t| *t > now)
        };
        let order = (0..n).map(|k| (start + k) % n);
        order
            .clone()
            .find(|&i| until(i).is_none())
            .or_else(|| order.min_by_key(|&i| until(i)))
            .unwrap_or(0)
    }

    async fn client(&self, member: usize) -> Result<Client, etcd_client::Error> {
        let mut slot = self.members[member].client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = Client::connect([self.url(member)], Some(self.options.clone())).await?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// Failures every member would give alike (the cluster is electing, or busy): moving on is
/// right, passing the member over is not.
fn cluster_wide(why: &str) -> bool {
    ["leader changed", "too many requests", "request timed out"]
        .iter()
        .any(|s| why.contains(s))
}

pub fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Members {
        let urls: Vec<String> = ["http://a:2379", "http://b:2379", "http://c:2379"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Members::new(&urls, ConnectOptions::new())
    }

    #[test]
    fn requests_move_on_and_pass_over_avoided_members() {
        let m = three();
        assert_eq!(m.pick(None), 0);
        assert_eq!(m.pick(Some(0)), 1);
        m.failed(1, "no answer within 2 s", true);
        assert_eq!(m.pick(Some(0)), 2);
        // Not avoided: a leader change is the cluster's, not the member's.
        m.failed(
            2,
            "etcdserver: leader changed",
            !cluster_wide("etcdserver: leader changed"),
        );
        assert_eq!(m.pick(Some(1)), 2);
        m.answered(2);
        assert_eq!(m.pick(None), 2);
        let states = m.states();
        assert!(states[2].preferred && !states[2].avoided && states[2].last_error.is_none());
        assert!(states[1].avoided);
    }

    #[test]
    fn when_every_member_is_avoided_the_first_to_recover_is_tried() {
        let m = three();
        m.failed(0, "x", true);
        std::thread::sleep(Duration::from_millis(5));
        m.failed(1, "x", true);
        m.failed(2, "x", true);
        assert_eq!(m.pick(Some(1)), 0);
    }
}
