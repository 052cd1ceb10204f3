//! What a running worker shows: its [`Status`], its [`Health`] for probes, and the
//! [`Notification`]s it broadcasts.

use std::collections::BTreeMap;

use parti_core::breaker::BreakerState;
use parti_core::member::{self, MemberError};
use parti_core::records::OwnedPartition;
use parti_core::{InstanceId, Term, Version, WorkerId, WorkerState};

use crate::error::SourceError;
use crate::handler::Callback;

/// A snapshot of one worker, as its driver last published it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The lifecycle state.
    pub state: WorkerState,
    /// The worker id held, if any.
    pub worker_id: Option<WorkerId>,
    /// This process's instance id (random, drawn at start).
    pub instance: InstanceId,
    /// Whether this worker leads now.
    pub is_leader: bool,
    /// The leader this worker knows of (itself when it leads), if any.
    pub leader: Option<WorkerId>,
    /// The term this worker leads, when it leads.
    pub term: Option<Term>,
    /// The highest assignment version applied.
    pub version: Version,
    /// Start finished: the first assignment was applied (or the startup timeout passed without
    /// one, owning nothing).
    pub ready: bool,
    /// Everything was revoked locally because ownership could not be guaranteed; waiting to be
    /// granted again.
    pub fenced: bool,
    /// In degraded mode (cut off from the store, or seeing a burst of store errors).
    pub degraded: bool,
    /// The circuit breaker around this worker's store calls.
    pub breaker: BreakerState,
    /// The driver has stopped; nothing more will change.
    pub stopped: bool,
    /// Why the worker stopped on its own, if it did.
    pub failure: Option<MemberError>,
    /// How many times each state was entered (by wire code), so a waiter cannot miss a short one.
    pub(crate) entered: BTreeMap<u8, u64>,
}

impl Status {
    pub(crate) fn new(instance: InstanceId) -> Self {
        Status {
            state: WorkerState::Init,
            worker_id: None,
            instance,
            is_leader: false,
            leader: None,
            term: None,
            version: Version::ZERO,
            ready: false,
            fenced: false,
            degraded: false,
            breaker: BreakerState::Closed,
            stopped: false,
            failure: None,
            entered: BTreeMap::from([(WorkerState::Init.code(), 1)]),
        }
    }

    /// How many times `state` was entered so far.
    pub(crate) fn entered(&self, state: WorkerState) -> u64 {
        self.entered.get(&state.code()).copied().unwrap_or(0)
    }

    /// The probe view of this status.
    #[must_use]
    pub fn health(&self) -> Health {
        Health {
            live: !self.stopped,
            ready: self.ready && !self.fenced && !self.stopped,
            state: self.state,
        }
    }
}

/// For liveness and readiness probes (Kubernetes `livenessProbe` / `readinessProbe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The worker runs (its driver has not stopped). A worker that is not live should be
    /// restarted.
    pub live: bool,
    /// Its assignment is applied and it is not fenced: it is doing its share of the work.
    pub ready: bool,
    /// The state behind the two answers.
    pub state: WorkerState,
}

/// Something the application (or an operator) should know, broadcast to every
/// [`Manager::notifications`](crate::Manager::notifications) receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// What the member machine reports: state changes, identity, leadership, readiness,
    /// degraded mode and its alerts, ownership lost, the leader's plans and publications.
    Member(member::Notification),
    /// A delivery finished: the handlers were told what this worker lost and gained, and the
    /// version is acknowledged.
    AssignmentChanged {
        /// The assignment version applied (the worker's newest).
        version: Version,
        /// Partitions granted (or granted again with a new fence).
        assigned: Vec<OwnedPartition>,
        /// Partitions given up.
        revoked: Vec<OwnedPartition>,
    },
    /// A callback returned an error or panicked. The protocol went on (a failed revocation still
    /// counts as released).
    HandlerFailed {
        /// Which callback.
        callback: Callback,
        /// What it said.
        error: String,
    },
    /// The partition source failed; the last catalog stays in force.
    PartitionSourceFailed {
        /// Why.
        error: SourceError,
    },
    /// The circuit breaker around the store calls changed state (Open: calls are turned away
    /// for `breaker.open_timeout`, and count as failures towards degraded mode).
    CircuitBreaker {
        /// Before.
        from: BreakerState,
        /// After.
        to: BreakerState,
    },
    /// The partition catalog changed.
    CatalogChanged {
        /// Partitions in the new catalog.
        partitions: usize,
    },
}
