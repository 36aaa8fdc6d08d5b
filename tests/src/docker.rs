//! A real dockerd per test host, and our `overlay-agent docker-plugin` beside it.
//!
//! Each dockerd runs in its host's network namespace and in a mount namespace of its own,
//! where a directory of the test's is bind-mounted over `/run/docker/plugins`: two dockerds on
//! one machine then each discover only their own host's plugin socket. The plugin runs in the
//! host's network namespace with the node's flags, as the CLI does, its socket in that
//! directory. Everything (data root, exec root, sockets, logs, state) lives in one temp
//! directory named with [`crate::unique`]; on drop the containers are removed, dockerd stopped
//! (it stops its containerd), anything left running from that directory killed, and the
//! directory removed.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{deployment::Deployment, deployment::wait_for, runtimes::toybox_tar};

/// The driver's name: the socket's file name in the plugin directory.
pub const DRIVER: &str = "overlay-ebpf";
/// The image every container runs (imported from [`toybox_tar`]).
pub const IMAGE: &str = "toybox";
/// Docker's content type for plugin calls.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// What the plugin logs once its socket listens.
const STARTED: &str = "Docker network and IPAM driver overlay-ebpf";

pub struct DockerHost {
    /// The Deployment host this daemon belongs to.
    pub host: usize,
    netns: String,
    dir: PathBuf,
    dockerd: Option<Child>,
    plugin: Option<Child>,
}

impl DockerHost {
    /// Our plugin, then dockerd, on host `host` of `d`, with the toybox image imported.
    pub fn start(d: &Deployment, host: usize, label: &str) -> Result<Self> {
        let mut me = Self::new(d, host, label)?;
        me.start_plugin(d)?;
        me.start_dockerd()?;
        me.import_image()?;
        Ok(me)
    }

    /// dockerd alone on host `host` of `d`, with the toybox image imported: for a managed
    /// plugin, which dockerd runs itself (its socket in this daemon's own
    /// `/run/docker/plugins/<id>/`).
    pub fn start_without_plugin(d: &Deployment, host: usize, label: &str) -> Result<Self> {
        let mut me = Self::new(d, host, label)?;
        me.start_dockerd()?;
        me.import_image()?;
        Ok(me)
    }

    fn new(d: &Deployment, host: usize, label: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique(label));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["plugins", "data", "exec"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Self {
            host,
            netns: d.hosts[host].name().to_string(),
            dir,
            dockerd: None,
            plugin: None,
        })
    }

    fn import_image(&self) -> Result<()> {
        let tar = toybox_tar()?;
        self.docker(&["import", &tar.display().to_string(), IMAGE])?;
        Ok(())
    }

    /// This daemon's own directory (the test's files may go there too; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("plugins").join(format!("{DRIVER}.sock"))
    }

    fn docker_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// dockerd's log so far (a managed plugin's output is in it, line by line).
    pub fn dockerd_log(&self) -> String {
        self.log("dockerd.log")
    }

    /// The plugin's log so far.
    pub fn plugin_log(&self) -> String {
        self.log("plugin.log")
    }

    fn plugin_starts(&self) -> usize {
        self.plugin_log().matches(STARTED).count()
    }

    /// Starts `overlay-agent docker-plugin` and waits for its socket.
    pub fn start_plugin(&mut self, d: &Deployment) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("plugin.log"))?;
        // A socket left by a killed plugin stays: the plugin must replace it itself.
        let before = self.plugin_starts();
        let child = d
            .base_command(self.host)
            .arg("docker-plugin")
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting overlay-agent docker-plugin")?;
        self.plugin = Some(child);
        wait_for(Duration::from_secs(10), || {
            self.plugin_starts() > before && self.socket().exists()
        })
        .with_context(|| format!("the plugin did not start:\n{}", self.plugin_log()))?;
        Ok(())
    }

    /// SIGKILL, as in a crash: its socket file stays behind, stale.
    pub fn kill_plugin(&mut self) {
        if let Some(mut child) = self.plugin.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn start_dockerd(&mut self) -> Result<()> {
        std::fs::create_dir_all("/run/docker/plugins")?;
        let (dir, sock) = (self.dir.display(), self.docker_socket());
        let script = format!(
            "mount --bind {dir}/plugins /run/docker/plugins && exec dockerd \
             --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
             --data-root {dir}/data --exec-root {dir}/exec -H unix://{} --pidfile {dir}/docker.pid",
            sock.display()
        );
        let log = std::fs::File::create(self.dir.join("dockerd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        self.dockerd = Some(child);
        wait_for(Duration::from_secs(20), || {
            self.docker_output(&["version"])
                .is_ok_and(|o| o.status.success())
        })
        .with_context(|| format!("dockerd did not answer:\n{}", self.log("dockerd.log")))?;
        Ok(())
    }

    /// The docker client against this daemon, success or not.
    pub fn docker_output(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.docker_socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running docker")
    }

    /// The docker client; Err with its stderr and the plugin's log if it fails.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let out = self.docker_output(args)?;
        if !out.status.success() {
            bail!(
                "docker {} failed on h{}: {}\nplugin log:\n{}",
                args.join(" "),
                self.host + 1,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.plugin_log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `docker network create -d overlay-ebpf --ipam-driver overlay-ebpf <extra> <name>`.
    pub fn create_network(&self, name: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["network", "create", "-d", DRIVER, "--ipam-driver", DRIVER];
        args.extend(extra);
        args.push(name);
        self.docker(&args)
    }

    /// `docker run -d --name <name> --network <network> toybox sleep 1000`; its address on
    /// that network.
    pub fn run(&self, name: &str, network: &str) -> Result<std::net::Ipv4Addr> {
        self.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            IMAGE,
            "sleep",
            "1000",
        ])?;
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let ip = self.docker(&["inspect", "-f", &format, name])?;
        ip.parse()
            .with_context(|| format!("container {name} has no address on {network}: {ip:?}"))
    }

    /// Runs a command in container `name`; its stdout, Err if it fails.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Result<String> {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        self.docker(&args)
    }

    /// The IPv6 address container `name` has on `network` (a dual-stack one).
    pub fn ipv6(&self, name: &str, network: &str) -> Result<std::net::Ipv6Addr> {
        let format =
            format!("{{{{(index .NetworkSettings.Networks \"{network}\").GlobalIPv6Address}}}}");
        let ip = self.docker(&["inspect", "-f", &format, name])?;
        ip.parse()
            .with_context(|| format!("container {name} has no IPv6 address on {network}: {ip:?}"))
    }

    /// One ping from container `name` with a short wait: true if answered.
    pub fn ping(&self, name: &str, to: impl Into<std::net::IpAddr>) -> bool {
        let to = to.into();
        let family = if to.is_ipv6() { "-6" } else { "-4" };
        let to = to.to_string();
        self.docker_output(&["exec", name, "ping", family, "-c", "1", "-W", "1", &to])
            .is_ok_and(|o| o.status.success())
    }

    /// One call straight to our plugin's socket, as dockerd makes it (its content type, a
    /// JSON body); the reply's JSON.
    pub fn plugin_call(&self, method: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(self.socket())?;
        let body = body.to_string();
        write!(
            stream,
            "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: {CONTENT_TYPE}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let (_, json) = reply
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP reply: {reply:?}"))?;
        serde_json::from_str(json).with_context(|| format!("{method} replied {reply:?}"))
    }

    fn stop(&mut self) {
        if self.dockerd.is_some()
            && let Ok(ids) = self.docker(&["ps", "-aq"])
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            let _ = self.docker_output(&args);
        }
        // Managed plugins a test left enabled: stopped by dockerd, not left to its shutdown.
        if self.dockerd.is_some()
            && let Ok(names) = self.docker(&["plugin", "ls", "--format", "{{.Name}}"])
        {
            for name in names.split_whitespace() {
                let _ = self.docker_output(&["plugin", "disable", "-f", name]);
            }
        }
        if let Some(mut child) = self.dockerd.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let stopped = wait_for(Duration::from_secs(15), || {
                child.try_wait().is_ok_and(|s| s.is_some())
            });
            if stopped.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.kill_plugin();
        // containerd and its shims, had dockerd left any: only processes started from our
        // directory.
        kill_processes_mentioning(&self.dir);
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILLs every process whose command line mentions `dir`.
fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
