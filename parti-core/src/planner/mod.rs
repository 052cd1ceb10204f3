//! The `Planner`: what the leader runs (PROTOCOL.md §4 leader side, §5–7).
//!
//! The member that wins the election takes the next term (compare-and-set on the `term` key),
//! then builds a `Planner` for that term. The planner owns everything about the assignments
//! bucket and the liveness of workers: it watches heartbeats, reads `meta` and the `w.<id>`
//! records on takeover, classifies changes, calls the strategy, and publishes with revoke →
//! acknowledge → grant. When the member's lease lapses (or it leaves), the member calls
//! [`Planner::stop`]; from then on the planner emits nothing but the `Unwatch` of its watches.
//!
//! # Event → machine → action
//!
//! ```text
//!  heartbeats watch ──Watch(hb put)──▶ liveness: seen[w] = now, own echo, intents, acks
//!  `term` watch ─────Watch(term)─────▶ higher term? ──▶ stop + SteppedDown
//!  KvDone(read/write) ───────────────▶ slots: record, revision, in flight, unknown outcome
//!  handle_timeout(now) ──────────────▶ deaths · window end · retry · stall · rejoin end
//!  commands (set_partitions, trigger_rebalance, set_degraded, stop)
//!                                      │
//!                              classify (§6): cold start · joins → window · crash/leave →
//!                              urgent replan · catalog → coverage · weights → imbalance?
//!                                      │ target (desired plan)
//!                              reconcile (§7): per worker keep ∪ grantable additions;
//!                              one wave = one version, every write in flight together
//!                                      │
//!  poll_action ◀── Kv{Update/Create w.<id>, meta, Entry re-reads} · Watch · Unwatch
//!  poll_notification ◀── TakeoverComplete · StateChanged · PlanStarted · Published ·
//!                         WorkerDead · HandoffStalled · SteppedDown · Undecodable · …
//!  poll_timeout ◀── earliest deadline of the timer table
//! ```
//!
//! # Call order
//!
//! As every parti machine: feed inputs with `handle_*` and commands, then drain
//! [`Planner::poll_action`] until `None`, [`Planner::poll_notification`] until `None`, and sleep
//! until [`Planner::poll_timeout`]. `now` never goes backwards across calls. Every id it issues
//! has the planner bit set ([`OpId::is_planner`](crate::machine::OpId::is_planner)); the member
//! forwards events carrying such ids here. Results of actions issued before [`Planner::stop`]
//! are ignored after it.
//!
//! # States
//!
//! | state | meaning | left when |
//! |---|---|---|
//! | `Loading` | takeover: watches opened, `meta` and every `w.*` being read | all read (→ `Idle` / `Scaling` / `Rebalancing`) |
//! | `Idle` | published plan = desired plan; nothing pending | a change is classified |
//! | `Scaling` | a window (cold start or planned scale) is collecting joins | window end (→ `Rebalancing`), crash/leave (→ `Emergency` / `Rebalancing`) |
//! | `Rebalancing` | a plan is being published (waves, acknowledgements, retries) | every record and `meta` written (→ `Idle`, `Published`) |
//! | `Emergency` | a crash (or an expired restart reservation) is being repaired | published (→ `Idle`) |
//! | `Stopped` | lease lapsed, stepped down or told to stop; terminal | never |
//!
//! A change of state is one [`PlannerNotification::StateChanged`]; "changing" to the current
//! state emits nothing.
//!
//! # Choices where PROTOCOL.md is silent
//!
//! - **One version per wave.** A wave is every write that can be made now; its records share one
//!   new version. A record that only takes partitions away is `Revoke`, one that gives any is
//!   `Grant`. Partitions that are free (new, or held by nobody who may still hold them) are
//!   granted in the first wave together with the revocations; moved partitions in the wave
//!   after the acknowledgements.
//! - **Dead workers' records are reduced before their partitions go elsewhere** (write
//!   completion, no acknowledgement): a worker that comes back applies the newest record, and
//!   the old one must not be it. This costs one round trip on a crash and closes a window where
//!   a returning worker could apply its stale record.
//! - **Unknown holdings after takeover.** A worker whose record is not acknowledged at takeover
//!   (or is undecodable, or was written by an older leader after the term bump — the member
//!   ignores such a record) may hold anything: nothing is granted to others until it
//!   acknowledges a record of ours or dies. Such records are rewritten under our term.
//! - **Timed-out writes** are remembered until the key moves past the revision they were based
//!   on (they can only land on it), and count as held meanwhile.
//! - **Heartbeat deletes** carry no liveness information (a leaver deletes its heartbeat after
//!   its record is empty; expiry is silent or a marker): only stamps decide.
//! - **Cooldown** is measured from the last full replan (planned, urgent or manual); coverage of
//!   new partitions and re-grants move nothing and do not count.
//! - **Graceful leave and manual rebalance** replan at once with the current eligible set and
//!   cut a running window short, as an emergency does; an urgent plan during the cold-start
//!   window is the final plan (`Settled`).
//! - **Members without partitions** get an empty record, so they know they were seen.
//! - **Restart return** (same id, new process) publishes nothing: the record still gives it its
//!   partitions with their fences, and the new process applies it.
//! - **`meta`** is written when a plan is fully published, or when a handoff stalls, and only
//!   if something other than the term differs.
//! - **Weights**: imbalance = heaviest `load / capacity` over the mean − 1.

mod liveness;
mod plan;
mod publish;
mod slots;
mod takeover;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::assignment::Assignment;
use crate::config::ValidConfig;
use crate::machine::{Backoff, IdGen, IoAction, IoEvent, TimerTable, WatchId};
use crate::records::{DecodeError, Lifecycle};
use crate::store::{KvError, WatchEvent};
use crate::strategy::{AssignmentStrategy, StrategyError};
use crate::types::{InstanceId, Partition, PartitionId, Term, Version, WorkerId};

use liveness::Liveness;
use plan::Window;
use publish::Batch;
use slots::Slot;
use takeover::Loading;

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

/// The planner's state (see the table in the [module documentation](self)).
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
    /// Partitions were added to the catalog (placed without moving anything).
    Catalog,
    /// Weights changed and the imbalance exceeds `min_imbalance`.
    Weights,
    /// An operator asked ([`Planner::trigger_rebalance`]).
    Manual,
    /// A fenced member is given its partitions back.
    Regrant,
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
    /// A watch reported an error (the driver keeps or re-opens it).
    WatchFailed {
        /// Bucket of the watch.
        bucket: String,
        /// The error.
        error: KvError,
    },
}

/// Test-only fault injection: deliberately broken planner behaviour, so that the simulator
/// (parti-testkit) can prove it finds the bugs these switches re-introduce. Never set outside
/// tests. Installed per thread with [`PlannerFaults::install`]; read once by [`Planner::new`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlannerFaults {
    /// Grant a moved partition as soon as the old owner's reduced record is written, without
    /// waiting for its acknowledgement (breaks PROTOCOL.md §7 step 2).
    pub grant_before_ack: bool,
    /// Judge liveness by `now` instead of `observed_now` (drops the observation-channel gating
    /// of PROTOCOL.md §5).
    pub no_observation_gating: bool,
}

thread_local! {
    static FAULTS: std::cell::Cell<PlannerFaults> = const {
        std::cell::Cell::new(PlannerFaults {
            grant_before_ack: false,
            no_observation_gating: false,
        })
    };
}

impl PlannerFaults {
    /// Planners created on this thread get `faults` until the guard is dropped.
    #[must_use]
    pub fn install(faults: PlannerFaults) -> PlannerFaultsGuard {
        PlannerFaultsGuard {
            previous: FAULTS.with(|f| f.replace(faults)),
        }
    }

    fn current() -> PlannerFaults {
        FAULTS.with(std::cell::Cell::get)
    }
}

/// Restores the previous [`PlannerFaults`] when dropped.
#[doc(hidden)]
#[derive(Debug)]
pub struct PlannerFaultsGuard {
    previous: PlannerFaults,
}

impl Drop for PlannerFaultsGuard {
    fn drop(&mut self) {
        FAULTS.with(|f| f.set(self.previous));
    }
}

/// Deadlines of the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    /// A worker may die, the recovery grace ends, or a restart reservation ends.
    Liveness,
    /// The window (or the cooldown after it) ends.
    Window,
    /// Backoff before retrying failed operations.
    Retry,
    /// A revocation reaches `revoke_timeout`.
    Stall,
}

enum Stage {
    Loading(Box<Loading>),
    Running,
    Stopped,
}

/// The leader's planning machine. See the [module documentation](self).
pub struct Planner {
    config: ValidConfig,
    strategy: Box<dyn AssignmentStrategy>,
    me: WorkerId,
    term: Term,
    hb_bucket: String,
    as_bucket: String,
    catalog: BTreeMap<PartitionId, Partition>,
    ids: IdGen,
    stage: Stage,
    hb_watch: WatchId,
    term_watch: WatchId,
    live: Liveness,
    slots: BTreeMap<WorkerId, Slot>,
    /// The desired plan.
    target: Assignment,
    /// The members the desired plan was made for (`meta.members`).
    planned: BTreeSet<WorkerId>,
    lifecycle: Lifecycle,
    /// The highest version seen or issued.
    version: Version,
    window: Option<Window>,
    last_replan: Option<Instant>,
    /// The plan being published, if any.
    current: Option<PlanReason>,
    batch: Option<Batch>,
    backoff: Backoff,
    timers: TimerTable<Timer>,
    meta: publish::MetaSlot,
    /// Digest of the catalog the plan was made for.
    planned_digest: u64,
    actions: VecDeque<IoAction>,
    notes: VecDeque<PlannerNotification>,
    state: PlannerState,
    decode_errors: u64,
    watch_errors: u64,
    reported: BTreeSet<(String, String)>,
    faults: PlannerFaults,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("me", &self.me)
            .field("term", &self.term)
            .field("state", &self.state)
            .field("version", &self.version)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner for `init.term`. Opens its watches and starts the takeover reads at once (see
    /// [`Planner::poll_action`]).
    #[must_use]
    pub fn new(
        config: ValidConfig,
        strategy: Box<dyn AssignmentStrategy>,
        init: PlannerInit,
        now: Instant,
    ) -> Self {
        let names = config.names();
        let mut ids = IdGen::planner();
        let hb_watch = ids.watch();
        let term_watch = ids.watch();
        let faults = PlannerFaults::current();
        let mut live = Liveness::new(
            init.me.clone(),
            init.instance,
            now,
            config.heartbeat_interval,
            config.dead_after(),
            config.rejoin_window,
        );
        live.gating = !faults.no_observation_gating;
        let catalog: BTreeMap<PartitionId, Partition> = init
            .partitions
            .into_iter()
            .map(|p| (p.id().clone(), p))
            .collect();
        let backoff = Backoff::new(config.retry.clone(), init.seed);
        let mut p = Planner {
            strategy,
            me: init.me,
            term: init.term,
            hb_bucket: names.heartbeats_bucket(),
            as_bucket: names.assignments_bucket(),
            catalog,
            ids,
            stage: Stage::Running,
            hb_watch,
            term_watch,
            live,
            slots: BTreeMap::new(),
            target: Assignment::new(),
            planned: BTreeSet::new(),
            lifecycle: Lifecycle::ColdStart,
            version: Version::ZERO,
            window: None,
            last_replan: None,
            current: None,
            batch: None,
            backoff,
            timers: TimerTable::new(),
            meta: publish::MetaSlot::default(),
            planned_digest: 0,
            actions: VecDeque::new(),
            notes: VecDeque::new(),
            state: PlannerState::Loading,
            decode_errors: 0,
            watch_errors: 0,
            reported: BTreeSet::new(),
            faults,
            config,
        };
        p.start_takeover();
        p
    }

    /// The term this planner acts for.
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// Whether the planner has stopped (lease lapsed, stepped down, or told to stop).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        matches!(self.stage, Stage::Stopped)
    }

    /// The planner's state.
    #[must_use]
    pub fn state(&self) -> PlannerState {
        self.state
    }

    /// Cold start or settled.
    #[must_use]
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The highest version seen or issued.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The desired plan (what is being, or has been, published).
    #[must_use]
    pub fn current(&self) -> &Assignment {
        &self.target
    }

    /// Workers not declared dead, sorted.
    #[must_use]
    pub fn live_members(&self) -> Vec<WorkerId> {
        self.live
            .workers()
            .filter(|(_, i)| !i.dead)
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// The members the desired plan was made for (what `meta.members` says), sorted.
    #[must_use]
    pub fn planned_members(&self) -> Vec<WorkerId> {
        self.planned.iter().cloned().collect()
    }

    /// Values that did not decode so far (`parti_decode_errors_total`).
    #[must_use]
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Watch errors so far.
    #[must_use]
    pub fn watch_errors(&self) -> u64 {
        self.watch_errors
    }

    /// Feeds the result of one of the planner's actions, stamped with its receive time `now`.
    pub fn handle_event(&mut self, now: Instant, event: IoEvent) {
        if self.is_stopped() {
            return;
        }
        match event {
            IoEvent::KvDone { op, result } => {
                if matches!(self.stage, Stage::Loading(_)) {
                    self.loading_kv_done(now, op, result);
                } else {
                    self.batch_done(now, op, result);
                }
            }
            IoEvent::Watch { watch, event } => match event {
                Ok(ev) => {
                    if watch == self.hb_watch {
                        self.on_heartbeat_event(now, ev);
                    } else if watch == self.term_watch {
                        self.on_term_event(now, ev);
                    }
                }
                Err(error) => {
                    self.watch_errors += 1;
                    let bucket = if watch == self.hb_watch {
                        self.hb_bucket.clone()
                    } else {
                        self.as_bucket.clone()
                    };
                    self.notes
                        .push_back(PlannerNotification::WatchFailed { bucket, error });
                }
            },
        }
        self.step(now);
    }

    /// Acts on every deadline due at `now`. A spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_stopped() {
            return;
        }
        let _due = self.timers.expired(now);
        self.step(now);
    }

    /// Replaces the partition catalog: new partitions are placed at once (nothing moves),
    /// removed ones revoked at once, a weight-only change replans only above `min_imbalance`.
    pub fn set_partitions(&mut self, now: Instant, partitions: Vec<Partition>) {
        if self.is_stopped() {
            return;
        }
        let catalog: BTreeMap<PartitionId, Partition> = partitions
            .into_iter()
            .map(|p| (p.id().clone(), p))
            .collect();
        let old = std::mem::replace(&mut self.catalog, catalog);
        if matches!(self.stage, Stage::Running) {
            self.apply_catalog_change(now, &old);
        }
        self.step(now);
    }

    /// Replans now with the current members, ignoring the cooldown and any window (an
    /// operator's request).
    pub fn trigger_rebalance(&mut self, now: Instant) {
        if !matches!(self.stage, Stage::Running) {
            return;
        }
        self.replan(now, PlanReason::Manual);
        self.step(now);
    }

    /// Tells the planner whether its member is degraded: while it is, and for
    /// `degraded.recovery_grace` after, no worker is declared dead.
    pub fn set_degraded(&mut self, now: Instant, degraded: bool) {
        if self.is_stopped() {
            return;
        }
        self.live
            .set_degraded(now, degraded, self.config.degraded.recovery_grace);
        self.step(now);
    }

    /// Stops for good: the lease lapsed or the member leaves. Abandons every in-flight
    /// publication; from now on only the `Unwatch` of the planner's watches is emitted.
    pub fn stop(&mut self, _now: Instant) {
        if self.is_stopped() {
            return;
        }
        self.stage = Stage::Stopped;
        self.actions.clear();
        self.batch = None;
        self.timers.clear();
        self.actions.push_back(IoAction::Unwatch {
            watch: self.hb_watch,
        });
        self.actions.push_back(IoAction::Unwatch {
            watch: self.term_watch,
        });
        self.set_state(PlannerState::Stopped);
    }

    /// The next I/O to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<IoAction> {
        self.actions.pop_front()
    }

    /// When to call [`Planner::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next notification.
    #[must_use]
    pub fn poll_notification(&mut self) -> Option<PlannerNotification> {
        self.notes.pop_front()
    }

    // ---- internals shared by the submodules ----

    fn set_state(&mut self, to: PlannerState) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.notes
                .push_back(PlannerNotification::StateChanged { from, to });
        }
    }

    fn step_down(&mut self, now: Instant, term: Term) {
        self.notes
            .push_back(PlannerNotification::SteppedDown { term });
        self.stop(now);
    }

    fn report_undecodable(&mut self, bucket: &str, key: &str, error: DecodeError) {
        self.decode_errors += 1;
        if self.reported.insert((bucket.to_owned(), key.to_owned())) {
            self.notes.push_back(PlannerNotification::Undecodable {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                error,
            });
        }
    }

    fn on_term_event(&mut self, now: Instant, ev: WatchEvent) {
        use crate::records::{Record, TermCounter};
        use crate::store::KvOperation;
        match ev {
            WatchEvent::Change(c) => {
                if let KvOperation::Put(bytes) = &c.op {
                    match TermCounter::decode(bytes) {
                        Ok(t) if t.term > self.term => self.step_down(now, t.term),
                        Ok(t) if t.term == self.term => {
                            if let Stage::Loading(l) = &mut self.stage {
                                l.term_rev = Some(c.revision);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let b = self.as_bucket.clone();
                            self.report_undecodable(&b, &c.key, e);
                        }
                    }
                }
            }
            WatchEvent::SnapshotComplete => {
                if let Stage::Loading(l) = &mut self.stage {
                    l.term_snapshot = true;
                }
            }
            _ => {}
        }
    }

    fn on_heartbeat_event(&mut self, now: Instant, ev: WatchEvent) {
        use crate::records::{Heartbeat, Intent, Record};
        use crate::store::KvOperation;
        match ev {
            WatchEvent::Change(c) => {
                let KvOperation::Put(bytes) = &c.op else {
                    return; // deletes carry no liveness information (module docs)
                };
                let Ok(worker) = WorkerId::new(&c.key) else {
                    return;
                };
                let hb = match Heartbeat::decode(bytes) {
                    Ok(hb) => hb,
                    Err(e) => {
                        let b = self.hb_bucket.clone();
                        self.report_undecodable(&b, &c.key, e);
                        return;
                    }
                };
                let seen = self.live.observe(now, &worker, &hb);
                if matches!(self.stage, Stage::Loading(_)) {
                    return;
                }
                let slot = self.slots.entry(worker).or_insert_with(Slot::empty);
                if seen.revived || seen.new_instance || hb.intent == Intent::Fenced {
                    slot.on_fresh_member();
                }
                if hb.intent != Intent::Fenced {
                    slot.regranted = false;
                }
                slot.on_applied(hb.applied);
                if hb.applied > self.version {
                    self.version = hb.applied;
                }
            }
            WatchEvent::SnapshotComplete => {
                if let Stage::Loading(l) = &mut self.stage {
                    l.hb_snapshot = true;
                }
            }
            _ => {}
        }
    }

    /// Everything that follows an input: liveness, classification, publication, timers.
    fn step(&mut self, now: Instant) {
        if matches!(self.stage, Stage::Loading(_)) {
            self.loading_step(now);
        }
        if !matches!(self.stage, Stage::Running) {
            return;
        }
        for w in self.live.declare_deaths(now) {
            if let Some(s) = self.slots.get_mut(&w) {
                s.awaiting = None;
            }
            self.notes
                .push_back(PlannerNotification::WorkerDead { worker: w });
        }
        let _expired = self.live.expire_reservations(now);
        self.classify(now);
        self.reconcile(now);
        self.update_timers(now);
        self.update_state();
    }

    fn update_timers(&mut self, now: Instant) {
        match self.live.next_deadline(now) {
            Some(t) => self.timers.set(Timer::Liveness, t),
            None => self.timers.stop(Timer::Liveness),
        }
        match self.window_due() {
            Some(t) => self.timers.set(Timer::Window, t),
            None => self.timers.stop(Timer::Window),
        }
        let stall = self
            .slots
            .values()
            .filter_map(|s| s.awaiting.as_ref())
            .filter(|a| !a.reported)
            .map(|a| a.since + self.config.revoke_timeout)
            .min();
        match stall {
            Some(t) => self.timers.set(Timer::Stall, t.max(now)),
            None => self.timers.stop(Timer::Stall),
        }
    }

    fn update_state(&mut self) {
        let s = match (&self.current, &self.window) {
            (Some(PlanReason::Emergency), _) => PlannerState::Emergency,
            (Some(_), _) => PlannerState::Rebalancing,
            (None, Some(_)) => PlannerState::Scaling,
            (None, None) => PlannerState::Idle,
        };
        self.set_state(s);
    }
}
