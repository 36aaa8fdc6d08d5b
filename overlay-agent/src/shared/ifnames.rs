//! The names of the interfaces we make, in one place: the commands make them, the validation
//! of etcd records derives them (a record may only name the port its own network and name
//! derive), the agent attaches programs only to interfaces of these shapes, link pins are
//! named after them (dataplane/pins.rs), the egress rules match them (syncs/egress.rs), the
//! lock files of an attachment are named after them (shared/lock.rs), and `teardown` removes
//! exactly them.
//!
//! Shapes: `ovbr<vni>` bridges, `ove<8 hex>` container ports (their container side is
//! `ovt<8 hex>` while still in the host), `ovh<vni>` / `ovhp<vni>` the host's own leg and its
//! bridge port (`host join`), `ovgro<port>` GRO helper devices (syncs/gro.rs keeps those).

const BRIDGE_PREFIX: &str = "ovbr";
const PORT_PREFIX: &str = "ove";
const PEER_PREFIX: &str = "ovt";
const HOST_IFACE_PREFIX: &str = "ovh";
const HOST_PORT_PREFIX: &str = "ovhp";
const GRO_PREFIX: &str = "ovgro";

/// Interface names are at most 15 bytes: a short stable hash of what names the endpoint.
/// FNV-1a in 32 bits, as since the first release: ports made before an upgrade keep the names
/// derived here.
fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{h:08x}")
}

/// The bridge a network's endpoints hang off on every node (Docker's `ov-<vni>`).
pub fn bridge(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// What matches every bridge of ours in an nft rule (`meta oifname`): a trailing `*` is nft's
/// wildcard.
pub fn bridge_glob() -> String {
    format!("{BRIDGE_PREFIX}*")
}

/// The host-side veth of container endpoint `name` of `network`: derived, so that a
/// half-made attachment can be found and removed with nothing but its names, and so that a
/// record can name no other port. 32 bits of hash can collide: the port's alias
/// ([`port_alias`]) says whose it is.
pub fn port_name(network: &str, name: &str) -> String {
    format!("{PORT_PREFIX}{}", short_hash(&format!("{network}/{name}")))
}

/// The container side of the pair while it is still in the host.
pub fn peer_name(network: &str, name: &str) -> String {
    format!("{PEER_PREFIX}{}", short_hash(&format!("{network}/{name}")))
}

/// The alias a port carries (`ip link` shows it): which endpoint it belongs to, so that a port
/// found by its derived name is removed, or attached to, only if it is that endpoint's.
pub fn port_alias(network: &str, name: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{name}")
}

const ALIAS_PREFIX: &str = "overlay endpoint ";

/// The network and endpoint name a port's alias ([`port_alias`]) says it is for.
pub fn endpoint_of_alias(alias: &str) -> Option<(&str, &str)> {
    alias.strip_prefix(ALIAS_PREFIX)?.split_once('/')
}

/// The endpoint name of the node itself on `network` (`host join`).
pub fn host_endpoint_name(network: &str) -> String {
    format!("host.{network}")
}

/// The node's own leg on the network whose VNI is `vni`: it holds the node's address.
pub fn host_iface(vni: u32) -> String {
    format!("{HOST_IFACE_PREFIX}{vni}")
}

/// The bridge side of [`host_iface`]: the port its frames enter the dataplane by.
pub fn host_port(vni: u32) -> String {
    format!("{HOST_PORT_PREFIX}{vni}")
}

/// The VNI a host port (`ovhp<vni>`) is for; None for any other name.
pub fn host_port_vni(name: &str) -> Option<u32> {
    decimal(name.strip_prefix(HOST_PORT_PREFIX)?)
}

/// The other leg of host port `port` (`ovhp<vni>` -> `ovh<vni>`, [`host_iface`]); None when
/// `port` is not a host port.
pub fn host_leg(port: &str) -> Option<String> {
    host_port_vni(port).map(host_iface)
}

/// What a host port's name looks like, for the messages that refuse another.
pub fn host_port_shape() -> String {
    format!("{HOST_PORT_PREFIX}<vni>")
}

/// The lock file (shared/lock.rs) of the endpoint whose port is `port`. At most 256 of them
/// (a byte of the port's hash): two endpoints that share one merely wait for each other. A
/// bridge's lock is named as the bridge is ([`bridge`]).
pub fn endpoint_lock(port: &str) -> String {
    format!("endpoint-{:02x}", crate::shared::hash::of(port) & 0xff)
}

/// The GRO helper device for UDP `port` (syncs/gro.rs).
pub fn gro_device(port: u16) -> String {
    format!("{GRO_PREFIX}{port}")
}

/// Whether `name` has the exact shape of a GRO helper device.
pub fn is_gro_device(name: &str) -> bool {
    name.strip_prefix(GRO_PREFIX)
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` has the shape of a port `from_container` may be attached to: a container's
/// `ove<8 hex>` or a host leg's `ovhp<vni>`. Never a bridge, a GRO helper, the host's own
/// leg, nor any interface we did not make (the underlay, `lo`).
pub fn is_port(name: &str) -> bool {
    host_port_vni(name).is_some() || hashed(name, PORT_PREFIX)
}

/// What the names [`is_port`] accepts look like, for the messages that refuse another.
pub fn port_shapes() -> String {
    format!("{PORT_PREFIX}<8 hex>, {}", host_port_shape())
}

/// Whether an interface name is one the agent's commands make. Exact shapes, so a user's
/// `overlay0` is never taken for ours.
pub fn is_our_interface(name: &str) -> bool {
    is_gro_device(name)
        || is_port(name)
        || hashed(name, PEER_PREFIX)
        || name.strip_prefix(BRIDGE_PREFIX).and_then(decimal).is_some()
        || name
            .strip_prefix(HOST_IFACE_PREFIX)
            .and_then(decimal)
            .is_some()
}

fn hashed(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A VNI as our names print it: decimal digits, no sign, no leading zero.
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_interface_names_are_ours() {
        for ours in [
            "ovbr42",
            "ove1a77fa8a",
            "ovt1a77fa8a",
            "ovh42",
            "ovhp42",
            "ovgro4789",
        ] {
            assert!(is_our_interface(ours), "{ours}");
        }
        for theirs in [
            "overlay0",
            "ovbr",
            "ove1a77fa8",
            "ovhx",
            "eth0",
            "ovh",
            "ovbr4x",
            "ovhp042",
            "ovh+4",
            "lo",
        ] {
            assert!(!is_our_interface(theirs), "{theirs}");
        }
    }

    #[test]
    fn programs_go_on_ports_only() {
        assert!(is_port(&port_name("blue", "c1")));
        assert!(is_port(&host_port(42)));
        for not_a_port in [
            "ovbr42",
            "ovh42",
            "ovgro4789",
            "ovt1a77fa8a",
            "eth1",
            "lo",
            "ovhp",
        ] {
            assert!(!is_port(not_a_port), "{not_a_port}");
        }
        assert_eq!(host_port_vni("ovhp42"), Some(42));
        assert_eq!(host_port_vni(&host_port(16_777_215)), Some(16_777_215));
        assert_eq!(host_port_vni("ovhp"), None);
        assert_eq!(host_leg(&host_port(42)), Some(host_iface(42)));
        assert_eq!(host_leg("ovhp42").as_deref(), Some("ovh42"));
        assert_eq!(host_leg("ovh42"), None);
        assert_eq!(host_leg("ovhp042"), None);
        assert_eq!(port_shapes(), "ove<8 hex>, ovhp<vni>");
        assert_eq!(host_port_shape(), "ovhp<vni>");
    }

    #[test]
    fn the_bridge_glob_matches_bridges() {
        assert_eq!(bridge_glob(), "ovbr*");
        let glob = bridge_glob();
        let prefix = glob.strip_suffix('*').unwrap();
        assert!(bridge(42).starts_with(prefix));
        assert!(!port_name("blue", "c1").starts_with(prefix));
        assert!(!host_iface(42).starts_with(prefix));
    }

    #[test]
    fn endpoint_locks_are_a_byte_of_the_port() {
        // What the release that added them derived: a CLI and a plugin of different versions
        // on one node take one lock for one endpoint.
        assert_eq!(endpoint_lock("ove1a77fa8a"), "endpoint-11");
        assert_eq!(endpoint_lock("x").len(), "endpoint-".len() + 2);
    }

    #[test]
    fn port_names_fit_and_are_stable() {
        let port = port_name("blue", "a-rather-long-container-name-1");
        assert_eq!(port.len(), 11);
        // What every release derived: ports made before an upgrade keep their names.
        assert_eq!(port_name("blue", "c1"), "ove1a77fa8a");
        assert_ne!(port_name("blue", "c1"), port_name("blue", "c2"));
        assert_ne!(port_name("blue", "c1"), port_name("red", "c1"));
    }

    #[test]
    fn gro_device_names_have_one_shape() {
        assert_eq!(gro_device(4789), "ovgro4789");
        assert!(
            is_gro_device(&gro_device(4789))
                && is_gro_device(&gro_device(65535))
                && is_gro_device("ovgro1")
        );
        for other in [
            "ovgro",
            "ovgro4789x",
            "ovgro123456",
            "xovgro4789",
            "ovbr4789",
        ] {
            assert!(!is_gro_device(other), "{other}");
        }
    }
}
