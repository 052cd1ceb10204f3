//! The key-value store port.
//!
//! parti coordinates only through a key-value store with per-bucket revisions, compare-and-set
//! and watches: NATS JetStream KV in production (`parti-nats`), an in-process store when
//! embedded (`parti-runtime`). [`KvStore`] is that port. It is object safe, so a driver holds an
//! `Arc<dyn KvStore>`.
//!
//! # Contract
//!
//! Every implementation is held to the same contract by one test suite (`parti-testkit`'s
//! `contract` module). In short:
//!
//! - **Revisions** strictly increase within a bucket, across all keys of the bucket: every
//!   successful write (put, create, update, delete) returns or creates a revision greater than
//!   every revision the bucket has produced before.
//! - **Compare-and-set.** `create` succeeds only if the key has no live value (never written,
//!   deleted, purged or expired). `update` succeeds only if the key's latest revision equals the
//!   expected one; otherwise it fails with [`KvError::RevisionMismatch`] carrying the current
//!   revision when the store knows it.
//! - **Watch order.** A watch first delivers the current value of every matching key (in revision
//!   order), then exactly one [`WatchEvent::SnapshotComplete`] (also when nothing matched), then
//!   every later change in revision order, deletes included, each at most once.
//! - **Write order of one key is not promised.** A store applies writes in the order it
//!   receives them, and one connection delivers them in send order, so two pipelined writes of a
//!   key from one process usually land in send order (two heartbeat puts may be in flight at
//!   once). But a store may apply them in another order: a write whose answer timed out can still
//!   land after writes sent later (async-nats replays queued writes after a reconnect), and
//!   nothing is ordered across connections. Compare-and-set writes (`create`, `update`, `delete`
//!   with a revision) cannot be reordered harmfully — a late one names a revision that is gone
//!   and fails. An unconditional `put` can: parti puts only heartbeats, which carry the sending
//!   process's sequence number, and readers order them by `(instance, seq)`, never by arrival or
//!   revision (a heartbeat older than one already seen from the same process changes nothing).
//! - **Timeouts are unknown outcomes.** [`KvError::Timeout`] means the write may or may not have
//!   been applied, possibly later (async-nats replays queued writes after reconnecting). Callers
//!   re-read before retrying; a store never retries a write on its own.
//! - **Expiry** (bucket max age) removes a key silently: `entry` and `keys` stop seeing it, but no
//!   watch event is promised.
//!
//! # The reference model
//!
//! [`model::StoreModel`] is these semantics written down as a plain, synchronous data structure
//! with time passed in: the in-process `MemoryStore` wraps it, the deterministic simulator drives
//! it step by step, and the contract suite holds every other store to the same behaviour.

pub mod model;

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use crate::types::Revision;

/// How a bucket's data is stored.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StorageKind {
    /// On disk: survives a server restart (the default).
    #[default]
    File,
    /// In memory: lost when the server restarts.
    Memory,
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::File => "file",
            StorageKind::Memory => "memory",
        })
    }
}

/// What a bucket must look like.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketSpec {
    /// Bucket name, e.g. `parti-ids`.
    pub name: String,
    /// Values kept per key (≥ 1). parti uses 1 everywhere.
    pub history: u8,
    /// How long a value lives after its last write; `None` = forever.
    pub max_age: Option<Duration>,
    /// Copies kept by a clustered store (1 on a single server, 3 on a NATS cluster).
    pub replicas: usize,
    /// Disk or memory.
    pub storage: StorageKind,
}

/// The most values per key a bucket may keep (NATS JetStream KV's limit).
pub const MAX_HISTORY: u8 = 64;

/// The most replicas a bucket may have (NATS JetStream's limit).
pub const MAX_REPLICAS: usize = 5;

impl BucketSpec {
    /// Checks what every store requires of a spec: a name of `[A-Za-z0-9_-]+`, `history` in
    /// `1..=`[`MAX_HISTORY`], `replicas` in `1..=`[`MAX_REPLICAS`], and a non-zero `max_age`
    /// (`None` means forever; NATS would read zero as forever too, so zero is refused as
    /// ambiguous).
    ///
    /// # Errors
    ///
    /// [`KvError::InvalidBucketSpec`] naming the first offending field.
    pub fn validate(&self) -> Result<(), KvError> {
        let invalid = |field: &str, value: String, reason: &str| KvError::InvalidBucketSpec {
            bucket: self.name.clone(),
            field: field.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if !is_valid_bucket_name(&self.name) {
            return Err(invalid(
                "name",
                format!("{:?}", self.name),
                "a bucket name is one or more of [A-Za-z0-9_-]",
            ));
        }
        if self.history == 0 || self.history > MAX_HISTORY {
            return Err(invalid(
                "history",
                self.history.to_string(),
                "history must be between 1 and 64",
            ));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(invalid(
                "replicas",
                self.replicas.to_string(),
                "replicas must be between 1 and 5",
            ));
        }
        if self.max_age == Some(Duration::ZERO) {
            return Err(invalid(
                "max_age",
                "0s".to_owned(),
                "use None for values that never expire",
            ));
        }
        Ok(())
    }

    /// How `self` (a bucket as it exists) differs from `wanted`, as `(field, existing, wanted)`
    /// in a fixed order: `max_age`, `history`, `replicas`, `storage`. Empty when they agree (the
    /// name is not compared). Stores use it so that [`KvError::BucketMismatch`] and
    /// [`Provisioned::Reconciled`] read the same whatever the backend.
    #[must_use]
    pub fn mismatches(&self, wanted: &BucketSpec) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        if self.max_age != wanted.max_age {
            out.push((
                "max_age".to_owned(),
                format_max_age(self.max_age),
                format_max_age(wanted.max_age),
            ));
        }
        if self.history != wanted.history {
            out.push((
                "history".to_owned(),
                self.history.to_string(),
                wanted.history.to_string(),
            ));
        }
        if self.replicas != wanted.replicas {
            out.push((
                "replicas".to_owned(),
                self.replicas.to_string(),
                wanted.replicas.to_string(),
            ));
        }
        if self.storage != wanted.storage {
            out.push((
                "storage".to_owned(),
                self.storage.to_string(),
                wanted.storage.to_string(),
            ));
        }
        out
    }
}

/// A max age as [`BucketSpec::mismatches`] prints it: `none` or the duration (`2s`, `1.5s`,
/// `250ms`).
#[must_use]
pub fn format_max_age(max_age: Option<Duration>) -> String {
    match max_age {
        None => "none".to_owned(),
        Some(d) => format!("{d:?}"),
    }
}

/// Whether `name` is a valid bucket name: one or more of `[A-Za-z0-9_-]`.
#[must_use]
pub fn is_valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `key` is a valid key: one or more of `[-/_=.A-Za-z0-9]`, not starting or ending with
/// `.` (the NATS KV rule, which every store applies so that data moves between them).
#[must_use]
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// What to do when a bucket exists with a different configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnMismatch {
    /// Fail with [`KvError::BucketMismatch`] (the default: never silently accept).
    #[default]
    Fail,
    /// Update the bucket to the spec, and say so in the outcome. A different `storage` cannot be
    /// reconciled (NATS cannot change a stream's storage): it fails with
    /// [`KvError::BucketMismatch`] under either choice.
    Reconcile,
}

/// What [`KvStore::provision`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provisioned {
    /// The bucket did not exist and was created.
    Created,
    /// The bucket existed with the wanted configuration.
    Existing,
    /// The bucket existed with a different configuration and was updated (`OnMismatch::Reconcile`).
    Reconciled {
        /// What was different: `(field, existing, wanted)`.
        changes: Vec<(String, String, String)>,
    },
}

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that wrote it.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOperation {
    /// A value was written.
    Put(Vec<u8>),
    /// The key was deleted (a tombstone remains).
    Delete,
    /// The key and its history were purged.
    Purge,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEvent {
    /// The key.
    pub key: String,
    /// The revision of the change.
    pub revision: Revision,
    /// What happened.
    pub op: KvOperation,
}

/// An item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A current value (before the snapshot marker) or a live change (after it).
    Change(KvEvent),
    /// Every value that existed when the watch started has been delivered. Comes exactly once
    /// per snapshot, also when the snapshot is empty.
    SnapshotComplete,
    /// The watch lost its place (for example the store no longer had the history it needed after
    /// a disconnect) and starts again: forget every value this watch delivered; a fresh snapshot
    /// and a new [`WatchEvent::SnapshotComplete`] follow.
    Resync,
}

/// Which keys a watch follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchKeys {
    /// Exactly one key.
    Key(String),
    /// Every key starting with this prefix (the empty prefix is every key).
    Prefix(String),
    /// Exactly these keys, through **one** ordered stream (NATS: one consumer with several filter
    /// subjects, server 2.10+). This is how a member follows `term` and its own `w.<id>` so that
    /// a late write of an older term is always seen after the newer `term` (PROTOCOL.md §4).
    Keys(Vec<String>),
}

impl WatchKeys {
    /// Whether `key` is followed.
    #[must_use]
    pub fn matches(&self, key: &str) -> bool {
        match self {
            WatchKeys::Key(k) => k == key,
            WatchKeys::Prefix(p) => key.starts_with(p.as_str()),
            WatchKeys::Keys(ks) => ks.iter().any(|k| k == key),
        }
    }
}

/// A watch: a stream of [`WatchEvent`]s. An `Err` item reports a problem the store could not
/// hide (after it, the stream may continue or end; a store that re-establishes watches on its own
/// reports a gap as [`WatchEvent::Resync`] instead). A driver reports the end of a stream, or a
/// watch that could not be opened, to the machines as
/// [`IoEvent::WatchEnded`](crate::machine::IoEvent::WatchEnded); they open it again.
pub type KvWatch = Pin<Box<dyn Stream<Item = Result<WatchEvent, KvError>> + Send + 'static>>;

/// The connection between a process and its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Operations can reach the store.
    Connected,
    /// The store is unreachable; operations fail or time out.
    Disconnected,
}

/// A stream of connection state changes (the current state first).
pub type ConnectionWatch = Pin<Box<dyn Stream<Item = ConnectionState> + Send + 'static>>;

/// A store error that is not one of the typed cases: the backend's own error, shared so the error
/// stays `Clone`. Compared by message.
#[derive(Clone)]
pub struct BackendError(pub Arc<dyn StdError + Send + Sync + 'static>);

impl BackendError {
    /// Wraps any error.
    pub fn new(err: impl StdError + Send + Sync + 'static) -> Self {
        BackendError(Arc::new(err))
    }

    /// A backend error from a message.
    pub fn msg(message: impl Into<String>) -> Self {
        #[derive(Debug)]
        struct Msg(String);
        impl fmt::Display for Msg {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl StdError for Msg {}
        BackendError(Arc::new(Msg(message.into())))
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendError({})", self.0)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for BackendError {}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The key has no live value (for operations that need one).
    #[error("key not found")]
    NotFound,
    /// `create` found a live value.
    #[error("key already exists")]
    AlreadyExists,
    /// `update` / `delete` expected another revision.
    #[error("revision mismatch (current revision: {current:?})")]
    RevisionMismatch {
        /// The key's current revision, when the store reports it: `Some` for a key with a live
        /// value, `None` for a key with no record (never written, or expired) or when unknown.
        /// For a deleted key a store may report `None` (the reference model does) or the
        /// tombstone's revision (NATS reports the last sequence of the key's subject).
        current: Option<Revision>,
    },
    /// No answer within the operation timeout. **The outcome is unknown**: a write may have been
    /// applied, or may still be applied later.
    #[error("store operation timed out; its outcome is unknown")]
    Timeout,
    /// The store cannot be reached (disconnected, no responders).
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What the backend said.
        reason: String,
    },
    /// The bucket does not exist (it was never provisioned, or was deleted).
    #[error("bucket {bucket:?} does not exist")]
    BucketNotFound {
        /// The bucket.
        bucket: String,
    },
    /// A bucket exists with a different configuration and reconciling was not allowed.
    #[error(
        "bucket {bucket:?} exists with {field} = {existing}, but {wanted} is configured; \
         reconcile it or change the configuration"
    )]
    BucketMismatch {
        /// The bucket.
        bucket: String,
        /// The differing setting (`max_age`, `history`, `replicas`, `storage`).
        field: String,
        /// Its value on the store.
        existing: String,
        /// The value asked for.
        wanted: String,
    },
    /// A bucket spec that no store accepts (see [`BucketSpec::validate`]).
    #[error("bucket {bucket:?} cannot have {field} = {value}: {reason}")]
    InvalidBucketSpec {
        /// The bucket.
        bucket: String,
        /// The offending setting (`name`, `history`, `replicas`, `max_age`).
        field: String,
        /// Its value.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The key is not valid for the store (NATS keys are `[-/_=.a-zA-Z0-9]+`, no leading or
    /// trailing `.`).
    #[error("invalid key {key:?}")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// The value is larger than the store accepts (NATS: the server's `max_payload`, 1 MiB by
    /// default, headers included; or the stream's maximum message size). A certain refusal:
    /// nothing was written, and sending the same value again fails the same way.
    #[error("{}", too_large(*size, *limit))]
    ValueTooLarge {
        /// The value's size as the store counted it, when known.
        size: Option<usize>,
        /// The store's limit, when known.
        limit: Option<usize>,
    },
    /// Anything else the backend reported.
    #[error("store backend error: {0}")]
    Backend(BackendError),
}

fn too_large(size: Option<usize>, limit: Option<usize>) -> String {
    let size = size.map_or_else(|| "a value".to_owned(), |s| format!("a value of {s} bytes"));
    let limit = limit.map_or_else(
        || "the store's limit".to_owned(),
        |l| format!("the store's limit of {l} bytes"),
    );
    format!(
        "{size} is over {limit}: nothing was written; raise the limit (NATS: max_payload in the \
         server configuration) or make the value smaller"
    )
}

impl KvError {
    /// Whether the error says nothing about the data, only about reaching the store (a
    /// [`KvError::Timeout`] write has an unknown outcome). The member's degraded mode counts
    /// more than these: every error but `NotFound`, `AlreadyExists`, `RevisionMismatch` and
    /// `ValueTooLarge` (answers about the data, not about reaching the store).
    #[must_use]
    pub fn is_connectivity(&self) -> bool {
        matches!(self, KvError::Timeout | KvError::Unavailable { .. })
    }
}

/// A key-value store with per-bucket revisions, compare-and-set and watches.
///
/// See the [module documentation](self) for the contract every implementation follows. Every
/// operation is bounded by the store's own operation timeout and fails with
/// [`KvError::Timeout`] when it runs out; independent operations may be in flight together.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Creates the bucket, or checks that the existing one matches `spec`.
    ///
    /// To ensure correctness: an existing bucket whose max age, history, replicas or storage
    /// differs from `spec` is never silently accepted: it fails with [`KvError::BucketMismatch`]
    /// under [`OnMismatch::Fail`], and is updated (and reported as [`Provisioned::Reconciled`])
    /// under [`OnMismatch::Reconcile`].
    async fn provision(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError>;

    /// The live value of `key`, or `None` if it has none (never written, deleted, purged or
    /// expired).
    ///
    /// To ensure correctness: the returned revision is the one of the latest write of `key` the
    /// store knows; implementations over replicated stores read from the stream leader so that a
    /// value read here is never older than a write acknowledged before the read began.
    async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError>;

    /// Writes `value` only if `key` has no live value; returns the new revision.
    ///
    /// To ensure correctness: of several concurrent `create`s of one key, at most one succeeds;
    /// the others fail with [`KvError::AlreadyExists`]. A deleted, purged or expired key can be
    /// created again.
    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError>;

    /// Writes `value` only if the latest revision of `key` is `expected`; returns the new
    /// revision.
    ///
    /// To ensure correctness: fails with [`KvError::RevisionMismatch`] (carrying the current
    /// revision when known) if any write to `key` happened after `expected`, including a delete.
    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, KvError>;

    /// Writes `value` unconditionally; returns the new revision. parti uses it only for
    /// heartbeats.
    ///
    /// To ensure correctness: the returned revision is greater than every revision the bucket
    /// produced before, and watches of `key` deliver the value with exactly that revision. Two
    /// puts of one key need not be applied in the order they were sent (see the module's
    /// contract): a caller that cares about their order carries it in the value.
    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError>;

    /// Deletes `key` (leaves a tombstone that watches see as [`KvOperation::Delete`]); with
    /// `expected`, only if the latest revision of `key` is that one.
    ///
    /// To ensure correctness: with `expected = Some(r)` it fails with
    /// [`KvError::RevisionMismatch`] if `key` was written after `r`. Without `expected`,
    /// deleting a key that has no live value succeeds.
    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(), KvError>;

    /// Keys with a live value that start with `prefix`, sorted.
    ///
    /// To ensure correctness: deleted, purged and expired keys are never listed; an empty bucket
    /// gives an empty list, not an error.
    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, KvError>;

    /// Follows `keys`: current values, one [`WatchEvent::SnapshotComplete`], then live changes.
    ///
    /// To ensure correctness: changes arrive in revision order and each at most once; a watch
    /// that had to be re-established without being able to resume exactly where it stopped
    /// delivers [`WatchEvent::Resync`] and a fresh snapshot.
    async fn watch(&self, bucket: &str, keys: WatchKeys) -> Result<KvWatch, KvError>;

    /// Connection state changes, the current state first. A store with no connection (in
    /// process) reports `Connected` once.
    ///
    /// To ensure correctness: consecutive items differ (no repeated state), and a store that is
    /// disconnected reports it within its operation timeout of losing the connection.
    fn connection(&self) -> ConnectionWatch;
}
