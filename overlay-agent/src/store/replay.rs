//! Whether etcd still has the history a node applied, asked after an outage by having it
//! deliver the node's last events again.
//!
//! A watch resumed where it was is right only if etcd's history up to there is the one the
//! node applied. An etcd restarted keeps its history; one restored from an older snapshot
//! (etcd 3.4 cannot say so) goes back to the snapshot's revision and, once written to, reuses
//! the revisions after it for other changes. The checks of store::history tell most restores
//! apart (revision, term, raft index, the latest change); a young cluster restored and written
//! past this node's revision can pass them all. The events a node applied last, delivered
//! again by a watch from the first of them, settle it for those revisions: the same changes,
//! key, value, version and lease, at the same revisions, in the same order. A cluster restored
//! from a snapshot older than the first of them differs there unless every one of those writes
//! was made again, identically, at the same revision. (A snapshot taken within them leaves the
//! revisions before it as they were: only the ones after it are compared, and must match.)
//!
//! Asking costs etcd one watch per node from a revision a few changes back: etcd catches up
//! such watchers 512 at a time, reading the revisions from the oldest one asked (every node's
//! digest writes included) for each batch. At 5,000 nodes the scale bench measures it, in
//! the time to be in sync after a restart (docs/scale.md); their relists would be 150 GB.
use std::{
    collections::VecDeque,
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use etcd_client::{Event, EventType, WatchResponse};

use super::Store;

/// How many of its last events a node keeps to have them replayed: whole revisions (a
/// transaction's events share one), so fewer at times, and more when its last revision alone
/// has more (a prefix deleted, a lease revoked with its keys).
const KEPT: usize = 32;

/// How long a replay may take: one watch from a revision etcd still has, a few events, asked
/// of a member that may have just come back to thousands of nodes asking the same.
const REPLAY_DEADLINE: Duration = Duration::from_secs(10);

/// One event as etcd delivered it: what a replay must deliver again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    revision: i64,
    key: Vec<u8>,
    put: bool,
    create_revision: i64,
    version: i64,
    lease: i64,
    value: u64,
}

impl Seen {
    fn of(event: &Event) -> Option<Self> {
        let kv = event.kv()?;
        let mut value = DefaultHasher::new();
        kv.value().hash(&mut value);
        Some(Self {
            revision: kv.mod_revision(),
            key: kv.key().to_vec(),
            put: event.event_type() == EventType::Put,
            create_revision: kv.create_revision(),
            version: kv.version(),
            lease: kv.lease(),
            value: value.finish(),
        })
    }
}

/// The last events a node applied since its listing, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Recent {
    events: VecDeque<Seen>,
}

/// What etcd answered when asked to replay a node's last events.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    /// The same events at the same revisions: the history the node applied. Its watch may
    /// resume where it was.
    Same(usize),
    /// Another history (a cluster restored from a snapshot): the node must relist.
    Differs(String),
    /// Nothing to tell by: no event since the listing, the revisions compacted, or no answer.
    Unknown(String),
}

/// Of `len` events whose revisions `revision` gives, the first that can be kept: the start of
/// the revision of the KEPT-th from the end (0 when there are no more than KEPT).
fn first_kept(len: usize, revision: impl Fn(usize) -> Option<i64>) -> usize {
    let mut from = len.saturating_sub(KEPT);
    while from > 0 && revision(from - 1) == revision(from) {
        from -= 1;
    }
    from
}

impl Recent {
    /// Notes the events of a watch response just applied. Only its last KEPT (from the start
    /// of their first revision) can be kept: the events before them are neither copied nor
    /// hashed (a response of thousands, catching up, on every node's hot path), and what was
    /// kept before them goes, or the ring would have a gap a replay could never match.
    pub fn note(&mut self, resp: &WatchResponse) {
        let events = resp.events();
        let from = first_kept(events.len(), |i| events[i].kv().map(|kv| kv.mod_revision()));
        if from > 0 {
            self.events.clear();
        }
        self.events
            .extend(events[from..].iter().filter_map(Seen::of));
        self.trim();
    }

    /// Down to KEPT, whole revisions only (a replay from a revision delivers all of its
    /// events), the last revision always kept.
    fn trim(&mut self) {
        while self.events.len() > KEPT {
            let newest = self.events.back().map(|e| e.revision);
            if self.events.front().map(|e| e.revision) == newest {
                break;
            }
            let Some(gone) = self.events.pop_front() else {
                break;
            };
            while self
                .events
                .front()
                .is_some_and(|e| e.revision == gone.revision)
            {
                self.events.pop_front();
            }
        }
    }

    /// A listing: its events are not events, and cannot be replayed.
    pub fn clear(&mut self) {
        self.events.clear();
    }

    /// Compares what a replay delivered so far with what was applied: Some(verdict) once it
    /// can tell, None while it is a faithful beginning.
    fn judge(&self, replayed: &[Seen]) -> Option<Replayed> {
        let last = self.events.back()?.revision;
        for (i, got) in replayed.iter().enumerate() {
            match self.events.get(i) {
                Some(want) if want == got => {}
                // Past what was applied: everything before it was delivered as applied.
                None if got.revision > last => return Some(Replayed::Same(self.events.len())),
                want => {
                    return Some(Replayed::Differs(format!(
                        "etcd's history went back: revision {} {} {}, where this node applied {} (a cluster restored from a snapshot?)",
                        got.revision,
                        if got.put { "wrote" } else { "deleted" },
                        String::from_utf8_lossy(&got.key),
                        match want {
                            Some(w) => format!(
                                "{} {} at revision {}",
                                if w.put { "a write of" } else { "a delete of" },
                                String::from_utf8_lossy(&w.key),
                                w.revision
                            ),
                            None => "nothing".into(),
                        }
                    )));
                }
            }
        }
        (replayed.len() == self.events.len()).then_some(Replayed::Same(self.events.len()))
    }
}

impl Store {
    /// Has etcd deliver `recent` again, from its first revision, and says whether they are
    /// the events that were applied (see the module's doc).
    pub async fn replays(&self, recent: &Recent) -> Replayed {
        let Some(from) = recent.events.front().map(|e| e.revision) else {
            return Replayed::Unknown("no change heard since the listing".into());
        };
        let replay = async {
            // From the revision before: etcd lets a watch start at its compaction revision
            // but drops a delete made at exactly that one; one earlier is cancelled instead.
            let mut watch = loop {
                // A member just back may leave a few of thousands of requests unanswered:
                // asked again, jittered, within the deadline.
                match self.watch(from - 1).await {
                    Ok(watch) => break watch,
                    Err(e) => {
                        log::debug!("{e:#}; asking again");
                        let pause = Duration::from_millis(200);
                        tokio::time::sleep(crate::shared::backoff::spread(
                            pause,
                            &from.to_string(),
                        ))
                        .await;
                    }
                }
            };
            let mut replayed = Vec::new();
            loop {
                let resp = watch.message().await?;
                if resp.compact_revision() > 0 {
                    return Ok(Replayed::Unknown(format!(
                        "etcd compacted the revisions to replay (at {})",
                        resp.compact_revision()
                    )));
                }
                if resp.canceled() {
                    return Ok(Replayed::Unknown(format!(
                        "etcd cancelled the replay: {}",
                        resp.cancel_reason()
                    )));
                }
                // No verdict from a header: a member that lags, and etcd's gRPC proxy (whose
                // headers run behind what it delivers), answer with a revision behind the
                // node's; a history gone back is the history checks' to tell (store::history,
                // asked by the agent just before this), and a replay that never comes is no
                // answer.
                replayed.extend(
                    resp.events()
                        .iter()
                        .filter_map(Seen::of)
                        .filter(|e| e.revision >= from),
                );
                if let Some(verdict) = recent.judge(&replayed) {
                    return anyhow::Ok(verdict);
                }
            }
        };
        match tokio::time::timeout(REPLAY_DEADLINE, replay).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => Replayed::Unknown(format!("replaying the last changes: {e:#}")),
            Err(_) => Replayed::Unknown(format!(
                "replaying the last changes took over {REPLAY_DEADLINE:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(revision: i64, key: &str) -> Seen {
        Seen {
            revision,
            key: key.as_bytes().to_vec(),
            put: true,
            create_revision: revision,
            version: 1,
            lease: 0,
            value: 7,
        }
    }

    fn recent(events: &[Seen]) -> Recent {
        Recent {
            events: events.iter().cloned().collect(),
        }
    }

    #[test]
    fn the_same_events_are_the_same_history() {
        let applied = [seen(10, "a"), seen(12, "b"), seen(12, "c")];
        let r = recent(&applied);
        // A beginning: not yet.
        assert_eq!(r.judge(&applied[..2]), None);
        assert_eq!(r.judge(&applied), Some(Replayed::Same(3)));
        // And whatever came after.
        let mut more = applied.to_vec();
        more.push(seen(13, "d"));
        assert_eq!(r.judge(&more), Some(Replayed::Same(3)));
    }

    #[test]
    fn any_difference_is_another_history() {
        let applied = [seen(10, "a"), seen(12, "b")];
        let r = recent(&applied);
        // Another key at a revision.
        let other = [seen(10, "a"), seen(12, "x")];
        assert!(
            matches!(r.judge(&other), Some(Replayed::Differs(why)) if why.contains("revision 12 wrote x"))
        );
        // The same key, another value (written again, differently).
        let mut value = applied.to_vec();
        value[1].value = 8;
        assert!(matches!(r.judge(&value), Some(Replayed::Differs(_))));
        // A delete where a write was.
        let mut delete = applied.to_vec();
        delete[0].put = false;
        assert!(matches!(r.judge(&delete), Some(Replayed::Differs(_))));
        // An event more between them.
        let extra = [seen(10, "a"), seen(11, "z"), seen(12, "b")];
        assert!(matches!(r.judge(&extra), Some(Replayed::Differs(_))));
        // One missing, the history going on past it.
        let missing = [seen(10, "a"), seen(13, "b")];
        assert!(matches!(r.judge(&missing), Some(Replayed::Differs(_))));
    }

    #[test]
    fn of_a_long_response_only_the_tail_is_noted_from_the_start_of_its_revision() {
        // Revisions 1, 2, ... one event each, then the last three in one revision.
        let mut revisions: Vec<i64> = (1..=40).collect();
        revisions.extend([41, 41, 41]);
        let at = |i: usize| Some(revisions[i]);
        // KEPT from the end falls on an event of its own.
        assert_eq!(first_kept(revisions.len(), at), revisions.len() - KEPT);
        // Falling inside a revision of three: from its first event.
        let mut long = vec![1i64; 5];
        long.extend([2, 2, 2]);
        long.extend(3..(3 + KEPT as i64 - 2));
        let start = first_kept(long.len(), |i| Some(long[i]));
        assert_eq!(long[start], 2);
        assert_eq!(long[start - 1], 1);
        // A short response: all of it.
        assert_eq!(first_kept(5, |i| Some(i as i64)), 0);
    }

    #[test]
    fn only_whole_revisions_are_kept() {
        // A transaction of three events at revision 1, then KEPT - 1 more: one over, and
        // the whole transaction goes, not one of its events.
        let mut events = vec![seen(1, "t"), seen(1, "u"), seen(1, "v")];
        events.extend((2..=KEPT as i64).map(|i| seen(i, "k")));
        let mut r = recent(&events);
        r.trim();
        assert_eq!(r.events.front().unwrap().revision, 2);
        assert_eq!(r.events.len(), KEPT - 1);
        // Within KEPT: nothing goes.
        let mut r = recent(&events[2..]);
        r.trim();
        assert_eq!(r.events.len(), KEPT);
        // One revision of more than KEPT events (a prefix deleted): kept whole, not emptied.
        let mut r = recent(&[seen(1, "a")]);
        r.events
            .extend((0..KEPT + 5).map(|i| seen(2, &format!("k{i}"))));
        r.trim();
        assert_eq!(r.events.len(), KEPT + 5);
        assert!(r.events.iter().all(|e| e.revision == 2));
    }
}
