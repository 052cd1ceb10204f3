//! The member's inputs, outputs and errors.

use std::time::Duration;

use crate::machine::{IoAction, IoEvent};
use crate::planner::PlannerNotification;
use crate::records::{DecodeError, OwnedPartition};
use crate::store::ConnectionState;
use crate::types::{InstanceId, Partition, Term, WorkerId, WorkerState};

/// A command only the leader can carry out was given to a worker that does not lead
/// ([`Member::trigger_rebalance`](super::Member::trigger_rebalance),
/// [`Planner::trigger_rebalance`](crate::planner::Planner::trigger_rebalance)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this worker does not lead; {}", ask(.leader.as_ref()))]
pub struct NotLeader {
    /// The leader this worker last saw in the leader key, if it knows one (it may be stale:
    /// the key's expiry is silent).
    pub leader: Option<WorkerId>,
}

fn ask(leader: Option<&WorkerId>) -> String {
    match leader {
        Some(l) => format!("ask the leader ({l}) or call it on every worker"),
        None => "the leader is not known; call it on every worker".to_owned(),
    }
}

/// How often the member's retry loops retried, for metrics: each count is one retry scheduled
/// after a failed operation (with the backoff of `config.retry`). Counting changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RetryCounts {
    /// Claiming a worker id (listing, `create`, re-reads) after a failure or a full pool.
    pub claim: u64,
    /// Standing for election, taking a term and renewing the leader key after a failure.
    pub election: u64,
    /// The planners' takeover reads and publication batches (every planner this member ran).
    pub publication: u64,
    /// Anything else: re-reading the id claim after a failed renewal, opening a watch again
    /// after it ended (the member's and its planners').
    pub other: u64,
    /// Retry loops that gave up. Only the claim does: at `startup_timeout` the member fails
    /// ([`MemberError`]); every other loop retries until its purpose ends (a lease lapse, a
    /// step-down, a stop).
    pub exhausted: u64,
}

/// What the driver gives a new member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInit {
    /// This process's random 128-bit id (drawn once per process start by the driver).
    pub instance: InstanceId,
    /// Seed for every random choice of the member and its planners (jitter).
    pub seed: u64,
    /// Wall-clock Unix milliseconds at the `now` given to [`Member::new`](super::Member::new);
    /// wall-clock values written to records are this plus elapsed monotonic time.
    pub wall_epoch_ms: u64,
    /// The partition catalog (used when this member leads). Shared, not copied: a driver that
    /// runs many members (the simulator) gives them all the same one.
    pub partitions: std::sync::Arc<[Partition]>,
}

/// Identifies one [`Action::Deliver`]; its completion comes back as [`Event::Delivered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(pub u64);

/// An input to the member.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The result of an [`Action::Io`] (a KV answer or a watch item), the member's or its
    /// planner's.
    Io(IoEvent),
    /// The application's handlers finished the delivery with this id.
    Delivered {
        /// The delivery.
        delivery: DeliveryId,
    },
    /// The store connection changed.
    Connection(ConnectionState),
}

/// An output of the member for the driver to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Store I/O (the member's own or its planner's).
    Io(IoAction),
    /// Run the application's handlers: `on_revoked(revoked)` if non-empty, then
    /// `on_assigned(assigned)` if non-empty, then report [`Event::Delivered`]. One delivery runs
    /// at a time, in emission order. The member waits `handler_timeout` per non-empty list;
    /// after that the delivery counts as done ([`Notification::HandlerTimedOut`]) and the
    /// member moves on (the driver queues the next delivery behind the running handler).
    Deliver {
        /// Id to report completion with.
        delivery: DeliveryId,
        /// Partitions the application must stop working on (with the fences they were granted
        /// with), in partition order.
        revoked: Vec<OwnedPartition>,
        /// Partitions the application now owns, with their fences, in partition order. A
        /// partition already owned appears again when its fence changed.
        assigned: Vec<OwnedPartition>,
    },
}

/// Degraded-mode alert levels, in escalating order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertLevel {
    /// Degraded for `alerts.info`.
    Info,
    /// Degraded for `alerts.warn`.
    Warn,
    /// Degraded for `alerts.error`.
    Error,
    /// Degraded for `alerts.critical`.
    Critical,
}

/// Why degraded mode was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DegradedReason {
    /// The connection was down for `degraded.enter_after`.
    ConnectionDown,
    /// `degraded.kv_error_threshold` operations failed within `degraded.kv_error_window`.
    KvErrors,
}

/// Why a member stopped without being asked to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// Every id of the pool stayed taken until the startup timeout.
    #[error("no free worker id in [{min}, {max}] before the startup timeout")]
    IdentityPoolExhausted {
        /// Lowest id number.
        min: u32,
        /// Highest id number.
        max: u32,
    },
    /// No id could be claimed before the startup timeout (the store did not answer).
    #[error("no worker id could be claimed before the startup timeout ({timeout:?})")]
    StartupTimedOut {
        /// The startup timeout.
        timeout: Duration,
    },
}

/// Something the application should know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// The lifecycle state changed.
    StateChanged {
        /// The old state.
        from: WorkerState,
        /// The new state.
        to: WorkerState,
    },
    /// A worker id was claimed.
    IdentityClaimed {
        /// The id.
        worker: WorkerId,
    },
    /// The id now belongs to someone else (renewal conflict or key gone): everything was revoked
    /// locally and the member claims again.
    IdentityLost {
        /// The lost id.
        worker: WorkerId,
    },
    /// Everything was revoked locally because ownership can no longer be guaranteed (fence).
    /// The application must stop working on every listed partition at once.
    OwnershipLost {
        /// What was revoked: everything owned, and what a revocation handler still running was
        /// releasing (the leader may give those to others from now on, not when it returns).
        partitions: Vec<OwnedPartition>,
    },
    /// Start finished: the first assignment was applied, or `startup_timeout` passed without one.
    Ready,
    /// This member became leader for `term`.
    LeadershipAcquired {
        /// The term.
        term: Term,
    },
    /// This member stopped leading (lease lapsed, key lost, leave, identity loss).
    LeadershipLost {
        /// The term it led, if it had taken one.
        term: Option<Term>,
    },
    /// A delivery did not finish within `handler_timeout`; it counts as done.
    HandlerTimedOut {
        /// The delivery.
        delivery: DeliveryId,
    },
    /// Degraded mode entered.
    DegradedEntered {
        /// Why.
        reason: DegradedReason,
    },
    /// Degraded mode left.
    DegradedExited {
        /// How long it lasted.
        duration: Duration,
    },
    /// Degraded for `degraded_for`: an alert of `level` (repeated every `alerts.interval`).
    DegradedAlert {
        /// The level.
        level: AlertLevel,
        /// Time since degraded mode was entered.
        degraded_for: Duration,
    },
    /// A stored value did not decode and was treated as absent (reported once per key).
    UndecodableValue {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        error: DecodeError,
    },
    /// The member failed and stopped.
    Failed(MemberError),
    /// The member has stopped (after a leave, a restart request or a failure).
    Stopped,
    /// A notification of the embedded planner.
    Planner(PlannerNotification),
}
