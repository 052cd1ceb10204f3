//! The rules a [`Config`] must satisfy, and the validated form.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::{Config, DisconnectPolicy};
use crate::records::Names;
use crate::store::BucketSpec;
use crate::types::{WORKER_ID_MAX_LEN, check_name};

/// Longest namespace accepted (bucket names add up to 12 characters to it).
pub const NAMESPACE_MAX_LEN: usize = 32;

/// The longest any duration setting may be: 365 days.
///
/// A timer a year away is "never" for every purpose parti has, and the bound keeps every sum
/// and product the machines form from settings (`heartbeat_ttl + emergency_grace`,
/// `2 × handler_timeout`, a window capped at twice its length) far inside what a clock can
/// represent. The machines also saturate every deadline they compute (a deadline the clock
/// cannot hold becomes the farthest one it can), so this bound is about meaning, not safety:
/// a value above it is almost certainly a unit mistake (`"2562047788015215h"`).
pub const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One broken rule. Each variant names the fields involved and their values.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `namespace` is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("namespace {namespace:?} is invalid: {reason}")]
    InvalidNamespace {
        /// The value.
        namespace: String,
        /// What is wrong.
        reason: String,
    },
    /// `worker_id_prefix` is empty or has characters outside `[A-Za-z0-9_-]`.
    #[error("worker_id_prefix {prefix:?} is invalid: {reason}")]
    InvalidWorkerIdPrefix {
        /// The value.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// `worker_id_min > worker_id_max`: the pool is empty.
    #[error("worker_id_min ({min}) is greater than worker_id_max ({max}): the id pool is empty")]
    WorkerIdRangeInverted {
        /// `worker_id_min`.
        min: u32,
        /// `worker_id_max`.
        max: u32,
    },
    /// The longest id of the pool (`{prefix}-{max}`) exceeds the 64-character id limit.
    #[error("worker id {longest:?} would be {len} characters; ids are at most {limit}")]
    WorkerIdTooLong {
        /// The longest id of the pool.
        longest: String,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// `preferred_id` is outside `[worker_id_min, worker_id_max]`.
    #[error("preferred_id {preferred} is outside the id pool [{min}, {max}]")]
    PreferredIdOutsidePool {
        /// `preferred_id`.
        preferred: u32,
        /// `worker_id_min`.
        min: u32,
        /// `worker_id_max`.
        max: u32,
    },
    /// A duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    NotPositive {
        /// The field, as written in a config file (`degraded.alerts.interval`).
        field: &'static str,
    },
    /// A duration is longer than [`DURATION_MAX`] (probably a unit mistake).
    #[error("{field} ({}) must be at most {}", fmt_d(*value), fmt_d(*limit))]
    TooLong {
        /// The field, as written in a config file (`degraded.alerts.interval`).
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The limit ([`DURATION_MAX`]).
        limit: Duration,
    },
    /// `heartbeat_ttl < 2 × heartbeat_interval`: one late heartbeat would look like a crash.
    #[error(
        "heartbeat_ttl ({}) must be at least 2 × heartbeat_interval ({}) so one late heartbeat is not a crash",
        fmt_d(*ttl), fmt_d(*interval)
    )]
    HeartbeatTtlTooShort {
        /// `heartbeat_ttl`.
        ttl: Duration,
        /// `heartbeat_interval`.
        interval: Duration,
    },
    /// `identity_ttl < 3 × heartbeat_interval`.
    #[error(
        "identity_ttl ({}) must be at least 3 × heartbeat_interval ({})",
        fmt_d(*identity_ttl), fmt_d(*heartbeat_interval)
    )]
    IdentityTtlTooShort {
        /// `identity_ttl`.
        identity_ttl: Duration,
        /// `heartbeat_interval`.
        heartbeat_interval: Duration,
    },
    /// `identity_ttl < heartbeat_ttl`: an id could be reclaimed while its holder still looks live.
    #[error(
        "identity_ttl ({}) must be at least heartbeat_ttl ({}), or an id could be taken while its holder still looks alive",
        fmt_d(*identity_ttl), fmt_d(*heartbeat_ttl)
    )]
    IdentityTtlBelowHeartbeatTtl {
        /// `identity_ttl`.
        identity_ttl: Duration,
        /// `heartbeat_ttl`.
        heartbeat_ttl: Duration,
    },
    /// `cold_start_window < planned_scale_window`.
    #[error(
        "cold_start_window ({}) must be at least planned_scale_window ({})",
        fmt_d(*cold_start_window), fmt_d(*planned_scale_window)
    )]
    ColdStartWindowShorterThanPlanned {
        /// `cold_start_window`.
        cold_start_window: Duration,
        /// `planned_scale_window`.
        planned_scale_window: Duration,
    },
    /// A stabilisation window is shorter than the cooldown.
    #[error(
        "{window} ({}) must be at least min_rebalance_interval ({})",
        fmt_d(*value), fmt_d(*cooldown)
    )]
    WindowShorterThanCooldown {
        /// `cold_start_window` or `planned_scale_window`.
        window: &'static str,
        /// Its value.
        value: Duration,
        /// `min_rebalance_interval`.
        cooldown: Duration,
    },
    /// `emergency_grace > heartbeat_ttl`.
    #[error(
        "emergency_grace ({}) must not exceed heartbeat_ttl ({})",
        fmt_d(*grace), fmt_d(*heartbeat_ttl)
    )]
    EmergencyGraceTooLong {
        /// `emergency_grace`.
        grace: Duration,
        /// `heartbeat_ttl`.
        heartbeat_ttl: Duration,
    },
    /// A higher alert level would fire before a lower one.
    #[error(
        "degraded.alerts.{higher} ({}) must not be earlier than degraded.alerts.{lower} ({})",
        fmt_d(*higher_after), fmt_d(*lower_after)
    )]
    AlertLevelsOutOfOrder {
        /// The lower level (`info`, `warn`, `error`).
        lower: &'static str,
        /// Its threshold.
        lower_after: Duration,
        /// The higher level (`warn`, `error`, `critical`).
        higher: &'static str,
        /// Its threshold.
        higher_after: Duration,
    },
    /// `lease_margin ≥ election_ttl`: a leader would never be allowed to act.
    #[error(
        "lease_margin ({}) must be shorter than election_ttl ({})",
        fmt_d(*margin), fmt_d(*election_ttl)
    )]
    LeaseMarginTooLarge {
        /// `lease_margin`.
        margin: Duration,
        /// `election_ttl`.
        election_ttl: Duration,
    },
    /// `fence_margin ≥ heartbeat_ttl`: a member would fence itself at once.
    #[error(
        "fence_margin ({}) must be shorter than heartbeat_ttl ({})",
        fmt_d(*margin), fmt_d(*heartbeat_ttl)
    )]
    FenceMarginTooLarge {
        /// `fence_margin`.
        margin: Duration,
        /// `heartbeat_ttl`.
        heartbeat_ttl: Duration,
    },
    /// `fence_margin` leaves less than one heartbeat interval before fencing: a member would
    /// fence itself between two ordinary heartbeats.
    #[error(
        "heartbeat_ttl - fence_margin ({}) must be longer than heartbeat_interval ({})",
        fmt_d(*fence_after), fmt_d(*heartbeat_interval)
    )]
    FenceBeforeNextHeartbeat {
        /// `heartbeat_ttl - fence_margin`.
        fence_after: Duration,
        /// `heartbeat_interval`.
        heartbeat_interval: Duration,
    },
    /// `revoke_timeout < handler_timeout`: every slow-but-valid revocation would raise
    /// `HandoffStalled`.
    #[error(
        "revoke_timeout ({}) must be at least handler_timeout ({})",
        fmt_d(*revoke_timeout), fmt_d(*handler_timeout)
    )]
    RevokeTimeoutBelowHandlerTimeout {
        /// `revoke_timeout`.
        revoke_timeout: Duration,
        /// `handler_timeout`.
        handler_timeout: Duration,
    },
    /// `min_imbalance` is negative or not a number.
    #[error("min_imbalance ({value}) must be a finite number ≥ 0")]
    InvalidMinImbalance {
        /// The value.
        value: f64,
    },
    /// `retry.multiplier < 1` or not finite.
    #[error("retry.multiplier ({value}) must be a finite number ≥ 1")]
    InvalidRetryMultiplier {
        /// The value.
        value: f64,
    },
    /// `retry.jitter` outside `[0, 1]`.
    #[error("retry.jitter ({value}) must be between 0 and 1")]
    InvalidRetryJitter {
        /// The value.
        value: f64,
    },
    /// `retry.max_backoff < retry.initial_backoff`.
    #[error(
        "retry.max_backoff ({}) must be at least retry.initial_backoff ({})",
        fmt_d(*max), fmt_d(*initial)
    )]
    RetryBackoffInverted {
        /// `retry.initial_backoff`.
        initial: Duration,
        /// `retry.max_backoff`.
        max: Duration,
    },
    /// `buckets.replicas` outside 1–5 (the NATS limit).
    #[error("buckets.replicas ({replicas}) must be between 1 and 5")]
    InvalidReplicas {
        /// The value.
        replicas: usize,
    },
    /// `capacity` is zero.
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    /// A circuit-breaker threshold is zero: the breaker would open (or close) without a single
    /// call having failed (or succeeded).
    #[error("{field} must be at least 1")]
    ZeroBreakerThreshold {
        /// `breaker.failure_threshold` or `breaker.success_threshold`.
        field: &'static str,
    },
    /// `breaker.open_timeout ≥ heartbeat_ttl - fence_margin`: no heartbeat is written while the
    /// breaker is open, so a member whose store came back would still fence itself.
    #[error(
        "breaker.open_timeout ({}) must be shorter than heartbeat_ttl - fence_margin ({}): no heartbeat is written while the breaker is open, so a longer open time would fence a healthy member",
        fmt_d(*open_timeout), fmt_d(*fence_after)
    )]
    BreakerOpenLongerThanFence {
        /// `breaker.open_timeout`.
        open_timeout: Duration,
        /// `heartbeat_ttl - fence_margin`.
        fence_after: Duration,
    },
}

fn fmt_d(d: Duration) -> String {
    super::duration::format(d)
}

/// Every problem found in a config (never empty).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    #[must_use]
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problem{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A combination that is valid but probably not what was meant (the Go library's
/// `ValidateWithWarnings`, plus the `Hold` policy's trade-off).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// `identity_ttl < 2 × heartbeat_ttl`: a short store outage can cost a worker its id.
    IdentityTtlBelowTwiceHeartbeatTtl,
    /// `min_rebalance_interval < 5 s`: planned changes may be published in quick succession.
    ShortCooldown,
    /// `degraded.exit_after > degraded.enter_after`.
    ExitSlowerThanEnter,
    /// `degraded.recovery_grace < 5 s`: workers reconnecting later than the leader may be
    /// declared dead.
    ShortRecoveryGrace,
    /// `on_disconnect = hold`: two workers may own a partition during a store outage.
    HoldPolicyAllowsDoubleOwnership,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigWarning::IdentityTtlBelowTwiceHeartbeatTtl => {
                "identity_ttl is below 2 × heartbeat_ttl: a short store outage can cost a worker its id"
            }
            ConfigWarning::ShortCooldown => {
                "min_rebalance_interval is below 5s: planned changes may be published in quick succession"
            }
            ConfigWarning::ExitSlowerThanEnter => "degraded.exit_after is longer than degraded.enter_after",
            ConfigWarning::ShortRecoveryGrace => {
                "degraded.recovery_grace is below 5s: workers reconnecting after the leader may be declared dead"
            }
            ConfigWarning::HoldPolicyAllowsDoubleOwnership => {
                "on_disconnect = hold: two workers may own the same partition during a store outage"
            }
        })
    }
}

/// A [`Config`] that satisfies every rule; the only form the machines accept. Read its fields
/// through `Deref`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig {
    config: Config,
}

impl Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl ValidConfig {
    /// The config.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Back to a plain, editable config.
    #[must_use]
    pub fn into_inner(self) -> Config {
        self.config
    }

    /// Bucket names and keys for this namespace.
    #[must_use]
    pub fn names(&self) -> Names {
        Names::new(&self.config.namespace)
    }

    /// The protocol's four buckets (PROTOCOL.md §1) as this config wants them: `{ns}-ids`
    /// expiring after `identity_ttl`, `{ns}-heartbeats` after `heartbeat_ttl`, `{ns}-leader` after
    /// `election_ttl`, and `{ns}-assignments` never; one value per key, with the replicas and
    /// storage of [`BucketConfig`](super::BucketConfig). A driver provisions exactly these before
    /// starting a member.
    #[must_use]
    pub fn bucket_specs(&self) -> Vec<BucketSpec> {
        let names = self.names();
        let spec = |name: String, max_age: Option<Duration>| BucketSpec {
            name,
            history: 1,
            max_age,
            replicas: self.config.buckets.replicas,
            storage: self.config.buckets.storage,
        };
        vec![
            spec(names.ids_bucket(), Some(self.config.identity_ttl)),
            spec(names.heartbeats_bucket(), Some(self.config.heartbeat_ttl)),
            spec(names.leader_bucket(), Some(self.config.election_ttl)),
            spec(names.assignments_bucket(), None),
        ]
    }

    /// A worker is dead after this long without a heartbeat: `heartbeat_ttl + emergency_grace`.
    #[must_use]
    pub fn dead_after(&self) -> Duration {
        self.config
            .heartbeat_ttl
            .saturating_add(self.config.emergency_grace)
    }

    /// Under `Fence`, a member revokes everything once its last acknowledged heartbeat is this
    /// old: `heartbeat_ttl - fence_margin`.
    #[must_use]
    pub fn fence_after(&self) -> Duration {
        self.config
            .heartbeat_ttl
            .saturating_sub(self.config.fence_margin)
    }

    /// Leader lease, measured from the send time of the last successful renewal:
    /// `election_ttl - lease_margin`.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.config
            .election_ttl
            .saturating_sub(self.config.lease_margin)
    }

    /// The leader key is renewed this often: `election_ttl / 3`.
    #[must_use]
    pub fn election_renew_interval(&self) -> Duration {
        self.config.election_ttl / 3
    }

    /// The id claim is renewed this often: `identity_ttl / 3`.
    #[must_use]
    pub fn identity_renew_interval(&self) -> Duration {
        self.config.identity_ttl / 3
    }

    /// Valid but questionable choices, to be logged once at start.
    #[must_use]
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let c = &self.config;
        let mut w = Vec::new();
        if c.identity_ttl < c.heartbeat_ttl.saturating_mul(2) {
            w.push(ConfigWarning::IdentityTtlBelowTwiceHeartbeatTtl);
        }
        if c.min_rebalance_interval < Duration::from_secs(5) {
            w.push(ConfigWarning::ShortCooldown);
        }
        if c.degraded.exit_after > c.degraded.enter_after {
            w.push(ConfigWarning::ExitSlowerThanEnter);
        }
        if c.degraded.recovery_grace < Duration::from_secs(5) {
            w.push(ConfigWarning::ShortRecoveryGrace);
        }
        if c.on_disconnect == DisconnectPolicy::Hold {
            w.push(ConfigWarning::HoldPolicyAllowsDoubleOwnership);
        }
        w
    }
}

/// Every duration setting, named as in a config file (an alert level that is off is left out).
fn durations(c: &Config) -> Vec<(&'static str, Duration)> {
    let d = &c.degraded;
    let a = &d.alerts;
    let mut v = vec![
        ("identity_ttl", c.identity_ttl),
        ("heartbeat_interval", c.heartbeat_interval),
        ("heartbeat_ttl", c.heartbeat_ttl),
        ("emergency_grace", c.emergency_grace),
        ("election_ttl", c.election_ttl),
        ("lease_margin", c.lease_margin),
        ("fence_margin", c.fence_margin),
        ("cold_start_window", c.cold_start_window),
        ("planned_scale_window", c.planned_scale_window),
        ("min_rebalance_interval", c.min_rebalance_interval),
        ("rejoin_window", c.rejoin_window),
        ("handler_timeout", c.handler_timeout),
        ("revoke_timeout", c.revoke_timeout),
        ("operation_timeout", c.operation_timeout),
        ("startup_timeout", c.startup_timeout),
        ("shutdown_timeout", c.shutdown_timeout),
        ("degraded.enter_after", d.enter_after),
        ("degraded.exit_after", d.exit_after),
        ("degraded.kv_error_window", d.kv_error_window),
        ("degraded.recovery_grace", d.recovery_grace),
        ("degraded.alerts.interval", a.interval),
        ("retry.initial_backoff", c.retry.initial_backoff),
        ("retry.max_backoff", c.retry.max_backoff),
        ("breaker.open_timeout", c.breaker.open_timeout),
    ];
    if let Some(every) = c.partition_refresh_interval {
        v.push(("partition_refresh_interval", every));
    }
    for (field, level) in [
        ("degraded.alerts.info", a.info),
        ("degraded.alerts.warn", a.warn),
        ("degraded.alerts.error", a.error),
        ("degraded.alerts.critical", a.critical),
    ] {
        if let Some(after) = level {
            v.push((field, after));
        }
    }
    v
}

pub(super) fn validate(config: Config) -> Result<ValidConfig, ConfigErrors> {
    let c = &config;
    let mut errs = Vec::new();

    // Names.
    if let Err(e) = check_name(&c.namespace) {
        errs.push(ConfigError::InvalidNamespace {
            namespace: c.namespace.clone(),
            reason: e.to_string(),
        });
    } else if c.namespace.len() > NAMESPACE_MAX_LEN {
        errs.push(ConfigError::InvalidNamespace {
            namespace: c.namespace.clone(),
            reason: format!(
                "{} characters; the limit is {NAMESPACE_MAX_LEN}",
                c.namespace.len()
            ),
        });
    }
    if let Err(e) = check_name(&c.worker_id_prefix) {
        errs.push(ConfigError::InvalidWorkerIdPrefix {
            prefix: c.worker_id_prefix.clone(),
            reason: e.to_string(),
        });
    } else {
        let longest = format!(
            "{}-{}",
            c.worker_id_prefix,
            c.worker_id_max.max(c.worker_id_min)
        );
        if longest.len() > WORKER_ID_MAX_LEN {
            errs.push(ConfigError::WorkerIdTooLong {
                len: longest.len(),
                longest,
                limit: WORKER_ID_MAX_LEN,
            });
        }
    }

    // Identity pool.
    if c.worker_id_min > c.worker_id_max {
        errs.push(ConfigError::WorkerIdRangeInverted {
            min: c.worker_id_min,
            max: c.worker_id_max,
        });
    }
    if let Some(p) = c.preferred_id
        && (p < c.worker_id_min || p > c.worker_id_max)
    {
        errs.push(ConfigError::PreferredIdOutsidePool {
            preferred: p,
            min: c.worker_id_min,
            max: c.worker_id_max,
        });
    }

    // Durations that must be positive (zero would make a timer spin or a bound meaningless).
    let positive: [(&'static str, Duration); 14] = [
        ("identity_ttl", c.identity_ttl),
        ("heartbeat_interval", c.heartbeat_interval),
        ("heartbeat_ttl", c.heartbeat_ttl),
        ("election_ttl", c.election_ttl),
        ("min_rebalance_interval", c.min_rebalance_interval),
        ("handler_timeout", c.handler_timeout),
        ("revoke_timeout", c.revoke_timeout),
        ("operation_timeout", c.operation_timeout),
        ("startup_timeout", c.startup_timeout),
        ("shutdown_timeout", c.shutdown_timeout),
        ("degraded.alerts.interval", c.degraded.alerts.interval),
        ("retry.initial_backoff", c.retry.initial_backoff),
        ("retry.max_backoff", c.retry.max_backoff),
        ("breaker.open_timeout", c.breaker.open_timeout),
    ];
    for (field, d) in positive {
        if d.is_zero() {
            errs.push(ConfigError::NotPositive { field });
        }
    }
    if c.degraded.kv_error_threshold > 0 && c.degraded.kv_error_window.is_zero() {
        errs.push(ConfigError::NotPositive {
            field: "degraded.kv_error_window",
        });
    }
    if c.partition_refresh_interval.is_some_and(|d| d.is_zero()) {
        errs.push(ConfigError::NotPositive {
            field: "partition_refresh_interval",
        });
    }
    // Every duration has an upper bound (one error per field). The rules below compare values
    // with saturating arithmetic, so an absurd value is reported, never a panic.
    for (field, value) in durations(c) {
        if value > DURATION_MAX {
            errs.push(ConfigError::TooLong {
                field,
                value,
                limit: DURATION_MAX,
            });
        }
    }

    // The Go library's rules (§2.3), in its order.
    if c.heartbeat_ttl < c.heartbeat_interval.saturating_mul(2) {
        errs.push(ConfigError::HeartbeatTtlTooShort {
            ttl: c.heartbeat_ttl,
            interval: c.heartbeat_interval,
        });
    }
    if c.identity_ttl < c.heartbeat_interval.saturating_mul(3) {
        errs.push(ConfigError::IdentityTtlTooShort {
            identity_ttl: c.identity_ttl,
            heartbeat_interval: c.heartbeat_interval,
        });
    }
    if c.identity_ttl < c.heartbeat_ttl {
        errs.push(ConfigError::IdentityTtlBelowHeartbeatTtl {
            identity_ttl: c.identity_ttl,
            heartbeat_ttl: c.heartbeat_ttl,
        });
    }
    if c.cold_start_window < c.planned_scale_window {
        errs.push(ConfigError::ColdStartWindowShorterThanPlanned {
            cold_start_window: c.cold_start_window,
            planned_scale_window: c.planned_scale_window,
        });
    }
    for (window, value) in [
        ("cold_start_window", c.cold_start_window),
        ("planned_scale_window", c.planned_scale_window),
    ] {
        if value < c.min_rebalance_interval {
            errs.push(ConfigError::WindowShorterThanCooldown {
                window,
                value,
                cooldown: c.min_rebalance_interval,
            });
        }
    }
    if c.emergency_grace > c.heartbeat_ttl {
        errs.push(ConfigError::EmergencyGraceTooLong {
            grace: c.emergency_grace,
            heartbeat_ttl: c.heartbeat_ttl,
        });
    }
    // Alert levels must not be out of order; a level that is off is skipped, so the comparison is
    // between consecutive levels that are on.
    let a = &c.degraded.alerts;
    let levels = [
        ("info", a.info),
        ("warn", a.warn),
        ("error", a.error),
        ("critical", a.critical),
    ];
    let mut prev: Option<(&'static str, Duration)> = None;
    for (name, after) in levels {
        if let Some(after) = after {
            if let Some((lower, lower_after)) = prev
                && after < lower_after
            {
                errs.push(ConfigError::AlertLevelsOutOfOrder {
                    lower,
                    lower_after,
                    higher: name,
                    higher_after: after,
                });
            }
            prev = Some((name, after));
        }
    }

    // Rules the Go library misses.
    if c.lease_margin >= c.election_ttl && !c.election_ttl.is_zero() {
        errs.push(ConfigError::LeaseMarginTooLarge {
            margin: c.lease_margin,
            election_ttl: c.election_ttl,
        });
    }
    if c.fence_margin >= c.heartbeat_ttl && !c.heartbeat_ttl.is_zero() {
        errs.push(ConfigError::FenceMarginTooLarge {
            margin: c.fence_margin,
            heartbeat_ttl: c.heartbeat_ttl,
        });
    } else if c.heartbeat_ttl.saturating_sub(c.fence_margin) <= c.heartbeat_interval
        && c.heartbeat_ttl >= c.heartbeat_interval.saturating_mul(2)
    {
        errs.push(ConfigError::FenceBeforeNextHeartbeat {
            fence_after: c.heartbeat_ttl.saturating_sub(c.fence_margin),
            heartbeat_interval: c.heartbeat_interval,
        });
    }
    if c.revoke_timeout < c.handler_timeout {
        errs.push(ConfigError::RevokeTimeoutBelowHandlerTimeout {
            revoke_timeout: c.revoke_timeout,
            handler_timeout: c.handler_timeout,
        });
    }
    if !(c.min_imbalance.is_finite() && c.min_imbalance >= 0.0) {
        errs.push(ConfigError::InvalidMinImbalance {
            value: c.min_imbalance,
        });
    }
    if !(c.retry.multiplier.is_finite() && c.retry.multiplier >= 1.0) {
        errs.push(ConfigError::InvalidRetryMultiplier {
            value: c.retry.multiplier,
        });
    }
    if !(0.0..=1.0).contains(&c.retry.jitter) {
        errs.push(ConfigError::InvalidRetryJitter {
            value: c.retry.jitter,
        });
    }
    if c.retry.max_backoff < c.retry.initial_backoff {
        errs.push(ConfigError::RetryBackoffInverted {
            initial: c.retry.initial_backoff,
            max: c.retry.max_backoff,
        });
    }
    if !(1..=5).contains(&c.buckets.replicas) {
        errs.push(ConfigError::InvalidReplicas {
            replicas: c.buckets.replicas,
        });
    }
    if c.capacity == 0 {
        errs.push(ConfigError::ZeroCapacity);
    }

    // The circuit breaker.
    for (field, threshold) in [
        ("breaker.failure_threshold", c.breaker.failure_threshold),
        ("breaker.success_threshold", c.breaker.success_threshold),
    ] {
        if threshold == 0 {
            errs.push(ConfigError::ZeroBreakerThreshold { field });
        }
    }
    // Compared only when fencing itself is well defined (otherwise FenceMarginTooLarge says it).
    if c.fence_margin < c.heartbeat_ttl {
        let fence_after = c.heartbeat_ttl - c.fence_margin;
        if c.breaker.open_timeout >= fence_after {
            errs.push(ConfigError::BreakerOpenLongerThanFence {
                open_timeout: c.breaker.open_timeout,
                fence_after,
            });
        }
    }

    if errs.is_empty() {
        Ok(ValidConfig { config })
    } else {
        Err(ConfigErrors(errs))
    }
}
