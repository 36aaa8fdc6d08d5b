//! `overlay-agent monitor`: the programs' drop and trace events, live, filtered, as lines or
//! JSON. One reader per node (a ring buffer hands each event to one reader): a second monitor
//! is refused with the first one's lock named.
pub mod event;

use std::{
    collections::HashMap,
    io::Write,
    net::IpAddr,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use overlay_common::Counter;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

pub use event::Event;

use crate::{
    dataplane::{
        Maps, PinDir,
        monitor::{Lost, MonitorMaps, monotonic_ns},
    },
    netlink::iface_name,
    shared::net::Mac,
    store::Store,
};

/// How long the programs keep reporting after the monitor's last word: a monitor killed
/// without cleaning up costs the fast path nothing after this.
const LEASE: Duration = Duration::from_secs(3);
const REFRESH: Duration = Duration::from_secs(1);

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub drops: bool,
    pub traces: bool,
    pub vni: Option<u32>,
    /// Frames from or to this endpoint (its MAC or its address).
    pub endpoint: Option<EndpointMatch>,
    /// Only these outcomes (empty: all of the kinds asked for).
    pub reasons: Vec<Counter>,
}

#[derive(Clone, Debug, Default)]
pub struct EndpointMatch {
    pub mac: Option<Mac>,
    pub ip: Option<IpAddr>,
}

impl EndpointMatch {
    /// `spec` is a MAC, an address, or an endpoint's name (`NETWORK/NAME` or a `NAME` only one
    /// network has), which etcd resolves.
    pub async fn resolve(spec: &str, store: impl AsyncFnOnce() -> Result<Store>) -> Result<Self> {
        if let Ok(mac) = spec.parse::<Mac>() {
            return Ok(Self {
                mac: Some(mac),
                ip: None,
            });
        }
        if let Ok(ip) = spec.parse::<IpAddr>() {
            return Ok(Self {
                mac: None,
                ip: Some(ip),
            });
        }
        let (network, name) = match spec.split_once('/') {
            Some((net, name)) => (Some(net), name),
            None => (None, spec),
        };
        let found: Vec<_> = store()
            .await?
            .endpoints(network)
            .await?
            .into_iter()
            .filter(|ep| ep.name == name)
            .collect();
        match found.as_slice() {
            [ep] => Ok(Self {
                mac: Some(ep.mac),
                ip: Some(IpAddr::V4(ep.ip)),
            }),
            [] => bail!("no endpoint {spec} (give NETWORK/NAME, a MAC or an address)"),
            more => bail!(
                "endpoint name {name} is on {} networks ({}): give NETWORK/NAME",
                more.len(),
                more.iter()
                    .map(|ep| ep.network.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// A socket decision concerns an endpoint that is its backend.
    fn matches_socket(&self, s: &event::SocketDecision) -> bool {
        self.ip
            .is_some_and(|ip| s.backend.is_some_and(|b| b.ip() == ip))
    }

    fn matches(&self, i: &event::Inner) -> bool {
        self.mac.is_some_and(|m| i.src_mac == m || i.dst_mac == m)
            || self
                .ip
                .is_some_and(|ip| i.src_ip == Some(ip) || i.dst_ip == Some(ip))
    }
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        let kind = if e.kind == "drop" {
            self.drops
        } else {
            self.traces
        };
        kind && self.vni.is_none_or(|vni| e.vni == Some(vni))
            && (self.reasons.is_empty() || e.counter.is_some_and(|c| self.reasons.contains(&c)))
            && self.endpoint.as_ref().is_none_or(|ep| {
                e.inner.as_ref().is_some_and(|i| ep.matches(i))
                    || e.socket.as_ref().is_some_and(|s| ep.matches_socket(s))
            })
    }
}

pub struct Options {
    pub filter: Filter,
    pub json: bool,
    /// Events per CPU per ~1 ms the programs may send (0: their default).
    pub burst: u32,
    /// Stop after this many events shown.
    pub count: Option<u64>,
}

/// Opens the node's monitor maps; refuses if another monitor reads them.
pub fn open(pins: &PinDir) -> Result<(MonitorMaps, std::fs::File)> {
    let name = format!(
        "monitor-{:016x}",
        crate::shared::hash::of(&pins.dir().to_string_lossy())
    );
    let Some(lock) = crate::shared::lock::try_exclusive(&name)? else {
        bail!(
            "another monitor is reading this node's events ({} holds {}/{name}); a ring buffer has one reader",
            pins.dir().display(),
            crate::shared::lock::DIR
        );
    };
    Ok((MonitorMaps::open(pins)?, lock))
}

struct Ring(MonitorMaps);

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Shows events until interrupted, `count` is reached or `out` goes away (a reader that
/// disconnects); the programs stop reporting when it returns.
pub async fn run(pins: &PinDir, opts: Options, out: &mut impl Write) -> Result<()> {
    let (maps, _lock) = open(pins)?;
    let mut session = Session {
        dataplane: Maps::open(pins)?,
        opts,
        names: HashMap::new(),
        vnis: HashMap::new(),
        shown: 0,
    };
    // SAFETY: the fd is the ring buffer map's, owned by `maps` for as long as the AsyncFd.
    let mut ring = unsafe { AsyncFd::register(Ring(maps)) }
        .map_err(std::io::Error::from)
        .context("polling the EVENTS ring buffer")?;
    let baseline = ring.get_ref().0.lost()?;
    let mut reported = Lost::default();
    let mut refresh = tokio::time::interval(REFRESH);
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let outcome: Result<()> = async {
        session.listen(&mut ring.get_mut().0)?;
        // On stderr, so JSON on stdout stays one event per line; scripts wait for it.
        let f = &session.opts.filter;
        eprintln!(
            "overlay-agent monitor: listening for {} at {}",
            match (f.drops, f.traces) {
                (true, true) => "drops and traces",
                (true, false) => "drops",
                _ => "traces",
            },
            pins.dir().display()
        );
        loop {
            tokio::select! {
                ready = ring.readable_mut() => {
                    let mut guard = ready?;
                    let done = session.drain(&mut guard.get_inner_mut().0, out);
                    guard.clear_ready();
                    if done? {
                        return Ok(());
                    }
                }
                _ = refresh.tick() => {
                    session.listen(&mut ring.get_mut().0)?;
                    let lost = ring.get_ref().0.lost()?.since(baseline);
                    if lost != reported {
                        reported = lost;
                        show_lost(out, lost, session.opts.json)?;
                    }
                }
                // What the programs sent before the signal is shown, not dropped: a script
                // that stops the monitor right after its traffic sees all of it.
                _ = interrupt.recv() => return session.drain(&mut ring.get_mut().0, out).map(drop),
                _ = terminate.recv() => return session.drain(&mut ring.get_mut().0, out).map(drop),
            }
        }
    }
    .await;
    // Whatever ended it, the programs stop reporting now, not when the lease runs out.
    let stopped = ring.get_mut().0.stop();
    let lost = ring.get_ref().0.lost()?.since(baseline);
    if lost != reported {
        // The reader may be gone: nothing more to say then.
        let _ = show_lost(out, lost, session.opts.json);
    }
    match outcome {
        // A reader that went away is how a piped monitor ends.
        Err(e) if is_broken_pipe(&e) => {}
        other => other?,
    }
    stopped
}

struct Session {
    dataplane: Maps,
    opts: Options,
    /// Interface names and port VNIs, looked up once per ifindex.
    names: HashMap<u32, Option<String>>,
    vnis: HashMap<u32, Option<u32>>,
    shown: u64,
}

impl Session {
    fn listen(&self, maps: &mut MonitorMaps) -> Result<()> {
        let f = &self.opts.filter;
        maps.listen(f.drops, f.traces, self.opts.burst, LEASE)
    }

    /// Shows what the ring holds; true once `count` events were shown.
    fn drain(&mut self, maps: &mut MonitorMaps, out: &mut impl Write) -> Result<bool> {
        while let Some(raw) = maps.next_event() {
            let (dataplane, vnis) = (&self.dataplane, &mut self.vnis);
            let mut e = event::decode(&raw, |ifindex| {
                *vnis
                    .entry(ifindex)
                    .or_insert_with(|| dataplane.port(ifindex).map(|ep| ep.vni))
            });
            if !self.opts.filter.matches(&e) {
                continue;
            }
            e.iface = self
                .names
                .entry(e.ifindex)
                .or_insert_with(|| iface_name(e.ifindex))
                .clone();
            show(out, &e, self.opts.json)?;
            self.shown += 1;
            if self.opts.count.is_some_and(|n| self.shown >= n) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn show(out: &mut impl Write, e: &Event, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer(&mut *out, e)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", e.line(&wall_clock(e.ktime_ns)))?;
    }
    out.flush()?;
    Ok(())
}

/// What the programs could not send since this monitor started: a line of its own.
fn show_lost(out: &mut impl Write, lost: Lost, json: bool) -> Result<()> {
    if json {
        let line = serde_json::json!({
            "type": "lost",
            "lost": lost.total(),
            "rate_limited": lost.rate_limited,
            "ring_full": lost.ring_full,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "lost {} events so far: {} over the per-CPU rate limit, {} with the ring buffer full",
            lost.total(),
            lost.rate_limited,
            lost.ring_full
        )?;
    }
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// The wall-clock time of a CLOCK_MONOTONIC instant, as HH:MM:SS.micros (UTC).
fn wall_clock(ktime_ns: u64) -> String {
    let ago = Duration::from_nanos(monotonic_ns().saturating_sub(ktime_ns));
    let at = SystemTime::now() - ago;
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since_epoch.subsec_micros()
    )
}
