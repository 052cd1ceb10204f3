//! A fixed, seedless hasher for in-memory indexes.
//!
//! `std`'s `RandomState` seeds every map differently per process, which makes iteration order and
//! timings differ between runs; parti never iterates a hash map to make a decision (ordered
//! collections do that), but its indexes use this deterministic hasher so that runs are
//! reproducible byte for byte. The mixing step is the one popularised by rustc's `FxHasher`;
//! [`Hasher::finish`] applies MurmurHash3's 64-bit finaliser, because `hashbrown` picks buckets
//! with the *low* bits of a hash and a multiply only carries entropy upwards: without it, keys
//! that differ only past their first bytes (`p12345`, `p12346`: the constant `p` is the low
//! byte of the word) share a few hundred buckets among 100,000 entries.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fast deterministic (not DoS-resistant) hasher. Keys come from the operator's own catalog and
/// cluster, not from untrusted clients.
#[derive(Clone, Copy, Debug, Default)]
pub struct StableHasher {
    hash: u64,
}

impl StableHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.hash)
    }
}

/// `BuildHasher` for [`StableHasher`]: use as `HashMap<K, V, StableBuildHasher>`.
pub type StableBuildHasher = BuildHasherDefault<StableHasher>;

/// A `HashMap` with the deterministic hasher.
pub type StableHashMap<K, V> = std::collections::HashMap<K, V, StableBuildHasher>;

/// A `HashSet` with the deterministic hasher.
pub type StableHashSet<K> = std::collections::HashSet<K, StableBuildHasher>;

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit affects every output bit.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// 64-bit FNV-1a of `bytes`: a stable digest for values that go on the wire (the catalog digest
/// in `ClusterMeta`), identical on every platform and release.
#[must_use]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn same_input_same_hash_across_builders() {
        let a = StableBuildHasher::default();
        let b = StableBuildHasher::default();
        assert_eq!(a.hash_one("worker-7"), b.hash_one("worker-7"));
        assert_ne!(a.hash_one("worker-7"), a.hash_one("worker-8"));
    }

    /// Keys like the simulator's `p0 … p99999` must spread over the low bits (bucket index).
    #[test]
    fn low_bits_spread_for_short_keys_with_a_common_prefix() {
        let b = StableBuildHasher::default();
        let buckets: StableHashSet<u64> = (0..100_000)
            .map(|i| b.hash_one([format!("p{i}")].as_slice()) & ((1 << 17) - 1))
            .collect();
        // 100,000 keys into 131,072 buckets: a uniform hash fills about 70,000 of them.
        assert!(buckets.len() > 60_000, "{} buckets", buckets.len());
    }

    #[test]
    fn fnv_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
