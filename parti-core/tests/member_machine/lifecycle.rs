//! PROTOCOL.md §3 and §8: graceful leave, shutdown for restart, the state sequences.

use parti_core::config::DisconnectPolicy;
use parti_core::machine::KvRequest;
use parti_core::member::{Action, Notification};
use parti_core::records::{Intent, Phase};
use parti_core::store::KvError;
use parti_core::{Term, WorkerState};

use crate::harness::*;

fn deletes_since(h: &H, from: usize) -> Vec<(String, String, bool)> {
    h.requests_since(from)
        .into_iter()
        .filter_map(|r| match r {
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => Some((bucket, key, expected.is_some())),
            _ => None,
        })
        .collect()
}

fn d(bucket: &str, key: &str, cas: bool) -> (String, String, bool) {
    (bucket.to_owned(), key.to_owned(), cas)
}

#[test]
fn leave_waits_for_the_leader_to_revoke_everything_then_deletes_heartbeat_then_id() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    let from = h.log.len();
    h.m.request_leave(h.now);
    h.run();
    assert_eq!(h.m.state(), WorkerState::Leaving);
    assert_eq!(h.heartbeats_since(from)[0].intent, Intent::Leaving);
    h.advance(secs(5));
    assert!(deletes_since(&h, from).is_empty(), "still owns a partition");
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1)]);
    // The leader hands the partition over: revoke record.
    h.record(0, 1, 2, Phase::Revoke, &[]);
    assert!(h.m.owned().is_empty());
    assert_eq!(
        deletes_since(&h, from),
        vec![
            d("parti-heartbeats", "worker-0", false),
            d("parti-ids", "worker-0", true),
        ]
    );
    // The acknowledgement went out before the heartbeat was deleted.
    let hb = h.heartbeats_since(from);
    assert_eq!(
        hb.last().map(|b| (b.intent, b.applied.0)),
        Some((Intent::Leaving, 2))
    );
    assert!(h.heartbeat_of(0).is_none());
    assert!(h.claim_of(0).is_none());
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(h.m.is_stopped());
    assert!(h.notes.contains(&Notification::Stopped));
    assert_eq!(
        state_changes(&h.notes).last(),
        Some(&(WorkerState::Leaving, WorkerState::Shutdown))
    );
}

#[test]
fn a_leaving_leader_hands_leadership_over_after_its_heartbeat() {
    let mut h = H::new(config(|_| {}));
    h.start();
    assert!(h.m.is_leader());
    let from = h.log.len();
    h.m.request_leave(h.now);
    h.run();
    assert_eq!(
        deletes_since(&h, from),
        vec![
            d("parti-heartbeats", "worker-0", false),
            d("parti-leader", "leader", true),
            d("parti-ids", "worker-0", true),
        ]
    );
    assert!(h.leadership().is_none());
    assert!(
        !h.m.is_leader(),
        "not leader after stop (Go: IsLeader stays true)"
    );
    assert!(h.notes.contains(&Notification::LeadershipLost {
        term: Some(Term(1))
    }));
}

#[test]
fn leave_is_bounded_by_the_shutdown_timeout_and_revokes_locally() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.m.request_leave(h.now);
    h.run();
    h.advance(secs(30) - ms(1));
    assert_eq!(h.m.state(), WorkerState::Leaving);
    let from = h.log.len();
    h.advance(ms(1));
    assert!(h.log[from..].iter().any(|a| matches!(
        a,
        Action::Deliver { revoked, assigned, .. } if *revoked == vec![owned("a", 1, 1)] && assigned.is_empty()
    )));
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(h.claim_of(0).is_none());
}

/// Once a leaving member releases its heartbeat it applies nothing any more: a leader taking
/// over from `meta` may still grant to the id, and would declare it dead (no heartbeat) and give
/// the partitions elsewhere while the leaver worked on them. (Simulator seed 7307.)
#[test]
fn a_releasing_member_applies_no_further_record() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.m.request_leave(h.now);
    h.run();
    h.hold_when(|r| r.name() == "delete");
    h.record(0, 1, 2, Phase::Revoke, &[]);
    assert!(h.m.owned().is_empty());
    assert!(
        h.requests_since(0).iter().any(|r| r.name() == "delete"),
        "the release has begun"
    );
    h.grant(0, 1, 3, &[owned("a", 1, 3)]);
    assert!(h.m.owned().is_empty(), "nothing applied while releasing");
}

#[test]
fn leave_before_an_id_is_held_stops_at_once() {
    let mut h = H::new(config(|_| {}));
    h.hold_when(|r| r.name() == "keys");
    h.start();
    h.m.request_leave(h.now);
    h.run();
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(h.notes.contains(&Notification::Stopped));
    assert_eq!(h.m.poll_timeout(), None);
}

#[test]
fn leave_from_degraded_reaches_shutdown() {
    let mut h = H::follower(config(|c| {
        c.on_disconnect = DisconnectPolicy::Hold;
        c.degraded.kv_error_threshold = 0;
    }));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.connection(disconnected());
    h.advance(secs(10));
    assert_eq!(h.m.state(), WorkerState::Degraded);
    h.m.request_leave(h.now);
    h.run();
    assert_eq!(h.m.state(), WorkerState::Leaving);
    h.connection(connected());
    h.advance(secs(2)); // the Leaving heartbeat gets through
    h.record(0, 1, 2, Phase::Revoke, &[]);
    assert_eq!(h.m.state(), WorkerState::Shutdown);
}

#[test]
fn restart_reserves_the_id_and_announces_the_restart() {
    let mut h = H::follower(config(|c| c.preferred_id = Some(0)));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.advance(secs(3));
    let from = h.log.len();
    h.m.request_restart(h.now);
    h.run();
    let claim = h.claim_of(0).unwrap();
    assert_eq!(claim.instance, ME);
    assert_eq!(claim.restarting_until_ms, Some(WALL0 + 3_000 + 30_000));
    assert_eq!(h.heartbeat_of(0).unwrap().intent, Intent::Restarting);
    assert!(
        h.log[from..].iter().any(
            |a| matches!(a, Action::Deliver { revoked, .. } if *revoked == vec![owned("a", 1, 1)])
        ),
        "the application stops working on its partitions"
    );
    assert!(deletes_since(&h, from).is_empty(), "heartbeat and id stay");
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(h.m.is_stopped());
    // Nothing renews the claim afterwards (that would clear `restarting_until`).
    let from = h.log.len();
    h.advance(secs(60));
    assert!(h.requests_since(from).is_empty());
}

#[test]
fn a_restarted_process_takes_its_id_back_and_waits_for_a_record_addressed_to_it() {
    let cfg = config(|c| c.preferred_id = Some(3));
    let mut old = H::follower(cfg.clone());
    assert_eq!(old.m.worker_id(), Some(&wid(3)));
    old.grant(3, 1, 1, &[owned("a", 1, 1)]);
    old.m.request_restart(old.now);
    old.run();
    // A new process (new instance) with the same preferred id, on the same store.
    let mut kv = std::mem::take(&mut old.kv);
    kv.watches.clear();
    kv.pending.clear();
    let mut new = H::at(cfg, old.now, parti_core::InstanceId(0xCCCC));
    new.kv = kv;
    new.start();
    assert_eq!(new.m.worker_id(), Some(&wid(3)));
    assert_eq!(
        new.claim_of(3).unwrap().instance,
        parti_core::InstanceId(0xCCCC)
    );
    // The predecessor's record is addressed to the predecessor: the new process owns nothing
    // of it (it acknowledges its version as an empty record) until the leader, having seen
    // its heartbeat, addresses a record to it.
    assert!(new.m.owned().is_empty());
    assert_eq!(new.m.applied_version(), parti_core::Version(1));
    assert_eq!(new.heartbeat_of(3).unwrap().applied, parti_core::Version(1));
    new.grant(3, 1, 2, &[owned("a", 1, 2)]);
    assert_eq!(new.m.owned(), vec![owned("a", 1, 2)]);
}

#[test]
fn degraded_returns_to_the_state_underneath_not_always_to_stable() {
    // Go: degraded exit always lands in Stable (and Degraded is missing from its table).
    let mut h = H::follower(config(|c| {
        c.on_disconnect = DisconnectPolicy::Hold;
        c.degraded.kv_error_threshold = 0;
    }));
    assert_eq!(h.m.state(), WorkerState::WaitingAssignment);
    h.take_notes();
    h.connection(disconnected());
    h.advance(secs(10));
    h.connection(connected());
    h.advance(secs(5));
    assert_eq!(
        state_changes(&h.notes),
        vec![
            (WorkerState::WaitingAssignment, WorkerState::Degraded),
            (WorkerState::Degraded, WorkerState::WaitingAssignment),
        ]
    );
}

#[test]
fn fenced_then_degraded_then_fenced_then_stable() {
    let mut h = H::follower(config(|c| c.degraded.kv_error_threshold = 0));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.take_notes();
    h.connection(disconnected());
    h.advance(secs(10));
    h.connection(connected());
    h.advance(secs(5));
    h.grant(0, 1, 2, &[owned("a", 1, 2)]);
    assert_eq!(
        state_changes(&h.notes),
        vec![
            (WorkerState::Stable, WorkerState::Fenced),
            (WorkerState::Fenced, WorkerState::Degraded),
            (WorkerState::Degraded, WorkerState::Fenced),
            (WorkerState::Fenced, WorkerState::Stable),
        ]
    );
}

/// The old process of worker-3 applied version 1 (term 1) and restarted; new leaders then
/// bumped the term (to `term`) without rewriting worker-3's record. The process that claims
/// worker-3 next is `instance`: a new process, or (`ME`) the same one claiming again.
fn restarted_under_a_new_term(takeover: bool, term: u64, instance: parti_core::InstanceId) -> H {
    let cfg = config(|c| c.preferred_id = Some(3));
    let mut old = H::follower(cfg.clone());
    old.grant(3, 1, 1, &[owned("a", 1, 1)]);
    old.m.request_restart(old.now);
    old.run();
    let mut kv = std::mem::take(&mut old.kv);
    kv.watches.clear();
    kv.pending.clear();
    if !takeover {
        // Not a restart: the claim is gone (expired) and the heartbeat too.
        kv.expire("parti-ids", "worker-3");
        kv.expire("parti-heartbeats", "worker-3");
    }
    let mut new = H::at(cfg, old.now, instance);
    new.kv = kv;
    for t in 2..=term {
        new.set_term(t);
    }
    new.start();
    assert_eq!(new.m.worker_id(), Some(&wid(3)));
    new
}

#[test]
fn a_restarted_process_applies_nothing_of_its_predecessors_record_across_term_bumps() {
    let new = restarted_under_a_new_term(true, 3, parti_core::InstanceId(0xCCCC));
    assert!(new.m.owned().is_empty());
}

#[test]
fn a_fresh_claim_refuses_a_record_two_bumps_older_than_the_newest_term() {
    let new = restarted_under_a_new_term(false, 3, ME);
    assert!(
        new.m.owned().is_empty(),
        "one of the bumps may have preceded it"
    );
}

#[test]
fn a_fresh_claim_applies_a_record_written_just_before_the_newest_bump() {
    // One bump: the newest `term` itself, later in the stream than the record. (The same
    // process claims its id again, so the record is addressed to it.)
    let new = restarted_under_a_new_term(false, 2, ME);
    assert_eq!(new.m.owned(), vec![owned("a", 1, 1)]);
}

fn ids_updates_since(h: &H, from: usize) -> Vec<parti_core::records::IdClaim> {
    use parti_core::records::{IdClaim, Record};
    h.requests_since(from)
        .into_iter()
        .filter_map(|r| match r {
            KvRequest::Update { bucket, value, .. } if bucket == "parti-ids" => {
                IdClaim::decode(&value).ok()
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_restart_invites_the_takeover_only_after_the_application_gave_its_partitions_up() {
    // Sim seed 2105: the claim said `restarting` while `on_revoked` still ran, so the next
    // process took the id over (and got the partitions back at once) while this one still
    // worked on them.
    let mut h = H::follower(config(|c| c.preferred_id = Some(0)));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.auto_deliver = false;
    let from = h.log.len();
    h.m.request_restart(h.now);
    h.run();
    let (delivery, revoked, assigned) = h.deliveries.last().cloned().unwrap();
    assert_eq!((revoked, assigned), (vec![owned("a", 1, 1)], vec![]));
    assert_eq!(h.heartbeat_of(0).unwrap().intent, Intent::Restarting);
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    // A slow handler: the id stays ours meanwhile (renewed, never marked restarting).
    h.advance(secs(15));
    let claim = h.claim_of(0).unwrap();
    assert_eq!((claim.instance, claim.restarting_until_ms), (ME, None));
    assert_eq!(ids_updates_since(&h, from).len(), 1, "renewed at 10 s");
    assert!(!h.m.is_stopped());
    let before = h.log.len();
    h.complete(delivery);
    let names: Vec<&str> = h.requests_since(before).iter().map(|r| r.name()).collect();
    assert_eq!(names, vec!["put", "update"], "heartbeat, then the claim");
    assert_eq!(
        h.claim_of(0).unwrap().restarting_until_ms,
        Some(WALL0 + 15_000 + 30_000)
    );
    assert!(h.m.is_stopped());
}

#[test]
fn a_restarting_leader_hands_leadership_over_before_its_id_can_be_taken_over() {
    // Sim seed 542: the claim said `restarting` while the old process still led (renewing the
    // leader key, publishing) as the worker a new process had just taken over.
    let mut h = H::new(config(|c| c.preferred_id = Some(0)));
    h.start();
    h.advance(secs(1));
    assert!(h.m.is_leader());
    assert_eq!(h.m.owned().len(), 3);
    h.auto_deliver = false;
    let from = h.log.len();
    h.m.request_restart(h.now);
    h.run();
    h.advance(secs(2));
    assert_eq!(h.claim_of(0).unwrap().restarting_until_ms, None);
    let (delivery, _, _) = h.deliveries.last().cloned().unwrap();
    h.complete(delivery);
    let reqs = h.requests_since(from);
    let drop_leader = reqs
        .iter()
        .position(|r| matches!(r, KvRequest::Delete { bucket, .. } if bucket == "parti-leader"))
        .expect("the leader key is handed over");
    let restart_claim = reqs
        .iter()
        .position(|r| matches!(r, KvRequest::Update { bucket, .. } if bucket == "parti-ids"))
        .expect("the claim is rewritten");
    assert!(drop_leader < restart_claim, "{reqs:?}");
    assert!(
        !reqs[restart_claim..].iter().any(|r| matches!(
            r,
            KvRequest::Update { bucket, .. } | KvRequest::Put { bucket, .. }
                if bucket != "parti-ids"
        )),
        "nothing written after the claim went to the next process: {reqs:?}"
    );
    assert!(h.leadership().is_none());
    assert!(!h.m.is_leader());
    assert!(h.claim_of(0).unwrap().restarting_until_ms.is_some());
    assert!(h.m.is_stopped());
}

#[test]
fn a_restarting_leader_stops_leading_when_its_claim_goes_unconfirmed() {
    // Sim seed 2192: the restart stopped the claim's lapse timer, so a leader whose claim could
    // not be renewed went on leading after the claim expired and another process created it.
    let mut h = H::new(config(|c| {
        c.preferred_id = Some(0);
        c.degraded.kv_error_threshold = 0;
    }));
    h.start();
    h.advance(secs(1));
    assert!(h.m.is_leader());
    h.auto_deliver = false;
    // The ids bucket stops answering; the claim was last confirmed at 0 s.
    h.fail_when(KvError::Timeout, usize::MAX, |r| {
        matches!(
            r,
            KvRequest::Entry { bucket, .. } | KvRequest::Update { bucket, .. }
                if bucket == "parti-ids"
        )
    });
    h.m.request_restart(h.now);
    h.run();
    h.advance_to(secs(27) - ms(1));
    assert!(h.m.is_leader(), "its claim is still trusted");
    h.advance(ms(1));
    assert!(
        !h.m.is_leader(),
        "90 % of identity_ttl: it may be someone else's id now"
    );
    assert!(h.leadership().is_none(), "handed over");
}

/// A leaving member fenced by slow heartbeat writes says `Fenced`, so the leader re-grants it;
/// once it holds nothing it deletes its heartbeat. A record of its fence round arriving then
/// must not be applied: with its heartbeat gone the leader declares it dead and grants those
/// partitions elsewhere, while nothing fences a releasing member (seed 9629).
#[test]
fn a_releasing_member_applies_no_record_even_one_that_would_end_its_fence() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.m.request_leave(h.now);
    h.run();
    h.hold_when(|r| matches!(r, KvRequest::Put { bucket, .. } if bucket == "parti-heartbeats"));
    h.advance(secs(6));
    assert!(h.m.is_fenced());
    assert!(h.m.owned().is_empty());
    // The slow writes land; the release starts, its heartbeat delete still in flight.
    h.release_holds();
    h.hold_when(|r| matches!(r, KvRequest::Delete { .. }));
    while let Some(i) = h
        .held
        .iter()
        .position(|(_, r)| !matches!(r, KvRequest::Delete { .. }))
    {
        h.answer_held(i);
    }
    assert!(h.held.iter().any(
        |(_, r)| matches!(r, KvRequest::Delete { bucket, .. } if bucket == "parti-heartbeats")
    ));
    // The leader's re-grant for the fence round, as it saw the `Fenced` heartbeat.
    let from = h.log.len();
    h.grant(0, 1, 2, &[owned("b", 1, 2)]);
    assert!(
        h.m.owned().is_empty(),
        "a releasing member took a partition"
    );
    assert!(
        !h.log[from..]
            .iter()
            .any(|a| matches!(a, Action::Deliver { assigned, .. } if !assigned.is_empty()))
    );
    h.release_holds();
    while !h.held.is_empty() {
        h.answer_held(0);
    }
    assert!(h.m.is_stopped());
}

/// Sim seed 7449 (slow handlers): a restarting member heartbeated once and went silent while
/// its application still released partitions; the leader declared it dead after
/// `heartbeat_ttl + emergency_grace` and granted them elsewhere. It heartbeats until it hands
/// its claim over.
#[test]
fn a_restarting_member_heartbeats_while_its_application_releases() {
    let mut h = H::follower(config(|c| c.preferred_id = Some(0)));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.auto_deliver = false;
    h.m.request_restart(h.now);
    h.run();
    let from = h.log.len();
    h.advance(secs(12)); // longer than heartbeat_ttl + emergency_grace (9 s)
    let beats = h.heartbeats_since(from);
    assert!(
        beats.len() >= 5,
        "alive while releasing: {} heartbeats",
        beats.len()
    );
    assert!(beats.iter().all(|b| b.intent == Intent::Restarting));
    let (delivery, _, _) = h.deliveries.last().cloned().unwrap();
    h.complete(delivery);
    assert!(h.m.is_stopped());
    let from = h.log.len();
    h.advance(secs(30));
    assert!(
        h.heartbeats_since(from).is_empty(),
        "silent once handed over"
    );
}

/// Sim seed 8919 (slow handlers, a pause): a restarting member whose heartbeats stop being
/// stored while its application still releases partitions must give them up before the
/// leader can declare it dead, as any member under `Fence` does — without changing its
/// intent (the reservation holds).
#[test]
fn a_restarting_member_cut_off_while_releasing_gives_everything_up_at_the_fence_deadline() {
    let mut h = H::follower(config(|c| c.preferred_id = Some(0)));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.auto_deliver = false;
    h.m.request_restart(h.now);
    h.run();
    let restarted = h.now;
    h.connection(disconnected());
    h.advance(ms(5_300));
    assert!(
        !h.notes
            .iter()
            .any(|n| matches!(n, Notification::OwnershipLost { .. })),
        "not before fence_after (5.4 s)"
    );
    h.advance(ms(200));
    assert!(
        h.notes.contains(&Notification::OwnershipLost {
            partitions: vec![owned("a", 1, 1)]
        }),
        "{:?}",
        h.notes
    );
    assert!(
        h.now - restarted < secs(9),
        "before the leader may declare it dead"
    );
    assert_eq!(h.heartbeat_of(0).unwrap().intent, Intent::Restarting);
    // Told once.
    h.advance(secs(10));
    let lost = h
        .notes
        .iter()
        .filter(|n| matches!(n, Notification::OwnershipLost { .. }))
        .count();
    assert_eq!(lost, 1);
}
