//! Addresses as users type and read them.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Result, bail};

/// An Ethernet address, `02:42:0a:0a:03:02`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// As its text, wherever it is shown as JSON.
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let Some(part) = parts.next().filter(|p| p.len() == 2) else {
                bail!("invalid MAC address {s:?}: expected six hex pairs like 02:42:0a:0a:03:02");
            };
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| anyhow::anyhow!("invalid MAC address {s:?}: {part:?} is not hex"))?;
        }
        if parts.next().is_some() {
            bail!("invalid MAC address {s:?}: more than six bytes");
        }
        Ok(Mac(mac))
    }
}

impl Mac {
    /// Docker's convention: 02:42 followed by the IPv4 address, so an endpoint's MAC is stable
    /// across restarts and readable in a capture.
    pub fn from_ip(ip: Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, 0x42, a, b, c, d])
    }
}

pub fn ip(bytes: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let mac: Mac = "02:42:0A:0a:03:02".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0x0a, 0x0a, 0x03, 0x02]);
        assert_eq!(mac.to_string(), "02:42:0a:0a:03:02");
        for bad in [
            "",
            "02:42",
            "02:42:0a:0a:03:02:01",
            "zz:42:0a:0a:03:02",
            "2:42:a:a:3:2",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_style_mac_from_ip() {
        assert_eq!(
            Mac::from_ip(Ipv4Addr::new(10, 10, 3, 2)).to_string(),
            "02:42:0a:0a:03:02"
        );
    }
}
