//! The machines' cost at 100 × 10,000 and 1,000 × 100,000 (issue 14): CPU per heartbeat at the
//! leader, per follower event, and the leader's extra CPU for a join, a follower crash, a
//! catalog change and a leader crash (a new leader's takeover and first plan), measured in the
//! simulator (wall-clock time inside `Member::handle_event`; virtual time everywhere else).
//!
//! ```text
//! cargo run -p parti-testkit --release --example machines [-- MEMBERS PARTITIONS]
//! ```
//!
//! Without arguments it runs both sizes (a few minutes; the large one dominates).

use std::time::Duration;

use parti_testkit::sim::scenarios::{MachineCosts, machine_costs};

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print(c: &MachineCosts) {
    println!(
        "{} members × {} partitions (run: {:.0} s wall)",
        c.size.0,
        c.size.1,
        c.wall.as_secs_f64()
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
        let c = machine_costs(1, m, p);
        print(&c);
    }
}
