//! Events for `overlay-agent monitor`, through the `EVENTS` ring buffer.
//!
//! Nobody listening must cost nothing measurable: one array load and a compare against zero per
//! packet. Only when a monitor has set a deadline does a packet reach [`emit`], which checks the
//! deadline, this CPU's budget, and copies the packet's first bytes into the ring.
use core::mem::size_of;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    maps::ring_buf::RingBufEntry,
    programs::TcContext,
};
use overlay_common::{
    Counter,
    monitor::{CAPTURE_LEN, DEFAULT_BURST, MonitorEvent, SockLbRecord, hook},
};

use crate::maps::{EVENTS, MONITOR_CPU, MONITOR_CTL};

/// Reports `counter`, the outcome a program concluded with, if a monitor listens for its kind.
#[inline(always)]
pub fn observe(ctx: &TcContext, hook: u8, counter: Counter) {
    // Decapsulations report themselves before they strip the outer headers (see `trace`), and
    // UnderlayPass is the host's own traffic, not the overlay's.
    if matches!(
        counter,
        Counter::Decap | Counter::DecapFlood | Counter::UnderlayPass
    ) {
        return;
    }
    let Some(ctl) = MONITOR_CTL.get(0) else {
        return;
    };
    let until = if counter.is_drop() {
        ctl.drops_until_ns
    } else {
        ctl.traces_until_ns
    };
    if until != 0 {
        emit(ctx.skb.skb, hook, counter as u32, until, ctl.burst);
    }
}

/// Reports a trace event now, before the program changes the packet (decapsulation: the event
/// should show the outer headers, which say which VTEP it came from).
#[inline(always)]
pub fn trace(ctx: &TcContext, hook: u8, counter: Counter) {
    let Some(ctl) = MONITOR_CTL.get(0) else {
        return;
    };
    if ctl.traces_until_ns != 0 {
        emit(
            ctx.skb.skb,
            hook,
            counter as u32,
            ctl.traces_until_ns,
            ctl.burst,
        );
    }
}

/// Reports a socket load-balancing decision (`lb_balanced`, `lb_no_backend`) to a monitor
/// listening for traces. No packet exists at connect(): the event carries `record`.
#[inline(never)]
pub fn socket(counter: Counter, record: &SockLbRecord) {
    let Some(ctl) = MONITOR_CTL.get(0) else {
        return;
    };
    if ctl.traces_until_ns == 0 {
        return;
    }
    let Some((mut entry, now)) = reserve(ctl.traces_until_ns, ctl.burst) else {
        return;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).time_ns = now;
        (*event).len = 0;
        (*event).ifindex = 0;
        (*event).counter = counter as u32;
        (*event).hook = hook::SOCK_LB;
        (*event)._pad = 0;
        (*event).captured = size_of::<SockLbRecord>() as u16;
        core::ptr::write_unaligned((&raw mut (*event).data).cast::<SockLbRecord>(), *record);
    }
    entry.submit(0);
}

/// A slot in the ring, if a monitor still listens (`until`) and this CPU is within its burst;
/// counts what could not be sent.
#[inline(always)]
fn reserve(until: u64, burst: u32) -> Option<(RingBufEntry<MonitorEvent>, u64)> {
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= until {
        return None;
    }
    let cpu = unsafe { &mut *MONITOR_CPU.get_ptr_mut(0)? };
    let window = now >> 20;
    if cpu.window != window {
        cpu.window = window;
        cpu.sent = 0;
    }
    let burst = if burst == 0 { DEFAULT_BURST } else { burst };
    if cpu.sent >= u64::from(burst) {
        cpu.rate_limited += 1;
        return None;
    }
    let Some(entry) = EVENTS.reserve::<MonitorEvent>(0) else {
        cpu.ring_full += 1;
        return None;
    };
    cpu.sent += 1;
    Some((entry, now))
}

/// Out of line: the fast path carries only the call, not the copy.
#[inline(never)]
fn emit(skb: *mut __sk_buff, hook: u8, counter: u32, until: u64, burst: u32) {
    let Some((mut entry, now)) = reserve(until, burst) else {
        return;
    };
    let event = entry.as_mut_ptr();
    let len = unsafe { (*skb).len };
    // Never more than the buffer, never zero: the verifier checks both bounds of the size.
    let captured = if len as usize > CAPTURE_LEN {
        CAPTURE_LEN as u32
    } else {
        len
    };
    let captured = if captured > 0
        && captured <= CAPTURE_LEN as u32
        && unsafe { bpf_skb_load_bytes(skb.cast(), 0, (&raw mut (*event).data).cast(), captured) }
            == 0
    {
        captured as u16
    } else {
        0
    };
    unsafe {
        (*event).time_ns = now;
        (*event).len = len;
        (*event).ifindex = (*skb).ifindex;
        (*event).counter = counter;
        (*event).hook = hook;
        (*event)._pad = 0;
        (*event).captured = captured;
    }
    entry.submit(0);
}
