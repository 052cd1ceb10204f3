//! The reference model of the store semantics: synchronous, pure, with time passed in.
//!
//! [`StoreModel`] is what a [`KvStore`](super::KvStore) promises, written as a plain data
//! structure. It follows NATS JetStream KV (as measured in the project's async-nats probe) wherever
//! the port's contract leaves a choice, so that the in-process store and NATS behave alike:
//!
//! - **One revision counter per bucket**, shared by all its keys, starting at 1. Every write
//!   (put, create, update, delete, purge) takes the next one. The counter never goes back, not
//!   even when values expire.
//! - **A key's record** is its latest write: a value, or a tombstone (delete / purge). Only the
//!   latest write is kept whatever the bucket's `history`, because the port exposes no history.
//! - **Compare-and-set** compares `expected` with the key's *last revision*: the revision of its
//!   record, tombstones included, or [`Revision::ZERO`] when the key has no record (never written
//!   or expired). So `update(.., Revision::ZERO)` creates a key that has no record (as NATS does),
//!   and `create` succeeds when the key has no live value, tombstone or not.
//! - **Expiry**: a record (value or tombstone) written at `t` is gone from `t + max_age` on, as if
//!   never written: [`StoreModel::entry`] and [`StoreModel::keys`] stop seeing it and its last
//!   revision becomes zero. No watch event is emitted.
//! - **Deleting a key without a live value** without `expected` succeeds and writes a tombstone
//!   (watchers see it), as NATS does.
//!
//! # Time
//!
//! Every call that depends on time takes `now`. The model keeps the latest `now` it was given and
//! never goes back: an older `now` (two threads reading the clock, then taking a lock in the
//! other order) is read as the latest one, so expiry is monotonic.
//!
//! # Watches
//!
//! A watcher is registered with [`StoreModel::watch`], which queues the snapshot (the current
//! value of every matching key, in revision order) and one [`WatchEvent::SnapshotComplete`].
//! Every later write to a matching key queues a [`WatchEvent::Change`]. The owner pulls events
//! with [`StoreModel::poll_watch`]; [`StoreModel::poll_woken`] says which watchers received
//! events since it was last asked, so a driver knows whom to wake. A simulator can drive it all
//! step by step:
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use parti_core::store::model::StoreModel;
//! use parti_core::store::{BucketSpec, KvOperation, OnMismatch, StorageKind, WatchEvent, WatchKeys};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let mut store = StoreModel::new();
//! let spec = BucketSpec {
//!     name: "ids".into(),
//!     history: 1,
//!     max_age: Some(Duration::from_secs(10)),
//!     replicas: 1,
//!     storage: StorageKind::Memory,
//! };
//! store.provision(&spec, OnMismatch::Fail)?;
//! let rev = store.create("ids", "worker-1", b"a".to_vec(), t0)?;
//!
//! let watcher = store.watch("ids", WatchKeys::Prefix("worker-".into()), t0)?;
//! assert!(matches!(store.poll_watch(watcher), Some(WatchEvent::Change(e)) if e.revision == rev));
//! assert_eq!(store.poll_watch(watcher), Some(WatchEvent::SnapshotComplete));
//! assert_eq!(store.poll_watch(watcher), None);
//!
//! store.delete("ids", "worker-1", Some(rev), t0)?;
//! assert_eq!(store.poll_woken(), Some(watcher));
//! assert!(matches!(
//!     store.poll_watch(watcher),
//!     Some(WatchEvent::Change(e)) if e.op == KvOperation::Delete
//! ));
//!
//! // Expiry is silent: ten seconds later the (re-created) key is gone without an event.
//! store.create("ids", "worker-1", b"b".to_vec(), t0)?;
//! let _ = store.poll_watch(watcher);
//! assert!(store.entry("ids", "worker-1", t0 + Duration::from_secs(10))?.is_none());
//! # Ok::<(), parti_core::store::KvError>(())
//! ```

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Instant;

use super::{
    BucketSpec, KvEntry, KvError, KvEvent, KvOperation, OnMismatch, Provisioned, WatchEvent,
    WatchKeys, is_valid_key,
};
use crate::types::Revision;

/// Identifies a watcher registered with [`StoreModel::watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatcherId(pub u64);

/// The latest write of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    revision: Revision,
    /// `Put(value)`, `Delete` or `Purge`.
    op: KvOperation,
    written_at: Instant,
}

impl Record {
    fn value(&self) -> Option<&[u8]> {
        match &self.op {
            KvOperation::Put(v) => Some(v),
            KvOperation::Delete | KvOperation::Purge => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    spec: BucketSpec,
    last_revision: Revision,
    records: BTreeMap<String, Record>,
}

impl Bucket {
    /// Whether `record` has expired at `now`.
    fn is_expired(&self, record: &Record, now: Instant) -> bool {
        match self.spec.max_age {
            None => false,
            Some(max_age) => record
                .written_at
                .checked_add(max_age)
                .is_some_and(|deadline| deadline <= now),
        }
    }

    /// The record of `key` if it has not expired at `now`.
    fn record(&self, key: &str, now: Instant) -> Option<&Record> {
        self.records
            .get(key)
            .filter(|record| !self.is_expired(record, now))
    }

    /// The revision a compare-and-set is compared with.
    fn last_revision_of(&self, key: &str, now: Instant) -> Revision {
        self.record(key, now).map_or(Revision::ZERO, |r| r.revision)
    }

    /// The revision a [`KvError::RevisionMismatch`] reports: the live value's, `None` for a key
    /// without a live value (the port's convention for deleted keys).
    fn live_revision_of(&self, key: &str, now: Instant) -> Option<Revision> {
        self.record(key, now)
            .filter(|r| r.value().is_some())
            .map(|r| r.revision)
    }

    /// Drops the records that have expired at `now`.
    fn expire(&mut self, now: Instant) {
        let Some(max_age) = self.spec.max_age else {
            return;
        };
        self.records.retain(|_, record| {
            record
                .written_at
                .checked_add(max_age)
                .is_none_or(|deadline| deadline > now)
        });
    }

    /// When the next record expires.
    fn next_expiry(&self) -> Option<Instant> {
        let max_age = self.spec.max_age?;
        self.records
            .values()
            .filter_map(|r| r.written_at.checked_add(max_age))
            .min()
    }
}

#[derive(Clone, Debug)]
struct Watcher {
    bucket: String,
    keys: WatchKeys,
    queue: VecDeque<WatchEvent>,
}

/// The reference model of a [`KvStore`](super::KvStore): buckets, per-bucket revisions,
/// compare-and-set, expiry by an injected time, and watch fan-out. See the
/// [module documentation](self) for the semantics and an example.
///
/// Every operation is a method taking `&mut self` (or `&self` for reads) and, where time matters,
/// `now`. Errors are the port's [`KvError`]s: [`KvError::BucketNotFound`] for a bucket that was
/// never provisioned, [`KvError::InvalidKey`] for a key outside the NATS key alphabet,
/// [`KvError::AlreadyExists`] and [`KvError::RevisionMismatch`] for failed compare-and-sets.
/// The model never fails with a connectivity error: faults are the simulator's business.
///
/// It is `Send` but not `Sync` (reads move its clock forward): share it behind a mutex.
#[derive(Clone, Debug, Default)]
pub struct StoreModel {
    buckets: BTreeMap<String, Bucket>,
    watchers: BTreeMap<WatcherId, Watcher>,
    next_watcher: u64,
    woken: BTreeSet<WatcherId>,
    /// The latest `now` seen, by reads too (hence a `Cell`: reads take `&self`); earlier ones
    /// are read as this.
    clock: Cell<Option<Instant>>,
    /// Values larger than this are refused with [`KvError::ValueTooLarge`] (as a NATS server's
    /// `max_payload` refuses them); `None`: no limit (the default).
    max_value: Option<usize>,
}

impl StoreModel {
    /// Refuses values larger than `limit` bytes from now on (`None`: no limit).
    pub fn set_max_value_bytes(&mut self, limit: Option<usize>) {
        self.max_value = limit;
    }

    fn check_size(&self, value: &[u8]) -> Result<(), KvError> {
        match self.max_value {
            Some(limit) if value.len() > limit => Err(KvError::ValueTooLarge {
                size: Some(value.len()),
                limit: Some(limit),
            }),
            _ => Ok(()),
        }
    }

    /// An empty store: no buckets, no watchers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    // ----- buckets -----

    /// Creates the bucket, or checks the existing one against `spec` (see
    /// [`KvStore::provision`](super::KvStore::provision)).
    ///
    /// A reconciled `max_age` applies to the values already stored (as in NATS); `history` and
    /// `replicas` are recorded only. A `storage` difference is never reconciled.
    ///
    /// # Errors
    ///
    /// [`KvError::InvalidBucketSpec`] for a spec that fails [`BucketSpec::validate`];
    /// [`KvError::BucketMismatch`] naming the first differing field under
    /// [`OnMismatch::Fail`], or the storage under [`OnMismatch::Reconcile`].
    pub fn provision(
        &mut self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        spec.validate()?;
        let Some(bucket) = self.buckets.get_mut(&spec.name) else {
            self.buckets.insert(
                spec.name.clone(),
                Bucket {
                    spec: spec.clone(),
                    last_revision: Revision::ZERO,
                    records: BTreeMap::new(),
                },
            );
            return Ok(Provisioned::Created);
        };
        let changes = bucket.spec.mismatches(spec);
        let refused = match on_mismatch {
            OnMismatch::Fail => changes.first(),
            OnMismatch::Reconcile => changes.iter().find(|(field, _, _)| field == "storage"),
        };
        if let Some((field, existing, wanted)) = refused {
            return Err(KvError::BucketMismatch {
                bucket: spec.name.clone(),
                field: field.clone(),
                existing: existing.clone(),
                wanted: wanted.clone(),
            });
        }
        if changes.is_empty() {
            return Ok(Provisioned::Existing);
        }
        bucket.spec = spec.clone();
        Ok(Provisioned::Reconciled { changes })
    }

    /// The spec of a provisioned bucket.
    #[must_use]
    pub fn bucket_spec(&self, bucket: &str) -> Option<&BucketSpec> {
        self.buckets.get(bucket).map(|b| &b.spec)
    }

    /// The latest revision a bucket has produced ([`Revision::ZERO`] before its first write).
    ///
    /// # Errors
    ///
    /// [`KvError::BucketNotFound`].
    pub fn last_revision(&self, bucket: &str) -> Result<Revision, KvError> {
        Ok(self.bucket(bucket)?.last_revision)
    }

    // ----- reads -----

    /// The live value of `key` at `now`, or `None` (never written, deleted, purged or expired).
    ///
    /// # Errors
    ///
    /// [`KvError::BucketNotFound`], [`KvError::InvalidKey`].
    pub fn entry(&self, bucket: &str, key: &str, now: Instant) -> Result<Option<KvEntry>, KvError> {
        let now = self.advance(now);
        let b = self.bucket(bucket)?;
        check_key(key)?;
        Ok(b.record(key, now).and_then(|r| {
            r.value().map(|value| KvEntry {
                key: key.to_owned(),
                value: value.to_vec(),
                revision: r.revision,
            })
        }))
    }

    /// Keys with a live value at `now` that start with `prefix`, sorted.
    ///
    /// # Errors
    ///
    /// [`KvError::BucketNotFound`].
    pub fn keys(&self, bucket: &str, prefix: &str, now: Instant) -> Result<Vec<String>, KvError> {
        let now = self.advance(now);
        let b = self.bucket(bucket)?;
        Ok(b.records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, r)| r.value().is_some() && !b.is_expired(r, now))
            .map(|(key, _)| key.clone())
            .collect())
    }

    // ----- writes -----

    /// Writes `value` if `key` has no live value; returns the new revision.
    ///
    /// # Errors
    ///
    /// [`KvError::AlreadyExists`], [`KvError::BucketNotFound`], [`KvError::InvalidKey`],
    /// [`KvError::ValueTooLarge`].
    pub fn create(
        &mut self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        now: Instant,
    ) -> Result<Revision, KvError> {
        let now = self.advance(now);
        let b = self.bucket(bucket)?;
        check_key(key)?;
        self.check_size(&value)?;
        if b.live_revision_of(key, now).is_some() {
            return Err(KvError::AlreadyExists);
        }
        self.write(bucket, key, KvOperation::Put(value), now)
    }

    /// Writes `value` if the last revision of `key` is `expected`; returns the new revision.
    /// `expected` = [`Revision::ZERO`] matches a key with no record at all (never written or
    /// expired), not a tombstone.
    ///
    /// # Errors
    ///
    /// [`KvError::RevisionMismatch`] (carrying the live value's revision, `None` if the key has
    /// none), [`KvError::BucketNotFound`], [`KvError::InvalidKey`].
    pub fn update(
        &mut self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        now: Instant,
    ) -> Result<Revision, KvError> {
        let now = self.advance(now);
        self.check_size(&value)?;
        self.check_expected(bucket, key, expected, now)?;
        self.write(bucket, key, KvOperation::Put(value), now)
    }

    /// Writes `value` unconditionally; returns the new revision.
    ///
    /// # Errors
    ///
    /// [`KvError::BucketNotFound`], [`KvError::InvalidKey`].
    pub fn put(
        &mut self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        now: Instant,
    ) -> Result<Revision, KvError> {
        let now = self.advance(now);
        self.bucket(bucket)?;
        check_key(key)?;
        self.check_size(&value)?;
        self.write(bucket, key, KvOperation::Put(value), now)
    }

    /// Writes a delete tombstone for `key`; with `expected`, only if the last revision of `key` is
    /// that one. Returns the tombstone's revision. Without `expected` it succeeds whatever the key
    /// holds (a key with no live value gets a tombstone too, as in NATS).
    ///
    /// # Errors
    ///
    /// [`KvError::RevisionMismatch`], [`KvError::BucketNotFound`], [`KvError::InvalidKey`].
    pub fn delete(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
        now: Instant,
    ) -> Result<Revision, KvError> {
        self.tombstone(bucket, key, expected, KvOperation::Delete, now)
    }

    /// Like [`StoreModel::delete`], with a purge tombstone (watchers see
    /// [`KvOperation::Purge`]). Only the latest write is ever kept, so there is no older history
    /// to remove.
    ///
    /// # Errors
    ///
    /// As [`StoreModel::delete`].
    pub fn purge(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
        now: Instant,
    ) -> Result<Revision, KvError> {
        self.tombstone(bucket, key, expected, KvOperation::Purge, now)
    }

    /// Drops the value of `key` silently, as its bucket's max age running out would on a server
    /// without delete markers: no tombstone, no revision, no watch event. For tests that expire
    /// one key without waiting for its age (a missing bucket or key is a no-op).
    pub fn forget(&mut self, bucket: &str, key: &str) {
        if let Some(b) = self.buckets.get_mut(bucket) {
            b.records.remove(key);
        }
    }

    // ----- time -----

    /// Drops every record that has expired at `now` (reads and writes already ignore them; this
    /// only frees memory). Emits no watch event.
    pub fn expire(&mut self, now: Instant) {
        let now = self.advance(now);
        for bucket in self.buckets.values_mut() {
            bucket.expire(now);
        }
    }

    /// When the next stored record expires, if any does: a simulator's timer.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.buckets.values().filter_map(Bucket::next_expiry).min()
    }

    // ----- watches -----

    /// Registers a watcher of the keys of `bucket` matched by `keys`, and queues its snapshot:
    /// the live value of every matching key at `now` in revision order, then
    /// [`WatchEvent::SnapshotComplete`] (also when nothing matched). The watcher is woken.
    ///
    /// # Errors
    ///
    /// [`KvError::BucketNotFound`]; [`KvError::InvalidKey`] for a [`WatchKeys::Key`] outside the
    /// key alphabet (a prefix is not checked: an impossible prefix matches nothing).
    pub fn watch(
        &mut self,
        bucket: &str,
        keys: WatchKeys,
        now: Instant,
    ) -> Result<WatcherId, KvError> {
        let now = self.advance(now);
        let b = self.bucket(bucket)?;
        if let WatchKeys::Key(key) = &keys {
            check_key(key)?;
        }
        let queue = snapshot(b, &keys, now);
        let id = WatcherId(self.next_watcher);
        self.next_watcher += 1;
        self.watchers.insert(
            id,
            Watcher {
                bucket: bucket.to_owned(),
                keys,
                queue,
            },
        );
        self.woken.insert(id);
        Ok(id)
    }

    /// The next event of a watcher, or `None` when it has nothing queued (or is not registered).
    #[must_use]
    pub fn poll_watch(&mut self, id: WatcherId) -> Option<WatchEvent> {
        self.watchers.get_mut(&id)?.queue.pop_front()
    }

    /// How many events a watcher has queued (0 if it is not registered).
    #[must_use]
    pub fn pending(&self, id: WatcherId) -> usize {
        self.watchers.get(&id).map_or(0, |w| w.queue.len())
    }

    /// A watcher that received events since it was last returned here (each once, lowest id
    /// first), or `None`.
    #[must_use]
    pub fn poll_woken(&mut self) -> Option<WatcherId> {
        self.woken.pop_first()
    }

    /// Unregisters a watcher and drops its queue. Returns whether it was registered.
    pub fn unwatch(&mut self, id: WatcherId) -> bool {
        self.woken.remove(&id);
        self.watchers.remove(&id).is_some()
    }

    /// Makes a watcher lose its place, as a store does when it cannot resume a watch: its queue
    /// is replaced by [`WatchEvent::Resync`], a fresh snapshot at `now` and
    /// [`WatchEvent::SnapshotComplete`]. For simulating that fault. Returns whether the watcher
    /// was registered.
    pub fn resync_watch(&mut self, id: WatcherId, now: Instant) -> bool {
        let now = self.advance(now);
        let Some(watcher) = self.watchers.get(&id) else {
            return false;
        };
        let mut queue = VecDeque::from([WatchEvent::Resync]);
        if let Some(b) = self.buckets.get(&watcher.bucket) {
            queue.extend(snapshot(b, &watcher.keys, now));
        }
        if let Some(watcher) = self.watchers.get_mut(&id) {
            watcher.queue = queue;
        }
        self.woken.insert(id);
        true
    }

    // ----- internals -----

    fn bucket(&self, bucket: &str) -> Result<&Bucket, KvError> {
        self.buckets
            .get(bucket)
            .ok_or_else(|| KvError::BucketNotFound {
                bucket: bucket.to_owned(),
            })
    }

    /// Moves the clock to `now` (never back) and returns the effective time: `now`, or the
    /// latest time seen if that is later.
    fn advance(&self, now: Instant) -> Instant {
        let now = self.clock.get().map_or(now, |clock| clock.max(now));
        self.clock.set(Some(now));
        now
    }

    fn check_expected(
        &self,
        bucket: &str,
        key: &str,
        expected: Revision,
        now: Instant,
    ) -> Result<(), KvError> {
        let b = self.bucket(bucket)?;
        check_key(key)?;
        if b.last_revision_of(key, now) == expected {
            Ok(())
        } else {
            Err(KvError::RevisionMismatch {
                current: b.live_revision_of(key, now),
            })
        }
    }

    fn tombstone(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
        op: KvOperation,
        now: Instant,
    ) -> Result<Revision, KvError> {
        let now = self.advance(now);
        match expected {
            Some(expected) => self.check_expected(bucket, key, expected, now)?,
            None => {
                self.bucket(bucket)?;
                check_key(key)?;
            }
        }
        self.write(bucket, key, op, now)
    }

    /// Applies a write that was checked: takes the bucket's next revision, replaces the key's
    /// record, and queues the change for every matching watcher.
    fn write(
        &mut self,
        bucket: &str,
        key: &str,
        op: KvOperation,
        now: Instant,
    ) -> Result<Revision, KvError> {
        let b = self
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| KvError::BucketNotFound {
                bucket: bucket.to_owned(),
            })?;
        b.expire(now);
        let revision = b.last_revision.next();
        b.last_revision = revision;
        b.records.insert(
            key.to_owned(),
            Record {
                revision,
                op: op.clone(),
                written_at: now,
            },
        );
        for (id, watcher) in &mut self.watchers {
            if watcher.bucket == bucket && watcher.keys.matches(key) {
                watcher.queue.push_back(WatchEvent::Change(KvEvent {
                    key: key.to_owned(),
                    revision,
                    op: op.clone(),
                }));
                self.woken.insert(*id);
            }
        }
        Ok(revision)
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(KvError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

/// The live values of the keys matched by `keys` at `now` in revision order, then the marker.
fn snapshot(bucket: &Bucket, keys: &WatchKeys, now: Instant) -> VecDeque<WatchEvent> {
    let mut current: Vec<(&String, &Record)> = bucket
        .records
        .iter()
        .filter(|(key, r)| keys.matches(key) && r.value().is_some() && !bucket.is_expired(r, now))
        .collect();
    current.sort_by_key(|(_, r)| r.revision);
    current
        .into_iter()
        .map(|(key, r)| {
            WatchEvent::Change(KvEvent {
                key: key.clone(),
                revision: r.revision,
                op: r.op.clone(),
            })
        })
        .chain(std::iter::once(WatchEvent::SnapshotComplete))
        .collect()
}

#[cfg(test)]
mod tests;
