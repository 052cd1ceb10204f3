//! A [`KvStore`] wrapper that can be cut off from its store: the embedded store's stand-in for a
//! network partition, so runtime tests on `MemoryStore` with paused time can cut one worker off
//! (its own [`Switch`]) or take the whole store down (one switch shared by every worker).
//!
//! While cut: every operation fails at once with [`KvError::Unavailable`] (it never reaches the
//! store), watches deliver nothing (their items wait, as a resumable watch's would, and arrive
//! after the heal), and the connection stream reports `Disconnected`; after the heal,
//! `Connected`. [`Switch::end_watches`] ends every open watch (its stream returns `None`), as a
//! watch whose server-side consumer is gone.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::StreamExt;
use parking_lot::Mutex;
use parti_core::Revision;
use parti_core::store::{
    BucketSpec, ConnectionState, ConnectionWatch, KvEntry, KvError, KvStore, KvWatch, OnMismatch,
    Provisioned, WatchEvent, WatchKeys,
};
use tokio::sync::watch;

/// Cuts and heals every [`FaultyStore`] made with it; a cheap `Clone`.
#[derive(Clone, Debug)]
pub struct Switch {
    shared: Arc<SwitchState>,
}

#[derive(Debug)]
struct SwitchState {
    cut: AtomicBool,
    /// Bumped by [`Switch::end_watches`]: a watch opened before the bump ends.
    watch_epoch: AtomicU64,
    connection: watch::Sender<ConnectionState>,
    /// The waker of every open watch, by watch number.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_watch: AtomicU64,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            shared: Arc::new(SwitchState {
                cut: AtomicBool::new(false),
                watch_epoch: AtomicU64::new(0),
                connection: watch::channel(ConnectionState::Connected).0,
                wakers: Mutex::new(HashMap::new()),
                next_watch: AtomicU64::new(0),
            }),
        }
    }
}

impl Switch {
    /// A switch that is on (connected).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts every store made with this switch off.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.connection.send_if_modified(|c| {
            std::mem::replace(c, ConnectionState::Disconnected) != ConnectionState::Disconnected
        });
    }

    /// Connects them again; held watch items flow.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.wake_watches();
        self.shared.connection.send_if_modified(|c| {
            std::mem::replace(c, ConnectionState::Connected) != ConnectionState::Connected
        });
    }

    /// Ends every watch open now through a store of this switch (their streams return `None`,
    /// as a watch whose consumer is gone does); watches opened later are not affected.
    pub fn end_watches(&self) {
        self.shared.watch_epoch.fetch_add(1, Ordering::SeqCst);
        self.wake_watches();
    }

    fn wake_watches(&self) {
        for w in self.shared.wakers.lock().values() {
            w.wake_by_ref();
        }
    }

    /// Whether it is cut now.
    #[must_use]
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// `store` behind this switch.
    pub fn wrap(&self, store: impl KvStore) -> FaultyStore {
        FaultyStore {
            inner: Arc::new(store),
            switch: self.clone(),
        }
    }
}

/// A store behind a [`Switch`].
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn KvStore>,
    switch: Switch,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("cut", &self.switch.is_cut())
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    fn check(&self) -> Result<(), KvError> {
        if self.switch.is_cut() {
            Err(KvError::Unavailable {
                reason: "cut off (test switch)".to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl KvStore for FaultyStore {
    async fn provision(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        self.check()?;
        self.inner.provision(spec, on_mismatch).await
    }

    async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.check()?;
        self.inner.entry(bucket, key).await
    }

    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        self.check()?;
        self.inner.create(bucket, key, value).await
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, KvError> {
        self.check()?;
        self.inner.update(bucket, key, value, expected).await
    }

    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        self.check()?;
        self.inner.put(bucket, key, value).await
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(), KvError> {
        self.check()?;
        self.inner.delete(bucket, key, expected).await
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.check()?;
        self.inner.keys(bucket, prefix).await
    }

    async fn watch(&self, bucket: &str, keys: WatchKeys) -> Result<KvWatch, KvError> {
        self.check()?;
        let inner = self.inner.watch(bucket, keys).await?;
        let shared = &self.switch.shared;
        Ok(Box::pin(HeldWatch {
            inner,
            switch: self.switch.clone(),
            id: shared.next_watch.fetch_add(1, Ordering::SeqCst),
            epoch: shared.watch_epoch.load(Ordering::SeqCst),
        }))
    }

    fn connection(&self) -> ConnectionWatch {
        let rx = self.switch.shared.connection.subscribe();
        Box::pin(futures::stream::unfold(
            (rx, true),
            |(mut rx, first)| async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let state = *rx.borrow_and_update();
                Some((state, (rx, false)))
            },
        ))
    }
}

/// A watch whose items wait while the switch is cut, and that ends at [`Switch::end_watches`].
struct HeldWatch {
    inner: KvWatch,
    switch: Switch,
    id: u64,
    epoch: u64,
}

impl Stream for HeldWatch {
    type Item = Result<WatchEvent, KvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let shared = self.switch.shared.clone();
        shared.wakers.lock().insert(self.id, cx.waker().clone());
        if shared.watch_epoch.load(Ordering::SeqCst) > self.epoch {
            return Poll::Ready(None);
        }
        if self.switch.is_cut() {
            return Poll::Pending;
        }
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for HeldWatch {
    fn drop(&mut self) {
        self.switch.shared.wakers.lock().remove(&self.id);
    }
}
