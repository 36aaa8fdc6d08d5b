//! Support for the privileged end-to-end tests: network namespaces as hosts, packets built byte
//! by byte, and a node's dataplane loaded for a test.
pub mod bench;
pub mod capture;
pub mod certs;
pub mod cluster_scale;
pub mod corpus;
pub mod deployment;
pub mod dns;
pub mod docker;
pub mod etcd_cluster;
pub mod fixture;
pub mod fuzz;
pub mod lab;
pub mod monitor;
pub mod netns;
pub mod packet;
pub mod prometheus;
pub mod replication;
pub mod runtimes;
pub mod scale;
pub mod scale_report;
pub mod scenario;
pub mod service_bench;
pub mod service_traffic;
pub mod sim_node;
pub mod topology;
pub mod transfer;

/// The tests load eBPF programs and create network namespaces: they need root. Say so plainly
/// instead of failing on the first EPERM somewhere deep.
pub fn require_root() {
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo cargo xtask test`"
        );
    }
}

/// What every namespace and pin directory a test or the demo makes is named with, so that
/// `cargo xtask test` can remove what a killed run left behind.
pub const LEFTOVER_PREFIX: &str = "ovt-";

/// A name unique to this test process and the given label (for namespaces and pin directories).
pub fn unique(label: &str) -> String {
    format!("{LEFTOVER_PREFIX}{label}{}", std::process::id())
}
