//! End-to-end coordination timings of parti-rs next to the Go library's, measured the way
//! `shared/reference/go-parti-e2e-baseline.md` measured Go: real `Manager`s in one process, each
//! on its own NATS connection to a fresh local `nats-server` (file store, loopback), 100
//! partitions of weight 100, times from the event until every partition is owned by exactly one
//! live worker (polled every 10 ms; Go's observer sampled every 20 ms).
//!
//! ```sh
//! PARTI_NATS_SERVER=… cargo run -p parti-testkit --release --example e2e_vs_go            # Go's TestConfig timings
//! PARTI_NATS_SERVER=… cargo run -p parti-testkit --release --example e2e_vs_go -- default  # DefaultConfig (minutes)
//! ```
//!
//! Settings mirror Go's: `TestConfig` = heartbeat 0.5 s, ttl 1.5 s, grace 0.75 s (Go's 1.5 ×
//! interval), windows 1 s / 0.5 s, cooldown 0.1 s, election 5 s; `DefaultConfig` = parti-rs's
//! defaults (the same values as Go's). Strategy: parti-rs's default (`StickyBalanced`; Go ran
//! its consistent hash). "versions" counts the distinct assignment versions workers were granted
//! partitions under after the event (a plan published in waves shows one per wave).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parti_core::store::KvStore;
use parti_core::{Config, WorkerState};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::{Manager, StaticSource};
use parti_testkit::cluster::{Cluster, Worker};
use parti_testkit::ledger::Kind;
use parti_testkit::nats::NatsServer;

const PARTITIONS: usize = 100;

fn test_config() -> Config {
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

struct Bench {
    url: String,
    cluster: Cluster,
}

impl Bench {
    async fn new(server: &NatsServer, config: Config) -> Bench {
        let mut cluster = Cluster::new(config, 0);
        cluster.source = StaticSource::new((0..PARTITIONS).map(|i| {
            parti_core::Partition::new(["p".to_owned(), i.to_string()], 100).expect("valid")
        }));
        Bench {
            url: server.url(),
            cluster,
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

    /// Starts `n` workers at once (each on its own connection).
    async fn start_together(&mut self, n: usize) {
        let first = self.cluster.workers.len();
        let mut starts = Vec::new();
        for i in first..first + n {
            let store = self.store().await;
            let handler = self.cluster.ledger.handler(format!("p{i}"));
            let config = self.cluster.config.clone();
            let source = self.cluster.source.clone();
            starts.push(async move {
                let process = handler.process().to_owned();
                let manager = Manager::builder(config)
                    .shared_store(store)
                    .partitions(source)
                    .handler(handler)
                    .start()
                    .await
                    .expect("start");
                (process, manager)
            });
        }
        for (process, manager) in futures::future::join_all(starts).await {
            if let Some(id) = manager.worker_id() {
                self.cluster.ledger.name(&process, id.to_string());
            }
            self.cluster.workers.push(Worker {
                process,
                manager,
                alive: true,
            });
        }
    }

    async fn covered(&self, within: Duration) -> Duration {
        self.cluster
            .wait_covered(within)
            .await
            .unwrap_or_else(|e| panic!("not covered: {e}"))
    }

    /// Coverage, and every live worker `Stable`.
    async fn full(&self, within: Duration) -> Duration {
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
        .unwrap_or_else(|e| panic!("not full: {e}"))
    }

    /// Waits until nothing was granted for `quiet`; returns the time of the last grant.
    async fn settled(&self, quiet: Duration, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let mut last_len = self.cluster.ledger.len();
        let mut last_change = start;
        while start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let len = self.cluster.ledger.len();
            if len != last_len {
                last_len = len;
                last_change = tokio::time::Instant::now();
            } else if last_change.elapsed() >= quiet && self.cluster.coverage_gap().is_none() {
                break;
            }
        }
        last_change - start
    }

    fn versions_since(&self, from: u64) -> usize {
        self.cluster
            .ledger
            .entries()
            .into_iter()
            .skip(from as usize)
            .filter(|e| e.kind == Kind::AssignStart)
            .flat_map(|e| e.partitions.into_iter().map(|(_, f)| f))
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn quiet(&self) -> Duration {
        let c = &self.cluster.config;
        c.cold_start_window + c.planned_scale_window + c.min_rebalance_interval + c.heartbeat_ttl
    }
}

struct Row {
    scenario: &'static str,
    coverage: Duration,
    full: Duration,
    versions: usize,
    other: String,
    go: &'static str,
}

async fn run_all(config: Config, go: [&'static str; 5]) -> Vec<Row> {
    let mut rows = Vec::new();
    let within = Duration::from_secs(120);

    // 1. Cold start, 10 together.
    {
        let server = NatsServer::start().expect("nats-server");
        let mut b = Bench::new(&server, config.clone()).await;
        let t0 = tokio::time::Instant::now();
        // Coverage as the handlers see it, while the starts are still running (`start()` returns
        // only once its worker applied its first assignment).
        let ledger = b.cluster.ledger.clone();
        let watch_coverage = async move {
            loop {
                if ledger.owners().len() == PARTITIONS {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let ((), coverage) = tokio::join!(b.start_together(10), watch_coverage);
        b.covered(within).await;
        b.full(within).await;
        let full = t0.elapsed();
        let before_settle = t0.elapsed();
        let settled = before_settle + b.settled(b.quiet(), within * 2).await;
        let versions = b.versions_since(0);
        rows.push(Row {
            scenario: "cold start, 10 together",
            coverage,
            full,
            versions,
            other: format!("settled {settled:.2?}; 0 start failures"),
            go: go[0],
        });
        b.cluster.ledger.assert_clean();
        b.cluster.shutdown_all().await;
    }

    // 2–4: a settled cluster of 10, then the event.
    for scenario in ["follower crash", "leader crash", "graceful follower stop"] {
        let server = NatsServer::start().expect("nats-server");
        let mut b = Bench::new(&server, config.clone()).await;
        b.start_together(10).await;
        b.covered(within).await;
        b.settled(b.quiet(), within * 2).await;
        let leader = b.cluster.leader().expect("a leader");
        let victim = match scenario {
            "leader crash" => leader,
            _ => b
                .cluster
                .live()
                .into_iter()
                .find(|&i| i != leader)
                .expect("a follower"),
        };
        let owned = b.cluster.workers[victim].manager.owned().len();
        let from = b.cluster.ledger.len();
        let t0 = tokio::time::Instant::now();
        if scenario == "graceful follower stop" {
            b.cluster.shutdown(victim).await;
        } else {
            b.cluster.crash(victim);
        }
        b.covered(within).await;
        let coverage = t0.elapsed();
        b.full(within).await;
        let full = t0.elapsed();
        let versions = b.versions_since(from);
        let moves = b.cluster.ledger.moves_since(from);
        rows.push(Row {
            scenario,
            coverage,
            full,
            versions,
            other: format!("victim owned {owned}; {moves} moves"),
            go: go[match scenario {
                "follower crash" => 1,
                "leader crash" => 2,
                _ => 3,
            }],
        });
        b.cluster.ledger.assert_clean();
        b.cluster.shutdown_all().await;
    }

    // 6. Burst 3 → 10.
    {
        let server = NatsServer::start().expect("nats-server");
        let mut b = Bench::new(&server, config.clone()).await;
        b.start_together(3).await;
        b.covered(within).await;
        b.settled(b.quiet(), within * 2).await;
        let from = b.cluster.ledger.len();
        let t0 = tokio::time::Instant::now();
        b.start_together(7).await;
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
        let full = t0.elapsed();
        let versions = b.versions_since(from);
        let moves = b.cluster.ledger.moves_since(from);
        rows.push(Row {
            scenario: "burst 3 → 10",
            coverage: Duration::ZERO,
            full,
            versions,
            other: format!("{moves} partitions moved (ideal 70)"),
            go: go[4],
        });
        b.cluster.ledger.assert_clean();
        b.cluster.shutdown_all().await;
    }
    rows
}

#[tokio::main]
async fn main() {
    let default = std::env::args().nth(1).as_deref() == Some("default");
    let (config, name, go) = if default {
        (
            Config::default(),
            "DefaultConfig",
            [
                "coverage 0.66, full 40.20, 3 versions, 1 start failure",
                "11.83, 1 version",
                "coverage 35.58, full 45.99, 3 versions",
                "3.93, 1 version",
                "full 10.13, 1 version, 68 moved",
            ],
        )
    } else {
        (
            test_config(),
            "TestConfig",
            [
                "coverage 0.66, full 1.16, 3 versions",
                "2.80, 1 version",
                "coverage 5.32, full 5.32, 3 versions",
                "0.90, 1 version",
                "full 0.72, 1 version, 68 moved",
            ],
        )
    };
    println!(
        "parti-rs vs Go parti, {name}, {PARTITIONS} partitions, 10 workers, seconds from the event\n"
    );
    let rows = run_all(config, go).await;
    println!(
        "| scenario | parti-rs coverage | parti-rs full | versions | other | Go (median of 3) |\n|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {:.2} | {:.2} | {} | {} | {} |",
            r.scenario,
            r.coverage.as_secs_f64(),
            r.full.as_secs_f64(),
            r.versions,
            r.other,
            r.go
        );
    }
    println!("\nEvery run's ownership ledger was clean: no partition ever had two owners.");
}
