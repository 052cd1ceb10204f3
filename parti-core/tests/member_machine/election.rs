//! PROTOCOL.md §4: candidacy, renewal, lease discipline, terms.

use parti_core::Term;
use parti_core::machine::KvRequest;
use parti_core::member::Notification;
use parti_core::records::{Leadership, Names, Record};
use parti_core::store::KvError;

use crate::harness::*;

fn leader_bucket(r: &KvRequest) -> bool {
    r.bucket() == "parti-leader"
}

fn is_write(r: &KvRequest) -> bool {
    r.is_write()
}

fn bucket_of(r: &KvRequest) -> &str {
    r.bucket()
}

fn other_leader() -> Vec<u8> {
    Leadership {
        worker: wid(9),
        instance: OTHER,
        term: Term(1),
    }
    .encode()
}

/// A member that leads term 1 (started on an empty cluster).
fn leader() -> H {
    let mut h = H::new(config(|_| {}));
    h.start();
    assert!(h.m.is_leader());
    h
}

#[test]
fn acquires_the_free_leader_key_takes_the_next_term_then_writes_its_leadership() {
    let mut h = H::new(config(|_| {}));
    let ab = h.names.assignments_bucket();
    let term_rev = h.kv.write(
        &ab,
        Names::TERM_KEY,
        parti_core::records::TermCounter { term: Term(4) }.encode(),
    );
    h.start();
    let reqs: Vec<(String, &'static str, String)> = h
        .requests_since(0)
        .into_iter()
        .filter(|r| bucket_of(r) != "parti-heartbeats" && bucket_of(r) != "parti-ids")
        .map(|r| {
            let key = r.key().to_owned();
            (bucket_of(&r).to_owned(), r.name(), key)
        })
        .collect();
    let s = |b: &str, n: &'static str, k: &str| (b.to_owned(), n, k.to_owned());
    // (The planner's own requests follow these.)
    assert_eq!(
        reqs[..4],
        [
            s("parti-leader", "create", "leader"),
            s("parti-assignments", "entry", "term"),
            s("parti-assignments", "update", "term"),
            s("parti-leader", "update", "leader"),
        ]
    );
    assert!(h.requests_since(0).iter().any(
        |r| matches!(r, KvRequest::Update { key, expected, .. } if key == "term" && *expected == term_rev)
    ));
    assert_eq!(h.term_key(), Some(Term(5)));
    assert_eq!(
        h.leadership(),
        Some(Leadership {
            worker: wid(0),
            instance: ME,
            term: Term(5)
        })
    );
    assert!(h.m.is_leader());
    assert_eq!(h.m.term(), Some(Term(5)));
    assert!(
        h.notes
            .contains(&Notification::LeadershipAcquired { term: Term(5) })
    );
}

#[test]
fn does_not_stand_while_the_leader_renews_and_stands_after_silent_expiry() {
    let mut h = H::follower(config(|_| {}));
    let lb = h.names.leader_bucket();
    for _ in 0..10 {
        h.advance(ms(1_600));
        h.kv.write(&lb, Names::LEADER_KEY, other_leader());
        h.run();
    }
    assert!(
        !h.requests_since(0)
            .iter()
            .any(|r| leader_bucket(r) && r.name() == "create")
    );
    // The leader dies; its key expires without any watch event.
    h.advance(ms(1_600));
    h.kv.expire(&lb, Names::LEADER_KEY);
    h.advance(secs(5) - ms(1_600) - ms(1));
    assert!(!h.m.is_leader());
    h.advance(ms(1));
    assert!(
        h.m.is_leader(),
        "a timer retries create after election_ttl without a write"
    );
    assert_eq!(h.m.term(), Some(Term(2)));
}

#[test]
fn stands_at_once_when_the_leader_key_is_deleted() {
    let mut h = H::follower(config(|_| {}));
    let lb = h.names.leader_bucket();
    h.kv.remove(&lb, Names::LEADER_KEY);
    h.run();
    assert!(h.m.is_leader());
    assert_eq!(h.m.term(), Some(Term(2)));
}

#[test]
fn renews_the_leader_key_by_compare_and_set_every_third_of_the_ttl() {
    let mut h = leader();
    let (_, rev) = h.kv.get("parti-leader", "leader").unwrap();
    let from = h.log.len();
    h.advance(ms(1_666));
    assert!(!h.requests_since(from).iter().any(leader_bucket));
    h.advance(ms(1));
    let reqs: Vec<KvRequest> = h
        .requests_since(from)
        .into_iter()
        .filter(leader_bucket)
        .collect();
    assert_eq!(reqs.len(), 1);
    assert!(matches!(&reqs[0], KvRequest::Update { expected, .. } if *expected == rev));
}

#[test]
fn failed_renewals_are_retried_and_leadership_is_kept_until_the_local_lease_end() {
    let mut h = leader();
    let t0 = h.t(); // send time of the last successful leader write
    h.fail_when(KvError::Timeout, usize::MAX, leader_bucket);
    h.advance_to(t0 + ms(4_500) - ms(1));
    assert!(h.m.is_leader(), "one timeout never drops leadership");
    let attempts = h
        .requests_since(0)
        .iter()
        .filter(|r| leader_bucket(r) && r.name() == "update")
        .count();
    assert!(attempts >= 4, "renewal retried: {attempts} updates");
    h.advance(ms(1));
    assert!(
        !h.m.is_leader(),
        "lease = election_ttl - lease_margin after the last success"
    );
    assert!(h.notes.contains(&Notification::LeadershipLost {
        term: Some(Term(1))
    }));
}

#[test]
fn at_lease_end_the_planner_stops_and_no_leader_write_follows() {
    let mut h = leader();
    h.fail_when(KvError::Timeout, usize::MAX, leader_bucket);
    h.advance(ms(4_500));
    assert!(!h.m.is_leader());
    assert_eq!(h.m.term(), None);
    let from = h.log.len();
    h.advance(secs(20));
    for r in h.requests_since(from) {
        assert!(
            !(bucket_of(&r) == "parti-assignments" && is_write(&r)),
            "no leader write after the lease: {r:?}"
        );
        assert!(
            !(leader_bucket(&r) && r.name() == "update"),
            "no renewal of a lapsed lease: {r:?}"
        );
    }
}

#[test]
fn a_renewal_that_timed_out_but_landed_keeps_leadership() {
    let mut h = leader();
    h.timeout_but_apply_when(1, |r| leader_bucket(r) && r.name() == "update");
    h.advance(secs(10));
    assert!(h.m.is_leader());
    assert!(
        !h.notes
            .iter()
            .any(|n| matches!(n, Notification::LeadershipLost { .. }))
    );
}

#[test]
fn the_term_is_taken_by_compare_and_set_and_retried_on_conflict() {
    let mut h = H::new(config(|_| {}));
    h.set_term(4);
    h.hold_when(|r| matches!(r, KvRequest::Update { key, .. } if key == "term"));
    h.start();
    assert!(!h.m.is_leader(), "no planner before the term is taken");
    // A zombie leader bumps the term between our read and our write.
    h.set_term(5);
    h.release_holds();
    h.answer_held(0);
    assert_eq!(h.term_key(), Some(Term(6)));
    assert_eq!(h.m.term(), Some(Term(6)));
    assert_eq!(h.leadership().unwrap().term, Term(6));
}

#[test]
fn a_renewal_finding_another_leader_steps_down_at_once() {
    let mut h = leader();
    let lb = h.names.leader_bucket();
    h.kv.write(&lb, Names::LEADER_KEY, other_leader());
    h.advance(ms(1_667));
    assert!(
        !h.m.is_leader(),
        "stepped down at the renewal, long before the lease end"
    );
    assert!(h.notes.contains(&Notification::LeadershipLost {
        term: Some(Term(1))
    }));
}

#[test]
fn a_leader_create_that_timed_out_but_landed_makes_us_leader() {
    let mut h = H::new(config(|_| {}));
    h.timeout_but_apply_when(1, |r| leader_bucket(r) && r.name() == "create");
    h.start();
    assert!(h.m.is_leader());
}

#[test]
fn a_create_that_lost_the_race_leaves_us_follower_and_settles_the_election() {
    let mut h = H::new(config(|_| {}));
    h.hold_when(|r| leader_bucket(r) && r.name() == "create");
    h.start();
    assert_eq!(h.m.state(), parti_core::WorkerState::Election);
    let lb = h.names.leader_bucket();
    h.kv.write(&lb, Names::LEADER_KEY, other_leader());
    h.release_holds();
    h.answer_held(0);
    assert!(!h.m.is_leader());
    assert_eq!(h.m.state(), parti_core::WorkerState::WaitingAssignment);
}

#[test]
fn sub_second_ttls_work() {
    // Go: an election timeout under one second made the lease 0 s and start failed.
    let mut h = H::new(config(|c| {
        c.election_ttl = ms(600);
        c.lease_margin = ms(60);
    }));
    h.start();
    assert!(h.m.is_leader());
    h.advance(secs(10));
    assert!(h.m.is_leader(), "renewed every 200 ms");
    let renewals = h
        .requests_since(0)
        .iter()
        .filter(|r| leader_bucket(r) && r.name() == "update")
        .count();
    assert!(renewals >= 49, "{renewals} renewals in 10 s");
}

#[test]
fn a_leader_whose_claim_goes_unconfirmed_steps_down_and_does_not_stand() {
    let mut h = leader();
    // The ids bucket is unreachable; the leader key stays writable.
    h.fail_when(KvError::Timeout, usize::MAX, |r| {
        bucket_of(r) == "parti-ids"
    });
    h.advance(secs(27));
    assert!(
        !h.m.is_leader(),
        "no leading under an id that may be someone else's"
    );
    assert!(h.leadership().is_none(), "the key was handed over");
    let from = h.log.len();
    h.advance(secs(10));
    assert!(
        !h.requests_since(from)
            .iter()
            .any(|r| leader_bucket(r) && r.name() == "create"),
        "no candidacy while the claim is unconfirmed"
    );
    h.clear_faults();
    h.advance(secs(6));
    assert!(h.m.is_leader(), "confirmed again: stands and wins");
}

/// Seeds 2924 and 4267 of the simulator: a candidate's `create` timed out but landed; while it
/// re-read the key a second `create` went out; the re-read found the key ours but the lease
/// (counted from the first send) already over, so the member stepped down at once — and the
/// step-down forgot the second `create`'s answer while the member still waited for it. It never
/// stood again: when the next leader crashed, nobody could lead.
#[test]
fn a_create_that_timed_out_but_landed_too_late_to_lead_does_not_end_candidacy() {
    let mut h = H::follower(config(|_| {}));
    let lb = h.names.leader_bucket();
    h.hold_when(|r| leader_bucket(r) && matches!(r.name(), "create" | "entry"));
    h.kv.remove(&lb, Names::LEADER_KEY);
    h.run();
    assert_eq!(h.held.len(), 1, "the create is in flight");
    // The create lands only after the lease it could give (election_ttl - lease_margin = 4.5 s
    // from its send) is over, and its answer is a timeout.
    h.advance(secs(5));
    h.timeout_but_apply_when(1, |r| leader_bucket(r) && r.name() == "create");
    h.answer_held(0);
    assert!(!h.m.is_leader());
    assert!(
        matches!(h.held[..], [(_, KvRequest::Entry { .. })]),
        "re-reads the key before anything else: {:?}",
        h.held
    );
    // The watch showed our key; its candidate timer passes while the re-read is outstanding.
    h.advance(secs(6));
    let creates = |h: &H| {
        h.requests_since(0)
            .iter()
            .filter(|r| leader_bucket(r) && r.name() == "create")
            .count()
    };
    assert_eq!(
        creates(&h),
        1,
        "no second create while the first one's outcome is unknown"
    );
    // The key is ours, but the lease counted from the create's send is long over.
    h.answer_held(0);
    assert!(!h.m.is_leader(), "too late to lead under that create");
    h.release_holds();
    while !h.held.is_empty() {
        h.answer_held(0);
    }
    // The stale key expires silently; the member stands again and wins.
    h.kv.expire(&lb, Names::LEADER_KEY);
    h.advance(secs(5));
    assert!(h.m.is_leader(), "still a candidate after stepping down");
    assert_eq!(h.m.term(), Some(Term(2)));
    assert_eq!(creates(&h), 2);
}
