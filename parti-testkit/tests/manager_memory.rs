//! The `Manager` on the embedded `MemoryStore`, in tokio's paused (virtual) time: whole clusters
//! of real drivers, handler tasks and the real machines, with every callback recorded in the
//! ownership ledger and "never two owners" asserted at the end of every test. The scenarios
//! shared with the real-server tests are in `manager/mod.rs`.

mod manager;

use std::sync::Arc;
use std::time::Duration;

use manager::{Backend, settle};
use parti_core::Config;
use parti_core::config::DisconnectPolicy;
use parti_core::store::KvStore;
use parti_runtime::{Error, Manager, MemoryStore, StartError, StaticSource};
use parti_testkit::cluster::Cluster;
use parti_testkit::faulty::Switch;

fn config() -> Config {
    Config::fast()
}

/// Every worker shares one embedded store; time is virtual.
struct Memory(MemoryStore);

#[async_trait::async_trait]
impl Backend for Memory {
    async fn store(&self) -> Arc<dyn KvStore> {
        Arc::new(self.0.clone())
    }
    fn config(&self) -> Config {
        config()
    }
    fn slack(&self) -> Duration {
        Duration::ZERO
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            manager::$name(&Memory(MemoryStore::new())).await;
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
    handler_slower_than_its_timeout,
    broken_handover_is_caught,
    states_and_rebalance,
    leader_leaves_after_a_crash_moves_only_its_partitions,
);

/// Three workers, each behind the same switch: the whole store goes away.
async fn cluster_behind(switch: &Switch, policy: DisconnectPolicy) -> Cluster {
    let mem = MemoryStore::new();
    let mut config = config();
    config.on_disconnect = policy;
    let mut c = Cluster::new(config, 30);
    for i in 0..3 {
        c.start(Arc::new(switch.wrap(mem.clone())), Some(i))
            .await
            .expect("start");
    }
    settle(&c).await;
    c
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_under_fence_stops_the_work_within_fence_after() {
    let switch = Switch::new();
    let mut c = cluster_behind(&switch, DisconnectPolicy::Fence).await;
    let fence_after = c.config.heartbeat_ttl - c.config.fence_margin;
    switch.cut();
    let took = c
        .wait_until(fence_after + Duration::from_secs(1), || {
            let owning = c
                .live()
                .into_iter()
                .filter(|&i| !c.workers[i].manager.owned().is_empty())
                .count();
            (owning > 0).then(|| format!("{owning} workers still own partitions"))
        })
        .await
        .expect("everything stops");
    assert!(
        took <= fence_after,
        "stopped after {took:?} (fence_after {fence_after:?})"
    );
    assert!(c.ledger.owners().is_empty(), "every handler was told");
    tokio::time::sleep(Duration::from_secs(3)).await;
    switch.heal();
    c.wait_covered(Duration::from_secs(15))
        .await
        .expect("re-granted after the outage");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_under_hold_keeps_the_work() {
    let switch = Switch::new();
    let mut c = cluster_behind(&switch, DisconnectPolicy::Hold).await;
    let before: Vec<_> = c
        .live()
        .iter()
        .map(|&i| c.workers[i].manager.owned())
        .collect();
    let from = c.ledger.len();
    switch.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<_> = c
        .live()
        .iter()
        .map(|&i| c.workers[i].manager.owned())
        .collect();
    assert_eq!(during, before, "nothing revoked during the outage");
    assert!(
        c.live()
            .iter()
            .any(|&i| c.workers[i].manager.status().degraded),
        "the outage is noticed"
    );
    switch.heal();
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.wait_covered(Duration::from_secs(5))
        .await
        .expect("covered");
    assert_eq!(c.ledger.moves_since(from), 0, "nothing moved");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_returns_every_problem() {
    let mut config = Config::default();
    config.heartbeat_interval = Duration::ZERO;
    config.worker_id_min = 10;
    config.worker_id_max = 5;
    config.namespace = "bad namespace!".into();
    let err = Manager::builder(config)
        .store(MemoryStore::new())
        .start()
        .await
        .expect_err("invalid");
    let StartError::InvalidConfig(errors) = &err else {
        panic!("not a config error: {err}");
    };
    assert!(errors.errors().len() >= 3, "every problem listed: {err}");
    let text = err.to_string();
    assert!(text.contains("namespace"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_builder_without_a_store_says_what_to_do() {
    let err = Manager::builder(config())
        .start()
        .await
        .expect_err("no store");
    assert!(matches!(err, StartError::NoStore), "{err}");
    assert!(err.to_string().contains(".store("));
}

#[tokio::test(start_paused = true)]
async fn a_full_id_pool_fails_start_with_a_typed_error() {
    let mem = MemoryStore::new();
    let mut config = config();
    config.worker_id_min = 0;
    config.worker_id_max = 0;
    config.startup_timeout = Duration::from_secs(3);
    let first = Manager::builder(config.clone())
        .store(mem.clone())
        .start()
        .await
        .expect("the only id");
    let err = Manager::builder(config)
        .store(mem.clone())
        .start()
        .await
        .expect_err("no id left");
    assert!(
        matches!(
            err,
            StartError::Member(parti_core::member::MemberError::IdentityPoolExhausted { .. })
        ),
        "{err}"
    );
    first.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_catalog_change_reaches_the_cluster_and_a_source_error_keeps_the_catalog() {
    struct Flaky(StaticSource, Arc<std::sync::atomic::AtomicBool>);
    #[async_trait::async_trait]
    impl parti_runtime::PartitionSource for Flaky {
        async fn list(&self) -> Result<Vec<parti_core::Partition>, parti_runtime::SourceError> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(parti_runtime::SourceError::failed("database down"));
            }
            parti_runtime::PartitionSource::list(&self.0).await
        }
    }
    let mem = MemoryStore::new();
    let source = StaticSource::numbered(6);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..2 {
        let mut config = config();
        config.preferred_id = Some(i);
        workers.push(
            Manager::builder(config)
                .store(mem.clone())
                .partitions(Flaky(source.clone(), failing.clone()))
                .start()
                .await
                .expect("start"),
        );
    }
    let total = |ws: &[Manager]| ws.iter().map(|w| w.owned().len()).sum::<usize>();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(total(&workers), 6);
    source.update((0..9).map(|i| parti_core::Partition::new([format!("q{i}")], 1).expect("valid")));
    for w in &workers {
        assert_eq!(w.refresh_partitions().await, Ok(9));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(total(&workers), 9, "the new catalog is spread");
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut notes = workers[0].notifications();
    let err = workers[0]
        .refresh_partitions()
        .await
        .expect_err("source down");
    assert!(matches!(err, Error::PartitionSource(_)), "{err}");
    assert!(matches!(
        notes.recv().await,
        Ok(parti_runtime::Notification::PartitionSourceFailed { .. })
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        total(&workers),
        9,
        "a failing source never empties the catalog"
    );
    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_leaves_gracefully() {
    let mem = MemoryStore::new();
    let mut c = manager::cluster(&Memory(mem.clone()), 3, 30).await;
    let leader = c.leader().expect("leader");
    let leaving = (0..3).find(|&i| i != leader).expect("a follower");
    let id = c.worker_id(leaving).expect("id");
    let status = c.workers[leaving].manager.clone();
    // Replace the cluster's handle: the clone above is the last one, then drop it too.
    c.workers[leaving].alive = false;
    let started = tokio::time::Instant::now();
    let stand_in = c.workers[leader].manager.clone();
    drop(std::mem::replace(&mut c.workers[leaving].manager, stand_in));
    let watcher = status.clone();
    drop(status);
    // `watcher` still holds a handle: the worker runs on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!watcher.status().stopped);
    drop(watcher);
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("covered");
    let ids_bucket = format!("{}-ids", c.config.namespace);
    let released = c
        .wait_until(Duration::from_secs(10), || {
            let ids = mem.with_model(|m, now| m.keys(&ids_bucket, "", now));
            (format!("{ids:?}").contains(&format!("\"{id}\""))).then(|| format!("{ids:?}"))
        })
        .await;
    assert!(released.is_ok(), "its id was released: {released:?}");
    assert!(
        started.elapsed() < c.config.heartbeat_ttl + Duration::from_millis(500),
        "handed over without waiting for a death"
    );
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_dropped_half_way_leaves_nothing_behind() {
    let mem = MemoryStore::new();
    let mut config = config();
    // Nobody else runs: start waits for the startup timeout before it is ready.
    config.startup_timeout = Duration::from_secs(60);
    let start = Manager::builder(config.clone())
        .store(mem.clone())
        .partitions(StaticSource::numbered(4))
        .start();
    // Give it the time to claim an id, then drop it.
    let _ = tokio::time::timeout(Duration::from_millis(50), start).await;
    tokio::time::sleep(config.shutdown_timeout).await;
    let ids = mem.keys("parti-ids", "").await.expect("keys");
    let beats = mem.keys("parti-heartbeats", "").await.expect("keys");
    let leader = mem.keys("parti-leader", "").await.expect("keys");
    assert!(
        ids.is_empty() && beats.is_empty() && leader.is_empty(),
        "ids {ids:?}, heartbeats {beats:?}, leader {leader:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_dropped_half_way_still_leaves_and_every_task_ends() {
    /// A handler that holds a token: when the token's count drops back to one, every task
    /// that held the handler (the handler task, the driver) has ended.
    struct Holder(#[allow(dead_code)] Arc<()>);
    #[async_trait::async_trait]
    impl parti_runtime::AssignmentHandler for Holder {
        async fn on_assigned(
            &self,
            _: &[parti_core::records::OwnedPartition],
        ) -> Result<(), parti_runtime::HandlerError> {
            Ok(())
        }
        async fn on_revoked(
            &self,
            _: &[parti_core::records::OwnedPartition],
        ) -> Result<(), parti_runtime::HandlerError> {
            // Slow enough that the shutdown future below is dropped while this runs.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
    }
    let mem = MemoryStore::new();
    let token = Arc::new(());
    let worker = Manager::builder(config())
        .store(mem.clone())
        .partitions(StaticSource::numbered(4))
        .handler(Holder(token.clone()))
        .start()
        .await
        .expect("start");
    assert_eq!(worker.owned().len(), 4);
    let id = worker.worker_id().expect("id").to_string();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), worker.shutdown())
            .await
            .is_err(),
        "the shutdown is still running when its future is dropped"
    );
    worker.stopped().await;
    assert_eq!(worker.state(), parti_core::WorkerState::Shutdown);
    for bucket in ["parti-ids", "parti-heartbeats", "parti-leader"] {
        let keys = mem.keys(bucket, "").await.expect("keys");
        assert!(
            !keys.contains(&id) && !keys.contains(&"leader".to_owned()),
            "{bucket}: {keys:?}"
        );
    }
    drop(worker);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "the handler and driver tasks have ended"
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_while_cut_off_and_closes_after_the_heal() {
    use parti_core::breaker::BreakerState;
    let switch = Switch::new();
    let mut c = cluster_behind(&switch, DisconnectPolicy::Fence).await;
    let watched = c.live()[0];
    let mut notes = c.workers[watched].manager.notifications();
    let mut moves = Vec::new();
    switch.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Open, or probing (HalfOpen) once open_timeout has passed; never Closed while cut off.
    assert_ne!(
        c.workers[watched].manager.status().breaker,
        BreakerState::Closed
    );
    switch.heal();
    c.wait_covered(Duration::from_secs(15))
        .await
        .expect("covered");
    assert_eq!(
        c.workers[watched].manager.status().breaker,
        BreakerState::Closed
    );
    while let Ok(n) = notes.try_recv() {
        if let parti_runtime::Notification::CircuitBreaker { to, .. } = n {
            moves.push(to);
        }
    }
    assert_eq!(moves.first(), Some(&BreakerState::Open), "{moves:?}");
    assert_eq!(moves.last(), Some(&BreakerState::Closed), "{moves:?}");
    assert!(moves.contains(&BreakerState::HalfOpen), "{moves:?}");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_or_a_mismatched_bucket_fails_start_with_what_to_fix() {
    let switch = Switch::new();
    switch.cut();
    let err = Manager::builder(config())
        .store(switch.wrap(MemoryStore::new()))
        .start()
        .await
        .expect_err("unreachable");
    assert!(
        matches!(
            &err,
            StartError::Provision {
                error: parti_core::store::KvError::Unavailable { .. },
                ..
            }
        ),
        "{err}"
    );

    let mem = MemoryStore::new();
    let mut other = config();
    other.buckets.storage = parti_core::store::StorageKind::Memory;
    let first = Manager::builder(other)
        .store(mem.clone())
        .start()
        .await
        .expect("buckets in memory");
    let err = Manager::builder(config())
        .store(mem.clone())
        .start()
        .await
        .expect_err("file storage wanted, memory found");
    assert!(
        matches!(
            &err,
            StartError::Provision {
                error: parti_core::store::KvError::BucketMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("storage"), "{err}");
    first.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_source_is_listed_again_every_refresh_interval() {
    let mem = MemoryStore::new();
    let source = StaticSource::numbered(4);
    let config = config();
    let every = config.partition_refresh_interval.expect("fast() refreshes");
    let worker = Manager::builder(config)
        .store(mem.clone())
        .partitions(source.clone())
        .start()
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(worker.owned().len(), 4);
    source.update((0..7).map(|i| parti_core::Partition::new([format!("n{i}")], 1).expect("valid")));
    // Nobody calls refresh_partitions: the interval does.
    tokio::time::sleep(every * 2 + Duration::from_secs(2)).await;
    let owned: Vec<String> = worker
        .owned()
        .iter()
        .map(|p| p.partition.id().to_string())
        .collect();
    assert_eq!(owned.len(), 7, "{owned:?}");
    assert!(owned.iter().all(|p| p.contains('n')), "{owned:?}");
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_last_worker_leaves_without_waiting_for_its_shutdown_timeout() {
    let mem = MemoryStore::new();
    let config = config();
    let worker = Manager::builder(config.clone())
        .store(mem.clone())
        .partitions(StaticSource::numbered(4))
        .start()
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = tokio::time::Instant::now();
    worker.shutdown().await;
    let took = started.elapsed();
    println!("the last worker left after {took:?}");
    assert!(took < config.shutdown_timeout, "left after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn workers_leaving_one_after_the_other_never_wait_for_their_shutdown_timeout() {
    let mem = MemoryStore::new();
    let mut c = Cluster::new(config(), 30);
    for i in 0..3 {
        // Handlers that take a moment, as real ones do: a leave can begin while one runs.
        let handler = c.next_handler().with_delay(Duration::from_millis(20));
        c.start_with(Arc::new(mem.clone()), Some(i), handler)
            .await
            .expect("start");
    }
    settle(&c).await;
    let leader = c.leader().expect("leader");
    let mut order: Vec<usize> = c.live().into_iter().filter(|&i| i != leader).collect();
    order.push(leader);
    for i in order {
        let started = tokio::time::Instant::now();
        c.shutdown(i).await;
        let took = started.elapsed();
        println!("worker {i} left after {took:?}");
        assert!(
            took < c.config.shutdown_timeout,
            "worker {i} left after {took:?}, its whole shutdown_timeout"
        );
    }
    c.ledger.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_listing_still_running_when_the_worker_stops_is_abandoned() {
    /// Answers the first listing, then hangs, holding a token while it does.
    struct Hangs(Arc<()>, std::sync::atomic::AtomicBool);
    #[async_trait::async_trait]
    impl parti_runtime::PartitionSource for Hangs {
        async fn list(&self) -> Result<Vec<parti_core::Partition>, parti_runtime::SourceError> {
            if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(vec![parti_core::Partition::new(["a"], 1).expect("valid")]);
            }
            let _held = self.0.clone();
            std::future::pending().await
        }
    }
    let token = Arc::new(());
    let worker = Manager::builder(config())
        .store(MemoryStore::new())
        .partitions(Hangs(token.clone(), false.into()))
        .start()
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await; // a refresh is hanging now
    assert_eq!(
        Arc::strong_count(&token),
        3,
        "the source, this test and the hanging listing"
    );
    worker.shutdown().await;
    drop(worker);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "the listing task ended with the driver"
    );
}

#[tokio::test(start_paused = true)]
async fn watches_that_end_are_opened_again_and_the_cluster_goes_on() {
    let switch = Switch::new();
    let mut c = cluster_behind(&switch, DisconnectPolicy::Fence).await;
    // Every watch of every worker ends (members' and the leader's planner's).
    switch.end_watches();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, victim) = {
        let leader = c.leader().expect("leader");
        (
            leader,
            c.live()
                .into_iter()
                .find(|&i| i != leader)
                .expect("follower"),
        )
    };
    c.crash(victim);
    // Only reopened watches let the leader see the death and the others their new records.
    let took = c
        .wait_covered(Duration::from_secs(10))
        .await
        .expect("re-covered after the watches ended");
    assert!(took <= c.config.heartbeat_ttl + c.config.emergency_grace + Duration::from_secs(1));
    c.ledger.assert_clean();
    c.shutdown_all().await;
}
