//! The application's callbacks ([`AssignmentHandler`]) and the task that runs them.
//!
//! Application code never runs on the driver task: deliveries go to one handler task, which runs
//! them strictly one after the other, in order, and reports each completion back to the driver
//! as an event. Heartbeats, renewals and leadership go on while a handler runs. The member waits
//! `handler_timeout` per callback; after that it counts the delivery as done and moves on, and
//! the next delivery waits here behind the running callback — callbacks never overlap.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parti_core::member::DeliveryId;
use parti_core::records::OwnedPartition;
use tokio::sync::mpsc;

/// The error type a handler may return: anything printable. It is reported
/// ([`Notification::HandlerFailed`](crate::Notification::HandlerFailed)) and never changes what
/// the protocol does: a failed `on_revoked` still counts as released.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the application does when it gains or loses partitions.
///
/// Callbacks are awaited in order and never two at once. Each receives the partitions with the
/// [`Fence`](parti_core::Fence) (term, version) of their grant: an application that writes
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
/// use parti_runtime::{AssignmentHandler, HandlerError};
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
/// its assignment can be read through [`Manager::assignment`](crate::Manager::assignment).
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

/// Which callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Callback {
    /// [`AssignmentHandler::on_assigned`].
    Assigned,
    /// [`AssignmentHandler::on_revoked`].
    Revoked,
}

impl Callback {
    /// `"assigned"` or `"revoked"` (metric labels).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Callback::Assigned => "assigned",
            Callback::Revoked => "revoked",
        }
    }
}

/// One delivery for the handler task.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) id: DeliveryId,
    pub(crate) revoked: Vec<OwnedPartition>,
    pub(crate) assigned: Vec<OwnedPartition>,
}

/// What the handler task reports back to the driver.
#[derive(Debug)]
pub(crate) enum HandlerReport {
    /// A callback failed (returned an error or panicked).
    Failed { callback: Callback, error: String },
    /// A callback took this long.
    Took {
        callback: Callback,
        duration: Duration,
    },
    /// The delivery finished.
    Done(DeliveryId),
}

/// Runs deliveries one after the other until the driver drops its sender.
pub(crate) async fn run(
    handler: Arc<dyn AssignmentHandler>,
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    reports: mpsc::UnboundedSender<HandlerReport>,
) {
    while let Some(d) = deliveries.recv().await {
        for (callback, partitions) in [
            (Callback::Revoked, &d.revoked),
            (Callback::Assigned, &d.assigned),
        ] {
            if partitions.is_empty() {
                continue;
            }
            let started = tokio::time::Instant::now();
            let call = match callback {
                Callback::Revoked => handler.on_revoked(partitions),
                Callback::Assigned => handler.on_assigned(partitions),
            };
            let outcome = AssertUnwindSafe(call).catch_unwind().await;
            let duration = started.elapsed();
            let _ = reports.send(HandlerReport::Took { callback, duration });
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
            };
            if let Some(error) = error {
                tracing::warn!(callback = callback.as_str(), %error, "assignment handler failed");
                let _ = reports.send(HandlerReport::Failed { callback, error });
            }
        }
        if reports.send(HandlerReport::Done(d.id)).is_err() {
            return;
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}
