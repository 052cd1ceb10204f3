//! The member with the real planner embedded.

use parti_core::member::Notification;
use parti_core::{Version, WorkerState};

use crate::harness::*;

#[test]
fn a_lone_member_leads_and_owns_every_partition() {
    let mut h = H::new(config(|_| {}));
    h.start();
    assert!(h.m.is_leader());
    h.advance(secs(1));
    let names: Vec<String> =
        h.m.owned()
            .iter()
            .map(|p| p.partition.id().to_string())
            .collect();
    assert_eq!(names, vec!["a", "b", "c"], "notes: {:?}", h.notes);
    // A leader mirrors its planner: the cold-start window is running.
    assert_eq!(h.m.state(), WorkerState::Scaling);
    assert!(h.m.applied_version() > Version(0));
    // Through the cold-start window and beyond: still everything, and no churn.
    h.advance(secs(120));
    assert_eq!(h.m.owned().len(), 3);
    assert_eq!(h.m.state(), WorkerState::Stable);
    let changes = state_changes(&h.notes);
    assert_eq!(
        changes[changes.len() - 3..],
        [
            (WorkerState::WaitingAssignment, WorkerState::Scaling),
            (WorkerState::Scaling, WorkerState::Rebalancing),
            (WorkerState::Rebalancing, WorkerState::Stable),
        ],
        "cold start: window, final plan, settled: {changes:?}"
    );
    assert!(
        h.notes
            .iter()
            .any(|n| matches!(n, Notification::Planner(_)))
    );
}

#[test]
fn a_lone_leader_leaves_within_the_shutdown_timeout() {
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(40));
    assert_eq!(h.m.owned().len(), 3);
    let v = h.m.applied_version();
    // Alone, nobody can take its partitions: the leave ends at the shutdown timeout.
    h.m.request_leave(h.now);
    h.run();
    h.advance(secs(31));
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(h.m.applied_version() >= v);
}

fn assignments_write(r: &parti_core::machine::KvRequest) -> bool {
    use parti_core::machine::KvRequest;
    matches!(
        r,
        KvRequest::Create { bucket, .. }
            | KvRequest::Update { bucket, .. }
            | KvRequest::Put { bucket, .. }
            | KvRequest::Delete { bucket, .. }
            if bucket == "parti-assignments"
    )
}

#[test]
fn set_partitions_reaches_the_planner_of_a_leader() {
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(40));
    assert_eq!(h.m.owned().len(), 3);
    let now = h.now;
    h.m.set_partitions(now, vec![part("a"), part("b"), part("c"), part("d")]);
    h.run();
    h.advance(secs(1));
    assert_eq!(h.m.owned().len(), 4, "a new partition is granted at once");
}

#[test]
fn after_the_lease_lapses_the_planner_writes_nothing() {
    use parti_core::machine::KvRequest;
    use parti_core::store::KvError;
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(40));
    assert!(h.m.is_leader());
    h.fail_when(KvError::Timeout, usize::MAX, |r: &KvRequest| {
        matches!(r, KvRequest::Update { bucket, .. } | KvRequest::Entry { bucket, .. } if bucket == "parti-leader")
    });
    h.advance(ms(4_600));
    assert!(!h.m.is_leader());
    let from = h.log.len();
    // Something the planner would publish at once if it still ran.
    let now = h.now;
    h.m.set_partitions(now, vec![part("a"), part("b"), part("c"), part("d")]);
    h.run();
    h.advance(secs(3));
    assert!(
        !h.requests_since(from).iter().any(assignments_write),
        "no leader write after the lease: {:?}",
        h.requests_since(from)
    );
}

#[test]
fn a_leader_whose_planner_sees_a_higher_term_steps_down_and_stops_renewing() {
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(5));
    assert!(h.m.is_leader());
    let t = h.m.term().expect("a term").0;
    h.set_term(t + 1); // another leader took a term
    assert!(!h.m.is_leader());
    assert!(h.notes.contains(&Notification::LeadershipLost {
        term: Some(parti_core::Term(t))
    }));
    let from = h.log.len();
    h.advance(ms(1_700));
    assert!(
        !h.requests_since(from).iter().any(|r| matches!(
            r,
            parti_core::machine::KvRequest::Update { bucket, .. } if bucket == "parti-leader"
        )),
        "no renewal after stepping down"
    );
}
