//! The assignment strategy port: who should own what.
//!
//! The leader calls [`AssignmentStrategy::assign`] with the live workers, the partition catalog
//! and the **previous assignment**, so a strategy may be sticky (keep partitions where they are).
//! A strategy is a pure function: same input, same plan, whatever the order of the input lists.
//! Implementations live in `parti-strategy`; tests may use a tiny one of their own.
//!
//! A [`Plan`] names an owner for every partition by position, which keeps large plans cheap
//! (100k partitions are a `Vec` of indexes, not a map of strings). [`Plan::validate`] checks a
//! plan against its input, and [`Plan::to_assignment`] turns it into an [`Assignment`].
//!
//! ```
//! use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError, WorkerSpec};
//! use parti_core::{Assignment, Partition, WorkerId};
//!
//! /// Everything to the first worker.
//! #[derive(Debug)]
//! struct First;
//! impl AssignmentStrategy for First {
//!     fn name(&self) -> &'static str { "first" }
//!     fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
//!         input.require_workers()?;
//!         Ok(Plan::from_owners(vec![0; input.partitions.len()]))
//!     }
//! }
//!
//! let workers = [WorkerSpec::new(WorkerId::new("w-0")?)];
//! let partitions = [Partition::with_default_weight(["a"])?];
//! let previous = Assignment::new();
//! let input = AssignInput { workers: &workers, partitions: &partitions, previous: &previous };
//! let plan = First.assign(&input)?;
//! plan.validate(&input)?;
//! assert_eq!(plan.to_assignment(&input).len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::Partition;
use crate::assignment::Assignment;
use crate::types::{PartitionId, WorkerId};

/// A live worker as a strategy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkerSpec {
    /// Its id.
    pub id: WorkerId,
    /// Relative capacity (≥ 1; default 1): a worker of capacity 2 should carry twice the weight
    /// of a worker of capacity 1. Strategies that ignore weights ignore it too.
    pub capacity: u32,
}

impl WorkerSpec {
    /// A worker of capacity 1.
    #[must_use]
    pub fn new(id: WorkerId) -> Self {
        WorkerSpec { id, capacity: 1 }
    }

    /// A worker with the given capacity.
    #[must_use]
    pub fn with_capacity(id: WorkerId, capacity: u32) -> Self {
        WorkerSpec { id, capacity }
    }
}

/// What a strategy is given.
#[derive(Clone, Copy, Debug)]
pub struct AssignInput<'a> {
    /// The live workers, in no particular order.
    pub workers: &'a [WorkerSpec],
    /// The partitions to place, in no particular order.
    pub partitions: &'a [Partition],
    /// The assignment currently in force (empty on a cold start). It may name workers that are no
    /// longer live and partitions that no longer exist; strategies ignore those.
    pub previous: &'a Assignment,
}

impl AssignInput<'_> {
    /// Fails with [`StrategyError::NoWorkers`] when there is no live worker.
    pub fn require_workers(&self) -> Result<(), StrategyError> {
        if self.workers.is_empty() {
            Err(StrategyError::NoWorkers)
        } else {
            Ok(())
        }
    }

    /// Checks the input itself: no worker or partition twice, capacities ≥ 1.
    pub fn validate(&self) -> Result<(), StrategyError> {
        let mut ids: Vec<&WorkerId> = self.workers.iter().map(|w| &w.id).collect();
        ids.sort();
        if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
            return Err(StrategyError::DuplicateWorker {
                worker: pair[0].clone(),
            });
        }
        if let Some(w) = self.workers.iter().find(|w| w.capacity == 0) {
            return Err(StrategyError::ZeroCapacity {
                worker: w.id.clone(),
            });
        }
        // Partitions in strictly ascending id order (as the planner passes its catalog) have
        // no repeats: one pass of comparisons instead of sorting 100,000 ids.
        if self
            .partitions
            .windows(2)
            .all(|pair| pair[0].id() < pair[1].id())
        {
            return Ok(());
        }
        let mut pids: Vec<&PartitionId> = self.partitions.iter().map(Partition::id).collect();
        pids.sort();
        if let Some(pair) = pids.windows(2).find(|p| p[0] == p[1]) {
            return Err(StrategyError::DuplicatePartition {
                partition: pair[0].clone(),
            });
        }
        Ok(())
    }
}

/// The owner of every partition: `owners[i]` is an index into `input.workers` for
/// `input.partitions[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    owners: Vec<usize>,
}

impl Plan {
    /// A plan from per-partition owner indexes.
    #[must_use]
    pub fn from_owners(owners: Vec<usize>) -> Self {
        Plan { owners }
    }

    /// Per-partition owner indexes.
    #[must_use]
    pub fn owners(&self) -> &[usize] {
        &self.owners
    }

    /// Checks that the plan names one existing worker for every partition of `input`.
    pub fn validate(&self, input: &AssignInput<'_>) -> Result<(), StrategyError> {
        if self.owners.len() != input.partitions.len() {
            return Err(StrategyError::InvalidPlan {
                reason: format!(
                    "plan places {} partitions but the input has {}",
                    self.owners.len(),
                    input.partitions.len()
                ),
            });
        }
        if let Some((i, &o)) = self
            .owners
            .iter()
            .enumerate()
            .find(|(_, o)| **o >= input.workers.len())
        {
            return Err(StrategyError::InvalidPlan {
                reason: format!(
                    "partition {} is given to worker index {o}, but there are {} workers",
                    input.partitions[i].id(),
                    input.workers.len()
                ),
            });
        }
        Ok(())
    }

    /// The plan as an [`Assignment`] in which every input worker is present.
    ///
    /// # Panics
    ///
    /// Only if the plan does not [validate](Plan::validate) against `input`.
    #[must_use]
    pub fn to_assignment(&self, input: &AssignInput<'_>) -> Assignment {
        let mut counts = vec![0usize; input.workers.len()];
        for &o in &self.owners {
            counts[o] += 1;
        }
        let mut lists: Vec<Vec<PartitionId>> = counts.into_iter().map(Vec::with_capacity).collect();
        for (p, &o) in input.partitions.iter().zip(&self.owners) {
            lists[o].push(p.id().clone());
        }
        Assignment::from_worker_lists(input.workers.iter().map(|w| w.id.clone()).zip(lists))
            .expect("a validated input lists each partition once, so each is inserted once")
    }
}

/// Why a strategy could not produce a plan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// There is no live worker to give partitions to.
    #[error("no live workers to assign partitions to")]
    NoWorkers,
    /// A worker is listed twice.
    #[error("worker {worker} is listed twice")]
    DuplicateWorker {
        /// The worker.
        worker: WorkerId,
    },
    /// A partition is listed twice.
    #[error("partition {partition} is listed twice")]
    DuplicatePartition {
        /// The partition.
        partition: PartitionId,
    },
    /// A worker has capacity 0.
    #[error("worker {worker} has capacity 0; capacities start at 1")]
    ZeroCapacity {
        /// The worker.
        worker: WorkerId,
    },
    /// The strategy's settings are unusable.
    #[error("invalid strategy settings: {reason}")]
    InvalidSettings {
        /// What is wrong.
        reason: String,
    },
    /// The strategy produced a plan that does not fit its input (a bug in the strategy).
    #[error("invalid plan: {reason}")]
    InvalidPlan {
        /// What is wrong.
        reason: String,
    },
}

/// Decides who owns which partition.
///
/// To ensure correctness, implementations:
/// - return a plan that [validates](Plan::validate) for every input that
///   [validates](AssignInput::validate) and has at least one worker;
/// - are deterministic: the same workers, partitions and previous assignment, in any order, give
///   the same owner for every partition;
/// - never use unseeded randomness or `std`'s `RandomState`.
pub trait AssignmentStrategy: Send + Sync + fmt::Debug {
    /// A short stable name (`"sticky-balanced"`), used in logs and metrics.
    fn name(&self) -> &'static str;

    /// Places every partition of `input` on one of its workers.
    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(keys: &[&str]) -> Vec<Partition> {
        keys.iter()
            .map(|k| Partition::with_default_weight([*k]).unwrap())
            .collect()
    }

    fn check(keys: &[&str]) -> Result<(), StrategyError> {
        let workers = [WorkerSpec::new(WorkerId::new("w").unwrap())];
        let partitions = parts(keys);
        let previous = Assignment::new();
        AssignInput {
            workers: &workers,
            partitions: &partitions,
            previous: &previous,
        }
        .validate()
    }

    #[test]
    fn validate_finds_a_repeated_partition_in_any_order() {
        assert_eq!(check(&["a", "b", "c"]), Ok(()));
        assert_eq!(check(&["c", "a", "b"]), Ok(()));
        assert_eq!(check(&[]), Ok(()));
        for (keys, repeated) in [
            (&["a", "b", "b", "c"][..], "b"),
            (&["b", "a", "b"], "b"),
            (&["a", "a"], "a"),
        ] {
            match check(keys) {
                Err(StrategyError::DuplicatePartition { partition }) => {
                    assert_eq!(partition.keys(), [repeated], "{keys:?}");
                }
                other => panic!("{keys:?}: {other:?}"),
            }
        }
    }
}
