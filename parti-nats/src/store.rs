//! [`NatsStore`]: the [`KvStore`] port over NATS JetStream KV.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{Client, ConnectOptions};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parti_core::store::{
    BucketSpec, ConnectionState, ConnectionWatch, KvEntry, KvError, KvStore, KvWatch, OnMismatch,
    Provisioned, WatchKeys,
};
use parti_core::types::Revision;
use tokio::time::Instant;

use crate::config::NatsStoreConfig;
use crate::connection::ConnectionHub;
use crate::error::{self, ConnectError};
use crate::shared::{self, Inner, KV_OPERATION, until};
use crate::watch::{self as kvwatch, WatchTarget};

/// A [`KvStore`] over NATS JetStream Key-Value.
///
/// Cheap to clone (an `Arc` inside). Operations take `&self` and never lock around the client,
/// so independent operations are in flight together (pipelined on one connection).
///
/// - Every call is bounded, from start to return, by [`NatsStoreConfig::op_timeout`]; a
///   timed-out write is reported as [`KvError::Timeout`] and never retried here. Only refusals
///   that prove the write was not stored ("no responders" during a leader election, or a
///   clustered leader's "another write to this key is in flight", 10164) are sent again,
///   within the same timeout.
/// - [`KvStore::entry`] reads through the stream leader (`STREAM.MSG.GET`), never a direct get
///   that a lagging follower might answer.
/// - Watches are ordered push consumers that re-establish themselves after disconnects and
///   server restarts from the last revision seen, with backoff; see [`KvStore::watch`] below.
#[derive(Clone)]
pub struct NatsStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("config", &self.inner.config)
            .field("state", &self.inner.conn.current())
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
        let hub = Arc::new(ConnectionHub::new(ConnectionState::Disconnected));
        let events = Arc::clone(&hub);
        let options = options.event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        events.set(ConnectionState::Connected);
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        events.set(ConnectionState::Disconnected);
                    }
                    // Per-attempt reconnect errors and the rest say nothing new about the state.
                    _ => {}
                }
            }
        });
        let client = options
            .connect(addrs)
            .await
            .map_err(ConnectError::Connect)?;
        NatsStore::build(client, config, None, hub)
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
    /// [`NatsStoreConfig::state_poll_interval`] (the client's event callback stays the
    /// caller's); a disconnect shorter than that is reported afterwards, from the client's
    /// reconnect count.
    ///
    /// # Errors
    ///
    /// [`ConnectError::UnsupportedServer`] for servers older than 2.10,
    /// [`ConnectError::JetStreamDisabled`] without JetStream.
    pub fn from_client(client: Client, config: NatsStoreConfig) -> Result<NatsStore, ConnectError> {
        let poll = config.state_poll_interval;
        let hub = Arc::new(ConnectionHub::new(map_state(&client.connection_state())));
        NatsStore::build(client, config, Some(poll), hub)
    }

    fn build(
        client: Client,
        config: NatsStoreConfig,
        poll: Option<Duration>,
        hub: Arc<ConnectionHub>,
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
        // Events may already have set the state; the client's own view wins at start.
        hub.set(map_state(&client.connection_state()));
        let inner = Arc::new(Inner {
            client,
            js,
            config,
            buckets: RwLock::new(HashMap::new()),
            conn: hub,
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
        let deadline = self.deadline();
        let store = self.bucket(bucket, deadline).await?;
        let info = until(deadline, async {
            store
                .stream
                .get_info()
                .await
                .map_err(|e| error::stream_info(bucket, e))
        })
        .await?;
        Ok(info.cluster.and_then(|c| c.leader))
    }

    /// The deadline of a call starting now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.op_timeout
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
    pub(crate) async fn bucket(
        &self,
        bucket: &str,
        deadline: Instant,
    ) -> Result<Arc<kv::Store>, KvError> {
        if let Some(store) = self.cached(bucket) {
            return Ok(store);
        }
        self.ensure_connected()?;
        let store = until(deadline, async {
            self.inner
                .js
                .get_key_value(bucket)
                .await
                .map_err(|e| error::open_bucket(bucket, e))
        })
        .await?;
        Ok(self.remember(bucket, store))
    }

    pub(crate) fn cached(&self, bucket: &str) -> Option<Arc<kv::Store>> {
        // A poisoned lock only means another thread panicked while inserting; the map is
        // still a valid cache.
        let map = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(bucket).cloned()
    }

    pub(crate) fn remember(&self, bucket: &str, store: kv::Store) -> Arc<kv::Store> {
        let mut map = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = Arc::new(store);
        map.insert(bucket.to_owned(), Arc::clone(&store));
        store
    }

    /// Publishes one message to a key before `deadline`; returns the new revision.
    async fn publish(
        &self,
        bucket: &str,
        key: &str,
        message: jetstream::message::PublishMessage,
        deadline: Instant,
    ) -> Result<Revision, KvError> {
        let subject = shared::subject(bucket, key)?;
        // Opening the bucket first turns "no such bucket" into BucketNotFound rather than a
        // no-responders error.
        self.bucket(bucket, deadline).await?;
        self.ensure_connected()?;
        // Two refusals are definite — the message was certainly not stored — so the write is
        // sent again, a few milliseconds apart, while time is left (until 80 % of the
        // operation timeout has passed since the call began, so that the caller still learns
        // the refusal rather than a timeout):
        // - "no responders": nobody listened on the key's subject (a leader election);
        // - 10164: a clustered leader refuses an expected-sequence write while another write
        //   to the same key is still being replicated.
        // Any other failure, a timeout above all, is returned as is and never retried.
        let give_up = deadline - self.inner.config.op_timeout.mul_f32(0.2);
        until(deadline, async {
            let mut pause = Duration::from_millis(1);
            loop {
                let refused = match self.send(&subject, message.clone()).await? {
                    Ok(revision) => return Ok(revision),
                    Err(refused) => refused,
                };
                if Instant::now() + pause > give_up {
                    return Err(refused);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        })
        .await
    }

    /// Sends one message and waits for its acknowledgement: `Ok(Ok(revision))`, `Ok(Err(_))`
    /// for a definite refusal that may be sent again (see [`NatsStore::publish`]), `Err(_)` for
    /// anything else.
    pub(crate) async fn send(
        &self,
        subject: &str,
        message: jetstream::message::PublishMessage,
    ) -> Result<Result<Revision, KvError>, KvError> {
        let ack = self
            .inner
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(error::publish)?;
        match ack.await {
            Ok(ack) => Ok(Ok(Revision(ack.sequence))),
            Err(err)
                if error::is_in_flight_conflict(&err)
                    || err.kind() == jetstream::context::PublishErrorKind::StreamNotFound =>
            {
                Ok(Err(error::publish(err)))
            }
            Err(err) => Err(error::publish(err)),
        }
    }

    /// The last message of a key, through the stream leader: `(revision, Some(value))` for a
    /// live value, `(revision, None)` for a tombstone, `None` if the key has no message.
    async fn last(
        &self,
        bucket: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<(Revision, Option<Vec<u8>>)>, KvError> {
        let subject = shared::subject(bucket, key)?;
        let store = self.bucket(bucket, deadline).await?;
        self.ensure_connected()?;
        until(deadline, async {
            match store.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => {
                    let value = (!shared::is_removal(Some(&message.headers)))
                        .then(|| message.payload.to_vec());
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
    /// falling back to what the server said when the re-read fails or the call's time is up
    /// (the write's outcome is known — refused — so the caller learns the conflict, not a
    /// timeout).
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
        deadline: Instant,
    ) -> KvError {
        let KvError::RevisionMismatch { current } = err else {
            return err;
        };
        let reread = match self.last(bucket, key, deadline).await {
            Ok(Some((revision, Some(_)))) => Some(revision),
            Ok(Some((_, None)) | None) => None,
            Err(_) => current,
        };
        let current = reread.filter(|now| expected.is_none_or(|expected| *now > expected));
        KvError::RevisionMismatch { current }
    }
}

/// Samples the client's connection state until the store is dropped. A reconnect between two
/// samples (the reconnect count went up, the state reads `Connected` both times) is reported as
/// the disconnect and reconnect it was.
async fn poll_state(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connects = None;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.client.statistics().connects.load(Ordering::Relaxed);
        let state = map_state(&inner.client.connection_state());
        let reconnected = connects.is_some_and(|before| now > before);
        connects = Some(now);
        if reconnected
            && state == ConnectionState::Connected
            && inner.conn.current() == ConnectionState::Connected
        {
            inner.conn.bounce();
        } else {
            inner.conn.set(state);
        }
    }
}

#[async_trait]
impl KvStore for NatsStore {
    /// Creates or checks the bucket, then waits until its stream answers a write through this
    /// client's server (a refused probe write), so that the first write after provisioning
    /// never meets "no responders" on a new replicated bucket.
    async fn provision(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
    ) -> Result<Provisioned, KvError> {
        let deadline = self.deadline();
        self.ensure_connected()?;
        until(deadline, self.provision_inner(spec, on_mismatch, deadline)).await
    }

    async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        Ok(match self.last(bucket, key, self.deadline()).await? {
            Some((revision, Some(value))) => Some(KvEntry {
                key: key.to_owned(),
                value,
                revision,
            }),
            Some((_, None)) | None => None,
        })
    }

    async fn create(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        let deadline = self.deadline();
        let value = Bytes::from(value);
        let attempt = |expected: u64| {
            jetstream::message::PublishMessage::build()
                .payload(value.clone())
                .expected_last_subject_sequence(expected)
        };
        // Expected sequence 0 succeeds if the key never had a message (or it expired). If the
        // key's last message is a tombstone, create over it by compare-and-set on the
        // tombstone's revision. Bounded: a key that keeps changing under us is "already
        // exists"; and all of it within the one deadline.
        let mut expected = 0;
        for _ in 0..3 {
            match self.publish(bucket, key, attempt(expected), deadline).await {
                Ok(revision) => return Ok(revision),
                Err(KvError::RevisionMismatch { .. }) => {
                    match self.last(bucket, key, deadline).await? {
                        None => expected = 0,
                        Some((revision, None)) => expected = revision.get(),
                        Some((_, Some(_))) => return Err(KvError::AlreadyExists),
                    }
                }
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
        let deadline = self.deadline();
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(value))
            .expected_last_subject_sequence(expected.get());
        match self.publish(bucket, key, message, deadline).await {
            Err(err @ KvError::RevisionMismatch { .. }) => Err(self
                .current_after_conflict(bucket, key, Some(expected), err, deadline)
                .await),
            other => other,
        }
    }

    async fn put(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<Revision, KvError> {
        let message = jetstream::message::PublishMessage::build().payload(Bytes::from(value));
        self.publish(bucket, key, message, self.deadline()).await
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(), KvError> {
        let deadline = self.deadline();
        let mut message = jetstream::message::PublishMessage::build().header(KV_OPERATION, "DEL");
        if let Some(expected) = expected {
            message = message.expected_last_subject_sequence(expected.get());
        }
        match self.publish(bucket, key, message, deadline).await {
            Ok(_) => Ok(()),
            Err(err @ KvError::RevisionMismatch { .. }) => Err(self
                .current_after_conflict(bucket, key, expected, err, deadline)
                .await),
            Err(other) => Err(other),
        }
    }

    /// Lists keys with a short-lived pull consumer (last message per key, headers only),
    /// fetched without waiting: the listing ends when the server says there is nothing more,
    /// so a key expiring during the listing cannot stall it (async-nats' `keys()` then waits
    /// for an idle heartbeat, 5 s).
    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        let deadline = self.deadline();
        let store = self.bucket(bucket, deadline).await?;
        self.ensure_connected()?;
        let filter = shared::prefix_filter(bucket, prefix);
        let subject_prefix = format!("$KV.{bucket}.");
        until(deadline, async {
            // The consumer may live on a follower that lags behind the leader: the listing is
            // complete only once it has reached the leader's last matching revision.
            let mut target = shared::last_matching(&store.stream, bucket, &filter).await?;
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
                    let deleted = shared::is_removal(message.headers.as_ref());
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
                    target = shared::last_matching(&store.stream, bucket, &filter).await?;
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
    /// also on an empty bucket, decided from the leader's last matching revision — then every
    /// change.
    ///
    /// After a disconnect or a server restart the watch resumes from the last revision it
    /// delivered (never delivering a revision twice). A bucket with `history = 1` keeps only
    /// the latest value of each key, so a resumed watch catches up with the latest value of
    /// every key changed meanwhile, skipping superseded intermediate values (revision order
    /// holds). If the stream lost data — its last revision is below the last one delivered, or
    /// it is another stream (the bucket was deleted and created again, or a memory bucket was
    /// lost in a restart and provisioned again) — the watch sends
    /// [`parti_core::store::WatchEvent::Resync`] and a fresh snapshot. While the bucket is
    /// gone it yields [`KvError::BucketNotFound`] once and keeps trying; while it cannot be
    /// re-established it yields [`KvError::Unavailable`] every
    /// [`NatsStoreConfig::watch_unhealthy_after`]. The stream ends only when dropped.
    async fn watch(&self, bucket: &str, keys: WatchKeys) -> Result<KvWatch, KvError> {
        let deadline = self.deadline();
        let filters = match &keys {
            WatchKeys::Key(key) => vec![shared::subject(bucket, key)?],
            WatchKeys::Prefix(prefix) => vec![shared::prefix_filter(bucket, prefix)],
            // One consumer with several filter subjects (server 2.10+, checked at connect), so
            // the keys arrive through one stream in revision order.
            WatchKeys::Keys(list) => {
                let mut subjects = list
                    .iter()
                    .map(|key| shared::subject(bucket, key))
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
        let store = self.bucket(bucket, deadline).await?;
        self.ensure_connected()?;
        let target = WatchTarget {
            bucket: bucket.to_owned(),
            prefix: format!("$KV.{bucket}."),
            filters,
            keys,
        };
        let inner = Arc::clone(&self.inner);
        kvwatch::start(inner, store, target, deadline).await
    }

    /// Every connection state change, queued for this reader: the current state first, then
    /// each transition, also a disconnect that was over before the reader looked.
    fn connection(&self) -> ConnectionWatch {
        Box::pin(self.inner.conn.subscribe().into_stream())
    }
}
