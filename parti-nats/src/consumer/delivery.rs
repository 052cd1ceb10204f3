//! What the application's [`MessageHandler`] receives: one message of one owned partition.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use parti_core::handler::HandlerError;
use parti_core::{Fence, PartitionId};
use tokio::sync::OwnedSemaphorePermit;

/// Handles the messages of the partitions this worker owns.
///
/// Called with one [`Delivery`] at a time per partition, in the order the server delivers them
/// (partitions run side by side). Under [`AckMode::Auto`](super::AckMode::Auto) returning `Ok`
/// acknowledges the message and `Err` (or a panic) naks it with backoff; under
/// [`AckMode::Manual`](super::AckMode::Manual) the handler settles each delivery itself.
///
/// A closure `Fn(Delivery) -> impl Future<Output = Result<(), HandlerError>>` is a handler:
///
/// ```
/// use parti_core::handler::HandlerError;
/// use parti_nats::consumer::{Delivery, MessageHandler};
///
/// fn assert_handler(_: impl MessageHandler) {}
/// assert_handler(|d: Delivery| async move {
///     println!("{} #{}: {} bytes (fence {})", d.partition(), d.stream_sequence(), d.payload().len(), d.fence());
///     Ok::<(), HandlerError>(())
/// });
/// ```
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one message.
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError>;
}

#[async_trait::async_trait]
impl<F, Fut> MessageHandler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self(delivery).await
    }
}

/// Why an acknowledgement could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The delivery was already acknowledged, nak'd or terminated.
    #[error("message {stream_sequence} was already settled")]
    AlreadySettled {
        /// Its stream sequence.
        stream_sequence: u64,
    },
    /// The client could not send it (the message will be redelivered after `ack_wait`).
    #[error("acknowledgement of message {stream_sequence} not sent: {message}")]
    Send {
        /// Its stream sequence.
        stream_sequence: u64,
        /// The client's error.
        message: String,
    },
}

/// One message of an owned partition, with the partition and the fence of its grant.
///
/// Cheap to clone (all clones are the same delivery). Settle it once: [`ack`](Self::ack),
/// [`nak`](Self::nak) or [`term`](Self::term); [`in_progress`](Self::in_progress) extends its
/// `ack_wait` and may be sent any number of times before.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    message: jetstream::Message,
    partition: PartitionId,
    fence: Fence,
    stream_sequence: u64,
    delivered: i64,
    settled: AtomicBool,
    /// Manual mode: the in-flight slot this delivery holds until it is settled.
    permit: parking_slot::Slot,
    /// Manual mode: an unsettled delivery dropped by the application is nak'd.
    nak_on_drop: bool,
}

/// A tiny mutex-protected option (std's Mutex; no lock is held across an await).
mod parking_slot {
    use std::sync::Mutex;

    use tokio::sync::OwnedSemaphorePermit;

    pub(super) struct Slot(Mutex<Option<OwnedSemaphorePermit>>);

    impl Slot {
        pub(super) fn new(p: Option<OwnedSemaphorePermit>) -> Self {
            Slot(Mutex::new(p))
        }

        pub(super) fn release(&self) {
            let taken = match self.0.lock() {
                Ok(mut g) => g.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            drop(taken);
        }
    }
}

impl Delivery {
    pub(crate) fn new(
        message: jetstream::Message,
        partition: PartitionId,
        fence: Fence,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let (stream_sequence, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 1));
        let nak_on_drop = permit.is_some();
        Delivery {
            inner: Arc::new(Inner {
                message,
                partition,
                fence,
                stream_sequence,
                delivered,
                settled: AtomicBool::new(false),
                permit: parking_slot::Slot::new(permit),
                nak_on_drop,
            }),
        }
    }

    /// The partition this message belongs to.
    #[must_use]
    pub fn partition(&self) -> &PartitionId {
        &self.inner.partition
    }

    /// The fence (term, version) of the grant under which this worker owns the partition: carry
    /// it into writes elsewhere so that a previous owner's late writes can be refused there.
    #[must_use]
    pub fn fence(&self) -> Fence {
        self.inner.fence
    }

    /// The message's subject.
    #[must_use]
    pub fn subject(&self) -> &str {
        self.inner.message.subject.as_str()
    }

    /// The message's payload.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.inner.message.payload
    }

    /// The message's headers, if any.
    #[must_use]
    pub fn headers(&self) -> Option<&async_nats::HeaderMap> {
        self.inner.message.headers.as_ref()
    }

    /// The message's sequence in the stream.
    #[must_use]
    pub fn stream_sequence(&self) -> u64 {
        self.inner.stream_sequence
    }

    /// How many times the server has delivered this message (1 the first time; more after a
    /// nak, an `ack_wait` expiry, or a handoff that released it unhandled).
    #[must_use]
    pub fn delivered(&self) -> i64 {
        self.inner.delivered
    }

    /// The JetStream message itself.
    #[must_use]
    pub fn message(&self) -> &jetstream::Message {
        &self.inner.message
    }

    /// Whether it was acknowledged, nak'd or terminated.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.inner.settled.load(Ordering::Acquire)
    }

    /// Acknowledges the message: it is done and will not be delivered again.
    pub async fn ack(&self) -> Result<(), AckError> {
        self.settle(AckKind::Ack).await
    }

    /// Gives the message back: it is delivered again after `delay` (at once when `None`),
    /// possibly to another owner.
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.settle(AckKind::Nak(delay)).await
    }

    /// Terminates the message: it is never delivered again, though not processed.
    pub async fn term(&self) -> Result<(), AckError> {
        self.settle(AckKind::Term).await
    }

    /// Tells the server the message is still being worked on (resets its `ack_wait`).
    pub async fn in_progress(&self) -> Result<(), AckError> {
        if self.is_settled() {
            return Err(AckError::AlreadySettled {
                stream_sequence: self.inner.stream_sequence,
            });
        }
        self.send(AckKind::Progress).await
    }

    /// Settles with `kind` unless already settled.
    pub(crate) async fn settle(&self, kind: AckKind) -> Result<(), AckError> {
        if self.inner.settled.swap(true, Ordering::AcqRel) {
            return Err(AckError::AlreadySettled {
                stream_sequence: self.inner.stream_sequence,
            });
        }
        let sent = self.send(kind).await;
        self.inner.permit.release();
        sent
    }

    async fn send(&self, kind: AckKind) -> Result<(), AckError> {
        self.inner
            .message
            .ack_with(kind)
            .await
            .map_err(|e| AckError::Send {
                stream_sequence: self.inner.stream_sequence,
                message: e.to_string(),
            })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.nak_on_drop || *self.settled.get_mut() {
            return;
        }
        // Manual mode, dropped unsettled: give it back rather than leave it for `ack_wait`.
        let message = self.message.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            });
        }
        self.permit.release();
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.inner.partition)
            .field("fence", &self.inner.fence)
            .field("subject", &self.subject())
            .field("stream_sequence", &self.inner.stream_sequence)
            .field("delivered", &self.inner.delivered)
            .field("settled", &self.is_settled())
            .finish_non_exhaustive()
    }
}
