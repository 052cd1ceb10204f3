//! The `Manager` on a real `nats-server` (started by the testkit on a loopback port), in
//! wall-clock time: the scenarios of `manager/mod.rs` with one NATS connection per worker, plus
//! what only a real server shows — a killed and restarted server under `Fence` and `Hold`.
//!
//! Timings are printed (`-- --nocapture`); bounds are the protocol's own plus slack for a loaded
//! 2-core machine. Every wait is a condition with a deadline.

mod manager;

use std::sync::Arc;
use std::time::Duration;

use manager::Backend;
use parti_core::Config;
use parti_core::config::DisconnectPolicy;
use parti_core::store::KvStore;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::cluster::Cluster;
use parti_testkit::nats::NatsServer;

/// `Config::fast()` slowed down about 2×: real sockets on a shared 2-core machine see
/// scheduling pauses that a 600 ms heartbeat ttl would turn into false deaths.
fn config() -> Config {
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

struct Nats {
    url: String,
    config: Config,
}

impl Nats {
    fn new(server: &NatsServer) -> Self {
        Nats {
            url: server.url(),
            config: config(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Nats {
    async fn store(&self) -> Arc<dyn KvStore> {
        let valid = self.config.clone().validate().expect("a valid test config");
        let store = NatsStore::connect_url(&self.url, NatsStoreConfig::from_config(&valid))
            .await
            .expect("connect to the test server");
        Arc::new(store)
    }
    fn config(&self) -> Config {
        self.config.clone()
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(1_500)
    }
}

fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = server();
            manager::$name(&Nats::new(&server)).await;
        }
    )*};
}

scenarios!(
    cold_start_of_three,
    crashed_follower,
    crashed_leader,
    shutdown_hands_over,
    leader_leaves,
    restart_moves_nothing,
    slow_handler,
    states_and_rebalance,
    leader_leaves_after_a_crash_moves_only_its_partitions,
    broken_handover_is_caught,
);

/// Three workers on `server` under `policy`, settled.
async fn cluster(server: &NatsServer, policy: DisconnectPolicy) -> (Nats, Cluster) {
    let mut backend = Nats::new(server);
    backend.config.on_disconnect = policy;
    let c = manager::cluster(&backend, 3, 30).await;
    (backend, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_under_fence_stops_the_work_and_ownership_resumes_after_its_restart() {
    let mut server = server();
    let (_b, mut c) = cluster(&server, DisconnectPolicy::Fence).await;
    let fence_after = c.config.heartbeat_ttl - c.config.fence_margin;
    server.kill().expect("kill -9");
    let took = c
        .wait_until(fence_after + Duration::from_secs(3), || {
            let owning = c
                .live()
                .into_iter()
                .filter(|&i| !c.workers[i].manager.owned().is_empty())
                .count();
            (owning > 0).then(|| format!("{owning} workers still own partitions"))
        })
        .await
        .expect("everything stops");
    println!(
        "server killed: every worker stopped its work after {took:?} (fence_after {fence_after:?})"
    );
    assert!(
        took <= fence_after + Duration::from_millis(500),
        "stopped after {took:?} (fence_after {fence_after:?})"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    server
        .restart()
        .expect("restart on the same port and store");
    let took = c
        .wait_covered(Duration::from_secs(30))
        .await
        .expect("ownership resumes after the restart");
    println!("server restarted: covered again after {took:?}");
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_under_hold_keeps_the_work() {
    let mut server = server();
    let (_b, mut c) = cluster(&server, DisconnectPolicy::Hold).await;
    let before: Vec<_> = c
        .live()
        .iter()
        .map(|&i| c.workers[i].manager.owned())
        .collect();
    let from = c.ledger.len();
    server.kill().expect("kill -9");
    tokio::time::sleep(c.config.heartbeat_ttl * 2).await;
    let during: Vec<_> = c
        .live()
        .iter()
        .map(|&i| c.workers[i].manager.owned())
        .collect();
    assert_eq!(during, before, "nothing revoked during the outage");
    server.restart().expect("restart");
    tokio::time::sleep(c.config.heartbeat_ttl * 2).await;
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("covered");
    assert_eq!(c.ledger.moves_since(from), 0, "nothing moved");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

/// Waits for a `CircuitBreaker` notification moving to `to`.
async fn breaker_moves_to(
    notes: &mut tokio::sync::broadcast::Receiver<parti_runtime::Notification>,
    to: parti_core::breaker::BreakerState,
    within: Duration,
) -> Result<(), String> {
    tokio::time::timeout(within, async {
        loop {
            match notes.recv().await {
                Ok(parti_runtime::Notification::CircuitBreaker { to: t, .. }) if t == to => {
                    return Ok(());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("the breaker did not move to {to} within {within:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_and_closes_around_a_killed_and_restarted_server() {
    use parti_core::breaker::BreakerState;
    let mut server = server();
    let (_b, mut c) = cluster(&server, DisconnectPolicy::Fence).await;
    let watched = c.live()[0];
    let mut notes = c.workers[watched].manager.notifications();
    server.kill().expect("kill -9");
    breaker_moves_to(&mut notes, BreakerState::Open, Duration::from_secs(10))
        .await
        .expect("opens while the server is down");
    assert_eq!(
        c.workers[watched].manager.status().breaker,
        BreakerState::Open
    );
    server.restart().expect("restart");
    breaker_moves_to(&mut notes, BreakerState::Closed, Duration::from_secs(20))
        .await
        .expect("closes once the server answers again");
    c.wait_covered(Duration::from_secs(30))
        .await
        .expect("ownership resumes");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}
