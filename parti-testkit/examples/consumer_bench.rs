//! `PartitionConsumer` (issue 13): throughput per worker against a plain async-nats pull loop,
//! and handoff latency (release, then bind, then the first message at the new owner).
//!
//! ```text
//! PARTI_NATS_SERVER=/path/to/nats-server \
//!     cargo run -p parti-testkit --release --example consumer_bench [-- RUNS [MESSAGES]]
//! ```
//!
//! It starts a single-node nats-server (file storage) through `parti_testkit::nats`.
//!
//! - **Throughput**: a stream of 10 partitions is preloaded with MESSAGES messages (default
//!   50,000, 64 bytes); then one process consumes them all, acknowledging each, (a) with one
//!   durable pull consumer per partition through `consumer.stream().messages()` and `ack()`
//!   by hand — the loop a user would write with async-nats alone — and (b) with a
//!   `PartitionConsumer` whose handler does nothing (auto acks). Fresh consumers per run;
//!   RUNS runs (default 5), alternating which goes first; median and spread in msg/s.
//! - **Handoff**: a producer publishes 500 msg/s to one partition while it moves 2 × RUNS × 4
//!   times between two `PartitionConsumer`s on their own connections: `release` on the old
//!   owner (timed), then `grant` on the new one (timed: the bind), then the time from the end of
//!   the release to the new owner's first message. With a message every 2 ms, the last figure
//!   includes up to 2 ms of waiting for the next publish when nothing was given back.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::future::join_all;
use parking_lot::Mutex;
use parti_core::handler::HandlerError;
use parti_core::records::OwnedPartition;
use parti_core::{Fence, Partition, Term, Version};
use parti_nats::consumer::{Delivery, PartitionConsumer};
use parti_testkit::nats::NatsServer;

const PARTITIONS: usize = 10;

fn owned(i: usize, version: u64) -> OwnedPartition {
    OwnedPartition {
        partition: Partition::new([format!("p{i}")], 1).expect("a partition"),
        fence: Fence::new(Term(1), Version(version)),
    }
}

async fn fresh_stream(js: &jetstream::Context, messages: usize) {
    let _ = js.delete_stream("BENCH").await;
    js.create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        max_consumers: 1_000,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload = vec![b'x'; 64];
    let mut acks = Vec::new();
    for n in 0..messages {
        let ack = js
            .publish(format!("bench.p{}", n % PARTITIONS), payload.clone().into())
            .await
            .expect("publish");
        acks.push(ack);
        if acks.len() == 512 {
            for a in join_all(acks.drain(..).map(IntoFuture::into_future)).await {
                a.expect("stored");
            }
        }
    }
    for a in join_all(acks.into_iter().map(IntoFuture::into_future)).await {
        a.expect("stored");
    }
}

/// The plain loop: one durable pull consumer per partition, `messages()`, ack each.
async fn plain(client: &async_nats::Client, messages: usize) -> Duration {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("BENCH").await.expect("stream");
    let started = Instant::now();
    let per = messages / PARTITIONS;
    let loops = (0..PARTITIONS).map(|i| {
        let stream = stream.clone();
        async move {
            let c = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(format!("plain-p{i}")),
                    filter_subject: format!("bench.p{i}"),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut msgs = c
                .stream()
                .max_messages_per_batch(64)
                .messages()
                .await
                .expect("pull");
            for _ in 0..per {
                let m = msgs.next().await.expect("a message").expect("no error");
                m.ack().await.expect("ack");
            }
        }
    });
    join_all(loops).await;
    client.flush().await.expect("flush");
    started.elapsed()
}

/// The same through a `PartitionConsumer` with a handler that does nothing.
async fn parti(client: &async_nats::Client, messages: usize, run: usize) -> Duration {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let c = PartitionConsumer::builder(client.clone(), "BENCH", "bench.{0}")
        .name_prefix(format!("parti-run{run}"))
        .handler(move |_: Delivery| {
            seen.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok::<(), HandlerError>(()))
        })
        .build()
        .await
        .expect("consumer");
    let started = Instant::now();
    let all: Vec<OwnedPartition> = (0..PARTITIONS).map(|i| owned(i, 1)).collect();
    c.grant(&all).await.expect("grant");
    while count.load(Ordering::Relaxed) < messages as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let handled = started.elapsed();
    c.shutdown().await; // the last acks flushed
    if started.elapsed() > handled + Duration::from_secs(1) {
        println!(
            "  (all handled after {:.0} ms, shutdown took {:.0} ms)",
            handled.as_secs_f64() * 1e3,
            (started.elapsed() - handled).as_secs_f64() * 1e3
        );
    }
    started.elapsed()
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn pct(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let server = NatsServer::start().expect("a nats-server (set PARTI_NATS_SERVER)");
    let url = server.url();
    let client = async_nats::connect(&url).await.expect("connect");
    let js = jetstream::new(client.clone());

    println!(
        "throughput: {messages} messages over {PARTITIONS} partitions, one process, ack each; {runs} runs"
    );
    let (mut plain_rates, mut parti_rates) = (Vec::new(), Vec::new());
    for run in 0..runs {
        fresh_stream(&js, messages).await;
        let (p, q) = if run % 2 == 0 {
            let p = plain(&client, messages).await;
            let q = parti(&client, messages, run).await;
            (p, q)
        } else {
            let q = parti(&client, messages, run).await;
            let p = plain(&client, messages).await;
            (p, q)
        };
        plain_rates.push(messages as f64 / p.as_secs_f64());
        parti_rates.push(messages as f64 / q.as_secs_f64());
        println!(
            "  run {run}: plain {:.0} ms, PartitionConsumer {:.0} ms",
            p.as_secs_f64() * 1e3,
            q.as_secs_f64() * 1e3
        );
    }
    let (pm, plo, phi) = stats(plain_rates);
    let (qm, qlo, qhi) = stats(parti_rates);
    println!("  plain async-nats pull loop : median {pm:>8.0} msg/s (min {plo:.0}, max {phi:.0})");
    println!(
        "  PartitionConsumer          : median {qm:>8.0} msg/s (min {qlo:.0}, max {qhi:.0})  = {:.2}x the plain loop",
        qm / pm
    );

    // Handoffs under a steady 500 msg/s on one partition.
    fresh_stream(&js, 0).await;
    let first = Arc::new(Mutex::new(None::<Instant>));
    let build = |name: &'static str| {
        let first = first.clone();
        let url = url.clone();
        async move {
            let c = async_nats::connect(&url).await.expect("connect");
            PartitionConsumer::builder(c, "BENCH", "bench.{0}")
                .name_prefix("handoff")
                .handler(move |_: Delivery| {
                    let mut f = first.lock();
                    if f.is_none() {
                        *f = Some(Instant::now());
                    }
                    let _ = name;
                    std::future::ready(Ok::<(), HandlerError>(()))
                })
                .build()
                .await
                .expect("consumer")
        }
    };
    let a = build("a").await;
    let b = build("b").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let js = js.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(ack) = js.publish("bench.p0", "m".into()).await {
                    let _ = ack.await;
                }
            }
        })
    };
    a.grant(&[owned(0, 1)]).await.expect("grant");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handoffs = runs * 8;
    let (mut release, mut bind, mut first_msg) = (Vec::new(), Vec::new(), Vec::new());
    let mut owners = [&a, &b];
    for h in 0..handoffs {
        let t0 = Instant::now();
        let reports = owners[0]
            .release(&[owned(0, 1).partition.id().clone()])
            .await;
        let released = Instant::now();
        *first.lock() = None;
        owners[1]
            .grant(&[owned(0, h as u64 + 2)])
            .await
            .expect("grant");
        let bound = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            if let Some(t) = *first.lock() {
                break t;
            }
            assert!(Instant::now() < deadline, "no message after a handoff");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        release.push((released - t0).as_secs_f64() * 1e3);
        bind.push((bound - released).as_secs_f64() * 1e3);
        first_msg.push((got.max(released) - released).as_secs_f64() * 1e3);
        assert_eq!(reports.len(), 1);
        owners.swap(0, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    owners[0].shutdown().await;
    println!("handoff: one partition at 500 msg/s, {handoffs} handoffs between two workers (ms)");
    for (name, xs) in [
        ("release", release),
        ("bind (grant)", bind),
        ("release → first message at the new owner", first_msg),
    ] {
        let (m, lo, hi) = stats(xs.clone());
        println!(
            "  {name:<42}: median {m:>6.2}  p90 {:>6.2}  min {lo:>6.2}  max {hi:>6.2}",
            pct(xs, 0.9)
        );
    }
}
