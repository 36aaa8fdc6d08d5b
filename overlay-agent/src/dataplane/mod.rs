//! The only code that touches aya: loading the programs, where they are pinned, attaching them,
//! and typed access to the maps. Deciding *what* goes in the maps happens elsewhere.
pub mod maps;
pub mod monitor;
pub mod pins;
pub mod state;
pub mod writer;

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
    },
};
use overlay_common::{jump, names, programs};

use crate::shared::ifnames;

pub use maps::Maps;
pub use pins::PinDir;

/// The compiled eBPF object, embedded at build time (see build.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay"));

/// The programs of one node, loaded, with their maps pinned under the node's directory.
pub struct Dataplane {
    ebpf: Ebpf,
    pins: PinDir,
    /// The socket load-balancing programs of this load are attached (at the cgroup v2 root).
    sock_lb: bool,
}

impl Dataplane {
    /// Loads the programs, creating the node's maps or reusing the ones already pinned there:
    /// a restarted agent picks up the state the dataplane kept forwarding with.
    pub fn load(pins: PinDir) -> Result<Self> {
        Self::load_sized(pins, overlay_common::DEFAULT_MAX_ENTRIES)
    }

    /// As [`Dataplane::load`], with room for `max_entries` entries in each per-endpoint map
    /// (FDB, ARP, ENDPOINTS, PORTS, VTEPS). Maps already pinned keep the size they were made
    /// with: the agent compares and rebuilds (see agent.rs).
    pub fn load_sized(pins: PinDir, max_entries: u32) -> Result<Self> {
        pins.create()?;
        let mut loader = EbpfLoader::new();
        for map in overlay_common::maps::per_endpoint() {
            loader.map_max_entries(map.name, max_entries);
        }
        // BTF maps carry no pinning of their own: pinned (and reused) by path, as the others
        // are by name.
        let mut ebpf = loader
            .map_pin_path(names::LB_PEER, pins.map(names::LB_PEER))
            .default_map_pin_directory(pins.maps())
            .load(OBJECT)
            .with_context(|| {
                format!(
                    "loading the eBPF programs (maps in {})",
                    pins.maps().display()
                )
            })?;
        for name in [
            programs::FROM_CONTAINER,
            programs::FROM_UNDERLAY,
            programs::GRO_SINK,
            programs::FRAGMENT,
            programs::FRAGMENT_FIRST,
            programs::NODEPORT_IN,
        ] {
            verify(classifier(&mut ebpf, name)?)
                .with_context(|| format!("verifying program {name}"))?;
        }
        // The tail-called programs: a restarted agent's replace the old ones in the pinned
        // array, which the old from_container then calls too until it is replaced.
        for (slot, name) in [
            (jump::FRAGMENT, programs::FRAGMENT),
            (jump::FRAGMENT_FIRST, programs::FRAGMENT_FIRST),
            (jump::NODEPORT_IN, programs::NODEPORT_IN),
        ] {
            let fd = classifier(&mut ebpf, name)?
                .fd()
                .and_then(|fd| fd.try_clone().map_err(Into::into))
                .with_context(|| format!("the {name} program's fd"))?;
            let mut table: ProgramArray<_> = ebpf
                .map_mut(names::JUMP)
                .ok_or_else(|| anyhow!("map {} missing from the eBPF object", names::JUMP))?
                .try_into()
                .context("JUMP is not a program array")?;
            table
                .set(slot, &fd, 0)
                .with_context(|| format!("setting {name} in JUMP"))?;
        }
        Ok(Self {
            ebpf,
            pins,
            sock_lb: false,
        })
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Opens the node's maps for reading and writing.
    pub fn maps(&self) -> Result<Maps> {
        Maps::open(&self.pins)
    }

    /// The loaded program, for BPF_PROG_TEST_RUN and benchmarks.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        classifier(&mut self.ebpf, name)
    }

    /// Loads and attaches `xdp_decap` to `iface` (driver mode), unpinned: it lives as long as
    /// this Dataplane. For the benchmark's TC-versus-XDP comparison only.
    pub fn attach_xdp_decap(&mut self, iface: &str) -> Result<()> {
        let prog: &mut aya::programs::Xdp = self
            .ebpf
            .program_mut(programs::XDP_DECAP)
            .ok_or_else(|| anyhow!("program {} missing", programs::XDP_DECAP))?
            .try_into()
            .context("xdp_decap is not an XDP program")?;
        prog.load().context("verifying xdp_decap")?;
        prog.attach(iface, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching xdp_decap to {iface}"))?;
        Ok(())
    }

    // Links are pinned by interface name, and each program goes only on interfaces of its own
    // shape (ifnames.rs): a port's link can never be the underlay's or a GRO helper's, so
    // attaching to or removing a port whatever an etcd record says never touches theirs.

    /// Attaches `from_underlay` at TC ingress of the underlay interface, and takes it off an
    /// earlier underlay (`run --underlay` changed): a node has one.
    pub fn attach_underlay(&mut self, iface: &str) -> Result<()> {
        ensure!(
            !ifnames::is_our_interface(iface),
            "refusing to attach {} to {iface}: an interface the overlay makes is no underlay",
            programs::FROM_UNDERLAY
        );
        self.attach(programs::FROM_UNDERLAY, iface)?;
        for name in self.pins.linked()? {
            if name != iface && !ifnames::is_our_interface(&name) {
                Self::detach(&self.pins, &name)?;
                log::info!(
                    "{} taken off {name}, an earlier underlay",
                    programs::FROM_UNDERLAY
                );
            }
        }
        Ok(())
    }

    /// Attaches `from_container` at TC ingress of a port: a container's host-side veth or the
    /// bridge side of the host's own leg. Nothing else, whatever asks.
    pub fn attach_container(&mut self, iface: &str) -> Result<()> {
        ensure!(
            ifnames::is_port(iface),
            "refusing to attach {} to {iface}: not a port the overlay makes ({})",
            programs::FROM_CONTAINER,
            ifnames::port_shapes()
        );
        self.attach(programs::FROM_CONTAINER, iface)
    }

    /// Attaches `gro_sink` at TC ingress of a GRO helper device (see gro.rs).
    pub fn attach_gro_sink(&mut self, iface: &str) -> Result<()> {
        ensure!(
            ifnames::is_gro_device(iface),
            "refusing to attach {} to {iface}: not a GRO helper device",
            programs::GRO_SINK
        );
        self.attach(programs::GRO_SINK, iface)
    }

    /// TCX attach (kernel >= 6.6), with the link pinned so it outlives this process. An existing
    /// pinned link for the interface is updated in place: no moment without a program.
    fn attach(&mut self, program: &str, iface: &str) -> Result<()> {
        let pin = self.pins.link(iface);
        let prog = classifier(&mut self.ebpf, program)?;
        let id = match PinnedLink::from_pin(&pin) {
            Ok(old) => {
                let link = FdLink::from(old).try_into().map_err(|e| anyhow!("{e}"))?;
                prog.attach_to_link(link)
                    .with_context(|| format!("replacing {program} on {iface}"))?
            }
            Err(_) => prog
                .attach(iface, TcAttachType::Ingress)
                .with_context(|| format!("attaching {program} to {iface} (TC ingress)"))?,
        };
        let link: FdLink = prog
            .take_link(id)
            .with_context(|| format!("taking the link of {program} on {iface}"))?
            .try_into()
            .map_err(|e| anyhow!("link of {program} on {iface}: {e}"))?;
        // Replacing: the old pin already names this link.
        let _ = std::fs::remove_file(&pin);
        link.pin(&pin).with_context(|| {
            format!(
                "pinning the link of {program} on {iface} at {}",
                pin.display()
            )
        })?;
        Ok(())
    }

    /// Attaches the socket load-balancing programs at the cgroup v2 root, so they see every
    /// socket of the machine (MEMBERS picks out our containers'), each link pinned so it
    /// outlives this process. A link pinned by an earlier agent is replaced by this one's: the
    /// new program is attached before the old one goes (the two never both translate: the
    /// second sees a backend's address, no service's). Once per load; then a no-op.
    pub fn attach_sock_lb(&mut self) -> Result<()> {
        if self.sock_lb {
            return Ok(());
        }
        let root = cgroup2_root()?;
        let cgroup = std::fs::File::open(&root)
            .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
        for name in [
            programs::SOCK_CONNECT4,
            programs::SOCK_SENDMSG4,
            programs::SOCK_RECVMSG4,
            programs::SOCK_GETPEERNAME4,
            programs::SOCK_CONNECT6,
            programs::SOCK_SENDMSG6,
            programs::SOCK_RECVMSG6,
            programs::SOCK_GETPEERNAME6,
        ] {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("program {name} is not a cgroup socket program"))?;
            // A failed attach is retried by the next sync: load once.
            if prog.fd().is_err() {
                prog.load()
                    .with_context(|| format!("verifying program {name}"))?;
            }
            // Others' programs at the root (another node's agent on this kernel, a runtime's)
            // stay: ours run beside them. A bpf_link on a cgroup is always one of many, and
            // the kernel refuses it any attach flag (EINVAL for BPF_F_ALLOW_MULTI), so the
            // mode that asks for none.
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} at {}", root.display()))?;
            let link: FdLink = prog
                .take_link(id)
                .with_context(|| format!("taking the link of {name}"))?
                .try_into()
                .map_err(|e| anyhow!("link of {name}: {e}"))?;
            let pin = self.pins.cgroup_link(name);
            if let Ok(old) = PinnedLink::from_pin(&pin) {
                old.unpin()
                    .with_context(|| format!("unpinning {}", pin.display()))?;
            }
            link.pin(&pin)
                .with_context(|| format!("pinning the link of {name} at {}", pin.display()))?;
        }
        self.sock_lb = true;
        Ok(())
    }

    /// Detaches the program from `iface` (the pinned link is what keeps it attached).
    pub fn detach(pins: &PinDir, iface: &str) -> Result<()> {
        let pin = pins.link(iface);
        match PinnedLink::from_pin(&pin) {
            Ok(link) => link
                .unpin()
                .map(drop)
                .with_context(|| format!("unpinning {}", pin.display())),
            Err(_) if !Path::new(&pin).exists() => Ok(()),
            Err(e) => Err(anyhow!("{}: {e}", pin.display())),
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on a unified machine,
/// /sys/fs/cgroup/unified on a hybrid one, elsewhere by hand; read from the mount table.
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    let table =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    cgroup2_in(&table).ok_or_else(|| anyhow!("no cgroup2 filesystem is mounted (mountinfo)"))
}

/// The mount point of the first cgroup2 filesystem of a mountinfo table (proc(5): the fifth
/// field is the mount point, the filesystem type follows the " - " separator).
fn cgroup2_in(mountinfo: &str) -> Option<std::path::PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next()? == "cgroup2")
            .then(|| mount.split_whitespace().nth(4).map(unescape_mount))
            .flatten()
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape_mount(path: &str) -> std::path::PathBuf {
    let mut out = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = path
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::path::PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Loads a program, once more when the kernel's verifier gave up with EAGAIN: it does when a
/// signal is pending for the loading thread (as libbpf, which retries it too), and a test
/// process that spawns children while it loads saw it (2 runs in 8 of dataplane_bytes).
fn verify(program: &mut SchedClassifier) -> Result<(), ProgramError> {
    const TRIES: u32 = 5;
    let mut tried = 1;
    loop {
        match program.load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tried < TRIES =>
            {
                tried += 1;
            }
            other => return other,
        }
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aya_obj::{
        generated::bpf_map_type::{self, *},
        maps::PinningType,
    };
    use overlay_common::{MAPS, MapKind, names};

    #[test]
    fn the_cgroup2_root_is_read_from_the_mount_table() {
        let hybrid = "25 31 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            super::cgroup2_in(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        let unified = "30 1 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(super::cgroup2_in(unified), Some("/sys/fs/cgroup".into()));
        let spaced = "30 1 0:26 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(super::cgroup2_in(spaced), Some("/mnt/my cg".into()));
        assert_eq!(
            super::cgroup2_in("1 2 0:3 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    /// `overlay_common::MAPS` is what overlay-ebpf/src/maps.rs declares: every pinned map of
    /// the object, by the same name, of the same kind.
    #[test]
    fn the_map_list_is_the_objects() {
        if super::OBJECT.is_empty() {
            eprintln!("no eBPF object was built (AYA_BUILD_SKIP): nothing to compare");
            return;
        }
        let object = aya_obj::Object::parse(super::OBJECT).expect("parsing the eBPF object");
        let pinned: BTreeMap<&str, u32> = object
            .maps
            .iter()
            .filter(|(name, m)| m.pinning() == PinningType::ByName || *name == names::LB_PEER)
            .map(|(name, m)| (name.as_str(), m.map_type()))
            .collect();
        let listed: BTreeMap<&str, u32> = MAPS
            .iter()
            .map(|m| {
                let kind: bpf_map_type = match m.kind {
                    MapKind::Hash => BPF_MAP_TYPE_HASH,
                    MapKind::LruHash => BPF_MAP_TYPE_LRU_HASH,
                    MapKind::Array => BPF_MAP_TYPE_ARRAY,
                    MapKind::PerCpuArray => BPF_MAP_TYPE_PERCPU_ARRAY,
                    MapKind::RingBuf => BPF_MAP_TYPE_RINGBUF,
                    MapKind::ProgArray => BPF_MAP_TYPE_PROG_ARRAY,
                    MapKind::SkStorage => BPF_MAP_TYPE_SK_STORAGE,
                };
                (m.name, kind as u32)
            })
            .collect();
        assert_eq!(listed, pinned);
    }
}
