//! The `Member`: the sans-IO state machine every worker process runs (PROTOCOL.md §3–5, §8).
//!
//! A member claims a stable worker id, heartbeats, stands for election, applies the assignment
//! records the leader writes for it and tells the application — one call at a time — what it
//! lost and what it gained. When it wins the election it embeds a [`Planner`] for its term and
//! forwards the planner's I/O. It performs no I/O itself and reads no clock: everything enters
//! through `handle_*` and commands, everything leaves through `poll_*`.
//!
//! ```text
//!   driver (tokio runtime / simulator)                  Member (pure)
//!   ───────────────────────────────────                 ───────────────────────────────────────
//!   KV results, watch items ── Event::Io ─────────────▶ identity · heartbeat · election · apply
//!   handler finished ───────── Event::Delivered ──────▶ delivery pipeline (one at a time)
//!   connection up/down ─────── Event::Connection ─────▶ degraded mode, fence
//!   deadline reached ───────── handle_timeout(now) ───▶ TimerTable
//!   request_leave / _restart, set_partitions, … ──────▶ commands
//!                                                        │  planner-bit ids ──▶ Planner (leader)
//!   run KV op / open watch ◀── Action::Io ──────────────┤◀─ planner actions ─┘
//!   run on_revoked/on_assigned ◀ Action::Deliver ───────┤
//!   tell the application ◀──── poll_notification() ─────┤
//!   sleep until ◀───────────── poll_timeout() ──────────┘
//! ```
//!
//! # Call order
//!
//! 1. Build the member with [`Member::new`], provision the buckets, call [`Member::start`].
//! 2. After **every** input (`handle_event`, `handle_timeout`, a command) drain
//!    [`Member::poll_action`] until `None` and execute each action in order, then drain
//!    [`Member::poll_notification`] until `None`, then sleep until [`Member::poll_timeout`]
//!    (or the next input). Inputs are fed with the receive time `now`; `now` never goes
//!    backwards.
//! 3. A [`Action::Io`] carrying a KV request is answered with exactly one
//!    [`Event::Io`]`(`[`IoEvent::KvDone`]`)` with the same `op`; independent operations may be in
//!    flight together and answered in any order. Watch items are fed in the order the store
//!    delivers them.
//! 4. An [`Action::Deliver`] is run by the application's handler task: `on_revoked(revoked)` if
//!    non-empty, then `on_assigned(assigned)` if non-empty, then [`Event::Delivered`] with the
//!    same id. The driver runs deliveries strictly one after the other, in the order they were
//!    emitted (if the member gave up waiting — `handler_timeout` — it may already have emitted
//!    the next one; the driver queues it behind the running handler).
//! 5. Connection changes of the store are fed as [`Event::Connection`].
//!
//! The driver decides nothing: no retry, no ordering and no timing is left to it.
//!
//! # States
//!
//! [`Member::state`] keeps the Go library's names and adds `Fenced` and `Leaving`. The state is
//! *derived* from the member's conditions, by priority: a terminal or leaving phase first, then
//! `Degraded`, then `Fenced`, then the start-up progress. Every change is reported as
//! [`Notification::StateChanged`] (in order, never dropped). `Scaling`, `Rebalancing` and
//! `Emergency` are the leader's planner states; the planner interface does not report them yet,
//! so a leader shows `Stable`.
//!
//! | from | to | when |
//! |---|---|---|
//! | `Init` | `ClaimingID` | [`Member::start`] |
//! | `Init`, `ClaimingID` | `Shutdown` | `request_leave` / `request_restart` before an id is held (nothing to hand over) |
//! | `ClaimingID` | `Election` | an id is claimed (created, or taken over from a restarting claim) |
//! | `ClaimingID` | `Shutdown` | no id by `startup_timeout` ([`Notification::Failed`], e.g. `IdentityPoolExhausted`) |
//! | `Election` | `WaitingAssignment` | the leader key's snapshot is read and, if it was free, our `create` answered |
//! | `WaitingAssignment` | `Stable` | the first assignment record is applied, or `startup_timeout` passes without one ([`Notification::Ready`] either way) |
//! | `Election`, `WaitingAssignment`, `Stable` | `Fenced` | `Fence` policy: the last acknowledged heartbeat is `heartbeat_ttl - fence_margin` old, or the claim went unconfirmed for 90 % of `identity_ttl`; any policy: the id was lost and reclaimed |
//! | `Fenced` | `Stable` | a record newer than a fresh read of our own record is applied (the leader re-granted) |
//! | any of `Election` … `Fenced`, `ClaimingID` | `Degraded` | connection down for `degraded.enter_after`, or `kv_error_threshold` failed operations within `kv_error_window` |
//! | `Degraded` | the state underneath | connection up for `exit_after` and a fresh read of our own record succeeded |
//! | `Election` … `Degraded` | `ClaimingID` | the id was lost (renewal conflict or key gone): everything revoked locally, claim again |
//! | `Election` … `Degraded` | `Leaving` | [`Member::request_leave`] |
//! | `Leaving` | `Shutdown` | everything revoked (or `shutdown_timeout`), then heartbeat, leadership and id deleted ([`Notification::Stopped`]); or the id was lost while leaving (nothing left to release) |
//! | `Election` … `Degraded` | `Shutdown` | [`Member::request_restart`]: claim rewritten with `restarting_until`, intent `Restarting` |
//!
//! `Shutdown` is terminal; the member emits its last writes in it and then [`Notification::Stopped`].
//!
//! # Choices where the protocol is silent
//!
//! - A KV write that failed (any error, a timeout included) is followed by a re-read of the key
//!   before anything is retried; a value carrying our own [`InstanceId`] is ours (an earlier
//!   attempt landed), anything else is someone else's.
//! - A claim not confirmed by a successful write for 90 % of `identity_ttl` (send time of the
//!   write; the store cannot expire it sooner than the full ttl after it) is *suspect*: it may
//!   have expired and been claimed by another process. Nothing is done under it — no
//!   heartbeat, records wait — and under `Fence` everything is revoked locally, until a renewal
//!   confirms it (the waiting record is then taken) or shows it lost. Under `Hold` the cached
//!   assignment is kept meanwhile, as `Hold` promises.
//! - The fence timer stays armed while fenced: if the fence age recurs before a re-grant was
//!   applied (cut off again), the fence round starts over — the floor and anything held are
//!   dropped, a new read follows the next stored heartbeat — because the leader may have
//!   declared the member dead again and taken back a re-grant still in its backlog.
//! - After an identity loss the member steps down from leadership (deleting the leader key by
//!   compare-and-set), and the new claim starts like a fresh start but fenced.
//! - A fenced member applies only records newer than a fresh read of its own record made after
//!   a `Fenced` heartbeat was stored, so a stale grant caught up by a lagging watch is not
//!   applied; the leader's re-grant (a new version) is. The read version is acknowledged (still
//!   with intent `Fenced`, holding nothing — a subset of any record): the leader re-grants a
//!   fenced member once it has acknowledged its newest record.
//! - An undecodable own record counts as absent, i.e. "revoke everything".
//! - The record found in the snapshot right after a claim applies like any other: a process that
//!   took over a restarting claim gets its partitions back at once, without waiting for the
//!   leader (who publishes nothing for a restart return).
//! - A snapshot shows only the newest `term`; a record written before the newest bump comes
//!   *before* it in revision order and so has no term "seen before it". Such a record is
//!   applied if (a) exactly one bump separates them (`record.term + 1 == term`: every leader
//!   takes `term + 1`, so the only bump since the record's term is the newest one, which came
//!   after the record), or (b) this process took over a restarting claim and the record is
//!   exactly the version the previous process acknowledged (read from its last heartbeat before
//!   the takeover; the leader keeps that record for the returning worker and publishes nothing).
//!   Any other pre-bump record in a snapshot is refused like a zombie write: with two bumps or
//!   more since, one may have preceded it. A leader must therefore rewrite, under its own term,
//!   a record its worker has not acknowledged.
//! - `startup_timeout` without any record ends start in `Stable` owning nothing (a member may
//!   legitimately own nothing); only a failed claim is fatal.
//! - Candidates do not `create` while they see the key being renewed: the retry timer fires
//!   `election_ttl` after the last write they saw (silent expiry), so a healthy cluster costs no
//!   `create` attempts. After a failed `create` it retries every `election_ttl / 3`.
//! - After `request_restart` no record is applied any more and nothing is renewed (a renewal
//!   would clear `restarting_until`); the heartbeat and the id are left to the next process.
//! - A partition whose fence changes while it stays owned is delivered again in `assigned`
//!   (with the new fence); a weight change alone is not delivered.
//! - A leaving leader keeps leading until its own record is empty, then stops its planner and
//!   deletes the leader key after its heartbeat (the planner interface has no "idle" signal yet).
//! - Only the assignments stream decides which term a record must carry; the term in the
//!   `leader` key (another bucket, no order with the stream) is not used for applying.
//! - A planner that stops on its own (it saw a higher term) ends the member's leadership: no
//!   more renewals, the key is left to expire, the member stands again later.
//! - Planner ids are renamed on the way out (unique for the member's lifetime) so that a late
//!   answer to a stopped planner never reaches the next one (every planner counts from 1).
//! - A KV error counts towards degraded mode unless it is an answer about the data
//!   (`NotFound`, `AlreadyExists`, `RevisionMismatch`); the planner's operations count too.

mod apply;
mod degraded;
mod election;
mod heartbeat;
mod identity;
mod leave;
mod relay;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::config::ValidConfig;
use crate::machine::{IdGen, IoAction, IoEvent, KvRequest, KvResult, OpId, TimerTable};
use crate::planner::Planner;
use crate::records::{DecodeError, Names, Record};
use crate::rng::SplitMix64;
use crate::store::KvError;
use crate::strategy::AssignmentStrategy;
use crate::types::{InstanceId, Partition, Term, Version, WorkerId, WorkerState};

pub use types::{
    Action, AlertLevel, DegradedReason, DeliveryId, Event, MemberError, MemberInit, Notification,
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
}

/// What a member's own operation was for; the answer is routed by it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    ListIds,
    ReadPreferred {
        number: u32,
    },
    ReadInheritedHeartbeat {
        number: u32,
        revision: crate::types::Revision,
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
/// [`Member::poll_timeout`]. `now` never goes backwards.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
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
///         partitions: Vec::new(),
///     };
///     let mut member = Member::new(config, strategy, init, now);
///     member.start(now);
///     while let Some(action) = member.poll_action() {
///         match action {
///             Action::Io(io) => { /* run it, feed the result back with handle_event */ }
///             Action::Deliver { .. } => { /* run the handlers, report Event::Delivered */ }
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
    partitions: Vec<Partition>,
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
        let beat = Beat::new(&config);
        let election = Election::new(&config, rng.next_u64());
        let degraded = Degraded::new(now);
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
        self.identity.as_ref().map(|c| &c.id)
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

    /// The term this member leads, when it leads.
    #[must_use]
    pub fn term(&self) -> Option<Term> {
        self.planner.as_ref().map(Planner::term)
    }

    /// The highest term seen in the assignments stream (the term records must carry).
    #[must_use]
    pub fn known_term(&self) -> Option<Term> {
        self.apply.stream_term
    }

    /// What the application has been told it owns (including a delivery still running), with
    /// fences, in partition order.
    #[must_use]
    pub fn owned(&self) -> Vec<crate::records::OwnedPartition> {
        self.apply.told.values().cloned().collect()
    }

    /// The highest assignment version applied and acknowledged.
    #[must_use]
    pub fn applied_version(&self) -> Version {
        self.apply.applied
    }

    /// Whether the member is in degraded mode.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.degraded.since.is_some()
    }

    /// Whether the member has revoked everything locally and waits to be granted again.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.apply.fence.is_some()
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
        self.timers
            .set(Timer::StartupDeadline, now + self.config.startup_timeout);
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
                } else if Some(watch) == self.apply.watch {
                    self.on_assignment_watch(now, event);
                } else if Some(watch) == self.election.watch {
                    self.on_leader_watch(now, event);
                }
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
    pub fn set_partitions(&mut self, now: Instant, partitions: Vec<Partition>) {
        self.check_lease(now);
        self.partitions = partitions.clone();
        if let Some(p) = self.planner.as_mut() {
            p.set_partitions(now, partitions);
        }
        self.settle(now);
    }

    /// Asks the planner to replan now (ignored unless leading).
    pub fn trigger_rebalance(&mut self, now: Instant) {
        self.check_lease(now);
        if let Some(p) = self.planner.as_mut() {
            p.trigger_rebalance(now);
        }
        self.settle(now);
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

    // ----- internals shared by the parts ---------------------------------------------------

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::StartupDeadline => self.on_startup_deadline(now),
            Timer::ClaimRetry => self.on_claim_retry(now),
            Timer::RenewId => self.renew_id(now),
            Timer::IdentityLapse => self.on_identity_lapse(now),
            Timer::Heartbeat => self.send_heartbeat(now),
            Timer::Fence => self.on_fence_deadline(now),
            Timer::Candidate => self.stand(now),
            Timer::RenewLeader => self.write_leader(now),
            Timer::LeaseEnd => self.check_lease(now),
            Timer::TermRetry => self.read_term(),
            Timer::Handler => self.on_handler_timeout(now),
            Timer::DegradedEnter => self.on_degraded_enter_deadline(now),
            Timer::DegradedExit => self.on_degraded_exit_check(now),
            Timer::Alert => self.on_alert(now),
            Timer::LeaveDeadline => self.on_leave_deadline(now),
        }
    }

    fn on_kv_done(&mut self, now: Instant, op: Op, result: KvResult) {
        match op {
            Op::ListIds => self.on_ids_listed(now, result),
            Op::ReadPreferred { number } => self.on_preferred_read(now, number, result),
            Op::ReadInheritedHeartbeat { number, revision } => {
                self.on_inherited_heartbeat_read(now, number, revision, result);
            }
            Op::CreateId {
                number,
                claimed_at_ms,
                sent_at,
            } => self.on_id_created(now, number, claimed_at_ms, sent_at, result),
            Op::ReadIdAfterCreate { number, sent_at } => {
                self.on_id_read_after_create(now, number, sent_at, result);
            }
            Op::TakeoverId {
                number,
                claimed_at_ms,
                sent_at,
            } => self.on_id_taken_over(now, number, claimed_at_ms, sent_at, result),
            Op::RenewId { sent_at } => self.on_id_renewed(now, sent_at, result),
            Op::ReadIdAfterRenew => self.on_id_read_after_renew(now, result),
            Op::Heartbeat { sent_at } => self.on_heartbeat_done(now, sent_at, result),
            Op::CreateLeader { sent_at } => self.on_leader_created(now, sent_at, result),
            Op::ReadLeader { sent_at } => self.on_leader_read(now, sent_at, result),
            Op::WriteLeader { sent_at, term } => self.on_leader_written(now, sent_at, term, result),
            Op::ReadTerm => self.on_term_read(now, result),
            Op::WriteTerm { term } => self.on_term_written(now, term, result),
            Op::ReadOwnRecord { purpose } => self.on_own_record_read(now, purpose, result),
            Op::RestartClaim
            | Op::ReleaseHeartbeat
            | Op::ReleaseLeader
            | Op::ReleaseId
            | Op::DropLeader => {
                self.on_release_step(now, op, result);
            }
        }
    }

    /// Queues a KV request of the member's own.
    fn kv(&mut self, op: Op, request: KvRequest) -> OpId {
        let id = self.ids.op();
        self.ops.insert(id, op);
        self.actions
            .push_back(Action::Io(IoAction::Kv { op: id, request }));
        id
    }

    fn notify(&mut self, n: Notification) {
        self.notifications.push_back(n);
    }

    /// Wall-clock Unix milliseconds at `now`, from the wall clock given at construction.
    fn wall_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        self.wall_epoch_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Decodes `bytes`; an undecodable value is counted, reported once per key and treated as
    /// absent.
    fn decode<R: Record>(&mut self, bucket: &str, key: &str, bytes: &[u8]) -> Option<R> {
        match R::decode(bytes) {
            Ok(r) => Some(r),
            Err(error) => {
                self.undecodable(bucket, key, error);
                None
            }
        }
    }

    fn undecodable(&mut self, bucket: &str, key: &str, error: DecodeError) {
        self.decode_errors += 1;
        if self
            .undecodable_notified
            .insert((bucket.to_owned(), key.to_owned()))
        {
            self.notify(Notification::UndecodableValue {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                error,
            });
        }
    }

    fn count_kv_result(&mut self, now: Instant, result: &KvResult) {
        if let Err(e) = result
            && !matches!(
                e,
                KvError::NotFound | KvError::AlreadyExists | KvError::RevisionMismatch { .. }
            )
        {
            self.on_kv_error(now);
        }
    }

    /// After every input: drain the planner, move the delivery pipeline, report state changes.
    fn settle(&mut self, now: Instant) {
        self.pump(now);
        self.check_leave_progress(now);
        self.drain_planner();
        // A planner that stopped on its own (it saw a higher term) ends our leadership.
        if self.planner.as_ref().is_some_and(Planner::is_stopped) {
            self.step_down(now, false);
        }
        let state = self.derive_state();
        if state != self.reported {
            let from = self.reported;
            self.reported = state;
            self.notify(Notification::StateChanged { from, to: state });
        }
    }

    fn drain_planner(&mut self) {
        if let Some(p) = self.planner.as_mut() {
            while let Some(a) = p.poll_action() {
                if let Some(a) = self.relay.outbound(a) {
                    self.actions.push_back(Action::Io(a));
                }
            }
            while let Some(n) = p.poll_notification() {
                self.notifications.push_back(Notification::Planner(n));
            }
        }
    }

    fn derive_state(&self) -> WorkerState {
        match self.phase {
            Phase::Init => WorkerState::Init,
            Phase::Stopped | Phase::Restarting => WorkerState::Shutdown,
            Phase::Leaving | Phase::Releasing => WorkerState::Leaving,
            Phase::Claiming | Phase::Member if self.degraded.since.is_some() => {
                WorkerState::Degraded
            }
            Phase::Claiming => WorkerState::ClaimingId,
            Phase::Member if self.apply.fence.is_some() => WorkerState::Fenced,
            Phase::Member if !self.election.settled => WorkerState::Election,
            Phase::Member if !self.ready => WorkerState::WaitingAssignment,
            Phase::Member => WorkerState::Stable,
        }
    }

    fn on_startup_deadline(&mut self, now: Instant) {
        match self.phase {
            Phase::Claiming => self.fail_claim(now),
            Phase::Member if !self.ready => {
                self.ready = true;
                self.notify(Notification::Ready);
            }
            _ => {}
        }
    }
}

/// Lets every planner share the member's strategy (a planner takes a `Box`).
#[derive(Debug)]
struct SharedStrategy(Arc<dyn AssignmentStrategy>);

impl AssignmentStrategy for SharedStrategy {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn assign(
        &self,
        input: &crate::strategy::AssignInput<'_>,
    ) -> Result<crate::strategy::Plan, crate::strategy::StrategyError> {
        self.0.assign(input)
    }
}
