//! Every `ConfigError` variant is produced here by a config that breaks exactly that rule; the
//! exhaustive `match` in `variant_name` makes a new variant without a test a compile error.

// Tests build broken configs by changing one nested field at a time; struct-update syntax cannot
// reach nested fields, so reassignment reads better here.
#![allow(clippy::field_reassign_with_default, clippy::vec_init_then_push)]

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The errors of `c`, which must be invalid.
fn errors(c: Config) -> Vec<ConfigError> {
    match c.validate() {
        Ok(_) => panic!("config unexpectedly valid"),
        Err(e) => e.0,
    }
}

/// Asserts `c` breaks exactly one rule, and returns it.
fn only_error(c: Config) -> ConfigError {
    let mut errs = errors(c);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.remove(0)
}

fn variant_name(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::InvalidNamespace { .. } => "InvalidNamespace",
        ConfigError::InvalidWorkerIdPrefix { .. } => "InvalidWorkerIdPrefix",
        ConfigError::WorkerIdRangeInverted { .. } => "WorkerIdRangeInverted",
        ConfigError::WorkerIdTooLong { .. } => "WorkerIdTooLong",
        ConfigError::PreferredIdOutsidePool { .. } => "PreferredIdOutsidePool",
        ConfigError::NotPositive { .. } => "NotPositive",
        ConfigError::TooLong { .. } => "TooLong",
        ConfigError::HeartbeatTtlTooShort { .. } => "HeartbeatTtlTooShort",
        ConfigError::IdentityTtlTooShort { .. } => "IdentityTtlTooShort",
        ConfigError::IdentityTtlBelowHeartbeatTtl { .. } => "IdentityTtlBelowHeartbeatTtl",
        ConfigError::ColdStartWindowShorterThanPlanned { .. } => {
            "ColdStartWindowShorterThanPlanned"
        }
        ConfigError::WindowShorterThanCooldown { .. } => "WindowShorterThanCooldown",
        ConfigError::EmergencyGraceTooLong { .. } => "EmergencyGraceTooLong",
        ConfigError::AlertLevelsOutOfOrder { .. } => "AlertLevelsOutOfOrder",
        ConfigError::LeaseMarginTooLarge { .. } => "LeaseMarginTooLarge",
        ConfigError::FenceMarginTooLarge { .. } => "FenceMarginTooLarge",
        ConfigError::FenceBeforeNextHeartbeat { .. } => "FenceBeforeNextHeartbeat",
        ConfigError::RevokeTimeoutBelowHandlerTimeout { .. } => "RevokeTimeoutBelowHandlerTimeout",
        ConfigError::InvalidMinImbalance { .. } => "InvalidMinImbalance",
        ConfigError::InvalidRetryMultiplier { .. } => "InvalidRetryMultiplier",
        ConfigError::InvalidRetryJitter { .. } => "InvalidRetryJitter",
        ConfigError::RetryBackoffInverted { .. } => "RetryBackoffInverted",
        ConfigError::InvalidReplicas { .. } => "InvalidReplicas",
        ConfigError::ZeroCapacity => "ZeroCapacity",
        ConfigError::ZeroBreakerThreshold { .. } => "ZeroBreakerThreshold",
        ConfigError::BreakerOpenLongerThanFence { .. } => "BreakerOpenLongerThanFence",
    }
}

/// One broken config per variant.
fn one_per_variant() -> Vec<Config> {
    let d = Config::default;
    let mut v = Vec::new();
    v.push(Config {
        namespace: "my.ns".into(),
        ..d()
    });
    v.push(Config {
        worker_id_prefix: "w k".into(),
        ..d()
    });
    v.push(Config {
        worker_id_min: 10,
        worker_id_max: 9,
        ..d()
    });
    v.push(Config {
        worker_id_prefix: "w".repeat(60),
        worker_id_max: 100_000,
        ..d()
    });
    v.push(Config {
        preferred_id: Some(100),
        ..d()
    });
    v.push(Config {
        operation_timeout: Duration::ZERO,
        ..d()
    });
    v.push(Config {
        startup_timeout: secs(2_562_047_788_015_215 * 3600),
        ..d()
    });
    v.push(Config {
        heartbeat_ttl: secs(3),
        emergency_grace: secs(3),
        fence_margin: ms(300),
        heartbeat_interval: secs(2),
        ..d()
    });
    v.push(Config {
        identity_ttl: secs(5),
        heartbeat_interval: secs(2),
        heartbeat_ttl: secs(4),
        ..d()
    });
    v.push(Config {
        identity_ttl: secs(12),
        heartbeat_interval: secs(2),
        heartbeat_ttl: secs(13),
        emergency_grace: secs(3),
        fence_margin: ms(600),
        ..d()
    });
    v.push(Config {
        cold_start_window: secs(10),
        planned_scale_window: secs(20),
        ..d()
    });
    v.push(Config {
        min_rebalance_interval: secs(11),
        cold_start_window: secs(30),
        planned_scale_window: secs(10),
        ..d()
    });
    v.push(Config {
        emergency_grace: secs(7),
        ..d()
    });
    let mut c = d();
    c.degraded.alerts.warn = Some(secs(10));
    v.push(c);
    v.push(Config {
        lease_margin: secs(5),
        ..d()
    });
    v.push(Config {
        fence_margin: secs(6),
        ..d()
    });
    v.push(Config {
        fence_margin: secs(4),
        ..d()
    });
    v.push(Config {
        revoke_timeout: secs(29),
        ..d()
    });
    v.push(Config {
        min_imbalance: -0.1,
        ..d()
    });
    let mut c = d();
    c.retry.multiplier = 0.5;
    v.push(c);
    let mut c = d();
    c.retry.jitter = 1.5;
    v.push(c);
    let mut c = d();
    c.retry.max_backoff = ms(50);
    v.push(c);
    let mut c = d();
    c.buckets.replicas = 7;
    v.push(c);
    v.push(Config { capacity: 0, ..d() });
    let mut c = d();
    c.breaker.failure_threshold = 0;
    v.push(c);
    let mut c = d();
    c.breaker.open_timeout = ms(5_400);
    v.push(c);
    v
}

#[test]
fn every_variant_is_produced_by_a_config_breaking_only_its_rule() {
    let mut seen = BTreeSet::new();
    for c in one_per_variant() {
        let e = only_error(c);
        assert!(!e.to_string().is_empty());
        seen.insert(variant_name(&e));
    }
    assert_eq!(seen.len(), 26, "each variant once: {seen:?}");
}

#[test]
fn errors_name_fields_and_values() {
    let e = only_error(Config {
        heartbeat_ttl: secs(3),
        heartbeat_interval: secs(2),
        emergency_grace: secs(3),
        fence_margin: ms(300),
        ..Config::default()
    });
    assert_eq!(
        e,
        ConfigError::HeartbeatTtlTooShort {
            ttl: secs(3),
            interval: secs(2)
        }
    );
    assert_eq!(
        e.to_string(),
        "heartbeat_ttl (3s) must be at least 2 × heartbeat_interval (2s) so one late heartbeat is not a crash"
    );
    let e = only_error(Config {
        worker_id_min: 10,
        worker_id_max: 9,
        ..Config::default()
    });
    assert_eq!(e, ConfigError::WorkerIdRangeInverted { min: 10, max: 9 });
    let e = only_error(Config {
        namespace: "my.ns".into(),
        ..Config::default()
    });
    assert!(
        matches!(e, ConfigError::InvalidNamespace { ref namespace, .. } if namespace == "my.ns")
    );
    let e = only_error(Config {
        namespace: "n".repeat(33),
        ..Config::default()
    });
    assert!(matches!(e, ConfigError::InvalidNamespace { .. }));
}

#[test]
fn a_config_with_several_problems_reports_all_of_them() {
    let mut c = Config {
        worker_id_min: 5,
        worker_id_max: 1,
        heartbeat_interval: Duration::ZERO,
        emergency_grace: secs(60),
        capacity: 0,
        ..Config::default()
    };
    c.retry.jitter = -1.0;
    let errs = errors(c.clone());
    let names: BTreeSet<_> = errs.iter().map(variant_name).collect();
    let expected: BTreeSet<_> = [
        "WorkerIdRangeInverted",
        "NotPositive",
        "EmergencyGraceTooLong",
        "ZeroCapacity",
        "InvalidRetryJitter",
    ]
    .into();
    assert_eq!(names, expected, "{errs:#?}");
    let text = c.validate().unwrap_err().to_string();
    assert!(
        text.starts_with("invalid configuration (5 problems)"),
        "{text}"
    );
}

#[test]
fn every_positive_field_is_named_when_zero() {
    let mut c = Config::default();
    c.identity_ttl = Duration::ZERO;
    c.election_ttl = Duration::ZERO;
    c.handler_timeout = Duration::ZERO;
    c.revoke_timeout = Duration::ZERO;
    c.startup_timeout = Duration::ZERO;
    c.shutdown_timeout = Duration::ZERO;
    c.degraded.alerts.interval = Duration::ZERO;
    let fields: BTreeSet<&str> = errors(c)
        .iter()
        .filter_map(|e| match e {
            ConfigError::NotPositive { field } => Some(*field),
            _ => None,
        })
        .collect();
    for f in [
        "identity_ttl",
        "election_ttl",
        "handler_timeout",
        "revoke_timeout",
        "startup_timeout",
        "shutdown_timeout",
        "degraded.alerts.interval",
    ] {
        assert!(fields.contains(f), "{f} missing from {fields:?}");
    }
}

/// Every duration field, set through a config file's name.
fn set_duration(c: &mut Config, field: &str, d: Duration) {
    match field {
        "identity_ttl" => c.identity_ttl = d,
        "heartbeat_interval" => c.heartbeat_interval = d,
        "heartbeat_ttl" => c.heartbeat_ttl = d,
        "emergency_grace" => c.emergency_grace = d,
        "election_ttl" => c.election_ttl = d,
        "lease_margin" => c.lease_margin = d,
        "fence_margin" => c.fence_margin = d,
        "cold_start_window" => c.cold_start_window = d,
        "planned_scale_window" => c.planned_scale_window = d,
        "min_rebalance_interval" => c.min_rebalance_interval = d,
        "rejoin_window" => c.rejoin_window = d,
        "handler_timeout" => c.handler_timeout = d,
        "revoke_timeout" => c.revoke_timeout = d,
        "operation_timeout" => c.operation_timeout = d,
        "startup_timeout" => c.startup_timeout = d,
        "shutdown_timeout" => c.shutdown_timeout = d,
        "degraded.enter_after" => c.degraded.enter_after = d,
        "degraded.exit_after" => c.degraded.exit_after = d,
        "degraded.kv_error_window" => c.degraded.kv_error_window = d,
        "degraded.recovery_grace" => c.degraded.recovery_grace = d,
        "degraded.alerts.info" => c.degraded.alerts.info = Some(d),
        "degraded.alerts.warn" => c.degraded.alerts.warn = Some(d),
        "degraded.alerts.error" => c.degraded.alerts.error = Some(d),
        "degraded.alerts.critical" => c.degraded.alerts.critical = Some(d),
        "degraded.alerts.interval" => c.degraded.alerts.interval = d,
        "retry.initial_backoff" => c.retry.initial_backoff = d,
        "retry.max_backoff" => c.retry.max_backoff = d,
        other => panic!("unknown duration field {other}"),
    }
}

const DURATION_FIELDS: [&str; 27] = [
    "identity_ttl",
    "heartbeat_interval",
    "heartbeat_ttl",
    "emergency_grace",
    "election_ttl",
    "lease_margin",
    "fence_margin",
    "cold_start_window",
    "planned_scale_window",
    "min_rebalance_interval",
    "rejoin_window",
    "handler_timeout",
    "revoke_timeout",
    "operation_timeout",
    "startup_timeout",
    "shutdown_timeout",
    "degraded.enter_after",
    "degraded.exit_after",
    "degraded.kv_error_window",
    "degraded.recovery_grace",
    "degraded.alerts.info",
    "degraded.alerts.warn",
    "degraded.alerts.error",
    "degraded.alerts.critical",
    "degraded.alerts.interval",
    "retry.initial_backoff",
    "retry.max_backoff",
];

#[test]
fn a_unit_mistake_is_refused_naming_the_field_the_value_and_the_limit() {
    // Valid-looking, and `Member::start` panicked on it ("overflow when adding duration to
    // instant") before durations had a bound.
    let c: Config = toml::from_str(r#"startup_timeout = "2562047788015215h""#).unwrap();
    let e = only_error(c);
    assert_eq!(
        e,
        ConfigError::TooLong {
            field: "startup_timeout",
            value: secs(2_562_047_788_015_215 * 3600),
            limit: DURATION_MAX,
        }
    );
    assert_eq!(
        e.to_string(),
        "startup_timeout (2562047788015215h) must be at most 8760h"
    );
    assert_eq!(DURATION_MAX, secs(365 * 24 * 3600), "documented as a year");
}

#[test]
fn every_duration_above_the_limit_is_reported_once_and_all_at_once() {
    let mut c = Config::default();
    for f in DURATION_FIELDS {
        set_duration(&mut c, f, Duration::MAX);
    }
    // Every rule runs on absurd values without overflowing; each field is named once.
    let errs = errors(c);
    let too_long: Vec<&str> = errs
        .iter()
        .filter_map(|e| match e {
            ConfigError::TooLong {
                field,
                value,
                limit,
            } => {
                assert_eq!((*value, *limit), (Duration::MAX, DURATION_MAX));
                Some(*field)
            }
            _ => None,
        })
        .collect();
    let mut expected = DURATION_FIELDS.to_vec();
    expected.sort_unstable();
    let mut got = too_long.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "one error per field: {errs:#?}");
    // The limit itself is allowed, one field at a time.
    for f in DURATION_FIELDS {
        let mut c = Config::default();
        set_duration(&mut c, f, DURATION_MAX + Duration::from_nanos(1));
        let errs = errors(c.clone());
        assert!(
            errs.contains(&ConfigError::TooLong {
                field: f,
                value: DURATION_MAX + Duration::from_nanos(1),
                limit: DURATION_MAX
            }),
            "{f}: {errs:#?}"
        );
        set_duration(&mut c, f, DURATION_MAX);
        assert!(
            c.validate()
                .err()
                .is_none_or(|e| !e.0.iter().any(|e| matches!(e, ConfigError::TooLong { .. }))),
            "{f} at the limit is not too long"
        );
    }
}

#[test]
fn zero_is_expressible_where_it_means_something() {
    let mut c = Config {
        emergency_grace: Duration::ZERO,
        worker_id_min: 0,
        worker_id_max: 0,
        ..Config::default()
    };
    c.degraded.enter_after = Duration::ZERO;
    c.degraded.exit_after = Duration::ZERO;
    c.degraded.recovery_grace = Duration::ZERO;
    c.degraded.kv_error_threshold = 0; // trigger off
    c.degraded.kv_error_window = Duration::ZERO; // irrelevant when the trigger is off
    c.min_imbalance = 0.0;
    c.retry.jitter = 0.0;
    let v = c.validate().expect("zeros that mean something are valid");
    assert_eq!(v.emergency_grace, Duration::ZERO);
    assert_eq!(v.dead_after(), secs(6));
}

#[test]
fn alert_levels_that_are_off_are_skipped_in_the_order_check() {
    let mut c = Config::default();
    c.degraded.alerts.warn = None;
    c.degraded.alerts.error = Some(secs(45)); // after info (30s): fine with warn off
    c.validate().expect("valid");
    let mut c = Config::default();
    c.degraded.alerts.warn = None;
    c.degraded.alerts.error = Some(secs(20)); // before info
    assert_eq!(
        only_error(c),
        ConfigError::AlertLevelsOutOfOrder {
            lower: "info",
            lower_after: secs(30),
            higher: "error",
            higher_after: secs(20)
        }
    );
}

#[test]
fn presets_are_valid_and_have_the_go_values() {
    Config::default().validate().expect("default valid");
    Config::fast().validate().expect("fast valid");
    for (name, enter, exit, errors, window, grace) in [
        ("conservative", 30, 10, 10, 30, 20),
        ("balanced", 10, 5, 5, 30, 15),
        ("aggressive", 5, 3, 3, 15, 10),
    ] {
        let preset: DegradedPreset = name.parse().unwrap();
        let c = Config::default().with_degraded_preset(preset);
        c.clone().validate().expect("preset valid");
        assert_eq!(c.degraded.enter_after, secs(enter));
        assert_eq!(c.degraded.exit_after, secs(exit));
        assert_eq!(c.degraded.kv_error_threshold, errors);
        assert_eq!(c.degraded.kv_error_window, secs(window));
        assert_eq!(c.degraded.recovery_grace, secs(grace));
    }
    assert_eq!(
        Config::default().degraded,
        DegradedConfig::preset(DegradedPreset::Balanced)
    );
    assert_eq!(
        "bogus".parse::<DegradedPreset>(),
        Err(UnknownPreset {
            name: "bogus".into()
        })
    );
}

#[test]
fn defaults_are_the_documented_values() {
    let c = Config::default();
    assert_eq!(
        (c.heartbeat_interval, c.heartbeat_ttl, c.emergency_grace),
        (secs(2), secs(6), secs(3))
    );
    assert_eq!((c.identity_ttl, c.election_ttl), (secs(30), secs(5)));
    assert_eq!((c.lease_margin, c.fence_margin), (ms(500), ms(600)));
    assert_eq!(
        (
            c.cold_start_window,
            c.planned_scale_window,
            c.min_rebalance_interval
        ),
        (secs(30), secs(10), secs(10))
    );
    assert_eq!(
        (
            c.rejoin_window,
            c.handler_timeout,
            c.startup_timeout,
            c.shutdown_timeout
        ),
        (secs(30), secs(30), secs(30), secs(30))
    );
    assert_eq!(
        (
            c.worker_id_min,
            c.worker_id_max,
            c.worker_id_prefix.as_str()
        ),
        (0, 99, "worker")
    );
    let a = &c.degraded.alerts;
    assert_eq!(
        (a.info, a.warn, a.error, a.critical, a.interval),
        (
            Some(secs(30)),
            Some(secs(120)),
            Some(secs(300)),
            Some(secs(600)),
            secs(60)
        )
    );
}

#[test]
fn warnings_cover_go_validate_with_warnings_and_hold() {
    assert!(Config::default().validate().unwrap().warnings().is_empty());
    let mut c = Config {
        on_disconnect: DisconnectPolicy::Hold,
        identity_ttl: secs(10),
        ..Config::default()
    };
    c.degraded.exit_after = secs(20);
    c.degraded.recovery_grace = secs(1);
    c.min_rebalance_interval = secs(1);
    let w = c.validate().unwrap().warnings();
    assert_eq!(
        w,
        vec![
            ConfigWarning::IdentityTtlBelowTwiceHeartbeatTtl,
            ConfigWarning::ShortCooldown,
            ConfigWarning::ExitSlowerThanEnter,
            ConfigWarning::ShortRecoveryGrace,
            ConfigWarning::HoldPolicyAllowsDoubleOwnership,
        ]
    );
}

#[test]
fn toml_and_json_round_trip_and_unknown_fields_are_refused() {
    let c = Config::fast();
    let text = toml::to_string(&c).unwrap();
    assert!(text.contains("heartbeat_interval = \"200ms\""), "{text}");
    assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    // An empty file is the defaults.
    assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    // A typo is an error, not a silently ignored setting.
    let err = toml::from_str::<Config>("heartbeat_intervall = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("heartbeat_intervall"), "{err}");
    // A bad duration says how to write one.
    let err = toml::from_str::<Config>("heartbeat_ttl = \"6\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("write it like"), "{err}");
    // "off" switches an alert level off; JSON works the same.
    let c: Config =
        serde_json::from_str(r#"{"degraded":{"alerts":{"info":"off"}},"on_disconnect":"hold"}"#)
            .unwrap();
    assert_eq!(c.degraded.alerts.info, None);
    assert_eq!(c.on_disconnect, DisconnectPolicy::Hold);
}

#[test]
fn derived_durations() {
    let v = Config::default().validate().unwrap();
    assert_eq!(v.dead_after(), secs(9));
    assert_eq!(v.fence_after(), ms(5_400));
    assert_eq!(v.lease(), ms(4_500));
    assert_eq!(
        v.election_renew_interval(),
        Duration::from_nanos(1_666_666_666)
    );
    assert_eq!(v.identity_renew_interval(), secs(10));
    assert_eq!(v.names().ids_bucket(), "parti-ids");
}

#[test]
fn breaker_and_partition_refresh_defaults_are_the_documented_values() {
    let c = Config::default();
    assert_eq!(
        c.breaker,
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: secs(1),
        }
    );
    assert_eq!(c.partition_refresh_interval, Some(secs(30)));
    let f = Config::fast();
    assert_eq!(
        (f.breaker.failure_threshold, f.breaker.success_threshold),
        (5, 2)
    );
    assert_eq!(f.breaker.open_timeout, ms(200));
    assert_eq!(f.partition_refresh_interval, Some(secs(1)));
    // Both sets leave the breaker's open time well inside the time before fencing.
    for c in [Config::default(), Config::fast()] {
        let v = c.validate().unwrap();
        assert!(v.breaker.open_timeout < v.fence_after());
    }
}

#[test]
fn breaker_and_partition_refresh_round_trip_through_toml() {
    let text = r#"
        partition_refresh_interval = "off"

        [breaker]
        failure_threshold = 3
        success_threshold = 1
        open_timeout = "750ms"
    "#;
    let c: Config = toml::from_str(text).unwrap();
    assert_eq!(c.partition_refresh_interval, None);
    assert_eq!(
        c.breaker,
        BreakerConfig {
            failure_threshold: 3,
            success_threshold: 1,
            open_timeout: ms(750),
        }
    );
    let written = toml::to_string(&c).unwrap();
    assert!(
        written.contains("partition_refresh_interval = \"off\""),
        "{written}"
    );
    assert!(written.contains("open_timeout = \"750ms\""), "{written}");
    assert_eq!(toml::from_str::<Config>(&written).unwrap(), c);
    c.validate().expect("valid");

    let mut c = Config::default();
    c.partition_refresh_interval = Some(ms(2_500));
    let written = toml::to_string(&c).unwrap();
    assert!(
        written.contains("partition_refresh_interval = \"2s500ms\""),
        "{written}"
    );
    assert_eq!(toml::from_str::<Config>(&written).unwrap(), c);
    // A missing field keeps its default; a typo in the table is refused.
    let c: Config = toml::from_str("[breaker]\nopen_timeout = \"2s\"").unwrap();
    assert_eq!(c.breaker.failure_threshold, 5);
    assert_eq!(c.breaker.open_timeout, secs(2));
    let err = toml::from_str::<Config>("[breaker]\nfailure_treshold = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("failure_treshold"), "{err}");
}

#[test]
fn breaker_thresholds_must_be_at_least_one() {
    let mut c = Config::default();
    c.breaker.failure_threshold = 0;
    assert_eq!(
        only_error(c),
        ConfigError::ZeroBreakerThreshold {
            field: "breaker.failure_threshold"
        }
    );
    let mut c = Config::default();
    c.breaker.success_threshold = 0;
    let e = only_error(c);
    assert_eq!(
        e,
        ConfigError::ZeroBreakerThreshold {
            field: "breaker.success_threshold"
        }
    );
    assert_eq!(
        e.to_string(),
        "breaker.success_threshold must be at least 1"
    );
    let mut c = Config::default();
    c.breaker.failure_threshold = 1;
    c.breaker.success_threshold = 1;
    c.validate().expect("1 is the smallest valid threshold");
}

#[test]
fn breaker_open_timeout_must_be_positive() {
    let mut c = Config::default();
    c.breaker.open_timeout = Duration::ZERO;
    assert_eq!(
        only_error(c),
        ConfigError::NotPositive {
            field: "breaker.open_timeout"
        }
    );
}

#[test]
fn breaker_open_timeout_must_be_shorter_than_the_time_before_fencing() {
    // Defaults: fence after 6 s - 600 ms = 5.4 s.
    let mut c = Config::default();
    c.breaker.open_timeout = ms(5_399);
    c.validate().expect("just below fence_after is valid");
    let mut c = Config::default();
    c.breaker.open_timeout = ms(5_400);
    let e = only_error(c);
    assert_eq!(
        e,
        ConfigError::BreakerOpenLongerThanFence {
            open_timeout: ms(5_400),
            fence_after: ms(5_400),
        }
    );
    assert!(
        e.to_string().starts_with(
            "breaker.open_timeout (5s400ms) must be shorter than heartbeat_ttl - fence_margin (5s400ms)"
        ),
        "{e}"
    );
    // The bound follows the heartbeat settings, not a constant: 1 s is too long for `fast`.
    let mut c = Config::fast();
    c.breaker.open_timeout = secs(1);
    assert_eq!(
        only_error(c),
        ConfigError::BreakerOpenLongerThanFence {
            open_timeout: secs(1),
            fence_after: ms(540),
        }
    );
    // A fence_margin that is itself invalid is reported once, by its own rule.
    let mut c = Config {
        fence_margin: secs(6),
        ..Config::default()
    };
    c.breaker.open_timeout = secs(10);
    assert!(matches!(
        only_error(c),
        ConfigError::FenceMarginTooLarge { .. }
    ));
}

#[test]
fn partition_refresh_interval_is_off_or_positive() {
    let c = Config {
        partition_refresh_interval: Some(Duration::ZERO),
        ..Config::default()
    };
    assert_eq!(
        only_error(c),
        ConfigError::NotPositive {
            field: "partition_refresh_interval"
        }
    );
    let c = Config {
        partition_refresh_interval: None,
        ..Config::default()
    };
    c.validate().expect("off is valid");
}
