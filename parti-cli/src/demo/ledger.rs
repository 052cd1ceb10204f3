//! The demo's ledger: who owns which partition, as the workers' handlers were told, and the one
//! check the demo exists to show — no partition ever has two owners at once.
//!
//! Every handler of every in-process worker reports here synchronously, under one lock, so the
//! ledger sees the application's view in the order the handlers ran. A grant of a partition that
//! another live worker still holds (it was never revoked, nor lost by a fence, nor did its owner
//! crash) is a violation. A crashed worker's handler task is aborted, but an abort takes effect at
//! the task's next await: one more callback may still run after `abort()` returned. The ledger
//! therefore knows each worker *incarnation* and ignores every report of a crashed one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use parti_core::PartitionId;
use parti_core::records::OwnedPartition;
use parti_core::types::Fence;

/// One process's life as a worker: a name (`worker-3`, kept across restarts) and a number
/// drawn once per start.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Incarnation {
    pub(crate) name: String,
    pub(crate) number: u64,
}

/// A partition granted while another worker held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) partition: PartitionId,
    pub(crate) holder: String,
    pub(crate) granted_to: String,
    pub(crate) fence: Fence,
}

#[derive(Default)]
struct State {
    owners: BTreeMap<PartitionId, (Incarnation, u64)>,
    last_owner: BTreeMap<PartitionId, String>,
    crashed: BTreeSet<u64>,
    moves: usize,
    grants: usize,
    highest_fence: Fence,
    violations: Vec<Violation>,
    last_change: Option<Instant>,
}

/// The shared ledger (one per demo).
#[derive(Default)]
pub(crate) struct Ledger {
    state: Mutex<State>,
}

/// What one worker holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holding {
    pub(crate) count: usize,
    pub(crate) weight: u64,
}

/// The ledger at one instant.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Partitions owned, by anyone.
    pub(crate) owned: usize,
    /// Per worker name.
    pub(crate) holdings: BTreeMap<String, Holding>,
    /// Who owns each partition.
    pub(crate) owners: BTreeMap<PartitionId, String>,
    /// Partitions that changed owner (between two different workers, through any gap).
    pub(crate) moves: usize,
    /// Partitions granted (a restart's re-grant counts, it is not a move).
    pub(crate) grants: usize,
    /// The highest fence granted.
    pub(crate) highest_fence: Fence,
    /// Every violation so far.
    pub(crate) violations: Vec<Violation>,
    /// Time since the last change of ownership.
    pub(crate) quiet_for: Option<Duration>,
}

impl Ledger {
    /// `who` was granted `partitions` (its `on_assigned`).
    pub(crate) fn grant(&self, who: &Incarnation, partitions: &[OwnedPartition], now: Instant) {
        let mut s = self.state.lock();
        if s.crashed.contains(&who.number) {
            return;
        }
        for p in partitions {
            let id = p.partition.id().clone();
            if let Some((holder, _)) = s.owners.get(&id)
                && holder != who
            {
                let violation = Violation {
                    partition: id.clone(),
                    holder: holder.name.clone(),
                    granted_to: who.name.clone(),
                    fence: p.fence,
                };
                s.violations.push(violation);
            }
            if s.last_owner.get(&id).is_some_and(|last| *last != who.name) {
                s.moves += 1;
            }
            s.last_owner.insert(id.clone(), who.name.clone());
            s.owners.insert(id, (who.clone(), p.partition.weight()));
            s.grants += 1;
            s.highest_fence = s.highest_fence.max(p.fence);
        }
        s.last_change = Some(now);
    }

    /// `who` gave `partitions` up (its `on_revoked`) or lost them to a fence.
    pub(crate) fn release(&self, who: &Incarnation, partitions: &[OwnedPartition], now: Instant) {
        let mut s = self.state.lock();
        if s.crashed.contains(&who.number) {
            return;
        }
        for p in partitions {
            let id = p.partition.id();
            if s.owners.get(id).is_some_and(|(holder, _)| holder == who) {
                s.owners.remove(id);
            }
        }
        s.last_change = Some(now);
    }

    /// `who` crashed: it works on nothing any more, and anything it still reports is ignored.
    pub(crate) fn crash(&self, who: &Incarnation, now: Instant) {
        let mut s = self.state.lock();
        s.crashed.insert(who.number);
        s.owners.retain(|_, (holder, _)| holder != who);
        s.last_change = Some(now);
    }

    /// Everything, at `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        let s = self.state.lock();
        let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
        for (holder, weight) in s.owners.values() {
            let h = holdings.entry(holder.name.clone()).or_default();
            h.count += 1;
            h.weight += weight;
        }
        Snapshot {
            owned: s.owners.len(),
            holdings,
            owners: s
                .owners
                .iter()
                .map(|(id, (holder, _))| (id.clone(), holder.name.clone()))
                .collect(),
            moves: s.moves,
            grants: s.grants,
            highest_fence: s.highest_fence,
            violations: s.violations.clone(),
            quiet_for: s.last_change.map(|t| now.saturating_duration_since(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use parti_core::types::{Term, Version};
    use parti_core::{Partition, PartitionId};

    use super::*;

    fn worker(name: &str, number: u64) -> Incarnation {
        Incarnation {
            name: name.to_owned(),
            number,
        }
    }

    fn parts(names: &[&str], version: u64) -> Vec<OwnedPartition> {
        names
            .iter()
            .map(|n| OwnedPartition {
                partition: Partition::new([*n], 2).expect("a valid key"),
                fence: Fence::new(Term(1), Version(version)),
            })
            .collect()
    }

    #[test]
    fn a_grant_of_a_held_partition_is_a_violation() {
        let ledger = Ledger::default();
        let now = Instant::now();
        let (a, b) = (worker("worker-0", 0), worker("worker-1", 1));
        ledger.grant(&a, &parts(&["p0", "p1"], 1), now);
        ledger.grant(&b, &parts(&["p1"], 2), now);
        let snap = ledger.snapshot(now);
        assert_eq!(snap.violations.len(), 1);
        assert_eq!(snap.violations[0].holder, "worker-0");
        assert_eq!(
            snap.violations[0].partition,
            PartitionId::single("p1").expect("a valid key")
        );
    }

    #[test]
    fn a_handover_after_a_revocation_is_a_move_not_a_violation() {
        let ledger = Ledger::default();
        let now = Instant::now();
        let (a, b) = (worker("worker-0", 0), worker("worker-1", 1));
        ledger.grant(&a, &parts(&["p0", "p1"], 1), now);
        ledger.release(&a, &parts(&["p1"], 1), now);
        ledger.grant(&b, &parts(&["p1"], 2), now);
        let snap = ledger.snapshot(now);
        assert!(snap.violations.is_empty());
        assert_eq!(snap.moves, 1);
        assert_eq!(
            snap.holdings["worker-0"],
            Holding {
                count: 1,
                weight: 2
            }
        );
        assert_eq!(snap.highest_fence, Fence::new(Term(1), Version(2)));
    }

    #[test]
    fn a_crashed_incarnation_is_ignored_and_its_restart_is_not_a_move() {
        let ledger = Ledger::default();
        let now = Instant::now();
        let (a, b) = (worker("worker-0", 0), worker("worker-1", 1));
        ledger.grant(&a, &parts(&["p0"], 1), now);
        ledger.crash(&a, now);
        // A late callback of the aborted task changes nothing.
        ledger.grant(&a, &parts(&["p1"], 1), now);
        assert_eq!(ledger.snapshot(now).owned, 0);
        ledger.grant(&b, &parts(&["p0"], 2), now);
        // worker-1 restarts (a new incarnation) and gets p0 back: not a move.
        ledger.release(&b, &parts(&["p0"], 2), now);
        ledger.grant(&worker("worker-1", 2), &parts(&["p0"], 3), now);
        let snap = ledger.snapshot(now);
        assert!(snap.violations.is_empty());
        assert_eq!(snap.moves, 1, "only worker-0 -> worker-1");
        assert_eq!(snap.owned, 1);
    }
}
