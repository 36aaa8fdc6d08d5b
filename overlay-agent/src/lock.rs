//! File locks under /run/lock/overlay, between the processes that act on one node (CLI, CNI
//! plugin, Docker driver, monitor). A lock goes with its file descriptor: dropping the file, or
//! the process dying, releases it.
use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

use anyhow::{Context as _, Result};

const DIR: &str = "/run/lock/overlay";

fn open(name: &str) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    let path = PathBuf::from(DIR).join(name);
    let file =
        File::create(&path).with_context(|| format!("opening the lock {}", path.display()))?;
    Ok((file, path))
}

/// Waits for the lock `name`.
pub async fn exclusive(name: &str) -> Result<File> {
    let (file, path) = open(name)?;
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
    let (file, path) = open(name)?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(e).with_context(|| format!("locking {}", path.display()))
}
