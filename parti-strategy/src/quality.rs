//! How good a plan is: balance, and movement against the theoretical minimum.
//!
//! ```
//! use parti_core::strategy::{AssignInput, AssignmentStrategy, WorkerSpec};
//! use parti_core::{Assignment, Partition, WorkerId};
//! use parti_strategy::{StickyBalanced, quality};
//!
//! let workers: Vec<_> = (0..3).map(|i| WorkerSpec::new(WorkerId::from_parts("w", i).unwrap())).collect();
//! let partitions: Vec<_> = (0..10).map(|i| Partition::with_default_weight([format!("p{i}")]).unwrap()).collect();
//! let none = Assignment::new();
//! let input = AssignInput { workers: &workers, partitions: &partitions, previous: &none };
//! let plan = StickyBalanced::new().assign(&input)?;
//! let b = quality::balance(&input, &plan)?;
//! assert_eq!(b.max_count, 4);
//! assert!((b.max_over_mean_count - 1.2).abs() < 1e-9);
//!
//! // One worker crashes: its partitions, and nothing else, move.
//! let before = plan.to_assignment(&input);
//! let after = AssignInput { workers: &workers[1..], partitions: &partitions, previous: &before };
//! let m = quality::movement(&after, &StickyBalanced::new().assign(&after)?)?;
//! assert_eq!(m.moved_count, m.min_moved_count);
//! # Ok::<(), parti_core::strategy::StrategyError>(())
//! ```

use parti_core::strategy::{AssignInput, Plan, StrategyError};

use crate::canon::{self, NONE, Workers};

/// Balance of a plan. Ratios are against the mean; a worker's weight is measured against its
/// capacity share (`total · capacity / Σ capacity`), so 1.0 everywhere is perfect.
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    /// Number of workers.
    pub workers: usize,
    /// Number of partitions.
    pub partitions: usize,
    /// Most partitions on one worker.
    pub max_count: usize,
    /// Fewest partitions on one worker.
    pub min_count: usize,
    /// `max_count / (P / W)`; 1.0 with no partitions.
    pub max_over_mean_count: f64,
    /// `min_count / (P / W)`; 1.0 with no partitions.
    pub min_over_mean_count: f64,
    /// Highest `load / share` over the workers; 1.0 with no partitions.
    pub max_over_mean_weight: f64,
    /// Lowest `load / share` over the workers; 1.0 with no partitions.
    pub min_over_mean_weight: f64,
    /// The lowest possible `max_over_mean_weight`:
    /// `max(1, heaviest partition / share of the largest-capacity worker)`.
    pub weight_lower_bound: f64,
}

/// Movement of a plan against the previous assignment of its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    /// Partitions that had an owner and get a different one (including those of workers that
    /// are gone). Partitions that had no owner are not counted.
    pub moved_count: usize,
    /// Their total weight.
    pub moved_weight: u128,
    /// The fewest partitions any perfectly count-balanced plan must move: the partitions of
    /// workers that are gone, plus `Σ max(0, held − quota)` with the ⌈P/W⌉ quotas given to the
    /// workers that hold the most.
    pub min_moved_count: usize,
    /// A lower bound on the weight a perfectly weight-balanced plan must move: the weight of
    /// workers that are gone, plus `Σ max(0, load − share)` over the live workers. A strategy
    /// that tolerates some imbalance (ε) may move less.
    pub min_moved_weight: u128,
    /// Total weight of the partitions.
    pub total_weight: u128,
    /// Partitions that had an owner in the previous assignment.
    pub previously_owned: usize,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 1.0 }
}

/// Balance by count and by weight.
///
/// # Errors
///
/// When the plan does not validate against the input, or the input's workers are invalid.
#[allow(clippy::cast_precision_loss)] // ratios of counts and weights: f64 is plenty
pub fn balance(input: &AssignInput<'_>, plan: &Plan) -> Result<Balance, StrategyError> {
    plan.validate(input)?;
    let workers = Workers::new(input)?;
    let n = workers.len();
    let mut count = vec![0usize; n];
    let mut load = vec![0u128; n];
    let mut total = 0u128;
    let mut heaviest = 0u64;
    for (p, &o) in input.partitions.iter().zip(plan.owners()) {
        count[o] += 1;
        load[o] += u128::from(p.weight());
        total += u128::from(p.weight());
        heaviest = heaviest.max(p.weight());
    }
    let caps: u128 = input.workers.iter().map(|w| u128::from(w.capacity)).sum();
    let max_cap = input.workers.iter().map(|w| w.capacity).max().unwrap_or(1);
    let mean = input.partitions.len() as f64 / n as f64;
    let share = |w: usize| total as f64 * f64::from(input.workers[w].capacity) / caps as f64;
    let wr: Vec<f64> = (0..n).map(|w| ratio(load[w] as f64, share(w))).collect();
    let max_count = count.iter().copied().max().unwrap_or(0);
    let min_count = count.iter().copied().min().unwrap_or(0);
    let lb = if total == 0 {
        1.0
    } else {
        let share_max = total as f64 * f64::from(max_cap) / caps as f64;
        (heaviest as f64 / share_max).max(1.0)
    };
    Ok(Balance {
        workers: n,
        partitions: input.partitions.len(),
        max_count,
        min_count,
        max_over_mean_count: ratio(max_count as f64, mean),
        min_over_mean_count: ratio(min_count as f64, mean),
        max_over_mean_weight: wr.iter().copied().fold(f64::MIN, f64::max),
        min_over_mean_weight: wr.iter().copied().fold(f64::MAX, f64::min),
        weight_lower_bound: lb,
    })
}

/// The fewest partitions a perfectly count-balanced plan must move for this input.
///
/// # Errors
///
/// When the input's workers are invalid.
pub fn min_moves(input: &AssignInput<'_>) -> Result<usize, StrategyError> {
    let workers = Workers::new(input)?;
    let prev = canon::previous_owners(input, &workers);
    Ok(min_moves_from(input, &workers, &prev))
}

fn min_moves_from(input: &AssignInput<'_>, workers: &Workers<'_>, prev: &[usize]) -> usize {
    let n = workers.len();
    let mut held = vec![0usize; n];
    for &o in prev {
        if o != NONE {
            held[o] += 1;
        }
    }
    let orphaned = input
        .partitions
        .iter()
        .zip(prev)
        .filter(|(p, o)| **o == NONE && input.previous.owner(p.id()).is_some())
        .count();
    let base = input.partitions.len() / n;
    let extra = input.partitions.len() % n;
    held.sort_unstable_by(|a, b| b.cmp(a));
    let excess: usize = held
        .iter()
        .enumerate()
        .map(|(k, &h)| h.saturating_sub(base + usize::from(k < extra)))
        .sum();
    orphaned + excess
}

/// Movement from the input's previous assignment to `plan`, and the theoretical minimum.
///
/// # Errors
///
/// When the plan does not validate against the input, or the input's workers are invalid.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // the share is a bound, rounded down
pub fn movement(input: &AssignInput<'_>, plan: &Plan) -> Result<Movement, StrategyError> {
    plan.validate(input)?;
    let workers = Workers::new(input)?;
    let prev = canon::previous_owners(input, &workers);
    let mut m = Movement {
        moved_count: 0,
        moved_weight: 0,
        min_moved_count: min_moves_from(input, &workers, &prev),
        min_moved_weight: 0,
        total_weight: 0,
        previously_owned: 0,
    };
    let mut prev_load = vec![0u128; workers.len()];
    for ((p, &o), &new) in input.partitions.iter().zip(&prev).zip(plan.owners()) {
        let w = u128::from(p.weight());
        m.total_weight += w;
        let had_owner = o != NONE || input.previous.owner(p.id()).is_some();
        if !had_owner {
            continue;
        }
        m.previously_owned += 1;
        if o == NONE {
            m.min_moved_weight += w;
        } else {
            prev_load[o] += w;
        }
        if o != new {
            m.moved_count += 1;
            m.moved_weight += w;
        }
    }
    let caps: u128 = input.workers.iter().map(|w| u128::from(w.capacity)).sum();
    for (w, &l) in prev_load.iter().enumerate() {
        let share = m.total_weight * u128::from(input.workers[w].capacity) / caps;
        m.min_moved_weight += l.saturating_sub(share);
    }
    Ok(m)
}
