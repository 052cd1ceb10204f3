//! Assignment strategies for parti: who should own which partition.
//!
//! **What this crate is.** Implementations of [`parti_core::strategy::AssignmentStrategy`]: pure,
//! deterministic functions from (live workers, partitions, previous assignment) to a plan. The
//! leader publishes an explicit assignment, so a strategy here may look at the previous one and be
//! sticky — which lets [`StickyBalanced`] reach perfect balance *and* the minimum movement at
//! once, something no hash ring does.
//!
//! **What it is not.** It does no I/O, keeps no state between calls and knows nothing of NATS,
//! tokio or the protocol; the planner in `parti-core` decides *when* to call a strategy.
//!
//! | strategy | balance | movement | notes |
//! |---|---|---|---|
//! | [`StickyBalanced`] (default) | exact ⌊P/W⌋/⌈P/W⌉ by count | the minimum possible | ignores weights |
//! | [`WeightedSticky`] | heaviest worker within (1+ε) of the lower bound | little (sticky, then greedy) | weights and capacities |
//! | [`ConsistentHash`] | ring, max/mean ≈ 1.4 | near the minimum in expectation | same placement as the Go library |
//! | [`WeightedConsistentHash`] | ring with a soft weight cap | Go's | Go's placement (partitions walked in id order) |
//! | [`RoundRobin`] | exact by count | most partitions move | deterministic (sorted) |
//! | [`Rendezvous`] | HRW, max/mean ≈ 1.2–1.4 | near the minimum | capacities as weights |
//! | [`BoundedLoadRing`] | ≤ c × share | more than a ring | weights and capacities |
//!
//! [`quality`] measures any plan: balance by count and weight, and movement against the
//! theoretical minimum. [`by_name`] picks a strategy by its stable name (for command lines and
//! configs). The crate README has the full report: every strategy on the scenarios of the issue
//! (`cargo run -p parti-strategy --release --example report`).
//!
//! ```
//! use parti_core::strategy::{AssignInput, AssignmentStrategy, WorkerSpec};
//! use parti_core::{Assignment, Partition, WorkerId};
//! use parti_strategy::{StickyBalanced, quality};
//!
//! let workers: Vec<_> = (0..4)
//!     .map(|i| WorkerSpec::new(WorkerId::from_parts("worker", i).unwrap()))
//!     .collect();
//! let partitions: Vec<_> = (0..100)
//!     .map(|i| Partition::with_default_weight(["orders", &i.to_string()]).unwrap())
//!     .collect();
//!
//! // Cold start: 25 each.
//! let empty = Assignment::new();
//! let input = AssignInput { workers: &workers, partitions: &partitions, previous: &empty };
//! let plan = StickyBalanced::new().assign(&input)?;
//! assert_eq!(quality::balance(&input, &plan)?.max_count, 25);
//!
//! // A fifth worker joins: exactly 20 partitions move, all to it.
//! let previous = plan.to_assignment(&input);
//! let mut more = workers.clone();
//! more.push(WorkerSpec::new(WorkerId::from_parts("worker", 4).unwrap()));
//! let input = AssignInput { workers: &more, partitions: &partitions, previous: &previous };
//! let plan = StickyBalanced::new().assign(&input)?;
//! let moved = quality::movement(&input, &plan)?;
//! assert_eq!((moved.moved_count, moved.min_moved_count), (20, 20));
//! # Ok::<(), parti_core::strategy::StrategyError>(())
//! ```
//!
//! Every strategy is deterministic whatever the order of its inputs, and no hashing here is
//! seeded at random (`std`'s `RandomState` is never used).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod bounded;
mod canon;
pub mod quality;
mod rendezvous;
pub mod ring;
mod round_robin;
mod sticky;
mod weighted;
mod weighted_ring;

pub use bounded::{BoundedLoadRing, DEFAULT_CAPACITY_FACTOR};
pub use rendezvous::Rendezvous;
pub use ring::ConsistentHash;
pub use round_robin::RoundRobin;
pub use sticky::StickyBalanced;
pub use weighted::{DEFAULT_EPSILON, WeightedOutcome, WeightedReport, WeightedSticky};
pub use weighted_ring::{
    DEFAULT_EXTREME_THRESHOLD, DEFAULT_OVERLOAD_THRESHOLD, MIN_EXTREME_THRESHOLD,
    MIN_OVERLOAD_THRESHOLD, WeightedConsistentHash,
};

use parti_core::strategy::AssignmentStrategy;

/// The [`AssignmentStrategy::name`]s of the strategies of this crate, default first.
pub const NAMES: [&str; 7] = [
    "sticky-balanced",
    "weighted-sticky",
    "consistent-hash",
    "weighted-consistent-hash",
    "round-robin",
    "rendezvous",
    "bounded-load-ring",
];

/// A strategy by its [`name`](AssignmentStrategy::name), with default settings (for command
/// lines and config files); `None` for an unknown name.
///
/// ```
/// let s = parti_strategy::by_name("weighted-sticky").unwrap();
/// assert_eq!(s.name(), "weighted-sticky");
/// assert!(parti_strategy::by_name("nope").is_none());
/// ```
#[must_use]
pub fn by_name(name: &str) -> Option<Box<dyn AssignmentStrategy>> {
    let s: Box<dyn AssignmentStrategy> = match name {
        "sticky-balanced" => Box::new(StickyBalanced::new()),
        "weighted-sticky" => Box::new(WeightedSticky::new()),
        "consistent-hash" => Box::new(ConsistentHash::new()),
        "weighted-consistent-hash" => Box::new(WeightedConsistentHash::new()),
        "round-robin" => Box::new(RoundRobin),
        "rendezvous" => Box::new(Rendezvous),
        "bounded-load-ring" => Box::new(BoundedLoadRing::new()),
        _ => return None,
    };
    Some(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_round_trips() {
        for name in super::NAMES {
            assert_eq!(super::by_name(name).map(|s| s.name()), Some(name));
        }
    }
}
