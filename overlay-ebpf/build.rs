use which::which;

/// The eBPF build has an undeclared dependency on the `bpf-linker` binary: rebuild when it changes
/// (a new bpf-linker can change the emitted object).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
