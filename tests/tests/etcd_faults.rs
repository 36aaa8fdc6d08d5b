//! Commands and plugins when etcd fails while they work. A hung etcd (SIGSTOP: its connections
//! stay open and never answer, as with a stalled disk or a paused VM) is caught in the middle
//! of an `endpoint add`, a CNI ADD and a CNI DEL: each must fail in one line within its bound
//! and leave nothing behind (no interface, no etcd key, no lock held), and the same call must
//! just work once etcd answers again. What a failed or killed attempt may still leave (a record
//! without its interface, an interface without its record) is replaced by the next attempt.
use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use overlay_agent::{
    runtimes::cni::endpoint_name,
    shared::{
        ifnames::{endpoint_lock, peer_name, port_alias, port_name},
        lock,
    },
};
use overlay_tests::{
    deployment::{Deployment, wait_for},
    docker::DockerHost,
    netns::Netns,
    runtimes::{cni_command, plugin_entry},
};

/// How long a command may take to fail against a hung etcd: its requests' deadlines and its
/// undo's, with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

/// A VNI of this test's own: a network's bridge lock is machine-wide
/// (/run/overlay-lock/ovbr<vni>), and other tests run beside this one, in this process and
/// in others.
fn own_vni() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    100_000 + (std::process::id() % 100_000) * 16 + n
}

/// etcd stopped (SIGSTOP) until dropped (SIGCONT), so that a failed assertion never leaves it
/// hung for what runs next.
struct Hung(u32);

impl Hung {
    fn stop(d: &Deployment) -> Self {
        // The deployment's one member: its data directory is in the deployment's own.
        let pattern = format!("^etcd --name \\S+ --data-dir {}/", d.dir().display());
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout);
        let [pid] = pids.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("not one etcd of this deployment: {pids:?}")
        };
        let pid = pid.parse().unwrap();
        signal(pid, libc::SIGSTOP);
        Self(pid)
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {sig} {pid}"
    );
}

/// Whether process `pid` has the lock file `name` open: it is about to wait for it.
fn has_open(pid: u32, name: &str) -> bool {
    let lock = std::path::Path::new(lock::DIR).join(name);
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock))
}

/// Whether any process but this one has the lock file `name` open (a daemon's request is
/// waiting for it).
fn anyone_has_open(name: &str) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| pid.parse().ok())
        .any(|pid| has_open(pid, name))
}

/// Runs `cmd` (with `stdin`) caught midway: this test holds the network's bridge lock, and once
/// the process waits for it (past everything it asks etcd before it makes interfaces), etcd is
/// stopped and the lock let go. The process then makes its interfaces and registers them with
/// an etcd that never answers. Its output, how long it took from there, and the hung etcd.
fn caught_midway(
    d: &Deployment,
    bridge: &str,
    mut cmd: Command,
    stdin: &[u8],
) -> (Output, Duration, Hung) {
    use std::io::Write as _;
    let held = lock::try_exclusive(bridge)
        .unwrap()
        .expect("the bridge lock is free");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let pid = child.id();
    wait_for(Duration::from_secs(20), || has_open(pid, bridge))
        .expect("the command reached the bridge lock");
    let hung = Hung::stop(d);
    let started = Instant::now();
    drop(held);
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > BOUND * 2 {
            let _ = child.kill();
            panic!("still running {:?} after etcd hung", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out, started.elapsed(), hung)
}

/// What host `host` still has of endpoint `name` of network `network`: its interfaces there,
/// its keys in etcd, a lock someone holds. Empty: nothing.
fn leftovers(d: &Deployment, host: usize, network: &str, name: &str, bridge: &str) -> Vec<String> {
    let mut left = Vec::new();
    let ns = &d.hosts[host].ns;
    for iface in [
        port_name(network, name),
        peer_name(network, name),
        bridge.to_string(),
    ] {
        if ns.run(&format!("ip link show {iface}")).is_ok() {
            left.push(format!("interface {iface}"));
        }
    }
    let keys = d.etcd_get_prefix("").unwrap();
    if keys.contains(name) {
        left.push(format!("etcd still names {name}: {keys}"));
    }
    for l in [endpoint_lock(&port_name(network, name)), bridge.to_string()] {
        if lock::try_exclusive(&l).unwrap().is_none() {
            left.push(format!("lock {l} is held"));
        }
    }
    left
}

fn one_line(text: &str) {
    assert_eq!(text.trim().lines().count(), 1, "not one line: {text:?}");
}

fn network(d: &Deployment) -> String {
    let vni = own_vni();
    d.create_network("blue", "10.10.0.0/16", vni).unwrap();
    format!("ovbr{vni}")
}

#[test]
fn endpoint_add_caught_by_a_hung_etcd_leaves_nothing_and_works_again() {
    let d = Deployment::new("efadd", &[true]).unwrap();
    let bridge = network(&d);
    let c = Netns::new(&overlay_tests::unique("efaddc")).unwrap();
    let args = [
        "endpoint",
        "add",
        "midway",
        "--network",
        "blue",
        "--netns",
        &c.name,
    ];
    let mut cmd = d.base_command(0);
    cmd.args(args).env("RUST_LOG", "warn");
    let (out, took, hung) = caught_midway(&d, &bridge, cmd, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("endpoint add against a hung etcd failed after {took:?}: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    one_line(&stderr);
    assert!(
        stderr.contains("not added, nothing left behind"),
        "{stderr}"
    );
    assert!(took < BOUND, "{took:?}");
    assert!(
        c.run("ip -o link show").unwrap().lines().count() == 1,
        "only lo in the container"
    );
    drop(hung);
    assert_eq!(
        leftovers(&d, 0, "blue", "midway", &bridge),
        Vec::<String>::new()
    );

    // The same command again, etcd back: it just works.
    let done = d.cli(0, &args).unwrap();
    assert!(done.contains("endpoint midway: 10.10."), "{done}");

    // Caught while registering (an address given: no slice to read first): etcd received
    // the write before it hung and applies it when it resumes, after the command gave up. The
    // error says so; the same command again replaces that record and just works.
    let c2 = Netns::new(&overlay_tests::unique("efaddl")).unwrap();
    let late = [
        "endpoint",
        "add",
        "late",
        "--network",
        "blue",
        "--netns",
        &c2.name,
        "--ip",
        "10.10.0.77",
    ];
    let mut cmd = d.base_command(0);
    cmd.args(late).env("RUST_LOG", "warn");
    let (out, took, hung) = caught_midway(&d, &bridge, cmd, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("endpoint add --ip against a hung etcd failed after {took:?}: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    one_line(&stderr);
    assert!(stderr.contains("endpoint late not added"), "{stderr}");
    drop(hung);
    let applied = wait_for(Duration::from_secs(2), || {
        d.etcd_get_prefix("endpoints/blue/10.10.0.77")
            .is_ok_and(|k| k.contains("late"))
    });
    println!(
        "etcd applied the registration after the command failed: {}",
        applied.is_ok()
    );
    let done = d.cli(0, &late).unwrap();
    assert!(done.contains("endpoint late: 10.10.0.77"), "{done}");
    d.cli(0, &["endpoint", "rm", "late"]).unwrap();
    assert_eq!(leftovers(&d, 0, "blue", "late", "-"), Vec::<String>::new());

    // And removing it, caught the same way: nothing changes until etcd answers, then it goes.
    let mut cmd = d.base_command(0);
    cmd.args(["endpoint", "rm", "midway"])
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let hung = Hung::stop(&d);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "endpoint rm against a hung etcd failed after {:?}: {stderr}",
        started.elapsed()
    );
    assert!(!out.status.success());
    one_line(&stderr);
    drop(hung);
    d.cli(0, &["endpoint", "rm", "midway"]).unwrap();
    assert_eq!(
        leftovers(&d, 0, "blue", "midway", &bridge),
        Vec::<String>::new()
    );
}

#[test]
fn what_a_failed_or_killed_attempt_left_is_replaced_by_the_next() {
    let mut d = Deployment::new("efleft", &[true]).unwrap();
    let bridge = network(&d);
    let host = d.hosts[0].ns.name.clone();

    // A record whose interface is gone (an undo that could not reach etcd), with no agent to
    // reap it: the next `endpoint add` of that name replaces it.
    d.kill_agent(0);
    let c = Netns::new(&overlay_tests::unique("efleftc")).unwrap();
    let args = [
        "endpoint",
        "add",
        "stale",
        "--network",
        "blue",
        "--netns",
        &c.name,
    ];
    d.cli(0, &args).unwrap();
    let port = port_name("blue", "stale");
    d.hosts[0].ns.run(&format!("ip link del {port}")).unwrap();
    assert!(
        d.etcd_get_prefix(&format!("names/{host}/stale"))
            .unwrap()
            .contains("stale")
    );
    d.restart_agent(0).unwrap();
    let again = d.cli(0, &args).unwrap();
    assert!(again.contains("endpoint stale: 10.10."), "{again}");
    let ip: std::net::Ipv4Addr = again.split_whitespace().nth(2).unwrap().parse().unwrap();
    wait_for(Duration::from_secs(5), || {
        d.hosts[0]
            .maps()
            .is_ok_and(|m| m.arp.keys().any(|(_, a)| *a == ip.octets()))
    })
    .expect("the replaced endpoint is served");

    // An interface no record names (an attempt killed midway): the next attempt replaces it.
    let c = Netns::new(&overlay_tests::unique("efleftk")).unwrap();
    let (port, peer) = (port_name("blue", "killed"), peer_name("blue", "killed"));
    let alias = port_alias("blue", "killed");
    d.hosts[0]
        .ns
        .run(&format!(
            "ip link add {port} type veth peer name {peer} && ip link set {port} alias '{alias}'"
        ))
        .unwrap();
    let args = [
        "endpoint",
        "add",
        "killed",
        "--network",
        "blue",
        "--netns",
        &c.name,
    ];
    let done = d.cli(0, &args).unwrap();
    assert!(done.contains("endpoint killed: 10.10."), "{done}");
    // A live endpoint is not replaced: one line, nothing changed.
    let e = d.cli(0, &args).unwrap_err().to_string();
    assert!(e.contains("endpoint killed already exists on node"), "{e}");

    // `endpoint rm` of a name etcd no longer has, whose interface is still here (a removal
    // whose etcd write was applied and never answered).
    let (port, peer) = (port_name("blue", "orphan"), peer_name("blue", "orphan"));
    let alias = port_alias("blue", "orphan");
    d.hosts[0]
        .ns
        .run(&format!(
            "ip link add {port} type veth peer name {peer} && ip link set {port} alias '{alias}'"
        ))
        .unwrap();
    let out = d.cli(0, &["endpoint", "rm", "orphan"]).unwrap();
    assert!(out.contains("its interface is removed"), "{out}");
    assert!(d.hosts[0].ns.run(&format!("ip link show {port}")).is_err());
    let e = d
        .cli(0, &["endpoint", "rm", "orphan"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no endpoint orphan"), "{e}");

    // `host join` after a join killed midway (its interfaces made, no record): replaced.
    let vni = bridge.trim_start_matches("ovbr");
    d.hosts[0]
        .ns
        .run(&format!(
            "ip link add ovh{vni} type veth peer name ovhp{vni}"
        ))
        .unwrap();
    let out = d.cli(0, &["host", "join", "--network", "blue"]).unwrap();
    assert!(out.contains("joined network blue as 10.10."), "{out}");
    let e = d
        .cli(0, &["host", "join", "--network", "blue"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("has already joined network blue"), "{e}");
    d.cli(0, &["host", "leave", "--network", "blue"]).unwrap();

    // `network create` again with the same settings (its first answer lost) just works; with
    // others it is refused as before.
    let vni = bridge.trim_start_matches("ovbr").to_string();
    let same = [
        "network",
        "create",
        "blue",
        "--subnet",
        "10.10.0.0/16",
        "--vni",
        &vni,
    ];
    let out = d.cli(0, &same).unwrap();
    assert!(out.contains("exists already with these settings"), "{out}");
    let other = [
        "network",
        "create",
        "blue",
        "--subnet",
        "10.20.0.0/16",
        "--vni",
        "7",
    ];
    let e = d.cli(0, &other).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert!(leftovers(&d, 0, "blue", "orphan", "none").is_empty());
}

#[test]
fn cni_add_and_del_caught_by_a_hung_etcd_leave_nothing_and_work_again() {
    let d = Deployment::new("efcni", &[true]).unwrap();
    let bridge = network(&d);
    let c = Netns::new(&overlay_tests::unique("efcnic")).unwrap();
    let netns = format!("/run/netns/{}", c.name);
    let env = [
        ("CNI_CONTAINERID", "hung-1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let entry = plugin_entry(&d, 0, "blue").to_string();
    let name = endpoint_name("blue-cni", "hung-1", "eth0");
    let cni = |command: &str| {
        let mut cmd = cni_command(&d, 0, command, &env);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let run = |command: &str| {
        use std::io::Write as _;
        let mut child = cni(command).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(entry.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let reply = |out: &Output| -> serde_json::Value {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    };

    // ADD caught midway: a CNI error in one line, nothing left.
    let (out, took, hung) = caught_midway(&d, &bridge, cni("ADD"), entry.as_bytes());
    let error = reply(&out);
    println!("CNI ADD against a hung etcd failed after {took:?}: {error}");
    assert!(!out.status.success(), "{error}");
    let msg = error["msg"].as_str().unwrap();
    one_line(msg);
    assert!(msg.contains("not added, nothing left behind"), "{msg}");
    assert!(took < BOUND, "{took:?}");
    drop(hung);
    assert_eq!(
        leftovers(&d, 0, "blue", &name, &bridge),
        Vec::<String>::new()
    );

    // The runtime tries again: it just works.
    let out = run("ADD");
    assert!(out.status.success(), "{}", reply(&out));

    // DEL while etcd hangs: the interface goes, the error (one line, "try again later") says
    // the record is not yet gone; the runtime's retry removes it; a DEL of nothing succeeds.
    let hung = Hung::stop(&d);
    let started = Instant::now();
    let out = run("DEL");
    let error = reply(&out);
    println!(
        "CNI DEL against a hung etcd failed after {:?}: {error}",
        started.elapsed()
    );
    assert!(!out.status.success());
    assert_eq!(error["code"], 11, "{error}");
    one_line(error["msg"].as_str().unwrap());
    assert!(started.elapsed() < BOUND);
    let port = port_name("blue", &name);
    assert!(
        d.hosts[0].ns.run(&format!("ip link show {port}")).is_err(),
        "{port} is gone"
    );
    drop(hung);
    for _ in 0..2 {
        let out = run("DEL");
        assert!(out.status.success(), "{}", reply(&out));
    }
    assert_eq!(
        leftovers(&d, 0, "blue", &name, &bridge),
        Vec::<String>::new()
    );
}

#[test]
fn a_docker_endpoint_caught_by_a_hung_etcd_leaves_nothing_and_works_again() {
    let d = Deployment::new("efdock", &[true]).unwrap();
    let bridge = network(&d);
    let docker = DockerHost::start(&d, 0, "efdockh").unwrap();
    docker
        .create_network("blue", &["--subnet", "10.10.0.0/16", "-o", "network=blue"])
        .unwrap();
    let network_id = docker
        .docker(&["network", "inspect", "-f", "{{.Id}}", "blue"])
        .unwrap();
    let request = serde_json::json!({ "PoolID": "10.10.0.0/16", "Address": "", "Options": {} });
    let address = docker
        .plugin_call("IpamDriver.RequestAddress", &request)
        .unwrap()["Address"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint_id = format!("{:012x}{}", std::process::id(), "0".repeat(52));
    let create = serde_json::json!({
        "NetworkID": network_id,
        "EndpointID": endpoint_id,
        "Interface": { "Address": address },
    });
    let name = overlay_agent::runtimes::docker::endpoint_name(&endpoint_id);

    // CreateEndpoint caught midway, as dockerd sends it: an error reply in one line.
    let held = lock::try_exclusive(&bridge).unwrap().unwrap();
    let (reply, took, hung) = std::thread::scope(|s| {
        let call = s.spawn(|| docker.plugin_call("NetworkDriver.CreateEndpoint", &create));
        wait_for(Duration::from_secs(20), || anyone_has_open(&bridge))
            .expect("the plugin reached the bridge lock");
        let hung = Hung::stop(&d);
        let started = Instant::now();
        drop(held);
        let reply = call.join().unwrap().unwrap();
        (reply, started.elapsed(), hung)
    });
    println!("CreateEndpoint against a hung etcd failed after {took:?}: {reply}");
    let err = reply["Err"].as_str().expect("an error reply");
    one_line(err);
    // Caught while registering (Docker gives the address): etcd received the write and hung,
    // so the undo could not ask it, and the error says what may remain. The write is applied
    // the moment etcd resumes; the driver, which outlives the attempt, removes it then.
    assert!(err.contains("endpoint docker-"), "{err}");
    assert!(err.contains("not added"), "{err}");
    assert!(took < BOUND, "{took:?}");
    drop(hung);
    wait_for(Duration::from_secs(20), || {
        !d.etcd_get_prefix("").unwrap_or_default().contains(&name)
    })
    .unwrap_or_else(|_| panic!("{name} stays in etcd:\n{}", docker.plugin_log()));
    let late = docker
        .plugin_log()
        .contains("applied after its attempt failed, removed");
    println!("the registration was applied after the failure, and removed: {late}");
    assert_eq!(
        leftovers(&d, 0, "blue", &name, &bridge),
        Vec::<String>::new()
    );

    // dockerd asks again (or the user runs the container again): it just works, and goes.
    let reply = docker
        .plugin_call("NetworkDriver.CreateEndpoint", &create)
        .unwrap();
    assert!(reply.get("Err").is_none(), "{reply}");
    let delete = serde_json::json!({ "NetworkID": network_id, "EndpointID": endpoint_id });
    for _ in 0..2 {
        let reply = docker
            .plugin_call("NetworkDriver.DeleteEndpoint", &delete)
            .unwrap();
        assert!(reply.get("Err").is_none(), "{reply}");
    }
    assert_eq!(
        leftovers(&d, 0, "blue", &name, &bridge),
        Vec::<String>::new()
    );
}
