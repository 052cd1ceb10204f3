//! Results of the publication's operations: writes (success, conflict, unknown outcome,
//! failure), re-reads, `meta`.

use std::time::Instant;

use super::publish::Op;
use super::slots::{Awaiting, Ghost, ids};
use super::{Planner, PlannerNotification};
use crate::machine::{KvReply, KvResult, OpId};
use crate::records::{AssignmentRecord, Intent};
use crate::store::KvError;
use crate::types::WorkerId;

impl Planner {
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
                slot.holds.extend(&ids(&record));
                slot.rec = Some(record);
                slot.rev = Some(rev);
                slot.ghost = None;
                slot.must_rewrite = false;
                slot.unapplied = false;
                slot.refused = None;
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
            Err(e @ KvError::ValueTooLarge { .. }) => {
                // A certain refusal that the same record would meet again: not retried (see
                // `wave`), reported once per refused set.
                let partitions: Vec<_> = ids(&record).into_iter().collect();
                self.notes.push_back(PlannerNotification::RecordTooLarge {
                    worker,
                    partitions: partitions.len(),
                    error: e,
                });
                slot.refused = Some(partitions);
                true
            }
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
        let beat = self.live.get(&worker).and_then(|i| i.beat.as_ref());
        let applied = beat.map(|b| b.applied);
        // A fenced member's `applied` is a floor it acknowledged holding nothing, not a record
        // it acts on (see `finish_takeover`).
        let fenced = beat.is_some_and(|b| b.intent == Intent::Fenced);
        let term = self.term;
        // Versions only grow, across leaders too: a record of any term found in the store
        // (an older leader's late write included) is below every version we issue from now on.
        if let Some(Some(r)) = &decoded
            && r.version > self.version
        {
            self.version = r.version;
        }
        let slot = self.slots.entry(worker);
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
                // One of ours (possibly a timed-out write that landed): the member may apply it.
                slot.unapplied = false;
                slot.holds.extend(&ids(&r));
                slot.rec = Some(r);
                slot.rev = rev;
            }
            Some(Some(r)) if rev == slot.rev => {
                // Unchanged since we last knew it (a record from before our takeover). If the
                // worker's current process has not acknowledged it (a new process found it at
                // start) and more than one bump separates its term from ours, that process
                // refuses it (it cannot tell it from a deposed leader's late write, member
                // README) and would wait for ever: rewrite it under our term. With exactly one
                // bump the process applies it (a restart return stays zero movement).
                if r.term.next() < term && applied.is_none_or(|a| a < r.version) {
                    slot.must_rewrite = true;
                    slot.unapplied = true;
                } else if r.term < term && fenced {
                    slot.unapplied = true;
                }
            }
            Some(_) if rev == slot.rev => {
                // Garbage already known: nothing new.
            }
            Some(_) => {
                // An older leader's late write (members ignore it) or garbage: keep what we
                // know, overwrite it under our term.
                slot.rev = rev;
                slot.must_rewrite = true;
                slot.unapplied = true;
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
