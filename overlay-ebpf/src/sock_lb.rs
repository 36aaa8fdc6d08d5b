//! The socket hooks at the cgroup v2 root: a container's connect() or datagram to a service's
//! virtual IP goes to one of its backends, rewritten once in the socket's address before any
//! packet exists (Cilium's `bpf_sock.c`). So no packet is translated and no connection is
//! tracked: a TCP connection holds no state of ours that could end it and stays with its
//! backend for its whole life, idle or not. What is kept only shows the socket the address it
//! asked for (getpeername, a UDP reply's source), and has no timer: for a socket balanced at
//! connect() (TCP, connected UDP), LB_PEER in the socket itself, freed with it; for an
//! unconnected UDP socket's datagrams, LB_REVERSE per (socket, backend).
//!
//! - `connect4`: TCP and connected UDP: the destination becomes a backend.
//! - `sendmsg4`: unconnected UDP: each datagram's destination becomes a backend.
//! - `recvmsg4`: a reply from a backend appears to come from the virtual IP and port.
//! - `getpeername4`: a balanced socket's peer is shown as the virtual IP and port.
//! - `connect6`, `sendmsg6`, `recvmsg6`, `getpeername6`: the same for a dual-stack network's
//!   IPv6 VIP (its IPv4 VIP in the network's prefix), balanced to the backends' IPv6 addresses.
use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use overlay_common::{
    Counter, PeerEntry, ReverseEntry, ReverseKey, monitor::SockLbRecord, proto as ipproto,
};

use crate::{
    lb::{Lookup, balance, balance6},
    maps::{LB_PEER, LB_REVERSE},
    monitor,
    stats::count,
};

/// A cgroup socket hook lets the call go on with 1; 0 fails it (with the error set by
/// `bpf_set_retval`, EPERM otherwise).
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

/// connect() of a TCP or UDP socket.
pub fn connect4(ctx: &SockAddrContext) -> i32 {
    translate(ctx, Call::Connect)
}

/// sendmsg() with a destination on an unconnected UDP socket: every datagram is balanced on
/// its own (a DNS-like request and its reply are one datagram each).
pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    translate(ctx, Call::Sendmsg)
}

/// recvmsg() on a UDP socket: the source of a backend's reply shown as the service's.
pub fn recvmsg4(ctx: &SockAddrContext) -> i32 {
    reverse(ctx);
    ALLOW
}

/// getpeername() of a balanced socket.
pub fn getpeername4(ctx: &SockAddrContext) -> i32 {
    reverse(ctx);
    ALLOW
}

/// connect() of a TCP or UDP socket to an IPv6 address (a dual-stack network's VIP).
pub fn connect6(ctx: &SockAddrContext) -> i32 {
    translate6(ctx, Call::Connect)
}

/// sendmsg() with an IPv6 destination on an unconnected UDP socket.
pub fn sendmsg6(ctx: &SockAddrContext) -> i32 {
    translate6(ctx, Call::Sendmsg)
}

/// recvmsg() on an IPv6 UDP socket.
pub fn recvmsg6(ctx: &SockAddrContext) -> i32 {
    reverse6(ctx);
    ALLOW
}

/// getpeername() of a balanced IPv6 socket.
pub fn getpeername6(ctx: &SockAddrContext) -> i32 {
    reverse6(ctx);
    ALLOW
}

/// Which call a destination is balanced for: `connect()` gives the socket its one peer (TCP,
/// or connected UDP); `sendmsg()` one datagram, of an unconnected socket that may send the
/// next elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Connect,
    Sendmsg,
}

#[inline(always)]
fn translate(ctx: &SockAddrContext, call: Call) -> i32 {
    let sa = ctx.sock_addr;
    let (ip, port_be, proto) = unsafe {
        (
            (*sa).user_ip4.to_ne_bytes(),
            (*sa).user_port as u16,
            (*sa).protocol as u8,
        )
    };
    let netns = unsafe { bpf_get_netns_cookie(sa.cast()) };
    let lookup = balance(netns, ip, port_be, proto);
    if let Lookup::Backend(b) = &lookup {
        unsafe { (*sa).user_ip4 = u32::from_ne_bytes(b.ip) };
    }
    conclude(ctx, call, lookup, ip, port_be, proto)
}

/// IPv6: the VIP and the backend share their network's prefix (lb.rs, `balance6`), so only
/// the address's last 32 bits, the IPv4 part, change; LB_PEER and LB_REVERSE hold those too.
#[inline(always)]
fn translate6(ctx: &SockAddrContext, call: Call) -> i32 {
    let sa = ctx.sock_addr;
    let (words, port_be, proto) = unsafe {
        (
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            (*sa).user_port as u16,
            (*sa).protocol as u8,
        )
    };
    let mut ip6 = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        ip6[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let netns = unsafe { bpf_get_netns_cookie(sa.cast()) };
    let lookup = balance6(netns, &ip6, port_be, proto);
    if let Lookup::Backend(b) = &lookup {
        unsafe { (*sa).user_ip6[3] = u32::from_ne_bytes(b.ip) };
    }
    conclude(ctx, call, lookup, words[3].to_ne_bytes(), port_be, proto)
}

/// What a balanced socket call comes to, its address already rewritten to the backend's
/// (but for the port): the port, the reverse entry, the counters, the monitor; or the refusal.
/// An IPv6 decision is shown to the monitor by its IPv4 VIP and backend, from which the IPv6
/// addresses derive.
#[inline(always)]
fn conclude(
    ctx: &SockAddrContext,
    call: Call,
    lookup: Lookup,
    ip: [u8; 4],
    port_be: u16,
    proto: u8,
) -> i32 {
    let sa = ctx.sock_addr;
    match lookup {
        Lookup::NotOurs => ALLOW,
        Lookup::Backend(b) => {
            unsafe { (*sa).user_port = u32::from(b.port_be) };
            let shown = ReverseEntry {
                vip: ip,
                port_be,
                _pad: 0,
            };
            remember(ctx, call, b.ip, b.port_be, shown);
            count(Counter::LbBalanced);
            monitor::socket(
                Counter::LbBalanced,
                &record(proto, ip, port_be, b.ip, b.port_be),
            );
            ALLOW
        }
        Lookup::NoBackend => {
            count(Counter::LbNoBackend);
            monitor::socket(Counter::LbNoBackend, &record(proto, ip, port_be, [0; 4], 0));
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            REJECT
        }
    }
}

/// What the socket is to be shown in place of its backend `ip:port_be`. A socket balanced at
/// `connect()` (TCP, connected UDP) has one peer: it goes in the socket's own storage (made
/// zeroed, then filled: a socket connecting again is given its new peer). An unconnected UDP
/// socket may send to several backends: an LRU entry per (socket, backend), of which a full
/// map evicts the least recently used (that socket's replies then show the backend's address;
/// nothing else changes).
#[inline(always)]
fn remember(ctx: &SockAddrContext, call: Call, ip: [u8; 4], port_be: u16, shown: ReverseEntry) {
    if call == Call::Connect {
        let peer = unsafe { LB_PEER.get_or_insert_ptr_mut(ctx, None) };
        if !peer.is_null() {
            unsafe {
                *peer = PeerEntry {
                    backend: ip,
                    backend_port_be: port_be,
                    _pad: 0,
                    shown,
                }
            };
        }
        return;
    }
    let _ = LB_REVERSE.insert(reverse_key(ctx, ip, port_be), shown, 0);
}

/// What a socket whose peer (or a datagram's source) is `ip:port_be` is shown instead, if it
/// was balanced there: its connected peer, else (UDP) the datagrams it sent there.
#[inline(always)]
fn shown(ctx: &SockAddrContext, ip: [u8; 4], port_be: u16) -> Option<ReverseEntry> {
    let peer = unsafe { LB_PEER.get_ptr_mut(ctx) };
    if !peer.is_null() {
        let peer = unsafe { *peer };
        if peer.backend == ip && peer.backend_port_be == port_be {
            return Some(peer.shown);
        }
    }
    if unsafe { (*ctx.sock_addr).protocol as u8 } != ipproto::UDP {
        return None;
    }
    LB_REVERSE
        .get_ptr(reverse_key(ctx, ip, port_be))
        .map(|e| unsafe { *e })
}

/// LB_REVERSE's key for this socket's datagrams to or from backend `ip:port_be`.
#[inline(always)]
fn reverse_key(ctx: &SockAddrContext, ip: [u8; 4], port_be: u16) -> ReverseKey {
    ReverseKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        ip,
        port_be,
        _pad: 0,
    }
}

/// What the monitor is shown of an IPv4 decision.
#[inline(always)]
fn record(
    proto: u8,
    vip: [u8; 4],
    vip_port_be: u16,
    backend: [u8; 4],
    port_be: u16,
) -> SockLbRecord {
    let mut r = SockLbRecord {
        family: 4,
        proto,
        vip_port_be,
        backend_port_be: port_be,
        ..SockLbRecord::default()
    };
    r.vip[..4].copy_from_slice(&vip);
    r.backend[..4].copy_from_slice(&backend);
    r
}

/// getpeername or recvmsg of an IPv6 socket: its backend's address shown as the VIP (only
/// the last 32 bits differ, see `translate6`).
#[inline(always)]
fn reverse6(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let (ip, port_be) = unsafe { ((*sa).user_ip6[3].to_ne_bytes(), (*sa).user_port as u16) };
    if let Some(shown) = shown(ctx, ip, port_be) {
        unsafe {
            (*sa).user_ip6[3] = u32::from_ne_bytes(shown.vip);
            (*sa).user_port = u32::from(shown.port_be);
        }
    }
}

/// getpeername or recvmsg of an IPv4 socket: its backend's address shown as the VIP.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let (ip, port_be) = unsafe { ((*sa).user_ip4.to_ne_bytes(), (*sa).user_port as u16) };
    if let Some(shown) = shown(ctx, ip, port_be) {
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(shown.vip);
            (*sa).user_port = u32::from(shown.port_be);
        }
    }
}
