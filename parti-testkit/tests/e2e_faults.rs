//! End-to-end fault scenarios of issue 11 on real `nats-server`s: successive leader kills, one
//! worker cut off by a proxy, slow-but-valid heartbeats, an absence shorter than the grace, a
//! 3-node cluster losing its stream leader, long outages under `Hold` and `Fence`, and a minute
//! of churn. Every handler callback goes to the ownership ledger, whose "never two owners" check
//! ends every test. Timings are printed (`-- --nocapture`); every wait has a deadline.

mod e2e;

use std::time::Duration;

use e2e::{WITHIN, config, server, settle, start_on, start_together};
use parti_core::Config;
use parti_core::config::DisconnectPolicy;
use parti_core::store::{KvStore as _, OnMismatch};
use parti_testkit::chaos::{ChaosProxy, Direction, Mode};
use parti_testkit::cluster::Cluster;
use parti_testkit::ledger::{Kind, Violation};
use parti_testkit::nats::NatsCluster;

fn dead_after(c: &Config) -> Duration {
    c.heartbeat_ttl + c.emergency_grace
}

fn fence_after(c: &Config) -> Duration {
    c.heartbeat_ttl - c.fence_margin
}

/// Three leader crashes one after the other: each time a new leader takes over and only the dead
/// leader's partitions move (no cold start, survivors keep theirs), within the election ttl plus
/// the death bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_successive_leader_kills_move_only_the_leaders_partitions() {
    let server = server();
    let mut c = Cluster::new(config(), 40);
    assert_eq!(start_together(&mut c, &server.url(), 6, &[]).await, 0);
    settle(&c).await;
    let bound = c.config.election_ttl + dead_after(&c.config) + Duration::from_secs(3);
    for kill in 1..=3 {
        let leader = c.leader().expect("a leader");
        let owned = c.workers[leader].manager.owned().len();
        let from = c.ledger.len();
        c.crash(leader);
        let took = c.wait_covered(WITHIN).await.expect("covered again");
        println!("leader kill {kill}: its {owned} partitions owned again after {took:?}");
        assert!(took <= bound, "{took:?} > {bound:?}");
        settle(&c).await;
        assert_eq!(
            c.ledger.moves_since(from),
            owned,
            "only the dead leader's partitions moved"
        );
        c.wait_until(WITHIN, || {
            c.leader().is_none().then(|| "no single leader".to_owned())
        })
        .await
        .expect("a new leader");
    }
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

/// Three direct workers and one behind a proxy (a follower), settled.
async fn with_one_behind_a_proxy(
    server: &parti_testkit::nats::NatsServer,
    config: Config,
    partitions: usize,
) -> (Cluster, ChaosProxy, usize) {
    let mut c = Cluster::new(config, partitions);
    assert_eq!(start_together(&mut c, &server.url(), 3, &[]).await, 0);
    settle(&c).await;
    let proxy = ChaosProxy::start(server.addr()).await.expect("proxy");
    assert_eq!(start_on(&mut c, &[proxy.url()], &[]).await, 0);
    let behind = c.workers.len() - 1;
    settle(&c).await;
    assert!(
        !c.workers[behind].manager.is_leader(),
        "the first three elected a leader before"
    );
    assert!(!c.workers[behind].manager.owned().is_empty());
    (c, proxy, behind)
}

/// A worker cut off by the network under `Fence`: it stops its work within `fence_after`, the
/// others own its partitions once it is dead (never while it may still hold them), and after the
/// heal it comes back and gets a share again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_under_fence_stops_and_its_partitions_move_once() {
    let server = server();
    let (mut c, proxy, behind) = with_one_behind_a_proxy(&server, config(), 40).await;
    let owned = c.workers[behind].manager.owned().len();
    let from = c.ledger.len();
    let t0 = tokio::time::Instant::now();
    proxy.set_mode_both(Mode::Blackhole);
    let fence = fence_after(&c.config);
    c.wait_until(fence + Duration::from_secs(3), || {
        (!c.workers[behind].manager.owned().is_empty()).then(|| "still working".to_owned())
    })
    .await
    .expect("it stops its work");
    let stopped = t0.elapsed();
    println!("cut off: stopped its work after {stopped:?} (fence_after {fence:?})");
    assert!(
        stopped <= fence + Duration::from_millis(700),
        "{stopped:?} > fence_after {fence:?} + slack"
    );
    c.wait_covered(WITHIN).await.expect("the others cover it");
    println!(
        "cut off: the others own its {owned} partitions after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        c.ledger.moves_since(from),
        owned,
        "each of its partitions moved once"
    );
    proxy.heal();
    c.wait_until(WITHIN, || {
        c.coverage_gap().or_else(|| {
            c.workers[behind]
                .manager
                .owned()
                .is_empty()
                .then(|| "it owns nothing yet".to_owned())
        })
    })
    .await
    .expect("back with a share after the heal");
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

/// Heartbeats that arrive late but within the ttl (250 ms each way) for several seconds: nothing
/// changes — no death, no plan, not one callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_valid_heartbeats_change_nothing() {
    let server = server();
    let (mut c, proxy, behind) = with_one_behind_a_proxy(&server, config(), 40).await;
    let from = c.ledger.len();
    proxy.set_latency(Direction::ToServer, Duration::from_millis(250));
    proxy.set_latency(Direction::ToClient, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();
    tokio::time::sleep(c.config.heartbeat_ttl).await;
    assert_eq!(
        c.ledger.len(),
        from,
        "no callback anywhere: {:?}",
        c.ledger.entries().get(usize::try_from(from).unwrap_or(0))
    );
    assert!(!c.workers[behind].manager.owned().is_empty());
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

/// A worker silent for less than `fence_after` (and far less than `heartbeat_ttl + grace`): no
/// emergency, no fence, not one callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_shorter_than_the_grace_is_no_emergency() {
    let server = server();
    let (mut c, proxy, behind) = with_one_behind_a_proxy(&server, config(), 40).await;
    let from = c.ledger.len();
    let silence = fence_after(&c.config) * 2 / 3;
    proxy.set_mode_both(Mode::Blackhole);
    tokio::time::sleep(silence).await;
    proxy.heal();
    tokio::time::sleep(dead_after(&c.config) * 2).await;
    assert_eq!(
        c.ledger.len(),
        from,
        "silent {silence:?}: no callback anywhere: {:?}",
        c.ledger.entries().get(usize::try_from(from).unwrap_or(0))
    );
    assert!(!c.workers[behind].manager.owned().is_empty());
    c.ledger.assert_clean();
    c.shutdown_all().await;
}

/// A 3-node cluster with replicated buckets loses the node that leads the heartbeats stream:
/// the store stalls while a new stream leader is elected, and nobody is declared dead for that
/// (the leader's own echo is stale too): no partition changes worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_3_node_cluster_is_no_false_emergency() {
    let mut nodes = NatsCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let mut config = config();
    config.buckets.replicas = 3;
    // Replicated writes, raft groups created on a loaded 2-core machine and a stream leader
    // election take longer than one node: slower timings, room for provisioning.
    let ms = Duration::from_millis;
    config.heartbeat_interval = ms(500);
    config.heartbeat_ttl = ms(3_000);
    config.emergency_grace = ms(1_000);
    config.fence_margin = ms(300);
    config.election_ttl = ms(3_000);
    config.operation_timeout = ms(2_000);
    // Ids expire by the store's clock (the ids bucket's max age): a stream-leader failover that
    // stalls the ids stream longer than identity_ttl loses every id for real — seen under heavy
    // load with the suite's 6 s, all three workers re-claiming ids. The default is 30 s; the
    // test is about heartbeats during the stall, so it gives ids the default's room.
    config.identity_ttl = Duration::from_secs(30);
    config.startup_timeout = Duration::from_secs(60);
    config.on_disconnect = DisconnectPolicy::Hold;
    let mut c = Cluster::new(config, 30);
    let urls = nodes.urls();
    let valid = c.config.clone().validate().expect("valid");
    // Creating a replicas-3 stream took a worker's start past its 2 s operation timeout once
    // on a loaded machine: the buckets are made here first, with room (the workers then find
    // them in place).
    let probe = parti_nats::NatsStore::connect_url(
        &urls,
        parti_nats::NatsStoreConfig::from_config(&valid).with_op_timeout(Duration::from_secs(20)),
    )
    .await
    .expect("connect");
    for spec in valid.bucket_specs() {
        probe
            .provision(&spec, OnMismatch::Fail)
            .await
            .expect("provision the buckets");
    }
    let bucket = valid.names().heartbeats_bucket();
    let leader = probe
        .stream_leader(&bucket)
        .await
        .expect("stream info")
        .expect("a stream leader");
    let index = nodes.index_of(&leader).expect("a node of ours");
    // The workers connect to the two other nodes. A worker whose own connection the kill cuts
    // is silent, not stalled: if reconnecting takes it longer than ttl + grace it is rightly
    // declared dead (seen once in ten runs on a loaded machine). This test is about the
    // store's stall, which every worker sees alike.
    let others: Vec<String> = nodes
        .nodes()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, n)| n.url())
        .collect();
    let worker_urls: Vec<String> = (0..3).map(|i| others[i % others.len()].clone()).collect();
    assert_eq!(start_on(&mut c, &worker_urls, &[]).await, 0);
    settle(&c).await;
    let from = c.ledger.len();
    nodes.node(index).kill().expect("kill -9 the stream leader");
    println!("killed {leader}, the heartbeats stream's leader");
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.wait_covered(WITHIN).await.expect("covered");
    settle(&c).await;
    let moved = c.ledger.moves_since(from);
    if moved != 0 {
        let ids: Vec<String> = c
            .live()
            .iter()
            .map(|&i| format!("{} = {:?}", c.workers[i].process, c.worker_id(i)))
            .collect();
        for e in c
            .ledger
            .entries()
            .iter()
            .skip(usize::try_from(from).unwrap_or(0))
        {
            println!(
                "#{} {:?} {} {:?} {}",
                e.seq,
                e.at,
                e.process,
                e.kind,
                e.partitions.len()
            );
        }
        panic!(
            "nobody was declared dead for the store's own stall: {moved} moved; ids now {ids:?}"
        );
    }
    nodes.restart(index).expect("restart the node");
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

/// A 30 s outage of the whole server under `policy`.
async fn outage(policy: DisconnectPolicy) {
    let mut server = server();
    let mut config = config();
    config.on_disconnect = policy;
    let mut c = Cluster::new(config, 30);
    assert_eq!(start_together(&mut c, &server.url(), 3, &[]).await, 0);
    settle(&c).await;
    let before: Vec<usize> = c
        .live()
        .iter()
        .map(|&i| c.workers[i].manager.owned().len())
        .collect();
    let from = c.ledger.len();
    let held = c.ledger.owners();
    server.stop().expect("stop the server");
    let t0 = tokio::time::Instant::now();
    if policy == DisconnectPolicy::Fence {
        let fence = fence_after(&c.config);
        c.wait_until(fence + Duration::from_secs(3), || {
            c.live()
                .into_iter()
                .find(|&i| !c.workers[i].manager.owned().is_empty())
                .map(|i| format!("worker {i} still works"))
        })
        .await
        .expect("every worker stops its work");
        println!("outage under Fence: all stopped after {:?}", t0.elapsed());
    }
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if policy == DisconnectPolicy::Hold {
            let during: Vec<usize> = c
                .live()
                .iter()
                .map(|&i| c.workers[i].manager.owned().len())
                .collect();
            assert_eq!(during, before, "under Hold the work goes on");
        }
    }
    let restarted_at = c.ledger.len();
    server
        .restart()
        .expect("restart on the same port and store");
    let took = c
        .wait_covered(WITHIN)
        .await
        .expect("covered after the outage");
    println!("outage under {policy:?}: covered {took:?} after the restart");
    settle(&c).await;
    // Longer than every bucket's max age: ids, heartbeats and the leader key expire when the
    // server comes back, every worker claims an id again (the lowest free one, not necessarily
    // its own: the moves printed here), and ownership resumes without two owners.
    println!(
        "outage under {policy:?}: {} partitions changed worker id after the restart",
        c.ledger.moves_since(from)
    );
    if policy == DisconnectPolicy::Hold {
        held_through_the_outage_only(&c, &held, restarted_at);
    } else {
        c.ledger.assert_clean();
    }
    let end = c.ledger.len();
    c.shutdown_all().await;
    if policy == DisconnectPolicy::Hold {
        let after: Vec<_> = c
            .ledger
            .violations()
            .into_iter()
            .filter(|v| matches!(v, Violation::TwoOwners { seq, .. } if *seq >= end))
            .collect();
        assert!(after.is_empty(), "{after:?}");
    } else {
        c.ledger.assert_clean();
    }
}

/// Hold's documented trade-off, and nothing more: the outage outlasted `identity_ttl`, so when
/// the server is back the workers' ids are gone, and a partition may be granted to another
/// process before the one that held it through the outage has learned that it lost its id
/// (DisconnectPolicy::Hold). Every two-owner overlap must be of that kind — after the restart,
/// against a process that held the partition since before the outage, ended by that process
/// giving it up — and, once settled, every partition has one owner.
fn held_through_the_outage_only(
    c: &Cluster,
    held: &std::collections::BTreeMap<parti_core::PartitionId, String>,
    restarted_at: u64,
) {
    let entries = c.ledger.entries();
    let mut overlaps = 0;
    for v in c.ledger.violations() {
        let Violation::TwoOwners {
            partition,
            owner,
            seq,
            ..
        } = &v
        else {
            panic!("not a Hold overlap: {v:?}");
        };
        assert!(*seq >= restarted_at, "two owners before the restart: {v:?}");
        assert_eq!(
            held.get(partition),
            Some(owner),
            "the earlier owner did not hold it through the outage: {v:?}"
        );
        let gave_up = entries.iter().any(|e| {
            e.seq > *seq
                && e.process == *owner
                && matches!(e.kind, Kind::Lost | Kind::RevokeEnd)
                && e.partitions.iter().any(|(p, _)| p == partition)
        });
        assert!(
            gave_up,
            "the holder through the outage never gave it up: {v:?}"
        );
        overlaps += 1;
    }
    println!(
        "outage under Hold: {overlaps} partitions granted to another process before their \
         holder through the outage learned that its id had expired (Hold's trade-off)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_outage_under_hold_keeps_the_work_and_ownership_resumes() {
    outage(DisconnectPolicy::Hold).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_outage_under_fence_stops_the_work_and_ownership_resumes() {
    outage(DisconnectPolicy::Fence).await;
}

/// A minute of churn — joins, crashes, graceful leaves and restarts, one every 1.5–3 s, between
/// 3 and 8 workers — with no two owners ever, and exact coverage whenever the cluster is quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_churn_keeps_ownership_exclusive() {
    let server = server();
    let url = server.url();
    let mut c = Cluster::new(config(), 60);
    assert_eq!(start_together(&mut c, &url, 4, &[]).await, 0);
    settle(&c).await;
    // A fixed pseudo-random sequence (xorshift), so a failure replays the same churn.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let t0 = tokio::time::Instant::now();
    let mut events = 0;
    let mut quiet_checks = 0;
    while t0.elapsed() < Duration::from_secs(60) {
        let live = c.live();
        let pick = live[usize::try_from(next(live.len() as u64)).unwrap_or(0)];
        match next(4) {
            0 if live.len() < 8 => {
                assert_eq!(start_together(&mut c, &url, 1, &[]).await, 0, "a join");
            }
            1 if live.len() > 3 => c.crash(pick),
            2 if live.len() > 3 => c.shutdown(pick).await,
            _ => {
                let id = e2e::id_number(&c, pick);
                c.shutdown_for_restart(pick).await;
                assert_eq!(
                    start_together(&mut c, &url, 1, &[Some(id)]).await,
                    0,
                    "a restart"
                );
            }
        }
        events += 1;
        let pause = Duration::from_millis(1_500 + next(1_500));
        tokio::time::sleep(pause).await;
        // Every third event, let the cluster become quiet and check exact coverage.
        if events % 3 == 0 {
            c.wait_covered(WITHIN)
                .await
                .expect("exact coverage when quiet");
            quiet_checks += 1;
        }
        c.ledger.assert_clean();
    }
    c.wait_covered(WITHIN).await.expect("covered at the end");
    println!(
        "churn: {events} events in {:?}, {quiet_checks} quiet coverage checks, {} callbacks",
        t0.elapsed(),
        c.ledger.len()
    );
    c.ledger.assert_clean();
    c.shutdown_all().await;
    c.ledger.assert_clean();
}

/// A worker's assignment record over the server's `max_payload` (8 KiB here; 1 MiB by default,
/// which one worker owning ~90,000 partitions reaches): the leader reports it once
/// (`RecordTooLarge`), does not send it again, grants nothing twice; a worker joining makes the
/// shares fit again and everything is owned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_max_payload_is_reported_once_and_not_retried() {
    use parti_core::member::Notification as MemberNote;
    use parti_core::planner::PlannerNotification;
    use parti_runtime::Notification;

    let server = parti_testkit::nats::NatsServer::start_with_config(Some("max_payload: 8192"))
        .unwrap_or_else(|e| panic!("{e}"));
    // 1,200 partitions: 400 or 600 per worker fit in 8 KiB (about 10 bytes each), 1,200 do not.
    let mut c = Cluster::new(config(), 1_200);
    assert_eq!(start_together(&mut c, &server.url(), 3, &[]).await, 0);
    settle(&c).await;
    let mut notes: Vec<_> = c
        .workers
        .iter()
        .map(|w| w.manager.notifications())
        .collect();
    // (receiver index, worker, partitions, error) of every report since the last call.
    let refusals = |notes: &mut Vec<tokio::sync::broadcast::Receiver<Notification>>| {
        let mut found = Vec::new();
        for (i, rx) in notes.iter_mut().enumerate() {
            while let Ok(n) = rx.try_recv() {
                if let Notification::Member(MemberNote::Planner(
                    PlannerNotification::RecordTooLarge {
                        worker,
                        partitions,
                        error,
                    },
                )) = n
                {
                    found.push((i, worker, partitions, error));
                }
            }
        }
        found
    };

    c.shutdown(1).await;
    e2e::wait_each_owns(&c, 600).await;
    assert!(refusals(&mut notes).is_empty(), "600 partitions fit");

    // The last two would become one worker owning all 1,200: refused — by the leaving
    // worker's planner if it led, and once more by the survivor's when it takes over (a new
    // leader tries once).
    let survivor = c.live().into_iter().find(|&i| i != 2).expect("a survivor");
    let kept = c.workers[survivor].manager.owned().len();
    c.shutdown(2).await;
    let mut found: Vec<(
        usize,
        parti_core::WorkerId,
        usize,
        parti_core::store::KvError,
    )> = Vec::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    // The survivor leads in the end, and its planner tries (and is refused) exactly once.
    while !found.iter().any(|f| f.0 == survivor) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the survivor's planner reported no RecordTooLarge: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        found.extend(refusals(&mut notes));
    }
    // Not retried: in 3 more seconds (the planner's retry backoff starts at 100 ms) no planner
    // reports again, and the survivor still owns what it had.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = refusals(&mut notes);
    assert!(later.is_empty(), "sent again: {later:?} after {found:?}");
    let mut per_leader: Vec<usize> = found.iter().map(|f| f.0).collect();
    per_leader.dedup();
    assert_eq!(
        per_leader.len(),
        found.len(),
        "a leader reported twice: {found:?}"
    );
    for (_, worker, partitions, error) in &found {
        assert_eq!(Some(worker.clone()), c.worker_id(survivor));
        assert_eq!(*partitions, 1_200);
        assert!(
            matches!(
                error,
                parti_core::store::KvError::ValueTooLarge {
                    limit: Some(8192),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("max_payload"), "{error}");
    }
    assert_eq!(c.workers[survivor].manager.owned().len(), kept);

    // A new worker: 600 each fits, and the plan goes out.
    let store = e2e::store(&server.url(), &c.config).await;
    c.start(store, None).await.expect("a third worker starts");
    e2e::wait_each_owns(&c, 600).await;
    c.shutdown_all().await;
    c.ledger.assert_clean();
}
