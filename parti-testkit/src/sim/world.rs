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
use parti_core::machine::{IoAction, IoEvent, KvReply, KvRequest, KvResult, OpId, WatchId};
use parti_core::member::{Action, DeliveryId, Event, Member, MemberInit, Notification};
use parti_core::planner::{PlannerNotification, PlannerState};
use parti_core::records::{
    AssignmentRecord, ClusterMeta, Names, OwnedPartition, Record, TermCounter,
};
use parti_core::rng::SplitMix64;
use parti_core::store::model::{StoreModel, WatcherId};
use parti_core::store::{
    BucketSpec, ConnectionState, KvError, KvOperation, OnMismatch, StorageKind, WatchEvent,
    WatchKeys,
};
use parti_core::strategy::AssignmentStrategy;
use parti_core::{Fence, InstanceId, Partition, PartitionId, Term, ValidConfig, WorkerId};

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
    pub(crate) catalog: Vec<Partition>,
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
            catalog,
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
        let local = self.local_now(n);
        f(&mut self.nodes[n].member, local);
        self.after_input(n)
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
        // A leaving member that owns nothing any more is releasing its id (the delete may have
        // landed before its answer comes back): it no longer acts under it.
        let releasing = m.state() == parti_core::WorkerState::Leaving && node.app.held.is_empty();
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
        }
    }

    // ----- the network and the store ----------------------------------------------------------

    pub(crate) fn is_connected(&self, n: usize) -> bool {
        self.now >= self.outage_until && self.now >= self.nodes[n].cut_until
    }

    fn latency(&mut self, n: usize) -> Duration {
        let base = self.settings.kv_latency;
        let mut l = self.between(Duration::from_micros(100), base);
        let node = &self.nodes[n];
        let mut extra = Duration::ZERO;
        if self.now < node.slow_until {
            extra = extra.max(node.slow_extra);
        }
        if self.now < self.slow_all_until {
            extra = extra.max(self.slow_all_extra);
        }
        if extra > Duration::ZERO {
            l += self.between(Duration::ZERO, extra);
        }
        l
    }

    fn send(&mut self, n: usize, op: OpId, req: KvRequest) {
        self.stats.kv_ops += 1;
        self.nodes[n].outstanding.insert(op);
        let sent = self.now;
        let timeout = self.config.operation_timeout;
        self.trace.mix(&[2, n as u64, op.0, dur_ns(sent)]);
        if self.trace.is_on() {
            let (name, key) = describe(&req);
            self.trace.line(self.now, Some(n), || {
                format!("send {:x} {name} {key}", op.0)
            });
        }
        if !self.nodes[n].connected || !self.is_connected(n) {
            if self.chance(500) {
                let d = self.between(Duration::from_micros(200), Duration::from_millis(5));
                self.reply_err(n, op, sent, sent + d, unavailable());
            } else {
                self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
                if is_write(&req) {
                    self.nodes[n].queued.push((sent, op, req));
                }
            }
            return;
        }
        if self.now < self.errors_until && self.chance(self.errors_per_mille) {
            match self.rng.below(3) {
                0 => {
                    let d = self.between(Duration::from_micros(200), Duration::from_millis(5));
                    self.reply_err(n, op, sent, sent + d, unavailable());
                }
                1 => self.reply_err(n, op, sent, sent + timeout, KvError::Timeout),
                _ => {
                    // A timeout whose write lands anyway: the outcome is unknown to the member.
                    self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
                    let l1 = self.latency(n);
                    let arrival = (sent + l1).max(self.nodes[n].last_arrival);
                    self.nodes[n].last_arrival = arrival;
                    self.schedule(
                        arrival,
                        Ev::Arrive {
                            node: n,
                            op,
                            req,
                            sent,
                            reply: None,
                        },
                    );
                }
            }
            return;
        }
        let l1 = self.latency(n);
        let l2 = self.latency(n);
        let arrival = (sent + l1).max(self.nodes[n].last_arrival);
        self.nodes[n].last_arrival = arrival;
        let reply = if arrival + l2 >= sent + timeout {
            self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
            None
        } else {
            Some(l2)
        };
        self.schedule(
            arrival,
            Ev::Arrive {
                node: n,
                op,
                req,
                sent,
                reply,
            },
        );
    }

    fn reply_err(&mut self, n: usize, op: OpId, sent: Duration, at: Duration, e: KvError) {
        self.schedule(
            at,
            Ev::Reply {
                node: n,
                op,
                sent,
                result: Err(e),
            },
        );
    }

    fn on_arrive(
        &mut self,
        n: usize,
        op: OpId,
        req: KvRequest,
        sent: Duration,
        reply: Option<Duration>,
    ) {
        let bucket = bucket_of(&req).to_owned();
        if self
            .stalls
            .get(&bucket)
            .is_some_and(|until| self.now < *until)
        {
            if reply.is_some() {
                let t = sent + self.config.operation_timeout;
                self.reply_err(n, op, sent, t, KvError::Timeout);
            }
            self.stalled.push((n, op, req, sent, reply));
            return;
        }
        self.apply(n, op, req, sent, reply);
    }

    fn apply(
        &mut self,
        n: usize,
        op: OpId,
        req: KvRequest,
        sent: Duration,
        reply: Option<Duration>,
    ) {
        let result = self.exec(&req);
        self.trace.mix(&[
            3,
            n as u64,
            op.0,
            dur_ns(self.now),
            u64::from(result.is_ok()),
        ]);
        if self.trace.is_on() {
            let (name, key) = describe(&req);
            let r = short_result(&result);
            self.trace.line(self.now, Some(n), || {
                format!("store {:x} {name} {key} -> {r}", op.0)
            });
        }
        self.drain_wakes();
        if let Some(l2) = reply {
            self.schedule(
                self.now + l2,
                Ev::Reply {
                    node: n,
                    op,
                    sent,
                    result,
                },
            );
        }
    }

    fn exec(&mut self, req: &KvRequest) -> KvResult {
        let t = self.epoch + self.now;
        match req {
            KvRequest::Entry { bucket, key } => {
                self.store.entry(bucket, key, t).map(KvReply::Entry)
            }
            KvRequest::Create { bucket, key, value } => self
                .store
                .create(bucket, key, value.clone(), t)
                .map(KvReply::Written),
            KvRequest::Update {
                bucket,
                key,
                value,
                expected,
            } => self
                .store
                .update(bucket, key, value.clone(), *expected, t)
                .map(KvReply::Written),
            KvRequest::Put { bucket, key, value } => self
                .store
                .put(bucket, key, value.clone(), t)
                .map(KvReply::Written),
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => self
                .store
                .delete(bucket, key, *expected, t)
                .map(|_| KvReply::Deleted),
            KvRequest::Keys { bucket, prefix } => {
                self.store.keys(bucket, prefix, t).map(KvReply::Keys)
            }
        }
    }

    fn on_reply(&mut self, n: usize, op: OpId, sent: Duration, result: KvResult) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n].deferred.push(Ev::Reply {
                    node: n,
                    op,
                    sent,
                    result,
                });
                return;
            }
            Status::Crashed | Status::Exited => return,
        }
        if !self.nodes[n].outstanding.contains(&op) {
            return;
        }
        if result.is_ok() && !self.is_connected(n) {
            // The answer cannot come back through a cut: the operation times out.
            let t = sent + self.config.operation_timeout;
            self.reply_err(n, op, sent, t, KvError::Timeout);
            return;
        }
        self.nodes[n].outstanding.remove(&op);
        self.trace.mix(&[
            4,
            n as u64,
            op.0,
            dur_ns(self.now),
            u64::from(result.is_ok()),
        ]);
        if self.trace.is_on() {
            let r = short_result(&result);
            self.trace
                .line(self.now, Some(n), || format!("reply {:x} {r}", op.0));
        }
        self.input(n, |m, now| {
            m.handle_event(now, Event::Io(IoEvent::KvDone { op, result }));
        });
    }

    // ----- watches -----------------------------------------------------------------------------

    fn watch_delay(&mut self) -> Duration {
        let mut d = self.between(Duration::from_micros(50), self.settings.watch_delay);
        if self.now < self.watch_delay_until {
            d += self.between(Duration::ZERO, self.watch_delay_max);
        }
        d
    }

    fn drain_wakes(&mut self) {
        while let Some(w) = self.store.poll_woken() {
            if w == self.global_watch {
                self.drain_global();
            } else if self.watchers.contains_key(&w) && self.flush_scheduled.insert(w) {
                let d = self.watch_delay();
                self.schedule(self.now + d, Ev::Flush(w));
            }
        }
    }

    /// The simulator's own watch of the assignments bucket: store-side invariants.
    fn drain_global(&mut self) {
        let w = self.global_watch;
        while let Some(ev) = self.store.poll_watch(w) {
            let WatchEvent::Change(c) = ev else {
                continue;
            };
            self.checks.churn.written();
            let KvOperation::Put(bytes) = &c.op else {
                continue;
            };
            let v = if c.key == Names::META_KEY {
                ClusterMeta::decode(bytes)
                    .ok()
                    .and_then(|m| self.checks.monotonic.meta_written(self.now, m.version))
            } else if c.key.starts_with(Names::ASSIGNMENT_PREFIX) {
                AssignmentRecord::decode(bytes).ok().and_then(|r| {
                    self.checks
                        .monotonic
                        .record_written(self.now, &c.key, r.version)
                })
            } else {
                None
            };
            if let Some(v) = v {
                self.violation(v);
            }
        }
    }

    fn on_open_watch(&mut self, n: usize, watch: WatchId, bucket: &str, keys: WatchKeys) {
        if !self.nodes[n].watches.contains_key(&watch)
            || matches!(self.nodes[n].status, Status::Crashed | Status::Exited)
        {
            return;
        }
        let t = self.epoch + self.now;
        match self.store.watch(bucket, keys, t) {
            Ok(wid) => {
                self.nodes[n].watches.insert(watch, Some(wid));
                self.watchers.insert(wid, (n, watch));
                self.drain_wakes();
            }
            Err(e) => {
                let d = self.watch_delay();
                self.schedule(self.now + d, Ev::Control(Control::Resync));
                self.trace
                    .line(self.now, Some(n), || format!("watch open failed: {e}"));
            }
        }
    }

    fn kick_watches(&mut self, n: usize) {
        let wids: Vec<WatcherId> = self.nodes[n].watches.values().flatten().copied().collect();
        for w in wids {
            if self.store.pending(w) > 0 && self.flush_scheduled.insert(w) {
                let d = self.watch_delay();
                self.schedule(self.now + d, Ev::Flush(w));
            }
        }
    }

    fn on_flush(&mut self, w: WatcherId) {
        self.flush_scheduled.remove(&w);
        let Some(&(n, watch)) = self.watchers.get(&w) else {
            return;
        };
        if self.nodes[n].status != Status::Running || !self.nodes[n].connected {
            return; // resumed or reconnected later: kick_watches
        }
        let batch = 1 + self.rng.below(self.settings.watch_batch.max(1));
        for _ in 0..batch {
            if self.nodes[n].status != Status::Running || !self.watchers.contains_key(&w) {
                return;
            }
            let Some(item) = self.store.poll_watch(w) else {
                break;
            };
            self.feed_watch_item(n, watch, item);
        }
        if self.watchers.contains_key(&w)
            && self.store.pending(w) > 0
            && self.flush_scheduled.insert(w)
        {
            let d = self.watch_delay();
            self.schedule(self.now + d, Ev::Flush(w));
        }
    }

    fn feed_watch_item(&mut self, n: usize, watch: WatchId, item: WatchEvent) {
        self.trace.mix(&[5, n as u64, watch.0, dur_ns(self.now)]);
        if self.trace.is_on() {
            let text = match &item {
                WatchEvent::Change(c) => format!(
                    "watch {:x} {} r{} {}",
                    watch.0,
                    c.key,
                    c.revision.0,
                    match &c.op {
                        KvOperation::Put(_) => "put",
                        KvOperation::Delete => "del",
                        KvOperation::Purge => "purge",
                    }
                ),
                other => format!("watch {:x} {other:?}", watch.0),
            };
            self.trace.line(self.now, Some(n), || text);
        }
        let mut stale = None;
        if self.nodes[n].assign_watch == Some(watch)
            && let WatchEvent::Change(c) = &item
            && let KvOperation::Put(bytes) = &c.op
        {
            if c.key == Names::TERM_KEY {
                if let Ok(t) = TermCounter::decode(bytes) {
                    let node = &mut self.nodes[n];
                    node.stream_term = Some(node.stream_term.map_or(t.term, |s| s.max(t.term)));
                }
            } else if let Ok(r) = AssignmentRecord::decode(bytes)
                && let Some(s) = self.nodes[n].stream_term
                && r.term < s
            {
                stale = Some((r.term, s, self.nodes[n].member.applied_version()));
            }
        }
        let delivers = self.input(n, |m, now| {
            m.handle_event(
                now,
                Event::Io(IoEvent::Watch {
                    watch,
                    event: Ok(item),
                }),
            );
        });
        if let Some((rt, st, before)) = stale {
            let after = self.nodes[n].member.applied_version();
            if let Some(v) = self
                .checks
                .leaders
                .stale_record(self.now, n, rt, st, before, after, delivers)
            {
                self.violation(v);
            }
        }
    }

    // ----- the application model ---------------------------------------------------------------

    fn handler_latency(&mut self) -> Duration {
        let max = self.settings.handler_latency;
        if self.chance(100) {
            self.between(Duration::ZERO, max)
        } else {
            self.between(Duration::ZERO, max / 10)
        }
    }

    fn deliver(
        &mut self,
        n: usize,
        id: DeliveryId,
        revoked: Vec<OwnedPartition>,
        assigned: Vec<OwnedPartition>,
    ) {
        self.trace.mix(&[
            6,
            n as u64,
            id.0,
            revoked.len() as u64,
            assigned.len() as u64,
        ]);
        self.trace.line(self.now, Some(n), || {
            format!(
                "deliver #{} revoke {:?} assign {:?}",
                id.0,
                revoked
                    .iter()
                    .map(|o| o.partition.id().to_string())
                    .collect::<Vec<_>>(),
                assigned
                    .iter()
                    .map(|o| format!(
                        "{}@{}.{}",
                        o.partition.id(),
                        o.fence.term.0,
                        o.fence.version.0
                    ))
                    .collect::<Vec<_>>()
            )
        });
        let worker = self.nodes[n].member.worker_id().cloned();
        self.nodes[n].app.queue.push_back(Delivery {
            id,
            revoked,
            assigned,
            worker,
            applied: false,
        });
        if self.nodes[n].app.running.is_none() {
            self.start_delivery(n);
        }
    }

    fn start_delivery(&mut self, n: usize) {
        let Some(d) = self.nodes[n].app.queue.pop_front() else {
            return;
        };
        let id = d.id;
        let lat = if d.revoked.is_empty() {
            Duration::ZERO
        } else {
            self.handler_latency()
        };
        self.nodes[n].app.running = Some(d);
        self.schedule(
            self.now + lat,
            Ev::AppRevoked {
                node: n,
                delivery: id,
            },
        );
    }

    fn on_app_revoked(&mut self, n: usize, delivery: DeliveryId) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n]
                    .deferred
                    .push(Ev::AppRevoked { node: n, delivery });
                return;
            }
            _ => return,
        }
        let Some(d) = self.nodes[n].app.running.as_mut() else {
            return;
        };
        if d.id != delivery {
            return;
        }
        d.applied = true;
        let revoked: Vec<PartitionId> =
            d.revoked.iter().map(|o| o.partition.id().clone()).collect();
        let assigned = d.assigned.clone();
        let worker = d.worker.clone();
        for p in &revoked {
            self.lose(n, p);
        }
        for o in assigned {
            self.gain(n, worker.as_ref(), o.partition.id(), o.fence);
        }
        let lat = if self.nodes[n]
            .app
            .running
            .as_ref()
            .is_some_and(|d| d.assigned.is_empty())
        {
            Duration::ZERO
        } else {
            self.handler_latency()
        };
        self.schedule(self.now + lat, Ev::AppDone { node: n, delivery });
    }

    fn on_app_done(&mut self, n: usize, delivery: DeliveryId) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n]
                    .deferred
                    .push(Ev::AppDone { node: n, delivery });
                return;
            }
            _ => return,
        }
        if self.nodes[n].app.running.as_ref().map(|d| d.id) != Some(delivery) {
            return;
        }
        self.nodes[n].app.running = None;
        self.trace.mix(&[7, n as u64, delivery.0, dur_ns(self.now)]);
        self.input(n, |m, now| {
            m.handle_event(now, Event::Delivered { delivery })
        });
        if self.nodes[n].app.running.is_none() && self.nodes[n].status == Status::Running {
            self.start_delivery(n);
        }
    }

    fn gain(&mut self, n: usize, worker: Option<&WorkerId>, p: &PartitionId, fence: Fence) {
        self.nodes[n].app.held.insert(p.clone(), fence);
        let now = self.now;
        let nodes = &self.nodes;
        let v1 = self.checks.exclusive.gain(
            now,
            n,
            p,
            |m| nodes[m].status == Status::Running,
            |m| describe_node(nodes, m),
        );
        let v2 = worker.and_then(|w| self.checks.monotonic.granted(now, n, w, p, fence));
        self.checks.reaction.owned(now, n, p);
        for v in [v1, v2].into_iter().flatten() {
            self.violation(v);
        }
    }

    fn lose(&mut self, n: usize, p: &PartitionId) {
        self.nodes[n].app.held.remove(p);
        self.checks.exclusive.lose(n, p);
    }

    // ----- notifications -----------------------------------------------------------------------

    fn notification(&mut self, n: usize, note: Notification) {
        match &note {
            Notification::OwnershipLost { partitions } => {
                let ids: BTreeSet<PartitionId> = partitions
                    .iter()
                    .map(|o| o.partition.id().clone())
                    .collect();
                for p in &ids {
                    self.lose(n, p);
                }
                if let Some(d) = self.nodes[n].app.running.as_mut()
                    && !d.applied
                {
                    d.assigned.retain(|o| !ids.contains(o.partition.id()));
                }
            }
            Notification::LeadershipAcquired { .. } => self.stats.leaderships += 1,
            Notification::Planner(PlannerNotification::StateChanged { to, .. }) => {
                self.nodes[n].planner_state = Some(*to);
            }
            Notification::Planner(PlannerNotification::Published { .. }) => {
                self.stats.publications += 1;
                self.published.push((self.now, n));
            }
            Notification::Planner(PlannerNotification::PlanStarted { moved, .. }) => {
                self.stats.moved += *moved as u64;
            }
            Notification::Planner(PlannerNotification::HandoffStalled { .. }) => {
                self.stats.stalls += 1;
            }
            Notification::Planner(PlannerNotification::WorkerDead { worker }) => {
                self.stats.deaths += 1;
                // A running, connected process under that id (fenced or not: it is alive and
                // will be re-granted; declaring it dead is an emergency for nothing).
                let alive = self.nodes.iter().enumerate().any(|(i, x)| {
                    x.status == Status::Running
                        && self.is_connected(i)
                        && x.member.worker_id() == Some(worker)
                });
                if alive {
                    self.stats.false_deaths += 1;
                }
                self.deaths.push((self.now, worker.clone(), alive));
            }
            _ => {}
        }
        if self.trace.is_on() {
            self.trace
                .line(self.now, Some(n), || format!("note {note:?}"));
        }
    }

    // ----- processes ---------------------------------------------------------------------------

    /// Starts a new process with this preferred id number; returns its index.
    pub fn start_node(&mut self, preferred: Option<u32>) -> usize {
        let mut cfg = self.config.clone();
        cfg.preferred_id = preferred;
        let valid: ValidConfig = cfg.validate().expect("the simulator's config validates");
        let instance =
            InstanceId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
        let ppm = if self.settings.drift_ppm > 0 && self.chance(500) {
            let span = u64::try_from(self.settings.drift_ppm * 2 + 1).unwrap_or(1);
            i64::try_from(self.rng.below(span)).unwrap_or(0) - self.settings.drift_ppm
        } else {
            0
        };
        let drift = Drift {
            born: self.now,
            ppm,
        };
        let seed = self.rng.next_u64();
        let wall = WALL0 + u64::try_from(self.now.as_millis()).unwrap_or(0);
        let member = Member::new(
            valid,
            self.strategy.clone(),
            MemberInit {
                instance,
                seed,
                wall_epoch_ms: wall,
                partitions: self.catalog.clone(),
            },
            self.epoch + drift.local(self.now),
        );
        let n = self.nodes.len();
        self.nodes.push(Node {
            member,
            instance,
            preferred,
            drift,
            status: Status::Running,
            wake_at: None,
            deferred: Vec::new(),
            last_arrival: self.now,
            connected: true,
            queued: Vec::new(),
            pending_opens: Vec::new(),
            watches: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            app: App::default(),
            slow_until: Duration::ZERO,
            slow_extra: Duration::ZERO,
            cut_until: Duration::ZERO,
            respawn: false,
            assign_watch: None,
            stream_term: None,
            catalog_gen: self.catalog_gen,
            planner_state: None,
        });
        self.stats.started += 1;
        self.trace.mix(&[8, n as u64, dur_ns(self.now)]);
        self.trace.line(self.now, Some(n), || {
            format!("start preferred={preferred:?} drift={ppm}ppm")
        });
        self.input(n, |m, now| m.start(now));
        if !self.is_connected(n) {
            self.nodes[n].connected = false;
            self.input(n, |m, now| {
                m.handle_event(now, Event::Connection(ConnectionState::Disconnected));
            });
        }
        n
    }

    /// The process is gone (crash) or exited (its member stopped).
    fn exit(&mut self, n: usize, status: Status) {
        let node = &mut self.nodes[n];
        if matches!(node.status, Status::Crashed | Status::Exited) {
            return;
        }
        node.status = status;
        node.wake_at = None;
        node.deferred.clear();
        node.queued.clear();
        node.pending_opens.clear();
        node.outstanding.clear();
        node.app.queue.clear();
        node.app.running = None;
        let held: Vec<PartitionId> = node.app.held.keys().cloned().collect();
        let wids: Vec<WatcherId> = node.watches.values().flatten().copied().collect();
        node.watches.clear();
        for p in &held {
            self.lose(n, p);
        }
        for w in wids {
            self.store.unwatch(w);
            self.watchers.remove(&w);
        }
        let now = self.now;
        let _ = self.checks.identity.update(now, n, None, |_| false, false);
        self.trace.mix(&[9, n as u64, dur_ns(now)]);
        self.trace
            .line(now, Some(n), || format!("process {status:?}"));
        if status == Status::Exited && self.nodes[n].respawn {
            let preferred = self.nodes[n].preferred;
            let d = self.between(Duration::from_millis(20), Duration::from_millis(300));
            self.schedule(now + d, Ev::Respawn(preferred));
        }
    }

    fn on_resume(&mut self, n: usize) {
        if self.nodes[n].status != Status::Paused {
            return;
        }
        self.nodes[n].status = Status::Running;
        self.nodes[n].wake_at = None;
        self.trace.mix(&[10, n as u64, dur_ns(self.now)]);
        self.trace.line(self.now, Some(n), || "resume".into());
        // Overdue timers first, as a real process would act on them.
        self.input(n, |m, now| m.handle_timeout(now));
        if self.nodes[n].status != Status::Running {
            return;
        }
        if self.nodes[n].catalog_gen != self.catalog_gen {
            self.nodes[n].catalog_gen = self.catalog_gen;
            let c = self.catalog.clone();
            self.input(n, |m, now| m.set_partitions(now, c));
        }
        self.sync_connection(n);
        let now = self.now;
        let nodes = &self.nodes;
        let v = self.checks.exclusive.recheck(
            now,
            n,
            nodes[n].app.held.keys(),
            |m| nodes[m].status == Status::Running,
            |m| describe_node(nodes, m),
        );
        if let Some(v) = v {
            self.violation(v);
        }
        self.check_node(n, true);
        let deferred = std::mem::take(&mut self.nodes[n].deferred);
        for ev in deferred {
            self.schedule(now, ev);
        }
        self.kick_watches(n);
    }

    /// Feeds a connectivity change to a running process, and on reconnect sends what waited.
    fn sync_connection(&mut self, n: usize) {
        if self.nodes[n].status != Status::Running {
            return;
        }
        let up = self.is_connected(n);
        if up == self.nodes[n].connected {
            return;
        }
        self.nodes[n].connected = up;
        let state = if up {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        };
        self.trace
            .line(self.now, Some(n), || format!("connection {state:?}"));
        self.input(n, |m, now| m.handle_event(now, Event::Connection(state)));
        if up && self.nodes[n].status == Status::Running {
            let queued = std::mem::take(&mut self.nodes[n].queued);
            for (sent, op, req) in queued {
                if self.now <= sent + self.settings.late_window {
                    let l1 = self.latency(n);
                    let arrival = (self.now + l1).max(self.nodes[n].last_arrival);
                    self.nodes[n].last_arrival = arrival;
                    self.schedule(
                        arrival,
                        Ev::Arrive {
                            node: n,
                            op,
                            req,
                            sent,
                            reply: None,
                        },
                    );
                }
            }
            let opens = std::mem::take(&mut self.nodes[n].pending_opens);
            for (watch, bucket, keys) in opens {
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
            }
            self.kick_watches(n);
        }
    }

    fn recheck(&mut self) {
        for n in 0..self.nodes.len() {
            self.sync_connection(n);
        }
        let now = self.now;
        let (release, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stalled)
            .into_iter()
            .partition(|(_, _, req, _, _)| {
                self.stalls
                    .get(bucket_of(req))
                    .is_none_or(|until| now >= *until)
            });
        self.stalled = keep;
        for (n, op, req, sent, reply) in release {
            if self.chance(750) {
                let reply = reply.filter(|l2| now + *l2 < sent + self.config.operation_timeout);
                self.apply(n, op, req, sent, reply);
            }
        }
    }

    // ----- faults and workload -----------------------------------------------------------------

    /// A running process chosen by `pick`.
    pub(crate) fn resolve(&mut self, pick: Pick) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Running)
            .collect();
        match pick {
            Pick::Node(i) => (i < self.nodes.len()).then_some(i),
            Pick::Leader => running
                .iter()
                .copied()
                .find(|i| self.nodes[*i].member.is_leader()),
            Pick::Random => {
                if running.is_empty() {
                    None
                } else {
                    let k = self.rng.below(running.len() as u64) as usize;
                    Some(running[k])
                }
            }
            Pick::Follower => {
                let f: Vec<usize> = running
                    .into_iter()
                    .filter(|i| !self.nodes[*i].member.is_leader())
                    .collect();
                if f.is_empty() {
                    None
                } else {
                    let k = self.rng.below(f.len() as u64) as usize;
                    Some(f[k])
                }
            }
        }
    }

    fn running_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|x| x.status == Status::Running && !x.member.is_stopped())
            .count()
    }

    fn on_control(&mut self, c: Control) {
        if self.now >= self.chaos_until {
            return; // the heal phase began: no more faults or workload
        }
        self.trace.line(self.now, None, || format!("control {c:?}"));
        self.trace.mix(&[11, dur_ns(self.now)]);
        match c {
            Control::Start(p) => {
                let _ = self.start_node(p);
            }
            Control::Crash(pick, restart) => {
                if self.running_count() <= 1 && !matches!(pick, Pick::Node(_)) {
                    return;
                }
                if let Some(n) = self.resolve(pick) {
                    self.crash(n);
                    if let Some((after, same)) = restart {
                        let p = if same { self.nodes[n].preferred } else { None };
                        self.control_at(self.now + after, Control::Start(p));
                    }
                }
            }
            Control::Pause(pick, d) => {
                if let Some(n) = self.resolve(pick) {
                    self.pause(n, d);
                }
            }
            Control::Leave(pick) => {
                if self.running_count() <= 1 && !matches!(pick, Pick::Node(_)) {
                    return;
                }
                if let Some(n) = self.resolve(pick)
                    && self.nodes[n].status == Status::Running
                {
                    self.input(n, |m, now| m.request_leave(now));
                }
            }
            Control::Restart(pick) => {
                if let Some(n) = self.resolve(pick)
                    && self.nodes[n].status == Status::Running
                {
                    self.nodes[n].respawn = true;
                    self.input(n, |m, now| m.request_restart(now));
                }
            }
            Control::Outage(d) => self.outage(d),
            Control::Cut(pick, d) => {
                if let Some(n) = self.resolve(pick) {
                    self.cut(n, d);
                }
            }
            Control::Stall(bucket, d) => {
                self.stats.faults += 1;
                let until = self.now + d;
                let e = self.stalls.entry(bucket).or_insert(until);
                *e = (*e).max(until);
                self.schedule(until, Ev::Recheck);
            }
            Control::Slow(pick, extra, d) => {
                self.stats.faults += 1;
                match pick {
                    None => {
                        self.slow_all_until = self.now + d;
                        self.slow_all_extra = extra;
                    }
                    Some(p) => {
                        if let Some(n) = self.resolve(p) {
                            self.nodes[n].slow_until = self.now + d;
                            self.nodes[n].slow_extra = extra;
                        }
                    }
                }
            }
            Control::WatchDelay(max, d) => {
                self.stats.faults += 1;
                self.watch_delay_until = self.now + d;
                self.watch_delay_max = max;
            }
            Control::Errors(pm, d) => {
                self.stats.faults += 1;
                self.errors_until = self.now + d;
                self.errors_per_mille = pm;
            }
            Control::Resync => {
                let wids: Vec<WatcherId> = self.watchers.keys().copied().collect();
                if !wids.is_empty() {
                    self.stats.faults += 1;
                    let w = wids[self.rng.below(wids.len() as u64) as usize];
                    let t = self.epoch + self.now;
                    self.store.resync_watch(w, t);
                    self.drain_wakes();
                }
            }
            Control::Catalog => self.change_catalog(),
            Control::Weights => self.change_weights(),
        }
    }

    /// Crashes process `n` now.
    pub fn crash(&mut self, n: usize) {
        if matches!(self.nodes[n].status, Status::Crashed | Status::Exited) {
            return;
        }
        self.stats.crashes += 1;
        self.exit(n, Status::Crashed);
    }

    /// `shutdown_for_restart` of process `n`, without starting a new process afterwards.
    pub fn shutdown_for_restart(&mut self, n: usize) {
        if self.nodes[n].status == Status::Running {
            self.input(n, |m, now| m.request_restart(now));
        }
    }

    /// Pauses process `n` for `d`.
    pub fn pause(&mut self, n: usize, d: Duration) {
        if self.nodes[n].status != Status::Running {
            return;
        }
        self.stats.faults += 1;
        self.nodes[n].status = Status::Paused;
        self.trace
            .line(self.now, Some(n), || format!("pause {d:?}"));
        self.schedule(self.now + d, Ev::Resume(n));
    }

    /// Cuts process `n` off the store for `d`.
    pub fn cut(&mut self, n: usize, d: Duration) {
        self.stats.faults += 1;
        let until = self.now + d;
        self.nodes[n].cut_until = self.nodes[n].cut_until.max(until);
        self.schedule(until, Ev::Recheck);
        self.sync_connection(n);
    }

    /// Makes the store unreachable for everyone for `d`.
    pub fn outage(&mut self, d: Duration) {
        self.stats.faults += 1;
        self.outage_until = self.outage_until.max(self.now + d);
        let t = self.outage_until;
        self.schedule(t, Ev::Recheck);
        self.recheck();
    }

    /// Stalls every operation on `bucket` for `d`.
    pub fn stall(&mut self, bucket: &str, d: Duration) {
        self.on_control(Control::Stall(bucket.to_owned(), d));
    }

    /// Slows every KV operation of process `n` by up to `extra` for `d`.
    pub fn slow(&mut self, n: usize, extra: Duration, d: Duration) {
        self.nodes[n].slow_until = self.now + d;
        self.nodes[n].slow_extra = extra;
    }

    /// Ends every fault now (the heal phase).
    pub fn heal(&mut self) {
        self.chaos_until = self.now;
        self.outage_until = self.outage_until.min(self.now);
        for node in &mut self.nodes {
            node.cut_until = node.cut_until.min(self.now);
            node.slow_until = Duration::ZERO;
        }
        for until in self.stalls.values_mut() {
            *until = (*until).min(self.now);
        }
        self.slow_all_until = Duration::ZERO;
        self.watch_delay_until = Duration::ZERO;
        self.errors_until = Duration::ZERO;
        self.recheck();
        let paused: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Paused)
            .collect();
        for n in paused {
            self.on_resume(n);
        }
        self.trace.line(self.now, None, || "heal".into());
    }

    /// Replaces the catalog on every process (the leader acts on it).
    pub fn set_catalog(&mut self, catalog: Vec<Partition>) {
        let ids: BTreeSet<PartitionId> = catalog.iter().map(|p| p.id().clone()).collect();
        for p in &self.catalog {
            if !ids.contains(p.id()) {
                self.checks.reaction.removed(p.id());
            }
        }
        self.catalog = catalog;
        self.catalog_gen += 1;
        self.stats.faults += 1;
        for n in 0..self.nodes.len() {
            if self.nodes[n].status == Status::Running {
                self.nodes[n].catalog_gen = self.catalog_gen;
                let c = self.catalog.clone();
                self.input(n, |m, now| m.set_partitions(now, c));
            }
        }
    }

    fn change_catalog(&mut self) {
        let mut c = self.catalog.clone();
        let remove = self.rng.below(3) as usize;
        for _ in 0..remove.min(c.len().saturating_sub(1)) {
            let i = self.rng.below(c.len() as u64) as usize;
            c.remove(i);
        }
        let add = self.rng.below(3);
        for _ in 0..add {
            let id = self.next_partition;
            self.next_partition += 1;
            if let Ok(p) = Partition::with_default_weight([format!("p{id}")]) {
                c.push(p);
            }
        }
        self.set_catalog(c);
    }

    fn change_weights(&mut self) {
        let mut c = self.catalog.clone();
        let k = 1 + self.rng.below(4);
        for _ in 0..k {
            if c.is_empty() {
                break;
            }
            let i = self.rng.below(c.len() as u64) as usize;
            let w = 1 + self.rng.below(1000);
            if let Ok(p) = Partition::from_id(c[i].id().clone(), w) {
                c[i] = p;
            }
        }
        self.set_catalog(c);
    }

    // ----- views -------------------------------------------------------------------------------

    /// Every process ever started, by index.
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Running processes.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, x)| x.status == Status::Running)
    }

    /// The running leaders.
    #[must_use]
    pub fn leaders(&self) -> Vec<usize> {
        self.running()
            .filter(|(_, x)| x.member.is_leader())
            .map(|(i, _)| i)
            .collect()
    }

    /// The catalog's partition ids.
    #[must_use]
    pub fn catalog_ids(&self) -> Vec<PartitionId> {
        self.catalog.iter().map(|p| p.id().clone()).collect()
    }

    /// Partition → how many running processes believe they own it.
    #[must_use]
    pub fn believers(&self) -> BTreeMap<PartitionId, usize> {
        let mut m = BTreeMap::new();
        for (_, x) in self.running() {
            for p in x.app.held.keys() {
                *m.entry(p.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Whether every catalog partition is believed owned by exactly one running process.
    #[must_use]
    pub fn is_covered(&self) -> bool {
        let b = self.believers();
        b.len() == self.catalog.len()
            && b.values().all(|n| *n == 1)
            && self.catalog.iter().all(|p| b.contains_key(p.id()))
    }

    /// One running leader, its planner idle, every catalog partition owned once, every running
    /// process `Stable`.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        let leaders = self.leaders();
        leaders.len() == 1
            && self.nodes[leaders[0]].planner_state() == Some(PlannerState::Idle)
            && self.is_covered()
            && self
                .running()
                .all(|(_, x)| x.member.state() == parti_core::WorkerState::Stable)
    }

    /// Worker id → partitions its running process believes it owns.
    #[must_use]
    pub fn ownership_by_worker(&self) -> BTreeMap<WorkerId, BTreeSet<PartitionId>> {
        let mut m: BTreeMap<WorkerId, BTreeSet<PartitionId>> = BTreeMap::new();
        for (_, x) in self.running() {
            if let Some(w) = x.member.worker_id() {
                m.entry(w.clone())
                    .or_default()
                    .extend(x.app.held.keys().cloned());
            }
        }
        m
    }

    /// Checks coverage now (invariant 2).
    pub fn check_coverage(&mut self, why: &str) -> bool {
        let ids = self.catalog_ids();
        let b = self.believers();
        match self.checks.coverage.check(self.now, &ids, &b, why) {
            Some(v) => {
                self.violation(v);
                false
            }
            None => true,
        }
    }

    /// The violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        &self.checks.violations
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The trace.
    #[must_use]
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Plans published at or after `t`.
    #[must_use]
    pub fn publications_since(&self, t: Duration) -> usize {
        self.published.iter().filter(|(at, _)| *at >= t).count()
    }

    /// Workers declared dead at or after `t`: `(time, worker, a running process held it)`.
    #[must_use]
    pub fn deaths_since(&self, t: Duration) -> Vec<(Duration, WorkerId, bool)> {
        self.deaths.iter().filter(|d| d.0 >= t).cloned().collect()
    }

    /// One line per process: status, id, state, leadership, fence, what it holds.
    #[must_use]
    pub fn dump(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let m = &x.member;
                format!(
                    "n{i} {:?} {} {:?}{}{}{} applied {:?} holds {} (record-watch term {:?}) connected={}",
                    x.status,
                    m.worker_id().map_or_else(|| "-".to_owned(), ToString::to_string),
                    m.state(),
                    if m.is_leader() { " LEADER" } else { "" },
                    if m.is_fenced() { " fenced" } else { "" },
                    if m.is_degraded() { " degraded" } else { "" },
                    m.applied_version(),
                    x.app.held.len(),
                    x.stream_term,
                    x.connected
                )
            })
            .collect()
    }

    /// The store model.
    #[must_use]
    pub fn store(&self) -> &StoreModel {
        &self.store
    }

    /// Bucket and key names.
    #[must_use]
    pub fn names(&self) -> &Names {
        &self.names
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
    !matches!(req, KvRequest::Entry { .. } | KvRequest::Keys { .. })
}

fn bucket_of(req: &KvRequest) -> &str {
    match req {
        KvRequest::Entry { bucket, .. }
        | KvRequest::Create { bucket, .. }
        | KvRequest::Update { bucket, .. }
        | KvRequest::Put { bucket, .. }
        | KvRequest::Delete { bucket, .. }
        | KvRequest::Keys { bucket, .. } => bucket,
    }
}

fn describe(req: &KvRequest) -> (&'static str, String) {
    let key = match req {
        KvRequest::Entry { bucket, key }
        | KvRequest::Create { bucket, key, .. }
        | KvRequest::Put { bucket, key, .. }
        | KvRequest::Delete { bucket, key, .. } => format!("{bucket}/{key}"),
        KvRequest::Update {
            bucket,
            key,
            expected,
            ..
        } => format!("{bucket}/{key}@{}", expected.0),
        KvRequest::Keys { bucket, prefix } => format!("{bucket}/{prefix}*"),
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
        Err(e) => format!("err {e}"),
    }
}

/// The protocol's four buckets (PROTOCOL.md §1) for `config`.
#[must_use]
pub fn bucket_specs(config: &ValidConfig) -> Vec<BucketSpec> {
    let names = config.names();
    let spec = |name: String, max_age: Option<Duration>| BucketSpec {
        name,
        history: 1,
        max_age,
        replicas: 1,
        storage: StorageKind::Memory,
    };
    vec![
        spec(names.ids_bucket(), Some(config.identity_ttl)),
        spec(names.heartbeats_bucket(), Some(config.heartbeat_ttl)),
        spec(names.leader_bucket(), Some(config.election_ttl)),
        spec(names.assignments_bucket(), None),
    ]
}
