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
