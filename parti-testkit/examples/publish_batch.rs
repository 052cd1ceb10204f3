//! Batched publication (issue 10): how long publishing a plan that touches 1,000 workers takes
//! on a local nats-server, with its compare-and-set writes one after another vs all in flight
//! at once on one connection.
//!
//! ```text
//! PARTI_NATS_SERVER=/path/to/nats-server \
//!     cargo run -p parti-testkit --release --example publish_batch [-- REPETITIONS [WORKERS]]
//! ```
//!
//! It starts a single-node nats-server through `parti_testkit::nats`, provisions an
//! assignments-like bucket through `NatsStore` (history 1, no max age, file storage), seeds one
//! record per worker (`w.worker-<i>`, 256-byte values, about an assignment record's size), then
//! times each repetition of "update every worker's record by compare-and-set on its last
//! revision" both ways, rotating which goes first. Prints median, p90, min and max per mode,
//! and for comparison the same pipelined plan sent through async-nats directly ("raw client",
//! a second connection): the difference is NatsStore's own cost.
//! Defaults: 15 repetitions (after one warm-up round of each), 1,000 workers. The target is
//! ≤ 25 ms for the pipelined plan.

use std::time::{Duration, Instant};

use futures::future::join_all;
use parti_core::store::{BucketSpec, KvStore, OnMismatch, StorageKind};
use parti_core::types::Revision;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::nats::NatsServer;

const BUCKET: &str = "parti-assignments";
const VALUE_BYTES: usize = 256;

/// One plan published with every write awaited before the next is sent.
async fn sequential(store: &NatsStore, keys: &[String], revs: &mut [Revision], round: u8) {
    for (key, rev) in keys.iter().zip(revs.iter_mut()) {
        *rev = store
            .update(BUCKET, key, vec![round; VALUE_BYTES], *rev)
            .await
            .expect("sequential compare-and-set");
    }
}

/// One plan published with every write in flight at once (the store holds no lock; async-nats
/// pipelines the publishes on its one connection and matches each acknowledgement).
async fn pipelined(store: &NatsStore, keys: &[String], revs: &mut [Revision], round: u8) {
    let results = join_all(
        keys.iter()
            .zip(revs.iter())
            .map(|(key, rev)| store.update(BUCKET, key, vec![round; VALUE_BYTES], *rev)),
    )
    .await;
    for (rev, result) in revs.iter_mut().zip(results) {
        *rev = result.expect("pipelined compare-and-set");
    }
}

/// The same plan through async-nats directly (publish with an expected last subject sequence,
/// all acknowledgements awaited together): what NatsStore's own layer costs on top.
async fn raw(
    js: &async_nats::jetstream::Context,
    keys: &[String],
    revs: &mut [Revision],
    round: u8,
) {
    let acks = join_all(keys.iter().zip(revs.iter()).map(|(key, rev)| async move {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(vec![round; VALUE_BYTES].into())
            .expected_last_subject_sequence(rev.get());
        js.send_publish(format!("$KV.{BUCKET}.{key}"), message)
            .await
            .expect("send")
            .await
            .expect("raw compare-and-set")
    }))
    .await;
    for (rev, ack) in revs.iter_mut().zip(acks) {
        *rev = Revision(ack.sequence);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn row(mode: &str, mut samples: Vec<Duration>, workers: usize) {
    samples.sort();
    let median = percentile(&samples, 50.0);
    println!(
        "| {mode:<10} | {:>9.2?} | {:>9.2?} | {:>9.2?} | {:>9.2?} | {:>10.0} |",
        median,
        percentile(&samples, 90.0),
        samples[0],
        samples[samples.len() - 1],
        workers as f64 / median.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let repetitions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let server = match NatsServer::start() {
        Ok(server) => server,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let store = NatsStore::connect_url(&server.url(), NatsStoreConfig::default())
        .await
        .expect("connect");
    let spec = BucketSpec {
        name: BUCKET.into(),
        history: 1,
        max_age: None,
        replicas: 1,
        storage: StorageKind::File,
    };
    store
        .provision(&spec, OnMismatch::Fail)
        .await
        .expect("provision");
    let keys: Vec<String> = (0..workers).map(|i| format!("w.worker-{i}")).collect();
    let mut revs = Vec::with_capacity(workers);
    for key in &keys {
        revs.push(
            store
                .create(BUCKET, key, vec![0; VALUE_BYTES])
                .await
                .expect("seed"),
        );
    }

    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);

    // Warm-up: one round of each (connection buffers, the server's caches).
    sequential(&store, &keys, &mut revs, 1).await;
    pipelined(&store, &keys, &mut revs, 2).await;
    raw(&js, &keys, &mut revs, 3).await;

    let mut seq = Vec::with_capacity(repetitions);
    let mut pipe = Vec::with_capacity(repetitions);
    let mut direct = Vec::with_capacity(repetitions);
    for rep in 0..repetitions {
        let round = (rep % 200) as u8;
        // Rotate which mode goes first, so none always runs on a warmer server.
        for turn in 0..3 {
            let start = Instant::now();
            match (rep + turn) % 3 {
                0 => {
                    sequential(&store, &keys, &mut revs, round).await;
                    seq.push(start.elapsed());
                }
                1 => {
                    pipelined(&store, &keys, &mut revs, round).await;
                    pipe.push(start.elapsed());
                }
                _ => {
                    raw(&js, &keys, &mut revs, round).await;
                    direct.push(start.elapsed());
                }
            }
        }
    }

    println!(
        "publish_batch: {workers} compare-and-set updates ({VALUE_BYTES}-byte values) per plan, \
         {repetitions} repetitions; nats-server {}, single node, file storage, 127.0.0.1; \
         release build",
        store.server_version()
    );
    println!();
    println!("| mode       |    median |       p90 |       min |       max | writes/s   |");
    println!("|------------|-----------|-----------|-----------|-----------|------------|");
    row("sequential", seq.clone(), workers);
    row("pipelined", pipe.clone(), workers);
    row("raw client", direct, workers);
    seq.sort();
    pipe.sort();
    let speedup = percentile(&seq, 50.0).as_secs_f64() / percentile(&pipe, 50.0).as_secs_f64();
    let target = Duration::from_millis(25);
    let median = percentile(&pipe, 50.0);
    println!();
    println!(
        "pipelined is {speedup:.1}x faster; pipelined median {median:.2?} {} the 25 ms target",
        if median <= target { "meets" } else { "misses" }
    );
}
