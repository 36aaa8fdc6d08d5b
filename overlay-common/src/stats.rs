//! Per-CPU packet counters: one slot per outcome, so every verdict a program reaches is visible.

macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Index into the `STATS` per-CPU array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($(#[$doc])* $variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            /// The name the CLI prints and JSON carries.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    /// A container's frame was wrapped in VXLAN and sent to a remote VTEP.
    Encap = "encap",
    /// A VXLAN packet from the underlay was unwrapped and handed to a local endpoint.
    Decap = "decap",
    /// An ARP request from a container was answered from the ARP map.
    ArpReply = "arp_reply",
    /// A container's frame went straight to another container on this host.
    LocalDeliver = "local_deliver",
    /// From a container, not for the overlay (broadcast, unknown MAC, non-IP): left to the bridge.
    ContainerPass = "container_pass",
    /// An ARP request for an address the ARP map does not know: left to the bridge.
    ArpMiss = "arp_miss",
    /// On the underlay, not VXLAN to one of our ports: left to the host stack untouched.
    UnderlayPass = "underlay_pass",
    /// Outer IPv4 fragment to a VXLAN port: left to the host (we never reassemble).
    UnderlayFragment = "underlay_fragment",
    /// Outer IPv4 with options to a VXLAN port: left to the host (no Linux VTEP sends these).
    UnderlayIpOptions = "underlay_ip_options",
    /// A frame too short for the headers it claims.
    DropTooShort = "drop_too_short",
    /// VXLAN header without the I flag, or with reserved bits set.
    DropBadVxlan = "drop_bad_vxlan",
    /// VXLAN for a VNI this node does not serve.
    DropUnknownVni = "drop_unknown_vni",
    /// VXLAN from an outer source that is not a VTEP of that VNI.
    DropUnknownVtep = "drop_unknown_vtep",
    /// Decapsulated frame for a MAC that is not a local endpoint of that VNI.
    DropNoEndpoint = "drop_no_endpoint",
    /// A container sent from a MAC that is not its own.
    DropSpoofedMac = "drop_spoofed_mac",
    /// A container sent (or ARPed) from an IPv4 address that is not its own, or from an IPv6
    /// address that is not its own (or advertised another's, or hid its ICMPv6 behind more
    /// extension headers than the check reads, or hid its frame behind a second VLAN tag).
    DropSpoofedIp = "drop_spoofed_ip",
    /// No underlay route or interface towards the remote VTEP.
    DropNoRoute = "drop_no_route",
    /// The kernel refused to grow or shrink the packet (adjust_room failed).
    DropAdjustFailed = "drop_adjust_failed",
    /// A packet the kernel's own vxlan socket decapsulated, seen on the idle GRO helper device
    /// (`ovgro<port>`): it never delivers anything, so our checks stay the only way in.
    DropKernelVxlan = "drop_kernel_vxlan",
    /// A container's broadcast or multicast (or ARP for an unknown address): copies sent to
    /// every remote VTEP of its network, and the frame left to the bridge for local members.
    Flood = "flood",
    /// Broadcast or multicast from a remote VTEP, delivered to the network's local bridge.
    DecapFlood = "decap_flood",
    /// Broadcast or multicast over the sending endpoint's rate (storm control).
    DropStorm = "drop_storm",
    /// From a container of an internal network, unicast for something that is not an overlay
    /// endpoint (the way out an internal network does not have).
    DropInternal = "drop_internal",
    /// A container's IP packet too big for the tunnel (the underlay's path MTU less 50 bytes):
    /// dropped, and an ICMP "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big"
    /// carrying the MTU sent back to the sender in its place, so its stack lowers the path MTU.
    DropFragNeeded = "drop_frag_needed",
    /// Too big for the tunnel, and neither fragmenting it nor an ICMP error may answer it (IPv4
    /// without DF that is GSO, SCTP, has options or needs more than 48 fragments; an ICMP
    /// error; a path MTU below 576 / 1280), or the fragments or the reply could not be built.
    DropTooBig = "drop_too_big",
    /// A neighbour solicitation from a container for an overlay IPv6 address, answered from
    /// the maps with the advertisement the owner would send (RFC 4861).
    NdpReply = "ndp_reply",
    /// A neighbour discovery message RFC 4861 says to discard (hop limit not 255, code not
    /// 0, a bad checksum, an option of length 0, a multicast target).
    DropBadNdp = "drop_bad_ndp",
    /// Not an outcome: the remote copies `flood` sent.
    FloodCopies = "flood_copies",
    /// Not an outcome: IGMP reports from containers joining a group (snooped, then passed on).
    GroupJoins = "group_joins",
    /// Not an outcome: IGMP leaves (or reports leaving a group).
    GroupLeaves = "group_leaves",
    /// Not an outcome: the wire packets that decapsulated skbs carried (a GRO'd skb counts its
    /// segments, any other 1), so `decap_segments / decap` is the average merged per skb.
    DecapSegments = "decap_segments",
    /// A fragment cut from a container's IPv4 packet without DF too big for the tunnel, as a
    /// router would, and sent back through the container's port (to be wrapped and counted as
    /// `encap` there): one per fragment.
    Fragments = "fragments",
    /// A container sent an ICMPv6 router advertisement or redirect: containers are hosts, and
    /// a rogue advertisement would make it its neighbours' router (Docker's CVE-2020-13401).
    DropRouterMessage = "drop_router_message",
    /// A container's UDP to a port VXLAN uses on this node (any VTEP's, any network's): through
    /// its gateway, masqueraded to this node's VTEP, it would be decapsulated by another node
    /// into a network the container is not on.
    DropTunnelPort = "drop_tunnel_port",
    /// Not an outcome: an IGMP join not recorded because its port already holds
    /// `MAX_GROUPS_PER_PORT` memberships (or the node's GROUPS map is full).
    GroupLimit = "group_limit",
    /// VXLAN whose outer header says congestion was experienced (CE) over an inner packet that
    /// is not ECN-capable: RFC 6040 section 4.2 says to drop it, as the kernel's vxlan device
    /// does (`INET_ECN_decapsulate`, counted in its rx_errors), since its receiver could not
    /// be told of the congestion any other way.
    DropEcn = "drop_ecn",
    /// VXLAN whose outer UDP checksum is not zero and wrong: damaged on the way, dropped as the
    /// kernel's UDP receive path drops it.
    DropBadChecksum = "drop_bad_checksum",
    /// Not a packet's outcome: a container's connect() or datagram to a service's virtual IP
    /// sent to one of its backends instead (socket load balancing).
    LbBalanced = "lb_balanced",
    /// Not a packet's outcome: a connect() or datagram to a service's virtual IP refused with
    /// ECONNREFUSED because the service has no healthy backend (never a silent drop).
    LbNoBackend = "lb_no_backend",
}

impl Counter {
    pub const COUNT: u32 = Counter::ALL.len() as u32;

    /// Whether the counter counts verdicts (one per packet a program saw); the others measure
    /// something about packets already counted under a verdict.
    pub const fn is_outcome(self) -> bool {
        !matches!(
            self,
            Counter::DecapSegments
                | Counter::FloodCopies
                | Counter::GroupJoins
                | Counter::GroupLeaves
                | Counter::GroupLimit
                | Counter::LbBalanced
                | Counter::LbNoBackend
        )
    }

    /// Whether the monitor reports it: every packet's outcome, and the socket load balancer's
    /// decisions (`lb_balanced`, `lb_no_backend`; no packet exists yet at connect()).
    pub const fn is_monitored(self) -> bool {
        self.is_outcome() || matches!(self, Counter::LbBalanced | Counter::LbNoBackend)
    }

    /// Whether the outcome is a drop: what `monitor --type drop` reports. Every other outcome
    /// is a trace event.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropTooShort
                | Counter::DropBadVxlan
                | Counter::DropUnknownVni
                | Counter::DropUnknownVtep
                | Counter::DropNoEndpoint
                | Counter::DropSpoofedMac
                | Counter::DropSpoofedIp
                | Counter::DropNoRoute
                | Counter::DropAdjustFailed
                | Counter::DropKernelVxlan
                | Counter::DropStorm
                | Counter::DropInternal
                | Counter::DropFragNeeded
                | Counter::DropTooBig
                | Counter::DropBadNdp
                | Counter::DropRouterMessage
                | Counter::DropTunnelPort
                | Counter::DropEcn
                | Counter::DropBadChecksum
        )
    }

    /// The counter at `index` (as a monitor event carries it), if there is one.
    pub fn from_index(index: u32) -> Option<Counter> {
        Counter::ALL.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn drops_are_the_drop_counters() {
        // is_drop is a list kept by hand: a new drop_ counter must join it.
        for c in Counter::ALL {
            assert_eq!(c.is_drop(), c.name().starts_with("drop_"), "{}", c.name());
            assert_eq!(Counter::from_index(*c as u32), Some(*c));
        }
    }
}
