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
    let dir = std::fs::symlink_metadata(overlay_agent::shared::lock::DIR).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        (dir.uid(), dir.permissions().mode() & 0o7777),
        (0, 0o700),
        "{}",
        overlay_agent::shared::lock::DIR
    );
    let lock = std::fs::symlink_metadata(Path::new(overlay_agent::shared::lock::DIR).join(&bridge))
        .unwrap();
    assert!(lock.is_file());
    assert_eq!(lock.permissions().mode() & 0o7777, 0o600);
    drop(planted);
}

/// What inotify said happened to entries of a watched directory: (mask, name).
fn inotify_events(fd: i32) -> Vec<(u32, String)> {
    let mut events = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return events;
        }
        let mut at = 0;
        while at + 16 <= n as usize {
            let word = |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
            let (mask, len) = (word(4), word(12) as usize);
            let name = &buf[at + 16..at + 16 + len];
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string();
            events.push((mask, name));
            at += 16 + len;
        }
    }
}

#[test]
fn the_docker_plugin_socket_never_appears_wider_than_0660_even_under_umask_000() {
    use std::os::unix::process::CommandExt as _;
    let d = Deployment::new("lks", &[false]).unwrap();
    let plugins = d.dir().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let socket = plugins.join("overlay-ebpf.sock");
    let name = socket.file_name().unwrap().to_str().unwrap().to_string();

    // Every change to the directory's entries, in order: a mode changed at the socket's path
    // shows as IN_ATTRIB, however short the window was.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let dir = std::ffi::CString::new(plugins.to_str().unwrap()).unwrap();
    let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ATTRIB;
    assert!(unsafe { libc::inotify_add_watch(fd, dir.as_ptr(), mask) } >= 0);
    // And a fast poll of the path's mode, as a client racing the plugin would see it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (socket, stop) = (socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = std::fs::symlink_metadata(&socket) {
                    seen.insert(m.permissions().mode() & 0o7777);
                }
            }
            seen
        })
    };

    let log = std::fs::File::create(d.dir().join("plugin.log")).unwrap();
    let mut cmd = d.base_command(0);
    cmd.arg("docker-plugin")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(d.dir().join("state"))
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // The most permissive umask there is: bind() alone would make the socket 0777.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        })
    };
    let mut plugin = cmd.spawn().unwrap();
    let started = overlay_tests::deployment::wait_for(std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(d.dir().join("plugin.log"))
            .is_ok_and(|l| l.contains("Docker network and IPAM driver overlay-ebpf"))
    });
    // Long enough for a chmod after the bind to have come and gone.
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.join().unwrap();
    let mode = std::fs::symlink_metadata(&socket).map(|m| m.permissions().mode() & 0o7777);
    let events: Vec<u32> = inotify_events(fd)
        .into_iter()
        .filter(|(_, n)| *n == name)
        .map(|(m, _)| m)
        .collect();
    unsafe { libc::close(fd) };
    let _ = plugin.kill();
    let _ = plugin.wait();
    let log = std::fs::read_to_string(d.dir().join("plugin.log")).unwrap();
    started.unwrap_or_else(|e| panic!("the plugin did not start: {e}\n{log}"));

    assert_eq!(mode.unwrap(), 0o660, "{log}");
    let seen: Vec<String> = seen.iter().map(|m| format!("{m:o}")).collect();
    assert_eq!(seen, ["660"], "modes the socket's path was seen with");
    assert!(
        events.iter().all(|m| m & libc::IN_ATTRIB == 0),
        "the socket's mode changed after it appeared at its path: {events:x?}"
    );
    assert_eq!(events, [libc::IN_MOVED_TO], "it arrives whole, by rename");
    // Nothing left beside it (the directory it was bound in is gone).
    let left: Vec<_> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(&name)]);
}
