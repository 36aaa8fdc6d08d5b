//! VTEP addresses as every map holds them: 16 bytes, an IPv4 VTEP in its IPv4-mapped form
//! (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2), so one layout serves an IPv4 and an IPv6 underlay.
//! A cluster's VTEPs are all of one family (the agent refuses a node of the other), so the
//! programs take the outer family from the node's own configuration, not from each entry.
use core::net::{IpAddr, Ipv6Addr};

pub type VtepAddr = [u8; 16];

const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// An IPv4 VTEP in the maps' form.
#[inline(always)]
pub const fn from_v4(a: [u8; 4]) -> VtepAddr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// The IPv4 address of an IPv4 VTEP (the last four bytes of its mapped form).
#[inline(always)]
pub const fn v4(a: &VtepAddr) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// Whether the VTEP is an IPv4 one.
pub fn is_v4(a: &VtepAddr) -> bool {
    a[..12] == V4_MAPPED
}

/// Any VTEP address in the maps' form.
pub fn from_ip(ip: IpAddr) -> VtepAddr {
    match ip {
        IpAddr::V4(a) => from_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address a VTEP in the maps' form stands for (IPv4 for a mapped one).
pub fn to_ip(a: VtepAddr) -> IpAddr {
    Ipv6Addr::from(a).to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn both_families_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(to_ip(from_ip(v4)), v4);
        assert_eq!(to_ip(from_ip(v6)), v6);
        assert!(is_v4(&from_ip(v4)) && !is_v4(&from_ip(v6)));
        assert_eq!(super::v4(&from_ip(v4)), [10, 0, 0, 1]);
    }
}
