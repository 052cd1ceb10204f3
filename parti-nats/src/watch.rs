//! Watches that survive disconnects, server restarts and lost history: an ordered push consumer
//! per watch, supervised by a task that owns every re-establishment.
//!
//! async-nats' ordered consumer recreates itself after a reconnect or a sequence gap, resuming
//! from the last stream sequence it delivered — but it cannot tell that the stream it resumes on
//! is not the one it left (a bucket deleted and created again, a memory bucket lost in a restart
//! and provisioned again), it retries a failing recreation forever without a word, and it sees
//! reconnects through a coalescing `watch` that a short disconnect can slip through. So the
//! supervisor drops the consumer whenever anything may have moved under it — any connection
//! transition (queued per reader, never coalesced), any consumer error including a missed
//! heartbeat, a stream advisory for the bucket — and builds the next one itself:
//!
//! - it asks the stream for its creation time and last revision: the same stream, still
//!   reaching the last revision received, resumes after it; anything else is lost history:
//!   [`WatchEvent::Resync`], then a fresh snapshot;
//! - a fresh snapshot, once owed, stays owed until one has started ([`Phase::SnapshotOwed`]):
//!   a failed attempt right after a `Resync` is retried as a snapshot, never as a resume from
//!   revision 1 without a [`WatchEvent::SnapshotComplete`];
//! - a snapshot is never older than the watch: the stream leader is asked for the last matching
//!   revision first, and the consumer (which may live on a lagging follower) is read until it
//!   has reached it; the messages up to there are folded per key, so the snapshot holds each
//!   key's latest live value, in revision order, then the marker — also on an empty bucket;
//! - delivery is at most once: a revision at or below the last one received is dropped;
//! - failures to re-establish are counted (`parti_watch_failures_total{bucket}`), logged at
//!   `warn!` after 1, 2, 4, 8, … consecutive failures, retried with backoff, and after
//!   [`NatsStoreConfig::watch_unhealthy_after`](crate::NatsStoreConfig::watch_unhealthy_after)
//!   without a working consumer reported to the reader as an `Err(`[`KvError::Unavailable`]`)`
//!   item; the stream carries on after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::datetime::DateTime;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::ReplayPolicy;
use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::kv;
use futures::StreamExt;
use parti_core::store::{
    ConnectionState, KvError, KvEvent, KvOperation, KvWatch, WatchEvent, WatchKeys,
};
use parti_core::types::Revision;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connection::Transitions;
use crate::error;
use crate::shared::{self, Inner, KV_OPERATION, MARKER_REASON, until};

/// Items buffered between the supervising task and the watch's reader. When full, the task
/// stops reading and the server's flow control holds further messages.
const BUFFER: usize = 256;
/// First pause before re-establishing a failed watch.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How long a consumer must have run for its failure to reset the backoff (and start a new
/// unhealthy period).
const HEALTHY: Duration = Duration::from_secs(5);
/// How long a snapshot waits without any message before asking the leader again how far it
/// must reach.
const SNAPSHOT_RECHECK: Duration = Duration::from_millis(250);

/// The shortest interval between two unhealthy reports of a watch.
const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The counter of watch consumers re-established (after a reconnect, an error, a resync).
pub(crate) const RESTARTS: &str = "parti_watch_restarts_total";
/// The counter of failed attempts to re-establish a watch consumer.
pub(crate) const FAILURES: &str = "parti_watch_failures_total";

/// What a watch follows.
pub(crate) struct WatchTarget {
    pub(crate) bucket: String,
    /// `$KV.<bucket>.`
    pub(crate) prefix: String,
    /// The consumer's subject filters (one, or one per key of [`WatchKeys::Keys`]).
    pub(crate) filters: Vec<String>,
    /// The exact keys (the filter may be wider than a prefix).
    pub(crate) keys: WatchKeys,
}

/// Which stream revisions came from: its creation time. A bucket deleted and created again, or
/// a memory bucket lost in a restart and provisioned again, is another stream, whose revisions
/// say nothing about the old one's — even when they reach as far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StreamId(DateTime);

impl StreamId {
    fn of(info: &async_nats::jetstream::stream::Info) -> StreamId {
        StreamId(info.created)
    }
}

/// A snapshot being gathered: every matching message up to `target`, folded per key.
struct Snapshot {
    /// The leader's last matching revision when the snapshot started.
    target: u64,
    /// The latest message of each key seen so far: `(revision, value)`, `None` for a tombstone.
    keys: HashMap<String, (u64, Option<Vec<u8>>)>,
}

/// Where the watch stands towards its reader.
enum Phase {
    /// The reader is owed a fresh snapshot: the watch started, or sent `Resync`, and no
    /// snapshot has started since. Only a successful start of one leaves this phase, so a
    /// failed attempt cannot turn it into a resume.
    SnapshotOwed,
    /// A snapshot is being gathered; nothing of it has been delivered yet.
    Gathering(Snapshot),
    /// The snapshot was delivered; live changes after `last` follow.
    Live,
}

/// Why the supervisor stopped reading its consumer.
enum Next {
    /// The reader is gone: stop.
    Stop,
    /// The consumer may have lost its place (a connection transition, an error, a stream
    /// advisory): check the stream and build a new one.
    Rebuild,
}

/// What a stream check finds.
enum History {
    Intact,
    Lost,
    Gone,
}

/// Creates the first consumer (so that errors reach the caller of `watch`) and hands it to a
/// supervising task, all before `deadline`.
pub(crate) async fn start(
    inner: Arc<Inner>,
    store: Arc<kv::Store>,
    target: WatchTarget,
    deadline: Instant,
) -> Result<KvWatch, KvError> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut conn = inner.conn.subscribe();
    // The state now, not a transition.
    let _ = conn.try_next();
    // Stream created / deleted / updated / leader elected, for this bucket's stream: a bucket
    // recreated while the connection stays up is noticed at once. Best effort (the account may
    // not allow it); a missed heartbeat notices it too, later.
    let subject = format!(
        "$JS.EVENT.ADVISORY.STREAM.*.{}",
        shared::stream_name(&target.bucket)
    );
    let advisories = until(deadline, async {
        Ok(inner.client.subscribe(subject).await.ok())
    })
    .await?;
    let mut supervisor = Supervisor {
        inner,
        store,
        target,
        tx,
        conn,
        advisories,
        last: 0,
        stream: None,
        phase: Phase::SnapshotOwed,
        told_gone: false,
    };
    let messages = supervisor.start_snapshot(deadline).await?;
    tokio::spawn(supervisor.run(messages));
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// Creates an ordered push consumer.
async fn establish(
    inner: &Inner,
    store: &kv::Store,
    target: &WatchTarget,
    deliver_policy: DeliverPolicy,
) -> Result<Ordered, KvError> {
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: inner.client.new_inbox(),
            description: Some("parti watch".into()),
            filter_subject: match target.filters.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: match target.filters.as_slice() {
                [_] => Vec::new(),
                many => many.to_vec(),
            },
            replay_policy: ReplayPolicy::Instant,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| error::consumer(&target.bucket, e))?;
    consumer.messages().await.map_err(error::consumer_stream)
}

/// The next stream advisory, or never when there is no subscription.
async fn next_advisory(
    advisories: &mut Option<async_nats::Subscriber>,
) -> Option<async_nats::Message> {
    match advisories {
        Some(subscriber) => subscriber.next().await,
        None => std::future::pending().await,
    }
}

/// The watch's health: backoff, failure logging and unhealthy reports.
struct Health {
    /// Attempts since the last consumer that worked for [`HEALTHY`] (drives the backoff).
    attempts: u32,
    /// Consecutive failed attempts (drives the `warn!` backoff).
    failures: u32,
    /// Since when the watch has had no consumer that worked for [`HEALTHY`].
    since: Option<Instant>,
    /// When the next unhealthy report is due.
    next_report: Option<Instant>,
    /// The last failure, for the logs and the report.
    last_error: Option<KvError>,
}

impl Health {
    fn new() -> Health {
        Health {
            attempts: 0,
            failures: 0,
            since: None,
            next_report: None,
            last_error: None,
        }
    }

    /// The consumer stopped after running `ran`.
    fn consumer_ended(&mut self, now: Instant, ran: Duration, report_after: Duration) {
        if ran >= HEALTHY || self.since.is_none() {
            self.attempts = 0;
            self.since = Some(now);
            self.next_report = Some(now + report_after);
        }
    }

    fn pause(&self, max: Duration) -> Duration {
        if self.attempts == 0 {
            return Duration::ZERO;
        }
        BACKOFF_MIN
            .saturating_mul(2u32.saturating_pow(self.attempts.min(16)))
            .min(max)
    }
}

struct Supervisor {
    inner: Arc<Inner>,
    store: Arc<kv::Store>,
    target: WatchTarget,
    tx: mpsc::Sender<Result<WatchEvent, KvError>>,
    /// Connection transitions, every one of them.
    conn: Transitions,
    /// Stream advisories of the bucket.
    advisories: Option<async_nats::Subscriber>,
    /// The last revision received (delivered or filtered out): nothing at or below it is
    /// delivered again.
    last: u64,
    /// The stream the revisions since the last snapshot came from.
    stream: Option<StreamId>,
    phase: Phase,
    /// Whether the reader was told that the bucket is gone (once per absence).
    told_gone: bool,
}

impl Supervisor {
    fn op_timeout(&self) -> Duration {
        self.inner.config.op_timeout
    }

    /// How long the watch may be without a working consumer before a report, and between
    /// reports (at least [`MIN_REPORT_INTERVAL`], so a zero setting cannot flood the reader).
    fn report_after(&self) -> Duration {
        self.inner
            .config
            .watch_unhealthy_after
            .max(MIN_REPORT_INTERVAL)
    }

    /// Starts a snapshot: asks the stream who it is and the leader how far the snapshot must
    /// reach, then creates a consumer that delivers the last message of every matching key.
    async fn start_snapshot(&mut self, deadline: Instant) -> Result<Ordered, KvError> {
        let bucket = &self.target.bucket;
        let (info, target) = until(deadline, async {
            futures::try_join!(
                async {
                    self.store
                        .stream
                        .get_info()
                        .await
                        .map_err(|e| error::stream_info(bucket, e))
                },
                shared::last_matching_any(&self.store.stream, bucket, &self.target.filters),
            )
        })
        .await?;
        let messages = until(
            deadline,
            establish(
                &self.inner,
                &self.store,
                &self.target,
                DeliverPolicy::LastPerSubject,
            ),
        )
        .await?;
        self.last = 0;
        self.stream = Some(StreamId::of(&info));
        self.phase = Phase::Gathering(Snapshot {
            target,
            keys: HashMap::new(),
        });
        Ok(messages)
    }

    async fn run(mut self, first: Ordered) {
        let bucket = self.target.bucket.clone();
        let report_after = self.report_after();
        let mut consumer = Some(first);
        let mut health = Health::new();
        loop {
            if let Some(messages) = consumer.take() {
                // Nothing matched on the leader: the snapshot is empty and complete.
                if matches!(&self.phase, Phase::Gathering(s) if s.target == 0)
                    && !self.complete_snapshot().await
                {
                    return;
                }
                let began = Instant::now();
                let next = self.follow(messages).await;
                health.consumer_ended(Instant::now(), began.elapsed(), report_after);
                // An interrupted snapshot delivered nothing: start it again, without a Resync.
                if matches!(self.phase, Phase::Gathering(_)) {
                    self.phase = Phase::SnapshotOwed;
                }
                if matches!(next, Next::Stop) {
                    return;
                }
            }
            if !self.wait_for_attempt(&mut health).await {
                return;
            }
            match self.reestablish().await {
                Ok(Some(messages)) => {
                    metrics::counter!(RESTARTS, "bucket" => bucket.clone()).increment(1);
                    if health.failures > 0 {
                        tracing::info!(bucket = %bucket, failures = health.failures, "watch re-established");
                    }
                    health.failures = 0;
                    health.last_error = None;
                    self.told_gone = false;
                    consumer = Some(messages);
                }
                Ok(None) => return,
                Err(err) => {
                    metrics::counter!(FAILURES, "bucket" => bucket.clone()).increment(1);
                    health.failures = health.failures.saturating_add(1);
                    let down = health.since.map(|s| s.elapsed()).unwrap_or_default();
                    if health.failures.is_power_of_two() {
                        tracing::warn!(bucket = %bucket, failures = health.failures, ?down, error = %err, "watch not re-established; retrying with backoff");
                    } else {
                        tracing::debug!(bucket = %bucket, failures = health.failures, ?down, error = %err, "watch not re-established");
                    }
                    if matches!(err, KvError::BucketNotFound { .. })
                        && !(self.lose().await && self.tell_gone().await)
                    {
                        return;
                    }
                    health.last_error = Some(err);
                }
            }
        }
    }

    /// Waits until the next attempt to re-establish is due: at once after a consumer that
    /// worked, after a growing pause otherwise, and only while connected (a reconnect is an
    /// attempt's cue). Sends the unhealthy reports that fall due meanwhile. `false` when the
    /// reader is gone.
    async fn wait_for_attempt(&mut self, health: &mut Health) -> bool {
        let report_after = self.report_after();
        loop {
            let now = Instant::now();
            if health.next_report.is_some_and(|due| due <= now) {
                let down = health.since.map(|s| now - s).unwrap_or_default();
                let why = match (&health.last_error, self.inner.conn.current()) {
                    (_, ConnectionState::Disconnected) => "not connected to NATS".to_owned(),
                    (Some(KvError::Timeout), _) => {
                        "no answer within the operation timeout".to_owned()
                    }
                    (Some(err), _) => err.to_string(),
                    (None, _) => "re-establishing".to_owned(),
                };
                let report = KvError::Unavailable {
                    reason: format!(
                        "watch of bucket {:?} not working for {down:?}: {why}",
                        self.target.bucket
                    ),
                };
                if self.tx.send(Err(report)).await.is_err() {
                    return false;
                }
                health.next_report = Some(now + report_after);
                continue;
            }
            let connected = self.inner.conn.current() == ConnectionState::Connected;
            let pause = health.pause(self.inner.config.watch_backoff_max.max(BACKOFF_MIN));
            if connected && pause.is_zero() {
                break;
            }
            let wake = connected.then(|| now + pause);
            let report = health.next_report;
            tokio::select! {
                biased;
                () = self.tx.closed() => return false,
                state = self.conn.next() => {
                    if state == Some(ConnectionState::Connected) {
                        break;
                    }
                }
                () = sleep_until(report), if report.is_some() => {}
                () = sleep_until(wake), if wake.is_some() => break,
            }
        }
        health.attempts = health.attempts.saturating_add(1);
        true
    }

    /// The watch's delivered state is void: tell the reader (`Resync`) if it was given any, and
    /// owe it a fresh snapshot. `false` when the reader is gone.
    async fn lose(&mut self) -> bool {
        let delivered = matches!(self.phase, Phase::Live);
        self.phase = Phase::SnapshotOwed;
        self.last = 0;
        self.stream = None;
        if delivered {
            tracing::info!(bucket = %self.target.bucket, "watch lost its history; resyncing");
            return self.tx.send(Ok(WatchEvent::Resync)).await.is_ok();
        }
        true
    }

    /// Tells the reader, once per absence, that the bucket is gone. `false` when the reader is
    /// gone.
    async fn tell_gone(&mut self) -> bool {
        if self.told_gone {
            return true;
        }
        self.told_gone = true;
        let gone = KvError::BucketNotFound {
            bucket: self.target.bucket.clone(),
        };
        self.tx.send(Err(gone)).await.is_ok()
    }

    /// Sends the gathered snapshot (live values in revision order) and the marker; `false`
    /// when the reader is gone.
    async fn complete_snapshot(&mut self) -> bool {
        let Phase::Gathering(snapshot) = std::mem::replace(&mut self.phase, Phase::Live) else {
            return true;
        };
        let mut live: Vec<(u64, String, Vec<u8>)> = snapshot
            .keys
            .into_iter()
            .filter_map(|(key, (revision, value))| value.map(|v| (revision, key, v)))
            .collect();
        live.sort_by_key(|(revision, _, _)| *revision);
        for (revision, key, value) in live {
            let event = KvEvent {
                key,
                revision: Revision(revision),
                op: KvOperation::Put(value),
            };
            if self.tx.send(Ok(WatchEvent::Change(event))).await.is_err() {
                return false;
            }
        }
        self.tx.send(Ok(WatchEvent::SnapshotComplete)).await.is_ok()
    }

    /// Builds a new consumer, all within one operation timeout: after a delivered snapshot,
    /// from the last revision if the stream is the same and still reaches that far (else
    /// `Resync` and a fresh snapshot); when a snapshot is owed, a fresh snapshot.
    /// `Ok(None)`: the reader is gone.
    async fn reestablish(&mut self) -> Result<Option<Ordered>, KvError> {
        let deadline = Instant::now() + self.op_timeout();
        if matches!(self.phase, Phase::Live) {
            match self.check(deadline).await? {
                History::Intact => {
                    let policy = DeliverPolicy::ByStartSequence {
                        start_sequence: self.last + 1,
                    };
                    let messages = until(
                        deadline,
                        establish(&self.inner, &self.store, &self.target, policy),
                    )
                    .await?;
                    return Ok(Some(messages));
                }
                History::Lost => {
                    if !self.lose().await {
                        return Ok(None);
                    }
                }
                History::Gone => {
                    return Err(KvError::BucketNotFound {
                        bucket: self.target.bucket.clone(),
                    });
                }
            }
        }
        self.start_snapshot(deadline).await.map(Some)
    }

    /// Whether the stream still holds what this watch has received: the same stream (same
    /// creation time), its last revision not below the last one received.
    async fn check(&self, deadline: Instant) -> Result<History, KvError> {
        let bucket = &self.target.bucket;
        let info = until(deadline, async {
            self.store
                .stream
                .get_info()
                .await
                .map_err(|e| error::stream_info(bucket, e))
        })
        .await;
        match info {
            Ok(info) => {
                let same = self.stream == Some(StreamId::of(&info));
                Ok(if same && info.state.last_sequence >= self.last {
                    History::Intact
                } else {
                    History::Lost
                })
            }
            Err(KvError::BucketNotFound { .. }) => Ok(History::Gone),
            Err(err) => Err(err),
        }
    }

    /// Reads the consumer until it fails, the reader goes away, the connection changes, or a
    /// stream advisory arrives.
    async fn follow(&mut self, mut messages: Ordered) -> Next {
        loop {
            let gathering = matches!(self.phase, Phase::Gathering(_));
            tokio::select! {
                biased;
                () = self.tx.closed() => return Next::Stop,
                // A disconnect or a reconnect: wherever the consumer stands now (gone with a
                // restarted server, resumed on a recreated stream), it is rebuilt after a check.
                Some(_) = self.conn.next() => return Next::Rebuild,
                // The stream was deleted, created, updated or got a new leader (an R1 watch
                // consumer on a node that died is gone with it): rebuild after a check, rather
                // than wait for two missed heartbeats.
                advisory = next_advisory(&mut self.advisories) => {
                    if advisory.is_none() {
                        self.advisories = None;
                        continue;
                    }
                    return Next::Rebuild;
                }
                item = messages.next() => match item {
                    None => return Next::Rebuild,
                    Some(Err(err)) => {
                        // A missed heartbeat included: the consumer is gone (a restarted server,
                        // a deleted stream); build the next one ourselves, after a check.
                        tracing::debug!(bucket = %self.target.bucket, error = %error::ordered(err), "watch consumer failed; re-establishing");
                        return Next::Rebuild;
                    }
                    Some(Ok(message)) => {
                        if !self.deliver(&message).await {
                            return Next::Stop;
                        }
                    }
                },
                // A snapshot waits for the leader's last matching revision; if that message
                // expired meanwhile it never comes: after a quiet spell, ask the leader again.
                () = tokio::time::sleep(SNAPSHOT_RECHECK), if gathering => {
                    let deadline = Instant::now() + self.op_timeout();
                    let asked = until(
                        deadline,
                        shared::last_matching_any(&self.store.stream, &self.target.bucket, &self.target.filters),
                    )
                    .await;
                    if let Ok(now) = asked {
                        let reached = now <= self.last;
                        if let Phase::Gathering(snapshot) = &mut self.phase {
                            snapshot.target = now;
                        }
                        if reached && !self.complete_snapshot().await {
                            return Next::Stop;
                        }
                    }
                }
            }
        }
    }

    /// Handles one message: folded into the snapshot being gathered, or forwarded as a live
    /// change; `false` when the reader is gone.
    async fn deliver(&mut self, message: &async_nats::jetstream::Message) -> bool {
        let sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(err) => {
                let err = error::malformed(&format!("watch message metadata: {err}"));
                tracing::warn!(bucket = %self.target.bucket, error = %err, "skipping a watch message");
                return true;
            }
        };
        if sequence <= self.last {
            return true;
        }
        self.last = sequence;
        let key = message.subject.as_str().strip_prefix(&self.target.prefix);
        let key = key.filter(|key| self.target.keys.matches(key));
        if let Phase::Gathering(snapshot) = &mut self.phase {
            if let Some(key) = key {
                let value = match operation(message) {
                    KvOperationKind::Put => Some(message.payload.to_vec()),
                    KvOperationKind::Delete | KvOperationKind::Purge => None,
                };
                snapshot.keys.insert(key.to_owned(), (sequence, value));
            }
            if sequence >= snapshot.target {
                return self.complete_snapshot().await;
            }
            return true;
        }
        let Some(key) = key else {
            return true;
        };
        let event = KvEvent {
            key: key.to_owned(),
            revision: Revision(sequence),
            op: match operation(message) {
                KvOperationKind::Put => KvOperation::Put(message.payload.to_vec()),
                KvOperationKind::Delete => KvOperation::Delete,
                KvOperationKind::Purge => KvOperation::Purge,
            },
        };
        self.tx.send(Ok(WatchEvent::Change(event))).await.is_ok()
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvOperationKind {
    Put,
    Delete,
    Purge,
}

fn operation(message: &async_nats::jetstream::Message) -> KvOperationKind {
    let Some(headers) = message.headers.as_ref() else {
        return KvOperationKind::Put;
    };
    if let Some(op) = headers.get(KV_OPERATION) {
        return match op.as_str() {
            "PURGE" => KvOperationKind::Purge,
            _ => KvOperationKind::Delete,
        };
    }
    match headers.get(MARKER_REASON).map(|r| r.as_str()) {
        Some("Remove") => KvOperationKind::Delete,
        Some(_) => KvOperationKind::Purge,
        None => KvOperationKind::Put,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut health = Health::new();
        assert_eq!(health.pause(Duration::from_secs(2)), Duration::ZERO);
        health.attempts = 1;
        assert_eq!(health.pause(Duration::from_secs(2)), BACKOFF_MIN * 2);
        health.attempts = 30;
        assert_eq!(health.pause(Duration::from_secs(2)), Duration::from_secs(2));
    }
}
