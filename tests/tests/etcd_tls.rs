//! etcd over TLS with client certificates and RBAC: a second etcd, beside the deployment's,
//! that requires a client certificate signed by its CA and authenticates users; a role limited
//! to the overlay's prefix. The agent and the CLI work with the right certificate and user, and
//! every wrong one fails in one line that says which and why, with nothing written.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::Duration,
};

use overlay_tests::{
    deployment::{Deployment, agent_binary, wait_for},
    fixture::TEST_PIN_ROOT,
};

const TLS_URL: &str = "https://10.0.0.254:2389";

/// A CA, a server certificate for etcd's address, client certificates, another CA's client
/// certificate, and password files, in `dir`.
fn make_certs(dir: &Path) {
    use overlay_tests::certs;
    certs::make_ca_and_server(dir, "10.0.0.254").unwrap();
    certs::make_other_ca(dir, "other-ca").unwrap();
    for who in ["overlay", "root"] {
        certs::make_client(dir, "ca", who).unwrap();
    }
    // Its CN is a real user's, but another CA signed it.
    let (pem, key) = certs::make_client(dir, "other-ca", "overlay").unwrap();
    std::fs::rename(pem, dir.join("stranger.pem")).unwrap();
    std::fs::rename(key, dir.join("stranger.key")).unwrap();
    certs::make_client(dir, "ca", "overlay").unwrap();
    // The right CA and user, but it expired yesterday.
    let (pem, key) = certs::make_client_valid_for(dir, "ca", "overlay", -1).unwrap();
    std::fs::rename(pem, dir.join("expired.pem")).unwrap();
    std::fs::rename(key, dir.join("expired.key")).unwrap();
    certs::make_client(dir, "ca", "overlay").unwrap();
    for (file, text) in [
        ("overlay.password", "overlay-secret\n"),
        ("wrong.password", "wrong\n"),
        ("nobody.password", "nobody-secret\n"),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// etcd requiring client certificates, on TLS_URL in the deployment's etcd namespace.
struct TlsEtcd {
    child: Child,
    dir: PathBuf,
    wire: String,
}

impl TlsEtcd {
    fn start(d: &Deployment) -> TlsEtcd {
        let dir = d.dir().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        make_certs(&dir);
        let c = |f: &str| dir.join(f).display().to_string();
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let peer = "http://127.0.0.1:2390";
        let child = Command::new("ip")
            .args(["netns", "exec", &d.wire.name, "etcd", "--name", "tls"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", TLS_URL])
            .args(["--advertise-client-urls", TLS_URL])
            .args(["--listen-peer-urls", peer])
            .args(["--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("tls={peer}")])
            .args([
                "--cert-file",
                &c("server.pem"),
                "--key-file",
                &c("server.key"),
            ])
            .args(["--trusted-ca-file", &c("ca.pem"), "--client-cert-auth"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let etcd = TlsEtcd {
            child,
            dir,
            wire: d.wire.name.clone(),
        };
        wait_for(Duration::from_secs(15), || {
            etcd.ctl("root", &["endpoint", "health"]).status.success()
        })
        .unwrap();
        // RBAC: a role with read/write on the overlay's prefix only, a user with it, a user
        // without it, and root to enable authentication.
        for args in [
            &["user", "add", "root:root-secret"][..],
            &["role", "add", "overlay"],
            &[
                "role",
                "grant-permission",
                "overlay",
                "--prefix=true",
                "readwrite",
                "/overlay/",
            ],
            &["user", "add", "overlay:overlay-secret"],
            &["user", "grant-role", "overlay", "overlay"],
            &["user", "add", "nobody:nobody-secret"],
            &["auth", "enable"],
        ] {
            let out = etcd.ctl("root", args);
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
        etcd
    }

    /// etcdctl with `who`'s certificate (and root's password once auth is on).
    fn ctl(&self, who: &str, args: &[&str]) -> Output {
        let c = |f: &str| self.dir.join(f).display().to_string();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.wire,
                "etcdctl",
                "--endpoints",
                TLS_URL,
            ])
            .args(["--cacert", &c("ca.pem")])
            .args(["--cert", &c(&format!("{who}.pem"))])
            .args(["--key", &c(&format!("{who}.key"))])
            .args(["--user", "root:root-secret", "--command-timeout=3s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap()
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `overlay-agent` on host `host` against the TLS etcd, with `creds` as its etcd flags.
fn overlay(d: &Deployment, host: usize, creds: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.hosts[host].name()))
        .arg(agent_binary())
        .args(["--etcd", TLS_URL, "--node", d.hosts[host].name()])
        .args(["--pin-root", TEST_PIN_ROOT])
        .arg("--run-dir")
        .arg(d.run_dir())
        .args(creds)
        .args(args)
        .env_remove("OVERLAY_ETCD_PASSWORD")
        .env("RUST_LOG", "warn");
    cmd
}

fn flags(etcd: &TlsEtcd, ca: &str, cert: &str, user: Option<(&str, &str)>) -> Vec<String> {
    let mut f = vec![
        "--etcd-cacert".to_string(),
        etcd.file(ca),
        "--etcd-cert".into(),
        etcd.file(&format!("{cert}.pem")),
        "--etcd-key".into(),
        etcd.file(&format!("{cert}.key")),
    ];
    if let Some((user, password_file)) = user {
        f.extend([
            "--etcd-user".into(),
            user.into(),
            "--etcd-password-file".into(),
            etcd.file(password_file),
        ]);
    }
    f
}

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn etcd_over_tls_with_client_certificates_and_a_role_limited_to_the_prefix() {
    // One host without our agent: this test starts it against the TLS etcd itself.
    let d = Deployment::new("tls", &[false]).unwrap();
    let etcd = TlsEtcd::start(&d);
    let good = flags(
        &etcd,
        "ca.pem",
        "overlay",
        Some(("overlay", "overlay.password")),
    );

    // The CLI with the right certificate and user: works.
    let create = |creds: &[String], name: &str| {
        overlay(
            &d,
            0,
            creds,
            &[
                "network",
                "create",
                name,
                "--subnet",
                "10.30.0.0/16",
                "--vni",
                "30",
            ],
        )
        .output()
        .unwrap()
    };
    let out = create(&good, "blue");
    assert!(out.status.success(), "{out:?}");

    // Every wrong credential: one line that names it, and nothing written.
    let wrong: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "the CA that did not sign etcd's certificate",
            flags(
                &etcd,
                "other-ca.pem",
                "overlay",
                Some(("overlay", "overlay.password")),
            ),
            "not signed by the CA",
        ),
        (
            "a client certificate from another CA",
            flags(
                &etcd,
                "ca.pem",
                "stranger",
                Some(("overlay", "overlay.password")),
            ),
            "refused the client certificate",
        ),
        (
            "an expired client certificate",
            flags(
                &etcd,
                "ca.pem",
                "expired",
                Some(("overlay", "overlay.password")),
            ),
            "refused the client certificate",
        ),
        (
            "no client certificate",
            vec!["--etcd-cacert".into(), etcd.file("ca.pem")],
            "it wants a client certificate",
        ),
        (
            "a wrong password",
            flags(
                &etcd,
                "ca.pem",
                "overlay",
                Some(("overlay", "wrong.password")),
            ),
            "authentication failed",
        ),
        (
            "a user without permission on the prefix",
            flags(
                &etcd,
                "ca.pem",
                "overlay",
                Some(("nobody", "nobody.password")),
            ),
            "permission denied",
        ),
        (
            "a certificate without its key",
            vec![
                "--etcd-cacert".into(),
                etcd.file("ca.pem"),
                "--etcd-cert".into(),
                etcd.file("overlay.pem"),
            ],
            "--etcd-cert and --etcd-key go together",
        ),
        (
            "a password file that does not exist",
            flags(
                &etcd,
                "ca.pem",
                "overlay",
                Some(("overlay", "missing.password")),
            ),
            "missing.password",
        ),
    ];
    for (case, creds, says) in &wrong {
        let started = std::time::Instant::now();
        let out = create(creds, "red");
        assert!(!out.status.success(), "{case}: {out:?}");
        let line = stderr_line(&out);
        eprintln!("{case}: {line}");
        assert!(line.contains(says), "{case}: {line}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{case}: took {:?}",
            started.elapsed()
        );
    }
    // Plaintext to the TLS port, with the right user: refused, clearly.
    let mut plain = overlay(&d, 0, &[], &["network", "ls"]);
    plain.args(["--etcd", "http://10.0.0.254:2389"]);
    let out = plain.output().unwrap();
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("etcd unreachable at http://10.0.0.254:2389"));
    let keys = etcd.ctl(
        "root",
        &["get", "--prefix", "--keys-only", "/overlay/networks/"],
    );
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.contains("/overlay/networks/blue") && !keys.contains("red"),
        "{keys}"
    );

    // The agent with the same credentials registers, serves the network, and a container
    // attached with the CLI is in its maps.
    let log = std::fs::File::create(d.dir().join("tls-agent.log")).unwrap();
    let mut agent = overlay(
        &d,
        0,
        &good,
        &["run", "--underlay", "eth1", "--lease-ttl", "3"],
    )
    .env("RUST_LOG", "info")
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .unwrap();
    let registered = wait_for(Duration::from_secs(15), || {
        String::from_utf8_lossy(
            &etcd
                .ctl(
                    "root",
                    &["get", "--prefix", "--keys-only", "/overlay/nodes/"],
                )
                .stdout,
        )
        .contains(d.hosts[0].name())
    });
    let agent_log = || std::fs::read_to_string(d.dir().join("tls-agent.log")).unwrap_or_default();
    assert!(registered.is_ok(), "{}", agent_log());
    let c1 = overlay_tests::netns::Netns::new("ovt-tlsc1").unwrap();
    let out = overlay(
        &d,
        0,
        &good,
        &[
            "endpoint",
            "add",
            "c1",
            "--network",
            "blue",
            "--netns",
            &c1.name,
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", agent_log());
    let maps = d.hosts[0].maps().unwrap();
    assert!(maps.endpoints.keys().any(|(vni, _)| *vni == 30), "{maps:?}");
    // The CNI plugin reaches the TLS etcd as the agent does, from the agent's status alone.
    let c2 = overlay_tests::netns::Netns::new("ovt-tlsc2").unwrap();
    let reply = overlay_tests::runtimes::cni_add(&d, 0, "tls-c2", &c2.name, "blue").unwrap();
    assert!(reply.ok, "{reply:?}");
    // The agent's status names how it reaches etcd (paths and user, never the password).
    let status =
        std::fs::read_to_string(d.run_dir().join(format!("{}.json", d.hosts[0].name()))).unwrap();
    assert!(
        status.contains("overlay.password") && !status.contains("overlay-secret"),
        "{status}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
