//! What the driver must remember across its own restarts: Docker neither activates a plugin
//! again nor resends CreateNetwork, so the mapping from each Docker NetworkID to its overlay
//! network is kept in a small JSON file, rewritten whole (temp file + rename) on every change.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// One Docker network on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    /// The overlay network's name in etcd.
    pub network: String,
    /// `docker network create --internal`.
    #[serde(default)]
    pub internal: bool,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// By Docker NetworkID.
    #[serde(default)]
    pub networks: BTreeMap<String, DockerNetwork>,
}

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("networks.json")
}

impl State {
    /// The state in `file`, empty if there is none yet.
    pub fn load(file: &Path) -> Result<Self> {
        match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid state file", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Writes the whole state to `file` atomically: a reader (or a crash) sees the old file
    /// or the new one, never half of one.
    pub fn save(&self, file: &Path) -> Result<()> {
        let dir = file.parent().context("state file has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = file.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        };
        write().with_context(|| format!("writing {}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = std::env::temp_dir().join(format!("overlay-docker-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = path(&dir);
        assert_eq!(State::load(&file).unwrap(), State::default());
        let mut state = State::default();
        state.networks.insert(
            "4f1c".into(),
            DockerNetwork {
                network: "blue".into(),
                internal: true,
            },
        );
        state.save(&file).unwrap();
        assert_eq!(State::load(&file).unwrap(), state);
        assert!(!file.with_extension("json.tmp").exists());
        std::fs::write(&file, "{not json").unwrap();
        let err = State::load(&file).unwrap_err().to_string();
        assert!(err.contains("not a valid state file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
