//! Planning (PROTOCOL.md §6): classify what changed and decide the desired plan.
//!
//! | change | here |
//! |---|---|
//! | empty cluster (`meta` absent or `ColdStart`) | [`Planner::coverage`] with whoever is live at once, then a cold-start [`Window`], final plan at its end (`Settled`) |
//! | joins | a planned-scale [`Window`]; each new joiner extends it to `join + window`, never past `start + 2 × window`; not before `min_rebalance_interval` after the last replan |
//! | crash (dead, or a restart reservation ran out) | urgent [`Planner::replan`] (`Emergency`): no cooldown, cuts any window |
//! | graceful leave | urgent replan (`Leave`) |
//! | restart | the worker stays a member with its partitions pinned (excluded from the strategy) until `rejoin_window` ends |
//! | catalog | removed partitions leave the plan at once; new ones are placed by [`Planner::coverage`] (nothing moves) |
//! | weights only | a zero-length window (cooldown applies) if the imbalance exceeds `min_imbalance` |
//! | nothing | nothing |

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::catalog::Catalog;
use super::later;
use super::{PlanReason, Planner, PlannerNotification, Seek};
use crate::assignment::Assignment;
use crate::records::{Intent, Lifecycle};
use crate::strategy::{AssignInput, AssignmentStrategy, Plan, WorkerSpec};
use crate::types::{Partition, PartitionId, WorkerId};

/// Which window is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WindowKind {
    ColdStart,
    Scale,
    Weights,
}

/// A stabilisation window: a deadline extended by joins, capped.
#[derive(Clone, Debug)]
pub(super) struct Window {
    pub kind: WindowKind,
    pub deadline: Instant,
    pub cap: Instant,
    pub length: Duration,
    pub joiners: BTreeSet<WorkerId>,
}

impl Window {
    fn new(kind: WindowKind, now: Instant, length: Duration) -> Self {
        Window {
            kind,
            deadline: later(now, length),
            cap: later(now, length.saturating_mul(2)),
            length,
            joiners: BTreeSet::new(),
        }
    }

    fn extend(&mut self, now: Instant) {
        self.deadline = later(now, self.length).max(self.deadline).min(self.cap);
    }
}

impl Planner {
    /// Workers the plan is made for: live with intent active / fenced, not yet heard but named
    /// by the plan in force (`meta`), plus restarting workers inside their reservation (pinned,
    /// dead or not).
    pub(super) fn eligible(&self, now: Instant) -> Arc<BTreeSet<WorkerId>> {
        if let Some(e) = &self.eligible_memo {
            debug_assert_eq!(
                **e,
                self.compute_eligible(now),
                "the eligible memo is stale"
            );
            return Arc::clone(e);
        }
        Arc::new(self.compute_eligible(now))
    }

    fn compute_eligible(&self, now: Instant) -> BTreeSet<WorkerId> {
        self.live
            .workers()
            .filter(|(w, i)| {
                if i.is_reserved(now) {
                    return true;
                }
                if i.dead || i.reservation_expired {
                    return false;
                }
                match i.beat.as_ref().map(|b| b.intent) {
                    // Not heard yet, only expected (from `meta` or a record at takeover): it
                    // keeps its place in the plan it is part of until it is heard or declared
                    // dead, but it is never a join — a worker known only from a record may
                    // have died long ago (its heartbeat expired before this leader looked).
                    None => self.planned.contains(*w),
                    Some(Intent::Active | Intent::Fenced) => true,
                    Some(_) => false,
                }
            })
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// When the window's plan is due (its deadline, or the cooldown end if later).
    pub(super) fn window_due(&self) -> Option<Instant> {
        let w = self.window.as_ref()?;
        let cooldown_end = self
            .last_replan
            .map(|t| later(t, self.config.min_rebalance_interval));
        Some(cooldown_end.map_or(w.deadline, |c| c.max(w.deadline)))
    }

    pub(super) fn classify(&mut self, now: Instant) {
        let eligible = self.eligible(now);
        // Cold start: immediate coverage by whoever is live, then the window.
        if self.lifecycle == Lifecycle::ColdStart
            && self.window.is_none()
            && eligible.iter().any(|w| !self.live.is_reserved(w, now))
        {
            self.coverage(now, PlanReason::ColdStart);
            self.planned = (*eligible).clone();
            self.window = Some(Window::new(
                WindowKind::ColdStart,
                now,
                self.config.cold_start_window,
            ));
        }
        // Members lost: crash, restart not back in time, leave. Planned members and owners in
        // the plan that are not eligible (all three sets in worker order: merge passes).
        let mut lost: Vec<&WorkerId> = Vec::new();
        let mut in_eligible = Seek::new(eligible.iter().map(|w| (w, ())));
        lost.extend(self.planned.iter().filter(|w| in_eligible.get(w).is_none()));
        let mut in_eligible = Seek::new(eligible.iter().map(|w| (w, ())));
        lost.extend(
            self.target
                .iter()
                .filter(|(w, ps)| !ps.is_empty() && in_eligible.get(w).is_none())
                .map(|(w, _)| w),
        );
        if !lost.is_empty() {
            let crash = lost.iter().any(|w| {
                self.live
                    .get(w)
                    .is_none_or(|i| i.dead || i.reservation_expired)
            });
            drop(lost);
            let reason = if crash {
                PlanReason::Emergency
            } else {
                PlanReason::Leave
            };
            self.replan(now, reason);
            return;
        }
        // Joins.
        let joined: Vec<WorkerId> = eligible.difference(&self.planned).cloned().collect();
        if !joined.is_empty() {
            let w = self.window.get_or_insert_with(|| {
                Window::new(WindowKind::Scale, now, self.config.planned_scale_window)
            });
            for j in joined {
                if w.joiners.insert(j) {
                    w.extend(now);
                }
            }
        }
        if let Some(due) = self.window_due()
            && now >= due
        {
            let reason = match self.window.as_ref().map(|w| w.kind) {
                Some(WindowKind::ColdStart) => PlanReason::ColdStartFinal,
                Some(WindowKind::Weights) => PlanReason::Weights,
                _ => PlanReason::PlannedScale,
            };
            self.replan(now, reason);
            return;
        }
        // New partitions (or partitions nobody got yet): placed at once.
        self.coverage(now, PlanReason::Catalog);
    }

    /// Worker specs for the strategy: the eligible, non-pinned workers.
    fn specs(&self, now: Instant) -> Vec<WorkerSpec> {
        self.eligible(now)
            .iter()
            .filter_map(|w| {
                let info = self.live.get(w);
                if info.is_some_and(|i| i.is_reserved(now)) {
                    return None;
                }
                let cap = info.and_then(|i| i.beat.as_ref()).map_or(1, |b| b.capacity);
                Some(WorkerSpec::with_capacity(w.clone(), cap))
            })
            .collect()
    }

    /// Partitions pinned to reserved (restarting) workers.
    fn pinned(&self, now: Instant) -> BTreeMap<WorkerId, BTreeSet<PartitionId>> {
        self.target
            .iter()
            .filter(|(w, _)| self.live.is_reserved(w, now))
            .map(|(w, ps)| (w.clone(), ps.clone()))
            .collect()
    }

    /// The catalog without the pinned partitions, in id order: borrowed when nothing is
    /// pinned (the usual case; copying 100,000 partitions per replan is not free).
    fn unpinned_catalog<'c>(
        catalog: &'c Catalog,
        pinned: &BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    ) -> Cow<'c, [Partition]> {
        if pinned.values().all(BTreeSet::is_empty) {
            return Cow::Borrowed(catalog.as_slice());
        }
        let held: BTreeSet<&PartitionId> = pinned.values().flatten().collect();
        Cow::Owned(
            catalog
                .values()
                .filter(|p| !held.contains(p.id()))
                .cloned()
                .collect(),
        )
    }

    /// A full replan with the current eligible workers (pinned partitions stay put).
    pub(super) fn replan(&mut self, now: Instant, reason: PlanReason) {
        let pinned = self.pinned(now);
        let specs = self.specs(now);
        let parts = Self::unpinned_catalog(&self.catalog, &pinned);
        let Some(plan) = run_strategy(
            &*self.strategy,
            &self.target,
            &mut self.notes,
            &specs,
            &parts,
        ) else {
            return;
        };
        // What the plan would be built from scratch (debug builds check the update below
        // against it): the strategy's assignment plus the pinned partitions.
        #[cfg(debug_assertions)]
        let expected = {
            let mut next = if specs.is_empty() {
                Assignment::new()
            } else {
                plan.to_assignment(&AssignInput {
                    workers: &specs,
                    partitions: &parts,
                    previous: &self.target,
                })
            };
            for (w, ps) in &pinned {
                next.add_worker(w.clone());
                for p in ps {
                    if self.catalog.contains_key(p) {
                        let _ = next.insert(w.clone(), p.clone());
                    }
                }
            }
            (self.target.moved_count(&next), next)
        };
        // The plan in force is updated where the strategy changed it (a join moves a hundred
        // partitions of 100,000: building a new assignment would cost more than the strategy).
        let moved = self
            .target
            .adopt(&specs, &parts, plan.owners(), &pinned, |p| {
                self.catalog.contains_key(p)
            });
        #[cfg(debug_assertions)]
        {
            assert_eq!(
                *self.target, expected.1,
                "the updated plan differs from the built one"
            );
            assert_eq!(moved, expected.0, "moves counted differently");
        }
        self.planned = (*self.eligible(now)).clone();
        self.last_replan = Some(now);
        self.window = None;
        if self.lifecycle == Lifecycle::ColdStart {
            self.lifecycle = Lifecycle::Settled;
        }
        self.planned_digest = self.digest();
        self.current = Some(reason);
        self.notes.push_back(PlannerNotification::PlanStarted {
            reason,
            moved,
            members: self.planned.iter().cloned().collect(),
        });
    }

    /// Places every partition that has no owner in the plan, moving nothing.
    pub(super) fn coverage(&mut self, now: Instant, reason: PlanReason) {
        if self.target.covers_catalog() {
            debug_assert!(
                self.catalog.keys().all(|p| self.target.owner(p).is_some()),
                "the plan is marked as covering the catalog, but a partition has no owner"
            );
            return;
        }
        let uncovered: Vec<PartitionId> = self
            .catalog
            .keys()
            .filter(|p| self.target.owner(p).is_none())
            .cloned()
            .collect();
        if uncovered.is_empty() {
            self.target.set_covers_catalog();
            return;
        }
        let specs = self.specs(now);
        if specs.is_empty() {
            return;
        }
        let pinned = self.pinned(now);
        let parts = Self::unpinned_catalog(&self.catalog, &pinned);
        let Some(plan) = run_strategy(
            &*self.strategy,
            &self.target,
            &mut self.notes,
            &specs,
            &parts,
        ) else {
            return;
        };
        for (p, &o) in parts.iter().zip(plan.owners()) {
            if self.target.owner(p.id()).is_none() {
                let _ = self.target.insert(specs[o].id.clone(), p.id().clone());
            }
        }
        self.planned_digest = self.digest();
        if self.current.is_none() {
            self.current = Some(reason);
            self.notes.push_back(PlannerNotification::PlanStarted {
                reason,
                moved: 0,
                members: self.planned.iter().cloned().collect(),
            });
        }
    }

    /// The catalog's digest (kept with the catalog: computed once per catalog).
    pub(super) fn digest(&self) -> u64 {
        self.catalog.digest()
    }

    /// The catalog changed from `old` to `self.catalog`.
    pub(super) fn apply_catalog_change(&mut self, now: Instant, old: &Catalog) {
        let gone: Vec<PartitionId> = old
            .keys()
            .filter(|p| !self.catalog.contains_key(p))
            .cloned()
            .collect();
        let added = self.catalog.keys().any(|p| !old.contains_key(p));
        for p in &gone {
            self.target.remove_partition(p);
        }
        if !gone.is_empty() || added {
            // Placed / revoked at once by `classify` and `reconcile`.
            self.planned_digest = self.digest();
            if !gone.is_empty() && self.current.is_none() {
                self.current = Some(PlanReason::Catalog);
                self.notes.push_back(PlannerNotification::PlanStarted {
                    reason: PlanReason::Catalog,
                    moved: 0,
                    members: self.planned.iter().cloned().collect(),
                });
            }
            return;
        }
        if old != &self.catalog {
            self.check_imbalance(now);
        }
    }

    /// Weights changed: replan (as a planned change) only above `min_imbalance`.
    pub(super) fn check_imbalance(&mut self, now: Instant) {
        let mut load: BTreeMap<&WorkerId, f64> = BTreeMap::new();
        let mut total_cap = 0.0;
        let mut total = 0.0;
        for (w, ps) in self.target.iter() {
            let cap = f64::from(
                self.live
                    .get(w)
                    .and_then(|i| i.beat.as_ref())
                    .map_or(1, |b| b.capacity),
            );
            let l: f64 = ps
                .iter()
                .filter_map(|p| self.catalog.get(p))
                .map(|p| p.weight() as f64)
                .sum();
            total += l;
            total_cap += cap;
            load.insert(w, l / cap);
        }
        if total_cap == 0.0 || total == 0.0 {
            return;
        }
        let mean = total / total_cap;
        let max = load.values().copied().fold(0.0, f64::max);
        // Below the threshold nothing happens, not even a `meta` write: the plan stands.
        if max / mean - 1.0 > self.config.min_imbalance && self.window.is_none() {
            self.window = Some(Window::new(WindowKind::Weights, now, Duration::ZERO));
        }
    }
}

/// The strategy's plan for `workers` over `partitions` (the previous plan given), its input and
/// output validated; `None` after a failure, reported in `notes`. Without workers: an empty
/// plan (nothing placed). A function of the planner's parts, not a method, so that
/// `partitions` may borrow the planner's catalog.
fn run_strategy(
    strategy: &dyn AssignmentStrategy,
    previous: &Assignment,
    notes: &mut VecDeque<PlannerNotification>,
    workers: &[WorkerSpec],
    partitions: &[Partition],
) -> Option<Plan> {
    if workers.is_empty() {
        return Some(Plan::from_owners(Vec::new()));
    }
    let input = AssignInput {
        workers,
        partitions,
        previous,
    };
    let result = input
        .validate()
        .and_then(|()| strategy.assign(&input))
        .and_then(|plan| plan.validate(&input).map(|()| plan));
    match result {
        Ok(plan) => Some(plan),
        Err(error) => {
            notes.push_back(PlannerNotification::StrategyFailed { error });
            None
        }
    }
}
