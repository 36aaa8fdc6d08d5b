//! TC ingress of the idle collect_md vxlan device the agent keeps per UDP port (`ovgro<port>`).
//!
//! The device exists only for its socket: the kernel merges VXLAN packets (GRO) only for a UDP
//! port whose socket registered a GRO handler, and merged packets reach `from_underlay` before
//! the socket ever sees them. What does reach the socket (outer fragments or IP options that
//! `from_underlay` leaves to the host, VXLAN arriving on another interface) would be
//! decapsulated and delivered by the kernel without any of our checks: it ends here.
use aya_ebpf::programs::TcContext;
use overlay_common::Counter;

use crate::stats::{Verdict, drop};

pub fn handle(_ctx: &TcContext) -> Verdict {
    drop(Counter::DropKernelVxlan)
}
