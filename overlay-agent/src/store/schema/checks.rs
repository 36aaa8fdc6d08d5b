//! The checks every name, VNI, port and VTEP meets, wherever it comes from (a command or a
//! record read from etcd).
use std::net::IpAddr;

use anyhow::{Result, bail, ensure};

use super::MAX_VNI;

/// Names of networks, nodes and endpoints become key segments and interface-name inputs.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ensure!(
        ok,
        "invalid {what} name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
    );
    Ok(())
}

pub fn check_vni(vni: u32) -> Result<()> {
    ensure!(
        (1..=MAX_VNI).contains(&vni),
        "VNI {vni} is out of range: a VXLAN network identifier has 24 bits (1-{MAX_VNI})"
    );
    Ok(())
}

/// UDP ports a network may not use although they are free here: another protocol's
/// well-known port (IANA), which a host or a firewall on the path treats as that protocol's.
/// VXLAN's own 4789 and Linux's default 8472 are the ports to use.
const OTHER_PROTOCOLS_PORTS: &[(u16, &str)] = &[
    (1194, "OpenVPN"),
    (1701, "L2TP"),
    (1812, "RADIUS"),
    (1813, "RADIUS accounting"),
    (2049, "NFS"),
    (2152, "GTP-U"),
    (2379, "etcd's client"),
    (2380, "etcd's peer"),
    (3478, "STUN/TURN"),
    (3784, "BFD"),
    (3785, "BFD echo"),
    (4500, "IPsec NAT traversal (IKE)"),
    (4784, "BFD multihop"),
    (4791, "RoCEv2"),
    (5060, "SIP"),
    (5353, "mDNS"),
    (5355, "LLMNR"),
    (6081, "GENEVE"),
    (8285, "flannel's UDP backend"),
    (51820, "WireGuard"),
];

/// A network's VXLAN UDP port: not 0, not a system port (below 1024: DNS, NTP, IKE's 500, ...),
/// not another protocol's well-known port.
pub fn check_port(port: u16) -> Result<()> {
    ensure!(port != 0, "UDP port 0 is not a port");
    ensure!(
        port >= 1024,
        "UDP port {port} is a system port (below 1024, another protocol's); VXLAN uses 4789"
    );
    if let Some((_, what)) = OTHER_PROTOCOLS_PORTS.iter().find(|(p, _)| *p == port) {
        bail!("UDP port {port} is {what}'s; VXLAN uses 4789 (or Linux's default, 8472)");
    }
    Ok(())
}

/// Whether `vtep` can be a tunnel endpoint: a unicast address of one host that packets can be
/// sent to and come from. A node's or a peer's VTEP that is not would make every node send its
/// traffic (and flood copies) to the broadcast address, a multicast group, itself, ...
pub fn check_vtep(vtep: IpAddr) -> Result<()> {
    let class = match vtep {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            if first == 0 {
                "unspecified (0.0.0.0/8, \"this network\")"
            } else if v4.is_loopback() {
                "a loopback address"
            } else if v4.is_broadcast() {
                "the broadcast address"
            } else if v4.is_multicast() {
                "a multicast address"
            } else if first >= 240 {
                "reserved (240.0.0.0/4)"
            } else if v4.is_link_local() {
                "link-local (169.254.0.0/16)"
            } else {
                return Ok(());
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                "unspecified"
            } else if v6.is_loopback() {
                "a loopback address"
            } else if v6.is_multicast() {
                "a multicast address"
            } else if v6.is_unicast_link_local() {
                "link-local (fe80::/10)"
            } else if v6.to_ipv4_mapped().is_some() {
                "an IPv4-mapped IPv6 address (give the IPv4 address itself)"
            } else if v6.segments()[..6] == [0; 6] {
                "an IPv4-compatible IPv6 address (deprecated; give the IPv4 address itself)"
            } else {
                return Ok(());
            }
        }
    };
    bail!("{vtep} cannot be a VTEP: it is {class}")
}

pub(super) fn default_port() -> u16 {
    overlay_common::wire::DEFAULT_VXLAN_PORT
}
