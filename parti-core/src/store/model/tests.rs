//! Unit tests and property tests of the reference model.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::store::{MAX_HISTORY, MAX_REPLICAS, StorageKind};

const B: &str = "b";

#[allow(clippy::disallowed_methods)] // the one epoch of these tests; only durations are added
fn epoch() -> Instant {
    Instant::now()
}

fn spec(name: &str, max_age: Option<Duration>) -> BucketSpec {
    BucketSpec {
        name: name.to_owned(),
        history: 1,
        max_age,
        replicas: 1,
        storage: StorageKind::Memory,
    }
}

fn store_with(max_age: Option<Duration>) -> StoreModel {
    let mut store = StoreModel::new();
    assert_eq!(
        store.provision(&spec(B, max_age), OnMismatch::Fail),
        Ok(Provisioned::Created)
    );
    store
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn drain(store: &mut StoreModel, id: WatcherId) -> Vec<WatchEvent> {
    std::iter::from_fn(|| store.poll_watch(id)).collect()
}

fn put_event(key: &str, revision: u64, value: &[u8]) -> WatchEvent {
    WatchEvent::Change(KvEvent {
        key: key.to_owned(),
        revision: Revision(revision),
        op: KvOperation::Put(value.to_vec()),
    })
}

fn op_event(key: &str, revision: u64, op: KvOperation) -> WatchEvent {
    WatchEvent::Change(KvEvent {
        key: key.to_owned(),
        revision: Revision(revision),
        op,
    })
}

#[test]
fn revisions_are_per_bucket_and_shared_by_keys() {
    let t = epoch();
    let mut s = store_with(None);
    s.provision(&spec("other", None), OnMismatch::Fail).unwrap();
    assert_eq!(s.last_revision(B), Ok(Revision::ZERO));
    assert_eq!(s.put(B, "a", b"1".to_vec(), t), Ok(Revision(1)));
    assert_eq!(s.create(B, "b", b"2".to_vec(), t), Ok(Revision(2)));
    assert_eq!(
        s.update(B, "a", b"3".to_vec(), Revision(1), t),
        Ok(Revision(3))
    );
    assert_eq!(s.delete(B, "b", None, t), Ok(Revision(4)));
    assert_eq!(s.put("other", "a", b"x".to_vec(), t), Ok(Revision(1)));
    assert_eq!(s.last_revision(B), Ok(Revision(4)));
}

#[test]
fn create_conflicts_with_a_live_value_only() {
    let t = epoch();
    let mut s = store_with(None);
    let r1 = s.create(B, "k", b"1".to_vec(), t).unwrap();
    assert_eq!(
        s.create(B, "k", b"2".to_vec(), t),
        Err(KvError::AlreadyExists)
    );
    s.delete(B, "k", Some(r1), t).unwrap();
    let r3 = s.create(B, "k", b"3".to_vec(), t).unwrap();
    assert_eq!(r3, Revision(3));
    s.purge(B, "k", None, t).unwrap();
    assert_eq!(s.create(B, "k", b"5".to_vec(), t), Ok(Revision(5)));
    assert_eq!(
        s.entry(B, "k", t).unwrap().map(|e| e.value),
        Some(b"5".to_vec())
    );
}

#[test]
fn update_compares_with_the_last_revision() {
    let t = epoch();
    let mut s = store_with(None);
    // Revision zero matches a key that has no record at all.
    assert_eq!(
        s.update(B, "k", b"1".to_vec(), Revision::ZERO, t),
        Ok(Revision(1))
    );
    assert_eq!(
        s.update(B, "k", b"x".to_vec(), Revision::ZERO, t),
        Err(KvError::RevisionMismatch {
            current: Some(Revision(1))
        })
    );
    s.put(B, "other", b"o".to_vec(), t).unwrap();
    s.put(B, "k", b"2".to_vec(), t).unwrap();
    // A stale revision reports the current one.
    assert_eq!(
        s.update(B, "k", b"x".to_vec(), Revision(1), t),
        Err(KvError::RevisionMismatch {
            current: Some(Revision(3))
        })
    );
    assert_eq!(
        s.update(B, "k", b"4".to_vec(), Revision(3), t),
        Ok(Revision(4))
    );
    // After a delete: a stale revision fails and reports no live revision; zero does not match
    // a tombstone; the tombstone's own revision does (as in NATS).
    let tomb = s.delete(B, "k", None, t).unwrap();
    assert_eq!(
        s.update(B, "k", b"x".to_vec(), Revision(4), t),
        Err(KvError::RevisionMismatch { current: None })
    );
    assert_eq!(
        s.update(B, "k", b"x".to_vec(), Revision::ZERO, t),
        Err(KvError::RevisionMismatch { current: None })
    );
    assert_eq!(s.update(B, "k", b"6".to_vec(), tomb, t), Ok(Revision(6)));
    // A nonzero revision on a key never written.
    assert_eq!(
        s.update(B, "never", b"x".to_vec(), Revision(6), t),
        Err(KvError::RevisionMismatch { current: None })
    );
}

#[test]
fn delete_with_and_without_expected_revision() {
    let t = epoch();
    let mut s = store_with(None);
    let r1 = s.put(B, "k", b"1".to_vec(), t).unwrap();
    let r2 = s.put(B, "k", b"2".to_vec(), t).unwrap();
    assert_eq!(
        s.delete(B, "k", Some(r1), t),
        Err(KvError::RevisionMismatch { current: Some(r2) })
    );
    assert_eq!(s.entry(B, "k", t).unwrap().map(|e| e.revision), Some(r2));
    assert_eq!(s.delete(B, "k", Some(r2), t), Ok(Revision(3)));
    assert_eq!(s.entry(B, "k", t), Ok(None));
    // Deleting a key with no live value succeeds and writes another tombstone.
    assert_eq!(s.delete(B, "k", None, t), Ok(Revision(4)));
    assert_eq!(s.delete(B, "never", None, t), Ok(Revision(5)));
    assert_eq!(
        s.delete(B, "never2", Some(Revision(1)), t),
        Err(KvError::RevisionMismatch { current: None })
    );
}

#[test]
fn keys_by_prefix_are_sorted_and_live() {
    let t = epoch();
    let mut s = store_with(None);
    for key in ["w.c", "w.a", "x.a", "w.b", "w", "w.d"] {
        s.put(B, key, b"v".to_vec(), t).unwrap();
    }
    s.delete(B, "w.d", None, t).unwrap();
    assert_eq!(s.keys(B, "w.", t).unwrap(), ["w.a", "w.b", "w.c"]);
    assert_eq!(s.keys(B, "", t).unwrap(), ["w", "w.a", "w.b", "w.c", "x.a"]);
    assert_eq!(s.keys(B, "y", t).unwrap(), Vec::<String>::new());
}

#[test]
fn max_age_expiry_is_silent_and_resets_the_key() {
    let t = epoch();
    let mut s = store_with(Some(secs(10)));
    let w = s.watch(B, WatchKeys::Prefix(String::new()), t).unwrap();
    assert_eq!(drain(&mut s, w), [WatchEvent::SnapshotComplete]);
    let r1 = s.create(B, "a", b"1".to_vec(), t).unwrap();
    s.put(B, "b", b"2".to_vec(), t + secs(5)).unwrap();
    assert_eq!(s.next_expiry(), Some(t + secs(10)));
    assert!(s.entry(B, "a", t + secs(9)).unwrap().is_some());
    assert_eq!(s.keys(B, "", t + secs(10)).unwrap(), ["b"]);
    assert_eq!(s.entry(B, "a", t + secs(10)), Ok(None));
    assert_eq!(
        drain(&mut s, w).len(),
        2,
        "only the two writes, no expiry event"
    );
    // An expired key can be created again, and its old revision no longer matches.
    assert_eq!(
        s.update(B, "a", b"x".to_vec(), r1, t + secs(10)),
        Err(KvError::RevisionMismatch { current: None })
    );
    assert_eq!(
        s.create(B, "a", b"3".to_vec(), t + secs(10)),
        Ok(Revision(3))
    );
    // Tombstones expire too: afterwards revision zero matches again.
    s.delete(B, "b", None, t + secs(11)).unwrap();
    assert_eq!(
        s.update(B, "b", b"x".to_vec(), Revision::ZERO, t + secs(20)),
        Err(KvError::RevisionMismatch { current: None })
    );
    assert_eq!(
        s.update(B, "b", b"5".to_vec(), Revision::ZERO, t + secs(21)),
        Ok(Revision(5))
    );
    s.expire(t + secs(40));
    assert_eq!(s.next_expiry(), None);
    assert_eq!(s.keys(B, "", t), Ok(vec![]), "the clock never goes back");
}

#[test]
fn an_older_now_is_read_as_the_latest() {
    let t = epoch();
    let mut s = store_with(Some(secs(10)));
    s.put(B, "a", b"1".to_vec(), t).unwrap();
    s.put(B, "b", b"2".to_vec(), t + secs(10)).unwrap();
    assert_eq!(s.entry(B, "a", t), Ok(None));
    assert_eq!(s.create(B, "a", b"3".to_vec(), t), Ok(Revision(3)));
}

#[test]
fn watch_delivers_snapshot_marker_then_changes_in_order() {
    let t = epoch();
    let mut s = store_with(None);
    s.put(B, "w.b", b"1".to_vec(), t).unwrap(); // 1
    s.put(B, "w.a", b"2".to_vec(), t).unwrap(); // 2
    s.put(B, "x", b"3".to_vec(), t).unwrap(); // 3
    s.put(B, "w.c", b"4".to_vec(), t).unwrap(); // 4
    s.delete(B, "w.c", None, t).unwrap(); // 5
    s.put(B, "w.b", b"6".to_vec(), t).unwrap(); // 6
    let w = s.watch(B, WatchKeys::Prefix("w.".into()), t).unwrap();
    assert_eq!(s.poll_woken(), Some(w));
    assert_eq!(s.pending(w), 3);
    assert_eq!(
        drain(&mut s, w),
        [
            put_event("w.a", 2, b"2"),
            put_event("w.b", 6, b"6"),
            WatchEvent::SnapshotComplete
        ]
    );
    assert_eq!(s.poll_woken(), None);
    s.put(B, "x", b"7".to_vec(), t).unwrap(); // 7, not matched
    assert_eq!(s.poll_woken(), None);
    s.create(B, "w.d", b"8".to_vec(), t).unwrap(); // 8
    s.delete(B, "w.a", Some(Revision(2)), t).unwrap(); // 9
    s.purge(B, "w.b", None, t).unwrap(); // 10
    assert_eq!(s.poll_woken(), Some(w));
    assert_eq!(
        drain(&mut s, w),
        [
            put_event("w.d", 8, b"8"),
            op_event("w.a", 9, KvOperation::Delete),
            op_event("w.b", 10, KvOperation::Purge),
        ]
    );
    assert!(s.unwatch(w));
    assert!(!s.unwatch(w));
    s.put(B, "w.a", b"x".to_vec(), t).unwrap();
    assert_eq!(s.poll_watch(w), None);
    assert_eq!(s.poll_woken(), None);
}

#[test]
fn watch_of_one_key_and_of_an_empty_bucket() {
    let t = epoch();
    let mut s = store_with(None);
    let all = s.watch(B, WatchKeys::Prefix(String::new()), t).unwrap();
    let one = s.watch(B, WatchKeys::Key("leader".into()), t).unwrap();
    assert_eq!(drain(&mut s, all), [WatchEvent::SnapshotComplete]);
    assert_eq!(drain(&mut s, one), [WatchEvent::SnapshotComplete]);
    assert_eq!(s.poll_woken(), Some(all));
    assert_eq!(s.poll_woken(), Some(one));
    s.put(B, "leader.x", b"1".to_vec(), t).unwrap();
    s.put(B, "leader", b"2".to_vec(), t).unwrap();
    assert_eq!(drain(&mut s, one), [put_event("leader", 2, b"2")]);
    assert_eq!(drain(&mut s, all).len(), 2);
    // Other buckets are not seen.
    s.provision(&spec("other", None), OnMismatch::Fail).unwrap();
    s.put("other", "leader", b"3".to_vec(), t).unwrap();
    assert_eq!(s.pending(one), 0);
}

#[test]
fn resync_replaces_the_queue_with_a_fresh_snapshot() {
    let t = epoch();
    let mut s = store_with(None);
    s.put(B, "a", b"1".to_vec(), t).unwrap();
    let w = s.watch(B, WatchKeys::Prefix(String::new()), t).unwrap();
    s.put(B, "b", b"2".to_vec(), t).unwrap();
    assert!(s.resync_watch(w, t));
    assert_eq!(
        drain(&mut s, w),
        [
            WatchEvent::Resync,
            put_event("a", 1, b"1"),
            put_event("b", 2, b"2"),
            WatchEvent::SnapshotComplete
        ]
    );
    assert!(!s.resync_watch(WatcherId(99), t));
}

#[test]
fn errors_for_unknown_buckets_and_invalid_keys() {
    let t = epoch();
    let mut s = store_with(None);
    let missing = KvError::BucketNotFound {
        bucket: "nope".into(),
    };
    assert_eq!(s.entry("nope", "k", t), Err(missing.clone()));
    assert_eq!(s.put("nope", "k", vec![], t), Err(missing.clone()));
    assert_eq!(s.keys("nope", "", t), Err(missing.clone()));
    assert_eq!(
        s.watch("nope", WatchKeys::Key("k".into()), t),
        Err(missing.clone())
    );
    assert_eq!(s.last_revision("nope"), Err(missing));
    for key in ["", "bad key", ".lead", "trail.", "*", "a>", "ü"] {
        let invalid = Err(KvError::InvalidKey { key: key.into() });
        assert_eq!(
            s.put(B, key, vec![], t),
            invalid.clone().map(|()| Revision::ZERO)
        );
        assert_eq!(s.entry(B, key, t), invalid.clone().map(|()| None));
        assert_eq!(
            s.delete(B, key, None, t),
            invalid.clone().map(|()| Revision::ZERO)
        );
    }
    assert_eq!(
        s.last_revision(B),
        Ok(Revision::ZERO),
        "nothing was written"
    );
    for key in ["a", "A-z_0/9=.x", "w.worker-1", "$x"] {
        let ok = is_valid_key(key);
        assert_eq!(ok, key != "$x", "{key}");
    }
}

#[test]
fn provisioning_detects_and_reconciles_mismatches() {
    let t = epoch();
    let mut s = StoreModel::new();
    let wanted = spec("ids", Some(secs(30)));
    assert_eq!(
        s.provision(&wanted, OnMismatch::Fail),
        Ok(Provisioned::Created)
    );
    assert_eq!(
        s.provision(&wanted, OnMismatch::Fail),
        Ok(Provisioned::Existing)
    );
    assert_eq!(
        s.provision(&wanted, OnMismatch::Reconcile),
        Ok(Provisioned::Existing)
    );
    let shorter = BucketSpec {
        max_age: Some(Duration::from_millis(1500)),
        history: 5,
        replicas: 3,
        ..wanted.clone()
    };
    assert_eq!(
        s.provision(&shorter, OnMismatch::Fail),
        Err(KvError::BucketMismatch {
            bucket: "ids".into(),
            field: "max_age".into(),
            existing: "30s".into(),
            wanted: "1.5s".into(),
        })
    );
    assert_eq!(
        s.bucket_spec("ids"),
        Some(&wanted),
        "a failed provision changes nothing"
    );
    s.put("ids", "k", b"v".to_vec(), t).unwrap();
    assert_eq!(
        s.provision(&shorter, OnMismatch::Reconcile),
        Ok(Provisioned::Reconciled {
            changes: vec![
                ("max_age".into(), "30s".into(), "1.5s".into()),
                ("history".into(), "1".into(), "5".into()),
                ("replicas".into(), "1".into(), "3".into()),
            ]
        })
    );
    assert_eq!(s.bucket_spec("ids"), Some(&shorter));
    // The new max age applies to what is stored.
    assert_eq!(s.entry("ids", "k", t + secs(2)), Ok(None));
    // Storage cannot be reconciled.
    let on_file = BucketSpec {
        storage: StorageKind::File,
        ..shorter.clone()
    };
    let storage_mismatch = Err(KvError::BucketMismatch {
        bucket: "ids".into(),
        field: "storage".into(),
        existing: "memory".into(),
        wanted: "file".into(),
    });
    assert_eq!(
        s.provision(&on_file, OnMismatch::Reconcile),
        storage_mismatch
    );
    assert_eq!(s.provision(&on_file, OnMismatch::Fail), storage_mismatch);
    let forever = BucketSpec {
        max_age: None,
        ..shorter
    };
    assert_eq!(
        s.provision(&forever, OnMismatch::Fail),
        Err(KvError::BucketMismatch {
            bucket: "ids".into(),
            field: "max_age".into(),
            existing: "1.5s".into(),
            wanted: "none".into(),
        })
    );
}

#[test]
fn invalid_specs_are_refused() {
    let mut s = StoreModel::new();
    let base = spec("ok", None);
    let cases = [
        (
            BucketSpec {
                name: String::new(),
                ..base.clone()
            },
            "name",
        ),
        (
            BucketSpec {
                name: "a.b".into(),
                ..base.clone()
            },
            "name",
        ),
        (
            BucketSpec {
                history: 0,
                ..base.clone()
            },
            "history",
        ),
        (
            BucketSpec {
                history: 65,
                ..base.clone()
            },
            "history",
        ),
        (
            BucketSpec {
                replicas: 0,
                ..base.clone()
            },
            "replicas",
        ),
        (
            BucketSpec {
                replicas: 6,
                ..base.clone()
            },
            "replicas",
        ),
        (
            BucketSpec {
                max_age: Some(Duration::ZERO),
                ..base.clone()
            },
            "max_age",
        ),
    ];
    for (bad, field) in cases {
        match s.provision(&bad, OnMismatch::Fail) {
            Err(KvError::InvalidBucketSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(s.bucket_spec(""), None);
    let max = BucketSpec {
        history: MAX_HISTORY,
        replicas: MAX_REPLICAS,
        ..base
    };
    assert_eq!(
        s.provision(&max, OnMismatch::Fail),
        Ok(Provisioned::Created)
    );
}

// ----- property tests against a naive oracle -----

/// The naive oracle: the full log of writes per key; a key's record is its last log entry
/// unless that has expired.
#[derive(Default)]
struct Oracle {
    log: Vec<(String, Revision, KvOperation, Instant)>,
    clock: Option<Instant>,
}

impl Oracle {
    fn tick(&mut self, now: Instant) -> Instant {
        let now = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(now);
        now
    }

    fn record(&self, key: &str, now: Instant, max_age: Duration) -> Option<(Revision, bool)> {
        let (_, rev, op, at) = self.log.iter().rev().find(|(k, ..)| k == key)?;
        if *at + max_age <= now {
            return None;
        }
        Some((*rev, matches!(op, KvOperation::Put(_))))
    }

    fn last(&self) -> Revision {
        self.log.last().map_or(Revision::ZERO, |(_, r, ..)| *r)
    }
}

/// What one step wrote (key and operation), what the model returned, what the oracle expects.
type Outcome = (
    Option<(String, KvOperation)>,
    Result<Revision, KvError>,
    Result<Revision, KvError>,
);

#[derive(Clone, Debug)]
enum Expect {
    Current,
    Zero,
    Other(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize, u8),
    Update(usize, u8, Expect),
    Put(usize, u8),
    Delete(usize, Option<Expect>),
    Purge(usize),
    Entry(usize),
    Keys,
}

const KEYS: [&str; 4] = ["a", "a.1", "b", "b.2"];

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        3 => Just(Expect::Current),
        1 => Just(Expect::Zero),
        1 => (1u64..30).prop_map(Expect::Other),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        (key.clone(), any::<u8>(), expect()).prop_map(|(k, v, e)| Op::Update(k, v, e)),
        (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        (key.clone(), proptest::option::of(expect())).prop_map(|(k, e)| Op::Delete(k, e)),
        key.clone().prop_map(Op::Purge),
        key.prop_map(Op::Entry),
        Just(Op::Keys),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every operation agrees with the naive oracle; revisions strictly increase; a watcher
    /// registered first sees exactly the successful writes to its keys, in order.
    #[test]
    fn model_agrees_with_a_naive_oracle(
        steps in proptest::collection::vec((op(), 0u64..3000, any::<bool>()), 1..80),
    ) {
        let max_age = Duration::from_secs(5);
        let t0 = epoch();
        let mut s = store_with(Some(max_age));
        let mut o = Oracle::default();
        let watch_a = s.watch(B, WatchKeys::Prefix("a".into()), t0).unwrap();
        prop_assert_eq!(s.poll_watch(watch_a), Some(WatchEvent::SnapshotComplete));
        let mut seen_by_a = Vec::new();
        let mut elapsed = Duration::ZERO;
        let mut last_rev = Revision::ZERO;
        for (op, advance_ms, back) in steps {
            elapsed += Duration::from_millis(advance_ms);
            // Now and then a caller comes with an older time; both sides clamp it.
            let now = if back { t0 + elapsed / 2 } else { t0 + elapsed };
            let on = o.tick(now);
            let resolve = |e: &Expect, k: &str| match e {
                Expect::Current => o.record(k, on, max_age).map_or(Revision::ZERO, |(r, _)| r),
                Expect::Zero => Revision::ZERO,
                Expect::Other(n) => Revision(*n),
            };
            let mismatch = |k: &str| KvError::RevisionMismatch {
                current: o.record(k, on, max_age).filter(|(_, live)| *live).map(|(r, _)| r),
            };
            let (written, got, want): Outcome = match &op {
                Op::Create(k, v) => {
                    let k = KEYS[*k];
                    let want = match o.record(k, on, max_age) {
                        Some((_, true)) => Err(KvError::AlreadyExists),
                        _ => Ok(o.last().next()),
                    };
                    (Some((k.into(), KvOperation::Put(vec![*v]))), s.create(B, k, vec![*v], now), want)
                }
                Op::Update(k, v, e) => {
                    let k = KEYS[*k];
                    let expected = resolve(e, k);
                    let current = o.record(k, on, max_age).map_or(Revision::ZERO, |(r, _)| r);
                    let want = if current == expected { Ok(o.last().next()) } else { Err(mismatch(k)) };
                    (Some((k.into(), KvOperation::Put(vec![*v]))), s.update(B, k, vec![*v], expected, now), want)
                }
                Op::Put(k, v) => {
                    let k = KEYS[*k];
                    (Some((k.into(), KvOperation::Put(vec![*v]))), s.put(B, k, vec![*v], now), Ok(o.last().next()))
                }
                Op::Delete(k, e) => {
                    let k = KEYS[*k];
                    let expected = e.as_ref().map(|e| resolve(e, k));
                    let current = o.record(k, on, max_age).map_or(Revision::ZERO, |(r, _)| r);
                    let want = match expected {
                        Some(expected) if expected != current => Err(mismatch(k)),
                        _ => Ok(o.last().next()),
                    };
                    (Some((k.into(), KvOperation::Delete)), s.delete(B, k, expected, now), want)
                }
                Op::Purge(k) => {
                    let k = KEYS[*k];
                    (Some((k.into(), KvOperation::Purge)), s.purge(B, k, None, now), Ok(o.last().next()))
                }
                Op::Entry(k) => {
                    let k = KEYS[*k];
                    let want = o.record(k, on, max_age).filter(|(_, live)| *live).map(|(r, _)| r);
                    let got = s.entry(B, k, now).unwrap().map(|e| e.revision);
                    prop_assert_eq!(got, want);
                    (None, Ok(Revision::ZERO), Ok(Revision::ZERO))
                }
                Op::Keys => {
                    let want: Vec<String> = KEYS
                        .iter()
                        .filter(|k| matches!(o.record(k, on, max_age), Some((_, true))))
                        .map(|k| (*k).to_owned())
                        .collect();
                    prop_assert_eq!(s.keys(B, "", now).unwrap(), want);
                    (None, Ok(Revision::ZERO), Ok(Revision::ZERO))
                }
            };
            prop_assert_eq!(&got, &want, "{:?}", op);
            if let (Some((key, kv_op)), Ok(rev)) = (written, got) {
                prop_assert!(rev > last_rev, "revisions strictly increase");
                last_rev = rev;
                if key.starts_with('a') {
                    seen_by_a.push(WatchEvent::Change(KvEvent { key: key.clone(), revision: rev, op: kv_op.clone() }));
                }
                o.log.push((key, rev, kv_op, on));
            }
        }
        prop_assert_eq!(s.last_revision(B).unwrap(), o.last());
        prop_assert_eq!(drain(&mut s, watch_a), seen_by_a);
    }

    /// A snapshot holds exactly the live values of the matched keys, in revision order.
    #[test]
    fn snapshot_is_the_live_state_in_revision_order(
        writes in proptest::collection::vec((0..KEYS.len(), any::<bool>()), 0..30),
        prefix in prop_oneof![Just(""), Just("a"), Just("b."), Just("z")],
    ) {
        let t = epoch();
        let mut s = store_with(None);
        for (k, delete) in &writes {
            if *delete {
                s.delete(B, KEYS[*k], None, t).unwrap();
            } else {
                s.put(B, KEYS[*k], vec![1], t).unwrap();
            }
        }
        let w = s.watch(B, WatchKeys::Prefix(prefix.to_owned()), t).unwrap();
        let events = drain(&mut s, w);
        prop_assert_eq!(events.last(), Some(&WatchEvent::SnapshotComplete));
        let mut snapshot_keys = Vec::new();
        let mut last = Revision::ZERO;
        for event in &events[..events.len() - 1] {
            let WatchEvent::Change(e) = event else {
                return Err(TestCaseError::fail(format!("unexpected {event:?}")));
            };
            prop_assert!(e.revision > last);
            last = e.revision;
            prop_assert!(matches!(e.op, KvOperation::Put(_)));
            prop_assert_eq!(s.entry(B, &e.key, t).unwrap().map(|x| x.revision), Some(e.revision));
            snapshot_keys.push(e.key.clone());
        }
        snapshot_keys.sort();
        prop_assert_eq!(snapshot_keys, s.keys(B, prefix, t).unwrap());
    }
}
