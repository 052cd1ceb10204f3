//! The Go integration suite's scenarios as deterministic simulations, with their assertions
//! (`../shared/reference/go-parti-tests-and-targets.md` §4, §10).

use parti_testkit::sim::scenarios;

fn check(name: &str) {
    let (_, f) = scenarios::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .expect("scenario exists");
    for seed in [1u64, 2] {
        let out = f(seed);
        println!("{out}");
        assert!(out.passed(), "seed {seed}: {out}");
    }
}

#[test]
fn rolling_replacement() {
    check("rolling-replacement");
}

#[test]
fn rolling_restart_with_intent_moves_nothing() {
    check("rolling-restart-with-intent");
}

#[test]
fn thundering_herd() {
    check("thundering-herd");
}

#[test]
fn cascading_failures() {
    check("cascading-failures");
}

#[test]
fn leader_killed_three_times() {
    check("leader-killed-three-times");
}

#[test]
fn burst_3_to_10_is_one_publication() {
    check("burst-3-to-10");
}

#[test]
fn slow_heartbeats_are_no_emergency() {
    check("slow-heartbeats");
}

#[test]
fn flapping_inside_the_grace_period_is_no_emergency() {
    check("flapping-inside-grace");
}

#[test]
fn watches_that_end_are_reopened() {
    check("watches-end");
}

#[test]
fn a_store_stall_is_no_false_emergency() {
    check("store-stall-no-false-emergency");
}
