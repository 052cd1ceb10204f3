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

use super::slots::{Awaiting, Ghost, Holds, Slot, ids};
use super::{PlanReason, Planner, PlannerNotification, Timer};
use crate::machine::{IoAction, KvReply, KvRequest, KvResult, OpId};
use crate::records::{AssignmentRecord, ClusterMeta, Intent, Names, OwnedPartition, Phase, Record};
use crate::store::KvError;
use crate::types::{Fence, PartitionId, Revision, Term, WorkerId};

/// What the planner knows about `meta`.
#[derive(Clone, Debug, Default)]
pub(super) struct MetaSlot {
    pub rev: Option<Revision>,
    pub known: Option<ClusterMeta>,
    pub higher: Option<Term>,
    pub needs_read: bool,
}

#[derive(Debug)]
enum Op {
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
    ops: BTreeMap<OpId, Op>,
    failed: bool,
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
        };
        let same = self.meta.known.as_ref().is_some_and(|k| {
            k.version == desired.version
                && k.lifecycle == desired.lifecycle
                && k.members == desired.members
                && k.catalog_digest == desired.catalog_digest
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
        let mut blockers: BTreeMap<PartitionId, BTreeSet<WorkerId>> = BTreeMap::new();
        let mut any_holders: BTreeSet<WorkerId> = BTreeSet::new();
        for (w, s) in &self.slots {
            for p in s.kv_ids() {
                blockers.entry(p).or_default().insert(w.clone());
            }
            if self.live.is_alive(w) {
                match &s.holds {
                    // Test-only fault: forget what a live member may still hold.
                    Holds::Set(_) if self.faults.grant_before_ack => {}
                    Holds::Any => {
                        any_holders.insert(w.clone());
                    }
                    Holds::Set(set) => {
                        for p in set {
                            blockers.entry(p.clone()).or_default().insert(w.clone());
                        }
                    }
                }
            }
        }
        let eligible = self.eligible(now);
        let mut workers: BTreeSet<WorkerId> = self.slots.keys().cloned().collect();
        workers.extend(self.target.workers().cloned());
        let version = self.version.next();
        let mut withheld = false;
        let mut writes = Vec::new();
        let empty = BTreeSet::new();
        for w in workers {
            let slot = self.slots.get(&w);
            let plan = self.target.partitions_of(&w).unwrap_or(&empty);
            let rec = slot.map(Slot::rec_ids).unwrap_or_default();
            let free = |p: &PartitionId| {
                blockers.get(p).is_none_or(|b| b.iter().all(|x| *x == w))
                    && any_holders.iter().all(|x| *x == w)
            };
            let keep: BTreeSet<PartitionId> = rec.intersection(plan).cloned().collect();
            let wanted: Vec<&PartitionId> = plan.difference(&rec).collect();
            let add: BTreeSet<PartitionId> = wanted
                .iter()
                .filter(|p| free(p))
                .map(|p| (*p).clone())
                .collect();
            withheld |= add.len() < wanted.len();
            let regrant = self.needs_regrant(&w);
            let must = slot.is_some_and(|s| s.must_rewrite);
            let first = slot.is_none_or(|s| s.rec.is_none())
                && plan.is_empty()
                && eligible.contains(&w)
                && self.live.is_alive(&w);
            let mut next = keep.clone();
            next.extend(add.iter().cloned());
            if next != rec || regrant || must || first {
                writes.push((w, keep, add, regrant));
            }
        }
        if writes.is_empty() {
            return withheld;
        }
        self.version = version;
        for (w, keep, add, regrant) in writes {
            let slot = self.slots.entry(w.clone()).or_insert_with(Slot::empty);
            let old = slot.rec_ids();
            let old_fences: BTreeMap<PartitionId, Fence> = slot
                .rec
                .iter()
                .flat_map(|r| r.partitions.iter())
                .map(|o| (o.partition.id().clone(), o.fence))
                .collect();
            let new_fence = Fence::new(self.term, version);
            let mut partitions = Vec::new();
            for p in keep.iter().chain(add.iter()) {
                let Some(part) = self.catalog.get(p) else {
                    continue;
                };
                let fence = match old_fences.get(p) {
                    Some(f) if !regrant => *f,
                    _ => new_fence,
                };
                partitions.push(OwnedPartition {
                    partition: part.clone(),
                    fence,
                });
            }
            partitions.sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
            let removes = old.iter().any(|p| !keep.contains(p));
            let phase = if removes && add.is_empty() && !regrant {
                Phase::Revoke
            } else {
                Phase::Grant
            };
            let record = AssignmentRecord {
                term: self.term,
                version,
                phase,
                partitions,
            };
            slot.holds.extend(&ids(&record));
            slot.inflight = Some(record.clone());
            if regrant {
                slot.regranted = true;
                if self.current.is_none() {
                    self.current = Some(PlanReason::Regrant);
                }
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

    /// A live member that fenced itself: give its partitions back with a new version (and new
    /// fences).
    fn needs_regrant(&self, w: &WorkerId) -> bool {
        let Some(slot) = self.slots.get(w) else {
            return false;
        };
        let Some(beat) = self
            .live
            .get(w)
            .filter(|i| !i.dead)
            .and_then(|i| i.beat.as_ref())
        else {
            return false;
        };
        // Not gated on `beat.applied >= slot.version()`: a fenced member applies only records
        // newer than a fresh read of its record, so it can never apply the stored one if it
        // had not before fencing — waiting for that would leave it fenced for ever.
        beat.intent == Intent::Fenced && !slot.regranted && !slot.rec_ids().is_empty()
    }

    fn check_stalls(&mut self, now: Instant) {
        let timeout = self.config.revoke_timeout;
        for (w, s) in &mut self.slots {
            if !self.live.is_alive(w) {
                continue;
            }
            if let Some(a) = &mut s.awaiting
                && !a.reported
                && now >= a.since + timeout
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

    pub(super) fn batch_done(&mut self, now: Instant, op: OpId, result: KvResult) {
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        let Some(entry) = batch.ops.remove(&op) else {
            return;
        };
        let ok = match entry {
            Op::Write {
                worker,
                record,
                removes,
            } => self.write_done(now, worker, record, removes, result),
            Op::Meta(meta) => match result {
                Ok(KvReply::Written(rev)) => {
                    self.meta.rev = Some(rev);
                    self.meta.known = Some(meta);
                    true
                }
                Err(e) => {
                    if unknown_or_conflict(&e) {
                        self.meta.needs_read = true;
                    }
                    false
                }
                Ok(_) => false,
            },
            Op::ReadRecord(w) => self.read_done(now, w, result),
            Op::ReadMeta => match result {
                Ok(KvReply::Entry(e)) => {
                    self.meta.needs_read = false;
                    self.take_meta_entry(e);
                    if let Some(t) = self.meta.higher.take() {
                        self.step_down(now, t);
                        return;
                    }
                    true
                }
                _ => false,
            },
        };
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        batch.failed |= !ok;
        if batch.ops.is_empty() {
            let failed = batch.failed;
            self.batch = None;
            if failed {
                self.backoff_retry(now);
            } else {
                self.backoff.reset();
            }
        }
    }

    fn write_done(
        &mut self,
        now: Instant,
        worker: WorkerId,
        record: AssignmentRecord,
        removes: bool,
        result: KvResult,
    ) -> bool {
        let alive = self.live.is_alive(&worker);
        let applied = self
            .live
            .get(&worker)
            .and_then(|i| i.beat.as_ref())
            .map(|b| b.applied);
        let Some(slot) = self.slots.get_mut(&worker) else {
            return true;
        };
        slot.inflight = None;
        match result {
            Ok(KvReply::Written(rev)) => {
                let version = record.version;
                slot.rec = Some(record);
                slot.rev = Some(rev);
                slot.ghost = None;
                slot.must_rewrite = false;
                if removes && alive && slot.awaiting.is_none() {
                    slot.awaiting = Some(Awaiting {
                        version,
                        since: now,
                        reported: false,
                    });
                } else if let Some(a) = &mut slot.awaiting {
                    a.version = version;
                }
                if let Some(applied) = applied {
                    slot.on_applied(applied);
                }
                true
            }
            Ok(_) => false,
            Err(e) => {
                if matches!(e, KvError::Timeout) {
                    let parts = ids(&record);
                    match &mut slot.ghost {
                        Some(g) if g.base == slot.rev => g.parts.extend(parts),
                        _ => {
                            slot.ghost = Some(Ghost {
                                base: slot.rev,
                                parts,
                            });
                        }
                    }
                }
                if unknown_or_conflict(&e) {
                    slot.needs_read = true;
                }
                false
            }
        }
    }

    fn read_done(&mut self, now: Instant, worker: WorkerId, result: KvResult) -> bool {
        let Ok(KvReply::Entry(entry)) = result else {
            return false;
        };
        let decoded = entry.as_ref().map(|e| self.decode_record(e));
        let applied = self
            .live
            .get(&worker)
            .and_then(|i| i.beat.as_ref())
            .map(|b| b.applied);
        let term = self.term;
        let slot = self.slots.entry(worker).or_insert_with(Slot::empty);
        slot.needs_read = false;
        let rev = entry.as_ref().map(|e| e.revision);
        if slot.ghost.as_ref().is_some_and(|g| g.base != rev) {
            slot.ghost = None;
        }
        match decoded {
            None => {
                // Deleted by someone: members treat it as "revoke everything".
                if slot.rev.is_some() {
                    slot.rev = None;
                    slot.rec = None;
                }
            }
            Some(Some(r)) if r.term > term => {
                let t = r.term;
                self.step_down(now, t);
                return true;
            }
            Some(Some(r)) if r.term == term => {
                if r.version > self.version {
                    self.version = r.version;
                }
                slot.rec = Some(r);
                slot.rev = rev;
            }
            Some(_) => {
                // An older leader's late write (members ignore it) or garbage: keep what we
                // know, overwrite it under our term.
                slot.rev = rev;
                slot.must_rewrite = true;
            }
        }
        if let Some(applied) = applied {
            slot.on_applied(applied);
        }
        true
    }
}

fn unknown_or_conflict(e: &KvError) -> bool {
    matches!(
        e,
        KvError::Timeout | KvError::RevisionMismatch { .. } | KvError::AlreadyExists
    )
}
