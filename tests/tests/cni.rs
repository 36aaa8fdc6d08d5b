//! The CNI plugin as runtimes call it: by hand first (every command, every failure), then from
//! real podman and containerd on two hosts.
use std::{net::Ipv4Addr, time::Duration};

use overlay_agent::{runtimes::cni::endpoint_name, shared::ifnames::port_name};
use overlay_tests::{
    deployment::{Deployment, ping, wait_for},
    netns::Netns,
    runtimes::{CniReply, cni, cni_command, plugin_entry},
};

fn blue(d: &Deployment) {
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
}

fn env<'a>(id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
    ]
}

fn entry(d: &Deployment, host: usize) -> Vec<u8> {
    plugin_entry(d, host, "blue").to_string().into_bytes()
}

fn call(d: &Deployment, host: usize, command: &str, id: &str, netns: &str) -> CniReply {
    cni(d, host, command, &env(id, netns), &entry(d, host)).unwrap()
}

/// GC on `host` as a runtime that still has the attachments (eth0) of `valid` calls it,
/// through the configuration named `config`.
fn gc(d: &Deployment, host: usize, config: &str, valid: &[&str]) -> CniReply {
    let mut conf = plugin_entry(d, host, "blue");
    conf["cniVersion"] = "1.1.0".into();
    conf["name"] = config.into();
    conf["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|id| serde_json::json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    cni(d, host, "GC", &[], conf.to_string().as_bytes()).unwrap()
}

fn ns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

/// The address an ADD result gives, without its prefix length.
fn added_ip(reply: &CniReply) -> Ipv4Addr {
    assert!(reply.ok, "ADD failed: {:?} {}", reply.json, reply.stderr);
    reply.json["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {}", reply.json))
}

/// Whether host `host`'s maps, etcd or interfaces still hold anything of attachment `id`.
fn leftovers(d: &Deployment, host: usize, id: &str) -> Vec<String> {
    let name = endpoint_name("blue-cni", id, "eth0");
    let mut left = Vec::new();
    let eps = d.cli(host, &["endpoint", "ls", "--json"]).unwrap();
    if eps.contains(&name) {
        left.push(format!("etcd has endpoint {name}"));
    }
    let port = port_name("blue", &name);
    if d.hosts[host]
        .ns
        .run(&format!("ip link show {port}"))
        .is_ok()
    {
        left.push(format!("interface {port}"));
    }
    left
}

#[test]
fn the_cni_plugin_by_hand_add_check_del_gc_status_version_and_every_failure() {
    let mut d = Deployment::new("cni", &[true, true]).unwrap();
    blue(&d);
    let (c1, c2) = (
        Netns::new("ovt-cnic1").unwrap(),
        Netns::new("ovt-cnic2").unwrap(),
    );

    // VERSION and STATUS.
    let version = call(&d, 0, "VERSION", "", "");
    assert!(version.ok, "{version:?}");
    let supported = version.json["supportedVersions"].to_string();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.contains(v), "{supported}");
    }
    let status = call(&d, 0, "STATUS", "", "");
    assert!(status.ok && status.json.is_null(), "{status:?}");

    // A runtime in another network namespace than the node's agent (here: the machine's own)
    // would make ports the agent never sees: refused, and nothing made.
    let mut outside =
        std::process::Command::new(overlay_tests::deployment::built_binary("overlay-cni"));
    outside
        .env("CNI_COMMAND", "ADD")
        .envs(env("outside", &ns_path(&c1)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = outside.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&entry(&d, 0))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!(reply["code"], 7, "{reply}");
    assert!(
        reply["msg"]
            .as_str()
            .unwrap()
            .contains("another network namespace"),
        "{reply}"
    );
    assert_eq!(leftovers(&d, 0, "outside"), Vec::<String>::new());
    assert!(c1.run("ip link show eth0").is_err());

    // ADD on both hosts: a proper result, and the containers reach each other and a
    // container added with the CLI.
    let add1 = call(&d, 0, "ADD", "podman-c1", &ns_path(&c1));
    let ip1 = added_ip(&add1);
    eprintln!(
        "CNI ADD took {:?} (served by the agent included)",
        add1.took
    );
    let r = &add1.json;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], ns_path(&c1));
    assert_eq!(
        r["interfaces"][1]["mac"],
        overlay_agent::shared::net::Mac::from_ip(ip1).to_string()
    );
    assert_eq!(r["interfaces"][1]["mtu"], 1450);
    assert_eq!(
        r["interfaces"][0]["name"],
        port_name("blue", &endpoint_name("blue-cni", "podman-c1", "eth0"))
    );
    assert_eq!(r["ips"][0]["interface"], 1);
    assert!(r["ips"][0]["address"].as_str().unwrap().ends_with("/16"));
    // The way out through this host: the gateway, and the default route the container got.
    assert_eq!(r["ips"][0]["gateway"], "10.10.0.1", "{r}");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0", "{r}");
    assert_eq!(r["routes"][0]["gw"], "10.10.0.1", "{r}");
    // Names: the network's resolver on this host, the network's name to search.
    assert_eq!(r["dns"]["nameservers"][0], "10.10.0.1", "{r}");
    assert_eq!(r["dns"]["search"][0], "blue", "{r}");
    assert!(
        c1.run("ip -4 addr show eth0")
            .unwrap()
            .contains(&ip1.to_string())
    );
    let ip2 = added_ip(&call(&d, 1, "ADD", "default-c2", &ns_path(&c2)));
    assert_ne!(ip1, ip2);
    let cli = d.add_container(1, "cli", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[ip1, ip2, cli.1], true).unwrap();
    assert!(ping(&c1, ip2), "{}", d.hosts[0].log());
    assert!(ping(&c1, cli.1));
    assert!(ping(d.container(cli.0), ip1));

    // CHECK agrees, and notices a container whose address was changed behind its back.
    let check = call(&d, 0, "CHECK", "podman-c1", &ns_path(&c1));
    assert!(check.ok, "{check:?}");
    c1.run(&format!("ip addr del {ip1}/16 dev eth0")).unwrap();
    let check = call(&d, 0, "CHECK", "podman-c1", &ns_path(&c1));
    assert!(!check.ok && check.code() == 100, "{check:?}");
    assert!(check.msg().contains("expected"), "{check:?}");

    // DEL removes it from every map; DEL twice succeeds; CHECK then says it is unknown.
    let del = call(&d, 0, "DEL", "podman-c1", &ns_path(&c1));
    assert!(del.ok, "{del:?}");
    eprintln!("CNI DEL took {:?}", del.took);
    served_everywhere(&d, ip1, false);
    assert_eq!(leftovers(&d, 0, "podman-c1"), Vec::<String>::new());
    assert!(call(&d, 0, "DEL", "podman-c1", &ns_path(&c1)).ok);
    let check = call(&d, 0, "CHECK", "podman-c1", &ns_path(&c1));
    assert_eq!(check.code(), 3, "{check:?}");

    // DEL with no netns (containerd) and after the netns is gone.
    assert!(call(&d, 1, "DEL", "default-c2", "").ok);
    assert_eq!(leftovers(&d, 1, "default-c2"), Vec::<String>::new());
    let gone = Netns::new("ovt-cnigone").unwrap();
    added_ip(&call(&d, 0, "ADD", "gone", &ns_path(&gone)));
    drop(gone);
    assert!(call(&d, 0, "DEL", "gone", "/run/netns/ovt-cnigone").ok);
    assert_eq!(leftovers(&d, 0, "gone"), Vec::<String>::new());

    // Bad configurations: a CNI error naming the problem, and nothing left behind.
    let c3 = Netns::new("ovt-cnic3").unwrap();
    let c3_path = ns_path(&c3);
    let e = &env("bad", &c3_path);
    let mut unknown = plugin_entry(&d, 0, "blue");
    unknown["network"] = "nosuch".into();
    let mut missing = plugin_entry(&d, 0, "blue");
    missing.as_object_mut().unwrap().remove("network");
    let (unknown, missing) = (unknown.to_string(), missing.to_string());
    let cases: [(&[u8], u64, &str); 4] = [
        (unknown.as_bytes(), 7, "nosuch does not exist"),
        (missing.as_bytes(), 7, "no \"network\" key"),
        (
            b"{\"cniVersion\": \"1.0.0\", \"network\": ",
            6,
            "not valid JSON",
        ),
        (br#"{"cniVersion": "9.9.9", "network": "blue"}"#, 1, "9.9.9"),
    ];
    for (stdin, code, says) in cases {
        let reply = cni(&d, 0, "ADD", e, stdin).unwrap();
        assert!(!reply.ok, "{reply:?}");
        assert_eq!(reply.code(), code, "{reply:?}");
        assert!(reply.msg().contains(says), "{reply:?}");
        assert_eq!(leftovers(&d, 0, "bad"), Vec::<String>::new());
    }
    let no_env = cni(&d, 0, "ADD", &[("CNI_IFNAME", "eth0")], &entry(&d, 0)).unwrap();
    assert_eq!(no_env.code(), 4, "{no_env:?}");
    assert!(no_env.msg().contains("CNI_CONTAINERID"), "{no_env:?}");

    // Killed mid-ADD, at any point: DEL cleans what is left, and the next ADD works.
    let mut half_made = 0;
    for delay_ms in (0..30).map(|i| i * 8) {
        let mut child = cni_command(&d, 0, "ADD", &env("killed", &ns_path(&c3)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&entry(&d, 0))
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        if !finished && !leftovers(&d, 0, "killed").is_empty() {
            half_made += 1;
        }
        let del = call(&d, 0, "DEL", "killed", &ns_path(&c3));
        assert!(del.ok, "after a kill at {delay_ms} ms: {del:?}");
        assert_eq!(
            leftovers(&d, 0, "killed"),
            Vec::<String>::new(),
            "{delay_ms} ms"
        );
        assert!(c3.run("ip link show eth0").is_err(), "{delay_ms} ms");
    }
    assert!(half_made > 0, "no kill landed in the middle of an ADD");
    let ip3 = added_ip(&call(&d, 0, "ADD", "killed", &ns_path(&c3)));

    // GC: attachments the runtime no longer lists go, the listed ones stay.
    let c4 = Netns::new("ovt-cnic4").unwrap();
    let ip4 = added_ip(&call(&d, 0, "ADD", "kept", &ns_path(&c4)));
    let reply = gc(&d, 0, "blue-cni", &["kept"]);
    assert!(reply.ok, "{reply:?}");
    assert!(
        !leftovers(&d, 0, "kept").is_empty(),
        "GC removed a valid attachment"
    );
    // GC without the list, or from an older configuration, refuses rather than collect all.
    let mut no_list = plugin_entry(&d, 0, "blue");
    no_list["cniVersion"] = "1.1.0".into();
    let reply = cni(&d, 0, "GC", &[], no_list.to_string().as_bytes()).unwrap();
    assert_eq!(reply.code(), 7, "{reply:?}");
    no_list["cni.dev/valid-attachments"] = serde_json::json!([]);
    no_list["cniVersion"] = "1.0.0".into();
    let reply = cni(&d, 0, "GC", &[], no_list.to_string().as_bytes()).unwrap();
    assert_eq!(reply.code(), 1, "{reply:?}");
    assert!(!leftovers(&d, 0, "kept").is_empty());
    assert_eq!(leftovers(&d, 0, "killed"), Vec::<String>::new());
    wait_for(Duration::from_secs(3), || {
        d.hosts[1]
            .maps()
            .is_ok_and(|m| !m.arp.contains_key(&(42, ip3.octets())))
    })
    .unwrap();
    assert!(ping(&c4, cli.1));

    // Agent down: ADD fails fast and says why, STATUS says so too, and what is attached keeps
    // forwarding.
    d.kill_agent(0);
    let c5 = Netns::new("ovt-cnic5").unwrap();
    let add = call(&d, 0, "ADD", "late", &ns_path(&c5));
    assert!(!add.ok && add.code() == 11, "{add:?}");
    assert!(add.msg().contains("not running"), "{add:?}");
    assert!(add.took < Duration::from_secs(2), "took {:?}", add.took);
    assert_eq!(leftovers(&d, 0, "late"), Vec::<String>::new());
    let status = call(&d, 0, "STATUS", "", "");
    assert_eq!(status.code(), 50, "{status:?}");
    assert!(ping(&c4, cli.1));
    assert!(ping(d.container(cli.0), ip4));
    d.restart_agent(0).unwrap();
    assert!(call(&d, 0, "STATUS", "", "").ok);
}

/// The address of `eth0` in `ip -4 -o addr` output.
fn eth0_ip(out: &str) -> Ipv4Addr {
    out.lines()
        .find(|l| l.contains("eth0"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no eth0 address in {out:?}"))
}

fn served_everywhere(d: &Deployment, ip: Ipv4Addr, present: bool) {
    d.wait_arp_everywhere(42, &[ip], present).unwrap();
}

#[test]
fn docker_podman_and_containerd_containers_on_two_hosts_reach_each_other_and_leave_cleanly() {
    use overlay_tests::{
        docker::DockerHost,
        runtimes::{Containerd, Podman, toybox_archive},
    };
    let mut d = Deployment::new("rt", &[true, true]).unwrap();
    blue(&d);
    let cli = d.add_container(0, "cli", "blue", None).unwrap();
    let podman = [
        Podman::new(&d, 0, "blue").unwrap(),
        Podman::new(&d, 1, "blue").unwrap(),
    ];
    let archive = toybox_archive(&podman[0]).unwrap();
    let ctr = [
        Containerd::new(&d, 0, "blue", &archive).unwrap(),
        Containerd::new(&d, 1, "blue", &archive).unwrap(),
    ];
    let mut addrs = Vec::new();
    for host in 0..2 {
        let (p, k) = (format!("p{host}"), format!("k{host}"));
        podman[host].start(&p, "blue").unwrap();
        let ip = eth0_ip(&podman[host].exec(&p, "ip -4 -o addr").unwrap());
        addrs.push((format!("podman {p} on h{}", host + 1), ip));
        ctr[host].start(&k).unwrap();
        let ip = eth0_ip(&ctr[host].exec(&k, "ip -4 -o addr").unwrap());
        addrs.push((format!("ctr {k} on h{}", host + 1), ip));
    }
    // Docker on both hosts, on the same overlay network: `-o network=blue` picks the CLI's
    // network (its subnet must match).
    let docker = [
        DockerHost::start(&d, 0, "rth1").unwrap(),
        DockerHost::start(&d, 1, "rth2").unwrap(),
    ];
    for (host, dk) in docker.iter().enumerate() {
        dk.create_network("blue", &["--subnet", "10.10.0.0/16", "-o", "network=blue"])
            .unwrap();
        let ip = dk.run(&format!("d{host}"), "blue").unwrap();
        addrs.push((format!("docker d{host} on h{}", host + 1), ip));
    }
    let mut unique: Vec<Ipv4Addr> = addrs.iter().map(|a| a.1).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{addrs:?}");
    eprintln!("runtime containers: {addrs:?}");
    for (_, ip) in &addrs {
        served_everywhere(&d, *ip, true);
    }
    // Every runtime's container reaches every other and the CLI's; the CLI's reaches them.
    let mut failed = Vec::new();
    for host in 0..2 {
        for from in [format!("p{host}"), format!("k{host}"), format!("d{host}")] {
            let reaches = |c: &str, ip: Ipv4Addr| {
                let ping = format!("ping -c 1 -W 2 {ip}");
                match c.as_bytes()[0] {
                    b'p' => podman[host].exec(c, &ping).is_ok(),
                    b'k' => ctr[host].exec(c, &ping).is_ok(),
                    _ => docker[host].ping(c, ip),
                }
            };
            for (to, ip) in addrs
                .iter()
                .map(|(n, ip)| (n.as_str(), *ip))
                .chain([("cli", cli.1)])
            {
                if to.contains(&format!(" {from} ")) {
                    continue;
                }
                if !reaches(&from, ip) {
                    failed.push(format!("{from} -> {to} ({ip})"));
                }
            }
        }
    }
    for (name, ip) in &addrs {
        if !ping(d.container(cli.0), *ip) {
            failed.push(format!("cli -> {name} ({ip})"));
        }
    }
    assert!(
        failed.is_empty(),
        "failed: {failed:?}\n{}",
        d.hosts[0].log()
    );

    // Every removal is checked in etcd the moment the runtime returns: the agent would also
    // remove a container whose namespace died, 2 s later, and must not be what passes these.
    let ctr_name = |id: &str| endpoint_name(&Containerd::config("blue"), id, "eth0");
    assert!(
        in_etcd(&d, 0, &ctr_name("default-k0")),
        "ctr's IDs are not what DEL and GC expect"
    );

    // A killed and removed ctr task gets no DEL. GC from ctr's configuration, listing what
    // ctr still has (k0b), removes k0 at once and keeps k0b, podman's p0 (another
    // configuration's) and the CLI's container. h1's agent is stopped meanwhile: GC needs
    // only etcd, and the agent must not be the one that removes k0.
    ctr[0].start("k0b").unwrap();
    d.kill_agent(0);
    ctr[0].kill("k0").unwrap();
    let mut conf = plugin_entry(&d, 0, "blue");
    conf["cniVersion"] = "1.1.0".into();
    conf["name"] = Containerd::config("blue").into();
    conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "default-k0b", "ifname": "eth0"}]);
    let reply = cni(&d, 0, "GC", &[], conf.to_string().as_bytes()).unwrap();
    assert!(reply.ok, "{reply:?}");
    assert!(!in_etcd(&d, 0, &ctr_name("default-k0")));
    assert!(in_etcd(&d, 0, &ctr_name("default-k0b")));
    assert!(in_etcd(
        &d,
        0,
        &endpoint_name("blue", &podman_id(&podman[0], "p0"), "eth0")
    ));
    assert!(in_etcd(&d, 0, "\"cli\""));
    d.restart_agent(0).unwrap();
    served_everywhere(&d, addrs[1].1, false);
    assert!(
        podman[0]
            .exec("p0", &format!("ping -c 1 -W 2 {}", cli.1))
            .is_ok()
    );

    // podman rm calls DEL: out of etcd when it returns, then out of every map.
    let p0 = endpoint_name("blue", &podman_id(&podman[0], "p0"), "eth0");
    podman[0].run("rm -f -t 0 p0").unwrap();
    assert!(!in_etcd(&d, 0, &p0));
    served_everywhere(&d, addrs[0].1, false);
    // ctr run --rm (foreground) calls DEL with no netns when the task ends.
    let out = ctr[1]
        .ctr(&format!(
            "run --rm --cni localhost/toybox:latest once ping -c 1 -W 2 {}",
            cli.1
        ))
        .unwrap();
    assert!(out.contains("1 packets received"), "{out}");
    assert!(!in_etcd(&d, 1, &ctr_name("default-once")));
    for ip in [addrs[2].1, cli.1] {
        assert!(ctr[1].exec("k1", &format!("ping -c 1 -W 2 {ip}")).is_ok());
    }
}

/// Whether etcd has endpoint `name` (as host `host`'s CLI lists them).
fn in_etcd(d: &Deployment, host: usize, name: &str) -> bool {
    d.cli(host, &["endpoint", "ls", "--json"])
        .unwrap()
        .contains(name)
}

/// The full ID podman gave container `name` (what it passes as CNI_CONTAINERID).
fn podman_id(podman: &overlay_tests::runtimes::Podman, name: &str) -> String {
    podman
        .run(&format!("inspect -f '{{{{.Id}}}}' {name}"))
        .unwrap()
        .trim()
        .to_string()
}

/// On a dual-stack network the result gives the IPv6 address its gateway (the IPv4 gateway's
/// address in the prefix) and a `::/0` route through it, which the container has.
#[test]
fn a_dual_stack_result_carries_the_ipv6_gateway_and_default_route() {
    let d = Deployment::new("cni6", &[true]).unwrap();
    d.create_network_with("blue", "10.10.0.0/16", 42, &["--subnet6", "fd00:10::/64"])
        .unwrap();
    let c = Netns::new(&overlay_tests::unique("cni6c")).unwrap();
    let add = call(&d, 0, "ADD", "dual", &ns_path(&c));
    added_ip(&add);
    let r = &add.json;
    assert_eq!(r["ips"][1]["gateway"], "fd00:10::a0a:1", "{r}");
    assert_eq!(r["routes"][1]["dst"], "::/0", "{r}");
    assert_eq!(r["routes"][1]["gw"], "fd00:10::a0a:1", "{r}");
    let routes = c.run("ip -6 route show default").unwrap();
    assert!(
        routes.contains("default via fd00:10::a0a:1 dev eth0"),
        "{routes}"
    );
    assert!(call(&d, 0, "CHECK", "dual", &ns_path(&c)).ok);
    assert!(call(&d, 0, "DEL", "dual", &ns_path(&c)).ok);
}
