//! Maps keyed by file descriptor, with a hash made for them.
//!
//! The standard `HashMap` hashes with SipHash-1-3, which resists collision attacks on keys an
//! attacker chooses. Descriptors are small integers the kernel chooses, and the loop looks
//! one up at every readiness event (its watchers, its transport): a single multiplication
//! (Fibonacci hashing, which spreads consecutive integers over the high bits that the table
//! probes with) is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from file descriptor to `V`.
pub type FdMap<V> = HashMap<i32, V, BuildHasherDefault<FdHasher>>;

/// Hashes one descriptor (an `i32`) by Fibonacci multiplication.
#[derive(Default, Clone, Copy)]
pub struct FdHasher(u64);

/// 2^64 divided by the golden ratio, odd: multiplying by it permutes the 64-bit integers
/// and moves the differences of small keys into the high bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than integers; not used by `FdMap`, kept correct.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_i32(&mut self, fd: i32) {
        self.0 = (self.0 ^ u64::from(fd as u32)).wrapping_mul(GOLDEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_map_and_unmap() {
        // Miri (scripts/memcheck.sh) interprets every step: a smaller map there.
        let count: i32 = if cfg!(miri) { 512 } else { 10_000 };
        let mut map: FdMap<usize> = FdMap::default();
        for fd in 0..count {
            map.insert(fd, fd as usize * 2);
        }
        assert_eq!(map.len(), count as usize);
        assert!((0..count).all(|fd| map.get(&fd) == Some(&(fd as usize * 2))));
        for fd in (0..count).step_by(2) {
            map.remove(&fd);
        }
        assert_eq!(map.get(&4), None);
        assert_eq!(map.get(&5), Some(&10));
        assert_eq!(map.len(), count as usize / 2);
    }

    #[test]
    fn consecutive_descriptors_differ_in_the_high_bits() {
        let hash = |fd: i32| {
            let mut h = FdHasher::default();
            h.write_i32(fd);
            h.finish() >> 57 // the 7 bits hashbrown stores as the control byte
        };
        let distinct: std::collections::HashSet<u64> = (0..64).map(hash).collect();
        assert!(
            distinct.len() > 32,
            "control bytes barely vary: {}",
            distinct.len()
        );
    }
}
