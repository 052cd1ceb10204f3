//! Takeover (PROTOCOL.md §4, §5): a leader change is not a cold start.
//!
//! On creation the planner opens its two watches (every heartbeat; the `term` key), reads
//! `meta`, lists `w.*` and reads every record, all in flight together. When the heartbeat
//! snapshot, the `term` snapshot and every read are in, it rebuilds the desired plan from the
//! records, continues the version from the highest one found (`meta.version`, any record, any
//! acknowledgement — a `meta` written before the last records of a dead leader is not trusted
//! alone), expects every member of `meta` (and every owner in a record) to heartbeat within
//! `heartbeat_ttl + emergency_grace`, and publishes nothing if nothing changed.
//!
//! A record whose term is lower than ours but whose revision is above the `term` key's (an
//! older leader's write that landed after our term bump) is ignored by members; its worker's
//! holdings are unknown until it acknowledges a record of ours, and it is rewritten.

use std::collections::BTreeMap;
use std::time::Instant;

use super::later;
use super::slots::{Awaiting, Holds, Slot};
use super::{PlannerNotification, Stage, Timer};
use crate::assignment::Assignment;
use crate::hash::StableHashMap;
use crate::machine::{IoAction, KvReply, KvRequest, KvResult, OpId};
use crate::records::{AssignmentRecord, ClusterMeta, Intent, Lifecycle, Names, Record};
use crate::store::KvEntry;
use crate::types::{Partition, PartitionId, Revision, Term, Version, WorkerId};

/// A takeover read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Read {
    Meta,
    Keys,
    Record(WorkerId),
}

/// State of the takeover.
#[derive(Debug, Default)]
pub(super) struct Loading {
    pub hb_snapshot: bool,
    pub term_snapshot: bool,
    pub term_rev: Option<Revision>,
    pub meta_done: bool,
    pub keys_done: bool,
    pub pending: BTreeMap<OpId, Read>,
    pub failed: Vec<Read>,
    /// Records read: `(record or None if undecodable, revision)`.
    pub records: BTreeMap<WorkerId, (Option<AssignmentRecord>, Revision)>,
}

impl super::Planner {
    pub(super) fn start_takeover(&mut self) {
        self.open_watch(super::watches::Watched::Heartbeats);
        self.open_watch(super::watches::Watched::Term);
        let mut l = Loading::default();
        self.issue_read(&mut l, Read::Meta);
        self.issue_read(&mut l, Read::Keys);
        self.stage = Stage::Loading(Box::new(l));
    }

    fn issue_read(&mut self, l: &mut Loading, read: Read) {
        let op = self.ids.op();
        let bucket = self.as_bucket.clone();
        let request = match &read {
            Read::Meta => KvRequest::Entry {
                bucket,
                key: Names::META_KEY.to_owned(),
            },
            Read::Keys => KvRequest::Keys {
                bucket,
                prefix: Names::ASSIGNMENT_PREFIX.to_owned(),
            },
            Read::Record(w) => KvRequest::Entry {
                bucket,
                key: Names::assignment_key(w),
            },
        };
        l.pending.insert(op, read);
        self.actions.push_back(IoAction::Kv { op, request });
    }

    pub(super) fn loading_kv_done(&mut self, now: Instant, op: OpId, result: KvResult) {
        let Stage::Loading(mut l) = std::mem::replace(&mut self.stage, Stage::Running) else {
            return;
        };
        if let Some(read) = l.pending.remove(&op) {
            match (read, result) {
                (Read::Meta, Ok(KvReply::Entry(e))) => {
                    self.take_meta_entry(e);
                    l.meta_done = true;
                }
                (Read::Keys, Ok(KvReply::Keys(keys))) => {
                    l.keys_done = true;
                    for k in keys {
                        if let Some(w) = Names::worker_of_assignment_key(&k) {
                            self.issue_read(&mut l, Read::Record(w));
                        }
                    }
                }
                (Read::Record(w), Ok(KvReply::Entry(e))) => {
                    if let Some(entry) = e {
                        let rec = self.decode_record(&entry);
                        l.records.insert(w, (rec, entry.revision));
                    }
                }
                (read, _) => {
                    self.backoff_retry(now);
                    l.failed.push(read);
                }
            }
        }
        self.stage = Stage::Loading(l);
    }

    pub(super) fn take_meta_entry(&mut self, e: Option<KvEntry>) {
        match e {
            None => {
                self.meta.rev = None;
                self.meta.known = None;
            }
            Some(entry) => {
                self.meta.rev = Some(entry.revision);
                match ClusterMeta::decode(&entry.value) {
                    Ok(m) => {
                        if m.term > self.term {
                            self.meta.higher = Some(m.term);
                        }
                        self.meta.known = Some(m);
                    }
                    Err(err) => {
                        let b = self.as_bucket.clone();
                        self.report_undecodable(&b, &entry.key, err);
                        self.meta.known = None;
                    }
                }
            }
        }
    }

    pub(super) fn decode_record(&mut self, entry: &KvEntry) -> Option<AssignmentRecord> {
        match AssignmentRecord::decode(&entry.value) {
            Ok(mut r) => {
                self.intern(&mut r);
                Some(r)
            }
            Err(err) => {
                let b = self.as_bucket.clone();
                self.report_undecodable(&b, &entry.key, err);
                None
            }
        }
    }

    /// Replaces the decoded ids of `r` by the catalog's (same keys, shared `Arc`): a decoded
    /// id is a copy, and from here on ids are compared, hashed and kept by the hundred
    /// thousand; the catalog's compare by pointer and cost no memory of their own.
    fn intern(&self, r: &mut AssignmentRecord) {
        for o in &mut r.partitions {
            if let Some(c) = self.catalog.get(o.partition.id())
                && let Ok(p) = Partition::from_id(c.id().clone(), o.partition.weight())
            {
                o.partition = p;
            }
        }
    }

    pub(super) fn backoff_retry(&mut self, now: Instant) {
        if !self.timers.is_set(Timer::Retry) {
            self.retries += 1;
            let d = self.backoff.next_delay();
            self.timers.set(Timer::Retry, later(now, d));
        }
    }

    /// Re-issues failed reads once the backoff ran out; finishes when everything is in.
    pub(super) fn loading_step(&mut self, now: Instant) {
        if let Some(t) = self.meta.higher.take() {
            self.step_down(now, t);
            return;
        }
        let Stage::Loading(mut l) = std::mem::replace(&mut self.stage, Stage::Running) else {
            return;
        };
        if !l.failed.is_empty() && !self.timers.is_set(Timer::Retry) {
            for read in std::mem::take(&mut l.failed) {
                self.issue_read(&mut l, read);
            }
        }
        let done = l.hb_snapshot
            && l.term_snapshot
            && l.meta_done
            && l.keys_done
            && l.pending.is_empty()
            && l.failed.is_empty();
        if !done {
            self.stage = Stage::Loading(l);
            return;
        }
        if l.records
            .values()
            .any(|(r, _)| r.as_ref().is_some_and(|r| r.term > self.term))
        {
            let t = l
                .records
                .values()
                .filter_map(|(r, _)| r.as_ref().map(|r| r.term))
                .max()
                .unwrap_or(self.term);
            self.step_down(now, t);
            return;
        }
        self.backoff.reset();
        self.timers.stop(Timer::Retry);
        self.finish_takeover(now, *l);
    }

    fn finish_takeover(&mut self, now: Instant, l: Loading) {
        let meta = self.meta.known.clone();
        let mut version = meta.as_ref().map_or(Version::ZERO, |m| m.version);
        self.lifecycle = meta.as_ref().map_or(Lifecycle::ColdStart, |m| m.lifecycle);
        self.planned = meta
            .as_ref()
            .map(|m| m.members.iter().cloned().collect())
            .unwrap_or_default();
        self.planned_digest = meta.as_ref().map_or(0, |m| m.catalog_digest);
        // Who each partition goes to in the plan when records disagree (a handoff cut short,
        // a late write of an older leader): the acknowledged record first, then the newer
        // (term, version). `reconcile` never keeps a partition claimed by two records.
        // Keyed by borrowed ids, one probe per partition, sized once: at 100,000 partitions
        // this map is most of the takeover's cost.
        let total = l
            .records
            .values()
            .filter_map(|(r, _)| r.as_ref())
            .map(|r| r.partitions.len())
            .sum();
        let mut best: StableHashMap<&PartitionId, ((bool, Term, Version), &WorkerId)> =
            StableHashMap::default();
        best.reserve(total);
        for (w, (rec, _)) in &l.records {
            let Some(r) = rec else { continue };
            let acked = self
                .live
                .get(w)
                .and_then(|i| i.beat.as_ref())
                .is_some_and(|b| b.applied >= r.version);
            let score = (acked, r.term, r.version);
            for o in &r.partitions {
                best.entry(o.partition.id())
                    .and_modify(|(s, owner)| {
                        if score > *s {
                            *s = score;
                            *owner = w;
                        }
                    })
                    .or_insert((score, w));
            }
        }
        // In bulk: one sorted list per worker (the planner is new: its plan is empty).
        debug_assert!(
            self.target.is_empty(),
            "a takeover starts from an empty plan"
        );
        // Each record's partitions that it wins, worker by worker (no search by worker).
        let lists = l.records.iter().filter_map(|(w, (rec, _))| {
            let r = rec.as_ref()?;
            let won: Vec<PartitionId> = r
                .partitions
                .iter()
                .map(|o| o.partition.id())
                .filter(|p| best.get(*p).is_some_and(|(_, owner)| *owner == w))
                .cloned()
                .collect();
            (!won.is_empty()).then(|| (w.clone(), won))
        });
        if let Ok(plan) = Assignment::from_worker_lists(lists) {
            self.target.set(plan);
        }
        for (w, (rec, rev)) in l.records {
            let mut slot = Slot::empty();
            slot.rev = Some(rev);
            let zombie = rec
                .as_ref()
                .is_some_and(|r| r.term < self.term && l.term_rev.is_some_and(|t| rev > t));
            if let Some(r) = &rec {
                version = version.max(r.version);
                self.target.add_worker(w.clone());
            }
            let beat = self.live.get(&w).and_then(|i| i.beat.clone());
            let acked = match (&rec, &beat) {
                (Some(r), Some(b)) => b.applied >= r.version && !zombie,
                _ => false,
            };
            // Rewritten under our term: garbage, a late write of an older leader, and any
            // record of an older term its member has not acknowledged (it may never: members
            // refuse a record of an older term that follows a newer one).
            slot.must_rewrite = zombie
                || rec.is_none()
                || (!acked && rec.as_ref().is_some_and(|r| r.term < self.term));
            // A fenced member acknowledges the version of its record without applying it (it
            // holds nothing while fenced, a subset of any record): giving it that record is a
            // grant, and the record may be a deposed leader's late write naming a partition
            // that another member still holds (simulator seed 4611).
            let fenced = beat.as_ref().is_some_and(|b| b.intent == Intent::Fenced);
            slot.unapplied = zombie
                || rec.is_none()
                || fenced
                || (!acked && rec.as_ref().is_some_and(|r| r.term.next() < self.term));
            slot.rec = rec;
            slot.holds = if acked {
                Holds::Set(slot.rec_ids())
            } else {
                // Not acknowledged: the member may still hold its previous record, which we
                // cannot know (history 1).
                Holds::Any
            };
            if !acked {
                slot.awaiting = Some(Awaiting {
                    version: slot.version(),
                    since: now,
                    reported: false,
                });
            }
            let owns = slot.rec.as_ref().is_some_and(|r| !r.partitions.is_empty()) || !acked;
            if owns {
                self.live.expect(now, &w);
            }
            self.slots.insert(w, slot);
        }
        for (_, info) in self.live.workers() {
            if let Some(b) = &info.beat {
                version = version.max(b.applied);
            }
        }
        let planned: Vec<WorkerId> = self.planned.iter().cloned().collect();
        for w in &planned {
            self.live.expect(now, w);
        }
        for w in meta.iter().flat_map(|m| m.restarting.iter()) {
            self.live.reserve_from_meta(now, w);
        }
        // Members seen at takeover whose slot does not exist yet (no record): plain members.
        let seen: Vec<WorkerId> = self.live.workers().map(|(w, _)| w.clone()).collect();
        for w in seen {
            self.slots.entry(w);
        }
        self.version = version;
        self.notes.push_back(PlannerNotification::TakeoverComplete {
            version,
            lifecycle: self.lifecycle,
            members: planned,
        });
        // A catalog that differs from the one the plan was made for: partitions gone are
        // revoked at once, new ones covered by `classify`, weights checked for imbalance.
        let gone: Vec<_> = self
            .target
            .iter()
            .flat_map(|(_, ps)| ps)
            .filter(|p| !self.catalog.contains_key(p))
            .cloned()
            .collect();
        for p in &gone {
            self.target.remove_partition(p);
        }
        let digest = self.digest();
        if meta.is_some() && digest != self.planned_digest {
            let same_ids =
                gone.is_empty() && self.catalog.keys().all(|p| self.target.owner(p).is_some());
            if same_ids {
                self.check_imbalance(now);
            } else {
                self.planned_digest = digest;
            }
        }
        self.stage = Stage::Running;
        self.dirty = true;
        if std::mem::take(&mut self.manual_pending) {
            self.replan(now, super::PlanReason::Manual);
        }
    }
}
