//! What the container runtimes' tests share: an image without a registry (a busybox-static
//! rootfs, as `../shared/RUNTIMES.md` has it), and our CNI plugin where runtimes look for it.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    deployment::{Deployment, built_binary},
    netns::sh,
};

/// A busybox rootfs as a tar, made once per test process: `docker import`, `podman import`
/// and (via `podman save`) `ctr image import` take it.
pub fn toybox_tar() -> Result<PathBuf> {
    static TAR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TAR.get_or_init(|| make_toybox().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn make_toybox() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(crate::unique("toybox"));
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    if !Path::new("/bin/busybox").exists() {
        bail!("/bin/busybox is missing: `cargo xtask setup` installs busybox-static");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let (root_s, tar) = (root.display(), dir.join("rootfs.tar"));
    sh(&format!(
        "chroot {root_s} /bin/busybox --install -s && tar -C {root_s} -cf {} .",
        tar.display()
    ))
    .context("making the toybox rootfs")?;
    Ok(tar)
}

/// What a CNI plugin printed, and whether it succeeded.
#[derive(Debug)]
pub struct CniReply {
    pub ok: bool,
    /// stdout as JSON (Null when empty).
    pub json: serde_json::Value,
    pub stderr: String,
    pub took: std::time::Duration,
}

impl CniReply {
    /// The error object's code (0 on success).
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }

    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

/// One call of our CNI plugin as a runtime on `host` of `d` makes it: the environment, the
/// plugin entry on stdin, run inside the host's network namespace.
pub fn cni(
    d: &Deployment,
    host: usize,
    command: &str,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<CniReply> {
    let started = std::time::Instant::now();
    let mut child = cni_command(d, host, command, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the CNI plugin")?;
    child.stdin.take().expect("piped").write_all(stdin)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(CniReply {
        ok: out.status.success(),
        json: if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("plugin printed {text:?}"))?
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    })
}

/// A runtime's ADD of container `id` (interface `eth0`) in the namespace named `netns` to
/// overlay network `network`, on `host`.
pub fn cni_add(
    d: &Deployment,
    host: usize,
    id: &str,
    netns: &str,
    network: &str,
) -> Result<CniReply> {
    let netns = format!("/run/netns/{netns}");
    let env = [
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let entry = plugin_entry(d, host, network).to_string();
    cni(d, host, "ADD", &env, entry.as_bytes())
}

/// The plugin's command line with CNI's environment, not yet started.
pub fn cni_command(d: &Deployment, host: usize, command: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.hosts[host].name()))
        .arg(built_binary("overlay-cni"))
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_NETNS")
        .env_remove("CNI_IFNAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The plugin entry a runtime on `host` passes for overlay network `network` (what a conflist
/// holds, with `name` and `cniVersion` added as runtimes do).
pub fn plugin_entry(d: &Deployment, host: usize, network: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("{network}-cni"),
        "type": "overlay",
        "network": network,
        "node": d.hosts[host].name(),
        "runDir": d.run_dir(),
    })
}

/// A scratch directory for one runtime on one host, with our plugin where the runtime looks
/// for plugins (`bin/overlay`, and `loopback`, which ctr also runs) and a conflist for overlay
/// network `network` in `conf/`, named `config`.
fn cni_dirs(
    d: &Deployment,
    host: usize,
    runtime: &str,
    network: &str,
    config: &str,
) -> Result<PathBuf> {
    let dir = d.dir().join(format!("{runtime}-h{}", host + 1));
    let (bin, conf) = (dir.join("bin"), dir.join("conf"));
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&conf)?;
    std::os::unix::fs::symlink(built_binary("overlay-cni"), bin.join("overlay"))?;
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.join("loopback"))?;
    let mut entry = plugin_entry(d, host, network);
    let entry = entry.as_object_mut().expect("an object");
    entry.remove("cniVersion");
    entry.remove("name");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": config,
        "plugins": [entry],
    });
    std::fs::write(
        conf.join(format!("10-{config}.conflist")),
        serde_json::to_string_pretty(&conflist)?,
    )?;
    Ok(dir)
}

/// Runs `cmd` (a shell command line) in host `host`'s network namespace; its stdout, or an
/// error with its output.
fn on_host(ns: &str, cmd: &str, env: &[(&str, &Path)]) -> Result<String> {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .args(["sh", "-c", cmd]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Podman 4.3 with its CNI backend on one host, with a configuration of its own
/// (`CONTAINERS_CONF`: the machine's stays as it is), its own storage, and the toybox image.
pub struct Podman {
    /// The host's network namespace.
    ns: String,
    dir: PathBuf,
}

impl Podman {
    pub fn new(d: &Deployment, host: usize, network: &str) -> Result<Self> {
        // Podman's `--network` names the configuration: the overlay network's name.
        let dir = cni_dirs(d, host, "podman", network, network)?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\n\
                 # root lacks CAP_SYS_RESOURCE here: runc fails with the default rlimits\n\
                 default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{0}/bin\"]\nnetwork_config_dir = \"{0}/conf\"\n",
                dir.display()
            ),
        )?;
        let podman = Self {
            ns: d.hosts[host].name().to_string(),
            dir,
        };
        podman.run(&format!(
            "import {} localhost/toybox:latest",
            toybox_tar()?.display()
        ))?;
        Ok(podman)
    }

    /// `podman <args>` on the host.
    pub fn run(&self, args: &str) -> Result<String> {
        let dir = self.dir.display();
        on_host(
            &self.ns,
            &format!(
                "podman --root {dir}/root --runroot {dir}/runroot --tmpdir {dir}/tmp \
                 --storage-driver vfs {args}"
            ),
            &[("CONTAINERS_CONF", &self.dir.join("containers.conf"))],
        )
    }

    /// A container on `network` running `sleep`, detached.
    pub fn start(&self, name: &str, network: &str) -> Result<()> {
        self.run(&format!(
            "run -d --name {name} --network {network} localhost/toybox:latest sleep 1000"
        ))
        .map(drop)
    }

    pub fn exec(&self, name: &str, cmd: &str) -> Result<String> {
        self.run(&format!("exec {name} {cmd}"))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run("rm -af -t 0");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// containerd 1.6 on one host, standalone (its own root, state and socket), and `ctr run
/// --cni`, which takes its conflist from /etc/cni/net.d and its plugins from /opt/cni/bin: each
/// ctr runs in a mount namespace of its own where those are this host's directories.
pub struct Containerd {
    /// The host's network namespace.
    ns: String,
    dir: PathBuf,
    daemon: std::process::Child,
}

impl Containerd {
    pub fn new(d: &Deployment, host: usize, network: &str, image: &Path) -> Result<Self> {
        let dir = cni_dirs(d, host, "containerd", network, &Self::config(network))?;
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\naddress = \"{0}/containerd.sock\"\n",
                dir.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", d.hosts[host].name()))
            .arg("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let containerd = Self {
            ns: d.hosts[host].name().to_string(),
            dir,
            daemon,
        };
        let socket = containerd.dir.join("containerd.sock");
        crate::deployment::wait_for(std::time::Duration::from_secs(10), || socket.exists())
            .context("containerd did not open its socket")?;
        containerd.ctr(&format!("image import {}", image.display()))?;
        Ok(containerd)
    }

    /// The name of its network configuration: not podman's, so that each runtime's GC only
    /// collects its own attachments.
    pub fn config(network: &str) -> String {
        format!("{network}-ctr")
    }

    /// `ctr <args>` against this containerd, with this host's CNI directories.
    pub fn ctr(&self, args: &str) -> Result<String> {
        std::fs::create_dir_all("/etc/cni/net.d")?;
        std::fs::create_dir_all("/opt/cni/bin")?;
        let dir = self.dir.display();
        on_host(
            &self.ns,
            &format!(
                "unshare -m --propagation private sh -c 'mount --bind {dir}/conf /etc/cni/net.d && \
                 mount --bind {dir}/bin /opt/cni/bin && exec ctr -a {dir}/containerd.sock {args}'"
            ),
            &[],
        )
    }

    /// A task running `sleep`, detached, with CNI networking.
    pub fn start(&self, name: &str) -> Result<()> {
        self.ctr(&format!(
            "run -d --cni localhost/toybox:latest {name} sleep 1000"
        ))
        .map(drop)
    }

    pub fn exec(&self, name: &str, cmd: &str) -> Result<String> {
        self.ctr(&format!(
            "task exec --exec-id x{} {name} {cmd}",
            std::process::id()
        ))
    }

    /// Kills and removes a task and its container as `ctr` does it: no CNI DEL.
    pub fn kill(&self, name: &str) -> Result<()> {
        let _ = self.ctr(&format!("task kill -s KILL {name}"));
        crate::deployment::wait_for(std::time::Duration::from_secs(5), || {
            self.ctr(&format!("task rm {name}")).is_ok()
                || !self.ctr("task ls").is_ok_and(|ls| ls.contains(name))
        })?;
        self.ctr(&format!("container rm {name}")).map(drop)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Ok(tasks) = self.ctr("task ls -q") {
            for task in tasks.lines() {
                let _ = self.kill(task.trim());
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The toybox image as a docker archive (`ctr image import` takes that), saved once per test
/// process from a podman store of its own.
pub fn toybox_archive(podman: &Podman) -> Result<PathBuf> {
    let archive = podman.dir.join("toybox-archive.tar");
    podman.run(&format!(
        "save --format docker-archive -o {} localhost/toybox:latest",
        archive.display()
    ))?;
    Ok(archive)
}
