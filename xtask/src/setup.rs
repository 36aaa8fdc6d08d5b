//! `cargo xtask setup`: installs what is missing and nothing else, and says what it installed.
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, probe, step};

/// Debian packages the project runs: iproute2 (ip, bridge), the test tools, etcd, protoc.
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "etcd-server",
    "etcd-client",
    "iperf3",
    "sockperf",
    "protobuf-compiler",
    "tcpdump",
    "tshark",
    "bpftool",
    "python3-scapy",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker links the nightly toolchain's own libLLVM (no system LLVM 22 exists): its RUNPATH
/// points here, so these symlinks must stay.
const LLVM_PREFIX: &str = ".local/overlay-llvm";

pub fn run() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "must run as root: it installs Debian packages, loads eBPF programs and creates network namespaces (try: sudo -E cargo xtask ...)"
        );
    }
    step("setup")?;
    let mut installed = Vec::new();
    debian_packages(&mut installed)?;
    rust_src(&mut installed)?;
    bpf_linker(&mut installed)?;
    if installed.is_empty() {
        println!("    everything was already installed");
    } else {
        println!("    installed: {}", installed.join(", "));
    }
    Ok(())
}

fn debian_packages(installed: &mut Vec<String>) -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            probe("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("    apt-get install {}", missing.join(" "));
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("DEBIAN_FRONTEND", "noninteractive") };
    util::run("apt-get", &["update", "-qq"])
        .context("apt-get update (are Debian's mirrors reachable?)")?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    util::run("apt-get", &args)
        .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    installed.extend(missing.iter().map(|s| s.to_string()));
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    probe("rustc", &["+nightly", "--print", "sysroot"])
        .map(PathBuf::from)
        .context(
            "no nightly toolchain: the eBPF programs need one (rustup toolchain install nightly)",
        )
}

fn rust_src(installed: &mut Vec<String>) -> Result<()> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.exists() {
        return Ok(());
    }
    println!("    rustup component add rust-src --toolchain nightly");
    util::run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )?;
    installed.push("rust-src (nightly)".into());
    Ok(())
}

fn bpf_linker(installed: &mut Vec<String>) -> Result<()> {
    if probe("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.ends_with("-nightly"))
        .with_context(|| format!("no libLLVM.so.*-nightly in {}", lib.display()))?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = PathBuf::from(home).join(LLVM_PREFIX);
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in ["libLLVM.so", llvm.as_str()] {
        let path = prefix_lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(lib.join(&llvm), &path)
            .with_context(|| format!("linking {}", path.display()))?;
    }
    println!(
        "    cargo +nightly install bpf-linker {BPF_LINKER_VERSION} (against {llvm}, about 2 minutes)"
    );
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("LLVM_PREFIX", &prefix) };
    util::run(
        "cargo",
        &[
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ],
    )
    .context("building bpf-linker")?;
    installed.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}
