//! Address management: a network's subnet, the per-node slices it is cut into, and the
//! addresses a slice hands out; and a network's IPv6 prefix, which derives each endpoint's IPv6
//! address from its IPv4 one. Pure arithmetic; who owns which slice is decided in etcd.
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{Result, anyhow, bail};

/// An IPv4 prefix such as `10.10.0.0/16`, always with the host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            bail!("prefix length /{prefix} is more than 32");
        }
        let cidr = Self { addr, prefix };
        if cidr.network() != addr {
            bail!(
                "{addr}/{prefix} has host bits set; did you mean {}/{prefix}?",
                cidr.network()
            );
        }
        Ok(cidr)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two share an address (prefixes either nest or are disjoint).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `/slice_prefix` blocks this prefix divides into, in address order.
    pub fn slices(&self, slice_prefix: u8) -> impl Iterator<Item = Cidr> + use<> {
        let base = u32::from(self.network());
        let prefix = slice_prefix.clamp(self.prefix, 32);
        let step = 1u64 << (32 - u32::from(prefix));
        let count = 1u64 << (u32::from(prefix) - u32::from(self.prefix));
        (0..count).map(move |i| Cidr {
            addr: Ipv4Addr::from(base + (i * step) as u32),
            prefix,
        })
    }

    /// Addresses this block can give to endpoints: all but its own network and broadcast
    /// addresses (for a /31 or /32, all of them).
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let (first, last) = (u32::from(self.network()), u32::from(self.broadcast()));
        let (first, last) = if self.prefix >= 31 {
            (first, last)
        } else {
            (first + 1, last - 1)
        };
        (first..=last).map(Ipv4Addr::from)
    }

    /// The form used inside etcd keys, where '/' separates path segments: `10.10.3.0-24`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.addr, self.prefix)
    }

    pub fn from_key(key: &str) -> Result<Self> {
        let (addr, prefix) = key
            .split_once('-')
            .ok_or_else(|| anyhow!("{key:?} is not a slice key like 10.10.3.0-24"))?;
        format!("{addr}/{prefix}").parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let err = || anyhow!("{s:?} is not a CIDR: expected an IPv4 prefix like 10.10.0.0/16");
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Self::new(addr, prefix).map_err(|e| anyhow!("{s:?} is not a valid CIDR: {e}"))
    }
}

/// A network's IPv6 prefix such as `fd00:10::/64`, at most /96, host bits zero. An endpoint's
/// IPv6 address is the prefix's first 96 bits followed by its IPv4 address: every IPv4 address,
/// claimed from its node's slice, brings a unique IPv6 one with it, so IPv6 needs no slices or
/// claims of its own, and the dataplane derives an endpoint's address without another map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet6 {
    addr: Ipv6Addr,
    prefix: u8,
}

/// The longest IPv6 prefix a network may have: 32 bits are left for the IPv4 address.
pub const MAX_SUBNET6_PREFIX: u8 = 96;

impl Subnet6 {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self> {
        if prefix > MAX_SUBNET6_PREFIX {
            bail!(
                "prefix /{prefix} is longer than /{MAX_SUBNET6_PREFIX}: 32 bits must stay for the IPv4 address"
            );
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        let network = Ipv6Addr::from(u128::from(addr) & mask);
        if network != addr {
            bail!("{addr}/{prefix} has host bits set; did you mean {network}/{prefix}?");
        }
        if addr.is_multicast() || addr.is_loopback() || addr.is_unspecified() {
            bail!("{addr}/{prefix} is not a unicast prefix");
        }
        let link_local = 0xfe80u128 << 112;
        if u128::from(addr) >> 118 == link_local >> 118 || link_local & mask == u128::from(addr) {
            bail!("{addr}/{prefix} overlaps fe80::/10 (link-local)");
        }
        Ok(Self { addr, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The prefix's own address (host bits zero).
    pub fn network(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        u128::from(ip) & mask == u128::from(self.addr)
    }

    /// The first 96 bits, as the dataplane's NETWORKS map holds them.
    pub fn first96(&self) -> [u8; 12] {
        self.addr.octets()[..12].try_into().expect("12 of 16 bytes")
    }

    /// The IPv6 address of the endpoint whose IPv4 address is `ip`.
    pub fn address_of(&self, ip: Ipv4Addr) -> Ipv6Addr {
        let mut a = self.addr.octets();
        a[12..].copy_from_slice(&ip.octets());
        Ipv6Addr::from(a)
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet6 {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let err = || anyhow!("{s:?} is not an IPv6 prefix: expected one like fd00:10::/64");
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Self::new(addr, prefix).map_err(|e| anyhow!("{s:?} is not a valid IPv6 prefix: {e}"))
    }
}

/// Records keep a prefix as its text ("10.10.0.0/16"); reading one checks it like any parsed
/// prefix, so a record with a bad subnet fails to decode, with the parser's message.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_text!(Cidr, Subnet6);

/// The smallest subnet a network may have: a /30 still leaves two addresses.
pub const MAX_SUBNET_PREFIX: u8 = 30;

/// Why `subnet` cut into `/slice_prefix` slices cannot serve `nodes` nodes (each node with an
/// endpoint in a network takes a slice of its own), in one line; None if it can.
pub fn too_few_slices(subnet: Cidr, slice_prefix: u8, nodes: usize) -> Option<String> {
    let slices = 1u64 << slice_prefix.saturating_sub(subnet.prefix()).min(32);
    if (nodes as u64) <= slices {
        return None;
    }
    // The shortest slice prefix (the most addresses a node) that still gives every node one.
    let need = (nodes as u64).next_power_of_two().trailing_zeros() as u8;
    let fits = subnet.prefix() + need;
    let hint = if fits <= MAX_SUBNET_PREFIX {
        format!("a slice prefix of /{fits} or longer")
    } else {
        "a larger subnet".to_string()
    };
    Some(format!(
        "subnet {subnet} cut into /{slice_prefix} slices has {slices}, fewer than the {nodes} nodes registered (each node with an endpoint here takes one): use {hint}, or a subnet of /{} or larger for /{slice_prefix} slices",
        slice_prefix.saturating_sub(need)
    ))
}

/// How big each node's slice of a network is when the user does not say: /24 from a /16 or
/// larger (256 nodes of 254 addresses, flannel's default), else 16 slices.
pub fn default_slice_prefix(subnet: Cidr) -> u8 {
    if subnet.prefix() <= 16 {
        24
    } else {
        (subnet.prefix() + 4).min(MAX_SUBNET_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(cidr("10.10.0.0/16").to_string(), "10.10.0.0/16");
        for bad in [
            "10.10.0.0",
            "10.10.0/16",
            "10.10.0.0/33",
            "x/8",
            "10.10.0.0/-1",
            "",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains("CIDR"), "{bad}: {err}");
        }
        let err = "10.10.1.5/16".parse::<Cidr>().unwrap_err().to_string();
        assert!(err.contains("did you mean 10.10.0.0/16"), "{err}");
    }

    #[test]
    fn an_ipv6_prefix_derives_each_endpoints_address() {
        let s: Subnet6 = "fd00:10::/64".parse().unwrap();
        assert_eq!(s.to_string(), "fd00:10::/64");
        assert_eq!(
            s.address_of(Ipv4Addr::new(10, 10, 1, 2)).to_string(),
            "fd00:10::a0a:102"
        );
        assert_eq!(s.first96(), [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]);
        for (bad, why) in [
            ("fd00:10::/97", "longer than /96"),
            ("fd00:10::1/64", "did you mean fd00:10::/64"),
            ("fe80::/64", "link-local"),
            ("fe00::/7", "link-local"),
            ("ff02::/16", "not a unicast"),
            ("10.10.0.0/16", "not an IPv6 prefix"),
            ("fd00::", "not an IPv6 prefix"),
        ] {
            let err = bad.parse::<Subnet6>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn slices_cover_the_subnet_in_order() {
        let slices: Vec<_> = cidr("10.10.0.0/16").slices(24).collect();
        assert_eq!(slices.len(), 256);
        assert_eq!(slices[3].to_string(), "10.10.3.0/24");
        assert_eq!(slices[255].to_string(), "10.10.255.0/24");
        let small: Vec<_> = cidr("192.168.7.0/24").slices(28).collect();
        assert_eq!(small.len(), 16);
        assert_eq!(small[1].to_string(), "192.168.7.16/28");
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let hosts: Vec<_> = cidr("10.10.3.0/30").hosts().collect();
        assert_eq!(
            hosts,
            [Ipv4Addr::new(10, 10, 3, 1), Ipv4Addr::new(10, 10, 3, 2)]
        );
        assert_eq!(cidr("10.10.3.0/24").hosts().count(), 254);
    }

    #[test]
    fn contains_and_keys() {
        let net = cidr("10.10.0.0/16");
        assert!(net.contains(Ipv4Addr::new(10, 10, 200, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 11, 0, 1)));
        assert!(cidr("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            Cidr::from_key("10.10.3.0-24").unwrap(),
            cidr("10.10.3.0/24")
        );
        assert!(Cidr::from_key("10.10.3.0/24").is_err());
    }

    #[test]
    fn overlaps_when_prefixes_nest() {
        let net = cidr("10.10.0.0/16");
        for (other, want) in [
            ("10.10.0.0/16", true),
            ("10.10.200.0/24", true),
            ("10.0.0.0/8", true),
            ("0.0.0.0/0", true),
            ("10.11.0.0/16", false),
            ("10.9.255.0/24", false),
        ] {
            assert_eq!(net.overlaps(&cidr(other)), want, "{other}");
            assert_eq!(cidr(other).overlaps(&net), want, "{other}, the other way");
        }
    }

    #[test]
    fn a_network_with_fewer_slices_than_nodes_is_refused_with_what_fits() {
        assert_eq!(too_few_slices(cidr("10.10.0.0/16"), 24, 256), None);
        let why = too_few_slices(cidr("10.10.0.0/16"), 24, 5000).unwrap();
        assert!(why.contains("has 256, fewer than the 5000 nodes"), "{why}");
        assert!(why.contains("/29 or longer"), "{why}");
        assert!(why.contains("subnet of /11 or larger"), "{why}");
        assert_eq!(too_few_slices(cidr("10.0.0.0/11"), 24, 5000), None);
        assert!(
            too_few_slices(cidr("10.10.7.0/28"), 30, 5)
                .unwrap()
                .contains("a larger subnet")
        );
    }

    #[test]
    fn default_slices() {
        assert_eq!(default_slice_prefix(cidr("10.0.0.0/8")), 24);
        assert_eq!(default_slice_prefix(cidr("10.10.0.0/16")), 24);
        assert_eq!(default_slice_prefix(cidr("10.10.7.0/24")), 28);
        assert_eq!(default_slice_prefix(cidr("10.10.7.0/28")), 30);
    }
}
