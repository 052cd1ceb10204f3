//! JetStream consumption by the partition's owner.
//!
//! A [`PartitionConsumer`] consumes, for each partition this worker owns, that partition's
//! messages from an existing JetStream stream — and stops before the partition goes to another
//! worker. Plug it into a parti `Manager` as its assignment handler and the protocol's order
//! (revoke → acknowledge → grant) becomes the order of message delivery: the next owner starts
//! exactly where this one's acknowledgements stopped.
//!
//! # How it works
//!
//! - **One durable pull consumer per partition**, named from the partition's keys
//!   (`{prefix}-{keys}`, see [`PartitionConsumer::consumer_name`]), filtered on the partition's
//!   subject from the [`SubjectTemplate`]. It is created the first time any worker owns the
//!   partition and is **never deleted on a handoff**: whoever owns the partition binds to it.
//!   The server's ack floor and redelivery set belong to the consumer, so progress carries
//!   across owners by itself — no offsets in KV, nothing skipped.
//! - **Grant** (`on_assigned`): bind (read the consumer, create it if missing, update settings
//!   that may change in place), unpin when pinned, start pulling.
//! - **Revoke** (`on_revoked`): the release procedure, and only then return: stop taking
//!   messages, let the message in hand finish (up to `release_timeout`), drain the client's
//!   buffer, drop the pull, nak what was not handled in stream order, flush. Returning from
//!   `on_revoked` is what lets the leader grant the partition elsewhere, so the next owner's
//!   first message is the oldest one not acknowledged here.
//! - **Ownership lost** (`on_ownership_lost`): stop at once — the running handler is cancelled
//!   and nothing more is handed out; the release follows in `on_revoked`.
//! - **Settings** that can change in place (`ack_wait`, `max_ack_pending`, `max_deliver`,
//!   priority settings) are set by whoever binds: give every worker of a stream the same
//!   settings (during a rolling change the consumer follows the last worker that bound it). The
//!   start position applies at creation only; a different subject for an existing consumer is
//!   refused ([`ConsumerError::ConsumerConflict`]).
//! - **Crash**: nothing runs; the messages the crashed owner held come back to the next owner
//!   after `ack_wait` (duplicates are possible there; nothing is lost).
//!
//! # Delivery guarantees
//!
//! At least once, per partition. A graceful handoff (shutdown, leave, rebalance) neither loses
//! nor repeats a message. A crash repeats the crashed owner's unacknowledged messages after
//! `ack_wait`. Order within a partition is the stream's order while one owner consumes; around a
//! handoff, messages that were nak'd come back first, so order is nearly but not strictly kept
//! (`max_ack_pending = 1` keeps it strictly, at a throughput cost). A handler error naks the
//! message with backoff; with a finite `max_deliver` the last failed delivery goes to the
//! dead-letter subject (or, with none configured, is logged at `error!` and counted as
//! `dropped`). A handoff never spends a message's last delivery: such a message, buffered at
//! release, is handled before the release completes.
//!
//! # Example
//!
//! ```no_run
//! use parti_core::handler::HandlerError;
//! use parti_nats::consumer::{Delivery, PartitionConsumer};
//!
//! # async fn run(client: async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
//! // Stream ORDERS captures `orders.>`; partition ["eu", "7"] reads `orders.eu.7`.
//! let consumer = PartitionConsumer::builder(client, "ORDERS", "orders.{0}.{1}")
//!     .expected_partitions(64)
//!     .handler(|d: Delivery| async move {
//!         println!("{} #{} under fence {}", d.partition(), d.stream_sequence(), d.fence());
//!         Ok::<(), HandlerError>(())
//!     })
//!     .build()
//!     .await?;
//! // Then: Manager::builder(config).store(store).partitions(source).handler(consumer.clone())
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `parti_consumer_messages_total` | counter | `stream`, `outcome` | messages settled by the consumer: `acked`, `nacked`, `dead_lettered`, `dropped` (last delivery failed, no dead-letter subject) |
//! | `parti_consumer_partition_messages_total` | counter | `stream`, `partition` | messages handed to the handler |
//! | `parti_consumer_handler_seconds` | histogram | `stream` | handler time per message |
//! | `parti_consumer_redeliveries_total` | counter | `stream` | messages handed out more than once |
//! | `parti_consumer_naks_total` | counter | `stream`, `reason` | naks: `handler_error`, `release`, `pull_restart` |
//! | `parti_consumer_bind_seconds` | histogram | `stream` | grant: consumer bound and pull started |
//! | `parti_consumer_bind_failures_total` | counter | `stream` | failed binds (each retried with backoff) |
//! | `parti_consumer_release_seconds` | histogram | `stream` | the release procedure |
//! | `parti_consumer_pull_restarts_total` | counter | `stream` | pulls replaced after they went silent (missed heartbeats) |
//!
//! # Removed partitions
//!
//! A partition that leaves the catalog keeps its consumer (and its progress) until
//! [`PartitionConsumer::remove_stale_consumers`] is called with the catalog and has seen it
//! absent for the grace period; nothing is ever deleted because a partition moved.

mod config;
mod delivery;
mod error;
mod puller;
mod task;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PriorityPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{ConsumerError as JsConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use futures::StreamExt;
use futures::future::join_all;
use parti_core::handler::{AssignmentHandler, HandlerError};
use parti_core::records::OwnedPartition;
use parti_core::{Fence, PartitionId};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use config::Settings;
pub use config::{AckMode, Exclusivity, StartPosition};
pub use delivery::{AckError, Delivery, MessageHandler};
pub use error::ConsumerError;
use task::Control;
pub use template::SubjectTemplate;

/// Metric names.
pub(crate) mod metric {
    pub(crate) const MESSAGES: &str = "parti_consumer_messages_total";
    pub(crate) const PARTITION_MESSAGES: &str = "parti_consumer_partition_messages_total";
    pub(crate) const HANDLER_SECONDS: &str = "parti_consumer_handler_seconds";
    pub(crate) const REDELIVERIES: &str = "parti_consumer_redeliveries_total";
    pub(crate) const NAKS: &str = "parti_consumer_naks_total";
    pub(crate) const BIND_SECONDS: &str = "parti_consumer_bind_seconds";
    pub(crate) const BIND_FAILURES: &str = "parti_consumer_bind_failures_total";
    pub(crate) const RELEASE_SECONDS: &str = "parti_consumer_release_seconds";
    pub(crate) const PULL_RESTARTS: &str = "parti_consumer_pull_restarts_total";
}

/// Consumer metadata keys: which partition consumer created it, for which partition.
const META_PREFIX: &str = "parti.prefix";
const META_PARTITION: &str = "parti.partition";

/// What one release did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseReport {
    /// The partition released.
    pub partition: PartitionId,
    /// Messages given back unhandled (nak'd), for the next owner.
    pub nacked: u64,
    /// Messages on their last allowed delivery, handled during the release.
    pub handled_during_release: u64,
    /// Handlers cancelled by the release timeout (or by a lost ownership).
    pub cancelled: u64,
    /// Manual acks: deliveries still unsettled when the release timed out.
    pub unsettled: usize,
    /// How long the release took.
    pub elapsed: Duration,
}

impl ReleaseReport {
    fn new(partition: PartitionId) -> Self {
        ReleaseReport {
            partition,
            nacked: 0,
            handled_during_release: 0,
            cancelled: 0,
            unsettled: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// A partition's consumer as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The consumer's name.
    pub consumer: String,
    /// Messages not yet delivered (the lag).
    pub pending: u64,
    /// Messages delivered and not acknowledged.
    pub ack_pending: usize,
    /// Messages redelivered at least once.
    pub redelivered: usize,
    /// Every message up to this stream sequence is acknowledged.
    pub ack_floor: u64,
    /// Whether this worker consumes the partition now.
    pub owned_here: bool,
}

/// What every partition task shares.
pub(crate) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    stream_subjects: Vec<String>,
    settings: Settings,
    template: SubjectTemplate,
    handler: Arc<dyn MessageHandler>,
    /// Pulls replaced after they went silent ([`PartitionConsumer::pull_restarts`]).
    pull_restarts: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn stream_label(&self) -> String {
        self.settings.stream.clone()
    }

    fn consumer_name(&self, partition: &PartitionId) -> String {
        template::consumer_name(&self.settings.name_prefix, partition)
    }

    fn check_covered(&self, subject: &str) -> Result<(), ConsumerError> {
        if self
            .stream_subjects
            .iter()
            .any(|s| template::filter_within(subject, s))
        {
            Ok(())
        } else {
            Err(ConsumerError::SubjectNotCovered {
                stream: self.settings.stream.clone(),
                subject: subject.to_owned(),
                stream_subjects: self.stream_subjects.clone(),
            })
        }
    }

    fn pull_config(&self, name: &str, subject: &str) -> pull::Config {
        let s = &self.settings;
        let deliver_policy = match s.start {
            StartPosition::All => DeliverPolicy::All,
            StartPosition::New => DeliverPolicy::New,
            StartPosition::FromSequence(start_sequence) => {
                DeliverPolicy::ByStartSequence { start_sequence }
            }
        };
        let mut config = pull::Config {
            durable_name: Some(name.to_owned()),
            name: Some(name.to_owned()),
            description: Some(format!("parti partition consumer for `{subject}`")),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: s.ack_wait,
            max_deliver: s.max_deliver.unwrap_or(-1),
            filter_subject: subject.to_owned(),
            max_ack_pending: s.max_ack_pending,
            // Never: an unowned partition's consumer must keep its progress.
            inactive_threshold: Duration::ZERO,
            num_replicas: s.consumer_replicas,
            metadata: HashMap::from([
                (META_PREFIX.to_owned(), s.name_prefix.clone()),
                (META_PARTITION.to_owned(), subject.to_owned()),
            ]),
            ..Default::default()
        };
        if let Exclusivity::Pinned {
            group,
            priority_timeout,
        } = &s.exclusivity
        {
            config.priority_policy = PriorityPolicy::PinnedClient;
            config.priority_groups = vec![group.clone()];
            config.priority_timeout = *priority_timeout;
        }
        config
    }

    fn create_error(&self, name: &str, e: JsConsumerError) -> ConsumerError {
        if let ConsumerErrorKind::JetStream(js) = e.kind()
            && js.error_code() == ErrorCode::MAXIMUM_CONSUMERS_LIMIT
        {
            let limit = i64::from(self.stream.cached_info().config.max_consumers);
            return ConsumerError::ConsumerLimit {
                stream: self.settings.stream.clone(),
                limit,
                source_of_limit: "reached while creating a partition's consumer".to_owned(),
                needed: limit + 1,
                others: 0,
                suggested: (limit.max(1) * 2).max(1_000),
            };
        }
        ConsumerError::nats(format!("creating consumer `{name}`"), e)
    }
}

fn is_not_found(e: &JsConsumerError) -> bool {
    matches!(e.kind(), ConsumerErrorKind::JetStream(js) if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

/// Whether an existing consumer's settings differ from the wanted ones in what may be updated.
fn needs_update(have: &jetstream::consumer::Config, want: &pull::Config) -> bool {
    let unlimited = |n: i64| if n <= 0 { -1 } else { n };
    have.ack_policy != want.ack_policy
        || have.ack_wait != want.ack_wait
        || have.max_ack_pending != want.max_ack_pending
        || unlimited(have.max_deliver) != unlimited(want.max_deliver)
        || have.inactive_threshold != want.inactive_threshold
        || have.priority_policy != want.priority_policy
        || have.priority_groups != want.priority_groups
        || (want.priority_policy == PriorityPolicy::PinnedClient
            && have.priority_timeout != want.priority_timeout)
}

/// A dead letter: the message, with where it came from and why it failed, on the dead-letter
/// subject; then the original is terminated. If the dead letter cannot be stored the original
/// is nak'd (the server then drops it, having reached `max_deliver`) and the loss is logged.
async fn dead_letter(shared: &Arc<Shared>, delivery: &Delivery, error: &str) {
    let stream = shared.stream_label();
    let Some(subject) = shared.settings.dead_letter.clone() else {
        tracing::error!(partition = %delivery.partition(), seq = delivery.stream_sequence(), %error,
            "message failed on its last allowed delivery (max_deliver) and no dead-letter subject is set; it is dropped");
        task::settle(shared, delivery, AckKind::Term, "dropped").await;
        return;
    };
    let mut headers = delivery.headers().cloned().unwrap_or_default();
    let clean: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1_000)
        .collect();
    headers.insert("Parti-Partition", delivery.partition().to_string().as_str());
    headers.insert("Parti-Stream", stream.as_str());
    headers.insert("Parti-Subject", delivery.subject());
    headers.insert(
        "Parti-Stream-Sequence",
        delivery.stream_sequence().to_string().as_str(),
    );
    headers.insert("Parti-Delivered", delivery.delivered().to_string().as_str());
    headers.insert("Parti-Error", clean.as_str());
    for attempt in 1..=3u32 {
        let stored = match shared
            .js
            .publish_with_headers(subject.clone(), headers.clone(), delivery.payload().clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => {
                tracing::warn!(partition = %delivery.partition(), seq = delivery.stream_sequence(), %error, dead_letter = %subject,
                    "message failed on its last allowed delivery; sent to the dead-letter subject");
                task::settle(shared, delivery, AckKind::Term, "dead_lettered").await;
                return;
            }
            Err(e) if attempt == 3 => {
                tracing::error!(partition = %delivery.partition(), seq = delivery.stream_sequence(), error = %e,
                    "could not store a dead letter; the message reached max_deliver and is dropped");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
        }
    }
    task::settle(shared, delivery, AckKind::Nak(None), "dropped").await;
}

/// Consumes the messages of the partitions this worker owns; see the [module docs](self).
///
/// A cheap `Clone` handle: give one clone to the `Manager` as its handler and keep another for
/// [`status`](Self::status) and housekeeping.
#[derive(Clone)]
pub struct PartitionConsumer {
    shared: Arc<Shared>,
    slots: Arc<Mutex<BTreeMap<PartitionId, Slot>>>,
    absent_since: Arc<Mutex<HashMap<String, Instant>>>,
}

struct Slot {
    control: watch::Sender<Control>,
    fence: Arc<Mutex<Fence>>,
    task: JoinHandle<ReleaseReport>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PartitionConsumer {
    /// A builder for a consumer of `stream`, where partition keys fill `subject_template`
    /// (see [`SubjectTemplate`]).
    pub fn builder(
        client: async_nats::Client,
        stream: impl Into<String>,
        subject_template: impl Into<String>,
    ) -> PartitionConsumerBuilder {
        let stream = stream.into();
        PartitionConsumerBuilder {
            client,
            template: subject_template.into(),
            settings: Settings::new(stream),
            handler: None,
        }
    }

    /// The durable consumer name of `partition`.
    #[must_use]
    pub fn consumer_name(&self, partition: &PartitionId) -> String {
        self.shared.consumer_name(partition)
    }

    /// Starts consuming `partitions` (already consumed ones only take the new fence). Returns
    /// once each has been bound once; a partition whose bind failed keeps trying in the
    /// background with backoff, and the first failure of each is returned.
    pub async fn grant(&self, partitions: &[OwnedPartition]) -> Result<(), ConsumerError> {
        // A partition told to stop (ownership lost) and granted again before its release:
        // let the old task finish first, so that two pulls never run for one partition.
        let stopping: Vec<JoinHandle<ReleaseReport>> = {
            let mut slots = lock(&self.slots);
            partitions
                .iter()
                .filter_map(|owned| {
                    let id = owned.partition.id();
                    let stale = slots.get(id).is_some_and(|s| {
                        *s.control.borrow() != Control::Run || s.task.is_finished()
                    });
                    if stale {
                        slots.remove(id).map(|s| s.task)
                    } else {
                        None
                    }
                })
                .collect()
        };
        let _ = join_all(stopping).await;
        let mut waiting = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for owned in partitions {
                let id = owned.partition.id().clone();
                if let Some(slot) = slots.get(&id) {
                    *lock(&slot.fence) = owned.fence;
                    continue;
                }
                let (control, rx) = watch::channel(Control::Run);
                let fence = Arc::new(Mutex::new(owned.fence));
                let (bound_tx, bound_rx) = oneshot::channel();
                let task = tokio::spawn(task::run(
                    self.shared.clone(),
                    id.clone(),
                    fence.clone(),
                    rx,
                    bound_tx,
                ));
                slots.insert(
                    id,
                    Slot {
                        control,
                        fence,
                        task,
                    },
                );
                waiting.push(bound_rx);
            }
        }
        let results = join_all(waiting).await;
        let mut errors = results
            .into_iter()
            .filter_map(|r| r.ok().and_then(Result::err));
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let more = errors.count();
        if more > 0 {
            tracing::warn!(
                failed = more + 1,
                "several partitions could not be bound; they keep trying"
            );
        }
        Err(first)
    }

    /// Releases `partitions` (the release procedure, all partitions side by side) and returns
    /// when every one is released: nothing of theirs is in a handler any more, and every ack
    /// and nak is at the server. Partitions not consumed here are skipped.
    pub async fn release(&self, partitions: &[PartitionId]) -> Vec<ReleaseReport> {
        self.stop(partitions, Control::Release).await
    }

    /// Stops consuming `partitions` at once, without waiting (running handlers are cancelled);
    /// a following [`release`](Self::release) waits for the rest of the procedure.
    pub fn stop_now(&self, partitions: &[PartitionId]) {
        let slots = lock(&self.slots);
        for p in partitions {
            if let Some(slot) = slots.get(p) {
                slot.control.send_replace(Control::Abort);
            }
        }
    }

    async fn stop(&self, partitions: &[PartitionId], how: Control) -> Vec<ReleaseReport> {
        let tasks: Vec<(PartitionId, JoinHandle<ReleaseReport>)> = {
            let mut slots = lock(&self.slots);
            partitions
                .iter()
                .filter_map(|p| slots.remove(p).map(|s| (p.clone(), s)))
                .map(|(p, s)| {
                    // An Abort already sent stays an Abort.
                    s.control.send_if_modified(|c| {
                        if *c == Control::Run {
                            *c = how;
                            true
                        } else {
                            false
                        }
                    });
                    (p, s.task)
                })
                .collect()
        };
        join_all(tasks.into_iter().map(|(p, t)| async move {
            t.await.unwrap_or_else(|e| {
                tracing::error!(partition = %p, error = %e, "a partition task failed");
                ReleaseReport::new(p)
            })
        }))
        .await
    }

    /// Stops every partition task at once and releases nothing, as a crash would: messages
    /// handed out or buffered here and not acknowledged come back to the next owner after
    /// `ack_wait`. For tests and for a process that is about to exit abnormally; a graceful stop
    /// is [`shutdown`](Self::shutdown).
    pub fn abort(&self) {
        let slots = std::mem::take(&mut *lock(&self.slots));
        for slot in slots.into_values() {
            slot.task.abort();
        }
    }

    /// The partitions consumed here, with their fences.
    #[must_use]
    pub fn owned(&self) -> Vec<(PartitionId, Fence)> {
        lock(&self.slots)
            .iter()
            .map(|(p, s)| (p.clone(), *lock(&s.fence)))
            .collect()
    }

    /// Pulls replaced so far because they went silent: two idle heartbeats missed while
    /// waiting for messages (also `parti_consumer_pull_restarts_total`). Zero on a healthy
    /// connection; each one is a stall of about two heartbeats for its partition.
    #[must_use]
    pub fn pull_restarts(&self) -> u64 {
        self.shared
            .pull_restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Releases every partition consumed here.
    pub async fn shutdown(&self) -> Vec<ReleaseReport> {
        let all: Vec<PartitionId> = lock(&self.slots).keys().cloned().collect();
        self.release(&all).await
    }

    /// The server's view of `partition`'s consumer: lag, in flight, ack floor.
    pub async fn status(&self, partition: &PartitionId) -> Result<PartitionStatus, ConsumerError> {
        let name = self.consumer_name(partition);
        let mut consumer = self
            .shared
            .stream
            .get_consumer::<pull::Config>(&name)
            .await
            .map_err(|e| ConsumerError::nats(format!("reading consumer `{name}`"), e))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| ConsumerError::nats(format!("reading consumer `{name}`"), e))?;
        Ok(PartitionStatus {
            consumer: name,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            ack_floor: info.ack_floor.stream_sequence,
            owned_here: lock(&self.slots).contains_key(partition),
        })
    }

    /// Deletes the consumers of partitions that left the catalog: a consumer this partition
    /// consumer created (same name prefix) whose partition is not in `catalog` is deleted once
    /// calls to this method have seen it absent for at least `grace`, and nobody here
    /// consumes it. A partition that comes back within the grace keeps its progress. Returns
    /// the names deleted.
    ///
    /// Call it periodically from one worker (e.g. after refreshing the catalog). Deleting a
    /// consumer forgets its progress: a partition added again later starts from the
    /// configured [`StartPosition`].
    pub async fn remove_stale_consumers(
        &self,
        catalog: &[PartitionId],
        grace: Duration,
    ) -> Result<Vec<String>, ConsumerError> {
        let wanted: std::collections::HashSet<String> =
            catalog.iter().map(|p| self.consumer_name(p)).collect();
        let (ours, _) =
            consumers_by_prefix(&self.shared.stream, &self.shared.settings.name_prefix).await?;
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut absent = lock(&self.absent_since);
            absent.retain(|name, _| ours.contains(name) && !wanted.contains(name));
            for name in ours.into_iter().filter(|n| !wanted.contains(n)) {
                let since = *absent.entry(name.clone()).or_insert(now);
                if now.duration_since(since) >= grace {
                    due.push(name);
                }
            }
        }
        let consumed: std::collections::HashSet<String> = lock(&self.slots)
            .keys()
            .map(|p| self.consumer_name(p))
            .collect();
        let mut deleted = Vec::new();
        for name in due.into_iter().filter(|n| !consumed.contains(n)) {
            match self.shared.stream.delete_consumer(&name).await {
                Ok(_) => {
                    tracing::info!(consumer = %name, "deleted the consumer of a partition that left the catalog");
                    lock(&self.absent_since).remove(&name);
                    deleted.push(name);
                }
                Err(e) if is_not_found(&e) => {
                    lock(&self.absent_since).remove(&name);
                }
                Err(e) => {
                    return Err(ConsumerError::nats(
                        format!("deleting consumer `{name}`"),
                        e,
                    ));
                }
            }
        }
        Ok(deleted)
    }
}

impl std::fmt::Debug for PartitionConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionConsumer")
            .field("stream", &self.shared.settings.stream)
            .field("template", &self.shared.template)
            .field("owned", &lock(&self.slots).len())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl AssignmentHandler for PartitionConsumer {
    async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        self.grant(partitions).await.map_err(Into::into)
    }

    async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        let ids: Vec<PartitionId> = partitions
            .iter()
            .map(|p| p.partition.id().clone())
            .collect();
        let reports = self.release(&ids).await;
        let cancelled: u64 = reports.iter().map(|r| r.cancelled).sum();
        if cancelled > 0 {
            tracing::warn!(
                cancelled,
                "release timeout: handlers cancelled, their messages given back"
            );
        }
        Ok(())
    }

    fn on_ownership_lost(&self, partitions: &[OwnedPartition]) {
        let ids: Vec<PartitionId> = partitions
            .iter()
            .map(|p| p.partition.id().clone())
            .collect();
        self.stop_now(&ids);
    }
}

/// Builds a [`PartitionConsumer`]; [`build`](Self::build) checks the stream and the settings.
#[must_use = "a builder does nothing until build() is awaited"]
pub struct PartitionConsumerBuilder {
    client: async_nats::Client,
    template: String,
    settings: Settings,
    handler: Option<Arc<dyn MessageHandler>>,
}

impl PartitionConsumerBuilder {
    /// The application's handler (required).
    pub fn handler(mut self, handler: impl MessageHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Prefix of the consumer names (default `parti-{stream}`). Two partition consumers of one
    /// stream with different prefixes keep separate progress.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.name_prefix = prefix.into();
        self
    }

    /// Where a partition's consumer starts when it is first created (default: all messages).
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.settings.start = start;
        self
    }

    /// How long the server waits for an acknowledgement before delivering again (default 30 s):
    /// also how long a crashed owner's messages wait before the next owner gets them.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.settings.ack_wait = ack_wait;
        self
    }

    /// Messages delivered and unacknowledged per partition before the server pauses it
    /// (default 1,000; 1 keeps strict order within a partition).
    pub fn max_ack_pending(mut self, max: i64) -> Self {
        self.settings.max_ack_pending = max;
        self
    }

    /// Deliveries per message (default unlimited). With a limit, a message whose last delivery
    /// fails goes to the [dead-letter subject](Self::dead_letter) — set one.
    pub fn max_deliver(mut self, max: i64) -> Self {
        self.settings.max_deliver = Some(max);
        self
    }

    /// Messages per pull request (default 64); also bounds what a release gives back.
    pub fn batch(mut self, batch: usize) -> Self {
        self.settings.batch = batch;
        self
    }

    /// Pull request expiry (default 30 s).
    pub fn pull_expires(mut self, expires: Duration) -> Self {
        self.settings.pull_expires = expires;
        self
    }

    /// The pull's idle heartbeat (default a quarter of `pull_expires`, at most 5 s): a pull
    /// that misses two is replaced by a new one (what it buffered is nak'd first). A shorter
    /// heartbeat ends such a stall sooner and costs one small status message per heartbeat per
    /// owned partition while idle.
    pub fn pull_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.settings.pull_heartbeat = Some(heartbeat);
        self
    }

    /// How long a release waits for the message in hand (and, with manual acks, for the
    /// deliveries the application holds) before cancelling it (default 5 s). Keep it below the
    /// cluster's `handler_timeout` (default 30 s) by a margin: a release takes up to this plus
    /// a quarter second for the final flush, and a member that waited `handler_timeout` for
    /// `on_revoked` acknowledges the revoke anyway.
    pub fn release_timeout(mut self, timeout: Duration) -> Self {
        self.settings.release_timeout = timeout;
        self
    }

    /// Automatic or manual acknowledgements (default [`AckMode::Auto`]).
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.settings.ack_mode = mode;
        self
    }

    /// Nak delay after a handler error: `min` doubled per delivery, up to `max` (default
    /// 100 ms to 30 s).
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.retry_backoff = (min, max);
        self
    }

    /// Where a message goes when its last allowed delivery fails (needs `max_deliver`); the
    /// subject must be captured by a stream, checked at build.
    pub fn dead_letter(mut self, subject: impl Into<String>) -> Self {
        self.settings.dead_letter = Some(subject.into());
        self
    }

    /// Server-enforced exclusivity (default [`Exclusivity::None`]).
    pub fn exclusivity(mut self, exclusivity: Exclusivity) -> Self {
        self.settings.exclusivity = exclusivity;
        self
    }

    /// How many partitions the catalog has: checked at build against the stream's
    /// `max_consumers` (nats-server 2.15 admits 1,000 consumers per stream by default).
    pub fn expected_partitions(mut self, n: usize) -> Self {
        self.settings.expected_partitions = Some(n);
        self
    }

    /// Replicas of each partition's consumer (default: the stream's).
    pub fn consumer_replicas(mut self, replicas: usize) -> Self {
        self.settings.consumer_replicas = replicas;
        self
    }

    /// Checks the settings, the stream (it exists, its subjects cover the template, it admits
    /// the expected number of consumers), the server (pinned exclusivity needs 2.11) and the
    /// dead-letter subject, and returns the consumer. Nothing is created yet: a partition's
    /// consumer is created when it is first granted.
    pub async fn build(self) -> Result<PartitionConsumer, ConsumerError> {
        let settings = self.settings;
        settings.validate()?;
        let template = SubjectTemplate::parse(&self.template)?;
        let handler = self.handler.ok_or_else(|| {
            ConsumerError::InvalidSetting(
                "no handler: call .handler(..) before .build()".to_owned(),
            )
        })?;
        let version = server_version(&self.client.server_info().version);
        if matches!(settings.exclusivity, Exclusivity::Pinned { .. }) && version < (2, 11) {
            return Err(ConsumerError::ExclusivityUnsupported {
                server_version: self.client.server_info().version,
            });
        }
        let js = jetstream::new(self.client.clone());
        let stream = js
            .get_stream(&settings.stream)
            .await
            .map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    ConsumerError::StreamNotFound {
                        stream: settings.stream.clone(),
                    }
                }
                _ => ConsumerError::nats(format!("reading stream `{}`", settings.stream), e),
            })?;
        let info = stream.cached_info().clone();
        let stream_subjects = info.config.subjects.clone();
        let filter = template.as_filter();
        if !stream_subjects
            .iter()
            .any(|s| template::filter_within(&filter, s))
        {
            return Err(ConsumerError::SubjectNotCovered {
                stream: settings.stream.clone(),
                subject: filter,
                stream_subjects,
            });
        }
        if let Some(n) = settings.expected_partitions {
            let (limit, source_of_limit) = if info.config.max_consumers > 0 {
                (
                    i64::from(info.config.max_consumers),
                    "the stream's max_consumers".to_owned(),
                )
            } else if version >= (2, 15) {
                (
                    1_000,
                    "nats-server 2.15's default per stream, unless the server sets \
                     default_max_consumers"
                        .to_owned(),
                )
            } else {
                (i64::MAX, String::new())
            };
            let (_, others) = consumers_by_prefix(&stream, &settings.name_prefix).await?;
            let others = i64::try_from(others).unwrap_or(i64::MAX);
            let needed = i64::try_from(n).unwrap_or(i64::MAX).saturating_add(others);
            if needed > limit {
                return Err(ConsumerError::ConsumerLimit {
                    stream: settings.stream.clone(),
                    limit,
                    source_of_limit,
                    needed,
                    others,
                    suggested: needed.saturating_mul(2),
                });
            }
        }
        if let Some(dl) = &settings.dead_letter {
            if settings.max_deliver.is_none() {
                tracing::warn!(dead_letter = %dl, "a dead-letter subject without max_deliver is never used");
            }
            if template::filter_within(dl, &filter) {
                return Err(ConsumerError::InvalidSetting(format!(
                    "dead-letter subject `{dl}` is one of the partitions' subjects (`{filter}`)"
                )));
            }
            if js.stream_by_subject(dl.clone()).await.is_err() {
                return Err(ConsumerError::DeadLetterNotCaptured {
                    subject: dl.clone(),
                });
            }
        }
        Ok(PartitionConsumer {
            shared: Arc::new(Shared {
                client: self.client,
                js,
                stream,
                stream_subjects: info.config.subjects,
                settings,
                template,
                handler,
                pull_restarts: std::sync::atomic::AtomicU64::new(0),
            }),
            slots: Arc::new(Mutex::new(BTreeMap::new())),
            absent_since: Arc::new(Mutex::new(HashMap::new())),
        })
    }
}

/// The stream's consumers: the names of those a partition consumer with `prefix` created
/// (by their metadata), and how many others there are.
async fn consumers_by_prefix(
    stream: &jetstream::stream::Stream,
    prefix: &str,
) -> Result<(Vec<String>, usize), ConsumerError> {
    let mut ours = Vec::new();
    let mut others = 0;
    let mut listing = stream.consumers();
    while let Some(info) = listing.next().await {
        let info = info.map_err(|e| ConsumerError::nats("listing consumers", e))?;
        if info.config.metadata.get(META_PREFIX).map(String::as_str) == Some(prefix) {
            ours.push(info.name);
        } else {
            others += 1;
        }
    }
    Ok((ours, others))
}

/// `"2.15.1"` → `(2, 15)`; unreadable parts count as 0.
fn server_version(v: &str) -> (u32, u32) {
    let mut parts = v
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_compare_by_major_and_minor() {
        assert_eq!(server_version("2.15.1"), (2, 15));
        assert_eq!(server_version("2.10.26"), (2, 10));
        assert_eq!(server_version("v2.11.0-beta"), (2, 11));
        assert!(server_version("2.9.25") < (2, 11));
        assert_eq!(server_version("garbage"), (0, 0));
    }
}
