//! Many in-process [`Manager`]s on one store, each recording into one ownership [`Ledger`], and
//! the waits scenario tests need: "every partition owned exactly once", "this worker's
//! partitions are owned elsewhere". The store is any `KvStore`, so the same scenario runs on the
//! embedded `MemoryStore` with paused time and on a real `nats-server` (one connection per
//! worker).
//!
//! Waiting polls every 10 ms against a deadline: under paused tokio time that costs no real time,
//! on a real server it bounds the wait (STYLE.md §18: conditions with deadlines, no hopeful
//! sleeps).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parti_core::store::KvStore;
use parti_core::{Config, PartitionId, WorkerId};
use parti_runtime::{Manager, StartError, StaticSource};

use crate::ledger::{Ledger, LedgerHandler};

/// One worker process of a [`Cluster`].
#[derive(Debug)]
pub struct Worker {
    /// Its process name in the ledger (`p0`, `p1`, …; a restart is a new process).
    pub process: String,
    /// Its handle.
    pub manager: Manager,
    /// False once it crashed or stopped.
    pub alive: bool,
}

/// In-process workers sharing a catalog and a ledger.
#[derive(Debug)]
pub struct Cluster {
    /// The configuration every worker starts with (`preferred_id` set per worker).
    pub config: Config,
    /// The catalog every worker lists.
    pub source: StaticSource,
    /// What every handler saw.
    pub ledger: Ledger,
    /// Every worker process ever started, in start order.
    pub workers: Vec<Worker>,
}

impl Cluster {
    /// A cluster of no workers yet, over `partitions` numbered partitions.
    #[must_use]
    pub fn new(config: Config, partitions: usize) -> Self {
        Cluster {
            config,
            source: StaticSource::numbered(partitions),
            ledger: Ledger::new(),
            workers: Vec::new(),
        }
    }

    /// The handler the next worker gets by default.
    #[must_use]
    pub fn next_handler(&self) -> LedgerHandler {
        self.ledger.handler(format!("p{}", self.workers.len()))
    }

    /// Starts a worker on `store` (with `preferred_id` if given) and returns its index.
    ///
    /// # Errors
    ///
    /// The worker's [`StartError`].
    pub async fn start(
        &mut self,
        store: Arc<dyn KvStore>,
        preferred_id: Option<u32>,
    ) -> Result<usize, StartError> {
        let handler = self.next_handler();
        self.start_with(store, preferred_id, handler).await
    }

    /// Starts a worker with this handler (from [`Cluster::next_handler`], adjusted).
    ///
    /// # Errors
    ///
    /// The worker's [`StartError`].
    pub async fn start_with(
        &mut self,
        store: Arc<dyn KvStore>,
        preferred_id: Option<u32>,
        handler: LedgerHandler,
    ) -> Result<usize, StartError> {
        let mut config = self.config.clone();
        config.preferred_id = preferred_id;
        let process = handler.process().to_owned();
        let manager = Manager::builder(config)
            .shared_store(store)
            .partitions(self.source.clone())
            .handler(handler)
            .start()
            .await?;
        if let Some(id) = manager.worker_id() {
            self.ledger.name(&process, id.to_string());
        }
        self.workers.push(Worker {
            process,
            manager,
            alive: true,
        });
        Ok(self.workers.len() - 1)
    }

    /// Crashes worker `i`: aborted, nothing handed over; the ledger notes it.
    pub fn crash(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.manager.abort();
        w.alive = false;
        self.ledger.crashed(&w.process);
    }

    /// Stops worker `i` gracefully ([`Manager::shutdown`]).
    pub async fn shutdown(&mut self, i: usize) {
        self.workers[i].manager.shutdown().await;
        self.workers[i].alive = false;
    }

    /// Stops worker `i` for a restart ([`Manager::shutdown_for_restart`]).
    pub async fn shutdown_for_restart(&mut self, i: usize) {
        self.workers[i].manager.shutdown_for_restart().await;
        self.workers[i].alive = false;
    }

    /// Indexes of the workers still alive.
    #[must_use]
    pub fn live(&self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].alive)
            .collect()
    }

    /// The index of the live worker that leads, if exactly one does.
    #[must_use]
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| self.workers[i].manager.is_leader())
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// The worker id of worker `i`.
    #[must_use]
    pub fn worker_id(&self, i: usize) -> Option<WorkerId> {
        self.workers[i].manager.worker_id()
    }

    /// Why the cluster is not exactly covered now, or `None` when it is: every catalog partition
    /// owned (by the ledger) by a live process, and each live worker's `owned()` view agrees with
    /// the ledger.
    #[must_use]
    pub fn coverage_gap(&self) -> Option<String> {
        let owners = self.ledger.owners();
        let live: BTreeMap<&str, &Manager> = self
            .workers
            .iter()
            .filter(|w| w.alive)
            .map(|w| (w.process.as_str(), &w.manager))
            .collect();
        let catalog: BTreeSet<PartitionId> = self
            .source
            .partitions()
            .iter()
            .map(|p| p.id().clone())
            .collect();
        for p in &catalog {
            match owners.get(p) {
                None => return Some(format!("{p} has no owner")),
                Some(o) if !live.contains_key(o.as_str()) => {
                    return Some(format!("{p} is owned by {o}, which is not alive"));
                }
                Some(_) => {}
            }
        }
        for (process, manager) in &live {
            let view: BTreeSet<PartitionId> = manager
                .owned()
                .iter()
                .map(|p| p.partition.id().clone())
                .collect();
            let ledger: BTreeSet<PartitionId> = owners
                .iter()
                .filter(|(_, o)| o.as_str() == *process)
                .map(|(p, _)| p.clone())
                .collect();
            if view != ledger {
                return Some(format!(
                    "{process}: owned() shows {} partitions, its callbacks {}",
                    view.len(),
                    ledger.len()
                ));
            }
        }
        None
    }

    /// Waits until [`Cluster::coverage_gap`] is `None`; returns how long it took.
    ///
    /// # Errors
    ///
    /// The last gap seen, when `within` passed first.
    pub async fn wait_covered(&self, within: Duration) -> Result<Duration, String> {
        self.wait_until(within, || self.coverage_gap()).await
    }

    /// Waits until `gap()` returns `None`, polling every 10 ms; returns how long it took.
    ///
    /// # Errors
    ///
    /// The last gap, when `within` passed first.
    pub async fn wait_until(
        &self,
        within: Duration,
        gap: impl Fn() -> Option<String>,
    ) -> Result<Duration, String> {
        let start = tokio::time::Instant::now();
        loop {
            let last = gap();
            let Some(last) = last else {
                return Ok(start.elapsed());
            };
            if start.elapsed() >= within {
                return Err(format!("after {within:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every live worker gracefully, all at once.
    pub async fn shutdown_all(&mut self) {
        let live = self.live();
        futures::future::join_all(live.iter().map(|&i| self.workers[i].manager.shutdown())).await;
        for i in live {
            self.workers[i].alive = false;
        }
    }
}
