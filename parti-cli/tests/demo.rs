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

/// A tmux server on a socket of its own, killed (with its sessions) when dropped.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "demo"]).stdout)
            .into_owned()
    }

    /// Waits until the screen shows every one of `texts`; panics with the screen after `bound`.
    fn wait_for(&self, texts: &[&str], bound: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            assert!(
                t0.elapsed() < bound,
                "the screen lacks one of {texts:?} after {bound:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// `--interactive` in a pseudo-terminal made by tmux: the live table shows the keys; the key
/// `a` adds a worker (a new row appears on the screen), `c` crashes one (its row goes), and `q`
/// ends the demo with the summary and the ledger's verdict, exit 0.
#[test]
fn the_interactive_demo_in_a_terminal_reacts_to_keys() {
    let tmux = Tmux(format!("parti-demo-test-{}", std::process::id()));
    let command = format!(
        "{} demo --interactive --workers 2 --partitions 12; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_parti")
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "demo",
        "-x",
        "120",
        "-y",
        "45",
        &command,
    ]);
    assert!(
        started.status.success(),
        "tmux new-session: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = tmux.wait_for(
        &["keys: a adds a worker", "worker-1", "settled"],
        Duration::from_secs(20),
    );
    assert!(!screen.contains("worker-2"), "{screen}");

    tmux.run(&["send-keys", "-t", "demo", "a"]);
    let screen = tmux.wait_for(&["== worker-2 joins"], Duration::from_secs(20));
    // A table row (log lines start with their time): the live view, not plain lines.
    assert!(
        screen.contains("LEADER") && screen.lines().any(|l| l.starts_with("  worker-2 ")),
        "a row for worker-2 in the live table:\n{screen}"
    );
    // Wait for the join to settle before the next key (keys queue up meanwhile anyway).
    tmux.wait_for(&["owned by 3 workers"], Duration::from_secs(20));

    tmux.run(&["send-keys", "-t", "demo", "c"]);
    tmux.wait_for(&["worker-2 crashed — "], Duration::from_secs(20));

    tmux.run(&["send-keys", "-t", "demo", "q"]);
    let screen = tmux.wait_for(
        &["== summary", "no partition ever had two owners", "EXIT=0"],
        Duration::from_secs(30),
    );
    assert!(screen.contains("worker-2 joins"), "{screen}");
}
