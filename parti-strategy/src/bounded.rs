//! [`BoundedLoadRing`]: consistent hashing with bounded loads.

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

use crate::canon::{self, Keyed, OrdF64, Workers};
use crate::ring::{DEFAULT_VNODES, partition_hash, ring_by_rank};

/// Default capacity factor: no worker above 1.25 × its share.
pub const DEFAULT_CAPACITY_FACTOR: f64 = 1.25;

/// Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam): the Go-compatible
/// ring, but a worker whose load would pass `c × share` (share = total weight × capacity /
/// Σ capacity) is skipped and the partition walks on clockwise to the next worker with room.
///
/// Partitions are placed heaviest first (ties by `(hash, id)`), so the result does not depend on
/// the input order. A partition that fits nowhere (heavier than every remaining room) goes to the
/// worker it leaves least loaded relative to its capacity. Stateless: the previous assignment is
/// not read; movement is a little above a plain ring's (cascades of skipped workers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundedLoadRing {
    factor: f64,
    vnodes: u32,
}

impl Default for BoundedLoadRing {
    fn default() -> Self {
        Self::new()
    }
}

impl BoundedLoadRing {
    /// c = [`DEFAULT_CAPACITY_FACTOR`], 150 virtual nodes per worker.
    #[must_use]
    pub fn new() -> Self {
        BoundedLoadRing {
            factor: DEFAULT_CAPACITY_FACTOR,
            vnodes: DEFAULT_VNODES,
        }
    }

    /// Sets the capacity factor c (finite, ≥ 1; `assign` fails otherwise).
    #[must_use]
    pub fn with_capacity_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the virtual nodes per worker (≥ 1; `assign` fails otherwise).
    #[must_use]
    pub fn with_vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes;
        self
    }
}

impl AssignmentStrategy for BoundedLoadRing {
    fn name(&self) -> &'static str {
        "bounded-load-ring"
    }

    #[allow(clippy::cast_precision_loss)] // loads compared as ratios
    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(StrategyError::InvalidSettings {
                reason: format!(
                    "capacity factor must be finite and ≥ 1, not {}",
                    self.factor
                ),
            });
        }
        let workers = Workers::new(input)?;
        let ring = ring_by_rank(input, &workers, self.vnodes, 0)?;
        let parts = input.partitions;
        let mut order: Vec<Keyed> = (0..parts.len()).map(|i| Keyed::new(parts, i)).collect();
        let hashes: Vec<u64> = order.iter().map(|k| k.hash).collect();
        canon::check_unique_by_hash(parts, &hashes)?;
        order.sort_unstable_by(|a, b| {
            parts[b.index]
                .weight()
                .cmp(&parts[a.index].weight())
                .then_with(|| a.cmp(b, parts))
        });

        let n = workers.len();
        let cap: Vec<f64> = workers
            .sorted
            .iter()
            .map(|&w| f64::from(input.workers[w].capacity))
            .collect();
        let cap_sum: f64 = cap.iter().sum();
        // Summed exactly, then converted: the same total whatever the input order.
        let total = parts.iter().map(|p| u128::from(p.weight())).sum::<u128>() as f64;
        let limit: Vec<f64> = cap
            .iter()
            .map(|c| self.factor * total * c / cap_sum)
            .collect();
        let mut load = vec![0.0f64; n];
        let mut owners = vec![0; parts.len()];
        for k in order {
            let w = parts[k.index].weight() as f64;
            let start = ring
                .position(partition_hash(parts[k.index].keys(), 0))
                .expect("the ring has at least one node: one worker and vnodes ≥ 1");
            let mut chosen = None;
            for step in 0..ring.len() {
                let r = ring
                    .owner_at((start + step) % ring.len())
                    .expect("positions are taken modulo the ring length");
                if load[r] + w <= limit[r] {
                    chosen = Some(r);
                    break;
                }
            }
            let r = chosen.unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&r| (OrdF64((load[r] + w) / cap[r]), r))
                    .expect("at least one worker")
            });
            load[r] += w;
            owners[k.index] = workers.at_rank(r);
        }
        Ok(Plan::from_owners(owners))
    }
}
