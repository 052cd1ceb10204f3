//! `parti-bench`: the Go baseline's end-to-end scenarios on real `Manager`s and a fresh local
//! `nats-server` per run, printed next to the Go library's figures
//! (`shared/reference/go-parti-e2e-baseline.md`, measured on this kind of machine).
//!
//! ```sh
//! cargo run -p parti-testkit --release --bin parti-bench                       # go-test and fast, 3 runs
//! cargo run -p parti-testkit --release --bin parti-bench -- --configs default --runs 1   # minutes
//! ```
//!
//! Each run is the Go harness's: 100 partitions of weight 100, each worker on its own NATS
//! connection (file storage, loopback), times from the event, polled every 10 ms (Go sampled
//! every 20 ms). A crash aborts the worker's task and drops its connection (no leave); a
//! graceful stop is `shutdown()`; a rolling restart is `shutdown_for_restart()` then a new
//! process with the same preferred id, one worker after the other. Every run's ownership ledger
//! (every callback of every handler) is checked: a partition with two owners at any instant
//! aborts the bench.
//!
//! Columns: *coverage* — every partition owned by exactly one live worker; *full* — coverage and
//! every live worker `Stable` (for the burst: every new worker owns something); *settled* — the
//! last grant before a quiet period of `cold_start_window + planned_scale_window +
//! min_rebalance_interval + heartbeat_ttl` (Go's definition); *plans* — plans the leaders
//! started after the event (Go publishes one version per plan: its *versions* column compares
//! with this one); *grant waves* — distinct fences granted after the event (a plan that moves
//! partitions between live workers revokes first and grants in the waves that follow the
//! acknowledgements; a restart re-grants under a new version); *moved* — partitions whose
//! worker id changed; *failures* — `start` calls that returned an error (retried, as Go's
//! harness did).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use parti_core::member::Notification as MemberNotification;
use parti_core::planner::PlannerNotification;
use parti_core::store::{BucketSpec, KvStore, OnMismatch, StorageKind};
use parti_core::types::Revision;
use parti_core::{Config, Partition, WorkerState};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::{Manager, Notification, StaticSource};
use parti_testkit::cluster::{Cluster, Worker};
use parti_testkit::ledger::Kind;
use parti_testkit::nats::NatsServer;

const PARTITIONS: usize = 100;
const WORKERS: usize = 10;

#[derive(Parser, Debug)]
#[command(
    name = "parti-bench",
    about = "The Go baseline's end-to-end scenarios on real Managers and nats-server, side by side with Go's figures"
)]
struct Args {
    /// Configurations to run: `go-test` (Go's TestConfig timings), `fast` (Config::fast), `default`
    /// (Config::default, minutes per run).
    #[arg(long, value_delimiter = ',', default_value = "go-test,fast")]
    configs: Vec<String>,
    /// Runs per scenario (each on a fresh nats-server).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the publication (1,000 workers) and memory measurements.
    #[arg(long)]
    no_extras: bool,
}

/// Go's TestConfig timings in parti-rs's terms: heartbeat 0.5 s, ttl 1.5 s, grace 0.75 s (Go's
/// 1.5 × interval), windows 1 s / 0.5 s, cooldown 0.1 s, election 5 s.
fn go_test_config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::fast();
    c.heartbeat_interval = ms(500);
    c.heartbeat_ttl = ms(1_500);
    c.emergency_grace = ms(750);
    c.fence_margin = ms(150);
    c.election_ttl = ms(5_000);
    c.lease_margin = ms(500);
    c.identity_ttl = ms(6_000);
    c.cold_start_window = ms(1_000);
    c.planned_scale_window = ms(500);
    c.min_rebalance_interval = ms(100);
    c
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    ColdStart,
    FollowerCrash,
    LeaderCrash,
    GracefulStop,
    RollingRestart,
    Burst,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::ColdStart,
        Scenario::FollowerCrash,
        Scenario::LeaderCrash,
        Scenario::GracefulStop,
        Scenario::RollingRestart,
        Scenario::Burst,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::ColdStart => "cold start, 10 together",
            Scenario::FollowerCrash => "follower crash",
            Scenario::LeaderCrash => "leader crash",
            Scenario::GracefulStop => "graceful follower stop",
            Scenario::RollingRestart => "rolling restart of 10",
            Scenario::Burst => "burst 3 → 10",
        }
    }

    /// Go's median figures (coverage, full, versions, moved by worker id, start failures) for
    /// TestConfig and DefaultConfig, from the baseline file. `None` where Go has no figure.
    fn go(self, default: bool) -> GoFigures {
        let g = |coverage, full, versions, moved, failures| GoFigures {
            coverage,
            full,
            versions,
            moved,
            failures,
        };
        match (self, default) {
            (Scenario::ColdStart, false) => g(Some(0.66), Some(1.16), Some(3), None, Some(0)),
            (Scenario::ColdStart, true) => g(Some(0.66), Some(40.20), Some(3), None, Some(1)),
            (Scenario::FollowerCrash, false) => g(Some(2.80), Some(2.80), Some(1), None, None),
            (Scenario::FollowerCrash, true) => g(Some(11.83), Some(11.83), Some(1), None, None),
            (Scenario::LeaderCrash, false) => g(Some(5.32), Some(5.32), Some(3), None, None),
            (Scenario::LeaderCrash, true) => g(Some(35.58), Some(45.99), Some(3), None, None),
            (Scenario::GracefulStop, false) => g(Some(0.90), Some(0.90), Some(1), None, None),
            (Scenario::GracefulStop, true) => g(Some(3.93), Some(3.93), Some(1), None, None),
            // Go's immediate replacement (Stop, then Start at once; its new process finds the old
            // record, unfenced). Its rolling-drain variant (the replacement waits for the move)
            // took 16.47 s / 336.6 s, 21 versions and ~190 moves by id.
            (Scenario::RollingRestart, false) => g(None, Some(1.71), Some(3), Some(0), None),
            (Scenario::RollingRestart, true) => g(None, Some(1.71), Some(3), Some(0), None),
            (Scenario::Burst, false) => g(None, Some(0.72), Some(1), Some(68), None),
            (Scenario::Burst, true) => g(None, Some(10.13), Some(1), Some(68), None),
        }
    }
}

#[derive(Clone, Copy)]
struct GoFigures {
    coverage: Option<f64>,
    full: Option<f64>,
    versions: Option<usize>,
    moved: Option<usize>,
    failures: Option<usize>,
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Sample {
    coverage: Option<Duration>,
    full: Duration,
    settled: Duration,
    versions: usize,
    plans: usize,
    moved: usize,
    failures: usize,
}

struct Bench {
    url: String,
    cluster: Cluster,
    failures: usize,
    /// Processes started so far (each gets its own ledger name).
    processes: usize,
    /// Plans the leaders started (`PlanStarted`), whichever worker led.
    plans: Arc<AtomicUsize>,
}

impl Bench {
    fn new(server: &NatsServer, config: Config) -> Bench {
        let mut cluster = Cluster::new(config, 0);
        cluster.source = StaticSource::new(
            (0..PARTITIONS)
                .map(|i| Partition::new(["p".to_owned(), i.to_string()], 100).expect("valid")),
        );
        Bench {
            url: server.url(),
            cluster,
            failures: 0,
            processes: 0,
            plans: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn store(&self) -> Arc<dyn KvStore> {
        let valid = self
            .cluster
            .config
            .clone()
            .validate()
            .expect("valid config");
        Arc::new(
            NatsStore::connect_url(&self.url, NatsStoreConfig::from_config(&valid))
                .await
                .expect("connect"),
        )
    }

    /// Starts `n` workers at once, each on its own connection (with these preferred ids, if
    /// given). A failed `start` is counted and retried, as Go's harness did (at most 3 times).
    async fn start_together(&mut self, n: usize, preferred: Option<Vec<u32>>) {
        let mut pending: Vec<Option<u32>> = match preferred {
            Some(ids) => ids.into_iter().map(Some).collect(),
            None => vec![None; n],
        };
        for _attempt in 0..4 {
            if pending.is_empty() {
                return;
            }
            let mut starts = Vec::new();
            for &id in &pending {
                let store = self.store().await;
                let handler = self.cluster.ledger.handler(format!("p{}", self.processes));
                self.processes += 1;
                let mut config = self.cluster.config.clone();
                config.preferred_id = id;
                let source = self.cluster.source.clone();
                starts.push(async move {
                    let process = handler.process().to_owned();
                    let started = Manager::builder(config)
                        .shared_store(store)
                        .partitions(source)
                        .handler(handler)
                        .start()
                        .await;
                    (id, process, started)
                });
            }
            let mut failed = Vec::new();
            for (id, process, started) in futures::future::join_all(starts).await {
                match started {
                    Ok(manager) => {
                        let mut notes = manager.notifications();
                        let plans = self.plans.clone();
                        tokio::spawn(async move {
                            use tokio::sync::broadcast::error::RecvError;
                            loop {
                                match notes.recv().await {
                                    Ok(Notification::Member(MemberNotification::Planner(
                                        PlannerNotification::PlanStarted { .. },
                                    ))) => {
                                        plans.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                                    Err(RecvError::Closed) => return,
                                }
                            }
                        });
                        if let Some(w) = manager.worker_id() {
                            self.cluster.ledger.name(&process, w.to_string());
                        }
                        self.cluster.workers.push(Worker {
                            process,
                            manager,
                            alive: true,
                        });
                    }
                    Err(err) => {
                        eprintln!("  start failed: {err}");
                        self.failures += 1;
                        failed.push(id);
                    }
                }
            }
            pending = failed;
        }
        assert!(pending.is_empty(), "workers failed to start 4 times");
    }

    async fn covered(&self, within: Duration) {
        self.cluster
            .wait_covered(within)
            .await
            .unwrap_or_else(|e| panic!("not covered: {e}"));
    }

    /// Coverage, and every live worker `Stable`.
    async fn full(&self, within: Duration) {
        let c = &self.cluster;
        c.wait_until(within, || {
            c.coverage_gap().or_else(|| {
                c.live()
                    .into_iter()
                    .find(|&i| c.workers[i].manager.state() != WorkerState::Stable)
                    .map(|i| format!("worker {i} is {}", c.workers[i].manager.state()))
            })
        })
        .await
        .unwrap_or_else(|e| panic!("not full: {e}"));
    }

    /// Waits until nothing was granted for the quiet period; returns the time of the last grant
    /// since `t0`.
    async fn settled(&self, t0: Instant, within: Duration) -> Duration {
        let quiet = self.quiet();
        let mut last_len = self.cluster.ledger.len();
        let mut last_change = Instant::now();
        while t0.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let len = self.cluster.ledger.len();
            if len != last_len {
                last_len = len;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet && self.cluster.coverage_gap().is_none() {
                break;
            }
        }
        last_change.saturating_duration_since(t0)
    }

    fn versions_since(&self, from: u64) -> usize {
        self.cluster
            .ledger
            .entries()
            .into_iter()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .filter(|e| e.kind == Kind::AssignStart)
            .flat_map(|e| e.partitions.into_iter().map(|(_, f)| f))
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn quiet(&self) -> Duration {
        let c = &self.cluster.config;
        c.cold_start_window + c.planned_scale_window + c.min_rebalance_interval + c.heartbeat_ttl
    }

    /// Starts `n` together and waits until the cluster is settled.
    async fn settled_cluster(&mut self, n: usize, within: Duration) {
        self.start_together(n, None).await;
        self.covered(within).await;
        self.settled(Instant::now(), within * 2).await;
    }
}

/// The ledger's verdict, or the bench stops: a figure from a run with two owners is worthless.
fn check(b: &Bench, scenario: Scenario) {
    let v = b.cluster.ledger.violations();
    assert!(
        v.is_empty(),
        "{}: the ledger found {} violation(s): {v:?}",
        scenario.name(),
        v.len()
    );
}

async fn run(scenario: Scenario, config: &Config) -> Sample {
    let within = Duration::from_secs(180);
    let server = NatsServer::start().unwrap_or_else(|e| {
        eprintln!("parti-bench: {e}");
        std::process::exit(2);
    });
    let mut b = Bench::new(&server, config.clone());
    let mut s = Sample::default();
    match scenario {
        Scenario::ColdStart => {
            let t0 = Instant::now();
            // Coverage as the handlers see it, while the starts still run (`start()` returns once
            // its worker applied its first assignment).
            let ledger = b.cluster.ledger.clone();
            let watch = async move {
                loop {
                    if ledger.owners().len() == PARTITIONS {
                        return t0.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let ((), coverage) = tokio::join!(b.start_together(WORKERS, None), watch);
            s.coverage = Some(coverage);
            b.full(within).await;
            s.full = t0.elapsed();
            s.settled = b.settled(t0, within * 2).await.max(s.full);
            s.versions = b.versions_since(0);
            s.plans = b.plans.load(Ordering::Relaxed);
        }
        Scenario::FollowerCrash | Scenario::LeaderCrash | Scenario::GracefulStop => {
            b.settled_cluster(WORKERS, within).await;
            let leader = b.cluster.leader().expect("a leader");
            let victim = if scenario == Scenario::LeaderCrash {
                leader
            } else {
                b.cluster
                    .live()
                    .into_iter()
                    .find(|&i| i != leader)
                    .expect("a follower")
            };
            let from = b.cluster.ledger.len();
            let p0 = b.plans.load(Ordering::Relaxed);
            let t0 = Instant::now();
            if scenario == Scenario::GracefulStop {
                b.cluster.shutdown(victim).await;
            } else {
                b.cluster.crash(victim);
            }
            b.covered(within).await;
            s.coverage = Some(t0.elapsed());
            b.full(within).await;
            s.full = t0.elapsed();
            s.settled = b.settled(t0, within * 2).await.max(s.full);
            s.versions = b.versions_since(from);
            s.plans = b.plans.load(Ordering::Relaxed) - p0;
            s.moved = b.cluster.ledger.moves_since(from);
        }
        Scenario::RollingRestart => {
            b.settled_cluster(WORKERS, within).await;
            let from = b.cluster.ledger.len();
            let p0 = b.plans.load(Ordering::Relaxed);
            let t0 = Instant::now();
            for i in 0..WORKERS {
                let id = b.cluster.worker_id(i).expect("an id");
                let number: u32 = id
                    .as_str()
                    .rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("ids are worker-<n>");
                b.cluster.shutdown_for_restart(i).await;
                b.start_together(1, Some(vec![number])).await;
                b.full(within).await;
            }
            s.full = t0.elapsed();
            s.settled = b.settled(t0, within * 2).await.max(s.full);
            s.versions = b.versions_since(from);
            s.plans = b.plans.load(Ordering::Relaxed) - p0;
            s.moved = b.cluster.ledger.moves_since(from);
        }
        Scenario::Burst => {
            b.settled_cluster(3, within).await;
            let from = b.cluster.ledger.len();
            let p0 = b.plans.load(Ordering::Relaxed);
            let t0 = Instant::now();
            b.start_together(WORKERS - 3, None).await;
            let c = &b.cluster;
            c.wait_until(within, || {
                c.coverage_gap().or_else(|| {
                    c.live()
                        .into_iter()
                        .find(|&i| c.workers[i].manager.owned().is_empty())
                        .map(|i| format!("worker {i} owns nothing yet"))
                })
            })
            .await
            .expect("spread");
            s.full = t0.elapsed();
            s.settled = b.settled(t0, within * 2).await.max(s.full);
            s.versions = b.versions_since(from);
            s.plans = b.plans.load(Ordering::Relaxed) - p0;
            s.moved = b.cluster.ledger.moves_since(from);
        }
    }
    s.failures = b.failures;
    check(&b, scenario);
    b.cluster.shutdown_all().await;
    s
}

/// "median (min–max)" of some figure over the runs.
fn spread(values: &[f64], digits: usize) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if v.len() == 1 || v[0] == v[v.len() - 1] {
        format!("{median:.digits$}")
    } else {
        format!(
            "{median:.digits$} ({:.digits$}–{:.digits$})",
            v[0],
            v[v.len() - 1]
        )
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "ours vs Go (ratio)".
fn versus(ours: f64, go: Option<f64>, digits: usize) -> String {
    match go {
        Some(g) if g > 0.0 && ours > 0.0 => format!("{g:.digits$} ({:.2}×)", ours / g),
        Some(g) => format!("{g:.digits$}"),
        None => "—".to_owned(),
    }
}

/// One configuration: every scenario `runs` times, one table.
async fn bench_config(name: &str, config: &Config, runs: usize) -> String {
    let go_default = name == "default";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### {name}: heartbeat {:?}, ttl {:?}, grace {:?}, election {:?}, windows {:?} / {:?}, cooldown {:?}; {runs} run(s) each; Go column: {}\n",
        config.heartbeat_interval,
        config.heartbeat_ttl,
        config.emergency_grace,
        config.election_ttl,
        config.cold_start_window,
        config.planned_scale_window,
        config.min_rebalance_interval,
        if go_default {
            "DefaultConfig"
        } else {
            "TestConfig (same timings as go-test)"
        }
    );
    let _ = writeln!(
        out,
        "| scenario | coverage s | Go | full s | Go | settled s | plans | grant waves | Go versions | moved (by id) | Go | start failures | Go |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for scenario in Scenario::ALL {
        let mut samples = Vec::new();
        for r in 0..runs {
            eprintln!("{name}: {} run {}/{runs}", scenario.name(), r + 1);
            samples.push(run(scenario, config).await);
        }
        let go = scenario.go(go_default);
        let f = |g: fn(&Sample) -> f64| samples.iter().map(g).collect::<Vec<f64>>();
        let coverage = samples
            .iter()
            .filter_map(|s| s.coverage.map(|d| d.as_secs_f64()))
            .collect::<Vec<_>>();
        let (cov, cov_go) = if coverage.is_empty() {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                spread(&coverage, 2),
                versus(median(&coverage), go.coverage, 2),
            )
        };
        let full = f(|s| s.full.as_secs_f64());
        let settled = f(|s| s.settled.as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        let versions = f(|s| s.versions as f64);
        #[allow(clippy::cast_precision_loss)]
        let plans = f(|s| s.plans as f64);
        #[allow(clippy::cast_precision_loss)]
        let moved = f(|s| s.moved as f64);
        #[allow(clippy::cast_precision_loss)]
        let failures = f(|s| s.failures as f64);
        let count = |o: Option<usize>| o.map_or("—".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "| {} | {cov} | {cov_go} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            scenario.name(),
            spread(&full, 2),
            versus(median(&full), go.full, 2),
            spread(&settled, 2),
            spread(&plans, 0),
            spread(&versions, 0),
            count(go.versions),
            spread(&moved, 0),
            count(go.moved),
            failures.iter().sum::<f64>(),
            count(go.failures),
        );
        eprint!(
            "{}",
            out.lines()
                .last()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        );
    }
    out
}

/// Publication of a plan touching 1,000 workers: 1,000 compare-and-set writes in flight at once
/// through `NatsStore` (the runtime's pipelined publication), median of 15 after a warm-up.
async fn publish_1000() -> String {
    let server = NatsServer::start().expect("nats-server");
    let store = NatsStore::connect_url(&server.url(), NatsStoreConfig::default())
        .await
        .expect("connect");
    let bucket = "parti-assignments";
    let spec = BucketSpec {
        name: bucket.into(),
        history: 1,
        max_age: None,
        replicas: 1,
        storage: StorageKind::File,
    };
    store
        .provision(&spec, OnMismatch::Fail)
        .await
        .expect("provision");
    let keys: Vec<String> = (0..1_000).map(|i| format!("w.worker-{i}")).collect();
    let mut revs: Vec<Revision> = Vec::new();
    for key in &keys {
        revs.push(store.create(bucket, key, vec![0; 256]).await.expect("seed"));
    }
    let mut times = Vec::new();
    for round in 0..16u8 {
        let start = Instant::now();
        let results = futures::future::join_all(
            keys.iter()
                .zip(revs.iter())
                .map(|(key, rev)| store.update(bucket, key, vec![round; 256], *rev)),
        )
        .await;
        let took = start.elapsed();
        for (rev, result) in revs.iter_mut().zip(results) {
            *rev = result.expect("compare-and-set");
        }
        if round > 0 {
            times.push(took.as_secs_f64() * 1_000.0);
        }
    }
    format!(
        "publication of a plan touching 1,000 workers (1,000 pipelined compare-and-set writes, 256 B): {} ms, median (min–max) of 15 — Go publishes one key per worker sequentially (issue 10's publish_batch example compares both)",
        spread(&times, 1)
    )
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory per extra in-process worker (each with its own NATS connection): RSS after
/// 10 workers and after 40, divided by 30.
async fn memory_per_worker() -> String {
    let server = NatsServer::start().expect("nats-server");
    let mut b = Bench::new(&server, go_test_config());
    b.settled_cluster(10, Duration::from_secs(60)).await;
    let before = rss_kib();
    b.start_together(30, None).await;
    b.covered(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    check(&b, Scenario::Burst);
    b.cluster.shutdown_all().await;
    match (before, after) {
        (Some(a), Some(z)) => format!(
            "resident memory per extra in-process worker (own NATS connection, 100 partitions): {:.0} KiB (RSS {} MiB with 10 workers, {} MiB with 40)",
            z.saturating_sub(a) as f64 / 30.0,
            a / 1024,
            z / 1024
        ),
        _ => "resident memory: /proc/self/status not readable here".to_owned(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if args.runs == 0 {
        eprintln!("parti-bench: --runs must be at least 1");
        std::process::exit(2);
    }
    let mut configs = Vec::new();
    for name in &args.configs {
        let config = match name.as_str() {
            "go-test" => go_test_config(),
            "fast" => Config::fast(),
            "default" => Config::default(),
            other => {
                eprintln!(
                    "parti-bench: unknown configuration {other:?}; use go-test, fast or default"
                );
                std::process::exit(2);
            }
        };
        configs.push((name.clone(), config));
    }
    let started = Instant::now();
    let mut report = format!(
        "parti-bench: {PARTITIONS} partitions of weight 100, {WORKERS} workers, a fresh nats-server per run (file storage, 127.0.0.1); 1-minute load average at start {}\n\
         Go figures: shared/reference/go-parti-e2e-baseline.md (median of 3; rolling = Go's immediate replacement); ratio = parti-rs / Go\n",
        load_average()
    );
    for (name, config) in &configs {
        report.push_str(&bench_config(name, config, args.runs).await);
    }
    if !args.no_extras {
        report.push('\n');
        report.push_str(&publish_1000().await);
        report.push('\n');
        report.push_str(&memory_per_worker().await);
        report.push('\n');
    }
    let _ = writeln!(
        report,
        "\nEvery run's ownership ledger was clean: no partition ever had two owners. {:.0} s in all; 1-minute load average at the end {}.",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    println!("{report}");
}
