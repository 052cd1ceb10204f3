//! [`Manager`], the handle an application holds, and [`ManagerBuilder`], which starts a worker.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use parti_core::breaker::CircuitBreaker;
use parti_core::member::{Member, MemberInit};
use parti_core::records::OwnedPartition;
use parti_core::store::{KvStore, OnMismatch};
use parti_core::strategy::AssignmentStrategy;
use parti_core::{Config, InstanceId, ValidConfig, WorkerId, WorkerState};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::driver::{Command, Driver, Views, now};
use crate::error::{Error, StartError};
use crate::exec::Exec;
use crate::handler::{self, AssignmentHandler, NoopHandler};
use crate::source::{self, PartitionSource, StaticSource};
use crate::status::{Health, Notification, Status};

/// How many notifications a slow receiver may fall behind before it loses the oldest (it then
/// gets `RecvError::Lagged` with the count).
pub const NOTIFICATION_BUFFER: usize = 1024;

/// A running parti worker: a cheap [`Clone`] handle to the driver task that takes part in the
/// cluster for this process.
///
/// Start one with [`Manager::builder`]. Every clone is the same worker.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::collections::BTreeMap;
/// use parti_core::Config;
/// use parti_runtime::{Manager, MemoryStore, StaticSource};
///
/// let store = MemoryStore::new(); // embedded: the whole cluster in this process
/// let partitions = StaticSource::numbered(12);
/// let mut workers = Vec::new();
/// for _ in 0..3 {
///     let worker = Manager::builder(Config::fast())
///         .store(store.clone())
///         .partitions(partitions.clone())
///         .start()
///         .await?;
///     workers.push(worker);
/// }
/// // The leader spreads the partitions once the cold-start window has collected the joins.
/// for w in &workers {
///     w.wait_for_state(parti_core::WorkerState::Stable, std::time::Duration::from_secs(10)).await?;
/// }
/// tokio::time::sleep(std::time::Duration::from_secs(3)).await;
///
/// let mut owners = BTreeMap::new();
/// for w in &workers {
///     for p in w.owned().iter() {
///         assert!(owners.insert(p.partition.id().clone(), w.worker_id()).is_none(), "two owners");
///     }
/// }
/// assert_eq!(owners.len(), 12, "every partition owned exactly once");
///
/// for w in workers {
///     w.shutdown().await;
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Dropping it
///
/// When the last handle is dropped the worker leaves the cluster gracefully in the background,
/// as [`Manager::shutdown`] does (its partitions are handed over at once, bounded by
/// `shutdown_timeout`), provided the tokio runtime keeps running meanwhile. To keep a worker
/// running, keep a handle; to stop it at once without handing anything over, call
/// [`Manager::abort`].
#[derive(Clone, Debug)]
pub struct Manager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    assignment: watch::Receiver<Arc<[OwnedPartition]>>,
    views: Arc<Views>,
    tasks: Mutex<Vec<AbortHandle>>,
    config: ValidConfig,
}

impl Manager {
    /// A builder for a worker with this configuration (validated at
    /// [`start`](ManagerBuilder::start)).
    pub fn builder(config: Config) -> ManagerBuilder {
        ManagerBuilder {
            config,
            store: None,
            strategy: None,
            source: None,
            handler: None,
            instance: None,
        }
    }

    /// The worker id held now (`None` while it is claiming one, e.g. after losing it).
    #[must_use]
    pub fn worker_id(&self) -> Option<WorkerId> {
        self.inner.status.borrow().worker_id.clone()
    }

    /// The lifecycle state.
    #[must_use]
    pub fn state(&self) -> WorkerState {
        self.inner.status.borrow().state
    }

    /// Everything the worker shows, at once.
    #[must_use]
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// Whether this worker leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.inner.status.borrow().is_leader
    }

    /// The leader this worker knows of, if any.
    #[must_use]
    pub fn leader(&self) -> Option<WorkerId> {
        self.inner.status.borrow().leader.clone()
    }

    /// The partitions this worker owns now, with their fences, in partition order.
    #[must_use]
    pub fn owned(&self) -> Arc<[OwnedPartition]> {
        self.inner.assignment.borrow().clone()
    }

    /// A receiver of the partitions this worker owns (with their fences), updated when a
    /// delivery starts and at once when ownership is lost.
    #[must_use]
    pub fn assignment(&self) -> watch::Receiver<Arc<[OwnedPartition]>> {
        self.inner.assignment.clone()
    }

    /// A receiver of every [`Notification`] from now on. A receiver that falls more than
    /// [`NOTIFICATION_BUFFER`] behind loses the oldest ones and is told how many.
    #[must_use]
    pub fn notifications(&self) -> broadcast::Receiver<Notification> {
        self.inner.views.notifications.subscribe()
    }

    /// Liveness and readiness, for probes.
    #[must_use]
    pub fn health(&self) -> Health {
        self.inner.status.borrow().health()
    }

    /// The validated configuration the worker runs with.
    #[must_use]
    pub fn config(&self) -> &ValidConfig {
        &self.inner.config
    }

    /// Waits until the worker is in `state`, or has entered it since this call began (a state
    /// that lasted an instant is not missed), for at most `timeout`.
    ///
    /// Cancel-safe: dropping the future changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when `timeout` passed first; [`Error::Stopped`] when the worker
    /// stopped without reaching `state` (waiting for [`WorkerState::Shutdown`] succeeds then).
    pub async fn wait_for_state(&self, state: WorkerState, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.inner.status.clone();
        let baseline = rx.borrow().entered(state);
        let wait = async {
            rx.wait_for(|s| s.state == state || s.entered(state) > baseline || s.stopped)
                .await
                .map(|s| s.state == state || s.entered(state) > baseline)
        };
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false) | Err(_)) => Err(Error::Stopped),
        }
    }

    /// Asks the leader's planner to plan again now (outside the cooldown).
    ///
    /// Cancel-safe: the request is sent at once; dropping the future only drops the answer.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] on a worker that does not lead; [`Error::Stopped`].
    pub async fn trigger_rebalance(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::TriggerRebalance(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Lists the partition source now and applies the catalog if it changed; returns the
    /// number of partitions listed.
    ///
    /// Cancel-safe: the listing runs on its own; dropping the future only drops the answer.
    ///
    /// # Errors
    ///
    /// [`Error::PartitionSource`] when the listing failed (the last catalog stays);
    /// [`Error::Stopped`].
    pub async fn refresh_partitions(&self) -> Result<usize, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RefreshPartitions(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Leaves the cluster gracefully and waits until the worker has stopped: the application is
    /// told to give everything up (`on_revoked`), the leader hands the partitions to the others
    /// at once (no one waits for this worker to be declared dead), then the worker deletes its
    /// heartbeat, leadership and id. Bounded by `shutdown_timeout`. Calling it again, or on a
    /// stopped worker, just waits.
    ///
    /// Cancel-safe: the leave starts when this is first polled and goes on if the future is
    /// dropped.
    pub async fn shutdown(&self) {
        self.stop(false).await;
    }

    /// Stops for a restart: announces it (intent `Restarting`), gives everything up locally,
    /// and leaves the worker id to the next process, which takes it over at once. The leader
    /// keeps this worker's partitions reserved for `rejoin_window`: a new process that comes
    /// back with the same id (`preferred_id`) gets them back and nothing moves. Waits until the
    /// worker has stopped.
    ///
    /// Cancel-safe in the same way as [`Manager::shutdown`].
    pub async fn shutdown_for_restart(&self) {
        self.stop(true).await;
    }

    /// Stops at once without handing anything over, as if the process had crashed: the driver
    /// and the handler task are aborted, nothing more is written, and the other workers take the
    /// partitions over after `heartbeat_ttl + emergency_grace`. For tests and emergency exits.
    pub fn abort(&self) {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
        self.inner.views.status.send_modify(|s| s.stopped = true);
    }

    /// Waits until the worker has stopped (by any means). Cancel-safe.
    pub async fn stopped(&self) {
        let mut rx = self.inner.status.clone();
        let _ = rx.wait_for(|s| s.stopped).await;
    }

    async fn stop(&self, restart: bool) {
        if self.inner.status.borrow().stopped {
            return;
        }
        // A closed channel means the driver is gone already.
        let _ = self
            .inner
            .commands
            .send(Command::Shutdown { restart })
            .await;
        self.stopped().await;
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)
    }
}

/// Starts a worker: [`Manager::builder`], then the parts, then [`ManagerBuilder::start`].
#[must_use = "a builder does nothing until .start().await"]
pub struct ManagerBuilder {
    config: Config,
    store: Option<Arc<dyn KvStore>>,
    strategy: Option<Arc<dyn AssignmentStrategy>>,
    source: Option<Arc<dyn PartitionSource>>,
    handler: Option<Arc<dyn AssignmentHandler>>,
    instance: Option<InstanceId>,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// The store every worker of the cluster shares: a
    /// [`MemoryStore`](crate::MemoryStore) (embedded, one process) or a `parti_nats::NatsStore`.
    /// Required.
    pub fn store(mut self, store: impl KvStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The same, for a store already shared behind an `Arc`.
    pub fn shared_store(mut self, store: Arc<dyn KvStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Who should own what. Every worker of a cluster should use the same one (the leader's
    /// decides). Default: [`parti_strategy::StickyBalanced`].
    pub fn strategy(mut self, strategy: impl AssignmentStrategy + 'static) -> Self {
        self.strategy = Some(Arc::new(strategy));
        self
    }

    /// Where the partition catalog comes from (every worker must be given the same).
    /// Default: an empty catalog.
    pub fn partitions(mut self, source: impl PartitionSource) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The application's callbacks. Default: [`NoopHandler`] (read the assignment through
    /// [`Manager::assignment`]).
    pub fn handler(mut self, handler: impl AssignmentHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// The same, for a handler already shared behind an `Arc`.
    pub fn shared_handler(mut self, handler: Arc<dyn AssignmentHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// This process's instance id (default: random). Two processes must never share one.
    pub fn instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Validates the configuration, provisions the buckets, lists the partitions, starts the
    /// worker, and returns once it has applied its first assignment (or, if the cluster gives it
    /// nothing before `startup_timeout`, once that has passed, owning nothing).
    ///
    /// Cancel-safe: dropping the future half-way stops the worker it started; it leaves the
    /// cluster gracefully in the background (nothing it wrote outlives its TTL).
    ///
    /// # Errors
    ///
    /// Every [`StartError`]; nothing is left running when one is returned.
    pub async fn start(self) -> Result<Manager, StartError> {
        let config = self.config.validate()?;
        for warning in config.warnings() {
            tracing::warn!(%warning, "questionable configuration");
        }
        let store = self.store.ok_or(StartError::NoStore)?;
        let timeout = config.startup_timeout;
        let source: Arc<dyn PartitionSource> = match self.source {
            Some(s) => s,
            None => Arc::new(StaticSource::default()),
        };
        let strategy: Arc<dyn AssignmentStrategy> = match self.strategy {
            Some(s) => s,
            None => Arc::new(parti_strategy::StickyBalanced::new()),
        };
        let handler = self.handler.unwrap_or_else(|| Arc::new(NoopHandler));
        let instance = self.instance.unwrap_or_else(random_instance);

        let deadline = tokio::time::Instant::now() + timeout;
        let prepared = tokio::time::timeout_at(deadline, async {
            provision(&*store, &config).await?;
            let listed = source.list().await.map_err(StartError::PartitionSource)?;
            source::catalog(listed).map_err(StartError::PartitionSource)
        })
        .await;
        let catalog = match prepared {
            Err(_) => return Err(StartError::Timeout { timeout }),
            Ok(result) => result?,
        };

        let started = now();
        let member = Member::new(
            config.clone(),
            strategy,
            MemberInit {
                instance,
                seed: random_u64(),
                wall_epoch_ms: wall_ms(),
                partitions: catalog.clone(),
            },
            started,
        );
        let (status, status_rx) = watch::channel(Status::new(instance));
        let (assignment, assignment_rx) = watch::channel(Arc::from(Vec::new()));
        let (notifications, _) = broadcast::channel(NOTIFICATION_BUFFER);
        let views = Arc::new(Views {
            status,
            assignment,
            notifications,
        });
        let (commands_tx, commands) = mpsc::channel(64);
        let (deliveries, deliveries_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let span = tracing::info_span!(
            "parti_worker",
            instance = %instance,
            worker_id = tracing::field::Empty,
            term = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        let handler_task = tokio::spawn(
            handler::run(handler.clone(), deliveries_rx, reports_tx).instrument(span.clone()),
        );
        let driver = Driver {
            refresh_every: config.partition_refresh_interval,
            breaker: CircuitBreaker::new(&config.breaker, started),
            exec: Exec::new(store.clone()),
            connection: store.connection(),
            config: config.clone(),
            member,
            views: views.clone(),
            commands,
            deliveries,
            reports,
            handler,
            source,
            catalog,
            span: span.clone(),
        };
        let driver_task = tokio::spawn(driver.run().instrument(span));
        let manager = Manager {
            inner: Arc::new(Inner {
                commands: commands_tx,
                status: status_rx,
                assignment: assignment_rx,
                views,
                tasks: Mutex::new(vec![
                    driver_task.abort_handle(),
                    handler_task.abort_handle(),
                ]),
                config: config.clone(),
            }),
        };

        // Dropping `manager` (an error below, or this future dropped) makes the driver leave.
        // The member ends its own start within `startup_timeout` of its start (Ready, or
        // Failed); the extra second only guards against a driver that stopped answering.
        let member_deadline =
            tokio::time::Instant::from_std(started) + timeout + Duration::from_secs(1);
        let mut rx = manager.inner.status.clone();
        let outcome = tokio::time::timeout_at(member_deadline, async {
            // Owned data only: a `watch::Ref` held across an await would make this future !Send.
            rx.wait_for(|s| s.ready || s.stopped)
                .await
                .map(|s| (s.ready && !s.stopped, s.failure.clone()))
        })
        .await;
        let failure = match outcome {
            Ok(Ok((true, _))) => return Ok(manager),
            Ok(Ok((false, failure))) => {
                failure.map_or(StartError::DriverStopped, StartError::Member)
            }
            Ok(Err(_)) => StartError::DriverStopped,
            Err(_) => StartError::Timeout { timeout },
        };
        // Leave, bounded; then make sure nothing is left running.
        let _ = tokio::time::timeout(config.shutdown_timeout, manager.shutdown()).await;
        manager.abort();
        Err(failure)
    }
}

/// Creates (or checks) the four buckets, all in flight at once.
async fn provision(store: &dyn KvStore, config: &ValidConfig) -> Result<(), StartError> {
    let on_mismatch = if config.buckets.reconcile {
        OnMismatch::Reconcile
    } else {
        OnMismatch::Fail
    };
    let specs = config.bucket_specs();
    let results =
        futures::future::join_all(specs.iter().map(|spec| store.provision(spec, on_mismatch)))
            .await;
    for (spec, result) in specs.iter().zip(results) {
        match result {
            Ok(parti_core::store::Provisioned::Reconciled { changes }) => {
                tracing::warn!(bucket = %spec.name, ?changes, "bucket reconciled to the configuration");
            }
            Ok(_) => {}
            Err(error) => {
                return Err(StartError::Provision {
                    bucket: spec.name.clone(),
                    error,
                });
            }
        }
    }
    Ok(())
}

/// 64 random bits from the OS-seeded `RandomState` (no RNG crate needed for two draws).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn random_instance() -> InstanceId {
    InstanceId((u128::from(random_u64()) << 64) | u128::from(random_u64()))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
