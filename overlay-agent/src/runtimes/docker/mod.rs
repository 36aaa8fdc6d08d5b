//! `overlay-agent docker-plugin`: Docker's remote network driver and IPAM driver, one plugin
//! (`overlay-ebpf`) on a unix socket where dockerd discovers it. An adapter onto
//! [`crate::cli::commands`]: networks are etcd's, attachments are `endpoint_make` /
//! `endpoint_release`, addresses come from this node's slice as the CLI's do.
//!
//! Docker's NetworkIDs are per daemon (each host's dockerd makes its own), and Docker does
//! not tell a remote driver the network's name: the overlay network is found by its subnet
//! (or named with `-o network=NAME`), so `docker network create --subnet S` on every host
//! means one overlay network.
mod ipam_driver;
mod network_driver;
pub mod protocol;
pub mod state;

/// An endpoint's name from Docker's EndpointID (tests find its interface by it).
pub use network_driver::endpoint_name;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow};
use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State as Shared},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{cli::commands::Ctx, shared::ipam::Cidr};

/// Where dockerd looks for plugin sockets; the file's name is the driver's name.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/overlay-ebpf.sock";

/// The default state directory of `node`.
pub fn default_state_dir(node: &str) -> PathBuf {
    Path::new("/var/lib/overlay/docker").join(node)
}

pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

/// The plugin's state: who it is, what it remembers, what it has promised.
pub struct Driver {
    ctx: Ctx,
    state_file: PathBuf,
    state: std::sync::Mutex<state::State>,
    /// What RequestAddress handed out and CreateEndpoint has not claimed yet. Held across a
    /// whole RequestAddress, so two requests never pick together.
    pending: tokio::sync::Mutex<Pending>,
}

/// Addresses handed to Docker and not yet claimed in etcd by CreateEndpoint (nor given back).
#[derive(Default)]
struct Pending {
    /// No second request may get one of these.
    addresses: HashSet<Ipv4Addr>,
    /// By IPv4 subnet: the address last handed out, whose endpoint's IPv6 address Docker asks
    /// for next on a dual-stack network. The overlay derives it from the IPv4 one, and dockerd
    /// creates one network's endpoints one at a time (libnetwork's per-network lock around
    /// CreateEndpoint, which makes both requests), so the next IPv6 request is this one's.
    awaiting_v6: HashMap<Cidr, Ipv4Addr>,
}

impl Pending {
    /// `ip` is claimed in etcd, or given back: no longer pending.
    fn remove(&mut self, ip: Ipv4Addr) {
        self.addresses.remove(&ip);
        self.awaiting_v6.retain(|_, a| *a != ip);
    }
}

impl Driver {
    pub fn new(ctx: Ctx, state_dir: &Path) -> Result<Self> {
        let state_file = state::path(state_dir);
        let state = state::State::load(&state_file)?;
        Ok(Self {
            ctx,
            state_file,
            state: std::sync::Mutex::new(state),
            pending: tokio::sync::Mutex::new(Pending::default()),
        })
    }

    /// Changes the state and writes it to disk before the change is acknowledged.
    fn update_state<T>(&self, f: impl FnOnce(&mut state::State) -> T) -> Result<T> {
        let mut state = self.state.lock().expect("state lock");
        let out = f(&mut state);
        state.save(&self.state_file)?;
        Ok(out)
    }

    fn docker_network(&self, id: &str) -> Option<state::DockerNetwork> {
        self.state
            .lock()
            .expect("state lock")
            .networks
            .get(id)
            .cloned()
    }

    /// Answers one call: the reply's JSON, or None for a method we do not implement.
    async fn call(&self, method: &str, body: &[u8]) -> Result<Option<Value>> {
        let value = match method {
            "Plugin.Activate" => json!({ "Implements": ["NetworkDriver", "IpamDriver"] }),
            "NetworkDriver.GetCapabilities" => {
                json!({ "Scope": "local", "ConnectivityScope": "global" })
            }
            "NetworkDriver.CreateNetwork" => {
                self.create_network(parse(body)?).await?;
                json!({})
            }
            "NetworkDriver.DeleteNetwork" => {
                self.delete_network(parse(body)?)?;
                json!({})
            }
            "NetworkDriver.CreateEndpoint" => to_json(self.create_endpoint(parse(body)?).await?)?,
            "NetworkDriver.Join" => to_json(self.join(parse(body)?).await?)?,
            "NetworkDriver.DeleteEndpoint" => {
                self.delete_endpoint(parse(body)?).await?;
                json!({})
            }
            "NetworkDriver.EndpointOperInfo" => json!({ "Value": {} }),
            "NetworkDriver.Leave"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => json!({}),
            "IpamDriver.GetCapabilities" => json!({
                "RequiresMACAddress": false,
                "RequiresRequestReplay": false,
            }),
            "IpamDriver.GetDefaultAddressSpaces" => json!({
                "LocalDefaultAddressSpace": "overlay-ebpf",
                "GlobalDefaultAddressSpace": "overlay-ebpf",
            }),
            "IpamDriver.RequestPool" => to_json(ipam_driver::request_pool(parse(body)?)?)?,
            "IpamDriver.ReleasePool" => json!({}),
            "IpamDriver.RequestAddress" => to_json(self.request_address(parse(body)?).await?)?,
            "IpamDriver.ReleaseAddress" => {
                self.release_address(parse(body)?).await;
                json!({})
            }
            _ => return Ok(None),
        };
        Ok(Some(value))
    }
}

fn to_json<T: Serialize>(v: T) -> Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// A request body: whatever the content type says (Docker's is its own vendor type), an empty
/// body or `null` is the default request.
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(body).context("request body is not UTF-8")?;
    match text.trim() {
        "" | "null" => Ok(T::default()),
        json => serde_json::from_str(json).context("malformed request body"),
    }
}

async fn handle(
    Shared(driver): Shared<Arc<Driver>>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (status, value) = match driver.call(&method, &body).await {
        Ok(None) => {
            log::debug!("{method}: not implemented");
            (
                StatusCode::NOT_FOUND,
                protocol::error_reply(&format!("{method} is not implemented")),
            )
        }
        Ok(Some(value)) => {
            log::debug!("{method}: {value}");
            (StatusCode::OK, value)
        }
        // An error is a 200 whose body says so: that is how libnetwork's client reads it.
        Err(e) => {
            let message = format!("overlay-ebpf: {e:#}");
            log::warn!("{method} failed: {message}");
            (StatusCode::OK, protocol::error_reply(&message))
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, protocol::CONTENT_TYPE)],
        value.to_string(),
    )
        .into_response()
}

/// Binds the socket (replacing a stale file from an earlier run, 0660: see [`bind_socket`])
/// and serves until SIGTERM or SIGINT, then removes the socket.
pub async fn serve(ctx: Ctx, opts: Options) -> Result<()> {
    let driver = Arc::new(Driver::new(ctx, &opts.state_dir)?);
    let socket = &opts.socket;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = bind_socket(socket, SOCKET_MODE)?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .with_context(|| format!("listening on {}", socket.display()))?;
    log::info!(
        "Docker network and IPAM driver overlay-ebpf of node {} on {}, state in {}",
        driver.ctx.node,
        socket.display(),
        driver.state_file.display()
    );
    let app = Router::new()
        .route("/{method}", post(handle))
        .with_state(driver);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(socket);
    served.map_err(|e| anyhow!("serving {}: {e}", socket.display()))
}

/// Who may talk to the plugin: root, and the group dockerd runs with.
const SOCKET_MODE: u32 = 0o660;

/// Binds a unix socket that appears at `path` with `mode` already set, never wider. bind()
/// makes the file with the umask's mode (0777 under `umask 000`) and only then can it be
/// chmod'ed: bound at `path` itself, anyone could connect in between. So it is bound in a
/// fresh 0700 directory beside `path` (on the same filesystem, so rename() is atomic, and
/// reachable by nobody else meanwhile), chmod'ed there, and renamed over `path`, which also
/// replaces a stale socket a killed plugin left.
pub fn bind_socket(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.{}.binding",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Our own pid's: a leftover of a process that had it before us.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let bound = (|| {
        let inner = staging.join(name);
        let listener = std::os::unix::net::UnixListener::bind(&inner)
            .with_context(|| format!("listening on {}", inner.display()))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", inner.display()))?;
        if std::fs::symlink_metadata(path).is_ok() {
            log::info!("replacing a stale socket {}", path.display());
        }
        std::fs::rename(&inner, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_socket_arrives_with_its_mode_replacing_a_stale_one_and_leaves_nothing_beside_it() {
        let dir = std::env::temp_dir().join(format!("overlay-bind-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("overlay-ebpf.sock");
        // What a killed plugin leaves: a socket nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind_socket(&path, 0o660).unwrap();
        assert_eq!(mode(&path), 0o660);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            ["overlay-ebpf.sock"],
            "the staging directory is gone"
        );
        // The listener moved with its file: a client of the path reaches it.
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
        // Nothing to bind in: one line saying where.
        let e = format!(
            "{:#}",
            bind_socket(&dir.join("none/x.sock"), 0o660).unwrap_err()
        );
        assert!(e.contains("none/.x.sock."), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
