//! `parti demo` in plain-line mode (stdout is a pipe here), run as the built binary: it plays the
//! whole default script to its summary, exits 0, and its ledger saw no partition with two owners.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_demo_plays_its_script_and_the_ledger_sees_no_two_owners() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_parti"))
        .args(["demo", "--workers", "3", "--partitions", "12"])
        .args(["--settle-timeout", "20"])
        .stdin(Stdio::null())
        .output()
        .expect("the parti binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "parti demo exited with {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for expected in [
        "== two workers join",
        "crashed — ",
        "owned again",
        "restarted — it kept",
        "leaves gracefully",
        "== summary",
        "ledger:   no partition ever had two owners",
    ] {
        assert!(
            stdout.contains(expected),
            "the output lacks {expected:?}:\n{stdout}"
        );
    }
    // Plain mode: no terminal control sequences when stdout is not a terminal.
    assert!(
        !stdout.contains('\u{1b}'),
        "escape codes in plain mode:\n{stdout}"
    );
    // Every step settled: five step lines in the summary, none of them a failure.
    assert!(!stdout.contains("did not settle"), "{stdout}");
    assert_eq!(stdout.matches("settled in").count(), 5, "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo took {:?}",
        started.elapsed()
    );
}

#[test]
fn an_unknown_strategy_is_a_usage_error_that_names_the_choices() {
    let output = Command::new(env!("CARGO_BIN_EXE_parti"))
        .args(["demo", "--strategy", "nope"])
        .output()
        .expect("the parti binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sticky-balanced"), "{stderr}");
}

/// On a terminal the demo redraws a live table on the alternate screen, then leaves it and
/// prints the event log and the summary. The terminal is a pseudo-terminal made by `script`
/// (util-linux).
#[test]
fn on_a_terminal_the_demo_draws_a_live_table_then_the_summary() {
    let command = format!(
        "stty cols 100 rows 30; {} demo --workers 3 --partitions 12",
        env!("CARGO_BIN_EXE_parti")
    );
    let output = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{screen}",
        output.status
    );
    let enter = screen
        .find("\u{1b}[?1049h")
        .expect("the alternate screen is entered");
    let leave = screen
        .find("\u{1b}[?1049l")
        .expect("the alternate screen is left");
    let table = screen.find("WORKER").expect("the live table is drawn");
    assert!(enter < table && table < leave, "{screen}");
    // The header line, redrawn many times (every 100 ms).
    assert!(screen.matches("two owners: never").count() > 5, "{screen}");
    let summary = screen
        .find("no partition ever had two owners")
        .expect("the summary");
    assert!(
        leave < summary,
        "the summary is printed after the screen is left"
    );
}
