//! Real `nats-server` processes for tests: a single JetStream node or a 3-node JetStream cluster,
//! bound to 127.0.0.1 on free ports with temporary store directories.
//!
//! The binary is taken from the `PARTI_NATS_SERVER` environment variable, else from `PATH`; if
//! neither has one, [`NatsServer::start`] fails with a message naming `scripts/test`, which
//! installs the pinned server. Tests that need NATS never skip silently.
//!
//! Every process is killed and reaped when its handle is dropped, also while a test panics; if
//! the test process itself is killed outright, its servers follow within about a second. A
//! server can be killed (`SIGKILL`), stopped (`SIGTERM`), restarted on the same port and store,
//! and paused / resumed (`SIGSTOP` / `SIGCONT`). Readiness is awaited by polling the server's
//! `/healthz` monitoring endpoint until a deadline, never by sleeping and hoping.
//!
//! The API is synchronous (it only starts processes and polls sockets), so it can be called from
//! any test, async or not; in an async test prefer a multi-thread runtime, because the short
//! readiness polls block the calling thread.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the `nats-server` binary.
pub const SERVER_ENV: &str = "PARTI_NATS_SERVER";

/// How long a single node may take to accept clients with JetStream enabled.
const NODE_READY: Duration = Duration::from_secs(15);
/// How long a cluster may take to elect its JetStream meta leader.
const CLUSTER_READY: Duration = Duration::from_secs(30);
/// How long a `SIGTERM`ed server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a server could not be started or controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No `nats-server` binary was found.
    #[error(
        "nats-server not found: set {SERVER_ENV} or put nats-server on PATH \
         (run the tests with scripts/test, which installs nats-server 2.15.1)"
    )]
    BinaryNotFound,
    /// `PARTI_NATS_SERVER` names a file that does not exist.
    #[error(
        "nats-server not found at {path} (from {SERVER_ENV}); run the tests with scripts/test, \
         which installs nats-server 2.15.1"
    )]
    BinaryMissing {
        /// The path from the environment.
        path: PathBuf,
    },
    /// A process could not be spawned or signalled.
    #[error("nats-server process {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server did not become ready before the deadline.
    #[error("nats-server {name} not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// The node's name.
        name: String,
        /// How long it was waited for.
        waited: Duration,
        /// The end of the server's log.
        log_tail: String,
    },
    /// The operation needs a running server.
    #[error("nats-server {name} is not running")]
    NotRunning {
        /// The node's name.
        name: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The `nats-server` binary to run: `PARTI_NATS_SERVER`, else `nats-server` on `PATH`.
///
/// # Errors
///
/// [`HarnessError::BinaryNotFound`] if neither exists.
pub fn server_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os(SERVER_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(HarnessError::BinaryMissing { path });
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(HarnessError::BinaryNotFound)
}

/// A free TCP port on 127.0.0.1 (bound, then released: a tiny race remains, which
/// [`NatsServer::start`] absorbs by retrying with fresh ports).
///
/// # Errors
///
/// The OS error if no port could be bound.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("read a bound port"))?
        .port();
    Ok(port)
}

/// Cluster settings of one node.
#[derive(Clone, Debug)]
struct ClusterArgs {
    cluster_name: String,
    cluster_port: u16,
    routes: Vec<u16>,
}

/// One `nats-server` process with JetStream, on 127.0.0.1.
pub struct NatsServer {
    name: String,
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    cluster: Option<ClusterArgs>,
    store: tempfile::TempDir,
    child: Option<Child>,
    paused: bool,
    /// Extra server configuration (written to a file passed with `-c`; flags win over it).
    config: Option<String>,
    /// The process whose death kills the server (this test process, or one chosen in tests).
    guardian: u32,
}

/// A shell wrapper that `exec`s the server (so the child's pid is the server's) after
/// starting a watcher: once a second it checks that the server still runs (else it exits)
/// and that the guardian process still runs (else it kills the server). So a test process
/// killed outright (`SIGKILL`, a CI timeout) leaves no server behind for long; `Drop` covers
/// every other way a test ends.
const GUARD_SCRIPT: &str = "guardian=$1; shift; \
    ( while sleep 1; do \
        kill -0 $$ 2>/dev/null || exit 0; \
        kill -0 \"$guardian\" 2>/dev/null || { kill -9 $$ 2>/dev/null; exit 0; }; \
      done ) </dev/null & \
    exec \"$@\"";

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl NatsServer {
    /// Starts a single JetStream node and waits until it is ready.
    ///
    /// # Errors
    ///
    /// No binary, no free port, or the server did not become ready in time.
    pub fn start() -> Result<NatsServer, HarnessError> {
        Self::start_with_config(None)
    }

    /// Starts a single JetStream node with extra server configuration, in the server's
    /// configuration file format (e.g. `"max_payload: 8192"`), and waits until it is ready.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`]; also when the configuration cannot be written.
    pub fn start_with_config(config: Option<&str>) -> Result<NatsServer, HarnessError> {
        let binary = server_binary()?;
        let mut last_err = None;
        // Ports are chosen by binding and releasing them; another process may grab one in
        // between, so retry a few times with fresh ports.
        for _ in 0..3 {
            let mut server = NatsServer::new(binary.clone(), "parti-test".into(), None)?;
            server.config = config.map(str::to_owned);
            match server.spawn().and_then(|()| server.wait_ready(NODE_READY)) {
                Ok(()) => return Ok(server),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or(HarnessError::BinaryNotFound))
    }

    fn new(
        binary: PathBuf,
        name: String,
        cluster: Option<ClusterArgs>,
    ) -> Result<NatsServer, HarnessError> {
        let store = tempfile::Builder::new()
            .prefix("parti-nats-")
            .tempdir()
            .map_err(io_err("create a store directory"))?;
        Ok(NatsServer {
            name,
            binary,
            port: free_port()?,
            monitor_port: free_port()?,
            cluster,
            store,
            child: None,
            paused: false,
            config: None,
            guardian: std::process::id(),
        })
    }

    /// The node's name (`parti-test` for a single node, `n0`..`n2` in a cluster).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client address, `127.0.0.1:<port>`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (kept across restarts).
    #[must_use]
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// The running process's id (to check from outside that it was reaped).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether a process is running (possibly paused).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("server.log")
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-m".into(),
            self.monitor_port.to_string(),
            "-n".into(),
            self.name.clone(),
            "-js".into(),
            "-sd".into(),
            self.store.path().join("js").display().to_string(),
        ];
        if let Some(config) = &self.config {
            let path = self.store.path().join("server.conf");
            // Written before every spawn; a failure shows as the server refusing to start.
            let _ = std::fs::write(&path, config);
            args.extend(["-c".into(), path.display().to_string()]);
        }
        if let Some(cluster) = &self.cluster {
            args.extend([
                "--cluster_name".into(),
                cluster.cluster_name.clone(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster.cluster_port),
            ]);
            if !cluster.routes.is_empty() {
                let routes: Vec<String> = cluster
                    .routes
                    .iter()
                    .map(|port| format!("nats://127.0.0.1:{port}"))
                    .collect();
                args.extend(["--routes".into(), routes.join(",")]);
            }
        }
        args
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("open the server log"))?;
        let log_err = log.try_clone().map_err(io_err("open the server log"))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("sh")
            .arg(self.guardian.to_string())
            .arg(&self.binary)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_err(format!("spawn {}", self.binary.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// The last lines of the server's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Whether `/healthz` answers 200 (the server accepts clients and JetStream is current).
    fn is_healthy(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }

    /// Waits until the server is healthy, or fails after `deadline`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotReady`] (with the log's tail) or [`HarnessError::NotRunning`].
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<(), HarnessError> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_status)) = child.try_wait()
            {
                self.child = None;
                return Err(HarnessError::NotReady {
                    name: self.name.clone(),
                    waited: start.elapsed(),
                    log_tail: self.log_tail(),
                });
            }
            if self.child.is_none() {
                return Err(HarnessError::NotRunning {
                    name: self.name.clone(),
                });
            }
            if self.is_healthy() {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(HarnessError::NotReady {
                    name: self.name.clone(),
                    waited: start.elapsed(),
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server with `SIGKILL` (no shutdown work, as a crash) and reaps it.
    ///
    /// # Errors
    ///
    /// The OS error if the process could not be signalled.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(io_err("kill"))?;
            child.wait().map_err(io_err("reap"))?;
        }
        self.paused = false;
        Ok(())
    }

    /// Stops the server with `SIGTERM` and waits for it to exit (killing it after a grace
    /// period).
    ///
    /// # Errors
    ///
    /// The OS error if the process could not be signalled.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.paused {
            signal(child.id(), "CONT")?;
            self.paused = false;
        }
        signal(child.id(), "TERM")?;
        let start = Instant::now();
        loop {
            if child.try_wait().map_err(io_err("wait"))?.is_some() {
                return Ok(());
            }
            if start.elapsed() > STOP_GRACE {
                child.kill().map_err(io_err("kill"))?;
                child.wait().map_err(io_err("reap"))?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same port and store (after [`NatsServer::kill`] or
    /// [`NatsServer::stop`]), and waits until it is ready. A running server is left alone.
    ///
    /// # Errors
    ///
    /// The server did not start or become ready in time.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.spawn()?;
        let deadline = if self.cluster.is_some() {
            CLUSTER_READY
        } else {
            NODE_READY
        };
        self.wait_ready(deadline)
    }

    /// Starts the process again without waiting for readiness (a cluster node needs its peers
    /// to become healthy).
    fn respawn(&mut self) -> Result<(), HarnessError> {
        self.spawn()
    }

    /// Freezes the server with `SIGSTOP`: connections stay open but nothing is answered.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotRunning`] or the OS error.
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        let pid = self.running_pid()?;
        signal(pid, "STOP")?;
        // `kill` returns once the signal is queued; the server can still answer a request
        // before every thread has stopped. Return only once all of them have.
        wait_for_stop_state(pid, true)?;
        self.paused = true;
        Ok(())
    }

    /// Thaws a paused server with `SIGCONT`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotRunning`] or the OS error.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        let pid = self.running_pid()?;
        signal(pid, "CONT")?;
        wait_for_stop_state(pid, false)?;
        self.paused = false;
        Ok(())
    }

    fn running_pid(&self) -> Result<u32, HarnessError> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| HarnessError::NotRunning {
                name: self.name.clone(),
            })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped (paused) process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal by name with the `kill` utility (the workspace forbids `unsafe`, so no
/// `libc::kill`).
/// Waits (up to 5 s) until every thread of `pid` is stopped (`stopped`) or none is, as
/// `/proc/<pid>/task/*/stat` reports it. Where there is no `/proc`, returns at once.
fn wait_for_stop_state(pid: u32, stopped: bool) -> Result<(), HarnessError> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    if !tasks.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let states: Vec<char> = std::fs::read_dir(&tasks)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
                    // The state follows the parenthesised command name: "pid (comm) S ...".
                    .filter_map(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
                    .collect()
            })
            .unwrap_or_default();
        let done = !states.is_empty()
            && if stopped {
                states.iter().all(|c| *c == 'T' || *c == 't')
            } else {
                states.iter().all(|c| *c != 'T' && *c != 't')
            };
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Io {
                what: format!(
                    "wait for {pid} to be {}",
                    if stopped { "stopped" } else { "running" }
                ),
                source: std::io::Error::other(format!("thread states {states:?}")),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(pid: u32, name: &str) -> Result<(), HarnessError> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io_err(format!("send SIG{name}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::Io {
            what: format!("send SIG{name} to {pid}"),
            source: std::io::Error::other(format!("kill exited with {status}")),
        })
    }
}

/// A 3-node JetStream cluster on loopback (nodes `n0`, `n1`, `n2`).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three clustered JetStream nodes and waits until all are healthy (which includes
    /// a JetStream meta leader being elected).
    ///
    /// # Errors
    ///
    /// No binary, no free ports, or the cluster did not become ready in time.
    pub fn start() -> Result<NatsCluster, HarnessError> {
        let binary = server_binary()?;
        // Ports are chosen by binding and releasing them; another process may grab one before
        // a node binds it (seen once in ten whole-suite runs: "bind: address already in use"
        // for a monitor port). Start the whole cluster again on fresh ports, a few times.
        let mut last_err = None;
        for _ in 0..3 {
            match Self::start_once(&binary) {
                Ok(cluster) => return Ok(cluster),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or(HarnessError::BinaryNotFound))
    }

    fn start_once(binary: &Path) -> Result<NatsCluster, HarnessError> {
        let cluster_ports = [free_port()?, free_port()?, free_port()?];
        let mut nodes = Vec::with_capacity(3);
        for (i, port) in cluster_ports.iter().enumerate() {
            let routes = cluster_ports
                .iter()
                .filter(|other| *other != port)
                .copied()
                .collect();
            let args = ClusterArgs {
                cluster_name: "parti-test".into(),
                cluster_port: *port,
                routes,
            };
            nodes.push(NatsServer::new(
                binary.to_path_buf(),
                format!("n{i}"),
                Some(args),
            )?);
        }
        let mut cluster = NatsCluster { nodes };
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        for node in &mut cluster.nodes {
            node.wait_ready(CLUSTER_READY)?;
        }
        Ok(cluster)
    }

    /// The nodes.
    #[must_use]
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// One node, by index (0..3).
    ///
    /// # Panics
    ///
    /// If `index` is not below 3.
    #[must_use]
    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// The index of the node named `name` (as reported as a stream leader).
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name() == name)
    }

    /// Every node's client URL, comma separated (a client's server list).
    #[must_use]
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Restarts a killed or stopped node on its port and store; waits until every running node
    /// is healthy.
    ///
    /// # Errors
    ///
    /// The node did not start, or the cluster did not become ready in time.
    pub fn restart(&mut self, index: usize) -> Result<(), HarnessError> {
        self.nodes[index].respawn()?;
        for node in &mut self.nodes {
            if node.is_running() {
                node.wait_ready(CLUSTER_READY)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A server outlives a test process killed outright by at most a couple of seconds.
    #[test]
    fn a_server_dies_with_its_guardian() {
        let mut guardian = Command::new("sleep").arg("30").spawn().unwrap();
        let mut server = NatsServer::new(server_binary().unwrap(), "guarded".into(), None).unwrap();
        server.guardian = guardian.id();
        server.spawn().unwrap();
        server.wait_ready(NODE_READY).unwrap();
        let pid = server.pid().unwrap();
        guardian.kill().unwrap();
        guardian.wait().unwrap();
        let start = Instant::now();
        // The server is our child: reap it when it dies, as init would for an orphan.
        let child = server.child.as_mut().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "server {pid} still alive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("server died {:?} after its guardian", start.elapsed());
        server.child = None;
        assert!(!alive(pid));
    }
}
