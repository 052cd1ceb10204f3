//! Every transition of the breaker and its timing edges, in virtual time: one epoch, durations
//! added to it.

use std::time::{Duration, Instant};

use super::*;
use crate::store::BackendError;
use crate::types::Revision;

use BreakerState::{Closed, HalfOpen, Open};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // the test's one epoch
    Instant::now()
}

/// Opens after 3 failures, closes after 2 successes, stays open 1 s.
fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_timeout: ms(1_000),
    }
}

fn drain(b: &mut CircuitBreaker) -> Vec<Transition> {
    std::iter::from_fn(|| b.poll_transition()).collect()
}

fn t(from: BreakerState, to: BreakerState, at: Instant) -> Transition {
    Transition { from, to, at }
}

/// A breaker opened by three failures at `at`, its transitions drained.
fn opened_at(at: Instant) -> CircuitBreaker {
    let mut b = CircuitBreaker::new(&config(), at);
    for _ in 0..3 {
        assert!(b.allow(at));
        b.on_failure(at);
    }
    assert_eq!(drain(&mut b), vec![t(Closed, Open, at)]);
    b
}

#[test]
fn a_new_breaker_is_closed_allows_calls_and_has_no_deadline() {
    let t0 = epoch();
    let mut b = CircuitBreaker::new(&config(), t0);
    assert_eq!(b.state(), Closed);
    assert!(b.allow(t0));
    assert!(b.allow(t0 + ms(10_000)));
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.poll_transition(), None);
    assert_eq!(b.rejected(), 0);
}

#[test]
fn closed_opens_on_the_failure_threshold_th_consecutive_failure() {
    let t0 = epoch();
    let mut b = CircuitBreaker::new(&config(), t0);
    b.on_failure(t0);
    b.on_failure(t0 + ms(10));
    assert_eq!(b.state(), Closed, "two failures of three");
    assert_eq!(b.poll_transition(), None);
    assert_eq!(b.poll_timeout(), None);
    b.on_failure(t0 + ms(20));
    assert_eq!(b.state(), Open);
    assert_eq!(drain(&mut b), vec![t(Closed, Open, t0 + ms(20))]);
    assert_eq!(
        b.poll_timeout(),
        Some(t0 + ms(1_020)),
        "open_timeout from the opening failure"
    );
}

#[test]
fn a_success_in_closed_starts_the_failure_run_over() {
    let t0 = epoch();
    let mut b = CircuitBreaker::new(&config(), t0);
    b.on_failure(t0);
    b.on_failure(t0);
    b.on_success(t0 + ms(1));
    b.on_failure(t0 + ms(2));
    b.on_failure(t0 + ms(3));
    assert_eq!(
        b.state(),
        Closed,
        "the success broke the run: 2 in a row, not 4"
    );
    assert_eq!(b.poll_transition(), None);
    b.on_failure(t0 + ms(4));
    assert_eq!(b.state(), Open);
    assert_eq!(drain(&mut b), vec![t(Closed, Open, t0 + ms(4))]);
}

#[test]
fn open_rejects_calls_and_counts_each_rejection() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    assert!(!b.allow(t0));
    assert!(!b.allow(t0 + ms(500)));
    assert!(!b.allow(t0 + ms(999)));
    assert_eq!(b.rejected(), 3);
    assert_eq!(b.state(), Open);
    assert_eq!(
        b.poll_transition(),
        None,
        "a rejection is not a state change"
    );
    assert_eq!(
        b.poll_timeout(),
        Some(t0 + ms(1_000)),
        "rejections do not extend it"
    );
}

#[test]
fn allow_moves_open_to_half_open_exactly_at_the_deadline() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    let deadline = t0 + ms(1_000);
    assert!(!b.allow(deadline - Duration::from_nanos(1)), "1 ns early");
    assert_eq!(b.state(), Open);
    assert!(b.allow(deadline), "due at the deadline itself");
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(drain(&mut b), vec![t(Open, HalfOpen, deadline)]);
    assert_eq!(b.poll_timeout(), None, "Some only while Open");
    assert!(b.allow(deadline), "half-open allows every probe");
    assert_eq!(b.rejected(), 1);
}

#[test]
fn handle_timeout_moves_open_to_half_open_when_due_and_a_spurious_call_does_nothing() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    b.handle_timeout(t0 + ms(999));
    assert_eq!(b.state(), Open, "not due yet");
    assert_eq!(b.poll_transition(), None);
    assert_eq!(b.poll_timeout(), Some(t0 + ms(1_000)));
    // A late wake-up: the transition is stamped with the time it was observed.
    b.handle_timeout(t0 + ms(1_250));
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(drain(&mut b), vec![t(Open, HalfOpen, t0 + ms(1_250))]);
    assert_eq!(b.poll_timeout(), None);
    b.handle_timeout(t0 + ms(5_000));
    assert_eq!(b.state(), HalfOpen, "spurious: nothing is due");
    assert_eq!(b.poll_transition(), None);
    assert_eq!(b.rejected(), 0, "handle_timeout rejects nothing");
}

#[test]
fn half_open_closes_after_success_threshold_consecutive_successes() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    let t1 = t0 + ms(1_000);
    b.handle_timeout(t1);
    assert_eq!(drain(&mut b), vec![t(Open, HalfOpen, t1)]);
    b.on_success(t1 + ms(5));
    assert_eq!(b.state(), HalfOpen, "one success of two");
    assert_eq!(b.poll_transition(), None);
    b.on_success(t1 + ms(10));
    assert_eq!(b.state(), Closed);
    assert_eq!(drain(&mut b), vec![t(HalfOpen, Closed, t1 + ms(10))]);
    assert_eq!(b.poll_timeout(), None);
    // Closed again with a fresh failure count: two failures do not reopen it.
    b.on_failure(t1 + ms(20));
    b.on_failure(t1 + ms(30));
    assert_eq!(b.state(), Closed);
    b.on_failure(t1 + ms(40));
    assert_eq!(b.state(), Open);
}

#[test]
fn a_failure_in_half_open_reopens_with_a_fresh_open_timeout() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    let t1 = t0 + ms(1_000);
    assert!(b.allow(t1));
    b.on_success(t1 + ms(5));
    b.on_failure(t1 + ms(300));
    assert_eq!(b.state(), Open, "one failure is enough in half-open");
    assert_eq!(
        drain(&mut b),
        vec![t(Open, HalfOpen, t1), t(HalfOpen, Open, t1 + ms(300))]
    );
    assert_eq!(
        b.poll_timeout(),
        Some(t1 + ms(1_300)),
        "a full open_timeout from the reopening failure"
    );
    assert!(!b.allow(t1 + ms(1_299)));
    // The success before the failure does not carry over: two fresh ones are needed.
    let t2 = t1 + ms(1_300);
    assert!(b.allow(t2));
    b.on_success(t2);
    assert_eq!(b.state(), HalfOpen);
    b.on_success(t2 + ms(1));
    assert_eq!(b.state(), Closed);
}

#[test]
fn results_reported_while_open_are_ignored() {
    let t0 = epoch();
    let mut b = opened_at(t0);
    // Calls that started before the breaker opened come back late.
    b.on_failure(t0 + ms(400));
    b.on_success(t0 + ms(500));
    b.on_success(t0 + ms(600));
    assert_eq!(b.state(), Open);
    assert_eq!(b.poll_transition(), None);
    assert_eq!(
        b.poll_timeout(),
        Some(t0 + ms(1_000)),
        "a late failure does not extend the open time"
    );
    // Nor do the late successes count towards closing once half-open.
    b.handle_timeout(t0 + ms(1_000));
    b.on_success(t0 + ms(1_001));
    assert_eq!(b.state(), HalfOpen);
}

#[test]
fn every_transition_is_reported_once_in_order() {
    let t0 = epoch();
    let mut b = CircuitBreaker::new(&config(), t0);
    for i in 0..3 {
        b.on_failure(t0 + ms(i));
    }
    let t1 = t0 + ms(1_002);
    assert!(b.allow(t1));
    b.on_failure(t1);
    let t2 = t1 + ms(1_000);
    b.handle_timeout(t2);
    b.on_success(t2);
    b.on_success(t2 + ms(1));
    assert_eq!(
        drain(&mut b),
        vec![
            t(Closed, Open, t0 + ms(2)),
            t(Open, HalfOpen, t1),
            t(HalfOpen, Open, t1),
            t(Open, HalfOpen, t2),
            t(HalfOpen, Closed, t2 + ms(1)),
        ]
    );
    assert_eq!(b.poll_transition(), None);
}

#[test]
fn thresholds_of_one_open_and_close_on_a_single_result() {
    let t0 = epoch();
    let c = BreakerConfig {
        failure_threshold: 1,
        success_threshold: 1,
        open_timeout: ms(200),
    };
    let mut b = CircuitBreaker::new(&c, t0);
    b.on_failure(t0);
    assert_eq!(b.state(), Open);
    assert!(b.allow(t0 + ms(200)));
    b.on_success(t0 + ms(210));
    assert_eq!(
        drain(&mut b),
        vec![
            t(Closed, Open, t0),
            t(Open, HalfOpen, t0 + ms(200)),
            t(HalfOpen, Closed, t0 + ms(210)),
        ]
    );
}

#[test]
fn unvalidated_zero_settings_do_not_panic() {
    // Validation refuses these; the machine still behaves: 0 acts as 1, a zero open time is
    // due at once.
    let t0 = epoch();
    let c = BreakerConfig {
        failure_threshold: 0,
        success_threshold: 0,
        open_timeout: Duration::ZERO,
    };
    let mut b = CircuitBreaker::new(&c, t0);
    assert_eq!(b.state(), Closed, "no failure yet");
    b.on_failure(t0);
    assert_eq!(b.state(), Open);
    assert_eq!(b.poll_timeout(), Some(t0));
    assert!(b.allow(t0));
    assert_eq!(b.state(), HalfOpen);
    b.on_success(t0);
    assert_eq!(b.state(), Closed);
}

#[test]
fn only_connectivity_errors_count_as_failures() {
    let failures = [
        KvError::Timeout,
        KvError::Unavailable {
            reason: "no responders".into(),
        },
    ];
    for e in &failures {
        assert!(counts_as_failure(e), "{e:?}");
    }
    let answers = [
        KvError::NotFound,
        KvError::AlreadyExists,
        KvError::RevisionMismatch { current: None },
        KvError::RevisionMismatch {
            current: Some(Revision(7)),
        },
        KvError::BucketNotFound {
            bucket: "parti-ids".into(),
        },
        KvError::BucketMismatch {
            bucket: "parti-ids".into(),
            field: "replicas".into(),
            existing: "1".into(),
            wanted: "3".into(),
        },
        KvError::InvalidBucketSpec {
            bucket: "parti-ids".into(),
            field: "history".into(),
            value: "0".into(),
            reason: "at least 1".into(),
        },
        KvError::InvalidKey { key: ".bad".into() },
        KvError::Backend(BackendError::msg("malformed message from NATS: metadata")),
    ];
    for e in &answers {
        assert!(!counts_as_failure(e), "{e:?} is an answer from the store");
    }
}

#[test]
fn states_display_as_their_snake_case_names() {
    for (s, name) in [(Closed, "closed"), (Open, "open"), (HalfOpen, "half_open")] {
        assert_eq!(s.as_str(), name);
        assert_eq!(s.to_string(), name);
    }
}
