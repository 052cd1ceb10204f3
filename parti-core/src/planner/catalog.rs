//! The partition catalog as the planner reads it: in partition order for the strategy and
//! the digest, and looked up by id in O(1) (a wave looks up every partition of every record
//! it writes: 100,000 ordered-map searches with key comparisons cost more than the rest of
//! the write).

use crate::hash::StableHashMap;
use crate::records::catalog_digest;
use crate::types::{Partition, PartitionId};

/// The catalog: partitions in id order, without repeats, with an index and a digest.
#[derive(Clone, Debug, Default)]
pub(super) struct Catalog {
    sorted: Vec<Partition>,
    index: StableHashMap<PartitionId, usize>,
    /// [`catalog_digest`] of `sorted` (`meta.catalog_digest`).
    digest: u64,
}

impl Catalog {
    /// The catalog of `partitions`; of two entries with one id, the later counts (as when
    /// collecting into a map).
    pub(super) fn new(partitions: Vec<Partition>) -> Self {
        let mut sorted = partitions;
        // Stable: equal ids keep their order, and the last of them is kept below.
        sorted.sort_by(|a, b| a.id().cmp(b.id()));
        let mut deduped: Vec<Partition> = Vec::with_capacity(sorted.len());
        for p in sorted {
            match deduped.last_mut() {
                Some(last) if last.id() == p.id() => *last = p,
                _ => deduped.push(p),
            }
        }
        let mut index = StableHashMap::default();
        index.reserve(deduped.len());
        for (i, p) in deduped.iter().enumerate() {
            index.insert(p.id().clone(), i);
        }
        let digest = catalog_digest(&deduped);
        Catalog {
            sorted: deduped,
            index,
            digest,
        }
    }

    pub(super) fn get(&self, p: &PartitionId) -> Option<&Partition> {
        self.index.get(p).map(|&i| &self.sorted[i])
    }

    /// Where `p` stands in id order (an index into [`Catalog::values`]).
    pub(super) fn position(&self, p: &PartitionId) -> Option<usize> {
        self.index.get(p).copied()
    }

    pub(super) fn contains_key(&self, p: &PartitionId) -> bool {
        self.index.contains_key(p)
    }

    /// Ids in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &PartitionId> {
        self.sorted.iter().map(Partition::id)
    }

    /// Partitions in id order.
    pub(super) fn values(&self) -> std::slice::Iter<'_, Partition> {
        self.sorted.iter()
    }

    /// Partitions in id order, as a slice.
    pub(super) fn as_slice(&self) -> &[Partition] {
        &self.sorted
    }

    pub(super) fn len(&self) -> usize {
        self.sorted.len()
    }

    pub(super) fn digest(&self) -> u64 {
        self.digest
    }
}

impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.sorted == other.sorted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, w: u64) -> Partition {
        Partition::new([k], w).unwrap()
    }

    #[test]
    fn ordered_indexed_and_the_later_of_two_entries_counts() {
        let c = Catalog::new(vec![p("b", 1), p("a", 1), p("b", 7)]);
        assert_eq!(c.len(), 2);
        let ids: Vec<String> = c.keys().map(|i| i.subject_key()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(c.get(p("b", 1).id()).map(Partition::weight), Some(7));
        assert!(!c.contains_key(p("c", 1).id()));
        assert_eq!(c.position(p("b", 1).id()), Some(1));
        assert_eq!(c.position(p("c", 1).id()), None);
        assert_eq!(c.digest(), catalog_digest(&[p("a", 1), p("b", 7)]));
        assert_eq!(c, Catalog::new(vec![p("b", 7), p("a", 1)]));
    }
}
