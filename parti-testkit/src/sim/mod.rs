//! The deterministic simulator: whole clusters of parti-core machines under seeded faults, with
//! the protocol's invariants checked at every step (PROTOCOL.md §10, STYLE.md §17).
//!
//! One `u64` seed decides everything: the cluster's size, the catalog, every latency, every fault
//! and its timing, every member's clock rate and random choices. The simulator runs N
//! [`Member`](parti_core::member::Member)s — each leading when it wins — over one
//! [`StoreModel`](parti_core::store::model::StoreModel), in virtual time, single-threaded, and
//! never sleeps. A run has a **chaos phase** (faults and workload), then a **heal phase** (faults
//! stop) that must converge within a bound computed from the config, then a still period (no
//! churn) and two probe crashes (bounded reaction).
//!
//! ```
//! use parti_testkit::sim::{SimOptions, run};
//! let report = run(&SimOptions::seed(7));
//! assert!(report.violations.is_empty(), "{}", report.summary());
//! assert_eq!(report.trace_hash, run(&SimOptions::seed(7)).trace_hash);
//! ```
//!
//! What a member "believes it owns" is the application model's view: from the start of
//! `on_assigned` until the end of `on_revoked` or an `OwnershipLost` notification. Handler
//! latencies, KV latencies, watch delays and batches are drawn from the seed (module `world`).
//!
//! Replay: `cargo run -p parti-testkit --release --bin parti-sim -- --seed N --trace`.

mod chaos;
mod clock;
pub mod invariants;
mod queue;
pub mod scenarios;
mod trace;
mod world;

use std::sync::Arc;
use std::time::Duration;

use parti_core::config::Config;
use parti_core::rng::SplitMix64;
use parti_core::{Partition, ValidConfig};

pub use invariants::Violation;
pub use trace::{EXCERPT_LINES, Trace};
pub use world::{
    Control, EventKind, Node, Pick, Profile, Stats, Status, World, WorldSettings, bucket_specs,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed.
    pub seed: u64,
    /// Initial processes (`None`: 2–6 from the seed).
    pub members: Option<usize>,
    /// Partitions (`None`: 4–48 from the seed).
    pub partitions: Option<usize>,
    /// Length of the chaos phase.
    pub chaos: Duration,
    /// Average gap between chaos events.
    pub chaos_gap: Duration,
    /// At most this many processes are started by the workload.
    pub max_members: usize,
    /// Whether to inject faults and workload at all.
    pub faults: bool,
    /// Keep this many trace lines (`None`: hash only).
    pub trace: Option<usize>,
    /// The member config (default: [`Config::fast`]).
    pub config: Config,
    /// Latencies and delays.
    pub settings: WorldSettings,
    /// Length of the still period after convergence.
    pub still: Duration,
    /// Whether to crash a follower and then the leader after convergence (invariant 7).
    pub probes: bool,
    /// Test-only planner faults, to prove the harness can fail.
    pub planner_faults: parti_core::planner::PlannerFaults,
    /// One seed in four runs with quick elections ([`quick_elections`]): leadership moves
    /// several times while a member is still releasing a partition or has not fenced yet.
    pub timing_variants: bool,
}

/// `config` with elections about three times quicker than its heartbeats' fencing:
/// `election_ttl` 300 ms (lease margin 30 ms) and `heartbeat_ttl` 1.8 s. Three leaders can
/// follow each other while one member, cut off or releasing slowly, still holds what the first
/// of them revoked — the class of the planner property's 60,000-case failure (a deposed
/// leader's late write kept by the third leader).
#[must_use]
pub fn quick_elections(config: &Config) -> Config {
    let mut c = config.clone();
    c.election_ttl = Duration::from_millis(300);
    c.lease_margin = Duration::from_millis(30);
    c.heartbeat_ttl = c.heartbeat_ttl.max(Duration::from_millis(1_800));
    c.emergency_grace = c.emergency_grace.min(c.heartbeat_ttl);
    c
}

impl SimOptions {
    /// The default mixed-fault run of `seed`.
    #[must_use]
    pub fn seed(seed: u64) -> Self {
        SimOptions {
            seed,
            members: None,
            partitions: None,
            chaos: Duration::from_secs(20),
            chaos_gap: Duration::from_millis(700),
            max_members: 8,
            faults: true,
            trace: None,
            config: Config::fast(),
            settings: WorldSettings::default(),
            still: Duration::from_secs(2),
            probes: true,
            planner_faults: parti_core::planner::PlannerFaults::default(),
            timing_variants: true,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Initial processes.
    pub members: usize,
    /// Initial partitions.
    pub partitions: usize,
    /// Invariants broken (empty: the run is clean).
    pub violations: Vec<Violation>,
    /// Hash of the whole trace (equal for two runs of one seed).
    pub trace_hash: u64,
    /// Counters.
    pub stats: Stats,
    /// Reaction times of the probe crashes.
    pub reactions: Vec<Duration>,
    /// Trace lines kept (when tracing).
    pub trace: Vec<String>,
}

impl SimReport {
    /// One line.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} members, {} partitions, {} steps, {:.1}s simulated, {} publications, {} \
             crashes, {} faults, {} deaths ({} false), {} violations{}",
            self.seed,
            self.members,
            self.partitions,
            self.steps,
            self.simulated.as_secs_f64(),
            self.stats.publications,
            self.stats.crashes,
            self.stats.faults,
            self.stats.deaths,
            self.stats.false_deaths,
            self.violations.len(),
            self.violations
                .first()
                .map(|v| format!(": {v}"))
                .unwrap_or_default()
        )
    }
}

/// `n` partitions `p0 … p{n-1}` of default weight.
#[must_use]
pub fn partitions(n: usize) -> Vec<Partition> {
    (0..n)
        .filter_map(|i| Partition::with_default_weight([format!("p{i}")]).ok())
        .collect()
}

/// How long after the faults stop the cluster must have converged: every wait the protocol may
/// legitimately make, added up (a leave or restart finishing, degraded exit and its recovery
/// grace, a capped window and the cooldown, a death, an election) plus 2 s for round trips.
#[must_use]
pub fn heal_bound(c: &Config) -> Duration {
    c.shutdown_timeout.max(c.rejoin_window)
        + c.degraded.exit_after
        + c.degraded.recovery_grace
        + 2 * c.cold_start_window.max(c.planned_scale_window)
        + c.min_rebalance_interval
        + c.heartbeat_ttl
        + c.emergency_grace
        + c.election_ttl
        + Duration::from_secs(2)
}

/// Slack for "publication time" in invariant 7: two round trips, a watch delivery and two
/// handlers, with margin.
pub const REACTION_SLACK: Duration = Duration::from_millis(300);

/// A world for `opts` with nothing started yet.
#[must_use]
pub fn world(opts: &SimOptions, catalog: Vec<Partition>) -> World {
    World::new(
        opts.seed,
        opts.config.clone(),
        catalog,
        Arc::new(parti_strategy::StickyBalanced::default()),
        opts.settings.clone(),
        Trace::new(opts.trace),
    )
}

/// Runs one seed: chaos, heal, still period, probes.
#[must_use]
pub fn run(opts: &SimOptions) -> SimReport {
    let _guard = parti_core::planner::PlannerFaults::install(opts.planner_faults);
    let mut pick = SplitMix64::new(opts.seed ^ 0x5eed_5eed_5eed_5eed);
    let members = opts
        .members
        .unwrap_or(2 + usize::try_from(pick.below(5)).unwrap_or(0));
    let nparts = opts
        .partitions
        .unwrap_or(4 + usize::try_from(pick.below(45)).unwrap_or(0));
    let quick = opts.timing_variants && pick.below(4) == 0;
    let config = if quick {
        quick_elections(&opts.config)
    } else {
        opts.config.clone()
    };
    let opts = &SimOptions {
        config,
        ..opts.clone()
    };
    let mut w = world(opts, partitions(nparts));
    let valid: ValidConfig = opts
        .config
        .clone()
        .validate()
        .expect("the simulator's config validates");
    for i in 0..members {
        let at = w.between(Duration::ZERO, Duration::from_millis(500));
        let preferred = if w.chance(500) {
            u32::try_from(i).ok()
        } else {
            None
        };
        w.control_at(at, Control::Start(preferred));
    }
    let chaos_end = opts.chaos;
    if opts.faults {
        chaos::schedule(
            &mut w,
            Duration::from_millis(600),
            chaos_end,
            opts.chaos_gap,
            opts.max_members,
        );
    }
    w.run_until(chaos_end);
    w.heal();
    // The cluster must keep a member: if every process is gone, on its way out (leaving,
    // restarting) or still claiming an id (which may fail at its startup timeout when the chaos
    // kept the pool full: seed 65254; also when its state reads `Degraded` over a claim still
    // under way: seed 6021), one joins as the heal phase begins.
    let staying = w
        .running()
        .filter(|(_, x)| {
            !matches!(
                x.member().state(),
                parti_core::WorkerState::Leaving
                    | parti_core::WorkerState::Shutdown
                    | parti_core::WorkerState::ClaimingId
            ) && x.member().worker_id().is_some()
                && !x.respawn
        })
        .count();
    if staying == 0 {
        let _ = w.start_node(None);
    }
    let bound = heal_bound(&opts.config);
    w.run_until(chaos_end + bound);
    if !w.halted() && w.check_coverage("after the heal bound") {
        still(&mut w, opts.still);
        if opts.probes {
            probe(&mut w, &valid, false, bound);
            probe(&mut w, &valid, true, bound);
        }
    }
    report(opts, w, members, nparts)
}

/// A still period: coverage holds throughout and nothing is written to the assignments bucket.
fn still(w: &mut World, d: Duration) {
    let start = w.now();
    w.checks.churn.begin_still(start);
    let step = Duration::from_millis(250);
    while w.now() < start + d && !w.halted() {
        w.run_for(step);
        if !w.check_coverage("during the still period") {
            return;
        }
    }
    let pubs = w.publications_since(start) as u64;
    if let Some(v) = w.checks.churn.end_still(w.now(), pubs) {
        w.violation(v);
    }
}

/// Crashes a follower (or the leader) holding partitions and checks invariant 7, then waits for
/// coverage again.
fn probe(w: &mut World, c: &ValidConfig, leader: bool, bound: Duration) {
    if w.halted() || w.running().count() < 2 {
        return;
    }
    let target = if leader {
        w.leaders().first().copied()
    } else {
        w.running()
            .filter(|(_, x)| !x.member().is_leader() && x.held().next().is_some())
            .map(|(i, _)| i)
            .next()
    };
    let Some(n) = target else {
        return;
    };
    let held = w.nodes()[n].held().cloned().collect();
    let mut limit = c.dead_after() + REACTION_SLACK;
    if leader {
        limit += c.election_ttl + c.election_renew_interval();
    }
    let now = w.now();
    w.checks.reaction.crashed(now, n, held, limit);
    w.crash(n);
    w.run_for(limit);
    if let Some(v) = w.checks.reaction.deadline(w.now()) {
        w.violation(v);
        return;
    }
    let deadline = w.now() + bound;
    let _ = w.run_until_cond(deadline, World::is_covered);
    w.check_coverage("after a probe crash");
}

fn report(opts: &SimOptions, w: World, members: usize, partitions: usize) -> SimReport {
    let mut trace = w.trace().lines();
    if w.trace().is_on() {
        trace.extend(w.dump().into_iter().map(|l| format!("final {l}")));
    }
    SimReport {
        seed: opts.seed,
        steps: w.stats().steps,
        simulated: w.now(),
        members,
        partitions,
        violations: w.violations().to_vec(),
        trace_hash: w.trace().hash(),
        stats: w.stats().clone(),
        reactions: w.checks.reaction.measured.clone(),
        trace,
    }
}
