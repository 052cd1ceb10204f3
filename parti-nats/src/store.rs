//! [`NatsStore`]: the [`KvStore`] port over NATS JetStream KV.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use async_nats::{Client, ConnectOptions};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parti_core::store::{
    BucketSpec, ConnectionState, ConnectionWatch, KvEntry, KvError, KvStore, KvWatch, OnMismatch,
    Provisioned, StorageKind, WatchKeys,
};
use parti_core::types::Revision;
use tokio::sync::watch;

use crate::error::{self, ConnectError};
use crate::watch::{self as kvwatch, WatchTarget};

/// The header NATS KV uses to mark deletes and purges.
pub(crate) const KV_OPERATION: &str = "KV-Operation";
/// The header of server-written limit markers (per-message TTL, max age with markers).
pub(crate) const MARKER_REASON: &str = "Nats-Marker-Reason";

/// Settings of a [`NatsStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStoreConfig {
    /// Bound on every operation (provision, read, write, listing, starting a watch). When it
    /// runs out the operation fails with [`KvError::Timeout`]; for a write that means *unknown
    /// outcome*. Default 5 s (the async-nats publish ack timeout).
    pub op_timeout: Duration,
    /// Whether an operation started while the client is disconnected fails at once with
    /// [`KvError::Unavailable`] (and is not sent), instead of being queued by async-nats and
    /// waiting up to `op_timeout`. Default `true`: a write refused this way was certainly not
    /// applied, which is better than an unknown outcome.
    pub fail_fast_when_disconnected: bool,
    /// Longest pause between two attempts to re-establish a watch. Default 2 s.
    pub watch_backoff_max: Duration,
    /// How often the connection state is sampled when the store was built from a [`Client`]
    /// (a store that connected itself gets async-nats connection events instead). Default 100 ms.
    pub state_poll_interval: Duration,
}

impl Default for NatsStoreConfig {
    fn default() -> Self {
        NatsStoreConfig {
            op_timeout: Duration::from_secs(5),
            fail_fast_when_disconnected: true,
            watch_backoff_max: Duration::from_secs(2),
            state_poll_interval: Duration::from_millis(100),
        }
    }
}

impl NatsStoreConfig {
    /// The default settings with another operation timeout.
    #[must_use]
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }
}

/// A [`KvStore`] over NATS JetStream Key-Value.
///
/// Cheap to clone (an `Arc` inside). Operations take `&self` and never lock around the client,
/// so independent operations are in flight together (pipelined on one connection).
///
/// - Every operation is bounded by [`NatsStoreConfig::op_timeout`]; a timed-out write is
///   reported as [`KvError::Timeout`] and never retried here. Only refusals that prove the
///   write was not stored ("no responders" during a leader election, or a clustered leader's
///   "another write to this key is in flight", 10164) are sent again, within the timeout.
/// - [`KvStore::entry`] reads through the stream leader (`STREAM.MSG.GET`), never a direct get
///   that a lagging follower might answer.
/// - Watches are ordered push consumers that re-establish themselves after disconnects and
///   server restarts from the last revision seen, with backoff; see [`KvStore::watch`] below.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: NatsStoreConfig,
    /// Opened buckets. Shared handles: a `kv::Store` carries the whole stream info, too big
    /// to clone on every operation.
    buckets: RwLock<HashMap<String, Arc<kv::Store>>>,
    pub(crate) state: Arc<watch::Sender<ConnectionState>>,
}

impl fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("config", &self.inner.config)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

fn map_state(state: &async_nats::connection::State) -> ConnectionState {
    match state {
        async_nats::connection::State::Connected => ConnectionState::Connected,
        async_nats::connection::State::Pending | async_nats::connection::State::Disconnected => {
            ConnectionState::Disconnected
        }
    }
}

impl NatsStore {
    /// Connects to `addrs` with `options` (credentials, TLS, reconnect policy pass through),
    /// checks the server version, and follows connection events for
    /// [`KvStore::connection`].
    ///
    /// `options`' own event callback is replaced; use [`NatsStore::from_client`] to keep it.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Connect`] if the connection fails, [`ConnectError::UnsupportedServer`]
    /// for servers older than 2.10, [`ConnectError::JetStreamDisabled`] without JetStream.
    pub async fn connect(
        addrs: impl async_nats::ToServerAddrs,
        options: ConnectOptions,
        config: NatsStoreConfig,
    ) -> Result<NatsStore, ConnectError> {
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let state = Arc::new(state);
        let events = Arc::clone(&state);
        let options = options.event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                let next = match event {
                    async_nats::Event::Connected => ConnectionState::Connected,
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        ConnectionState::Disconnected
                    }
                    // Per-attempt reconnect errors and the rest say nothing new about the state.
                    _ => return,
                };
                events.send_if_modified(|current| {
                    let changed = *current != next;
                    *current = next;
                    changed
                });
            }
        });
        let client = options
            .connect(addrs)
            .await
            .map_err(ConnectError::Connect)?;
        NatsStore::build(client, config, None, Some(state))
    }

    /// Connects to a URL, or several separated by commas (`nats://a:4222,nats://b:4222`), with
    /// default options (see [`NatsStore::connect`]).
    ///
    /// # Errors
    ///
    /// As [`NatsStore::connect`].
    /// It reconnects quickly after an outage (pauses of 100 ms per failed attempt, at most
    /// 1 s) instead of async-nats' default exponential backoff up to 4 s.
    pub async fn connect_url(
        url: &str,
        config: NatsStoreConfig,
    ) -> Result<NatsStore, ConnectError> {
        let options = ConnectOptions::new().reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        });
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        NatsStore::connect(urls, options, config).await
    }

    /// Wraps an already connected client. The connection state is sampled every
    /// [`NatsStoreConfig::state_poll_interval`] (the client's event callback stays the caller's).
    ///
    /// # Errors
    ///
    /// [`ConnectError::UnsupportedServer`] for servers older than 2.10,
    /// [`ConnectError::JetStreamDisabled`] without JetStream.
    pub fn from_client(client: Client, config: NatsStoreConfig) -> Result<NatsStore, ConnectError> {
        let poll = config.state_poll_interval;
        NatsStore::build(client, config, Some(poll), None)
    }

    fn build(
        client: Client,
        config: NatsStoreConfig,
        poll: Option<Duration>,
        state: Option<Arc<watch::Sender<ConnectionState>>>,
    ) -> Result<NatsStore, ConnectError> {
        let info = client.server_info();
        error::check_server_version(&info.version)?;
        if !info.jetstream {
            return Err(ConnectError::JetStreamDisabled {
                version: info.version,
            });
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(config.op_timeout)
            .build(client.clone());
        let now = map_state(&client.connection_state());
        let state = state.unwrap_or_else(|| Arc::new(watch::channel(now).0));
        // Events may already have set the state; the client's own view wins at start.
        state.send_if_modified(|current| {
            let changed = *current != now;
            *current = now;
            changed
        });
        let inner = Arc::new(Inner {
            client,
            js,
            config,
            buckets: RwLock::new(HashMap::new()),
            state,
        });
        if let Some(interval) = poll {
            tokio::spawn(poll_state(Arc::downgrade(&inner), interval));
        }
        Ok(NatsStore { inner })
    }

    /// The server version the client is connected to.
    #[must_use]
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &NatsStoreConfig {
        &self.inner.config
    }

    /// The name of the server the client is connected to (to find a stream leader in tests).
    #[must_use]
    pub fn server_name(&self) -> String {
        self.inner.client.server_info().server_name
    }

    /// The name of the server leading the bucket's stream, if known (for fault tests and
    /// operations tooling).
    ///
    /// # Errors
    ///
    /// As any operation: [`KvError::BucketNotFound`], [`KvError::Timeout`], …
    pub async fn stream_leader(&self, bucket: &str) -> Result<Option<String>, KvError> {
        let store = self.bucket(bucket).await?;
        let info = self
            .timed(async {
                store
                    .stream
                    .get_info()
                    .await
                    .map_err(|e| error::stream_info(bucket, e))
            })
            .await?;
        Ok(info.cluster.and_then(|c| c.leader))
    }

    async fn timed<T>(&self, fut: impl Future<Output = Result<T, KvError>>) -> Result<T, KvError> {
        tokio::time::timeout(self.inner.config.op_timeout, fut)
            .await
            .map_err(|_| KvError::Timeout)?
    }

    fn ensure_connected(&self) -> Result<(), KvError> {
        if self.inner.config.fail_fast_when_disconnected
            && self.inner.client.connection_state() != async_nats::connection::State::Connected
        {
            return Err(KvError::Unavailable {
                reason: "not connected to NATS (the client is reconnecting); not sent".into(),
            });
        }
        Ok(())
    }

    /// The bucket's handle, opened (one stream info request) on first use.
    pub(crate) async fn bucket(&self, bucket: &str) -> Result<Arc<kv::Store>, KvError> {
        if let Some(store) = self.cached(bucket) {
            return Ok(store);
        }
        self.ensure_connected()?;
        let store = self
            .timed(async {
                self.inner
                    .js
                    .get_key_value(bucket)
                    .await
                    .map_err(|e| error::open_bucket(bucket, e))
            })
            .await?;
        Ok(self.remember(bucket, store))
    }

    fn cached(&self, bucket: &str) -> Option<Arc<kv::Store>> {
        // A poisoned lock only means another thread panicked while inserting; the map is
        // still a valid cache.
        let map = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(bucket).cloned()
    }

    fn remember(&self, bucket: &str, store: kv::Store) -> Arc<kv::Store> {
        let mut map = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = Arc::new(store);
        map.insert(bucket.to_owned(), Arc::clone(&store));
        store
    }

    fn subject(bucket: &str, key: &str) -> Result<String, KvError> {
        validate_key(key)?;
        Ok(format!("$KV.{bucket}.{key}"))
    }

    /// Publishes one message to a key; returns the new revision.
    async fn publish(
        &self,
        bucket: &str,
        key: &str,
        message: jetstream::message::PublishMessage,
    ) -> Result<Revision, KvError> {
        let subject = Self::subject(bucket, key)?;
        // Opening the bucket first turns "no such bucket" into BucketNotFound rather than a
        // no-responders error.
        self.bucket(bucket).await?;
        self.ensure_connected()?;
        self.timed(async {
            // Two refusals are definite — the message was certainly not stored — so the write
            // is sent again, a few milliseconds apart, while time is left (at most 80 % of the
            // operation timeout, so that the caller still learns the refusal rather than a
            // timeout):
            // - "no responders": nobody listened on the key's subject (a new replicated
            //   bucket whose leader's interest has not reached our server yet, or a leader
            //   election);
            // - 10164: a clustered leader refuses an expected-sequence write while another
            //   write to the same key is still being replicated.
            // Any other failure, a timeout above all, is returned as is and never retried.
            let give_up = tokio::time::Instant::now() + self.inner.config.op_timeout.mul_f32(0.8);
            let mut pause = Duration::from_millis(1);
            loop {
                let ack = self
                    .inner
                    .js
                    .send_publish(subject.clone(), message.clone())
                    .await
                    .map_err(error::publish)?;
                let refused = match ack.await {
                    Ok(ack) => return Ok(Revision(ack.sequence)),
                    Err(err)
                        if error::is_in_flight_conflict(&err)
                            || err.kind()
                                == jetstream::context::PublishErrorKind::StreamNotFound =>
                    {
                        error::publish(err)
                    }
                    Err(err) => return Err(error::publish(err)),
                };
                if tokio::time::Instant::now() + pause > give_up {
                    return Err(refused);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        })
        .await
    }

    /// The last message of a key, through the stream leader: `(revision, Some(value))` for a
    /// live value, `(revision, None)` for a tombstone, `None` if the key has no message.
    async fn last(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Revision, Option<Vec<u8>>)>, KvError> {
        let subject = Self::subject(bucket, key)?;
        let store = self.bucket(bucket).await?;
        self.ensure_connected()?;
        self.timed(async {
            match store.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => {
                    let deleted = message.headers.get(KV_OPERATION).is_some()
                        || message.headers.get(MARKER_REASON).is_some();
                    let value = (!deleted).then(|| message.payload.to_vec());
                    Ok(Some((Revision(message.sequence), value)))
                }
                Err(err)
                    if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    Ok(None)
                }
                Err(err) => Err(error::last_message(bucket, err)),
            }
        })
        .await
    }

    /// After a revision conflict: the key's live revision (`None` if it has no live value),
    /// falling back to what the server said when the re-read fails.
    ///
    /// A revision not above `expected` is never reported: on a cluster the conflicting write
    /// may still be in flight (error 10164) when the key is re-read, and the key then still
    /// shows the expected revision; the current revision is then unknown (`None`).
    async fn current_after_conflict(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
        err: KvError,
    ) -> KvError {
        let KvError::RevisionMismatch { current } = err else {
            return err;
        };
        let reread = match self.last(bucket, key).await {
            Ok(Some((revision, Some(_)))) => Some(revision),
            Ok(Some((_, None)) | None) => None,
            Err(_) => current,
        };
        let current = reread.filter(|now| expected.is_none_or(|expected| *now > expected));
        KvError::RevisionMismatch { current }
    }

    async fn provision_inner(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        let wanted = kv_config(spec);
        let stream_name = format!("KV_{}", spec.name);
        // Two attempts: a concurrent provisioner may create the bucket between our look-up and
        // our create.
        let mut last_err = None;
        for _ in 0..2 {
            let existing = match self.inner.js.get_stream(&stream_name).await {
                Ok(stream) => Some(stream.cached_info().config.clone()),
                Err(err) => match error::get_stream(&spec.name, &err) {
                    KvError::BucketNotFound { .. } => None,
                    other => return Err(other),
                },
            };
            let Some(existing) = existing else {
                match self.inner.js.create_key_value(wanted.clone()).await {
                    Ok(store) => {
                        self.wait_for_leader(&store).await;
                        self.remember(&spec.name, store);
                        return Ok(Provisioned::Created);
                    }
                    Err(err) => {
                        let err = error::create_bucket(err);
                        if err.is_connectivity() {
                            return Err(err);
                        }
                        tracing::debug!(bucket = %spec.name, error = %err, "bucket create failed; checking again");
                        last_err = Some(err);
                        continue;
                    }
                }
            };
            let changes = differences(spec, &existing);
            if changes.is_empty() {
                let store = self
                    .inner
                    .js
                    .get_key_value(&spec.name)
                    .await
                    .map_err(|e| error::open_bucket(&spec.name, e))?;
                self.remember(&spec.name, store);
                return Ok(Provisioned::Existing);
            }
            return match on_mismatch {
                OnMismatch::Fail => {
                    let (field, existing, wanted) = changes
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| ("config".into(), "?".into(), "?".into()));
                    Err(KvError::BucketMismatch {
                        bucket: spec.name.clone(),
                        field,
                        existing,
                        wanted,
                    })
                }
                OnMismatch::Reconcile => {
                    tracing::warn!(bucket = %spec.name, ?changes, "reconciling bucket configuration");
                    let store = self
                        .inner
                        .js
                        .update_key_value(wanted.clone())
                        .await
                        .map_err(|e| error::update_bucket(&spec.name, e))?;
                    self.wait_for_leader(&store).await;
                    self.remember(&spec.name, store);
                    Ok(Provisioned::Reconciled { changes })
                }
            };
        }
        Err(last_err.unwrap_or_else(|| KvError::Unavailable {
            reason: format!(
                "bucket {:?} could neither be created nor found (concurrent provisioning?)",
                spec.name
            ),
        }))
    }
}

impl NatsStore {
    /// After creating or updating a replicated bucket, waits until its stream answers with a
    /// leader, so that the first write does not meet "no responders". Bounded by the caller's
    /// operation timeout; a single server answers at once.
    async fn wait_for_leader(&self, store: &kv::Store) {
        for attempt in 0u32..50 {
            if let Ok(info) = store.stream.get_info().await
                && info.cluster.as_ref().is_none_or(|c| c.leader.is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(5)) * 10 + 5)).await;
        }
    }
}

/// Samples the client's connection state until the store is dropped.
async fn poll_state(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let next = map_state(&inner.client.connection_state());
        inner.state.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

/// Checks a key against the NATS KV key syntax (`[-/_=.a-zA-Z0-9]+`, no leading or trailing
/// `.`), before it becomes part of a subject.
pub(crate) fn validate_key(key: &str) -> Result<(), KvError> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(KvError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

fn kv_config(spec: &BucketSpec) -> kv::Config {
    kv::Config {
        bucket: spec.name.clone(),
        history: i64::from(spec.history.max(1)),
        max_age: spec.max_age.unwrap_or(Duration::ZERO),
        num_replicas: spec.replicas.max(1),
        storage: match spec.storage {
            StorageKind::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        ..Default::default()
    }
}

/// The spec a bucket's stream has, in the port's terms.
fn existing_spec(name: &str, existing: &jetstream::stream::Config) -> BucketSpec {
    BucketSpec {
        name: name.to_owned(),
        history: u8::try_from(existing.max_messages_per_subject.max(1)).unwrap_or(u8::MAX),
        max_age: (!existing.max_age.is_zero()).then_some(existing.max_age),
        replicas: existing.num_replicas.max(1),
        storage: match existing.storage {
            StorageType::Memory => StorageKind::Memory,
            StorageType::File => StorageKind::File,
        },
    }
}

/// What differs between a bucket's stream and the spec: `(field, existing, wanted)`, as
/// [`BucketSpec::mismatches`] says it (the same words as every other store).
fn differences(
    spec: &BucketSpec,
    existing: &jetstream::stream::Config,
) -> Vec<(String, String, String)> {
    let wanted = BucketSpec {
        history: spec.history.max(1),
        replicas: spec.replicas.max(1),
        ..spec.clone()
    };
    existing_spec(&spec.name, existing).mismatches(&wanted)
}

#[async_trait]
impl KvStore for NatsStore {
    async fn provision(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        self.ensure_connected()?;
        self.timed(self.provision_inner(spec, on_mismatch)).await
    }

    async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        Ok(match self.last(bucket, key).await? {
            Some((revision, Some(value))) => Some(KvEntry {
                key: key.to_owned(),
                value,
                revision,
            }),
            Some((_, None)) | None => None,
        })
    }

    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        let value = Bytes::from(value);
        let attempt = |expected: u64| {
            jetstream::message::PublishMessage::build()
                .payload(value.clone())
                .expected_last_subject_sequence(expected)
        };
        // Expected sequence 0 succeeds if the key never had a message (or it expired). If the
        // key's last message is a tombstone, create over it by compare-and-set on the
        // tombstone's revision. Bounded: a key that keeps changing under us is "already exists".
        let mut expected = 0;
        for _ in 0..3 {
            match self.publish(bucket, key, attempt(expected)).await {
                Ok(revision) => return Ok(revision),
                Err(KvError::RevisionMismatch { .. }) => match self.last(bucket, key).await? {
                    None => expected = 0,
                    Some((revision, None)) => expected = revision.get(),
                    Some((_, Some(_))) => return Err(KvError::AlreadyExists),
                },
                Err(other) => return Err(other),
            }
        }
        Err(KvError::AlreadyExists)
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, KvError> {
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(value))
            .expected_last_subject_sequence(expected.get());
        match self.publish(bucket, key, message).await {
            Err(err @ KvError::RevisionMismatch { .. }) => Err(self
                .current_after_conflict(bucket, key, Some(expected), err)
                .await),
            other => other,
        }
    }

    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        let message = jetstream::message::PublishMessage::build().payload(Bytes::from(value));
        self.publish(bucket, key, message).await
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(), KvError> {
        let mut message = jetstream::message::PublishMessage::build().header(KV_OPERATION, "DEL");
        if let Some(expected) = expected {
            message = message.expected_last_subject_sequence(expected.get());
        }
        match self.publish(bucket, key, message).await {
            Ok(_) => Ok(()),
            Err(err @ KvError::RevisionMismatch { .. }) => Err(self
                .current_after_conflict(bucket, key, expected, err)
                .await),
            Err(other) => Err(other),
        }
    }

    /// Lists keys with a short-lived pull consumer (last message per key, headers only),
    /// fetched without waiting: the listing ends when the server says there is nothing more,
    /// so a key expiring during the listing cannot stall it (async-nats' `keys()` then waits
    /// for an idle heartbeat, 5 s).
    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        let store = self.bucket(bucket).await?;
        self.ensure_connected()?;
        let filter = kvwatch::prefix_filter(bucket, prefix);
        let subject_prefix = format!("$KV.{bucket}.");
        self.timed(async {
            // The consumer may live on a follower that lags behind the leader: the listing is
            // complete only once it has reached the leader's last matching revision.
            let mut target = kvwatch::last_matching(&store.stream, bucket, &filter).await?;
            let consumer = store
                .stream
                .create_consumer(jetstream::consumer::pull::Config {
                    filter_subject: filter.clone(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    headers_only: true,
                    memory_storage: true,
                    // One replica: no consumer election on a cluster.
                    num_replicas: 1,
                    inactive_threshold: Duration::from_secs(5),
                    description: Some("parti keys".into()),
                    ..Default::default()
                })
                .await
                .map_err(|e| error::consumer(bucket, e))?;
            // The latest message of each key, folded in revision order: `true` if live.
            let mut latest: HashMap<String, bool> = HashMap::new();
            let mut seen = 0u64;
            // Each round fetches up to 1024 messages without waiting. Rounds stop when one
            // returns nothing and the leader's revision was reached. On a cluster the new
            // consumer's interest may not have reached the client's server yet (503 no
            // responders): a read, so fetched again. All within the operation timeout.
            let mut idle_rounds = 0u32;
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1024)
                    .messages()
                    .await
                    .map_err(error::fetch)?;
                let mut received = 0usize;
                let mut not_ready = false;
                while let Some(message) = batch.next().await {
                    let message = match message.map_err(error::fetch_item) {
                        Ok(message) => message,
                        Err(KvError::Unavailable { .. }) if received == 0 => {
                            not_ready = true;
                            break;
                        }
                        Err(err) => return Err(err),
                    };
                    received += 1;
                    if let Ok(info) = message.info() {
                        seen = seen.max(info.stream_sequence);
                    }
                    let deleted = message.headers.as_ref().is_some_and(|h| {
                        h.get(KV_OPERATION).is_some() || h.get(MARKER_REASON).is_some()
                    });
                    if let Some(key) = message.subject.as_str().strip_prefix(&subject_prefix) {
                        latest.insert(key.to_owned(), !deleted);
                    }
                }
                if received > 0 {
                    idle_rounds = 0;
                    continue;
                }
                if !not_ready && seen >= target {
                    break;
                }
                idle_rounds += 1;
                // The leader's last message may have expired meanwhile: ask again now and then.
                if idle_rounds.is_multiple_of(8) {
                    target = kvwatch::last_matching(&store.stream, bucket, &filter).await?;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut keys: Vec<String> = latest
                .into_iter()
                .filter(|(key, live)| *live && key.starts_with(prefix))
                .map(|(key, _)| key)
                .collect();
            let name = consumer.cached_info().name.clone();
            let stream = store.stream.clone();
            // Best effort: the server also removes it after 5 s of inactivity.
            tokio::spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
            keys.sort();
            Ok(keys)
        })
        .await
    }

    /// Follows `keys` with an ordered push consumer: the last message of every matching key
    /// (deleted keys are left out of the snapshot), then [`parti_core::store::WatchEvent::SnapshotComplete`] —
    /// also on an empty bucket, decided from the consumer's pending count at creation — then
    /// every change.
    ///
    /// After a disconnect or a server restart the watch resumes from the last revision it
    /// delivered (never delivering a revision twice). A bucket with `history = 1` keeps only
    /// the latest value of each key, so a resumed watch catches up with the latest value of
    /// every key changed meanwhile, skipping superseded intermediate values (revision order
    /// holds). If the stream lost data (its last revision is below the last one delivered,
    /// e.g. a memory bucket after a restart) the watch sends
    /// [`parti_core::store::WatchEvent::Resync`] and a fresh snapshot. If the bucket is gone
    /// it yields [`KvError::BucketNotFound`] and ends.
    async fn watch(&self, bucket: &str, keys: WatchKeys) -> Result<KvWatch, KvError> {
        let filters = match &keys {
            WatchKeys::Key(key) => vec![Self::subject(bucket, key)?],
            WatchKeys::Prefix(prefix) => vec![kvwatch::prefix_filter(bucket, prefix)],
            // One consumer with several filter subjects (server 2.10+, checked at connect), so
            // the keys arrive through one stream in revision order.
            WatchKeys::Keys(list) => {
                let mut subjects = list
                    .iter()
                    .map(|key| Self::subject(bucket, key))
                    .collect::<Result<Vec<_>, _>>()?;
                subjects.sort();
                subjects.dedup();
                if subjects.is_empty() {
                    // An empty filter list would mean *every* key: follow one placeholder key
                    // instead; `WatchKeys::Keys([])` matches no key, so nothing is delivered
                    // even if someone writes it.
                    vec![format!("$KV.{bucket}.parti-no-key")]
                } else {
                    subjects
                }
            }
        };
        let store = self.bucket(bucket).await?;
        self.ensure_connected()?;
        let target = WatchTarget {
            bucket: bucket.to_owned(),
            prefix: format!("$KV.{bucket}."),
            filters,
            keys,
        };
        let inner = Arc::clone(&self.inner);
        self.timed(kvwatch::start(inner, store, target)).await
    }

    fn connection(&self) -> ConnectionWatch {
        let rx = self.inner.state.subscribe();
        Box::pin(futures::stream::unfold(
            (rx, true),
            |(mut rx, first)| async move {
                if first {
                    let state = *rx.borrow_and_update();
                    return Some((state, (rx, false)));
                }
                rx.changed().await.ok()?;
                let state = *rx.borrow_and_update();
                Some((state, (rx, false)))
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_nats_syntax() {
        for good in ["a", "w.worker-7", "x/y=z_1", "A.b.C"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "*", ">", "a.*", "é"] {
            assert_eq!(
                validate_key(bad),
                Err(KvError::InvalidKey { key: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn differences_name_each_field() {
        let spec = BucketSpec {
            name: "b".into(),
            history: 1,
            max_age: Some(Duration::from_secs(10)),
            replicas: 1,
            storage: StorageKind::File,
        };
        let mut existing = jetstream::stream::Config {
            max_age: Duration::from_secs(10),
            max_messages_per_subject: 1,
            num_replicas: 1,
            storage: StorageType::File,
            ..Default::default()
        };
        assert!(differences(&spec, &existing).is_empty());
        existing.max_age = Duration::from_secs(20);
        existing.max_messages_per_subject = 5;
        let changes = differences(&spec, &existing);
        assert_eq!(changes[0], ("max_age".into(), "20s".into(), "10s".into()));
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1], ("history".into(), "5".into(), "1".into()));
    }
}
