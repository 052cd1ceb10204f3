//! Assignment strategies for parti: who should own which partition.
//!
//! **What this crate is.** Implementations of [`parti_core::strategy::AssignmentStrategy`]: pure,
//! deterministic functions from (live workers, partitions, previous assignment) to a plan. The
//! leader publishes an explicit assignment, so a strategy here may look at the previous one and be
//! sticky.
//!
//! **What it is not.** It does no I/O, keeps no state between calls and knows nothing of NATS,
//! tokio or the protocol; the planner in `parti-core` decides *when* to call a strategy.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
