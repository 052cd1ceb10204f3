//! Behaviours pinned by the Go unit tests (`internal/assignment/*_test.go`, see
//! `go-parti-tests-and-targets.md` §5), ported where still meaningful. Where our rule differs,
//! the test states ours.

use super::fixtures::*;
use super::harness::*;
use crate::config::Config;
use crate::planner::{PlanReason, PlannerNotification, PlannerState};
use crate::records::Lifecycle;
use crate::types::{Version, WorkerId};

fn dead(s: &Sim) -> Vec<WorkerId> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::WorkerDead { worker } => Some(worker.clone()),
            _ => None,
        })
        .collect()
}

fn states(s: &Sim) -> Vec<PlannerState> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            PlannerNotification::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

fn with(f: impl FnOnce(&mut Config)) -> crate::config::ValidConfig {
    let mut c = Config::default();
    f(&mut c);
    c.validate().unwrap()
}

/// Go `emergency_edge_test`: zero grace → emergency on the first check. Ours: dead the moment
/// the heartbeat TTL runs out (6 s), not before.
#[test]
fn zero_grace_declares_a_worker_dead_when_its_heartbeat_ttl_runs_out() {
    let mut s = Sim::settled_with(with(|c| c.emergency_grace = secs(0)), 3, 6);
    s.crash(2);
    s.run_to(ms(5_999));
    assert!(dead(&s).is_empty());
    s.run_to(secs(6));
    assert_eq!(dead(&s), vec![w(2)]);
}

/// Go: "two of four confirmed together".
#[test]
fn two_of_four_lost_together_are_one_emergency() {
    let mut s = Sim::settled(4, 8);
    s.crash(2);
    s.crash(3);
    s.run_to(secs(10));
    assert_eq!(dead(&s), vec![w(2), w(3)]);
    assert_eq!(s.published(), vec![(PlanReason::Emergency, s.p.version())]);
    assert!(s.fully_covered(&parts(8)));
}

/// Go: cascading losses (worker-4 confirmed while worker-3, lost later, is not yet).
#[test]
fn cascading_losses_are_each_declared_after_their_own_grace() {
    let mut s = Sim::settled(4, 8);
    s.crash(3);
    s.run_to(secs(3));
    s.crash(2); // last heartbeat at 2 s: dead at 11 s
    s.run_to(ms(9_100));
    assert_eq!(dead(&s), vec![w(3)]);
    s.run_to(ms(10_999));
    assert_eq!(dead(&s), vec![w(3)]);
    s.run_to(secs(11));
    assert_eq!(dead(&s), vec![w(3), w(2)]);
    let reasons: Vec<_> = s.published().iter().map(|x| x.0).collect();
    assert_eq!(reasons, vec![PlanReason::Emergency, PlanReason::Emergency]);
    assert!(s.fully_covered(&parts(8)));
}

/// Go: "K8s rolling restart with 50 ms gaps and 200 ms grace never fires"; "flapping within
/// grace clears". Ours: workers each silent for less than ttl + grace are never dead, however
/// the silences overlap.
#[test]
fn a_rolling_restart_with_short_silences_never_declares_anyone_dead() {
    let mut s = Sim::settled(4, 8);
    for round in 0..3u64 {
        for n in 1..4u32 {
            let t0 = secs(20 * round + 6 * u64::from(n));
            s.run_to(t0);
            s.members.get_mut(&w(n)).unwrap().up = false;
            s.run_to(t0 + ms(5_500));
            let m = s.members.get_mut(&w(n)).unwrap();
            m.up = true;
            m.next_beat = s.now;
        }
    }
    s.run_to(secs(80));
    assert!(dead(&s).is_empty());
    assert_eq!(s.kv_writes(0), 0);
}

/// Go: "no change → never".
#[test]
fn no_change_never_publishes() {
    let mut s = Sim::settled(4, 8);
    s.run_to(secs(600));
    assert_eq!(s.kv_writes(0), 0);
    assert!(s.published().is_empty());
}

/// Go `state_machine_test`: Idle → Scaling → Rebalancing → Idle for a planned change, Idle →
/// Emergency → Idle for a crash (never through Rebalancing); a state never repeats itself.
#[test]
fn state_sequences_for_planned_and_emergency_changes() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.join(3);
    s.run_to(secs(12));
    s.crash(3);
    s.run_to(secs(30));
    assert_eq!(
        states(&s),
        vec![
            PlannerState::Idle,
            PlannerState::Scaling,
            PlannerState::Rebalancing,
            PlannerState::Idle,
            PlannerState::Emergency,
            PlannerState::Idle,
        ]
    );
    assert!(states(&s).windows(2).all(|p| p[0] != p[1]));
}

/// Go: an emergency is allowed from any state and cuts a Scaling window short (Go ignores
/// changes outside Idle; ours does not).
#[test]
fn an_emergency_cuts_a_scaling_window_short() {
    let mut s = Sim::settled(3, 6);
    s.run_to(secs(1));
    s.crash(2);
    s.join(3);
    s.run_to(secs(10));
    assert_eq!(
        states(&s),
        vec![
            PlannerState::Idle,
            PlannerState::Scaling,
            PlannerState::Emergency,
            PlannerState::Idle
        ]
    );
}

/// Go: "equal-count crash + join is treated as planned scale" (§17 row 10). Ours: the crash
/// is an emergency at ttl + grace regardless of the join.
#[test]
fn a_crash_and_a_join_at_once_are_an_emergency_not_a_planned_scale() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.join(3);
    s.run_to(secs(9));
    assert_eq!(s.published(), vec![(PlanReason::Emergency, s.p.version())]);
    assert!(s.fully_covered(&parts(6)));
}

/// Go: "with one worker both cold-start phases still publish (version ≥ 2)". Ours: the final
/// plan equals the immediate one, so no record changes and the version stays; only `meta`
/// records the lifecycle `Settled`.
#[test]
fn cold_start_with_one_worker_publishes_records_once_and_settles_meta() {
    let mut s = Sim::cold(&[0], parts(2));
    s.run_to(secs(31));
    assert_eq!(s.p.version(), Version(1));
    assert_eq!(s.p.lifecycle(), Lifecycle::Settled);
    let reasons: Vec<_> = s.published().iter().map(|x| x.0).collect();
    assert_eq!(
        reasons,
        vec![PlanReason::ColdStart, PlanReason::ColdStartFinal]
    );
}

/// Go `TestCalculator_Stop_PreserveAssignments`: stopping deletes nothing.
#[test]
fn stop_preserves_the_assignments() {
    let mut s = Sim::settled(2, 4);
    let before = s.kv.clone();
    let now = s.now;
    s.p.stop(now);
    s.pump();
    assert_eq!(s.kv, before);
}

/// Go: the leader excludes workers confirmed dead even if their heartbeat key lingers (the
/// simulated store never expires keys).
#[test]
fn a_dead_worker_is_excluded_although_its_heartbeat_key_lingers() {
    let mut s = Sim::settled(3, 6);
    s.crash(2);
    s.run_to(secs(10));
    let b = s.names.heartbeats_bucket();
    assert!(s.kv.contains_key(&(b, w(2).to_string())));
    assert!(!s.p.current().contains_worker(&w(2)));
}

/// Not from Go: the longest durations validation allows (a user's config) never panic.
/// Longer ones are refused (`ConfigError::TooLong`); deadlines saturate in any case
/// (`machine::later`).
#[test]
fn the_longest_configured_durations_never_panic() {
    let huge = crate::config::DURATION_MAX;
    let cfg = with(|c| {
        c.rejoin_window = huge;
        c.revoke_timeout = huge;
        c.handler_timeout = huge;
        c.cold_start_window = huge;
        c.planned_scale_window = huge;
        c.degraded.recovery_grace = huge;
    });
    let mut s = Sim::settled_with(cfg, 3, 6);
    s.run_to(secs(1));
    s.intent(2, crate::records::Intent::Restarting);
    s.join(3);
    let now = s.now;
    s.p.set_degraded(now, true);
    s.p.set_degraded(now, false);
    s.run_to(secs(60));
    assert!(!s.p.is_stopped());
}

/// Go chose the cold or planned window from `workers / max(1, partitions / 10)` (5 workers /
/// 2 partitions → cold; 1 worker / 50 partitions → planned). Ours: an empty cluster (no
/// `meta`, or `meta` still `ColdStart`) always uses the cold-start window; a settled cluster
/// never does.
#[test]
fn a_cold_start_uses_the_cold_start_window_whatever_the_ratio() {
    for (members, partitions) in [(&[0u32, 1, 2, 3, 4][..], 2u32), (&[0u32][..], 50)] {
        let mut s = Sim::cold(members, parts(partitions));
        s.run_to(secs(29));
        assert_eq!(s.p.lifecycle(), Lifecycle::ColdStart);
        s.run_to(secs(31));
        assert_eq!(s.p.lifecycle(), Lifecycle::Settled);
    }
}

/// Go "zero coverage" test: from the first publication on, no partition is ever unowned
/// during the cold-start window, while workers keep joining.
#[test]
fn nothing_is_ever_unowned_during_the_cold_start_window() {
    let mut s = Sim::cold(&[0, 1], parts(12));
    for k in 0..60u64 {
        s.run_to(ms(500 * k + 1));
        if k % 10 == 5 {
            s.join(2 + u32::try_from(k / 10).unwrap());
        }
        assert!(s.fully_covered(&parts(12)), "at {} ms", 500 * k);
    }
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
