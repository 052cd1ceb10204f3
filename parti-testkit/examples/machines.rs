//! The machines' cost at 100 × 10,000 and 1,000 × 100,000 (issue 14): CPU per heartbeat at the
//! leader, per follower event, and the leader's extra CPU for a join, a follower crash, a
//! catalog change and a leader crash (a new leader's takeover and first plan), measured in the
//! simulator (wall-clock time inside `Member::handle_event`; virtual time everywhere else).
//!
//! ```text
//! cargo run -p parti-testkit --release --example machines [-- MEMBERS PARTITIONS]
//! ```
//!
//! Without arguments it runs both sizes (under a minute). The heap of the leader's member (its
//! planner included) and of a follower's is measured at the end with a counting global
//! allocator (`stats_alloc`).

use std::alloc::System;
use std::time::Duration;

use parti_testkit::sim::scenarios::{MachineCosts, machine_costs_with_heap};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes in use now.
fn live_bytes() -> usize {
    let s = GLOBAL.stats();
    let live =
        s.bytes_allocated as i128 - s.bytes_deallocated as i128 + s.bytes_reallocated as i128;
    usize::try_from(live.max(0)).unwrap_or(usize::MAX)
}

fn mib(b: usize) -> String {
    if b < 1024 * 1024 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print(c: &MachineCosts) {
    println!(
        "{} members × {} partitions (run: {:.1} s wall, {:.0} s simulated: {:.1}× real time)",
        c.size.0,
        c.size.1,
        c.wall.as_secs_f64(),
        c.simulated.as_secs_f64(),
        c.simulated.as_secs_f64() / c.wall.as_secs_f64().max(1e-9)
    );
    let (med, p99, max) = c.heartbeat_spread;
    println!(
        "  leader, one heartbeat ({} in 10 s of steady state): median {}, p99 {}, max {}, mean {}",
        c.heartbeat.0,
        us(med),
        us(p99),
        us(max),
        us(c.heartbeat.1)
    );
    println!(
        "  follower, one event of any kind ({} events): mean {}",
        c.follower_event.0,
        us(c.follower_event.1)
    );
    for (what, total, longest, settled) in &c.events {
        println!(
            "  {what:<22}: leader CPU until settled {:>10}, longest single input {:>10}; settled {:.1} s later (simulated)",
            ms(*total),
            ms(*longest),
            settled.as_secs_f64()
        );
    }
    if let Some((leader, follower)) = c.heap {
        println!(
            "  heap: leader's member with its planner {}, a follower's member {} (planner ≈ {})",
            mib(leader),
            mib(follower),
            mib(leader.saturating_sub(follower))
        );
    }
    for f in &c.failures {
        println!("  FAILED: {f}");
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = match args.as_slice() {
        [m, p] => vec![(*m, *p)],
        _ => vec![(100, 10_000), (1_000, 100_000)],
    };
    for (m, p) in sizes {
        let c = machine_costs_with_heap(1, m, p, Some(&live_bytes));
        print(&c);
    }
}
