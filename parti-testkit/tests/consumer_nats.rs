//! `PartitionConsumer` on a real `nats-server`, under parti's real rebalances: every published
//! message handled, none twice on a graceful handoff, never two owners handling one partition at
//! once — and clear errors when the stream cannot serve the partitions.

mod consumer;
mod e2e;

use std::time::Duration;

use consumer::{
    Log, Node, Producer, STREAM, client, create_stream, start_node, tally, wait_all_handled,
    wait_balanced,
};
use parti_core::handler::HandlerError;
use parti_core::records::OwnedPartition;
use parti_core::{Fence, Partition, Term, Version};
use parti_nats::consumer::{ConsumerError, Delivery, PartitionConsumer};
use parti_testkit::nats::NatsServer;

/// The heavy tests run one at a time (a 2-core machine, real sockets, real time).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

const PARTITIONS: usize = 20;

/// A server with the stream `WORK` (100 consumers), its URL, a client and its JetStream context.
async fn with_stream() -> (
    NatsServer,
    String,
    async_nats::Client,
    async_nats::jetstream::Context,
) {
    let server = server();
    let url = server.url();
    let c = client(&url).await;
    create_stream(&c, 100).await;
    let js = async_nats::jetstream::new(c.clone());
    (server, url, c, js)
}

async fn node(url: &str, log: &Log, process: &str, id: Option<u32>, work: Duration) -> Node {
    let consumer = log
        .builder(client(url).await, process, work)
        .expected_partitions(PARTITIONS)
        .build()
        .await
        .expect("a consumer");
    start_node(url, PARTITIONS, id, process, consumer).await
}

/// Lets traffic flow under the current owners for a moment (not a bound: the test's
/// assertions are about the log).
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Stops the producer, waits until everything published was handled, stops the live workers
/// gracefully, and reports the log's tally.
async fn finish(
    producer: Producer,
    log: &Log,
    nodes: &[Node],
    what: &str,
) -> (std::collections::BTreeSet<(String, u64)>, consumer::Tally) {
    let published = producer.stop().await;
    wait_all_handled(log, &published, Duration::from_secs(60)).await;
    for n in nodes.iter().filter(|n| n.alive) {
        n.manager.shutdown().await;
    }
    let t = tally(log, &published);
    eprintln!(
        "{what}: published {}, handled {}, gaps {}, duplicates {}, redelivered {}, order inversions {}, moves {}",
        published.len(),
        t.handled,
        t.gaps,
        t.duplicates,
        t.redelivered,
        t.inversions,
        t.moves
    );
    (published, t)
}

/// Joins, a graceful leave, a restart with the same id, a join again — each a real parti
/// rebalance — under ~1,000 msg/s over 20 partitions.
async fn handoffs_under_load(work: Duration, per_second: u32) {
    let _serial = SERIAL.lock().await;
    let server = server();
    let url = server.url();
    let admin = client(&url).await;
    create_stream(&admin, 100).await;
    let log = Log::default();
    let producer = Producer::start(admin.clone(), PARTITIONS, per_second);

    let mut nodes = vec![node(&url, &log, "a", Some(0), work).await];
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;
    nodes.push(node(&url, &log, "b", Some(1), work).await); // join: ~10 move
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;
    nodes.push(node(&url, &log, "c", Some(2), work).await); // join: ~6 move
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;
    nodes[1].manager.shutdown().await; // graceful leave: b's go to a and c
    nodes[1].alive = false;
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;
    nodes[0].manager.shutdown_for_restart().await; // restart: a hands over to a2
    nodes[0].alive = false;
    nodes.push(node(&url, &log, "a2", Some(0), work).await);
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;
    nodes.push(node(&url, &log, "b2", Some(1), work).await); // join again
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_millis(700)).await;

    let (published, t) = finish(producer, &log, &nodes, "graceful").await;
    assert!(
        published.len() > 1_000,
        "the producer published {}",
        published.len()
    );
    assert!(t.moves >= 10, "only {} handoffs happened", t.moves);
    assert_eq!(t.gaps, 0, "messages lost");
    assert_eq!(
        t.duplicates, 0,
        "a graceful handoff handled a message twice"
    );
    assert!(
        t.overlaps.is_empty(),
        "two owners at once: {:?}",
        t.overlaps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_handoffs_under_load_lose_and_repeat_nothing() {
    handoffs_under_load(Duration::ZERO, 50).await;
}

/// A handler slower than the arrival rate: every handoff has a backlog and buffered messages
/// to give back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_has_a_backlog_at_every_handoff_and_loses_nothing() {
    handoffs_under_load(Duration::from_millis(25), 30).await;
}

/// A crashed owner's unacknowledged messages come back to the next owner after `ack_wait`:
/// nothing lost, the duplicates counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let url = server.url();
    let admin = client(&url).await;
    create_stream(&admin, 100).await;
    let log = Log::default();
    let producer = Producer::start(admin.clone(), PARTITIONS, 50);
    let work = Duration::from_millis(5);
    let mut nodes = vec![
        node(&url, &log, "a", Some(0), work).await,
        node(&url, &log, "b", Some(1), work).await,
    ];
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_secs(1)).await;
    // Crash b: its manager and its consumer stop dead, nothing released.
    nodes[1].manager.abort();
    nodes[1].consumer.abort();
    nodes[1].alive = false;
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_secs(1)).await;
    nodes.push(node(&url, &log, "c", Some(2), work).await);
    wait_balanced(&nodes, PARTITIONS).await;
    run_for(Duration::from_secs(1)).await;

    let (_, t) = finish(producer, &log, &nodes, "crash (duplicates allowed)").await;
    assert_eq!(t.gaps, 0, "messages lost");
    assert!(t.moves >= 10, "only {} handoffs happened", t.moves);
}

fn owned(keys: &str, version: u64) -> OwnedPartition {
    OwnedPartition {
        partition: Partition::new([keys], 1).expect("a partition"),
        fence: Fence::new(Term(1), Version(version)),
    }
}

fn noop()
-> impl Fn(Delivery) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    |_| std::future::ready(Ok(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_serve_the_partitions_is_a_clear_error_at_start() {
    let server = server();
    let url = server.url();
    let c = client(&url).await;

    // No stream.
    let e = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .handler(noop())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, ConsumerError::StreamNotFound { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");

    create_stream(&c, 5).await;
    // A template the stream's subjects do not cover.
    let e = PartitionConsumer::builder(c.clone(), STREAM, "orders.{0}")
        .handler(noop())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, ConsumerError::SubjectNotCovered { .. }), "{e}");
    assert!(e.to_string().contains("work.>"), "{e}");

    // Too few consumers for the catalog.
    let e = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .expected_partitions(20)
        .handler(noop())
        .build()
        .await
        .unwrap_err();
    match &e {
        ConsumerError::ConsumerLimit { limit, needed, .. } => {
            assert_eq!((*limit, *needed), (5, 20), "{e}");
        }
        other => panic!("expected ConsumerLimit, got {other}"),
    }
    assert!(e.to_string().contains("max_consumers"), "{e}");

    // Without the expected count the limit is met at the sixth grant: a typed error, and the
    // partition keeps trying in the background.
    let consumer = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .handler(noop())
        .build()
        .await
        .expect("a consumer");
    let five: Vec<OwnedPartition> = (0..5).map(|i| owned(&format!("p{i}"), 1)).collect();
    consumer.grant(&five).await.expect("five fit");
    let e = consumer.grant(&[owned("p5", 1)]).await.unwrap_err();
    assert!(matches!(e, ConsumerError::ConsumerLimit { .. }), "{e}");
    consumer.shutdown().await;

    // A dead-letter subject no stream captures.
    let e = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .max_deliver(3)
        .dead_letter("dead.work")
        .handler(noop())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConsumerError::DeadLetterNotCaptured { .. }),
        "{e}"
    );

    // No handler, and bad settings: every problem listed.
    let e = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .batch(0)
        .max_ack_pending(0)
        .handler(noop())
        .build()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("batch") && e.to_string().contains("max_ack_pending"),
        "{e}"
    );
    let e = PartitionConsumer::builder(c, STREAM, "work.{0}")
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no handler"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_subject() {
    let (_server, _, c, js) = with_stream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DEAD".into(),
        subjects: vec!["dead.>".into()],
        ..Default::default()
    })
    .await
    .expect("the dead-letter stream");
    let handled = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seen = handled.clone();
    let consumer = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .max_deliver(3)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .dead_letter("dead.work")
        .handler(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                let body = String::from_utf8_lossy(d.payload()).into_owned();
                if body == "poison" {
                    return Err::<(), HandlerError>(format!("cannot parse {body:?}").into());
                }
                seen.lock().push(body);
                Ok(())
            }
        })
        .build()
        .await
        .expect("a consumer");
    consumer.grant(&[owned("p0", 1)]).await.expect("bound");
    for body in ["one", "poison", "two"] {
        js.publish("work.p0", body.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let mut dead = js.get_stream("DEAD").await.expect("the dead-letter stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dead.info().await.expect("info").state.messages < 1 || handled.lock().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: handled {:?}",
            handled.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letter = dead.get_raw_message(1).await.expect("the dead letter");
    assert_eq!(&letter.payload[..], b"poison");
    let headers = letter.headers;
    assert_eq!(
        headers.get("Parti-Partition").map(|v| v.as_str()),
        Some("p0")
    );
    assert_eq!(
        headers.get("Parti-Delivered").map(|v| v.as_str()),
        Some("3")
    );
    assert!(
        headers
            .get("Parti-Error")
            .is_some_and(|v| v.as_str().contains("cannot parse"))
    );
    assert_eq!(*handled.lock(), vec!["one".to_owned(), "two".to_owned()]);
    let status = consumer
        .status(&owned("p0", 1).partition.id().clone())
        .await
        .expect("status");
    assert_eq!(status.ack_pending, 0, "{status:?}");
    consumer.shutdown().await;
}

/// A partition's consumer is created once and kept across owners; one that left the catalog
/// is removed only after the grace period, and never one that is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_outlive_handoffs_and_stale_ones_go_after_the_grace() {
    let (_server, _, c, js) = with_stream().await;
    let a = PartitionConsumer::builder(c.clone(), STREAM, "work.{0}")
        .handler(noop())
        .build()
        .await
        .expect("a consumer");
    a.grant(&[owned("p0", 1), owned("p1", 1)])
        .await
        .expect("bound");
    a.release(&[owned("p0", 1).partition.id().clone()]).await;
    let stream = js.get_stream(STREAM).await.expect("stream");
    let count = |s: async_nats::jetstream::stream::Stream| async move {
        let mut s = s;
        s.info().await.expect("info").state.consumer_count
    };
    assert_eq!(count(stream.clone()).await, 2, "a release deletes nothing");

    let catalog = vec![owned("p1", 1).partition.id().clone()];
    let grace = Duration::from_millis(300);
    // p0 left the catalog: first seen absent now, deleted only after the grace.
    assert!(
        a.remove_stale_consumers(&catalog, grace)
            .await
            .expect("gc")
            .is_empty()
    );
    tokio::time::sleep(grace).await;
    let deleted = a.remove_stale_consumers(&catalog, grace).await.expect("gc");
    assert_eq!(
        deleted,
        vec![a.consumer_name(owned("p0", 1).partition.id())]
    );
    // p1 is consumed here: even out of the catalog, it is kept.
    assert!(
        a.remove_stale_consumers(&[], Duration::ZERO)
            .await
            .expect("gc")
            .is_empty()
    );
    assert_eq!(count(stream).await, 1);

    // Ownership lost, then granted again before any release: the old pull finishes first and
    // the partition runs once, under the new fence.
    a.stop_now(&[owned("p1", 1).partition.id().clone()]);
    a.grant(&[owned("p1", 7)]).await.expect("bound again");
    assert_eq!(
        a.owned(),
        vec![(owned("p1", 7).partition.id().clone(), owned("p1", 7).fence)]
    );
    let reports = a.shutdown().await;
    assert_eq!(reports.len(), 1);
}

/// Records what each of several consumers of one partition received.
fn recorder(
    name: &'static str,
    got: &std::sync::Arc<parking_lot::Mutex<Vec<(&'static str, String)>>>,
) -> impl Fn(Delivery) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    let got = got.clone();
    move |d: Delivery| {
        got.lock()
            .push((name, String::from_utf8_lossy(d.payload()).into_owned()));
        std::future::ready(Ok(()))
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes the numbers of `range` to `subject`, one message each, each stored before the next.
async fn publish_numbered(
    js: &async_nats::jetstream::Context,
    subject: &'static str,
    range: std::ops::Range<usize>,
) {
    for i in range {
        js.publish(subject, i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// Pinned exclusivity: a worker that still pulls after another bound the partition (a zombie)
/// receives nothing more, and a graceful handoff does not wait for the pin to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_exclusivity_starves_a_zombie_and_hands_over_at_once() {
    use parti_nats::consumer::Exclusivity;
    let (_server, url, _, js) = with_stream().await;
    let got = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let pinned = || Exclusivity::Pinned {
        group: "owner".into(),
        priority_timeout: Duration::from_secs(120),
    };
    let build = |name: &'static str| {
        let got = got.clone();
        let url = url.clone();
        async move {
            PartitionConsumer::builder(client(&url).await, STREAM, "work.{0}")
                .exclusivity(pinned())
                .handler(recorder(name, &got))
                .build()
                .await
                .expect("a consumer")
        }
    };
    let a = build("a").await;
    let b = build("b").await;
    let p0 = owned("p0", 1);
    let publish = |range: std::ops::Range<u32>| {
        let js = js.clone();
        async move {
            for i in range {
                js.publish("work.p0", i.to_string().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        }
    };

    a.grant(std::slice::from_ref(&p0)).await.expect("a bound");
    publish(0..10).await;
    wait_for("a gets 10", Duration::from_secs(10), || {
        got.lock().len() == 10
    })
    .await;
    // b binds while a still pulls (a never learned it lost the partition).
    b.grant(&[owned("p0", 2)]).await.expect("b bound");
    publish(10..40).await;
    wait_for("30 more delivered", Duration::from_secs(10), || {
        got.lock().len() == 40
    })
    .await;
    let after: Vec<&str> = got.lock()[10..].iter().map(|(who, _)| *who).collect();
    assert!(
        after.iter().all(|w| *w == "b"),
        "the zombie still received: {after:?}"
    );

    // A graceful handoff back to a: released, then bound, and the next message arrives well
    // within the 120 s pin timeout.
    b.release(&[p0.partition.id().clone()]).await;
    a.release(&[p0.partition.id().clone()]).await; // the zombie's own pull ends too
    a.grant(&[owned("p0", 3)]).await.expect("a bound again");
    publish(40..41).await;
    wait_for("a gets the next message", Duration::from_secs(10), || {
        got.lock().len() == 41
    })
    .await;
    assert_eq!(got.lock()[40], ("a", "40".to_owned()));
    a.shutdown().await;
    b.shutdown().await;
}

/// Manual acks: at most `max_in_flight` unsettled deliveries; a release waits for them up to
/// its timeout and reports the rest; nothing is lost for the next owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_acks_bound_what_is_in_flight_and_lose_nothing() {
    use parti_nats::consumer::AckMode;
    let (_server, url, _, js) = with_stream().await;
    let held = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Delivery>::new()));
    let keep = held.clone();
    let a = PartitionConsumer::builder(client(&url).await, STREAM, "work.{0}")
        .ack_mode(AckMode::Manual { max_in_flight: 3 })
        .ack_wait(Duration::from_secs(1))
        .release_timeout(Duration::from_millis(300))
        .handler(move |d: Delivery| {
            keep.lock().push(d); // never settled
            std::future::ready(Ok::<(), HandlerError>(()))
        })
        .build()
        .await
        .expect("a consumer");
    a.grant(&[owned("p0", 1)]).await.expect("bound");
    publish_numbered(&js, "work.p0", 0..5).await;
    wait_for("3 held", Duration::from_secs(10), || held.lock().len() == 3).await;
    // The other two wait behind the bound: still three after the rest arrived at the client.
    let status = a
        .status(owned("p0", 1).partition.id())
        .await
        .expect("status");
    assert_eq!(status.pending + status.ack_pending as u64, 5, "{status:?}");
    assert_eq!(held.lock().len(), 3);

    let report = a.release(&[owned("p0", 1).partition.id().clone()]).await;
    assert_eq!(report[0].unsettled, 3, "{report:?}");

    let got = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    // (The same ack_wait as a: the settings of a partition's consumer are the last binder's.)
    let b = PartitionConsumer::builder(client(&url).await, STREAM, "work.{0}")
        .ack_wait(Duration::from_secs(1))
        .handler(recorder("b", &got))
        .build()
        .await
        .expect("b");
    b.grant(&[owned("p0", 2)]).await.expect("b bound");
    wait_for("b gets all five", Duration::from_secs(15), || {
        let mut all: Vec<String> = got.lock().iter().map(|(_, m)| m.clone()).collect();
        all.sort();
        all.dedup();
        all.len() == 5
    })
    .await;
    b.shutdown().await;
}

/// The pull keeps a request open at the server through requests that fill at once (one
/// message each) and requests that expire while idle (each ends with a status naming what it
/// still owed): the partition keeps flowing and no pull ever goes silent. (async-nats' own
/// pull stream can lose count of its open requests and wait for `expires` + 5 s:
/// `parti-nats/README.md`, "A pull that goes silent".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_fill_at_once_or_expire_keep_the_partition_flowing() {
    let _serial = SERIAL.lock().await;
    let (_server, url, _, js) = with_stream().await;
    let got = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let a = PartitionConsumer::builder(client(&url).await, STREAM, "work.{0}")
        .batch(1)
        // Heartbeat 750 ms: a pull silent for 1.5 s would be restarted (and counted).
        .pull_expires(Duration::from_secs(3))
        .handler(recorder("a", &got))
        .build()
        .await
        .expect("a consumer");
    a.grant(&[owned("p0", 1)]).await.expect("bound");
    publish_numbered(&js, "work.p0", 0..50).await;
    wait_for("50 handled", Duration::from_secs(10), || {
        got.lock().len() == 50
    })
    .await;
    // Idle across two expiries of the open request.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    publish_numbered(&js, "work.p0", 50..60).await;
    wait_for("60 handled", Duration::from_secs(10), || {
        got.lock().len() == 60
    })
    .await;
    let seen: Vec<String> = got.lock().iter().map(|(_, m)| m.clone()).collect();
    let expected: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "every message once, in order");
    assert_eq!(a.pull_restarts(), 0, "a pull went silent");
    a.shutdown().await;
}
