//! Shared parts of the end-to-end tests (`e2e_nats.rs`, `e2e_faults.rs`): the timings, a
//! server, starting workers together on their own connections, waiting for a settled cluster.

#![allow(dead_code)] // each test binary uses a part

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parti_core::Config;
use parti_core::store::KvStore;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::Manager;
use parti_testkit::cluster::{Cluster, Worker};
use parti_testkit::nats::NatsServer;

/// `Config::fast()` slowed down about 2× for real sockets on a shared 2-core machine (the same
/// as `manager_nats.rs`).
pub(crate) fn config() -> Config {
    let ms = Duration::from_millis;
    let mut c = Config::fast();
    c.heartbeat_interval = ms(300);
    c.heartbeat_ttl = ms(1_500);
    c.emergency_grace = ms(500);
    c.fence_margin = ms(150);
    c.election_ttl = ms(2_000);
    c.lease_margin = ms(200);
    c.identity_ttl = ms(6_000);
    c.operation_timeout = ms(1_000);
    c
}

pub(crate) const WITHIN: Duration = Duration::from_secs(30);

pub(crate) fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) async fn store(url: &str, config: &Config) -> Arc<dyn KvStore> {
    let valid = config.clone().validate().expect("a valid test config");
    Arc::new(
        NatsStore::connect_url(url, NatsStoreConfig::from_config(&valid))
            .await
            .expect("connect to the test server"),
    )
}

/// Starts `n` workers at once (each on its own connection; `preferred` ids if given) and
/// returns how many `start` calls failed.
pub(crate) async fn start_together(
    c: &mut Cluster,
    url: &str,
    n: usize,
    preferred: &[Option<u32>],
) -> usize {
    let urls = vec![url.to_owned(); n];
    start_on(c, &urls, preferred).await
}

/// Starts one worker per URL at once (a proxy's URL cuts that worker off on demand).
pub(crate) async fn start_on(c: &mut Cluster, urls: &[String], preferred: &[Option<u32>]) -> usize {
    let mut starts = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let store = store(url, &c.config).await;
        let handler = c.ledger.handler(format!("p{}", c.workers.len() + i));
        let mut config = c.config.clone();
        config.preferred_id = preferred.get(i).copied().flatten();
        let source = c.source.clone();
        starts.push(async move {
            let process = handler.process().to_owned();
            let started = Manager::builder(config)
                .shared_store(store)
                .partitions(source)
                .handler(handler)
                .start()
                .await;
            (process, started)
        });
    }
    let mut failures = 0;
    for (process, started) in join_all(starts).await {
        match started {
            Ok(manager) => {
                if let Some(id) = manager.worker_id() {
                    c.ledger.name(&process, id.to_string());
                }
                c.workers.push(Worker {
                    process,
                    manager,
                    alive: true,
                });
            }
            Err(err) => {
                eprintln!("start failed: {err}");
                failures += 1;
            }
        }
    }
    failures
}

/// Waits until the cluster is covered and nothing was granted for `quiet`.
pub(crate) async fn settle(c: &Cluster) {
    c.wait_covered(WITHIN).await.expect("covered");
    let quiet = c.config.cold_start_window + c.config.planned_scale_window;
    let mut len = c.ledger.len();
    let mut since = tokio::time::Instant::now();
    let deadline = since + WITHIN;
    while since.elapsed() < quiet || c.coverage_gap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {:?}",
            c.coverage_gap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if c.ledger.len() != len {
            len = c.ledger.len();
            since = tokio::time::Instant::now();
        }
    }
}

pub(crate) fn id_number(c: &Cluster, i: usize) -> u32 {
    c.worker_id(i)
        .expect("an id")
        .as_str()
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("ids are worker-<n>")
}

/// Waits until every partition is owned once and every live worker owns exactly `n`.
pub(crate) async fn wait_each_owns(c: &Cluster, n: usize) {
    c.wait_until(WITHIN, || {
        c.coverage_gap().or_else(|| {
            c.live()
                .into_iter()
                .find(|&i| c.workers[i].manager.owned().len() != n)
                .map(|i| format!("worker {i} owns {}", c.workers[i].manager.owned().len()))
        })
    })
    .await
    .unwrap_or_else(|gap| panic!("{n} each: {gap}"));
}
