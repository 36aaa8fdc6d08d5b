//! Whether etcd's history went back under a watcher: a cluster restored from an older
//! snapshot answers with revisions this node already applied (and, once written to, reuses
//! them for other changes), or it is another cluster altogether.
//!
//! Within one cluster's life neither the revision nor the raft term ever decreases, and the
//! cluster id never changes. A member that lags a little may still show an older revision or
//! term in a watch header, so a header only raises the suspicion; a read through the leader
//! settles it.

/// Where a cluster's history stands, as a response header says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub revision: i64,
    pub cluster_id: u64,
    pub raft_term: u64,
}

impl History {
    pub fn of(header: &etcd_client::ResponseHeader) -> Self {
        Self {
            revision: header.revision(),
            cluster_id: header.cluster_id(),
            raft_term: header.raft_term(),
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
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEN: History = History {
        revision: 120,
        cluster_id: 7,
        raft_term: 9,
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
