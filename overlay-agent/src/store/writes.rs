//! Conditional writes that can be retried safely.
//!
//! A write whose answer was lost (a deadline, a leader change, a reset connection) may have
//! committed. Retried, its compare then fails against its own earlier success ("already
//! exists"), and the command would report a conflict it caused itself. So every transaction
//! also reads, when its compare fails, the keys it meant to write; after an attempt that may
//! have landed, a failed compare counts as success when those keys hold exactly what we meant
//! them to hold (and the keys we meant to delete are absent).
use etcd_client::{Compare, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

/// A transaction: when `when` holds, put `puts` and delete `deletes`.
#[derive(Clone, Default)]
pub struct Write {
    pub when: Vec<Compare>,
    pub puts: Vec<(String, Vec<u8>)>,
    /// Keys to delete; `true`: every key under it (a prefix).
    pub deletes: Vec<(String, bool)>,
}

/// What a key held, as the `or_else` branch read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A put key: its value, None if absent.
    Value(Option<Vec<u8>>),
    /// A deleted key or prefix: how many keys it still has.
    Count(i64),
}

impl Write {
    pub fn txn(&self) -> Txn {
        let mut ops = Vec::new();
        let mut reads = Vec::new();
        for (key, value) in &self.puts {
            ops.push(TxnOp::put(key.as_str(), value.clone(), None));
            reads.push(TxnOp::get(key.as_str(), None));
        }
        for (key, prefix) in &self.deletes {
            let (delete, count) = if *prefix {
                (
                    Some(DeleteOptions::new().with_prefix()),
                    GetOptions::new().with_prefix().with_count_only(),
                )
            } else {
                (None, GetOptions::new().with_count_only())
            };
            ops.push(TxnOp::delete(key.as_str(), delete));
            reads.push(TxnOp::get(key.as_str(), Some(count)));
        }
        Txn::new()
            .when(self.when.clone())
            .and_then(ops)
            .or_else(reads)
    }

    /// What the `or_else` reads of a failed transaction saw, in the order of `puts` then
    /// `deletes`.
    pub fn seen(&self, resp: &TxnResponse) -> Vec<Seen> {
        resp.op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get),
                _ => None,
            })
            .enumerate()
            .map(|(i, get)| {
                if i < self.puts.len() {
                    Seen::Value(get.kvs().first().map(|kv| kv.value().to_vec()))
                } else {
                    Seen::Count(get.count())
                }
            })
            .collect()
    }

    /// Whether the transaction counts as done: it succeeded, or its compare failed only
    /// because an earlier attempt of ours that `maybe_applied` did the very same write.
    pub fn done(&self, succeeded: bool, maybe_applied: bool, seen: &[Seen]) -> bool {
        if succeeded {
            return true;
        }
        if !maybe_applied || seen.len() != self.puts.len() + self.deletes.len() {
            return false;
        }
        let puts = self
            .puts
            .iter()
            .zip(seen)
            .all(|((_, want), seen)| matches!(seen, Seen::Value(Some(v)) if v == want));
        let deletes = seen[self.puts.len()..]
            .iter()
            .all(|seen| *seen == Seen::Count(0));
        puts && deletes
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::CompareOp;

    use super::*;

    fn create(pairs: &[(&str, &str)]) -> Write {
        Write {
            when: pairs
                .iter()
                .map(|(k, _)| Compare::create_revision(*k, CompareOp::Equal, 0))
                .collect(),
            puts: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            deletes: Vec::new(),
        }
    }

    fn value(v: &str) -> Seen {
        Seen::Value(Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn a_success_is_a_success() {
        assert!(create(&[("a", "1")]).done(true, false, &[]));
    }

    #[test]
    fn a_first_attempt_conflict_is_a_conflict_even_with_our_values() {
        // Nothing of ours can have landed: the key was someone's (or an earlier run's).
        let w = create(&[("a", "1")]);
        assert!(!w.done(false, false, &[value("1")]));
    }

    #[test]
    fn a_retry_that_finds_our_own_write_succeeded() {
        let w = create(&[("ep", "{mine}"), ("name", "{me}")]);
        assert!(w.done(false, true, &[value("{mine}"), value("{me}")]));
    }

    #[test]
    fn a_retry_that_finds_another_value_lost_the_race() {
        let w = create(&[("ep", "{mine}"), ("name", "{me}")]);
        assert!(!w.done(false, true, &[value("{theirs}"), value("{me}")]));
        assert!(!w.done(false, true, &[value("{mine}"), Seen::Value(None)]));
        // Fewer answers than keys: never guess.
        assert!(!w.done(false, true, &[value("{mine}")]));
    }

    #[test]
    fn a_retried_delete_is_done_when_the_keys_are_gone() {
        let w = Write {
            when: vec![Compare::create_revision("ep", CompareOp::Equal, 7)],
            puts: Vec::new(),
            deletes: vec![("ep".into(), false), ("name".into(), false)],
        };
        assert!(w.done(false, true, &[Seen::Count(0), Seen::Count(0)]));
        // The address has a new owner since: not ours to call done.
        assert!(!w.done(false, true, &[Seen::Count(1), Seen::Count(0)]));
        assert!(!w.done(false, false, &[Seen::Count(0), Seen::Count(0)]));
    }
}
