//! The desired plan, with a memo of whether it places every catalog partition.
//!
//! [`Planner::coverage`](super::Planner) runs after every input that marks the planner dirty
//! (every write result, every timer) and looked up every catalog partition's owner each time:
//! O(partitions) per input. Once a scan finds nothing uncovered, the answer stands until the
//! plan loses something or the catalog is replaced, so the scan is skipped until then.

use std::ops::Deref;

use crate::assignment::{Assignment, AssignmentError};
use crate::types::{PartitionId, WorkerId};

/// The plan. Read through `Deref`; every write goes through the methods here (there is
/// deliberately no `DerefMut`), which drop the memo.
#[derive(Clone, Default)]
pub(super) struct PlanTarget {
    plan: Assignment,
    /// A scan found every partition of the current catalog placed, and nothing was written
    /// since.
    covers_catalog: bool,
}

impl PlanTarget {
    /// Replaces the plan.
    pub(super) fn set(&mut self, plan: Assignment) {
        self.plan = plan;
        self.covers_catalog = false;
    }

    pub(super) fn insert(
        &mut self,
        worker: WorkerId,
        partition: PartitionId,
    ) -> Result<(), AssignmentError> {
        self.covers_catalog = false;
        self.plan.insert(worker, partition)
    }

    pub(super) fn add_worker(&mut self, worker: WorkerId) {
        self.covers_catalog = false;
        self.plan.add_worker(worker);
    }

    pub(super) fn remove_partition(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        self.covers_catalog = false;
        self.plan.remove_partition(partition)
    }

    /// The catalog was replaced: coverage must be scanned again.
    pub(super) fn catalog_replaced(&mut self) {
        self.covers_catalog = false;
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
