//! Published ports (`service create --publish 8080:80/tcp`): the keys and values the
//! underlay's ingress (`from_underlay`), the backend's node (`from_container`) and the agent
//! agree on. See docs/services.md, "Published ports".
use crate::{ServiceKey, VtepAddr};

/// Most published (protocol, port) pairs of a cluster (PUBLISHED entries).
pub const MAX_PUBLISHED: u32 = 1024;
/// Flows through published ports a node remembers, as the ingress (PUB_FLOWS) and as a
/// backend's node (PUB_REPLY). LRU maps with no timer: an entry goes only when the map is full
/// and it is the least recently used (every packet of the flow refreshes it).
pub const MAX_PUBLISHED_FLOWS: u32 = 65536;

/// The first four bytes of the inner source MAC of a published flow's packet sent from its
/// ingress node to its backend's node; the last two are the published port (network byte
/// order). A locally administered unicast MAC no endpoint is given (endpoint MACs are 02:..).
pub const PUBLISHED_MAC_PREFIX: [u8; 4] = [0x0e, 0x6f, 0x76, 0x70];

/// PUBLISHED key: a published port as a packet to a node's underlay address carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishedKey {
    /// Network byte order.
    pub port_be: u16,
    /// One of [`crate::proto`].
    pub proto: u8,
    pub _pad: u8,
}

impl PublishedKey {
    /// `port` in host byte order.
    pub const fn new(port: u16, proto: u8) -> Self {
        Self {
            port_be: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

/// PUBLISHED value: the service port it reaches (its SERVICES key).
pub type Published = ServiceKey;

/// One direction of a TCP or UDP flow, of addresses `A`: the PUB_FLOWS and PUB_REPLY key
/// ([`FlowKey`], IPv4) and the PUB_FLOWS6 and PUB_REPLY6 key ([`FlowKey6`], a client on an
/// IPv6 underlay and a backend's address in its dual-stack network's prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow<A> {
    pub src: A,
    pub dst: A,
    /// Network byte order, both.
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

pub type FlowKey = Flow<[u8; 4]>;
pub type FlowKey6 = Flow<[u8; 16]>;

impl<A: Copy> Flow<A> {
    /// The other direction of the flow: what its replies carry.
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// PUB_FLOWS and PUB_FLOWS6 value (ingress node, keyed client -> node:published): the backend
/// the flow was given at its first packet, for its whole life (for IPv6, its IPv4 address
/// within the network's prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowBackend {
    pub vni: u32,
    pub ip: [u8; 4],
    /// Network byte order.
    pub port_be: u16,
    pub _pad: u16,
}

/// PUB_REPLY and PUB_REPLY6 value (backend's node, keyed backend:port -> client): the source the backend's
/// replies must carry, the ingress node's underlay address and published port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyVia {
    pub ingress: VtepAddr,
    /// Network byte order.
    pub port_be: u16,
    pub _pad: u16,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C) plain data with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for PublishedKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowKey6 {}
    unsafe impl aya::Pod for FlowBackend {}
    unsafe impl aya::Pod for ReplyVia {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PublishedKey>(), 4);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<FlowBackend>(), 12);
        assert_eq!(size_of::<ReplyVia>(), 20);
    }
}
