//! NatsStore watches when the history under them changes or they cannot be re-established
//! (issue 15): a resync owes a snapshot even when the first attempts fail; a recreated bucket
//! and a memory server restarted behind a quick reconnect are noticed; a stuck watch says so.
//!
//! Each test names the defect it pins down. Every wait is a condition with a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parti_core::store::{
    BucketSpec, ConnectionState, KvError, KvEvent, KvStore, KvWatch, OnMismatch, StorageKind,
    WatchEvent, WatchKeys,
};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::chaos::{ChaosProxy, Mode};
use parti_testkit::nats::NatsServer;

const OP_TIMEOUT: Duration = Duration::from_millis(500);

// ----- a recorder for parti-nats' metrics -----

#[derive(Default)]
struct Counts(Mutex<HashMap<(String, String), Arc<AtomicU64>>>);

struct Cell(Arc<AtomicU64>);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

struct CountingRecorder(&'static Counts);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let bucket = key
            .labels()
            .find(|l| l.key() == "bucket")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let mut map = self.0.0.lock().unwrap();
        let cell = map
            .entry((key.name().to_owned(), bucket))
            .or_default()
            .clone();
        Counter::from_arc(Arc::new(Cell(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide counts (the recorder is installed once per test binary).
fn counts() -> &'static Counts {
    static COUNTS: OnceLock<&'static Counts> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let counts: &'static Counts = Box::leak(Box::default());
        metrics::set_global_recorder(CountingRecorder(counts))
            .expect("only this test binary installs a recorder");
        counts
    })
}

fn counter(name: &str, bucket: &str) -> u64 {
    counts()
        .0
        .lock()
        .unwrap()
        .get(&(name.to_owned(), bucket.to_owned()))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

// ----- helpers -----

fn spec(name: &str, storage: StorageKind) -> BucketSpec {
    BucketSpec {
        name: name.into(),
        history: 1,
        max_age: None,
        replicas: 1,
        storage,
    }
}

async fn store(url: &str, config: NatsStoreConfig) -> NatsStore {
    NatsStore::connect_url(url, config).await.unwrap()
}

fn config() -> NatsStoreConfig {
    NatsStoreConfig::default().with_op_timeout(OP_TIMEOUT)
}

async fn wait_state(store: &NatsStore, state: ConnectionState, deadline: Duration) {
    let mut conn = store.connection();
    tokio::time::timeout(deadline, async {
        while let Some(s) = conn.next().await {
            if s == state {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("store not {state:?} within {deadline:?}"));
}

/// The next item of a watch within `within` (`None` if nothing came).
async fn next_item(watch: &mut KvWatch, within: Duration) -> Option<Result<WatchEvent, KvError>> {
    match tokio::time::timeout(within, watch.next()).await {
        Ok(Some(item)) => Some(item),
        Ok(None) => panic!("the watch ended"),
        Err(_) => None,
    }
}

/// Reads a snapshot up to its marker: the keys, in order. Changes only, no errors.
async fn snapshot(watch: &mut KvWatch) -> Vec<String> {
    let mut keys = Vec::new();
    loop {
        match next_item(watch, Duration::from_secs(10)).await {
            Some(Ok(WatchEvent::Change(ev))) => keys.push(ev.key),
            Some(Ok(WatchEvent::SnapshotComplete)) => return keys,
            other => panic!("in a snapshot: unexpected {other:?} (after {keys:?})"),
        }
    }
}

/// After lost history: `Resync` first, then a fresh snapshot up to its marker, with only
/// `BucketNotFound` / `Unavailable` reports in between. Returns the snapshot's keys; panics
/// naming what came instead (a change without the marker is the defect of a resumed watch).
async fn resync_then_snapshot(watch: &mut KvWatch, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut resynced = false;
    let mut keys = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = next_item(watch, left).await;
        seen.push(format!("{item:?}"));
        match item {
            None => panic!("no Resync + snapshot + marker within {within:?}; saw {seen:?}"),
            Some(Ok(WatchEvent::Resync)) if !resynced => resynced = true,
            Some(Err(KvError::BucketNotFound { .. } | KvError::Unavailable { .. })) => {}
            Some(Ok(WatchEvent::Change(KvEvent { key, .. }))) if resynced => keys.push(key),
            Some(Ok(WatchEvent::SnapshotComplete)) if resynced => return keys,
            Some(other) => {
                panic!("expected Resync, a snapshot and its marker; saw {seen:?} ({other:?})")
            }
        }
    }
}

async fn put_keys(store: &NatsStore, bucket: &str, names: &[&str]) {
    for name in names {
        store
            .put(bucket, name, name.as_bytes().to_vec())
            .await
            .unwrap();
    }
}

/// The KV stream of a memory bucket, created by hand with room for one consumer only.
fn narrow_memory_stream(bucket: &str) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        max_consumers: 1,
        ..Default::default()
    }
}

// ----- the tests -----

/// Defect: after `Resync` a failed attempt to start the fresh snapshot was followed by a
/// "resumable" attempt from revision 1, with no `SnapshotComplete` — a member waiting for its
/// snapshot never completed it. Here the watch finds its memory bucket lost and recreated with
/// less history, and the first attempts to start the snapshot fail (the new stream takes one
/// consumer, and another holds it); once the slot is free, the watch must deliver a snapshot
/// and its marker, not bare changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_owed_after_a_resync_survives_failed_attempts() {
    let mut server = NatsServer::start().unwrap();
    let proxy = ChaosProxy::start(server.addr()).await.unwrap();
    let bucket = "owed";
    let watcher = store(&proxy.url(), config()).await;
    let writer = store(&server.url(), config()).await;
    writer
        .provision(&spec(bucket, StorageKind::Memory), OnMismatch::Fail)
        .await
        .unwrap();
    put_keys(&writer, bucket, &["a", "b", "c", "d", "e"]).await;
    let mut watch = watcher
        .watch(bucket, WatchKeys::Prefix(String::new()))
        .await
        .unwrap();
    assert_eq!(snapshot(&mut watch).await.len(), 5);

    // Cut the watcher off; restart the server (the memory bucket is lost); recreate the bucket
    // with two keys and one consumer slot, taken by someone else.
    proxy.set_refuse(true);
    proxy.sever();
    wait_state(
        &watcher,
        ConnectionState::Disconnected,
        Duration::from_secs(5),
    )
    .await;
    server.kill().unwrap();
    server.restart().unwrap();
    wait_state(&writer, ConnectionState::Connected, Duration::from_secs(10)).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .create_stream(narrow_memory_stream(bucket))
        .await
        .unwrap();
    put_keys(&writer, bucket, &["x", "y"]).await;
    let squatter = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("squatter".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let failures_before = counter("parti_watch_failures_total", bucket);
    proxy.set_refuse(false);

    // The watch reconnects, finds less history, says Resync — then cannot start its snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match next_item(
            &mut watch,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Some(Ok(WatchEvent::Resync)) => break,
            Some(Err(KvError::Unavailable { .. })) => {}
            other => panic!("expected Resync, got {other:?}"),
        }
    }
    // Let a few attempts fail (each is logged and counted), then free the slot.
    let waited = Instant::now();
    while counter("parti_watch_failures_total", bucket) < failures_before + 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "no failed attempt counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream
        .delete_consumer(&squatter.cached_info().name)
        .await
        .unwrap();

    // What comes next must be the owed snapshot and its marker.
    let mut fresh = Vec::new();
    loop {
        match next_item(&mut watch, Duration::from_secs(10)).await {
            Some(Ok(WatchEvent::Change(ev))) => fresh.push(ev.key),
            Some(Ok(WatchEvent::SnapshotComplete)) => break,
            Some(Err(KvError::Unavailable { .. })) => {}
            other => panic!("expected the owed snapshot's marker after {fresh:?}, got {other:?}"),
        }
    }
    assert_eq!(fresh, vec!["x", "y"]);
    let rev = writer.put(bucket, "z", b"z".to_vec()).await.unwrap();
    match next_item(&mut watch, Duration::from_secs(10)).await {
        Some(Ok(WatchEvent::Change(ev))) => assert_eq!((ev.key.as_str(), ev.revision), ("z", rev)),
        other => panic!("expected the live change, got {other:?}"),
    }
}

/// Defect: lost history was checked only on a reconnect, and only as "the stream's last
/// revision is below the last one delivered". A bucket deleted and created again while the
/// watcher stays connected — with more revisions than the watch had seen — slipped through:
/// the consumer resumed in the middle of the new stream's history. The watch must resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_recreated_under_a_connected_watch_resyncs() {
    let server = NatsServer::start().unwrap();
    let bucket = "recreated";
    let watcher = store(&server.url(), config()).await;
    let writer = store(&server.url(), config()).await;
    let file = spec(bucket, StorageKind::File);
    writer.provision(&file, OnMismatch::Fail).await.unwrap();
    put_keys(&writer, bucket, &["a", "b", "c"]).await;
    let mut watch = watcher
        .watch(bucket, WatchKeys::Prefix(String::new()))
        .await
        .unwrap();
    assert_eq!(snapshot(&mut watch).await, vec!["a", "b", "c"]);

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let began = Instant::now();
    js.delete_key_value(bucket).await.unwrap();
    writer.provision(&file, OnMismatch::Fail).await.unwrap();
    put_keys(&writer, bucket, &["n1", "n2", "n3", "n4", "n5"]).await;

    let fresh = resync_then_snapshot(&mut watch, Duration::from_secs(30)).await;
    println!(
        "recreated bucket noticed, resynced after {:?}",
        began.elapsed()
    );
    // The snapshot is of the new stream: some prefix of the new keys, the rest live.
    let mut keys = fresh;
    while keys.len() < 5 {
        match next_item(&mut watch, Duration::from_secs(10)).await {
            Some(Ok(WatchEvent::Change(ev))) => keys.push(ev.key),
            other => panic!("expected the rest of the new keys after {keys:?}, got {other:?}"),
        }
    }
    assert_eq!(keys, vec!["n1", "n2", "n3", "n4", "n5"]);
}

/// Defect: a memory-storage server restarted while the watcher's link looked up (here: the
/// link is blackholed through the restart, then reconnects at once), and the bucket was
/// provisioned again and written past the watch's last revision. The old check compared only
/// revisions (and only after a disconnect it happened to see), so the watch resumed on foreign
/// history. It must resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_server_restart_behind_a_quick_reconnect_resyncs() {
    let mut server = NatsServer::start().unwrap();
    let proxy = ChaosProxy::start(server.addr()).await.unwrap();
    let bucket = "volatile";
    let memory = spec(bucket, StorageKind::Memory);
    let watcher = store(&proxy.url(), config()).await;
    let writer = store(&server.url(), config()).await;
    writer.provision(&memory, OnMismatch::Fail).await.unwrap();
    put_keys(&writer, bucket, &["a", "b", "c"]).await;
    let mut watch = watcher
        .watch(bucket, WatchKeys::Prefix(String::new()))
        .await
        .unwrap();
    assert_eq!(snapshot(&mut watch).await, vec!["a", "b", "c"]);

    // The watcher sees nothing of the restart: its link is frozen meanwhile.
    proxy.set_mode_both(Mode::Blackhole);
    server.kill().unwrap();
    server.restart().unwrap();
    wait_state(&writer, ConnectionState::Connected, Duration::from_secs(10)).await;
    writer.provision(&memory, OnMismatch::Fail).await.unwrap();
    let new = ["n1", "n2", "n3", "n4", "n5", "n6"];
    put_keys(&writer, bucket, &new).await;
    // Thawed, the link finds its server connection closed, and the client reconnects at once.
    proxy.heal();

    let fresh = resync_then_snapshot(&mut watch, Duration::from_secs(20)).await;
    assert_eq!(fresh, new);
}

/// Defect: failures to re-establish a watch were logged at `debug!` only, and the reader heard
/// nothing. Here the watcher's link is blackholed (the connection looks up; nothing answers):
/// the consumer misses its heartbeats, every attempt to re-establish it times out, and after
/// `watch_unhealthy_after` the stream yields `Err(Unavailable)` — then carries on once the link
/// heals. The attempts are counted in `parti_watch_failures_total{bucket}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_watch_reports_unavailable_and_carries_on() {
    let server = NatsServer::start().unwrap();
    let proxy = ChaosProxy::start(server.addr()).await.unwrap();
    let bucket = "stuck";
    let unhealthy_after = Duration::from_secs(1);
    let watcher = store(
        &proxy.url(),
        config().with_watch_unhealthy_after(unhealthy_after),
    )
    .await;
    let writer = store(&server.url(), config()).await;
    writer
        .provision(&spec(bucket, StorageKind::File), OnMismatch::Fail)
        .await
        .unwrap();
    let mut watch = watcher
        .watch(bucket, WatchKeys::Prefix(String::new()))
        .await
        .unwrap();
    assert_eq!(snapshot(&mut watch).await, Vec::<String>::new());
    let failures_before = counter("parti_watch_failures_total", bucket);
    let restarts_before = counter("parti_watch_restarts_total", bucket);

    proxy.set_mode_both(Mode::Blackhole);
    let frozen = Instant::now();
    // async-nats declares the consumer gone after two missed 5 s heartbeats; then attempts
    // time out for `unhealthy_after`.
    let report = next_item(&mut watch, Duration::from_secs(30)).await;
    let took = frozen.elapsed();
    println!("stuck watch reported after {took:?}: {report:?}");
    match report {
        Some(Err(KvError::Unavailable { reason })) => assert!(reason.contains(bucket), "{reason}"),
        other => panic!("expected Err(Unavailable), got {other:?}"),
    }
    assert!(
        counter("parti_watch_failures_total", bucket) > failures_before,
        "failed attempts are counted"
    );

    proxy.heal();
    // The stream continues: a write made now arrives (possibly after more reports).
    let rev = writer.put(bucket, "after", b"v".to_vec()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match next_item(
            &mut watch,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Some(Err(KvError::Unavailable { .. })) => {}
            Some(Ok(WatchEvent::Change(ev))) => {
                assert_eq!((ev.key.as_str(), ev.revision), ("after", rev));
                break;
            }
            other => panic!("expected the write after the heal, got {other:?}"),
        }
    }
    assert!(counter("parti_watch_restarts_total", bucket) > restarts_before);
}
