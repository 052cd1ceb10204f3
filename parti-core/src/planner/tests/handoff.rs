//! Publication: revoke → acknowledge → grant (PROTOCOL.md §7).

use super::fixtures::*;
use super::harness::*;
use crate::machine::{IoAction, KvRequest};
use crate::planner::{PlanReason, PlannerNotification};
use crate::records::{Intent, Phase};
use crate::types::{PartitionId, Version, WorkerId};

fn summary(
    recs: &[(WorkerId, crate::records::AssignmentRecord)],
) -> Vec<(WorkerId, Phase, Vec<PartitionId>, u64)> {
    recs.iter()
        .map(|(w, r)| {
            (
                w.clone(),
                r.phase,
                r.partitions
                    .iter()
                    .map(|o| o.partition.id().clone())
                    .collect(),
                r.version.0,
            )
        })
        .collect()
}

fn stalled(s: &Sim) -> Vec<(WorkerId, Version)> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::HandoffStalled {
                worker, version, ..
            } => Some((worker.clone(), *version)),
            _ => None,
        })
        .collect()
}

/// Settled {w0: p0 p2 p4, w1: p1 p3 p5}; worker-2 joins at 1 s (empty record, version 6);
/// the plan at 11 s moves p4 (w0 → w2) and p5 (w1 → w2).
fn scale_out_with_silent_worker_0() -> Sim {
    let mut s = Sim::settled(2, 6);
    s.run_to(secs(1));
    s.join(2);
    s.set_acks(0, false); // worker-0 keeps heartbeating but does not apply records
    s
}

#[test]
fn a_moved_partition_is_granted_only_after_the_old_owner_acknowledged_its_revoke() {
    let mut s = scale_out_with_silent_worker_0();
    let from = s.writes.len();
    s.run_to(ms(11_500));
    assert_eq!(
        summary(&s.records_since(from)),
        vec![
            // Wave 1: both losers revoked together.
            (w(0), Phase::Revoke, vec![pid(0), pid(2)], 7),
            (w(1), Phase::Revoke, vec![pid(1), pid(3)], 7),
            // worker-1 acknowledged: p5 is free. p4 waits for worker-0.
            (w(2), Phase::Grant, vec![pid(5)], 8),
        ]
    );
    assert!(
        s.holds_of(0).contains(&pid(4)),
        "worker-0 still works on p4"
    );
    s.run_to(secs(20));
    s.set_acks(0, true); // worker-0 applies version 7 and acknowledges
    assert_eq!(
        summary(&s.records_since(from))[3..],
        [(w(2), Phase::Grant, vec![pid(4), pid(5)], 9)]
    );
    assert_eq!(s.published(), vec![(PlanReason::PlannedScale, Version(9))]);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_silent_live_owner_raises_handoff_stalled_and_blocks_only_its_own_partitions() {
    let mut s = scale_out_with_silent_worker_0();
    s.run_to(ms(11_500));
    s.run_to(ms(45_999)); // revoke written at 11 s; revoke_timeout 35 s
    assert!(stalled(&s).is_empty());
    s.run_to(secs(46));
    assert_eq!(stalled(&s), vec![(w(0), Version(7))]);
    assert_eq!(s.holds_of(2), [pid(5)].into(), "p5 moved; p4 stays blocked");
    assert!(s.holds_of(0).contains(&pid(4)));
    assert!(s.published().is_empty());
    // Still waited for: it acknowledges late, p4 moves then.
    s.run_to(secs(60));
    s.set_acks(0, true);
    assert_eq!(s.holds_of(2), [pid(4), pid(5)].into());
    assert_eq!(stalled(&s).len(), 1, "reported once");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_silent_owner_that_dies_is_no_longer_awaited() {
    let mut s = Sim::settled(2, 6);
    s.run_to(secs(1));
    s.join(2);
    s.set_acks(1, false);
    s.run_to(ms(11_500));
    assert!(!s.holds_of(2).contains(&pid(5)), "p5 waits for worker-1");
    s.crash(1); // last heartbeat at 10 s: dead at 19 s
    s.run_to(ms(18_900));
    assert!(!s.holds_of(2).contains(&pid(5)));
    s.run_to(ms(19_100));
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_dead_owner_is_not_awaited_its_record_is_reduced_then_its_partitions_granted() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    let from = s.writes.len();
    s.run_to(secs(9));
    assert_eq!(
        summary(&s.records_since(from)),
        vec![
            (w(2), Phase::Revoke, vec![], 6),
            (w(0), Phase::Grant, vec![pid(0), pid(2), pid(3)], 7),
            (w(1), Phase::Grant, vec![pid(1), pid(4), pid(5)], 7),
        ]
    );
    assert_eq!(s.now, s.epoch + secs(9), "all at the moment of death");
    assert_eq!(s.published(), vec![(PlanReason::Emergency, Version(7))]);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn independent_writes_are_all_in_flight_together() {
    let mut s = Sim::settled(3, 6);
    let now = s.now;
    s.p.set_partitions(now, parts(9));
    let mut writes = Vec::new();
    while let Some(a) = s.p.poll_action() {
        writes.push(a);
    }
    let keys: Vec<String> = writes
        .iter()
        .filter_map(|a| match a {
            IoAction::Kv {
                request: KvRequest::Update { key, .. },
                ..
            } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["w.worker-0", "w.worker-1", "w.worker-2"]);
}

#[test]
fn a_fenced_member_is_granted_its_partitions_back_with_a_new_version_and_fences() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    let from = s.writes.len();
    let m = s.members.get_mut(&w(1)).unwrap();
    m.holds.clear();
    s.intent(1, Intent::Fenced);
    let recs = s.records_since(from);
    assert_eq!(
        summary(&recs),
        vec![(w(1), Phase::Grant, vec![pid(1), pid(3)], 6)]
    );
    assert!(
        recs[0]
            .1
            .partitions
            .iter()
            .all(|o| o.fence.version == Version(6))
    );
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn an_undecodable_record_is_reported_once_treated_as_absent_and_rewritten() {
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1], cat, move |s| {
        s.seed_settled(&[(0, &[0, 2]), (1, &[1, 3])], &c2, 5);
        let b = s.names.assignments_bucket();
        s.put_raw(&b, "w.worker-1", vec![1, 0xff, 0xff]);
    });
    assert_eq!(s.p.decode_errors(), 1);
    let undecodable = s
        .notes
        .iter()
        .filter(|n| matches!(n, PlannerNotification::Undecodable { .. }))
        .count();
    assert_eq!(undecodable, 1);
    let rec = s.record(1).unwrap();
    assert_eq!(rec.version, Version(6));
    assert_eq!(rec.partitions.len(), 2);
    s.run_to(secs(30));
    assert!(s.fully_covered(&parts(4)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_member_fenced_again_after_its_re_grant_is_re_granted_again() {
    let mut s = Sim::settled(2, 4);
    for k in 1..4u64 {
        s.run_to(secs(3 * k));
        s.members.get_mut(&w(1)).unwrap().holds.clear();
        s.intent(1, Intent::Fenced);
        assert_eq!(s.holds_of(1), [pid(1), pid(3)].into(), "fence number {k}");
    }
    assert_eq!(s.p.version(), Version(8));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_crash_in_a_fleet_of_hundreds_costs_two_pipelined_waves() {
    // 200 workers, 2000 partitions: the crash of one is repaired with one wave reducing the
    // dead worker's record and one wave of grants, each all in flight together.
    let mut s = Sim::settled(200, 2_000);
    s.crash(199);
    let from = s.writes.len();
    let actions = s.actions.len();
    s.run_to(secs(9));
    let recs = s.records_since(from);
    let versions: std::collections::BTreeSet<u64> = recs.iter().map(|(_, r)| r.version.0).collect();
    assert_eq!(versions.len(), 2, "two waves");
    assert_eq!(
        recs.len(),
        1 + 10,
        "the dead record and the 10 receivers (sticky)"
    );
    assert!(s.fully_covered(&parts(2_000)));
    assert!(s.kv_writes(actions) <= 12, "records and meta, no retries");
}

#[test]
fn a_partition_two_records_claim_at_takeover_is_kept_by_neither_until_one_lets_go() {
    // The old leader's unacknowledged grant to worker-0 names p03, which worker-1 holds
    // (acknowledged). The plan keeps p03 with worker-1 (the acknowledged record wins), but
    // worker-1 may keep it only once worker-0's record no longer names it.
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1], cat, move |s| {
        s.seed_settled(&[(0, &[0, 2]), (1, &[1, 3])], &c2, 5);
        let rec = crate::records::AssignmentRecord {
            term: crate::types::Term(1),
            version: Version(6),
            phase: Phase::Grant,
            instance: s.instance_of(0),
            round: 0,
            partitions: [0, 2, 3]
                .iter()
                .map(|n| crate::records::OwnedPartition {
                    partition: p(*n),
                    fence: crate::types::Fence::new(crate::types::Term(1), Version(6)),
                })
                .collect(),
        };
        let b = s.names.assignments_bucket();
        s.put_raw(&b, "w.worker-0", crate::records::Record::encode(&rec));
    });
    s.run_to(secs(5));
    assert_eq!(s.holds_of(0), [pid(0), pid(2)].into());
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert!(
        !s.record(0)
            .unwrap()
            .partitions
            .iter()
            .any(|o| o.partition.id() == &pid(3))
    );
    assert!(s.fully_covered(&parts(4)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// A member fenced twice in a row (a new fence round each time) gets its partitions back
/// addressed to its newest round: a grant planned for the first round would be taken as empty
/// by the member, so only the newest round counts.
#[test]
fn a_member_fenced_twice_in_a_row_is_re_granted_in_its_newest_round() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    for _ in 0..2 {
        s.members.get_mut(&w(1)).unwrap().holds.clear();
        s.intent(1, Intent::Fenced);
    }
    s.run_to(ms(1_100));
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    let rec = s.record(1).unwrap();
    assert_eq!((rec.instance, rec.round), (s.instance_of(1), 2));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// A record is addressed to one process. A new process of worker-1 starts while the leader's
/// heartbeat watch is stalled and the leader moves p5 away from worker-1: the new process
/// applies nothing of its predecessor's records (version 6: p1 p3 p5; version 7: p1 p3),
/// so it never holds p5 whatever the interleaving; once the leader sees its heartbeat it
/// addresses worker-1's record to it, with new fences.
#[test]
fn a_new_process_applies_nothing_of_its_predecessors_records() {
    let mut s = Sim::settled(2, 6); // w0: p0 p2 p4, w1: p1 p3 p5 at version 6
    s.run_to(secs(1));
    s.join(2); // the plan at 11 s moves p4 (w0 → w2) and p5 (w1 → w2)
    s.run_to(ms(10_500));
    s.stall_heartbeats(ms(1_500));
    s.restart_back(1); // heartbeat in the backlog
    assert!(s.holds_of(1).is_empty());
    s.run_to(secs(13));
    assert!(!s.holds_of(1).contains(&pid(5)));
    s.run_to(secs(20));
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert_eq!(s.holds_of(2), [pid(4), pid(5)].into());
    let rec = s.record(1).unwrap();
    assert_eq!(rec.instance, s.instance_of(1));
    let fence = crate::types::Fence::new(s.p.term(), rec.version);
    assert!(rec.partitions.iter().all(|o| o.fence == fence), "{rec:?}");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
