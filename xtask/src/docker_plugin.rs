//! `cargo xtask docker-plugin [--out DIR] [--binary PATH]`: the directory `docker plugin create
//! overlay-ebpf DIR` takes, so Docker runs the driver as a managed plugin without a registry:
//! `config.json` (deploy/docker-plugin/config.json: the interfaces, host networking, the
//! capabilities and mounts, the settings as plugin env) and `rootfs/` holding
//! `/usr/bin/overlay-agent`.
//!
//! The binary is static (built for x86_64-unknown-linux-musl, ring's C with musl-gcc), so the
//! rootfs needs nothing else. `--binary` takes one already built instead (the tests give the
//! debug one, which a release musl build would take minutes to replace); whatever shared
//! libraries it needs, as `ldd` lists them, are copied beside it at the same paths.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The target of the static binary (setup adds it with rustup, and musl-tools for its C).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// Where the binary lives in the plugin's rootfs (config.json's entrypoint).
const IN_ROOTFS: &str = "usr/bin/overlay-agent";

/// The default output: target/docker-plugin.
pub fn default_out() -> PathBuf {
    util::workspace_root().join("target/docker-plugin")
}

/// Writes the plugin directory `out` (its config.json and rootfs/ replaced) from `binary`, or
/// from a static release build if none is given.
pub fn build(out: &Path, binary: Option<&Path>) -> Result<()> {
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => static_binary()?,
    };
    util::step(&format!("plugin directory {}", out.display()))?;
    let rootfs = out.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    let libraries = shared_libraries(&binary)?;
    copy(&binary, &rootfs.join(IN_ROOTFS), 0o755)?;
    // Debug info is of no use in a plugin and is most of a debug build (240 MB of 260): Docker
    // copies the rootfs on every `plugin create`.
    let copied = fs::canonicalize(rootfs.join(IN_ROOTFS))?;
    util::run("strip", &["--strip-debug", &copied.to_string_lossy()])?;
    for lib in &libraries {
        let relative = lib.strip_prefix("/").unwrap_or(lib);
        copy(lib, &rootfs.join(relative), 0o755)?;
    }
    // Mount points runc would otherwise make; the driver keeps its state under /var/lib.
    for dir in ["proc", "sys", "dev", "etc", "tmp", "run", "var/lib/overlay"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let config = util::workspace_root().join("deploy/docker-plugin/config.json");
    copy(&config, &out.join("config.json"), 0o644)?;
    if libraries.is_empty() {
        println!("    {} (static)", binary.display());
    } else {
        let names: Vec<_> = libraries.iter().map(|l| l.display().to_string()).collect();
        println!("    {} with {}", binary.display(), names.join(", "));
    }
    println!(
        "    docker plugin create overlay-ebpf {}   (then docker plugin set ..., docker plugin enable overlay-ebpf)",
        out.display()
    );
    Ok(())
}

/// `overlay-agent` built for [`STATIC_TARGET`] in release.
fn static_binary() -> Result<PathBuf> {
    util::step(&format!(
        "building overlay-agent for {STATIC_TARGET} (release, static)"
    ))?;
    util::cargo(&[
        "build",
        "--release",
        "--target",
        STATIC_TARGET,
        "-p",
        "overlay-agent",
        "--bin",
        "overlay-agent",
    ])?;
    let binary = util::workspace_root()
        .join("target")
        .join(STATIC_TARGET)
        .join("release/overlay-agent");
    if !shared_libraries(&binary)?.is_empty() {
        bail!("{} is not static", binary.display());
    }
    Ok(binary)
}

/// The shared libraries `binary` loads (the dynamic loader included), as `ldd` resolves them
/// on this machine; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let said = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    if said.contains("not a dynamic executable") || said.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {}: {}", binary.display(), said.trim());
    }
    Ok(parse_ldd(&text))
}

/// The paths in ldd's lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `from` (following links) to `to`, its directories made, with `mode`.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    /// config.json is what Docker reads: JSON, the entrypoint where the binary goes, both
    /// interfaces, and every setting one the agent reads.
    #[test]
    fn the_config_names_the_binary_the_interfaces_and_known_settings() {
        let path = util::workspace_root().join("deploy/docker-plugin/config.json");
        let config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(config["entrypoint"][0], format!("/{IN_ROOTFS}"));
        assert_eq!(
            config["interface"]["types"],
            serde_json::json!(["docker.networkdriver/1.0", "docker.ipamdriver/1.0"])
        );
        assert_eq!(config["network"]["type"], "host");
        let agent = fs::read_to_string(
            util::workspace_root().join("overlay-agent/src/bin/overlay-agent/args.rs"),
        )
        .unwrap();
        for env in config["env"].as_array().unwrap() {
            let name = env["name"].as_str().unwrap();
            assert!(
                name == "RUST_LOG" || agent.contains(&format!("env = \"{name}\"")),
                "{name} is no setting of overlay-agent"
            );
        }
    }
}
