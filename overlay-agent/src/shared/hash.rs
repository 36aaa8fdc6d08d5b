//! FNV-1a, 64 bits: stable across builds, machines and upgrades, unlike std's hasher. For what
//! another process must derive again: endpoint names from container IDs, map digests two
//! nodes compare.
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of a string.
pub fn of(s: &str) -> u64 {
    Fnv64::default().write(s.as_bytes()).finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        // From the FNV reference test suite.
        assert_eq!(super::of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::of("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
