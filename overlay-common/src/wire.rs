//! Wire constants of VXLAN (RFC 7348) as the Linux vxlan device puts it on the wire.

/// IANA port for VXLAN; Linux's own default is 8472 (flannel keeps that), Docker uses 4789.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Outer Ethernet (14) + IPv4 without options (20) + UDP (8) + VXLAN (8).
pub const OUTER_HEADERS_LEN: usize = 14 + 20 + 8 + 8;
/// What encapsulation adds in front of the inner Ethernet frame; also the MTU cost on the underlay.
pub const ENCAP_OVERHEAD: usize = 20 + 8 + 8 + 14;
/// The same over an IPv6 underlay: the outer IPv6 header is 40 bytes, without extension headers.
pub const OUTER_HEADERS_LEN_V6: usize = 14 + 40 + 8 + 8;
pub const ENCAP_OVERHEAD_V6: usize = 40 + 8 + 8 + 14;

/// The MTU cost of the tunnel over an underlay of one family or the other.
#[inline(always)]
pub const fn encap_overhead(ipv6: bool) -> usize {
    if ipv6 {
        ENCAP_OVERHEAD_V6
    } else {
        ENCAP_OVERHEAD
    }
}
/// The I flag: "a valid VNI is present". Every other bit of the 8-byte header is reserved and zero.
pub const VXLAN_FLAG_VNI: u8 = 0x08;
/// VNIs are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// The range Linux picks outer UDP source ports from (net.ipv4.ip_local_port_range default).
pub const SRC_PORT_MIN: u16 = 32768;
pub const SRC_PORT_MAX: u16 = 60999;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_TCP: u8 = 6;
/// IPv4's flags and fragment offset field (host order): don't fragment, more fragments, offset.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

/// `skb->mark` of a copy of a too-big IPv4 packet that the dataplane sent back through the
/// container's port to become one of its fragments (overlay-ebpf's fragment.rs): this tag in the
/// high 12 bits, the fragment's index (6 bits) and its payload size in 8-byte units (13 bits).
pub const FRAGMENT_MARK_TAG: u32 = 0xf7a << 20;
pub const FRAGMENT_MARK_TAG_MASK: u32 = 0xfff << 20;

/// The mark of fragment `index`, of `size` payload bytes (a multiple of 8).
pub const fn fragment_mark(index: u32, size: u32) -> u32 {
    FRAGMENT_MARK_TAG | (index << 13) | (size / 8)
}

/// The outer UDP source port for a flow, as the kernel's `udp_flow_src_port` computes it:
/// the flow hash scaled into [SRC_PORT_MIN, SRC_PORT_MAX), so ECMP and RSS spread flows.
#[inline(always)]
pub fn flow_src_port(hash: u32) -> u16 {
    let range = (SRC_PORT_MAX - SRC_PORT_MIN) as u64;
    (((hash as u64 * range) >> 32) as u16) + SRC_PORT_MIN
}

/// A flow hash from the IPv4 addresses, protocol and L4 ports (0 when absent), for packets
/// that carry no hash of their own: murmur3's finaliser, so every input bit moves the port.
/// Any value is valid on the wire; what matters is one flow -> one port, flows spread apart.
#[inline(always)]
pub fn ipv4_flow_hash(src: [u8; 4], dst: [u8; 4], proto: u8, ports: u32) -> u32 {
    let mut h = u32::from_ne_bytes(src)
        ^ u32::from_ne_bytes(dst).rotate_left(11)
        ^ ports.rotate_left(22)
        ^ u32::from(proto);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Outer ECN from the inner TOS byte, RFC 6040 normal mode as `INET_ECN_encapsulate` does it:
/// copy ECT(0)/ECT(1), and turn CE into ECT(0) so a congested hop is not blamed twice.
#[inline(always)]
pub fn outer_ecn(inner_tos: u8) -> u8 {
    match inner_tos & 0x3 {
        3 => 2,
        ecn => ecn,
    }
}

/// The 8-byte VXLAN header: flags, 24 reserved bits, the 24-bit VNI, 8 reserved bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanHdr {
    pub flags: u8,
    pub reserved1: [u8; 3],
    pub vni: [u8; 3],
    pub reserved2: u8,
}

impl VxlanHdr {
    pub const LEN: usize = 8;

    #[inline(always)]
    pub const fn new(vni: u32) -> Self {
        let b = vni.to_be_bytes();
        Self {
            flags: VXLAN_FLAG_VNI,
            reserved1: [0; 3],
            vni: [b[1], b[2], b[3]],
            reserved2: 0,
        }
    }

    /// The header as two big-endian words: written as integers, it costs two stores instead of
    /// a struct copy (which the eBPF target lowers to a byte-loop memset for the zero bytes).
    #[inline(always)]
    pub const fn words(vni: u32) -> [u32; 2] {
        [((VXLAN_FLAG_VNI as u32) << 24).to_be(), (vni << 8).to_be()]
    }

    #[inline(always)]
    pub const fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.vni[0], self.vni[1], self.vni[2]])
    }

    /// RFC 7348: the I flag set and every reserved bit zero. Linux's vxlan device drops anything
    /// else too (unless extensions such as GBP are configured, which we do not speak).
    #[inline(always)]
    pub const fn is_valid(&self) -> bool {
        self.flags == VXLAN_FLAG_VNI
            && self.reserved1[0] == 0
            && self.reserved1[1] == 0
            && self.reserved1[2] == 0
            && self.reserved2 == 0
    }
}

/// RFC 1071 checksum of an IPv4 header (the header's own checksum field must be zero).
#[inline(always)]
pub fn ipv4_header_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([header[i], header[i + 1]]) as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn vxlan_words_are_the_header() {
        let [a, b] = VxlanHdr::words(0x12_3456);
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&a.to_ne_bytes());
        bytes[4..].copy_from_slice(&b.to_ne_bytes());
        assert_eq!(bytes, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let h = VxlanHdr::new(0x12_3456);
        assert_eq!(
            bytes,
            [h.flags, 0, 0, 0, h.vni[0], h.vni[1], h.vni[2], h.reserved2]
        );
    }

    #[test]
    fn flow_hash_is_stable_per_flow_and_spreads_flows() {
        let h = |sport: u16| {
            let ports = u32::from_ne_bytes([(sport >> 8) as u8, sport as u8, 0x1f, 0x90]);
            flow_src_port(ipv4_flow_hash([10, 10, 0, 1], [10, 10, 1, 1], 6, ports))
        };
        assert_eq!(h(40000), h(40000));
        extern crate std;
        let mut ports: std::vec::Vec<u16> = (40000..40064).map(h).collect();
        assert!(
            ports
                .iter()
                .all(|p| (SRC_PORT_MIN..SRC_PORT_MAX).contains(p))
        );
        ports.sort();
        ports.dedup();
        assert!(ports.len() > 56, "64 flows, {} distinct ports", ports.len());
    }

    use super::*;

    #[test]
    fn checksum_matches_a_known_header() {
        // Wikipedia's IPv4 checksum example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        // A header with its checksum in place sums to zero.
        let mut sum = 0u32;
        for w in h.chunks(2) {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn vxlan_header_round_trips_24_bit_vnis() {
        let h = VxlanHdr::new(0x00ab_cdef);
        assert_eq!(h.vni(), 0xab_cdef);
        assert!(h.is_valid());
        let bytes: [u8; 8] = unsafe { core::mem::transmute(h) };
        assert_eq!(bytes, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert!(!VxlanHdr { flags: 0, ..h }.is_valid());
        assert!(!VxlanHdr { reserved2: 1, ..h }.is_valid());
        assert!(!VxlanHdr { flags: 0x88, ..h }.is_valid());
    }

    #[test]
    fn source_ports_stay_in_range_and_spread() {
        assert_eq!(flow_src_port(0), SRC_PORT_MIN);
        assert!(flow_src_port(u32::MAX) < SRC_PORT_MAX);
        assert_ne!(flow_src_port(0x1234_5678), flow_src_port(0x8765_4321));
    }

    #[test]
    fn ecn_is_copied_and_ce_becomes_ect0() {
        assert_eq!(outer_ecn(0x00), 0);
        assert_eq!(outer_ecn(0xb9), 1);
        assert_eq!(outer_ecn(0x02), 2);
        assert_eq!(outer_ecn(0x03), 2);
    }
}
