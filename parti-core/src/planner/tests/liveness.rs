//! Liveness (PROTOCOL.md §5) and takeover.

use super::harness::*;
use crate::planner::PlannerNotification;
use crate::records::{ClusterMeta, Names, Record};
use crate::types::Version;

fn dead(s: &Sim) -> Vec<crate::types::WorkerId> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::WorkerDead { worker } => Some(worker.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_worker_is_dead_exactly_after_heartbeat_ttl_plus_emergency_grace() {
    let mut s = Sim::settled(3, 6);
    s.crash(2); // last heartbeat stamped at 0 s (takeover snapshot)
    s.run_to(ms(8_999));
    assert!(s.p.live_members().contains(&w(2)));
    assert!(dead(&s).is_empty());
    s.run_to(secs(9));
    assert!(!s.p.live_members().contains(&w(2)));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn reappearance_inside_the_grace_forgets_the_absence_and_a_new_absence_gets_a_full_grace() {
    // Go keeps the first-missing time and declares the second absence at once (§17 row 9).
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(8));
    s.beat(&w(2)); // one heartbeat inside the grace, then silent again
    s.run_to(ms(16_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(17));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn nobody_is_declared_dead_while_the_leaders_own_heartbeat_echo_is_stale() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(1));
    // The leader's own heartbeats stop arriving (a stream stall): last echo at 0 s, so
    // observed time freezes at 2 s while worker-1 keeps heartbeating.
    s.members.get_mut(&w(0)).unwrap().up = false;
    s.run_to(secs(30));
    assert!(
        dead(&s).is_empty(),
        "a broker hiccup is not a mass emergency"
    );
    assert!(s.published().is_empty());
    // The echo comes back: observed time catches up and the real crash is handled.
    let m = s.members.get_mut(&w(0)).unwrap();
    m.up = true;
    m.next_beat = s.now;
    s.run_for(ms(1));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn nobody_is_declared_dead_while_degraded_nor_during_the_recovery_grace() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(1));
    let now = s.now;
    s.p.set_degraded(now, true);
    s.run_to(secs(20));
    assert!(dead(&s).is_empty());
    let now = s.now;
    s.p.set_degraded(now, false); // recovery grace 15 s
    s.run_to(ms(34_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(35));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn takeover_with_unchanged_membership_publishes_nothing() {
    let mut s = Sim::settled(3, 6);
    assert!(matches!(
        s.notes.first(),
        Some(PlannerNotification::TakeoverComplete {
            version: Version(5),
            ..
        })
    ));
    s.run_to(secs(120));
    assert_eq!(s.kv_writes(0), 0);
    assert_eq!(s.p.version(), Version(5));
    assert_eq!(s.p.lifecycle(), crate::records::Lifecycle::Settled);
}

#[test]
fn takeover_expects_absent_members_and_handles_them_as_crashed_after_ttl_plus_grace() {
    let cat = parts(6);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1, 2], cat, move |s| {
        s.seed_settled(&[(0, &[0, 3]), (1, &[1, 4]), (2, &[2, 5])], &c2, 5);
        // worker-2 crashed before the takeover and its heartbeat expired (silently).
        let b = s.names.heartbeats_bucket();
        s.kv.remove(&(b, w(2).to_string()));
        s.crash(2);
    });
    s.run_to(ms(8_999));
    assert!(s.published().is_empty());
    s.run_to(secs(9));
    assert_eq!(dead(&s), vec![w(2)]);
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn takeover_continues_the_version_from_the_highest_record_not_only_meta() {
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1], cat, move |s| {
        s.seed_settled(&[(0, &[0, 2]), (1, &[1, 3])], &c2, 9);
        // meta lags behind the records (the old leader died between the two).
        let b = s.names.assignments_bucket();
        let mut m = ClusterMeta::decode(&s.kv[&(b.clone(), Names::META_KEY.to_owned())].0).unwrap();
        m.version = Version(7);
        s.put_raw(&b, Names::META_KEY, m.encode());
    });
    assert_eq!(s.p.version(), Version(9));
    let from = s.writes.len();
    s.join(2);
    let recs = s.records_since(from);
    assert_eq!(recs[0].1.version, Version(10));
}
