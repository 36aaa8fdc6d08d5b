//! Where a node's pinned maps and links live in bpffs: `<root>/<node>/maps-v<N>/<MAP>` and
//! `<root>/<node>/links/<iface>`. bpffs is one per kernel, not per network namespace, so every
//! node sharing a kernel (as test hosts do) needs its own directory. N is the layout version:
//! maps pinned by an agent of another layout are never opened as ours (aya would reuse a pinned
//! map whatever its key and value sizes).
//!
//! A link is pinned under its interface's name, so the names of the three kinds never meet:
//! ports are `ove<8 hex>` / `ovhp<vni>`, GRO helpers `ovgro<port>` (ifnames.rs), and the agent
//! refuses an underlay named like any interface of ours. Removing a port's link therefore
//! never removes the underlay's, whatever an etcd record names.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/overlay";
/// Bumped whenever a map's key or value layout, its meaning, or the set of maps changes.
/// v1: unversioned `maps/`. v2: FDB values carry the next-hop cache and the UDP port, VTEPS
/// values the UDP port. v3: two more counters in STATS (drop_kernel_vxlan, decap_segments).
/// v4: the monitor's maps (MONITOR_CTL, EVENTS, MONITOR_CPU). v5: FDB values cache the path
/// MTU, NETWORKS values the IPv6 prefix; four more counters (drop_frag_needed, drop_too_big,
/// ndp_reply, drop_bad_ndp). v6: two more counters (fragments, drop_router_message), the JUMP
/// program array. v7: VTEPs are 16 bytes in every map (IPv4 ones mapped), NODE_CONFIG says
/// whether the underlay is IPv6. v8: GROUPS a plain hash (no LRU eviction), GROUP_COUNT (a
/// port's memberships), CLUSTER_PORTS, two more counters (drop_tunnel_port, group_limit).
/// v9: two more counters (drop_ecn, drop_bad_checksum). v10: socket load balancing (SERVICES,
/// BACKENDS, MEMBERS, LB_TURN, LB_REVERSE), two more counters (lb_balanced, lb_no_backend).
/// v11: published ports (PUBLISHED, PUB_FLOWS, PUB_REPLY), three more counters (published_in,
/// published_reply, published_no_backend). v12: published ports on IPv6 underlays (PUB_FLOWS6,
/// PUB_REPLY6). v13: a connected socket's balanced peer in socket storage (LB_PEER), not LB_REVERSE.
pub const LAYOUT_VERSION: u32 = 13;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    pub fn new(root: impl AsRef<Path>, node: &str) -> Result<Self> {
        if node.is_empty() || node.contains('/') || node.starts_with('.') {
            bail!("invalid node name {node:?}: it names a directory, so no '/' and no leading '.'");
        }
        Ok(Self {
            dir: root.as_ref().join(node),
        })
    }

    /// The pin directory an agent reported (its status file names it).
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn maps(&self) -> PathBuf {
        self.dir.join(format!("maps-v{LAYOUT_VERSION}"))
    }

    /// Map directories of other layouts (left by an older or newer agent), if any.
    pub fn other_layouts(&self) -> Vec<PathBuf> {
        let current = self.maps();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                p != &current && name.is_some_and(|n| n == "maps" || n.starts_with("maps-v"))
            })
            .collect();
        out.sort();
        out
    }

    /// Unpins maps of other layouts: they are freed once no program uses them any more.
    pub fn remove_other_layouts(&self) -> Result<()> {
        for dir in self.other_layouts() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.dir.join("links").join(iface)
    }

    /// The pinned link of a socket load-balancing program at the cgroup v2 root, by its
    /// program's name: apart from `links/`, whose every name is an interface's.
    pub fn cgroup_link(&self, program: &str) -> PathBuf {
        self.dir.join("cgroup-links").join(program)
    }

    /// The interfaces that have a pinned link, sorted.
    pub fn linked(&self) -> Result<Vec<String>> {
        let links = self.dir.join("links");
        let mut names = std::fs::read_dir(&links)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .with_context(|| format!("listing {}", links.display()))?;
        names.sort();
        Ok(names)
    }

    /// Creates the directories, mounting bpffs at /sys/fs/bpf first if nothing is mounted there.
    pub fn create(&self) -> Result<()> {
        ensure_bpffs(&self.dir)?;
        for d in [
            self.maps(),
            self.dir.join("links"),
            self.dir.join("cgroup-links"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// Removes everything pinned for this node: maps go once no program uses them.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// The interfaces with a pinned link, by the program attached: `status` and the metrics.
#[derive(Debug, Default)]
pub struct Attachments {
    pub from_underlay: Vec<String>,
    pub from_container: Vec<String>,
    pub gro_sink: Vec<String>,
}

/// The node's pinned links by program: the underlay's is from_underlay, a GRO helper's
/// gro_sink, any other a port's from_container. No links (or no pin directory): none.
pub fn attachments(pins: &PinDir, underlay: &str) -> Attachments {
    let mut a = Attachments::default();
    for link in pins.linked().unwrap_or_default() {
        if link == underlay {
            a.from_underlay.push(link);
        } else if crate::shared::ifnames::is_gro_device(&link) {
            a.gro_sink.push(link);
        } else {
            a.from_container.push(link);
        }
    }
    a
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

fn ensure_bpffs(dir: &Path) -> Result<()> {
    let mount_point = Path::new("/sys/fs/bpf");
    if !dir.starts_with(mount_point) || is_bpffs(mount_point) {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("running mount -t bpf")?;
    if !status.success() || !is_bpffs(mount_point) {
        bail!("/sys/fs/bpf is not a bpf filesystem and mounting one failed (are you root?)");
    }
    Ok(())
}
