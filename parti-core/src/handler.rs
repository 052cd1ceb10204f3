//! The application's port: what a worker does when it gains or loses partitions.
//!
//! [`AssignmentHandler`] is defined here, next to the other ports ([`store::KvStore`],
//! [`strategy::AssignmentStrategy`]), so that crates other than the runtime can implement it
//! without depending on the runtime — `parti-nats`'s `PartitionConsumer` is one. The runtime
//! (`parti-runtime`) calls it; nothing in this crate does.
//!
//! [`store::KvStore`]: crate::store::KvStore
//! [`strategy::AssignmentStrategy`]: crate::strategy::AssignmentStrategy

use crate::records::OwnedPartition;

/// The error type a handler may return: anything printable. It is reported
/// (parti-runtime's `Notification::HandlerFailed`) and never changes what
/// the protocol does: a failed `on_revoked` still counts as released.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the application does when it gains or loses partitions.
///
/// Callbacks are awaited in order and never two at once. Each receives the partitions with the
/// [`Fence`](crate::Fence) (term, version) of their grant: an application that writes
/// somewhere else can carry the fence along and have stale writers refused there.
///
/// - `on_revoked` must stop all work on the listed partitions before it returns: once it
///   returns, the leader may grant them to another worker.
/// - `on_assigned` starts work on the listed partitions. A partition already owned is listed
///   again when its fence changed (a new grant of the same partition).
/// - `on_ownership_lost` is called when this worker can no longer guarantee that it is the only
///   owner (cut off from the store under `DisconnectPolicy::Fence`, or its id was lost). It is
///   called at once — possibly while `on_revoked` or `on_assigned` is still running — because
///   the work must stop *now*: flip a flag or cancel a token, do not block. The same partitions
///   are then also passed to `on_revoked`, in order, once any running callback has returned.
///
/// ```
/// use parti_core::records::OwnedPartition;
/// use parti_core::handler::{AssignmentHandler, HandlerError};
///
/// struct Printer;
///
/// #[async_trait::async_trait]
/// impl AssignmentHandler for Printer {
///     async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
///         for p in partitions {
///             println!("start {} (fence {})", p.partition.id(), p.fence);
///         }
///         Ok(())
///     }
///
///     async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
///         for p in partitions {
///             println!("stop {}", p.partition.id());
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait AssignmentHandler: Send + Sync + 'static {
    /// This worker now owns `partitions` (with their fences), in partition order.
    async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError>;

    /// This worker must stop working on `partitions`, in partition order.
    async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError>;

    /// Ownership of `partitions` can no longer be guaranteed: stop at once (see the trait docs).
    fn on_ownership_lost(&self, partitions: &[OwnedPartition]) {
        let _ = partitions;
    }
}

/// A handler that does nothing (the builder's default): the worker takes part in the cluster and
/// its assignment can be read through parti-runtime's `Manager::assignment`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopHandler;

#[async_trait::async_trait]
impl AssignmentHandler for NoopHandler {
    async fn on_assigned(&self, _: &[OwnedPartition]) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn on_revoked(&self, _: &[OwnedPartition]) -> Result<(), HandlerError> {
        Ok(())
    }
}
