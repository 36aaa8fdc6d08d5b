//! Dual-stack networks through the agents: containers get an IPv6 address next to their IPv4
//! one, reach each other over IPv6 on one host and across hosts, and their neighbour
//! solicitations for each other are answered on their own host, so none crosses the underlay.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use overlay_common::Counter;
use overlay_tests::{
    deployment::{Deployment, wait_for},
    netns::captured,
    transfer,
};

/// What the agent derives: fd00:10::/64 followed by the IPv4 address.
fn v6(ip: Ipv4Addr) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0xfd, 0, 0, 0x10]);
    a[12..].copy_from_slice(&ip.octets());
    Ipv6Addr::from(a)
}

fn counter(d: &Deployment, host: usize, c: Counter) -> u64 {
    d.hosts[host].counters().unwrap()[c.name()]
}

type Container = (usize, Ipv4Addr);

/// Two hosts on a dual-stack network blue (VNI 42, fd00:10::/64): a1 and a3 on the first, a2
/// on the second, known everywhere.
fn three_containers(label: &str) -> (Deployment, Container, Container, Container) {
    let mut d = Deployment::new(label, &[true, true]).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a3 = d.add_container(0, "a3", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[a1.1, a2.1, a3.1], true)
        .unwrap();
    (d, a1, a3, a2)
}

#[test]
fn dual_stack_containers_reach_each_other_over_ipv6_and_ndp_stays_on_the_host() {
    let (d, a1, a3, a2) = three_containers("ds");
    let c1 = d.container(a1.0);
    let addrs = c1.run("ip -6 -o addr show dev eth0 scope global").unwrap();
    assert!(
        addrs.contains(&format!("{}/64", v6(a1.1))),
        "a1's IPv6 address: {addrs}"
    );
    let ls = d.cli(0, &["endpoint", "ls"]).unwrap();
    assert!(ls.contains(&v6(a2.1).to_string()), "endpoint ls:\n{ls}");

    // No solicitation for a known address may leave h1 (the first ping of each resolves): h2's
    // underlay sees no VXLAN carrying one for an address in fd00:10::/64 (inner IPv6 at UDP
    // offset 28, ICMPv6 type at 70, its target at 78). Other IPv6 multicast (router
    // solicitations, MLD, duplicate address detection of link-local addresses) may flood
    // meanwhile, as it should.
    let solicitations = d.hosts[1]
        .ns
        .capture_on(
            "eth1",
            "udp port 4789 and udp[28:2] = 0x86dd and udp[70] = 135 and udp[78:4] = 0xfd000010",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let answers = counter(&d, 0, Counter::NdpReply);
    for (to, what) in [(a2.1, "across hosts"), (a3.1, "on one host")] {
        wait_for(Duration::from_secs(5), || {
            c1.run(&format!("ping -6 -c 1 -W 1 {}", v6(to))).is_ok()
        })
        .unwrap_or_else(|_| panic!("a1 pings {} {what}", v6(to)));
    }
    let seen = captured(solicitations);
    assert!(
        seen.trim().is_empty(),
        "solicitations crossed to h2:\n{seen}"
    );
    assert!(
        counter(&d, 0, Counter::NdpReply) >= answers + 2,
        "a1's solicitations for a2 and a3 answered on h1"
    );
    let neigh = c1.run("ip -6 neigh show dev eth0").unwrap();
    assert!(
        neigh.contains(&format!("{} lladdr {}", v6(a2.1), mac_of(&d, a2.0))),
        "a1's neighbour table:\n{neigh}"
    );

    // TCP over IPv6, exact bytes, both ways across hosts and on one host.
    for (from, to, to_ip, port) in [
        (a1.0, a2.0, a2.1, 5001),
        (a2.0, a1.0, a1.1, 5002),
        (a1.0, a3.0, a3.1, 5003),
    ] {
        transfer::exact(d.container(from), d.container(to), v6(to_ip), port, 16)
            .unwrap_or_else(|e| panic!("TCP to {}: {e:#}", v6(to_ip)));
    }

    // A container sending as another's IPv6 address is refused and counted.
    let before = counter(&d, 0, Counter::DropSpoofedIp);
    c1.run(&format!(
        "ip -6 addr add {}/128 dev eth0 nodad && ping -6 -c 1 -W 1 -I {} {} || true",
        v6(a3.1),
        v6(a3.1),
        v6(a2.1)
    ))
    .unwrap();
    assert!(counter(&d, 0, Counter::DropSpoofedIp) > before);
}

/// The MAC of container `c`, as its interface has it.
fn mac_of(d: &Deployment, c: usize) -> String {
    d.container(c)
        .run("cat /sys/class/net/eth0/address")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_flood_of_solicitations_is_answered_or_counted_and_breaks_nothing() {
    let mut d = Deployment::new("dsf", &[true, true]).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    let a1 = d.add_container(0, "a1", "blue", None).unwrap();
    let a2 = d.add_container(1, "a2", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[a1.1, a2.1], true).unwrap();
    let before = d.hosts[0].counters().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ndp_flood.py");
    let out = d
        .container(a1.0)
        .run(&format!(
            "python3 {script} {} {} fd00:10::dead:beef 20000",
            v6(a1.1),
            v6(a2.1)
        ))
        .unwrap();
    let sent: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let after = d.hosts[0].counters().unwrap();
    let moved = |c: Counter| after[c.name()] - before[c.name()];
    let all: Vec<_> = Counter::ALL
        .iter()
        .filter(|c| moved(**c) > 0)
        .map(|c| format!("{}+{}", c.name(), moved(*c)))
        .collect();
    eprintln!("sent {sent}, counters moved on h1: {all:?}");
    assert_eq!(
        moved(Counter::NdpReply),
        sent["known"].as_u64().unwrap(),
        "every solicitation for a2 answered on h1"
    );
    assert_eq!(
        moved(Counter::DropBadNdp),
        sent["malformed"].as_u64().unwrap(),
        "every malformed one dropped and counted"
    );
    assert!(
        moved(Counter::Flood) + moved(Counter::DropStorm) >= sent["unknown"].as_u64().unwrap(),
        "solicitations for an unknown address went to the network or were limited"
    );
    assert!(
        moved(Counter::DropStorm) > 0,
        "2,000 in a moment is over the default 1,000 per second"
    );
    wait_for(Duration::from_secs(3), || {
        d.container(a1.0)
            .run(&format!("ping -6 -c 1 -W 1 {}", v6(a2.1)))
            .is_ok()
    })
    .expect("a1 still reaches a2 over IPv6");
    d.cli(0, &["status"]).expect("the agent still answers");
}

/// A container is a host, never a router: its router advertisements and redirects reach no
/// other container, on its host or another, and are counted (one could otherwise become its
/// neighbours' default router: Docker's CVE-2020-13401); its router solicitations stay on its
/// own host, whose node is its gateway.
#[test]
fn a_container_cannot_act_as_a_router_and_its_solicitations_stay_home() {
    let (d, a1, a3, a2) = three_containers("dsra");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/router_messages.py");
    let [from, on_h1, on_h2] = [a1.0, a3.0, a2.0].map(|c| d.link_local(c).unwrap());
    for to in [&on_h1, &on_h2] {
        wait_for(Duration::from_secs(5), || {
            d.container(a1.0)
                .run(&format!("ping -6 -c 1 -W 1 {to}%eth0"))
                .is_ok()
        })
        .unwrap_or_else(|_| panic!("a1 reaches {to}"));
    }
    let listen = |c: usize| {
        let mut child = d
            .container(c)
            .command("/usr/bin/python3")
            .args([script, "listen", "eth0", "3", &from])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        (child, lines)
    };
    let (mut same_host, mut same_lines) = listen(a3.0);
    let (mut other_host, mut other_lines) = listen(a2.0);
    // Router solicitations inside VXLAN on h2's underlay (ICMPv6 type at UDP offset 70).
    let crossing = d.hosts[1]
        .ns
        .capture_on(
            "eth1",
            "udp port 4789 and udp[28:2] = 0x86dd and udp[70] = 133",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = counter(&d, 0, Counter::DropRouterMessage);
    d.container(a1.0)
        .run(&format!(
            "/usr/bin/python3 {script} send eth0 {on_h1} {on_h2}"
        ))
        .unwrap();
    let heard = |lines: &mut std::io::Lines<_>, child: &mut std::process::Child| {
        let line: String = lines.next().unwrap().unwrap();
        child.wait().unwrap();
        line
    };
    let on_a3 = heard(&mut same_lines, &mut same_host);
    let on_a2 = heard(&mut other_lines, &mut other_host);
    let crossed = captured(crossing);
    assert!(
        on_a3.starts_with("ra=0 redirect=0 "),
        "a3, on a1's host: {on_a3}"
    );
    assert_eq!(on_a2, "ra=0 redirect=0 rs=0", "a2, on the other host");
    assert_eq!(
        counter(&d, 0, Counter::DropRouterMessage) - before,
        12,
        "three advertisements and three redirects to each refused"
    );
    assert!(
        crossed.trim().is_empty(),
        "router solicitations crossed to h2:\n{crossed}"
    );
    // Its one default route is ours (the network's IPv6 gateway, egress.rs), none learnt
    // from a1's advertisements.
    let routes = d.container(a2.0).run("ip -6 route show default").unwrap();
    assert_eq!(
        routes.lines().map(str::trim).collect::<Vec<_>>(),
        [format!(
            "default via {} dev eth0 proto static metric 1024 pref medium",
            v6(Ipv4Addr::new(10, 10, 0, 1))
        )],
        "a2 took a default route from an advertisement: {routes}"
    );
}
