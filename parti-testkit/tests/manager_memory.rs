//! The `Manager` on the embedded `MemoryStore`, in tokio's paused (virtual) time: whole clusters
//! of real drivers, handler tasks and the real machines, with every callback recorded in the
//! ownership ledger and "never two owners" asserted at the end of every test.

use std::sync::Arc;
use std::time::Duration;

use parti_core::config::DisconnectPolicy;
use parti_core::store::KvStore;
use parti_core::{Config, WorkerState};
use parti_runtime::{Error, Manager, MemoryStore, StartError, StaticSource};
use parti_testkit::cluster::Cluster;
use parti_testkit::faulty::Switch;
use parti_testkit::ledger::Violation;

fn config() -> Config {
    Config::fast()
}

fn store(s: &MemoryStore) -> Arc<dyn KvStore> {
    Arc::new(s.clone())
}

/// Starts `n` workers with preferred ids 0..n and waits for exact coverage.
async fn cluster(n: u32, partitions: usize) -> (MemoryStore, Cluster) {
    let mem = MemoryStore::new();
    let mut c = Cluster::new(config(), partitions);
    for i in 0..n {
        c.start(store(&mem), Some(i)).await.expect("start");
    }
    settle(&c).await;
    (mem, c)
}

/// Waits for coverage, then past the cold-start window (whose end brings the final plan), and for
/// coverage again.
async fn settle(c: &Cluster) {
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("covered after the cold start");
    tokio::time::sleep(c.config.cold_start_window * 3).await;
    c.wait_covered(Duration::from_secs(5))
        .await
        .expect("covered after the final plan");
}

fn dead_after(c: &Cluster) -> Duration {
    c.config.heartbeat_ttl + c.config.emergency_grace
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_of_three_covers_everything_with_callbacks_in_order() {
    let (_mem, mut c) = cluster(3, 30).await;
    assert_eq!(c.live().len(), 3);
    assert!(c.leader().is_some(), "one leader");
    for i in c.live() {
        let n = c.workers[i].manager.owned().len();
        assert_eq!(
            n, 10,
            "worker {i} owns {n}: the default strategy balances exactly"
        );
        assert_eq!(c.workers[i].manager.state(), WorkerState::Stable);
        assert!(c.workers[i].manager.health().ready);
    }
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_crashed_follower_is_replaced_within_the_death_bound() {
    let (_mem, mut c) = cluster(3, 30).await;
    let leader = c.leader().expect("a leader");
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    let lost = c.workers[victim].manager.owned().len();
    assert!(lost > 0);
    c.crash(victim);
    let took = c
        .wait_covered(Duration::from_secs(10))
        .await
        .expect("re-covered");
    let bound = dead_after(&c) + Duration::from_secs(1);
    assert!(took <= bound, "re-granted after {took:?}, bound {bound:?}");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_and_its_partitions_regranted_with_one_new_version() {
    let (_mem, mut c) = cluster(3, 30).await;
    let leader = c.leader().expect("a leader");
    let old_term = c.workers[leader]
        .manager
        .status()
        .term
        .expect("leads a term");
    let from = c.ledger.len();
    c.crash(leader);
    c.wait_covered(Duration::from_secs(15))
        .await
        .expect("re-covered");
    let new = c.leader().expect("a new leader");
    assert_ne!(new, leader);
    let new_term = c.workers[new].manager.status().term.expect("leads");
    assert!(new_term > old_term);
    // The survivors keep what they had; only the dead leader's partitions move, in one version.
    let versions: std::collections::BTreeSet<_> = c
        .ledger
        .entries()
        .into_iter()
        .skip(from as usize)
        .filter(|e| e.kind == parti_testkit::ledger::Kind::AssignStart)
        .flat_map(|e| e.partitions.into_iter().map(|(_, f)| f.version))
        .collect();
    assert_eq!(
        versions.len(),
        1,
        "grants after the crash: versions {versions:?}"
    );
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_over_without_waiting_for_a_death() {
    let (_mem, mut c) = cluster(3, 30).await;
    let leader = c.leader().expect("a leader");
    let leaving = (0..3).find(|&i| i != leader).expect("a follower");
    let started = tokio::time::Instant::now();
    c.shutdown(leaving).await;
    let took = c
        .wait_covered(Duration::from_secs(10))
        .await
        .expect("re-covered")
        + started.elapsed();
    assert!(
        took < c.config.heartbeat_ttl,
        "handed over after {took:?}: a graceful leave must not wait for the heartbeat to expire"
    );
    assert_eq!(c.workers[leaving].manager.state(), WorkerState::Shutdown);
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_can_leave_too() {
    let (_mem, mut c) = cluster(3, 30).await;
    let leader = c.leader().expect("a leader");
    c.shutdown(leader).await;
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("re-covered by the other two");
    assert!(c.leader().is_some_and(|l| l != leader));
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_the_same_id_moves_nothing() {
    let (mem, mut c) = cluster(3, 30).await;
    let leader = c.leader().expect("a leader");
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    let id = c.worker_id(victim).expect("an id");
    let before: Vec<_> = c.workers[victim]
        .manager
        .owned()
        .iter()
        .map(|p| p.partition.id().clone())
        .collect();
    let from = c.ledger.len();
    c.shutdown_for_restart(victim).await;
    let preferred = u32::try_from(victim).expect("small");
    let back = c
        .start(store(&mem), Some(preferred))
        .await
        .expect("restart");
    assert_eq!(c.worker_id(back), Some(id), "the same id comes back");
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("covered");
    let after: Vec<_> = c.workers[back]
        .manager
        .owned()
        .iter()
        .map(|p| p.partition.id().clone())
        .collect();
    assert_eq!(
        after, before,
        "the new process owns exactly what the old one did"
    );
    assert_eq!(
        c.ledger.moves_since(from),
        0,
        "no partition changed worker id"
    );
    let grants = c.ledger.grants_since(from);
    let others: usize = grants
        .iter()
        .filter(|(p, _)| **p != c.workers[back].process)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(others, 0, "nobody else was granted anything: {grants:?}");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

/// Starts three workers, the first with a handler that takes `delay` per callback; returns the
/// cluster and the slow process's name once the cold start has settled.
async fn cluster_with_a_slow_worker(delay: Duration) -> (Cluster, String) {
    let mem = MemoryStore::new();
    let mut c = Cluster::new(config(), 12);
    let slow = c.next_handler().with_delay(delay);
    let slow_process = slow.process().to_owned();
    c.start_with(store(&mem), Some(0), slow)
        .await
        .expect("start");
    for i in 1..3 {
        c.start(store(&mem), Some(i)).await.expect("start");
    }
    c.wait_covered(Duration::from_secs(30))
        .await
        .expect("covered");
    tokio::time::sleep(c.config.cold_start_window * 3 + delay * 4).await;
    c.wait_covered(Duration::from_secs(30))
        .await
        .expect("covered");
    (c, slow_process)
}

fn callbacks_of(c: &Cluster, process: &str) -> usize {
    c.ledger
        .entries()
        .iter()
        .filter(|e| {
            e.process == process
                && matches!(
                    e.kind,
                    parti_testkit::ledger::Kind::AssignStart
                        | parti_testkit::ledger::Kind::RevokeStart
                )
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_delays_the_next_callback_and_never_overlaps_it() {
    let delay = config().handler_timeout / 2;
    let (mut c, slow) = cluster_with_a_slow_worker(delay).await;
    assert!(
        callbacks_of(&c, &slow) >= 2,
        "the slow worker saw several callbacks"
    );
    c.ledger.assert_clean(); // includes: callbacks of one process never overlap
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_handler_slower_than_its_timeout_still_never_overlaps_the_next() {
    // Past handler_timeout the member counts the delivery as done and moves on (documented: a
    // revocation that outlives it no longer holds the partitions back); the next delivery waits
    // behind the running callback.
    let delay = config().handler_timeout + Duration::from_millis(500);
    let (mut c, slow) = cluster_with_a_slow_worker(delay).await;
    assert!(
        callbacks_of(&c, &slow) >= 2,
        "the slow worker saw several callbacks"
    );
    let overlaps: Vec<_> = c
        .ledger
        .violations()
        .into_iter()
        .filter(|v| matches!(v, Violation::Overlap { .. }))
        .collect();
    assert!(overlaps.is_empty(), "{overlaps:?}");
    c.shutdown_all().await;
}

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
async fn the_ledger_catches_a_deliberately_broken_handover() {
    let mem = MemoryStore::new();
    let mut c = Cluster::new(config(), 12);
    // This application says it stopped, and goes on working for 2 s.
    let liar = c
        .next_handler()
        .broken_keep_after_revoke(Duration::from_secs(2));
    let liar_index = c
        .start_with(store(&mem), Some(0), liar)
        .await
        .expect("start");
    for i in 1..3 {
        c.start(store(&mem), Some(i)).await.expect("start");
    }
    settle(&c).await;
    c.shutdown(liar_index).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let violations = c.ledger.violations();
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, Violation::TwoOwners { owner, .. } if *owner == c.workers[liar_index].process)),
        "the ledger must see the liar's partitions granted while it still worked: {violations:?}"
    );
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn wait_for_state_does_not_miss_a_short_state_and_followers_do_not_rebalance() {
    let (_mem, mut c) = cluster(2, 8).await;
    let leader = c.leader().expect("leader");
    let follower = 1 - leader;
    // ClaimingId lasted an instant long ago: waiting for a state the worker is not in times out...
    let err = c.workers[follower]
        .manager
        .wait_for_state(WorkerState::ClaimingId, Duration::from_millis(100))
        .await;
    assert_eq!(err, Err(Error::Timeout(Duration::from_millis(100))));
    // ...but a state entered after the call began is seen even if it is left at once.
    let m = c.workers[follower].manager.clone();
    let waiter = tokio::spawn(async move {
        m.wait_for_state(WorkerState::Leaving, Duration::from_secs(10))
            .await
    });
    tokio::task::yield_now().await;
    c.shutdown(follower).await; // Leaving → Shutdown
    assert_eq!(waiter.await.expect("joined"), Ok(()));
    assert!(matches!(
        c.workers[follower].manager.trigger_rebalance().await,
        Err(Error::Stopped)
    ));
    c.workers[leader]
        .manager
        .trigger_rebalance()
        .await
        .expect("the leader plans");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn trigger_rebalance_on_a_follower_names_the_leader_or_says_none() {
    let (_mem, mut c) = cluster(2, 8).await;
    let leader = c.leader().expect("leader");
    let err = c.workers[1 - leader]
        .manager
        .trigger_rebalance()
        .await
        .expect_err("a follower does not plan");
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    c.shutdown_all().await;
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
    let (mem, mut c) = cluster(3, 30).await;
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
