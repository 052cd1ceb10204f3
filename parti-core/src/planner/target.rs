//! The desired plan, with a memo of whether it places every catalog partition.
//!
//! [`Planner::coverage`](super::Planner) runs after every input that marks the planner dirty
//! (every write result, every timer) and looked up every catalog partition's owner each time:
//! O(partitions) per input. Once a scan finds nothing uncovered, the answer stands until the
//! plan loses something or the catalog is replaced, so the scan is skipped until then.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use crate::assignment::{Assignment, AssignmentError};
use crate::strategy::WorkerSpec;
use crate::types::{Partition, PartitionId, WorkerId};

/// The plan. Read through `Deref`; every write goes through the methods here (there is
/// deliberately no `DerefMut`), which drop the memo.
#[derive(Clone, Default)]
pub(super) struct PlanTarget {
    plan: Assignment,
    /// Every partition of the current catalog is placed — a scan found it, or a plan placed
    /// every one — and nothing was written since.
    covers_catalog: bool,
    /// Workers whose partitions changed since the last [`PlanTarget::take_changed`].
    changed: BTreeSet<WorkerId>,
    /// Everything may have changed (a new plan, a new catalog) since then.
    all_changed: bool,
}

/// What changed in the plan since the last look (see [`PlanTarget::take_changed`]).
#[derive(Debug, Default)]
pub(super) struct Changed {
    pub all: bool,
    pub workers: BTreeSet<WorkerId>,
}

impl PlanTarget {
    /// Replaces the plan (the takeover's; a replan changes the plan in place,
    /// [`PlanTarget::adopt`]).
    pub(super) fn set(&mut self, plan: Assignment) {
        self.all_changed = true;
        self.plan = plan;
        self.covers_catalog = false;
    }

    /// Makes the plan: partition `parts[i]` to `workers[owners[i]]` (unplaced if `owners` is
    /// shorter), the `pinned` partitions left with their workers (those `in_catalog` refuses
    /// leave), every other worker out. Changes only what differs, recording the workers whose
    /// set changed; returns how many partitions moved from one worker to another.
    ///
    /// `parts` and the pinned partitions in the catalog must be the whole catalog: when every
    /// part gets an owner the plan covers the catalog, and the next coverage check needs no
    /// scan of it.
    pub(super) fn adopt(
        &mut self,
        workers: &[WorkerSpec],
        parts: &[Partition],
        owners: &[usize],
        pinned: &BTreeMap<WorkerId, BTreeSet<PartitionId>>,
        in_catalog: impl Fn(&PartitionId) -> bool,
    ) -> usize {
        self.covers_catalog = false;
        let mut moved = 0;
        for (i, p) in parts.iter().enumerate() {
            let want = owners.get(i).map(|&o| &workers[o].id);
            let have = self.plan.owner(p.id());
            if have == want {
                continue;
            }
            if let Some(h) = have.cloned() {
                moved += usize::from(want.is_some());
                self.plan.remove_partition(p.id());
                self.changed.insert(h);
            }
            if let Some(w) = want {
                let _ = self.plan.insert(w.clone(), p.id().clone());
                self.changed.insert(w.clone());
            }
        }
        for (w, ps) in pinned {
            for p in ps.iter().filter(|p| !in_catalog(p)) {
                if self.plan.remove_partition(p).is_some() {
                    self.changed.insert(w.clone());
                }
            }
        }
        let keep: BTreeSet<&WorkerId> =
            workers.iter().map(|s| &s.id).chain(pinned.keys()).collect();
        let gone: Vec<WorkerId> = self
            .plan
            .workers()
            .filter(|w| !keep.contains(w))
            .cloned()
            .collect();
        for w in gone {
            self.plan.remove_worker(&w);
            self.changed.insert(w);
        }
        for w in keep {
            if !self.plan.contains_worker(w) {
                self.plan.add_worker(w.clone());
                self.changed.insert(w.clone());
            }
        }
        self.covers_catalog = owners.len() >= parts.len();
        moved
    }

    pub(super) fn insert(
        &mut self,
        worker: WorkerId,
        partition: PartitionId,
    ) -> Result<(), AssignmentError> {
        self.covers_catalog = false;
        self.changed.insert(worker.clone());
        self.plan.insert(worker, partition)
    }

    pub(super) fn add_worker(&mut self, worker: WorkerId) {
        self.covers_catalog = false;
        self.changed.insert(worker.clone());
        self.plan.add_worker(worker);
    }

    pub(super) fn remove_partition(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        self.covers_catalog = false;
        let owner = self.plan.remove_partition(partition);
        if let Some(w) = &owner {
            self.changed.insert(w.clone());
        }
        owner
    }

    /// The catalog was replaced: coverage must be scanned again.
    pub(super) fn catalog_replaced(&mut self) {
        self.covers_catalog = false;
        self.all_changed = true;
    }

    /// What changed since the last call (the publication's wave looks again at those workers).
    pub(super) fn take_changed(&mut self) -> Changed {
        Changed {
            all: std::mem::take(&mut self.all_changed),
            workers: std::mem::take(&mut self.changed),
        }
    }

    /// Whether a scan since the last write found every catalog partition placed.
    pub(super) fn covers_catalog(&self) -> bool {
        self.covers_catalog
    }

    /// A scan found every catalog partition placed.
    pub(super) fn set_covers_catalog(&mut self) {
        self.covers_catalog = true;
    }
}

impl Deref for PlanTarget {
    type Target = Assignment;

    fn deref(&self) -> &Assignment {
        &self.plan
    }
}

impl std::fmt::Debug for PlanTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.plan.fmt(f)
    }
}
