//! Read-only views of the world for scenarios, the CLI and the heal phase.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parti_core::planner::PlannerState;
use parti_core::records::Names;
use parti_core::store::model::StoreModel;
use parti_core::{Partition, PartitionId, WorkerId};

use super::{Node, Stats, Status, World};
use crate::sim::invariants::Violation;
use crate::sim::trace::Trace;

impl World {
    // ----- views -------------------------------------------------------------------------------

    /// Every process ever started, by index.
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Running processes.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, x)| x.status == Status::Running)
    }

    /// The running leaders.
    #[must_use]
    pub fn leaders(&self) -> Vec<usize> {
        self.running()
            .filter(|(_, x)| x.member.is_leader())
            .map(|(i, _)| i)
            .collect()
    }

    /// The catalog.
    #[must_use]
    pub fn catalog(&self) -> &[Partition] {
        &self.catalog
    }

    /// The catalog's partition ids.
    #[must_use]
    pub fn catalog_ids(&self) -> Vec<PartitionId> {
        self.catalog.iter().map(|p| p.id().clone()).collect()
    }

    /// Partition → how many running processes believe they own it.
    #[must_use]
    pub fn believers(&self) -> BTreeMap<PartitionId, usize> {
        let mut m = BTreeMap::new();
        for (_, x) in self.running() {
            for p in x.app.held.keys() {
                *m.entry(p.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Whether every catalog partition is believed owned by exactly one running process.
    #[must_use]
    pub fn is_covered(&self) -> bool {
        // Exactly one belief per catalog partition needs exactly that many beliefs in all: a
        // cheap test that rules out most instants (e.g. every millisecond of a handoff) before
        // the map is built.
        let beliefs: usize = self.running().map(|(_, x)| x.app.held.len()).sum();
        if beliefs != self.catalog.len() {
            return false;
        }
        let b = self.believers();
        b.len() == self.catalog.len()
            && b.values().all(|n| *n == 1)
            && self.catalog.iter().all(|p| b.contains_key(p.id()))
    }

    /// One running leader, its planner idle, every catalog partition owned once, every running
    /// process `Stable`.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        let leaders = self.leaders();
        // The per-process tests first: coverage costs O(partitions).
        leaders.len() == 1
            && self.nodes[leaders[0]].planner_state() == Some(PlannerState::Idle)
            && self
                .running()
                .all(|(_, x)| x.member.state() == parti_core::WorkerState::Stable)
            && self.is_covered()
    }

    /// Worker id → partitions its running process believes it owns.
    #[must_use]
    pub fn ownership_by_worker(&self) -> BTreeMap<WorkerId, BTreeSet<PartitionId>> {
        let mut m: BTreeMap<WorkerId, BTreeSet<PartitionId>> = BTreeMap::new();
        for (_, x) in self.running() {
            if let Some(w) = x.member.worker_id() {
                m.entry(w.clone())
                    .or_default()
                    .extend(x.app.held.keys().cloned());
            }
        }
        m
    }

    /// Checks coverage now (invariant 2).
    pub fn check_coverage(&mut self, why: &str) -> bool {
        let ids = self.catalog_ids();
        let b = self.believers();
        match self.checks.coverage.check(self.now, &ids, &b, why) {
            Some(v) => {
                self.violation(v);
                false
            }
            None => true,
        }
    }

    /// The violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        &self.checks.violations
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The trace.
    #[must_use]
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Plans published at or after `t`.
    #[must_use]
    pub fn publications_since(&self, t: Duration) -> usize {
        self.published.iter().filter(|(at, _)| *at >= t).count()
    }

    /// Workers declared dead at or after `t`: `(time, worker, a running process held it)`.
    #[must_use]
    pub fn deaths_since(&self, t: Duration) -> Vec<(Duration, WorkerId, bool)> {
        self.deaths.iter().filter(|d| d.0 >= t).cloned().collect()
    }

    /// One line per process: status, id, state, leadership, fence, what it holds.
    #[must_use]
    pub fn dump(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let m = &x.member;
                format!(
                    "n{i} {:?} {} {:?}{}{}{} applied {:?} holds {} (record-watch term {:?}) connected={}",
                    x.status,
                    m.worker_id().map_or_else(|| "-".to_owned(), ToString::to_string),
                    m.state(),
                    if m.is_leader() { " LEADER" } else { "" },
                    if m.is_fenced() { " fenced" } else { "" },
                    if m.is_degraded() { " degraded" } else { "" },
                    m.applied_version(),
                    x.app.held.len(),
                    x.stream_term,
                    x.connected
                )
            })
            .collect()
    }

    /// The store model.
    #[must_use]
    pub fn store(&self) -> &StoreModel {
        &self.store
    }

    /// Bucket and key names.
    #[must_use]
    pub fn names(&self) -> &Names {
        &self.names
    }
}
