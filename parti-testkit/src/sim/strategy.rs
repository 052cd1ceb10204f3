//! A small sticky, count-balanced strategy for the simulator.
//!
//! The simulator needs a strategy that is deterministic, sticky (a partition stays with its
//! owner while that owner is under its share) and fast on 100,000 partitions. It does not try to
//! be the best one (`parti-strategy` has those); it only has to make the planner's decisions
//! observable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use parti_core::WorkerId;
use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

/// Keeps every partition with its previous owner while that owner holds fewer than
/// `ceil(partitions / workers)`; places the rest on the least loaded worker (ties by id).
#[derive(Clone, Copy, Debug, Default)]
pub struct StickyCount;

impl AssignmentStrategy for StickyCount {
    fn name(&self) -> &'static str {
        "sim-sticky-count"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        input.require_workers()?;
        let w = input.workers.len();
        let n = input.partitions.len();
        let cap = n.div_ceil(w).max(1);
        // Rank workers by id so the result does not depend on the input order.
        let mut by_id: Vec<usize> = (0..w).collect();
        by_id.sort_by(|a, b| input.workers[*a].id.cmp(&input.workers[*b].id));
        let mut rank = vec![0usize; w];
        for (r, &i) in by_id.iter().enumerate() {
            rank[i] = r;
        }
        let index: HashMap<&WorkerId, usize> = input
            .workers
            .iter()
            .enumerate()
            .map(|(i, s)| (&s.id, i))
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| input.partitions[*a].id().cmp(input.partitions[*b].id()));
        let mut owners = vec![usize::MAX; n];
        let mut count = vec![0usize; w];
        let mut rest = Vec::new();
        for &p in &order {
            let prev = input
                .previous
                .owner(input.partitions[p].id())
                .and_then(|o| index.get(o).copied());
            match prev {
                Some(o) if count[o] < cap => {
                    owners[p] = o;
                    count[o] += 1;
                }
                _ => rest.push(p),
            }
        }
        let mut heap: BinaryHeap<Reverse<(usize, usize, usize)>> =
            (0..w).map(|i| Reverse((count[i], rank[i], i))).collect();
        for p in rest {
            let Some(Reverse((c, r, i))) = heap.pop() else {
                return Err(StrategyError::NoWorkers);
            };
            owners[p] = i;
            heap.push(Reverse((c + 1, r, i)));
        }
        Ok(Plan::from_owners(owners))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parti_core::strategy::WorkerSpec;
    use parti_core::{Assignment, Partition};

    #[test]
    fn balanced_and_sticky() {
        let parts: Vec<Partition> = (0..10)
            .map(|i| Partition::with_default_weight([format!("p{i}")]).unwrap())
            .collect();
        let ws: Vec<WorkerSpec> = (0..3)
            .map(|i| WorkerSpec::new(WorkerId::from_parts("w", i).unwrap()))
            .collect();
        let prev = Assignment::new();
        let input = AssignInput {
            workers: &ws,
            partitions: &parts,
            previous: &prev,
        };
        let a = StickyCount.assign(&input).unwrap().to_assignment(&input);
        let sizes: Vec<usize> = a.iter().map(|(_, s)| s.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().all(|s| (3..=4).contains(s)));
        let more: Vec<WorkerSpec> = (0..4)
            .map(|i| WorkerSpec::new(WorkerId::from_parts("w", i).unwrap()))
            .collect();
        let input2 = AssignInput {
            workers: &more,
            partitions: &parts,
            previous: &a,
        };
        let b = StickyCount.assign(&input2).unwrap().to_assignment(&input2);
        let moved = a.diff(&b).moved.len();
        assert!(moved <= 3, "moved {moved}");
    }
}
