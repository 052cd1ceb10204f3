//! Names, partitions, durations and a tiny deterministic strategy for the planner tests.

#![allow(dead_code)]

use std::time::Duration;

use crate::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};
use crate::types::{Partition, PartitionId, WorkerId};

pub(crate) fn w(n: u32) -> WorkerId {
    WorkerId::from_parts("worker", n).unwrap()
}

pub(crate) fn p(n: u32) -> Partition {
    Partition::with_default_weight([format!("p{n:02}")]).unwrap()
}

pub(crate) fn pid(n: u32) -> PartitionId {
    p(n).id().clone()
}

pub(crate) fn parts(n: u32) -> Vec<Partition> {
    (0..n).map(p).collect()
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn ms(s: u64) -> Duration {
    Duration::from_millis(s)
}

/// Sticky and balanced: keep a partition with its previous owner while that owner is under
/// `ceil(P / W)`, then give the rest to the least loaded worker (ties by id).
#[derive(Debug)]
pub(crate) struct Sticky;

impl AssignmentStrategy for Sticky {
    fn name(&self) -> &'static str {
        "test-sticky"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        input.require_workers()?;
        let mut widx: Vec<usize> = (0..input.workers.len()).collect();
        widx.sort_by(|a, b| input.workers[*a].id.cmp(&input.workers[*b].id));
        let mut pidx: Vec<usize> = (0..input.partitions.len()).collect();
        pidx.sort_by(|a, b| input.partitions[*a].id().cmp(input.partitions[*b].id()));
        let quota = input.partitions.len().div_ceil(input.workers.len());
        let mut load = vec![0usize; input.workers.len()];
        let mut owners = vec![usize::MAX; input.partitions.len()];
        for &pi in &pidx {
            let prev = input.previous.owner(input.partitions[pi].id());
            if let Some(wi) = prev.and_then(|o| widx.iter().find(|&&i| input.workers[i].id == *o))
                && load[*wi] < quota
            {
                owners[pi] = *wi;
                load[*wi] += 1;
            }
        }
        for &pi in &pidx {
            if owners[pi] == usize::MAX {
                let wi = *widx.iter().min_by_key(|&&i| (load[i], i)).unwrap();
                owners[pi] = wi;
                load[wi] += 1;
            }
        }
        Ok(Plan::from_owners(owners))
    }
}

/// Sorted round robin, ignoring the previous assignment: moves a lot on every change, which
/// makes handoffs frequent in the property tests.
#[derive(Debug)]
pub(crate) struct RoundRobin;

impl AssignmentStrategy for RoundRobin {
    fn name(&self) -> &'static str {
        "test-round-robin"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        input.require_workers()?;
        let mut widx: Vec<usize> = (0..input.workers.len()).collect();
        widx.sort_by(|a, b| input.workers[*a].id.cmp(&input.workers[*b].id));
        let mut pidx: Vec<usize> = (0..input.partitions.len()).collect();
        pidx.sort_by(|a, b| input.partitions[*a].id().cmp(input.partitions[*b].id()));
        let mut owners = vec![0; input.partitions.len()];
        for (k, &pi) in pidx.iter().enumerate() {
            owners[pi] = widx[k % widx.len()];
        }
        Ok(Plan::from_owners(owners))
    }
}

/// Which test strategy a simulation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strat {
    Sticky,
    RoundRobin,
}

impl Strat {
    pub(crate) fn make(self) -> std::sync::Arc<dyn AssignmentStrategy> {
        match self {
            Strat::Sticky => std::sync::Arc::new(Sticky),
            Strat::RoundRobin => std::sync::Arc::new(RoundRobin),
        }
    }
}
