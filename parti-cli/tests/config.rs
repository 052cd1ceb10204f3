//! `parti config`: the layers (defaults, a TOML file, `PARTI_*` variables) and the checks.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_parti");

fn parti(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("parti runs")
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write a temp file");
    path.display().to_string()
}

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = file(
        &dir,
        "parti.toml",
        "namespace = \"orders\"\nheartbeat_interval = \"1s\"\nheartbeat_ttl = \"4s\"\n",
    );
    let out = parti(
        &["config", "print", "--config", &path],
        // A connection variable is not a setting and must not be taken for one.
        &[
            ("PARTI_HEARTBEAT_INTERVAL", "1500ms"),
            ("PARTI_DEGRADED__ENTER_AFTER", "7s"),
            ("PARTI_NATS_URL", "nats://example:4222"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("namespace = \"orders\""), "{text}"); // file
    assert!(text.contains("heartbeat_ttl = \"4s\""), "{text}"); // file
    assert!(
        text.contains("heartbeat_interval = \"1s500ms\"")
            || text.contains("heartbeat_interval = \"1.5s\""),
        "{text}"
    ); // env over file
    assert!(text.contains("enter_after = \"7s\""), "{text}"); // env, nested
    assert!(text.contains("identity_ttl = \"30s\""), "{text}"); // default
}

#[test]
fn check_lists_every_invalid_setting_and_exits_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = file(
        &dir,
        "bad.toml",
        "heartbeat_interval = \"1s\"\nheartbeat_ttl = \"500ms\"\n",
    );
    let out = parti(&["config", "check", &path], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid configuration (3 problems)"), "{err}");
    for key in ["heartbeat_ttl (500ms)", "emergency_grace", "fence_margin"] {
        assert!(err.contains(&format!("  - {key}")), "{key} missing:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");

    let good = file(&dir, "good.toml", "namespace = \"orders\"\n");
    let out = parti(&["config", "check", &good], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_key_a_bad_duration_and_a_missing_file_are_named() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let unknown = file(&dir, "unknown.toml", "[degraded]\nenter_soon = \"2s\"\n");
    let out = parti(&["config", "check", &unknown], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("enter_soon") && err.contains("degraded"),
        "{err}"
    );

    let bad = file(&dir, "duration.toml", "heartbeat_ttl = \"soon\"\n");
    let out = parti(&["config", "check", &bad], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("heartbeat_ttl") && err.contains("soon"),
        "{err}"
    );

    let missing = dir.path().join("nope.toml").display().to_string();
    let out = parti(&["config", "check", &missing], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("nope.toml"),
        "{err}"
    );
}
