//! Service load balancing: which service a socket's destination is, and which of its backends
//! a new connection goes to. Called from the socket hooks (sock_lb.rs); no packet is touched.
//!
//! Selection is round robin over the service port's slots, from one turn counter per service
//! shared by every CPU (LB_TURN): new connections spread evenly (random choice is not even
//! enough over a thousand connections). A backend whose `healthy` flag is clear is passed over.
use aya_ebpf::bindings::BPF_NOEXIST;
use overlay_common::{BACKEND_HEALTHY, Backend, BackendKey, MAX_NETNS_NETWORKS, ServiceKey};

use crate::maps::{BACKENDS, LB_TURN, MEMBERS, NETWORKS, SERVICES};

/// Slots tried past an unhealthy backend before a connection is refused.
const MAX_TRIES: u32 = 16;

/// What a destination is to this node's services.
pub enum Lookup {
    /// Not a service of the namespace's networks (or the namespace is no member): untouched.
    NotOurs,
    /// A service port: the backend chosen for this connection or datagram.
    Backend(Backend),
    /// A service port with no healthy backend.
    NoBackend,
}

/// The service `ip:port_be` (as the socket addresses it) of protocol `proto` is, for a socket
/// of network namespace `netns`, and the backend it goes to now.
#[inline(always)]
pub fn balance(netns: u64, ip: [u8; 4], port_be: u16, proto: u8) -> Lookup {
    balance_in(netns, port_be, proto, |_| Some(ip))
}

/// The same for an IPv6 destination `ip6`: a service's IPv6 VIP is its IPv4 VIP within its
/// dual-stack network's prefix, as every endpoint's IPv6 address is its IPv4 address there
/// (the first 96 bits from NETWORKS), so the destination is the VIP of the member network
/// whose prefix it is in. A backend's IPv6 address is then its IPv4 address in that prefix.
///
/// An IPv4-mapped destination (`::ffff:a.b.c.d`, what a dual-stack socket of Java and others
/// connects to for an IPv4 address) is that IPv4 address: the kernel runs only the `6` hook
/// for such a socket, so without this its connection to the IPv4 VIP would go unbalanced.
/// Its backend is the backend's IPv4 address mapped the same way.
#[inline(always)]
pub fn balance6(netns: u64, ip6: &[u8; 16], port_be: u16, proto: u8) -> Lookup {
    const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    balance_in(netns, port_be, proto, |vni| {
        if ip6[..12] == V4_MAPPED {
            return Some([ip6[12], ip6[13], ip6[14], ip6[15]]);
        }
        let net = NETWORKS.get_ptr(vni)?;
        let prefix = unsafe { (*net).prefix6 };
        if prefix == [0; 12] || ip6[..12] != prefix {
            return None;
        }
        Some([ip6[12], ip6[13], ip6[14], ip6[15]])
    })
}

/// The service of the first member network of `netns` for which `vip_in` gives an IPv4 VIP
/// with a service on `port_be`/`proto`.
#[inline(always)]
fn balance_in(
    netns: u64,
    port_be: u16,
    proto: u8,
    vip_in: impl Fn(u32) -> Option<[u8; 4]>,
) -> Lookup {
    let Some(members) = MEMBERS.get_ptr(netns) else {
        return Lookup::NotOurs;
    };
    let count = unsafe { (*members).count };
    for i in 0..MAX_NETNS_NETWORKS {
        if i as u32 >= count {
            break;
        }
        let vni = unsafe { (*members).vnis[i] };
        let Some(ip) = vip_in(vni) else { continue };
        let key = ServiceKey {
            vni,
            vip: ip,
            port_be,
            proto,
            _pad: 0,
        };
        if let Some(service) = SERVICES.get_ptr(key) {
            let (id, backends) = unsafe { ((*service).id, (*service).count) };
            return match select(id, backends) {
                Some(b) => Lookup::Backend(b),
                None => Lookup::NoBackend,
            };
        }
    }
    Lookup::NotOurs
}

/// The next healthy backend of service `id` in round-robin order.
#[inline(always)]
fn select(id: u32, count: u32) -> Option<Backend> {
    if count == 0 {
        return None;
    }
    let turn = next_turn(id);
    for i in 0..MAX_TRIES {
        if i >= count {
            break;
        }
        let slot = turn.wrapping_add(i) % count;
        if let Some(b) = BACKENDS.get_ptr(BackendKey { service: id, slot }) {
            let b = unsafe { *b };
            if b.flags & BACKEND_HEALTHY != 0 {
                return Some(b);
            }
        }
    }
    None
}

/// Service `id`'s turn, moved on by one. Every CPU shares it; the target has no atomic
/// fetch-and-add (bpfel-unknown-none here), so it is a plain read and write: two CPUs racing
/// may take one turn twice, which costs evenness one connection and nothing else.
#[inline(always)]
fn next_turn(id: u32) -> u32 {
    let turn = match LB_TURN.get_ptr_mut(id) {
        Some(p) => p,
        None => {
            // Another CPU may make it first: either way there is one now.
            let _ = LB_TURN.insert(id, 0, BPF_NOEXIST as u64);
            match LB_TURN.get_ptr_mut(id) {
                Some(p) => p,
                None => return 0,
            }
        }
    };
    unsafe {
        let now = *turn;
        *turn = now.wrapping_add(1);
        now
    }
}
