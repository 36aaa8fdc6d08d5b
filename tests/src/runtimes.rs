//! What the container runtimes' tests share: an image without a registry (a busybox-static
//! rootfs, as `../shared/RUNTIMES.md` has it), and our CNI plugin where runtimes look for it.
use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::sh;

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
