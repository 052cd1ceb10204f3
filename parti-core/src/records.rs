//! The records of the coordination protocol, and their codec.
//!
//! Every value parti writes to the store is one of these records, encoded with
//! [postcard](https://docs.rs/postcard) behind a one-byte format version ([`FORMAT_VERSION`]).
//! [`Record::decode`] never panics: empty, truncated, unknown-version or malformed input gives a
//! [`DecodeError`], and the caller treats the value as absent (PROTOCOL.md §2).
//!
//! | bucket / key | record | written by |
//! |---|---|---|
//! | `{ns}-ids/<id>` | [`IdClaim`] | the member holding the id |
//! | `{ns}-heartbeats/<id>` | [`Heartbeat`] | that member |
//! | `{ns}-leader/leader` | [`Leadership`] | the leader |
//! | `{ns}-assignments/term` | [`TermCounter`] | each new leader, by compare-and-set |
//! | `{ns}-assignments/w.<id>` | [`AssignmentRecord`] | the leader, by compare-and-set |
//! | `{ns}-assignments/meta` | [`ClusterMeta`] | the leader, by compare-and-set |
//!
//! [`Names`] builds the bucket names and keys from a namespace.
//!
//! ```
//! use parti_core::records::{Record, TermCounter};
//! use parti_core::Term;
//! let bytes = TermCounter { term: Term(3) }.encode();
//! assert_eq!(bytes[0], parti_core::records::FORMAT_VERSION);
//! assert_eq!(TermCounter::decode(&bytes)?, TermCounter { term: Term(3) });
//! assert!(TermCounter::decode(&[]).is_err());
//! # Ok::<(), parti_core::records::DecodeError>(())
//! ```

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::types::{Fence, InstanceId, Partition, Term, Version, WorkerId, WorkerState};

/// The format version byte in front of every record.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// There are no bytes at all.
    #[error("empty value")]
    Empty,
    /// The format version byte is not one this build reads.
    #[error("unknown record format version {found} (this build reads version {supported})")]
    UnknownVersion {
        /// The byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The bytes end in the middle of the record.
    #[error("record is truncated")]
    Truncated,
    /// The bytes are not a valid record.
    #[error("malformed record: {reason}")]
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
}

/// A record of the protocol: encodes to `[FORMAT_VERSION, postcard bytes…]`.
pub trait Record: Serialize + DeserializeOwned + Sized {
    /// The bytes to store.
    fn encode(&self) -> Vec<u8> {
        let out = vec![FORMAT_VERSION];
        // Serialising these plain data types into a Vec cannot fail: postcard only errors on
        // sequences of unknown length and on a full fixed buffer, and neither occurs here.
        match postcard::to_extend(self, out) {
            Ok(v) => v,
            Err(e) => unreachable!("postcard cannot fail to serialise a record into a Vec: {e}"),
        }
    }

    /// The record in `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        match postcard::take_from_bytes::<Self>(body) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(DecodeError::Malformed {
                reason: format!("{} unexpected trailing bytes", rest.len()),
            }),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
            Err(e) => Err(DecodeError::Malformed {
                reason: e.to_string(),
            }),
        }
    }
}

/// `{ns}-ids/<id>`: who holds a worker id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaim {
    /// The process holding the id.
    pub instance: InstanceId,
    /// Wall-clock time of the claim, Unix milliseconds (informational; never used for liveness).
    pub claimed_at_ms: u64,
    /// Set by `shutdown_for_restart`: until this wall-clock time (Unix milliseconds) the id is
    /// reserved for the same worker coming back, which may take it over by compare-and-set.
    pub restarting_until_ms: Option<u64>,
}

/// What a member intends, carried by its heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Intent {
    /// Working normally.
    Active,
    /// Leaving gracefully: hand its partitions over now.
    Leaving,
    /// Restarting: keep its partitions reserved for the rejoin window.
    Restarting,
    /// Revoked everything locally after losing its identity or its lease; grant it again.
    Fenced,
}

/// `{ns}-heartbeats/<id>`: a member's liveness beacon and acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The process.
    pub instance: InstanceId,
    /// How many times this process has fenced itself. Records are addressed to
    /// `(instance, round)`: a record planned before the leader saw this round gives nothing.
    pub round: u32,
    /// Increases with every heartbeat of this instance; readers order the heartbeats of one
    /// instance by it, not by arrival (two puts may land out of order, `store` contract).
    pub seq: u64,
    /// The member's lifecycle state.
    pub state: WorkerState,
    /// The highest assignment version the member has applied (its acknowledgement).
    pub applied: Version,
    /// What the member intends.
    pub intent: Intent,
    /// Relative capacity (≥ 1) for weighted strategies.
    pub capacity: u32,
}

/// `{ns}-leader/leader`: the current leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The leader's worker id.
    pub worker: WorkerId,
    /// The leader's process.
    pub instance: InstanceId,
    /// The term it leads.
    pub term: Term,
}

/// `{ns}-assignments/term`: the highest term any leader has taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermCounter {
    /// The term.
    pub term: Term,
}

/// Which step of a handoff an assignment record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// The record only takes partitions away; the member acknowledges it.
    Revoke,
    /// The record gives partitions (and may also take some that were not handed elsewhere).
    Grant,
}

/// A partition as its owner receives it: with the fence of the grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedPartition {
    /// The partition (keys and weight).
    pub partition: Partition,
    /// The fencing token of the grant that gave it to this owner.
    pub fence: Fence,
}

/// `{ns}-assignments/w.<id>`: the full set a member must own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// Term of the leader that wrote it.
    pub term: Term,
    /// Cluster-wide version of this write.
    pub version: Version,
    /// Revoke or grant.
    pub phase: Phase,
    /// The process this record is addressed to: the `instance` of the member's heartbeat the
    /// leader planned for. Another process holding the same worker id (a restart, a new pod)
    /// treats the record as absent — it owns nothing until the leader has seen its heartbeat
    /// and addressed a record to it — so a record meant for a previous incarnation is never
    /// applied by the next one, however late a watch delivers it.
    pub instance: InstanceId,
    /// The fence round of that process (its heartbeat's `round`): after fencing itself a
    /// member takes a record planned for an earlier round — a pipelined write that lands late,
    /// a backlog delivered on reconnect — as empty, and leaves the fence only on a record the
    /// leader addressed to its new round, i.e. planned after it saw the fence.
    pub round: u32,
    /// Every partition the member owns after applying this record (not a delta).
    pub partitions: Vec<OwnedPartition>,
}

/// Whether the cluster has settled after its first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// The first assignment is not final yet (cold-start window running).
    ColdStart,
    /// The cluster has published a final plan; a leader change is not a cold start.
    Settled,
}

/// `{ns}-assignments/meta`: what a new leader needs to take over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Term of the leader that wrote it.
    pub term: Term,
    /// The highest version published.
    pub version: Version,
    /// Cold start or settled.
    pub lifecycle: Lifecycle,
    /// The members the published plan was made for, sorted.
    pub members: Vec<WorkerId>,
    /// Digest of the partition catalog the plan was made for (see [`catalog_digest`]).
    pub catalog_digest: u64,
    /// Members whose partitions were reserved for a restart (`intent = Restarting`) when this
    /// was written, sorted. A new leader keeps reserving them for `rejoin_window` from its
    /// takeover, so a leader change during a restart does not turn it into a crash (the
    /// restarting member's heartbeat may have expired by then).
    pub restarting: Vec<WorkerId>,
}

impl Record for IdClaim {}
impl Record for Heartbeat {}
impl Record for Leadership {}
impl Record for TermCounter {}
impl Record for AssignmentRecord {}
impl Record for ClusterMeta {}

/// A stable digest of a partition catalog, independent of its order: FNV-1a 64 over the sorted
/// `(keys, weight)` list in postcard form.
#[must_use]
pub fn catalog_digest(partitions: &[Partition]) -> u64 {
    let mut sorted: Vec<&Partition> = partitions.iter().collect();
    sorted.sort_by(|a, b| a.id().cmp(b.id()).then(a.weight().cmp(&b.weight())));
    let mut bytes = Vec::new();
    for p in sorted {
        bytes = match postcard::to_extend(p, bytes) {
            Ok(b) => b,
            Err(e) => unreachable!("postcard cannot fail to serialise a partition into a Vec: {e}"),
        };
    }
    crate::hash::fnv1a64(&bytes)
}

/// Bucket names and keys of one cluster (PROTOCOL.md §1).
///
/// ```
/// use parti_core::records::Names;
/// use parti_core::WorkerId;
/// let n = Names::new("orders");
/// assert_eq!(n.ids_bucket(), "orders-ids");
/// assert_eq!(Names::assignment_key(&WorkerId::new("worker-3")?), "w.worker-3");
/// # Ok::<(), parti_core::InvalidWorkerId>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Names {
    namespace: String,
}

impl Names {
    /// The leader key in the leader bucket.
    pub const LEADER_KEY: &'static str = "leader";
    /// The term counter key in the assignments bucket.
    pub const TERM_KEY: &'static str = "term";
    /// The cluster meta key in the assignments bucket.
    pub const META_KEY: &'static str = "meta";
    /// Prefix of the per-worker assignment keys.
    pub const ASSIGNMENT_PREFIX: &'static str = "w.";

    /// Names for `namespace` (validated by the config).
    #[must_use]
    pub fn new(namespace: &str) -> Self {
        Names {
            namespace: namespace.to_owned(),
        }
    }

    /// The namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}-ids`.
    #[must_use]
    pub fn ids_bucket(&self) -> String {
        format!("{}-ids", self.namespace)
    }

    /// `{ns}-heartbeats`.
    #[must_use]
    pub fn heartbeats_bucket(&self) -> String {
        format!("{}-heartbeats", self.namespace)
    }

    /// `{ns}-leader`.
    #[must_use]
    pub fn leader_bucket(&self) -> String {
        format!("{}-leader", self.namespace)
    }

    /// `{ns}-assignments`.
    #[must_use]
    pub fn assignments_bucket(&self) -> String {
        format!("{}-assignments", self.namespace)
    }

    /// `w.<id>`.
    #[must_use]
    pub fn assignment_key(worker: &WorkerId) -> String {
        format!("{}{}", Self::ASSIGNMENT_PREFIX, worker)
    }

    /// The worker of an assignment key (`None` for `meta`, `term` or anything else).
    #[must_use]
    pub fn worker_of_assignment_key(key: &str) -> Option<WorkerId> {
        WorkerId::new(key.strip_prefix(Self::ASSIGNMENT_PREFIX)?).ok()
    }
}
