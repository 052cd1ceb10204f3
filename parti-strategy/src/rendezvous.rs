//! [`Rendezvous`]: weighted highest-random-weight hashing.

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};
use xxhash_rust::xxh3::xxh3_64;

use crate::canon::{Workers, fmix64};
use crate::ring::partition_hash;

/// Weighted rendezvous (HRW) hashing: each partition goes to the worker with the highest score
/// `−capacity / ln(u)`, where `u ∈ (0, 1)` is a hash of the (partition, worker) pair.
///
/// Stateless and consistent: when a worker joins, only partitions that now score highest on it
/// move; when one leaves, only its own partitions move. A worker of capacity 2 gets about twice
/// the partitions of a worker of capacity 1 (weights are ignored). Balance by count is that of a
/// good hash (max/mean ≈ 1.2 at 30 partitions per worker). Cost: O(P · W) hashes, so prefer
/// [`StickyBalanced`](crate::StickyBalanced) for thousands of workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rendezvous;

/// The score hash of a pair.
#[inline]
fn pair_hash(partition: u64, worker: u64) -> u64 {
    fmix64(partition ^ worker.rotate_left(17))
}

/// `−capacity / ln(u)`, with `u` the hash mapped into the open interval (0, 1).
#[inline]
#[allow(clippy::cast_precision_loss)] // 53 bits of the hash are used on purpose
fn weighted_score(hash: u64, capacity: f64) -> f64 {
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -capacity / u.ln()
}

impl AssignmentStrategy for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        let workers = Workers::new(input)?;
        // Worker hashes in canonical order, so ties go to the lowest id.
        let seeds: Vec<u64> = workers
            .sorted
            .iter()
            .map(|&w| xxh3_64(input.workers[w].id.as_str().as_bytes()))
            .collect();
        let caps: Vec<f64> = workers
            .sorted
            .iter()
            .map(|&w| f64::from(input.workers[w].capacity))
            .collect();
        let uniform = caps.iter().all(|&c| c == caps[0]);
        let owners = input
            .partitions
            .iter()
            .map(|p| {
                let ph = partition_hash(p.keys(), 0);
                let mut best = 0;
                if uniform {
                    // The score grows with the hash: compare hashes, no logarithm.
                    let mut top = pair_hash(ph, seeds[0]);
                    for (r, &s) in seeds.iter().enumerate().skip(1) {
                        let h = pair_hash(ph, s);
                        if h > top {
                            top = h;
                            best = r;
                        }
                    }
                } else {
                    let mut top = weighted_score(pair_hash(ph, seeds[0]), caps[0]);
                    for (r, &s) in seeds.iter().enumerate().skip(1) {
                        let score = weighted_score(pair_hash(ph, s), caps[r]);
                        if score > top {
                            top = score;
                            best = r;
                        }
                    }
                }
                workers.at_rank(best)
            })
            .collect();
        Ok(Plan::from_owners(owners))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parti_core::strategy::WorkerSpec;
    use parti_core::{Assignment, Partition, WorkerId};

    fn counts(caps: &[u32], p: u32) -> Vec<usize> {
        let workers: Vec<WorkerSpec> = (0u32..)
            .zip(caps)
            .map(|(i, &c)| WorkerSpec::with_capacity(WorkerId::from_parts("w", i).unwrap(), c))
            .collect();
        let parts: Vec<Partition> = (0..p)
            .map(|i| Partition::with_default_weight([format!("p{i}")]).unwrap())
            .collect();
        let prev = Assignment::new();
        let input = AssignInput {
            workers: &workers,
            partitions: &parts,
            previous: &prev,
        };
        let plan = Rendezvous.assign(&input).unwrap();
        let mut n = vec![0; caps.len()];
        for &o in plan.owners() {
            n[o] += 1;
        }
        n
    }

    #[test]
    fn capacity_scales_the_share() {
        let n = counts(&[1, 3], 8000);
        // Expected 2000 / 6000; a good hash stays within a few percent.
        assert!((1800..=2200).contains(&n[0]), "{n:?}");
        let n = counts(&[1, 1, 2], 8000);
        assert!(
            (1800..=2200).contains(&n[0]) && (3600..=4400).contains(&n[2]),
            "{n:?}"
        );
    }

    #[test]
    fn uniform_capacities_spread_evenly() {
        let n = counts(&[2, 2, 2, 2], 8000);
        assert!(n.iter().all(|c| (1800..=2200).contains(c)), "{n:?}");
    }
}
