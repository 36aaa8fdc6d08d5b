//! BPF_PROG_TEST_RUN through the real compiled programs, published ports (nodeport.rs) on
//! both underlay families, exact bytes: a client's TCP segment to this node's address and a
//! published port rewritten to its backend (remote: encapsulated; local: delivered), and the
//! local backend's reply rewritten to come from the address and port the client asked, every
//! checksum still right. A test run's packet carries its checksum in full (no offload), so a
//! wrong incremental update shows here, where a veth would hide it.
use overlay_common::{
    BACKEND_HEALTHY, Backend, BackendKey, Counter, PUBLISHED_MAC_PREFIX, PublishedKey, Service,
    ServiceKey,
};
use overlay_tests::{
    fixture::TC_ACT_REDIRECT,
    lab::*,
    packet::{self, ETH_P_IP, ETH_P_IPV6},
    per_family,
};
use std::collections::BTreeMap;

const PUBLISHED: u16 = 30080;
const TARGET: u16 = 80;
const CLIENT_PORT: u16 = 40000;
const VIP: [u8; 4] = [10, 10, 255, 254];
/// The outside client: 10.0.0.200 or fd00::c8.
const CLIENT4: [u8; 4] = [10, 0, 0, 200];
const CLIENT6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc8];
/// The gateway's MAC a container's reply is addressed to (no endpoint's).
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// Service port VIP:80/tcp of VNI 42 with one backend, `backend`, published on 30080/tcp.
fn publish_to(lab: &Lab, backend: [u8; 4]) {
    let key = ServiceKey::new(VNI, VIP, TARGET, 6);
    let mut maps = lab.node.maps();
    maps.sync_services(
        &BTreeMap::from([(key, Service { id: 7, count: 1 })]),
        &BTreeMap::from([(
            BackendKey {
                service: 7,
                slot: 0,
            },
            Backend::new(backend, TARGET, BACKEND_HEALTHY),
        )]),
    )
    .unwrap();
    maps.sync_published(&BTreeMap::from([(PublishedKey::new(PUBLISHED, 6), key)]))
        .unwrap();
}

/// A TCP segment with a right checksum, 20 bytes of header and `payload`.
fn tcp(addresses: &[u8], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = packet::l4_checksum(addresses, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An IP packet of `family` from `src` to `dst` carrying `segment`, in an Ethernet frame.
fn frame(
    family: Family,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: &[u8],
    dst: &[u8],
    segment: &[u8],
) -> Vec<u8> {
    match family {
        Family::Ipv4 => packet::eth(
            dst_mac,
            src_mac,
            ETH_P_IP,
            &packet::ipv4(
                src.try_into().unwrap(),
                dst.try_into().unwrap(),
                6,
                0,
                segment,
            ),
        ),
        Family::Ipv6 => packet::eth(
            dst_mac,
            src_mac,
            ETH_P_IPV6,
            &packet::ipv6(
                src.try_into().unwrap(),
                dst.try_into().unwrap(),
                6,
                64,
                segment,
            ),
        ),
    }
}

/// The addresses, the TCP segment and the IP header length of the IP packet at `ip`.
fn parts(family: Family, ip: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    match family {
        Family::Ipv4 => {
            assert_eq!(
                packet::checksum(&ip[..20]),
                0,
                "the IPv4 header checksum verifies"
            );
            (ip[12..16].to_vec(), ip[16..20].to_vec(), ip[20..].to_vec())
        }
        Family::Ipv6 => (ip[8..24].to_vec(), ip[24..40].to_vec(), ip[40..].to_vec()),
    }
}

/// The client's address, this node's, and a backend's (IPv6: in VNI 42's prefix).
fn addresses(family: Family, backend: [u8; 4]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    match family {
        Family::Ipv4 => (CLIENT4.to_vec(), LOCAL_VTEP.to_vec(), backend.to_vec()),
        Family::Ipv6 => (
            CLIENT6.to_vec(),
            LOCAL_VTEP6.to_vec(),
            global(backend).to_vec(),
        ),
    }
}

per_family! {
    /// To a remote backend: the client's segment, its destination now the backend's address
    /// and port, encapsulated to the backend's VTEP with the inner source MAC naming the
    /// published port; the payload and every other byte as the client sent them.
    fn a_published_port_reaches_a_remote_backend_in_exact_bytes(family) {
        let mut lab = family.lab("pubr");
        publish_to(&lab, C2_IP);
        let (client, node, backend) = addresses(family, C2_IP);
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let seg = tcp(&[client.clone(), node.clone()].concat(), CLIENT_PORT, PUBLISHED, payload);
        let sent = frame(family, UNDERLAY_MAC, NEXT_HOP_MAC, &client, &node, &seg);
        let v = lab.expect("client -> node:30080", Underlay, &sent, TC_ACT_REDIRECT, Counter::PublishedIn);
        let inner = &v.frame[family.vxlan_at() + 8..];
        assert_eq!(inner[0..6], C2_MAC, "to the backend's MAC");
        let [p0, p1] = PUBLISHED.to_be_bytes();
        assert_eq!(inner[6..12], [PUBLISHED_MAC_PREFIX.as_slice(), &[p0, p1]].concat(), "marked");
        let (src, dst, l4) = parts(family, &inner[14..]);
        assert_eq!((src, dst.clone()), (client.clone(), backend.clone()), "to the backend's address");
        assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), CLIENT_PORT, "the client's port");
        assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), TARGET, "to the service's port");
        assert_eq!(packet::l4_checksum(&[client, dst].concat(), 6, &l4), 0, "the TCP checksum verifies");
        assert_eq!(&l4[20..], payload);
    }
}

per_family! {
    /// To a local backend, delivered into it; its reply leaves for the client from this
    /// node's address and the published port (direct server return), checksums right.
    fn a_local_backend_is_reached_and_its_reply_comes_from_the_published_port(family) {
        let mut lab = family.lab("publ");
        publish_to(&lab, C1_IP);
        let (client, node, backend) = addresses(family, C1_IP);
        let seg = tcp(&[client.clone(), node.clone()].concat(), CLIENT_PORT, PUBLISHED, b"ping");
        let sent = frame(family, UNDERLAY_MAC, NEXT_HOP_MAC, &client, &node, &seg);
        let v = lab.expect("client -> node:30080", Underlay, &sent, TC_ACT_REDIRECT, Counter::PublishedIn);
        assert_eq!(v.frame[0..6], C1_MAC, "into the backend");
        let (src, dst, l4) = parts(family, &v.frame[14..]);
        assert_eq!((src, dst.clone()), (client.clone(), backend.clone()));
        assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), TARGET);
        assert_eq!(packet::l4_checksum(&[client.clone(), dst].concat(), 6, &l4), 0, "inbound checksum");

        let seg = tcp(&[backend.clone(), client.clone()].concat(), TARGET, CLIENT_PORT, b"pong");
        let reply = frame(family, GATEWAY_MAC, C1_MAC, &backend, &client, &seg);
        let vc1 = lab.vc1;
        let v = lab.expect("backend -> client", Container(vc1), &reply, TC_ACT_REDIRECT, Counter::PublishedReply);
        let (src, dst, l4) = parts(family, &v.frame[14..]);
        assert_eq!((src.clone(), dst), (node.clone(), client.clone()), "from the node's address");
        assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), PUBLISHED, "from the published port");
        assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), CLIENT_PORT);
        assert_eq!(packet::l4_checksum(&[src, client].concat(), 6, &l4), 0, "reply checksum");
        assert_eq!(&l4[20..], b"pong");
    }
}
