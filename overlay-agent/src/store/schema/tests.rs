//! The layout and the records' checks, by example.
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::shared::{ifnames, ipam::Cidr};

#[test]
fn keys_round_trip() {
    let k = Keys::new("/overlay/");
    assert_eq!(k.network("blue"), "/overlay/networks/blue");
    assert_eq!(
        k.parse(k.network("blue").as_bytes()),
        Some(Key::Network("blue".into()))
    );
    assert_eq!(
        k.parse(k.endpoint("blue", Ipv4Addr::new(10, 10, 1, 2)).as_bytes()),
        Some(Key::Endpoint {
            network: "blue".into(),
            ip: "10.10.1.2".into()
        })
    );
    let slice: Cidr = "10.10.3.0/24".parse().unwrap();
    assert_eq!(k.slice("blue", slice), "/overlay/slices/blue/10.10.3.0-24");
    assert_eq!(k.parse(b"/overlay/networks/blue/extra"), None);
    assert_eq!(k.parse(b"/overlayx/networks/blue"), None);
    assert_eq!(k.parse(b"/other/networks/blue"), None);
}

#[test]
fn networks_validate() {
    let rec = |json: &str| decode::<NetworkRecord>(json.as_bytes()).unwrap();
    let net = rec(r#"{"vni":42,"subnet":"10.10.0.0/16"}"#)
        .validate("blue")
        .unwrap();
    assert_eq!((net.port, net.slice_prefix, net.mtu), (4789, 24, None));
    assert_eq!(net.mtu_on(Some(1500), false), 1450);
    assert_eq!(net.mtu_on(Some(1500), true), 1430);
    assert_eq!(net.bridge(), "ovbr42");
    for (json, want) in [
        (r#"{"vni":16777216,"subnet":"10.10.0.0/16"}"#, "24 bits"),
        (r#"{"vni":0,"subnet":"10.10.0.0/16"}"#, "24 bits"),
        (r#"{"vni":42,"subnet":"10.10.0.0"}"#, "not a CIDR"),
        (r#"{"vni":42,"subnet":"10.10.0.0/31"}"#, "too small"),
        (r#"{"vni":42,"subnet":"10.10.0.0/16","port":0}"#, "port 0"),
        (
            r#"{"vni":42,"subnet":"10.10.0.0/16","slice_prefix":8}"#,
            "slice prefix",
        ),
    ] {
        // A subnet that is not one fails as the record is read; the rest, as it is checked.
        let err = decode::<NetworkRecord>(json.as_bytes())
            .and_then(|r| r.validate("blue"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
    assert!(decode::<NetworkRecord>(br#"{"vni":"42"}"#).is_err());
    assert!(decode::<NetworkRecord>(b"{not json").is_err());
    assert!(decode::<NetworkRecord>(&vec![b' '; 100_000]).is_err());
}

#[test]
fn endpoints_validate() {
    let rec = |json: &str| decode::<EndpointRecord>(json.as_bytes()).unwrap();
    let ep = rec(
        r#"{"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a77fa8a"}"#,
    )
    .validate("blue", "10.10.1.2")
    .unwrap();
    let host = rec(
        r#"{"kind":"host","name":"host.blue","mac":"02:42:0a:0a:01:01","node":"h1","port":"ovhp42","iface":"ovh42"}"#,
    )
    .validate("blue", "10.10.1.1")
    .unwrap();
    assert_eq!(host.record().validate("blue", "10.10.1.1").unwrap(), host);
    assert_eq!(ep.node(), Some("h1"));
    assert_eq!(ep.record().validate("blue", "10.10.1.2").unwrap(), ep);
    let peer = rec(r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#)
        .validate("blue", "10.10.9.2")
        .unwrap();
    assert_eq!(
        peer.location,
        Location::Peer {
            vtep: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))
        }
    );
    for (json, ip, want) in [
        (
            r#"{"kind":"peer","mac":"02:42:0a:0a:09:02"}"#,
            "10.10.9.2",
            "vtep",
        ),
        (
            r#"{"kind":"peer","mac":"zz","vtep":"10.0.0.9"}"#,
            "10.10.9.2",
            "MAC",
        ),
        (
            r#"{"kind":"peer","mac":"ff:ff:ff:ff:ff:ff","vtep":"10.0.0.9"}"#,
            "10.10.9.2",
            "unicast",
        ),
        (
            r#"{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"10.0.0.9"}"#,
            "10.10.9",
            "IPv4",
        ),
        (
            r#"{"kind":"container","name":"c9","mac":"02:42:0a:0a:09:02","node":"h1"}"#,
            "10.10.9.2",
            "port",
        ),
    ] {
        let err = format!("{:#}", rec(json).validate("blue", ip).unwrap_err());
        assert!(err.contains(want), "{json}: {err}");
    }
}

/// A record may name only the port its node made for it: never the underlay, `lo`, a
/// bridge, or another endpoint's port (issue 25: one such record took a node off the
/// network).
#[test]
fn a_record_names_only_its_own_port() {
    let container = |name: &str, port: &str| {
        decode::<EndpointRecord>(
            format!(
                r#"{{"kind":"container","name":"{name}","mac":"02:42:0a:47:00:fa","node":"h1","port":"{port}"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
        .validate("blue", "10.71.0.250")
    };
    container("c1", &ifnames::port_name("blue", "c1")).unwrap();
    for port in [
        "u1",
        "eth1",
        "lo",
        "ovbr42",
        "ovgro4789",
        "ovhp42",
        &ifnames::port_name("blue", "c2"),
        &ifnames::port_name("red", "c1"),
        "",
    ] {
        let err = format!("{:#}", container("c1", port).unwrap_err());
        assert!(
            err.contains("is not endpoint c1's own port"),
            "{port}: {err}"
        );
    }
    let err = format!("{:#}", container("a/b", "x").unwrap_err());
    assert!(err.contains("invalid endpoint name"), "{err}");
    let host = |port: &str, iface: &str| {
        decode::<EndpointRecord>(
            format!(
                r#"{{"kind":"host","name":"host.blue","mac":"02:42:0a:47:00:fa","node":"h1","port":"{port}","iface":"{iface}"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
        .validate("blue", "10.71.0.250")
    };
    host("ovhp42", "ovh42").unwrap();
    for (port, iface, says) in [
        ("eth1", "ovh42", "not a host port"),
        ("lo", "ovh42", "not a host port"),
        ("ovhp042", "ovh42", "not a host port"),
        (
            &ifnames::port_name("blue", "c1"),
            "ovh42",
            "not a host port",
        ),
        ("ovhp42", "eth1", "other leg"),
        ("ovhp42", "ovh43", "other leg"),
    ] {
        let err = format!("{:#}", host(port, iface).unwrap_err());
        assert!(err.contains(says), "{port} {iface}: {err}");
    }
}

#[test]
fn addresses_that_cannot_be_vteps_are_refused() {
    for good in ["10.0.0.9", "192.0.2.1", "fd00::9", "2001:db8::1"] {
        check_vtep(good.parse().unwrap()).unwrap();
    }
    for (bad, class) in [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("224.0.0.1", "multicast"),
        ("239.1.1.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("169.254.1.1", "link-local"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("ff02::1", "multicast"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.9", "IPv4-mapped"),
        ("::10.0.0.9", "IPv4-compatible"),
    ] {
        let err = check_vtep(bad.parse().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains(class) && err.contains("cannot be a VTEP"),
            "{bad}: {err}"
        );
        // From etcd too: a node's record and a peer's.
        let node = decode::<NodeRecord>(format!(r#"{{"vtep":"{bad}"}}"#).as_bytes()).unwrap();
        assert!(node.validate().is_err(), "{bad}");
        let peer = decode::<EndpointRecord>(
            format!(r#"{{"kind":"peer","mac":"02:42:0a:0a:09:02","vtep":"{bad}"}}"#).as_bytes(),
        )
        .unwrap();
        assert!(peer.validate("blue", "10.10.9.2").is_err(), "{bad}");
    }
}

#[test]
fn a_network_port_is_no_other_protocols() {
    for good in [4789, 8472, 4790, 1024, 10000, 65535] {
        check_port(good).unwrap();
    }
    for (bad, says) in [
        (0, "not a port"),
        (53, "system port"),
        (500, "system port"),
        (1023, "system port"),
        (4500, "IPsec"),
        (51820, "WireGuard"),
        (6081, "GENEVE"),
        (2379, "etcd"),
        (2380, "etcd"),
        (5353, "mDNS"),
        (5355, "LLMNR"),
        (1701, "L2TP"),
        (1194, "OpenVPN"),
        (4791, "RoCEv2"),
        (3784, "BFD"),
        (4784, "BFD"),
    ] {
        let err = check_port(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
        // A record from etcd with it is refused too.
        let rec = decode::<NetworkRecord>(
            format!(r#"{{"vni":42,"subnet":"10.10.0.0/16","port":{bad}}}"#).as_bytes(),
        )
        .unwrap();
        assert!(rec.validate("blue").is_err(), "{bad}");
    }
}

#[test]
fn names() {
    check_name("network", "blue-1.a_b").unwrap();
    for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
        assert!(check_name("network", bad).is_err(), "{bad}");
    }
}
