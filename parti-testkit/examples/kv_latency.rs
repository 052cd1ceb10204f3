//! Latency report of the two stores: p50/p99 of put, create, compare-and-set, get and
//! put→watch delivery on `MemoryStore` and on `NatsStore` (a real single-node nats-server on
//! loopback), and the time to write 1,000 keys by compare-and-set sequentially vs pipelined.
//!
//! ```text
//! PARTI_NATS_SERVER=/path/to/nats-server cargo run -p parti-testkit --release --example kv_latency
//! ```
//!
//! Optional argument: operations per measurement (default 2000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use parti_core::store::{BucketSpec, KvStore, OnMismatch, StorageKind, WatchEvent, WatchKeys};
use parti_core::types::Revision;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::MemoryStore;
use parti_testkit::nats::NatsServer;

const VALUE: &[u8] = &[7u8; 100];
const PIPELINED_KEYS: usize = 1_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(store: &str, op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{store:<14} {op:<22} n={:<6} p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or_default(),
    );
}

async fn measure(name: &str, store: Arc<dyn KvStore>, n: usize) {
    let bucket = format!("latency-{}", name.to_lowercase().replace(' ', "-"));
    let spec = BucketSpec {
        name: bucket.clone(),
        history: 1,
        max_age: None,
        replicas: 1,
        storage: StorageKind::File,
    };
    store
        .provision(&spec, OnMismatch::Fail)
        .await
        .expect("provision");
    let b = bucket.as_str();

    // Warm-up (connections, caches, JIT of the server's paths).
    for i in 0..200 {
        store
            .put(b, &format!("warm.{i}"), VALUE.to_vec())
            .await
            .expect("warm-up");
    }

    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("put.{}", i % 100);
        let start = Instant::now();
        store.put(b, &key, VALUE.to_vec()).await.expect("put");
        samples.push(start.elapsed());
    }
    report(name, "put", samples);

    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("create.{i}");
        let start = Instant::now();
        store.create(b, &key, VALUE.to_vec()).await.expect("create");
        samples.push(start.elapsed());
    }
    report(name, "create (new key)", samples);

    let mut samples = Vec::with_capacity(n);
    let mut rev = store.put(b, "cas", VALUE.to_vec()).await.expect("put cas");
    for _ in 0..n {
        let start = Instant::now();
        rev = store
            .update(b, "cas", VALUE.to_vec(), rev)
            .await
            .expect("cas");
        samples.push(start.elapsed());
    }
    report(name, "compare-and-set", samples);

    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("create.{}", i % 1000);
        let start = Instant::now();
        let entry = store.entry(b, &key).await.expect("get");
        samples.push(start.elapsed());
        assert!(entry.is_some());
    }
    report(name, "get (entry)", samples);

    let mut watch = store
        .watch(b, WatchKeys::Key("watched".into()))
        .await
        .expect("watch");
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::SnapshotComplete)) => break,
            Some(Ok(_)) => {}
            other => panic!("watch: {other:?}"),
        }
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let rev = store
            .put(b, "watched", VALUE.to_vec())
            .await
            .expect("put watched");
        loop {
            match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                Ok(Some(Ok(WatchEvent::Change(ev)))) if ev.revision >= rev => break,
                Ok(Some(Ok(_))) => {}
                other => panic!("watch delivery: {other:?}"),
            }
        }
        samples.push(start.elapsed());
    }
    report(name, "put -> watch delivery", samples);

    // 1,000 keys written by compare-and-set: one after another, then all in flight together.
    let keys: Vec<String> = (0..PIPELINED_KEYS).map(|i| format!("many.{i}")).collect();
    let mut revs: Vec<Revision> = Vec::with_capacity(PIPELINED_KEYS);
    for key in &keys {
        revs.push(
            store
                .create(b, key, VALUE.to_vec())
                .await
                .expect("create many"),
        );
    }
    let start = Instant::now();
    for (key, rev) in keys.iter().zip(revs.iter_mut()) {
        *rev = store
            .update(b, key, VALUE.to_vec(), *rev)
            .await
            .expect("sequential cas");
    }
    let sequential = start.elapsed();
    let mut pipelined = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let results = join_all(
            keys.iter()
                .zip(revs.iter())
                .map(|(key, rev)| store.update(b, key, VALUE.to_vec(), *rev)),
        )
        .await;
        pipelined.push(start.elapsed());
        for (rev, result) in revs.iter_mut().zip(results) {
            *rev = result.expect("pipelined cas");
        }
    }
    pipelined.sort();
    println!(
        "{name:<14} {PIPELINED_KEYS} CAS writes      sequential {sequential:>9.1?}  pipelined {:>9.1?} (best of 5; median {:.1?}, worst {:.1?})",
        pipelined[0], pipelined[2], pipelined[4]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("kv_latency: {n} sequential operations per row, 100-byte values, release build");
    println!();

    measure("MemoryStore", Arc::new(MemoryStore::new()), n).await;
    println!();

    let server = match NatsServer::start() {
        Ok(server) => server,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let version = {
        let store = NatsStore::connect_url(&server.url(), NatsStoreConfig::default())
            .await
            .expect("connect");
        store.server_version()
    };
    println!("NatsStore: nats-server {version}, single node, file storage, 127.0.0.1");
    let store = NatsStore::connect_url(&server.url(), NatsStoreConfig::default())
        .await
        .expect("connect");
    measure("NatsStore", Arc::new(store), n).await;
}
