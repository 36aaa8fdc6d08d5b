//! The CNI plugin binary: install it as `/opt/cni/bin/overlay`. All of it is `cni::main`.
fn main() -> std::process::ExitCode {
    overlay_agent::runtimes::cni::main()
}
