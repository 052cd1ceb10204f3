//! Property tests for every strategy: order independence, completeness, and the balance and
//! movement guarantees of the sticky strategies.

use std::collections::BTreeMap;

use parti_core::rng::SplitMix64;
use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, WorkerSpec};
use parti_core::{Assignment, Partition, PartitionId, WorkerId};
use parti_strategy::{
    BoundedLoadRing, ConsistentHash, DEFAULT_EPSILON, Rendezvous, RoundRobin, StickyBalanced,
    WeightedConsistentHash, WeightedSticky, quality,
};
use proptest::prelude::*;

fn wid(n: u32) -> WorkerId {
    WorkerId::from_parts("w", n).unwrap()
}

fn part(n: u32, weight: u64) -> Partition {
    // Two-key partitions, as `["topic", "n"]`, to exercise the key chaining.
    Partition::new(["t", &n.to_string()], weight).unwrap()
}

fn all_strategies() -> Vec<Box<dyn AssignmentStrategy>> {
    vec![
        Box::new(StickyBalanced::new()),
        Box::new(StickyBalanced::new().check_partitions(true)),
        Box::new(WeightedSticky::new()),
        Box::new(ConsistentHash::new().with_vnodes(20)),
        Box::new(WeightedConsistentHash::new().with_vnodes(20)),
        Box::new(RoundRobin),
        Box::new(Rendezvous),
        Box::new(BoundedLoadRing::new().with_vnodes(20)),
    ]
}

/// A generated situation: live workers, catalog, and a previous assignment that may name dead
/// workers and removed partitions.
#[derive(Clone, Debug)]
struct Case {
    workers: Vec<WorkerSpec>,
    partitions: Vec<Partition>,
    previous: Assignment,
    shuffle_seed: u64,
}

impl Case {
    fn input(&self) -> AssignInput<'_> {
        AssignInput {
            workers: &self.workers,
            partitions: &self.partitions,
            previous: &self.previous,
        }
    }

    fn shuffled(&self) -> Case {
        let mut c = self.clone();
        let mut rng = SplitMix64::new(self.shuffle_seed);
        rng.shuffle(&mut c.workers);
        rng.shuffle(&mut c.partitions);
        c
    }
}

/// Owner id per partition id.
fn named(input: &AssignInput<'_>, plan: &Plan) -> BTreeMap<PartitionId, WorkerId> {
    input
        .partitions
        .iter()
        .zip(plan.owners())
        .map(|(p, &o)| (p.id().clone(), input.workers[o].id.clone()))
        .collect()
}

prop_compose! {
    fn arb_case(max_workers: u32, max_parts: u32, weighted: bool)(
        live in prop::collection::btree_set(0..max_workers + 4, 1..=max_workers as usize),
        caps in prop::collection::vec(1u32..4, max_workers as usize + 4),
        catalog in prop::collection::btree_set(0..max_parts + 20, 0..=max_parts as usize),
        weights in prop::collection::vec(1u64..1000, (max_parts + 20) as usize),
        prev_owners in prop::collection::vec(prop::option::of(0..max_workers + 4), (max_parts + 20) as usize),
        shuffle_seed in any::<u64>(),
    ) -> Case {
        let workers = live
            .iter()
            .map(|&n| WorkerSpec::with_capacity(wid(n), if weighted { caps[n as usize] } else { 1 }))
            .collect();
        let partitions = catalog
            .iter()
            .map(|&n| part(n, if weighted { weights[n as usize] } else { 100 }))
            .collect();
        let mut previous = Assignment::new();
        for (n, o) in prev_owners.iter().enumerate() {
            if let Some(o) = o {
                previous.insert(wid(*o), part(n as u32, 1).id().clone()).unwrap();
            }
        }
        Case { workers, partitions, previous, shuffle_seed }
    }
}

prop_compose! {
    /// Many light partitions: ε = 0.05 is reachable (see [`feasible`]).
    fn arb_feasible()(
        live in prop::collection::btree_set(0u32..10, 1..=6),
        caps in prop::collection::vec(1u32..=2, 10),
        weights in prop::collection::vec(1u64..=3, 400..600),
        prev_owners in prop::collection::vec(prop::option::of(0u32..10), 600),
        joins in prop::collection::btree_set(20u32..24, 0..3),
        shuffle_seed in any::<u64>(),
    ) -> (Case, Vec<WorkerSpec>) {
        let workers: Vec<WorkerSpec> = live.iter().map(|&n| WorkerSpec::with_capacity(wid(n), caps[n as usize])).collect();
        let partitions = weights.iter().enumerate().map(|(n, &w)| part(n as u32, w)).collect();
        let mut previous = Assignment::new();
        for (n, o) in prev_owners.iter().enumerate().take(weights.len()) {
            if let Some(o) = o {
                previous.insert(wid(*o), part(n as u32, 1).id().clone()).unwrap();
            }
        }
        let mut joined = workers.clone();
        joined.extend(joins.iter().map(|&n| WorkerSpec::new(wid(n))));
        (Case { workers, partitions, previous, shuffle_seed }, joined)
    }
}

/// A change from one live set and catalog to another, with the previous assignment made by the
/// strategy itself (the steady-state case).
#[derive(Clone, Debug)]
struct Change {
    before: Case,
    after: Case,
}

prop_compose! {
    fn arb_change(weighted: bool)(
        before in arb_case(12, 120, weighted),
        joins in prop::collection::btree_set(20u32..30, 0..4),
        leaves in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        added in prop::collection::btree_set(200u32..260, 0..30),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        weights in prop::collection::vec(1u64..1000, 60),
    ) -> Change {
        let mut after = before.clone();
        for i in leaves {
            if after.workers.len() > 1 {
                let k = i.index(after.workers.len());
                after.workers.remove(k);
            }
        }
        after.workers.extend(joins.iter().map(|&n| WorkerSpec::new(wid(n))));
        for i in removed {
            if !after.partitions.is_empty() {
                let k = i.index(after.partitions.len());
                after.partitions.remove(k);
            }
        }
        after.partitions.extend(added.iter().map(|&n| {
            part(n, if weighted { weights[(n - 200) as usize] } else { 100 })
        }));
        after.shuffle_seed = before.shuffle_seed.rotate_left(7);
        Change { before, after }
    }
}

/// Runs `strategy` on `change.before` from its own previous assignment, then on `change.after`
/// with the result as previous.
fn run_change(strategy: &dyn AssignmentStrategy, change: &Change) -> (Case, Plan) {
    let input = change.before.input();
    let plan = strategy.assign(&input).unwrap();
    let mut after = change.after.clone();
    after.previous = plan.to_assignment(&input);
    let plan = strategy.assign(&after.input()).unwrap();
    (after, plan)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_strategy_is_complete_and_ignores_input_order(case in arb_case(10, 80, true)) {
        let shuffled = case.shuffled();
        for s in all_strategies() {
            let input = case.input();
            let plan = s.assign(&input).unwrap();
            plan.validate(&input).unwrap();
            let a = plan.to_assignment(&input);
            a.check_invariants().unwrap();
            prop_assert_eq!(a.len(), case.partitions.len(), "{}", s.name());
            prop_assert_eq!(a.workers().count(), case.workers.len(), "{}: only live workers", s.name());
            let input2 = shuffled.input();
            let plan2 = s.assign(&input2).unwrap();
            prop_assert_eq!(named(&input, &plan), named(&input2, &plan2), "{}", s.name());
        }
    }

    #[test]
    fn sticky_is_exactly_balanced_with_minimum_movement(case in arb_case(12, 150, false)) {
        let input = case.input();
        let plan = StickyBalanced::new().assign(&input).unwrap();
        let b = quality::balance(&input, &plan).unwrap();
        let (p, w) = (case.partitions.len(), case.workers.len());
        prop_assert_eq!(b.max_count, p.div_ceil(w));
        prop_assert_eq!(b.min_count, p / w);
        let m = quality::movement(&input, &plan).unwrap();
        prop_assert_eq!(m.moved_count, m.min_moved_count);
        prop_assert_eq!(m.min_moved_count, independent_min_moves(&case));
    }

    #[test]
    fn sticky_changes_move_the_minimum(change in arb_change(false)) {
        let (after, plan) = run_change(&StickyBalanced::new(), &change);
        let input = after.input();
        let b = quality::balance(&input, &plan).unwrap();
        let (p, w) = (after.partitions.len(), after.workers.len());
        prop_assert_eq!(b.max_count, p.div_ceil(w));
        prop_assert_eq!(b.min_count, p / w);
        let m = quality::movement(&input, &plan).unwrap();
        prop_assert_eq!(m.moved_count, independent_min_moves(&after));
    }

    #[test]
    fn shared_and_decoded_previous_give_the_same_plan(change in arb_change(true)) {
        // The previous assignment holding the catalog's own ids (fast path) or separately built
        // ids with the same content (as after decoding): same plan.
        for s in [&StickyBalanced::new() as &dyn AssignmentStrategy, &WeightedSticky::new()] {
            let (after, plan) = run_change(s, &change);
            let decoded = Assignment::from_worker_lists(after.previous.iter().map(|(w, set)| {
                (w.clone(), set.iter().map(|p| PartitionId::new(p.keys().to_vec()).unwrap()).collect::<Vec<_>>())
            }))
            .unwrap();
            let input = after.input();
            let input2 = AssignInput { previous: &decoded, ..input };
            let plan2 = s.assign(&input2).unwrap();
            prop_assert_eq!(named(&input, &plan), named(&input2, &plan2), "{}", s.name());
        }
    }

    #[test]
    fn weighted_sticky_reaches_epsilon_when_feasible(change in arb_change(true)) {
        let strategy = WeightedSticky::new();
        let (after, _) = run_change(&strategy, &change);
        let input = after.input();
        let outcome = strategy.assign_with_report(&input).unwrap();
        let b = quality::balance(&input, &outcome.plan).unwrap();
        prop_assert!((b.max_over_mean_weight / b.weight_lower_bound - outcome.report.max_ratio).abs() < 1e-6
            || after.partitions.is_empty());
        if feasible(&after, strategy.epsilon()) {
            prop_assert!(outcome.report.within_epsilon, "{:?}", outcome.report);
            prop_assert!(b.max_over_mean_weight <= (1.0 + strategy.epsilon()) * b.weight_lower_bound + 1e-9);
        }
    }

    #[test]
    fn weighted_sticky_from_arbitrary_previous(case in arb_case(10, 150, true)) {
        let strategy = WeightedSticky::new();
        let input = case.input();
        let outcome = strategy.assign_with_report(&input).unwrap();
        if feasible(&case, strategy.epsilon()) {
            prop_assert!(outcome.report.within_epsilon, "{:?}", outcome.report);
        }
        // Partitions of live owners only move when refinement needs them to.
        let m = quality::movement(&input, &outcome.plan).unwrap();
        prop_assert!(m.moved_count <= m.previously_owned);
    }

    #[test]
    fn weighted_sticky_within_epsilon_on_feasible_cases((case, joined) in arb_feasible()) {
        prop_assume!(feasible(&case, DEFAULT_EPSILON));
        let strategy = WeightedSticky::new();
        let input = case.input();
        let outcome = strategy.assign_with_report(&input).unwrap();
        let b = quality::balance(&input, &outcome.plan).unwrap();
        prop_assert!(outcome.report.within_epsilon, "{:?}", outcome.report);
        prop_assert!(b.max_over_mean_weight <= (1.0 + DEFAULT_EPSILON) * b.weight_lower_bound + 1e-9, "{b:?}");
        // Then workers join: still within ε, and the joiners are no longer idle.
        let previous = outcome.plan.to_assignment(&input);
        let mut next = case.clone();
        next.workers = joined;
        next.previous = previous;
        if feasible(&next, DEFAULT_EPSILON) {
            let input = next.input();
            let outcome = strategy.assign_with_report(&input).unwrap();
            let b = quality::balance(&input, &outcome.plan).unwrap();
            prop_assert!(outcome.report.within_epsilon, "{:?}", outcome.report);
            prop_assert!(b.min_over_mean_weight > 0.5, "{b:?}");
            let m = quality::movement(&input, &outcome.plan).unwrap();
            // Sticky: it moves at most a little more than the weight that has to reach the joiners.
            prop_assert!(m.moved_weight <= m.min_moved_weight * 2 + 3, "{m:?}");
        }
    }

    #[test]
    fn bounded_ring_keeps_every_worker_near_its_cap(case in arb_case(10, 120, true)) {
        // A partition passes the cap c × share only when it fits nowhere, and then lands where
        // it overshoots least: no worker ends above its cap by more than one partition.
        let input = case.input();
        let plan = BoundedLoadRing::new().assign(&input).unwrap();
        let b = quality::balance(&input, &plan).unwrap();
        let total: u64 = case.partitions.iter().map(Partition::weight).sum();
        let caps: u64 = case.workers.iter().map(|w| u64::from(w.capacity)).sum();
        let heaviest = case.partitions.iter().map(Partition::weight).max().unwrap_or(0);
        if total > 0 {
            #[allow(clippy::cast_precision_loss)]
            let slack = heaviest as f64 / (total as f64 / caps as f64);
            prop_assert!(b.max_over_mean_weight <= 1.25 + slack + 1e-9, "{b:?}");
        }
    }

    #[test]
    fn hash_strategies_only_move_what_they_must_on_a_leave(case in arb_case(10, 120, false), k in any::<prop::sample::Index>()) {
        // A ring and HRW never move a survivor's partition when a worker leaves.
        prop_assume!(case.workers.len() > 1);
        for s in [&ConsistentHash::new() as &dyn AssignmentStrategy, &Rendezvous] {
            let input = case.input();
            let before = s.assign(&input).unwrap();
            let gone = k.index(case.workers.len());
            let rest: Vec<WorkerSpec> = case.workers.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, w)| w.clone()).collect();
            let prev = before.to_assignment(&input);
            let input2 = AssignInput { workers: &rest, partitions: &case.partitions, previous: &prev };
            let after = s.assign(&input2).unwrap();
            for (i, (&o1, &o2)) in before.owners().iter().zip(after.owners()).enumerate() {
                if o1 != gone {
                    prop_assert_eq!(&case.workers[o1].id, &rest[o2].id, "{} moved {}", s.name(), case.partitions[i].id());
                }
            }
        }
    }
}

/// ε is reachable by greedy single moves when no partition outweighs ε × the mean level (see
/// the refinement argument in `WeightedSticky`'s docs).
#[allow(clippy::cast_precision_loss)]
fn feasible(case: &Case, epsilon: f64) -> bool {
    let total: u64 = case.partitions.iter().map(Partition::weight).sum();
    let caps: u64 = case.workers.iter().map(|w| u64::from(w.capacity)).sum();
    let heaviest = case
        .partitions
        .iter()
        .map(Partition::weight)
        .max()
        .unwrap_or(0);
    heaviest as f64 <= epsilon * total as f64 / caps as f64
}

/// The minimum count movement, computed naively: orphans of gone workers, plus the excess over
/// quotas where the larger quotas go to the biggest holders.
fn independent_min_moves(case: &Case) -> usize {
    let mut held: BTreeMap<&WorkerId, usize> = case.workers.iter().map(|w| (&w.id, 0)).collect();
    let mut orphans = 0;
    for p in &case.partitions {
        if let Some(o) = case.previous.owner(p.id()) {
            match held.get_mut(o) {
                Some(h) => *h += 1,
                None => orphans += 1,
            }
        }
    }
    let mut counts: Vec<usize> = held.into_values().collect();
    counts.sort_unstable();
    counts.reverse();
    let (p, w) = (case.partitions.len(), case.workers.len());
    orphans
        + counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(p / w + usize::from(i < p % w)))
            .sum::<usize>()
}

#[test]
fn errors_are_typed() {
    use parti_core::strategy::StrategyError;
    let prev = Assignment::new();
    let parts = vec![part(1, 1), part(1, 2)];
    let workers = vec![WorkerSpec::new(wid(0))];
    let none: Vec<WorkerSpec> = vec![];
    for s in all_strategies() {
        let input = AssignInput {
            workers: &none,
            partitions: &parts,
            previous: &prev,
        };
        assert_eq!(
            s.assign(&input),
            Err(StrategyError::NoWorkers),
            "{}",
            s.name()
        );
        let dup = vec![WorkerSpec::new(wid(0)), WorkerSpec::new(wid(0))];
        let input = AssignInput {
            workers: &dup,
            partitions: &parts[..1],
            previous: &prev,
        };
        assert!(
            matches!(s.assign(&input), Err(StrategyError::DuplicateWorker { .. })),
            "{}",
            s.name()
        );
        let zero = vec![WorkerSpec::with_capacity(wid(0), 0)];
        let input = AssignInput {
            workers: &zero,
            partitions: &parts[..1],
            previous: &prev,
        };
        assert!(
            matches!(s.assign(&input), Err(StrategyError::ZeroCapacity { .. })),
            "{}",
            s.name()
        );
        // Duplicate partitions: rejected on a cold start by every strategy except the plain
        // rings, which place each listed partition on its own and never panic.
        let input = AssignInput {
            workers: &workers,
            partitions: &parts,
            previous: &prev,
        };
        let r = s.assign(&input);
        if !matches!(s.name(), "consistent-hash" | "rendezvous") {
            assert!(
                matches!(r, Err(StrategyError::DuplicatePartition { .. })),
                "{}: {r:?}",
                s.name()
            );
        }
        let empty = AssignInput {
            workers: &workers,
            partitions: &[],
            previous: &prev,
        };
        assert_eq!(s.assign(&empty).unwrap().owners().len(), 0);
    }
    let bad = [
        WeightedSticky::new()
            .with_epsilon(f64::NAN)
            .assign(&AssignInput {
                workers: &workers,
                partitions: &parts[..1],
                previous: &prev,
            }),
        BoundedLoadRing::new()
            .with_capacity_factor(0.5)
            .assign(&AssignInput {
                workers: &workers,
                partitions: &parts[..1],
                previous: &prev,
            }),
        ConsistentHash::new().with_vnodes(0).assign(&AssignInput {
            workers: &workers,
            partitions: &parts[..1],
            previous: &prev,
        }),
    ];
    for r in bad {
        assert!(
            matches!(r, Err(StrategyError::InvalidSettings { .. })),
            "{r:?}"
        );
    }
}
