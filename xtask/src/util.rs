//! Running commands, with the command line in every error.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

pub fn step(what: &str) -> Result<()> {
    println!("==> {what}");
    Ok(())
}

pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Result<()> {
    let program = program.as_ref();
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "{} {} failed ({status})",
            program.to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run("cargo", args)
}

/// `cargo test`, echoing its output, then one closing line that adds up every test binary's
/// "test result:" line (cargo's own last line is a doc-test run, often of zero tests).
pub fn cargo_test(args: &[&str]) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            passed += count_before(result, " passed");
            failed += count_before(result, " failed");
            ignored += count_before(result, " ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let long = match ignored {
        0 => String::new(),
        n => format!(", {n} ignored (the long-running ones: --long runs them)"),
    };
    println!("summary: {passed} passed, {failed} failed{long}");
    if !status.success() || failed > 0 {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// The number just before `label` in "ok. 11 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `cargo` run from a crate's directory (so its toolchain and target settings apply).
pub fn cargo_in(dir: &str, args: &[&str]) -> Result<()> {
    let status = Command::new("cargo")
        .args(args)
        .current_dir(workspace_root().join(dir))
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} (in {dir}) failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Output of a command that is allowed to fail (probing what is installed).
pub fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Namespaces and pins a killed test or demo left behind: their names start with the prefix
/// `overlay_tests::unique` gives them (`ovt-`).
pub fn clean_test_leftovers() {
    // Agents, plugins and etcd servers of a killed run: their command lines name the test pin
    // root or a leftover directory.
    // The Docker tests' dockerd, its containerd and their shims name their directory.
    for pattern in [
        "--pin-root /sys/fs/bpf/overlay-test",
        "--data-dir /tmp/ovt-",
        "--data-root /tmp/ovt-",
        "--config /tmp/ovt-",
        "-address /tmp/ovt-",
    ] {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--", pattern])
            .status();
    }
    if let Some(list) = probe("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with("ovt-") {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/overlay-test");
}
