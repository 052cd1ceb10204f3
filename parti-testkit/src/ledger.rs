//! The ownership ledger: every callback each worker's handler saw, in one global order, and the
//! checks that matter to an application — never two owners of a partition at any instant, fences
//! strictly increasing per partition, callbacks in order and never overlapping.
//!
//! Give each worker (each *process*: a restart is a new one) a [`LedgerHandler`] from
//! [`Ledger::handler`]. A partition is owned by a process from the moment its `on_assigned` is
//! called until its `on_revoked` **returns**, or `on_ownership_lost` is called, or the process
//! crashes ([`Ledger::crashed`]). A grant to another process inside that span is a violation.
//!
//! ```
//! use parti_testkit::ledger::{Kind, Ledger};
//! # use parti_core::{Fence, Partition, Term, Version, records::OwnedPartition};
//! # let p = |v| OwnedPartition { partition: Partition::new(["p0"], 1).unwrap(), fence: Fence::new(Term(1), Version(v)) };
//! let ledger = Ledger::new();
//! ledger.record("a", Kind::AssignStart, &[p(1)]);
//! ledger.record("b", Kind::AssignStart, &[p(2)]); // a still owns p0
//! assert_eq!(ledger.violations().len(), 1);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use parti_core::records::OwnedPartition;
use parti_core::{Fence, PartitionId};
use parti_runtime::{AssignmentHandler, HandlerError};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `on_assigned` was called.
    AssignStart,
    /// `on_assigned` returned.
    AssignEnd,
    /// `on_revoked` was called.
    RevokeStart,
    /// `on_revoked` returned: the process no longer works on these partitions.
    RevokeEnd,
    /// `on_ownership_lost` was called: the process stopped at once.
    Lost,
    /// The process crashed (its task was aborted): it owns nothing from here on.
    Crash,
    /// A callback returned without its work having stopped (only the deliberately broken
    /// handler records it; its `RevokeEnd` follows later).
    Returned,
}

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the global order.
    pub seq: u64,
    /// When (tokio's clock: virtual under paused time).
    pub at: tokio::time::Instant,
    /// The process.
    pub process: String,
    /// What.
    pub kind: Kind,
    /// The partitions, with their fences.
    pub partitions: Vec<(PartitionId, Fence)>,
}

/// A broken promise found in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// `partition` was granted to `to` while `owner` still owned it.
    TwoOwners {
        /// The partition.
        partition: PartitionId,
        /// Who still owned it.
        owner: String,
        /// Who was granted it.
        to: String,
        /// The grant's position in the ledger.
        seq: u64,
    },
    /// A grant's fence was not above every earlier grant's fence of the partition.
    FenceNotIncreasing {
        /// The partition.
        partition: PartitionId,
        /// The earlier fence.
        before: Fence,
        /// The new one.
        after: Fence,
        /// The grant's position in the ledger.
        seq: u64,
    },
    /// A process's callbacks overlapped (one started before the previous returned).
    Overlap {
        /// The process.
        process: String,
        /// The position of the callback that started too early.
        seq: u64,
    },
}

/// The shared ledger; a cheap `Clone`.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Vec<Entry>>>,
    workers: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler that records into this ledger as `process`.
    #[must_use]
    pub fn handler(&self, process: impl Into<String>) -> LedgerHandler {
        LedgerHandler {
            ledger: self.clone(),
            process: process.into(),
            delay: Duration::ZERO,
            keep_after_revoke: None,
        }
    }

    /// Notes that `process` runs as worker id `worker`, so that [`Ledger::moves_since`] counts
    /// a partition that goes from a process to its restarted successor (same id) as no move.
    pub fn name(&self, process: &str, worker: impl Into<String>) {
        self.workers
            .lock()
            .insert(process.to_owned(), worker.into());
    }

    /// Records one event.
    pub fn record(&self, process: &str, kind: Kind, partitions: &[OwnedPartition]) {
        let mut entries = self.entries.lock();
        let seq = entries.len() as u64;
        entries.push(Entry {
            seq,
            at: tokio::time::Instant::now(),
            process: process.to_owned(),
            kind,
            partitions: partitions
                .iter()
                .map(|p| (p.partition.id().clone(), p.fence))
                .collect(),
        });
    }

    /// Records that `process` crashed (call it right after aborting its worker).
    pub fn crashed(&self, process: &str) {
        self.record(process, Kind::Crash, &[]);
    }

    /// Every entry so far.
    #[must_use]
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().clone()
    }

    /// Who owns each partition now (by the ledger's rules).
    #[must_use]
    pub fn owners(&self) -> BTreeMap<PartitionId, String> {
        replay(&self.entries.lock()).0
    }

    /// Every violation so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        replay(&self.entries.lock()).1
    }

    /// Grants (`AssignStart` partitions) recorded after position `from`, by process.
    #[must_use]
    pub fn grants_since(&self, from: u64) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.entries.lock().iter().skip(from as usize) {
            if e.kind == Kind::AssignStart {
                *out.entry(e.process.clone()).or_default() += e.partitions.len();
            }
        }
        out
    }

    /// The position the next entry will get.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.entries.lock().len() as u64
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.lock().is_empty()
    }

    /// Partitions that changed owner after position `from`: a grant to another worker id than
    /// the partition's previous grantee's (processes not [named](Ledger::name) count as their own
    /// worker).
    #[must_use]
    pub fn moves_since(&self, from: u64) -> usize {
        let workers = self.workers.lock().clone();
        let worker = |process: &str| {
            workers
                .get(process)
                .cloned()
                .unwrap_or_else(|| process.to_owned())
        };
        let entries = self.entries.lock();
        let mut last: BTreeMap<PartitionId, String> = BTreeMap::new();
        let mut moves = 0;
        for e in entries.iter() {
            if e.kind != Kind::AssignStart {
                continue;
            }
            for (p, _) in &e.partitions {
                let to = worker(&e.process);
                let before = last.insert(p.clone(), to.clone());
                if e.seq >= from && before.is_some_and(|b| b != to) {
                    moves += 1;
                }
            }
        }
        moves
    }

    /// Panics with the violations and the ledger's tail if there is any violation.
    pub fn assert_clean(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let entries = self.entries();
            let tail: Vec<String> = entries
                .iter()
                .rev()
                .take(30)
                .rev()
                .map(|e| {
                    let ps: Vec<String> = e
                        .partitions
                        .iter()
                        .map(|(p, f)| format!("{p}@{f}"))
                        .collect();
                    format!("#{} {} {:?} {}", e.seq, e.process, e.kind, ps.join(" "))
                })
                .collect();
            panic!(
                "ownership ledger violations: {v:#?}\nlast entries:\n{}",
                tail.join("\n")
            );
        }
    }
}

fn replay(entries: &[Entry]) -> (BTreeMap<PartitionId, String>, Vec<Violation>) {
    let mut owner: BTreeMap<PartitionId, String> = BTreeMap::new();
    let mut fence: BTreeMap<PartitionId, Fence> = BTreeMap::new();
    let mut busy: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for e in entries {
        match e.kind {
            Kind::AssignStart | Kind::RevokeStart => {
                if busy.insert(e.process.clone(), true) == Some(true) {
                    out.push(Violation::Overlap {
                        process: e.process.clone(),
                        seq: e.seq,
                    });
                }
            }
            Kind::AssignEnd | Kind::RevokeEnd | Kind::Returned => {
                busy.insert(e.process.clone(), false);
            }
            Kind::Lost | Kind::Crash => {}
        }
        match e.kind {
            Kind::AssignStart => {
                for (p, f) in &e.partitions {
                    if let Some(o) = owner.get(p)
                        && *o != e.process
                    {
                        out.push(Violation::TwoOwners {
                            partition: p.clone(),
                            owner: o.clone(),
                            to: e.process.clone(),
                            seq: e.seq,
                        });
                    }
                    if let Some(before) = fence.get(p)
                        && *f <= *before
                    {
                        out.push(Violation::FenceNotIncreasing {
                            partition: p.clone(),
                            before: *before,
                            after: *f,
                            seq: e.seq,
                        });
                    }
                    fence.insert(p.clone(), *f);
                    owner.insert(p.clone(), e.process.clone());
                }
            }
            Kind::RevokeEnd | Kind::Lost => {
                for (p, _) in &e.partitions {
                    if owner.get(p) == Some(&e.process) {
                        owner.remove(p);
                    }
                }
            }
            Kind::Crash => {
                owner.retain(|_, o| *o != e.process);
                busy.remove(&e.process);
            }
            Kind::AssignEnd | Kind::RevokeStart | Kind::Returned => {}
        }
    }
    (owner, out)
}

/// An [`AssignmentHandler`] that records every callback into a [`Ledger`].
#[derive(Clone, Debug)]
pub struct LedgerHandler {
    ledger: Ledger,
    process: String,
    delay: Duration,
    keep_after_revoke: Option<Duration>,
}

impl LedgerHandler {
    /// Each callback takes this long (a slow application).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// **A deliberately broken application**: `on_revoked` returns at once but records the end
    /// of its work only `keep` later (it went on working after saying it stopped). A ledger of a
    /// handover through such a handler must show two owners.
    #[must_use]
    pub fn broken_keep_after_revoke(mut self, keep: Duration) -> Self {
        self.keep_after_revoke = Some(keep);
        self
    }

    /// The process name.
    #[must_use]
    pub fn process(&self) -> &str {
        &self.process
    }
}

#[async_trait::async_trait]
impl AssignmentHandler for LedgerHandler {
    async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        self.ledger
            .record(&self.process, Kind::AssignStart, partitions);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.ledger.record(&self.process, Kind::AssignEnd, &[]);
        Ok(())
    }

    async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        self.ledger
            .record(&self.process, Kind::RevokeStart, partitions);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match self.keep_after_revoke {
            None => self
                .ledger
                .record(&self.process, Kind::RevokeEnd, partitions),
            Some(keep) => {
                let ledger = self.ledger.clone();
                let process = self.process.clone();
                let partitions = partitions.to_vec();
                self.ledger.record(&self.process, Kind::Returned, &[]);
                tokio::spawn(async move {
                    tokio::time::sleep(keep).await;
                    ledger.record(&process, Kind::RevokeEnd, &partitions);
                });
            }
        }
        Ok(())
    }

    fn on_ownership_lost(&self, partitions: &[OwnedPartition]) {
        self.ledger.record(&self.process, Kind::Lost, partitions);
    }
}
