//! A seed is a replay: running it twice gives the same trace, event for event.

use parti_testkit::sim::{SimOptions, run};

#[test]
fn a_seed_run_twice_gives_the_same_trace_hash() {
    for seed in [1u64, 7, 42, 1234] {
        let a = run(&SimOptions::seed(seed));
        let b = run(&SimOptions::seed(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.steps, b.steps, "seed {seed}");
        assert_eq!(a.simulated, b.simulated, "seed {seed}");
        assert_eq!(a.stats, b.stats, "seed {seed}");
    }
}

#[test]
fn tracing_does_not_change_the_run() {
    let plain = run(&SimOptions::seed(99));
    let mut o = SimOptions::seed(99);
    o.trace = Some(usize::MAX);
    let traced = run(&o);
    assert_eq!(plain.trace_hash, traced.trace_hash);
    assert!(!traced.trace.is_empty());
}

#[test]
fn different_seeds_give_different_runs() {
    let hashes: std::collections::BTreeSet<u64> = (0..8)
        .map(|s| run(&SimOptions::seed(s)).trace_hash)
        .collect();
    assert_eq!(hashes.len(), 8);
}
