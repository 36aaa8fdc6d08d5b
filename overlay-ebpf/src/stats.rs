//! Counting outcomes. Every verdict a program returns goes through one of these, so the counters
//! account for every packet the programs saw.
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
use overlay_common::Counter;

use crate::maps::STATS;

#[inline(always)]
pub fn count(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
pub fn add(counter: Counter, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer can race us.
        unsafe { *slot += n };
    }
}

/// Count and hand the packet on unchanged.
#[inline(always)]
pub fn pass(counter: Counter) -> i32 {
    count(counter);
    TC_ACT_OK
}

/// Count and drop.
#[inline(always)]
pub fn drop(counter: Counter) -> i32 {
    count(counter);
    TC_ACT_SHOT
}

/// Count a redirect whose verdict the helper already returned.
#[inline(always)]
pub fn redirected(counter: Counter, verdict: i64) -> i32 {
    count(counter);
    verdict as i32
}
