//! Builds the eBPF programs (overlay-ebpf, for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker) and leaves the object in OUT_DIR, where `dataplane::OBJECT` (dataplane/mod.rs)
//! embeds it.
//! `AYA_BUILD_SKIP=1` skips it for metadata-only runs.
//! It also names the git revision built, for `--version` (`OVERLAY_GIT_REVISION`).
use std::{path::Path, process::Command};

use aya_build::{Package, Toolchain};

/// The commit checked out (12 hex digits), or "unknown" outside a git checkout. Rebuilt when
/// HEAD moves: to another branch (HEAD changes) or along one (its ref changes).
fn git_revision(dir: &str) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--git-path", "HEAD"]);
    let branch =
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r]));
    let packed = git(&["rev-parse", "--git-path", "packed-refs"]);
    for path in [head, branch, packed].into_iter().flatten() {
        let path = Path::new(dir).join(path);
        // A path that does not exist would make cargo run this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() -> anyhow::Result<()> {
    let revision = git_revision(env!("CARGO_MANIFEST_DIR"));
    println!("cargo:rustc-env=OVERLAY_GIT_REVISION={revision}");
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../overlay-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "overlay-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
