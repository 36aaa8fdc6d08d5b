//! Jittered waits: thousands of agents that lost etcd at one instant (an outage, a restart)
//! must not come back at one instant, or the relists stampede the cluster that just came back.
use std::time::Duration;

use super::hash::Fnv64;

/// `base` scaled by a factor spread over [1/2, 1), different for every caller (`who`: the
/// node's name) and every call: a fixed wait plus full spread, the usual "equal jitter".
pub fn jittered(base: Duration, who: &str) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = Fnv64::default();
    h.write(who.as_bytes())
        .write(&nanos.to_le_bytes())
        .write(&std::process::id().to_le_bytes());
    // The high bits of FNV mix best; 2^-32 steps are fine enough.
    let unit = (h.finish() >> 32) as f64 / (1u64 << 32) as f64;
    base.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
