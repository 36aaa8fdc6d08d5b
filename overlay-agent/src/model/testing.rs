//! Helpers for the model's randomized tests (and the syncs' built on it): a cheap seeded
//! random source and a write to the cluster copy noted in a batch, as a watch event is.
use super::{cluster::ClusterState, delta::Batch};
use crate::store::schema::Keys;

/// A seeded xorshift: `next(n)` is in `0..n`, the same sequence for the same seed, so a
/// failure names a round that can be run again.
pub fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Puts `value` at `<prefix>/key` (deletes the key for None) in `c`, noted in `b` first, as
/// the agent applies a watch event.
pub fn write(c: &mut ClusterState, b: &mut Batch, keys: &Keys, key: String, value: Option<String>) {
    let key = format!("/overlay/{key}");
    b.note(c, keys, key.as_bytes());
    match value {
        Some(v) => {
            let _ = c.put(keys, key.as_bytes(), v.as_bytes(), 1);
        }
        None => {
            c.delete(keys, key.as_bytes());
        }
    }
}
