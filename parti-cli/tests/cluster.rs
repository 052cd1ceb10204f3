//! The real binaries against a real `nats-server` (from `parti_testkit::nats`): three
//! `parti worker` processes, `parti status --json` sees them and every partition owned once;
//! `kill -9` of one hands its partitions to the others within the crash bound; SIGTERM of
//! another hands its partitions over before it exits; a server that wants a password refuses a
//! worker without one with a readable message.
//!
//! Needs `PARTI_NATS_SERVER` (or `nats-server` on `PATH`); it fails with the harness's message
//! otherwise, never skips.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parti_testkit::nats::NatsServer;
use serde_json::Value;

const PARTITIONS: u64 = 12;
const PARTITIONS_TEXT: &str = "12";
const BIN: &str = env!("CARGO_BIN_EXE_parti");

/// A worker process, killed when dropped; its log goes to a file.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(dir: &Path, url: &str, namespace: &str, id: u32, extra: &[&str]) -> Worker {
        let mut args = vec!["--partitions", PARTITIONS_TEXT];
        args.extend_from_slice(extra);
        Worker::with(dir, url, namespace, id, &args)
    }

    /// A worker with `args` after the connection flags and its id (the catalog among them).
    fn with(dir: &Path, url: &str, namespace: &str, id: u32, args: &[&str]) -> Worker {
        let log = dir.join(format!("worker-{id}.log"));
        let file = File::create(&log).expect("a log file in the temp dir");
        let child = Command::new(BIN)
            .args(["worker", "--fast", "--nats", url, "--namespace", namespace])
            .args(["--id", &id.to_string()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("parti worker starts");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(url: &str, namespace: &str) -> Result<Value, String> {
    let out = Command::new(BIN)
        .args(["status", "--json", "--nats", url, "--namespace", namespace])
        .args(["--partitions", &PARTITIONS.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Polls `parti status` until `ok` holds; returns the report and when it first held.
fn wait_status(
    url: &str,
    namespace: &str,
    bound: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let t0 = Instant::now();
    let mut last = Err("no status read yet".to_owned());
    while t0.elapsed() < bound {
        last = status(url, namespace);
        if let Ok(v) = &last
            && ok(v)
        {
            return (v.clone(), t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {bound:?}; last status: {last:#?}");
}

fn members(v: &Value) -> Vec<(String, u64)> {
    v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or_default().to_owned(),
                        m["partitions"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every partition owned exactly once, by live members only (none owned twice, none unowned).
fn all_owned_once(v: &Value) -> bool {
    v["owned"].as_u64() == Some(PARTITIONS)
        && v["owned_twice"].as_array().is_some_and(Vec::is_empty)
        && v["unowned"].as_array().is_some_and(Vec::is_empty)
}

#[test]
fn three_workers_a_crash_and_a_graceful_leave_as_status_shows_them() {
    let server = NatsServer::start().expect("nats-server (set PARTI_NATS_SERVER)");
    let url = server.url();
    let dir = tempfile::tempdir().expect("a temp dir");
    let ns = "cli";

    let mut workers: Vec<Worker> = (0..3)
        .map(|id| Worker::start(dir.path(), &url, ns, id, &[]))
        .collect();

    let (v, took) = wait_status(
        &url,
        ns,
        Duration::from_secs(20),
        "3 members own everything",
        |v| {
            let m = members(v);
            m.len() == 3 && m.iter().all(|(_, n)| *n > 0) && all_owned_once(v)
        },
    );
    eprintln!("3 workers settled after {took:?}: {v}");

    // kill -9 worker-1: the others own its partitions once the leader declares it dead
    // (Config::fast(): heartbeat_ttl 600 ms + emergency_grace 300 ms, then one plan).
    let victim = workers.remove(1);
    let mut victim = victim;
    victim.child.kill().expect("SIGKILL worker-1");
    let _ = victim.child.wait();
    let crash_bound = Duration::from_secs(5);
    let (v, took) = wait_status(
        &url,
        ns,
        crash_bound,
        "the others own worker-1's partitions",
        |v| {
            all_owned_once(v)
                && members(v)
                    .iter()
                    .filter(|(id, _)| id != "worker-1")
                    .map(|(_, n)| n)
                    .sum::<u64>()
                    == PARTITIONS
        },
    );
    eprintln!("worker-1's partitions owned by the others {took:?} after kill -9: {v}");
    drop(victim);

    // SIGTERM worker-2: it hands its partitions over and deletes its id before it exits.
    let mut leaver = workers.remove(1);
    let pid = leaver.child.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(s) = leaver.child.try_wait().expect("wait on worker-2") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "worker-2 did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = leaver.log();
    assert!(exit.success(), "worker-2 exited with {exit:?}:\n{log}");
    let released = log
        .find("revoked=")
        .expect("worker-2 logged its revocation");
    let stopped = log.rfind("stopped").expect("worker-2 logged its stop");
    assert!(released < stopped, "revocation after the stop:\n{log}");
    // Right after its exit: not a member any more (a crash leaves its id until it expires, as
    // worker-1's may still be), and worker-0 owns everything.
    let (v, took) = wait_status(
        &url,
        ns,
        Duration::from_secs(2),
        "worker-0 owns everything",
        |v| {
            let m = members(v);
            all_owned_once(v)
                && m.contains(&("worker-0".to_owned(), PARTITIONS))
                && !m.iter().any(|(id, _)| id == "worker-2")
        },
    );
    eprintln!("after worker-2's leave ({took:?}): {v}");
    let log0 = workers[0].log();
    assert!(log0.contains("assignment changed"), "{log0}");
}

/// A `nats-server` with a user and password, killed when dropped.
struct AuthServer(Child);

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_that_wants_a_password_refuses_a_worker_without_one_readably() {
    let binary = parti_testkit::nats::server_binary().expect("nats-server (set PARTI_NATS_SERVER)");
    let port = parti_testkit::nats::free_port().expect("a free port");
    let dir = tempfile::tempdir().expect("a temp dir");
    let _server = AuthServer(
        Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js"])
            .arg("-sd")
            .arg(dir.path())
            .args(["--user", "parti", "--pass", "s3cret"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nats-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = Command::new(BIN)
        .args(["status", "--nats", &url, "--namespace", "auth"])
        .output()
        .expect("parti status runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authorization"), "{stderr}");

    let out = Command::new(BIN)
        .args(["worker", "--fast", "--nats", &url, "--namespace", "auth"])
        .args(["--partitions", "4"])
        .stdin(Stdio::null())
        .output()
        .expect("parti worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("parti worker: cannot connect to NATS"),
        "{stderr}"
    );
    assert!(stderr.contains("authorization"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // With the password it gets in (and status then reads the namespace it made).
    let mut worker = Command::new(BIN)
        .args(["worker", "--fast", "--nats", &url, "--namespace", "auth"])
        .args([
            "--partitions",
            "4",
            "--user",
            "parti",
            "--password",
            "s3cret",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("parti worker starts");
    let t0 = Instant::now();
    let ok = loop {
        let out = Command::new(BIN)
            .args(["status", "--json", "--nats", &url, "--namespace", "auth"])
            .args(["--user", "parti", "--password", "s3cret"])
            .output()
            .expect("parti status runs");
        let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if v.as_ref().is_some_and(|v| v["owned"].as_u64() == Some(4)) {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        ok,
        "the worker with the password never owned the 4 partitions"
    );
}

/// A child's stdout lines, read on a thread as they come.
fn lines_of(child: &mut Child) -> std::sync::Arc<parking_lot::Mutex<Vec<String>>> {
    use std::io::BufRead as _;
    let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("piped stdout");
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            match line {
                Ok(l) => sink.lock().push(l),
                Err(_) => return,
            }
        }
    });
    lines
}

/// `parti status --watch`, piped: a table each time the cluster changes (not for ages), from
/// "the namespace does not exist" to one member, then two; a catalog from a file (keys and
/// weights) on the workers and in `status --partitions-file`; `--json` carries the lease left,
/// each record's phase and the weight balance. A catalog file with mistakes stops a worker with
/// exit code 2 and every mistake's line.
#[test]
fn status_watch_follows_a_cluster_on_a_catalog_file() {
    let server = NatsServer::start().expect("nats-server (set PARTI_NATS_SERVER)");
    let url = server.url();
    let dir = tempfile::tempdir().expect("a temp dir");
    let ns = "watched";
    let catalog = dir.path().join("catalog.txt");
    std::fs::write(
        &catalog,
        "# region.shard weight\norders.eu 30\norders.us 50\nbilling.eu\nbilling.us 2\n",
    )
    .expect("write the catalog");
    let file = catalog.to_str().expect("a UTF-8 path");

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "orders.eu 0\norders.us x\n").expect("write");
    let out = Command::new(BIN)
        .args([
            "worker",
            "--nats",
            &url,
            "--namespace",
            ns,
            "--partitions-file",
        ])
        .arg(&bad)
        .output()
        .expect("parti worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("2 problems") && stderr.contains("line 1: ") && stderr.contains("line 2: "),
        "{stderr}"
    );

    let mut watch = Command::new(BIN)
        .args(["status", "--watch", "--interval", "200ms", "--nats", &url])
        .args(["--namespace", ns, "--partitions-file", file])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("parti status --watch starts");
    let lines = lines_of(&mut watch);
    let wait_for = |what: &str, bound: Duration, ok: &dyn Fn(&[String]) -> bool| {
        let t0 = Instant::now();
        loop {
            if ok(&lines.lock()) {
                return;
            }
            assert!(
                t0.elapsed() < bound,
                "{what}: not within {bound:?}; output:\n{}",
                lines.lock().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the missing namespace", Duration::from_secs(10), &|l| {
        l.iter().any(|l| l.contains("does not exist"))
    });
    let _first = Worker::with(dir.path(), &url, ns, 0, &["--partitions-file", file]);
    wait_for(
        "one member owning all four",
        Duration::from_secs(20),
        &|l| {
            let tail = l.iter().rev().take_while(|l| !l.starts_with("---"));
            let tail: Vec<&String> = tail.collect();
            tail.iter().any(|l| l.starts_with("members    1"))
                && tail.iter().any(|l| l.starts_with("unowned    none"))
        },
    );
    let _second = Worker::with(dir.path(), &url, ns, 1, &["--partitions-file", file]);
    wait_for("two members", Duration::from_secs(20), &|l| {
        let tail: Vec<&String> = l
            .iter()
            .rev()
            .take_while(|l| !l.starts_with("---"))
            .collect();
        tail.iter().any(|l| l.starts_with("members    2"))
            && tail.iter().any(|l| l.starts_with("unowned    none"))
            && !tail.iter().any(|l| l.contains("handoff in progress"))
    });
    let tables = lines.lock().iter().filter(|l| l.starts_with("---")).count();
    // Ctrl-C (SIGINT) ends the watch, with success.
    let interrupted = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(status) = watch.try_wait().expect("wait on the watch") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "parti status --watch did not end on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "the watch ended with {exit:?}");
    // Printed on changes only: a handful of tables, not one per 200 ms.
    assert!(tables < 40, "{tables} tables printed");

    let out = Command::new(BIN)
        .args(["status", "--json", "--nats", &url, "--namespace", ns])
        .args(["--partitions-file", file])
        .output()
        .expect("parti status runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["owned"].as_u64(), Some(4), "{v}");
    assert!(v["lease_left_ms"].as_u64().is_some(), "{v}");
    assert!(v["balance"].as_f64().is_some_and(|b| b >= 1.0), "{v}");
    let weights: u64 = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["weight"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(weights, 30 + 50 + 1 + 2, "the file's weights: {v}");
    assert!(
        v["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["phase"].as_str() == Some("grant")),
        "{v}"
    );
}

/// One HTTP GET on 127.0.0.1: the status code and the body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

/// Polls `path` until `ok(code, body)`; panics with the last answer after `bound`.
fn wait_http(addr: &str, path: &str, bound: Duration, ok: impl Fn(u16, &str) -> bool) {
    let t0 = Instant::now();
    loop {
        let last = http_get(addr, path);
        if let Ok((code, body)) = &last
            && ok(*code, body)
        {
            return;
        }
        assert!(
            t0.elapsed() < bound,
            "{path}: not within {bound:?}; last: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `parti worker --metrics-addr`: `/metrics` in the Prometheus text format with the runtime's
/// metrics, `/healthz` and `/readyz` for orchestrators. The worker talks to NATS through a
/// chaos proxy: cut off, it fences itself (the default policy) and `/readyz` turns 503 while
/// `/healthz` stays 200; healed, it is granted its work again and `/readyz` is 200 again.
#[test]
fn metrics_and_probes_over_http_readyz_follows_a_fence() {
    let server = NatsServer::start().expect("nats-server (set PARTI_NATS_SERVER)");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime for the proxy");
    let proxy = runtime
        .block_on(parti_testkit::chaos::ChaosProxy::start(server.addr()))
        .expect("a chaos proxy");
    let port = parti_testkit::nats::free_port().expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let worker = Worker::with(
        dir.path(),
        &proxy.url(),
        "probed",
        0,
        &["--partitions", "4", "--metrics-addr", &addr],
    );
    let ok = |code: u16, _: &str| code == 200;
    wait_http(&addr, "/readyz", Duration::from_secs(20), |code, body| {
        code == 200 && body == "ready\n"
    });
    wait_http(&addr, "/healthz", Duration::from_secs(1), ok);
    let (code, metrics) = http_get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE parti_") && metrics.contains("parti_state"),
        "the runtime's metrics: {metrics}"
    );
    assert_eq!(http_get(&addr, "/nope").expect("GET /nope").0, 404);

    proxy.set_mode_both(parti_testkit::chaos::Mode::Blackhole);
    wait_http(&addr, "/readyz", Duration::from_secs(10), |code, body| {
        code == 503 && body.starts_with("not ready")
    });
    wait_http(&addr, "/healthz", Duration::from_secs(1), ok);
    proxy.heal();
    wait_http(&addr, "/readyz", Duration::from_secs(30), |code, _| {
        code == 200
    });
    let log = worker.log();
    assert!(log.contains("serving /metrics"), "{log}");
    drop(worker);
    drop(proxy);
}
