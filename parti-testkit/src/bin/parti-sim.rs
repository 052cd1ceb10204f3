//! `parti-sim`: runs the deterministic simulator over many seeds, or replays one.
//!
//! ```text
//! cargo run -p parti-testkit --release --bin parti-sim -- --seeds 0..10000
//! cargo run -p parti-testkit --release --bin parti-sim -- --seed 42 --trace
//! cargo run -p parti-testkit --release --bin parti-sim -- --scale --members 1000 --partitions 100000
//! ```
//!
//! A sweep prints one summary (seeds, steps, simulated time, wall time, violations); every seed
//! that breaks an invariant is printed with the invariant, a trace excerpt (the seed is replayed
//! with tracing on) and the exact command that replays it.

use std::ops::Range;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use parti_testkit::sim::{self, EXCERPT_LINES, SimOptions, SimReport, scenarios};

#[derive(Parser, Debug)]
#[command(
    name = "parti-sim",
    about = "Deterministic simulator of parti clusters"
)]
struct Args {
    /// Seeds to run, `A..B` (B excluded).
    #[arg(long, value_parser = parse_range, conflicts_with = "seed")]
    seeds: Option<Range<u64>>,
    /// One seed to run (or replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the whole trace of `--seed`.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Initial members (default: from the seed; for `--scale`: 1000).
    #[arg(long)]
    members: Option<usize>,
    /// Partitions (default: from the seed; for `--scale`: 100000).
    #[arg(long)]
    partitions: Option<usize>,
    /// Length of the chaos phase in seconds.
    #[arg(long, default_value_t = 20)]
    chaos_secs: u64,
    /// No faults and no workload.
    #[arg(long)]
    no_faults: bool,
    /// Worker threads for a sweep (each seed runs on one thread; results do not depend on it).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run the scale scenario (joins, a crash, a leader crash) instead of seeds.
    #[arg(long)]
    scale: bool,
    /// Run one named scenario (`--scenario list` lists them).
    #[arg(long)]
    scenario: Option<String>,
    /// Re-introduce a known planner bug (test-only switch), to see the sweep find it:
    /// `grant-before-ack`, `no-observation-gating` or `keep-unapplied`. Repeatable.
    #[arg(long = "planner-fault", value_parser = parse_fault)]
    planner_faults: Vec<&'static str>,
}

fn parse_fault(s: &str) -> Result<&'static str, String> {
    [
        "grant-before-ack",
        "no-observation-gating",
        "keep-unapplied",
    ]
    .into_iter()
    .find(|f| *f == s)
    .ok_or_else(|| {
        format!(
            "unknown planner fault {s:?}; grant-before-ack, no-observation-gating or keep-unapplied"
        )
    })
}

fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("{b:?}: {e}"))?;
    if b < a {
        return Err(format!("empty range {s:?}"));
    }
    Ok(a..b)
}

fn options(args: &Args, seed: u64) -> SimOptions {
    let mut o = SimOptions::seed(seed);
    o.members = args.members;
    o.partitions = args.partitions;
    o.chaos = Duration::from_secs(args.chaos_secs);
    o.faults = !args.no_faults;
    for f in &args.planner_faults {
        match *f {
            "grant-before-ack" => o.planner_faults.grant_before_ack = true,
            "no-observation-gating" => o.planner_faults.no_observation_gating = true,
            _ => o.planner_faults.keep_unapplied = true,
        }
    }
    o
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn replay_command(args: &Args, seed: u64) -> String {
    let mut c = format!("cargo run -p parti-testkit --release --bin parti-sim -- --seed {seed}");
    if let Some(m) = args.members {
        c.push_str(&format!(" --members {m}"));
    }
    if let Some(p) = args.partitions {
        c.push_str(&format!(" --partitions {p}"));
    }
    if args.chaos_secs != 20 {
        c.push_str(&format!(" --chaos-secs {}", args.chaos_secs));
    }
    if args.no_faults {
        c.push_str(" --no-faults");
    }
    for f in &args.planner_faults {
        c.push_str(&format!(" --planner-fault {f}"));
    }
    c.push_str(" --trace");
    c
}

fn print_violation(args: &Args, r: &SimReport) {
    let Some(v) = r.violations.first() else {
        return;
    };
    println!("VIOLATION seed {} invariant {}", r.seed, v.invariant);
    println!("  {v}");
    for other in r.violations.iter().skip(1).take(4) {
        println!("  also: {other}");
    }
    let mut o = options(args, r.seed);
    o.trace = Some(EXCERPT_LINES);
    let replay = sim::run(&o);
    println!("  trace excerpt (last {EXCERPT_LINES} lines):");
    for l in &replay.trace {
        println!("    {l}");
    }
    println!("  replay: {}", replay_command(args, r.seed));
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = &args.scenario {
        if name == "list" {
            for (n, _) in scenarios::ALL {
                println!("{n}");
            }
            return ExitCode::SUCCESS;
        }
        let Some((_, f)) = scenarios::ALL.iter().find(|(n, _)| n == name) else {
            eprintln!("unknown scenario {name:?}; --scenario list");
            return ExitCode::FAILURE;
        };
        let out = f(args.seed.unwrap_or(1));
        println!("{out}");
        return if out.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if args.scale {
        let members = args.members.unwrap_or(1000);
        let partitions = args.partitions.unwrap_or(100_000);
        let started = Instant::now();
        let r = scenarios::scale(args.seed.unwrap_or(1), members, partitions);
        let wall = started.elapsed();
        println!("{r}");
        println!(
            "scale: {members} members, {partitions} partitions: {:.1}s simulated in {:.1}s wall = {:.1}x real time, peak RSS {}",
            r.simulated.as_secs_f64(),
            wall.as_secs_f64(),
            r.simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            peak_rss_mib().map_or_else(|| "unknown".into(), |m| format!("{m:.0} MiB"))
        );
        return if r.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(seed) = args.seed {
        let mut o = options(&args, seed);
        o.trace = if args.trace { Some(usize::MAX) } else { None };
        let started = Instant::now();
        let r = sim::run(&o);
        if args.trace {
            for l in &r.trace {
                println!("{l}");
            }
        }
        println!("{}", r.summary());
        println!(
            "trace hash {:016x}; {:.1}s simulated in {:.2}s wall",
            r.trace_hash,
            r.simulated.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        for v in &r.violations {
            println!("VIOLATION seed {seed} invariant {}: {v}", v.invariant);
        }
        if !r.violations.is_empty() {
            println!("replay: {}", replay_command(&args, seed));
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let range = args.seeds.clone().unwrap_or(0..100);
    let started = Instant::now();
    let next = AtomicU64::new(range.start);
    let steps = AtomicU64::new(0);
    let sim_ns = AtomicU64::new(0);
    let bad: Mutex<Vec<SimReport>> = Mutex::new(Vec::new());
    let threads = args.threads.max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= range.end {
                        break;
                    }
                    let r = sim::run(&options(&args, seed));
                    steps.fetch_add(r.steps, Ordering::Relaxed);
                    sim_ns.fetch_add(
                        u64::try_from(r.simulated.as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    if !r.violations.is_empty() {
                        eprintln!("seed {seed}: {}", r.summary());
                        if let Ok(mut b) = bad.lock() {
                            b.push(r);
                        }
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    let mut bad = bad.into_inner().unwrap_or_default();
    bad.sort_by_key(|r| r.seed);
    for r in &bad {
        print_violation(&args, r);
    }
    let n = range.end - range.start;
    let simulated = Duration::from_nanos(sim_ns.load(Ordering::Relaxed));
    println!(
        "seeds {}..{} ({n} runs): {} steps, {:.0}s simulated, {:.1}s wall ({:.1} seeds/s, {:.0}x real time), {} seeds with violations{}",
        range.start,
        range.end,
        steps.load(Ordering::Relaxed),
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64().max(1e-9),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        bad.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                bad.iter()
                    .map(|r| format!("{} ({})", r.seed, r.violations[0].invariant))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
