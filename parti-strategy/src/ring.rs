//! The Go library's consistent hash ring, bit for bit, and the [`ConsistentHash`] strategy.
//!
//! Layout (as `arloliu/parti`'s `internal/hash/ring.go`):
//!
//! - a partition's hash chains XXH3-64 over its keys: the first key is hashed unseeded (or with
//!   the ring seed when it is not 0), every later key is hashed with the previous hash as seed
//!   ([`partition_hash`]);
//! - each worker has `vnodes` virtual nodes; node `i` hashes the 8-byte little-endian `i` with
//!   the hash of the worker id as seed ([`vnode_hash`]);
//! - the nodes are sorted by hash, and a partition belongs to the first node whose hash is `≥` the
//!   partition's hash, wrapping to the first node past the end.
//!
//! So for the same worker ids, seed and vnode count, every partition lands on the same worker as
//! with the Go library, and a fleet that migrates keeps its placement. (Go's sort is not stable;
//! two nodes with the same 64-bit hash, which has never been seen, are ordered here by worker id.)

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::canon::{Workers, radix_sort};

/// Virtual nodes per worker in the Go library's ring.
pub const DEFAULT_VNODES: u32 = 150;

/// XXH3-64 of `bytes`, seeded unless `seed` is 0 (XXH3 with seed 0 is the unseeded hash).
#[inline]
fn xxh3(bytes: &[u8], seed: u64) -> u64 {
    if seed == 0 {
        xxh3_64(bytes)
    } else {
        xxh3_64_with_seed(bytes, seed)
    }
}

/// The Go library's `Partition.HashIDSeed(seed)`: XXH3-64 chained over the keys. An empty key
/// list hashes to 0.
///
/// ```
/// use parti_strategy::ring::partition_hash;
/// let keys = ["topic".to_string(), "p".to_string(), "42".to_string()];
/// assert_eq!(partition_hash(&keys, 0), 0x6b98_f2d7_b7b9_6817);
/// ```
#[must_use]
pub fn partition_hash(keys: &[String], seed: u64) -> u64 {
    let mut keys = keys.iter();
    let Some(first) = keys.next() else {
        return 0;
    };
    let mut h = xxh3(first.as_bytes(), seed);
    for k in keys {
        h = xxh3_64_with_seed(k.as_bytes(), h);
    }
    h
}

/// The hash of virtual node `index` of `worker` in a ring with `seed`.
#[must_use]
pub fn vnode_hash(worker: &str, index: u64, seed: u64) -> u64 {
    xxh3_64_with_seed(&index.to_le_bytes(), xxh3(worker.as_bytes(), seed))
}

/// A Go-compatible ring over some workers. Owners are indexes into the worker list it was built
/// from.
#[derive(Clone, Debug)]
pub struct HashRing {
    hashes: Vec<u64>,
    owners: Vec<u32>,
    /// `starts[b]` = first node whose hash has top 16 bits `≥ b`: a lookup searches only the
    /// nodes of its own bucket (two or three on a large ring) instead of the whole ring.
    starts: Vec<u32>,
    seed: u64,
}

/// Bits of the hash that index [`HashRing::starts`].
const BUCKET_BITS: u32 = 16;

impl HashRing {
    /// Builds the ring of `workers` (ids, no duplicates) with `vnodes` nodes each.
    ///
    /// # Errors
    ///
    /// [`StrategyError::InvalidSettings`] when `vnodes` is 0 or the ring would have `u32::MAX`
    /// nodes or more.
    pub fn new<S: AsRef<str>>(
        workers: &[S],
        vnodes: u32,
        seed: u64,
    ) -> Result<Self, StrategyError> {
        if vnodes == 0 {
            return Err(StrategyError::InvalidSettings {
                reason: "a ring needs at least one virtual node per worker".into(),
            });
        }
        if workers.len().saturating_mul(vnodes as usize) >= u32::MAX as usize {
            return Err(StrategyError::InvalidSettings {
                reason: format!(
                    "{} workers × {vnodes} nodes do not fit a ring",
                    workers.len()
                ),
            });
        }
        // Nodes are generated in worker-id order and sorted stably, so two nodes with the same
        // hash are ordered by worker id whatever the order of `workers`.
        let mut by_id: Vec<u32> = (0..).take(workers.len()).collect();
        by_id.sort_by(|&a, &b| {
            workers[a as usize]
                .as_ref()
                .cmp(workers[b as usize].as_ref())
        });
        let mut nodes: Vec<(u64, u32)> = Vec::with_capacity(workers.len() * vnodes as usize);
        for &w in &by_id {
            let base = xxh3(workers[w as usize].as_ref().as_bytes(), seed);
            for i in 0..u64::from(vnodes) {
                nodes.push((xxh3_64_with_seed(&i.to_le_bytes(), base), w));
            }
        }
        radix_sort(&mut nodes, |h| h, 64);
        let hashes: Vec<u64> = nodes.iter().map(|n| n.0).collect();
        let mut starts = vec![0u32; (1 << BUCKET_BITS) + 1];
        let mut i = 0usize;
        for (b, start) in starts.iter_mut().enumerate() {
            while i < hashes.len() && ((hashes[i] >> (64 - BUCKET_BITS)) as usize) < b {
                i += 1;
            }
            *start = u32::try_from(i).expect("the node count was checked to fit u32");
        }
        Ok(HashRing {
            hashes,
            owners: nodes.iter().map(|n| n.1).collect(),
            starts,
            seed,
        })
    }

    /// Number of virtual nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The ring has no node.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The seed the ring was built with.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The position of the node owning `hash`: the first node with a hash `≥ hash`, wrapping to
    /// 0. `None` for an empty ring.
    #[must_use]
    #[inline]
    pub fn position(&self, hash: u64) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let b = (hash >> (64 - BUCKET_BITS)) as usize;
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let i = lo + self.hashes[lo..hi].partition_point(|&h| h < hash);
        Some(if i == self.hashes.len() { 0 } else { i })
    }

    /// The worker (index into the list the ring was built from) of the node at `position`.
    #[must_use]
    #[inline]
    pub fn owner_at(&self, position: usize) -> Option<usize> {
        self.owners.get(position).map(|&w| w as usize)
    }

    /// The worker owning a raw hash (Go's lookup after hashing).
    #[must_use]
    pub fn owner_of_hash(&self, hash: u64) -> Option<usize> {
        self.position(hash).and_then(|p| self.owner_at(p))
    }

    /// The worker owning a partition with these keys (Go's `GetNodeIndexForPartition`).
    #[must_use]
    pub fn owner_of(&self, keys: &[String]) -> Option<usize> {
        if keys.is_empty() {
            return None;
        }
        self.owner_of_hash(partition_hash(keys, self.seed))
    }

    /// The worker owning a raw string key (Go's `GetNode`).
    #[must_use]
    pub fn owner_of_key(&self, key: &str) -> Option<usize> {
        self.owner_of_hash(xxh3(key.as_bytes(), self.seed))
    }
}

/// Builds the ring of the input's workers in canonical (id) order: owners are canonical ranks.
pub(crate) fn ring_by_rank(
    input: &AssignInput<'_>,
    workers: &Workers<'_>,
    vnodes: u32,
    seed: u64,
) -> Result<HashRing, StrategyError> {
    let ids: Vec<&str> = workers
        .sorted
        .iter()
        .map(|&i| input.workers[i].id.as_str())
        .collect();
    HashRing::new(&ids, vnodes, seed)
}

/// The Go library's `ConsistentHash` strategy: every partition goes to its ring owner. Weights
/// and capacities are ignored, and so is the previous assignment (a ring is sticky by
/// construction: only the partitions next to a joining or leaving worker's nodes move).
///
/// Balance is that of a ring with 150 nodes per worker: max/mean ≈ 1.4 by count.
///
/// ```
/// use parti_core::strategy::{AssignInput, AssignmentStrategy, WorkerSpec};
/// use parti_core::{Assignment, Partition, WorkerId};
/// use parti_strategy::ConsistentHash;
///
/// let workers: Vec<_> = (0..3).map(|i| WorkerSpec::new(WorkerId::from_parts("worker", i).unwrap())).collect();
/// let partitions: Vec<_> = (0..4).map(|i| Partition::with_default_weight([format!("p-{i}")]).unwrap()).collect();
/// let previous = Assignment::new();
/// let input = AssignInput { workers: &workers, partitions: &partitions, previous: &previous };
/// // The Go library with seed 42 puts p-0 and p-3 on worker-1, p-1 and p-2 on worker-2.
/// let plan = ConsistentHash::new().with_seed(42).assign(&input)?;
/// assert_eq!(plan.owners(), &[1, 2, 2, 1]);
/// # Ok::<(), parti_core::strategy::StrategyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsistentHash {
    vnodes: u32,
    seed: u64,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHash {
    /// The Go defaults: 150 virtual nodes per worker, seed 0.
    #[must_use]
    pub fn new() -> Self {
        ConsistentHash {
            vnodes: DEFAULT_VNODES,
            seed: 0,
        }
    }

    /// Sets the virtual nodes per worker (Go's `WithVirtualNodes`; 0 makes `assign` fail).
    #[must_use]
    pub fn with_vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes;
        self
    }

    /// Sets the hash seed (Go's `WithHashSeed`).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl AssignmentStrategy for ConsistentHash {
    fn name(&self) -> &'static str {
        "consistent-hash"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        let workers = Workers::new(input)?;
        let ring = ring_by_rank(input, &workers, self.vnodes, self.seed)?;
        let owners = input
            .partitions
            .iter()
            .map(|p| {
                let rank = ring
                    .owner_of_hash(partition_hash(p.keys(), self.seed))
                    .expect("the ring has at least one node: one worker and vnodes ≥ 1");
                workers.at_rank(rank)
            })
            .collect();
        Ok(Plan::from_owners(owners))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_string()).collect()
    }

    /// Vectors worked out from the algorithm description (reference XXH3 and the Go chaining).
    #[test]
    fn hash_vectors() {
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(
            partition_hash(&keys(&["topic", "p", "42"]), 0),
            0x6b98_f2d7_b7b9_6817
        );
        assert_eq!(
            partition_hash(&keys(&["topic", "p", "42"]), 12345),
            0xeb1e_5795_a014_9af6
        );
        assert_eq!(
            partition_hash(&keys(&["ab", "c"]), 0),
            0x164c_43d7_c802_70a0
        );
        assert_eq!(
            partition_hash(&keys(&["a", "bc"]), 0),
            0xfde7_2eee_4d40_1f1e
        );
        assert_eq!(partition_hash(&keys(&["p-0"]), 0), 0x41a5_fd59_7920_00bc);
        assert_eq!(partition_hash(&[], 0), 0);
        assert_eq!(vnode_hash("worker-0", 0, 0), 0xcd8c_fe2a_0341_6802);
        assert_eq!(vnode_hash("worker-0", 1, 0), 0x0c7b_027a_6eea_ed17);
    }

    #[test]
    fn ring_size_and_lookup_wraps() {
        let ring = HashRing::new(&["a", "b", "c"], 100, 0).unwrap();
        assert_eq!(ring.len(), 300);
        let first = ring.owner_at(0).unwrap();
        assert_eq!(ring.owner_of_hash(u64::MAX), Some(first));
        assert_eq!(ring.owner_of_hash(0), Some(first));
        assert_eq!(ring.owner_of(&[]), None);
        assert!(HashRing::new(&["a"], 0, 0).is_err());
        let empty: [&str; 0] = [];
        assert_eq!(HashRing::new(&empty, 10, 0).unwrap().owner_of_hash(1), None);
    }

    #[test]
    fn go_owner_vectors_seed_42() {
        // weighted_consistent_hash_test.go: p-0..3 over worker-0..2, seed 42, 150 vnodes.
        let ring = HashRing::new(&["worker-0", "worker-1", "worker-2"], 150, 42).unwrap();
        let owners: Vec<_> = (0..4)
            .map(|i| ring.owner_of(&[format!("p-{i}")]).unwrap())
            .collect();
        assert_eq!(owners, vec![1, 2, 2, 1]);
    }

    #[test]
    fn go_ring_distribution_vector() {
        // ring_test.go: 1000 keys partition-0..999 over three workers, 150 vnodes → 329/310/361.
        let ring = HashRing::new(&["worker-0", "worker-1", "worker-2"], 150, 0).unwrap();
        let mut counts = [0usize; 3];
        for i in 0..1000 {
            counts[ring.owner_of_key(&format!("partition-{i}")).unwrap()] += 1;
        }
        assert_eq!(counts, [329, 310, 361]);
        // consistent_hash_test.go: 30 single-letter partitions over three workers → 9/11/10.
        let mut counts = [0usize; 3];
        for c in 'a'..='~' {
            if counts.iter().sum::<usize>() == 30 {
                break;
            }
            counts[ring.owner_of(&[c.to_string()]).unwrap()] += 1;
        }
        assert_eq!(counts, [9, 11, 10]);
    }

    #[test]
    fn go_affinity_vectors() {
        let three = ["worker-0", "worker-1", "worker-2"];
        // ring_test.go, seed 12345: 2 → 3 workers keeps 647 of 1000 `p-i` partitions in place.
        let r2 = HashRing::new(&three[..2], 150, 12345).unwrap();
        let r3 = HashRing::new(&three, 150, 12345).unwrap();
        let kept = (0..1000)
            .filter(|i| {
                let k = [format!("p-{i}")];
                r2.owner_of(&k) == r3.owner_of(&k)
            })
            .count();
        assert_eq!(kept, 647);
        // consistent_hash_test.go, seed 0: 100 keys 'a'+i, 2 → 3 workers keeps 65.
        let r2 = HashRing::new(&three[..2], 150, 0).unwrap();
        let r3 = HashRing::new(&three, 150, 0).unwrap();
        let kept = (0..100u32)
            .filter_map(|i| char::from_u32('a' as u32 + i))
            .filter(|c| {
                let k = [c.to_string()];
                r2.owner_of(&k) == r3.owner_of(&k)
            })
            .count();
        assert_eq!(kept, 65);
        // Removing a worker never moves another worker's partitions.
        for i in 0..1000 {
            let k = [format!("p-{i}")];
            let before = r3.owner_of(&k).unwrap();
            if before != 2 {
                assert_eq!(r2.owner_of(&k), Some(before));
            }
        }
    }

    #[test]
    fn ring_ignores_worker_order() {
        let a = HashRing::new(&["x", "y", "z"], 20, 7).unwrap();
        let b = HashRing::new(&["z", "x", "y"], 20, 7).unwrap();
        let names_a = ["x", "y", "z"];
        let names_b = ["z", "x", "y"];
        for i in 0..500 {
            let k = [format!("k{i}")];
            assert_eq!(
                names_a[a.owner_of(&k).unwrap()],
                names_b[b.owner_of(&k).unwrap()]
            );
        }
    }
}
