//! Liveness (PROTOCOL.md §5) and takeover.

use super::fixtures::*;
use super::harness::*;
use crate::planner::PlannerNotification;
use crate::records::{ClusterMeta, Names, Record};
use crate::types::Version;

fn dead(s: &Sim) -> Vec<crate::types::WorkerId> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::WorkerDead { worker } => Some(worker.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_worker_is_dead_exactly_after_heartbeat_ttl_plus_emergency_grace() {
    let mut s = Sim::settled(3, 6);
    s.crash(2); // last heartbeat stamped at 0 s (takeover snapshot)
    s.run_to(ms(8_999));
    assert!(s.p.live_workers().contains(&w(2)));
    assert!(dead(&s).is_empty());
    s.run_to(secs(9));
    assert!(!s.p.live_workers().contains(&w(2)));
    assert_eq!(dead(&s), vec![w(2)]);
}

/// Two puts of one heartbeat key may be applied out of order (pipelined puts; a write replayed
/// after a reconnect): worker-2's heartbeat of 1 s lands after its newer ones. The sequence
/// number decides, not arrival: the old heartbeat moves neither the worker's intent nor its
/// acknowledged version back, nor its liveness stamp forward.
#[test]
fn an_older_heartbeat_arriving_after_a_newer_one_changes_nothing() {
    use crate::records::Intent;
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    let old = s.heartbeat_of(&w(2)); // sent at 1 s, held up on its way
    s.intent(2, Intent::Leaving); // newer: leaving; the planner revokes, worker-2 acknowledges
    s.run_to(ms(1_500));
    let beat = |s: &Sim| s.p.live.get(&w(2)).and_then(|i| i.beat.clone()).unwrap();
    let newest = beat(&s);
    assert_eq!(newest.intent, Intent::Leaving);
    assert!(newest.applied > Version(0));
    assert!(
        s.p.current()
            .partitions_of(&w(2))
            .is_none_or(|p| p.is_empty())
    );
    s.crash(2); // last heartbeat at 1.5 s at the latest
    s.run_to(secs(4));
    let notes = s.notes.len();
    let hb = s.names.heartbeats_bucket();
    s.external_put(&hb, w(2).as_str(), old);
    assert_eq!(beat(&s), newest, "the older heartbeat moved nothing back");
    assert_eq!(s.notes.len(), notes, "{:?}", &s.notes[notes..]);
    // Dead 9 s after its newest heartbeat, not after the late arrival of the old one.
    s.run_to(ms(10_500));
    assert_eq!(dead(&s), vec![w(2)]);
}

/// The heartbeats watch ends at 1 s and cannot be opened again until 20 s (the driver reports
/// every attempt ended). Without the leader's own echo observed time stands still: nobody is
/// declared dead meanwhile, however long worker-2 (crashed at 0 s) is silent. The planner
/// keeps reopening it with backoff; once open, the snapshot and the echoes move observed time
/// on and worker-2 is declared dead.
#[test]
fn nobody_dies_while_the_heartbeats_watch_is_gone_and_it_is_reopened() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(1));
    s.refuse_hb_watches_until = Some(s.epoch + secs(20));
    s.end_heartbeats_watch(None);
    s.run_to(ms(19_900));
    assert!(dead(&s).is_empty(), "blind is not dead");
    assert!(s.p.rewatches() >= 5, "retried: {}", s.p.rewatches());
    assert!(s.p.watch_errors() >= 5, "each refusal counted");
    let hb = s.names.heartbeats_bucket();
    assert!(s.watches.values().all(|(b, _)| *b != hb));
    s.run_to(secs(40));
    assert_eq!(dead(&s), vec![w(2)]);
    assert_eq!(
        s.watches.values().filter(|(b, _)| *b == hb).count(),
        1,
        "open again"
    );
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn reappearance_inside_the_grace_forgets_the_absence_and_a_new_absence_gets_a_full_grace() {
    // Go keeps the first-missing time and declares the second absence at once (§17 row 9).
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(8));
    s.beat(&w(2)); // one heartbeat inside the grace, then silent again
    s.run_to(ms(16_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(17));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn nobody_is_declared_dead_while_the_leaders_own_heartbeat_echo_is_stale() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(1));
    // The leader's own heartbeats stop arriving (a stream stall): last echo at 0 s, so
    // observed time freezes at 2 s while worker-1 keeps heartbeating.
    s.members.get_mut(&w(0)).unwrap().up = false;
    s.run_to(secs(30));
    assert!(
        dead(&s).is_empty(),
        "a broker hiccup is not a mass emergency"
    );
    assert!(s.published().is_empty());
    // The echo comes back at 30 s: observed time resumes where it froze (2 s), so the real
    // crash (silent since 0 s) is handled once 7 more observed seconds have passed.
    let m = s.members.get_mut(&w(0)).unwrap();
    m.up = true;
    m.next_beat = s.now;
    s.run_to(ms(36_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(37));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn a_lagging_heartbeat_watch_declares_no_worker_dead_that_heartbeated_since() {
    // From 0.5 s the leader's heartbeat watch delivers everything 4 s late, in order. worker-2
    // is cut off from 0 s (its last heartbeat) to 10.5 s, then heartbeats again. By 13 s the
    // watch has delivered the leader's echoes up to the one sent at 9 s, showing worker-2
    // silent for 9 s (heartbeat_ttl + emergency_grace); but worker-2 has heartbeated since
    // (its heartbeat of 10.5 s is queued behind), so declaring it dead now would be false.
    // Channel time (the send times of the echoes) shows the watch 4 s behind: nobody is
    // declared dead until it has caught up, and by then worker-2's heartbeat has arrived.
    let mut s = Sim::settled(3, 6);
    s.run_to(ms(500));
    s.lag_heartbeats(Some(secs(4)));
    s.cut_off(2);
    s.run_to(ms(10_500));
    s.reconnect(2);
    s.run_to(secs(14));
    assert!(dead(&s).is_empty(), "false death under a lagging watch");
    s.lag_heartbeats(None);
    s.run_to(secs(60));
    assert!(dead(&s).is_empty(), "false death under a lagging watch");
    assert!(s.p.live_workers().contains(&w(2)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_worker_that_crashed_while_the_watch_lagged_is_declared_dead_once_it_has_caught_up() {
    let mut s = Sim::settled(3, 6);
    s.run_to(ms(500));
    s.lag_heartbeats(Some(secs(4)));
    s.crash(2); // last heartbeat at 0 s
    s.run_to(secs(10));
    assert!(dead(&s).is_empty(), "the channel is 4 s behind");
    s.lag_heartbeats(None);
    // The backlog drains at 14 s (delivered in order); the channel is current again at once
    // and worker-2, silent for 14 s of channel time, is dead.
    s.run_to(ms(13_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(14));
    assert_eq!(dead(&s), vec![w(2)]);
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// The leader's own writes turn slow at 10 s (seed 7794): it sends its heartbeats at 12, 14,
/// 16, 18 and 20 s as always, but they are stored and echoed only at 21.5 s, in a burst. The
/// other workers' heartbeats arrive promptly all along, while the echo is stale (observed time
/// stands at 12 s). The burst shows no gap in the leader's sends, so observed time moves on to
/// 21.5 s: workers heard at 20 s must not count as silent since 12 s (9.5 s, dead). They count
/// as heard at 21.5 s; worker-2, crashed after its heartbeat of 20 s, is dead 9 s after that.
#[test]
fn heartbeats_received_while_the_leaders_slow_echo_is_stale_count_once_it_is_current() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(10));
    s.members.get_mut(&w(0)).unwrap().up = false; // its writes are slow from now on
    let first = s.members[&w(0)].seq + 1;
    for (i, t) in [12, 14, 16, 18, 20].into_iter().enumerate() {
        s.run_to(secs(t));
        let now = s.now;
        s.p.heartbeat_sent(now, first + i as u64);
    }
    s.crash(2); // its last heartbeat: 20 s
    s.run_to(ms(21_500));
    assert!(dead(&s).is_empty(), "the echo is stale");
    let hb_bucket = s.names.heartbeats_bucket();
    for _ in 0..5 {
        let hb = s.heartbeat_of(&w(0));
        let rev = s.put_raw(&hb_bucket, "worker-0", hb.clone());
        s.deliver_beat(&w(0), rev, hb);
    }
    s.pump();
    assert!(
        dead(&s).is_empty(),
        "false deaths when the slow echoes arrive"
    );
    let m = s.members.get_mut(&w(0)).unwrap();
    m.up = true;
    m.next_beat = s.epoch + secs(22);
    s.run_to(ms(30_499));
    assert!(dead(&s).is_empty());
    s.run_to(ms(30_500));
    assert_eq!(dead(&s), vec![w(2)]);
    assert!(s.p.live_workers().contains(&w(1)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn nobody_is_declared_dead_while_degraded_nor_during_the_recovery_grace() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(1));
    let now = s.now;
    s.p.set_degraded(now, true);
    s.run_to(secs(20));
    assert!(dead(&s).is_empty());
    let now = s.now;
    s.p.set_degraded(now, false); // recovery grace 15 s
    s.run_to(ms(34_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(35));
    assert_eq!(dead(&s), vec![w(2)]);
}

#[test]
fn takeover_with_unchanged_membership_publishes_nothing() {
    let mut s = Sim::settled(3, 6);
    assert!(matches!(
        s.notes.first(),
        Some(PlannerNotification::TakeoverComplete {
            version: Version(5),
            ..
        })
    ));
    s.run_to(secs(120));
    assert_eq!(s.kv_writes(0), 0);
    assert_eq!(s.p.version(), Version(5));
    assert_eq!(s.p.lifecycle(), crate::records::Lifecycle::Settled);
}

#[test]
fn takeover_expects_absent_members_and_handles_them_as_crashed_after_ttl_plus_grace() {
    let cat = parts(6);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1, 2], cat, move |s| {
        s.seed_settled(&[(0, &[0, 3]), (1, &[1, 4]), (2, &[2, 5])], &c2, 5);
        // worker-2 crashed before the takeover and its heartbeat expired (silently).
        let b = s.names.heartbeats_bucket();
        s.kv.remove(&(b, w(2).to_string()));
        s.crash(2);
    });
    s.run_to(ms(8_999));
    assert!(s.published().is_empty());
    s.run_to(secs(9));
    assert_eq!(dead(&s), vec![w(2)]);
    assert!(s.fully_covered(&parts(6)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn takeover_continues_the_version_from_the_highest_record_not_only_meta() {
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1], cat, move |s| {
        s.seed_settled(&[(0, &[0, 2]), (1, &[1, 3])], &c2, 9);
        // meta lags behind the records (the old leader died between the two).
        let b = s.names.assignments_bucket();
        let mut m = ClusterMeta::decode(
            &s.kv
                .get(&(b.clone(), Names::META_KEY.to_owned()))
                .unwrap()
                .0,
        )
        .unwrap();
        m.version = Version(7);
        s.put_raw(&b, Names::META_KEY, m.encode());
    });
    assert_eq!(s.p.version(), Version(9));
    let from = s.writes.len();
    s.join(2);
    let recs = s.records_since(from);
    assert_eq!(recs[0].1.version, Version(10));
}

#[test]
fn takeover_in_the_middle_of_a_handoff_waits_for_the_unacknowledged_revoke() {
    // The old leader revoked p03 from worker-1 (version 6, not yet applied) and died before
    // granting it. worker-1 may still hold p03: nobody else gets it until worker-1 acknowledges.
    let cat = parts(4);
    let c2 = cat.clone();
    let mut s = Sim::build(config(), &[0, 1], cat, move |s| {
        s.seed_settled(&[(0, &[0]), (1, &[1, 2, 3])], &c2, 5);
        let rec = crate::records::AssignmentRecord {
            term: crate::types::Term(1),
            version: Version(6),
            phase: crate::records::Phase::Revoke,
            instance: s.instance_of(1),
            round: 0,
            partitions: [1, 2]
                .iter()
                .map(|n| crate::records::OwnedPartition {
                    partition: p(*n),
                    fence: crate::types::Fence::new(crate::types::Term(1), Version(5)),
                })
                .collect(),
        };
        let b = s.names.assignments_bucket();
        s.put_raw(&b, "w.worker-1", rec.encode());
        s.members.get_mut(&w(1)).unwrap().acks = false; // busy: applies nothing for now
    });
    s.run_to(secs(3));
    assert!(!s.holds_of(0).contains(&pid(3)));
    assert!(s.holds_of(1).contains(&pid(3)));
    s.set_acks(1, true); // worker-1 applies the newest record (our rewrite) and acknowledges
    assert!(s.holds_of(0).contains(&pid(3)));
    assert!(s.fully_covered(&parts(4)));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn a_stalled_heartbeat_watch_declares_nobody_dead_and_publishes_nothing() {
    // A stream leader election stalls the leader's consumer for 20 s; members keep writing.
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.stall_heartbeats(secs(20));
    s.run_to(secs(40));
    assert!(dead(&s).is_empty());
    assert_eq!(s.kv_writes(0), 0);
}

#[test]
fn takeover_opens_two_watches_and_reads_meta_and_every_record_exactly() {
    use crate::machine::{IoAction, KvRequest};
    use crate::store::WatchKeys;
    let s = Sim::settled(2, 4);
    let shapes: Vec<String> = s
        .actions
        .iter()
        .map(|a| match a {
            IoAction::Watch { bucket, keys, .. } => format!("watch {bucket} {keys:?}"),
            IoAction::Kv { op, request } => {
                assert!(op.is_planner());
                match request {
                    KvRequest::Entry { key, .. } => format!("entry {key}"),
                    KvRequest::Keys { prefix, .. } => format!("keys {prefix}"),
                    other => other.name().to_owned(),
                }
            }
            IoAction::Unwatch { .. } => "unwatch".into(),
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            format!(
                "watch parti-heartbeats {:?}",
                WatchKeys::Prefix(String::new())
            ),
            format!(
                "watch parti-assignments {:?}",
                WatchKeys::Key("term".into())
            ),
            "entry meta".to_owned(),
            "keys w.".to_owned(),
            "entry w.worker-0".to_owned(),
            "entry w.worker-1".to_owned(),
        ]
    );
    assert_eq!(s.p.unowned(), 0);
    assert_eq!(s.p.partitions(), 4);
}

#[test]
fn the_steady_state_costs_no_store_operation_at_all() {
    // Go lists every heartbeat key up to ten times a second (§17 row 14).
    let mut s = Sim::settled(5, 10);
    let from = s.actions.len();
    s.run_to(secs(300));
    assert!(s.actions[from..].is_empty());
}

/// Zero grace: dead after 6 s of observed silence, but a member fences only 5.4 s after its
/// last stored heartbeat and observed time may run 2 s past the leader's last echo. worker-1,
/// cut off since 0 s, gets one heartbeat through at 5 s just as the heartbeat watch stalls
/// (stored, not delivered): it holds p1 until 10.4 s. The leader's last echo (4 s) is only 4 s
/// after worker-1's last delivered heartbeat, so worker-1 may not have fenced: not dead yet.
#[test]
fn a_worker_is_not_declared_dead_before_the_leaders_echo_shows_it_silent_for_the_fence_time() {
    let cfg = crate::config::Config {
        emergency_grace: secs(0),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut s = Sim::settled_with(cfg, 2, 2);
    s.cut_off(1); // last heartbeat at 0 s
    s.run_to(secs(5));
    s.stall_heartbeats(secs(3));
    s.reconnect(1); // its heartbeat at 5 s lands behind the stall
    s.cut_off(1); // fences at 10.4 s
    s.run_to(ms(7_999));
    assert!(
        dead(&s).is_empty(),
        "its silence up to the last echo is 4 s"
    );
    s.run_to(secs(30));
    assert_eq!(dead(&s), vec![w(1)]);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert!(s.fully_covered(&parts(2)));
}
