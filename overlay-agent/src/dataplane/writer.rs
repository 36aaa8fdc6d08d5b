//! Where a reconcile's writes go: one seam, two sides. The kernel's maps ([`Maps`]) on a real
//! node; a [`Recorder`] in the scale harness, which applies the same `Diff` to a `MapState` in
//! memory and notes when each address arrived, so thousands of simulated nodes run the agent's
//! own control plane (daemon::core) without thousands of sets of kernel maps.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Result;

use super::{
    Maps,
    maps::ApplyReport,
    state::{Diff, MapState},
};

/// Makes a `Diff`'s writes and reads back what is held.
pub trait MapWriter {
    /// Every write of `diff`; the failures are counted in the report, never fatal.
    fn apply(&mut self, diff: &Diff) -> ApplyReport;
    /// What the maps hold now (after a failed apply, the next reconcile starts from it).
    fn snapshot(&self) -> Result<MapState>;
}

impl MapWriter for Maps {
    fn apply(&mut self, diff: &Diff) -> ApplyReport {
        Maps::apply(self, diff)
    }

    fn snapshot(&self) -> Result<MapState> {
        Maps::snapshot(self)
    }
}

/// A node's maps as values, and when each (VNI, IPv4) entry of ARP last arrived: what the
/// harness times network programming latency by. Cloned handles share one record.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Recorded>>);

#[derive(Default)]
pub struct Recorded {
    pub state: MapState,
    pub arrived: HashMap<(u32, [u8; 4]), Instant>,
    /// How many applies (map write batches) this node made.
    pub applies: u64,
}

impl Recorder {
    /// Reads the record under its lock.
    pub fn with<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// When `ip` of `vni` arrived, if it is held.
    pub fn arrived(&self, vni: u32, ip: [u8; 4]) -> Option<Instant> {
        self.with(|r| r.arrived.get(&(vni, ip)).copied())
    }
}

impl MapWriter for Recorder {
    fn apply(&mut self, diff: &Diff) -> ApplyReport {
        let now = Instant::now();
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.state.apply(diff);
        for (k, _) in &diff.arp.set {
            r.arrived.insert(*k, now);
        }
        for k in &diff.arp.remove {
            r.arrived.remove(k);
        }
        r.applies += 1;
        ApplyReport::default()
    }

    fn snapshot(&self) -> Result<MapState> {
        Ok(self.with(|r| r.state.clone()))
    }
}

#[cfg(test)]
mod tests {
    use overlay_common::vtep;

    use super::*;

    #[test]
    fn a_recorder_holds_what_was_written_and_when_each_address_came() {
        let mut want = MapState::default();
        want.add_remote(42, [2; 6], [10, 0, 0, 2], vtep::from_v4([192, 168, 0, 2]));
        let mut rec = Recorder::default();
        let before = Instant::now();
        assert!(
            rec.apply(&Diff::between(&MapState::default(), &want))
                .is_clean()
        );
        assert_eq!(rec.snapshot().unwrap(), want);
        assert!(rec.arrived(42, [10, 0, 0, 2]).unwrap() >= before);
        rec.apply(&Diff::between(&want, &MapState::default()));
        assert_eq!(rec.snapshot().unwrap(), MapState::default());
        assert_eq!(rec.arrived(42, [10, 0, 0, 2]), None);
    }
}
