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
//!  heartbeats watch ──Watch(hb put)──▶ liveness: seen[w] (observed clock), own echo,
//!                                      intents, capacities, acknowledgements (`applied`)
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
//! # For the member that embeds it
//!
//! Forward every [`IoEvent`] whose op or watch id has the planner bit; call
//! [`Planner::handle_timeout`] at [`Planner::poll_timeout`]; call [`Planner::stop`] at the local
//! lease end or before leaving, [`Planner::set_degraded`] on entering and leaving degraded
//! mode, [`Planner::set_partitions`] when the catalog changes. The planner opens its own two
//! watches (`{ns}-heartbeats` prefix `""`, `{ns}-assignments` key `term`); the member's own
//! heartbeat must reach it through that watch (it is the echo that gates liveness), and
//! [`Planner::heartbeat_sent`] must be called with the `seq` of every heartbeat it sends (the
//! echo counts at its send time). Getters for
//! state and metrics: [`Planner::state`], [`Planner::lifecycle`], [`Planner::version`],
//! [`Planner::current`], [`Planner::live_workers`], [`Planner::planned_members`],
//! [`Planner::partitions`], [`Planner::unowned`], [`Planner::decode_errors`],
//! [`Planner::watch_errors`], [`Planner::retries`] (a member exposes its planner read-only
//! through [`Member::planner`](crate::member::Member::planner)). A leader that leaves can delete the leader key once the state is
//! `Idle` after its own `intent = Leaving` was published (its record is empty).
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
//!   acknowledges a record of ours or dies. Such records are rewritten under our term, and
//!   every partition they keep gets a new fence: the member may never have applied the
//!   record, and its fences may be below those of an owner since (a deposed leader's grant
//!   that landed late).
//! - **Late writes of an older leader** can land on a key we have not written since the
//!   takeover (compare-and-set on the revision it was based on). A running member refuses
//!   such a record and keeps what it has; a process that starts afresh (new instance,
//!   revived, fenced) acts on what the store holds now, so its heartbeat makes us read its key
//!   again, and a record of an older term that changed since we last knew the key is
//!   rewritten under our term (with a version above it: versions only grow). So is an
//!   unchanged one that the process has not acknowledged if more than one bump separates its
//!   term from ours: a new process refuses it in its snapshot, and would wait for ever.
//! - **Timeouts are unknown outcomes**: a timed-out or conflicting write is re-read (after the
//!   backoff) before anything else is written to that key; a record of our term found there is
//!   adopted, one of a higher term makes the planner step down.
//! - **Timed-out writes** are remembered until the key moves past the revision they were based
//!   on (they can only land on it), and count as held meanwhile.
//! - **Frozen observation time stays frozen**: liveness runs on an observed clock that stops
//!   while the leader's own echo is stale and resumes where it stopped (see `liveness`), so
//!   the backlog of a stalled watch never declares everyone dead in the moment the leader's
//!   echo arrives before the others' heartbeats.
//! - **Channel time**: the echo counts at its *send* time (the heartbeats bucket is one
//!   revision-ordered stream: everything stored before it has been delivered), not at its
//!   receive time, so delivery lag and batching move nothing; and deaths are declared only
//!   while the channel is current (the newest echo was sent at most one `heartbeat_interval`
//!   ago). A lagging watch shows only the past: a worker silent up to its position may have
//!   heartbeated since. While it lags by more than an interval nobody is declared dead.
//! - **Dead means fenced**: besides `observed_now - seen >= heartbeat_ttl + emergency_grace`,
//!   a worker is declared dead only once the leader's own echo (observed clock) came at least
//!   `heartbeat_ttl - fence_margin` after the worker's last delivered heartbeat. Gating lets
//!   observed time run one interval past the last echo, while a heartbeat stored after it may
//!   still be stuck in the watch; with `emergency_grace + fence_margin < heartbeat_interval`
//!   (zero grace is allowed) the formula alone could declare dead a member that has not fenced
//!   yet (see `liveness`). With the defaults the extra rule never binds.
//! - **Heartbeat deletes** carry no liveness information (a leaver deletes its heartbeat after
//!   its record is empty; expiry is silent or a marker): only stamps decide.
//! - **Cooldown** is measured from the last full replan (planned, urgent or manual); coverage of
//!   new partitions and re-grants move nothing and do not count.
//! - **Graceful leave and manual rebalance** replan at once with the current eligible set and
//!   cut a running window short, as an emergency does; an urgent plan during the cold-start
//!   window is the final plan (`Settled`).
//! - **Members without partitions get an empty record at once**, also a joiner during a window
//!   (one version each): a member waits for its first record before it counts as started, and
//!   a cold-start window may last up to 2 × 30 s, longer than the default `startup_timeout`.
//! - **Restart reservation = pinning.** A worker heartbeating `intent = Restarting` keeps its
//!   record, and its partitions are left out of every plan until `rejoin_window` ends (also
//!   after it is dead by liveness). If it is not back (a new process, or another intent) by
//!   then, it leaves the plan as a crash (`Emergency`); if it is still heartbeating, its
//!   partitions are revoked with acknowledgement like any live owner's. Running reservations
//!   are listed in `meta.restarting`, and a new leader reserves those members again for
//!   `rejoin_window` from its takeover (at most one extra window; monotonic clocks of two
//!   hosts cannot be compared).
//! - **Re-grant after `intent = Fenced`**: when a live member says `Fenced` and has applied its
//!   newest record, that record is rewritten with a new version and new fences for every
//!   partition; again at most once per `heartbeat_interval` if it stays fenced.
//! - **Owners outside the planned members**: a worker that got partitions by coverage (a
//!   joiner during a window) and disappears is handled like a member (urgent replan), so its
//!   partitions are never orphaned until a window ends.
//! - **Two records naming one partition** (inherited at takeover: a handoff cut short, a
//!   deposed leader's grant that landed late): the plan gives it to the acknowledged, newer
//!   `(term, version)` record's worker, but no record keeps it while another names it — it is
//!   taken away from both and granted again once free. An older-term record its member has
//!   not acknowledged is rewritten under our term (members refuse an older term that follows
//!   a newer one, and would otherwise never acknowledge).
//! - **Records are never deleted**: a departed worker keeps an empty record (the id pool is
//!   bounded), so a returning process learns it owns nothing.
//! - **`trigger_rebalance` during the takeover** is remembered and honoured when it ends.
//! - **Restart return** (same id, new process) moves nothing: one record is written, addressed
//!   to the new process, with the same partitions and new fences (`PlanReason::Rejoin`), and the
//!   new process applies it.
//! - **What a member may hold narrows only by acknowledgement.** A worker may hold its
//!   acknowledged record plus everything written to it since, until it acknowledges the newest
//!   one. A new process, a fenced or a revived member holds nothing when it says so, but that
//!   heartbeat is older than what we wrote meanwhile: the process may have applied the record
//!   it found at start (a restart return) or may still apply one from its backlog. So its
//!   partitions taken away meanwhile move only after it acknowledges the revoke (or dies).
//! - **`meta`** is written when a plan is fully published, when a handoff stalls, and when a
//!   restart reservation starts or ends — only if something other than the term differs.
//! - **Weights**: imbalance = heaviest `load / capacity` over the mean − 1.

mod catalog;
mod events;
mod holders;
mod liveness;
mod notify;
mod plan;
mod publish;
mod results;
mod slots;
mod takeover;
mod target;
mod watches;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::assignment::Assignment;
use crate::config::ValidConfig;
use crate::machine::{Backoff, IdGen, IoAction, IoEvent, TimerTable, WatchId};
use crate::member::NotLeader;
use crate::records::Lifecycle;
use crate::strategy::AssignmentStrategy;
use crate::types::{Partition, Term, Version, WorkerId};

use catalog::Catalog;
use holders::HolderIndex;
use liveness::Liveness;
use plan::Window;
use publish::Batch;
use publish::WaveMemo;
use slots::Slots;
use takeover::Loading;
use target::PlanTarget;

pub use notify::{PlanReason, PlannerInit, PlannerNotification, PlannerState};

use crate::machine::later;

/// Test-only fault injection: deliberately broken planner behaviour, so that the simulator
/// (parti-testkit) can prove it finds the bugs these switches re-introduce. Only with the
/// `fault-injection` cargo feature (which only parti-testkit enables): without it the planner
/// reads the all-off default and there is no way to switch a fault on. Installed per thread with
/// `PlannerFaults::install`; read once by [`Planner::new`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlannerFaults {
    /// Grant a moved partition as soon as the old owner's reduced record is written, without
    /// waiting for its acknowledgement (breaks PROTOCOL.md §7 step 2).
    pub grant_before_ack: bool,
    /// Judge liveness by `now` instead of `observed_now` (drops the observation-channel gating
    /// of PROTOCOL.md §5).
    pub no_observation_gating: bool,
    /// Keep what a record that must be rewritten gives (a deposed leader's late write, an
    /// unacknowledged older term's record) without checking it is free, as if the member had
    /// applied it (the bug the planner property found at 60,000 cases).
    pub keep_unapplied: bool,
}

#[cfg(feature = "fault-injection")]
thread_local! {
    static FAULTS: std::cell::Cell<PlannerFaults> = const {
        std::cell::Cell::new(PlannerFaults {
            grant_before_ack: false,
            no_observation_gating: false,
            keep_unapplied: false,
        })
    };
}

impl PlannerFaults {
    /// Planners created on this thread get `faults` until the guard is dropped.
    #[cfg(feature = "fault-injection")]
    #[must_use]
    pub fn install(faults: PlannerFaults) -> PlannerFaultsGuard {
        PlannerFaultsGuard {
            previous: FAULTS.with(|f| f.replace(faults)),
        }
    }

    #[cfg(feature = "fault-injection")]
    fn current() -> PlannerFaults {
        FAULTS.with(std::cell::Cell::get)
    }

    /// Without the `fault-injection` feature: always every fault off.
    #[cfg(not(feature = "fault-injection"))]
    fn current() -> PlannerFaults {
        PlannerFaults::default()
    }
}

/// Restores the previous [`PlannerFaults`] when dropped.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
#[derive(Debug)]
pub struct PlannerFaultsGuard {
    previous: PlannerFaults,
}

#[cfg(feature = "fault-injection")]
impl Drop for PlannerFaultsGuard {
    fn drop(&mut self) {
        FAULTS.with(|f| f.set(self.previous));
    }
}

/// Looks up keys in ascending order in a map iterated in ascending order: a whole pass costs
/// one merge, not one search per key.
pub(super) struct Seek<'a, V, I: Iterator<Item = (&'a WorkerId, V)>> {
    it: std::iter::Peekable<I>,
}

impl<'a, V, I: Iterator<Item = (&'a WorkerId, V)>> Seek<'a, V, I> {
    pub(super) fn new(it: I) -> Self {
        Seek { it: it.peekable() }
    }

    /// The value of `w`; keys must be asked in ascending order.
    pub(super) fn get(&mut self, w: &WorkerId) -> Option<V> {
        while self.it.next_if(|(k, _)| *k < w).is_some() {}
        self.it.next_if(|(k, _)| *k == w).map(|(_, v)| v)
    }
}

/// [`Planner::unowned`], counted at most once per heartbeat interval.
#[derive(Clone, Copy, Debug, Default)]
struct UnownedCount {
    count: usize,
    /// Something changed since the count.
    stale: bool,
    /// Not counted again before this.
    due: Option<Instant>,
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
    /// A rate-limited re-grant of a member that stays fenced is due.
    Regrant,
    /// A watch that ended is opened again.
    Rewatch,
}

enum Stage {
    Loading(Box<Loading>),
    Running,
    Stopped,
}

/// The leader's planning machine. See the [module documentation](self).
pub struct Planner {
    config: ValidConfig,
    strategy: Arc<dyn AssignmentStrategy>,
    me: WorkerId,
    term: Term,
    hb_bucket: String,
    as_bucket: String,
    /// Replaced only with `target.catalog_replaced()` (its coverage memo).
    catalog: Catalog,
    ids: IdGen,
    stage: Stage,
    hb_watch: WatchId,
    term_watch: WatchId,
    /// Whether each watch is open (not ended, not closed): only an open one is unwatched.
    hb_open: bool,
    term_open: bool,
    /// Backoff before a watch that ended is opened again.
    watch_backoff: Backoff,
    /// Watches opened again after they ended.
    rewatches: u64,
    live: Liveness,
    slots: Slots,
    /// Who may hold each partition, kept up to date from `slots` (see `holders`).
    holders: HolderIndex,
    /// What the last wave decided per worker (see `Planner::wave`).
    memo: WaveMemo,
    /// The desired plan.
    target: PlanTarget,
    /// `eligible(now)` while one step classifies and reconciles (liveness does not change
    /// inside it, and `planned = eligible` leaves it as it is): computed once, not per use.
    eligible_memo: Option<Arc<BTreeSet<WorkerId>>>,
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
    /// [`Planner::unowned`].
    unowned: UnownedCount,
    /// Digest of the catalog the plan was made for.
    planned_digest: u64,
    actions: VecDeque<IoAction>,
    notes: VecDeque<PlannerNotification>,
    state: PlannerState,
    decode_errors: u64,
    watch_errors: u64,
    /// Retries scheduled after failed operations (takeover reads, publication batches).
    retries: u64,
    /// Something may have changed since the last classification.
    dirty: bool,
    /// `trigger_rebalance` arrived during the takeover: honoured once it is done.
    manual_pending: bool,
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
        strategy: Arc<dyn AssignmentStrategy>,
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
            config.fence_after(),
            config.rejoin_window,
        );
        live.gating = !faults.no_observation_gating;
        let catalog = Catalog::new(init.partitions);
        let backoff = Backoff::new(config.retry.clone(), init.seed);
        // Its own generator, so that reopening a watch leaves the publication's jitter alone.
        let watch_backoff = Backoff::new(config.retry.clone(), init.seed ^ 0x5741_5443_4845_5321);
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
            hb_open: false,
            term_open: false,
            watch_backoff,
            rewatches: 0,
            live,
            eligible_memo: None,
            slots: Slots::default(),
            holders: HolderIndex::new(faults.grant_before_ack),
            memo: WaveMemo::new(),
            target: PlanTarget::default(),
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
            unowned: UnownedCount::default(),
            actions: VecDeque::new(),
            notes: VecDeque::new(),
            state: PlannerState::Loading,
            decode_errors: 0,
            watch_errors: 0,
            retries: 0,
            dirty: true,
            manual_pending: false,
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

    /// The planner's state (see the table in the [module documentation](self)).
    #[must_use]
    pub fn state(&self) -> PlannerState {
        self.state
    }

    /// Cold start or settled.
    #[must_use]
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The newest assignment version: the version of this leader's latest publication wave
    /// (a wave still in flight included), or the highest version found in the store or
    /// acknowledged by a member when it is higher. The next wave publishes a higher one.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The desired plan (what is being, or has been, published).
    #[must_use]
    pub fn current(&self) -> &Assignment {
        &self.target
    }

    /// Workers with a heartbeat (or expected from `meta` at takeover) that are not declared
    /// dead, sorted by id. Includes the leader itself and members on their way out.
    #[must_use]
    pub fn live_workers(&self) -> Vec<WorkerId> {
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

    /// How many partitions the catalog has (`parti_partitions`).
    #[must_use]
    pub fn partitions(&self) -> usize {
        self.catalog.len()
    }

    /// How many partitions of the catalog have no holder: no record in the store gives them
    /// to a live worker (`parti_unowned_partitions`). Zero in a settled cluster; during a
    /// handoff a moved partition counts until its grant is written.
    ///
    /// Counting reads every record (O(partitions)), so it is done at most once per
    /// `heartbeat_interval`, after a change, by the input that follows: the value is at most
    /// about one interval old. Reading it costs nothing (a driver may ask after every input).
    #[must_use]
    pub fn unowned(&self) -> usize {
        self.unowned.count
    }

    /// How many workers are live (heard, not declared dead): `live_workers().len()` without
    /// building the list.
    #[must_use]
    pub fn live_count(&self) -> usize {
        self.live.live_count()
    }

    /// Counts [`Planner::unowned`] again if a change is pending and the last count is at least
    /// one `heartbeat_interval` old.
    fn recount_unowned(&mut self, now: Instant) {
        if !self.unowned.stale || self.unowned.due.is_some_and(|d| now < d) {
            return;
        }
        // A flag per catalog entry, set by position: no set of 100,000 ids built and freed.
        let mut owned = vec![false; self.catalog.len()];
        let mut count = 0;
        for (w, s) in self.slots.iter() {
            if let Some(r) = &s.rec
                && self.live.is_alive(w)
            {
                for o in &r.partitions {
                    if let Some(seen) = self
                        .catalog
                        .position(o.partition.id())
                        .and_then(|i| owned.get_mut(i))
                        && !std::mem::replace(seen, true)
                    {
                        count += 1;
                    }
                }
            }
        }
        self.unowned = UnownedCount {
            count: self.catalog.len().saturating_sub(count),
            stale: false,
            due: Some(later(now, self.config.heartbeat_interval)),
        };
    }

    /// Values this planner could not decode so far, each treated as absent
    /// (`parti_decode_errors_total`; every one is also reported once per key as
    /// [`PlannerNotification::Undecodable`]).
    #[must_use]
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Errors its watches reported so far (each also a [`PlannerNotification::WatchFailed`]).
    #[must_use]
    pub fn watch_errors(&self) -> u64 {
        self.watch_errors
    }

    /// Retries scheduled so far after failed operations (takeover reads and publication
    /// batches, with the [`Backoff`] of `config.retry`). Counts only; a retry loop of the
    /// planner never gives up (it ends when the planner stops).
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Watches opened again after the driver reported them ended
    /// ([`IoEvent::WatchEnded`]).
    #[must_use]
    pub fn rewatches(&self) -> u64 {
        self.rewatches
    }

    /// Feeds the result of one of the planner's actions, stamped with its receive time `now`.
    pub fn handle_event(&mut self, now: Instant, event: IoEvent) {
        if self.is_stopped() {
            return;
        }
        if !matches!(&event, IoEvent::Watch { watch, event: Ok(_) } if *watch == self.hb_watch) {
            self.dirty = true;
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
            IoEvent::WatchEnded { watch, error } => self.on_watch_ended(now, watch, error),
        }
        self.step(now);
    }

    /// Acts on every deadline due at `now`. A spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_stopped() {
            return;
        }
        let expired = self.timers.expired(now);
        if expired.contains(&Timer::Rewatch) {
            self.reopen_watches();
        }
        if !expired.is_empty() {
            self.dirty = true;
        }
        self.step(now);
    }

    /// Replaces the partition catalog: new partitions are placed at once (nothing moves),
    /// removed ones revoked at once, a weight-only change replans only above `min_imbalance`.
    pub fn set_partitions(&mut self, now: Instant, partitions: Vec<Partition>) {
        if self.is_stopped() {
            return;
        }
        let catalog = Catalog::new(partitions);
        let old = std::mem::replace(&mut self.catalog, catalog);
        self.target.catalog_replaced();
        if matches!(self.stage, Stage::Running) {
            self.apply_catalog_change(now, &old);
        }
        self.dirty = true;
        self.step(now);
    }

    /// Replans now with the current members, ignoring the cooldown and any window (an
    /// operator's request). During the takeover the request is remembered and honoured when
    /// it ends.
    ///
    /// # Errors
    ///
    /// [`NotLeader`] (leader unknown) once the planner has stopped: it leads no more.
    pub fn trigger_rebalance(&mut self, now: Instant) -> Result<(), NotLeader> {
        match self.stage {
            Stage::Running => self.replan(now, PlanReason::Manual),
            Stage::Loading(_) => self.manual_pending = true,
            Stage::Stopped => return Err(NotLeader { leader: None }),
        }
        self.dirty = true;
        self.step(now);
        Ok(())
    }

    /// Tells the planner that its member sent its own heartbeat `seq` at `now`. Liveness time
    /// is the send time of the newest echo of these heartbeats the watch delivered (channel
    /// time, PROTOCOL.md §5), so a watch that lags as a whole declares nobody dead. A
    /// heartbeat the planner is not told about counts as sent when its echo is received.
    pub fn heartbeat_sent(&mut self, now: Instant, seq: u64) {
        if self.is_stopped() {
            return;
        }
        self.live.heartbeat_sent(now, seq);
    }

    /// Tells the planner whether its member is degraded: while it is, and for
    /// `degraded.recovery_grace` after, no worker is declared dead.
    pub fn set_degraded(&mut self, now: Instant, degraded: bool) {
        if self.is_stopped() {
            return;
        }
        self.live
            .set_degraded(now, degraded, self.config.degraded.recovery_grace);
        self.dirty = true;
        self.step(now);
    }

    /// Stops for good: the lease lapsed or the member leaves. Abandons every in-flight
    /// publication; from now on only the `Unwatch` of the planner's watches is emitted.
    /// `now` is taken like every other input's (STYLE.md §1); stopping depends on no time.
    pub fn stop(&mut self, _now: Instant) {
        if self.is_stopped() {
            return;
        }
        self.stage = Stage::Stopped;
        self.actions.clear();
        self.batch = None;
        self.timers.clear();
        self.close_watches();
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
}
