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

use super::holders::Holders;
use super::later;
use super::slots::Slot;
use super::{PlanReason, Planner, PlannerNotification, Timer};
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

    /// Adds every record write possible now to `batch`; returns whether some partition of the
    /// plan is withheld (its previous owner may still hold it).
    fn wave(&mut self, now: Instant, batch: &mut Batch) -> bool {
        let holders = Holders::new(
            self.slots.iter(),
            |w| self.live.is_alive(w),
            self.faults.grant_before_ack,
            self.catalog.len(),
        );
        let eligible = self.eligible(now);
        let mut workers: BTreeSet<WorkerId> = self.slots.keys().cloned().collect();
        workers.extend(self.target.workers().cloned());
        let version = self.version.next();
        let mut withheld = false;
        let mut regrant_at: Option<Instant> = None;
        let mut writes = Vec::new();
        let empty = BTreeSet::new();
        for w in workers {
            let slot = self.slots.get(&w);
            let plan = self.target.partitions_of(&w).unwrap_or(&empty);
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
                    && holders.claimed_only_by(p, &w)
                    && (!unapplied || holders.is_free_for(p, &w))
                {
                    keep.push(p);
                    next.push(p);
                } else {
                    wanted += 1;
                    if holders.is_free_for(p, &w) {
                        add.push(p);
                        next.push(p);
                    }
                }
            }
            withheld |= add.len() < wanted;
            let regrant = match self.needs_regrant(now, &w) {
                Ok(r) => r,
                Err(at) => {
                    regrant_at = Some(regrant_at.map_or(at, |x: Instant| x.min(at)));
                    false
                }
            };
            // A timed-out write that may still land is only defused by moving the key past
            // the revision it was based on: write the record even if its content is right.
            let must = slot.is_some_and(|s| s.must_rewrite || s.ghost.is_some());
            let first = slot.is_none_or(|s| s.rec.is_none())
                && plan.is_empty()
                && eligible.contains(&w)
                && self.live.is_alive(&w);
            // Records are addressed to one process of the id and its fence round (its
            // heartbeat's); a new process or round holds nothing of a record meant for
            // another, so what it keeps is given to it anew, with new fences.
            let Some(to) = self.address(&w) else {
                // Never heard of and no record: nobody to address a grant to yet.
                withheld |= !next.is_empty();
                continue;
            };
            // The store refused this very set as too large: writing it again would be refused
            // again (a retry loop). It waits for a plan that changes it; the partitions it
            // would have granted stay where they are.
            if slot
                .and_then(|s| s.refused.as_ref())
                .is_some_and(|r| r.iter().eq(next.iter().copied()))
            {
                withheld = true;
                continue;
            }
            let readdress = !next.is_empty()
                && slot
                    .and_then(|s| s.rec.as_ref())
                    .is_some_and(|r| (r.instance, r.round) != to);
            if next != rec || regrant || must || first || readdress {
                let owned = |s: Vec<&PartitionId>| -> BTreeSet<PartitionId> {
                    s.into_iter().cloned().collect()
                };
                writes.push((w, owned(keep), owned(add), regrant, readdress, to));
            }
        }
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
        for (w, keep, add, regrant, readdress, to) in writes {
            let slot = self.slots.entry(w.clone()).or_insert_with(Slot::empty);
            let old = slot.rec_ids();
            let old_fences: BTreeMap<PartitionId, Fence> = slot
                .rec
                .iter()
                .flat_map(|r| r.partitions.iter())
                .map(|o| (o.partition.id().clone(), o.fence))
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
            let removes = old.iter().any(|p| !keep.contains(p));
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
        for (w, s) in &mut self.slots {
            if !self.live.is_alive(w) {
                continue;
            }
            if let Some(a) = &mut s.awaiting
                && !a.reported
                && now >= later(a.since, timeout)
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
