#![doc = include_str!("README.md")]

// Each part of the member owns its state, and only its file changes it (the fields are private
// to the file; the other parts read through getters and ask for changes through methods):
// `apply.rs` (`Apply`: records, deliveries, fences and their rounds), `heartbeat.rs` (`Beat`),
// `election.rs` (`Election`), `degraded.rs` (`Degraded`), `identity.rs` (the claim,
// `Claimed`; `renewal.rs` keeps it through its methods, and sets or takes the member's
// `identity` slot). `leave.rs` and the rest only call into them (e.g. `Apply::close`,
// `Beat::carry`, `Claimed::hand_over`).
mod apply;
mod degraded;
mod election;
mod heartbeat;
mod identity;
mod internals;
mod leave;
mod relay;
mod renewal;
mod rewatch;
mod target;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::config::ValidConfig;
use crate::machine::{IdGen, IoEvent, OpId, TimerTable, later};
use crate::planner::Planner;
use crate::records::Names;
use crate::rng::SplitMix64;
use crate::strategy::AssignmentStrategy;
use crate::types::{InstanceId, Partition, Term, Version, WorkerId, WorkerState};

pub use types::{
    Action, AlertLevel, DegradedReason, DeliveryId, Event, MemberError, MemberInit, NotLeader,
    Notification, RetryCounts,
};

use apply::Apply;
use degraded::Degraded;
use election::Election;
use heartbeat::Beat;
use identity::{Claim, Claimed};
use relay::Relay;

/// Every deadline of a member (one table, STYLE.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    StartupDeadline,
    ClaimRetry,
    RenewId,
    IdentityLapse,
    Heartbeat,
    Fence,
    Candidate,
    RenewLeader,
    LeaseEnd,
    TermRetry,
    Handler,
    DegradedEnter,
    DegradedExit,
    Alert,
    LeaveDeadline,
    /// Reopen the assignment watch after it ended.
    RewatchAssignments,
    /// Reopen the leader watch after it ended.
    RewatchLeader,
}

/// What a member's own operation was for; the answer is routed by it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    ListIds,
    ReadPreferred {
        number: u32,
    },
    CreateId {
        number: u32,
        claimed_at_ms: u64,
        sent_at: Instant,
    },
    ReadIdAfterCreate {
        number: u32,
        sent_at: Instant,
    },
    TakeoverId {
        number: u32,
        claimed_at_ms: u64,
        sent_at: Instant,
    },
    RenewId {
        sent_at: Instant,
    },
    ReadIdAfterRenew,
    Heartbeat {
        sent_at: Instant,
    },
    CreateLeader {
        sent_at: Instant,
    },
    ReadLeader {
        sent_at: Instant,
    },
    WriteLeader {
        sent_at: Instant,
        term: Term,
    },
    ReadTerm,
    WriteTerm {
        term: Term,
    },
    ReadOwnRecord {
        purpose: ReadPurpose,
    },
    RestartClaim,
    ReleaseHeartbeat,
    ReleaseLeader,
    ReleaseId,
    DropLeader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadPurpose {
    /// The fresh read of a fence round (rounds restart when the fence condition recurs).
    Unfence(u64),
    DegradedExit,
}

/// Where the member is in its life; the reported [`WorkerState`] is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Init,
    Claiming,
    Member,
    Leaving,
    Releasing,
    Restarting,
    Stopped,
}

/// The member state machine. See the [module documentation](self) for the state table and the
/// choices made where the protocol is silent.
///
/// **Call order.** Feed one input (`handle_event`, `handle_timeout` or a command), then drain
/// [`Member::poll_action`] until `None` (executing each action in order), then
/// [`Member::poll_notification`] until `None`, then wait for the next input or
/// [`Member::poll_timeout`]. `now` never goes backwards. The whole driver contract (ids,
/// actions, events, the store's guarantees) is in the [module documentation](self).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use parti_core::machine::IoAction;
/// use parti_core::member::{Action, Member, MemberInit, Notification};
/// use parti_core::strategy::AssignmentStrategy;
/// use parti_core::{Config, InstanceId};
///
/// fn begin(strategy: Arc<dyn AssignmentStrategy>, now: Instant) -> Member {
///     let config = Config::default().validate().expect("the defaults are valid");
///     let init = MemberInit {
///         instance: InstanceId(0x5eed),
///         seed: 1,
///         wall_epoch_ms: 1_700_000_000_000,
///         partitions: Vec::new().into(),
///     };
///     let mut member = Member::new(config, strategy, init, now);
///     member.start(now);
///     while let Some(action) = member.poll_action() {
///         match action {
///             Action::Io(IoAction::Kv { op, request }) => {
///                 // Run `request` on the store; feed the result back as
///                 // `Event::Io(IoEvent::KvDone { op, result })`.
///                 let _ = (op, request);
///             }
///             Action::Io(IoAction::Watch { watch, bucket, keys }) => {
///                 // Open the watch; feed every item as `IoEvent::Watch { watch, .. }`, and
///                 // `IoEvent::WatchEnded { watch, .. }` once if it ends or cannot be opened.
///                 let _ = (watch, bucket, keys);
///             }
///             Action::Io(IoAction::Unwatch { watch }) => {
///                 // Close it; report nothing more for `watch`.
///                 let _ = watch;
///             }
///             Action::Deliver { delivery, revoked, assigned } => {
///                 // On the handler task: on_revoked(revoked), on_assigned(assigned), then
///                 // feed `Event::Delivered { delivery }`.
///                 let _ = (delivery, revoked, assigned);
///             }
///             // `Action` and `IoAction` are non-exhaustive: a variant added in a later
///             // version is ignored by a driver written before it.
///             _ => {}
///         }
///     }
///     while let Some(note) = member.poll_notification() {
///         let _: Notification = note;
///     }
///     member
/// }
/// ```
#[derive(Debug)]
pub struct Member {
    config: ValidConfig,
    names: Names,
    instance: InstanceId,
    epoch: Instant,
    wall_epoch_ms: u64,
    strategy: Arc<dyn AssignmentStrategy>,
    partitions: Arc<[Partition]>,
    rng: SplitMix64,
    ids: IdGen,
    timers: TimerTable<Timer>,
    ops: BTreeMap<OpId, Op>,
    actions: VecDeque<Action>,
    notifications: VecDeque<Notification>,
    phase: Phase,
    reported: WorkerState,
    ready: bool,
    claim: Claim,
    identity: Option<Claimed>,
    beat: Beat,
    election: Election,
    planner: Option<Planner>,
    relay: Relay,
    apply: Apply,
    degraded: Degraded,
    release_leader: Option<crate::types::Revision>,
    /// Retries so far; `publication` counts the planners already dropped (see `retries()`).
    retries: RetryCounts,
    /// Backoff before a member watch that ended is opened again.
    watch_backoff: crate::machine::Backoff,
    decode_errors: u64,
    undecodable_notified: BTreeSet<(String, String)>,
}

impl Member {
    /// A member in state `Init`. Nothing happens until [`Member::start`].
    #[must_use]
    pub fn new(
        config: ValidConfig,
        strategy: Arc<dyn AssignmentStrategy>,
        init: MemberInit,
        now: Instant,
    ) -> Self {
        let mut rng = SplitMix64::new(init.seed);
        let names = config.names();
        let claim = Claim::new(&config, rng.next_u64(), now);
        let beat = Beat::new();
        let election = Election::new(&config, rng.next_u64());
        let degraded = Degraded::new();
        Member {
            names,
            instance: init.instance,
            epoch: now,
            wall_epoch_ms: init.wall_epoch_ms,
            strategy,
            partitions: init.partitions,
            rng,
            ids: IdGen::member(),
            timers: TimerTable::new(),
            ops: BTreeMap::new(),
            actions: VecDeque::new(),
            notifications: VecDeque::new(),
            phase: Phase::Init,
            reported: WorkerState::Init,
            ready: false,
            claim,
            identity: None,
            beat,
            election,
            planner: None,
            relay: Relay::default(),
            apply: Apply::new(),
            degraded,
            release_leader: None,
            retries: RetryCounts::default(),
            // Its own generator: reopening a watch leaves every other random choice alone.
            watch_backoff: crate::machine::Backoff::new(
                config.retry.clone(),
                init.seed ^ 0x5741_5443_4845_5321,
            ),
            decode_errors: 0,
            undecodable_notified: BTreeSet::new(),
            config,
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// The lifecycle state (see the state table in the [module documentation](self)).
    #[must_use]
    pub fn state(&self) -> WorkerState {
        self.reported
    }

    /// The claimed worker id, if one is held.
    #[must_use]
    pub fn worker_id(&self) -> Option<&WorkerId> {
        self.identity.as_ref().map(|c| c.id())
    }

    /// This process's instance id.
    #[must_use]
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// Whether this member leads now: it holds the leader key within its local lease, has taken
    /// a term and runs a planner.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.planner.is_some()
    }

    /// The embedded planner, read-only, while this member leads (for a status view and
    /// metrics: [`Planner::state`], [`Planner::version`], [`Planner::live_workers`],
    /// [`Planner::unowned`], …). Commands go through the member.
    #[must_use]
    pub fn planner(&self) -> Option<&Planner> {
        self.planner.as_ref()
    }

    /// The worker the leader key named when this member last saw it (its own id while it
    /// leads); `None` when unknown: no id held yet, the key absent or undecodable, or its
    /// watch just (re)started. It may be stale: the key's expiry is silent, so a leader that
    /// crashed is still named until another one writes the key.
    #[must_use]
    pub fn leader(&self) -> Option<WorkerId> {
        self.election.leader().cloned()
    }

    /// How often this member's retry loops retried so far (claims, election, its planners'
    /// publications, other) and how many gave up; for metrics.
    #[must_use]
    pub fn retries(&self) -> RetryCounts {
        let mut r = self.retries;
        if let Some(p) = &self.planner {
            r.publication += p.retries();
            r.other += p.rewatches();
        }
        r
    }

    /// The term this member leads, when it leads.
    #[must_use]
    pub fn term(&self) -> Option<Term> {
        self.planner.as_ref().map(Planner::term)
    }

    /// The highest term seen in the assignments stream (the term records must carry).
    #[must_use]
    pub fn known_term(&self) -> Option<Term> {
        self.apply.stream_term()
    }

    /// What the application has been told it owns (including a delivery still running), with
    /// fences, in partition order.
    #[must_use]
    pub fn owned(&self) -> Vec<crate::records::OwnedPartition> {
        self.apply.told()
    }

    /// How many times this process has fenced itself (its heartbeats carry it; the leader
    /// addresses records to this round, see [`AssignmentRecord::round`](crate::records::AssignmentRecord::round)).
    #[must_use]
    pub fn fence_round(&self) -> u32 {
        u32::try_from(self.apply.fence_rounds()).unwrap_or(u32::MAX)
    }

    /// The highest assignment version applied and acknowledged.
    #[must_use]
    pub fn applied_version(&self) -> Version {
        self.apply.applied()
    }

    /// Whether the member is in degraded mode.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.degraded.is_on()
    }

    /// Whether the member has revoked everything locally and waits to be granted again.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.apply.is_fenced()
    }

    /// Values that did not decode so far (each treated as absent).
    #[must_use]
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Whether the member has stopped for good (nothing more will happen).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Starts the member (`Init` → `ClaimingID`); call once, after the buckets are provisioned.
    pub fn start(&mut self, now: Instant) {
        if self.phase != Phase::Init {
            return;
        }
        self.timers.set(
            Timer::StartupDeadline,
            later(now, self.config.startup_timeout),
        );
        self.begin_claim(now);
        self.settle(now);
    }

    /// Feeds one input stamped with its receive time.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        self.check_lease(now);
        match event {
            Event::Io(IoEvent::KvDone { op, result }) => {
                if op.is_planner() {
                    self.count_kv_result(now, &result);
                    if let Some(op) = self.relay.op_in(op)
                        && let Some(p) = self.planner.as_mut()
                    {
                        p.handle_event(now, IoEvent::KvDone { op, result });
                    }
                } else if let Some(kind) = self.ops.remove(&op) {
                    self.count_kv_result(now, &result);
                    self.on_kv_done(now, kind, result);
                }
            }
            Event::Io(IoEvent::Watch { watch, event }) => {
                if watch.is_planner() {
                    if let Some(watch) = self.relay.watch_in(watch)
                        && let Some(p) = self.planner.as_mut()
                    {
                        p.handle_event(now, IoEvent::Watch { watch, event });
                    }
                } else if Some(watch) == self.apply.watch() {
                    self.on_assignment_watch(now, event);
                } else if Some(watch) == self.election.watch() {
                    self.on_leader_watch(now, event);
                }
            }
            Event::Io(IoEvent::WatchEnded { watch, error }) => {
                self.on_watch_ended(now, watch, error);
            }
            Event::Delivered { delivery } => self.on_delivered(now, delivery, false),
            Event::Connection(state) => self.on_connection(now, state),
        }
        self.settle(now);
    }

    /// Acts on every deadline due at `now`; a call with nothing due does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_lease(now);
        for timer in self.timers.expired(now) {
            self.on_timer(now, timer);
        }
        if let Some(p) = self.planner.as_mut()
            && p.poll_timeout().is_some_and(|t| t <= now)
        {
            p.handle_timeout(now);
        }
        self.settle(now);
    }

    /// Replaces the partition catalog; forwarded to the planner when leading.
    pub fn set_partitions(&mut self, now: Instant, partitions: impl Into<Arc<[Partition]>>) {
        self.check_lease(now);
        self.partitions = partitions.into();
        if let Some(p) = self.planner.as_mut() {
            p.set_partitions(now, self.partitions.to_vec());
        }
        self.settle(now);
    }

    /// Asks the planner to replan now with the current members, ignoring the cooldown and any
    /// window (an operator's request). During the planner's takeover the request is honoured
    /// when the takeover ends.
    ///
    /// # Errors
    ///
    /// [`NotLeader`], naming the leader this member last saw (if any and not itself), when it
    /// does not lead now (the lease is checked first). Nothing happens then.
    pub fn trigger_rebalance(&mut self, now: Instant) -> Result<(), NotLeader> {
        self.check_lease(now);
        let result = match self.planner.as_mut() {
            Some(p) => p.trigger_rebalance(now),
            None => Err(NotLeader {
                leader: self.leader().filter(|l| Some(l) != self.worker_id()),
            }),
        };
        self.settle(now);
        result
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next action to execute.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next notification for the application.
    #[must_use]
    pub fn poll_notification(&mut self) -> Option<Notification> {
        self.notifications.pop_front()
    }

    /// When to call [`Member::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mine = self.timers.next();
        let planner = self.planner.as_ref().and_then(Planner::poll_timeout);
        match (mine, planner) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
