//! Builds the eBPF programs (overlay-ebpf, for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker) and leaves the object in OUT_DIR, where `dataplane::OBJECT` (dataplane/mod.rs)
//! embeds it.
//! `AYA_BUILD_SKIP=1` skips it for metadata-only runs.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
