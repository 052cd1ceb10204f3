//! Manager scenarios shared by the embedded-store tests (paused time) and the real-server tests
//! (wall-clock time): each takes a [`Backend`] that hands every worker its own store handle.
//! Every scenario ends with the ledger's check: no partition ever had two owners, fences only
//! grew, and no worker's callbacks overlapped.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parti_core::store::KvStore;
use parti_core::{Config, WorkerState};
use parti_runtime::Error;
use parti_testkit::cluster::Cluster;
use parti_testkit::ledger::{Kind, Violation};

/// Where the workers' stores come from.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    /// A store handle for one more worker (its own connection, on a server).
    async fn store(&self) -> Arc<dyn KvStore>;
    /// The configuration the workers start with.
    fn config(&self) -> Config;
    /// Bounds are scaled by this for scheduling slack (1.0 in virtual time).
    fn slack(&self) -> Duration;
}

/// Starts `n` workers with preferred ids `0..n` and waits until the cold start has settled.
pub(crate) async fn cluster(b: &dyn Backend, n: u32, partitions: usize) -> Cluster {
    let mut c = Cluster::new(b.config(), partitions);
    for i in 0..n {
        c.start(b.store().await, Some(i)).await.expect("start");
    }
    settle(&c).await;
    c
}

/// Waits for coverage, then past the cold-start window (whose end brings the final plan), and
/// for coverage again.
pub(crate) async fn settle(c: &Cluster) {
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("covered after the cold start");
    tokio::time::sleep(c.config.cold_start_window * 3).await;
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("covered after the final plan");
}

fn dead_after(c: &Cluster) -> Duration {
    c.config.heartbeat_ttl + c.config.emergency_grace
}

fn follower(c: &Cluster) -> (usize, usize) {
    let leader = c.leader().expect("one leader");
    let f = c
        .live()
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    (leader, f)
}

pub(crate) async fn cold_start_of_three(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    assert!(c.leader().is_some(), "one leader");
    for i in c.live() {
        let m = &c.workers[i].manager;
        assert_eq!(
            m.owned().len(),
            10,
            "worker {i}: the default strategy balances exactly"
        );
        assert_eq!(m.state(), WorkerState::Stable);
        assert!(m.health().ready);
    }
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

pub(crate) async fn crashed_follower(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    let (_, victim) = follower(&c);
    assert!(!c.workers[victim].manager.owned().is_empty());
    c.crash(victim);
    let took = c
        .wait_covered(Duration::from_secs(20))
        .await
        .expect("re-covered");
    let bound = dead_after(&c) + Duration::from_secs(1) + b.slack();
    println!("crashed follower: re-covered after {took:?} (bound {bound:?})");
    assert!(took <= bound, "re-granted after {took:?}, bound {bound:?}");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

pub(crate) async fn crashed_leader(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    let leader = c.leader().expect("a leader");
    let old_term = c.workers[leader]
        .manager
        .status()
        .term
        .expect("leads a term");
    let from = c.ledger.len();
    c.crash(leader);
    let took = c
        .wait_covered(Duration::from_secs(30))
        .await
        .expect("re-covered");
    println!("crashed leader: re-covered after {took:?}");
    let new = c.leader().expect("a new leader");
    assert_ne!(new, leader);
    let new_term = c.workers[new].manager.status().term.expect("leads");
    assert!(new_term > old_term);
    // The survivors keep what they had; only the dead leader's partitions move, in one version.
    let versions: BTreeSet<_> = c
        .ledger
        .entries()
        .into_iter()
        .skip(from as usize)
        .filter(|e| e.kind == Kind::AssignStart)
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

pub(crate) async fn shutdown_hands_over(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    let (_, leaving) = follower(&c);
    let started = tokio::time::Instant::now();
    c.shutdown(leaving).await;
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("re-covered");
    let took = started.elapsed();
    println!("graceful leave: handed over after {took:?}");
    assert!(
        took < c.config.heartbeat_ttl + b.slack(),
        "handed over after {took:?}: a graceful leave must not wait for the heartbeat to expire"
    );
    assert_eq!(c.workers[leaving].manager.state(), WorkerState::Shutdown);
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

pub(crate) async fn leader_leaves(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    let leader = c.leader().expect("a leader");
    c.shutdown(leader).await;
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("re-covered by the other two");
    // The leaving leader planned its own leave, then handed the leader key over.
    c.wait_until(Duration::from_secs(20), || {
        c.leader()
            .is_none_or(|l| l == leader)
            .then(|| "no new leader".to_owned())
    })
    .await
    .expect("a new leader");
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

pub(crate) async fn restart_moves_nothing(b: &dyn Backend) {
    let mut c = cluster(b, 3, 30).await;
    let (_, victim) = follower(&c);
    let id = c.worker_id(victim).expect("an id");
    let ids = |c: &Cluster, i: usize| -> Vec<_> {
        c.workers[i]
            .manager
            .owned()
            .iter()
            .map(|p| p.partition.id().clone())
            .collect()
    };
    let before = ids(&c, victim);
    let from = c.ledger.len();
    c.shutdown_for_restart(victim).await;
    let preferred = u32::try_from(victim).expect("small");
    let back = c
        .start(b.store().await, Some(preferred))
        .await
        .expect("restart");
    assert_eq!(c.worker_id(back), Some(id), "the same id comes back");
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("covered");
    assert_eq!(
        ids(&c, back),
        before,
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

/// Three workers, the first with a handler that takes `delay` per callback.
async fn cluster_with_a_slow_worker(b: &dyn Backend, delay: Duration) -> (Cluster, String) {
    let mut c = Cluster::new(b.config(), 12);
    let slow = c.next_handler().with_delay(delay);
    let slow_process = slow.process().to_owned();
    c.start_with(b.store().await, Some(0), slow)
        .await
        .expect("start");
    for i in 1..3 {
        c.start(b.store().await, Some(i)).await.expect("start");
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
        .filter(|e| e.process == process && matches!(e.kind, Kind::AssignStart | Kind::RevokeStart))
        .count()
}

pub(crate) async fn slow_handler(b: &dyn Backend) {
    let delay = b.config().handler_timeout / 2;
    let (mut c, slow) = cluster_with_a_slow_worker(b, delay).await;
    assert!(
        callbacks_of(&c, &slow) >= 2,
        "the slow worker saw several callbacks"
    );
    c.ledger.assert_clean(); // includes: callbacks of one process never overlap
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

/// Past `handler_timeout` the member counts the delivery as done and moves on (documented: a
/// revocation that outlives it no longer holds the partitions back); the next delivery waits
/// behind the running callback, so callbacks still never overlap.
pub(crate) async fn handler_slower_than_its_timeout(b: &dyn Backend) {
    let delay = b.config().handler_timeout + Duration::from_millis(500);
    let (mut c, slow) = cluster_with_a_slow_worker(b, delay).await;
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

pub(crate) async fn broken_handover_is_caught(b: &dyn Backend) {
    let mut c = Cluster::new(b.config(), 12);
    // This application says it stopped, and goes on working for 2 s.
    let liar = c
        .next_handler()
        .broken_keep_after_revoke(Duration::from_secs(2));
    let liar_index = c
        .start_with(b.store().await, Some(0), liar)
        .await
        .expect("start");
    for i in 1..3 {
        c.start(b.store().await, Some(i)).await.expect("start");
    }
    settle(&c).await;
    c.shutdown(liar_index).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let liar = c.workers[liar_index].process.clone();
    let violations = c.ledger.violations();
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, Violation::TwoOwners { owner, .. } if *owner == liar)),
        "the ledger must see the liar's partitions granted while it still worked: {violations:?}"
    );
    c.shutdown_all().await;
}

pub(crate) async fn states_and_rebalance(b: &dyn Backend) {
    let mut c = cluster(b, 2, 8).await;
    let (leader, follower) = follower(&c);
    let err = c.workers[follower]
        .manager
        .trigger_rebalance()
        .await
        .expect_err("a follower does not plan");
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    c.workers[leader]
        .manager
        .trigger_rebalance()
        .await
        .expect("the leader plans");
    // A state entered after the call began is seen even if it is left at once.
    let m = c.workers[follower].manager.clone();
    let waiter = tokio::spawn(async move {
        m.wait_for_state(WorkerState::Leaving, Duration::from_secs(20))
            .await
    });
    tokio::task::yield_now().await;
    c.shutdown(follower).await; // Leaving → Shutdown
    assert_eq!(waiter.await.expect("joined"), Ok(()));
    assert!(matches!(
        c.workers[follower].manager.trigger_rebalance().await,
        Err(Error::Stopped)
    ));
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

/// After a crash and a leader's leave, only the leaving leader's partitions move: the new
/// leader does not plan for the long-dead worker it knows only from its record.
pub(crate) async fn leader_leaves_after_a_crash_moves_only_its_partitions(b: &dyn Backend) {
    let mut c = cluster(b, 4, 40).await;
    let (leader, victim) = follower(&c);
    c.crash(victim);
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("re-covered");
    tokio::time::sleep(c.config.cold_start_window * 3).await;
    let leaving = c.workers[leader].manager.owned().len();
    let from = c.ledger.len();
    c.shutdown(leader).await;
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("re-covered");
    tokio::time::sleep(c.config.planned_scale_window * 4 + dead_after(&c) * 2).await;
    c.wait_covered(Duration::from_secs(20))
        .await
        .expect("still covered");
    assert_eq!(
        c.ledger.moves_since(from),
        leaving,
        "only the leaving leader's partitions moved"
    );
    c.ledger.assert_clean();
    c.shutdown_all().await;
}
