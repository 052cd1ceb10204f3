//! The planner's part of election and terms (PROTOCOL.md §4), and retries.

use super::fixtures::*;
use super::harness::*;
use crate::machine::IoAction;
use crate::planner::{PlannerNotification, PlannerState};
use crate::records::Intent;
use crate::records::{AssignmentRecord, Names, OwnedPartition, Phase, Record, TermCounter};
use crate::store::KvError;
use crate::types::{Fence, Term, Version};

fn only_unwatches(actions: &[IoAction]) -> bool {
    actions
        .iter()
        .all(|a| matches!(a, IoAction::Unwatch { .. }))
}

#[test]
fn after_stop_the_planner_emits_nothing_but_the_unwatch_of_its_watches() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(8));
    let now = s.now;
    s.p.stop(now);
    let mut after = Vec::new();
    while let Some(a) = s.p.poll_action() {
        after.push(a);
    }
    assert_eq!(after.len(), 2);
    assert!(only_unwatches(&after));
    assert_eq!(s.p.poll_timeout(), None);
    assert!(s.p.is_stopped());
    assert_eq!(s.p.state(), PlannerState::Stopped);
    // Time passes, the crash would be due: nothing.
    let from = s.actions.len();
    s.run_to(secs(60));
    assert_eq!(s.kv_writes(from), 0);
    assert!(s.actions[from..].is_empty());
}

#[test]
fn stop_in_the_middle_of_a_publication_abandons_it() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(ms(8_999));
    s.now = s.epoch + secs(9);
    let now = s.now;
    s.p.handle_timeout(now); // the emergency wave is queued, not yet executed
    s.p.stop(now);
    let mut after = Vec::new();
    while let Some(a) = s.p.poll_action() {
        after.push(a);
    }
    assert!(only_unwatches(&after), "{after:?}");
}

#[test]
fn a_higher_term_on_the_term_watch_stops_the_planner() {
    let mut s = Sim::settled(3, 6);
    let from = s.actions.len();
    let b = s.names.assignments_bucket();
    s.external_put(&b, Names::TERM_KEY, TermCounter { term: Term(3) }.encode());
    assert!(s.p.is_stopped());
    assert!(
        s.notes
            .contains(&PlannerNotification::SteppedDown { term: Term(3) })
    );
    assert!(only_unwatches(&s.actions[from..]));
}

#[test]
fn a_conflicting_record_of_a_higher_term_makes_the_planner_step_down() {
    let mut s = Sim::settled(3, 6);
    // A newer leader (term 3) wrote worker-1's record; we do not watch records.
    let rec = AssignmentRecord {
        term: Term(3),
        version: Version(6),
        phase: Phase::Grant,
        instance: s.instance_of(1),
        round: 0,
        partitions: vec![OwnedPartition {
            partition: p(1),
            fence: Fence::new(Term(3), Version(6)),
        }],
    };
    let b = s.names.assignments_bucket();
    s.put_raw(&b, "w.worker-1", rec.encode());
    s.crash(2);
    s.run_to(secs(10));
    assert!(s.p.is_stopped());
    assert!(
        s.notes
            .contains(&PlannerNotification::SteppedDown { term: Term(3) })
    );
    assert_eq!(s.record(1).unwrap().term, Term(3), "never overwritten");
}

#[test]
fn a_late_record_of_a_lower_term_is_refused_and_rewritten_under_our_term() {
    // The old leader's write lands after our term bump: members ignore it, so do we, and
    // we overwrite it so no later leader mistakes it for the truth.
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build_after_bump(
        config(),
        &[0, 1],
        cat,
        move |s| s.seed_settled(&[(0, &[0, 2]), (1, &[1, 3])], &c2, 5),
        |s| {
            let zombie = AssignmentRecord {
                term: Term(1),
                version: Version(6),
                phase: Phase::Grant,
                instance: s.instance_of(1),
                round: 0,
                partitions: [0, 1, 3]
                    .iter()
                    .map(|n| OwnedPartition {
                        partition: p(*n),
                        fence: Fence::new(Term(1), Version(6)),
                    })
                    .collect(),
            };
            let b = s.names.assignments_bucket();
            s.put_raw(&b, "w.worker-1", zombie.encode());
        },
    );
    let rec = s.record(1).unwrap();
    assert_eq!(rec.term, Term(2));
    assert_eq!(rec.version, Version(7));
    assert_eq!(
        rec.partitions
            .iter()
            .map(|o| o.partition.id().clone())
            .collect::<Vec<_>>(),
        vec![pid(1), pid(3)],
        "p00 stays with worker-0 (first owner in the store wins); the rest is rewritten under term 2"
    );
    assert_eq!(s.holds_of(0), [pid(0), pid(2)].into());
    s.run_to(secs(30));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn failed_writes_are_retried_with_capped_jittered_backoff() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    for _ in 0..3 {
        s.faults.push_back(Fault::Fail(KvError::Unavailable {
            reason: "down".into(),
        }));
    }
    s.run_to(secs(9));
    assert!(!s.fully_covered(&parts(6)));
    // 100 ms, 200 ms, 400 ms (± 20 %) later it is through.
    s.run_to(ms(10_000));
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_timed_out_write_is_re_read_before_it_is_retried() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.faults.push_back(Fault::TimeoutApplied);
    let from = s.actions.len();
    s.run_to(secs(11));
    assert!(s.fully_covered(&parts(6)));
    let reads = s.actions[from..]
        .iter()
        .filter(|a| {
            matches!(
                a,
                IoAction::Kv {
                    request: crate::machine::KvRequest::Entry { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(reads, 1, "the key of the timed-out write is read once");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// Found by the property test: a re-grant whose write failed must be retried.
#[test]
fn a_failed_re_grant_is_retried() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    s.faults.push_back(Fault::Fail(KvError::Unavailable {
        reason: "down".into(),
    }));
    s.members.get_mut(&w(1)).unwrap().holds.clear();
    s.intent(1, Intent::Fenced);
    assert!(s.holds_of(1).is_empty());
    s.run_to(secs(2));
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
}

/// Found by the property test: a timed-out write that never landed still blocks its
/// partitions (it could land); it is defused by writing the key past its base revision.
#[test]
fn a_timed_out_write_that_never_landed_is_defused_by_rewriting_the_key() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    s.faults.push_back(Fault::Fail(KvError::Timeout));
    let now = s.now;
    s.p.set_partitions(now, parts(6)); // p4 → worker-0? p4, p5 placed; one write times out
    s.pump();
    s.run_to(secs(10));
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// Found by the property test: a grant whose write failed outright never reached the member,
/// so it must not block those partitions once they are planned elsewhere.
#[test]
fn a_grant_that_failed_outright_does_not_count_as_held() {
    let mut s = Sim::settled(2, 4);
    s.run_to(secs(1));
    s.join(2); // empty record
    s.faults.push_back(Fault::Fail(KvError::Unavailable {
        reason: "down".into(),
    }));
    let now = s.now;
    s.p.set_partitions(now, parts(6)); // p04, p05 → worker-2: that write fails
    s.pump();
    assert!(s.holds_of(2).is_empty());
    s.intent(2, Intent::Leaving); // replanned to worker-0 / worker-1
    s.run_to(secs(3));
    assert!(s.fully_covered(&parts(6)));
    assert!(s.holds_of(2).is_empty());
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// An older leader's write with a higher version lands on `w.worker-1` after the takeover;
/// our next write to it conflicts, the re-read finds it. Versions only grow, across leaders
/// too: the rewrite under our term carries a version above the late record's.
#[test]
fn a_rewrite_over_a_late_record_of_a_lower_term_gets_a_higher_version_than_it() {
    let mut s = Sim::settled(2, 4); // term 2, version 5
    let zombie = AssignmentRecord {
        term: Term(1),
        version: Version(9),
        phase: Phase::Grant,
        instance: s.instance_of(1),
        round: 0,
        partitions: vec![OwnedPartition {
            partition: p(1),
            fence: Fence::new(Term(1), Version(9)),
        }],
    };
    let b = s.names.assignments_bucket();
    s.put_raw(&b, "w.worker-1", zombie.encode());
    let now = s.now;
    s.p.set_partitions(now, parts(6)); // p4, p5 are placed: both records are written
    s.pump();
    s.run_to(secs(5)); // after the retry backoff
    let rec = s.record(1).unwrap();
    assert_eq!(rec.term, Term(2));
    assert!(rec.version > Version(9), "{rec:?}");
    assert!(s.p.version() >= rec.version);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// An older leader's write lands on `w.worker-1` after our takeover; the running process
/// refuses it (it follows our term bump) and keeps its partitions, so nothing looks wrong.
/// Then worker-1 restarts: the new process refuses the late record too and would wait for a
/// record forever. A new process makes the planner read its key again, find the late write
/// and rewrite the record under our term.
#[test]
fn a_new_process_finding_a_late_record_of_a_lower_term_gets_it_rewritten_under_our_term() {
    let mut s = Sim::settled(2, 4); // w0: p0 p2, w1: p1 p3 at version 5 of term 1; we are term 2
    let late = AssignmentRecord {
        term: Term(1),
        version: Version(6),
        phase: Phase::Grant,
        instance: s.instance_of(1),
        round: 0,
        partitions: [1, 3]
            .iter()
            .map(|n| OwnedPartition {
                partition: p(*n),
                fence: Fence::new(Term(1), Version(6)),
            })
            .collect(),
    };
    let b = s.names.assignments_bucket();
    s.put_raw(&b, "w.worker-1", late.encode());
    s.run_to(secs(1));
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    s.crash(1);
    s.restart_back(1); // refuses the late record; its heartbeat makes us read the key
    s.run_to(secs(5));
    let rec = s.record(1).unwrap();
    assert_eq!(rec.term, Term(2));
    assert!(rec.version > Version(6), "{rec:?}");
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert!(s.fully_covered(&parts(4)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// Term 1 grants p4 to worker-0 (fence 1.2), but the write times out and lands only after
/// term 2's bump; term 2 gives p4 to worker-4 (fence 2.x), worker-4 then leaves. Term 3
/// inherits worker-0's late record, which worker-0 never applied, and keeps p4 there: the
/// rewrite must carry a new fence, not 1.2 — fences grow from owner to owner.
#[test]
fn a_rewritten_record_worker_never_applied_grants_its_partitions_with_new_fences() {
    let mut s = Sim::build_full(config(), Strat::Sticky, &[0, 1], parts(3), |_| {}, |_| {});
    s.run_for(ms(100));
    s.faults.push_back(Fault::TimeoutLate(ms(50)));
    let now = s.now;
    s.p.set_partitions(now, parts(5));
    s.pump();
    s.join(4);
    s.new_leader(parts(5)); // term 2
    s.run_for(ms(100)); // term 1's write lands: worker-0 refuses it
    s.intent(4, Intent::Leaving);
    s.new_leader(parts(5)); // term 3
    s.run_for(secs(60));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    let fences: Vec<Fence> = s
        .record(0)
        .unwrap()
        .partitions
        .iter()
        .map(|o| o.fence)
        .collect();
    assert!(fences.iter().all(|f| f.term >= Term(2)), "{fences:?}");
    assert!(s.fully_covered(&parts(5)));
}

/// Seed 6324 of the simulator: worker-2's record is of term 1 and two leader changes old (we
/// are term 3; the term-2 leader kept it, as the process acknowledged it). Worker-2 restarts,
/// its claim expires, and a new process *creates* the id afresh (no takeover of a restarting
/// claim): it refuses the record (two bumps since, PROTOCOL.md §4) and waits for a record. The
/// key is unchanged since the takeover, but its current process has not acknowledged it: the
/// record must be rewritten under our term, or worker-2's partitions stay unowned for ever.
#[test]
fn a_new_process_refusing_an_unchanged_record_of_an_older_term_gets_it_rewritten() {
    let mut s = Sim::settled(3, 6); // records of term 1, version 5; we are term 2
    s.run_to(secs(1));
    s.new_leader(parts(6)); // term 3: the acknowledged records of term 1 stay as they are
    s.run_to(secs(2));
    assert_eq!(s.record(2).map(|r| r.term), Some(Term(1)));
    let before = s.holds_of(2);
    assert!(!before.is_empty());
    s.intent(2, Intent::Restarting);
    s.crash(2);
    s.run_to(secs(4));
    // A new process claims the id afresh: nothing tells it the old process acknowledged v5.
    s.members.remove(&w(2));
    s.join(2);
    assert!(
        !s.members[&w(2)].refused.is_empty(),
        "it refused the term-1 record"
    );
    s.run_to(secs(10));
    let rec = s.record(2).unwrap();
    assert_eq!(rec.term, Term(3), "{rec:?}");
    assert_eq!(s.holds_of(2), before, "same partitions, under our term");
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// `unowned` follows the records, counted at most once per heartbeat interval (it reads every
/// record): a crashed worker's partitions count while their grants keep failing, and none once
/// they are through.
#[test]
fn unowned_counts_what_no_live_record_gives_within_one_heartbeat_interval() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    assert_eq!(s.p.unowned(), 0);
    s.crash(2);
    for _ in 0..8 {
        s.faults.push_back(Fault::Fail(KvError::Unavailable {
            reason: "down".into(),
        }));
    }
    let dead_at = (1..200)
        .map(|i| ms(100 * i))
        .find(|t| {
            s.run_to(*t);
            !s.p.live_workers().contains(&w(2))
        })
        .expect("worker-2 is declared dead");
    assert_eq!(s.p.live_count(), 2);
    s.run_to(dead_at + secs(2) + ms(100));
    assert!(!s.fully_covered(&parts(6)), "the grants keep failing");
    assert_eq!(s.p.unowned(), 2, "worker-2's two partitions");
    s.run_to(dead_at + secs(60));
    assert!(s.fully_covered(&parts(6)));
    assert_eq!(s.p.unowned(), 0);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
