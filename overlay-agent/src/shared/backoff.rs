//! Jittered waits: thousands of agents that lost etcd at one instant (an outage, a restart)
//! must not come back at one instant, or the relists stampede the cluster that just came back.
use std::time::Duration;

use super::hash::Fnv64;

/// `base` scaled by a factor spread over [1/2, 1), different for every caller (`who`: the
/// node's name) and every call: a fixed wait plus full spread, the usual "equal jitter".
pub fn jittered(base: Duration, who: &str) -> Duration {
    base.mul_f64(0.5 + unit(who) / 2.0)
}

/// A moment of `window` taken at random, different for every caller and call: "full jitter",
/// for work every node must do once but not all at once.
pub fn spread(window: Duration, who: &str) -> Duration {
    window.mul_f64(unit(who))
}

/// A number in [0, 1), different for every caller (`who`) and every call.
fn unit(who: &str) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = Fnv64::default();
    h.write(who.as_bytes())
        .write(&nanos.to_le_bytes())
        .write(&std::process::id().to_le_bytes());
    // The high bits of FNV mix best; 2^-32 steps are fine enough.
    (h.finish() >> 32) as f64 / (1u64 << 32) as f64
}

/// The wait before a node's next etcd session: 200-400 ms after a session that lasted, and
/// doubling (jittered, up to [`Sessions::MAX`]) while sessions keep failing fast. Without it an
/// overloaded etcd meets its own overload again: at 5,000 simulated nodes, sessions failing on
/// slow answers came back every 0.4 s each, granting 3,000 leases a second (each a raft write)
/// and never letting etcd recover.
#[derive(Debug)]
pub struct Sessions {
    wait: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self { wait: Self::FIRST }
    }
}

impl Sessions {
    pub const FIRST: Duration = Duration::from_millis(400);
    pub const MAX: Duration = Duration::from_secs(30);
    /// A session that lasted this long was a good one: the next failure starts over.
    pub const LASTED: Duration = Duration::from_secs(60);

    /// How long to wait after a session of `lasted`, for node `who`.
    pub fn next(&mut self, lasted: Duration, who: &str) -> Duration {
        if lasted >= Self::LASTED {
            self.wait = Self::FIRST;
        }
        let wait = jittered(self.wait, who);
        self.wait = (self.wait * 2).min(Self::MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_sessions_back_off_and_a_good_one_starts_over() {
        let mut s = Sessions::default();
        let quick = Duration::from_secs(1);
        let waits: Vec<Duration> = (0..10).map(|_| s.next(quick, "n1")).collect();
        assert!(waits[0] < Sessions::FIRST);
        assert!(waits[3] >= Sessions::FIRST * 4);
        assert!(waits.iter().all(|w| *w < Sessions::MAX));
        assert!(waits[9] >= Sessions::MAX / 2);
        assert!(s.next(Sessions::LASTED, "n1") < Sessions::FIRST);
    }

    #[test]
    fn a_spread_covers_the_whole_window() {
        let window = Duration::from_secs(100);
        let at: Vec<Duration> = (0..1000)
            .map(|i| spread(window, &format!("node-{i}")))
            .collect();
        assert!(at.iter().all(|d| *d < window));
        for q in 0..4u32 {
            let (lo, hi) = (window / 4 * q, window / 4 * (q + 1));
            let n = at.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!((150..350).contains(&n), "quarter {q}: {n} of 1000");
        }
    }

    #[test]
    fn waits_are_spread_over_the_upper_half_of_the_base() {
        let base = Duration::from_secs(2);
        let waits: Vec<Duration> = (0..1000)
            .map(|i| jittered(base, &format!("node-{i}")))
            .collect();
        assert!(waits.iter().all(|w| *w >= base / 2 && *w < base));
        // Spread, not bunched: each quarter of the range gets a fair share.
        for q in 0..2u32 {
            let lo = base / 2 + base / 4 * q;
            let n = waits
                .iter()
                .filter(|w| **w >= lo && **w < lo + base / 4)
                .count();
            assert!((350..650).contains(&n), "{n} of 1000 in quarter {q}");
        }
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 990);
    }
}
