//! The status contract between a node's agent and everything else on the node: the file the
//! agent writes after every reconcile (`<run-dir>/<node>.json`), and how the CLI, doctor and the
//! runtime plugins find and read it.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// What `status` reads: written by the agent after every reconcile.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusFile {
    pub node: String,
    pub pid: u32,
    pub etcd: String,
    pub connected: bool,
    pub underlay: String,
    pub vtep: String,
    /// The last etcd revision whose state the maps hold.
    pub revision: i64,
    pub updated_unix: u64,
    /// Entries that etcd holds but this node cannot serve, and why.
    pub problems: BTreeMap<String, String>,
    /// Map writes that failed (a full map, above all), per map, since the agent started.
    pub map_write_failures: BTreeMap<String, u64>,
    /// UDP port -> its receive-side GRO helper device, or why it has none.
    #[serde(default)]
    pub gro: BTreeMap<String, String>,
    /// The etcd key prefix and the pin directory the agent uses: what a runtime plugin on this
    /// node needs to act as the CLI would, with nothing but the node's name.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub pins: PathBuf,
    /// Network -> where its resolver listens on this node (`10.10.0.1:53 on ovbr42`), or why
    /// it does not.
    #[serde(default)]
    pub resolvers: BTreeMap<String, String>,
    /// The agent's network namespace ([`netns_id`]): a plugin in another one would make ports
    /// the agent never sees.
    #[serde(default)]
    pub netns: String,
    /// How the agent reaches etcd (certificate paths, the user and its password file; never a
    /// password): a runtime plugin on the node reaches it the same way.
    #[serde(default)]
    pub access: Option<crate::store::Etcd>,
    /// Each etcd member as the agent last probed it (store/health.rs), every
    /// `health::PROBE_EVERY`.
    #[serde(default)]
    pub etcd_members: crate::store::health::Probe,
}

/// The calling process's network namespace, as `<device>:<inode>` of /proc/self/ns/net.
pub fn netns_id() -> String {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net").map_or_else(
        |e| format!("unknown ({e})"),
        |m| format!("{}:{}", m.dev(), m.ino()),
    )
}

/// Where agents write their status (`<run-dir>/<node>.json`) unless told otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/overlay";

/// A node is named after its host unless told otherwise.
pub fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

pub fn status_path(run_dir: &std::path::Path, node: &str) -> PathBuf {
    run_dir.join(format!("{node}.json"))
}

/// The status of node `node`'s agent if that agent is running; else why not, in one line.
pub fn running(run_dir: &std::path::Path, node: &str) -> Result<StatusFile> {
    let status = last_status(run_dir, node)?;
    if !alive(&status) {
        bail!(
            "the overlay agent of node {node} is not running (pid {} in {} is gone)",
            status.pid,
            status_path(run_dir, node).display()
        );
    }
    Ok(status)
}

/// The last status node `node`'s agent wrote, whether or not it still runs.
pub fn last_status(run_dir: &std::path::Path, node: &str) -> Result<StatusFile> {
    let path = status_path(run_dir, node);
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow!(
            "the overlay agent of node {node} has never run here ({}: {e})",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("reading the agent's status {}", path.display()))
}

/// Whether the process that wrote `status` is still there (and ours to signal: signal 0).
pub fn alive(status: &StatusFile) -> bool {
    unsafe { libc::kill(status.pid as i32, 0) == 0 }
}
