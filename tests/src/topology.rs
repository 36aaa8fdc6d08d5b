//! Hosts and containers in network namespaces, laid out as Docker lays them out: per host an
//! underlay interface `eth1`, a bridge per network, and per container a veth pair whose host
//! side sits on the bridge and whose other side is the container's `eth0`.
use anyhow::{Context as _, Result};
use overlay_common::{Endpoint, Network, NodeConfig, deliver, vtep};

use crate::{fixture::Node, netns::Netns};

pub const VNI: u32 = 42;
pub const PORT: u16 = 4789;
pub const OVERLAY_PREFIX: u8 = 16;
/// Overlay MTU: the underlay's 1500 less the 50 bytes of VXLAN.
pub const MTU: u32 = 1450;

pub struct Container {
    pub ns: Netns,
    /// Host-side veth name (on the host's bridge).
    pub port: String,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

impl Container {
    pub fn ip_str(&self) -> String {
        ip_str(self.ip)
    }
}

pub struct Host {
    pub ns: Netns,
    /// Our dataplane, or None for a legacy host running the kernel's vxlan device.
    pub node: Option<Node>,
    pub vtep: [u8; 4],
    pub containers: Vec<Container>,
    label: String,
}

impl Host {
    /// Runs a command in the host namespace.
    pub fn run(&self, cmd: &str) -> Result<String> {
        self.ns.run(cmd)
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("a host running our dataplane")
    }

    /// Adds a container on `bridge`, with a Docker-style MAC derived from its IP.
    pub fn add_container(&mut self, bridge: &str, ip: [u8; 4]) -> Result<&Container> {
        let n = self.containers.len() + 1;
        let name = format!("{}c{n}", self.label);
        let ns = Netns::new(&name)?;
        let mac = [0x02, 0x42, ip[0], ip[1], ip[2], ip[3]];
        // A port's shape (`ove<8 hex>`): the dataplane attaches from_container to no other.
        let port = format!("ove{n:08x}");
        self.run(&format!(
            "ip link add {port} mtu {MTU} type veth peer name eth0 netns {name} && \
             ip link set {port} master {bridge} up"
        ))?;
        ns.run(&format!(
            "ip link set eth0 address {} mtu {MTU} up && ip addr add {}/{OVERLAY_PREFIX} dev eth0",
            mac_str(mac),
            ip_str(ip)
        ))?;
        self.containers.push(Container { ns, port, mac, ip });
        Ok(self.containers.last().unwrap())
    }

    /// Attaches from_container to every container's port and registers it as a local endpoint.
    pub fn serve_containers(&mut self, vni: u32) -> Result<()> {
        let node = self.node.as_mut().context("not our dataplane")?;
        for c in &self.containers {
            let ifindex = self.ns.ifindex(&c.port)?;
            let port = c.port.clone();
            let dp = &mut node.dataplane;
            self.ns.enter(|| dp.attach_container(&port))?;
            node.maps().set_local_endpoint(Endpoint {
                ifindex,
                vni,
                mac: c.mac,
                deliver: deliver::PEER,
                ip: c.ip,
            })?;
        }
        Ok(())
    }

    /// Makes `mac`/`ip` behind `vtep` reachable from this host's containers.
    pub fn learn_remote(&self, vni: u32, mac: [u8; 6], ip: [u8; 4], vtep: [u8; 4]) -> Result<()> {
        let mut maps = self.node().maps();
        let vtep = vtep::from_v4(vtep);
        maps.set_fdb(vni, mac, vtep)?;
        maps.set_arp(vni, ip, mac)?;
        maps.set_vtep(vni, vtep)
    }
}

/// Hosts h1, h2, ... on one underlay bridge (10.0.0.<i>/24), each with forwarding on as Docker
/// sets it, and a bridge `br42` for the overlay network.
pub struct Cluster {
    pub hosts: Vec<Host>,
    /// The underlay segment: a namespace holding the bridge `ul` that every host's eth1 plugs
    /// into through a veth named h<i>; frames sent there reach host i's underlay.
    pub wire: Netns,
}

impl Cluster {
    /// `ours[i]`: host i runs our dataplane (true) or is a legacy host (false).
    pub fn new(label: &str, ours: &[bool]) -> Result<Self> {
        crate::require_root();
        let tag = crate::unique(label);
        let wire = switch(&format!("{tag}w"))?;
        let mut hosts = Vec::new();
        for (i, &is_ours) in ours.iter().enumerate() {
            let n = i + 1;
            let name = format!("{tag}h{n}");
            let ns = plug_host(&wire, &name, n)?;
            let vtep = [10, 0, 0, n as u8];
            ns.run(&format!(
                "ip link add br{VNI} type bridge && ip link set br{VNI} up"
            ))?;
            let node = if is_ours {
                let mut node = Node::load(&name)?;
                let underlay = ns.ifindex("eth1")?;
                let dp = &mut node.dataplane;
                ns.enter(|| dp.attach_underlay("eth1"))?;
                let mut maps = node.maps();
                maps.set_config(NodeConfig {
                    vtep: vtep::from_v4(vtep),
                    underlay_ifindex: underlay,
                    ipv6: 0,
                })?;
                maps.set_network(VNI, Network::new(PORT, [0; 12]))?;
                Some(node)
            } else {
                None
            };
            hosts.push(Host {
                ns,
                node,
                vtep,
                containers: Vec::new(),
                label: format!("{tag}h{n}"),
            });
        }
        Ok(Self { hosts, wire })
    }

    /// Hosts of ours, host i with containers `containers[i]` on `br<VNI>`, all served and
    /// meshed: the overlay ready to carry traffic.
    pub fn overlay(label: &str, containers: &[&[[u8; 4]]]) -> Result<Self> {
        let mut cluster = Self::new(label, &vec![true; containers.len()])?;
        for (host, ips) in cluster.hosts.iter_mut().zip(containers) {
            for ip in ips.iter() {
                host.add_container(&format!("br{VNI}"), *ip)?;
            }
            host.serve_containers(VNI)?;
        }
        cluster.mesh(VNI)?;
        Ok(cluster)
    }

    /// Tells every host of ours about every container on the other hosts.
    pub fn mesh(&self, vni: u32) -> Result<()> {
        for host in self.hosts.iter().filter(|h| h.node.is_some()) {
            for other in self.hosts.iter().filter(|o| o.vtep != host.vtep) {
                for c in &other.containers {
                    host.learn_remote(vni, c.mac, c.ip, other.vtep)?;
                }
            }
        }
        Ok(())
    }
}

/// How the underlay between the hosts behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Underlay {
    /// veth as it comes (MTU 1500): a 64 KB GSO packet crosses from host to host whole, which
    /// no NIC does.
    Veth,
    /// Like NICs on a switch, at this MTU: each host's underlay veth segments what it sends to
    /// the MTU (TSO and GSO off) and merges what it receives (NAPI GRO). veth runs GRO only
    /// when the *sending* veth has TSO off, so the switch's ports have it off too; they do not
    /// merge themselves (GRO off), as a switch does not.
    Wire { mtu: u32 },
}

impl Underlay {
    pub fn mtu(self) -> u32 {
        match self {
            Underlay::Veth => 1500,
            Underlay::Wire { mtu } => mtu,
        }
    }

    pub fn name(self) -> String {
        match self {
            Underlay::Veth => "veth underlay".into(),
            Underlay::Wire { mtu } => format!("wire-like underlay, MTU {mtu}"),
        }
    }

    pub fn key(self) -> String {
        match self {
            Underlay::Veth => "veth".into(),
            Underlay::Wire { mtu } => format!("wire{mtu}"),
        }
    }

    /// Shell commands that give `dev` this behaviour, at a host's end (`host`) or at the
    /// switch's.
    fn configure(self, dev: &str, host: bool) -> String {
        match self {
            Underlay::Veth => "true".into(),
            Underlay::Wire { mtu } => format!(
                "ip link set {dev} mtu {mtu} && ethtool -K {dev} tso off gso off gro {} >/dev/null",
                if host { "on" } else { "off" }
            ),
        }
    }
}

/// The underlay's switch: a namespace `name` with bridge `ul`, hosts plugged in by
/// [`plug_host_on`]. A switch is no firewall: bridge-netfilter (built into this kernel, on by
/// default in every namespace) is turned off here, so that the switch costs the sending CPU
/// no more than a switch's forwarding, and no mode pays a firewall a real wire does not have.
pub fn switch(name: &str) -> Result<Netns> {
    let wire = Netns::new(name)?;
    wire.run(
        // A MAC of its own: a bridge otherwise takes its lowest port's, and a host plugged in
        // later (a "world") would change the address etcd (on this bridge) answers ARP with,
        // leaving every host's ARP entry for it stale for seconds.
        "ip link add ul address 02:00:00:00:00:fe type bridge && ip link set ul up && \
         sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
         net.bridge.bridge-nf-call-arptables=0",
    )?;
    Ok(wire)
}

/// A host namespace `name` plugged into the underlay bridge `ul` of `wire`: its `eth1` is
/// 10.0.0.<n>/24 (the wire side of the veth is `h<n>`), with forwarding on as on any Docker or
/// Kubernetes node; a veth underlay.
pub fn plug_host(wire: &Netns, name: &str, n: usize) -> Result<Netns> {
    plug_host_on(wire, name, n, Underlay::Veth)
}

/// As [`plug_host`], on an underlay that behaves as `underlay` says.
pub fn plug_host_on(wire: &Netns, name: &str, n: usize, underlay: Underlay) -> Result<Netns> {
    let ns = Netns::new(name)?;
    wire.run(&format!(
        "ip link add h{n} type veth peer name eth1 netns {name} && {} && ip link set h{n} master ul up",
        underlay.configure(&format!("h{n}"), false)
    ))?;
    ns.run(&format!(
        "{} && ip link set eth1 up && ip addr add 10.0.0.{n}/24 dev eth1 && \
         sysctl -qw net.ipv4.conf.all.forwarding=1",
        underlay.configure("eth1", true)
    ))?;
    Ok(ns)
}

/// Host `n`'s IPv6 underlay address, `fd00::<n>` (beside its 10.0.0.<n>).
pub fn vtep6(n: usize) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n as u16)
}

/// Gives host `n` (plugged with [`plug_host_on`]) its IPv6 underlay address, usable at once.
pub fn add_vtep6(host: &Netns, n: usize) -> Result<()> {
    host.run(&format!("ip addr add {}/64 dev eth1 nodad", vtep6(n)))?;
    Ok(())
}

/// The options a kernel vxlan device needs over an IPv6 underlay to talk to ours: its own
/// address, and zero UDP checksums sent (as ours are) and accepted (as ours come).
pub fn kernel_vxlan_over_ipv6(local: std::net::Ipv6Addr) -> String {
    format!("local {local} udp6zerocsumtx udp6zerocsumrx")
}

pub fn ip_str(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
