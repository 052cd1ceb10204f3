//! Watches that survive disconnects: an ordered push consumer per watch, supervised by a task.
//!
//! async-nats' ordered consumer already recreates itself after a reconnect or a sequence gap,
//! resuming from the last stream sequence it delivered. This module adds what the port
//! promises on top:
//!
//! - a snapshot that is never older than the watch: the stream leader is asked for the last
//!   matching revision first, and the consumer (which may live on a lagging follower) is read
//!   until it has reached it; the messages up to there are folded per key, so the snapshot holds
//!   each key's latest live value, in revision order, and then the marker — also on an empty
//!   bucket, where async-nats yields nothing at all;
//! - at-most-once delivery: a revision at or below the last one delivered is dropped;
//! - detection of lost history after a reconnect (the stream's last revision is below the last
//!   one delivered): [`WatchEvent::Resync`] and a fresh snapshot;
//! - re-establishment with backoff when the consumer fails for good, from the last revision
//!   delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig, OrderedErrorKind};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use parti_core::store::{
    ConnectionState, KvError, KvEvent, KvOperation, KvWatch, WatchEvent, WatchKeys,
};
use parti_core::types::Revision;
use tokio::sync::mpsc;

use crate::error;
use crate::store::{Inner, KV_OPERATION, MARKER_REASON};

/// Items buffered between the supervising task and the watch's reader. When full, the task
/// stops reading and the server's flow control holds further messages.
const BUFFER: usize = 256;
/// First pause before re-establishing a failed watch.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How long a consumer must have run for its failure to reset the backoff.
const HEALTHY: Duration = Duration::from_secs(5);
/// How long a snapshot waits without any message before asking the leader again how far it
/// must reach.
const SNAPSHOT_RECHECK: Duration = Duration::from_millis(250);

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

/// The widest subject filter that a key prefix can use: NATS wildcards match whole tokens, so
/// `w.` becomes `$KV.b.w.>`, `w.ab` also `$KV.b.w.>` (refined on the client), `worker-` the
/// whole bucket.
pub(crate) fn prefix_filter(bucket: &str, prefix: &str) -> String {
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'='))
    };
    match prefix.rfind('.') {
        Some(dot) if prefix[..dot].split('.').all(token_ok) => {
            format!("$KV.{bucket}.{}.>", &prefix[..dot])
        }
        _ => format!("$KV.{bucket}.>"),
    }
}

/// The revision of the last message matching `filter`, asked of the stream leader (0 if no
/// message matches). A consumer may live on a follower that lags behind the leader; a snapshot
/// or a listing is complete only once it has seen this revision.
pub(crate) async fn last_matching(
    stream: &async_nats::jetstream::stream::Stream,
    bucket: &str,
    filter: &str,
) -> Result<u64, KvError> {
    match stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(message.sequence),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(err) => Err(error::last_message(bucket, err)),
    }
}

/// The largest [`last_matching`] revision over several filters (asked together).
async fn last_matching_any(
    stream: &async_nats::jetstream::stream::Stream,
    bucket: &str,
    filters: &[String],
) -> Result<u64, KvError> {
    let each = futures::future::join_all(
        filters
            .iter()
            .map(|filter| last_matching(stream, bucket, filter)),
    )
    .await;
    let mut last = 0;
    for revision in each {
        last = last.max(revision?);
    }
    Ok(last)
}

/// Creates the first consumer (so that errors reach the caller of `watch`) and hands it to a
/// supervising task.
pub(crate) async fn start(
    inner: Arc<Inner>,
    store: Arc<kv::Store>,
    target: WatchTarget,
) -> Result<KvWatch, KvError> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut supervisor = Supervisor {
        inner,
        store,
        target,
        tx,
        last: 0,
        snapshot: None,
    };
    let messages = supervisor.start_snapshot().await?;
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

/// A snapshot being gathered: every matching message up to `target`, folded per key.
struct Snapshot {
    /// The leader's last matching revision when the snapshot started.
    target: u64,
    /// The latest message of each key seen so far: `(revision, value)`, `None` for a tombstone.
    keys: HashMap<String, (u64, Option<Vec<u8>>)>,
}

struct Supervisor {
    inner: Arc<Inner>,
    store: Arc<kv::Store>,
    target: WatchTarget,
    tx: mpsc::Sender<Result<WatchEvent, KvError>>,
    /// The last revision received (delivered or filtered out): nothing at or below it is
    /// delivered again.
    last: u64,
    /// `Some` while a snapshot is being gathered.
    snapshot: Option<Snapshot>,
}

/// What a reconnected watch finds on the server.
enum History {
    /// Everything it has seen is still there: the consumer resumes.
    Intact,
    /// The stream's last revision is below the last one seen: data was lost.
    Lost,
    /// The bucket is gone.
    Gone,
}

/// Why the supervisor stopped reading its consumer.
enum Next {
    /// The reader is gone (or the watch ended with an error): stop.
    Stop,
    /// The consumer failed: build a new one.
    Rebuild,
    /// The stream lost history: resync.
    Resync,
}

impl Supervisor {
    fn op_timeout(&self) -> Duration {
        self.inner.config.op_timeout
    }

    /// Starts a snapshot: asks the leader how far it must reach, then creates a consumer that
    /// delivers the last message of every matching key.
    async fn start_snapshot(&mut self) -> Result<Ordered, KvError> {
        let target = tokio::time::timeout(
            self.op_timeout(),
            last_matching_any(
                &self.store.stream,
                &self.target.bucket,
                &self.target.filters,
            ),
        )
        .await
        .map_err(|_| KvError::Timeout)??;
        let messages = tokio::time::timeout(
            self.op_timeout(),
            establish(
                &self.inner,
                &self.store,
                &self.target,
                DeliverPolicy::LastPerSubject,
            ),
        )
        .await
        .map_err(|_| KvError::Timeout)??;
        self.last = 0;
        self.snapshot = Some(Snapshot {
            target,
            keys: HashMap::new(),
        });
        Ok(messages)
    }

    async fn run(mut self, messages: Ordered) {
        let mut current = Some(messages);
        let mut attempt: u32 = 0;
        loop {
            let next = match current.take() {
                Some(messages) => {
                    // Nothing matched on the leader: the snapshot is empty and complete.
                    if self.snapshot.as_ref().is_some_and(|s| s.target == 0)
                        && !self.complete_snapshot().await
                    {
                        return;
                    }
                    let began = tokio::time::Instant::now();
                    let next = self.follow(messages).await;
                    // Back off afresh only after a consumer that worked for a while: one that
                    // fails at once keeps the backoff growing (no hot loop).
                    if began.elapsed() >= HEALTHY {
                        attempt = 0;
                    }
                    next
                }
                None => Next::Rebuild,
            };
            match next {
                Next::Stop => return,
                Next::Rebuild | Next::Resync => {
                    if matches!(next, Next::Resync) {
                        if self.tx.send(Ok(WatchEvent::Resync)).await.is_err() {
                            return;
                        }
                        self.snapshot = None;
                        self.last = 0;
                    }
                    if attempt > 0 {
                        let pause = BACKOFF_MIN
                            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                            .min(self.inner.config.watch_backoff_max);
                        tokio::select! {
                            () = self.tx.closed() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    attempt = attempt.saturating_add(1);
                    match self.reestablish(matches!(next, Next::Resync)).await {
                        Ok(Some(found)) => current = Some(found),
                        Ok(None) => return,
                        Err(err) => {
                            tracing::debug!(bucket = %self.target.bucket, error = %err, "watch not re-established yet");
                        }
                    }
                }
            }
        }
    }

    /// Sends the gathered snapshot (live values in revision order) and the marker; `false`
    /// when the reader is gone.
    async fn complete_snapshot(&mut self) -> bool {
        let Some(snapshot) = self.snapshot.take() else {
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

    /// Builds a new consumer: from the last revision if the snapshot was delivered and the
    /// stream still reaches that far, else (after a `Resync`) with a fresh snapshot.
    /// `Ok(None)`: the watch ended (bucket gone, reader gone).
    async fn reestablish(&mut self, resynced: bool) -> Result<Option<Ordered>, KvError> {
        let info = tokio::time::timeout(self.op_timeout(), self.store.stream.get_info())
            .await
            .map_err(|_| KvError::Timeout)?;
        let last_sequence = match info {
            Ok(info) => info.state.last_sequence,
            Err(err) => {
                let err = error::stream_info(&self.target.bucket, err);
                return self.fatal_or_retry(err).await;
            }
        };
        let resumable = self.snapshot.is_none() && !resynced && last_sequence >= self.last;
        if resumable {
            let policy = DeliverPolicy::ByStartSequence {
                start_sequence: self.last + 1,
            };
            let established = tokio::time::timeout(
                self.op_timeout(),
                establish(&self.inner, &self.store, &self.target, policy),
            )
            .await
            .map_err(|_| KvError::Timeout)?;
            return match established {
                Ok(messages) => Ok(Some(messages)),
                Err(err) => self.fatal_or_retry(err).await,
            };
        }
        // History is gone or a snapshot was interrupted: start over, and say so (unless the
        // caller already did, or nothing was delivered yet).
        // (An interrupted snapshot delivered nothing: it is gathered before it is sent.)
        let delivered = self.snapshot.is_none();
        if !resynced && delivered && self.tx.send(Ok(WatchEvent::Resync)).await.is_err() {
            return Ok(None);
        }
        match self.start_snapshot().await {
            Ok(messages) => Ok(Some(messages)),
            Err(err) => self.fatal_or_retry(err).await,
        }
    }

    async fn fatal_or_retry<T>(&mut self, err: KvError) -> Result<Option<T>, KvError> {
        match err {
            KvError::BucketNotFound { .. } => {
                let _ = self.tx.send(Err(err)).await;
                Ok(None)
            }
            other => Err(other),
        }
    }

    /// Reads the consumer until it fails, the reader goes away, or history is found lost
    /// after a reconnect.
    async fn follow(&mut self, mut messages: Ordered) -> Next {
        let mut state = self.inner.state.subscribe();
        let mut state_alive = true;
        let mut was_down = *state.borrow_and_update() == ConnectionState::Disconnected;
        let mut check_history = false;
        loop {
            let gathering = self.snapshot.is_some();
            tokio::select! {
                biased;
                () = self.tx.closed() => return Next::Stop,
                changed = state.changed(), if state_alive => {
                    if changed.is_err() {
                        state_alive = false;
                        continue;
                    }
                    match *state.borrow_and_update() {
                        ConnectionState::Disconnected => was_down = true,
                        ConnectionState::Connected => {
                            if was_down {
                                was_down = false;
                                check_history = true;
                            }
                        }
                    }
                }
                () = std::future::ready(()), if check_history => {
                    check_history = false;
                    match self.check_history().await {
                        History::Intact => {}
                        History::Lost => return Next::Resync,
                        History::Gone => {
                            let gone = KvError::BucketNotFound {
                                bucket: self.target.bucket.clone(),
                            };
                            let _ = self.tx.send(Err(gone)).await;
                            return Next::Stop;
                        }
                    }
                }
                item = messages.next() => match item {
                    None => return Next::Rebuild,
                    Some(Err(err)) => {
                        if err.kind() == OrderedErrorKind::MissingHeartbeat {
                            // Not terminal: the consumer recreates itself once the server is back.
                            continue;
                        }
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
                    if let Ok(Ok(now)) = tokio::time::timeout(
                        self.op_timeout(),
                        last_matching_any(&self.store.stream, &self.target.bucket, &self.target.filters),
                    )
                    .await
                    {
                        let reached = now <= self.last;
                        if let Some(snapshot) = self.snapshot.as_mut() {
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

    /// Whether the stream still holds what this watch has seen: its last revision must not be
    /// below the last one received (else the server lost data), and it must exist. Unknown
    /// (the requests keep failing) counts as intact: the consumer resumes by itself.
    async fn check_history(&self) -> History {
        // The server may still be recovering its streams right after a restart: a few tries.
        for _ in 0..5 {
            let info = tokio::time::timeout(self.op_timeout(), self.store.stream.get_info()).await;
            match info {
                Ok(Ok(info)) if info.state.last_sequence < self.last => return History::Lost,
                Ok(Ok(_)) => return History::Intact,
                Ok(Err(err)) => {
                    if let KvError::BucketNotFound { .. } =
                        error::stream_info(&self.target.bucket, err)
                    {
                        return History::Gone;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(BACKOFF_MIN).await;
        }
        History::Intact
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
        if let Some(snapshot) = self.snapshot.as_mut() {
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
    fn prefixes_become_token_filters() {
        assert_eq!(prefix_filter("b", ""), "$KV.b.>");
        assert_eq!(prefix_filter("b", "w."), "$KV.b.w.>");
        assert_eq!(prefix_filter("b", "w.ab"), "$KV.b.w.>");
        assert_eq!(prefix_filter("b", "a.b.c"), "$KV.b.a.b.>");
        assert_eq!(prefix_filter("b", "worker-"), "$KV.b.>");
        assert_eq!(prefix_filter("b", "*.x"), "$KV.b.>");
        assert_eq!(prefix_filter("b", ".x"), "$KV.b.>");
    }
}
