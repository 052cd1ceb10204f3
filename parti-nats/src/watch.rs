//! Watches that survive disconnects: an ordered push consumer per watch, supervised by a task.
//!
//! async-nats' ordered consumer already recreates itself after a reconnect or a sequence gap,
//! resuming from the last stream sequence it delivered. This module adds what the port
//! promises on top:
//!
//! - the snapshot marker, decided from the consumer's pending count at creation (async-nats
//!   yields nothing at all on an empty bucket);
//! - at-most-once delivery: a revision at or below the last one delivered is dropped;
//! - detection of lost history after a reconnect (the stream's last revision is below the last
//!   one delivered): [`WatchEvent::Resync`] and a fresh snapshot;
//! - re-establishment with backoff when the consumer fails for good, from the last revision
//!   delivered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig, OrderedErrorKind};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
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

/// What a watch follows.
pub(crate) struct WatchTarget {
    pub(crate) bucket: String,
    /// `$KV.<bucket>.`
    pub(crate) prefix: String,
    /// The consumer's subject filter.
    pub(crate) filter: String,
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

/// Creates the first consumer (so that errors reach the caller of `watch`) and hands it to a
/// supervising task.
pub(crate) async fn start(
    inner: Arc<Inner>,
    store: kv::Store,
    target: WatchTarget,
) -> Result<KvWatch, KvError> {
    let (messages, pending) =
        establish(&inner, &store, &target, DeliverPolicy::LastPerSubject).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let supervisor = Supervisor {
        inner,
        store,
        target,
        tx,
        last: 0,
        snapshot_done: false,
    };
    tokio::spawn(supervisor.run(messages, pending));
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// Creates an ordered push consumer; returns its messages and its pending count at creation.
async fn establish(
    inner: &Inner,
    store: &kv::Store,
    target: &WatchTarget,
    deliver_policy: DeliverPolicy,
) -> Result<(Ordered, u64), KvError> {
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: inner.client.new_inbox(),
            description: Some("parti watch".into()),
            filter_subject: target.filter.clone(),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| error::consumer(&target.bucket, e))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer.messages().await.map_err(error::consumer_stream)?;
    Ok((messages, pending))
}

struct Supervisor {
    inner: Arc<Inner>,
    store: kv::Store,
    target: WatchTarget,
    tx: mpsc::Sender<Result<WatchEvent, KvError>>,
    /// The last revision received (delivered or filtered out): nothing at or below it is
    /// delivered again.
    last: u64,
    snapshot_done: bool,
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
    async fn run(mut self, messages: Ordered, pending: u64) {
        let mut current = Some((messages, pending));
        let mut attempt: u32 = 0;
        loop {
            let next = match current.take() {
                Some((messages, pending)) => {
                    attempt = 0;
                    if !self.snapshot_done && pending == 0 && !self.snapshot_complete().await {
                        return;
                    }
                    self.follow(messages).await
                }
                None => Next::Rebuild,
            };
            match next {
                Next::Stop => return,
                Next::Rebuild | Next::Resync => {
                    if matches!(next, Next::Resync) {
                        self.reset_for_resync();
                        if self.tx.send(Ok(WatchEvent::Resync)).await.is_err() {
                            return;
                        }
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
                    match self.reestablish().await {
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

    fn reset_for_resync(&mut self) {
        self.last = 0;
        self.snapshot_done = false;
    }

    async fn snapshot_complete(&mut self) -> bool {
        self.snapshot_done = true;
        self.tx.send(Ok(WatchEvent::SnapshotComplete)).await.is_ok()
    }

    /// Builds a new consumer: from the last revision if the snapshot was delivered and the
    /// stream still reaches that far, else (after a `Resync`) with a fresh snapshot.
    /// `Ok(None)`: the watch ended (bucket gone, reader gone).
    async fn reestablish(&mut self) -> Result<Option<(Ordered, u64)>, KvError> {
        let timeout = self.inner.config.op_timeout;
        let info = tokio::time::timeout(timeout, self.store.stream.get_info())
            .await
            .map_err(|_| KvError::Timeout)?;
        let last_sequence = match info {
            Ok(info) => info.state.last_sequence,
            Err(err) => {
                let err = error::stream_info(&self.target.bucket, err);
                return self.fatal_or_retry(err).await;
            }
        };
        let policy = if self.snapshot_done && last_sequence >= self.last {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.last + 1,
            }
        } else {
            if self.last > 0 || self.snapshot_done {
                // History is gone or the snapshot was interrupted: start over, and say so.
                self.reset_for_resync();
                if self.tx.send(Ok(WatchEvent::Resync)).await.is_err() {
                    return Ok(None);
                }
            }
            DeliverPolicy::LastPerSubject
        };
        let established = tokio::time::timeout(
            timeout,
            establish(&self.inner, &self.store, &self.target, policy),
        )
        .await
        .map_err(|_| KvError::Timeout)?;
        match established {
            Ok((messages, pending)) => {
                // A resumed watch has no snapshot phase: its pending count means nothing here.
                Ok(Some((messages, pending)))
            }
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
                    if self.history_lost().await {
                        return Next::Resync;
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
                }
            }
        }
    }

    /// Whether the stream's last revision is below the last one this watch received (the
    /// server lost data). Unknown (request failed) counts as not lost: the consumer resumes.
    async fn history_lost(&self) -> bool {
        // The server may still be recovering its streams right after a restart: a few tries.
        for _ in 0..5 {
            let info =
                tokio::time::timeout(self.inner.config.op_timeout, self.store.stream.get_info())
                    .await;
            if let Ok(Ok(info)) = info {
                return info.state.last_sequence < self.last;
            }
            tokio::time::sleep(BACKOFF_MIN).await;
        }
        false
    }

    /// Forwards one message; `false` when the reader is gone.
    async fn deliver(&mut self, message: &async_nats::jetstream::Message) -> bool {
        let info = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(err) => {
                let err = error::malformed(&format!("watch message metadata: {err}"));
                tracing::warn!(bucket = %self.target.bucket, error = %err, "skipping a watch message");
                return true;
            }
        };
        let (sequence, pending) = info;
        if sequence > self.last {
            self.last = sequence;
            let key = message.subject.as_str().strip_prefix(&self.target.prefix);
            if let Some(key) = key
                && self.target.keys.matches(key)
            {
                let op = operation(message);
                // The snapshot holds current values: a key whose last message is a tombstone
                // has none.
                let skip = !self.snapshot_done && op != KvOperationKind::Put;
                if !skip {
                    let event = KvEvent {
                        key: key.to_owned(),
                        revision: Revision(sequence),
                        op: match op {
                            KvOperationKind::Put => KvOperation::Put(message.payload.to_vec()),
                            KvOperationKind::Delete => KvOperation::Delete,
                            KvOperationKind::Purge => KvOperation::Purge,
                        },
                    };
                    if self.tx.send(Ok(WatchEvent::Change(event))).await.is_err() {
                        return false;
                    }
                }
            }
        }
        if !self.snapshot_done && pending == 0 {
            return self.snapshot_complete().await;
        }
        true
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
