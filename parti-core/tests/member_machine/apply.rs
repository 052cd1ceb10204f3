//! PROTOCOL.md §4 (zombie writes) and §8: applying records, deliveries, acknowledgements.

use parti_core::member::{Action, DeliveryId, Notification};
use parti_core::records::{Names, OwnedPartition, Phase};
use parti_core::{Fence, Partition, Term, Version, WorkerState};

use crate::harness::*;

fn deliveries(h: &H) -> Vec<(Vec<OwnedPartition>, Vec<OwnedPartition>)> {
    h.deliveries
        .iter()
        .map(|(_, r, a)| (r.clone(), a.clone()))
        .collect()
}

fn acks(h: &H, from: usize) -> Vec<u64> {
    h.heartbeats_since(from)
        .iter()
        .map(|hb| hb.applied.0)
        .collect()
}

#[test]
fn applies_records_in_version_order_and_acknowledges_each() {
    let mut h = H::follower(config(|_| {}));
    let from = h.log.len();
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.grant(0, 1, 2, &[owned("a", 1, 1), owned("b", 1, 2)]);
    assert_eq!(
        deliveries(&h),
        vec![
            (vec![], vec![owned("a", 1, 1)]),
            (vec![], vec![owned("b", 1, 2)]),
        ]
    );
    assert_eq!(h.m.applied_version(), Version(2));
    assert_eq!(
        acks(&h, from),
        vec![1, 2],
        "one acknowledgement per applied record, at once"
    );
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1), owned("b", 1, 2)]);
}

#[test]
fn stale_and_duplicate_versions_are_ignored() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 3, &[owned("a", 1, 3)]);
    h.grant(0, 1, 2, &[owned("b", 1, 2)]);
    h.grant(0, 1, 3, &[owned("c", 1, 3)]);
    assert_eq!(deliveries(&h), vec![(vec![], vec![owned("a", 1, 3)])]);
    assert_eq!(h.m.owned(), vec![owned("a", 1, 3)]);
    assert_eq!(h.m.applied_version(), Version(3));
}

#[test]
fn a_zombie_write_of_an_older_term_after_the_term_bump_is_ignored() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.set_term(2);
    // The deposed leader's late write lands after the bump, with a higher version.
    h.grant(0, 1, 5, &[owned("a", 1, 1), owned("b", 1, 5)]);
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1)]);
    assert_eq!(h.m.applied_version(), Version(1));
    // The new leader's record applies.
    h.grant(0, 2, 6, &[owned("a", 1, 1), owned("c", 2, 6)]);
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1), owned("c", 2, 6)]);
    assert_eq!(h.m.known_term(), Some(Term(2)));
}

#[test]
fn a_record_whose_term_was_not_announced_first_is_refused() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 3, 1, &[owned("a", 3, 1)]);
    assert!(h.m.owned().is_empty());
    assert_eq!(h.m.applied_version(), Version(0));
}

#[test]
fn revokes_before_assigning_in_one_delivery() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1), owned("b", 1, 1)]);
    h.record(0, 1, 2, Phase::Revoke, &[owned("b", 1, 1)]);
    h.grant(0, 1, 3, &[owned("b", 1, 1), owned("c", 1, 3)]);
    assert_eq!(
        deliveries(&h),
        vec![
            (vec![], vec![owned("a", 1, 1), owned("b", 1, 1)]),
            (vec![owned("a", 1, 1)], vec![]),
            (vec![], vec![owned("c", 1, 3)]),
        ]
    );
    // A grant that also takes something away: revoked and assigned in one delivery, revoked
    // first (the driver runs on_revoked before on_assigned).
    h.grant(0, 1, 4, &[owned("c", 1, 3), owned("d", 1, 4)]);
    assert_eq!(
        deliveries(&h).last().unwrap(),
        &(vec![owned("b", 1, 1)], vec![owned("d", 1, 4)])
    );
}

#[test]
fn records_arriving_while_a_handler_runs_are_coalesced_to_the_newest() {
    let mut h = H::follower(config(|_| {}));
    h.auto_deliver = false;
    let from = h.log.len();
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    assert_eq!(h.deliveries.len(), 1);
    h.grant(0, 1, 2, &[owned("a", 1, 1), owned("b", 1, 2)]);
    h.grant(0, 1, 3, &[owned("c", 1, 3)]);
    assert_eq!(h.deliveries.len(), 1, "never two deliveries at once");
    assert_eq!(
        acks(&h, from),
        Vec::<u64>::new(),
        "nothing acknowledged before the handler ends"
    );
    h.complete(DeliveryId(1));
    assert_eq!(acks(&h, from), vec![1]);
    assert_eq!(
        deliveries(&h),
        vec![
            (vec![], vec![owned("a", 1, 1)]),
            // Diffed against what the application was told ({a}), not against version 2.
            (vec![owned("a", 1, 1)], vec![owned("c", 1, 3)]),
        ]
    );
    h.complete(DeliveryId(2));
    assert_eq!(acks(&h, from), vec![1, 3]);
    assert_eq!(h.m.applied_version(), Version(3));
}

#[test]
fn a_handler_that_overruns_its_timeout_counts_as_done() {
    let mut h = H::follower(config(|_| {}));
    h.auto_deliver = false;
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.advance(secs(30) - ms(1));
    assert_eq!(h.m.applied_version(), Version(0));
    let from = h.log.len();
    h.advance(ms(1));
    assert!(h.notes.contains(&Notification::HandlerTimedOut {
        delivery: DeliveryId(1)
    }));
    assert_eq!(h.m.applied_version(), Version(1));
    // (The periodic heartbeat is due at the same instant and goes first.)
    assert_eq!(
        acks(&h, from).last(),
        Some(&1),
        "acknowledged at the timeout"
    );
    // The late completion changes nothing.
    let from = h.log.len();
    h.complete(DeliveryId(1));
    assert!(h.log[from..].is_empty());
}

#[test]
fn a_revocation_that_overruns_counts_as_done_and_the_next_delivery_follows() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.auto_deliver = false;
    h.record(0, 1, 2, Phase::Revoke, &[]);
    h.grant(0, 1, 3, &[owned("b", 1, 3)]);
    h.advance(secs(30));
    assert_eq!(h.m.applied_version(), Version(2));
    assert_eq!(
        deliveries(&h),
        vec![
            (vec![], vec![owned("a", 1, 1)]),
            (vec![owned("a", 1, 1)], vec![]),
            (vec![], vec![owned("b", 1, 3)]),
        ]
    );
    assert!(matches!(h.log.last(), Some(Action::Deliver { .. })));
}

#[test]
fn a_deleted_record_revokes_everything() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1), owned("b", 1, 1)]);
    let from = h.log.len();
    let ab = h.names.assignments_bucket();
    h.kv.remove(&ab, &Names::assignment_key(&wid(0)));
    h.run();
    assert_eq!(
        deliveries(&h).last().unwrap(),
        &(vec![owned("a", 1, 1), owned("b", 1, 1)], vec![])
    );
    assert!(h.m.owned().is_empty());
    assert_eq!(
        h.heartbeats_since(from).len(),
        1,
        "the revocation is acknowledged"
    );
    // Versions keep their order after a delete.
    h.grant(0, 1, 1, &[owned("c", 1, 1)]);
    assert!(h.m.owned().is_empty());
    h.grant(0, 1, 2, &[owned("c", 1, 2)]);
    assert_eq!(h.m.owned(), vec![owned("c", 1, 2)]);
}

/// Records are addressed to a process. One addressed to another process of our id (a late
/// delivery of a predecessor's record, or a successor's after we lost the id) gives us
/// nothing: it is taken as an empty record of its version — revoked, then acknowledged.
#[test]
fn a_record_addressed_to_another_process_of_the_id_counts_as_empty() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    let from = h.log.len();
    let before = h.deliveries.len();
    h.record_to(
        OTHER,
        0,
        0,
        1,
        2,
        Phase::Grant,
        &[owned("a", 1, 1), owned("b", 1, 2)],
    );
    assert_eq!(
        deliveries(&h)[before..],
        [(vec![owned("a", 1, 1)], vec![])],
        "what we held is revoked; nothing of the other process's record is assigned"
    );
    assert!(h.m.owned().is_empty());
    assert_eq!(h.m.applied_version(), Version(2));
    assert_eq!(h.heartbeats_since(from).len(), 1, "acknowledged");
    h.grant(0, 1, 3, &[owned("b", 1, 3)]);
    assert_eq!(h.m.owned(), vec![owned("b", 1, 3)]);
}

#[test]
fn an_undecodable_record_counts_as_absent_and_is_reported_once() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    let ab = h.names.assignments_bucket();
    let key = Names::assignment_key(&wid(0));
    h.kv.write(&ab, &key, vec![1, 0xff, 0xff]);
    h.run();
    h.kv.write(&ab, &key, vec![9]);
    h.run();
    assert!(h.m.owned().is_empty());
    assert_eq!(h.m.decode_errors(), 2);
    let reports = h
        .notes
        .iter()
        .filter(|n| matches!(n, Notification::UndecodableValue { .. }))
        .count();
    assert_eq!(reports, 1);
}

#[test]
fn the_first_assignment_is_delivered_like_any_other_and_makes_the_member_stable() {
    let mut h = H::new(config(|_| {}));
    let lb = h.names.leader_bucket();
    h.kv.write(
        &lb,
        Names::LEADER_KEY,
        parti_core::records::Record::encode(&parti_core::records::Leadership {
            worker: wid(9),
            instance: OTHER,
            term: Term(1),
        }),
    );
    h.set_term(1);
    h.grant(0, 1, 4, &[owned("a", 1, 4)]);
    h.start();
    assert_eq!(deliveries(&h), vec![(vec![], vec![owned("a", 1, 4)])]);
    assert_eq!(
        state_changes(&h.notes),
        vec![
            (WorkerState::Init, WorkerState::ClaimingId),
            (WorkerState::ClaimingId, WorkerState::Election),
            (WorkerState::Election, WorkerState::WaitingAssignment),
            (WorkerState::WaitingAssignment, WorkerState::Stable),
        ]
    );
    assert!(h.notes.contains(&Notification::Ready));
}

#[test]
fn waiting_for_the_first_assignment_then_stable() {
    let mut h = H::follower(config(|_| {}));
    assert_eq!(h.m.state(), WorkerState::WaitingAssignment);
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    assert_eq!(h.m.state(), WorkerState::Stable);
    assert_eq!(
        state_changes(&h.notes),
        vec![
            (WorkerState::Init, WorkerState::ClaimingId),
            (WorkerState::ClaimingId, WorkerState::Election),
            (WorkerState::Election, WorkerState::WaitingAssignment),
            (WorkerState::WaitingAssignment, WorkerState::Stable),
        ]
    );
}

#[test]
fn no_assignment_by_the_startup_timeout_still_ends_start_in_stable() {
    let mut h = H::follower(config(|_| {}));
    h.advance(secs(30) - ms(1));
    assert_eq!(h.m.state(), WorkerState::WaitingAssignment);
    h.advance(ms(1));
    assert_eq!(h.m.state(), WorkerState::Stable);
    assert!(h.notes.contains(&Notification::Ready));
}

#[test]
fn a_new_fence_is_delivered_again_and_a_weight_change_alone_is_not() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.grant(0, 1, 2, &[owned("a", 1, 2)]);
    let heavy = OwnedPartition {
        partition: Partition::new(["a"], 500).unwrap(),
        fence: Fence::new(Term(1), Version(2)),
    };
    h.grant(0, 1, 3, std::slice::from_ref(&heavy));
    assert_eq!(
        deliveries(&h),
        vec![
            (vec![], vec![owned("a", 1, 1)]),
            (vec![], vec![owned("a", 1, 2)]),
        ]
    );
    assert_eq!(h.m.applied_version(), Version(3));
    assert_eq!(h.m.owned(), vec![heavy]);
}

#[test]
fn a_resync_whose_snapshot_lacks_our_record_revokes_everything() {
    use parti_core::machine::{IoAction, IoEvent};
    use parti_core::member::Event;
    use parti_core::store::WatchEvent;
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    let watch = h
        .log
        .iter()
        .find_map(|a| match a {
            Action::Io(IoAction::Watch { watch, bucket, .. }) if bucket == "parti-assignments" => {
                Some(*watch)
            }
            _ => None,
        })
        .unwrap();
    // The watch lost its place; meanwhile our record was deleted. The fresh snapshot lacks it.
    for event in [WatchEvent::Resync, WatchEvent::SnapshotComplete] {
        let now = h.now;
        h.m.handle_event(
            now,
            Event::Io(IoEvent::Watch {
                watch,
                event: Ok(event),
            }),
        );
    }
    h.run();
    assert!(h.m.owned().is_empty());
    assert_eq!(
        deliveries(&h).last().unwrap(),
        &(vec![owned("a", 1, 1)], vec![])
    );
}
