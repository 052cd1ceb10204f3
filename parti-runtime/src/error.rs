//! The runtime's errors: why a worker could not start, and why a call on a running one failed.

use std::time::Duration;

use parti_core::config::ConfigErrors;
use parti_core::member::MemberError;
use parti_core::store::KvError;
use parti_core::{PartitionId, WorkerId};

/// Why [`ManagerBuilder::start`](crate::ManagerBuilder::start) failed. Nothing of the worker is
/// left running when it is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration breaks one or more rules; every problem is listed.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigErrors),
    /// No store was given to the builder.
    #[error(
        "no store: call .store(..) on the builder with a MemoryStore (embedded) or a NatsStore"
    )]
    NoStore,
    /// A bucket could not be provisioned (unreachable store, a bucket that exists with another
    /// configuration, …).
    #[error("provisioning bucket {bucket:?} failed: {error}")]
    Provision {
        /// The bucket.
        bucket: String,
        /// What the store said.
        #[source]
        error: KvError,
    },
    /// The partition source failed on its first listing.
    #[error("the partition source failed on its first listing: {0}")]
    PartitionSource(#[source] SourceError),
    /// The member stopped during start (for example no free worker id in the pool).
    #[error("the worker stopped during start: {0}")]
    Member(#[from] MemberError),
    /// Start did not finish within `startup_timeout`.
    #[error("start did not finish within the startup timeout ({timeout:?})")]
    Timeout {
        /// The configured startup timeout.
        timeout: Duration,
    },
    /// The worker's driver stopped before start finished (its task was aborted or panicked).
    #[error("the worker's driver stopped before start finished")]
    DriverStopped,
}

/// Why a call on a running [`Manager`](crate::Manager) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker has stopped (shut down, aborted, or failed); the call did nothing.
    #[error("the worker has stopped")]
    Stopped,
    /// Only the leader plans; this worker does not lead.
    #[error(
        "this worker does not lead{}; call it on the leader",
        leader.as_ref().map(|l| format!(" (the leader is {l})")).unwrap_or_default()
    )]
    NotLeader {
        /// The leader this worker knows of, if any.
        leader: Option<WorkerId>,
    },
    /// The wait ended before the condition held.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The partition source failed; the last catalog stays in force.
    #[error("the partition source failed: {0}")]
    PartitionSource(SourceError),
}

/// Why a [`PartitionSource`](crate::PartitionSource) could not list the partitions. The runtime
/// keeps the last catalog and reports it; it never empties the catalog because of an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source's own failure.
    #[error("{0}")]
    Failed(String),
    /// Two partitions of the list have the same keys.
    #[error("partition {0} is listed more than once")]
    Duplicate(PartitionId),
}

impl SourceError {
    /// A source failure from anything printable.
    pub fn failed(reason: impl std::fmt::Display) -> Self {
        SourceError::Failed(reason.to_string())
    }
}
