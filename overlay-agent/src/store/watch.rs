//! A watch that notices when its member stops talking.
//!
//! A watch on a hung member just hangs, without an error (etcd #8980), and etcd sends progress
//! notifications only every ten minutes by default. So the watch asks for progress every
//! half second and is declared dead two seconds after a request went unanswered: the caller watches
//! again, from the revision it applied, on another member. A member that loses the quorum
//! cancels the stream itself ("no leader": the watch asks with require-leader).
//!
//! Only a quiet stream is asked (events prove the member alive): on an idle cluster that is
//! two requests per node per second, answered by the member from memory, without raft.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use etcd_client::{WatchResponse, WatchStream};
use futures::FutureExt as _;

use super::{brief, members::Members};

const ASK_EVERY: Duration = Duration::from_millis(500);
/// Four progress requests unanswered: the member is hung or gone (an answer takes
/// milliseconds; a watch moved for nothing only resumes elsewhere, without a relist).
pub const SILENCE: Duration = Duration::from_secs(2);

pub struct Watch {
    stream: WatchStream,
    members: Arc<Members>,
    member: usize,
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
}

impl Watch {
    pub(super) fn new(stream: WatchStream, members: Arc<Members>, member: usize) -> Self {
        let mut ask = tokio::time::interval(ASK_EVERY);
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
        }
    }

    /// The member this watch is on.
    pub fn member(&self) -> &str {
        self.members.url(self.member)
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
                            self.heard();
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
                    if self.asked.is_some_and(|t| t.elapsed() >= SILENCE) {
                        let why = format!(
                            "the watch did not answer for {} s",
                            SILENCE.as_secs()
                        );
                        return Err(self.lost(why));
                    }
                    // Events arriving prove the member alive: ask only a quiet one (the
                    // request channel holds 100: it fills only long after SILENCE).
                    if self.heard.elapsed() >= ASK_EVERY {
                        self.asked.get_or_insert_with(Instant::now);
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
                self.heard();
                return Some(resp);
            }
            Ok(None) => self.ended = Some("etcd ended the watch".into()),
            Err(e) => self.ended = Some(brief(&e)),
        }
        None
    }

    fn heard(&mut self) {
        self.heard = Instant::now();
        self.asked = None;
    }

    fn lost(&self, why: String) -> anyhow::Error {
        self.members.failed(self.member, &why, true);
        anyhow!("etcd member {}: {why}", self.member())
    }
}
