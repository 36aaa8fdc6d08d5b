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

/// A namespace opened where the command that names it is checked, with the name the user gave
/// it (records and messages show that name): opened once and handed on, so a namespace that
/// is not there is refused before anything is made.
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    pub fn open(name: &str) -> Result<Self> {
        Ok(Self {
            file: open_netns(name)?,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}
