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

/// The kernel's cookie of the namespace `ns` refers to (`SO_NETNS_COOKIE` of a socket made in
/// it): what `bpf_get_netns_cookie` gives the programs for that namespace's sockets. Stable
/// for the namespace's life, never reused.
pub fn cookie(ns: &File) -> Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fd = ns.try_clone()?;
    std::thread::spawn(move || -> Result<u64> {
        // A thread of its own: setns changes only the calling thread's namespace.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow!(
                "entering the namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(anyhow!(
                "making a socket in the namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(anyhow!(
                "reading the namespace's cookie (SO_NETNS_COOKIE): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(cookie)
    })
    .join()
    .map_err(|_| anyhow!("the namespace thread panicked"))?
}

/// One thread of the agent's that makes sockets inside other namespaces, for the health
/// checks (syncs/backend_health.rs): a socket belongs to the namespace it was made in for its
/// life, so only its making needs the thread to enter the namespace (setns changes only the
/// calling thread's); connecting it then happens on the async runtime like any socket. One
/// thread for every namespace, so many checks cost one thread, never one each.
#[derive(Clone)]
pub struct NetnsSockets {
    requests: std::sync::mpsc::Sender<(
        File,
        tokio::sync::oneshot::Sender<Result<std::net::TcpStream>>,
    )>,
}

impl NetnsSockets {
    pub fn start() -> Result<Self> {
        // Where the thread comes back to after each socket: the agent's own namespace.
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| anyhow!("opening the agent's own network namespace: {e}"))?;
        let (requests, rx) = std::sync::mpsc::channel::<(
            File,
            tokio::sync::oneshot::Sender<Result<std::net::TcpStream>>,
        )>();
        std::thread::Builder::new()
            .name("netns-sockets".into())
            .spawn(move || {
                while let Ok((ns, reply)) = rx.recv() {
                    let made = tcp_socket_in(&ns);
                    let back = enter(&home);
                    let _ = reply.send(made);
                    if let Err(e) = back {
                        // Stuck in another namespace: no later socket could be trusted.
                        log::error!("health checks stop: {e:#}");
                        return;
                    }
                }
            })
            .map_err(|e| anyhow!("starting the namespace sockets' thread: {e}"))?;
        Ok(Self { requests })
    }

    /// A non-blocking, unconnected IPv4 TCP socket made inside namespace `ns`.
    pub async fn tcp_socket(&self, ns: File) -> Result<std::net::TcpStream> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send((ns, tx))
            .map_err(|_| anyhow!("the namespace sockets' thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the namespace sockets' thread has stopped"))?
    }
}

fn enter(ns: &File) -> Result<()> {
    use std::os::fd::AsRawFd;
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(anyhow!(
            "entering a network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn tcp_socket_in(ns: &File) -> Result<std::net::TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    enter(ns)?;
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(anyhow!(
            "making a socket in the namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(std::net::TcpStream::from(unsafe {
        OwnedFd::from_raw_fd(raw)
    }))
}
