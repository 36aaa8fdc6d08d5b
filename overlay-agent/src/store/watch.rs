//! A watch that notices when its member stops talking.
//!
//! A watch on a hung member just hangs, without an error (etcd #8980), and etcd sends progress
//! notifications only every ten minutes by default. So the watch is declared dead when its
//! member was asked for progress and said nothing at all for [`SILENCE`]: the caller watches
//! again, from the revision it applied, on another member. A member that loses the quorum
//! cancels the stream itself ("no leader": the watch asks with require-leader), and a member
//! other requests found failing (see [`Members::strikes`]) is left at once.
//!
//! Asking is what costs: a progress request is a message each way, and at 5,000 nodes two a
//! second per node were most of etcd's CPU. So anything the member sends this client counts
//! as life, not only this watch's events: the node's lease keepalive answers (every quarter
//! TTL, usually on the same member) and any request answered. The watch asks only after
//! [`QUIET`] without a word from its member when something else talks to it regularly (the
//! keepalive then proves it alive, and finds it hung itself within its patience), and after
//! [`ALONE_QUIET`] when nothing does. An idle node on the member of its keepalive sends no
//! progress requests at all.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use etcd_client::{WatchResponse, WatchStream};
use futures::FutureExt as _;

use super::{brief, members::Members};

/// How often the watch looks at its member's life (a local check: no request).
const TICK: Duration = Duration::from_millis(500);
/// Quiet this long, while something else (the lease keepalive) hears the member: ask. Longer
/// than the keepalive's period at the agent's default TTL (2.5 s), so that an idle node whose
/// keepalive shares the member never asks; short enough that the quiet, the [`SILENCE`] and
/// two ticks stay under the daemon's DARK (6 s): a hung member costs a move, not a relist.
/// With a longer TTL (a cluster of over 1,000 nodes) the keepalive's period plus a tick: the
/// keepalive, which finds a hung member within its patience, is then what moves the watch.
pub const QUIET: Duration = Duration::from_secs(3);
/// Quiet this long while nothing else hears the member (the keepalive is on another): ask.
pub const ALONE_QUIET: Duration = Duration::from_secs(1);
/// Asked, and not a word from the member for this long: it is hung or gone (an answer takes
/// milliseconds; a watch moved for nothing only resumes elsewhere, without a relist).
pub const SILENCE: Duration = Duration::from_secs(2);

pub struct Watch {
    stream: WatchStream,
    members: Arc<Members>,
    member: usize,
    /// When this watch last had a message.
    heard: Instant,
    /// When the oldest progress request still unanswered was sent. Silence counts from
    /// there, not from the last message: a caller busy for seconds between two calls (a long
    /// reconcile) has not heard the member, but the member was never asked.
    asked: Option<Instant>,
    ask: tokio::time::Interval,
    /// How the stream ended, if [`Watch::ready`] saw it: the next [`Watch::message`] says so.
    ended: Option<String>,
    /// The member's strikes when the watch began (see [`Members::strikes`]).
    strikes: u64,
    /// Progress requests sent.
    asks: u64,
}

impl Watch {
    pub(super) fn new(stream: WatchStream, members: Arc<Members>, member: usize) -> Self {
        let mut ask = tokio::time::interval(TICK);
        ask.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (strikes, _) = members.strikes(member);
        Self {
            stream,
            members,
            member,
            heard: Instant::now(),
            asked: None,
            ask,
            ended: None,
            strikes,
            asks: 0,
        }
    }

    /// The member this watch is on.
    pub fn member(&self) -> &str {
        self.members.url(self.member)
    }

    /// How many progress requests this watch has sent.
    pub fn asks(&self) -> u64 {
        self.asks
    }

    /// When its member was last heard, by this watch or by anything else of this client (a
    /// lease keepalive, a request): how long the node has been without etcd, when the watch
    /// is lost.
    pub fn heard(&self) -> Instant {
        match self.members.heard(self.member) {
            Some(other) => other.max(self.heard),
            None => self.heard,
        }
    }

    /// The next response (events, or progress: a header and no events). Err, in one line
    /// naming the member, when the stream failed, ended or fell silent; the member is then
    /// passed over for a while, so watching again lands elsewhere.
    pub async fn message(&mut self) -> anyhow::Result<WatchResponse> {
        if let Some(why) = self.ended.take() {
            return Err(self.lost(why));
        }
        loop {
            tokio::select! {
                // What has arrived comes first: no silence is declared over a full buffer.
                biased;
                msg = self.stream.message() => {
                    let why = match msg {
                        Ok(Some(resp)) => {
                            self.note_heard();
                            return Ok(resp);
                        }
                        Ok(None) => "etcd ended the watch".to_string(),
                        Err(e) => brief(&e),
                    };
                    return Err(self.lost(why));
                }
                _ = self.ask.tick() => {
                    // Other requests found the member failing (a member cut off from the
                    // quorum still answers progress requests, and cancels its watches only
                    // seconds later): move before the stream itself says so.
                    if let (strikes, Some(why)) = self.members.strikes(self.member)
                        && strikes > self.strikes
                    {
                        return Err(anyhow!("etcd member {}: {why}", self.member()));
                    }
                    let other = self.members.heard(self.member);
                    let life = self.heard();
                    // Whatever the member said since the request was sent answers it.
                    if self.asked.is_some_and(|t| life >= t) {
                        self.asked = None;
                    }
                    if self.asked.is_some_and(|t| t.elapsed() >= SILENCE) {
                        let why = format!(
                            "the watch did not answer for {} s",
                            SILENCE.as_secs()
                        );
                        return Err(self.lost(why));
                    }
                    // The keepalive renews every quarter TTL, which grows with the cluster
                    // (12.5 s at 5,000 nodes): wait for it, or every idle node of a large
                    // cluster would ask about once a second between two renewals.
                    let with_keepalive = QUIET.max(self.members.renew_every() + TICK);
                    let quiet = if other.is_some_and(|o| o.elapsed() < with_keepalive) {
                        with_keepalive
                    } else {
                        ALONE_QUIET
                    };
                    // (The request channel holds 100: it fills only long after SILENCE.)
                    if self.asked.is_none() && life.elapsed() >= quiet {
                        self.asked = Some(Instant::now());
                        self.asks += 1;
                        let _ = self.stream.request_progress().await;
                    }
                }
            }
        }
    }

    /// A response already received, if any, without waiting.
    pub fn ready(&mut self) -> Option<WatchResponse> {
        match self.stream.message().now_or_never()? {
            Ok(Some(resp)) => {
                self.note_heard();
                return Some(resp);
            }
            Ok(None) => self.ended = Some("etcd ended the watch".into()),
            Err(e) => self.ended = Some(brief(&e)),
        }
        None
    }

    fn note_heard(&mut self) {
        self.heard = Instant::now();
        self.asked = None;
    }

    fn lost(&self, why: String) -> anyhow::Error {
        self.members.failed(self.member, &why, true);
        anyhow!("etcd member {}: {why}", self.member())
    }
}
