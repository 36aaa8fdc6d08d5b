//! What an unprivileged user of a node can do to the root processes that act on it (issue 25):
//! nothing through the files root opens in shared directories.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use overlay_tests::deployment::Deployment;

/// Where the lock files used to live: world-writable /run/lock, so anyone may make it first.
const OLD_LOCK_DIR: &str = "/run/lock/overlay";
const NOBODY: u32 = 65534;

/// `cmd` run by nobody (uid and gid 65534, no supplementary groups), as a local user would.
fn as_nobody(cmd: &[&str]) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The attacker's directory under /run/lock, as this test found it, put back when dropped
/// (panics included): removed if the test made it, its owner and mode restored otherwise.
struct Planted {
    link: PathBuf,
    /// (uid, gid, mode) of a directory that was there before.
    before: Option<(u32, u32, u32)>,
}

impl Planted {
    /// Makes `OLD_LOCK_DIR` nobody's (creating it as nobody if missing, the attack) and
    /// has nobody link `name` in it to `victim`.
    fn link(name: &str, victim: &Path) -> Self {
        let dir = Path::new(OLD_LOCK_DIR);
        let before = std::fs::symlink_metadata(dir)
            .ok()
            .map(|m| (m.uid(), m.gid(), m.permissions().mode() & 0o7777));
        if before.is_some() {
            // Already made (by root, say): for root's File::create it behaves as the
            // attacker's own would, so hand it to the attacker for the test's duration.
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        } else {
            as_nobody(&["mkdir", OLD_LOCK_DIR]);
        }
        let link = dir.join(name);
        let me = Self { link, before };
        as_nobody(&[
            "ln",
            "-s",
            victim.to_str().unwrap(),
            me.link.to_str().unwrap(),
        ]);
        me
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        let dir = Path::new(OLD_LOCK_DIR);
        match self.before {
            Some((uid, gid, mode)) => {
                let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
            }
            None => {
                // Someone else's lock may have appeared in it meanwhile: then leave it as the
                // old code would have made it, root's.
                if std::fs::remove_dir(dir).is_err() {
                    let _ = std::os::unix::fs::chown(dir, Some(0), Some(0));
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
                }
            }
        }
    }
}

#[test]
fn a_symlink_planted_under_run_lock_by_a_user_never_truncates_what_it_names() {
    let mut d = Deployment::new("lk", &[true]).unwrap();
    // A VNI of this test's own: nobody else's bridge lock is ever planted over.
    let vni = 100_000 + std::process::id() % 1_000_000;
    let bridge = format!("ovbr{vni}");
    let victim = d.dir().join("victim");
    std::fs::write(&victim, b"root's precious file\n").unwrap();
    let planted = Planted::link(&bridge, &victim);
    assert_eq!(
        std::fs::read_link(&planted.link).unwrap(),
        victim,
        "the attacker's link is in place"
    );

    d.create_network("blue", "10.10.0.0/16", vni).unwrap();
    d.add_container(0, "c1", "blue", None).unwrap();

    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"root's precious file\n",
        "endpoint add followed the planted link and truncated its target"
    );
    // The lock was taken where only root writes, and left no wider than it must be.
    let dir = std::fs::symlink_metadata(overlay_agent::lock::DIR).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        (dir.uid(), dir.permissions().mode() & 0o7777),
        (0, 0o700),
        "{}",
        overlay_agent::lock::DIR
    );
    let lock =
        std::fs::symlink_metadata(Path::new(overlay_agent::lock::DIR).join(&bridge)).unwrap();
    assert!(lock.is_file());
    assert_eq!(lock.permissions().mode() & 0o7777, 0o600);
    drop(planted);
}
