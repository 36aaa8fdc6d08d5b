//! Whether etcd's history went back under a watcher: a cluster restored from an older
//! snapshot answers with revisions this node already applied (and, once written to, reuses
//! them for other changes), or it is another cluster altogether.
//!
//! Within one cluster's life neither the revision nor the raft term nor the raft index ever
//! decreases, and the cluster id never changes. etcd 3.4's `snapshot restore` keeps the
//! snapshot's revision (and may keep the cluster id and reach the same term), but starts a
//! fresh raft log: a restored cluster written past our revision still has a raft index of a
//! few entries where its predecessor had its whole life's. A member that lags a little may
//! show an older revision, term or index, so a header only raises the suspicion; a read
//! through the leader settles it.

use anyhow::{Result, anyhow};
use etcd_client::GetOptions;

use super::{Store, members::PER_TRY};

/// Both raft indexes (a member's committed index, as `status` gives it) are read just after a
/// linearizable read on the same member, which has then applied at least all the leader had
/// committed when that read began: within one history the later is never lower.
const INDEX_SLACK: u64 = 0;

/// Where a cluster's history stands, as a response header says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub revision: i64,
    pub cluster_id: u64,
    pub raft_term: u64,
    /// The answering member's raft index, 0 when not known (a response header lacks it);
    /// see [`INDEX_SLACK`].
    pub raft_index: u64,
}

impl History {
    pub fn of(header: &etcd_client::ResponseHeader) -> Self {
        Self {
            revision: header.revision(),
            cluster_id: header.cluster_id(),
            raft_term: header.raft_term(),
            raft_index: 0,
        }
    }

    /// Why this point is behind `seen` (what this node applied, the highest term it met), if
    /// it is: another cluster, a lower revision or a lower term.
    pub fn behind(&self, seen: &History) -> Option<String> {
        if self.cluster_id != seen.cluster_id {
            Some(format!(
                "etcd's cluster id changed ({:x} -> {:x}): another cluster, another history",
                seen.cluster_id, self.cluster_id
            ))
        } else if self.revision < seen.revision {
            Some(format!(
                "etcd's history went back: revision {}, this node had applied {} (a cluster restored from a snapshot?)",
                self.revision, seen.revision
            ))
        } else if self.raft_term < seen.raft_term {
            Some(format!(
                "etcd's history went back: raft term {}, this node had seen {} (a cluster restored from a snapshot?)",
                self.raft_term, seen.raft_term
            ))
        } else if self.raft_index > 0 && self.raft_index + INDEX_SLACK < seen.raft_index {
            Some(format!(
                "etcd's history went back: raft index {}, this node had seen {} (a cluster restored from a snapshot?)",
                self.raft_index, seen.raft_index
            ))
        } else {
            None
        }
    }
}

impl Store {
    /// Where the cluster's history stands now: revision and term read through the leader (a
    /// member that lags waits until it caught up), with the answering member's raft index.
    pub async fn history(&self) -> Result<History> {
        let key = self.keys.all();
        self.call("reading the revision", PER_TRY, |mut c, _| {
            let key = key.clone();
            async move {
                let count = GetOptions::new().with_count_only().with_prefix();
                let read = c.get(key, Some(count)).await?;
                let status = c.status().await?;
                Ok(read.header().map(|h| History {
                    raft_index: status.raft_index(),
                    ..History::of(h)
                }))
            }
        })
        .await?
        .ok_or_else(|| {
            anyhow!(
                "etcd at {}: an answer without a header",
                self.endpoints_url()
            )
        })
    }

    /// Whether `key` was written at `revision`, as etcd's history says now: one revision, one
    /// change, in any one history; a restored cluster written past that revision since holds
    /// another change there. Err once the revision is compacted (nothing to tell then).
    pub async fn written_at(&self, key: &[u8], revision: i64) -> Result<bool> {
        let shown = String::from_utf8_lossy(key).into_owned();
        let then = self
            .call(&format!("reading {shown}"), PER_TRY, |mut c, _| {
                let key = key.to_vec();
                async move {
                    let at = GetOptions::new().with_revision(revision);
                    c.get(key, Some(at)).await
                }
            })
            .await?;
        Ok(then
            .kvs()
            .first()
            .is_some_and(|kv| kv.mod_revision() == revision))
    }

    /// Why etcd no longer has this client's last leased record where it put it (a cluster
    /// restored from an older snapshot, whatever its revision has reached since), if so.
    pub async fn lost_writes(&self) -> Result<Option<String>> {
        let Some((key, at)) = self
            .last_put
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(None);
        };
        let now = self
            .call(&format!("reading {key}"), PER_TRY, |mut c, _| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(match now.kvs().first() {
            None => Some(format!("etcd lost {key}, written at revision {at}")),
            Some(kv) if kv.mod_revision() < at => Some(format!(
                "etcd has {key} as of revision {}, but it was written at {at}",
                kv.mod_revision()
            )),
            Some(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEN: History = History {
        revision: 120,
        cluster_id: 7,
        raft_term: 9,
        raft_index: 400,
    };

    #[test]
    fn the_same_history_moving_on_is_not_behind() {
        for now in [
            SEEN,
            History {
                revision: 130,
                raft_term: 11,
                ..SEEN
            },
            // A header: no raft index.
            History {
                raft_index: 0,
                ..SEEN
            },
            // Further on.
            History {
                raft_index: 405,
                ..SEEN
            },
        ] {
            assert_eq!(now.behind(&SEEN), None);
        }
    }

    #[test]
    fn a_restored_cluster_is_behind_by_revision_or_by_term() {
        let restored = History {
            revision: 100,
            ..SEEN
        };
        assert!(restored.behind(&SEEN).unwrap().contains("revision 100"));
        // Written to since, past our revision: its fresh raft log still gives it away.
        let written = History {
            revision: 140,
            raft_term: 2,
            ..SEEN
        };
        assert!(written.behind(&SEEN).unwrap().contains("raft term 2"));
        // The same term reached again (a young cluster restored): its raft log is new.
        let same_term = History {
            revision: 140,
            raft_index: 12,
            ..SEEN
        };
        assert!(same_term.behind(&SEEN).unwrap().contains("raft index 12"));
    }

    #[test]
    fn another_cluster_is_another_history() {
        let other = History {
            cluster_id: 8,
            revision: 500,
            ..SEEN
        };
        assert!(other.behind(&SEEN).unwrap().contains("cluster id"));
    }
}
