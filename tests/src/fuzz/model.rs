//! What `from_container` and `from_underlay` must do with a frame, given the maps of the lab
//! (`lab.rs`): the TC verdict, the one outcome counter that moves (and the side counters:
//! IGMP joins, leaves and joins over a port's limit, decapsulated segments), and the output
//! frame. Written from docs/architecture.md and the RFCs (826 ARP, 4861 NDP, 2236/3376 IGMP,
//! 7348 VXLAN, 6040 ECN), byte by byte, without the programs' code: where it and the programs disagree, the fuzzer says so.
//!
//! What the lab makes deterministic, so that everything here is exact:
//! - CLUSTER_PORTS holds 8472 besides the served 4789 (a network of the cluster not served here).
//! - FLOOD and MCAST (`Flooding`, written by run.rs): VNI 42 has a bridge (group frames from
//!   the underlay are delivered to it) and a sending device with three remote VTEPs, a legacy
//!   peer and two nodes, one a member of group 239.1.1.1 (so a container's broadcast and
//!   multicast are copied to a known number of VTEPs, `flood_copies`: 3 for a broadcast, 2
//!   for that group, 1 for another); VNI 43 is internal
//!   (unicast to nothing of the overlay is dropped) and has no sending device. Neither has a
//!   storm limit, which is time-based: `dataplane_attacks.rs` and `flood.rs` test it.
//! - IGMP snooping is state: the model keeps each port's memberships as GROUPS does (nothing
//!   expires them in the lab: no agent runs), so it knows when a port's limit refuses a join.
//! - The FIB answers (forwarding on, the next hop's neighbour permanent) with the underlay's
//!   MTU of 1500: the generator keeps frames small enough for the tunnel, so path MTU answers
//!   and fragmentation (tail calls) never happen here; `dataplane_pmtu.rs` tests those.
//! - Encapsulation's outer IPv4 ID and UDP source port are random or a flow hash: compared as
//!   "in range" and "checksum verifies", everything else exactly.
use std::collections::BTreeSet;

use overlay_common::{Counter, MAX_GROUPS_PER_PORT, vtep, wire};

use crate::{
    fixture::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    lab::{self, Hook, Lab},
    packet,
};

/// A local endpoint: the container behind a port of this host.
#[derive(Clone, Copy, Debug)]
pub struct Port {
    pub name: &'static str,
    pub ifindex: u32,
    pub vni: u32,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

/// The lab's maps, as values: what the model reads where the programs read maps.
pub struct World {
    pub ipv6_underlay: bool,
    /// The underlay interface: also an ifindex PORTS does not know.
    pub underlay: u32,
    pub ports: Vec<Port>,
    /// IGMP snooping's state, as the frames so far left it.
    pub memberships: Memberships,
    pub flooding: Flooding,
}

/// What FLOOD and MCAST hold in the fuzzer's lab: VNI 42's bridge (remote broadcast and
/// multicast go out of it) and sending device (a collect_md vxlan device) with
/// [`FLOOD_VTEPS`] remote VTEPs, the first [`FLOOD_PEERS`] legacy peers (a container's ARP
/// reply to a remote MAC goes through that device too); VNI 43 internal, without either. No
/// storm limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flooding {
    pub bridge42: u32,
    pub tunnel42: u32,
}

/// VNI 42's remote VTEPs in FLOOD, and how many of them (first) are legacy peers, which get
/// every group's traffic.
pub const FLOOD_VTEPS: u64 = 3;
pub const FLOOD_PEERS: u64 = 1;
/// The group of VNI 42 with a remote member (MCAST), and how many VTEPs have one.
pub const GROUP_WITH_MEMBER: [u8; 4] = [239, 1, 1, 1];
pub const GROUP_MEMBERS: u64 = 1;

/// What the program must leave in the frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Passed or dropped: exactly as it came.
    Untouched,
    /// Redirected as these bytes.
    Exact(Vec<u8>),
    /// Encapsulated: these bytes, but for the outer IPv4 ID and header checksum and the UDP
    /// source port, which must be a valid checksum and a port in Linux's range.
    Encapsulated(Vec<u8>),
}

/// The model's answer for one frame.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub code: i32,
    /// None when the program never ran ([`REFUSED`]).
    pub counter: Option<Counter>,
    pub snooped: Snooped,
    /// Copies sent to remote VTEPs (head-end replication).
    pub copies: u64,
    pub output: Output,
}

/// What IGMP snooping counted for one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snooped {
    pub joins: u64,
    pub leaves: u64,
    /// Joins not recorded: the port already holds its most memberships.
    pub limited: u64,
}

impl Outcome {
    fn pass(counter: Counter) -> Self {
        Self::of(TC_ACT_OK, counter, Output::Untouched)
    }

    fn drop(counter: Counter) -> Self {
        Self::of(TC_ACT_SHOT, counter, Output::Untouched)
    }

    fn redirect(counter: Counter, output: Output) -> Self {
        Self::of(TC_ACT_REDIRECT, counter, output)
    }

    fn of(code: i32, counter: Counter, output: Output) -> Self {
        Self {
            code,
            counter: Some(counter),
            snooped: Snooped::default(),
            copies: 0,
            output,
        }
    }

    /// BPF_PROG_TEST_RUN refuses to run a frame shorter than the network header its
    /// ethertype names (it reads the addresses off it first): such frames do reach TC on a real
    /// interface, but cannot be tried here.
    fn refused() -> Self {
        Self {
            code: REFUSED,
            counter: None,
            snooped: Snooped::default(),
            copies: 0,
            output: Output::Untouched,
        }
    }

    /// Every counter this frame moves, and by how much.
    pub fn counts(&self) -> impl Iterator<Item = (Counter, u64)> {
        let Some(counter) = self.counter else {
            return Vec::new().into_iter();
        };
        [
            (counter, 1),
            (Counter::GroupJoins, self.snooped.joins),
            (Counter::GroupLeaves, self.snooped.leaves),
            (Counter::GroupLimit, self.snooped.limited),
            (Counter::FloodCopies, self.copies),
            (Counter::DecapSegments, u64::from(counter == Counter::Decap)),
        ]
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect::<Vec<_>>()
        .into_iter()
    }

    /// Whether the program's answer (`code`, `out` for input `input`) is this one; if not,
    /// what differs.
    pub fn check(&self, input: &[u8], code: i32, out: &[u8]) -> Result<(), String> {
        if code != self.code {
            return Err(format!(
                "verdict {} where the model says {}",
                code_name(code),
                code_name(self.code)
            ));
        }
        match &self.output {
            Output::Untouched if out != input => Err("the frame was changed".into()),
            Output::Exact(want) if out != want.as_slice() => {
                Err(format!("output differs from the model's {}", hex(want)))
            }
            Output::Encapsulated(want) => check_encapsulated(want, out),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            code_name(self.code),
            self.counter.map_or("(no counter)", Counter::name)
        )?;
        if self.copies != 0 {
            write!(f, " ({} copies)", self.copies)?;
        }
        let g = self.snooped;
        if g != Snooped::default() {
            write!(
                f,
                " (IGMP joins {}, leaves {}, over the limit {})",
                g.joins, g.leaves, g.limited
            )?;
        }
        match &self.output {
            Output::Untouched => write!(f, ", frame untouched"),
            Output::Exact(b) => write!(f, ", frame {}", hex(b)),
            Output::Encapsulated(b) => write!(f, ", encapsulated (ID, sport 0) {}", hex(b)),
        }
    }
}

pub fn code_name(code: i32) -> String {
    match code {
        TC_ACT_OK => "OK".into(),
        TC_ACT_SHOT => "SHOT".into(),
        TC_ACT_REDIRECT => "REDIRECT".into(),
        REFUSED => "refused by BPF_PROG_TEST_RUN (EINVAL)".into(),
        other => format!("action {other}"),
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The outer IPv4 ID and checksum and the UDP source port vary; the rest is exact.
fn check_encapsulated(want: &[u8], got: &[u8]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "encapsulated to {} bytes, the model {}: {}",
            got.len(),
            want.len(),
            hex(want)
        ));
    }
    let ipv6 = want[12..14] == wire::ETH_P_IPV6.to_be_bytes();
    let sport_at = if ipv6 { 54 } else { 34 };
    let varies = |i: usize| {
        (i >= sport_at && i < sport_at + 2)
            || (!ipv6 && ((18..20).contains(&i) || (24..26).contains(&i)))
    };
    if let Some(i) = (0..want.len()).find(|&i| !varies(i) && got[i] != want[i]) {
        return Err(format!(
            "encapsulated frame differs at byte {i}; the model's (ID, checksum, sport zero): {}",
            hex(want)
        ));
    }
    if !ipv6 && packet::checksum(&got[14..34]) != 0 {
        return Err("outer IPv4 header checksum does not verify".into());
    }
    let sport = u16::from_be_bytes([got[sport_at], got[sport_at + 1]]);
    if !(wire::SRC_PORT_MIN..=wire::SRC_PORT_MAX).contains(&sport) {
        return Err(format!("outer UDP source port {sport} out of range"));
    }
    Ok(())
}

/// A port another network of the cluster uses, not served here (CLUSTER_PORTS, run.rs):
/// Linux's default VXLAN port.
pub const CLUSTER_ONLY_PORT: u16 = 8472;

/// The "verdict" of a frame BPF_PROG_TEST_RUN refuses to run.
pub const REFUSED: i32 = -libc::EINVAL;

const ETH: usize = 14;
const IPV6_LEN: usize = 40;
const ICMPV6: u8 = 58;
const IPPROTO_IGMP: u8 = 2;
/// The underlay's MTU in the lab (a veth's default).
const UNDERLAY_MTU: usize = 1500;

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?))
}

fn arr<const N: usize>(f: &[u8], at: usize) -> Option<[u8; N]> {
    f.get(at..at + N)?.try_into().ok()
}

pub use crate::packet::link_local;

/// A dual-stack network's address of an endpoint: the prefix, then its IPv4 address.
pub fn global(prefix6: [u8; 12], ip: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..12].copy_from_slice(&prefix6);
    a[12..].copy_from_slice(&ip);
    a
}

/// RFC 1071 sum of `bytes` folded to 16 bits, not complemented.
fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    for c in bytes.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The ICMPv6 checksum's sum over the pseudo-header (RFC 8200 8.1) and `msg`.
pub fn icmpv6_sum(src: &[u8], dst: &[u8], msg: &[u8]) -> u32 {
    let mut acc = sum16(0, src);
    acc = sum16(acc, dst);
    acc = sum16(acc, &(msg.len() as u32).to_be_bytes());
    acc = sum16(acc, &[0, 0, 0, ICMPV6]);
    sum16(acc, msg)
}

/// Whether an IPv4 destination is a group IGMP snooping decides (not 224.0.0.0/24).
pub fn tracked_group(g: [u8; 4]) -> bool {
    (224..=239).contains(&g[0]) && g[..3] != [224, 0, 0]
}

/// Why a container may send from an IPv6 address: it is one of its own.
struct Own {
    link_local: [u8; 16],
    global: Option<[u8; 16]>,
}

impl Own {
    fn has(&self, a: &[u8]) -> bool {
        a == self.link_local || self.global.is_some_and(|g| a == g)
    }
}

/// What the IPv6 source check lets through.
enum Ipv6Kind {
    Solicitation,
    RouterSolicitation,
    Other,
}

impl World {
    /// The maps `Lab::new` / `Lab::new_ipv6_underlay` wrote, and `flooding`.
    pub fn of(lab: &Lab, flooding: Flooding) -> World {
        World {
            ipv6_underlay: lab.ipv6_underlay,
            underlay: lab.underlay,
            ports: vec![
                Port {
                    name: "vc1",
                    ifindex: lab.vc1,
                    vni: lab::VNI,
                    mac: lab::C1_MAC,
                    ip: lab::C1_IP,
                },
                Port {
                    name: "vc3",
                    ifindex: lab.vc3,
                    vni: lab::VNI,
                    mac: lab::C3_MAC,
                    ip: lab::C3_IP,
                },
                Port {
                    name: "vc4",
                    ifindex: lab.vc4,
                    vni: lab::OTHER_VNI,
                    mac: lab::C4_MAC,
                    ip: lab::C1_IP,
                },
            ],
            memberships: Memberships::default(),
            flooding,
        }
    }

    pub fn hook_name(&self, hook: Hook) -> String {
        match hook {
            Hook::Underlay => "from_underlay (ul0)".into(),
            Hook::Container(i) => match self.ports.iter().find(|p| p.ifindex == i) {
                Some(p) => format!("from_container ({})", p.name),
                None => format!("from_container (ifindex {i}, not a port)"),
            },
        }
    }

    fn port(&self, ifindex: u32) -> Option<&Port> {
        self.ports.iter().find(|p| p.ifindex == ifindex)
    }

    /// ENDPOINTS: a local endpoint of `vni` with `mac`.
    fn endpoint(&self, vni: u32, mac: [u8; 6]) -> Option<&Port> {
        self.ports.iter().find(|p| p.vni == vni && p.mac == mac)
    }

    /// FDB: c2, behind the remote VTEP.
    fn remote(&self, vni: u32, mac: [u8; 6]) -> bool {
        vni == lab::VNI && mac == lab::C2_MAC
    }

    /// ARP: every endpoint's IPv4 address, local or remote.
    fn arp(&self, vni: u32, ip: [u8; 4]) -> Option<[u8; 6]> {
        if vni == lab::VNI && ip == lab::C2_IP {
            return Some(lab::C2_MAC);
        }
        self.ports
            .iter()
            .find(|p| p.vni == vni && p.ip == ip)
            .map(|p| p.mac)
    }

    /// NETWORKS: the port of a VNI this node serves.
    fn network_port(&self, vni: u32) -> Option<u16> {
        (vni == lab::VNI || vni == lab::OTHER_VNI).then_some(lab::PORT)
    }

    /// NETWORKS: VNI 42 is dual-stack, 43 (and any VNI not served) IPv4 only.
    fn prefix6(&self, vni: u32) -> Option<[u8; 12]> {
        (vni == lab::VNI).then_some(lab::PREFIX6)
    }

    fn local_vtep(&self) -> [u8; 16] {
        if self.ipv6_underlay {
            lab::LOCAL_VTEP6
        } else {
            vtep::from_v4(lab::LOCAL_VTEP)
        }
    }

    fn remote_vtep(&self) -> [u8; 16] {
        if self.ipv6_underlay {
            lab::REMOTE_VTEP6
        } else {
            vtep::from_v4(lab::REMOTE_VTEP)
        }
    }

    /// VTEPS: the port VXLAN of `vni` from `source` is accepted on.
    fn vtep_port(&self, vni: u32, source: [u8; 16]) -> Option<u16> {
        (vni == lab::VNI && source == self.remote_vtep()).then_some(lab::PORT)
    }

    /// VXLAN_PORTS: a UDP port some network uses.
    fn ours(&self, dport: u16) -> bool {
        dport == lab::PORT
    }

    /// A container's UDP (its header at `l4`) to a port VXLAN uses here is refused wherever it
    /// goes: through its gateway's NAT it would arrive at another node as VXLAN from this
    /// node's VTEP, into a network the container is not on. Too short to name a port: no UDP.
    /// The ports are the cluster's (CLUSTER_PORTS), served here or not.
    fn not_to_tunnel_port(&self, f: &[u8], l4: usize) -> Result<(), Counter> {
        match be16(f, l4 + 2) {
            Some(dport) if self.ours(dport) || dport == CLUSTER_ONLY_PORT => {
                Err(Counter::DropTunnelPort)
            }
            Some(_) => Ok(()),
            None => Err(Counter::DropTooShort),
        }
    }

    /// The outcome of frame `f` at `hook`, after the frames predicted before it.
    pub fn predict(&mut self, hook: Hook, f: &[u8]) -> Outcome {
        let network_header = match be16(f, 12) {
            Some(wire::ETH_P_IP) => 20,
            Some(wire::ETH_P_IPV6) => IPV6_LEN,
            _ => 0,
        };
        if f.len() < ETH + network_header {
            return Outcome::refused();
        }
        match hook {
            Hook::Container(ifindex) => self.container_frame(ifindex, f),
            Hook::Underlay => self.underlay_frame(f),
        }
    }

    // ---- from_container -----------------------------------------------------------------

    fn container_frame(&mut self, ifindex: u32, f: &[u8]) -> Outcome {
        if f.len() < ETH {
            return Outcome::drop(Counter::DropTooShort);
        }
        let Some(&port) = self.port(ifindex) else {
            // Not a port the agent registered: none of our business.
            return Outcome::pass(Counter::ContainerPass);
        };
        let sender = &port;
        // Every frame speaks for its sender (anti-spoofing, docs/architecture.md "From a container").
        if f[6..12] != sender.mac {
            return Outcome::drop(Counter::DropSpoofedMac);
        }
        let dst: [u8; 6] = arr(f, 0).unwrap();
        match be16(f, 12).unwrap() {
            wire::ETH_P_ARP => self.arp_request(sender, f),
            wire::ETH_P_IP => {
                if f.len() < ETH + 20 {
                    return Outcome::drop(Counter::DropTooShort);
                }
                let src: [u8; 4] = arr(f, 26).unwrap();
                // 0.0.0.0: a DHCP client before it has an address.
                if src != sender.ip && src != [0; 4] {
                    return Outcome::drop(Counter::DropSpoofedIp);
                }
                let l4 = ETH + usize::from(f[14] & 0x0f) * 4;
                let first_fragment = be16(f, 20).unwrap() & wire::IP_OFFSET == 0;
                if f[23] == wire::IPPROTO_UDP
                    && first_fragment
                    && let Err(counter) = self.not_to_tunnel_port(f, l4)
                {
                    return Outcome::drop(counter);
                }
                // Reports to a group address only (the lab has no storm limit to stop them).
                let snooped = if f[23] == IPPROTO_IGMP && dst[0] & 1 != 0 {
                    let port = (sender.ifindex, sender.vni);
                    snoop(f, l4, |group, join| {
                        self.memberships.note(port, group, join)
                    })
                } else {
                    Snooped::default()
                };
                // UDP or TCP to port 53: an internal network's way to its resolver.
                let dns_query = (f[23] == wire::IPPROTO_UDP || f[23] == wire::IPPROTO_TCP)
                    && first_fragment
                    && be16(f, l4 + 2) == Some(53);
                let mut o = self.forward(sender, f, dst, true, dns_query);
                o.snooped = snooped;
                o
            }
            wire::ETH_P_IPV6 => {
                let prefix6 = self.prefix6(sender.vni);
                match self.ipv6_source(sender, prefix6, f) {
                    Err(counter) => Outcome::drop(counter),
                    Ok(Ipv6Kind::Solicitation) => self
                        .ndp_answer(sender, prefix6, f)
                        .unwrap_or_else(|| self.forward(sender, f, dst, true, false)),
                    // For its own host only, never replicated.
                    Ok(Ipv6Kind::RouterSolicitation) => Outcome::pass(Counter::ContainerPass),
                    Ok(Ipv6Kind::Other) => self.forward(sender, f, dst, true, false),
                }
            }
            // The kernel strips a frame's first VLAN tag before TC: one still there is a
            // second, hiding an ARP or IP packet that a priority tag (VLAN 0) lets the
            // receiving kernel take as untagged. Refused unread.
            wire::ETH_P_8021Q | wire::ETH_P_8021AD => Outcome::drop(Counter::DropSpoofedIp),
            _ => self.forward(sender, f, dst, false, false),
        }
    }

    /// Unicast to a remote MAC is wrapped (IP only: other ethertypes cannot be encapsulated by
    /// the kernel's helper), to a local one delivered; the rest goes to the bridge. Group
    /// frames would be replicated to the network's remote VTEPs, but the lab's have none (and
    /// no storm limit): left to the bridge. An internal network's IP unicast for nothing of
    /// the overlay would leave by the gateway, which it has not: dropped, but for an IPv4 DNS
    /// query (`dns_query`), which goes to the host's resolver on the bridge.
    fn forward(&self, sender: &Port, f: &[u8], dst: [u8; 6], ip: bool, dns_query: bool) -> Outcome {
        if ip && self.remote(sender.vni, dst) {
            return self.encap(sender.vni, f);
        }
        if self.endpoint(sender.vni, dst).is_some() {
            return Outcome::redirect(Counter::LocalDeliver, Output::Untouched);
        }
        // IPv4 and IPv6 broadcast and multicast reach the network's other hosts too (other
        // ethertypes, STP and the like, stay local). An IPv4 group's own traffic, to its own
        // MAC (RFC 1112), goes only where members are; a broadcast carrying it is a broadcast.
        if ip && dst[0] & 1 != 0 {
            let group = if be16(f, 12) == Some(wire::ETH_P_IP) {
                let ip_dst: [u8; 4] = arr(f, 30).unwrap();
                let own_mac = dst[..3] == [0x01, 0, 0x5e]
                    && dst[3..] == [ip_dst[1] & 0x7f, ip_dst[2], ip_dst[3]];
                if own_mac && tracked_group(ip_dst) {
                    ip_dst
                } else {
                    [0; 4]
                }
            } else {
                [0; 4]
            };
            return self.replicate(sender, Counter::ContainerPass, group);
        }
        if ip && dst[0] & 1 == 0 && sender.vni == lab::OTHER_VNI && !dns_query {
            return Outcome::drop(Counter::DropInternal);
        }
        Outcome::pass(Counter::ContainerPass)
    }

    /// RFC 7348 head-end replication: a copy to each remote VTEP of the network (to those with
    /// a member, and the legacy peers, for an IPv4 group of its own, IGMP snooping), the frame
    /// itself left to the bridge; `local` when no copy goes.
    fn replicate(&self, sender: &Port, local: Counter, group: [u8; 4]) -> Outcome {
        if sender.vni != lab::VNI || self.flooding.tunnel42 == 0 {
            return Outcome::pass(local);
        }
        let copies = if tracked_group(group) {
            let members = if group == GROUP_WITH_MEMBER {
                GROUP_MEMBERS
            } else {
                0
            };
            members + FLOOD_PEERS
        } else {
            FLOOD_VTEPS
        };
        if copies == 0 {
            return Outcome::pass(local);
        }
        let mut o = Outcome::pass(Counter::Flood);
        o.copies = copies;
        o
    }

    /// RFC 826, answered in place for an address in ARP; only for IPv4 over Ethernet.
    fn arp_request(&self, sender: &Port, f: &[u8]) -> Outcome {
        if f.len() < ETH + 28 {
            return Outcome::drop(Counter::DropTooShort);
        }
        let a = &f[ETH..ETH + 28];
        let (htype, ptype, hlen, plen) = (be16(a, 0).unwrap(), be16(a, 2).unwrap(), a[4], a[5]);
        // Ethernet (1) and IEEE 802 (6): Linux takes both on an Ethernet device.
        if (htype != 1 && htype != 6) || ptype != wire::ETH_P_IP || hlen != 6 || plen != 4 {
            return Outcome::pass(Counter::ContainerPass);
        }
        let (oper, sha, spa, tpa): (u16, [u8; 6], [u8; 4], [u8; 4]) = (
            be16(a, 6).unwrap(),
            arr(a, 8).unwrap(),
            arr(a, 14).unwrap(),
            arr(a, 24).unwrap(),
        );
        if sha != sender.mac {
            return Outcome::drop(Counter::DropSpoofedMac);
        }
        // 0.0.0.0: an address probe (RFC 5227).
        if spa != sender.ip && spa != [0; 4] {
            return Outcome::drop(Counter::DropSpoofedIp);
        }
        // A reply to a remote MAC (a legacy host asked) goes whole through the VNI's GRO
        // helper device, when it has one; other replies and gratuitous announcements stay
        // local.
        if oper != wire::ARP_OP_REQUEST || tpa == spa {
            let dst = arr(f, 0).unwrap();
            if oper == wire::ARP_OP_REPLY
                && tpa != spa
                && self.remote(sender.vni, dst)
                && sender.vni == lab::VNI
                && self.flooding.tunnel42 != 0
            {
                return Outcome::redirect(Counter::Encap, Output::Exact(f.to_vec()));
            }
            return Outcome::pass(Counter::ContainerPass);
        }
        let Some(owner) = self.arp(sender.vni, tpa) else {
            // Nobody we know: asked of the whole network, as a switch would.
            return self.replicate(sender, Counter::ArpMiss, [0; 4]);
        };
        let mut out = f.to_vec();
        out[0..6].copy_from_slice(&sender.mac);
        out[6..12].copy_from_slice(&owner);
        // The reply the owner's kernel sends from an Ethernet device (type 1, whatever was asked).
        let reply = packet::arp(wire::ARP_OP_REPLY, owner, tpa, sha, spa);
        out[ETH..ETH + 28].copy_from_slice(&reply);
        Outcome::redirect(Counter::ArpReply, Output::Exact(out))
    }

    /// RFC 4291/4861 source rules: the container's own addresses, `::`, and no router messages.
    fn ipv6_source(
        &self,
        sender: &Port,
        prefix6: Option<[u8; 12]>,
        f: &[u8],
    ) -> Result<Ipv6Kind, Counter> {
        if f.len() < ETH + IPV6_LEN {
            return Err(Counter::DropTooShort);
        }
        let own = Own {
            link_local: link_local(sender.mac),
            global: prefix6.map(|p| global(p, sender.ip)),
        };
        let src = &f[22..38];
        if !own.has(src) && src != [0; 16] {
            return Err(Counter::DropSpoofedIp);
        }
        let at = match upper_layer(f) {
            Upper::At {
                proto: ICMPV6,
                at,
                fragmented: false,
            } => at,
            Upper::At {
                proto: wire::IPPROTO_UDP,
                at,
                ..
            } => return self.not_to_tunnel_port(f, at).map(|()| Ipv6Kind::Other),
            // NDP is never fragmented (RFC 6980); a later fragment carries no header.
            Upper::At { .. } | Upper::LaterFragment => return Ok(Ipv6Kind::Other),
            Upper::TooLong => return Err(Counter::DropSpoofedIp),
            Upper::Truncated => return Err(Counter::DropTooShort),
        };
        match f.get(at) {
            Some(134 | 137) => return Err(Counter::DropRouterMessage),
            Some(133) => return Ok(Ipv6Kind::RouterSolicitation),
            Some(135 | 136) => {}
            _ => return Ok(Ipv6Kind::Other),
        }
        // Too short to be a neighbour message: claims no address.
        if f.len() < at + 24 {
            return Ok(Ipv6Kind::Other);
        }
        match f[at] {
            136 if !own.has(&f[at + 8..at + 24]) => Err(Counter::DropSpoofedIp),
            135 => Ok(Ipv6Kind::Solicitation),
            _ => Ok(Ipv6Kind::Other),
        }
    }

    /// A multicast neighbour solicitation for an address of the sender's dual-stack network,
    /// answered with the advertisement the owner's kernel would send; None leaves it to go on.
    fn ndp_answer(&self, sender: &Port, prefix6: Option<[u8; 12]>, f: &[u8]) -> Option<Outcome> {
        let prefix6 = prefix6?;
        if f[0] & 1 == 0 {
            return None;
        }
        if f.len() < ETH + IPV6_LEN + 24 {
            return Some(Outcome::drop(Counter::DropTooShort));
        }
        if f[20] != ICMPV6 {
            return None;
        }
        let (len, hop_limit, code) = (usize::from(be16(f, 18).unwrap()), f[21], f[55]);
        // RFC 4861 7.1.1: silently discarded.
        if hop_limit != 255 || code != 0 || len < 24 || f[62] == 0xff {
            return Some(Outcome::drop(Counter::DropBadNdp));
        }
        let (src, dst, target) = (&f[22..38], &f[38..54], &f[62..78]);
        // Duplicate address detection: for the whole network to hear.
        if src == [0; 16] {
            return None;
        }
        match len {
            24 => {}
            32 => {
                if f.len() < 86 {
                    return Some(Outcome::drop(Counter::DropTooShort));
                }
                let opt = &f[78..86];
                if opt[1] == 0 {
                    return Some(Outcome::drop(Counter::DropBadNdp));
                }
                if opt[0] != 1 || opt[1] != 1 {
                    return None;
                }
                if opt[2..8] != sender.mac {
                    return Some(Outcome::drop(Counter::DropSpoofedMac));
                }
            }
            // Options Linux does not send: the owner reads them itself.
            _ => return None,
        }
        if icmpv6_sum(src, dst, &f[54..54 + len]) != 0xffff {
            return Some(Outcome::drop(Counter::DropBadNdp));
        }
        if target[..12] != prefix6 {
            return None;
        }
        let owner = self.arp(sender.vni, arr(target, 12).unwrap())?;
        if owner == sender.mac {
            return None;
        }
        // Solicited and Override, the target link-layer address option; hop limit 255.
        let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        na.extend_from_slice(target);
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&owner);
        let c = !(icmpv6_sum(target, src, &na) as u16);
        na[2..4].copy_from_slice(&c.to_be_bytes());
        let ip = packet::ipv6(
            target.try_into().unwrap(),
            src.try_into().unwrap(),
            ICMPV6,
            255,
            &na,
        );
        let out = packet::eth(sender.mac, owner, wire::ETH_P_IPV6, &ip);
        Some(Outcome::redirect(Counter::NdpReply, Output::Exact(out)))
    }

    /// RFC 7348 encapsulation to c2's VTEP as a Linux vxlan device sends it, through the next
    /// hop the FIB resolved; RFC 6040 ECN into the outer header.
    fn encap(&self, vni: u32, f: &[u8]) -> Outcome {
        let overhead = wire::encap_overhead(self.ipv6_underlay);
        assert!(
            f.len() - ETH <= UNDERLAY_MTU - overhead,
            "the generator made a frame too big for the tunnel ({} bytes)",
            f.len()
        );
        let tos = match be16(f, 12).unwrap() {
            wire::ETH_P_IP => f[15],
            _ => (f[14] << 4) | (f[15] >> 4),
        };
        let ecn = wire::outer_ecn(tos);
        let udp = packet::udp(0, lab::PORT, &packet::vxlan(vni, f));
        let (ethertype, mut ip) = if self.ipv6_underlay {
            let mut ip = packet::ipv6(self.local_vtep(), self.remote_vtep(), 17, 64, &udp);
            ip[1] = ecn << 4;
            (wire::ETH_P_IPV6, ip)
        } else {
            let ip = packet::ipv4(lab::LOCAL_VTEP, lab::REMOTE_VTEP, 17, ecn, &udp);
            (wire::ETH_P_IP, ip)
        };
        if !self.ipv6_underlay {
            // Varies: ID and checksum (checked apart).
            ip[4..6].fill(0);
            ip[10..12].fill(0);
        }
        let out = packet::eth(lab::NEXT_HOP_MAC, lab::UNDERLAY_MAC, ethertype, &ip);
        Outcome::redirect(Counter::Encap, Output::Encapsulated(out))
    }

    // ---- from_underlay ------------------------------------------------------------------

    /// Everything that is not VXLAN to our port passes untouched (the host's own traffic);
    /// VXLAN to our port is delivered or dropped with its reason.
    fn underlay_frame(&self, f: &[u8]) -> Outcome {
        if f.len() < ETH + 20 + 8 {
            return Outcome::pass(Counter::UnderlayPass);
        }
        match be16(f, 12).unwrap() {
            wire::ETH_P_IP => self.outer_ipv4(f),
            wire::ETH_P_IPV6 => self.outer_ipv6(f),
            _ => Outcome::pass(Counter::UnderlayPass),
        }
    }

    fn outer_ipv4(&self, f: &[u8]) -> Outcome {
        if f[23] != wire::IPPROTO_UDP {
            return Outcome::pass(Counter::UnderlayPass);
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let frags = be16(f, 20).unwrap();
        let (mf_or_offset, offset) = (frags & 0x3fff != 0, frags & wire::IP_OFFSET != 0);
        // A later fragment has no UDP header to say whose it is.
        if mf_or_offset && offset {
            return Outcome::pass(Counter::UnderlayPass);
        }
        let Some(dport) = be16(f, ETH + ihl + 2) else {
            return Outcome::pass(Counter::UnderlayPass);
        };
        // VXLAN for another address (transit through this node, the other family) is the
        // host's, as it is a kernel vxlan device's.
        if !self.ours(dport) || self.ipv6_underlay || f[30..34] != lab::LOCAL_VTEP {
            return Outcome::pass(Counter::UnderlayPass);
        }
        // Linux VTEPs send neither: left to the host, which has no socket there.
        if ihl != 20 {
            return Outcome::pass(Counter::UnderlayIpOptions);
        }
        if mf_or_offset {
            return Outcome::pass(Counter::UnderlayFragment);
        }
        let source = vtep::from_v4(arr(f, 26).unwrap());
        let carried = usize::from(be16(f, 16).unwrap()).saturating_sub(20);
        self.accept(f, ETH + 20, dport, source, carried, false)
    }

    fn outer_ipv6(&self, f: &[u8]) -> Outcome {
        if f.len() < ETH + IPV6_LEN + 8 || f[20] != wire::IPPROTO_UDP {
            return Outcome::pass(Counter::UnderlayPass);
        }
        let dport = be16(f, ETH + IPV6_LEN + 2).unwrap();
        if !self.ours(dport) || !self.ipv6_underlay || f[38..54] != lab::LOCAL_VTEP6 {
            return Outcome::pass(Counter::UnderlayPass);
        }
        let carried = usize::from(be16(f, 18).unwrap());
        self.accept(f, ETH + IPV6_LEN, dport, arr(f, 22).unwrap(), carried, true)
    }

    /// VXLAN at `udp_at` to our port: valid header, a VNI served, a VTEP of that VNI, a local
    /// endpoint of that VNI; then exactly the inner frame comes out.
    fn accept(
        &self,
        f: &[u8],
        udp_at: usize,
        dport: u16,
        source: [u8; 16],
        carried: usize,
        outer_ipv6: bool,
    ) -> Outcome {
        let inner_at = udp_at + 16;
        if f.len() < inner_at + ETH {
            return Outcome::drop(Counter::DropTooShort);
        }
        // Headers that claim less than they carry: truncated or forged.
        let least = 8 + 8 + ETH;
        if usize::from(be16(f, udp_at + 4).unwrap()) < least || carried < least {
            return Outcome::drop(Counter::DropTooShort);
        }
        let vx = &f[udp_at + 8..inner_at];
        if vx[0] != wire::VXLAN_FLAG_VNI || vx[1..4] != [0; 3] || vx[7] != 0 {
            return Outcome::drop(Counter::DropBadVxlan);
        }
        let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
        if self.vtep_port(vni, source) != Some(dport) {
            return Outcome::drop(if self.network_port(vni) == Some(dport) {
                Counter::DropUnknownVtep
            } else {
                Counter::DropUnknownVni
            });
        }
        // A non-zero UDP checksum, summed (a test-run skb is CHECKSUM_NONE) up to 9,216 bytes.
        let udp_len = usize::from(be16(f, udp_at + 4).unwrap());
        if be16(f, udp_at + 6).unwrap() != 0
            && udp_len <= 9216
            && !udp_checksum_right(f, udp_at, udp_len, outer_ipv6)
        {
            return Outcome::drop(Counter::DropBadChecksum);
        }
        let inner = &f[inner_at..];
        // RFC 6040: the inner ECN field after decapsulation, or a drop.
        let outer_ecn = if outer_ipv6 {
            f[ETH + 1] >> 4
        } else {
            f[ETH + 1]
        } & 3;
        let Ok(ecn) = rfc6040(outer_ecn, inner) else {
            return Outcome::drop(Counter::DropEcn);
        };
        let delivered = if self.endpoint(vni, arr(inner, 0).unwrap()).is_some() {
            Counter::Decap
        } else if inner[0] & 1 != 0 && vni == lab::VNI && self.flooding.bridge42 != 0 {
            // Broadcast and multicast: out of the network's bridge, to its local members.
            Counter::DecapFlood
        } else {
            return Outcome::drop(Counter::DropNoEndpoint);
        };
        if !decapsulable(inner, outer_ipv6) {
            if outer_ipv6 && inner.len() < ETH + IPV6_LEN {
                // Dropped after the outer IPv6 header was already cut to IPv4's size (20
                // bytes less behind the Ethernet header): harmless, nobody sees a dropped frame.
                let cut = [&f[..ETH], &f[ETH + 20..]].concat();
                return Outcome::of(TC_ACT_SHOT, Counter::DropAdjustFailed, Output::Exact(cut));
            }
            return Outcome::drop(Counter::DropAdjustFailed);
        }
        Outcome::redirect(delivered, Output::Exact(with_ecn(inner, ecn)))
    }
}

/// Whether the UDP datagram of `udp_len` bytes at `udp_at` (over IPv6 if `ipv6`) sums right
/// with its pseudo-header; false if the frame ends before it does.
fn udp_checksum_right(f: &[u8], udp_at: usize, udp_len: usize, ipv6: bool) -> bool {
    let Some(udp) = f.get(udp_at..udp_at + udp_len) else {
        return false;
    };
    let addresses = if ipv6 {
        &f[ETH + 8..ETH + 40]
    } else {
        &f[ETH + 12..ETH + 20]
    };
    let mut acc = sum16(0, addresses);
    acc = sum16(acc, &(udp_len as u32).to_be_bytes());
    acc = sum16(acc, &[0, 0, 0, wire::IPPROTO_UDP]);
    acc = sum16(acc, udp);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc == 0xffff
}

/// RFC 6040 section 4.2 for an outer ECN field and the inner frame: the inner ECN field to
/// write, None to leave it; Err: CE over Not-ECT, dropped. Not IP (or no header): nothing.
fn rfc6040(outer: u8, inner: &[u8]) -> Result<Option<u8>, ()> {
    let tc = match be16(inner, 12).unwrap() {
        wire::ETH_P_IP if inner.len() >= ETH + 2 => inner[ETH + 1],
        wire::ETH_P_IPV6 if inner.len() >= ETH + 2 => (inner[ETH] << 4) | (inner[ETH + 1] >> 4),
        _ => return Ok(None),
    };
    Ok(match (outer, tc & 3) {
        (3, 0) => return Err(()),
        (_, 0) => None,
        (3, 3) => None,
        (3, _) => Some(3),
        (1, 2) => Some(1),
        _ => None,
    })
}

/// The decapsulated frame with `ecn` written into its IP header; an IPv4 header's checksum
/// updated for the changed word as RFC 1624 (eqn. 3) does, whatever it was before.
fn with_ecn(inner: &[u8], ecn: Option<u8>) -> Vec<u8> {
    let mut out = inner.to_vec();
    let Some(ecn) = ecn else {
        return out;
    };
    if be16(inner, 12).unwrap() == wire::ETH_P_IP {
        let old = be16(&out, ETH).unwrap();
        out[ETH + 1] = (out[ETH + 1] & !3) | ecn;
        let new = be16(&out, ETH).unwrap();
        let check = be16(&out, ETH + 10).unwrap();
        let mut s = u32::from(!check) + u32::from(!old) + u32::from(new);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        out[ETH + 10..ETH + 12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    } else {
        out[ETH + 1] = (out[ETH + 1] & !0x30) | (ecn << 4);
    }
    out
}

/// Whether the kernel's `bpf_skb_adjust_room` can take the outer headers off: it refuses to
/// leave less than an IP header of the family the packet then claims behind the Ethernet
/// header (inner IPv4 20, inner IPv6 40, anything else the outer family's). An outer IPv6
/// packet whose inner frame is shorter than 54 bytes is first turned into outer IPv4 (see
/// vxlan.rs, `short_from_ipv6`), so such a frame is judged as over IPv4.
fn decapsulable(inner: &[u8], outer_ipv6: bool) -> bool {
    let outer_ipv6 = outer_ipv6 && inner.len() >= ETH + IPV6_LEN;
    let least = match be16(inner, 12).unwrap() {
        wire::ETH_P_IP => 20,
        wire::ETH_P_IPV6 => IPV6_LEN,
        _ if outer_ipv6 => IPV6_LEN,
        _ => 20,
    };
    inner.len() - ETH >= least
}

/// What follows an IPv6 header's extension headers (at most four are read).
enum Upper {
    /// Upper-layer protocol `proto` at `at`, behind a first fragment's header if `fragmented`.
    At {
        proto: u8,
        at: usize,
        fragmented: bool,
    },
    /// A fragment but the first: no upper-layer header in it.
    LaterFragment,
    /// More extension headers than are read: refused, not let through unread.
    TooLong,
    /// An extension header cut off by the end of the frame.
    Truncated,
}

const FRAGMENT: u8 = 44;

fn upper_layer(f: &[u8]) -> Upper {
    let (mut next, mut at, mut fragmented) = (f[20], ETH + IPV6_LEN, false);
    for _ in 0..4 {
        match next {
            0 | 43 | 60 => {
                let Some([n, len]) = arr::<2>(f, at) else {
                    return Upper::Truncated;
                };
                next = n;
                at += (usize::from(len) + 1) * 8;
            }
            FRAGMENT => {
                let Some([n, _, o0, o1]) = arr::<4>(f, at) else {
                    return Upper::Truncated;
                };
                // The offset, in 8-byte units above the three flag bits.
                if u16::from_be_bytes([o0, o1]) >> 3 != 0 {
                    return Upper::LaterFragment;
                }
                (next, at, fragmented) = (n, at + 8, true);
            }
            _ => break,
        }
    }
    match next {
        0 | 43 | 60 | FRAGMENT => Upper::TooLong,
        proto => Upper::At {
            proto,
            at,
            fragmented,
        },
    }
}

/// IGMP snooping (RFC 4541): what the report at `l4` tells, each group's join (true) or leave
/// told to `note`, which says how it was counted. v1/v2 reports and v2 leaves name one group;
/// a v3 report's first eight records are read.
fn snoop(f: &[u8], l4: usize, mut note: impl FnMut([u8; 4], bool) -> Snooped) -> Snooped {
    let mut total = Snooped::default();
    let mut tell = |group: [u8; 4], join: bool| {
        let n = note(group, join);
        total.joins += n.joins;
        total.leaves += n.leaves;
        total.limited += n.limited;
    };
    match f.get(l4) {
        Some(0x12 | 0x16) => {
            if let Some(g) = arr(f, l4 + 4) {
                tell(g, true);
            }
        }
        Some(0x17) => {
            if let Some(g) = arr(f, l4 + 4) {
                tell(g, false);
            }
        }
        Some(0x22) => {
            let Some(n) = be16(f, l4 + 6) else {
                return total;
            };
            let mut at = l4 + 8;
            for _ in 0..usize::from(n).min(8) {
                let Some(head) = arr::<8>(f, at) else {
                    break;
                };
                let sources = u16::from_be_bytes([head[2], head[3]]);
                let group = [head[4], head[5], head[6], head[7]];
                match (head[0], sources) {
                    // EXCLUDE: every source, a join; INCLUDE nothing: a leave.
                    (2 | 4, _) => tell(group, true),
                    (1 | 3, 0) => tell(group, false),
                    (1 | 3 | 5, _) => tell(group, true),
                    _ => {}
                }
                at += 8 + 4 * usize::from(sources) + 4 * usize::from(head[1]);
                if at > 0xffff {
                    break;
                }
            }
        }
        _ => {}
    }
    total
}

/// The group memberships GROUPS holds, per local port: at most `MAX_GROUPS_PER_PORT` each, so
/// one container can neither churn nor fill what the node publishes for the others.
#[derive(Default)]
pub struct Memberships {
    /// (port's ifindex, VNI, group).
    held: BTreeSet<(u32, u32, [u8; 4])>,
}

impl Memberships {
    /// A join (or leave) of `group` by the port `(ifindex, vni)`, as counted.
    fn note(&mut self, (port, vni): (u32, u32), group: [u8; 4], join: bool) -> Snooped {
        let mut n = Snooped::default();
        // 224.0.0.0/24 and non-groups go to every host: nothing to track.
        if !tracked_group(group) {
            return n;
        }
        let key = (port, vni, group);
        if !join {
            self.held.remove(&key);
            n.leaves = 1;
        } else if self.held.contains(&key) {
            // A member already: the report keeps it alive.
            n.joins = 1;
        } else if self
            .held
            .range((port, 0, [0; 4])..=(port, u32::MAX, [255; 4]))
            .count()
            >= MAX_GROUPS_PER_PORT as usize
        {
            n.limited = 1;
        } else {
            self.held.insert(key);
            n.joins = 1;
        }
        n
    }
}
