//! A TCP proxy that misbehaves on command, for fault tests between a client and a server.
//!
//! [`ChaosProxy::start`] listens on a free 127.0.0.1 port and forwards every connection to an
//! upstream address. At run time, per direction ([`Direction::ToServer`], [`Direction::ToClient`]),
//! it can:
//!
//! - add **latency** to every chunk of bytes (order is kept);
//! - **blackhole** the traffic: stop reading, so nothing is forwarded and nothing fails — the
//!   peer sees silence, as with a dead link or a frozen host. Lifting the blackhole delivers the
//!   held bytes;
//! - **drop** the traffic: read and discard it (the stream is then corrupt: the protocol on top
//!   usually detects it and reconnects).
//!
//! It can also **sever** every open connection at once (both sockets closed), and refuse new
//! connections. Everything is switchable while connections are open. All tasks stop when the
//! proxy is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A direction of traffic through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// What the proxy does with one direction's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward them (after the configured latency).
    #[default]
    Pass,
    /// Stop reading: nothing arrives, nothing fails, bytes are held until the mode changes.
    Blackhole,
    /// Read and discard them.
    Drop,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Link {
    mode: Mode,
    latency: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Settings {
    to_server: Link,
    to_client: Link,
    /// Bumped by [`ChaosProxy::sever`]: connections opened under an older generation close.
    generation: u64,
    refuse: bool,
}

impl Settings {
    fn link(&self, direction: Direction) -> Link {
        match direction {
            Direction::ToServer => self.to_server,
            Direction::ToClient => self.to_client,
        }
    }

    fn link_mut(&mut self, direction: Direction) -> &mut Link {
        match direction {
            Direction::ToServer => &mut self.to_server,
            Direction::ToClient => &mut self.to_client,
        }
    }
}

/// A running chaos proxy. Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    settings: Arc<watch::Sender<Settings>>,
    _tasks: JoinSet<()>,
}

impl ChaosProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`. Must be called inside a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// The OS error if no port could be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<ChaosProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (settings, _) = watch::channel(Settings::default());
        let settings = Arc::new(settings);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, upstream, Arc::clone(&settings)));
        Ok(ChaosProxy {
            addr,
            settings,
            _tasks: tasks,
        })
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Sets what happens to one direction's bytes.
    pub fn set_mode(&self, direction: Direction, mode: Mode) {
        self.settings
            .send_modify(|s| s.link_mut(direction).mode = mode);
    }

    /// Sets both directions' mode.
    pub fn set_mode_both(&self, mode: Mode) {
        self.settings.send_modify(|s| {
            s.to_server.mode = mode;
            s.to_client.mode = mode;
        });
    }

    /// Adds `latency` to every chunk sent in `direction` (from now on).
    pub fn set_latency(&self, direction: Direction, latency: Duration) {
        self.settings
            .send_modify(|s| s.link_mut(direction).latency = latency);
    }

    /// Closes every open connection (new ones are accepted unless refused).
    pub fn sever(&self) {
        self.settings.send_modify(|s| s.generation += 1);
    }

    /// Whether new connections are closed at once instead of being forwarded.
    pub fn set_refuse(&self, refuse: bool) {
        self.settings.send_modify(|s| s.refuse = refuse);
    }

    /// Back to a transparent proxy (pass both ways, no latency, accepting); open connections
    /// are kept.
    pub fn heal(&self) {
        self.settings.send_modify(|s| {
            s.to_server = Link::default();
            s.to_client = Link::default();
            s.refuse = false;
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    settings: Arc<watch::Sender<Settings>>,
) {
    // Connection tasks live in this set, so they end when the accept loop is aborted.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if settings.borrow().refuse {
                    drop(client);
                    continue;
                }
                connections.spawn(proxy_connection(client, upstream, settings.subscribe()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    settings: watch::Receiver<Settings>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let generation = settings.borrow().generation;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(
        client_read,
        server_write,
        Direction::ToServer,
        settings.clone(),
    ));
    pumps.spawn(pump(
        server_read,
        client_write,
        Direction::ToClient,
        settings.clone(),
    ));
    let mut sever = settings;
    loop {
        tokio::select! {
            // One side closed: close the other too (dropping the set aborts the other pump).
            _ = pumps.join_next() => return,
            changed = sever.changed() => {
                if changed.is_err() || sever.borrow().generation != generation {
                    return;
                }
            }
        }
    }
}

/// Forwards one direction: reads chunks, applies the mode, and hands them to a writer that
/// releases each chunk at its due time (so latency keeps order and does not throttle reading).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
    mut settings: watch::Receiver<Settings>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        // Bytes read just as a blackhole began: delivered when it ends.
        let mut held: Vec<u8> = Vec::new();
        loop {
            let link = settings.borrow_and_update().link(direction);
            match link.mode {
                Mode::Blackhole => {
                    if settings.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Mode::Drop => held.clear(),
                Mode::Pass => {
                    if !held.is_empty() {
                        let due = Instant::now() + link.latency;
                        if tx.send((due, std::mem::take(&mut held))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                read = from.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // The mode may have changed while we were waiting for bytes.
                    let link = settings.borrow().link(direction);
                    match link.mode {
                        Mode::Pass => {
                            let due = Instant::now() + link.latency;
                            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                        Mode::Blackhole => held.extend_from_slice(&buf[..n]),
                        Mode::Drop => {}
                    }
                }
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // When the reader ends it drops its sender, and the writer drains what is still due.
    tokio::join!(writer, reader);
}
