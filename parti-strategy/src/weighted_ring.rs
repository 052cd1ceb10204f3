//! [`WeightedConsistentHash`]: the Go library's weighted ring, with its semantics.

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

use crate::canon::{self, Workers};
use crate::ring::{DEFAULT_VNODES, partition_hash, ring_by_rank};

/// Go's default overload threshold: a worker's soft cap is 1.3 × the mean load.
pub const DEFAULT_OVERLOAD_THRESHOLD: f64 = 1.3;
/// Go's default extreme threshold: a partition heavier than 2 × the mean partition is extreme.
pub const DEFAULT_EXTREME_THRESHOLD: f64 = 2.0;
/// The lowest overload threshold Go accepts (lower values are raised to it).
pub const MIN_OVERLOAD_THRESHOLD: f64 = 1.15;
/// The lowest extreme threshold Go accepts (lower values are raised to it).
pub const MIN_EXTREME_THRESHOLD: f64 = 1.5;

/// The Go library's `WeightedConsistentHash`, step for step:
///
/// 1. Workers are sorted by id.
/// 2. If every partition has the same weight, this is [`ConsistentHash`](crate::ConsistentHash)
///    with the same seed and vnodes.
/// 3. Otherwise a partition heavier than `extreme × total / P` (strictly) is *extreme*: extremes,
///    heaviest first (ties by id), go round-robin to the workers in id order.
/// 4. The other partitions go to their ring owner unless that would take it past the soft cap
///    `overload × total / W`; then to the least-loaded worker (lowest id on ties), even if that
///    passes the cap too.
///
/// One deliberate difference: Go walks the normal partitions in the order the source listed them;
/// here they are walked in id order, so the plan does not depend on the input order. With a
/// source that lists partitions in id order (as the static source of the examples does) the two
/// agree. Capacities and the previous assignment are ignored, as in Go. Known Go behaviour kept:
/// extremes are placed by worker rank, so a join or a leave moves most of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightedConsistentHash {
    vnodes: u32,
    seed: u64,
    overload: f64,
    extreme: f64,
}

impl Default for WeightedConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl WeightedConsistentHash {
    /// Go's defaults: 150 virtual nodes, seed 0, overload 1.3, extreme 2.0.
    #[must_use]
    pub fn new() -> Self {
        WeightedConsistentHash {
            vnodes: DEFAULT_VNODES,
            seed: 0,
            overload: DEFAULT_OVERLOAD_THRESHOLD,
            extreme: DEFAULT_EXTREME_THRESHOLD,
        }
    }

    /// Virtual nodes per worker; below 1 is raised to 1 (as Go).
    #[must_use]
    pub fn with_vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// The ring's hash seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The overload threshold; below [`MIN_OVERLOAD_THRESHOLD`] (or NaN) is raised to it.
    #[must_use]
    pub fn with_overload_threshold(mut self, t: f64) -> Self {
        self.overload = if t >= MIN_OVERLOAD_THRESHOLD {
            t
        } else {
            MIN_OVERLOAD_THRESHOLD
        };
        self
    }

    /// The extreme threshold; below [`MIN_EXTREME_THRESHOLD`] (or NaN) is raised to it.
    #[must_use]
    pub fn with_extreme_threshold(mut self, t: f64) -> Self {
        self.extreme = if t >= MIN_EXTREME_THRESHOLD {
            t
        } else {
            MIN_EXTREME_THRESHOLD
        };
        self
    }

    /// `(vnodes, seed, overload, extreme)` in force.
    #[must_use]
    pub fn settings(&self) -> (u32, u64, f64, f64) {
        (self.vnodes, self.seed, self.overload, self.extreme)
    }
}

impl AssignmentStrategy for WeightedConsistentHash {
    fn name(&self) -> &'static str {
        "weighted-consistent-hash"
    }

    #[allow(clippy::cast_precision_loss)] // Go computes the thresholds in float64 too
    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        let workers = Workers::new(input)?;
        let parts = input.partitions;
        let by_id = canon::partitions_by_id(parts);
        canon::check_sorted_unique(parts, &by_id)?;
        let ring = ring_by_rank(input, &workers, self.vnodes, self.seed)?;
        let ring_owner = |i: usize| {
            ring.owner_of_hash(partition_hash(parts[i].keys(), self.seed))
                .expect("the ring has at least one node: one worker and vnodes ≥ 1")
        };
        let n = workers.len();
        let mut owners = vec![0; parts.len()];
        let Some(first) = parts.first() else {
            return Ok(Plan::from_owners(owners));
        };
        if parts.iter().all(|p| p.weight() == first.weight()) {
            for (i, o) in owners.iter_mut().enumerate() {
                *o = workers.at_rank(ring_owner(i));
            }
            return Ok(Plan::from_owners(owners));
        }

        // Summed exactly, then converted: the same total whatever the input order.
        let total = parts.iter().map(|p| u128::from(p.weight())).sum::<u128>() as f64;
        let cutoff = total / parts.len() as f64 * self.extreme;
        let cap = total / n as f64 * self.overload;
        let mut load = vec![0.0f64; n];
        let is_extreme = |i: usize| cutoff > 0.0 && parts[i].weight() as f64 > cutoff;

        // Extremes: heaviest first, ties by id (`by_id` is sorted and the sort is stable).
        let mut extremes: Vec<usize> = by_id.iter().copied().filter(|&i| is_extreme(i)).collect();
        extremes.sort_by(|&a, &b| parts[b].weight().cmp(&parts[a].weight()));
        for (k, &i) in extremes.iter().enumerate() {
            let r = k % n;
            owners[i] = workers.at_rank(r);
            load[r] += parts[i].weight() as f64;
        }

        for &i in by_id.iter().filter(|&&i| !is_extreme(i)) {
            let w = parts[i].weight() as f64;
            let mut r = ring_owner(i);
            if cap > 0.0 && load[r] + w > cap {
                // Least loaded, lowest rank on ties (Go's strict `<` scan); the cap is soft.
                r = (0..n).fold(0, |best, j| if load[j] < load[best] { j } else { best });
            }
            owners[i] = workers.at_rank(r);
            load[r] += w;
        }
        Ok(Plan::from_owners(owners))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parti_core::strategy::WorkerSpec;
    use parti_core::{Assignment, Partition, WorkerId};

    fn workers(n: u32) -> Vec<WorkerSpec> {
        (0..n)
            .map(|i| WorkerSpec::new(WorkerId::from_parts("worker", i).unwrap()))
            .collect()
    }

    #[test]
    fn extremes_go_round_robin_by_rank() {
        // weighted_consistent_hash_test.go: 4 workers, extremes 5000/4000/3000/2000 + 12 × 100.
        let ws = workers(4);
        let mut parts: Vec<Partition> = [5000, 4000, 3000, 2000]
            .iter()
            .enumerate()
            .map(|(i, &w)| Partition::new([format!("extreme-{i}")], w).unwrap())
            .collect();
        parts.extend((0..12).map(|i| Partition::new([format!("normal-{i}")], 100).unwrap()));
        let prev = Assignment::new();
        let input = AssignInput {
            workers: &ws,
            partitions: &parts,
            previous: &prev,
        };
        let plan = WeightedConsistentHash::new().assign(&input).unwrap();
        // Each worker gets exactly one extreme, heaviest to the first id.
        assert_eq!(&plan.owners()[..4], &[0, 1, 2, 3]);
        let mut load = [0u64; 4];
        for (p, &o) in parts.iter().zip(plan.owners()) {
            load[o] += p.weight();
        }
        assert_eq!(load.iter().sum::<u64>(), 15_200);
    }

    #[test]
    fn equal_weights_match_the_plain_ring_and_settings_clamp() {
        let ws = workers(3);
        let parts: Vec<Partition> = (0..4)
            .map(|i| Partition::new([format!("p-{i}")], 100).unwrap())
            .collect();
        let prev = Assignment::new();
        let input = AssignInput {
            workers: &ws,
            partitions: &parts,
            previous: &prev,
        };
        let plan = WeightedConsistentHash::new()
            .with_seed(42)
            .assign(&input)
            .unwrap();
        assert_eq!(plan.owners(), &[1, 2, 2, 1]);
        let s = WeightedConsistentHash::new()
            .with_vnodes(0)
            .with_overload_threshold(0.5)
            .with_extreme_threshold(1.1)
            .settings();
        assert_eq!(s, (1, 0, 1.15, 1.5));
    }

    #[test]
    fn soft_cap_overflow_still_places() {
        // Overload 1.15, extreme 10: heavy 10000 + two of 1000 on two workers.
        let ws = workers(2);
        let parts = vec![
            Partition::new(["heavy"], 10_000).unwrap(),
            Partition::new(["light-1"], 1000).unwrap(),
            Partition::new(["light-2"], 1000).unwrap(),
        ];
        let prev = Assignment::new();
        let input = AssignInput {
            workers: &ws,
            partitions: &parts,
            previous: &prev,
        };
        let plan = WeightedConsistentHash::new()
            .with_overload_threshold(1.15)
            .with_extreme_threshold(10.0)
            .assign(&input)
            .unwrap();
        plan.validate(&input).unwrap();
        assert_ne!(plan.owners()[0], plan.owners()[1]);
        assert_eq!(plan.owners()[1], plan.owners()[2]);
    }
}
