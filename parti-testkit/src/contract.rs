//! The `KvStore` contract suite: one set of behaviour tests that every store implementation
//! passes (the in-process `MemoryStore`, `NatsStore` on one server and on a 3-node cluster).
//!
//! Each case is a public async function taking the store under test and [`ContractOptions`]; it
//! panics (like an assertion) when the store breaks the contract, so each case can be its own
//! `#[test]`:
//!
//! ```
//! use parti_testkit::contract::{self, ContractOptions};
//!
//! #[tokio::test]
//! async fn create_conflict() {
//!     let store = parti_runtime::MemoryStore::new();
//!     contract::create_conflict(&store, &ContractOptions::default()).await;
//! }
//! ```
//!
//! [`run_all`] runs every case of [`CASES`] in order. Every case provisions its own buckets,
//! named from [`ContractOptions::bucket_prefix`] (unique per [`ContractOptions::default`] call),
//! so cases and runs can share one server. Waits are bounded by [`ContractOptions::wait`]: a case
//! waits for a condition with a deadline, never for a fixed time it hopes is long enough.
//!
//! # What the cases hold a store to
//!
//! The port's contract (`parti_core::store`), made precise where NATS and the reference model
//! agree:
//!
//! - a watch's snapshot holds only live values (puts), no tombstones, in revision order;
//! - [`KvError::RevisionMismatch`] carries the live revision when the key has a live value, and
//!   `None` when the key was never written; for a deleted key its content is not checked;
//! - deleting a key with no live value, without an expected revision, succeeds;
//! - [`KvError::BucketMismatch`] and [`Provisioned::Reconciled`] use the fields and formatting of
//!   [`BucketSpec::mismatches`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use parti_core::Revision;
use parti_core::store::{
    BucketSpec, ConnectionState, KvEntry, KvError, KvEvent, KvOperation, KvStore, KvWatch,
    OnMismatch, Provisioned, StorageKind, WatchEvent, WatchKeys,
};

/// How the suite provisions buckets and how long it waits.
#[derive(Clone, Debug)]
pub struct ContractOptions {
    /// The start of every bucket name the suite provisions (`[A-Za-z0-9_-]`); each case appends
    /// its own name. [`ContractOptions::default`] makes a new one per call (process id and a
    /// counter), so suites can share a server.
    pub bucket_prefix: String,
    /// Replicas of the suite's buckets (1 on a single server, 3 on a NATS cluster).
    pub replicas: usize,
    /// Storage of the suite's buckets.
    pub storage: StorageKind,
    /// The longest the suite waits for something the store should do (a watch event, an
    /// expiry after its max age). Generous: it bounds a failing case, it does not slow a
    /// passing one.
    pub wait: Duration,
    /// The max age of the bucket of [`max_age_expiry`]: the case lasts at least this long.
    pub max_age: Duration,
    /// How often [`wait_until`] re-checks its condition.
    pub poll_interval: Duration,
}

impl Default for ContractOptions {
    /// One server, memory storage, a 10 s wait, a 1 s max age, a 25 ms poll interval, and a
    /// bucket prefix unique to this call.
    fn default() -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        ContractOptions {
            bucket_prefix: format!("contract-{}-{run}", std::process::id()),
            replicas: 1,
            storage: StorageKind::Memory,
            wait: Duration::from_secs(10),
            max_age: Duration::from_secs(1),
            poll_interval: Duration::from_millis(25),
        }
    }
}

impl ContractOptions {
    /// The name of a case's bucket: `{bucket_prefix}-{case}`.
    #[must_use]
    pub fn bucket(&self, case: &str) -> String {
        format!("{}-{case}", self.bucket_prefix)
    }

    /// The spec of a case's bucket: history 1, the suite's replicas and storage.
    #[must_use]
    pub fn spec(&self, case: &str, max_age: Option<Duration>) -> BucketSpec {
        BucketSpec {
            name: self.bucket(case),
            history: 1,
            max_age,
            replicas: self.replicas,
            storage: self.storage,
        }
    }
}

/// A boxed case future.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (its function's name).
    pub name: &'static str,
    /// Runs the case.
    pub run: for<'a> fn(&'a dyn KvStore, &'a ContractOptions) -> CaseFuture<'a>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case of the suite, in the order [`run_all`] runs them.
        pub const CASES: &[Case] = &[$(Case {
            name: stringify!($name),
            run: |store, opts| Box::pin($name(store, opts)),
        }),*];
    };
}

cases!(
    create_conflict,
    concurrent_creates_one_wins,
    cas_conflict_reports_current_revision,
    cas_counter_under_contention,
    delete_with_expected_revision,
    create_after_delete,
    keys_by_prefix,
    revisions_increase_across_keys,
    watch_snapshot_then_live_changes,
    watch_empty_snapshot_marker,
    watch_one_key,
    watch_several_keys,
    watches_are_independent,
    binary_and_empty_values,
    max_age_expiry,
    provision_mismatch_and_reconcile,
    unknown_bucket_and_invalid_key,
    connection_starts_connected,
    a_value_over_the_limit_is_refused,
);

/// The case named `name`, to run a chosen subset (for example on a cluster).
#[must_use]
pub fn case(name: &str) -> Option<Case> {
    CASES.iter().copied().find(|case| case.name == name)
}

/// Runs every case of [`CASES`] against `store`, in order; panics at the first broken one
/// (naming it).
pub async fn run_all(store: Arc<dyn KvStore>, opts: ContractOptions) {
    for case in CASES {
        announce(case.name);
        (case.run)(&*store, &opts).await;
    }
}

/// Says which case runs (on stderr, captured by the test harness unless it fails).
fn announce(name: &str) {
    eprintln!("contract case: {name}");
}

// ----- helpers -----

/// Unwraps a store result, panicking with what was being done.
#[track_caller]
fn ok<T>(result: Result<T, KvError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected error: {err} ({err:?})"),
    }
}

/// Provisions a case's bucket (it must not exist yet).
async fn bucket(
    store: &dyn KvStore,
    opts: &ContractOptions,
    case: &str,
    max_age: Option<Duration>,
) -> String {
    let spec = opts.spec(case, max_age);
    let outcome = ok(
        store.provision(&spec, OnMismatch::Fail).await,
        "provisioning the case's bucket",
    );
    assert_eq!(
        outcome,
        Provisioned::Created,
        "bucket {} should be new: is the prefix unique?",
        spec.name
    );
    spec.name
}

/// Waits until `check` returns true, re-checking every `opts.poll_interval`; panics after
/// `opts.wait` naming `what`.
pub async fn wait_until<F, Fut>(opts: &ContractOptions, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + opts.wait;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {:?} for {what}", opts.wait);
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

/// The next item of a watch, within `opts.wait`; panics on a timeout, an error or the end.
pub async fn next_event(watch: &mut KvWatch, opts: &ContractOptions, what: &str) -> WatchEvent {
    match tokio::time::timeout(opts.wait, watch.next()).await {
        Err(_) => panic!("waited {:?} for {what} on a watch", opts.wait),
        Ok(None) => panic!("the watch ended while waiting for {what}"),
        Ok(Some(Err(err))) => panic!("the watch failed while waiting for {what}: {err}"),
        Ok(Some(Ok(event))) => event,
    }
}

/// Reads a watch's snapshot: the changes before the marker.
async fn snapshot(watch: &mut KvWatch, opts: &ContractOptions) -> Vec<KvEvent> {
    let mut changes = Vec::new();
    loop {
        match next_event(watch, opts, "the snapshot").await {
            WatchEvent::SnapshotComplete => return changes,
            WatchEvent::Change(change) => changes.push(change),
            other => panic!("unexpected {other:?} in a snapshot"),
        }
    }
}

/// The next live change of a watch.
async fn next_change(watch: &mut KvWatch, opts: &ContractOptions, what: &str) -> KvEvent {
    match next_event(watch, opts, what).await {
        WatchEvent::Change(change) => change,
        other => panic!("expected {what}, got {other:?}"),
    }
}

fn put(key: &str, revision: Revision, value: &[u8]) -> KvEvent {
    KvEvent {
        key: key.to_owned(),
        revision,
        op: KvOperation::Put(value.to_vec()),
    }
}

fn entry(key: &str, revision: Revision, value: &[u8]) -> KvEntry {
    KvEntry {
        key: key.to_owned(),
        value: value.to_vec(),
        revision,
    }
}

/// The revision of a delete: deletes return none, so it is read from a watch of the key.
async fn delete_seen(
    store: &dyn KvStore,
    opts: &ContractOptions,
    bucket: &str,
    key: &str,
    expected: Option<Revision>,
) -> Revision {
    let mut watch = ok(
        store.watch(bucket, WatchKeys::Key(key.to_owned())).await,
        "watching the key to delete",
    );
    snapshot(&mut watch, opts).await;
    ok(store.delete(bucket, key, expected).await, "deleting");
    let change = next_change(&mut watch, opts, "the delete").await;
    assert_eq!(
        (change.key.as_str(), &change.op),
        (key, &KvOperation::Delete)
    );
    change.revision
}

// ----- the cases -----

/// `create` of a key that has a live value fails with [`KvError::AlreadyExists`] and changes
/// nothing.
pub async fn create_conflict(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "create-conflict", None).await;
    let rev = ok(store.create(&b, "k", b"first".to_vec()).await, "create");
    assert_eq!(
        store.create(&b, "k", b"second".to_vec()).await,
        Err(KvError::AlreadyExists)
    );
    assert_eq!(
        ok(store.entry(&b, "k").await, "entry"),
        Some(entry("k", rev, b"first"))
    );
}

/// Of several `create`s of one key in flight together, exactly one succeeds; the others fail
/// with [`KvError::AlreadyExists`].
pub async fn concurrent_creates_one_wins(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "concurrent-creates", None).await;
    let results = join_all((0u8..8).map(|i| store.create(&b, "claim", vec![i]))).await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    for (i, result) in results.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(result, &Err(KvError::AlreadyExists), "create #{i}");
        }
    }
    let winner = winners[0];
    let rev = ok(results[winner].clone(), "the winner");
    let value = u8::try_from(winner).expect("eight creates");
    assert_eq!(
        ok(store.entry(&b, "claim").await, "entry"),
        Some(entry("claim", rev, &[value]))
    );
}

/// `update` succeeds on the current revision; on a stale one it fails with
/// [`KvError::RevisionMismatch`] carrying the current revision; on a key never written it fails
/// with `current: None`; after a delete the old revision fails.
pub async fn cas_conflict_reports_current_revision(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "cas-conflict", None).await;
    let r1 = ok(store.create(&b, "k", b"1".to_vec()).await, "create");
    let r2 = ok(
        store.update(&b, "k", b"2".to_vec(), r1).await,
        "update on r1",
    );
    assert!(r2 > r1, "update returns a new revision");
    assert_eq!(
        store.update(&b, "k", b"x".to_vec(), r1).await,
        Err(KvError::RevisionMismatch { current: Some(r2) }),
        "a stale revision reports the current one"
    );
    // A write to another key does not change this key's revision.
    ok(store.put(&b, "other", b"o".to_vec()).await, "put other");
    let r3 = ok(
        store.update(&b, "k", b"3".to_vec(), r2).await,
        "update on r2",
    );
    assert_eq!(
        ok(store.entry(&b, "k").await, "entry"),
        Some(entry("k", r3, b"3"))
    );
    assert_eq!(
        store.update(&b, "never", b"x".to_vec(), r3).await,
        Err(KvError::RevisionMismatch { current: None }),
        "a key never written has no current revision"
    );
    ok(store.delete(&b, "k", None).await, "delete");
    assert!(
        matches!(
            store.update(&b, "k", b"x".to_vec(), r3).await,
            Err(KvError::RevisionMismatch { .. })
        ),
        "the revision before a delete no longer matches"
    );
    assert_eq!(ok(store.entry(&b, "k").await, "entry after delete"), None);
}

/// Several writers increment one counter by read-then-`update`, in flight together: no
/// increment is lost, every successful update has its own revision, and every conflict reports
/// a current revision above the one that was read.
pub async fn cas_counter_under_contention(store: &dyn KvStore, opts: &ContractOptions) {
    const WRITERS: u64 = 4;
    const INCREMENTS: u64 = 10;
    const MAX_ATTEMPTS: u64 = 1_000;
    let b = bucket(store, opts, "cas-counter", None).await;
    ok(
        store
            .create(&b, "counter", 0u64.to_be_bytes().to_vec())
            .await,
        "create the counter",
    );
    let read = |value: &[u8]| u64::from_be_bytes(value.try_into().expect("the counter is 8 bytes"));
    let writer = |_: u64| async {
        let mut revisions = Vec::new();
        let mut attempts = 0;
        while (revisions.len() as u64) < INCREMENTS {
            attempts += 1;
            assert!(
                attempts <= MAX_ATTEMPTS,
                "no progress after {MAX_ATTEMPTS} attempts"
            );
            let current = ok(store.entry(&b, "counter").await, "read the counter")
                .expect("the counter exists");
            // Let the other writers run between the read and the write.
            tokio::task::yield_now().await;
            let next = (read(&current.value) + 1).to_be_bytes().to_vec();
            match store.update(&b, "counter", next, current.revision).await {
                Ok(revision) => revisions.push(revision),
                Err(KvError::RevisionMismatch { current: Some(now) }) => {
                    assert!(
                        now > current.revision,
                        "conflict reports {now} after {}",
                        current.revision
                    );
                }
                Err(err) => panic!("update of the counter: unexpected {err:?}"),
            }
        }
        revisions
    };
    let mut revisions: Vec<Revision> = join_all((0..WRITERS).map(writer)).await.concat();
    let last = ok(store.entry(&b, "counter").await, "read the total").expect("the counter exists");
    assert_eq!(read(&last.value), WRITERS * INCREMENTS, "no increment lost");
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len() as u64,
        WRITERS * INCREMENTS,
        "one revision per update"
    );
    assert_eq!(revisions.last(), Some(&last.revision));
}

/// `delete` with an expected revision deletes only on a match; a mismatch reports the current
/// revision and changes nothing. Without one it deletes whatever is there, even nothing.
pub async fn delete_with_expected_revision(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "delete-expected", None).await;
    let r1 = ok(store.put(&b, "k", b"1".to_vec()).await, "put");
    let r2 = ok(store.put(&b, "k", b"2".to_vec()).await, "put again");
    assert_eq!(
        store.delete(&b, "k", Some(r1)).await,
        Err(KvError::RevisionMismatch { current: Some(r2) })
    );
    assert_eq!(
        ok(store.entry(&b, "k").await, "entry after a refused delete"),
        Some(entry("k", r2, b"2"))
    );
    ok(
        store.delete(&b, "k", Some(r2)).await,
        "delete on the current revision",
    );
    assert_eq!(ok(store.entry(&b, "k").await, "entry after delete"), None);
    assert_eq!(ok(store.keys(&b, "").await, "keys"), Vec::<String>::new());
    ok(store.delete(&b, "k", None).await, "deleting a deleted key");
    ok(
        store.delete(&b, "never", None).await,
        "deleting a key never written",
    );
    assert_eq!(ok(store.entry(&b, "never").await, "entry of never"), None);
}

/// A deleted key can be created again, with a revision above the delete's.
pub async fn create_after_delete(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "create-after-delete", None).await;
    let r1 = ok(store.create(&b, "k", b"1".to_vec()).await, "create");
    let tombstone = delete_seen(store, opts, &b, "k", Some(r1)).await;
    assert!(tombstone > r1);
    let r2 = ok(
        store.create(&b, "k", b"2".to_vec()).await,
        "create over a tombstone",
    );
    assert!(r2 > tombstone);
    assert_eq!(
        ok(store.entry(&b, "k").await, "entry"),
        Some(entry("k", r2, b"2"))
    );
    assert_eq!(
        store.create(&b, "k", b"3".to_vec()).await,
        Err(KvError::AlreadyExists)
    );
}

/// `keys` lists the keys with a live value that start with the prefix, sorted; a prefix is a
/// string prefix, not a token (`w` matches `w`, `w.a` and `wx`).
pub async fn keys_by_prefix(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "keys-prefix", None).await;
    assert_eq!(
        ok(store.keys(&b, "").await, "keys of an empty bucket"),
        Vec::<String>::new()
    );
    for key in ["w.c", "w.a", "x.a", "w.b", "w", "wx", "w.d", "v"] {
        ok(store.put(&b, key, b"v".to_vec()).await, "put");
    }
    ok(store.delete(&b, "w.d", None).await, "delete");
    assert_eq!(
        ok(store.keys(&b, "w.").await, "keys w."),
        ["w.a", "w.b", "w.c"]
    );
    assert_eq!(
        ok(store.keys(&b, "w").await, "keys w"),
        ["w", "w.a", "w.b", "w.c", "wx"]
    );
    assert_eq!(
        ok(store.keys(&b, "").await, "all keys"),
        ["v", "w", "w.a", "w.b", "w.c", "wx", "x.a"]
    );
    assert_eq!(
        ok(store.keys(&b, "y").await, "keys y"),
        Vec::<String>::new()
    );
}

/// Every write to a bucket, whatever the key and the operation, gets a revision above every
/// earlier one; a watch of the bucket sees the same revisions, deletes included.
pub async fn revisions_increase_across_keys(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "revisions", None).await;
    let mut watch = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch",
    );
    assert_eq!(snapshot(&mut watch, opts).await, []);
    let mut returned = Vec::new();
    let a1 = ok(store.create(&b, "a", b"1".to_vec()).await, "create a");
    returned.push(Some(a1));
    returned.push(Some(ok(store.put(&b, "b", b"1".to_vec()).await, "put b")));
    let a2 = ok(store.update(&b, "a", b"2".to_vec(), a1).await, "update a");
    returned.push(Some(a2));
    ok(store.delete(&b, "b", None).await, "delete b");
    returned.push(None);
    returned.push(Some(ok(store.put(&b, "c", b"1".to_vec()).await, "put c")));
    ok(store.delete(&b, "a", Some(a2)).await, "delete a");
    returned.push(None);
    returned.push(Some(ok(
        store.create(&b, "b", b"2".to_vec()).await,
        "create b",
    )));
    let mut last = Revision::ZERO;
    for (i, returned) in returned.into_iter().enumerate() {
        let change = next_change(&mut watch, opts, &format!("write #{i}")).await;
        assert!(
            change.revision > last,
            "revision {} after {last}",
            change.revision
        );
        if let Some(returned) = returned {
            assert_eq!(
                change.revision, returned,
                "write #{i}: watch and write agree"
            );
        }
        last = change.revision;
    }
}

/// A watch delivers the current value of every matching key in revision order (no
/// tombstones), then the snapshot marker, then every later change to a matching key in revision
/// order, deletes included, each once.
pub async fn watch_snapshot_then_live_changes(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "watch-live", None).await;
    let wb = ok(store.put(&b, "w.b", b"b1".to_vec()).await, "put w.b");
    let wa = ok(store.put(&b, "w.a", b"a1".to_vec()).await, "put w.a");
    ok(store.put(&b, "x", b"x1".to_vec()).await, "put x");
    ok(store.put(&b, "w.c", b"c1".to_vec()).await, "put w.c");
    ok(store.delete(&b, "w.c", None).await, "delete w.c");
    let wb = ok(
        store.update(&b, "w.b", b"b2".to_vec(), wb).await,
        "update w.b",
    );

    let mut watch = ok(
        store.watch(&b, WatchKeys::Prefix("w.".into())).await,
        "watch",
    );
    assert_eq!(
        snapshot(&mut watch, opts).await,
        [put("w.a", wa, b"a1"), put("w.b", wb, b"b2")],
        "the snapshot: current values in revision order"
    );

    let wd = ok(store.create(&b, "w.d", b"d1".to_vec()).await, "create w.d");
    ok(
        store.put(&b, "x", b"x2".to_vec()).await,
        "put x (not watched)",
    );
    let wb = ok(
        store.update(&b, "w.b", b"b3".to_vec(), wb).await,
        "update w.b",
    );
    ok(store.delete(&b, "w.a", Some(wa)).await, "delete w.a");
    let wc = ok(
        store.create(&b, "w.c", b"c2".to_vec()).await,
        "re-create w.c",
    );
    let end = ok(store.put(&b, "w.end", b"end".to_vec()).await, "put w.end");

    let mut live = Vec::new();
    loop {
        let change = next_change(&mut watch, opts, "a live change").await;
        let done = change.key == "w.end";
        live.push(change);
        if done {
            break;
        }
    }
    assert_eq!(live.len(), 5, "five changes to watched keys: {live:?}");
    let (delete, rest) = (live.remove(2), live);
    assert_eq!(
        rest,
        [
            put("w.d", wd, b"d1"),
            put("w.b", wb, b"b3"),
            put("w.c", wc, b"c2"),
            put("w.end", end, b"end"),
        ]
    );
    assert_eq!(
        (delete.key.as_str(), delete.op),
        ("w.a", KvOperation::Delete)
    );
    assert!(
        wb < delete.revision && delete.revision < wc,
        "the delete in revision order"
    );
}

/// The snapshot marker comes also when nothing matches: on an empty bucket, and for a key or
/// prefix without values in a bucket that has some; live changes follow it.
pub async fn watch_empty_snapshot_marker(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "watch-empty", None).await;
    let mut all = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch all",
    );
    assert_eq!(
        next_event(&mut all, opts, "the marker of an empty bucket").await,
        WatchEvent::SnapshotComplete
    );
    ok(store.put(&b, "other", b"o".to_vec()).await, "put other");
    let mut one = ok(store.watch(&b, WatchKeys::Key("k".into())).await, "watch k");
    assert_eq!(
        next_event(&mut one, opts, "the marker of a key without value").await,
        WatchEvent::SnapshotComplete
    );
    let mut prefix = ok(
        store.watch(&b, WatchKeys::Prefix("p.".into())).await,
        "watch p.",
    );
    assert_eq!(
        next_event(&mut prefix, opts, "the marker of a prefix without values").await,
        WatchEvent::SnapshotComplete
    );
    let rev = ok(store.put(&b, "k", b"v".to_vec()).await, "put k");
    assert_eq!(
        next_change(&mut one, opts, "put k").await,
        put("k", rev, b"v")
    );
    let first = next_change(&mut all, opts, "put other").await;
    assert_eq!(first.key, "other");
    assert_eq!(
        next_change(&mut all, opts, "put k").await,
        put("k", rev, b"v")
    );
}

/// A watch of one key sees that key only, not keys it is a prefix of.
pub async fn watch_one_key(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "watch-key", None).await;
    let r1 = ok(store.put(&b, "leader", b"1".to_vec()).await, "put leader");
    ok(
        store.put(&b, "leader.x", b"x".to_vec()).await,
        "put leader.x",
    );
    let mut watch = ok(
        store.watch(&b, WatchKeys::Key("leader".into())).await,
        "watch",
    );
    assert_eq!(snapshot(&mut watch, opts).await, [put("leader", r1, b"1")]);
    ok(store.put(&b, "leaderx", b"x".to_vec()).await, "put leaderx");
    ok(
        store.put(&b, "leader.y", b"y".to_vec()).await,
        "put leader.y",
    );
    let tombstone = delete_seen(store, opts, &b, "leader", Some(r1)).await;
    assert_eq!(
        next_change(&mut watch, opts, "the delete of leader").await,
        KvEvent {
            key: "leader".into(),
            revision: tombstone,
            op: KvOperation::Delete
        }
    );
    let r2 = ok(
        store.create(&b, "leader", b"2".to_vec()).await,
        "create leader",
    );
    assert_eq!(
        next_change(&mut watch, opts, "the new leader").await,
        put("leader", r2, b"2")
    );
}

/// A watch of several keys (how a member follows `term` and its own `w.<id>`) sees exactly those
/// keys, through one stream in revision order: a write to one key is never seen before an earlier
/// write to the other.
pub async fn watch_several_keys(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "watch-keys", None).await;
    let t1 = ok(store.put(&b, "term", b"1".to_vec()).await, "put term");
    ok(store.put(&b, "w.b", b"b1".to_vec()).await, "put w.b");
    let a1 = ok(store.put(&b, "w.a", b"a1".to_vec()).await, "put w.a");
    let keys = WatchKeys::Keys(vec!["term".into(), "w.a".into()]);
    assert!(keys.matches("w.a") && !keys.matches("w.b") && !keys.matches("w.ab"));
    let mut watch = ok(store.watch(&b, keys).await, "watch term and w.a");
    assert_eq!(
        snapshot(&mut watch, opts).await,
        [put("term", t1, b"1"), put("w.a", a1, b"a1")]
    );
    ok(store.put(&b, "w.b", b"b2".to_vec()).await, "put w.b");
    ok(store.put(&b, "w.ab", b"x".to_vec()).await, "put w.ab");
    let t2 = ok(
        store.update(&b, "term", b"2".to_vec(), t1).await,
        "update term",
    );
    let a2 = ok(
        store.update(&b, "w.a", b"a2".to_vec(), a1).await,
        "update w.a",
    );
    let a3 = delete_seen(store, opts, &b, "w.a", Some(a2)).await;
    assert_eq!(
        next_change(&mut watch, opts, "term 2").await,
        put("term", t2, b"2")
    );
    assert_eq!(
        next_change(&mut watch, opts, "w.a a2").await,
        put("w.a", a2, b"a2")
    );
    assert_eq!(
        next_change(&mut watch, opts, "delete of w.a").await,
        KvEvent {
            key: "w.a".into(),
            revision: a3,
            op: KvOperation::Delete
        }
    );
}

/// Two watches of one bucket each see every change in the same order; dropping one does not
/// disturb the other.
pub async fn watches_are_independent(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "watch-two", None).await;
    let mut first = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch 1",
    );
    let mut second = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch 2",
    );
    assert_eq!(snapshot(&mut first, opts).await, []);
    assert_eq!(snapshot(&mut second, opts).await, []);
    let mut written = Vec::new();
    for (i, key) in ["a", "b", "a", "c"].into_iter().enumerate() {
        let value = [u8::try_from(i).expect("four writes")];
        written.push(put(
            key,
            ok(store.put(&b, key, value.to_vec()).await, "put"),
            &value,
        ));
    }
    for (i, want) in written.iter().enumerate() {
        let what = format!("write #{i}");
        assert_eq!(&next_change(&mut first, opts, &what).await, want);
        assert_eq!(&next_change(&mut second, opts, &what).await, want);
    }
    drop(first);
    let rev = ok(store.put(&b, "d", b"d".to_vec()).await, "put after a drop");
    assert_eq!(
        next_change(&mut second, opts, "the write after a drop").await,
        put("d", rev, b"d")
    );
}

/// Values are bytes, stored and delivered exactly: empty, zero bytes, non-UTF-8.
pub async fn binary_and_empty_values(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "binary-values", None).await;
    let values: [&[u8]; 4] = [b"", &[0], &[0xff, 0x00, 0xfe, 0x80], &[1; 4096]];
    let mut watch = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch",
    );
    assert_eq!(snapshot(&mut watch, opts).await, []);
    for (i, value) in values.iter().enumerate() {
        let key = format!("v{i}");
        let rev = ok(store.put(&b, &key, value.to_vec()).await, "put");
        assert_eq!(
            ok(store.entry(&b, &key).await, "entry"),
            Some(entry(&key, rev, value)),
            "value #{i}"
        );
        assert_eq!(
            next_change(&mut watch, opts, &key).await,
            put(&key, rev, value),
            "value #{i} on the watch"
        );
    }
    let empty = ok(
        store.create(&b, "created-empty", Vec::new()).await,
        "create empty",
    );
    assert_eq!(
        store.create(&b, "created-empty", b"x".to_vec()).await,
        Err(KvError::AlreadyExists),
        "an empty value is a live value"
    );
    assert_eq!(
        ok(store.keys(&b, "created").await, "keys"),
        ["created-empty"]
    );
    let mut again = ok(
        store.watch(&b, WatchKeys::Key("v0".into())).await,
        "watch v0",
    );
    let snap = snapshot(&mut again, opts).await;
    assert_eq!(snap.len(), 1, "an empty value is in the snapshot: {snap:?}");
    assert_eq!(snap[0].op, KvOperation::Put(Vec::new()));
    assert!(empty > snap[0].revision);
}

/// After the bucket's max age, a value is gone for `entry`, `keys` and a new watch's snapshot,
/// and the key can be created again with a higher revision.
pub async fn max_age_expiry(store: &dyn KvStore, opts: &ContractOptions) {
    let b = bucket(store, opts, "max-age", Some(opts.max_age)).await;
    let r1 = ok(store.create(&b, "a", b"1".to_vec()).await, "create a");
    let r2 = ok(store.put(&b, "b", b"2".to_vec()).await, "put b");
    assert_eq!(
        ok(store.entry(&b, "a").await, "entry before expiry"),
        Some(entry("a", r1, b"1"))
    );
    let long = ContractOptions {
        wait: opts.max_age + opts.wait,
        ..opts.clone()
    };
    wait_until(&long, "a and b to expire", || async {
        ok(store.entry(&b, "a").await, "entry a").is_none()
            && ok(store.entry(&b, "b").await, "entry b").is_none()
    })
    .await;
    wait_until(&long, "keys to forget a and b", || async {
        ok(store.keys(&b, "").await, "keys").is_empty()
    })
    .await;
    let mut watch = ok(
        store.watch(&b, WatchKeys::Prefix(String::new())).await,
        "watch after expiry",
    );
    assert_eq!(
        snapshot(&mut watch, opts).await,
        [],
        "expired values are not in a snapshot"
    );
    let r3 = ok(
        store.create(&b, "a", b"3".to_vec()).await,
        "create over an expired key",
    );
    assert!(r3 > r2, "revisions continue after expiry");
    assert_eq!(
        ok(store.entry(&b, "a").await, "entry after re-create"),
        Some(entry("a", r3, b"3"))
    );
}

/// Provisioning: `Created`, then `Existing` for the same spec; a different max age or history
/// fails with [`KvError::BucketMismatch`] under [`OnMismatch::Fail`] and changes nothing; under
/// [`OnMismatch::Reconcile`] the bucket is updated (`Reconciled`, data kept), and the new spec
/// is then `Existing`.
pub async fn provision_mismatch_and_reconcile(store: &dyn KvStore, opts: &ContractOptions) {
    let spec = opts.spec("provision", Some(Duration::from_secs(60)));
    let name = spec.name.clone();
    assert_eq!(
        ok(store.provision(&spec, OnMismatch::Fail).await, "create"),
        Provisioned::Created
    );
    assert_eq!(
        ok(store.provision(&spec, OnMismatch::Fail).await, "again"),
        Provisioned::Existing
    );
    let rev = ok(store.put(&name, "k", b"v".to_vec()).await, "put");

    let longer = BucketSpec {
        max_age: Some(Duration::from_secs(120)),
        ..spec.clone()
    };
    assert_eq!(
        store.provision(&longer, OnMismatch::Fail).await,
        Err(KvError::BucketMismatch {
            bucket: name.clone(),
            field: "max_age".into(),
            existing: "60s".into(),
            wanted: "120s".into(),
        })
    );
    let more_history = BucketSpec {
        history: 2,
        ..spec.clone()
    };
    assert_eq!(
        store.provision(&more_history, OnMismatch::Fail).await,
        Err(KvError::BucketMismatch {
            bucket: name.clone(),
            field: "history".into(),
            existing: "1".into(),
            wanted: "2".into(),
        })
    );
    assert_eq!(
        ok(store.provision(&spec, OnMismatch::Fail).await, "unchanged"),
        Provisioned::Existing,
        "a refused provision changes nothing"
    );

    assert_eq!(
        ok(
            store.provision(&longer, OnMismatch::Reconcile).await,
            "reconcile"
        ),
        Provisioned::Reconciled {
            changes: vec![("max_age".into(), "60s".into(), "120s".into())]
        }
    );
    assert_eq!(
        ok(
            store.provision(&longer, OnMismatch::Fail).await,
            "after reconcile"
        ),
        Provisioned::Existing
    );
    assert_eq!(
        ok(
            store.provision(&longer, OnMismatch::Reconcile).await,
            "reconcile again"
        ),
        Provisioned::Existing
    );
    assert_eq!(
        ok(store.entry(&name, "k").await, "entry after reconcile"),
        Some(entry("k", rev, b"v"))
    );
}

/// Operations on a bucket never provisioned fail with [`KvError::BucketNotFound`]; keys outside
/// the NATS key alphabet fail with [`KvError::InvalidKey`] and write nothing.
pub async fn unknown_bucket_and_invalid_key(store: &dyn KvStore, opts: &ContractOptions) {
    let missing = opts.bucket("never-provisioned");
    let not_found = KvError::BucketNotFound {
        bucket: missing.clone(),
    };
    assert_eq!(store.entry(&missing, "k").await, Err(not_found.clone()));
    assert_eq!(
        store.put(&missing, "k", b"v".to_vec()).await,
        Err(not_found.clone())
    );
    assert_eq!(
        store.create(&missing, "k", b"v".to_vec()).await,
        Err(not_found.clone())
    );
    assert_eq!(store.keys(&missing, "").await, Err(not_found.clone()));
    assert!(matches!(
        store
            .watch(&missing, WatchKeys::Prefix(String::new()))
            .await,
        Err(KvError::BucketNotFound { .. })
    ));

    let b = bucket(store, opts, "invalid-key", None).await;
    for key in ["bad key", ".lead", "trail.", "*", "a.>", ""] {
        let invalid = KvError::InvalidKey { key: key.into() };
        assert_eq!(
            store.put(&b, key, b"v".to_vec()).await,
            Err(invalid.clone()),
            "put {key:?}"
        );
        assert_eq!(
            store.create(&b, key, b"v".to_vec()).await,
            Err(invalid.clone()),
            "create {key:?}"
        );
        assert_eq!(store.entry(&b, key).await, Err(invalid), "entry {key:?}");
    }
    assert_eq!(ok(store.keys(&b, "").await, "keys"), Vec::<String>::new());
}

/// [`KvStore::connection`] reports the current state first: `Connected` for a store that
/// works.
pub async fn connection_starts_connected(store: &dyn KvStore, opts: &ContractOptions) {
    let mut connection = store.connection();
    let first = tokio::time::timeout(opts.wait, connection.next()).await;
    assert_eq!(
        first,
        Ok(Some(ConnectionState::Connected)),
        "the first connection state"
    );
}

/// A value over the store's limit (NATS: `max_payload`, 1 MiB by default; `MemoryStore`: the
/// same by default) is refused as `ValueTooLarge` by `create`, `update` and `put`, and nothing
/// is written.
pub async fn a_value_over_the_limit_is_refused(store: &dyn KvStore, opts: &ContractOptions) {
    let spec = opts.spec("too-large", None);
    store
        .provision(&spec, OnMismatch::Fail)
        .await
        .expect("provision");
    let bucket = spec.name.as_str();
    let big = vec![7u8; 2 * 1024 * 1024];
    let refused = |r: Result<Revision, KvError>, op: &str| match r {
        Err(KvError::ValueTooLarge { .. }) => {}
        other => panic!("{op} of 2 MiB: expected ValueTooLarge, got {other:?}"),
    };
    refused(store.create(bucket, "k", big.clone()).await, "create");
    assert_eq!(store.entry(bucket, "k").await.expect("entry"), None);
    let rev = store
        .create(bucket, "k", b"small".to_vec())
        .await
        .expect("a small value");
    refused(store.update(bucket, "k", big.clone(), rev).await, "update");
    refused(store.put(bucket, "k", big).await, "put");
    let entry = store
        .entry(bucket, "k")
        .await
        .expect("entry")
        .expect("a value");
    assert_eq!(
        (entry.value.as_slice(), entry.revision),
        (&b"small"[..], rev)
    );
}
