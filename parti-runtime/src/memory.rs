//! [`MemoryStore`]: the embedded, in-process [`KvStore`].

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::stream::{self, Stream, StreamExt};
use parking_lot::Mutex;
use parti_core::Revision;
use parti_core::store::model::{StoreModel, WatcherId};
use parti_core::store::{
    BucketSpec, ConnectionState, ConnectionWatch, KvEntry, KvError, KvStore, KvWatch, OnMismatch,
    Provisioned, WatchEvent, WatchKeys,
};
use tokio::sync::mpsc;

/// An in-process [`KvStore`] with the semantics of NATS JetStream KV: the reference
/// [`StoreModel`] of `parti-core` behind a mutex, with tokio's clock for max-age expiry.
///
/// It is the embedded default that runs a whole cluster inside one process with no server, and
/// the store the contract suite (`parti-testkit`) holds NATS to. A cheap [`Clone`] handle: every
/// clone is the same store.
///
/// - **Time** is `tokio::time::Instant::now()`, so tests with paused tokio time expire values
///   when the virtual clock passes their max age.
/// - **Watches** are fed under the store's lock as each write is applied, so every watch sees
///   writes in revision order. A watch buffers without bound: in-process there is no flow control
///   to push back on writers, so a watch that is never polled keeps every change it was sent
///   until it is dropped (dropping it unregisters it).
/// - **Values** are limited to [`MemoryStore::DEFAULT_MAX_VALUE_BYTES`] (1 MiB, a NATS server's
///   default `max_payload`), so an embedded cluster meets the limit where a NATS one would; a
///   larger value fails with [`KvError::ValueTooLarge`]. [`MemoryStore::with_max_value_bytes`]
///   changes it.
/// - **Never fails with a connectivity error**: [`KvStore::connection`] reports
///   [`ConnectionState::Connected`] once and nothing after it; operations complete at once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), parti_core::store::KvError> {
/// use std::time::Duration;
/// use parti_core::store::{BucketSpec, KvStore, OnMismatch, StorageKind};
/// use parti_runtime::MemoryStore;
///
/// let store = MemoryStore::new();
/// let spec = BucketSpec {
///     name: "demo-ids".into(),
///     history: 1,
///     max_age: Some(Duration::from_secs(30)),
///     replicas: 1,
///     storage: StorageKind::Memory,
/// };
/// store.provision(&spec, OnMismatch::Fail).await?;
/// let rev = store.create("demo-ids", "worker-1", b"me".to_vec()).await?;
/// assert_eq!(store.entry("demo-ids", "worker-1").await?.map(|e| e.revision), Some(rev));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    model: StoreModel,
    /// Where each registered watcher's events go.
    senders: BTreeMap<WatcherId, mpsc::UnboundedSender<WatchEvent>>,
}

impl State {
    /// Moves every queued watch event from the model to its watch stream. Called under the lock
    /// after every operation that can queue events, so streams receive them in revision order.
    fn flush(&mut self) {
        while let Some(id) = self.model.poll_woken() {
            let Some(sender) = self.senders.get(&id) else {
                // The stream is gone (dropped between the write and this flush).
                self.model.unwatch(id);
                continue;
            };
            let mut closed = false;
            while let Some(event) = self.model.poll_watch(id) {
                if sender.send(event).is_err() {
                    closed = true;
                    break;
                }
            }
            if closed {
                self.senders.remove(&id);
                self.model.unwatch(id);
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// The largest value stored by default: 1 MiB, as a NATS server's default `max_payload`.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

    /// An empty store: no buckets; values up to [`Self::DEFAULT_MAX_VALUE_BYTES`].
    #[must_use]
    pub fn new() -> Self {
        let store = MemoryStore {
            shared: Arc::default(),
        };
        store.with_model(|m, _| m.set_max_value_bytes(Some(Self::DEFAULT_MAX_VALUE_BYTES)));
        store
    }

    /// The same store, refusing values larger than `limit` bytes from now on (`None`: no
    /// limit).
    #[must_use]
    pub fn with_max_value_bytes(self, limit: Option<usize>) -> Self {
        self.with_model(|m, _| m.set_max_value_bytes(limit));
        self
    }

    /// Runs `f` on the store's model under its lock, then delivers whatever watch events `f`
    /// queued. For tests and tools that need a step the port does not offer (for example
    /// [`StoreModel::resync_watch`] to inject a lost watch, or [`StoreModel::purge`]).
    ///
    /// The lock is not reentrant: `f` must not use this store (nor drop one of its watches).
    pub fn with_model<R>(&self, f: impl FnOnce(&mut StoreModel, Instant) -> R) -> R {
        let mut state = self.shared.state.lock();
        let result = f(&mut state.model, now());
        state.flush();
        result
    }

    /// Runs one read under the lock.
    fn read<R>(&self, op: impl FnOnce(&StoreModel, Instant) -> R) -> R {
        let state = self.shared.state.lock();
        op(&state.model, now())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("MemoryStore")
            .field("watches", &state.senders.len())
            .finish_non_exhaustive()
    }
}

/// The store's clock: tokio's, so paused-time tests control expiry.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[async_trait::async_trait]
impl KvStore for MemoryStore {
    async fn provision(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        let outcome = self.with_model(|m, _| m.provision(spec, on_mismatch))?;
        if let Provisioned::Reconciled { changes } = &outcome {
            tracing::warn!(bucket = %spec.name, ?changes, "bucket reconciled to the configured spec");
        }
        Ok(outcome)
    }

    async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.read(|m, now| m.entry(bucket, key, now))
    }

    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        self.with_model(|m, now| m.create(bucket, key, value, now))
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, KvError> {
        self.with_model(|m, now| m.update(bucket, key, value, expected, now))
    }

    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        self.with_model(|m, now| m.put(bucket, key, value, now))
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(), KvError> {
        self.with_model(|m, now| m.delete(bucket, key, expected, now))
            .map(|_| ())
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.read(|m, now| m.keys(bucket, prefix, now))
    }

    async fn watch(&self, bucket: &str, keys: WatchKeys) -> Result<KvWatch, KvError> {
        let mut state = self.shared.state.lock();
        let id = state.model.watch(bucket, keys, now())?;
        let (sender, receiver) = mpsc::unbounded_channel();
        state.senders.insert(id, sender);
        state.flush();
        Ok(Box::pin(MemoryWatch {
            id,
            receiver,
            shared: Arc::clone(&self.shared),
        }))
    }

    fn connection(&self) -> ConnectionWatch {
        Box::pin(stream::once(async { ConnectionState::Connected }).chain(stream::pending()))
    }
}

/// A watch on a [`MemoryStore`]; unregisters itself when dropped.
struct MemoryWatch {
    id: WatcherId,
    receiver: mpsc::UnboundedReceiver<WatchEvent>,
    shared: Arc<Shared>,
}

impl Stream for MemoryWatch {
    type Item = Result<WatchEvent, KvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx).map(|event| event.map(Ok))
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders.remove(&self.id);
        state.model.unwatch(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{FutureExt, StreamExt};
    use parti_core::store::{KvEvent, KvOperation, StorageKind};

    use super::*;

    fn spec(name: &str, max_age: Option<Duration>) -> BucketSpec {
        BucketSpec {
            name: name.into(),
            history: 1,
            max_age,
            replicas: 1,
            storage: StorageKind::Memory,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_drives_expiry() {
        let store = MemoryStore::new();
        store
            .provision(&spec("b", Some(Duration::from_secs(5))), OnMismatch::Fail)
            .await
            .unwrap();
        store.put("b", "k", b"v".to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(4999)).await;
        assert!(store.entry("b", "k").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(store.entry("b", "k").await, Ok(None));
        assert_eq!(store.keys("b", "").await, Ok(vec![]));
    }

    #[tokio::test]
    async fn watches_are_fed_and_unregistered_on_drop() {
        let store = MemoryStore::new();
        store
            .provision(&spec("b", None), OnMismatch::Fail)
            .await
            .unwrap();
        let rev = store.put("b", "k", b"1".to_vec()).await.unwrap();
        let mut watch = store.watch("b", WatchKeys::Key("k".into())).await.unwrap();
        let clone = store.clone();
        let writer = tokio::spawn(async move {
            clone.delete("b", "k", Some(rev)).await.unwrap();
        });
        let first = watch.next().await;
        assert_eq!(
            first,
            Some(Ok(WatchEvent::Change(KvEvent {
                key: "k".into(),
                revision: rev,
                op: KvOperation::Put(b"1".to_vec()),
            })))
        );
        assert_eq!(watch.next().await, Some(Ok(WatchEvent::SnapshotComplete)));
        writer.await.unwrap();
        assert_eq!(
            watch.next().await,
            Some(Ok(WatchEvent::Change(KvEvent {
                key: "k".into(),
                revision: rev.next(),
                op: KvOperation::Delete,
            })))
        );
        assert!(format!("{store:?}").contains("watches: 1"));
        drop(watch);
        assert!(format!("{store:?}").contains("watches: 0"));
        store.put("b", "k", b"2".to_vec()).await.unwrap();
    }

    /// Writers on several threads, several watches: each watch sees every write once, in
    /// strictly increasing revision order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_and_watches_keep_revision_order() {
        const WRITERS: usize = 4;
        const WRITES: usize = 50;
        let store = MemoryStore::new();
        store
            .provision(&spec("b", None), OnMismatch::Fail)
            .await
            .unwrap();
        let mut watches = Vec::new();
        for _ in 0..3 {
            let mut watch = store
                .watch("b", WatchKeys::Prefix(String::new()))
                .await
                .unwrap();
            assert_eq!(watch.next().await, Some(Ok(WatchEvent::SnapshotComplete)));
            watches.push(watch);
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..WRITES {
                        store.put("b", &format!("w{w}"), vec![0; i]).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        for mut watch in watches {
            let mut last = Revision::ZERO;
            for _ in 0..WRITERS * WRITES {
                let Some(Ok(WatchEvent::Change(change))) = watch.next().await else {
                    panic!("a change");
                };
                assert!(change.revision > last);
                last = change.revision;
            }
            assert_eq!(last, Revision((WRITERS * WRITES) as u64));
            assert_eq!(watch.next().now_or_never(), None, "nothing more");
        }
    }

    #[tokio::test]
    async fn connection_reports_connected_once() {
        let store = MemoryStore::new();
        let mut connection = store.connection();
        assert_eq!(connection.next().await, Some(ConnectionState::Connected));
        assert_eq!(
            connection.next().now_or_never(),
            None,
            "nothing after the first state"
        );
    }

    #[tokio::test]
    async fn with_model_injects_a_resync() {
        let store = MemoryStore::new();
        store
            .provision(&spec("b", None), OnMismatch::Fail)
            .await
            .unwrap();
        let mut watch = store
            .watch("b", WatchKeys::Prefix(String::new()))
            .await
            .unwrap();
        assert_eq!(watch.next().await, Some(Ok(WatchEvent::SnapshotComplete)));
        // The first watcher of a store is number 0.
        assert!(store.with_model(|m, now| m.resync_watch(WatcherId(0), now)));
        assert_eq!(watch.next().await, Some(Ok(WatchEvent::Resync)));
        assert_eq!(watch.next().await, Some(Ok(WatchEvent::SnapshotComplete)));
    }
}
