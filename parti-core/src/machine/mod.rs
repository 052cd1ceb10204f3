//! The vocabulary shared by parti's sans-IO machines (`Member` and `Planner`).
//!
//! A machine never performs I/O. It asks for store operations and watches with [`IoAction`]s and
//! learns their results from [`IoEvent`]s that the driver (the tokio runtime, or the
//! deterministic simulator) feeds back, each tagged with the [`OpId`] / [`WatchId`] the machine
//! chose. Time enters only as the `now` argument of every call; deadlines live in a
//! [`TimerTable`].
//!
//! ```text
//!            handle_event(now, Event) / handle_timeout(now) / commands
//!   driver ─────────────────────────────────────────────────────────────▶ machine
//!          ◀───────────────────────────────────────────────────────────── (pure)
//!            poll_action() · poll_timeout() · poll_notification()
//! ```
//!
//! Id spaces: operation and watch ids issued by the planner have [`OpId::PLANNER_BIT`] set, so a
//! member that embeds a planner forwards results to it without bookkeeping.

pub mod backoff;
pub mod timer;

use crate::store::{KvEntry, KvError, WatchEvent, WatchKeys};
use crate::types::Revision;

pub use backoff::Backoff;
pub use timer::TimerTable;
pub(crate) use timer::later;

/// Identifies one store operation requested by a machine; its result comes back with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

impl OpId {
    /// Set in every id the planner issues.
    pub const PLANNER_BIT: u64 = 1 << 63;

    /// Whether the planner issued this id.
    #[must_use]
    pub fn is_planner(self) -> bool {
        self.0 & Self::PLANNER_BIT != 0
    }
}

/// Identifies one watch requested by a machine; its deliveries come back with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

impl WatchId {
    /// Set in every id the planner issues.
    pub const PLANNER_BIT: u64 = 1 << 63;

    /// Whether the planner issued this id.
    #[must_use]
    pub fn is_planner(self) -> bool {
        self.0 & Self::PLANNER_BIT != 0
    }
}

/// Hands out increasing ids in one id space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdGen {
    next: u64,
    bit: u64,
}

impl IdGen {
    /// Ids for a member (planner bit clear).
    #[must_use]
    pub fn member() -> Self {
        IdGen { next: 1, bit: 0 }
    }

    /// Ids for a planner (planner bit set).
    #[must_use]
    pub fn planner() -> Self {
        IdGen {
            next: 1,
            bit: OpId::PLANNER_BIT,
        }
    }

    /// The next operation id.
    pub fn op(&mut self) -> OpId {
        OpId(self.take())
    }

    /// The next watch id.
    pub fn watch(&mut self) -> WatchId {
        WatchId(self.take())
    }

    fn take(&mut self) -> u64 {
        let id = self.next | self.bit;
        self.next += 1;
        id
    }
}

/// A store operation, as data (mirrors [`crate::store::KvStore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvRequest {
    /// `entry(bucket, key)`.
    Entry {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// `create(bucket, key, value)`.
    Create {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// `update(bucket, key, value, expected)`.
    Update {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Expected latest revision.
        expected: Revision,
    },
    /// `put(bucket, key, value)`.
    Put {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// `delete(bucket, key, expected)`.
    Delete {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Expected latest revision, if any.
        expected: Option<Revision>,
    },
    /// `keys(bucket, prefix)`.
    Keys {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
}

impl KvRequest {
    /// A short name for metrics and logs (`"create"`, `"update"`, …).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            KvRequest::Entry { .. } => "entry",
            KvRequest::Create { .. } => "create",
            KvRequest::Update { .. } => "update",
            KvRequest::Put { .. } => "put",
            KvRequest::Delete { .. } => "delete",
            KvRequest::Keys { .. } => "keys",
        }
    }

    /// The bucket it acts on.
    #[must_use]
    pub fn bucket(&self) -> &str {
        match self {
            KvRequest::Entry { bucket, .. }
            | KvRequest::Create { bucket, .. }
            | KvRequest::Update { bucket, .. }
            | KvRequest::Put { bucket, .. }
            | KvRequest::Delete { bucket, .. }
            | KvRequest::Keys { bucket, .. } => bucket,
        }
    }

    /// The key it acts on; for `Keys`, the prefix.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            KvRequest::Entry { key, .. }
            | KvRequest::Create { key, .. }
            | KvRequest::Update { key, .. }
            | KvRequest::Put { key, .. }
            | KvRequest::Delete { key, .. } => key,
            KvRequest::Keys { prefix, .. } => prefix,
        }
    }

    /// Whether it writes (`create`, `update`, `put`, `delete`): a write that times out has an
    /// unknown outcome.
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, KvRequest::Entry { .. } | KvRequest::Keys { .. })
    }
}

/// The successful result of a [`KvRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvReply {
    /// Result of `Entry`.
    Entry(Option<KvEntry>),
    /// Result of `Create`, `Update`, `Put`: the new revision.
    Written(Revision),
    /// Result of `Delete`.
    Deleted,
    /// Result of `Keys`.
    Keys(Vec<String>),
}

/// What came back for a [`KvRequest`].
pub type KvResult = Result<KvReply, KvError>;

/// I/O a machine asks the driver to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoAction {
    /// Run a store operation and report [`IoEvent::KvDone`] with the same `op`.
    Kv {
        /// Id to report the result with.
        op: OpId,
        /// The operation.
        request: KvRequest,
    },
    /// Open a watch and report every item as [`IoEvent::Watch`] with the same `watch`.
    Watch {
        /// Id to report deliveries with.
        watch: WatchId,
        /// Bucket.
        bucket: String,
        /// Keys followed.
        keys: WatchKeys,
    },
    /// Close a watch; no further deliveries for it may be reported.
    Unwatch {
        /// The watch.
        watch: WatchId,
    },
}

/// Results of [`IoAction`]s, fed back by the driver. The driver stamps nothing: the `now` passed
/// with the event is the receive time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoEvent {
    /// A store operation finished.
    KvDone {
        /// The id it was requested with.
        op: OpId,
        /// Its result.
        result: KvResult,
    },
    /// A watch delivered an item, or an error the store reported without ending the stream
    /// (`Err`: counted; the stream goes on).
    Watch {
        /// The id it was opened with.
        watch: WatchId,
        /// The item.
        event: Result<WatchEvent, KvError>,
    },
    /// The watch is over: its stream ended (`error: None`), or it could not be opened or failed
    /// for good (`error: Some`). After this the driver reports nothing more for `watch` and
    /// forgets it (no [`IoAction::Unwatch`] follows). The machine decides what happens next:
    /// it opens a new watch (a new id) after the `retry` backoff and treats its snapshot like a
    /// [`WatchEvent::Resync`].
    WatchEnded {
        /// The id it was opened with.
        watch: WatchId,
        /// Why, when it was not a plain end of the stream.
        error: Option<KvError>,
    },
}
