//! `parti worker`: one real worker process on NATS. It logs every change of its assignment
//! (with fences), leaves gracefully on SIGINT/SIGTERM, and with `--restart-on-exit` stops for a
//! restart instead (its partitions stay reserved for the same id coming back).

use std::sync::Arc;

use parti_core::Partition;
use parti_core::member::Notification as MemberNotification;
use parti_core::records::OwnedPartition;
use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::{Manager, Notification, StaticSource};

use crate::config::ConfigArgs;
use crate::nats::NatsArgs;

/// The options of `parti worker`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// The catalog: this many partitions, named p0000, p0001, … (weight 1). Every worker of a
    /// cluster must be given the same catalog.
    #[arg(
        long,
        conflicts_with_all = ["partition", "partitions_file"],
        required_unless_present_any = ["partition", "partitions_file"]
    )]
    pub(crate) partitions: Option<u32>,
    /// The catalog, one partition key per flag (weight 1); repeat it.
    #[arg(long, conflicts_with = "partitions_file")]
    pub(crate) partition: Vec<String>,
    /// The catalog from a file: one partition per line, its keys joined by `.` and optionally a
    /// weight (`orders.eu 300`); `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub(crate) partitions_file: Option<std::path::PathBuf>,
    /// The worker id number to ask for (`worker-<N>`); a restarted worker that asks for its old
    /// id gets its partitions back.
    #[arg(long)]
    pub(crate) id: Option<u32>,
    /// The assignment strategy, by its stable name (every worker should use the same).
    #[arg(long, default_value = "sticky-balanced", value_parser = clap::builder::PossibleValuesParser::new(parti_strategy::NAMES))]
    pub(crate) strategy: String,
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// On SIGINT/SIGTERM, stop for a restart (`shutdown_for_restart`) instead of leaving the
    /// cluster: the partitions stay reserved for `rejoin_window` for this id.
    #[arg(long)]
    pub(crate) restart_on_exit: bool,
    /// Serve Prometheus metrics (`/metrics`) and the probes `/healthz` (liveness) and `/readyz`
    /// (assignment applied, not fenced) over HTTP on this address, e.g. `127.0.0.1:9090`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// A strategy picked by name at run time (the builder takes a concrete type).
#[derive(Debug)]
pub(crate) struct Named(pub(crate) Box<dyn AssignmentStrategy>);

impl AssignmentStrategy for Named {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        self.0.assign(input)
    }
}

/// Runs the worker until a signal (or until it stops on its own, which is a failure).
///
/// # Errors
///
/// What went wrong, in words, and the exit code (2 for a usage or configuration mistake).
pub(crate) async fn run(args: WorkerArgs) -> Result<(), (String, u8)> {
    // Defaults, file, PARTI_* variables, then the flags.
    let mut config = crate::config::load(&args.config).map_err(|e| (e, 2))?;
    if let Some(ns) = &args.nats.namespace {
        config.namespace.clone_from(ns);
    }
    if args.id.is_some() {
        config.preferred_id = args.id;
    }
    let valid = crate::config::validate(config.clone()).map_err(|e| (e, 2))?;
    let source = match (args.partitions, &args.partitions_file) {
        (Some(n), _) => StaticSource::numbered(n as usize),
        (None, Some(path)) => StaticSource::new(crate::catalog::read(path).map_err(|e| (e, 2))?),
        (None, None) => {
            let mut list = Vec::new();
            for key in &args.partition {
                list.push(
                    Partition::new([key.as_str()], 1)
                        .map_err(|e| (format!("--partition {key:?}: {e}"), 2))?,
                );
            }
            StaticSource::new(list)
        }
    };
    let strategy = parti_strategy::by_name(&args.strategy)
        .ok_or_else(|| (format!("unknown strategy {:?}", args.strategy), 2))?;
    let urls = args.nats.urls();
    let options = args
        .nats
        .options("parti worker")
        .await
        .map_err(|e| (e, 2))?;
    let store = NatsStore::connect(urls, options, NatsStoreConfig::from_config(&valid))
        .await
        .map_err(|e| (format!("{e} (server {})", args.nats.url), 1))?;
    tracing::info!(
        server = %store.server_version(),
        namespace = %valid.namespace,
        "connected to NATS"
    );
    // Installed before the worker starts, so nothing it records is lost.
    let probes = match args.metrics_addr {
        Some(addr) => {
            let (probes, bound) = crate::serve::start(addr).await.map_err(|e| (e, 1))?;
            tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
            Some(probes)
        }
        None => None,
    };
    let manager = Manager::builder(config)
        .store(store)
        .partitions(source)
        .strategy(Named(strategy))
        .start()
        .await
        .map_err(|e| (format!("the worker could not start: {e}"), 1))?;
    if let Some(probes) = &probes {
        probes.set_manager(manager.clone());
    }
    let log = tokio::spawn(log_changes(manager.clone()));
    let status = manager.status();
    tracing::info!(
        worker = %status.worker_id.map(|w| w.to_string()).unwrap_or_default(),
        owned = manager.owned().len(),
        granted = %fenced(&manager.owned()),
        "worker ready"
    );
    tokio::select! {
        signal = stop_signal() => {
            tracing::info!(%signal, restart = args.restart_on_exit, "stopping");
            if args.restart_on_exit {
                manager.shutdown_for_restart().await;
            } else {
                manager.shutdown().await;
            }
            log.abort();
            tracing::info!("stopped");
            Ok(())
        }
        () = manager.stopped() => {
            log.abort();
            let failure = manager.status().failure;
            Err((
                failure.map_or_else(
                    || "the worker stopped on its own".to_owned(),
                    |f| format!("the worker failed: {f}"),
                ),
                1,
            ))
        }
    }
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the worker");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

fn fenced(partitions: &[OwnedPartition]) -> String {
    partitions
        .iter()
        .map(|p| format!("{}@{}", p.partition.id(), p.fence))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logs every change of the assignment, with fences (the runtime logs identity, leadership and
/// state changes itself).
async fn log_changes(manager: Manager) {
    let mut rx = manager.notifications();
    let manager = Arc::new(manager);
    loop {
        let n = match rx.recv().await {
            Ok(n) => n,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "notifications missed (the log fell behind)");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match n {
            Notification::AssignmentChanged {
                version,
                assigned,
                revoked,
            } => {
                tracing::info!(
                    %version,
                    owned = manager.owned().len(),
                    assigned = assigned.len(),
                    revoked = revoked.len(),
                    granted = %fenced(&assigned),
                    released = %fenced(&revoked),
                    "assignment changed"
                );
            }
            Notification::Member(MemberNotification::OwnershipLost { partitions }) => {
                tracing::warn!(count = partitions.len(), partitions = %fenced(&partitions), "ownership lost (fenced)");
            }
            Notification::Member(MemberNotification::Failed(e)) => {
                tracing::error!(error = %e, "worker failed");
            }
            Notification::HandlerFailed { callback, error } => {
                tracing::warn!(callback = callback.as_str(), %error, "handler failed");
            }
            other => tracing::debug!(notification = ?other, "notification"),
        }
    }
}
