//! What a driver reads and asks beyond the call order: the leader, the planner's status view,
//! a manual rebalance (refused by a follower, naming the leader) and retry counts.

use parti_core::machine::KvRequest;
use parti_core::member::{NotLeader, Notification};
use parti_core::planner::PlannerState;
use parti_core::records::IdClaim;
use parti_core::store::KvError;

use crate::harness::*;

fn unavailable() -> KvError {
    KvError::Unavailable {
        reason: "test".into(),
    }
}

#[test]
fn a_follower_knows_the_leader_and_refuses_a_manual_rebalance_naming_it() {
    let mut h = H::follower(config(|_| {}));
    assert_eq!(h.m.leader(), Some(wid(9)));
    assert!(h.m.planner().is_none());
    let now = h.now;
    let e = h.m.trigger_rebalance(now).unwrap_err();
    assert_eq!(
        e,
        NotLeader {
            leader: Some(wid(9))
        }
    );
    assert_eq!(
        e.to_string(),
        "this worker does not lead; ask the leader (worker-9) or call it on every worker"
    );
    // The key is deleted: the leader is not known any more (and our own `create` is still
    // on its way).
    h.hold_when(|r| matches!(r, KvRequest::Create { bucket, .. } if bucket == "parti-leader"));
    let lb = h.names.leader_bucket();
    h.kv.remove(&lb, parti_core::records::Names::LEADER_KEY);
    h.run();
    assert_eq!(h.m.leader(), None);
    let now = h.now;
    assert_eq!(h.m.trigger_rebalance(now), Err(NotLeader { leader: None }));
    assert_eq!(
        NotLeader { leader: None }.to_string(),
        "this worker does not lead; the leader is not known; call it on every worker"
    );
}

#[test]
fn a_leader_exposes_its_planner_and_replans_on_request() {
    let mut h = H::new(config(|_| {}));
    h.start();
    h.advance(secs(40));
    assert_eq!(h.m.leader(), h.m.worker_id().cloned(), "its own write");
    let p = h.m.planner().expect("a leader runs a planner");
    assert_eq!(p.state(), PlannerState::Idle);
    assert_eq!(p.partitions(), 3);
    assert_eq!(p.unowned(), 0);
    assert_eq!(p.live_workers(), vec![wid(0)]);
    assert_eq!(p.decode_errors(), 0);
    assert_eq!(p.watch_errors(), 0);
    assert_eq!(p.version(), h.m.applied_version());
    let from = h.notes.len();
    let now = h.now;
    assert_eq!(h.m.trigger_rebalance(now), Ok(()));
    h.run();
    assert!(
        h.notes_since(from).iter().any(|n| matches!(
            n,
            Notification::Planner(parti_core::planner::PlannerNotification::PlanStarted {
                reason: parti_core::planner::PlanReason::Manual,
                ..
            })
        )),
        "{:?}",
        h.notes_since(from)
    );
}

#[test]
fn claim_retries_are_counted_and_a_claim_that_gives_up_is_exhausted() {
    let mut h = H::new(config(|c| c.worker_id_max = 0));
    h.fail_when(unavailable(), 2, |r| r.name() == "keys");
    h.start();
    h.advance(secs(1));
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    assert_eq!(h.m.retries().claim, 2);
    assert_eq!(h.m.retries().exhausted, 0);

    let mut h = H::new(config(|c| c.worker_id_max = 0));
    h.put_claim(
        0,
        IdClaim {
            instance: OTHER,
            claimed_at_ms: WALL0,
            restarting_until_ms: None,
        },
    );
    h.start();
    h.advance(secs(31));
    assert!(h.m.is_stopped());
    let r = h.m.retries();
    assert!(r.claim > 5, "retried while the pool was full: {r:?}");
    assert_eq!(r.exhausted, 1, "gave up at the startup timeout");
}

#[test]
fn election_and_publication_retries_are_counted_across_planners() {
    let mut h = H::new(config(|_| {}));
    // The first `create` of the leader key fails: the candidate retries after a backoff.
    h.fail_when(
        unavailable(),
        1,
        |r| matches!(r, KvRequest::Create { bucket, .. } if bucket == "parti-leader"),
    );
    // The planner's first two publications fail.
    h.fail_when(unavailable(), 2, |r| {
        r.is_write() && r.bucket() == "parti-assignments" && r.key().starts_with("w.")
    });
    h.start();
    h.advance(secs(3));
    assert!(h.m.is_leader());
    let r = h.m.retries();
    assert_eq!(r.election, 1, "{r:?}");
    assert!(r.publication >= 2, "{r:?}");
    // Leadership ends (the term moves on): the dropped planner's retries still count.
    let t = h.m.term().expect("a term").0;
    h.set_term(t + 1);
    assert!(!h.m.is_leader());
    assert_eq!(h.m.retries().publication, r.publication);
}
