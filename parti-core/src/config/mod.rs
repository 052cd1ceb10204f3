//! Configuration: every setting, its default, and the rules that make a combination valid.
//!
//! A [`Config`] is plain data with public fields and documented defaults; it can be built in code
//! or read from TOML / JSON with durations written like `"2s"`, `"500ms"` or `"1m30s"` (see
//! [`duration`]). [`Config::validate`] turns it into a [`ValidConfig`] — the only form the
//! machines accept — or returns **every** problem at once as structured [`ConfigError`]s that
//! name the fields and values.
//!
//! No duration may exceed [`DURATION_MAX`] (a year): a longer value is refused as
//! [`ConfigError::TooLong`], naming the field — it is almost certainly a unit mistake.
//!
//! Zero is a real value wherever it means something (an emergency grace of `"0s"` declares a
//! crash as soon as its heartbeat expires); it never silently means "use the default". Settings
//! that can be switched off are `Option`s, written `"off"` in files.
//!
//! ```
//! use std::time::Duration;
//! use parti_core::config::{Config, DisconnectPolicy};
//!
//! let toml = r#"
//!     namespace = "orders"
//!     heartbeat_interval = "1s"
//!     heartbeat_ttl = "3s"
//!     emergency_grace = "1500ms"
//!     on_disconnect = "hold"
//!
//!     [degraded]
//!     enter_after = "5s"
//!
//!     [degraded.alerts]
//!     critical = "off"
//! "#;
//! let from_file: Config = toml::from_str(toml)?;
//!
//! let mut in_code = Config::default();
//! in_code.namespace = "orders".into();
//! in_code.heartbeat_interval = Duration::from_secs(1);
//! in_code.heartbeat_ttl = Duration::from_secs(3);
//! in_code.emergency_grace = Duration::from_millis(1500);
//! in_code.on_disconnect = DisconnectPolicy::Hold;
//! in_code.degraded.enter_after = Duration::from_secs(5);
//! in_code.degraded.alerts.critical = None;
//!
//! assert_eq!(from_file, in_code);
//! let valid = from_file.validate()?;
//! assert_eq!(valid.namespace, "orders");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Coming from the Go library
//!
//! Every field of Go `parti`'s `Config` and where it went. Go applies a default to any field left
//! at zero; here the default is in [`Config::default`] and an explicit zero stays zero.
//!
//! | Go field | parti-rs | notes |
//! |---|---|---|
//! | `WorkerIDPrefix` | [`worker_id_prefix`](Config::worker_id_prefix) | now validated (`[A-Za-z0-9_-]`) |
//! | `WorkerIDMin` / `WorkerIDMax` | [`worker_id_min`](Config::worker_id_min) / [`worker_id_max`](Config::worker_id_max) | `min ≤ max` is checked (Go does not) |
//! | `WorkerIDTTL` | [`identity_ttl`](Config::identity_ttl) | renewal is compare-and-set every ttl/3 |
//! | `HeartbeatInterval` | [`heartbeat_interval`](Config::heartbeat_interval) | must be > 0 (Go panics on ≤ 0) |
//! | `HeartbeatTTL` | [`heartbeat_ttl`](Config::heartbeat_ttl) | |
//! | `EmergencyGracePeriod` | [`emergency_grace`](Config::emergency_grace) | default 3 s = Go's 1.5 × interval, but not re-derived: zero means zero |
//! | `ColdStartWindow` | [`cold_start_window`](Config::cold_start_window) | extended by joins, capped at 2× |
//! | `PlannedScaleWindow` | [`planned_scale_window`](Config::planned_scale_window) | extended by joins, capped at 2× |
//! | `RestartDetectionRatio` | — dropped | Go used it only in a `partitions/10` heuristic; restarts are announced (`intent = Restarting`) and a leader change reads `meta.lifecycle`, so no guess is needed |
//! | `OperationTimeout` | [`operation_timeout`](Config::operation_timeout) | unused in Go; here it bounds every store operation (default 5 s, the timeout Go's client really applied) |
//! | `ElectionTimeout` | [`election_ttl`](Config::election_ttl) | sub-second values work; see also [`lease_margin`](Config::lease_margin) |
//! | `StartupTimeout` | [`startup_timeout`](Config::startup_timeout) | honoured end to end |
//! | `ShutdownTimeout` | [`shutdown_timeout`](Config::shutdown_timeout) | unused in Go; here it bounds the graceful leave (default 30 s, PROTOCOL.md §11) |
//! | `Assignment.MinRebalanceThreshold` | [`min_imbalance`](Config::min_imbalance) | never read in Go; here a weight-only change replans only above it |
//! | `Assignment.MinRebalanceInterval` | [`min_rebalance_interval`](Config::min_rebalance_interval) | the cooldown; applies to planned changes only, never to emergencies |
//! | `KVBuckets.StableIDBucket`, `ElectionBucket`, `HeartbeatBucket`, `AssignmentBucket` | [`namespace`](Config::namespace) | bucket names are derived (`{ns}-ids`, …) so two clusters never collide |
//! | `KVBuckets.AssignmentTTL` | — dropped | assignments must never expire: expiry reset Go's version counter and made followers ignore the next leader |
//! | `DegradedAlert.InfoThreshold` … `CriticalThreshold` | [`degraded.alerts`](AlertConfig) `info` … `critical` | each can be `"off"` (Go's docs promised it, its code could not) |
//! | `DegradedAlert.AlertInterval` | [`degraded.alerts.interval`](AlertConfig::interval) | alerts repeat at this interval |
//! | `DegradedBehavior.EnterThreshold` / `ExitThreshold` | [`degraded.enter_after`](DegradedConfig::enter_after) / [`exit_after`](DegradedConfig::exit_after) | |
//! | `DegradedBehavior.KVErrorThreshold` / `KVErrorWindow` | [`degraded.kv_error_threshold`](DegradedConfig::kv_error_threshold) / [`kv_error_window`](DegradedConfig::kv_error_window) | fed by every store operation (Go: only by the recovery path) |
//! | `DegradedBehavior.RecoveryGracePeriod` | [`degraded.recovery_grace`](DegradedConfig::recovery_grace) | no worker is declared dead during it |
//!
//! New here (no Go field): [`namespace`](Config::namespace), [`preferred_id`](Config::preferred_id),
//! [`lease_margin`](Config::lease_margin), [`fence_margin`](Config::fence_margin),
//! [`rejoin_window`](Config::rejoin_window), [`handler_timeout`](Config::handler_timeout),
//! [`revoke_timeout`](Config::revoke_timeout), [`on_disconnect`](Config::on_disconnect),
//! [`capacity`](Config::capacity), [`buckets`](BucketConfig), [`retry`](RetryConfig),
//! [`breaker`](BreakerConfig) (the Go roadmap's circuit breaker, see [`crate::breaker`]),
//! [`partition_refresh_interval`](Config::partition_refresh_interval) (Go's docs promised a
//! refresh of the partition list; its code never built one).
//!
//! The degraded presets of Go's `DegradedBehaviorPreset` are [`DegradedConfig::preset`]
//! (`conservative | balanced | aggressive`, same values).

pub mod duration;
#[cfg(test)]
mod tests;
mod validate;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::StorageKind;

pub use validate::{
    ConfigError, ConfigErrors, ConfigWarning, DURATION_MAX, NAMESPACE_MAX_LEN, ValidConfig,
};

/// Every setting of a parti worker. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Cluster name; buckets are `{namespace}-ids`, `-heartbeats`, `-leader`, `-assignments`.
    /// Two clusters with different namespaces never see each other. `[A-Za-z0-9_-]`, 1–32
    /// characters. Default `"parti"`.
    pub namespace: String,

    /// Worker ids are `{prefix}-{n}`. `[A-Za-z0-9_-]`. Default `"worker"`.
    pub worker_id_prefix: String,
    /// Lowest id number of the pool. Default 0.
    pub worker_id_min: u32,
    /// Highest id number of the pool, inclusive. Default 99 (a pool of 100 ids).
    pub worker_id_max: u32,
    /// The id number to try first (e.g. a StatefulSet ordinal), so a restarted pod gets its id —
    /// and its partitions — back. Must lie in the pool. Default none (lowest free number).
    pub preferred_id: Option<u32>,
    /// How long an id claim lives without renewal; renewed every third of it. Shorter frees the
    /// id of a crashed worker sooner; longer tolerates longer store outages. Default 30 s.
    #[serde(with = "duration")]
    pub identity_ttl: Duration,

    /// How often a member writes its heartbeat. Shorter detects crashes sooner at the cost of
    /// more writes (members × 1/interval per second). Default 2 s.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// A heartbeat older than this is missing. At least 2 × the interval, so one lost heartbeat
    /// is not a crash. Also the heartbeat bucket's max age (garbage collection only). Default 6 s.
    #[serde(with = "duration")]
    pub heartbeat_ttl: Duration,
    /// Extra time a missing worker gets before it is declared dead: dead after
    /// `heartbeat_ttl + emergency_grace` without a heartbeat. Zero declares it dead at once.
    /// Default 3 s (Go: 1.5 × interval).
    #[serde(with = "duration")]
    pub emergency_grace: Duration,

    /// How long the leader key lives without renewal; renewed every third of it. Shorter fails
    /// over faster; longer survives longer store hiccups. Sub-second values work. Default 5 s.
    #[serde(with = "duration")]
    pub election_ttl: Duration,
    /// A leader stops acting `lease_margin` before its lease would lapse by its own clock, which
    /// covers clock-rate drift between hosts. Must be < `election_ttl`. Default 500 ms (10 %).
    #[serde(with = "duration")]
    pub lease_margin: Duration,
    /// Under [`DisconnectPolicy::Fence`] a member revokes everything locally once its last
    /// acknowledged heartbeat is `heartbeat_ttl - fence_margin` old, i.e. before the leader can
    /// declare it dead. Exclusivity holds while clock rates differ by less than
    /// `fence_margin / heartbeat_ttl`. Must be < `heartbeat_ttl`. Default 600 ms (10 %).
    #[serde(with = "duration")]
    pub fence_margin: Duration,

    /// After a cold start (empty cluster) the first plan covers everything at once, then this
    /// window collects the joins of a starting fleet before the final plan; each join extends
    /// it, up to 2×. Default 30 s.
    #[serde(with = "duration")]
    pub cold_start_window: Duration,
    /// Joins are batched for this long (extended by further joins, up to 2×) before one plan is
    /// published. Default 10 s.
    #[serde(with = "duration")]
    pub planned_scale_window: Duration,
    /// The cooldown: a planned change is made no sooner than this after the previous full
    /// replan (coverage, re-grant and rejoin publications do not count). Emergencies ignore it. Must be > 0 and ≤ both windows. Default 10 s.
    #[serde(with = "duration")]
    pub min_rebalance_interval: Duration,
    /// A worker that announced a restart keeps its partitions reserved this long; if it comes
    /// back they are re-granted (the same partitions, new fences), otherwise they are handled as a crash. Default 30 s.
    #[serde(with = "duration")]
    pub rejoin_window: Duration,
    /// A change of partition weights alone is replanned only if the current plan's heaviest
    /// worker exceeds the mean by more than this fraction (0.15 = 15 %). `≥ 0`. Default 0.15.
    pub min_imbalance: f64,

    /// Each application callback (`on_assigned`, `on_revoked`) may run this long; after it a
    /// revocation counts as done anyway and the member moves on. Default 30 s.
    #[serde(with = "duration")]
    pub handler_timeout: Duration,
    /// A live worker that has not acknowledged a revocation after this long raises
    /// `HandoffStalled` (it is still waited for; its partitions are never granted elsewhere
    /// while it may hold them). Must be ≥ `handler_timeout`. Default 35 s.
    #[serde(with = "duration")]
    pub revoke_timeout: Duration,
    /// Bound on every single store operation; a write that hits it has an unknown outcome.
    /// Default 5 s.
    #[serde(with = "duration")]
    pub operation_timeout: Duration,
    /// Bound on start: provisioning, claiming an id and receiving the first assignment.
    /// Default 30 s.
    #[serde(with = "duration")]
    pub startup_timeout: Duration,
    /// Bound on a graceful leave (waiting for the leader to revoke everything). Default 30 s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,

    /// What a member does with its partitions when it loses contact with the store.
    /// Default [`DisconnectPolicy::Fence`].
    pub on_disconnect: DisconnectPolicy,
    /// This worker's relative capacity (≥ 1), published in its heartbeat for weighted
    /// strategies. Default 1.
    pub capacity: u32,
    /// How often the runtime re-reads the partition source to pick up added, removed or
    /// re-weighted partitions; `None` (`"off"`) reads it once at start. A read that fails keeps
    /// the last catalog (and is retried at the next tick), so a flaky source never empties the
    /// assignment. The Go library's docs promised such a refresh interval and never built one.
    /// Shorter notices changes sooner at the cost of more reads of the source; > 0 when set.
    /// Default 30 s.
    #[serde(with = "duration::option")]
    pub partition_refresh_interval: Option<Duration>,

    /// Degraded mode: when a member considers itself cut off, and the alerts it raises.
    pub degraded: DegradedConfig,
    /// How the buckets are created.
    pub buckets: BucketConfig,
    /// Backoff for retried publications and claims.
    pub retry: RetryConfig,
    /// The circuit breaker in front of store calls ([`crate::breaker`]).
    pub breaker: BreakerConfig,
}

/// What a member does with its partitions when it is cut off from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisconnectPolicy {
    /// Safe: revoke everything locally before the leader could declare this member dead, and be
    /// granted again after reconnecting. No two members ever own a partition at once.
    #[default]
    Fence,
    /// The Go library's "stale but stable": keep working on the cached assignment while cut
    /// off. **Exclusive ownership is not guaranteed during an outage**: the leader may hand the
    /// partitions to someone else meanwhile. Nor just after one that outlasted `identity_ttl`:
    /// the member's id has expired, and its partitions may be granted to another process (the
    /// one that claims its id, or any other) before this member, reconnected, has learned that
    /// and revoked them (seen end to end on NATS: `e2e_faults.rs`, the 30 s outage under Hold).
    Hold,
}

/// Degraded mode (PROTOCOL.md §8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DegradedConfig {
    /// Enter degraded mode after the connection has been down this long. Zero: at once.
    /// Default 10 s.
    #[serde(with = "duration")]
    pub enter_after: Duration,
    /// Leave degraded mode after the connection has been up this long and a fresh read of the
    /// member's own record succeeded. Default 5 s.
    #[serde(with = "duration")]
    pub exit_after: Duration,
    /// Enter degraded mode after this many failed store operations within `kv_error_window`.
    /// 0 switches this trigger off. Default 5.
    pub kv_error_threshold: u32,
    /// The window over which store errors are counted. Default 30 s.
    #[serde(with = "duration")]
    pub kv_error_window: Duration,
    /// After the leader leaves degraded mode, no worker is declared dead for this long (others
    /// may reconnect later than the leader). Default 15 s.
    #[serde(with = "duration")]
    pub recovery_grace: Duration,
    /// Alerts raised while degraded.
    pub alerts: AlertConfig,
}

/// Degraded-mode alerts: a level is raised once degraded mode has lasted its threshold, and
/// repeated every `interval` while it lasts. A level set to `None` (`"off"`) is never raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertConfig {
    /// Info level after this long. Default 30 s.
    #[serde(with = "duration::option")]
    pub info: Option<Duration>,
    /// Warn level after this long. Default 2 min.
    #[serde(with = "duration::option")]
    pub warn: Option<Duration>,
    /// Error level after this long. Default 5 min.
    #[serde(with = "duration::option")]
    pub error: Option<Duration>,
    /// Critical level after this long. Default 10 min.
    #[serde(with = "duration::option")]
    pub critical: Option<Duration>,
    /// Alerts repeat at this interval while degraded; > 0. Default 1 min.
    #[serde(with = "duration")]
    pub interval: Duration,
}

/// How buckets are created on the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BucketConfig {
    /// Copies of every bucket: 1 on a single server, 3 on a NATS cluster (1–5). Default 1.
    pub replicas: usize,
    /// Disk or memory. Default file.
    pub storage: StorageKind,
    /// An existing bucket with a different configuration is an error unless this is `true`,
    /// in which case it is updated and a warning is logged. Default `false`.
    pub reconcile: bool,
}

/// The circuit breaker in front of store calls (see [`crate::breaker`] for the state machine).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// The breaker opens after this many consecutive failed store calls (connectivity errors).
    /// Lower reacts sooner to an outage; higher tolerates more isolated timeouts. ≥ 1.
    /// Default 5.
    pub failure_threshold: u32,
    /// A half-open breaker closes after this many consecutive successful calls; one failure
    /// opens it again. ≥ 1. Default 2.
    pub success_threshold: u32,
    /// How long the breaker stays open (every call rejected) before it lets calls probe the
    /// store again. Must be > 0 and shorter than `heartbeat_ttl - fence_margin`: no heartbeat is
    /// written while the breaker is open, so a longer open time would fence a healthy member.
    /// Default 1 s.
    #[serde(with = "duration")]
    pub open_timeout: Duration,
}

/// Capped exponential backoff with jitter, for retried publications and claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// First delay; > 0. Default 100 ms.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Largest delay; ≥ `initial_backoff`. Default 5 s.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Growth per attempt; ≥ 1. Default 2.
    pub multiplier: f64,
    /// Each delay is scaled by a factor drawn from `[1 - jitter, 1 + jitter]`; in `[0, 1]`.
    /// Default 0.2.
    pub jitter: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "parti".to_owned(),
            worker_id_prefix: "worker".to_owned(),
            worker_id_min: 0,
            worker_id_max: 99,
            preferred_id: None,
            identity_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_ttl: Duration::from_secs(6),
            emergency_grace: Duration::from_secs(3),
            election_ttl: Duration::from_secs(5),
            lease_margin: Duration::from_millis(500),
            fence_margin: Duration::from_millis(600),
            cold_start_window: Duration::from_secs(30),
            planned_scale_window: Duration::from_secs(10),
            min_rebalance_interval: Duration::from_secs(10),
            rejoin_window: Duration::from_secs(30),
            min_imbalance: 0.15,
            handler_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(35),
            operation_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            on_disconnect: DisconnectPolicy::Fence,
            capacity: 1,
            partition_refresh_interval: Some(Duration::from_secs(30)),
            degraded: DegradedConfig::default(),
            buckets: BucketConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl Default for DegradedConfig {
    fn default() -> Self {
        DegradedConfig {
            enter_after: Duration::from_secs(10),
            exit_after: Duration::from_secs(5),
            kv_error_threshold: 5,
            kv_error_window: Duration::from_secs(30),
            recovery_grace: Duration::from_secs(15),
            alerts: AlertConfig::default(),
        }
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            info: Some(Duration::from_secs(30)),
            warn: Some(Duration::from_secs(120)),
            error: Some(Duration::from_secs(300)),
            critical: Some(Duration::from_secs(600)),
            interval: Duration::from_secs(60),
        }
    }
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig {
            replicas: 1,
            storage: StorageKind::File,
            reconcile: false,
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: Duration::from_secs(1),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// The degraded-behaviour presets of the Go library (`DegradedBehaviorPreset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedPreset {
    /// Slow to enter and leave: enter 30 s, exit 10 s, 10 errors / 30 s, grace 20 s.
    Conservative,
    /// The default: enter 10 s, exit 5 s, 5 errors / 30 s, grace 15 s.
    Balanced,
    /// Quick to react: enter 5 s, exit 3 s, 3 errors / 15 s, grace 10 s.
    Aggressive,
}

/// An unknown preset name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown degraded preset {name:?}; expected conservative, balanced or aggressive")]
pub struct UnknownPreset {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for DegradedPreset {
    type Err = UnknownPreset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "conservative" => Ok(DegradedPreset::Conservative),
            "balanced" => Ok(DegradedPreset::Balanced),
            "aggressive" => Ok(DegradedPreset::Aggressive),
            other => Err(UnknownPreset {
                name: other.to_owned(),
            }),
        }
    }
}

impl DegradedConfig {
    /// The settings of a preset (alerts keep their defaults).
    #[must_use]
    pub fn preset(preset: DegradedPreset) -> Self {
        let (enter, exit, errors, window, grace) = match preset {
            DegradedPreset::Conservative => (30, 10, 10, 30, 20),
            DegradedPreset::Balanced => (10, 5, 5, 30, 15),
            DegradedPreset::Aggressive => (5, 3, 3, 15, 10),
        };
        DegradedConfig {
            enter_after: Duration::from_secs(enter),
            exit_after: Duration::from_secs(exit),
            kv_error_threshold: errors,
            kv_error_window: Duration::from_secs(window),
            recovery_grace: Duration::from_secs(grace),
            alerts: AlertConfig::default(),
        }
    }
}

impl Config {
    /// Settings for tests and demos: every timer about 10× shorter than the defaults, so a
    /// cluster settles within seconds (heartbeat 200 ms, ttl 600 ms, election 1 s, windows
    /// 1 s / 500 ms, cooldown 100 ms, breaker open 200 ms, partition refresh 1 s). Not for
    /// production: a 600 ms heartbeat ttl turns ordinary network jitter into emergencies.
    #[must_use]
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Config {
            identity_ttl: ms(3_000),
            heartbeat_interval: ms(200),
            heartbeat_ttl: ms(600),
            emergency_grace: ms(300),
            election_ttl: ms(1_000),
            lease_margin: ms(100),
            fence_margin: ms(60),
            cold_start_window: ms(1_000),
            planned_scale_window: ms(500),
            min_rebalance_interval: ms(100),
            rejoin_window: ms(3_000),
            handler_timeout: ms(2_000),
            revoke_timeout: ms(2_500),
            operation_timeout: ms(1_000),
            startup_timeout: ms(10_000),
            shutdown_timeout: ms(5_000),
            partition_refresh_interval: Some(ms(1_000)),
            degraded: DegradedConfig {
                enter_after: ms(1_000),
                exit_after: ms(500),
                kv_error_threshold: 5,
                kv_error_window: ms(3_000),
                recovery_grace: ms(1_500),
                alerts: AlertConfig {
                    info: Some(ms(3_000)),
                    warn: Some(ms(12_000)),
                    error: Some(ms(30_000)),
                    critical: Some(ms(60_000)),
                    interval: ms(6_000),
                },
            },
            retry: RetryConfig {
                initial_backoff: ms(20),
                max_backoff: ms(500),
                multiplier: 2.0,
                jitter: 0.2,
            },
            breaker: BreakerConfig {
                failure_threshold: 5,
                success_threshold: 2,
                open_timeout: ms(200),
            },
            ..Config::default()
        }
    }

    /// The defaults with the degraded settings of a preset.
    #[must_use]
    pub fn with_degraded_preset(mut self, preset: DegradedPreset) -> Self {
        self.degraded = DegradedConfig::preset(preset);
        self
    }

    /// Checks every rule and returns the validated config, or every problem found.
    pub fn validate(self) -> Result<ValidConfig, ConfigErrors> {
        validate::validate(self)
    }
}
