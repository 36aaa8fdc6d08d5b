//! The overlay's dataplane: one entry point per attach point.
//!
//! - `from_container`: TC ingress on the host side of each container's veth (Cilium's `bpf_lxc`).
//! - `from_underlay`: TC ingress on the underlay interface (Cilium's `bpf_overlay`).
//! - `gro_sink`: TC ingress on the idle vxlan device that gives our port GRO: drops all.
//! - `sock_connect4`, `sock_sendmsg4`, `sock_recvmsg4`, `sock_getpeername4` (and their `6`
//!   twins for dual-stack networks' IPv6 VIPs): the cgroup v2
//!   root's socket hooks, service load balancing (Cilium's `bpf_sock`).
//!
//! Each entry file reads top to bottom as the path one packet takes; the protocol steps they call
//! live in their own modules.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod arp;
#[cfg(target_arch = "bpf")]
mod checksum;
#[cfg(target_arch = "bpf")]
mod ecn;
#[cfg(target_arch = "bpf")]
mod flood;
#[cfg(target_arch = "bpf")]
mod fragment;
#[cfg(target_arch = "bpf")]
mod from_container;
#[cfg(target_arch = "bpf")]
mod from_underlay;
#[cfg(target_arch = "bpf")]
mod gro_sink;
#[cfg(target_arch = "bpf")]
mod igmp;
#[cfg(target_arch = "bpf")]
mod ipv6;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod monitor;
#[cfg(target_arch = "bpf")]
mod ndp;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod pmtu;
#[cfg(target_arch = "bpf")]
mod rx_checksum;
#[cfg(target_arch = "bpf")]
mod sock_lb;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod vxlan;
#[cfg(target_arch = "bpf")]
mod xdp_decap;

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{
        macros::{cgroup_sock_addr, classifier, xdp},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use overlay_common::monitor::hook;

    use crate::stats::conclude;

    #[classifier]
    pub fn from_container(ctx: TcContext) -> i32 {
        let verdict = crate::from_container::handle(&ctx);
        conclude(
            &ctx,
            hook::FROM_CONTAINER,
            crate::fragment::follow(&ctx, verdict),
        )
    }

    #[classifier]
    pub fn from_underlay(ctx: TcContext) -> i32 {
        conclude(
            &ctx,
            hook::FROM_UNDERLAY,
            crate::from_underlay::handle(&ctx),
        )
    }

    /// Tail-called by `from_container` for IPv4 packets to fragment (never attached).
    #[classifier]
    pub fn fragment(ctx: TcContext) -> i32 {
        conclude(&ctx, hook::FROM_CONTAINER, crate::fragment::handle(&ctx))
    }

    /// Tail-called by `fragment`: the first piece of a packet it fragments.
    #[classifier]
    pub fn fragment_first(ctx: TcContext) -> i32 {
        conclude(
            &ctx,
            hook::FROM_CONTAINER,
            crate::fragment::handle_first(&ctx),
        )
    }

    #[classifier]
    pub fn gro_sink(ctx: TcContext) -> i32 {
        conclude(&ctx, hook::GRO_SINK, crate::gro_sink::handle(&ctx))
    }

    /// The XDP decapsulation the benchmark measures against `from_underlay` (not attached by
    /// the agent).
    #[xdp]
    pub fn xdp_decap(ctx: XdpContext) -> u32 {
        crate::xdp_decap::handle(&ctx)
    }

    #[cgroup_sock_addr(connect4)]
    pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::connect4(&ctx)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::sendmsg4(&ctx)
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::recvmsg4(&ctx)
    }

    #[cgroup_sock_addr(getpeername4)]
    pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::getpeername4(&ctx)
    }

    #[cgroup_sock_addr(connect6)]
    pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::connect6(&ctx)
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::sendmsg6(&ctx)
    }

    #[cgroup_sock_addr(recvmsg6)]
    pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::recvmsg6(&ctx)
    }

    #[cgroup_sock_addr(getpeername6)]
    pub fn sock_getpeername6(ctx: SockAddrContext) -> i32 {
        crate::sock_lb::getpeername6(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    // GPL-compatible: bpf_redirect_peer and bpf_redirect_neigh are GPL-only helpers.
    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

/// Host builds (clippy, `cargo check --workspace`) see an empty binary: the programs only exist
/// for the BPF target, which the agent's build.rs compiles.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
