//! What the programs tell `overlay-agent monitor`: who listens (`MONITOR_CTL`), the events they
//! send through the `EVENTS` ring buffer, and what they could not send (`MONITOR_CPU`).
//!
//! An event carries the packet's first bytes as the program saw them, not fields picked out in
//! the kernel: every drop site, however early, reports the same way, and the monitor parses
//! outer and inner headers in userspace (as `cilium monitor` does with its captured bytes).

/// Bytes of each packet an event carries: outer Ethernet, IPv4, UDP and VXLAN (50), the inner
/// Ethernet header (14), an inner IPv6 header (40) and the ports, with room to spare.
pub const CAPTURE_LEN: usize = 128;

/// Size of the `EVENTS` ring buffer in bytes (a power of two, a multiple of the page size):
/// about 6,000 events, a few milliseconds of a flood at the per-CPU limit.
pub const RING_BYTES: u32 = 1 << 20;

/// Events one CPU may send per window of 2^20 ns (~1 ms) unless the monitor asks otherwise:
/// 16,000 per second per CPU, far more than anyone reads, far less than a flood.
pub const DEFAULT_BURST: u32 = 16;

/// How the programs find out whether anyone listens: slot 0 of `MONITOR_CTL`. Deadlines rather
/// than on/off flags, so a monitor killed without cleaning up stops costing anything once its
/// deadline passes; a live monitor keeps pushing them forward.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCtl {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) until which drops are reported; 0: nobody listens.
    pub drops_until_ns: u64,
    /// The same for trace events (encap, decap, ARP replies, local delivery, passes).
    pub traces_until_ns: u64,
    /// Events per CPU per window; 0 means [`DEFAULT_BURST`].
    pub burst: u32,
    pub _pad: u32,
}

/// Per-CPU rate-limit window and what was lost: slot 0 of `MONITOR_CPU`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCpu {
    /// The current window (`ktime >> 20`) and the events sent in it.
    pub window: u64,
    pub sent: u64,
    /// Events not sent because this CPU was over its burst.
    pub rate_limited: u64,
    /// Events not sent because the ring buffer was full (the monitor reads too slowly).
    pub ring_full: u64,
}

/// Where an event was seen.
pub mod hook {
    pub const FROM_CONTAINER: u8 = 1;
    pub const FROM_UNDERLAY: u8 = 2;
    pub const GRO_SINK: u8 = 3;
    /// The socket load balancer at the cgroup root: its event carries a
    /// [`super::SockLbRecord`], not packet bytes (no packet exists yet at connect()).
    pub const SOCK_LB: u8 = 4;

    pub const fn name(hook: u8) -> &'static str {
        match hook {
            FROM_CONTAINER => "from-container",
            FROM_UNDERLAY => "from-underlay",
            GRO_SINK => "gro-sink",
            SOCK_LB => "sock-lb",
            _ => "unknown",
        }
    }
}

/// One event in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MonitorEvent {
    /// `bpf_ktime_get_ns` when it was seen.
    pub time_ns: u64,
    /// The packet's length (skb->len) at that moment.
    pub len: u32,
    /// The device it arrived on.
    pub ifindex: u32,
    /// The outcome: an index of [`crate::Counter`] (a drop reason, or what was done with it).
    pub counter: u32,
    /// One of [`hook`].
    pub hook: u8,
    pub _pad: u8,
    /// How many of `data`'s bytes are the packet's (fewer for a short packet).
    pub captured: u16,
    pub data: [u8; CAPTURE_LEN],
}

/// What a socket hook's event holds in `data`: the service address a socket asked for and the
/// backend it was given (all zero: none healthy, the call refused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLbRecord {
    /// 4 or 6.
    pub family: u8,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub vip_port_be: u16,
    pub backend_port_be: u16,
    pub _pad: u16,
    /// An IPv4 address in its first four bytes.
    pub vip: [u8; 16],
    pub backend: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C) plain data with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for MonitorCtl {}
    unsafe impl aya::Pod for MonitorCpu {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<MonitorCtl>(), 24);
        assert_eq!(size_of::<MonitorCpu>(), 32);
        assert_eq!(size_of::<MonitorEvent>(), 24 + CAPTURE_LEN);
        assert_eq!(size_of::<SockLbRecord>(), 40);
    }
}
