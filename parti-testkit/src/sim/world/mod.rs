//! The world: members, the store model, the network between them, the applications, time.
//!
//! Everything happens as an event popped from one queue ordered by `(time, seq)`; every random
//! choice comes from the world's one [`SplitMix64`]. A step is one event: it may feed one input
//! to one member, after which the member's actions are executed (KV operations are sent, watches
//! opened, deliveries queued to its application) and the per-step invariants are checked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parti_core::config::Config;
use parti_core::machine::{IoAction, KvReply, KvRequest, KvResult, OpId, WatchId};
use parti_core::member::{Action, DeliveryId, Member};
use parti_core::planner::PlannerState;
use parti_core::records::{Names, OwnedPartition};
use parti_core::rng::SplitMix64;
use parti_core::store::model::{StoreModel, WatcherId};
use parti_core::store::{BucketSpec, KvError, OnMismatch, StorageKind, WatchKeys};
use parti_core::strategy::AssignmentStrategy;
use parti_core::{Fence, InstanceId, Partition, PartitionId, Term, ValidConfig, WorkerId};

mod app;
mod control;
mod net;
mod views;

use super::clock::Drift;
use super::invariants::{Checks, Violation};
use super::queue::Queue;
use super::trace::Trace;

/// Wall clock (Unix ms) at the simulation's epoch.
const WALL0: u64 = 1_800_000_000_000;

/// What a simulated process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Processing inputs.
    Running,
    /// Stalled (GC-like): its clock runs, it processes nothing.
    Paused,
    /// Gone without a word.
    Crashed,
    /// Its member stopped (leave, restart, failure) and the process exited.
    Exited,
}

/// One running delivery (or one waiting) of a member's application.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    id: DeliveryId,
    revoked: Vec<OwnedPartition>,
    assigned: Vec<OwnedPartition>,
    worker: Option<WorkerId>,
    applied: bool,
}

/// A process's application: what it believes it owns, and its handler queue.
#[derive(Debug, Default)]
pub(crate) struct App {
    queue: VecDeque<Delivery>,
    running: Option<Delivery>,
    /// What the application believes it owns now, with fences.
    pub(crate) held: BTreeMap<PartitionId, Fence>,
}

/// One simulated process.
#[derive(Debug)]
pub struct Node {
    pub(crate) member: Member,
    pub(crate) instance: InstanceId,
    pub(crate) preferred: Option<u32>,
    pub(crate) drift: Drift,
    pub(crate) status: Status,
    wake_at: Option<Duration>,
    deferred: Vec<Ev>,
    last_arrival: Duration,
    pub(crate) connected: bool,
    queued: Vec<(Duration, OpId, KvRequest)>,
    pending_opens: Vec<(WatchId, String, WatchKeys)>,
    watches: BTreeMap<WatchId, Option<WatcherId>>,
    outstanding: BTreeSet<OpId>,
    pub(crate) app: App,
    slow_until: Duration,
    slow_extra: Duration,
    /// Until then its handlers take between half of `slow_handler_max` and all of it.
    slow_handlers_until: Duration,
    slow_handler_max: Duration,
    cut_until: Duration,
    /// A restart was requested: when the member stops, a new process with the same preferred
    /// id starts.
    pub(crate) respawn: bool,
    assign_watch: Option<WatchId>,
    stream_term: Option<Term>,
    catalog_gen: u64,
    /// The embedded planner's last reported state (while leading).
    pub(crate) planner_state: Option<PlannerState>,
}

impl Node {
    /// The member.
    #[must_use]
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The process status.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status
    }

    /// The state its planner last reported (`None` when it does not lead).
    #[must_use]
    pub fn planner_state(&self) -> Option<PlannerState> {
        if self.member.is_leader() {
            self.planner_state
        } else {
            None
        }
    }

    /// What its application believes it owns.
    pub fn held(&self) -> impl Iterator<Item = &PartitionId> {
        self.app.held.keys()
    }
}

/// A happening in the queue.
#[derive(Debug)]
pub(crate) enum Ev {
    Wake(usize),
    Arrive {
        node: usize,
        op: OpId,
        req: KvRequest,
        sent: Duration,
        reply: Option<Duration>,
    },
    Reply {
        node: usize,
        op: OpId,
        sent: Duration,
        result: KvResult,
    },
    OpenWatch {
        node: usize,
        watch: WatchId,
        bucket: String,
        keys: WatchKeys,
    },
    Flush(WatcherId),
    AppRevoked {
        node: usize,
        delivery: DeliveryId,
    },
    AppDone {
        node: usize,
        delivery: DeliveryId,
    },
    Resume(usize),
    /// The driver of `node` reports the watch `watch` ended (and forgets it).
    WatchEnded {
        node: usize,
        watch: WatchId,
        error: Option<KvError>,
    },
    /// The new process of a `shutdown_for_restart` (part of the restart, not a new fault: it
    /// happens in the heal phase too).
    Respawn(Option<u32>),
    /// Connectivity or a stall may have ended.
    Recheck,
    Control(Control),
}

/// Which process a control event applies to, resolved when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// A running process drawn from the seed.
    Random,
    /// A running process that is not the leader.
    Follower,
    /// The leader (if any).
    Leader,
    /// This process.
    Node(usize),
}

/// A fault or workload change.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// Start a new process with this preferred id number.
    Start(Option<u32>),
    /// Crash a process; restart a new one (same preferred id if `same_id`) after the delay.
    Crash(Pick, Option<(Duration, bool)>),
    /// Pause a process.
    Pause(Pick, Duration),
    /// Graceful leave.
    Leave(Pick),
    /// `shutdown_for_restart`, then a new process with the same preferred id.
    Restart(Pick),
    /// The store is unreachable for everyone.
    Outage(Duration),
    /// One process is cut off from the store.
    Cut(Pick, Duration),
    /// Every operation on one bucket hangs (a stream leader election).
    Stall(String, Duration),
    /// KV operations of one process (or all) get up to this much extra latency.
    Slow(Option<Pick>, Duration, Duration),
    /// Watch deliveries are delayed by up to this much.
    WatchDelay(Duration, Duration),
    /// Operations fail at random with this probability (per mille).
    Errors(u64, Duration),
    /// One watch loses its place and starts over.
    Resync,
    /// One watch ends (its stream is over, or it fails for good): the driver reports
    /// `WatchEnded` and forgets it; the machine opens it again.
    EndWatch,
    /// A deposed leader's write lands late: a record of the term before the current one, for
    /// a worker whose record that leader could still have compare-and-set, giving it one more
    /// partition (preferably one an application still releases; if there is none, it lands up
    /// to this many times 100 ms later). Members refuse it; the leaders must not act on it as
    /// if it had been applied.
    LateWrite(u32),
    /// A process's application handlers are slow (up to this long, within `handler_timeout`)
    /// for a while: it releases revoked partitions late, still heartbeating.
    SlowHandlers(Pick, Duration, Duration),
    /// Partitions added and removed.
    Catalog,
    /// Weights changed.
    Weights,
}

/// Settings of the world that are not the member config.
#[derive(Clone, Debug)]
pub struct WorldSettings {
    /// Clock rates are drawn within ± this many ppm (0: no drift).
    pub drift_ppm: i64,
    /// Handler latency upper bound (a fraction of it is typical).
    pub handler_latency: Duration,
    /// Base KV latency upper bound (one way).
    pub kv_latency: Duration,
    /// Base watch delivery delay upper bound.
    pub watch_delay: Duration,
    /// Up to this many watch items are delivered together.
    pub watch_batch: u64,
    /// How long a write queued while disconnected may still be sent after reconnecting.
    pub late_window: Duration,
}

impl Default for WorldSettings {
    fn default() -> Self {
        WorldSettings {
            drift_ppm: 10_000,
            handler_latency: Duration::from_millis(60),
            kv_latency: Duration::from_millis(3),
            watch_delay: Duration::from_millis(3),
            watch_batch: 4,
            late_window: Duration::from_secs(5),
        }
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub steps: u64,
    /// KV operations sent.
    pub kv_ops: u64,
    /// Plans fully published (all leaders).
    pub publications: u64,
    /// Partitions moved between workers, summed over started plans.
    pub moved: u64,
    /// Workers declared dead.
    pub deaths: u64,
    /// Workers declared dead while a running, connected process held that id.
    pub false_deaths: u64,
    /// Processes started.
    pub started: u64,
    /// Crashes.
    pub crashes: u64,
    /// Faults injected (all kinds).
    pub faults: u64,
    /// Leadership acquisitions.
    pub leaderships: u64,
    /// Handoff stalls reported.
    pub stalls: u64,
}

/// What a member was handling, for [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// A heartbeat from the heartbeats watch.
    Heartbeat,
    /// Anything else (timers, other watch items, store results, deliveries).
    Other,
}

/// Wall-clock time members spent handling events, split by leader / follower and kind.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// `(leader, kind)` → (events, total time).
    pub by_kind: BTreeMap<(bool, EventKind), (u64, Duration)>,
    /// The leader's heartbeat times, one per heartbeat.
    pub leader_heartbeats: Vec<Duration>,
    /// The leader's longest single event of any kind.
    pub leader_max: Duration,
}

impl Profile {
    fn add(&mut self, leader: bool, kind: EventKind, took: Duration) {
        let e = self.by_kind.entry((leader, kind)).or_default();
        e.0 += 1;
        e.1 += took;
        if leader {
            self.leader_max = self.leader_max.max(took);
            if kind == EventKind::Heartbeat {
                self.leader_heartbeats.push(took);
            }
        }
    }

    /// The `q`-quantile (0..=1) of the leader's heartbeat times.
    #[must_use]
    pub fn leader_heartbeat_quantile(&self, q: f64) -> Duration {
        let mut v = self.leader_heartbeats.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v[i]
    }

    /// Events and total time of one `(leader, kind)`.
    #[must_use]
    pub fn get(&self, leader: bool, kind: EventKind) -> (u64, Duration) {
        self.by_kind
            .get(&(leader, kind))
            .copied()
            .unwrap_or_default()
    }

    /// Total time of the leader (every kind).
    #[must_use]
    pub fn leader_total(&self) -> Duration {
        self.by_kind
            .iter()
            .filter(|((l, _), _)| *l)
            .map(|(_, (_, t))| *t)
            .sum()
    }
}

/// The simulated cluster.
pub struct World {
    pub(crate) epoch: Instant,
    pub(crate) now: Duration,
    pub(crate) rng: SplitMix64,
    queue: Queue<Ev>,
    pub(crate) store: StoreModel,
    watchers: BTreeMap<WatcherId, (usize, WatchId)>,
    flush_scheduled: BTreeSet<WatcherId>,
    global_watch: WatcherId,
    pub(crate) nodes: Vec<Node>,
    pub(crate) config: Config,
    pub(crate) names: Names,
    /// Shared with every member (one copy, however many members run).
    pub(crate) catalog: Arc<[Partition]>,
    catalog_gen: u64,
    next_partition: u64,
    strategy: Arc<dyn AssignmentStrategy>,
    pub(crate) settings: WorldSettings,
    outage_until: Duration,
    stalls: BTreeMap<String, Duration>,
    stalled: Vec<(usize, OpId, KvRequest, Duration, Option<Duration>)>,
    slow_all_until: Duration,
    slow_all_extra: Duration,
    watch_delay_until: Duration,
    watch_delay_max: Duration,
    errors_until: Duration,
    errors_per_mille: u64,
    /// Chaos events after this instant are ignored (the heal phase began).
    pub(crate) chaos_until: Duration,
    pub(crate) checks: Checks,
    pub(crate) trace: Trace,
    pub(crate) stats: Stats,
    /// Published notifications with their time, for scenario assertions.
    pub(crate) published: Vec<(Duration, usize)>,
    /// `WorkerDead` notifications: time, worker, whether a running connected process held it.
    pub(crate) deaths: Vec<(Duration, WorkerId, bool)>,
    stop_on_violation: bool,
    /// Wall-clock time spent inside members' event handling, by kind (opt-in, for the
    /// machines benchmark: [`World::profile_start`]).
    profile: Option<Profile>,
    /// Print progress to stderr (`PARTI_SIM_PROGRESS` set), for long scale runs.
    progress: bool,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("queue", &self.queue.len())
            .finish_non_exhaustive()
    }
}

fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl World {
    /// An empty world: buckets provisioned, no process yet.
    ///
    /// # Panics
    ///
    /// If `config` does not validate (the simulator's own settings are wrong).
    #[must_use]
    pub fn new(
        seed: u64,
        config: Config,
        catalog: Vec<Partition>,
        strategy: Arc<dyn AssignmentStrategy>,
        settings: WorldSettings,
        trace: Trace,
    ) -> Self {
        #[allow(clippy::disallowed_methods)] // the simulation's one epoch; only durations are added
        let epoch = Instant::now();
        let valid = config
            .clone()
            .validate()
            .expect("the simulator's config validates");
        let names = valid.names();
        let mut store = StoreModel::new();
        for spec in bucket_specs(&valid) {
            store
                .provision(&spec, OnMismatch::Fail)
                .expect("a fresh store accepts the protocol's buckets");
        }
        let global_watch = store
            .watch(
                &names.assignments_bucket(),
                WatchKeys::Prefix(String::new()),
                epoch,
            )
            .expect("the assignments bucket exists");
        let next_partition = catalog.len() as u64;
        World {
            epoch,
            now: Duration::ZERO,
            rng: SplitMix64::new(seed),
            queue: Queue::new(),
            store,
            watchers: BTreeMap::new(),
            flush_scheduled: BTreeSet::new(),
            global_watch,
            nodes: Vec::new(),
            config,
            names,
            catalog: catalog.into(),
            catalog_gen: 0,
            next_partition,
            strategy,
            settings,
            outage_until: Duration::ZERO,
            stalls: BTreeMap::new(),
            stalled: Vec::new(),
            slow_all_until: Duration::ZERO,
            slow_all_extra: Duration::ZERO,
            watch_delay_until: Duration::ZERO,
            watch_delay_max: Duration::ZERO,
            errors_until: Duration::ZERO,
            errors_per_mille: 0,
            chaos_until: Duration::MAX,
            checks: Checks::default(),
            trace,
            stats: Stats::default(),
            published: Vec::new(),
            deaths: Vec::new(),
            stop_on_violation: true,
            profile: None,
            progress: std::env::var_os("PARTI_SIM_PROGRESS").is_some(),
        }
    }

    // ----- time and randomness -----------------------------------------------------------------

    /// Simulated time since the epoch.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.now
    }

    /// A duration drawn uniformly from `[lo, hi]`.
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = dur_ns(hi - lo);
        lo + Duration::from_nanos(self.rng.below(span.saturating_add(1)))
    }

    /// True with probability `p / 1000`.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.below(1000) < per_mille
    }

    fn local_now(&self, n: usize) -> Instant {
        self.epoch + self.nodes[n].drift.local(self.now)
    }

    pub(crate) fn schedule(&mut self, at: Duration, ev: Ev) {
        self.queue.push(at.max(self.now), ev);
    }

    /// Schedules a fault or workload change at `at`.
    pub fn control_at(&mut self, at: Duration, c: Control) {
        self.schedule(at, Ev::Control(c));
    }

    // ----- the loop ----------------------------------------------------------------------------

    /// Whether a violation stopped the run.
    #[must_use]
    pub fn halted(&self) -> bool {
        self.stop_on_violation && !self.checks.violations.is_empty()
    }

    /// Keeps running after violations (to collect several).
    pub fn keep_going(&mut self) {
        self.stop_on_violation = false;
    }

    /// Runs every event due up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Duration) {
        while !self.halted() && self.queue.peek_time().is_some_and(|x| x <= t) {
            self.step();
        }
        if !self.halted() {
            self.now = self.now.max(t);
        }
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `cond` holds or `deadline`; whether it held. `cond` is checked after every
    /// step that moves the clock by at least 1 ms since the last check (and at the deadline), so a
    /// costly condition does not dominate a large run; the time it is found true is exact to that.
    pub fn run_until_cond(&mut self, deadline: Duration, cond: impl Fn(&World) -> bool) -> bool {
        let mut checked: Option<Duration> = None;
        loop {
            if checked.is_none_or(|c| self.now >= c + Duration::from_millis(1)) {
                if cond(self) {
                    return true;
                }
                checked = Some(self.now);
            }
            if self.halted() {
                return false;
            }
            match self.queue.peek_time() {
                Some(t) if t <= deadline => self.step(),
                _ => {
                    self.now = self.now.max(deadline);
                    return cond(self);
                }
            }
        }
    }

    fn step(&mut self) {
        let Some((at, ev)) = self.queue.pop() else {
            return;
        };
        self.now = self.now.max(at);
        self.stats.steps += 1;
        if self.progress && self.stats.steps.is_multiple_of(20_000) {
            eprintln!(
                "progress: {} steps, {:.1}s simulated, {} running",
                self.stats.steps,
                self.now.as_secs_f64(),
                self.running().count()
            );
        }
        match ev {
            Ev::Wake(n) => self.on_wake(n, at),
            Ev::Arrive {
                node,
                op,
                req,
                sent,
                reply,
            } => self.on_arrive(node, op, req, sent, reply),
            Ev::Reply {
                node,
                op,
                sent,
                result,
            } => self.on_reply(node, op, sent, result),
            Ev::OpenWatch {
                node,
                watch,
                bucket,
                keys,
            } => self.on_open_watch(node, watch, &bucket, keys),
            Ev::Flush(w) => self.on_flush(w),
            Ev::AppRevoked { node, delivery } => self.on_app_revoked(node, delivery),
            Ev::AppDone { node, delivery } => self.on_app_done(node, delivery),
            Ev::Resume(n) => self.on_resume(n),
            Ev::WatchEnded { node, watch, error } => self.on_watch_ended(node, watch, error),
            Ev::Respawn(p) => {
                let _ = self.start_node(p);
            }
            Ev::Recheck => self.recheck(),
            Ev::Control(c) => self.on_control(c),
        }
    }

    // ----- driving a member --------------------------------------------------------------------

    /// Feeds one input to member `n` and executes what follows; returns the number of
    /// deliveries it emitted.
    fn input(&mut self, n: usize, f: impl FnOnce(&mut Member, Instant)) -> usize {
        self.input_as(n, EventKind::Other, f)
    }

    /// An input of a known kind (for the profile).
    fn input_as(
        &mut self,
        n: usize,
        kind: EventKind,
        f: impl FnOnce(&mut Member, Instant),
    ) -> usize {
        let local = self.local_now(n);
        if let Some(profile) = &mut self.profile {
            let leader = self.nodes[n].member.is_leader();
            // The simulator's own clock is virtual; this measures the machine's real CPU time.
            let started = Instant::now();
            f(&mut self.nodes[n].member, local);
            profile.add(leader, kind, started.elapsed());
        } else {
            f(&mut self.nodes[n].member, local);
        }
        self.after_input(n)
    }

    /// Starts (or restarts) profiling the members' event handling.
    pub fn profile_start(&mut self) {
        self.profile = Some(Profile::default());
    }

    /// What was profiled since [`World::profile_start`] (and stops profiling).
    pub fn profile_take(&mut self) -> Profile {
        self.profile.take().unwrap_or_default()
    }

    fn after_input(&mut self, n: usize) -> usize {
        let mut delivers = 0;
        while let Some(a) = self.nodes[n].member.poll_action() {
            match a {
                Action::Io(io) => self.io(n, io),
                Action::Deliver {
                    delivery,
                    revoked,
                    assigned,
                } => {
                    delivers += 1;
                    self.deliver(n, delivery, revoked, assigned);
                }
                _ => {}
            }
        }
        while let Some(note) = self.nodes[n].member.poll_notification() {
            self.notification(n, note);
        }
        self.check_node(n, false);
        if self.nodes[n].member.is_stopped() && self.nodes[n].status == Status::Running {
            self.exit(n, Status::Exited);
        } else {
            self.reschedule_wake(n);
        }
        delivers
    }

    fn reschedule_wake(&mut self, n: usize) {
        let node = &self.nodes[n];
        let next = node.member.poll_timeout().map(|t| {
            let local = t.saturating_duration_since(self.epoch);
            node.drift.global(local).max(self.now)
        });
        if next != self.nodes[n].wake_at {
            self.nodes[n].wake_at = next;
            if let Some(g) = next {
                self.schedule(g, Ev::Wake(n));
            }
        }
    }

    fn on_wake(&mut self, n: usize, at: Duration) {
        if self.nodes[n].wake_at != Some(at) {
            return;
        }
        self.nodes[n].wake_at = None;
        if self.nodes[n].status != Status::Running {
            return;
        }
        self.trace.mix(&[1, n as u64, dur_ns(self.now)]);
        self.input(n, |m, now| m.handle_timeout(now));
    }

    /// Per-step invariants of one process: one leader per term, unique identity, applied
    /// versions.
    fn check_node(&mut self, n: usize, recheck: bool) {
        let now = self.now;
        let node = &self.nodes[n];
        let m = &node.member;
        let mut found = Vec::new();
        if let Some(term) = m.term()
            && let Some(v) = self.checks.leaders.leads(now, n, node.instance, term)
        {
            found.push(v);
        }
        if let Some(w) = m.worker_id()
            && let Some(v) = self
                .checks
                .monotonic
                .applied(now, n, w, m.applied_version())
        {
            found.push(v);
        }
        // A member shutting down — leaving, or restarting (`Shutdown` while not stopped) — whose
        // application owns nothing any more and that does not lead is handing its id over: it
        // applies no record and writes nothing under the id but its hand-over (the delete, or the
        // claim rewritten for the next process, may land before its answer comes back; a claim
        // that lapsed meanwhile is not even renewed). It no longer acts under the id.
        let releasing = matches!(
            m.state(),
            parti_core::WorkerState::Leaving | parti_core::WorkerState::Shutdown
        ) && node.app.held.is_empty()
            && !m.is_leader();
        let acting = m
            .worker_id()
            .filter(|_| {
                !m.is_fenced() && !m.is_stopped() && !releasing && node.status == Status::Running
            })
            .cloned();
        let nodes = &self.nodes;
        if let Some(v) = self.checks.identity.update(
            now,
            n,
            acting,
            |x| nodes[x].status == Status::Running,
            recheck,
        ) {
            found.push(v);
        }
        for v in found {
            self.violation(v);
        }
    }

    pub(crate) fn violation(&mut self, v: Violation) {
        let text = v.to_string();
        self.trace
            .line(self.now, v.node, || format!("VIOLATION {text}"));
        self.checks.report(v);
    }

    fn io(&mut self, n: usize, io: IoAction) {
        match io {
            IoAction::Kv { op, request } => self.send(n, op, request),
            IoAction::Watch {
                watch,
                bucket,
                keys,
            } => {
                let node = &mut self.nodes[n];
                if !watch.is_planner()
                    && bucket == self.names.assignments_bucket()
                    && matches!(&keys, WatchKeys::Keys(k) if k.iter().any(|k| k == Names::TERM_KEY))
                {
                    node.assign_watch = Some(watch);
                    node.stream_term = None;
                }
                node.watches.insert(watch, None);
                self.trace.line(self.now, Some(n), || {
                    format!("watch {watch:?} {bucket} {keys:?}")
                });
                if node.connected {
                    let lat = self.latency(n);
                    self.schedule(
                        self.now + lat,
                        Ev::OpenWatch {
                            node: n,
                            watch,
                            bucket,
                            keys,
                        },
                    );
                } else {
                    self.nodes[n].pending_opens.push((watch, bucket, keys));
                }
            }
            IoAction::Unwatch { watch } => {
                let node = &mut self.nodes[n];
                node.pending_opens.retain(|(w, _, _)| *w != watch);
                if let Some(Some(wid)) = node.watches.remove(&watch) {
                    self.store.unwatch(wid);
                    self.watchers.remove(&wid);
                }
            }
            // A test harness, not a driver: an action it cannot execute is a gap to fill.
            other => panic!("the simulator does not execute {other:?}; teach it"),
        }
    }
}

fn describe_node(nodes: &[Node], m: usize) -> String {
    let x = &nodes[m];
    format!(
        "n{m}({}, {:?}{})",
        x.member
            .worker_id()
            .map_or_else(|| "no id".to_owned(), ToString::to_string),
        x.status,
        if x.member.is_fenced() { ", fenced" } else { "" }
    )
}

fn unavailable() -> KvError {
    KvError::Unavailable {
        reason: "simulated: store unreachable".into(),
    }
}

fn is_write(req: &KvRequest) -> bool {
    req.is_write()
}

fn bucket_of(req: &KvRequest) -> &str {
    req.bucket()
}

fn describe(req: &KvRequest) -> (&'static str, String) {
    let (bucket, key) = (req.bucket(), req.key());
    let key = match req {
        KvRequest::Update { expected, .. } => format!("{bucket}/{key}@{}", expected.0),
        KvRequest::Keys { .. } => format!("{bucket}/{key}*"),
        _ => format!("{bucket}/{key}"),
    };
    (req.name(), key)
}

fn short_result(r: &KvResult) -> String {
    match r {
        Ok(KvReply::Written(rev)) => format!("ok r{}", rev.0),
        Ok(KvReply::Entry(Some(e))) => format!("entry r{}", e.revision.0),
        Ok(KvReply::Entry(None)) => "none".into(),
        Ok(KvReply::Deleted) => "deleted".into(),
        Ok(KvReply::Keys(k)) => format!("{} keys", k.len()),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("err {e}"),
    }
}

/// The protocol's four buckets (PROTOCOL.md §1) for `config`, in memory (the simulated store
/// keeps nothing across a restart of its own).
#[must_use]
pub fn bucket_specs(config: &ValidConfig) -> Vec<BucketSpec> {
    config
        .bucket_specs()
        .into_iter()
        .map(|spec| BucketSpec {
            storage: StorageKind::Memory,
            replicas: 1,
            ..spec
        })
        .collect()
}
