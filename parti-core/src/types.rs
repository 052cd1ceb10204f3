//! Identifiers and values shared by every part of parti.
//!
//! Every type here is validated where it is built ("parse, don't validate"): a [`WorkerId`] or a
//! [`Partition`] that exists is well formed, whether it came from the user, a config file or the
//! network (deserialisation runs the same checks).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The weight a partition has when none is given.
pub const DEFAULT_WEIGHT: u64 = 100;

/// Longest worker id accepted, in bytes.
pub const WORKER_ID_MAX_LEN: usize = 64;

/// A stable worker identity such as `worker-7`: 1–64 characters of `[A-Za-z0-9_-]`.
///
/// The id is also a NATS KV key (`{ns}-ids/<id>`, `w.<id>`), which is why the character set is
/// narrow. Cloning is cheap (the text is shared).
///
/// ```
/// use parti_core::WorkerId;
/// let id = WorkerId::from_parts("worker", 7)?;
/// assert_eq!(id.as_str(), "worker-7");
/// assert_eq!(id.number("worker"), Some(7));
/// assert!(WorkerId::new("worker.7").is_err());
/// # Ok::<(), parti_core::InvalidWorkerId>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(Arc<str>);

/// Why a text is not a [`WorkerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidWorkerId {
    /// The id is empty.
    #[error("worker id is empty")]
    Empty,
    /// The id is longer than [`WORKER_ID_MAX_LEN`] bytes.
    #[error("worker id {id:?} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The rejected id.
        id: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9_-]`.
    #[error("worker id {id:?} contains {ch:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar {
        /// The rejected id.
        id: String,
        /// The first offending character.
        ch: char,
    },
}

impl WorkerId {
    /// Validates `id`.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidWorkerId> {
        let id = id.as_ref();
        check_name(id).map(|()| WorkerId(Arc::from(id)))
    }

    /// Builds `"{prefix}-{number}"`, the form the identity pool uses.
    pub fn from_parts(prefix: &str, number: u32) -> Result<Self, InvalidWorkerId> {
        Self::new(format!("{prefix}-{number}"))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool number of this id if it has the form `"{prefix}-{number}"`.
    #[must_use]
    pub fn number(&self, prefix: &str) -> Option<u32> {
        let rest = self.0.strip_prefix(prefix)?.strip_prefix('-')?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Reject "worker-07": the pool never builds it, so it is not the same id as "worker-7".
        if rest.len() > 1 && rest.starts_with('0') {
            return None;
        }
        rest.parse().ok()
    }
}

/// Checks the `[A-Za-z0-9_-]{1,64}` rule shared by worker ids and namespaces.
pub(crate) fn check_name(id: &str) -> Result<(), InvalidWorkerId> {
    if id.is_empty() {
        return Err(InvalidWorkerId::Empty);
    }
    if id.len() > WORKER_ID_MAX_LEN {
        return Err(InvalidWorkerId::TooLong {
            id: id.to_owned(),
            len: id.len(),
            max: WORKER_ID_MAX_LEN,
        });
    }
    if let Some(ch) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(InvalidWorkerId::BadChar {
            id: id.to_owned(),
            ch,
        });
    }
    Ok(())
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WorkerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for WorkerId {
    type Err = InvalidWorkerId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for WorkerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        WorkerId::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// The identity of a partition: its non-empty list of non-empty keys, e.g. `["orders", "eu"]`.
///
/// Ordered lexicographically by keys (a shorter prefix first), which is the one order every
/// assignment uses. Cloning is cheap (the keys are shared).
///
/// The id carries a digest of its keys, computed once: hashing it reads no key, and two ids
/// with different keys are told apart without reading them (almost always). A leader at
/// 100,000 partitions looks ids up in hash maps millions of times per plan.
#[derive(Clone)]
pub struct PartitionId {
    keys: Arc<[String]>,
    /// [`StableHasher`](crate::hash::StableHasher) of `keys` (deterministic across runs).
    digest: u64,
}

impl PartialEq for PartitionId {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && (Arc::ptr_eq(&self.keys, &other.keys) || *self.keys == *other.keys)
    }
}

impl Eq for PartitionId {}

impl PartialOrd for PartitionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PartitionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.keys, &other.keys) {
            return std::cmp::Ordering::Equal;
        }
        self.keys.cmp(&other.keys)
    }
}

impl std::hash::Hash for PartitionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// Why a partition is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPartition {
    /// A partition needs at least one key.
    #[error("partition has no keys")]
    NoKeys,
    /// One of the keys is the empty string.
    #[error("partition {keys:?} has an empty key at position {index}")]
    EmptyKey {
        /// All keys of the rejected partition.
        keys: Vec<String>,
        /// Position of the empty key.
        index: usize,
    },
    /// The weight is zero; every partition weighs at least 1.
    #[error("partition {keys:?} has weight 0; weights start at 1 (the default is 100)")]
    ZeroWeight {
        /// Keys of the rejected partition.
        keys: Vec<String>,
    },
}

impl PartitionId {
    /// Validates the keys.
    pub fn new<I, K>(keys: I) -> Result<Self, InvalidPartition>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Err(InvalidPartition::NoKeys);
        }
        if let Some(index) = keys.iter().position(String::is_empty) {
            return Err(InvalidPartition::EmptyKey { keys, index });
        }
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = crate::hash::StableHasher::default();
            keys.hash(&mut h);
            h.finish()
        };
        Ok(PartitionId {
            keys: keys.into(),
            digest,
        })
    }

    /// A partition id of one key.
    pub fn single(key: impl Into<String>) -> Result<Self, InvalidPartition> {
        Self::new([key.into()])
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The keys joined with `.`, the form used in NATS subjects (`orders.eu`).
    #[must_use]
    pub fn subject_key(&self) -> String {
        self.keys.join(".")
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{:?}", &*self.keys)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject_key())
    }
}

impl Serialize for PartitionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PartitionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let keys = Vec::<String>::deserialize(d)?;
        PartitionId::new(keys).map_err(serde::de::Error::custom)
    }
}

/// A unit of work to own: its identity and its weight (cost relative to other partitions).
///
/// ```
/// use parti_core::Partition;
/// let p = Partition::new(["orders", "eu"], 250)?;
/// assert_eq!(p.id().subject_key(), "orders.eu");
/// assert_eq!(Partition::with_default_weight(["a"])?.weight(), 100);
/// assert!(Partition::new(["a"], 0).is_err());
/// # Ok::<(), parti_core::InvalidPartition>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "PartitionRepr")]
pub struct Partition {
    id: PartitionId,
    weight: u64,
}

#[derive(Serialize, Deserialize)]
struct PartitionRepr {
    keys: Vec<String>,
    #[serde(default = "default_weight")]
    weight: u64,
}

fn default_weight() -> u64 {
    DEFAULT_WEIGHT
}

impl TryFrom<PartitionRepr> for Partition {
    type Error = InvalidPartition;
    fn try_from(r: PartitionRepr) -> Result<Self, Self::Error> {
        Partition::new(r.keys, r.weight)
    }
}

/// [`PartitionRepr`]'s fields, borrowed: the same encoding (field for field, in order), written
/// without copying the keys — a leader encodes every partition of every record it writes.
#[derive(Serialize)]
#[serde(rename = "PartitionRepr")]
struct PartitionReprRef<'a> {
    keys: &'a [String],
    weight: u64,
}

impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PartitionReprRef {
            keys: self.id.keys(),
            weight: self.weight,
        }
        .serialize(s)
    }
}

impl Partition {
    /// Validates keys and weight (≥ 1).
    pub fn new<I, K>(keys: I, weight: u64) -> Result<Self, InvalidPartition>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let id = PartitionId::new(keys)?;
        Self::from_id(id, weight)
    }

    /// A partition with [`DEFAULT_WEIGHT`].
    pub fn with_default_weight<I, K>(keys: I) -> Result<Self, InvalidPartition>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Self::new(keys, DEFAULT_WEIGHT)
    }

    /// A partition from an already valid id.
    pub fn from_id(id: PartitionId, weight: u64) -> Result<Self, InvalidPartition> {
        if weight == 0 {
            return Err(InvalidPartition::ZeroWeight {
                keys: id.keys().to_vec(),
            });
        }
        Ok(Partition { id, weight })
    }

    /// The identity.
    #[must_use]
    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        self.id.keys()
    }

    /// The weight, ≥ 1.
    #[must_use]
    pub fn weight(&self) -> u64 {
        self.weight
    }
}

macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value: nothing has happened yet.
            pub const ZERO: $name = $name(0);

            /// The next value. Saturates at `u64::MAX` instead of wrapping, so order is never
            /// inverted.
            #[must_use]
            pub fn next(self) -> $name {
                $name(self.0.saturating_add(1))
            }

            /// The raw number.
            #[must_use]
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

counter_newtype!(
    /// A leadership term. Each new leader increments the cluster's term counter by
    /// compare-and-set before writing anything; records of a lower term are never applied.
    Term
);
counter_newtype!(
    /// The cluster-wide assignment version: one counter for the whole cluster that only grows,
    /// across leader changes too (a new leader continues from `meta.version`).
    Version
);
counter_newtype!(
    /// A store revision: strictly increasing per bucket; the basis of compare-and-set.
    Revision
);

/// A fencing token: the `(term, version)` of the grant that gave a partition to its current
/// owner. It strictly increases from one owner of a partition to the next, so an application can
/// reject writes carrying an older fence (a previous owner's).
///
/// Ordered by term, then version.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Fence {
    /// Term of the leader that made the grant.
    pub term: Term,
    /// Version of the grant.
    pub version: Version,
}

impl Fence {
    /// A fence from its parts.
    #[must_use]
    pub fn new(term: Term, version: Version) -> Self {
        Fence { term, version }
    }

    /// A single number that orders the same way, for applications that store one integer:
    /// `term << 40 | version`, valid while `version < 2^40` and `term < 2^24`; `None` otherwise.
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        if self.version.0 < (1 << 40) && self.term.0 < (1 << 24) {
            Some((self.term.0 << 40) | self.version.0)
        } else {
            None
        }
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.version)
    }
}

/// A random 128-bit id drawn once per process start; tells two incarnations of the same worker id
/// apart. The driver draws it (parti-core has no entropy source).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u128);

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({:032x})", self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The lifecycle state of a worker, as the application and the heartbeats see it.
///
/// The first ten are the Go library's states, with the names its users know; the transitions
/// between them are owned by the `Member` machine and documented there. On the wire a state is
/// one byte ([`WorkerState::code`]); a code this build does not know decodes as
/// [`WorkerState::Unknown`] instead of failing the whole heartbeat, so a newer peer never looks
/// dead to an older leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WorkerState {
    /// Constructed, buckets being provisioned.
    Init,
    /// Claiming a stable worker id.
    ClaimingId,
    /// Id claimed; taking part in the first election round.
    Election,
    /// Waiting for the first assignment record.
    WaitingAssignment,
    /// Normal operation.
    Stable,
    /// Leader only: inside a stabilisation window before a planned change.
    Scaling,
    /// Leader only: publishing a new assignment (revoke, acknowledge, grant).
    Rebalancing,
    /// Leader only: reassigning the partitions of crashed workers.
    Emergency,
    /// Cut off from the store, or seeing a burst of store errors.
    Degraded,
    /// Stopped; terminal.
    Shutdown,
    /// Lost its identity or its lease on the store and revoked everything locally; waiting to be
    /// re-granted.
    Fenced,
    /// Leaving the cluster gracefully: waiting for the leader to revoke everything.
    Leaving,
    /// A state code from a newer version of parti.
    Unknown(u8),
}

impl WorkerState {
    /// The one-byte wire code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            WorkerState::Init => 0,
            WorkerState::ClaimingId => 1,
            WorkerState::Election => 2,
            WorkerState::WaitingAssignment => 3,
            WorkerState::Stable => 4,
            WorkerState::Scaling => 5,
            WorkerState::Rebalancing => 6,
            WorkerState::Emergency => 7,
            WorkerState::Degraded => 8,
            WorkerState::Shutdown => 9,
            WorkerState::Fenced => 10,
            WorkerState::Leaving => 11,
            WorkerState::Unknown(c) => c,
        }
    }

    /// The state of a wire code; unknown codes give [`WorkerState::Unknown`].
    #[must_use]
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => WorkerState::Init,
            1 => WorkerState::ClaimingId,
            2 => WorkerState::Election,
            3 => WorkerState::WaitingAssignment,
            4 => WorkerState::Stable,
            5 => WorkerState::Scaling,
            6 => WorkerState::Rebalancing,
            7 => WorkerState::Emergency,
            8 => WorkerState::Degraded,
            9 => WorkerState::Shutdown,
            10 => WorkerState::Fenced,
            11 => WorkerState::Leaving,
            c => WorkerState::Unknown(c),
        }
    }

    /// The name users know (`"Stable"`, `"ClaimingID"`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Init => "Init",
            WorkerState::ClaimingId => "ClaimingID",
            WorkerState::Election => "Election",
            WorkerState::WaitingAssignment => "WaitingAssignment",
            WorkerState::Stable => "Stable",
            WorkerState::Scaling => "Scaling",
            WorkerState::Rebalancing => "Rebalancing",
            WorkerState::Emergency => "Emergency",
            WorkerState::Degraded => "Degraded",
            WorkerState::Shutdown => "Shutdown",
            WorkerState::Fenced => "Fenced",
            WorkerState::Leaving => "Leaving",
            WorkerState::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for WorkerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for WorkerState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(WorkerState::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_encodes_as_its_owned_representation_did() {
        for partition in [
            Partition::new(["orders"], 1).unwrap(),
            Partition::new(["orders", "eu", "shard-17"], 250).unwrap(),
            Partition::with_default_weight(["x".repeat(300)]).unwrap(),
        ] {
            let owned = PartitionRepr {
                keys: partition.keys().to_vec(),
                weight: partition.weight(),
            };
            assert_eq!(
                postcard::to_allocvec(&partition).unwrap(),
                postcard::to_allocvec(&owned).unwrap()
            );
            assert_eq!(
                serde_json::to_string(&partition).unwrap(),
                serde_json::to_string(&owned).unwrap()
            );
            let back: Partition =
                postcard::from_bytes(&postcard::to_allocvec(&partition).unwrap()).unwrap();
            assert_eq!(back, partition);
        }
    }

    #[test]
    fn worker_id_accepts_the_charset_and_rejects_the_rest() {
        assert!(WorkerId::new("worker-0").is_ok());
        assert!(WorkerId::new("A_b-9").is_ok());
        assert!(WorkerId::new("x".repeat(64)).is_ok());
        assert_eq!(WorkerId::new(""), Err(InvalidWorkerId::Empty));
        assert!(matches!(
            WorkerId::new("x".repeat(65)),
            Err(InvalidWorkerId::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            WorkerId::new("a.b"),
            Err(InvalidWorkerId::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            WorkerId::new("a b"),
            Err(InvalidWorkerId::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            WorkerId::new("wörker"),
            Err(InvalidWorkerId::BadChar { ch: 'ö', .. })
        ));
    }

    #[test]
    fn worker_id_number_round_trips_only_the_canonical_form() {
        let id = WorkerId::from_parts("worker", 42).unwrap();
        assert_eq!(id.number("worker"), Some(42));
        assert_eq!(id.number("work"), None);
        assert_eq!(WorkerId::new("worker-07").unwrap().number("worker"), None);
        assert_eq!(WorkerId::new("worker-").unwrap().number("worker"), None);
        assert_eq!(WorkerId::new("worker-0").unwrap().number("worker"), Some(0));
    }

    #[test]
    fn worker_id_deserialisation_validates() {
        assert!(serde_json::from_str::<WorkerId>("\"w-1\"").is_ok());
        assert!(serde_json::from_str::<WorkerId>("\"w.1\"").is_err());
    }

    #[test]
    fn partition_rules() {
        assert_eq!(
            Partition::new(Vec::<String>::new(), 1),
            Err(InvalidPartition::NoKeys)
        );
        assert!(matches!(
            Partition::new(["a", ""], 1),
            Err(InvalidPartition::EmptyKey { index: 1, .. })
        ));
        assert!(matches!(
            Partition::new(["a"], 0),
            Err(InvalidPartition::ZeroWeight { .. })
        ));
        let p: Partition = serde_json::from_str(r#"{"keys":["a","b"]}"#).unwrap();
        assert_eq!(p.weight(), DEFAULT_WEIGHT);
        assert!(serde_json::from_str::<Partition>(r#"{"keys":[],"weight":1}"#).is_err());
    }

    #[test]
    fn partition_ids_order_by_keys_shorter_prefix_first() {
        let a = PartitionId::new(["a"]).unwrap();
        let ab = PartitionId::new(["a", "b"]).unwrap();
        let b = PartitionId::new(["b"]).unwrap();
        assert!(a < ab && ab < b);
    }

    #[test]
    fn fences_order_by_term_then_version() {
        let f = |t, v| Fence::new(Term(t), Version(v));
        assert!(f(1, 9) < f(2, 1));
        assert!(f(2, 1) < f(2, 2));
        assert!(f(1, 9).as_u64() < f(2, 1).as_u64());
        assert_eq!(f(1 << 24, 1).as_u64(), None);
    }

    #[test]
    fn worker_state_codes_round_trip_and_unknown_survives() {
        for code in 0..=u8::MAX {
            assert_eq!(WorkerState::from_code(code).code(), code);
        }
        assert_eq!(WorkerState::from_code(200), WorkerState::Unknown(200));
    }
}
