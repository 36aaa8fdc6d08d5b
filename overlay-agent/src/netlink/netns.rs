//! Network namespaces as the user names them.
use std::{fs::File, path::PathBuf};

use anyhow::{Result, anyhow};

/// A namespace as the user names it: `ip netns` names live in /run/netns, anything with a '/'
/// is a path such as /proc/PID/ns/net.
pub fn netns_path(ns: &str) -> PathBuf {
    if ns.contains('/') {
        PathBuf::from(ns)
    } else {
        PathBuf::from("/run/netns").join(ns)
    }
}

pub fn open_netns(ns: &str) -> Result<File> {
    let path = netns_path(ns);
    File::open(&path).map_err(|e| {
        anyhow!(
            "network namespace {ns:?} does not exist ({}: {e})",
            path.display()
        )
    })
}
