//! One host's dataplane in a namespace, with fixed endpoints and a remote VTEP, for running
//! frames through the programs with BPF_PROG_TEST_RUN: the byte-exact tests and the
//! microbenchmark share it.
use overlay_common::{Counter, Endpoint, Network, NodeConfig, deliver, programs, vtep};

use crate::{
    fixture::{Node, TC_ACT_REDIRECT, Verdict},
    netns::Netns,
    packet::{self, ETH_P_IP, ETH_P_IPV6},
    require_root, unique,
};

pub const VNI: u32 = 42;
pub const OTHER_VNI: u32 = 43;
pub const PORT: u16 = 4789;
pub const LOCAL_VTEP: [u8; 4] = [10, 0, 0, 1];
pub const REMOTE_VTEP: [u8; 4] = [10, 0, 0, 2];
/// The same two VTEPs on an IPv6 underlay (`Lab::new_ipv6_underlay`): fd00::1 and fd00::2.
pub const LOCAL_VTEP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const REMOTE_VTEP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// VNI 42's IPv6 prefix, fd00:10::/64: an endpoint's IPv6 address is this and its IPv4 one.
pub const PREFIX6: [u8; 12] = [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
pub const UNDERLAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const C1_MAC: [u8; 6] = [0x02, 0x42, 10, 10, 1, 2];
pub const C1_IP: [u8; 4] = [10, 10, 1, 2];
pub const C2_MAC: [u8; 6] = [0x02, 0x42, 10, 10, 2, 2];
pub const C2_IP: [u8; 4] = [10, 10, 2, 2];
pub const C3_MAC: [u8; 6] = [0x02, 0x42, 10, 10, 1, 3];
pub const C3_IP: [u8; 4] = [10, 10, 1, 3];
/// In the other network, with the same IP as c1: overlapping subnets must not matter.
pub const C4_MAC: [u8; 6] = [0x02, 0x42, 10, 11, 1, 2];

/// One host in a namespace: underlay `ul0` (10.0.0.1, next hop 10.0.0.2 resolved statically,
/// forwarding on as on any Docker or Kubernetes node, so the FIB answers with the MACs),
/// container ports vc1 and vc3 (VNI 42) and vc4 (VNI 43); c2 lives behind 10.0.0.2. On an IPv6
/// underlay the same with fd00::1 and fd00::2.
pub struct Lab {
    pub ns: Netns,
    pub node: Node,
    pub underlay: u32,
    pub vc1: u32,
    pub vc3: u32,
    pub vc4: u32,
    pub ipv6_underlay: bool,
}

impl Lab {
    pub fn new(label: &str) -> Lab {
        Self::build(label, false)
    }

    /// The same host with IPv6 VTEPs.
    pub fn new_ipv6_underlay(label: &str) -> Lab {
        Self::build(label, true)
    }

    fn build(label: &str, ipv6: bool) -> Lab {
        require_root();
        let name = unique(label);
        let ns = Netns::new(&name).unwrap();
        let underlay = if ipv6 {
            "ip addr add fd00::1/64 dev ul0 nodad && \
             sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip -6 neigh add fd00::2"
        } else {
            "ip addr add 10.0.0.1/24 dev ul0 && \
             sysctl -qw net.ipv4.conf.all.forwarding=1 && \
             ip neigh add 10.0.0.2"
        };
        ns.run(&format!(
            "ip link add ul0 address {} type veth peer name ul0p && \
             ip link set ul0 up && ip link set ul0p up && \
             {underlay} lladdr {} dev ul0 nud permanent && \
             for c in 1 3 4; do ip link add vc$c type veth peer name c$c && ip link set vc$c up && ip link set c$c up; done",
            mac_str(UNDERLAY_MAC),
            mac_str(NEXT_HOP_MAC)
        ))
        .unwrap();
        let (local, remote) = if ipv6 {
            (LOCAL_VTEP6, REMOTE_VTEP6)
        } else {
            (vtep::from_v4(LOCAL_VTEP), vtep::from_v4(REMOTE_VTEP))
        };
        let node = Node::load(&name).unwrap();
        let (underlay, vc1, vc3, vc4) = (
            ns.ifindex("ul0").unwrap(),
            ns.ifindex("vc1").unwrap(),
            ns.ifindex("vc3").unwrap(),
            ns.ifindex("vc4").unwrap(),
        );
        let mut maps = node.maps();
        maps.set_config(NodeConfig {
            vtep: local,
            underlay_ifindex: underlay,
            ipv6: ipv6.into(),
        })
        .unwrap();
        // VNI 42 is dual-stack, VNI 43 IPv4 only.
        for (vni, prefix6) in [(VNI, PREFIX6), (OTHER_VNI, [0; 12])] {
            maps.set_network(vni, Network::new(PORT, prefix6)).unwrap();
        }
        for (ifindex, vni, mac, ip) in [
            (vc1, VNI, C1_MAC, C1_IP),
            (vc3, VNI, C3_MAC, C3_IP),
            (vc4, OTHER_VNI, C4_MAC, C1_IP),
        ] {
            maps.set_local_endpoint(Endpoint {
                ifindex,
                vni,
                mac,
                deliver: deliver::PEER,
                ip,
            })
            .unwrap();
        }
        maps.set_fdb(VNI, C2_MAC, remote).unwrap();
        maps.set_arp(VNI, C2_IP, C2_MAC).unwrap();
        maps.set_vtep(VNI, remote).unwrap();
        Lab {
            ns,
            node,
            underlay,
            vc1,
            vc3,
            vc4,
            ipv6_underlay: ipv6,
        }
    }

    /// Runs `frame` through the program at `hook`.
    pub fn send(&mut self, hook: Hook, frame: &[u8]) -> Verdict {
        self.send_marked(hook, frame, 0)
    }

    /// The same, with `skb->mark` set to `mark`.
    pub fn send_marked(&mut self, hook: Hook, frame: &[u8], mark: u32) -> Verdict {
        let (program, ifindex) = match hook {
            Hook::Container(ifindex) => (programs::FROM_CONTAINER, ifindex),
            Hook::Underlay => (programs::FROM_UNDERLAY, self.underlay),
        };
        let node = &mut self.node;
        self.ns
            .enter(|| node.run_marked(program, ifindex, frame, mark))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn count(&self, counter: Counter) -> u64 {
        self.node.maps().counter(counter).unwrap()
    }

    /// Runs `frame`, and checks the verdict, that exactly `counter` moved by one, and (for
    /// anything not redirected) that the frame is untouched.
    pub fn expect(
        &mut self,
        what: &str,
        hook: Hook,
        frame: &[u8],
        code: i32,
        counter: Counter,
    ) -> Verdict {
        let before = self.node.maps().counters().unwrap();
        let v = self.send(hook, frame);
        let after = self.node.maps().counters().unwrap();
        let moved: Vec<String> = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((c, b), (_, a))| format!("{}+{}", c.name(), a - b))
            .collect();
        assert_eq!(v.code, code, "{what}: verdict (counters moved: {moved:?})");
        for ((c, b), (_, a)) in before.iter().zip(&after) {
            // A test-run skb is never GRO'd: a decapsulated one carried one wire packet. The
            // lab's networks have no flood lists: nothing is replicated.
            let want = match c {
                Counter::DecapSegments => u64::from(counter == Counter::Decap),
                Counter::FloodCopies => 0,
                _ => u64::from(*c == counter),
            };
            assert_eq!(
                a - b,
                want,
                "{what}: counter {} moved by {}",
                c.name(),
                a - b
            );
        }
        if code != TC_ACT_REDIRECT {
            assert_eq!(
                v.frame, frame,
                "{what}: a frame that is not redirected must be untouched"
            );
        }
        v
    }
}

/// Where a frame enters the dataplane.
#[derive(Clone, Copy)]
pub enum Hook {
    /// From the container behind this host-side veth.
    Container(u32),
    /// From the underlay interface.
    Underlay,
}
pub use Hook::{Container, Underlay};

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An endpoint's address on dual-stack VNI 42: fd00:10::/64 followed by its IPv4 address.
pub fn global(ip: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..12].copy_from_slice(&PREFIX6);
    a[12..].copy_from_slice(&ip);
    a
}

/// c1 -> c2 ICMP echo, as c1's kernel hands it to its veth.
pub fn c1_to_c2_ping(tos: u8) -> Vec<u8> {
    let icmp = packet::icmp_echo(7, 1);
    packet::eth(
        C2_MAC,
        C1_MAC,
        ETH_P_IP,
        &packet::ipv4(C1_IP, C2_IP, 1, tos, &icmp),
    )
}

/// What a Linux vxlan device on 10.0.0.2 sends to us for `inner`.
pub fn vxlan_from_remote(vni: u32, src_vtep: [u8; 4], dport: u16, inner: &[u8]) -> Vec<u8> {
    let udp = packet::udp(54321, dport, &packet::vxlan(vni, inner));
    packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        ETH_P_IP,
        &packet::ipv4(src_vtep, LOCAL_VTEP, 17, 0, &udp),
    )
}

/// What a Linux vxlan device on fd00::2 sends to us for `inner` (udp6zerocsumtx: checksum 0).
pub fn vxlan_from_remote6(vni: u32, src_vtep: [u8; 16], dport: u16, inner: &[u8]) -> Vec<u8> {
    let udp = packet::udp(54321, dport, &packet::vxlan(vni, inner));
    packet::eth(
        UNDERLAY_MAC,
        NEXT_HOP_MAC,
        ETH_P_IPV6,
        &packet::ipv6(src_vtep, LOCAL_VTEP6, 17, 64, &udp),
    )
}

pub fn c2_to_c1_ping() -> Vec<u8> {
    c2_to_c1_ping_with_tos(0)
}

/// The same with TOS `tos` (its ECN field among it).
pub fn c2_to_c1_ping_with_tos(tos: u8) -> Vec<u8> {
    let icmp = packet::icmp_echo(7, 1);
    packet::eth(
        C1_MAC,
        C2_MAC,
        ETH_P_IP,
        &packet::ipv4(C2_IP, C1_IP, 1, tos, &icmp),
    )
}

/// c2's ARP reply to c1 (who-has c2's address, asked by c1), as c2's kernel sends it.
pub fn c2_arp_reply_to_c1() -> Vec<u8> {
    packet::eth(
        C1_MAC,
        C2_MAC,
        packet::ETH_P_ARP,
        &packet::arp(2, C2_MAC, C2_IP, C1_MAC, C1_IP),
    )
}

/// An IPv6 packet as a container sends it on its link, with the hop limit NDP requires (255).
pub fn container_ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    packet::ipv6(src, dst, next, 255, payload)
}

/// The underlay's address family. What crosses the underlay is tested on both, with one test
/// body (`per_family!`) asking the family for what differs: the lab, the VTEPs, the outer
/// headers' length and offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The lab on this underlay; `label` gets the family's digit, so both can run at once.
    pub fn lab(self, label: &str) -> Lab {
        match self {
            Family::Ipv4 => Lab::new(&format!("{label}4")),
            Family::Ipv6 => Lab::new_ipv6_underlay(&format!("{label}6")),
        }
    }

    pub fn other(self) -> Family {
        match self {
            Family::Ipv4 => Family::Ipv6,
            Family::Ipv6 => Family::Ipv4,
        }
    }

    /// The outer IP header's length (no options, no extension headers).
    pub fn ip_header(self) -> usize {
        match self {
            Family::Ipv4 => 20,
            Family::Ipv6 => 40,
        }
    }

    /// Where the outer UDP header starts in a frame.
    pub fn udp_at(self) -> usize {
        14 + self.ip_header()
    }

    /// Where the VXLAN header starts in a frame.
    pub fn vxlan_at(self) -> usize {
        self.udp_at() + 8
    }

    /// What encapsulation adds: Ethernet, IP, UDP and VXLAN headers (50 or 70 bytes); the
    /// tunnel's MTU is the underlay's less this.
    pub fn overhead(self) -> usize {
        self.vxlan_at() + 8
    }

    /// VTEP `last` of the lab's underlay subnet: 10.0.0.`last` or fd00::`last` (1 is ours, 2
    /// c2's).
    pub fn vtep(self, last: u8) -> Vec<u8> {
        match self {
            Family::Ipv4 => vec![10, 0, 0, last],
            Family::Ipv6 => {
                let mut a = REMOTE_VTEP6;
                a[15] = last;
                a.to_vec()
            }
        }
    }

    /// What a Linux vxlan device on VTEP `last` sends to us for `inner`.
    pub fn vxlan_from(self, vni: u32, last: u8, dport: u16, inner: &[u8]) -> Vec<u8> {
        let src = self.vtep(last);
        match self {
            Family::Ipv4 => vxlan_from_remote(vni, src.try_into().unwrap(), dport, inner),
            Family::Ipv6 => vxlan_from_remote6(vni, src.try_into().unwrap(), dport, inner),
        }
    }

    /// What c2's VTEP sends to us for `inner`.
    pub fn vxlan_from_remote(self, vni: u32, dport: u16, inner: &[u8]) -> Vec<u8> {
        self.vxlan_from(vni, 2, dport, inner)
    }

    /// `inner` wrapped by c2's VTEP for VNI 42, the outer ECN field `ecn`.
    pub fn vxlan_with_outer_ecn(self, ecn: u8, inner: &[u8]) -> Vec<u8> {
        match self {
            Family::Ipv4 => {
                let udp = packet::udp(54321, PORT, &packet::vxlan(VNI, inner));
                packet::eth(
                    UNDERLAY_MAC,
                    NEXT_HOP_MAC,
                    ETH_P_IP,
                    &packet::ipv4(REMOTE_VTEP, LOCAL_VTEP, 17, ecn, &udp),
                )
            }
            Family::Ipv6 => {
                let mut p = vxlan_from_remote6(VNI, REMOTE_VTEP6, PORT, inner);
                p[15] |= ecn << 4;
                p
            }
        }
    }

    /// `pkt` (VXLAN over this family, no options or extension headers) with its outer UDP
    /// checksum computed.
    pub fn with_udp_checksum(self, mut pkt: Vec<u8>) -> Vec<u8> {
        let addresses = match self {
            Family::Ipv4 => 14 + 12..14 + 20,
            Family::Ipv6 => 14 + 8..14 + 40,
        };
        let at = self.udp_at();
        let c = packet::udp_checksum(&pkt[addresses], &pkt[at..]);
        pkt[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
        pkt
    }
}

/// One body, one `#[test]` per underlay family: `per_family! { fn name(family) { ... } }`
/// makes the tests `name::ipv4` and `name::ipv6`, each calling the body with its `Family`.
#[macro_export]
macro_rules! per_family {
    ($(#[$attr:meta])* fn $name:ident($family:ident) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($family: $crate::lab::Family) $body

            #[test]
            fn ipv4() {
                run($crate::lab::Family::Ipv4)
            }

            #[test]
            fn ipv6() {
                run($crate::lab::Family::Ipv6)
            }
        }
    };
}
