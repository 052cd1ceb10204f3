//! Who owns what.
//!
//! An [`Assignment`] maps workers to the partitions they own. It has one deterministic order
//! (workers by id, partitions by id) whatever order things were inserted in, and it cannot hold a
//! partition twice: [`Assignment::insert`] refuses a partition that already has an owner. A worker
//! may be present with no partitions (it is live but owns nothing), which is different from being
//! absent.
//!
//! [`Assignment::diff`] compares two assignments: per worker what it gains and loses, and which
//! partitions move between two owners.
//!
//! ```
//! use parti_core::{Assignment, PartitionId, WorkerId};
//! let w = |n| WorkerId::from_parts("worker", n).unwrap();
//! let p = |k: &str| PartitionId::single(k).unwrap();
//!
//! let mut before = Assignment::new();
//! before.insert(w(0), p("a"))?;
//! before.insert(w(0), p("b"))?;
//! let mut after = Assignment::new();
//! after.insert(w(0), p("a"))?;
//! after.insert(w(1), p("b"))?;
//! after.insert(w(1), p("c"))?;
//!
//! let diff = before.diff(&after);
//! assert_eq!(diff.moved.len(), 1); // b: worker-0 -> worker-1
//! assert_eq!(diff.added[&w(1)].len(), 2); // b and c
//! assert_eq!(diff.removed[&w(0)].len(), 1); // b
//! assert!(before.insert(w(1), p("a")).is_err()); // a is owned by worker-0
//! # Ok::<(), parti_core::AssignmentError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::hash::StableHashMap;
use crate::types::{PartitionId, WorkerId};

/// Partitions per worker, in id order, plus an owner index.
#[derive(Clone, Default)]
pub struct Assignment {
    by_worker: BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    owner: StableHashMap<PartitionId, WorkerId>,
}

/// An assignment that would give one partition to two workers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignmentError {
    /// The partition already has an owner.
    #[error("partition {partition} is already owned by {owner}; it cannot also go to {other}")]
    AlreadyOwned {
        /// The partition.
        partition: PartitionId,
        /// Its existing owner.
        owner: WorkerId,
        /// The worker it was being given to.
        other: WorkerId,
    },
    /// The owner index disagrees with the per-worker sets (a bug in this module).
    #[error("assignment index is inconsistent at partition {partition}")]
    Inconsistent {
        /// The partition where the two views differ.
        partition: PartitionId,
    },
}

/// A partition that changes owner between two assignments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Move {
    /// The partition.
    pub partition: PartitionId,
    /// Owner in the first assignment.
    pub from: WorkerId,
    /// Owner in the second assignment.
    pub to: WorkerId,
}

/// What changes from one assignment to another (see [`Assignment::diff`]).
///
/// Only workers with a non-empty change appear in `added` / `removed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentDiff {
    /// Per worker, the partitions it owns in the second assignment but not in the first.
    pub added: BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    /// Per worker, the partitions it owns in the first assignment but not in the second.
    pub removed: BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    /// Partitions owned in both assignments, by different workers; in partition order.
    pub moved: Vec<Move>,
}

impl AssignmentDiff {
    /// Nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Partitions owned in the second assignment and by nobody in the first.
    pub fn newly_owned(&self) -> impl Iterator<Item = &PartitionId> {
        let moved: BTreeSet<&PartitionId> = self.moved.iter().map(|m| &m.partition).collect();
        self.added
            .values()
            .flatten()
            .filter(move |p| !moved.contains(p))
    }

    /// Partitions owned in the first assignment and by nobody in the second.
    pub fn no_longer_owned(&self) -> impl Iterator<Item = &PartitionId> {
        let moved: BTreeSet<&PartitionId> = self.moved.iter().map(|m| &m.partition).collect();
        self.removed
            .values()
            .flatten()
            .filter(move |p| !moved.contains(p))
    }
}

impl Assignment {
    /// An empty assignment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An assignment where every worker of `workers` is present and owns nothing.
    pub fn with_workers(workers: impl IntoIterator<Item = WorkerId>) -> Self {
        let mut a = Self::new();
        for w in workers {
            a.add_worker(w);
        }
        a
    }

    /// Builds an assignment from per-worker lists; fails on the first partition listed twice
    /// (for two workers; twice for one worker is the same as once).
    ///
    /// Built in bulk (each worker's set from its sorted list), so 100,000 partitions cost a
    /// few milliseconds, not one ordered insertion each.
    pub fn from_worker_lists<W, P>(lists: W) -> Result<Self, AssignmentError>
    where
        W: IntoIterator<Item = (WorkerId, P)>,
        P: IntoIterator<Item = PartitionId>,
    {
        let mut owner: StableHashMap<PartitionId, WorkerId> = StableHashMap::default();
        let mut lists_of: BTreeMap<WorkerId, Vec<PartitionId>> = BTreeMap::new();
        for (w, parts) in lists {
            let list = lists_of.entry(w.clone()).or_default();
            let parts = parts.into_iter();
            owner.reserve(parts.size_hint().0);
            for p in parts {
                // One probe: insert, and put the owner back if there was one.
                match owner.entry(p) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        if *e.get() != w {
                            return Err(AssignmentError::AlreadyOwned {
                                partition: e.key().clone(),
                                owner: e.get().clone(),
                                other: w,
                            });
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        list.push(e.key().clone());
                        e.insert(w.clone());
                    }
                }
            }
        }
        let by_worker = lists_of
            .into_iter()
            .map(|(w, mut list)| {
                list.sort_unstable();
                (w, list.into_iter().collect())
            })
            .collect();
        Ok(Assignment { by_worker, owner })
    }

    /// How many partitions owned in both `self` and `other` have another owner in `other`
    /// (`self.diff(other).moved.len()`, without building the diff).
    #[must_use]
    pub fn moved_count(&self, other: &Assignment) -> usize {
        other
            .owner
            .iter()
            .filter(|(p, w)| self.owner.get(*p).is_some_and(|o| o != *w))
            .count()
    }

    /// Makes `worker` present (with no partitions if it was absent).
    pub fn add_worker(&mut self, worker: WorkerId) {
        self.by_worker.entry(worker).or_default();
    }

    /// Gives `partition` to `worker` (adding the worker if absent). Giving a partition to the
    /// worker that already owns it is a no-op; giving it to another worker is an error.
    pub fn insert(
        &mut self,
        worker: WorkerId,
        partition: PartitionId,
    ) -> Result<(), AssignmentError> {
        if let Some(owner) = self.owner.get(&partition) {
            if *owner == worker {
                return Ok(());
            }
            return Err(AssignmentError::AlreadyOwned {
                partition,
                owner: owner.clone(),
                other: worker,
            });
        }
        self.owner.insert(partition.clone(), worker.clone());
        self.by_worker.entry(worker).or_default().insert(partition);
        Ok(())
    }

    /// Takes `partition` away from its owner; returns the former owner. The owner stays present.
    pub fn remove_partition(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        let owner = self.owner.remove(partition)?;
        if let Some(set) = self.by_worker.get_mut(&owner) {
            set.remove(partition);
        }
        Some(owner)
    }

    /// Removes `worker` and returns what it owned (`None` if it was absent).
    pub fn remove_worker(&mut self, worker: &WorkerId) -> Option<BTreeSet<PartitionId>> {
        let set = self.by_worker.remove(worker)?;
        for p in &set {
            self.owner.remove(p);
        }
        Some(set)
    }

    /// The owner of `partition`.
    #[must_use]
    pub fn owner(&self, partition: &PartitionId) -> Option<&WorkerId> {
        self.owner.get(partition)
    }

    /// The partitions of `worker` (`None` if the worker is absent).
    #[must_use]
    pub fn partitions_of(&self, worker: &WorkerId) -> Option<&BTreeSet<PartitionId>> {
        self.by_worker.get(worker)
    }

    /// Whether `worker` is present (possibly owning nothing).
    #[must_use]
    pub fn contains_worker(&self, worker: &WorkerId) -> bool {
        self.by_worker.contains_key(worker)
    }

    /// Present workers, in id order.
    pub fn workers(&self) -> impl ExactSizeIterator<Item = &WorkerId> {
        self.by_worker.keys()
    }

    /// `(worker, partitions)` in worker order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&WorkerId, &BTreeSet<PartitionId>)> {
        self.by_worker.iter()
    }

    /// `(partition, owner)` in partition order. Costs a sort; prefer [`Assignment::iter`].
    #[must_use]
    pub fn owners(&self) -> BTreeMap<&PartitionId, &WorkerId> {
        self.by_worker
            .iter()
            .flat_map(|(w, ps)| ps.iter().map(move |p| (p, w)))
            .collect()
    }

    /// Number of owned partitions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.owner.len()
    }

    /// No partition is owned (workers may still be present).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// Checks that each partition is owned at most once and the owner index matches.
    pub fn check_invariants(&self) -> Result<(), AssignmentError> {
        let mut seen = 0usize;
        for (w, ps) in &self.by_worker {
            for p in ps {
                seen += 1;
                if self.owner.get(p) != Some(w) {
                    return Err(AssignmentError::Inconsistent {
                        partition: p.clone(),
                    });
                }
            }
        }
        if seen != self.owner.len() {
            let stray = self
                .owner
                .iter()
                .find(|(p, w)| !self.by_worker.get(*w).is_some_and(|s| s.contains(*p)))
                .map(|(p, _)| p.clone());
            if let Some(partition) = stray {
                return Err(AssignmentError::Inconsistent { partition });
            }
        }
        Ok(())
    }

    /// What changes from `self` to `target`.
    #[must_use]
    pub fn diff(&self, target: &Assignment) -> AssignmentDiff {
        let empty = BTreeSet::new();
        let mut diff = AssignmentDiff::default();
        let workers: BTreeSet<&WorkerId> = self
            .by_worker
            .keys()
            .chain(target.by_worker.keys())
            .collect();
        for w in workers {
            let before = self.by_worker.get(w).unwrap_or(&empty);
            let after = target.by_worker.get(w).unwrap_or(&empty);
            let (gained, lost) = set_diff(before, after);
            if !gained.is_empty() {
                diff.added.insert(w.clone(), gained);
            }
            if !lost.is_empty() {
                diff.removed.insert(w.clone(), lost);
            }
        }
        let mut moved: Vec<Move> = diff
            .added
            .iter()
            .flat_map(|(to, ps)| ps.iter().map(move |p| (to, p)))
            .filter_map(|(to, p)| {
                self.owner.get(p).map(|from| Move {
                    partition: p.clone(),
                    from: from.clone(),
                    to: to.clone(),
                })
            })
            .collect();
        moved.sort();
        diff.moved = moved;
        diff
    }
}

/// `(added, removed)` from `before` to `after`: what a single worker gains and loses.
#[must_use]
pub fn set_diff(
    before: &BTreeSet<PartitionId>,
    after: &BTreeSet<PartitionId>,
) -> (BTreeSet<PartitionId>, BTreeSet<PartitionId>) {
    let added = after.difference(before).cloned().collect();
    let removed = before.difference(after).cloned().collect();
    (added, removed)
}

impl PartialEq for Assignment {
    fn eq(&self, other: &Self) -> bool {
        self.by_worker == other.by_worker
    }
}

impl Eq for Assignment {}

impl fmt::Debug for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.by_worker.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(n: u32) -> WorkerId {
        WorkerId::from_parts("w", n).unwrap()
    }
    fn p(n: u32) -> PartitionId {
        PartitionId::single(format!("p{n}")).unwrap()
    }

    #[test]
    fn insert_refuses_a_second_owner_and_accepts_the_same_owner() {
        let mut a = Assignment::new();
        a.insert(w(0), p(0)).unwrap();
        a.insert(w(0), p(0)).unwrap();
        assert_eq!(
            a.insert(w(1), p(0)),
            Err(AssignmentError::AlreadyOwned {
                partition: p(0),
                owner: w(0),
                other: w(1)
            })
        );
        assert_eq!(a.len(), 1);
        a.check_invariants().unwrap();
    }

    #[test]
    fn remove_worker_frees_its_partitions() {
        let mut a = Assignment::new();
        a.insert(w(0), p(0)).unwrap();
        a.insert(w(1), p(1)).unwrap();
        assert_eq!(a.remove_worker(&w(0)).unwrap().len(), 1);
        assert_eq!(a.owner(&p(0)), None);
        a.insert(w(1), p(0)).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.remove_partition(&p(1)), Some(w(1)));
        assert!(a.contains_worker(&w(1)));
    }

    #[test]
    fn empty_workers_are_present_but_own_nothing() {
        let a = Assignment::with_workers([w(2), w(1)]);
        assert_eq!(a.workers().cloned().collect::<Vec<_>>(), vec![w(1), w(2)]);
        assert!(a.is_empty());
        assert_ne!(a, Assignment::new());
    }

    /// Arbitrary assignment: each of `n` partitions owned by one of 6 workers or by none.
    fn arb_assignment() -> impl Strategy<Value = Vec<Option<u32>>> {
        prop::collection::vec(prop::option::of(0u32..6), 0..40)
    }

    fn build(owners: &[Option<u32>], order: &[usize]) -> Assignment {
        let mut a = Assignment::new();
        for &i in order {
            if let Some(o) = owners[i] {
                a.insert(w(o), p(u32::try_from(i).unwrap())).unwrap();
            }
        }
        a
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn order_of_insertion_does_not_matter(owners in arb_assignment(), seed in any::<u64>()) {
            let fwd: Vec<usize> = (0..owners.len()).collect();
            let mut shuffled = fwd.clone();
            let mut rng = crate::rng::SplitMix64::new(seed);
            rng.shuffle(&mut shuffled);
            let a = build(&owners, &fwd);
            let b = build(&owners, &shuffled);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }

        #[test]
        fn diff_is_consistent_with_both_assignments(x in arb_assignment(), y in arb_assignment()) {
            let n = x.len().max(y.len());
            let pad = |v: &Vec<Option<u32>>| { let mut v = v.clone(); v.resize(n, None); v };
            let (x, y) = (pad(&x), pad(&y));
            let order: Vec<usize> = (0..n).collect();
            let a = build(&x, &order);
            let b = build(&y, &order);
            let d = a.diff(&b);
            for i in 0..n {
                let pid = p(u32::try_from(i).unwrap());
                let gained_by = d.added.iter().filter(|(_, s)| s.contains(&pid)).map(|(w, _)| w.clone()).collect::<Vec<_>>();
                let lost_by = d.removed.iter().filter(|(_, s)| s.contains(&pid)).map(|(w, _)| w.clone()).collect::<Vec<_>>();
                let moved = d.moved.iter().find(|m| m.partition == pid);
                match (x[i], y[i]) {
                    (Some(f), Some(t)) if f == t => {
                        prop_assert!(gained_by.is_empty() && lost_by.is_empty() && moved.is_none());
                    }
                    (Some(f), Some(t)) => {
                        prop_assert_eq!(gained_by, vec![w(t)]);
                        prop_assert_eq!(lost_by, vec![w(f)]);
                        prop_assert_eq!(moved, Some(&Move { partition: pid.clone(), from: w(f), to: w(t) }));
                    }
                    (Some(f), None) => {
                        prop_assert!(gained_by.is_empty() && moved.is_none());
                        prop_assert_eq!(lost_by, vec![w(f)]);
                    }
                    (None, Some(t)) => {
                        prop_assert!(lost_by.is_empty() && moved.is_none());
                        prop_assert_eq!(gained_by, vec![w(t)]);
                    }
                    (None, None) => prop_assert!(gained_by.is_empty() && lost_by.is_empty() && moved.is_none()),
                }
            }
            // Applying the diff to `a` gives `b` (on owned partitions).
            let mut c = a.clone();
            for ps in d.removed.values() { for q in ps { c.remove_partition(q); } }
            for (wk, ps) in &d.added { for q in ps { c.insert(wk.clone(), q.clone()).unwrap(); } }
            prop_assert_eq!(c.owners(), b.owners());
            c.check_invariants().unwrap();
            // The reverse diff swaps added and removed.
            let r = b.diff(&a);
            prop_assert_eq!(r.added, d.removed);
            prop_assert_eq!(r.moved.len(), d.moved.len());
            prop_assert_eq!(a.diff(&a).is_empty(), true);
        }
    }
}
