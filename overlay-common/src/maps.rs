//! Map names, keys and values. All multi-byte addresses are kept in network byte order as byte
//! arrays: what the packet carries is what the map holds, and no field needs alignment. VTEPs
//! are 16 bytes of either family (`vtep`).

use crate::vtep::VtepAddr;

/// Map names as the eBPF object declares them and bpffs pins them (at most 15 bytes).
pub mod names {
    pub const FDB: &str = "FDB";
    pub const ARP: &str = "ARP";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const PORTS: &str = "PORTS";
    pub const VTEPS: &str = "VTEPS";
    pub const NETWORKS: &str = "NETWORKS";
    pub const VXLAN_PORTS: &str = "VXLAN_PORTS";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const FLOOD: &str = "FLOOD";
    pub const BUM_RATE: &str = "BUM_RATE";
    pub const GROUPS: &str = "GROUPS";
    pub const MCAST: &str = "MCAST";
    pub const GROUP_COUNT: &str = "GROUP_COUNT";
    pub const CLUSTER_PORTS: &str = "CLUSTER_PORTS";
    /// The monitor's switch, its events and its per-CPU losses (see `monitor`).
    pub const MONITOR_CTL: &str = "MONITOR_CTL";
    pub const EVENTS: &str = "EVENTS";
    pub const MONITOR_CPU: &str = "MONITOR_CPU";
    /// Programs `from_container` tail-calls (see `jump`).
    pub const JUMP: &str = "JUMP";
    /// Socket load balancing (see [`crate::ServiceKey`]): services, their backends, which
    /// network namespaces are members of which networks, each service's turn, and the
    /// reverse translation of replies.
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const MEMBERS: &str = "MEMBERS";
    pub const LB_TURN: &str = "LB_TURN";
    pub const LB_REVERSE: &str = "LB_REVERSE";
    /// A connected socket's balanced peer, kept in the socket itself (socket storage).
    pub const LB_PEER: &str = "LB_PEER";
    /// Published ports (see [`crate::PublishedKey`]): which service each serves, the ingress
    /// node's flows and the backend's node's replies.
    pub const PUBLISHED: &str = "PUBLISHED";
    pub const PUB_FLOWS: &str = "PUB_FLOWS";
    pub const PUB_REPLY: &str = "PUB_REPLY";
    pub const PUB_FLOWS6: &str = "PUB_FLOWS6";
    pub const PUB_REPLY6: &str = "PUB_REPLY6";
}

/// How the kernel keeps a map: its BPF map type, which userspace must know to open a pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    LruHash,
    Array,
    PerCpuArray,
    RingBuf,
    ProgArray,
    /// Socket storage: one value per socket, kept in the socket and freed with it. Not
    /// iterable; the loader pins it by path (`Dataplane::load_sized`), as it is a BTF map.
    SkStorage,
}

/// One pinned map of the eBPF object (overlay-ebpf/src/maps.rs declares it): what the loader
/// sizes, what the agent opens by kind, what metrics and `maps` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    /// Grows with the number of endpoints: the loader sizes it by `--max-entries`.
    pub per_endpoint: bool,
    /// Written by the reconcile (desired state -> diff -> apply), entry by entry: metrics
    /// exports its entries, capacity and failed writes.
    pub reconciled: bool,
}

impl MapSpec {
    const fn new(name: &'static str, kind: MapKind, per_endpoint: bool, reconciled: bool) -> Self {
        Self {
            name,
            kind,
            per_endpoint,
            reconciled,
        }
    }

    /// The map named `name`, if the object has one.
    pub fn of(name: &str) -> Option<&'static MapSpec> {
        MAPS.iter().find(|m| m.name == name)
    }
}

/// Every pinned map, in the order metrics and the inspection list them.
pub const MAPS: [MapSpec; 30] = {
    use MapKind::*;
    [
        MapSpec::new(names::FDB, Hash, true, true),
        MapSpec::new(names::ARP, Hash, true, true),
        MapSpec::new(names::ENDPOINTS, Hash, true, true),
        MapSpec::new(names::PORTS, Hash, true, true),
        MapSpec::new(names::VTEPS, Hash, true, true),
        MapSpec::new(names::NETWORKS, Hash, false, true),
        MapSpec::new(names::VXLAN_PORTS, Array, false, false),
        MapSpec::new(names::CONFIG, Array, false, false),
        MapSpec::new(names::STATS, PerCpuArray, false, false),
        MapSpec::new(names::FLOOD, Hash, false, false),
        MapSpec::new(names::BUM_RATE, LruHash, false, false),
        MapSpec::new(names::GROUPS, Hash, false, false),
        MapSpec::new(names::MCAST, Hash, false, false),
        MapSpec::new(names::GROUP_COUNT, Hash, false, false),
        MapSpec::new(names::CLUSTER_PORTS, Hash, false, false),
        MapSpec::new(names::MONITOR_CTL, Array, false, false),
        MapSpec::new(names::EVENTS, RingBuf, false, false),
        MapSpec::new(names::MONITOR_CPU, PerCpuArray, false, false),
        MapSpec::new(names::JUMP, ProgArray, false, false),
        MapSpec::new(names::SERVICES, Hash, false, false),
        MapSpec::new(names::BACKENDS, Hash, false, false),
        MapSpec::new(names::MEMBERS, Hash, false, false),
        MapSpec::new(names::LB_TURN, LruHash, false, false),
        MapSpec::new(names::LB_REVERSE, LruHash, false, false),
        MapSpec::new(names::LB_PEER, SkStorage, false, false),
        MapSpec::new(names::PUBLISHED, Hash, false, false),
        MapSpec::new(names::PUB_FLOWS, LruHash, false, false),
        MapSpec::new(names::PUB_REPLY, LruHash, false, false),
        MapSpec::new(names::PUB_FLOWS6, LruHash, false, false),
        MapSpec::new(names::PUB_REPLY6, LruHash, false, false),
    ]
};

/// The maps the reconcile writes ([`MapSpec::reconciled`]), in [`MAPS`]' order.
pub fn reconciled() -> impl Iterator<Item = &'static MapSpec> {
    MAPS.iter().filter(|m| m.reconciled)
}

/// The maps sized by `--max-entries` ([`MapSpec::per_endpoint`]), in [`MAPS`]' order.
pub fn per_endpoint() -> impl Iterator<Item = &'static MapSpec> {
    MAPS.iter().filter(|m| m.per_endpoint)
}

/// Slots of the JUMP program array.
pub mod jump {
    /// The `fragment` program (IPv4 fragmentation of packets too big for the tunnel).
    pub const FRAGMENT: u32 = 0;
    /// Its second half (the first piece), tail-called by `fragment`.
    pub const FRAGMENT_FIRST: u32 = 1;
    /// The `nodeport_in` program (a packet to a published port), tail-called by
    /// `from_underlay`.
    pub const NODEPORT_IN: u32 = 2;
    pub const SLOTS: u32 = 3;
}

/// Program names (the Rust function names in overlay-ebpf).
pub mod programs {
    pub const FROM_CONTAINER: &str = "from_container";
    pub const FROM_UNDERLAY: &str = "from_underlay";
    /// TC ingress of the idle vxlan device that gives our UDP ports receive-side GRO.
    pub const GRO_SINK: &str = "gro_sink";
    /// Tail-called by `from_container` (JUMP slot `jump::FRAGMENT`), never attached.
    pub const FRAGMENT: &str = "fragment";
    /// Tail-called by `fragment` (slot `jump::FRAGMENT_FIRST`), never attached.
    pub const FRAGMENT_FIRST: &str = "fragment_first";
    /// Tail-called by `from_underlay` (slot `jump::NODEPORT_IN`), never attached: a packet to
    /// a published port, to its backend.
    pub const NODEPORT_IN: &str = "nodeport_in";
    /// Decapsulation at XDP, for the benchmark's comparison only.
    pub const XDP_DECAP: &str = "xdp_decap";
    /// Socket load balancing, attached at the cgroup v2 root (see sock_lb.rs).
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    pub const SOCK_GETPEERNAME4: &str = "sock_getpeername4";
    pub const SOCK_CONNECT6: &str = "sock_connect6";
    pub const SOCK_SENDMSG6: &str = "sock_sendmsg6";
    pub const SOCK_RECVMSG6: &str = "sock_recvmsg6";
    pub const SOCK_GETPEERNAME6: &str = "sock_getpeername6";
}

pub const DEFAULT_MAX_ENTRIES: u32 = 65536;

/// A MAC address within one VNI: key of the FDB and of the local endpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    #[inline(always)]
    pub const fn new(vni: u32, mac: [u8; 6]) -> Self {
        Self {
            vni,
            mac,
            _pad: [0; 2],
        }
    }
}

/// An IPv4 address within one VNI: key of the ARP table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpKey {
    pub vni: u32,
    pub ip: [u8; 4],
}

/// A VTEP that is a member of one VNI: the set decapsulation accepts outer sources from. The
/// value is the VNI's UDP port, so one lookup checks the source and the port together.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VtepKey {
    pub vni: u32,
    pub ip: VtepAddr,
}

/// FDB value: the VTEP (outer destination) behind a remote MAC, the UDP port of its network,
/// and the outer Ethernet header towards it as `bpf_fib_lookup` last resolved it. The agent
/// writes `vtep` and `port` (the cache zeroed, so invalid); the programs fill the cache in place
/// and refresh it every `NEXT_HOP_TTL_NS`. Everything encapsulation needs, in the one value it
/// has to look up anyway.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub vtep: VtepAddr,
    /// Underlay device the next hop is on.
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Outer UDP destination port (the network's), host byte order; 0: network not served.
    pub port: u16,
    /// The underlay path MTU towards the VTEP (route, device or learned), cached with the next
    /// hop; 0 until known.
    pub mtu: u16,
    pub _pad: u32,
    /// bpf_ktime_get_coarse_ns() until which the fields above may be used without the FIB.
    pub valid_until_ns: u64,
}

impl FdbEntry {
    pub const fn new(vtep: VtepAddr, port: u16) -> Self {
        Self {
            vtep,
            ifindex: 0,
            dmac: [0; 6],
            smac: [0; 6],
            port,
            mtu: 0,
            _pad: 0,
            valid_until_ns: 0,
        }
    }
}

/// ARP value: the MAC that owns an overlay IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpEntry {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl ArpEntry {
    pub const fn new(mac: [u8; 6]) -> Self {
        Self { mac, _pad: [0; 2] }
    }
}

/// How a frame reaches a local endpoint.
pub mod deliver {
    /// `bpf_redirect_peer` into the container's namespace through its veth (the fast path).
    pub const PEER: u16 = 0;
    /// `bpf_redirect(.., BPF_F_INGRESS)`: for an address the host itself holds (a bridge).
    pub const INGRESS: u16 = 1;
}

/// A local endpoint: a container's veth on this host. Value of both `ENDPOINTS` (by MAC, for
/// delivery) and `PORTS` (by host-side ifindex, for what the container may send).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host-side ifindex: the veth whose peer is the container's eth0, or the bridge.
    pub ifindex: u32,
    pub vni: u32,
    pub mac: [u8; 6],
    /// One of [`deliver`].
    pub deliver: u16,
    pub ip: [u8; 4],
}

/// A network this node serves, by VNI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// Outer UDP destination port, host byte order.
    pub port: u16,
    pub _pad: u16,
    /// The first 96 bits of the network's IPv6 subnet: each endpoint's IPv6 address is these
    /// followed by its IPv4 address. All zero: the network is IPv4 only.
    pub prefix6: [u8; 12],
}

impl Network {
    pub const fn new(port: u16, prefix6: [u8; 12]) -> Self {
        Self {
            port,
            _pad: 0,
            prefix6,
        }
    }

    /// The IPv6 address of the endpoint whose IPv4 address is `ip`, if the network has IPv6.
    pub fn ipv6_of(&self, ip: [u8; 4]) -> Option<[u8; 16]> {
        if self.prefix6 == [0; 12] {
            return None;
        }
        let mut a = [0; 16];
        a[..12].copy_from_slice(&self.prefix6);
        a[12..].copy_from_slice(&ip);
        Some(a)
    }
}

/// Most remote VTEPs one network's broadcast and multicast is replicated to (the programs walk
/// the list in a bounded loop); a network on more hosts than this reaches the first ones only,
/// and the agent says so.
pub const MAX_FLOOD_VTEPS: usize = 64;

/// FLOOD value, by VNI: what may leave the network from this node, and how: its broadcast and
/// multicast (head-end replication, delivery to the bridge), and for an internal network,
/// nothing else. Node-local: the interfaces are this node's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flood {
    /// The network's bridge here (`ovbr<vni>`): remote broadcast is delivered by sending it
    /// out of the bridge, which floods its ports. 0: no local member.
    pub bridge: u32,
    /// The GRO helper device of the network's UDP port (`ovgro<port>`, a collect_md vxlan
    /// device): each remote copy is cloned to it with its tunnel key, and the kernel writes the
    /// outer headers and resolves the next hop. 0: none yet.
    pub tunnel: u32,
    /// Broadcast and multicast frames one endpoint may send per second (storm control);
    /// 0: unlimited.
    pub rate_pps: u32,
    /// How many of `vteps` are used.
    pub count: u32,
    /// 1: an internal network, with no way out: a container's unicast to anything but an
    /// overlay endpoint (the host's gateway, a MAC it made up) is dropped (`drop_internal`).
    pub internal: u32,
    /// The first `peers` of `vteps` are legacy hosts (`peer add`): they cannot tell us their
    /// groups, so every group's traffic goes to them too, as their head-end replication sends
    /// us all of theirs.
    pub peers: u32,
    /// Remote VTEPs with members of the network: peers first, then the others, each sorted.
    pub vteps: [VtepAddr; MAX_FLOOD_VTEPS],
}

impl Flood {
    /// The remote VTEPs in use, peers first.
    pub fn remote_vteps(&self) -> &[VtepAddr] {
        &self.vteps[..(self.count as usize).min(MAX_FLOOD_VTEPS)]
    }
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            bridge: 0,
            tunnel: 0,
            rate_pps: 0,
            count: 0,
            internal: 0,
            peers: 0,
            vteps: [[0; 16]; MAX_FLOOD_VTEPS],
        }
    }
}

/// GROUPS key: a local port that reported membership of an IPv4 multicast group in a network
/// (IGMP snooping). The value is when it last did (`bpf_ktime_get_ns`); the agent expires it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub vni: u32,
    pub group: [u8; 4],
    pub port: u32,
}

/// Most UDP ports the networks of a cluster use between them (CLUSTER_PORTS).
pub const MAX_CLUSTER_PORTS: u32 = 1024;

/// Most group memberships one node tracks. A plain hash, not an LRU: a container's flood of
/// reports must never evict another container's memberships; a full map records no more.
pub const MAX_GROUP_MEMBERSHIPS: u32 = 16384;

/// Most group memberships one local port (container) holds in GROUPS: beyond it a join is not
/// recorded (`group_limit`), so no container can churn or fill the node's share for the
/// others. Linux itself lets one socket join 20 (`igmp_max_memberships`).
pub const MAX_GROUPS_PER_PORT: u32 = 64;

/// MCAST value, by (VNI, group) as an [`IpKey`]: the remote VTEPs with members of the group.
/// A group without an entry has no remote member: its traffic stays on this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupVteps {
    pub count: u32,
    pub vteps: [VtepAddr; MAX_FLOOD_VTEPS],
}

impl GroupVteps {
    /// The VTEPs in use.
    pub fn members(&self) -> &[VtepAddr] {
        &self.vteps[..(self.count as usize).min(MAX_FLOOD_VTEPS)]
    }
}

impl Default for GroupVteps {
    fn default() -> Self {
        Self {
            count: 0,
            vteps: [[0; 16]; MAX_FLOOD_VTEPS],
        }
    }
}

/// BUM_RATE value, by the sending port's ifindex: its broadcast and multicast in the current
/// one-second window (`ktime >> 30`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BumWindow {
    pub window: u64,
    pub sent: u64,
}

/// How long a resolved next hop is reused before the FIB and neighbour table are asked again:
/// short enough that a changed underlay neighbour costs at most this, long enough that the
/// lookup (~70 ns) leaves the per-packet path.
pub const NEXT_HOP_TTL_NS: u64 = 100_000_000;

/// Node-wide settings, slot 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's VTEP address: the outer source of everything it encapsulates.
    pub vtep: VtepAddr,
    /// The underlay interface encapsulated packets leave by.
    pub underlay_ifindex: u32,
    /// 1: the underlay is IPv6 (outer IPv6/UDP), 0: IPv4. Every VTEP in the maps is of it.
    pub ipv6: u32,
}

/// Most backends one service port balances over (slots of BACKENDS per service).
pub const MAX_BACKENDS: u32 = 256;
/// Most service ports of a node's cluster (SERVICES entries).
pub const MAX_SERVICES: u32 = 4096;
/// Most networks one network namespace is a member of that the programs look through.
pub const MAX_NETNS_NETWORKS: usize = 4;
/// Sockets whose replies are translated back at once (LB_REVERSE).
pub const MAX_REVERSE: u32 = 65536;

/// Transport protocols a service port is of (IANA numbers, as `bpf_sock_addr.protocol`).
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// SERVICES key: a service's virtual IP and port in one network, as a socket addresses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vni: u32,
    pub vip: [u8; 4],
    /// Network byte order, as `sockaddr_in.sin_port` (and `bpf_sock_addr.user_port`) hold it.
    pub port_be: u16,
    /// One of [`proto`].
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    /// `port` in host byte order.
    pub const fn new(vni: u32, vip: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            vni,
            vip,
            port_be: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// SERVICES value: which backends the service port balances over.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Names its slots in BACKENDS and its turn in LB_TURN; derived from the service's
    /// network, name, port and protocol (stable, so an update never moves it).
    pub id: u32,
    /// Slots `0..count` of BACKENDS hold its backends; 0: none, connections are refused.
    pub count: u32,
}

/// BACKENDS key: one slot of a service port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub service: u32,
    pub slot: u32,
}

/// [`Backend::flags`]: the backend takes new connections. Cleared by a health check (none
/// yet: the agent sets it for every backend).
pub const BACKEND_HEALTHY: u8 = 1;

/// BACKENDS value: where a connection to the service goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub ip: [u8; 4],
    /// Network byte order.
    pub port_be: u16,
    pub flags: u8,
    pub _pad: u8,
}

impl Backend {
    pub const fn new(ip: [u8; 4], port: u16, flags: u8) -> Self {
        Self {
            ip,
            port_be: port.to_be(),
            flags,
            _pad: 0,
        }
    }

    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// MEMBERS value, by network namespace cookie (`bpf_get_netns_cookie`, `SO_NETNS_COOKIE`):
/// the networks a local endpoint's namespace is attached to. Only a member's sockets are
/// balanced, and only to its networks' services: the host, other namespaces, and another
/// network reusing the same addresses are left alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub count: u32,
    pub vnis: [u32; MAX_NETNS_NETWORKS],
}

impl Members {
    pub fn vnis(&self) -> &[u32] {
        &self.vnis[..(self.count as usize).min(MAX_NETNS_NETWORKS)]
    }
}

/// LB_REVERSE key: a balanced socket (`bpf_get_socket_cookie`) and the backend it was sent
/// to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReverseKey {
    pub cookie: u64,
    pub ip: [u8; 4],
    pub port_be: u16,
    pub _pad: u16,
}

/// LB_REVERSE value: the address the socket asked for, shown to it in place of the backend's
/// (a UDP reply's source, `getpeername`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseEntry {
    pub vip: [u8; 4],
    pub port_be: u16,
    pub _pad: u16,
}

/// LB_PEER value, in a socket balanced at connect() (TCP, connected UDP): the backend it was
/// connected to and the address it asked for. A connected socket has one peer, so one value
/// per socket; `getpeername` shows
/// `shown` only while the socket's peer is still `backend` (it may have connected elsewhere
/// since).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEntry {
    pub backend: [u8; 4],
    pub backend_port_be: u16,
    pub _pad: u16,
    pub shown: ReverseEntry,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C) plain data with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for MacKey {}
    unsafe impl aya::Pod for IpKey {}
    unsafe impl aya::Pod for VtepKey {}
    unsafe impl aya::Pod for FdbEntry {}
    unsafe impl aya::Pod for ArpEntry {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for Network {}
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for Flood {}
    unsafe impl aya::Pod for BumWindow {}
    unsafe impl aya::Pod for GroupKey {}
    unsafe impl aya::Pod for GroupVteps {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for BackendKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for Members {}
    unsafe impl aya::Pod for ReverseKey {}
    unsafe impl aya::Pod for ReverseEntry {}
    unsafe impl aya::Pod for PeerEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The kernel hashes keys byte by byte: implicit padding would make equal keys differ.
        assert_eq!(size_of::<MacKey>(), 12);
        assert_eq!(size_of::<IpKey>(), 8);
        assert_eq!(size_of::<VtepKey>(), 20);
        assert_eq!(size_of::<FdbEntry>(), 48);
        assert_eq!(size_of::<ArpEntry>(), 8);
        assert_eq!(size_of::<Endpoint>(), 20);
        assert_eq!(size_of::<Network>(), 16);
        assert_eq!(size_of::<NodeConfig>(), 24);
        assert_eq!(size_of::<Flood>(), 24 + 16 * MAX_FLOOD_VTEPS);
        assert_eq!(size_of::<BumWindow>(), 16);
        assert_eq!(size_of::<GroupKey>(), 12);
        assert_eq!(size_of::<GroupVteps>(), 4 + 16 * MAX_FLOOD_VTEPS);
        assert_eq!(size_of::<ServiceKey>(), 12);
        assert_eq!(size_of::<Service>(), 8);
        assert_eq!(size_of::<BackendKey>(), 8);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(size_of::<Members>(), 4 + 4 * MAX_NETNS_NETWORKS);
        assert_eq!(size_of::<ReverseKey>(), 16);
        assert_eq!(size_of::<ReverseEntry>(), 8);
    }

    #[test]
    fn map_names_fit_the_kernel_limit_and_name_one_map_each() {
        for (i, map) in MAPS.iter().enumerate() {
            assert!(map.name.len() < 16, "{}", map.name);
            assert_eq!(MapSpec::of(map.name), Some(map));
            assert!(
                MAPS[..i].iter().all(|m| m.name != map.name),
                "{} twice",
                map.name
            );
            // Only the reconcile's entry-by-entry maps grow with the endpoints.
            assert!(!map.per_endpoint || map.reconciled, "{}", map.name);
        }
        assert_eq!(MapSpec::of("SCRATCH"), None);
        assert!(per_endpoint().map(|m| m.name).eq([
            names::FDB,
            names::ARP,
            names::ENDPOINTS,
            names::PORTS,
            names::VTEPS
        ]));
        // The per-endpoint maps, and NETWORKS.
        assert!(
            reconciled()
                .map(|m| m.name)
                .eq(per_endpoint().map(|m| m.name).chain([names::NETWORKS]))
        );
    }
}
