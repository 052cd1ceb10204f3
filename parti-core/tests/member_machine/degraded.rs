//! PROTOCOL.md §8: degraded mode entry, exit and alerts (Go §11: none of it worked there).

use std::time::Duration;

use parti_core::WorkerState;
use parti_core::config::DisconnectPolicy;
use parti_core::machine::KvRequest;
use parti_core::member::{AlertLevel, DegradedReason, Notification};
use parti_core::store::KvError;

use crate::harness::*;

fn hold_without_error_trigger() -> parti_core::ValidConfig {
    config(|c| {
        c.on_disconnect = DisconnectPolicy::Hold;
        c.degraded.kv_error_threshold = 0;
    })
}

fn alerts(h: &H) -> Vec<(AlertLevel, Duration)> {
    h.notes
        .iter()
        .filter_map(|n| match n {
            Notification::DegradedAlert {
                level,
                degraded_for,
            } => Some((*level, *degraded_for)),
            _ => None,
        })
        .collect()
}

#[test]
fn enters_degraded_after_the_connection_is_down_for_enter_after() {
    let mut h = H::follower(hold_without_error_trigger());
    h.advance(secs(1));
    h.connection(disconnected());
    h.advance(secs(10) - ms(1));
    assert!(!h.m.is_degraded());
    h.advance(ms(1));
    assert!(h.m.is_degraded());
    assert_eq!(h.m.state(), WorkerState::Degraded);
    assert!(h.notes.contains(&Notification::DegradedEntered {
        reason: DegradedReason::ConnectionDown
    }));
}

#[test]
fn a_short_disconnect_does_not_degrade() {
    let mut h = H::follower(hold_without_error_trigger());
    h.connection(disconnected());
    h.advance(secs(9));
    h.connection(connected());
    h.advance(secs(60));
    assert!(!h.m.is_degraded());
}

#[test]
fn enters_degraded_after_a_burst_of_failed_kv_operations() {
    let mut h = H::follower(config(|c| c.on_disconnect = DisconnectPolicy::Hold));
    // Heartbeat puts fail while the connection itself looks fine.
    h.fail_when(
        KvError::Unavailable {
            reason: "no responders".into(),
        },
        usize::MAX,
        |r| matches!(r, KvRequest::Put { .. }),
    );
    // Failures at 2, 4, 6, 8 s: four within the window.
    h.advance(secs(10) - ms(1));
    assert!(!h.m.is_degraded());
    h.advance(ms(1)); // the fifth
    assert!(h.m.is_degraded());
    assert!(h.notes.contains(&Notification::DegradedEntered {
        reason: DegradedReason::KvErrors
    }));
}

#[test]
fn failures_spread_wider_than_the_window_do_not_degrade() {
    let mut h = H::follower(config(|c| {
        c.on_disconnect = DisconnectPolicy::Hold;
        c.degraded.kv_error_window = secs(7);
    }));
    h.fail_when(
        KvError::Unavailable {
            reason: "no responders".into(),
        },
        usize::MAX,
        |r| matches!(r, KvRequest::Put { .. }),
    );
    h.advance(secs(60));
    assert!(!h.m.is_degraded(), "never more than 4 failures within 7 s");
}

#[test]
fn answers_about_the_data_are_not_failures() {
    let mut h = H::follower(config(|_| {}));
    // Every 5 s a candidate `create` meets a live key: AlreadyExists is an answer, not an error.
    h.advance(secs(120));
    assert!(!h.m.is_degraded());
}

#[test]
fn leaves_degraded_after_exit_after_and_a_fresh_read_of_its_record() {
    let mut h = H::follower(hold_without_error_trigger());
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.advance(secs(1));
    h.connection(disconnected());
    h.advance(secs(10));
    assert!(h.m.is_degraded());
    h.advance(secs(9));
    h.connection(connected()); // at 20 s
    h.advance(secs(5) - ms(1));
    assert!(h.m.is_degraded());
    let from = h.log.len();
    h.advance(ms(1));
    assert!(h.requests_since(from).iter().any(
        |r| matches!(r, KvRequest::Entry { bucket, key } if bucket == "parti-assignments" && key == "w.worker-0")
    ));
    assert!(!h.m.is_degraded());
    assert!(
        h.notes
            .contains(&Notification::DegradedExited { duration: secs(14) })
    );
    assert_eq!(
        h.m.state(),
        WorkerState::Stable,
        "back to the state underneath"
    );
}

#[test]
fn stays_degraded_while_the_fresh_read_fails() {
    let mut h = H::follower(hold_without_error_trigger());
    h.connection(disconnected());
    h.advance(secs(10));
    h.fail_when(
        KvError::Timeout,
        2,
        |r| matches!(r, KvRequest::Entry { key, .. } if key == "w.worker-0"),
    );
    h.connection(connected());
    h.advance(secs(5));
    assert!(h.m.is_degraded());
    h.advance(secs(5));
    assert!(h.m.is_degraded());
    h.advance(secs(5));
    assert!(!h.m.is_degraded(), "third read succeeds");
}

#[test]
fn degraded_mode_can_be_left_and_entered_again() {
    let mut h = H::follower(hold_without_error_trigger());
    for _ in 0..3 {
        h.connection(disconnected());
        h.advance(secs(10));
        assert!(h.m.is_degraded());
        h.connection(connected());
        h.advance(secs(5));
        assert!(!h.m.is_degraded());
    }
    let entered = h
        .notes
        .iter()
        .filter(|n| matches!(n, Notification::DegradedEntered { .. }))
        .count();
    assert_eq!(entered, 3);
}

#[test]
fn alerts_escalate_through_every_level_and_repeat_every_interval() {
    let mut h = H::follower(hold_without_error_trigger());
    h.connection(disconnected());
    h.advance(secs(10)); // degraded from here
    h.advance(secs(700));
    let s = |n| secs(n);
    use AlertLevel::*;
    assert_eq!(
        alerts(&h),
        vec![
            (Info, s(30)),
            (Info, s(90)),
            (Warn, s(120)),
            (Warn, s(180)),
            (Warn, s(240)),
            (Error, s(300)),
            (Error, s(360)),
            (Error, s(420)),
            (Error, s(480)),
            (Error, s(540)),
            (Critical, s(600)),
            (Critical, s(660)),
        ]
    );
    h.connection(connected());
    h.advance(secs(600));
    assert_eq!(alerts(&h).len(), 12, "no alert after leaving degraded mode");
}

#[test]
fn alert_levels_switched_off_never_fire() {
    let mut h = H::follower(config(|c| {
        c.on_disconnect = DisconnectPolicy::Hold;
        c.degraded.kv_error_threshold = 0;
        c.degraded.alerts.info = None;
        c.degraded.alerts.warn = None;
        c.degraded.alerts.critical = None;
        c.degraded.alerts.error = Some(secs(300));
    }));
    h.connection(disconnected());
    h.advance(secs(10));
    h.advance(secs(700));
    let levels: Vec<AlertLevel> = alerts(&h).into_iter().map(|(l, _)| l).collect();
    assert_eq!(levels, vec![AlertLevel::Error; 7]); // 300, 360, …, 660
}
