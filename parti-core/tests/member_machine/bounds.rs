//! Settings at their limits: a member with every duration as long as validation allows runs
//! through start, a delivery and a leave without panicking — also on a clock close to the end
//! of its range, where every deadline computed from such a setting is past what the clock can
//! represent (they saturate to "never").

use std::time::{Duration, Instant};

use parti_core::config::Config;
use parti_core::member::Notification;
use parti_core::records::{Leadership, Names, Phase, Record};
use parti_core::{ValidConfig, WorkerState};

use crate::harness::*;

/// The documented limit of every duration (`config::DURATION_MAX`, a year).
const LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Every duration as long as validation allows: the limit, except where a rule ties a field to
/// another (then the largest value the rule leaves).
fn longest() -> ValidConfig {
    let mut c = Config::default();
    c.identity_ttl = LIMIT;
    c.heartbeat_ttl = LIMIT;
    // identity_ttl ≥ 3 × heartbeat_interval (and heartbeat_ttl ≥ 2 × it).
    c.heartbeat_interval = LIMIT / 3;
    c.emergency_grace = LIMIT;
    c.election_ttl = LIMIT;
    // lease_margin < election_ttl; heartbeat_ttl - fence_margin > heartbeat_interval.
    c.lease_margin = LIMIT - ms(1);
    c.fence_margin = LIMIT - LIMIT / 3 - ms(1);
    c.cold_start_window = LIMIT;
    c.planned_scale_window = LIMIT;
    c.min_rebalance_interval = LIMIT;
    c.rejoin_window = LIMIT;
    c.handler_timeout = LIMIT;
    c.revoke_timeout = LIMIT;
    c.operation_timeout = LIMIT;
    c.startup_timeout = LIMIT;
    c.shutdown_timeout = LIMIT;
    c.degraded.enter_after = LIMIT;
    c.degraded.exit_after = LIMIT;
    c.degraded.kv_error_window = LIMIT;
    c.degraded.recovery_grace = LIMIT;
    c.degraded.alerts.info = Some(LIMIT);
    c.degraded.alerts.warn = Some(LIMIT);
    c.degraded.alerts.error = Some(LIMIT);
    c.degraded.alerts.critical = Some(LIMIT);
    c.degraded.alerts.interval = LIMIT;
    c.retry.initial_backoff = LIMIT;
    c.retry.max_backoff = LIMIT;
    c.validate()
        .expect("every duration at its longest is valid")
}

/// An epoch half a `LIMIT` before the end of the clock's range: `epoch + LIMIT` cannot be
/// represented, `epoch + LIMIT / 3` can.
fn near_the_end_of_the_clock() -> Instant {
    #[allow(clippy::disallowed_methods)] // the test's one epoch
    let now = Instant::now();
    // The largest whole number of seconds the clock can still add to `now`.
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let epoch = now + Duration::from_secs(lo) - LIMIT / 2;
    assert!(epoch.checked_add(LIMIT).is_none());
    epoch
}

fn epochs() -> [(&'static str, Instant); 2] {
    #[allow(clippy::disallowed_methods)] // the test's one epoch
    let now = Instant::now();
    [
        ("now", now),
        ("near the end of the clock", near_the_end_of_the_clock()),
    ]
}

#[test]
fn a_follower_with_every_duration_at_its_limit_starts_applies_and_leaves() {
    for (name, epoch) in epochs() {
        let mut h = H::at(longest(), epoch, ME);
        let lb = h.names.leader_bucket();
        let leader = Leadership {
            worker: wid(9),
            instance: OTHER,
            term: parti_core::Term(1),
        };
        h.kv.write(&lb, Names::LEADER_KEY, leader.encode());
        h.set_term(1);
        h.start();
        assert_eq!(h.m.worker_id(), Some(&wid(0)), "{name}");
        h.grant(0, 1, 1, &[owned("a", 1, 1)]);
        assert_eq!(h.deliveries.len(), 1, "{name}: one delivery");
        assert_eq!(h.m.state(), WorkerState::Stable, "{name}");
        h.advance(secs(1));
        h.m.request_leave(h.now);
        h.run();
        assert_eq!(h.m.state(), WorkerState::Leaving, "{name}");
        // The leader revokes everything; the member hands its id back.
        h.record(0, 1, 2, Phase::Revoke, &[]);
        h.advance(secs(1));
        assert_eq!(h.m.state(), WorkerState::Shutdown, "{name}: {:?}", h.notes);
        assert!(h.notes.contains(&Notification::Stopped), "{name}");
        assert_eq!(
            h.deliveries.len(),
            2,
            "{name}: the revocation was delivered"
        );
    }
}

#[test]
fn a_leader_with_every_duration_at_its_limit_starts_plans_and_leaves() {
    for (name, epoch) in epochs() {
        let mut h = H::at(longest(), epoch, ME);
        h.start();
        assert!(h.m.is_leader(), "{name}: {:?}", h.notes);
        assert_eq!(
            h.m.owned().len(),
            3,
            "{name}: the cold start grants everything"
        );
        assert_eq!(h.deliveries.len(), 1, "{name}: one delivery");
        // Alone, it plans its own partitions away (nobody to give them to) and releases.
        h.m.request_leave(h.now);
        h.run();
        assert_eq!(h.m.state(), WorkerState::Shutdown, "{name}: {:?}", h.notes);
        assert!(h.notes.contains(&Notification::Stopped), "{name}");
        assert_eq!(
            h.deliveries.len(),
            2,
            "{name}: the revocation was delivered"
        );
        assert!(h.m.owned().is_empty(), "{name}");
    }
}
