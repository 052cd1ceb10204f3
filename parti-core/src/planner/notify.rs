//! The planner's public vocabulary: what the member hands it, its states, and what it tells.

use std::time::Duration;

use crate::records::{DecodeError, Lifecycle};
use crate::store::KvError;
use crate::strategy::StrategyError;
use crate::types::{InstanceId, Partition, Term, Version, WorkerId};

/// What the member hands to a new planner.
#[derive(Clone, Debug)]
pub struct PlannerInit {
    /// The leader's worker id.
    pub me: WorkerId,
    /// The leader's process.
    pub instance: InstanceId,
    /// The term the member took (already written to the `term` key by compare-and-set).
    pub term: Term,
    /// The partition catalog.
    pub partitions: Vec<Partition>,
    /// Seed for the planner's jitter.
    pub seed: u64,
}

/// The planner's state (see the table in the [module documentation](super)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlannerState {
    /// Taking over: reading the store.
    Loading,
    /// Nothing pending.
    Idle,
    /// A window is collecting joins.
    Scaling,
    /// A plan is being published.
    Rebalancing,
    /// A crash is being repaired.
    Emergency,
    /// Stopped for good.
    Stopped,
}

/// Why a plan was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlanReason {
    /// First coverage of an empty (or not yet settled) cluster.
    ColdStart,
    /// The plan at the end of the cold-start window.
    ColdStartFinal,
    /// Joins, at the end of the planned-scale window.
    PlannedScale,
    /// A member crashed (or its restart reservation ran out).
    Emergency,
    /// A member is leaving gracefully.
    Leave,
    /// The catalog changed (partitions added or removed) or a partition had no owner: it is
    /// covered without moving anything else.
    Catalog,
    /// Weights changed and the imbalance exceeds `min_imbalance`.
    Weights,
    /// An operator asked ([`Planner::trigger_rebalance`](super::Planner::trigger_rebalance)).
    Manual,
    /// A fenced member is given its partitions back.
    Regrant,
    /// A new process of a worker id (a restart) is given what its id keeps: the records are
    /// addressed to the new process, with new fences, and nothing moves.
    Rejoin,
}

/// Something the application (or operator) should know about the leader's work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlannerNotification {
    /// The takeover read everything it needed.
    TakeoverComplete {
        /// The highest version found (the next one is higher).
        version: Version,
        /// Lifecycle found in `meta` (`ColdStart` when there is no `meta`).
        lifecycle: Lifecycle,
        /// Members named by `meta`.
        members: Vec<WorkerId>,
    },
    /// The planner's state changed.
    StateChanged {
        /// Before.
        from: PlannerState,
        /// After.
        to: PlannerState,
    },
    /// A new desired plan was made.
    PlanStarted {
        /// Why.
        reason: PlanReason,
        /// Partitions that change owner between two workers.
        moved: usize,
        /// The members it was made for.
        members: Vec<WorkerId>,
    },
    /// A plan is fully published (every record and `meta`).
    Published {
        /// Why it was made.
        reason: PlanReason,
        /// The version of its last wave.
        version: Version,
    },
    /// A worker was declared dead (§5).
    WorkerDead {
        /// The worker.
        worker: WorkerId,
    },
    /// A live worker has not acknowledged a revocation within `revoke_timeout`. Its partitions
    /// are not granted elsewhere until it acknowledges or dies.
    HandoffStalled {
        /// The worker.
        worker: WorkerId,
        /// The version it has not acknowledged.
        version: Version,
        /// How long it has been waited for.
        waited: Duration,
    },
    /// The store refused a worker's assignment record as too large
    /// ([`KvError::ValueTooLarge`]). Nothing of it was written; the worker keeps its previous
    /// record, the partitions it would have gained stay unowned (or with their owners), and the
    /// same record is not tried again — a plan that changes the worker's share (more workers,
    /// fewer partitions) is. The fix is in the error: raise the store's limit, or spread the
    /// partitions over more workers.
    RecordTooLarge {
        /// The worker.
        worker: WorkerId,
        /// Partitions the refused record named.
        partitions: usize,
        /// The store's refusal (size and limit when known).
        error: KvError,
    },
    /// A higher term exists: the planner stopped.
    SteppedDown {
        /// The higher term seen.
        term: Term,
    },
    /// A stored value did not decode; it is treated as absent (reported once per key).
    Undecodable {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        error: DecodeError,
    },
    /// The strategy failed; the previous plan stays.
    StrategyFailed {
        /// Why.
        error: StrategyError,
    },
    /// A watch reported an error, or ended with one (the planner then opens it again).
    WatchFailed {
        /// Bucket of the watch.
        bucket: String,
        /// The error.
        error: KvError,
    },
}
