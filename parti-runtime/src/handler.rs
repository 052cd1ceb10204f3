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
pub use parti_core::handler::{AssignmentHandler, HandlerError, NoopHandler};
use parti_core::member::DeliveryId;
use parti_core::records::OwnedPartition;
use tokio::sync::mpsc;

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
