//! Criterion benches for the hot paths: key hashing, ring build and lookup, and the sticky
//! strategies with a previous assignment. `cargo bench -p parti-strategy`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use parti_core::strategy::{AssignInput, AssignmentStrategy, WorkerSpec};
use parti_core::{Assignment, Partition, WorkerId};
use parti_strategy::ring::{HashRing, partition_hash};
use parti_strategy::{ConsistentHash, Rendezvous, StickyBalanced, WeightedSticky};

fn workers(n: u32) -> Vec<WorkerSpec> {
    (0..n)
        .map(|i| WorkerSpec::new(WorkerId::from_parts("worker", i).expect("valid id")))
        .collect()
}

fn partitions(n: u32) -> Vec<Partition> {
    (0..n)
        .map(|i| {
            Partition::new(
                ["topic", "p", &i.to_string()],
                50 + u64::from(i) * 7919 % 451,
            )
            .expect("valid partition")
        })
        .collect()
}

/// `(workers + 1, partitions, previous for the first `workers`)`: the input of a join.
fn join_case(
    strategy: &dyn AssignmentStrategy,
    w: u32,
    p: u32,
) -> (Vec<WorkerSpec>, Vec<Partition>, Assignment) {
    let ws = workers(w + 1);
    let ps = partitions(p);
    let empty = Assignment::new();
    let input = AssignInput {
        workers: &ws[..w as usize],
        partitions: &ps,
        previous: &empty,
    };
    let prev = strategy
        .assign(&input)
        .expect("valid input")
        .to_assignment(&input);
    (ws, ps, prev)
}

fn hashing(c: &mut Criterion) {
    let keys: Vec<String> = ["topic", "p", "12345"].map(String::from).to_vec();
    c.bench_function("partition_hash/3 keys", |b| {
        b.iter(|| partition_hash(black_box(&keys), 0));
    });
    let ids: Vec<String> = (0..1000).map(|i| format!("worker-{i}")).collect();
    c.bench_function("ring/build 1000 workers x 150", |b| {
        b.iter(|| HashRing::new(black_box(&ids), 150, 0).expect("valid ring"));
    });
    let ring = HashRing::new(&ids, 150, 0).expect("valid ring");
    let hashes: Vec<u64> = partitions(100_000)
        .iter()
        .map(|p| partition_hash(p.keys(), 0))
        .collect();
    c.bench_function("ring/lookup 100k", |b| {
        b.iter(|| {
            hashes
                .iter()
                .map(|&h| ring.owner_of_hash(h).unwrap_or(0))
                .sum::<usize>()
        });
    });
}

fn strategies(c: &mut Criterion) {
    let mut g = c.benchmark_group("join");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let cases: [(&str, &dyn AssignmentStrategy, u32, u32); 5] = [
        ("sticky 100x10k", &StickyBalanced::new(), 100, 10_000),
        ("sticky 1000x100k", &StickyBalanced::new(), 1000, 100_000),
        (
            "weighted-sticky 100x10k",
            &WeightedSticky::new(),
            100,
            10_000,
        ),
        (
            "consistent-hash 1000x100k",
            &ConsistentHash::new(),
            1000,
            100_000,
        ),
        ("rendezvous 100x10k", &Rendezvous, 100, 10_000),
    ];
    for (name, s, w, p) in cases {
        let (ws, ps, prev) = join_case(s, w, p);
        let input = AssignInput {
            workers: &ws,
            partitions: &ps,
            previous: &prev,
        };
        g.bench_function(name, |b| b.iter(|| s.assign(black_box(&input))));
    }
    g.finish();
}

criterion_group!(benches, hashing, strategies);
criterion_main!(benches);
