//! The settings of a [`PartitionConsumer`](super::PartitionConsumer).

use std::time::Duration;

use super::error::ConsumerError;

/// Where a partition's consumer starts the first time it is created. Applies at creation only:
/// the server keeps the consumer's position from then on, across every handoff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartPosition {
    /// Every message the stream holds for the partition (default).
    #[default]
    All,
    /// Only messages published after the consumer was created.
    New,
    /// From this stream sequence on.
    FromSequence(u64),
}

/// How messages are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckMode {
    /// The consumer acknowledges a message when the handler returns `Ok`, and naks it (with
    /// backoff) when it returns `Err` or panics. One message at a time per partition, in order.
    Auto,
    /// The handler acknowledges each message itself ([`Delivery::ack`](super::Delivery::ack)
    /// and friends), possibly after it returned; at most `max_in_flight` messages per partition
    /// are handed out and not yet settled. A delivery dropped unsettled is nak'd.
    Manual {
        /// Messages handed out and not settled, per partition (at least 1).
        max_in_flight: usize,
    },
}

/// Whether the server also enforces that only the owner receives a partition's messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exclusivity {
    /// Delivery goes to whoever pulls; parti's handoff order is what keeps one owner (default;
    /// nats-server 2.10+).
    #[default]
    None,
    /// Each partition's consumer is a pinned-client priority group: the server delivers only to
    /// the pinned pull, the owner unpins the previous one when it binds, and a worker that lost
    /// a partition without knowing it (a zombie) receives nothing more. nats-server 2.11+.
    Pinned {
        /// The priority group's name.
        group: String,
        /// How long a pin lasts without a pull (the pull expiry is kept well below it).
        priority_timeout: Duration,
    },
}

/// Every setting of a [`PartitionConsumer`](super::PartitionConsumer); built through
/// [`PartitionConsumerBuilder`](super::PartitionConsumerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) stream: String,
    pub(crate) name_prefix: String,
    pub(crate) start: StartPosition,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: i64,
    pub(crate) max_deliver: Option<i64>,
    pub(crate) batch: usize,
    pub(crate) pull_expires: Duration,
    pub(crate) pull_heartbeat: Option<Duration>,
    pub(crate) release_timeout: Duration,
    pub(crate) ack_mode: AckMode,
    pub(crate) retry_backoff: (Duration, Duration),
    pub(crate) dead_letter: Option<String>,
    pub(crate) exclusivity: Exclusivity,
    pub(crate) expected_partitions: Option<usize>,
    pub(crate) consumer_replicas: usize,
}

impl Settings {
    pub(crate) fn new(stream: String) -> Self {
        Settings {
            name_prefix: format!("parti-{stream}"),
            stream,
            start: StartPosition::All,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1_000,
            max_deliver: None,
            batch: 64,
            pull_expires: Duration::from_secs(30),
            pull_heartbeat: None,
            release_timeout: Duration::from_secs(5),
            ack_mode: AckMode::Auto,
            retry_backoff: (Duration::from_millis(100), Duration::from_secs(30)),
            dead_letter: None,
            exclusivity: Exclusivity::None,
            expected_partitions: None,
            consumer_replicas: 0,
        }
    }

    /// Every problem at once.
    pub(crate) fn validate(&self) -> Result<(), ConsumerError> {
        let mut problems = Vec::new();
        if self.stream.is_empty() {
            problems.push("the stream name is empty".to_owned());
        }
        if self.name_prefix.is_empty()
            || self
                .name_prefix
                .contains(|c: char| c.is_whitespace() || ".*>/\\".contains(c))
        {
            problems.push(format!(
                "name prefix {:?} must be non-empty, without whitespace, `.`, `*`, `>`, `/` or `\\`",
                self.name_prefix
            ));
        }
        if self.ack_wait < Duration::from_millis(100) {
            problems.push(format!("ack_wait {:?} is below 100 ms", self.ack_wait));
        }
        if self.max_ack_pending < 1 {
            problems.push(format!(
                "max_ack_pending {} is below 1",
                self.max_ack_pending
            ));
        }
        if let Some(n) = self.max_deliver
            && n < 1
        {
            problems.push(format!(
                "max_deliver {n} is below 1 (leave it unset for unlimited deliveries)"
            ));
        }
        if self.batch == 0 {
            problems.push("batch is 0".to_owned());
        }
        if self.pull_expires < Duration::from_secs(1) {
            problems.push(format!("pull_expires {:?} is below 1 s", self.pull_expires));
        }
        let hb = self.heartbeat();
        if hb < Duration::from_millis(100) || hb > self.pull_expires / 2 {
            problems.push(format!(
                "pull heartbeat {hb:?} must be between 100 ms and half of pull_expires ({:?})",
                self.pull_expires
            ));
        }
        if let AckMode::Manual { max_in_flight: 0 } = self.ack_mode {
            problems.push("AckMode::Manual with max_in_flight 0".to_owned());
        }
        if self.retry_backoff.0.is_zero() || self.retry_backoff.0 > self.retry_backoff.1 {
            problems.push(format!(
                "retry backoff {:?}..{:?} must start above zero and not above its maximum",
                self.retry_backoff.0, self.retry_backoff.1
            ));
        }
        if let Some(d) = &self.dead_letter
            && (d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '*' || c == '>'))
        {
            problems.push(format!("dead-letter subject {d:?} is not a plain subject"));
        }
        if let Exclusivity::Pinned {
            group,
            priority_timeout,
        } = &self.exclusivity
        {
            if group.is_empty() {
                problems.push("Exclusivity::Pinned with an empty group name".to_owned());
            }
            if *priority_timeout < self.pull_expires * 2 {
                problems.push(format!(
                    "priority_timeout {priority_timeout:?} must be at least twice pull_expires \
                     ({:?}), or the pin lapses between pulls",
                    self.pull_expires
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConsumerError::InvalidSetting(problems.join("; ")))
        }
    }

    /// The pull's idle heartbeat: as set, else a quarter of `pull_expires`, at most 5 s. Two
    /// missed heartbeats end a pull that went silent and start a new one.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.pull_heartbeat
            .unwrap_or_else(|| (self.pull_expires / 4).min(Duration::from_secs(5)))
    }

    /// The nak delay after the handler failed on its `delivered`-th delivery.
    pub(crate) fn retry_delay(&self, delivered: i64) -> Duration {
        let (base, max) = self.retry_backoff;
        let shift = u32::try_from(delivered.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        base.saturating_mul(1 << shift).min(max)
    }

    /// Whether a message on its `delivered`-th delivery has no delivery after this one.
    pub(crate) fn last_attempt(&self, delivered: i64) -> bool {
        self.max_deliver.is_some_and(|max| delivered >= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_problem_is_listed() {
        let s = Settings::new("ORDERS".into());
        s.validate().unwrap();
        let mut bad = s.clone();
        bad.batch = 0;
        bad.max_ack_pending = 0;
        bad.max_deliver = Some(0);
        bad.name_prefix = "a.b".into();
        let e = bad.validate().unwrap_err().to_string();
        for part in ["batch", "max_ack_pending", "max_deliver", "prefix"] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
    }

    #[test]
    fn retry_delay_doubles_up_to_its_maximum() {
        let s = Settings::new("S".into());
        assert_eq!(s.retry_delay(1), Duration::from_millis(100));
        assert_eq!(s.retry_delay(2), Duration::from_millis(200));
        assert_eq!(s.retry_delay(4), Duration::from_millis(800));
        assert_eq!(s.retry_delay(1_000), Duration::from_secs(30));
        assert_eq!(s.retry_delay(i64::MIN), Duration::from_millis(100));
    }
}
