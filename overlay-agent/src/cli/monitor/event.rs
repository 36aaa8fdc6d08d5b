//! What a monitor event says, decoded from the bytes the program captured. Pure: no kernel, no
//! maps; the hook and the outcome say where the captured bytes start.
use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use overlay_common::{
    Counter,
    monitor::{MonitorEvent, SockLbRecord, hook},
    wire,
};
use serde::Serialize;

use crate::shared::net::Mac;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// One event, every field the captured bytes (or the program) could tell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// `drop` or `trace`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The counter the outcome moved: a drop reason, or what was done with the packet (None: an
    /// index this build does not know). Shown by its name.
    #[serde(rename = "reason", serialize_with = "counter_name")]
    pub counter: Option<Counter>,
    pub hook: &'static str,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// The packet's length when it was seen.
    pub len: u32,
    /// `CLOCK_MONOTONIC` when it was seen.
    pub ktime_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer: Option<Outer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<Inner>,
    /// True when the packet ended before the headers we looked for.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// A socket load-balancing decision (hook `sock-lb`): no packet, the addresses instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketDecision>,
}

/// What a socket asked for and what it was given.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SocketDecision {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The service address connect() or sendmsg() named.
    pub service: SocketAddr,
    /// The backend it goes to instead; None: no healthy backend, the call refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<SocketAddr>,
}

fn proto_name(proto: u8) -> String {
    match proto {
        wire::IPPROTO_TCP => "tcp".into(),
        wire::IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// A [`SockLbRecord`] as the socket hook wrote it into an event's data.
fn socket_decision(data: &[u8]) -> Option<SocketDecision> {
    if data.len() < size_of::<SockLbRecord>() {
        return None;
    }
    // SAFETY: the length is checked; the record is plain bytes, read unaligned.
    let r: SockLbRecord = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let addr = |bytes: [u8; 16], port_be: u16| -> SocketAddr {
        let ip = match r.family {
            6 => IpAddr::V6(Ipv6Addr::from(bytes)),
            _ => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        };
        SocketAddr::new(ip, u16::from_be(port_be))
    };
    Some(SocketDecision {
        proto: proto_name(r.proto),
        service: addr(r.vip, r.vip_port_be),
        backend: (r.backend != [0; 16]).then(|| addr(r.backend, r.backend_port_be)),
    })
}

/// The underlay headers of a VXLAN packet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outer {
    pub src_vtep: IpAddr,
    pub dst_vtep: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
}

/// The overlay frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inner {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub ethertype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp-request`, `arp-reply`, or the protocol's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
}

/// Whether the captured bytes start with the underlay's headers: everything `from_underlay`
/// reports is seen before decapsulation (decap and decap_flood report themselves before they
/// strip the outer headers), and an encapsulation is reported after it.
fn starts_outer(hook: u8, counter: Option<Counter>) -> bool {
    hook == hook::FROM_UNDERLAY || counter == Some(Counter::Encap)
}

/// Decodes `raw`. `vni_of_port`: the VNI of the endpoint whose port an event without outer
/// headers arrived on (the program knows it, the bytes do not).
pub fn decode(raw: &MonitorEvent, mut vni_of_port: impl FnMut(u32) -> Option<u32>) -> Event {
    let counter = Counter::from_index(raw.counter);
    let data = &raw.data[..usize::from(raw.captured).min(raw.data.len())];
    let mut event = Event {
        kind: if counter.is_some_and(Counter::is_drop) {
            "drop"
        } else {
            "trace"
        },
        counter,
        hook: hook::name(raw.hook),
        ifindex: raw.ifindex,
        iface: None,
        len: raw.len,
        ktime_ns: raw.time_ns,
        vni: None,
        outer: None,
        inner: None,
        truncated: false,
        socket: None,
    };
    if raw.hook == hook::SOCK_LB {
        event.socket = socket_decision(data);
        event.truncated = event.socket.is_none();
        return event;
    }
    let inner_at = if starts_outer(raw.hook, counter) {
        match outer(data) {
            Some((outer, vni, at)) => {
                event.outer = Some(outer);
                event.vni = vni;
                at
            }
            None => {
                event.truncated = true;
                return event;
            }
        }
    } else {
        if raw.hook == hook::FROM_CONTAINER {
            event.vni = vni_of_port(raw.ifindex);
        }
        Some(0)
    };
    match inner_at.map(|at| inner(&data[at.min(data.len())..])) {
        Some(Some((inner, complete))) => {
            event.inner = Some(inner);
            event.truncated = !complete;
        }
        Some(None) => event.truncated = true,
        // Outer headers that are not VXLAN (an underlay fragment, IP options): nothing inside.
        None => {}
    }
    event
}

/// Outer Ethernet, IPv4 or IPv6, UDP and VXLAN: the VTEPs, the VNI and where the inner frame
/// starts (None when the packet is not UDP right past the IP header; the end of the capture when
/// it is cut short before the inner frame). None: not even Ethernet + an IP header.
fn outer(d: &[u8]) -> Option<(Outer, Option<u32>, Option<usize>)> {
    let ip = d.get(14..)?;
    let (src, dst, udp, is_udp) = match be16(d, 12) {
        wire::ETH_P_IP if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let later_fragment = be16(ip, 6) & 0x1fff != 0;
            let udp = ip[9] == wire::IPPROTO_UDP && ihl >= 20 && !later_fragment;
            let a = |i: usize| Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
            (IpAddr::V4(a(12)), IpAddr::V4(a(16)), 14 + ihl, udp)
        }
        // Extension headers are not followed: our VTEPs and Linux's send none.
        wire::ETH_P_IPV6 if ip.len() >= 40 => {
            let a = |i: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[i..i + 16]).unwrap());
            (
                IpAddr::V6(a(8)),
                IpAddr::V6(a(24)),
                14 + 40,
                ip[6] == wire::IPPROTO_UDP,
            )
        }
        _ => return None,
    };
    let mut outer = Outer {
        src_vtep: src,
        dst_vtep: dst,
        src_port: None,
        dst_port: None,
    };
    if !is_udp {
        return Some((outer, None, None));
    }
    if d.len() < udp + 8 {
        return Some((outer, None, Some(d.len())));
    }
    outer.src_port = Some(be16(d, udp));
    outer.dst_port = Some(be16(d, udp + 2));
    let vxlan = udp + 8;
    if d.len() < vxlan + 8 {
        return Some((outer, None, Some(d.len())));
    }
    let vni = u32::from_be_bytes([0, d[vxlan + 4], d[vxlan + 5], d[vxlan + 6]]);
    Some((outer, Some(vni), Some(vxlan + 8)))
}

/// The inner frame, and whether everything it promised (L3 addresses, ports) was captured.
fn inner(d: &[u8]) -> Option<(Inner, bool)> {
    if d.len() < 14 {
        return None;
    }
    let ethertype = be16(d, 12);
    let mut inner = Inner {
        dst_mac: Mac(d[0..6].try_into().unwrap()),
        src_mac: Mac(d[6..12].try_into().unwrap()),
        ethertype: match ethertype {
            wire::ETH_P_IP => "ipv4".into(),
            wire::ETH_P_IPV6 => "ipv6".into(),
            wire::ETH_P_ARP => "arp".into(),
            other => format!("{other:#06x}"),
        },
        src_ip: None,
        dst_ip: None,
        proto: None,
        src_port: None,
        dst_port: None,
    };
    let l3 = &d[14..];
    let (proto, l4) = match ethertype {
        wire::ETH_P_IP => {
            if l3.len() < 20 {
                return Some((inner, false));
            }
            inner.src_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15])));
            inner.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19])));
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            // A later fragment has no ports.
            let l4 = (be16(l3, 6) & 0x1fff == 0 && ihl >= 20).then_some(ihl);
            (l3[9], l4)
        }
        wire::ETH_P_IPV6 => {
            if l3.len() < 40 {
                return Some((inner, false));
            }
            let addr = |at: usize| {
                let b: [u8; 16] = l3[at..at + 16].try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(b))
            };
            inner.src_ip = Some(addr(8));
            inner.dst_ip = Some(addr(24));
            (l3[6], Some(40))
        }
        wire::ETH_P_ARP => {
            if l3.len() < 28 {
                return Some((inner, false));
            }
            inner.proto = Some(match be16(l3, 6) {
                wire::ARP_OP_REQUEST => "arp-request".into(),
                wire::ARP_OP_REPLY => "arp-reply".into(),
                op => format!("arp-op-{op}"),
            });
            inner.src_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[14], l3[15], l3[16], l3[17])));
            inner.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[24], l3[25], l3[26], l3[27])));
            return Some((inner, true));
        }
        _ => return Some((inner, true)),
    };
    inner.proto = Some(proto_name(proto));
    let mut complete = true;
    if let Some(at) = l4
        && matches!(proto, wire::IPPROTO_TCP | wire::IPPROTO_UDP)
    {
        if l3.len() >= at + 4 {
            inner.src_port = Some(be16(l3, at));
            inner.dst_port = Some(be16(l3, at + 2));
        } else {
            complete = false;
        }
    }
    Some((inner, complete))
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn counter_name<S: serde::Serializer>(c: &Option<Counter>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(reason(*c))
}

fn reason(c: Option<Counter>) -> &'static str {
    c.map_or("unknown", Counter::name)
}

impl Event {
    /// The outcome's name, as the JSON and the counters call it.
    pub fn reason(&self) -> &'static str {
        reason(self.counter)
    }

    /// One line for people: when, what, where, then outer and inner headers.
    pub fn line(&self, wall: &str) -> String {
        let mut out = format!(
            "{wall} {:<5} {:<18} {:<14} {}",
            self.kind,
            self.reason(),
            self.hook,
            self.iface
                .clone()
                .unwrap_or_else(|| self.ifindex.to_string())
        );
        if let Some(vni) = self.vni {
            out += &format!(" vni {vni}");
        }
        if let Some(o) = &self.outer {
            out += &format!(" vtep {} -> {}", o.src_vtep, o.dst_vtep);
            if let (Some(s), Some(d)) = (o.src_port, o.dst_port) {
                out += &format!(" udp {s} -> {d}");
            }
            out += " |";
        }
        if let Some(s) = &self.socket {
            match s.backend {
                Some(b) => out += &format!(" {} {} -> backend {b}", s.proto, s.service),
                None => {
                    out += &format!(" {} {} -> no healthy backend, refused", s.proto, s.service)
                }
            }
        }
        if let Some(i) = &self.inner {
            out += &format!(" {} -> {} {}", i.src_mac, i.dst_mac, i.ethertype);
            if let (Some(s), Some(d)) = (i.src_ip, i.dst_ip) {
                match (i.src_port, i.dst_port) {
                    (Some(sp), Some(dp)) => {
                        out += &format!(" {}:{sp} -> {}:{dp}", Sock(s), Sock(d))
                    }
                    _ => out += &format!(" {s} -> {d}"),
                }
            }
            if let Some(p) = &i.proto {
                out += &format!(" {p}");
            }
        }
        if self.truncated {
            out += " (truncated)";
        }
        out + &format!(" len {}", self.len)
    }
}

/// An address as it prefixes a port: IPv6 in brackets.
struct Sock(IpAddr);

impl std::fmt::Display for Sock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "[{a}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use overlay_common::monitor::CAPTURE_LEN;

    use super::*;

    fn raw(hook: u8, counter: Counter, bytes: &[u8]) -> MonitorEvent {
        let mut data = [0; CAPTURE_LEN];
        let n = bytes.len().min(CAPTURE_LEN);
        data[..n].copy_from_slice(&bytes[..n]);
        MonitorEvent {
            time_ns: 1,
            len: bytes.len() as u32,
            ifindex: 7,
            counter: counter as u32,
            hook,
            _pad: 0,
            captured: n as u16,
            data,
        }
    }

    fn eth(dst: u8, src: u8, ethertype: u16) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src];
        v.extend(ethertype.to_be_bytes());
        v
    }

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, wire::IPPROTO_UDP, 0, 0];
        v.extend(src);
        v.extend(dst);
        v.extend(sport.to_be_bytes());
        v.extend(dport.to_be_bytes());
        v.extend([0, 8, 0, 0]);
        v
    }

    fn vxlan_packet(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut v = eth(1, 2, wire::ETH_P_IP);
        v.extend(ipv4_udp([10, 0, 0, 66], [10, 0, 0, 2], 40000, 4789));
        v.extend([0x08, 0, 0, 0]);
        v.extend(&vni.to_be_bytes()[1..]);
        v.push(0);
        v.extend(inner);
        v
    }

    #[test]
    fn a_socket_decision_shows_the_service_and_its_backend_or_none() {
        let mut r = SockLbRecord {
            family: 4,
            proto: wire::IPPROTO_TCP,
            vip_port_be: 80u16.to_be(),
            backend_port_be: 8080u16.to_be(),
            ..Default::default()
        };
        r.vip[..4].copy_from_slice(&[10, 10, 255, 10]);
        r.backend[..4].copy_from_slice(&[10, 10, 1, 2]);
        let mut raw = raw(hook::SOCK_LB, Counter::LbBalanced, &[]);
        // SAFETY: data is CAPTURE_LEN bytes, more than the record.
        unsafe { std::ptr::write_unaligned(raw.data.as_mut_ptr().cast(), r) };
        raw.captured = size_of::<SockLbRecord>() as u16;
        let e = decode(&raw, |_| None);
        assert_eq!((e.hook, e.reason()), ("sock-lb", "lb_balanced"));
        assert!(
            e.line("t")
                .contains(" tcp 10.10.255.10:80 -> backend 10.10.1.2:8080"),
            "{}",
            e.line("t")
        );
        r.backend = [0; 16];
        unsafe { std::ptr::write_unaligned(raw.data.as_mut_ptr().cast(), r) };
        raw.counter = Counter::LbNoBackend as u32;
        let e = decode(&raw, |_| None);
        assert_eq!(e.socket.as_ref().unwrap().backend, None);
        assert!(
            e.line("t").contains("no healthy backend, refused"),
            "{}",
            e.line("t")
        );
    }

    #[test]
    fn a_vxlan_drop_names_vteps_vni_macs_addresses_and_ports() {
        let mut frame = eth(0x0b, 0x0a, wire::ETH_P_IP);
        frame.extend(ipv4_udp([10, 1, 0, 2], [10, 1, 0, 3], 5353, 53));
        let e = decode(
            &raw(
                hook::FROM_UNDERLAY,
                Counter::DropUnknownVni,
                &vxlan_packet(99, &frame),
            ),
            |_| None,
        );
        assert_eq!(
            (e.kind, e.reason(), e.vni),
            ("drop", "drop_unknown_vni", Some(99))
        );
        let o = e.outer.clone().unwrap();
        assert_eq!(o.src_vtep, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66)));
        assert_eq!(o.dst_port, Some(4789));
        let i = e.inner.clone().unwrap();
        assert_eq!(i.src_mac.to_string(), "02:00:00:00:00:0a");
        assert_eq!(i.dst_ip, Some("10.1.0.3".parse().unwrap()));
        assert_eq!((i.src_port, i.dst_port), (Some(5353), Some(53)));
        assert_eq!(i.proto.as_deref(), Some("udp"));
        assert!(!e.truncated);
        let line = e.line("t");
        assert!(line.contains("vni 99 vtep 10.0.0.66 -> 10.0.0.2"), "{line}");
        assert!(line.contains("10.1.0.2:5353 -> 10.1.0.3:53 udp"), "{line}");
    }

    #[test]
    fn an_ipv6_underlay_packet_names_its_vteps_and_vni() {
        let mut inner = eth(0x0b, 0x0a, wire::ETH_P_IP);
        inner.extend(ipv4_udp([10, 1, 0, 2], [10, 1, 0, 3], 5353, 53));
        let mut v = eth(1, 2, wire::ETH_P_IPV6);
        let len = (8 + 8 + inner.len()) as u16;
        v.extend([0x60, 0, 0, 0]);
        v.extend(len.to_be_bytes());
        v.extend([wire::IPPROTO_UDP, 64]);
        v.extend("fd00::66".parse::<Ipv6Addr>().unwrap().octets());
        v.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v.extend(40000u16.to_be_bytes());
        v.extend(4789u16.to_be_bytes());
        v.extend(len.to_be_bytes());
        v.extend([0, 0]);
        v.extend([0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
        v.extend(&inner);
        let e = decode(&raw(hook::FROM_UNDERLAY, Counter::Decap, &v), |_| None);
        assert_eq!(e.vni, Some(42));
        let o = e.outer.clone().unwrap();
        assert_eq!(o.src_vtep, "fd00::66".parse::<IpAddr>().unwrap());
        assert_eq!((o.src_port, o.dst_port), (Some(40000), Some(4789)));
        assert_eq!(e.inner.unwrap().dst_ip, Some("10.1.0.3".parse().unwrap()));
        assert!(!e.truncated);
    }

    #[test]
    fn a_container_frame_takes_its_vni_from_the_port() {
        let mut frame = eth(0x0b, 0x0a, wire::ETH_P_ARP);
        frame.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend([2, 0, 0, 0, 0, 0x0a, 10, 1, 0, 9]);
        frame.extend([0, 0, 0, 0, 0, 0, 10, 1, 0, 3]);
        let e = decode(
            &raw(hook::FROM_CONTAINER, Counter::DropSpoofedIp, &frame),
            |ifindex| (ifindex == 7).then_some(42),
        );
        assert_eq!(e.vni, Some(42));
        assert!(e.outer.is_none());
        let i = e.inner.unwrap();
        assert_eq!(i.proto.as_deref(), Some("arp-request"));
        assert_eq!(i.src_ip, Some("10.1.0.9".parse().unwrap()));
    }

    #[test]
    fn short_and_garbage_captures_decode_to_what_is_there() {
        for len in 0..80 {
            let packet = vxlan_packet(5, &eth(1, 2, wire::ETH_P_IPV6));
            let bytes = &packet[..len.min(packet.len())];
            for hook in [hook::FROM_UNDERLAY, hook::FROM_CONTAINER, hook::GRO_SINK, 9] {
                let e = decode(&raw(hook, Counter::DropTooShort, bytes), |_| None);
                assert_eq!(e.kind, "drop");
                let _ = e.line("t");
            }
        }
        let packet = vxlan_packet(5, &eth(1, 2, wire::ETH_P_IP));
        for cut in [42, 45, 50, 57, 63] {
            let e = decode(
                &raw(hook::FROM_UNDERLAY, Counter::DropTooShort, &packet[..cut]),
                |_| None,
            );
            assert!(
                e.truncated && e.outer.is_some() && e.inner.is_none(),
                "{cut}: {e:?}"
            );
        }
        let mut garbage = raw(hook::FROM_UNDERLAY, Counter::Decap, &[0xff; 128]);
        garbage.counter = 9999;
        garbage.captured = 9999;
        let e = decode(&garbage, |_| None);
        assert_eq!((e.kind, e.reason()), ("trace", "unknown"));
    }
}
