//! Publication (PROTOCOL.md §7): revoke → acknowledge → grant, by compare-and-set, pipelined.
//!
//! [`Planner::reconcile`] compares the desired plan with the records and writes one **wave**:
//! every record that can change now, all in flight together, sharing one new version. For each
//! worker the new record is `(record ∩ plan) ∪ {partitions of the plan nobody else may still
//! hold}` (see [`super::slots`]). So the first wave revokes from live losers and grants what is
//! free; moved partitions follow in a later wave, once their old owner acknowledged (heartbeat
//! `applied >=` the revoke's version) or died. When nothing is withheld any more, `meta` is
//! written, then the plan counts as published.
//!
//! Only one batch (wave, `meta` write or re-reads) is in flight at a time. A failed write is
//! retried with [`Backoff`](crate::machine::Backoff) — a conflict or a timeout first re-reads
//! the key (a timeout is an unknown outcome); a record of a higher term makes the planner step
//! down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::Seek;
use super::holders::HolderIndex;
use super::later;
use super::slots::Slot;
use super::target::Changed;
use super::{PlanReason, Planner, PlannerNotification, Timer};
use crate::hash::{StableHashMap, StableHashSet};
use crate::machine::{IoAction, KvRequest, OpId};
use crate::records::{AssignmentRecord, ClusterMeta, Intent, Names, OwnedPartition, Phase, Record};
use crate::types::{Fence, InstanceId, PartitionId, Revision, Term, WorkerId};

/// What the planner knows about `meta`.
#[derive(Clone, Debug, Default)]
pub(super) struct MetaSlot {
    pub rev: Option<Revision>,
    pub known: Option<ClusterMeta>,
    pub higher: Option<Term>,
    pub needs_read: bool,
}

#[derive(Debug)]
pub(super) enum Op {
    Write {
        worker: WorkerId,
        record: AssignmentRecord,
        removes: bool,
    },
    Meta(ClusterMeta),
    ReadRecord(WorkerId),
    ReadMeta,
}

/// One worker's record write, decided by [`Planner::evaluate`].
#[derive(Debug, PartialEq, Eq)]
struct Write {
    keep: BTreeSet<PartitionId>,
    add: BTreeSet<PartitionId>,
    regrant: bool,
    readdress: bool,
    to: (InstanceId, u32),
}

/// What a wave decided for one worker.
#[derive(Debug)]
struct Eval {
    write: Option<Write>,
    /// Part of its plan is withheld (a previous owner may still hold it).
    withheld: bool,
    /// It stays fenced and its rate-limited re-grant is due then.
    regrant_at: Option<Instant>,
}

/// What a worker's outcome in a wave depends on besides its slot, its plan and the index
/// entries of its partitions (see [`Planner::wave`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Context {
    alive: bool,
    eligible: bool,
    address: Option<(InstanceId, u32)>,
}

/// Per worker, in worker order, the context of its last look and whether it withheld
/// something then.
pub(super) type WaveMemo = Vec<(WorkerId, (Context, bool))>;

/// The operations in flight.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) ops: BTreeMap<OpId, Op>,
    pub(super) failed: bool,
}

impl Planner {
    pub(super) fn reconcile(&mut self, now: Instant) {
        self.check_stalls(now);
        if self.batch.is_some() || self.timers.is_set(Timer::Retry) {
            return;
        }
        let mut batch = Batch::default();
        // 1. Re-reads after conflicts and unknown outcomes.
        let reads: Vec<WorkerId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.needs_read)
            .map(|(w, _)| w.clone())
            .collect();
        for w in reads {
            let request = KvRequest::Entry {
                bucket: self.as_bucket.clone(),
                key: Names::assignment_key(&w),
            };
            self.push_op(&mut batch, Op::ReadRecord(w), request);
        }
        if self.meta.needs_read {
            let request = KvRequest::Entry {
                bucket: self.as_bucket.clone(),
                key: Names::META_KEY.to_owned(),
            };
            self.push_op(&mut batch, Op::ReadMeta, request);
        }
        if !batch.ops.is_empty() {
            self.batch = Some(batch);
            return;
        }
        // 2. A wave of record writes.
        let withheld = self.wave(now, &mut batch);
        if !batch.ops.is_empty() {
            self.batch = Some(batch);
            return;
        }
        // 3. `meta`, once the plan is out (or a handoff is stuck on a silent worker).
        let stalled = self
            .slots
            .values()
            .any(|s| s.awaiting.as_ref().is_some_and(|a| a.reported));
        if withheld && !stalled {
            return;
        }
        let desired = ClusterMeta {
            term: self.term,
            version: self.version,
            lifecycle: self.lifecycle,
            members: self.planned.iter().cloned().collect(),
            catalog_digest: self.planned_digest,
            restarting: self.live.reserved_workers(now),
        };
        let same = self.meta.known.as_ref().is_some_and(|k| {
            k.version == desired.version
                && k.lifecycle == desired.lifecycle
                && k.members == desired.members
                && k.catalog_digest == desired.catalog_digest
                && k.restarting == desired.restarting
        });
        if !same {
            let key = Names::META_KEY.to_owned();
            let bucket = self.as_bucket.clone();
            let value = desired.encode();
            let request = match self.meta.rev {
                Some(expected) => KvRequest::Update {
                    bucket,
                    key,
                    value,
                    expected,
                },
                None => KvRequest::Create { bucket, key, value },
            };
            self.push_op(&mut batch, Op::Meta(desired), request);
            self.batch = Some(batch);
            return;
        }
        if !withheld && let Some(reason) = self.current.take() {
            self.notes.push_back(PlannerNotification::Published {
                reason,
                version: self.version,
            });
        }
    }

    fn push_op(&mut self, batch: &mut Batch, op: Op, request: KvRequest) {
        let id = self.ids.op();
        batch.ops.insert(id, op);
        self.actions.push_back(IoAction::Kv { op: id, request });
    }

    /// Brings the holder index up to date with every slot touched and every liveness change
    /// since the last wave; returns the workers whose wave outcome may have changed.
    fn refresh_holders(&mut self) -> Changed {
        let mut dirty = self.target.take_changed();
        let mut refresh = self.slots.take_touched();
        refresh.extend(self.holders.liveness_changed(|w| self.live.is_alive(w)));
        let mut changed = Vec::new();
        let (nobody_before, any_before) = self.holders.anyone();
        let mut any_changed = false;
        for w in &refresh {
            let alive = self.live.is_alive(w);
            any_changed |= self
                .holders
                .refresh(w, self.slots.get(w), alive, &mut changed);
            dirty.workers.insert(w.clone());
        }
        // Who may hold anything decides `is_free_for` only through "nobody, or only `w`": it
        // changes for everyone when that set turns empty or non-empty, else only for its
        // members (before and after).
        if any_changed {
            let (nobody_after, any_after) = self.holders.anyone();
            if nobody_before != nobody_after {
                dirty.all = true;
            } else {
                dirty
                    .workers
                    .extend(any_before.into_iter().chain(any_after));
            }
        }
        // A partition whose holders changed may have become free (or stopped being) for the
        // worker the plan gives it to. When a quarter of the catalog changed (a takeover, a
        // plan's first wave) every worker is looked at: as cheap as finding the owners.
        if changed.len().saturating_mul(4) >= self.catalog.len() {
            dirty.all = true;
        }
        if !dirty.all {
            let owners: StableHashSet<&WorkerId> = changed
                .iter()
                .filter_map(|p| self.target.owner(p))
                .collect();
            dirty.workers.extend(owners.into_iter().cloned());
        }
        dirty
    }

    /// Adds every record write possible now to `batch`; returns whether some partition of the
    /// plan is withheld (its previous owner may still hold it).
    ///
    /// Only workers whose inputs changed since the last wave are looked at again (their slot,
    /// their plan, the holders of their partitions, their liveness or address, or a member
    /// that stays fenced, whose re-grant is due by time); the others' outcome is remembered.
    fn wave(&mut self, now: Instant, batch: &mut Batch) -> bool {
        let dirty = self.refresh_holders();
        let eligible = self.eligible(now);
        // Both in worker order: concatenated, the sort is a merge of two runs.
        let mut workers: Vec<WorkerId> = self
            .slots
            .keys()
            .chain(self.target.workers())
            .cloned()
            .collect();
        workers.sort();
        workers.dedup();
        let version = self.version.next();
        let mut withheld = false;
        let mut regrant_at: Option<Instant> = None;
        let mut writes: BTreeMap<WorkerId, Write> = BTreeMap::new();
        // `workers`, `eligible`, the dirty set and the memo are all in worker order: one merge
        // pass looks each worker up in the others (no O(log n) search per worker).
        let memo = std::mem::take(&mut self.memo);
        let mut last = Seek::new(memo.iter().map(|(w, v)| (w, v)));
        let mut in_eligible = Seek::new(eligible.iter().map(|w| (w, ())));
        let mut in_dirty = Seek::new(dirty.workers.iter().map(|w| (w, ())));
        let mut next_memo = Vec::with_capacity(workers.len());
        for w in &workers {
            let context = Context {
                alive: self.live.is_alive(w),
                eligible: in_eligible.get(w).is_some(),
                address: self.address(w),
            };
            let before = last.get(w);
            let again = dirty.all
                || in_dirty.get(w).is_some()
                || self.stays_fenced(w)
                || before.is_none_or(|(c, _)| *c != context);
            let held = if again {
                let e = self.evaluate(now, w, &self.holders, &eligible);
                if let Some(at) = e.regrant_at {
                    regrant_at = Some(regrant_at.map_or(at, |x: Instant| x.min(at)));
                }
                if let Some(write) = e.write {
                    writes.insert(w.clone(), write);
                }
                e.withheld
            } else {
                before.is_some_and(|(_, h)| *h)
            };
            next_memo.push((w.clone(), (context, held)));
            withheld |= held;
        }
        self.memo = next_memo;
        #[cfg(debug_assertions)]
        self.check_wave(now, &workers, &eligible, &writes, withheld, regrant_at);
        // A member that stays fenced is re-granted again at the end of the rate limit, even
        // if its heartbeats carry nothing new by then.
        match regrant_at {
            Some(t) => self.timers.set(Timer::Regrant, t),
            None => self.timers.stop(Timer::Regrant),
        }
        if writes.is_empty() {
            return withheld;
        }
        self.version = version;
        for (
            w,
            Write {
                keep,
                add,
                regrant,
                readdress,
                to,
            },
        ) in writes
        {
            let slot = self.slots.entry(w.clone());
            let old_fences: StableHashMap<&PartitionId, Fence> = slot
                .rec
                .iter()
                .flat_map(|r| r.partitions.iter())
                .map(|o| (o.partition.id(), o.fence))
                .collect();
            let new_fence = Fence::new(self.term, version);
            // A fence is kept only from a record the member can have accepted. One we must
            // rewrite (an older term's record it has not acknowledged, a deposed leader's late
            // write) may never have been applied: what it gives is granted anew, with a fence
            // above the previous owner's.
            let refence = regrant || readdress || slot.must_rewrite;
            let mut partitions = Vec::new();
            for p in keep.iter().chain(add.iter()) {
                let Some(part) = self.catalog.get(p) else {
                    continue;
                };
                let fence = match old_fences.get(p) {
                    Some(f) if !refence => *f,
                    _ => new_fence,
                };
                partitions.push(OwnedPartition {
                    partition: part.clone(),
                    fence,
                });
            }
            partitions.sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
            let removes = old_fences.keys().any(|p| !keep.contains(*p));
            let phase = if removes && add.is_empty() && !regrant && !readdress {
                Phase::Revoke
            } else {
                Phase::Grant
            };
            let record = AssignmentRecord {
                term: self.term,
                version,
                phase,
                instance: to.0,
                round: to.1,
                partitions,
            };
            // The member can only hold what lands: until then the write counts through
            // `inflight` (and, after a timeout, `ghost`); `holds` grows on success.
            slot.inflight = Some(record.clone());
            if regrant {
                slot.regranted = Some((version, now));
                if self.current.is_none() {
                    self.current = Some(PlanReason::Regrant);
                }
            }
            if readdress && self.current.is_none() {
                self.current = Some(PlanReason::Rejoin);
            }
            let key = Names::assignment_key(&w);
            let bucket = self.as_bucket.clone();
            let value = record.encode();
            let request = match slot.rev {
                Some(expected) => KvRequest::Update {
                    bucket,
                    key,
                    value,
                    expected,
                },
                None => KvRequest::Create { bucket, key, value },
            };
            self.push_op(
                batch,
                Op::Write {
                    worker: w,
                    record,
                    removes,
                },
                request,
            );
        }
        withheld
    }

    /// What this wave writes for `w`, and whether it withholds part of `w`'s plan. Reads the
    /// slot, the plan, `holders`, liveness and the address; changes nothing.
    fn evaluate(
        &self,
        now: Instant,
        w: &WorkerId,
        holders: &HolderIndex,
        eligible: &BTreeSet<WorkerId>,
    ) -> Eval {
        let empty = BTreeSet::new();
        let slot = self.slots.get(w);
        let plan = self.target.partitions_of(w).unwrap_or(&empty);
        let rec: Vec<&PartitionId> = slot.map(Slot::sorted_rec_ids).unwrap_or_default();
        // A partition the store gives to two workers (only ever inherited from a messy
        // takeover) is kept by neither: it is taken away and granted again once free.
        // `keep` = rec ∩ plan claimed by `w` alone; `add` = the rest of the plan that is
        // free; `next` = both, in plan order (one merge pass over plan and rec, sorted).
        //
        // Keeping grants nothing only if the member can have applied its record. One it may
        // never have applied (`Slot::unapplied`: a deposed leader's late write, an older
        // term's unacknowledged record with two bumps or more since) may give partitions
        // someone else holds — e.g. a member cut off before it acknowledged the revoke
        // another leader wrote — so what it gives is kept only if it is free, like an
        // addition. (Planner property, 60,000 cases: a late write of term 1 landed between
        // the bumps to 2 and 3 on a key no leader rewrote; leader 4 kept its partition for
        // worker-0 while cut-off worker-1 still held it.)
        let unapplied = slot.is_some_and(|s| s.unapplied) && !self.faults.keep_unapplied;
        let mut keep: Vec<&PartitionId> = Vec::new();
        let mut add: Vec<&PartitionId> = Vec::new();
        let mut next: Vec<&PartitionId> = Vec::new();
        let mut wanted = 0usize;
        let mut in_rec = rec.iter().peekable();
        for p in plan {
            while in_rec.next_if(|x| **x < p).is_some() {}
            if in_rec.next_if(|x| **x == p).is_some()
                && holders.claimed_only_by(p, w)
                && (!unapplied || holders.is_free_for(p, w))
            {
                keep.push(p);
                next.push(p);
            } else {
                wanted += 1;
                if holders.is_free_for(p, w) {
                    add.push(p);
                    next.push(p);
                }
            }
        }
        let mut eval = Eval {
            write: None,
            withheld: add.len() < wanted,
            regrant_at: None,
        };
        let regrant = match self.needs_regrant(now, w) {
            Ok(r) => r,
            Err(at) => {
                eval.regrant_at = Some(at);
                false
            }
        };
        // A timed-out write that may still land is only defused by moving the key past
        // the revision it was based on: write the record even if its content is right.
        let must = slot.is_some_and(|s| s.must_rewrite || s.ghost.is_some());
        let first = slot.is_none_or(|s| s.rec.is_none())
            && plan.is_empty()
            && eligible.contains(w)
            && self.live.is_alive(w);
        // Records are addressed to one process of the id and its fence round (its
        // heartbeat's); a new process or round holds nothing of a record meant for
        // another, so what it keeps is given to it anew, with new fences.
        let Some(to) = self.address(w) else {
            // Never heard of and no record: nobody to address a grant to yet.
            eval.withheld |= !next.is_empty();
            return eval;
        };
        // The store refused this very set as too large: writing it again would be refused
        // again (a retry loop). It waits for a plan that changes it; the partitions it
        // would have granted stay where they are.
        if slot
            .and_then(|s| s.refused.as_ref())
            .is_some_and(|r| r.iter().eq(next.iter().copied()))
        {
            eval.withheld = true;
            return eval;
        }
        let readdress = !next.is_empty()
            && slot
                .and_then(|s| s.rec.as_ref())
                .is_some_and(|r| (r.instance, r.round) != to);
        if next != rec || regrant || must || first || readdress {
            let owned = |s: Vec<&PartitionId>| -> BTreeSet<PartitionId> {
                s.into_iter().cloned().collect()
            };
            eval.write = Some(Write {
                keep: owned(keep),
                add: owned(add),
                regrant,
                readdress,
                to,
            });
        }
        eval
    }

    /// A live member that says `Fenced`: its re-grant may fall due by time alone, so every
    /// wave looks at it again.
    fn stays_fenced(&self, w: &WorkerId) -> bool {
        self.live
            .get(w)
            .filter(|i| !i.dead)
            .and_then(|i| i.beat.as_ref())
            .is_some_and(|b| b.intent == Intent::Fenced)
    }

    /// Debug builds: the incremental index equals one built from scratch, and looking at every
    /// worker again decides exactly what the incremental wave decided.
    #[cfg(debug_assertions)]
    fn check_wave(
        &self,
        now: Instant,
        workers: &[WorkerId],
        eligible: &BTreeSet<WorkerId>,
        writes: &BTreeMap<WorkerId, Write>,
        withheld: bool,
        regrant_at: Option<Instant>,
    ) {
        let fresh = HolderIndex::build(
            self.slots.iter(),
            |w| self.live.is_alive(w),
            self.faults.grant_before_ack,
        );
        assert!(
            self.holders.same_as(&fresh),
            "the incremental holder index differs from one built from scratch"
        );
        let mut all_withheld = false;
        let mut all_regrant: Option<Instant> = None;
        for w in workers {
            let e = self.evaluate(now, w, &fresh, eligible);
            all_withheld |= e.withheld;
            if let Some(at) = e.regrant_at {
                all_regrant = Some(all_regrant.map_or(at, |x: Instant| x.min(at)));
            }
            assert_eq!(
                e.write.as_ref(),
                writes.get(w),
                "wave outcome of {w} differs"
            );
        }
        assert_eq!(all_withheld, withheld, "withheld differs");
        assert_eq!(
            self.live.live_count(),
            self.live.workers().filter(|(_, i)| !i.dead).count(),
            "live workers counted differently"
        );
        assert_eq!(all_regrant, regrant_at, "re-grant time differs");
    }

    /// The process and fence round a record for `w` is addressed to: those of the heartbeat
    /// we saw last, else those its record is addressed to now.
    fn address(&self, w: &WorkerId) -> Option<(InstanceId, u32)> {
        self.live
            .get(w)
            .and_then(|i| i.beat.as_ref())
            .map(|b| (b.instance, b.round))
            .or_else(|| {
                self.slots
                    .get(w)
                    .and_then(|s| s.rec.as_ref())
                    .map(|r| (r.instance, r.round))
            })
    }

    /// A live member that fenced itself and has applied its newest record: give its partitions
    /// back with a new version (and new fences).
    /// Whether `w` must be re-granted now (`Ok(true)`), not at all (`Ok(false)`), or at the
    /// returned instant (a re-grant rate-limited to one per `heartbeat_interval`).
    fn needs_regrant(&self, now: Instant, w: &WorkerId) -> Result<bool, Instant> {
        let Some(slot) = self.slots.get(w) else {
            return Ok(false);
        };
        let Some(beat) = self
            .live
            .get(w)
            .filter(|i| !i.dead)
            .and_then(|i| i.beat.as_ref())
        else {
            return Ok(false);
        };
        if beat.intent != Intent::Fenced
            || beat.applied < slot.version()
            || slot.rec_ids().is_empty()
        {
            return Ok(false);
        }
        match slot.regranted {
            Some((v, at)) if v == slot.version() => {
                let next = later(at, self.config.heartbeat_interval);
                if now >= next { Ok(true) } else { Err(next) }
            }
            _ => Ok(true),
        }
    }

    fn check_stalls(&mut self, now: Instant) {
        let timeout = self.config.revoke_timeout;
        for (w, s) in self.slots.awaiting_mut() {
            if let Some(a) = s
                && !a.reported
                && now >= later(a.since, timeout)
                && self.live.is_alive(w)
            {
                a.reported = true;
                self.notes.push_back(PlannerNotification::HandoffStalled {
                    worker: w.clone(),
                    version: a.version,
                    waited: now.saturating_duration_since(a.since),
                });
            }
        }
    }
}
