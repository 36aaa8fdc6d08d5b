//! Docker 20.10 with our network and IPAM driver: a real dockerd per host (its own network and
//! mount namespace), our `overlay-agent docker-plugin` beside it, the user's commands.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use overlay_agent::shared::net::Mac;
use overlay_tests::{
    deployment::{Deployment, wait_for},
    docker::DockerHost,
};
use serde_json::Value;

const SUBNET: &str = "10.20.0.0/16";
/// The overlay network's name derived from the subnet when Docker gives none.
const DERIVED: &str = "docker-10.20.0.0-16";

fn json_rows(out: &str) -> Result<Vec<Value>> {
    Ok(serde_json::from_str::<Value>(out)?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The overlay's networks in etcd, as `network ls --json` shows them.
fn networks(d: &Deployment) -> Result<Vec<Value>> {
    json_rows(&d.cli(0, &["network", "ls", "--json"])?)
}

/// The endpoint etcd has at `ip`, if any.
fn endpoint_at(d: &Deployment, ip: Ipv4Addr) -> Result<Option<Value>> {
    let rows = json_rows(&d.cli(0, &["endpoint", "ls", "--json"])?)?;
    Ok(rows
        .into_iter()
        .find(|r| r["ip"].as_str() == Some(&ip.to_string())))
}

/// Whether any map of any host still has the endpoint `ip` of `vni`.
fn in_any_map(d: &Deployment, vni: u32, ip: Ipv4Addr) -> bool {
    let mac = Mac::from_ip(ip).0;
    d.hosts.iter().any(|h| {
        h.maps().is_ok_and(|m| {
            m.endpoints.contains_key(&(vni, mac))
                || m.fdb.contains_key(&(vni, mac))
                || m.arp.contains_key(&(vni, ip.octets()))
                || m.ports.values().any(|e| e.mac == mac)
        })
    })
}

/// Pings until answered (the first one may race the other host's agent): Err after 5 s.
fn reaches(docker: &DockerHost, from: &str, to: impl Into<IpAddr>) -> Result<()> {
    let to = to.into();
    wait_for(Duration::from_secs(5), || docker.ping(from, to))
        .map(drop)
        .with_context(|| format!("container {from} on h{} cannot reach {to}", docker.host + 1))
}

#[test]
fn docker_network_spans_hosts_and_survives_a_driver_restart() -> Result<()> {
    let mut d = Deployment::new("dk", &[true, true])?;
    let mut docker = [
        DockerHost::start(&d, 0, "dkh1")?,
        DockerHost::start(&d, 1, "dkh2")?,
    ];

    // The same command on each host: one overlay network, made by the first, found by the
    // second by its subnet (each dockerd has its own NetworkID and names no network to us).
    for h in &docker {
        h.create_network("blue", &["--subnet", SUBNET])?;
    }
    let nets = networks(&d)?;
    ensure!(nets.len() == 1, "one overlay network expected: {nets:?}");
    ensure!(
        nets[0]["name"] == DERIVED && nets[0]["subnet"] == SUBNET,
        "{nets:?}"
    );
    let vni = nets[0]["vni"].as_u64().context("vni")? as u32;

    // Addresses from each node's own slice, never the same twice.
    let a = docker[0].run("alpha", "blue")?;
    let b = docker[1].run("bravo", "blue")?;
    ensure!(a != b, "both containers got {a}");
    for (ip, host) in [(a, 0), (b, 1)] {
        let ep = endpoint_at(&d, ip)?.with_context(|| format!("etcd has no endpoint {ip}"))?;
        ensure!(
            ep["node"] == d.hosts[host].name(),
            "{ip} belongs to {} not h{}: {ep}",
            ep["node"],
            host + 1
        );
        ensure!(
            ep["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("docker-")),
            "{ep}"
        );
        // Join's sandbox recorded as the endpoint's namespace (for service balancing).
        let record = d.etcd_get_prefix(&format!("endpoints/{DERIVED}/{ip}"))?;
        ensure!(record.contains(r#""netns":"/"#), "{record}");
    }
    ensure!(
        a.octets()[2] != b.octets()[2],
        "{a} and {b} should be in the two nodes' different /24 slices"
    );
    // Docker set the MAC our dataplane expects (it drops frames from any other).
    let mac = docker[0].exec("alpha", &["cat", "/sys/class/net/eth0/address"])?;
    ensure!(
        mac == Mac::from_ip(a).to_string(),
        "eth0 of alpha has MAC {mac}"
    );

    // Not internal: Docker adds its docker_gwbridge interface with the default route, as
    // for its own overlay driver, since Join names no gateway.
    let routes = docker[0].exec("alpha", &["ip", "route"])?;
    ensure!(
        routes.contains("default") && routes.contains("dev eth1"),
        "routes of alpha: {routes}"
    );
    ensure!(
        routes.contains("10.20.0.0/16 dev eth0"),
        "routes of alpha: {routes}"
    );

    // An address handed out and not yet claimed by an endpoint is not handed out again.
    let request = serde_json::json!({ "PoolID": SUBNET, "Address": "", "Options": {} });
    let first = docker[0].plugin_call("IpamDriver.RequestAddress", &request)?;
    let second = docker[0].plugin_call("IpamDriver.RequestAddress", &request)?;
    ensure!(
        first["Address"].is_string() && first["Address"] != second["Address"],
        "two requests, one address: {first} {second}"
    );
    for reply in [first, second] {
        let address = reply["Address"].as_str().unwrap_or_default();
        let release = serde_json::json!({ "PoolID": SUBNET, "Address": address.split('/').next() });
        docker[0].plugin_call("IpamDriver.ReleaseAddress", &release)?;
    }

    // Two containers started at once get two addresses.
    let (f, g) = std::thread::scope(|s| {
        let f = s.spawn(|| docker[0].run("foxtrot", "blue"));
        let g = s.spawn(|| docker[0].run("golf", "blue"));
        (f.join().unwrap(), g.join().unwrap())
    });
    let (f, g) = (f?, g?);
    ensure!(
        f != g && ![a, b].contains(&f) && ![a, b].contains(&g),
        "{a} {b} {f} {g}"
    );
    docker[0].docker(&["rm", "-f", "foxtrot", "golf"])?;
    // docker run --ip: that address, though it is not in the node's slice.
    docker[0].docker(&[
        "run",
        "-d",
        "--name",
        "hotel",
        "--network",
        "blue",
        "--ip",
        "10.20.7.7",
        "toybox",
        "sleep",
        "1000",
    ])?;
    ensure!(
        endpoint_at(&d, "10.20.7.7".parse()?)?.is_some(),
        "--ip 10.20.7.7 not claimed"
    );
    docker[0].docker(&["rm", "-f", "hotel"])?;

    reaches(&docker[0], "alpha", b)?;
    reaches(&docker[1], "bravo", a)?;
    // And a container the CLI attached.
    let (_, c) = d.add_container(0, "c", DERIVED, None)?;
    reaches(&docker[1], "bravo", c)?;
    reaches(&docker[0], "alpha", c)?;

    // The driver restarts (SIGKILL, stale socket left): Docker sends no CreateNetwork again,
    // and the next container on that network still attaches and talks.
    docker[1].kill_plugin();
    docker[1].start_plugin(&d)?;
    let e = docker[1].run("echo", "blue")?;
    ensure!(![a, b, c].contains(&e), "e got a taken address {e}");
    reaches(&docker[1], "echo", a)?;
    reaches(&docker[0], "alpha", e)?;

    // docker rm -f: gone from etcd and from every map of every host.
    docker[0].docker(&["rm", "-f", "alpha"])?;
    docker[1].docker(&["rm", "-f", "bravo", "echo"])?;
    for ip in [a, b, e] {
        ensure!(endpoint_at(&d, ip)?.is_none(), "etcd still has {ip}");
        wait_for(Duration::from_secs(3), || !in_any_map(&d, vni, ip))
            .with_context(|| format!("{ip} is still in a map"))?;
    }
    ensure!(
        in_any_map(&d, vni, c),
        "the CLI's container left the maps too"
    );
    // Nothing of ours left on h2: no veth, no bridge (it had only Docker's containers).
    let links = d.hosts[1].ns.run("ip -o link")?;
    ensure!(
        !links.contains(": ove") && !links.contains(": ovt") && !links.contains(": ovbr"),
        "h2 still has our interfaces: {links}"
    );

    // docker network rm forgets the mapping; the overlay network stays for the other host.
    docker[0].docker(&["network", "rm", "blue"])?;
    ensure!(
        networks(&d)?.len() == 1,
        "the overlay network must stay in etcd"
    );
    Ok(())
}

#[test]
fn docker_internal_network_and_bad_input() -> Result<()> {
    let mut d = Deployment::new("dki", &[true])?;
    let docker = DockerHost::start(&d, 0, "dki1")?;

    // Wrong input fails with our one line and leaves etcd as it was.
    let bad: [(&[&str], &str); 5] = [
        (&[], "an IPv4 --subnet is needed"),
        (
            &["--ipv6", "--subnet", "fd00::/64"],
            "an IPv4 --subnet is needed",
        ),
        (
            &["--ipv6", "--subnet", "10.40.0.0/16"],
            "--ipv6 needs an IPv6 --subnet",
        ),
        (
            &[
                "--ipv6",
                "--subnet",
                "10.40.0.0/16",
                "--subnet",
                "fd00::/120",
            ],
            "longer than /96",
        ),
        (
            &["--subnet", "10.40.0.0/16", "-o", "vnl=4"],
            "unknown option -o vnl",
        ),
    ];
    for (extra, says) in bad {
        let err = format!("{:#}", docker.create_network("bad", extra).unwrap_err());
        ensure!(err.contains(says), "expected {says:?} in: {err}");
        ensure!(networks(&d)?.is_empty(), "etcd changed after {extra:?}");
    }

    // --internal, named and numbered by the user.
    docker.create_network(
        "red",
        &[
            "--internal",
            "--subnet",
            "10.30.0.0/16",
            "-o",
            "vni=77",
            "-o",
            "network=red",
        ],
    )?;
    let nets = networks(&d)?;
    ensure!(
        nets.len() == 1 && nets[0]["name"] == "red" && nets[0]["vni"] == 77,
        "{nets:?}"
    );
    let r = docker.run("romeo", "red")?;
    let (_, p) = d.add_container(0, "p", "red", None)?;
    ensure!(r != p, "r and the CLI's container share {r}");
    // Only eth0 and lo, and no default route: Docker added no docker_gwbridge interface.
    let links = docker.exec("romeo", &["ip", "-o", "link"])?;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or(""))
        .collect();
    ensure!(names == ["lo", "eth0"], "interfaces of romeo: {names:?}");
    let routes = docker.exec("romeo", &["ip", "route"])?;
    ensure!(!routes.contains("default"), "routes of romeo: {routes}");
    ensure!(
        routes.contains("10.30.0.0/16 dev eth0"),
        "routes of romeo: {routes}"
    );
    reaches(&docker, "romeo", p)?;
    Ok(())
}

/// `docker network create --ipv6` with an IPv4 and an IPv6 --subnet: a dual-stack overlay
/// network; every container gets both addresses from our IPAM (its IPv6 one derived from its
/// IPv4 one, as the overlay's endpoints have it) and reaches the other host's over both.
#[test]
fn docker_dual_stack_network_reaches_across_hosts_over_ipv6() -> Result<()> {
    const SUBNET6: &str = "fd00:20::/64";
    let d = Deployment::new("dk6", &[true, true])?;
    let docker = [
        DockerHost::start(&d, 0, "dk6h1")?,
        DockerHost::start(&d, 1, "dk6h2")?,
    ];
    for h in &docker {
        h.create_network("blue", &["--ipv6", "--subnet", SUBNET, "--subnet", SUBNET6])?;
    }
    let nets = networks(&d)?;
    ensure!(
        nets.len() == 1 && nets[0]["subnet6"] == SUBNET6,
        "one dual-stack overlay network expected: {nets:?}"
    );
    let prefix: overlay_agent::shared::ipam::Subnet6 = SUBNET6.parse()?;
    let a = docker[0].run("alpha", "blue")?;
    let b = docker[1].run("bravo", "blue")?;
    let (a6, b6) = (
        docker[0].ipv6("alpha", "blue")?,
        docker[1].ipv6("bravo", "blue")?,
    );
    ensure!(
        a6 == prefix.address_of(a) && b6 == prefix.address_of(b),
        "alpha {a} {a6}, bravo {b} {b6}: IPv6 addresses not derived from the IPv4 ones"
    );
    let addrs = docker[0].exec("alpha", &["ip", "-6", "addr", "show", "dev", "eth0"])?;
    ensure!(addrs.contains(&format!("{a6}/64")), "alpha's eth0: {addrs}");
    for (ip, host) in [(a, 0), (b, 1)] {
        let ep = endpoint_at(&d, ip)?.with_context(|| format!("etcd has no endpoint {ip}"))?;
        ensure!(ep["node"] == d.hosts[host].name(), "{ep}");
    }
    reaches(&docker[0], "alpha", b6)?;
    reaches(&docker[1], "bravo", a6)?;
    reaches(&docker[0], "alpha", b)?;
    reaches(&docker[1], "bravo", a)?;

    // The IPv6 way out: the network's IPv6 gateway is alpha's default route (Join's), and a
    // world address on the underlay side answers through it (syncs/egress.rs).
    let routes = docker[0].exec("alpha", &["ip", "-6", "route", "show", "default"])?;
    let gateway6 = prefix.address_of("10.20.0.1".parse()?);
    ensure!(
        routes.contains(&format!("default via {gateway6} dev eth0")),
        "alpha's IPv6 default route: {routes}"
    );
    let world = overlay_tests::topology::plug_host_on(
        &d.wire,
        &overlay_tests::unique("dk6world"),
        100,
        overlay_tests::topology::Underlay::Veth,
    )?;
    world.run("ip addr add fd99::100/64 dev eth1 nodad")?;
    for (i, h) in d.hosts.iter().enumerate() {
        h.ns.run(&format!("ip addr add fd99::{}/64 dev eth1 nodad", i + 1))?;
    }
    let world6: IpAddr = "fd99::100".parse()?;
    wait_for(Duration::from_secs(5), || docker[0].ping("alpha", world6))
        .context("alpha reaches fd99::100 outside the overlay over IPv6")?;

    // Two at once on one host: each gets the IPv6 address of its own IPv4 one.
    let (f, g) = std::thread::scope(|s| {
        let f = s.spawn(|| docker[0].run("foxtrot", "blue"));
        let g = s.spawn(|| docker[0].run("golf", "blue"));
        (f.join().unwrap(), g.join().unwrap())
    });
    for (name, ip) in [("foxtrot", f?), ("golf", g?)] {
        let ip6 = docker[0].ipv6(name, "blue")?;
        ensure!(ip6 == prefix.address_of(ip), "{name}: {ip} and {ip6}");
        reaches(&docker[1], "bravo", ip6)?;
    }

    // --ip picks both; an --ip6 that is not the derived one is refused in one line.
    docker[1].docker(&[
        "run",
        "-d",
        "--name",
        "hotel",
        "--network",
        "blue",
        "--ip",
        "10.20.7.7",
        "toybox",
        "sleep",
        "1000",
    ])?;
    ensure!(docker[1].ipv6("hotel", "blue")? == prefix.address_of("10.20.7.7".parse()?));
    let err = docker[1]
        .docker(&[
            "run",
            "-d",
            "--name",
            "india",
            "--network",
            "blue",
            "--ip6",
            "fd00:20::99",
            "toybox",
            "sleep",
            "1000",
        ])
        .unwrap_err();
    ensure!(
        format!("{err:#}").contains("derives an endpoint's IPv6 address"),
        "{err:#}"
    );

    // A Docker network without --ipv6 on the same subnet finds the dual-stack overlay network
    // (IPv4 only for its containers); one with another IPv6 prefix is refused.
    let err = docker[0]
        .create_network(
            "other",
            &["--ipv6", "--subnet", SUBNET, "--subnet", "fd00:99::/64"],
        )
        .unwrap_err();
    ensure!(
        format!("{err:#}").contains("has IPv6 prefix fd00:20::/64, not fd00:99::/64"),
        "{err:#}"
    );

    docker[0].docker(&["rm", "-f", "alpha", "foxtrot", "golf"])?;
    docker[1].docker(&["rm", "-f", "bravo", "hotel"])?;
    for ip in [a, b] {
        ensure!(endpoint_at(&d, ip)?.is_none(), "etcd still has {ip}");
    }
    Ok(())
}
