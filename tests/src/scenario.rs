//! Starting points the control-plane tests share: network blue on a deployment, and two hosts
//! with agents and a container each that already reach each other.
use std::net::Ipv4Addr;

use crate::deployment::{Deployment, ping};

pub fn blue(d: &Deployment) {
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
}

pub type Container = (usize, Ipv4Addr);

/// Two hosts with agents, network blue, and a container on each that reaches the other.
pub fn blue_pair(label: &str) -> (Deployment, Container, Container) {
    let mut d = Deployment::new(label, &[true, true]).unwrap();
    blue(&d);
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    // `endpoint add` returns once its own node serves the endpoint, its port's program
    // attached (beside the underlay's) included: an unattached port drops the container's ARP
    // requests, and the kernel asks again only a second later.
    for h in &d.hosts {
        // The GRO helper's sink has a pinned link too, made when the network appeared.
        let links = h
            .pins()
            .linked()
            .unwrap()
            .into_iter()
            .filter(|name| !overlay_agent::shared::ifnames::is_gro_device(name))
            .count();
        assert_eq!(links, 2, "{}", h.log());
    }
    // The other node follows within milliseconds; a ping before that loses its ARP request.
    d.wait_arp_everywhere(42, &[c1.1, c2.1], true).unwrap();
    // The first echo also waits for the underlay's own ARP between the hosts: under the load
    // of the whole suite one second was not always enough for it, so three tries.
    assert!(
        (0..3).any(|_| ping(d.container(c1.0), c2.1)),
        "{}\n{:?}\n{}\n{:?}",
        d.hosts[0].log(),
        d.hosts[0].maps(),
        d.hosts[1].log(),
        d.hosts[1].maps()
    );
    (d, c1, c2)
}

/// Every container pings every other; returns the pairs that failed.
pub fn all_pairs(d: &Deployment, containers: &[(usize, Ipv4Addr)]) -> Vec<String> {
    let mut failed = Vec::new();
    for &(from, from_ip) in containers {
        for &(_, to) in containers.iter().filter(|(_, ip)| *ip != from_ip) {
            if !ping(d.container(from), to) {
                failed.push(format!("{from_ip} -> {to}"));
            }
        }
    }
    failed
}

/// The MAC the agent gives an endpoint (Docker's 02:42 + IPv4).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    overlay_agent::shared::net::Mac::from_ip(ip).0
}
