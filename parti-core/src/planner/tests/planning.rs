//! Planning (PROTOCOL.md §6).

use super::fixtures::*;
use super::harness::*;
use crate::planner::{PlanReason, PlannerState};
use crate::records::{Lifecycle, Phase};
use crate::types::{PartitionId, Version};

#[test]
fn cold_start_covers_at_once_then_publishes_the_final_plan_after_the_window() {
    let mut s = Sim::cold(&[0, 1], parts(4));
    // Immediate coverage: one wave (version 1) with every partition, then meta (cold start).
    let recs = s.records_since(0);
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter()
            .all(|(_, r)| r.version == Version(1) && r.phase == Phase::Grant)
    );
    assert_eq!(s.holds_of(0), [pid(0), pid(2)].into());
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert_eq!(s.published(), vec![(PlanReason::ColdStart, Version(1))]);
    assert_eq!(s.p.lifecycle(), Lifecycle::ColdStart);
    assert_eq!(s.p.state(), PlannerState::Scaling);
    s.run_to(secs(29));
    assert_eq!(s.published().len(), 1);
    s.run_to(secs(31));
    assert_eq!(s.p.lifecycle(), Lifecycle::Settled);
    assert_eq!(s.published().last().unwrap().0, PlanReason::ColdStartFinal);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn cold_start_window_is_extended_by_joins_and_capped_at_twice() {
    let mut s = Sim::cold(&[0], parts(6));
    s.run_to(secs(20));
    s.join(1); // deadline 20 + 30 = 50
    s.run_to(secs(45));
    s.join(2); // 45 + 30 = 75, capped at 0 + 60
    s.run_to(secs(59));
    assert_eq!(s.p.lifecycle(), Lifecycle::ColdStart);
    assert_eq!(s.published().len(), 1);
    s.run_to(secs(61));
    assert_eq!(s.p.lifecycle(), Lifecycle::Settled);
    assert_eq!(s.published().last().unwrap().0, PlanReason::ColdStartFinal);
    for n in 0..3 {
        assert_eq!(s.holds_of(n).len(), 2, "worker-{n}");
    }
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_worker_joining_during_the_cold_start_window_waits_for_the_final_plan() {
    // An empty store and nobody heartbeating but the leader: everything goes to the leader at
    // once; a worker joining later waits for the final plan.
    let mut s = Sim::cold(&[0], parts(2));
    assert_eq!(s.holds_of(0).len(), 2);
    s.run_to(secs(5));
    s.join(1);
    assert_eq!(s.holds_of(1).len(), 0);
    s.run_to(secs(36));
    assert_eq!(s.holds_of(1).len(), 1);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn joins_are_batched_into_one_publication_three_to_ten_workers() {
    let mut s = Sim::settled(3, 30);
    assert!(s.published().is_empty());
    let v0 = s.p.version();
    for (i, n) in (3..10).enumerate() {
        s.run_to(secs(1 + i as u64));
        s.join(n);
    }
    // Window: first join at 1 s, last at 7 s → 17 s (cap 21 s).
    s.run_to(secs(16));
    assert!(s.published().is_empty());
    assert_eq!(s.p.state(), PlannerState::Scaling);
    s.run_to(secs(18));
    assert_eq!(
        s.published(),
        vec![(PlanReason::PlannedScale, s.p.version())]
    );
    // Each joiner got an empty record at once (so it knows it was seen; 7 versions), then the
    // plan: a revoke wave and a grant wave.
    assert_eq!(s.p.version(), Version(v0.0 + 7 + 2));
    for n in 0..10 {
        assert_eq!(s.holds_of(n).len(), 3, "worker-{n}");
    }
    assert_eq!(s.p.state(), PlannerState::Idle);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn three_sequential_joins_each_publish_exactly_once() {
    // Go: calculator_cooldown_test "three sequential joins each produce exactly +1 version";
    // here each plan is two waves (revoke, grant), so +2 versions each and one `Published`.
    let mut s = Sim::settled(2, 12);
    for (k, n) in (2..5).enumerate() {
        let before = s.published().len();
        s.run_to(secs(30 * k as u64 + 1));
        s.join(n);
        s.run_to(secs(30 * k as u64 + 20));
        assert_eq!(s.published().len(), before + 1);
    }
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn crash_during_a_window_is_handled_at_once_and_includes_the_joiner() {
    let mut s = Sim::settled(3, 6);
    s.run_to(ms(100));
    s.crash(2); // last heartbeat at 0 s: dead at 9 s, before the window (10.1 s) ends
    s.join(3);
    s.run_to(ms(8_900));
    assert!(s.published().is_empty());
    assert_eq!(s.p.state(), PlannerState::Scaling);
    s.run_to(ms(9_100));
    assert_eq!(s.published(), vec![(PlanReason::Emergency, s.p.version())]);
    assert!(s.fully_covered(&parts(6)));
    assert_eq!(
        s.holds_of(3).len(),
        2,
        "the joiner is in the emergency plan"
    );
    assert_eq!(s.p.state(), PlannerState::Idle);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn graceful_leave_hands_over_at_once() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.intent(2, crate::records::Intent::Leaving);
    assert_eq!(s.published(), vec![(PlanReason::Leave, s.p.version())]);
    assert!(s.holds_of(2).is_empty());
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

fn record_writes(s: &Sim, from: usize) -> usize {
    s.records_since(from).len()
}

/// The new process of the id is given exactly what its predecessor held: one record write,
/// addressed to the new process (records are addressed to a process, so a late delivery of the
/// predecessor's record can never be applied by its successor), with new fences; nothing moves.
#[test]
fn restart_is_reserved_then_the_same_id_gets_its_partitions_back_unchanged() {
    let mut s = Sim::settled(3, 6);
    let before = s.holds_of(2);
    let writes = s.writes.len();
    let version = s.p.version();
    s.run_to(secs(1));
    s.intent(2, crate::records::Intent::Restarting);
    s.crash(2);
    s.run_to(secs(20)); // dead by liveness, but reserved
    assert_eq!(
        record_writes(&s, writes),
        0,
        "no record moves during the reservation"
    );
    s.restart_back(2);
    s.run_to(secs(40));
    assert_rejoined(&s, writes, 2, &before);
    assert_eq!(s.p.version(), version.next());
    assert_eq!(s.published(), vec![(PlanReason::Rejoin, version.next())]);
    // `meta` noted the reservation and its end.
    let restarting: Vec<Vec<crate::types::WorkerId>> = s.writes[writes..]
        .iter()
        .filter_map(|x| match x {
            Written::Meta(m) => Some(m.restarting.clone()),
            Written::Record(..) => None,
        })
        .collect();
    assert_eq!(restarting, vec![vec![w(2)], vec![]]);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// One record write since `from`: worker-`n`'s, addressed to its current process, giving
/// exactly `before` with fences of that write; every other member holds what it held.
fn assert_rejoined(s: &Sim, from: usize, n: u32, before: &std::collections::BTreeSet<PartitionId>) {
    let recs = s.records_since(from);
    assert_eq!(recs.len(), 1, "one write, zero movement: {recs:?}");
    let (who, rec) = &recs[0];
    assert_eq!(*who, w(n));
    assert_eq!(rec.instance, s.instance_of(n));
    assert_eq!(s.holds_of(n), *before);
    let fence = crate::types::Fence::new(s.p.term(), rec.version);
    assert!(rec.partitions.iter().all(|o| o.fence == fence), "{rec:?}");
}

#[test]
fn a_restart_reservation_survives_a_leader_change() {
    let mut s = Sim::settled(3, 6);
    let before = s.holds_of(2);
    s.run_to(secs(1));
    s.intent(2, crate::records::Intent::Restarting);
    s.crash(2);
    s.run_to(secs(12));
    // Its heartbeat expired; a new leader takes over and learns the reservation from `meta`.
    let b = s.names.heartbeats_bucket();
    s.kv.remove(&(b, w(2).to_string()));
    s.new_leader(parts(6));
    let writes = s.writes.len();
    s.run_to(secs(25)); // long past 12 s + ttl + grace
    assert_eq!(record_writes(&s, writes), 0);
    s.restart_back(2);
    s.run_to(secs(60));
    assert_rejoined(&s, writes, 2, &before);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn restart_not_back_within_the_rejoin_window_is_handled_as_a_crash() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.intent(2, crate::records::Intent::Restarting);
    s.crash(2);
    s.run_to(secs(30));
    assert!(s.published().is_empty());
    s.run_to(ms(31_100)); // reservation 1 s + 30 s
    assert_eq!(s.published(), vec![(PlanReason::Emergency, s.p.version())]);
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn new_partitions_are_granted_at_once_and_nothing_moves() {
    let mut s = Sim::settled(2, 4);
    let (h0, h1) = (s.holds_of(0), s.holds_of(1));
    s.run_to(secs(1));
    let from = s.writes.len();
    let now = s.now;
    s.p.set_partitions(now, parts(6));
    s.pump();
    let recs = s.records_since(from);
    assert_eq!(recs.len(), 2, "one grant wave: {recs:?}");
    assert!(s.holds_of(0).is_superset(&h0) && s.holds_of(1).is_superset(&h1));
    assert!(s.fully_covered(&parts(6)));
    assert_eq!(s.published().last().unwrap().0, PlanReason::Catalog);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn removed_partitions_are_revoked_at_once() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    let from = s.writes.len();
    let now = s.now;
    s.p.set_partitions(now, parts(2));
    s.pump();
    let recs = s.records_since(from);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|(_, r)| r.phase == Phase::Revoke));
    assert!(s.fully_covered(&parts(2)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

fn weighted(n: u32, heavy: &[u32], weight: u64) -> Vec<crate::types::Partition> {
    (0..n)
        .map(|i| {
            let wgt = if heavy.contains(&i) { weight } else { 100 };
            crate::types::Partition::new([format!("p{i:02}")], wgt).unwrap()
        })
        .collect()
}

#[test]
fn weight_only_change_under_min_imbalance_publishes_nothing() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    let from = s.actions.len();
    let now = s.now;
    s.p.set_partitions(now, weighted(4, &[0], 110)); // worker-0: 210 vs mean 205 → 2 %
    s.pump();
    s.run_to(secs(60));
    assert_eq!(s.kv_writes(from), 0);
    assert!(s.published().is_empty());
}

#[test]
fn weight_change_over_min_imbalance_replans_as_a_planned_change_after_the_cooldown() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    s.join(2);
    s.run_to(ms(11_500)); // window ends at 11 s: replan
    assert_eq!(s.published().len(), 1);
    let now = s.now;
    // p00 and p03 were kept by worker-0 (sticky); make them heavy.
    s.p.set_partitions(now, weighted(4, &[0, 3], 1_000));
    s.pump();
    s.run_to(ms(20_900)); // cooldown: 11 s + 10 s
    assert_eq!(s.published().len(), 1);
    s.run_to(ms(21_100));
    assert_eq!(s.published().len(), 2);
    assert_eq!(s.published()[1].0, PlanReason::Weights);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn cooldown_defers_planned_changes_but_not_emergencies() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.join(3);
    s.run_to(ms(11_500)); // planned scale at 11 s; cooldown until 21 s
    assert_eq!(s.published().len(), 1);
    let now = s.now;
    s.p.set_partitions(now, weighted(6, &[0, 1, 2], 1_000));
    s.pump();
    s.crash(3); // last heartbeat at ~11 s: dead at ~20 s, inside the cooldown
    s.run_to(ms(20_500));
    let reasons: Vec<_> = s.published().iter().map(|x| x.0).collect();
    assert_eq!(
        reasons,
        vec![PlanReason::PlannedScale, PlanReason::Emergency]
    );
    assert!(s.fully_covered(&weighted(6, &[0, 1, 2], 1_000)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn manual_rebalance_ignores_the_cooldown() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    s.join(2);
    s.run_to(ms(11_500));
    let now = s.now;
    s.p.trigger_rebalance(now)
        .expect("a running planner replans");
    s.pump();
    assert_eq!(s.published().last().unwrap().0, PlanReason::Manual);
    // A stopped planner leads no more and says so.
    s.p.stop(now);
    assert_eq!(
        s.p.trigger_rebalance(now),
        Err(crate::member::NotLeader { leader: None })
    );
}

#[test]
fn a_planned_scale_window_is_extended_by_joins_and_capped_at_twice() {
    let mut s = Sim::settled(2, 12);
    s.run_to(secs(1));
    s.join(2); // deadline 11 s, cap 21 s
    s.run_to(secs(9));
    s.join(3); // 19 s
    s.run_to(secs(18));
    s.join(4); // 28 s, capped at 21 s
    s.run_to(ms(20_900));
    assert!(s.published().is_empty());
    s.run_to(ms(21_100));
    assert_eq!(
        s.published(),
        vec![(PlanReason::PlannedScale, s.p.version())]
    );
    for n in 0..5 {
        assert!(s.holds_of(n).len() >= 2, "worker-{n}");
    }
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// Found by the runtime's embedded example: a worker that crashed long ago (its record emptied
/// by the emergency, its heartbeat expired) was, for a new leader, a *join*: expected live from
/// its record until proven dead, it entered the next plan, which took partitions from the live
/// workers for it, and the emergency a moment later moved them back.
#[test]
fn a_new_leader_plans_nothing_for_a_worker_it_knows_only_from_a_record() {
    // A scale window shorter than the time to declare a death (as in `Config::fast()`), so the
    // window would close while the ghost is still "expected".
    let mut cfg = config().into_inner();
    cfg.planned_scale_window = secs(2);
    cfg.min_rebalance_interval = secs(1);
    let mut s = Sim::settled_with(cfg.validate().expect("valid"), 4, 8);
    s.crash(3);
    s.run_to(secs(20)); // declared dead, its partitions regranted, its record emptied
    let b = s.names.heartbeats_bucket();
    s.kv.remove(&(b, w(3).to_string())); // expired
    let held: Vec<_> = (0..3).map(|n| s.holds_of(n)).collect();
    s.new_leader(parts(8));
    s.run_to(secs(60));
    let after: Vec<_> = (0..3).map(|n| s.holds_of(n)).collect();
    assert_eq!(after, held, "nothing moved between the live workers");
    for (worker, rec) in s.records_since(0) {
        if worker == w(3) {
            assert!(
                rec.partitions.is_empty(),
                "granted to a dead worker: {rec:?}"
            );
        }
    }
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
