//! A record the store refuses as too large (`KvError::ValueTooLarge`, NATS `max_payload`):
//! reported once, never retried as it is, nothing granted twice; a plan that changes the
//! worker's share is tried.

use super::fixtures::*;
use super::harness::*;
use crate::machine::{IoAction, KvRequest};
use crate::planner::PlannerNotification;
use crate::records::{AssignmentRecord, Names, Record};
use crate::types::WorkerId;

fn refused(s: &Sim) -> Vec<(WorkerId, usize)> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::RecordTooLarge {
                worker, partitions, ..
            } => Some((worker.clone(), *partitions)),
            _ => None,
        })
        .collect()
}

/// Writes of `worker`'s record naming `n` partitions, among the actions since `from`.
fn attempts(s: &Sim, from: usize, worker: u32, n: usize) -> usize {
    let key = Names::assignment_key(&w(worker));
    s.actions[from..]
        .iter()
        .filter_map(|a| match a {
            IoAction::Kv {
                request:
                    KvRequest::Update { key: k, value, .. } | KvRequest::Create { key: k, value, .. },
                ..
            } if *k == key => AssignmentRecord::decode(value).ok(),
            _ => None,
        })
        .filter(|r| r.partitions.len() == n)
        .count()
}

#[test]
fn a_record_over_the_store_limit_is_reported_once_and_not_retried() {
    // Settled: worker-0 p0 p2 p4, worker-1 p1 p3 p5. The store takes a record of three
    // partitions, not one of six.
    let mut s = Sim::settled(2, 6);
    let three = s.record(0).expect("worker-0's record").encode().len();
    s.max_value = Some(three + 4);
    s.run_to(secs(1));
    let from = s.actions.len();
    s.crash(1); // everything would go to worker-0: six partitions, refused
    s.run_to(secs(120));

    assert_eq!(refused(&s), vec![(w(0), 6)], "reported once");
    assert_eq!(
        attempts(&s, from, 0, 6),
        1,
        "the refused record is not sent again"
    );
    assert_eq!(
        s.holds_of(0),
        [pid(0), pid(2), pid(4)].into_iter().collect(),
        "worker-0 keeps what it had"
    );
    assert!(s.violations.is_empty(), "{:?}", s.violations);

    // A worker joins: shares of three fit again, and the plan goes out.
    s.join(2);
    s.run_to(secs(180));
    assert!(s.fully_covered(&parts(6)), "{:?}", s.held());
    assert_eq!(refused(&s).len(), 1);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
