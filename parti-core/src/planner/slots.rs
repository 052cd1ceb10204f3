//! Per-worker bookkeeping of the `w.<id>` records: what the store holds, what is in flight, and
//! an upper bound of what the member may hold right now.
//!
//! The upper bound ([`Holds`]) is what makes revoke → acknowledge → grant safe (PROTOCOL.md §7):
//! a partition may be put in the grant of worker `w` only if no other worker may still hold it.
//! A live worker may hold everything of its acknowledged record plus everything written to it
//! since (a revoke is only effective once acknowledged); a dead worker (it has fenced itself)
//! may hold only what its record in the store still gives it — a worker coming back applies the
//! newest record, so the record of a dead worker is reduced *before* its partitions are granted
//! elsewhere (write completion, no acknowledgement).
//!
//! The bound narrows only when the member acknowledges the newest record of its key
//! (heartbeat `applied >=` its version, nothing of ours in flight). A heartbeat saying the
//! member holds nothing of its own — a new process of the same id, a member that fenced itself
//! or came back from the dead — narrows nothing: it was sent before we received it, and the
//! member may since have applied, or may still apply, any record its key held meanwhile,
//! including one we replaced after it was sent (a returning process applies the record it
//! finds at start; a stalled watch delivers the heartbeat after our revoke).

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::time::Instant;

use crate::records::AssignmentRecord;
use crate::types::{PartitionId, Revision, Version, WorkerId};

/// An upper bound of what a member may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Holds {
    /// Unknown (takeover of an unacknowledged record, an undecodable record, a record written
    /// by an older leader after the term bump): it may hold anything until it acknowledges a
    /// record of ours, or dies.
    Any,
    /// At most these.
    Set(BTreeSet<PartitionId>),
}

impl Holds {
    pub(super) fn extend(&mut self, more: &BTreeSet<PartitionId>) {
        if let Holds::Set(s) = self {
            s.extend(more.iter().cloned());
        }
    }
}

/// A write of ours whose outcome is unknown (it timed out): it may still land, but only on top
/// of `base` (compare-and-set), so it is harmless once the key has moved past `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ghost {
    pub base: Option<Revision>,
    pub parts: BTreeSet<PartitionId>,
}

/// A live worker that has not acknowledged a record taking partitions away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Awaiting {
    pub version: Version,
    pub since: Instant,
    pub reported: bool,
}

/// The planner's view of one `w.<id>` key and its member.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    /// The record in the store as far as we know (`None`: no key, or an undecodable value).
    pub rec: Option<AssignmentRecord>,
    /// Revision of the key (compare-and-set); `None` = no live value (write with `create`).
    pub rev: Option<Revision>,
    /// What the member may hold.
    pub holds: Holds,
    /// A write in flight.
    pub inflight: Option<AssignmentRecord>,
    /// A timed-out write that may still land.
    pub ghost: Option<Ghost>,
    /// The key must be re-read before the next write (conflict or unknown outcome).
    pub needs_read: bool,
    /// The record must be rewritten under our term even if its content is right (it is not one
    /// the member will act on: undecodable, or written by an older leader after the term bump).
    pub must_rewrite: bool,
    /// The member may never have applied the record in the store: a deposed leader's late
    /// write (members refuse it), an older term's unacknowledged record with two bumps or more
    /// since (one of them may have preceded it: a late write nobody can tell apart any more),
    /// or garbage. What it gives is kept only if it is free, like an addition; a record with
    /// one bump since and no late landing is one its member may hold, and is kept.
    pub unapplied: bool,
    /// An unacknowledged revocation.
    pub awaiting: Option<Awaiting>,
    /// Version and time of the last re-grant after `intent = Fenced`. A member still (or again)
    /// fenced after applying it is re-granted again, at most once per heartbeat interval (no
    /// tight loop with a member that never leaves `Fenced`); a failed re-grant write leaves the
    /// record older, so it is retried at once.
    pub regranted: Option<(Version, Instant)>,
    /// The partitions of a record the store refused as too large
    /// ([`KvError::ValueTooLarge`](crate::store::KvError::ValueTooLarge)): the same set is
    /// not written again (it would be refused again); a plan that changes this worker's set
    /// tries again.
    pub refused: Option<Vec<PartitionId>>,
}

pub(super) fn ids(rec: &AssignmentRecord) -> BTreeSet<PartitionId> {
    rec.partitions
        .iter()
        .map(|o| o.partition.id().clone())
        .collect()
}

impl Slot {
    pub(super) fn empty() -> Self {
        Slot {
            rec: None,
            rev: None,
            holds: Holds::Set(BTreeSet::new()),
            inflight: None,
            ghost: None,
            needs_read: false,
            must_rewrite: false,
            unapplied: false,
            awaiting: None,
            regranted: None,
            refused: None,
        }
    }

    /// Partitions of the record in the store.
    pub(super) fn rec_ids(&self) -> BTreeSet<PartitionId> {
        self.rec.as_ref().map(ids).unwrap_or_default()
    }

    /// Partitions of the record in the store, borrowed, sorted and without repeats (as
    /// [`Slot::rec_ids`], for a merge pass; records we write are sorted already).
    pub(super) fn sorted_rec_ids(&self) -> Vec<&PartitionId> {
        let mut v: Vec<&PartitionId> = self
            .rec
            .iter()
            .flat_map(|r| r.partitions.iter().map(|o| o.partition.id()))
            .collect();
        if !v.windows(2).all(|x| x[0] < x[1]) {
            v.sort_unstable();
            v.dedup();
        }
        v
    }

    /// Version of the record in the store.
    pub(super) fn version(&self) -> Version {
        self.rec.as_ref().map_or(Version::ZERO, |r| r.version)
    }

    /// Everything the store gives (or may soon give) this worker: the record, a write in
    /// flight, a timed-out write.
    pub(super) fn kv_ids(&self) -> BTreeSet<PartitionId> {
        self.claimed().into_iter().collect()
    }

    /// [`Slot::kv_ids`] as a sorted list without repeats (what the holder index keeps).
    pub(super) fn claimed(&self) -> Vec<PartitionId> {
        let mut v: Vec<PartitionId> = self
            .rec
            .iter()
            .chain(self.inflight.iter())
            .flat_map(|r| r.partitions.iter().map(|o| o.partition.id().clone()))
            .chain(self.ghost.iter().flat_map(|g| g.parts.iter().cloned()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether the bound may be narrowed to the record (nothing of ours can still land).
    fn settled(&self) -> bool {
        self.inflight.is_none() && self.ghost.is_none() && !self.needs_read && !self.must_rewrite
    }

    /// The member reports `applied`: if that covers the record, it holds at most the record.
    pub(super) fn on_applied(&mut self, applied: Version) {
        if self.rec.is_some() && self.settled() && applied >= self.version() {
            self.holds = Holds::Set(self.rec_ids());
            self.awaiting = None;
        }
    }

    /// The member holds nothing of its own now (it fenced itself, came back from the dead, or
    /// is a new process). That narrows nothing: the heartbeat was sent before we received it,
    /// and since then the member may have read — and may still apply — any record the store
    /// held meanwhile, also one we have replaced since (a returning process applies the record
    /// it finds at start; a backlog delivers older records first). Only an acknowledgement of
    /// the newest record ([`Slot::on_applied`]) narrows the bound. What is still unacknowledged
    /// is awaited from now on (a revived member's wait was dropped when it died).
    ///
    /// The key is also read again: such a member acts on what the store holds *now*, and a
    /// key we have not written since the takeover may have received a late write of an older
    /// leader meanwhile (members refuse it; unless we rewrite it under our term the member
    /// never gets a record it accepts).
    pub(super) fn on_fresh_member(&mut self, now: Instant) {
        self.needs_read = true;
        let kv = self.kv_ids();
        self.holds.extend(&kv);
        let beyond = match &self.holds {
            Holds::Any => true,
            Holds::Set(s) => !s.is_subset(&kv),
        };
        if beyond && self.awaiting.is_none() {
            self.awaiting = Some(Awaiting {
                version: self.version(),
                since: now,
                reported: false,
            });
        }
    }
}

/// Every worker's [`Slot`], remembering which were handed out for writing since the last
/// [`Slots::take_touched`]: the publication's holder index and wave look again only at those
/// (see [`super::holders`]). Every write goes through a method here that records it.
#[derive(Debug, Default)]
pub(super) struct Slots {
    map: BTreeMap<WorkerId, Slot>,
    touched: BTreeSet<WorkerId>,
}

impl Slots {
    pub(super) fn get(&self, w: &WorkerId) -> Option<&Slot> {
        self.map.get(w)
    }

    pub(super) fn iter(&self) -> btree_map::Iter<'_, WorkerId, Slot> {
        self.map.iter()
    }

    pub(super) fn keys(&self) -> btree_map::Keys<'_, WorkerId, Slot> {
        self.map.keys()
    }

    pub(super) fn values(&self) -> btree_map::Values<'_, WorkerId, Slot> {
        self.map.values()
    }

    /// `w`'s slot, for writing (recorded as touched).
    pub(super) fn get_mut(&mut self, w: &WorkerId) -> Option<&mut Slot> {
        let s = self.map.get_mut(w)?;
        self.touched.insert(w.clone());
        Some(s)
    }

    /// `w`'s slot, created empty if missing, for writing (recorded as touched).
    pub(super) fn entry(&mut self, w: WorkerId) -> &mut Slot {
        self.touched.insert(w.clone());
        self.map.entry(w).or_insert_with(Slot::empty)
    }

    pub(super) fn insert(&mut self, w: WorkerId, slot: Slot) {
        self.touched.insert(w.clone());
        self.map.insert(w, slot);
    }

    /// Every slot's unacknowledged revocation, for writing: the only field changed without
    /// being recorded (neither the index nor a wave reads it).
    pub(super) fn awaiting_mut(
        &mut self,
    ) -> impl Iterator<Item = (&WorkerId, &mut Option<Awaiting>)> {
        self.map.iter_mut().map(|(w, s)| (w, &mut s.awaiting))
    }

    /// The workers whose slot was handed out for writing since the last call.
    pub(super) fn take_touched(&mut self) -> BTreeSet<WorkerId> {
        std::mem::take(&mut self.touched)
    }
}
