//! The simulator can fail: re-introducing known bugs in the planner (test-only switches) makes
//! it report the invariant they break (STYLE.md §17).

use parti_core::planner::PlannerFaults;
use parti_testkit::sim::{SimOptions, run, scenarios};

/// Granting a moved partition before its old owner acknowledged the revocation breaks
/// exclusive ownership; the simulator finds it within a bounded number of seeds.
#[test]
fn grant_before_ack_is_found_as_an_exclusive_ownership_violation() {
    let faults = PlannerFaults {
        grant_before_ack: true,
        ..PlannerFaults::default()
    };
    let mut found = None;
    for seed in 0..40 {
        let mut o = SimOptions::seed(seed);
        o.planner_faults = faults;
        let r = run(&o);
        if let Some(v) = r
            .violations
            .iter()
            .find(|v| v.invariant == "exclusive-ownership")
        {
            found = Some((seed, v.clone()));
            break;
        }
    }
    let (seed, v) = found.expect("grant-before-ack not caught within 40 seeds");
    println!("caught at seed {seed}: {v}");
}

/// Without observation-channel gating, a stall of the heartbeats stream makes the leader
/// declare live members dead: a false mass emergency. With gating (the scenario as shipped),
/// nobody is.
#[test]
fn dropping_observation_gating_is_found_as_a_false_mass_emergency() {
    let broken = scenarios::store_stall(
        3,
        PlannerFaults {
            no_observation_gating: true,
            ..PlannerFaults::default()
        },
        "store-stall-without-gating",
    );
    println!("{broken}");
    let false_emergency = broken
        .failures
        .iter()
        .any(|f| f.contains("false emergency"));
    assert!(
        false_emergency,
        "no false emergency without gating: {broken}"
    );
    let good = scenarios::store_stall(3, PlannerFaults::default(), "store-stall");
    assert!(good.passed(), "{good}");
}

/// Keeping what a record that must be rewritten gives — a deposed leader's late write, or an
/// older term's record nobody acknowledged — as if its member had applied it grants a
/// partition another member is still releasing (the planner property's 60,000-case failure).
/// The chaos mix's late writes (with the leader stalling) find it; the shipped planner is
/// clean on the same seed.
#[test]
fn keeping_an_unapplied_record_is_found_as_an_exclusive_ownership_violation() {
    let seed = 44;
    let mut o = SimOptions::seed(seed);
    o.planner_faults = PlannerFaults {
        keep_unapplied: true,
        ..PlannerFaults::default()
    };
    let r = run(&o);
    let v = r
        .violations
        .iter()
        .find(|v| v.invariant == "exclusive-ownership")
        .unwrap_or_else(|| panic!("keep-unapplied not caught at seed {seed}: {}", r.summary()));
    println!("caught at seed {seed}: {v}");
    let good = run(&SimOptions::seed(seed));
    assert!(good.violations.is_empty(), "{}", good.summary());
}
