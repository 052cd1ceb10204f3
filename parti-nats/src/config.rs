//! [`NatsStoreConfig`]: the settings of a [`crate::NatsStore`].

use std::time::Duration;

use parti_core::ValidConfig;

/// Settings of a [`crate::NatsStore`].
///
/// A store used by a parti cluster is built with [`NatsStoreConfig::from_config`] from the same
/// [`parti_core::Config`] the members run with, so the operation timeout the machines assume
/// (`operation_timeout`) is the one the store enforces: one source of truth.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStoreConfig {
    /// Bound on every call (provision, read, write, listing, starting a watch), from its start
    /// to its return, whatever it does inside (a `create` over a tombstone reads and writes
    /// again, an `update` that conflicts re-reads the key): when it runs out the call fails
    /// with [`KvError::Timeout`](parti_core::store::KvError::Timeout); for a write that means
    /// *unknown outcome*. Default 5 s (parti's default `operation_timeout`, and the async-nats
    /// publish ack timeout).
    pub op_timeout: Duration,
    /// Whether an operation started while the client is disconnected fails at once with
    /// [`KvError::Unavailable`](parti_core::store::KvError::Unavailable) (and is not sent),
    /// instead of being queued by async-nats and waiting up to `op_timeout`. Default `true`: a
    /// write refused this way was certainly not applied, which is better than an unknown
    /// outcome.
    pub fail_fast_when_disconnected: bool,
    /// Longest pause between two attempts to re-establish a watch (at least 50 ms, the first
    /// pause). Default 2 s.
    pub watch_backoff_max: Duration,
    /// How long a watch may be without a working consumer (disconnected, or every attempt to
    /// re-establish it failing) before its stream yields an
    /// `Err(`[`KvError::Unavailable`](parti_core::store::KvError::Unavailable)`)` item — and
    /// another after each further such period while it lasts; the stream carries on after them.
    /// A member counts these items towards its degraded mode. Default 5 s: well above a normal
    /// re-establishment after a reconnect (one stream info and one consumer creation, a few
    /// milliseconds) and its backoff, and below parti's default heartbeat TTL (6 s), so a
    /// member learns that it is blind before its peers would declare it dead. A report may
    /// come up to one `op_timeout` late (an attempt in progress is not cut short); values below
    /// 100 ms count as 100 ms.
    pub watch_unhealthy_after: Duration,
    /// How often the connection state is sampled when the store was built from a
    /// [`Client`](async_nats::Client) (a store that connected itself gets async-nats connection
    /// events instead). A disconnect shorter than this is still reported, afterwards, from the
    /// client's reconnect count. Default 100 ms.
    pub state_poll_interval: Duration,
}

impl Default for NatsStoreConfig {
    fn default() -> Self {
        NatsStoreConfig {
            op_timeout: Duration::from_secs(5),
            fail_fast_when_disconnected: true,
            watch_backoff_max: Duration::from_secs(2),
            watch_unhealthy_after: Duration::from_secs(5),
            state_poll_interval: Duration::from_millis(100),
        }
    }
}

impl NatsStoreConfig {
    /// The settings for a store used by members running with `config`: `op_timeout` is
    /// `config.operation_timeout`; everything else is the default.
    ///
    /// ```
    /// use parti_nats::NatsStoreConfig;
    ///
    /// let mut config = parti_core::Config::default();
    /// config.operation_timeout = std::time::Duration::from_secs(2);
    /// let valid = config.validate().expect("a valid config");
    /// let store_config = NatsStoreConfig::from_config(&valid);
    /// assert_eq!(store_config.op_timeout, valid.operation_timeout);
    /// ```
    #[must_use]
    pub fn from_config(config: &ValidConfig) -> Self {
        NatsStoreConfig {
            op_timeout: config.operation_timeout,
            ..NatsStoreConfig::default()
        }
    }

    /// The same settings with another operation timeout.
    #[must_use]
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// The same settings with another [`NatsStoreConfig::watch_unhealthy_after`].
    #[must_use]
    pub fn with_watch_unhealthy_after(mut self, after: Duration) -> Self {
        self.watch_unhealthy_after = after;
        self
    }
}
