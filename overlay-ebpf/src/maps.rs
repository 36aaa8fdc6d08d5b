//! The maps, as the agent fills them. Every map but SCRATCH is pinned (by name, under the node's bpffs
//! directory the loader names), so the dataplane outlives the agent.
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use overlay_common::{
    ArpEntry, Backend, BackendKey, BumWindow, Counter, DEFAULT_MAX_ENTRIES, Endpoint, FdbEntry,
    Flood, FlowBackend, FlowKey, FlowKey6, GroupKey, GroupVteps, IpKey, MAX_BACKENDS,
    MAX_CLUSTER_PORTS, MAX_GROUP_MEMBERSHIPS, MAX_PUBLISHED, MAX_PUBLISHED_FLOWS, MAX_REVERSE,
    MAX_SERVICES, MacKey, Members, Network, NodeConfig, PeerEntry, Published, PublishedKey,
    ReplyVia, ReverseEntry, ReverseKey, Service, ServiceKey, VtepKey, jump,
    monitor::{MonitorCpu, MonitorCtl, RING_BYTES},
};

/// Programs tail-called from `from_container`, by `jump` slot. Pinned like the other maps: a
/// program array is emptied when no process and no pin holds it any more, and the dataplane
/// must outlive the agent.
#[map]
pub static JUMP: ProgramArray = ProgramArray::pinned(jump::SLOTS, 0);

/// Per-CPU room for bytes a checksum is summed over when they are not directly readable
/// (checksum.rs): a piece of up to 512 bytes and the padding after it. Not pinned: it holds
/// nothing from one packet to the next.
#[map]
pub static SCRATCH: PerCpuArray<[u8; 516]> = PerCpuArray::with_max_entries(1, 0);

/// Remote MAC -> the VTEP it lives behind (and the cached way there).
#[map]
pub static FDB: HashMap<MacKey, FdbEntry> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// Overlay IPv4 -> MAC, for every endpoint of every network (local and remote).
#[map]
pub static ARP: HashMap<IpKey, ArpEntry> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// Local endpoints by MAC: where a frame for this MAC is delivered on this host.
#[map]
pub static ENDPOINTS: HashMap<MacKey, Endpoint> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// Local endpoints by the ifindex of their host-side veth (the bridge port): who is sending.
#[map]
pub static PORTS: HashMap<u32, Endpoint> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// (VNI, VTEP address) pairs decapsulation accepts.
#[map]
pub static VTEPS: HashMap<VtepKey, u32> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// VNIs this node serves.
#[map]
pub static NETWORKS: HashMap<u32, Network> = HashMap::pinned(4096, 0);

/// Indexed by UDP port: how many networks use it. Nonzero means "VXLAN lands here". An array,
/// not a hash, so non-overlay UDP on the underlay costs one indexed load.
#[map]
pub static VXLAN_PORTS: Array<u32> = Array::pinned(65536, 0);

/// UDP port -> 1, for the port of every network of the cluster, served here or not: a
/// container's UDP to one is dropped (vxlan.rs, `not_to_tunnel_port`). Beside VXLAN_PORTS,
/// which says what this node decapsulates.
#[map]
pub static CLUSTER_PORTS: HashMap<u32, u32> = HashMap::pinned(MAX_CLUSTER_PORTS, 0);

/// VNI -> where its broadcast and multicast go: the remote VTEPs, the local bridge.
#[map]
pub static FLOOD: HashMap<u32, Flood> = HashMap::pinned(4096, 0);

/// Sending port -> its broadcast and multicast this second (storm control). LRU: a port that
/// is gone ages out.
#[map]
pub static BUM_RATE: LruHashMap<u32, BumWindow> = LruHashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// (VNI, group, local port) -> when the port last reported membership (IGMP snooping). Not an
/// LRU: one container's reports must never evict another's memberships.
#[map]
pub static GROUPS: HashMap<GroupKey, u64> = HashMap::pinned(MAX_GROUP_MEMBERSHIPS, 0);

/// Local port -> how many memberships it holds in GROUPS (at most `MAX_GROUPS_PER_PORT`).
/// Counted here as joins and leaves pass, recounted from GROUPS by the agent as it expires
/// memberships, which also corrects what two CPUs racing on one port may have miscounted.
#[map]
pub static GROUP_COUNT: HashMap<u32, u32> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// (VNI, group) -> the remote VTEPs with members of the group (the agent, from etcd).
#[map]
pub static MCAST: HashMap<IpKey, GroupVteps> = HashMap::pinned(MAX_GROUP_MEMBERSHIPS, 0);

/// Slot 0: this node's settings.
#[map]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// One slot per [`Counter`], per CPU.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);

/// Slot 0: whether a monitor listens, and until when (written by `overlay-agent monitor`).
#[map]
pub static MONITOR_CTL: Array<MonitorCtl> = Array::pinned(1, 0);

/// The monitor's events.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(RING_BYTES, 0);

/// Slot 0, per CPU: the monitor's rate-limit window and the events it could not be sent.
#[map]
pub static MONITOR_CPU: PerCpuArray<MonitorCpu> = PerCpuArray::pinned(1, 0);

/// (VNI, virtual IP, port, protocol) -> the service port's id and backend count (the agent,
/// from etcd's `services/`).
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_SERVICES, 0);

/// (service id, slot) -> a backend of the service port (the agent, from the endpoints that
/// name the service).
#[map]
pub static BACKENDS: HashMap<BackendKey, Backend> =
    HashMap::pinned(MAX_SERVICES * MAX_BACKENDS / 16, 0);

/// Network namespace cookie -> the networks that namespace's local endpoints are on (the
/// agent, which checked each namespace holds its endpoint's interface).
#[map]
pub static MEMBERS: HashMap<u64, Members> = HashMap::pinned(DEFAULT_MAX_ENTRIES, 0);

/// Service id -> its next turn (round robin, so new connections spread evenly). Made by the
/// programs on a service's first connection; LRU: the turn of a service gone ages out.
#[map]
pub static LB_TURN: LruHashMap<u32, u32> = LruHashMap::pinned(MAX_SERVICES, 0);

/// An unconnected UDP socket's (cookie, backend) -> the virtual IP and port the socket sent
/// to: what a reply's source shows. Keyed by backend, as one such socket's datagrams go to
/// several. LRU, and no timer: an entry goes only when the map is full and it
/// is the least recently used (each datagram sent refreshes it).
#[map]
pub static LB_REVERSE: LruHashMap<ReverseKey, ReverseEntry> = LruHashMap::pinned(MAX_REVERSE, 0);

/// A socket balanced at connect() (TCP, connected UDP): its backend and the address it asked
/// for (what `getpeername` and a reply's source show), in the socket's own storage, freed by
/// the kernel with the socket. So a connection costs no shared map entry, nothing is ever evicted, and nothing outlives the
/// socket. A BTF map: the loader pins it by path (dataplane/mod.rs).
#[btf_map]
pub static LB_PEER: SkStorage<PeerEntry> = SkStorage::new();

/// (protocol, port) -> the service port a published port of every node's underlay address
/// reaches (the agent, from the services' `publish`).
#[map]
pub static PUBLISHED: HashMap<PublishedKey, Published> = HashMap::pinned(MAX_PUBLISHED, 0);

/// On the ingress node, client -> node:published port -> the backend the flow was given at
/// its first packet. LRU, no timer: only a full map evicts, the least recently used first.
#[map]
pub static PUB_FLOWS: LruHashMap<FlowKey, FlowBackend> = LruHashMap::pinned(MAX_PUBLISHED_FLOWS, 0);

/// On the backend's node, backend:port -> client -> the ingress address and published port
/// its replies leave from. LRU, no timer, like PUB_FLOWS.
#[map]
pub static PUB_REPLY: LruHashMap<FlowKey, ReplyVia> = LruHashMap::pinned(MAX_PUBLISHED_FLOWS, 0);

/// PUB_FLOWS for an IPv6 underlay's clients.
#[map]
pub static PUB_FLOWS6: LruHashMap<FlowKey6, FlowBackend> =
    LruHashMap::pinned(MAX_PUBLISHED_FLOWS, 0);

/// PUB_REPLY for an IPv6 underlay's clients.
#[map]
pub static PUB_REPLY6: LruHashMap<FlowKey6, ReplyVia> = LruHashMap::pinned(MAX_PUBLISHED_FLOWS, 0);
