//! Canonical views of an input: workers in id order, previous owners as indexes, stable keys.
//!
//! Every strategy sorts or keys what it looks at here, so that its result does not depend on the
//! order of the input lists.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parti_core::hash::StableHashMap;
use parti_core::strategy::{AssignInput, StrategyError};
use parti_core::{Partition, PartitionId, WorkerId};

/// "No owner" in an owner vector.
pub(crate) const NONE: usize = usize::MAX;

/// The live workers, validated, in id order.
pub(crate) struct Workers<'a> {
    /// Input indexes in id order.
    pub(crate) sorted: Vec<usize>,
    /// Input index → position in `sorted` (the canonical rank used for tie-breaks).
    pub(crate) rank: Vec<usize>,
    by_id: StableHashMap<&'a str, usize>,
}

impl<'a> Workers<'a> {
    /// Validates the workers of `input` (at least one, no duplicate, capacities ≥ 1).
    pub(crate) fn new(input: &AssignInput<'a>) -> Result<Self, StrategyError> {
        input.require_workers()?;
        let workers = input.workers;
        let mut sorted: Vec<usize> = (0..workers.len()).collect();
        sorted.sort_unstable_by(|&a, &b| workers[a].id.cmp(&workers[b].id));
        if let Some(pair) = sorted
            .windows(2)
            .find(|p| workers[p[0]].id == workers[p[1]].id)
        {
            return Err(StrategyError::DuplicateWorker {
                worker: workers[pair[0]].id.clone(),
            });
        }
        if let Some(w) = workers.iter().find(|w| w.capacity == 0) {
            return Err(StrategyError::ZeroCapacity {
                worker: w.id.clone(),
            });
        }
        let mut rank = vec![0; workers.len()];
        for (r, &i) in sorted.iter().enumerate() {
            rank[i] = r;
        }
        let mut by_id = StableHashMap::default();
        by_id.reserve(workers.len());
        for (i, w) in workers.iter().enumerate() {
            by_id.insert(w.id.as_str(), i);
        }
        Ok(Workers {
            sorted,
            rank,
            by_id,
        })
    }

    /// Input index of a live worker.
    #[inline]
    pub(crate) fn index_of(&self, id: &WorkerId) -> Option<usize> {
        self.by_id.get(id.as_str()).copied()
    }

    /// Number of live workers.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The input index of the worker with canonical rank `r`.
    pub(crate) fn at_rank(&self, r: usize) -> usize {
        self.sorted[r]
    }
}

/// A deterministic hasher for machine words (addresses, indexes): one multiply per word and a
/// rotation at the end, so that the well-mixed high bits of the product reach the low bits the
/// hash table indexes by (the finishing step of rustc-hash 2).
#[derive(Clone, Copy, Default)]
pub(crate) struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

/// A fast, platform-independent 64-bit hash of a key list, for canonical orders (not for the
/// Go-compatible ring, which uses [`partition_hash`]). Keys are read eight bytes at a time and
/// separated, so `["ab", "c"]` and `["a", "bc"]` differ.
#[inline]
pub(crate) fn content_hash(keys: &[String]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for key in keys {
        let bytes = key.as_bytes();
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        // The length closes the key: no two key lists share a byte stream.
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        h = (h.rotate_left(23) ^ (bytes.len() as u64)).wrapping_mul(K);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit affects every output bit.
#[inline]
pub(crate) fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A map keyed by machine words, with [`WordHasher`].
pub(crate) type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// The previous assignment, seen from the input: each input partition's live previous owner,
/// and a way back from an id of the previous assignment to an input position.
pub(crate) struct PreviousIndex {
    /// For each input partition, the input index of its previous owner when that owner is live,
    /// else [`NONE`].
    pub(crate) owners: Vec<usize>,
    /// `(owner, input position or NONE)` of the live workers' partitions, by the address of the
    /// id's shared key list.
    by_address: WordMap<usize, (usize, usize)>,
}

impl PreviousIndex {
    /// The input position of `id`, an id of the previous assignment held by a live worker, when
    /// the input holds that very `Arc`. `None` says nothing: the id may be absent from the input,
    /// or present as a separate `Arc`.
    #[inline]
    pub(crate) fn input_position(&self, id: &PartitionId) -> Option<usize> {
        match self.by_address.get(&address(id)) {
            Some(&(_, i)) if i != NONE => Some(i),
            _ => None,
        }
    }
}

#[inline]
fn address(id: &PartitionId) -> usize {
    id.keys().as_ptr() as usize
}

/// Reads the previous assignment (see [`PreviousIndex`]).
///
/// Fast path: a partition id is an `Arc`, and the previous assignment usually holds clones of
/// the very ids of the catalog (the plan was made from them), so the live workers' partitions are
/// indexed by the address of their shared key list — a word-sized key — and the input partitions
/// are looked up by address. Two live ids at one address are the same id, so a hit is exact. An
/// input partition left without an owner (new, orphaned, or an id that was decoded separately)
/// is then looked up by content through [`Assignment::owner`](parti_core::Assignment::owner).
pub(crate) fn previous_index(input: &AssignInput<'_>, workers: &Workers<'_>) -> PreviousIndex {
    let parts = input.partitions;
    let mut by_address: WordMap<usize, (usize, usize)> = WordMap::default();
    if input.previous.is_empty() {
        return PreviousIndex {
            owners: vec![NONE; parts.len()],
            by_address,
        };
    }
    by_address.reserve(parts.len());
    for (worker, set) in input.previous.iter() {
        if let Some(w) = workers.index_of(worker) {
            for p in set {
                by_address.insert(address(p), (w, NONE));
            }
        }
    }
    let mut owners: Vec<usize> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| match by_address.get_mut(&address(p.id())) {
            Some(entry) => {
                entry.1 = i;
                entry.0
            }
            None => NONE,
        })
        .collect();
    for (o, p) in owners.iter_mut().zip(parts) {
        if *o == NONE {
            *o = input
                .previous
                .owner(p.id())
                .and_then(|w| workers.index_of(w))
                .unwrap_or(NONE);
        }
    }
    PreviousIndex { owners, by_address }
}

/// For each input partition, the input index of its previous owner when that owner is live,
/// else [`NONE`].
pub(crate) fn previous_owners(input: &AssignInput<'_>, workers: &Workers<'_>) -> Vec<usize> {
    previous_index(input, workers).owners
}

/// Stable LSD radix sort of `(key, payload)` pairs by `key_of(key)`, which uses `bits` bits,
/// 11 bits a pass (2048 buckets stay in cache).
pub(crate) fn radix_sort(v: &mut Vec<(u64, u32)>, key_of: impl Fn(u64) -> u64, bits: u32) {
    const BITS: u32 = 11;
    const MASK: u64 = (1 << BITS) - 1;
    let mut buf = vec![(0u64, 0u32); v.len()];
    for pass in 0..bits.div_ceil(BITS) {
        let shift = pass * BITS;
        let mut counts = [0usize; 1 << BITS];
        for e in v.iter() {
            counts[((key_of(e.0) >> shift) & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for c in &mut counts {
            let k = *c;
            *c = sum;
            sum += k;
        }
        for &e in v.iter() {
            let slot = &mut counts[((key_of(e.0) >> shift) & MASK) as usize];
            buf[*slot] = e;
            *slot += 1;
        }
        std::mem::swap(v, &mut buf);
    }
}

/// A partition's canonical sort key: its [`content_hash`], then its id.
#[derive(Clone, Copy)]
pub(crate) struct Keyed {
    pub(crate) hash: u64,
    pub(crate) index: usize,
}

impl Keyed {
    pub(crate) fn new(partitions: &[Partition], index: usize) -> Self {
        Keyed {
            hash: content_hash(partitions[index].keys()),
            index,
        }
    }

    /// Orders by hash, then by id (so equal hashes still order the same way every time).
    #[inline]
    pub(crate) fn cmp(&self, other: &Self, partitions: &[Partition]) -> Ordering {
        self.hash.cmp(&other.hash).then_with(|| {
            partitions[self.index]
                .id()
                .cmp(partitions[other.index].id())
        })
    }
}

/// Partition indexes sorted by id.
pub(crate) fn partitions_by_id(partitions: &[Partition]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    // The planner passes its catalog in id order: one pass of comparisons confirms it.
    if partitions
        .windows(2)
        .all(|pair| pair[0].id() < pair[1].id())
    {
        return order;
    }
    order.sort_unstable_by(|&a, &b| partitions[a].id().cmp(partitions[b].id()));
    order
}

/// Fails on the first partition id listed twice (checked on a sorted order).
pub(crate) fn check_sorted_unique(
    partitions: &[Partition],
    by_id: &[usize],
) -> Result<(), StrategyError> {
    match by_id
        .windows(2)
        .find(|p| partitions[p[0]].id() == partitions[p[1]].id())
    {
        Some(pair) => Err(StrategyError::DuplicatePartition {
            partition: partitions[pair[0]].id().clone(),
        }),
        None => Ok(()),
    }
}

/// Fails on a partition id listed twice, with a hash sort instead of an id sort (cheaper for
/// large catalogs). `hashes[i]` is the hash of partition `i`.
pub(crate) fn check_unique_by_hash(
    partitions: &[Partition],
    hashes: &[u64],
) -> Result<(), StrategyError> {
    let mut order: Vec<(u64, usize)> = hashes.iter().copied().zip(0..).collect();
    order.sort_unstable();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && order[j].0 == order[i].0 {
            j += 1;
        }
        if j - i > 1 {
            // Same hash: compare ids within the (almost always tiny) group.
            let mut group: Vec<usize> = order[i..j].iter().map(|&(_, k)| k).collect();
            group.sort_unstable_by(|&a, &b| partitions[a].id().cmp(partitions[b].id()));
            check_sorted_unique(partitions, &group)?;
        }
        i = j;
    }
    Ok(())
}

/// A total order on `f64` for keys (loads are finite; `total_cmp` keeps it total anyway).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OrdF64(pub(crate) f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
