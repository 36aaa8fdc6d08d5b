//! The monitor's side of the dataplane: telling the programs someone listens, reading their
//! events from the `EVENTS` ring buffer, and what they could not send.
use std::{
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use overlay_common::{
    monitor::{MonitorCpu, MonitorCtl, MonitorEvent},
    names,
};

use super::{PinDir, maps::open};

pub struct MonitorMaps {
    ctl: Array<MapData, MonitorCtl>,
    cpu: PerCpuArray<MapData, MonitorCpu>,
    events: RingBuf<MapData>,
}

/// What the programs could not send, summed over CPUs since the maps were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub rate_limited: u64,
    pub ring_full: u64,
}

impl Lost {
    pub fn since(self, earlier: Lost) -> Lost {
        Lost {
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
        }
    }

    pub fn total(self) -> u64 {
        self.rate_limited + self.ring_full
    }
}

impl MonitorMaps {
    pub fn open(pins: &PinDir) -> Result<Self> {
        Ok(Self {
            ctl: open(pins, names::MONITOR_CTL)?,
            cpu: open(pins, names::MONITOR_CPU)?,
            events: open(pins, names::EVENTS)?,
        })
    }

    /// Asks the programs for drops and/or traces for the next `lease`: called again before it
    /// runs out for as long as the monitor runs. `burst`: events per CPU per ~1 ms (0: default).
    pub fn listen(&mut self, drops: bool, traces: bool, burst: u32, lease: Duration) -> Result<()> {
        let until = monotonic_ns() + lease.as_nanos() as u64;
        let ctl = MonitorCtl {
            drops_until_ns: if drops { until } else { 0 },
            traces_until_ns: if traces { until } else { 0 },
            burst,
            _pad: 0,
        };
        self.ctl.set(0, ctl, 0).context("writing MONITOR_CTL")
    }

    /// Nobody listens any more: the programs go back to one load and a compare.
    pub fn stop(&mut self) -> Result<()> {
        self.ctl
            .set(0, MonitorCtl::default(), 0)
            .context("writing MONITOR_CTL")
    }

    /// What the programs were last told (deadlines in CLOCK_MONOTONIC ns; 0: nobody listens).
    pub fn listening(&self) -> Result<MonitorCtl> {
        self.ctl.get(&0, 0).context("reading MONITOR_CTL")
    }

    pub fn lost(&self) -> Result<Lost> {
        let per_cpu = self.cpu.get(&0, 0).context("reading MONITOR_CPU")?;
        Ok(per_cpu.iter().fold(Lost::default(), |sum, c| Lost {
            rate_limited: sum.rate_limited + c.rate_limited,
            ring_full: sum.ring_full + c.ring_full,
        }))
    }

    /// The next event in the ring, if one is there.
    pub fn next_event(&mut self) -> Option<MonitorEvent> {
        let item = self.events.next()?;
        (item.len() >= size_of::<MonitorEvent>())
            .then(|| unsafe { item.as_ptr().cast::<MonitorEvent>().read_unaligned() })
    }
}

/// The EVENTS ring buffer's descriptor: readable when events wait (for the monitor's poll).
impl AsRawFd for MonitorMaps {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
