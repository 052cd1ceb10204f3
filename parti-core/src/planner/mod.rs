//! The `Planner`: what the leader runs (PROTOCOL.md §4 leader side, §5–7).
//!
//! **Status: interface only.** The behaviour arrives with the core-machines issue; today every
//! input is accepted and ignored, and no action is produced.
//!
//! The member that wins the election takes the next term (compare-and-set on the `term` key),
//! then builds a `Planner` for that term. The planner owns everything about the assignments
//! bucket and the liveness of workers: it watches heartbeats, reads `meta` and the `w.<id>`
//! records on takeover, classifies changes, calls the strategy, and publishes with revoke →
//! acknowledge → grant. When the member's lease lapses (or it leaves), the member calls
//! [`Planner::stop`]; from then on the planner emits nothing but the `Unwatch` of its watches.
//!
//! Call order (as every parti machine): feed inputs with `handle_*` and commands, then drain
//! [`Planner::poll_action`] until `None`, [`Planner::poll_notification`] until `None`, and sleep
//! until [`Planner::poll_timeout`]. Every id it issues has the planner bit set
//! ([`OpId::is_planner`](crate::machine::OpId::is_planner)); the member forwards events carrying
//! such ids here.

use std::time::Instant;

use crate::config::ValidConfig;
use crate::machine::{IoAction, IoEvent};
use crate::strategy::AssignmentStrategy;
use crate::types::{InstanceId, Partition, Term, WorkerId};

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

/// Something the application (or operator) should know about the leader's work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlannerNotification {}

/// The leader's planning machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Planner {
    init: PlannerInit,
    stopped: bool,
    #[allow(dead_code)] // used once the behaviour lands
    config: ValidConfig,
    #[allow(dead_code)] // used once the behaviour lands
    strategy: Box<dyn AssignmentStrategy>,
}

impl Planner {
    /// A planner for `init.term`.
    #[must_use]
    pub fn new(
        config: ValidConfig,
        strategy: Box<dyn AssignmentStrategy>,
        init: PlannerInit,
        _now: Instant,
    ) -> Self {
        Planner {
            init,
            stopped: false,
            config,
            strategy,
        }
    }

    /// The term this planner acts for.
    #[must_use]
    pub fn term(&self) -> Term {
        self.init.term
    }

    /// Whether the planner has stopped (lease lapsed, stepped down, or told to stop).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the result of one of the planner's actions.
    pub fn handle_event(&mut self, _now: Instant, _event: IoEvent) {}

    /// Acts on every deadline due at `now`.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Replaces the partition catalog.
    pub fn set_partitions(&mut self, _now: Instant, partitions: Vec<Partition>) {
        self.init.partitions = partitions;
    }

    /// Replans now, ignoring the cooldown (an operator's request).
    pub fn trigger_rebalance(&mut self, _now: Instant) {}

    /// Tells the planner whether its member is degraded: while it is, and for
    /// `degraded.recovery_grace` after, no worker is declared dead.
    pub fn set_degraded(&mut self, _now: Instant, _degraded: bool) {}

    /// Stops for good: the lease lapsed or the member leaves. Abandons every in-flight
    /// publication.
    pub fn stop(&mut self, _now: Instant) {
        self.stopped = true;
    }

    /// The next I/O to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<IoAction> {
        None
    }

    /// When to call [`Planner::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next notification.
    #[must_use]
    pub fn poll_notification(&mut self) -> Option<PlannerNotification> {
        None
    }
}
