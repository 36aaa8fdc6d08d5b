//! Counting outcomes. Every verdict a program reaches is a [`Verdict`] made by one of these, and
//! the entry point concludes it in one place ([`conclude`]): counted, shown to the monitor if
//! anyone listens, returned to the kernel. So the counters account for every packet the
//! programs saw, and the monitor sees exactly what they count.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use overlay_common::Counter;

use crate::{maps::STATS, monitor};

/// What a program decided: the action the kernel gets and the outcome that names why.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub counter: Counter,
    pub action: i32,
}

#[inline(always)]
pub fn count(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
pub fn add(counter: Counter, n: u64) {
    if let Some(slot) = slot(counter) {
        // Per-CPU slot: no other writer can race us.
        unsafe { *slot += n };
    }
}

/// This CPU's slot of `counter`, for counting as a loop goes.
#[inline(always)]
pub fn slot(counter: Counter) -> Option<*mut u64> {
    STATS.get_ptr_mut(counter as u32)
}

/// Hand the packet on unchanged.
#[inline(always)]
pub fn pass(counter: Counter) -> Verdict {
    Verdict {
        counter,
        action: TC_ACT_OK,
    }
}

/// Drop it.
#[inline(always)]
pub fn drop(counter: Counter) -> Verdict {
    Verdict {
        counter,
        action: TC_ACT_SHOT,
    }
}

/// A redirect whose verdict the helper already returned.
#[inline(always)]
pub fn redirected(counter: Counter, verdict: i64) -> Verdict {
    Verdict {
        counter,
        action: verdict as i32,
    }
}

/// The end of every TC program: count the outcome, report it to a listening monitor, return
/// the action.
#[inline(always)]
pub fn conclude(ctx: &TcContext, hook: u8, verdict: Verdict) -> i32 {
    count(verdict.counter);
    monitor::observe(ctx, hook, verdict.counter);
    verdict.action
}
