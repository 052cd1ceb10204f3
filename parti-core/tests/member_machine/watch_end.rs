//! A watch that ends (its stream is over, or it could not be opened) is an event the member
//! sees: it opens the watch again under a new id after the `retry` backoff and takes the new
//! snapshot like a resync. Before, it only counted watch errors and stayed blind for good.

use parti_core::WorkerState;
use parti_core::machine::{IoAction, WatchId};
use parti_core::member::Action;
use parti_core::records::Names;
use parti_core::store::KvError;

use crate::harness::*;

fn unavailable() -> KvError {
    KvError::Unavailable {
        reason: "test".into(),
    }
}

/// The one watch of `bucket` the member (not its planner) has open.
fn member_watch(h: &H, bucket: &str) -> WatchId {
    let w: Vec<WatchId> = h
        .watches_of(bucket)
        .into_iter()
        .filter(|w| !w.is_planner())
        .collect();
    assert_eq!(w.len(), 1, "{bucket}: {w:?}");
    w[0]
}

fn unwatches_since(h: &H, from: usize) -> Vec<WatchId> {
    h.log[from..]
        .iter()
        .filter_map(|a| match a {
            Action::Io(IoAction::Unwatch { watch }) => Some(*watch),
            _ => None,
        })
        .collect()
}

#[test]
fn an_assignment_watch_that_ends_is_reopened_and_catches_up() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    assert_eq!(h.m.owned().len(), 1);
    let ab = h.names.assignments_bucket();
    let first = member_watch(&h, &ab);
    let from = h.log.len();
    h.end_watch(first, Some(unavailable()));
    // Meanwhile the leader grants more; nobody delivers it.
    h.grant(0, 1, 2, &[owned("a", 1, 1), owned("b", 1, 2)]);
    assert_eq!(h.m.owned().len(), 1, "blind while the watch is gone");
    assert!(unwatches_since(&h, from).is_empty(), "the driver forgot it");
    // The backoff (retry.initial_backoff 100 ms ± 20 %) runs out: a new watch, a new id.
    h.advance(ms(130));
    let second = member_watch(&h, &ab);
    assert_ne!(first, second);
    assert_eq!(
        h.m.owned().len(),
        2,
        "the snapshot brought the newer record"
    );
    assert_eq!(h.m.applied_version(), parti_core::Version(2));
    assert_eq!(h.m.retries().other, 1);
    // The new watch is live: later records arrive as usual.
    h.grant(0, 1, 3, &[owned("a", 1, 1)]);
    assert_eq!(h.m.owned().len(), 1);
    assert_eq!(h.m.state(), WorkerState::Stable);
}

#[test]
fn a_watch_that_cannot_be_opened_is_retried_with_growing_backoff_until_it_opens() {
    let mut h = H::follower(config(|_| {}));
    let ab = h.names.assignments_bucket();
    let first = member_watch(&h, &ab);
    let refused = KvError::BucketNotFound { bucket: ab.clone() };
    h.refuse_watches = Some((ab.clone(), refused.clone()));
    h.end_watch(first, Some(refused));
    // Each attempt is refused at once; the delays grow: 100, 200, 400, 800 ms (± 20 %).
    let opens = |h: &H| {
        h.log
            .iter()
            .filter(|a| matches!(a, Action::Io(IoAction::Watch { bucket, .. }) if *bucket == ab))
            .count()
    };
    let base = opens(&h);
    let mut at = Vec::new();
    let start = h.now;
    while at.len() < 4 {
        h.advance(ms(5));
        if opens(&h) > base + at.len() {
            at.push(h.now - start);
        }
    }
    let gaps: Vec<_> = at
        .iter()
        .scan(std::time::Duration::ZERO, |prev, t| {
            let g = *t - *prev;
            *prev = *t;
            Some(g)
        })
        .collect();
    for (i, g) in gaps.iter().enumerate() {
        let b = ms(100 << i);
        assert!(
            *g >= b * 8 / 10 && *g <= b * 12 / 10 + ms(5),
            "attempt {i}: {g:?} ({gaps:?})"
        );
    }
    // The store comes back: the next attempt opens, and the record is applied.
    h.refuse_watches = None;
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.advance(secs(2));
    assert_eq!(h.m.owned().len(), 1);
    assert!(h.m.retries().other >= 5);
}

#[test]
fn a_leader_watch_that_ends_is_reopened_and_the_member_stands_if_the_key_is_gone() {
    let mut h = H::follower(config(|_| {}));
    assert_eq!(h.m.leader(), Some(wid(9)));
    let lb = h.names.leader_bucket();
    let first = member_watch(&h, &lb);
    h.end_watch(first, None);
    // The leader leaves while nobody watches; the delete is missed.
    h.kv.remove(&lb, Names::LEADER_KEY);
    h.run();
    assert!(!h.m.is_leader());
    h.advance(ms(130));
    assert_ne!(member_watch(&h, &lb), first);
    assert!(
        h.m.is_leader(),
        "the new snapshot shows the key free: {:?}",
        h.notes
    );
}

#[test]
fn a_closed_watch_that_ends_late_is_not_reopened() {
    let mut h = H::follower(config(|_| {}));
    let lb = h.names.leader_bucket();
    let w = member_watch(&h, &lb);
    // The member leaves (closing its leader watch); the driver reports the end anyway.
    h.m.request_leave(h.now);
    h.run();
    h.end_watch(w, None);
    h.advance(secs(1));
    assert!(
        h.watches_of(&lb).is_empty(),
        "a leaving member does not stand"
    );
}

#[test]
fn a_planners_watch_that_ends_is_reopened_by_the_planner() {
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(40));
    assert!(h.m.is_leader());
    let hb = h.names.heartbeats_bucket();
    let planner_hb: Vec<WatchId> = h.watches_of(&hb);
    assert_eq!(planner_hb.len(), 1);
    assert!(planner_hb[0].is_planner());
    h.end_watch(planner_hb[0], Some(unavailable()));
    assert_eq!(h.m.planner().map(|p| p.watch_errors()), Some(1));
    h.advance(ms(130));
    let again = h.watches_of(&hb);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], planner_hb[0], "a new id");
    assert!(again[0].is_planner());
    // Still leading, nobody declared dead, and the reopen counted.
    h.advance(secs(20));
    assert!(h.m.is_leader());
    assert_eq!(h.m.owned().len(), 3);
    assert_eq!(h.m.retries().other, 1);
    // A higher term on a reopened term watch still stops the planner.
    let ab = h.names.assignments_bucket();
    let term_watch: Vec<WatchId> = h
        .watches_of(&ab)
        .into_iter()
        .filter(|w| w.is_planner())
        .collect();
    h.end_watch(term_watch[0], None);
    h.advance(ms(130));
    let t = h.m.term().expect("a term").0;
    h.set_term(t + 1);
    assert!(!h.m.is_leader());
}
