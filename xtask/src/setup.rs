//! `cargo xtask setup`: installs what is missing and nothing else, and says what it installed.
//!
//! What is missing is decided by what the build and the tests use — a program, a file, a
//! Python module — never by package names alone: a package can be installed and still lack a
//! file (protoc without protobuf's own `.proto` files is `protobuf-compiler` without
//! `libprotobuf-dev`, which it only recommends), and a file can move to another package.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, probe, step};

/// One thing the README's commands use, how to see that it is there, and the Debian 12
/// package that ships it.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    pub check: Check,
    pub package: &'static str,
    /// Who uses it: named when it is missing.
    pub used_by: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// A program found on PATH.
    Program(&'static str),
    /// A file at exactly this path.
    File(&'static str),
    /// A module Debian's own `/usr/bin/python3` imports (the tests run that one, not whatever
    /// `python3` comes first on PATH).
    Python(&'static str),
}

const fn req(check: Check, package: &'static str, used_by: &'static str) -> Requirement {
    Requirement {
        check,
        package,
        used_by,
    }
}

use Check::{File, Program, Python};

/// Everything `demo`, `test` and `bench` use from the system. A test checks that every
/// package here really ships what it is listed for, and that every `.proto` file
/// etcd-client's build imports from the system is here.
pub const REQUIREMENTS: &[Requirement] = &[
    req(
        Program("ip"),
        "iproute2",
        "every test host (netns, veth, routes)",
    ),
    req(
        Program("bridge"),
        "iproute2",
        "the kernel vxlan legacy host and bench",
    ),
    req(Program("ping"), "iputils-ping", "the demo and the tests"),
    req(
        Program("tracepath"),
        "iputils-tracepath",
        "the path MTU tests",
    ),
    req(Program("nsenter"), "util-linux", "agents in test hosts"),
    req(
        Program("dot"),
        "graphviz",
        "`cluster graph --format svg` and its test",
    ),
    req(
        Program("setpriv"),
        "util-linux",
        "the install test (the agent under the unit's capabilities)",
    ),
    req(
        Program("systemd-analyze"),
        "systemd",
        "the install test (systemd-analyze verify on the units)",
    ),
    req(Program("pkill"), "procps", "cleaning up after a killed run"),
    req(
        Program("etcd"),
        "etcd-server",
        "the demo, the tests and the bench",
    ),
    req(
        Program("etcdctl"),
        "etcd-client",
        "tests that write etcd by hand",
    ),
    req(
        Program("protoc"),
        "protobuf-compiler",
        "etcd-client's build",
    ),
    req(
        File("/usr/include/google/protobuf/descriptor.proto"),
        "libprotobuf-dev",
        "etcd-client's build (imported by etcd's version.proto)",
    ),
    req(
        File("/usr/include/google/protobuf/struct.proto"),
        "libprotobuf-dev",
        "etcd-client's build (imported by the openapiv2 annotations)",
    ),
    req(
        Program("iperf3"),
        "iperf3",
        "the demo, the tests and the bench",
    ),
    req(Program("sockperf"), "sockperf", "the bench (latency)"),
    req(
        Program("iperf"),
        "iperf",
        "the bench (multicast replication: iperf 2 has multicast, iperf3 not)",
    ),
    req(
        Program("ethtool"),
        "ethtool",
        "the bench (wire-like underlay, XDP mode) and wire tests",
    ),
    req(
        Program("tcpdump"),
        "tcpdump",
        "the interop and hostile tests",
    ),
    req(
        Program("tshark"),
        "tshark",
        "the interop test (VXLAN dissector)",
    ),
    req(
        Program("bpftool"),
        "bpftool",
        "the tests (attached programs)",
    ),
    req(Python("scapy"), "python3-scapy", "the hostile corpus"),
    req(
        Program("nft"),
        "nftables",
        "the wire tests (a container forwarding with NAT)",
    ),
    req(
        Program("dockerd"),
        "docker.io",
        "the runtime tests (Docker driver)",
    ),
    req(
        Program("podman"),
        "podman",
        "the runtime tests (CNI plugin)",
    ),
    req(
        Program("containerd"),
        "containerd",
        "the runtime tests (CNI plugin)",
    ),
    req(
        Program("ctr"),
        "containerd",
        "the runtime tests (CNI plugin)",
    ),
    req(
        Program("openssl"),
        "openssl",
        "the etcd TLS test (certificates made on the spot)",
    ),
    req(
        File("/usr/lib/cni/loopback"),
        "containernetworking-plugins",
        "the runtime tests (ctr run --cni sets up lo with it)",
    ),
    req(
        File("/bin/busybox"),
        "busybox-static",
        "the runtime tests (the containers' image)",
    ),
    req(
        Program("strip"),
        "binutils",
        "cargo xtask docker-plugin (debug info out of the plugin's binary)",
    ),
    req(
        Program("musl-gcc"),
        "musl-tools",
        "cargo xtask docker-plugin (ring's C in the static x86_64-unknown-linux-musl build)",
    ),
    req(Program("prometheus"), "prometheus", "the metrics test"),
    req(
        Program("promtool"),
        "prometheus",
        "the metrics test (promtool check metrics on a scrape)",
    ),
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
    musl_target(&mut installed)?;
    bpf_linker(&mut installed)?;
    if installed.is_empty() {
        println!("    everything was already installed");
    } else {
        println!("    installed: {}", installed.join(", "));
    }
    Ok(())
}

impl Check {
    pub fn is_met(self) -> bool {
        match self {
            Program(name) => find_program(name).is_some(),
            File(path) => Path::new(path).is_file(),
            Python(module) => {
                probe("/usr/bin/python3", &["-c", &format!("import {module}")]).is_some()
            }
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program(name) => write!(f, "the program {name}"),
            File(path) => write!(f, "{path}"),
            Python(module) => write!(f, "the Python module {module} (/usr/bin/python3)"),
        }
    }
}

/// The first executable `name` on PATH, or in the sbin directories a root shell has (where
/// Debian puts `bridge`, `ethtool`, `bpftool`, `nft`) when PATH lacks them.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn is_installed(package: &str) -> bool {
    probe("dpkg-query", &["-W", "-f=${Status}", package])
        // "install ok installed", or "hold ok installed" for a held package.
        .is_some_and(|s| s.ends_with("ok installed"))
}

fn missing() -> Vec<Requirement> {
    REQUIREMENTS
        .iter()
        .filter(|r| !r.check.is_met())
        .copied()
        .collect()
}

/// The packages that ship what is missing; a package that is installed and still lacks its
/// file is reinstalled (a removed or damaged file), one that is not is installed.
fn debian_packages(installed: &mut Vec<String>) -> Result<()> {
    let wanted = missing();
    if wanted.is_empty() {
        return Ok(());
    }
    for r in &wanted {
        println!(
            "    missing: {} ({}), from {}",
            r.check, r.used_by, r.package
        );
    }
    let mut packages: Vec<&str> = wanted.iter().map(|r| r.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let (reinstall, install): (Vec<&str>, Vec<&str>) =
        packages.iter().partition(|p| is_installed(p));
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("DEBIAN_FRONTEND", "noninteractive") };
    util::run("apt-get", &["update", "-qq"])
        .context("apt-get update (are Debian's mirrors reachable?)")?;
    for (list, extra) in [(&install, None), (&reinstall, Some("--reinstall"))] {
        if list.is_empty() {
            continue;
        }
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(extra);
        args.extend(list.iter());
        println!("    apt-get {}", args.join(" "));
        util::run("apt-get", &args)
            .with_context(|| format!("apt-get install {}", list.join(" ")))?;
    }
    installed.extend(packages.iter().map(|s| s.to_string()));
    // A package that installed but did not bring what it was installed for: say exactly what
    // is still missing and where it was expected to come from.
    let still: Vec<String> = missing()
        .iter()
        .map(|r| {
            format!(
                "{} (needed by {}; expected from {})",
                r.check, r.used_by, r.package
            )
        })
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join("; "));
    }
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
/// The standard library for the static binary of `cargo xtask docker-plugin`, for the
/// toolchain that builds the workspace.
fn musl_target(installed: &mut Vec<String>) -> Result<()> {
    let target = crate::docker_plugin::STATIC_TARGET;
    let sysroot = probe("rustc", &["--print", "sysroot"]).context("rustc is not on PATH")?;
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .exists()
    {
        return Ok(());
    }
    println!("    rustup target add {target}");
    util::run("rustup", &["target", "add", target])?;
    installed.push(format!("{target} (rustup target)"));
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

#[cfg(test)]
mod tests {
    //! These run after setup (`cargo xtask test` runs it first), on the real machine: they would
    //! have caught a setup that checks `protoc` but not the files protoc needs, even on a machine
    //! where every package happens to be installed.
    use std::collections::BTreeSet;

    use super::*;

    /// Where protoc finds protobuf's well-known types: `<its bin>/../include`, so for Debian's
    /// `/usr/bin/protoc`, `/usr/include`. etcd-client's build imports them from there.
    const PROTOC_INCLUDE: &str = "/usr/include";

    /// etcd-client's own `proto/` directory, wherever cargo unpacked the locked version.
    fn etcd_client_protos() -> PathBuf {
        // This platform's packages only: a build downloads no others (parking_lot's
        // redox_syscall, say), and offline metadata would want them all.
        let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let out = std::process::Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--offline", "--locked"])
            .args(["--filter-platform", &platform])
            .current_dir(util::workspace_root())
            .output()
            .expect("cargo metadata");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let manifest = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "etcd-client")
            .expect("etcd-client is a dependency")["manifest_path"]
            .as_str()
            .unwrap()
            .to_string();
        Path::new(&manifest).parent().unwrap().join("proto")
    }

    fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                proto_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path);
            }
        }
    }

    /// Every import of etcd-client's protos that its own tree does not hold comes from
    /// protoc's include directory, and setup requires each such file by path.
    #[test]
    fn every_system_proto_etcd_client_imports_is_required() {
        let root = etcd_client_protos();
        let mut files = Vec::new();
        proto_files(&root, &mut files);
        assert!(files.len() >= 5, "no protos under {}", root.display());
        let mut from_system = BTreeSet::new();
        for file in &files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let Some(rest) = line.trim().strip_prefix("import \"") else {
                    continue;
                };
                let import = rest.split('"').next().unwrap();
                if !root.join(import).is_file() {
                    from_system.insert(import.to_string());
                }
            }
        }
        // Not vacuous: etcd's version.proto imports descriptor.proto, the file this bug lacked.
        assert!(
            from_system.contains("google/protobuf/descriptor.proto"),
            "{from_system:?}"
        );
        let required: BTreeSet<&str> = REQUIREMENTS
            .iter()
            .filter_map(|r| match r.check {
                File(path) => Some(path),
                _ => None,
            })
            .collect();
        for import in &from_system {
            let path = format!("{PROTOC_INCLUDE}/{import}");
            assert!(
                required.contains(path.as_str()),
                "etcd-client imports {import}, but setup does not require {path}"
            );
        }
    }

    /// protoc's include directory is where setup looks, and with it the real protoc compiles
    /// etcd-client's protos as its build does (only etcd-client's own tree on the path).
    #[test]
    fn protoc_compiles_etcd_client_protos_with_what_setup_requires() {
        let protoc = find_program("protoc").expect("protoc (setup installs it)");
        let include = std::fs::canonicalize(protoc.parent().unwrap().join("../include")).unwrap();
        assert_eq!(include, Path::new(PROTOC_INCLUDE));
        let root = etcd_client_protos();
        let mut files = Vec::new();
        proto_files(&root.join("etcd"), &mut files);
        let out = std::process::Command::new(&protoc)
            .arg(format!("--proto_path={}", root.display()))
            .args(["-o", "/dev/null"])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Each package setup installs for a requirement ships it (`dpkg -L`): a file that moved to
    /// another package, or a wrong package name, fails here rather than on a fresh machine.
    #[test]
    fn each_package_ships_what_setup_installs_it_for() {
        for r in REQUIREMENTS {
            let list = probe("dpkg", &["-L", r.package])
                .unwrap_or_else(|| panic!("dpkg -L {}: not installed", r.package));
            let ships = list.lines().any(|line| match r.check {
                Program(name) => {
                    line.ends_with(&format!("/bin/{name}"))
                        || line.ends_with(&format!("/sbin/{name}"))
                }
                File(path) => line == path,
                Python(module) => {
                    line == format!("/usr/lib/python3/dist-packages/{module}/__init__.py")
                        || line == format!("/usr/lib/python3/dist-packages/{module}.py")
                }
            });
            assert!(ships, "{} does not ship {}", r.package, r.check);
            assert!(r.check.is_met(), "{} is missing after setup", r.check);
        }
    }
}
