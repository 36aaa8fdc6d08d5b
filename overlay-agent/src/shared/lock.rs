//! File locks between the processes that act on one node (CLI, CNI plugin, Docker driver,
//! monitor). A lock goes with its file descriptor: dropping the file, or the process dying,
//! releases it.
//!
//! The directory is a place root creates files in, so it must be root's alone. It used to be
//! /run/lock/overlay, but /run/lock is world-writable: anyone could make that directory first
//! and plant a symlink `ovbr<vni>` in it, and root's next `endpoint add` would truncate the file
//! it names (issue 25). Now it sits under /run, which only root writes, is made 0700, and is
//! opened without following a link and checked by `fstat` on every open (a directory, ours, no
//! group or other bits), so a directory someone else made or loosened is refused. The lock file
//! is opened relative to that descriptor, never through a link, and never truncated: a lock
//! needs no content, and a file that is not ours to empty is never emptied.
use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Where every process of a node takes its locks.
pub const DIR: &str = "/run/overlay-lock";

/// A lock's name is one path component of ours: never a way out of the directory.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("{name:?} is not a lock name (one path component, not . or ..)");
    }
    Ok(())
}

/// The descriptor a libc open returned, or its error.
fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens the lock directory `dir` (made 0700 if missing), refusing a link, another owner or
/// any group or other bit: whoever may write in it may plant links for us to follow.
fn open_dir(dir: &Path) -> Result<OwnedFd> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{} is not a path", dir.display()))?;
    let fd = owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => anyhow!(
            "lock directory {} is a symbolic link or not a directory: refused (remove it)",
            dir.display()
        ),
        _ => anyhow!("opening the lock directory {}: {e}", dir.display()),
    })?;
    let st = fstat(&fd).with_context(|| format!("fstat {}", dir.display()))?;
    let euid = unsafe { libc::geteuid() };
    if st.st_uid != euid {
        bail!(
            "lock directory {} is owned by uid {}, not {euid}: refused (someone else may plant links in it; remove it)",
            dir.display(),
            st.st_uid
        );
    }
    if st.st_mode & 0o077 != 0 {
        bail!(
            "lock directory {} has mode {:o}, not 0700: refused (group or others may plant links in it)",
            dir.display(),
            st.st_mode & 0o7777
        );
    }
    Ok(fd)
}

/// Opens (creating, never truncating, never through a link) the lock `name` in `dir`.
fn open_in(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    check_name(name)?;
    let dirfd = open_dir(dir)?;
    let path = dir.join(name);
    let c = CString::new(name)?;
    let fd = owned(unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => anyhow!(
            "lock {} is a symbolic link: refused (a lock is never followed)",
            path.display()
        ),
        _ => anyhow!("opening the lock {}: {e}", path.display()),
    })?;
    let st = fstat(&fd).with_context(|| format!("fstat {}", path.display()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        bail!("lock {} is not a regular file: refused", path.display());
    }
    Ok((File::from(fd), path))
}

/// Waits for the lock `name`.
pub async fn exclusive(name: &str) -> Result<File> {
    let (file, path) = open_in(Path::new(DIR), name)?;
    let fd = file.as_raw_fd();
    tokio::task::spawn_blocking(move || {
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .await?
    .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Takes the lock `name` if nobody holds it; None if somebody does.
pub fn try_exclusive(name: &str) -> Result<Option<File>> {
    let (file, path) = open_in(Path::new(DIR), name)?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(e).with_context(|| format!("locking {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A fresh directory of this test's own under the system's temporary directory.
    fn scratch(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("overlay-lock-test-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_directory_is_made_0700_and_a_lock_file_0600_never_truncated() {
        let root = scratch("make");
        let dir = root.join("locks");
        let (mut f, path) = open_in(&dir, "ovbr42").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        std::io::Write::write_all(&mut f, b"kept").unwrap();
        drop(f);
        open_in(&dir, "ovbr42").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_symlink_inside_the_directory_is_not_followed() {
        let root = scratch("link");
        let victim = root.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = root.join("locks");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("ovbr42")).unwrap();
        // A dangling one must not create its target either.
        let target = root.join("made-through-the-link");
        std::os::unix::fs::symlink(&target, dir.join("ovbr43")).unwrap();
        for name in ["ovbr42", "ovbr43"] {
            let e = format!("{:#}", open_in(&dir, name).unwrap_err());
            assert!(e.contains("is a symbolic link: refused"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!target.exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_in_or_do_not_own_is_refused_in_one_line() {
        let root = scratch("dir");
        let dir = root.join("locks");
        std::fs::create_dir(&dir).unwrap();
        for loose in [0o777, 0o1777, 0o770, 0o705] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(loose)).unwrap();
            let e = format!("{:#}", open_in(&dir, "ovbr42").unwrap_err());
            assert!(e.contains(&format!("has mode {loose:o}, not 0700")), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Another owner (nobody), mode right: refused all the same. Needs root, as the
        // namespace tests do.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = format!("{:#}", open_in(&dir, "ovbr42").unwrap_err());
        assert!(e.contains("is owned by uid 65534, not 0"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(!dir.join("ovbr42").exists(), "nothing made in it");
        // The directory itself a link (to a directory that would pass): refused.
        let real = root.join("real");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&real)
            .unwrap();
        let linked = root.join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let e = format!("{:#}", open_in(&linked, "ovbr42").unwrap_err());
        assert!(e.contains("is a symbolic link or not a directory"), "{e}");
        assert!(!real.join("ovbr42").exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_are_one_component() {
        let root = scratch("names");
        let dir = root.join("locks");
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\0b"] {
            let e = format!("{:#}", open_in(&dir, bad).unwrap_err());
            assert!(e.contains("is not a lock name"), "{bad:?}: {e}");
        }
        assert!(!dir.exists(), "refused before anything is made");
        std::fs::remove_dir_all(root).unwrap();
    }
}
