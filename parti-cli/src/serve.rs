//! `parti worker --metrics-addr ADDR`: the worker's Prometheus metrics and its probes over HTTP.
//!
//! | path | answers |
//! |---|---|
//! | `GET /metrics` | every metric the runtime and the store record (the `metrics` facade), in the Prometheus text format, rendered by `metrics-exporter-prometheus` |
//! | `GET /healthz` | liveness: `200 ok` while the worker runs (also while it starts), `503` once its driver stopped — restart the process |
//! | `GET /readyz` | readiness: `200 ready` once its assignment is applied and it is not fenced, `503` with its state otherwise |
//!
//! The HTTP side is a small HTTP/1.1 responder on a tokio `TcpListener`: three fixed `GET`
//! routes, one request per connection (`Connection: close`), a request head of at most 8 KiB
//! read within 5 s — anything else is answered with a 4xx and closed. The exporter's own
//! listener (its `http-listener` feature, on hyper) serves `/metrics` only, so the probes would
//! need a second server; this one serves all three.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parti_runtime::Manager;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics recorder and the worker the probes ask; the worker is set once it started.
#[derive(Clone)]
pub(crate) struct Probes {
    metrics: PrometheusHandle,
    manager: Arc<OnceLock<Manager>>,
}

impl Probes {
    /// The worker the probes answer for, once `start` returned it.
    pub(crate) fn set_manager(&self, manager: Manager) {
        let _ = self.manager.set(manager);
    }
}

/// Installs the Prometheus recorder (before the worker starts, so nothing it records is lost)
/// and serves the three routes on `addr`; returns the bound address.
///
/// # Errors
///
/// The address cannot be bound, or a recorder is already installed.
pub(crate) async fn start(addr: SocketAddr) -> Result<(Probes, SocketAddr), String> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let probes = Probes {
        metrics,
        manager: Arc::new(OnceLock::new()),
    };
    let serving = probes.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let probes = serving.clone();
                    tokio::spawn(async move { probes.answer(stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((probes, bound))
}

impl Probes {
    async fn answer(&self, mut stream: TcpStream) {
        let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(head)) => self.route(&head),
            Ok(Err(status)) => plain(status, "bad request\n"),
            Err(_) => plain("408 Request Timeout", "request timeout\n"),
        };
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    }

    fn route(&self, head: &str) -> Vec<u8> {
        let mut parts = head.lines().next().unwrap_or("").split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        if method != "GET" && method != "HEAD" {
            return plain("405 Method Not Allowed", "only GET\n");
        }
        let response = match path {
            "/metrics" => respond(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &self.metrics.render(),
            ),
            "/healthz" => match self.manager.get() {
                Some(m) if !m.health().live => plain("503 Service Unavailable", "stopped\n"),
                Some(_) => plain("200 OK", "ok\n"),
                None => plain("200 OK", "ok (starting)\n"),
            },
            "/readyz" => match self.manager.get() {
                Some(m) => {
                    let health = m.health();
                    if health.ready {
                        plain("200 OK", "ready\n")
                    } else {
                        plain(
                            "503 Service Unavailable",
                            &format!("not ready: {}\n", health.state.name()),
                        )
                    }
                }
                None => plain("503 Service Unavailable", "not ready: starting\n"),
            },
            _ => plain("404 Not Found", "not found: /metrics, /healthz, /readyz\n"),
        };
        if method == "HEAD" {
            // The head only: everything before the blank line.
            let end = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(response.len(), |i| i + 4);
            return response[..end].to_vec();
        }
        response
    }
}

/// Reads until the end of the request head; `Err` is the status line to answer with.
async fn read_head(stream: &mut TcpStream) -> Result<String, &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return String::from_utf8(buf).map_err(|_| "400 Bad Request");
        }
        if buf.len() > MAX_HEAD {
            return Err("431 Request Header Fields Too Large");
        }
    }
}

fn plain(status: &str, body: &str) -> Vec<u8> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
