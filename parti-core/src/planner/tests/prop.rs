//! Property: random interleavings of joins, crashes, leaves, restarts, cut-offs, catalog
//! changes, acknowledgement delays and store failures never break exclusive ownership, never
//! lower a version or a fence, and after the faults stop every partition is owned by exactly
//! one live member.

use proptest::prelude::*;

use super::fixtures::*;
use super::harness::*;
use crate::records::Intent;
use crate::store::KvError;

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Join(u32),
    Crash(u32),
    Leave(u32),
    Restart(u32),
    CutOff(u32),
    Reconnect(u32),
    Fence(u32),
    Acks(u32, bool),
    Catalog(u32),
    Fault(u8),
    Degraded(bool),
    NewLeader,
    Stall(u64),
    Manual,
    Weights(u32),
}

fn step() -> impl Strategy<Value = Step> {
    let n = 1u32..6;
    prop_oneof![
        4 => (100u64..6_000).prop_map(Step::Advance),
        3 => n.clone().prop_map(Step::Join),
        2 => n.clone().prop_map(Step::Crash),
        1 => n.clone().prop_map(Step::Leave),
        1 => n.clone().prop_map(Step::Restart),
        1 => n.clone().prop_map(Step::CutOff),
        1 => n.clone().prop_map(Step::Reconnect),
        1 => n.clone().prop_map(Step::Fence),
        2 => (n, any::<bool>()).prop_map(|(n, b)| Step::Acks(n, b)),
        1 => (2u32..12).prop_map(Step::Catalog),
        2 => (0u8..6).prop_map(Step::Fault),
        1 => any::<bool>().prop_map(Step::Degraded),
        1 => Just(Step::NewLeader),
        1 => (1_000u64..30_000).prop_map(Step::Stall),
        1 => Just(Step::Manual),
        1 => (0u32..12).prop_map(Step::Weights),
    ]
}

#[allow(clippy::field_reassign_with_default)] // reads as a list of overrides
fn fast() -> crate::config::ValidConfig {
    let mut c = crate::config::Config::default();
    c.heartbeat_interval = ms(500);
    c.heartbeat_ttl = ms(1_500);
    c.emergency_grace = ms(0);
    c.fence_margin = ms(300);
    c.cold_start_window = secs(2);
    c.planned_scale_window = secs(1);
    c.min_rebalance_interval = secs(1);
    c.rejoin_window = secs(3);
    c.handler_timeout = secs(1);
    c.revoke_timeout = secs(2);
    c.degraded.recovery_grace = secs(2);
    c.validate().unwrap()
}

fn run(steps: &[Step], initial: u32) -> Result<(), TestCaseError> {
    run_with(config(), Strat::Sticky, steps, initial, secs(150))
}

fn run_with(
    cfg: crate::config::ValidConfig,
    strat: Strat,
    steps: &[Step],
    initial: u32,
    heal: std::time::Duration,
) -> Result<(), TestCaseError> {
    let mut s = Sim::build_full(cfg, strat, &[0, 1], parts(initial), |_| {}, |_| {});
    let mut catalog = parts(initial);
    for st in steps {
        let up = |s: &Sim, n: u32| s.members.get(&w(n)).is_some_and(|m| m.up);
        let known = |s: &Sim, n: u32| s.members.contains_key(&w(n));
        match st {
            Step::Advance(d) => s.run_for(ms(*d)),
            Step::Join(n) => {
                if !known(&s, *n) {
                    s.join(*n);
                } else if !up(&s, *n) && !s.members[&w(*n)].cut_off {
                    s.restart_back(*n);
                }
            }
            Step::Crash(n) if known(&s, *n) => s.crash(*n),
            Step::Leave(n) if up(&s, *n) => s.intent(*n, Intent::Leaving),
            Step::Restart(n) if up(&s, *n) => {
                s.intent(*n, Intent::Restarting);
                s.crash(*n);
            }
            Step::CutOff(n) if up(&s, *n) => s.cut_off(*n),
            Step::Reconnect(n) if known(&s, *n) && s.members[&w(*n)].cut_off => s.reconnect(*n),
            Step::Fence(n) if up(&s, *n) => {
                s.members.get_mut(&w(*n)).unwrap().holds.clear();
                s.intent(*n, Intent::Fenced);
            }
            Step::Acks(n, b) if up(&s, *n) => s.set_acks(*n, *b),
            Step::Catalog(k) => {
                catalog = parts(*k);
                let now = s.now;
                s.p.set_partitions(now, catalog.clone());
                s.pump();
            }
            Step::Fault(k) => s.faults.push_back(match k {
                0 => Fault::Fail(KvError::Unavailable {
                    reason: "down".into(),
                }),
                1 => Fault::Fail(KvError::Timeout),
                2 => Fault::TimeoutApplied,
                3 => Fault::TimeoutLate(ms(50)),
                4 => Fault::TimeoutLate(ms(700)),
                _ => Fault::TimeoutLate(secs(3)),
            }),
            Step::Degraded(b) => {
                let now = s.now;
                s.p.set_degraded(now, *b);
                s.pump();
            }
            Step::NewLeader => s.new_leader(catalog.clone()),
            Step::Manual => {
                let now = s.now;
                // A planner that stepped down refuses (NotLeader): nothing to check here.
                let _ = s.p.trigger_rebalance(now);
                s.pump();
            }
            Step::Weights(heavy) => {
                // Same partitions, one of them much heavier (or none, if out of range).
                catalog = catalog
                    .iter()
                    .map(|x| {
                        let heavy_one = x.id() == p(*heavy).id();
                        crate::types::Partition::from_id(
                            x.id().clone(),
                            if heavy_one { 5_000 } else { 100 },
                        )
                        .unwrap()
                    })
                    .collect();
                let now = s.now;
                s.p.set_partitions(now, catalog.clone());
                s.pump();
            }
            Step::Stall(d) if s.hb_stalled_until.is_none() => s.stall_heartbeats(ms(*d)),
            _ => {}
        }
        prop_assert!(s.violations.is_empty(), "{:?} after {st:?}", s.violations);
        prop_assert!(!s.p.is_stopped());
    }
    // The faults stop: every member acknowledges, cut-off members reconnect, the store works
    // (writes queued earlier may still land).
    s.faults.clear();
    let now = s.now;
    s.p.set_degraded(now, false);
    let ids: Vec<u32> = (1..6).filter(|n| s.members.contains_key(&w(*n))).collect();
    for n in ids {
        if s.members[&w(n)].cut_off {
            s.reconnect(n);
        }
        if s.members[&w(n)].up {
            s.set_acks(n, true);
        }
    }
    // Long enough for a cold-start window at its cap, a restart reservation, a death and a
    // cooldown, one after the other.
    s.run_for(heal);
    prop_assert!(s.violations.is_empty(), "{:?}", s.violations);
    let held = s.held();
    prop_assert!(
        s.fully_covered(&catalog),
        "not covered: held {held:?}, catalog {}, target {:?}",
        catalog.len(),
        s.p.current()
    );
    Ok(())
}

/// 32 cases by default; `PARTI_PLANNER_CASES=5000 cargo test --release -p parti-core --lib
/// planner::tests::prop` to hunt.
fn cases() -> u32 {
    std::env::var("PARTI_PLANNER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_faults_never_break_exclusive_ownership_or_versions_and_coverage_returns(
        steps in prop::collection::vec(step(), 1..40),
        initial in 1u32..10,
    ) {
        run(&steps, initial)?;
    }

    /// The same with sub-second timings and zero grace (timers collide more often).
    #[test]
    fn the_same_holds_with_fast_timings_and_zero_grace(
        steps in prop::collection::vec(step(), 1..40),
        initial in 1u32..10,
    ) {
        run_with(fast(), Strat::Sticky, &steps, initial, secs(60))?;
    }

    /// The same with a strategy that moves nearly everything on every change (many handoffs).
    #[test]
    fn the_same_holds_when_every_plan_moves_most_partitions(
        steps in prop::collection::vec(step(), 1..40),
        initial in 1u32..10,
    ) {
        run_with(fast(), Strat::RoundRobin, &steps, initial, secs(60))?;
    }
}

/// The case 60,000 random cases found (kept in `proptest-regressions/planner/tests/prop.txt`
/// too). Term 1 writes `w.worker-0` = {p00, p02, p04}; the write times out and lands late —
/// after the bump to term 2 (whose leader never writes that key, so the compare-and-set holds)
/// and before the bump to 3. Term 3 finds p04 named by that record and by worker-1's, and
/// revokes it from worker-1 (cut off: it never applies the revoke); term 4 then finds p04 named
/// only by worker-0's record, an older term's record worker-0 never applied (it refused it).
/// Keeping it there — as if worker-0 held it already — granted it while worker-1 still did:
/// what a record we must rewrite gives is now kept only if it is free.
#[test]
fn a_late_write_between_two_bumps_is_not_kept_while_a_cut_off_member_may_hold_it() {
    use Step::*;
    let steps = [
        Stall(6336),
        Advance(100),
        Fault(3),
        Join(2),
        Catalog(5),
        NewLeader,
        Advance(100),
        CutOff(1),
        Fault(3),
        NewLeader,
        NewLeader,
    ];
    run_with(fast(), Strat::RoundRobin, &steps, 1, secs(60)).unwrap();
}

/// Found at 100,000 cases (also in `proptest-regressions`): the model was wrong, not the
/// planner. Term 1's write of `w.worker-1` (giving p05) timed out and landed after the bump
/// to 2; worker-1 was cut off meanwhile. On reconnecting after the bump to 3 the model
/// compared the record with the `term` key's newest revision only and applied it — p05 with
/// fence 1.2 after worker-3 had held it at 2.2. A real member's ordered stream shows the bump
/// to 2 before that record and refuses it (`Sim::catch_up_view`).
#[test]
fn a_member_reconnecting_refuses_a_late_write_that_landed_after_an_earlier_bump() {
    use Step::*;
    let steps = [
        Stall(1000),
        Join(2),
        Fault(0),
        Fault(3),
        CutOff(1),
        Join(3),
        Catalog(7),
        NewLeader,
        Advance(100),
        Fault(0),
        Advance(100),
        NewLeader,
    ];
    run(&steps, 4).unwrap();
}
