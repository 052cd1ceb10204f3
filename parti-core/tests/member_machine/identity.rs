//! PROTOCOL.md §3: claim, takeover, pool exhaustion, compare-and-set renewal, loss.

use parti_core::machine::{IoAction, IoEvent, KvReply, KvRequest, OpId, WatchId};
use parti_core::member::{Action, Event, MemberError, Notification};
use parti_core::records::{Heartbeat, IdClaim, Intent, Record};
use parti_core::store::{KvError, WatchKeys};
use parti_core::{Revision, Version, WorkerState};

use crate::harness::*;

fn claim(instance: parti_core::InstanceId) -> IdClaim {
    IdClaim {
        instance,
        claimed_at_ms: 1,
        restarting_until_ms: None,
    }
}

#[test]
fn claims_the_lowest_free_id_with_one_listing_and_one_create() {
    let mut h = H::new(config(|_| {}));
    h.put_claim(0, claim(OTHER));
    h.put_claim(2, claim(OTHER));
    let now = h.now;
    h.m.start(now);
    assert_eq!(h.m.state(), WorkerState::ClaimingId);
    assert_eq!(
        h.m.poll_action(),
        Some(Action::Io(IoAction::Kv {
            op: OpId(1),
            request: KvRequest::Keys {
                bucket: "parti-ids".into(),
                prefix: "worker-".into()
            }
        }))
    );
    assert_eq!(h.m.poll_action(), None);
    h.m.handle_event(
        now,
        Event::Io(IoEvent::KvDone {
            op: OpId(1),
            result: Ok(KvReply::Keys(vec!["worker-0".into(), "worker-2".into()])),
        }),
    );
    let create = KvRequest::Create {
        bucket: "parti-ids".into(),
        key: "worker-1".into(),
        value: IdClaim {
            instance: ME,
            claimed_at_ms: WALL0,
            restarting_until_ms: None,
        }
        .encode(),
    };
    assert_eq!(
        h.m.poll_action(),
        Some(Action::Io(IoAction::Kv {
            op: OpId(2),
            request: create
        }))
    );
    assert_eq!(h.m.poll_action(), None);
    h.m.handle_event(
        now,
        Event::Io(IoEvent::KvDone {
            op: OpId(2),
            result: Ok(KvReply::Written(Revision(3))),
        }),
    );
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
    assert_eq!(h.m.state(), WorkerState::Election);
    let heartbeat = Heartbeat {
        instance: ME,
        round: 0,
        seq: 1,
        state: WorkerState::Election,
        applied: Version(0),
        intent: Intent::Active,
        capacity: 1,
    };
    let actions: Vec<Action> = std::iter::from_fn(|| h.m.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::Io(IoAction::Watch {
                watch: WatchId(3),
                bucket: "parti-assignments".into(),
                keys: WatchKeys::Keys(vec!["term".into(), "w.worker-1".into()]),
            }),
            Action::Io(IoAction::Watch {
                watch: WatchId(4),
                bucket: "parti-leader".into(),
                keys: WatchKeys::Key("leader".into()),
            }),
            Action::Io(IoAction::Kv {
                op: OpId(5),
                request: KvRequest::Put {
                    bucket: "parti-heartbeats".into(),
                    key: "worker-1".into(),
                    value: heartbeat.encode(),
                }
            }),
        ]
    );
    let notes: Vec<Notification> = std::iter::from_fn(|| h.m.poll_notification()).collect();
    assert!(notes.contains(&Notification::IdentityClaimed { worker: wid(1) }));
}

#[test]
fn tries_the_preferred_id_first() {
    let mut h = H::new(config(|c| c.preferred_id = Some(5)));
    h.start();
    assert_eq!(h.m.worker_id(), Some(&wid(5)));
    let reqs = h.requests_since(0);
    assert!(matches!(&reqs[1], KvRequest::Create { key, .. } if key == "worker-5"));
}

#[test]
fn a_live_preferred_id_is_not_taken_and_the_lowest_free_is_claimed() {
    let mut h = H::new(config(|c| c.preferred_id = Some(5)));
    h.put_claim(5, claim(OTHER));
    h.start();
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    assert_eq!(h.claim_of(5).unwrap().instance, OTHER, "never overwritten");
}

#[test]
fn takes_over_a_preferred_id_whose_claim_is_restarting() {
    let mut h = H::new(config(|c| c.preferred_id = Some(5)));
    let rev = h.put_claim(
        5,
        IdClaim {
            instance: OTHER,
            claimed_at_ms: 1,
            restarting_until_ms: Some(WALL0 + 10_000),
        },
    );
    h.start();
    assert_eq!(h.m.worker_id(), Some(&wid(5)));
    let reqs = h.requests_since(0);
    assert!(matches!(&reqs[1], KvRequest::Entry { key, .. } if key == "worker-5"));
    assert!(
        matches!(&reqs[2], KvRequest::Update { key, expected, .. } if key == "worker-5" && *expected == rev),
        "takeover is a compare-and-set on the restarting claim: {reqs:?}"
    );
    assert_eq!(h.claim_of(5).unwrap().instance, ME);
    assert_eq!(h.claim_of(5).unwrap().restarting_until_ms, None);
}

#[test]
fn an_expired_restarting_claim_is_not_taken_over() {
    let mut h = H::new(config(|c| c.preferred_id = Some(5)));
    h.put_claim(
        5,
        IdClaim {
            instance: OTHER,
            claimed_at_ms: 1,
            restarting_until_ms: Some(WALL0 - 1),
        },
    );
    h.start();
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
}

#[test]
fn already_exists_relists_and_tries_the_next_id() {
    let mut h = H::new(config(|_| {}));
    h.hold_when(|r| matches!(r, KvRequest::Create { key, .. } if key == "worker-0"));
    h.start();
    // Someone else creates worker-0 between our listing and our create.
    h.put_claim(0, claim(OTHER));
    h.release_holds();
    h.answer_held(0);
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
    let names: Vec<&str> = h.requests_since(0).iter().map(|r| r.name()).collect();
    assert_eq!(&names[..4], &["keys", "create", "keys", "create"]);
}

#[test]
fn a_create_that_timed_out_but_landed_is_recognised_by_a_reread() {
    let mut h = H::new(config(|_| {}));
    h.timeout_but_apply_when(
        1,
        |r| matches!(r, KvRequest::Create { key, .. } if key == "worker-0"),
    );
    h.start();
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    let names: Vec<&str> = h.requests_since(0).iter().map(|r| r.name()).collect();
    assert_eq!(&names[..3], &["keys", "create", "entry"]);
}

#[test]
fn pool_exhausted_retries_until_the_startup_timeout_then_fails() {
    let mut h = H::new(config(|c| {
        c.worker_id_min = 0;
        c.worker_id_max = 1;
    }));
    h.put_claim(0, claim(OTHER));
    h.put_claim(1, claim(OTHER));
    h.start();
    h.advance(secs(29));
    assert_eq!(h.m.state(), WorkerState::ClaimingId);
    let lists = h
        .requests_since(0)
        .iter()
        .filter(|r| r.name() == "keys")
        .count();
    assert!(lists > 5, "keeps retrying: {lists} listings");
    h.advance(secs(1));
    assert_eq!(h.m.state(), WorkerState::Shutdown);
    assert!(
        h.notes
            .contains(&Notification::Failed(MemberError::IdentityPoolExhausted {
                min: 0,
                max: 1
            }))
    );
    assert!(h.m.is_stopped());
    assert_eq!(h.m.poll_timeout(), None);
}

#[test]
fn an_id_freed_before_the_startup_timeout_is_claimed() {
    let mut h = H::new(config(|c| c.worker_id_max = 0));
    h.put_claim(0, claim(OTHER));
    h.start();
    h.advance(secs(5));
    let b = h.names.ids_bucket();
    h.kv.expire(&b, "worker-0");
    h.advance(secs(6));
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
}

#[test]
fn renews_the_claim_by_compare_and_set_every_third_of_the_ttl() {
    let mut h = H::new(config(|_| {}));
    h.start();
    let (_, rev) = h.kv.get("parti-ids", "worker-0").unwrap();
    let from = h.log.len();
    h.advance(secs(10) - ms(1));
    assert!(
        !h.requests_since(from)
            .iter()
            .any(|r| matches!(r, KvRequest::Update { bucket, .. } if bucket == "parti-ids"))
    );
    h.advance(ms(1));
    let updates: Vec<KvRequest> = h
        .requests_since(from)
        .into_iter()
        .filter(|r| matches!(r, KvRequest::Update { bucket, .. } if bucket == "parti-ids"))
        .collect();
    assert_eq!(updates.len(), 1);
    assert!(matches!(&updates[0], KvRequest::Update { expected, .. } if *expected == rev));
    // The next renewal expects the revision the first one wrote.
    let (_, rev2) = h.kv.get("parti-ids", "worker-0").unwrap();
    let from = h.log.len();
    h.advance(secs(10));
    assert!(h.requests_since(from).iter().any(
        |r| matches!(r, KvRequest::Update { bucket, expected, .. } if bucket == "parti-ids" && *expected == rev2)
    ));
}

#[test]
fn renewal_conflict_fences_at_once_and_claims_again() {
    let mut h = H::follower(config(|_| {}));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1)]);
    // The key expired during a pause and another process claimed worker-0.
    h.put_claim(0, claim(OTHER));
    h.take_notes();
    let from = h.log.len();
    h.advance(secs(10));
    let notes = h.take_notes();
    assert!(notes.contains(&Notification::IdentityLost { worker: wid(0) }));
    assert!(notes.contains(&Notification::OwnershipLost {
        partitions: vec![owned("a", 1, 1)]
    }));
    let delivered: Vec<_> = h.log[from..]
        .iter()
        .filter(|a| matches!(a, Action::Deliver { .. }))
        .collect();
    assert!(
        matches!(delivered[0], Action::Deliver { revoked, assigned, .. } if *revoked == vec![owned("a", 1, 1)] && assigned.is_empty())
    );
    assert!(h.m.owned().is_empty());
    // Claimed again: worker-0 is someone else's, so worker-1.
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
    assert_eq!(
        h.claim_of(0).unwrap().instance,
        OTHER,
        "the other claim is untouched"
    );
    assert_eq!(h.m.state(), WorkerState::Fenced);
    // Never heartbeats as worker-0 again after the loss.
    let lost_at = h.log[from..]
        .iter()
        .position(|a| matches!(a, Action::Deliver { .. }))
        .unwrap()
        + from;
    assert!(!h.requests_since(lost_at).iter().any(
        |r| matches!(r, KvRequest::Put { bucket, key, .. } if bucket == "parti-heartbeats" && key == "worker-0")
    ));
}

#[test]
fn a_missing_claim_at_renewal_is_an_identity_loss() {
    let mut h = H::follower(config(|_| {}));
    h.kv.expire("parti-ids", "worker-0");
    h.advance(secs(10));
    assert!(
        h.notes
            .contains(&Notification::IdentityLost { worker: wid(0) })
    );
    // Nobody holds worker-0 now, so it is claimed again.
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
}

#[test]
fn a_renewal_that_timed_out_but_landed_keeps_the_id() {
    let mut h = H::follower(config(|_| {}));
    h.timeout_but_apply_when(
        1,
        |r| matches!(r, KvRequest::Update { bucket, .. } if bucket == "parti-ids"),
    );
    h.advance(secs(10));
    assert!(
        !h.notes
            .iter()
            .any(|n| matches!(n, Notification::IdentityLost { .. }))
    );
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    // The next renewal succeeds with the adopted revision.
    let from = h.log.len();
    h.advance(secs(10));
    assert!(
        !h.notes
            .iter()
            .any(|n| matches!(n, Notification::IdentityLost { .. }))
    );
    assert!(h.requests_since(from).iter().any(|r| r.name() == "update"));
    let _ = KvError::Timeout;
}

#[test]
fn an_identity_loss_during_the_unfence_read_starts_it_again_under_the_new_id() {
    let mut h = H::follower(config(|c| c.degraded.kv_error_threshold = 0));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.connection(disconnected());
    h.advance(secs(6));
    assert!(h.m.is_fenced());
    h.hold_when(|r| matches!(r, KvRequest::Entry { key, .. } if key == "w.worker-0"));
    h.connection(connected()); // Fenced heartbeat stored, read of w.worker-0 held
    assert_eq!(h.held.len(), 1);
    h.put_claim(0, claim(OTHER));
    h.advance(secs(10)); // renewal conflict: the id is lost, worker-1 claimed
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
    h.answer_held(0); // the old read answers late: ignored
    assert!(h.m.is_fenced());
    // The leader grants the new id: applied, because the read was made again for worker-1.
    h.grant(1, 1, 7, &[owned("b", 1, 7)]);
    assert_eq!(h.m.owned(), vec![owned("b", 1, 7)]);
    assert!(!h.m.is_fenced());
}

#[test]
fn a_transient_store_error_during_start_is_retried_not_fatal() {
    // Go: a transient error while claiming or reading the first assignment failed Start.
    let mut h = H::new(config(|_| {}));
    h.fail_when(
        KvError::Unavailable {
            reason: "no responders".into(),
        },
        3,
        |r| r.name() == "keys",
    );
    h.start();
    assert_eq!(h.m.state(), WorkerState::ClaimingId);
    h.advance(secs(2));
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
}

fn ids_bucket(r: &KvRequest) -> bool {
    matches!(
        r,
        KvRequest::Entry { bucket, .. }
            | KvRequest::Update { bucket, .. }
            | KvRequest::Create { bucket, .. }
            | KvRequest::Keys { bucket, .. }
            if bucket == "parti-ids"
    )
}

#[test]
fn a_claim_unconfirmed_for_most_of_its_ttl_is_not_acted_under() {
    let mut h = H::follower(config(|c| c.degraded.kv_error_threshold = 0));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    // The ids bucket is unreachable; heartbeats still get through.
    h.fail_when(KvError::Timeout, usize::MAX, ids_bucket);
    h.advance(secs(27) - ms(1));
    assert_eq!(h.m.owned(), vec![owned("a", 1, 1)]);
    let from = h.log.len();
    h.advance(ms(1)); // 90 % of identity_ttl after the claim was sent
    assert!(
        h.m.owned().is_empty(),
        "revoked: the id may be someone else's now"
    );
    assert!(h.notes.contains(&Notification::OwnershipLost {
        partitions: vec![owned("a", 1, 1)]
    }));
    h.advance(secs(10));
    assert!(
        h.heartbeats_since(from).is_empty(),
        "no heartbeat under an unconfirmed id"
    );
    // The ids bucket comes back: the claim is still ours, so the member goes on, fenced.
    h.clear_faults();
    h.advance(secs(1));
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    let hb = h.heartbeat_of(0).unwrap();
    assert_eq!(hb.intent, Intent::Fenced);
    h.grant(0, 1, 2, &[owned("a", 1, 2)]);
    assert_eq!(h.m.owned(), vec![owned("a", 1, 2)]);
}

#[test]
fn after_a_long_outage_a_member_whose_id_was_taken_never_acts_under_it() {
    // Hold keeps partitions through the outage, but not an id that is someone else's now.
    let mut h = H::follower(config(|c| {
        c.on_disconnect = parti_core::config::DisconnectPolicy::Hold;
    }));
    h.grant(0, 1, 1, &[owned("a", 1, 1)]);
    h.connection(disconnected());
    h.advance(secs(40));
    assert_eq!(
        h.m.owned(),
        vec![owned("a", 1, 1)],
        "Hold: kept while cut off"
    );
    // Meanwhile the claim expired, another process took worker-0 and was granted "b".
    h.put_claim(0, claim(OTHER));
    h.grant(0, 1, 2, &[owned("b", 1, 2)]);
    let from = h.log.len();
    h.connection(connected());
    h.advance(secs(1));
    assert!(
        !h.requests_since(from).iter().any(
            |r| matches!(r, KvRequest::Put { bucket, key, .. } if bucket == "parti-heartbeats" && key == "worker-0")
        ),
        "no heartbeat as worker-0 after the outage"
    );
    assert!(
        !h.deliveries
            .iter()
            .any(|(_, _, a)| a.contains(&owned("b", 1, 2))),
        "the other holder's grant never reaches this application"
    );
    assert!(
        h.notes
            .contains(&Notification::IdentityLost { worker: wid(0) })
    );
    assert!(h.m.owned().is_empty());
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
}

/// The member's `create` of worker-0 lands at once but its answer is held back for `delay`
/// (a paused process, a slow reply); `then` runs on the store before the answer arrives.
fn create_answered_late(delay: std::time::Duration, then: impl FnOnce(&mut H)) -> (H, usize) {
    let mut h = H::new(config(|_| {}));
    h.hold_when(|r| matches!(r, KvRequest::Create { bucket, .. } if bucket == "parti-ids"));
    h.start();
    assert_eq!(h.held.len(), 1);
    let req = h.held[0].1.clone();
    let Ok(KvReply::Written(rev)) = h.kv.exec(&req) else {
        panic!("the create lands")
    };
    h.release_holds();
    h.advance(delay);
    then(&mut h);
    let from = h.log.len();
    h.answer_held_with(0, Ok(KvReply::Written(rev)));
    (h, from)
}

fn heartbeats_as(h: &H, from: usize, worker: u32) -> usize {
    h.requests_since(from)
        .iter()
        .filter(|r| {
            matches!(r, KvRequest::Put { bucket, key, .. }
                if bucket == "parti-heartbeats" && *key == wid(worker).to_string())
        })
        .count()
}

#[test]
fn a_claim_confirmed_only_after_its_validity_is_not_acted_under() {
    // Sim seed 3742: a process paused right after its `create` landed took the answer, 3 s
    // later, as a fresh claim and heartbeated and stood as worker-1 — but the claim had expired
    // meanwhile and another process had created worker-1.
    let (mut h, from) = create_answered_late(secs(29), |h| {
        h.kv.expire("parti-ids", "worker-0");
        h.put_claim(0, claim(OTHER));
    });
    // Suspect from the start: no heartbeat, no candidacy, only a compare-and-set renewal; its
    // conflict is re-read (someone else's claim) and the member lists the ids again.
    let reqs = h.requests_since(from);
    let names: Vec<&str> = reqs.iter().map(|r| r.name()).collect();
    assert_eq!(&names[..3], &["update", "entry", "keys"], "{reqs:?}");
    assert!(
        matches!(&reqs[0], KvRequest::Update { bucket, key, .. } if bucket == "parti-ids" && key == "worker-0")
    );
    assert_eq!(heartbeats_as(&h, from, 0), 0, "{reqs:?}");
    // Claimed again as worker-1.
    assert!(
        h.notes
            .contains(&Notification::IdentityLost { worker: wid(0) })
    );
    assert_eq!(h.m.worker_id(), Some(&wid(1)));
    assert_eq!(h.claim_of(0).unwrap().instance, OTHER);
    h.advance(secs(5));
    assert_eq!(heartbeats_as(&h, from, 0), 0, "never acts as worker-0");
    assert!(heartbeats_as(&h, from, 1) > 0);
}

#[test]
fn a_late_confirmed_claim_that_is_still_ours_is_kept() {
    // The key outlived the answer (nobody took it): the renewal confirms it and the member goes on.
    let (mut h, from) = create_answered_late(secs(28), |_| {});
    h.advance(secs(1));
    assert_eq!(h.m.worker_id(), Some(&wid(0)));
    assert!(
        !h.notes
            .iter()
            .any(|n| matches!(n, Notification::IdentityLost { .. }))
    );
    assert!(heartbeats_as(&h, from, 0) > 0);
}
