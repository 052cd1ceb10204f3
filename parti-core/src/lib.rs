//! The pure heart of parti.
//!
//! **What this crate is.** Everything parti *decides*, with no I/O: the vocabulary
//! ([`WorkerId`], [`Partition`], [`Term`], [`Version`], [`Fence`], [`Assignment`]), the
//! validated [`Config`], the wire [`records`] of the coordination protocol and
//! their codec, and the two ports the rest of the system plugs into:
//! [`store::KvStore`] (a key-value store with compare-and-set and watches — NATS JetStream KV in
//! production, an in-process store when embedded) and [`strategy::AssignmentStrategy`] (who
//! should own what).
//!
//! **What it is not.** It never touches a socket, a clock or a random number generator: time and
//! randomness are parameters (a `clippy.toml` forbids `Instant::now`, `SystemTime::now` and
//! thread RNGs here). It depends on no async runtime and no NATS client, so it can be tested in
//! microseconds and driven by a deterministic simulator as easily as by the tokio runtime.
//!
//! **Driving it.** A driver owns one [`member::Member`] per process, executes the actions it
//! emits, feeds back results, watch items, handler completions and connection changes, and
//! wakes it at its deadlines. The complete contract — which ids to track, what to do with each
//! action, what to feed, what the store must guarantee — is in the [`member`] module
//! documentation ("The driver contract").
//!
//! # Crate map
//!
//! | module | what |
//! |---|---|
//! | [`types`] | identifiers and values: worker ids, partitions, terms, versions, fences |
//! | [`assignment`] | who owns what, in one deterministic order, with diffs |
//! | [`breaker`] | the circuit breaker in front of store calls, a pure state machine |
//! | [`config`] | every setting, its default, and validation into [`config::ValidConfig`] |
//! | [`member`] | the `Member` machine every worker runs: identity, heartbeats, election, applying records |
//! | [`planner`] | the `Planner` machine the leader runs (embedded in its `Member`): liveness, planning, publication |
//! | [`machine`] | what the sans-IO machines share: op ids, KV requests as data, timers, backoff |
//! | [`records`] | the values written to the store, postcard behind a format version byte |
//! | [`store`] | the `KvStore` port and its error type |
//! | [`strategy`] | the `AssignmentStrategy` port |
//! | [`rng`] | a small seeded generator for jitter (no entropy source) |
//! | [`handler`] | the `AssignmentHandler` port: the application's callbacks on gaining and losing partitions |
//! | [`hash`] | a deterministic hasher for indexes and a stable digest |
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod assignment;
pub mod breaker;
pub mod config;
pub mod handler;
pub mod hash;
pub mod machine;
pub mod member;
pub mod planner;
pub mod records;
pub mod rng;
pub mod store;
pub mod strategy;
pub mod types;

pub use assignment::{Assignment, AssignmentDiff, AssignmentError, Move};
pub use config::{Config, ValidConfig};
pub use types::{
    DEFAULT_WEIGHT, Fence, InstanceId, InvalidPartition, InvalidWorkerId, Partition, PartitionId,
    Revision, Term, Version, WorkerId, WorkerState,
};
