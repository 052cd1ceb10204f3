//! Applying assignment records and delivering them to the application (PROTOCOL.md §4, §8).
//!
//! One ordered watch follows `term` and `w.<id>` in the assignments bucket. A record is accepted
//! only if its term equals the highest term seen before it in that stream (a deposed leader's
//! late write is ignored) and its version is higher than the last accepted. The accepted record
//! becomes the *target*; the pipeline delivers `told → target` as one [`Action::Deliver`]
//! (revoked, then assigned) at a time. Records arriving meanwhile only move the target, so they
//! are coalesced to the newest, diffed against what the application was actually told. When a
//! delivery finishes (or `handler_timeout` passes) its version counts as applied and the
//! acknowledgement heartbeat goes out. A deleted or undecodable record means "revoke
//! everything".

use std::collections::BTreeMap;
use std::time::Instant;

use super::target::Target;
use super::{Action, DeliveryId, Member, Notification, Phase, ReadPurpose, Timer};
use crate::machine::later;
use crate::machine::{IoAction, KvReply, KvResult, WatchId};
use crate::records::{AssignmentRecord, Intent, Names, OwnedPartition, TermCounter};
use crate::store::{KvError, KvOperation, WatchEvent, WatchKeys};
use crate::types::{PartitionId, Term, Version, WorkerId};

/// A fence in force: everything was revoked locally; records are applied again only when newer
/// than `floor`, a fresh read of our record made after a `Fenced` heartbeat was stored.
#[derive(Clone, Debug, Default)]
pub(super) struct FenceState {
    floor: Option<Version>,
    read_pending: bool,
    /// Which fence round this is; a read answers only its own round.
    round: u64,
    /// The newest acceptable record seen before `floor` was known.
    held: Option<AssignmentRecord>,
}

#[derive(Clone, Debug)]
pub(super) struct InFlight {
    id: DeliveryId,
    version: Option<Version>,
    /// What it revokes: the application may still be working on these until it returns.
    revoking: Vec<OwnedPartition>,
}

/// The apply side of a member.
#[derive(Clone, Debug, Default)]
pub(super) struct Apply {
    watch: Option<WatchId>,
    key: String,
    /// The id `accepted` / `applied` refer to.
    owner: Option<WorkerId>,
    /// Highest term seen in the stream.
    stream_term: Option<Term>,
    /// Version of the newest accepted record.
    accepted: Version,
    /// Version of the newest record fully delivered and acknowledged.
    applied: Version,
    /// What the application should own.
    target: Target,
    /// The version `target` comes from, until it is delivered.
    target_version: Option<Version>,
    /// What the application was told (including a delivery still running).
    told: BTreeMap<PartitionId, OwnedPartition>,
    in_flight: Option<InFlight>,
    next_delivery: u64,
    fence: Option<FenceState>,
    /// Fences so far (each starts a new round number).
    fence_rounds: u64,
    in_snapshot: bool,
    seen_in_snapshot: bool,
    /// A record that came before the newest `term` in a snapshot (see `on_snapshot_candidate`).
    snapshot_candidate: Option<AssignmentRecord>,
    /// The newest acceptable record that arrived while the claim was unconfirmed.
    suspect_held: Option<AssignmentRecord>,
    /// No record is accepted any more (leave timed out, restart).
    closed: bool,
    /// Records refused (stale version or wrong term), for tests and metrics.
    refused: u64,
}

impl Apply {
    pub(super) fn new() -> Self {
        Apply::default()
    }

    /// A snapshot starts again (a resync, or a new watch after one ended): what it shows is
    /// judged afresh; the highest term seen stays known (terms only grow).
    pub(super) fn resync(&mut self) {
        self.snapshot_candidate = None;
        self.in_snapshot = true;
        self.seen_in_snapshot = false;
    }

    /// The key of our record (`w.<id>`).
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    // ----- what the other parts of the member read -----

    /// The version of the newest record fully delivered and acknowledged.
    pub(super) fn applied(&self) -> Version {
        self.applied
    }

    /// The highest term seen in the stream.
    pub(super) fn stream_term(&self) -> Option<Term> {
        self.stream_term
    }

    /// What the application was told it owns (a delivery still running included).
    pub(super) fn told(&self) -> Vec<OwnedPartition> {
        self.told.values().cloned().collect()
    }

    /// Fences so far.
    pub(super) fn fence_rounds(&self) -> u64 {
        self.fence_rounds
    }

    /// A fence is in force.
    pub(super) fn is_fenced(&self) -> bool {
        self.fence.is_some()
    }

    /// The assignment watch, while open.
    pub(super) fn watch(&self) -> Option<WatchId> {
        self.watch
    }

    /// No record is accepted any more.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// A target not delivered yet.
    pub(super) fn target_pending(&self) -> bool {
        self.target_version.is_some()
    }

    /// Nothing is owned, delivered or to be delivered.
    pub(super) fn nothing_owned(&self) -> bool {
        self.in_flight.is_none() && self.told.is_empty() && self.target.is_empty()
    }

    /// What a running revocation is still releasing.
    pub(super) fn revoking(&self) -> &[OwnedPartition] {
        self.in_flight.as_ref().map_or(&[], |f| &f.revoking)
    }

    // ----- what the other parts of the member ask of it -----

    /// Takes what a running revocation is still releasing: it is told lost now, and a later
    /// fence does not tell it again.
    pub(super) fn take_revoking(&mut self) -> Vec<OwnedPartition> {
        self.in_flight
            .as_mut()
            .map(|f| std::mem::take(&mut f.revoking))
            .unwrap_or_default()
    }

    /// A fence begins: everything revoked locally, a new round (see
    /// [`Apply::new_fence_round`]).
    pub(super) fn begin_fence(&mut self) {
        self.fence = Some(FenceState::default());
        self.new_fence_round();
        self.target.clear();
        self.target_version = None;
    }

    /// Starts a new round of the fence in force: no floor, nothing held, a fresh read after the
    /// next stored heartbeat; answers of earlier rounds are ignored. The round counter moves
    /// also without a fence (a new identity).
    pub(super) fn new_fence_round(&mut self) {
        let round = self.fence_rounds;
        self.fence_rounds += 1;
        if let Some(f) = self.fence.as_mut() {
            *f = FenceState {
                round,
                ..FenceState::default()
            };
        }
    }

    /// A `Fenced` heartbeat was stored: if this round has no floor and no read out yet, the
    /// read is now pending and its round returned (the caller issues it).
    pub(super) fn start_floor_read(&mut self) -> Option<u64> {
        let f = self.fence.as_mut()?;
        if f.floor.is_some() || f.read_pending {
            return None;
        }
        f.read_pending = true;
        Some(f.round)
    }

    /// Revokes everything and accepts no further record (nor one that waited for the claim's
    /// confirmation).
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.suspect_held = None;
        self.target.clear();
        self.target_version = None;
    }

    /// A record that waited for the claim's confirmation is dropped (the claim was lost).
    pub(super) fn forget_suspect(&mut self) {
        self.suspect_held = None;
    }

    /// Whether `watch` is the assignment watch; if so it is closed (it ended).
    pub(super) fn watch_ended(&mut self, watch: WatchId) -> bool {
        self.watch.take_if(|w| *w == watch).is_some()
    }

    /// The assignment watch opened again: its snapshot is a resync.
    pub(super) fn reopened(&mut self, watch: WatchId) {
        self.resync();
        self.watch = Some(watch);
    }
}

impl Member {
    pub(super) fn start_assignment_watch(&mut self, id: &WorkerId) {
        if self.apply.owner.as_ref() != Some(id) {
            self.apply.accepted = Version::ZERO;
            self.apply.applied = Version::ZERO;
            self.apply.owner = Some(id.clone());
        }
        self.apply.stream_term = None;
        self.apply.key = Names::assignment_key(id);
        self.apply.in_snapshot = true;
        self.apply.seen_in_snapshot = false;
        let watch = self.ids.watch();
        self.apply.watch = Some(watch);
        self.actions.push_back(Action::Io(IoAction::Watch {
            watch,
            bucket: self.names.assignments_bucket(),
            keys: WatchKeys::Keys(vec![Names::TERM_KEY.to_owned(), self.apply.key.clone()]),
        }));
    }

    pub(super) fn stop_assignment_watch(&mut self) {
        self.timers.stop(Timer::RewatchAssignments);
        if let Some(watch) = self.apply.watch.take() {
            self.actions
                .push_back(Action::Io(IoAction::Unwatch { watch }));
        }
    }

    pub(super) fn on_assignment_watch(&mut self, now: Instant, event: Result<WatchEvent, KvError>) {
        match event {
            Err(_) => self.on_kv_error(now),
            Ok(WatchEvent::SnapshotComplete) => {
                self.watch_settled();
                if self.apply.in_snapshot {
                    self.apply.in_snapshot = false;
                    self.on_snapshot_candidate();
                    if !self.apply.seen_in_snapshot {
                        self.on_record_absent();
                    }
                }
            }
            Ok(WatchEvent::Resync) => self.apply.resync(),
            Ok(WatchEvent::Change(change)) => {
                let bucket = self.names.assignments_bucket();
                if change.key == Names::TERM_KEY {
                    if let KvOperation::Put(bytes) = &change.op
                        && let Some(t) = self.decode::<TermCounter>(&bucket, &change.key, bytes)
                        && self.apply.stream_term.is_none_or(|s| s < t.term)
                    {
                        self.apply.stream_term = Some(t.term);
                    }
                } else if change.key == self.apply.key {
                    self.apply.seen_in_snapshot = true;
                    match &change.op {
                        KvOperation::Put(bytes) => {
                            match self.decode::<AssignmentRecord>(&bucket, &change.key, bytes) {
                                Some(record) => self.on_record(record),
                                None => self.on_record_absent(),
                            }
                        }
                        KvOperation::Delete | KvOperation::Purge => self.on_record_absent(),
                    }
                }
            }
        }
    }

    fn on_record(&mut self, record: AssignmentRecord) {
        if self.apply.closed {
            return;
        }
        let term_ok = Some(record.term) == self.apply.stream_term;
        if record.version <= self.apply.accepted {
            self.apply.refused += 1;
            return;
        }
        if !term_ok {
            if self.apply.in_snapshot && self.apply.stream_term.is_none() {
                // The newest `term` comes later in this snapshot: decide at its end.
                self.apply.snapshot_candidate = Some(record);
            } else {
                self.apply.refused += 1;
            }
            return;
        }
        self.term_checked(record);
    }

    /// The snapshot ended: a record that came before the newest `term` is applied if exactly
    /// one bump separates them. Every leader takes `term + 1`, so that bump is the newest `term`
    /// itself, which came after the record: the record was written under the term in force.
    /// With two bumps or more, one of them may have preceded the record (a zombie): refused.
    fn on_snapshot_candidate(&mut self) {
        let Some(record) = self.apply.snapshot_candidate.take() else {
            return;
        };
        if self.apply.stream_term == Some(record.term.next())
            && record.version > self.apply.accepted
        {
            self.term_checked(record);
        } else {
            self.apply.refused += 1;
        }
    }

    /// A record that passed the term and version checks.
    fn term_checked(&mut self, record: AssignmentRecord) {
        if !self.identity_trusted() {
            // Maybe written for another holder of the id: wait for the renewal's verdict.
            self.apply.suspect_held = Some(record);
            return;
        }
        self.take_record(record);
    }

    /// The claim is confirmed ours again: the record that waited meanwhile is taken.
    pub(super) fn on_identity_confirmed(&mut self) {
        if let Some(record) = self.apply.suspect_held.take()
            && record.version > self.apply.accepted
        {
            self.take_record(record);
        }
    }

    /// A record that passed the term and version checks, under a trusted claim.
    fn take_record(&mut self, record: AssignmentRecord) {
        let addressed = self.addressed_to_us(&record);
        if let Some(f) = self.apply.fence.as_mut() {
            match f.floor {
                None => {
                    f.held = Some(record);
                    return;
                }
                Some(floor) if record.version <= floor => {
                    self.apply.refused += 1;
                    return;
                }
                // Only a record planned for our new round (after the leader saw the fence)
                // ends it; an older one — a pipelined write landing late — counts as empty.
                Some(_) if addressed => self.unfence(),
                Some(_) => {}
            }
        }
        self.accept(record);
    }

    /// Whether `record` is addressed to this process in its current fence round.
    fn addressed_to_us(&self, record: &AssignmentRecord) -> bool {
        record.instance == self.instance && record.round == self.fence_round()
    }

    /// The record becomes the target. One addressed to another process of our id, or to an
    /// earlier fence round of ours (a predecessor's record or a pre-fence write, however late
    /// the watch delivers it) gives us nothing: it counts as an
    /// empty record of its version, so what we hold is revoked and its version acknowledged —
    /// the leader addresses a record to us once it has seen our heartbeat.
    fn accept(&mut self, record: AssignmentRecord) {
        self.apply.accepted = record.version;
        if self.addressed_to_us(&record) {
            self.apply.target.set(
                record
                    .partitions
                    .into_iter()
                    .map(|p| (p.partition.id().clone(), p))
                    .collect(),
            );
        } else {
            self.apply.target.clear();
        }
        self.apply.target_version = Some(record.version);
    }

    fn unfence(&mut self) {
        self.apply.fence = None;
        // The acknowledgement heartbeat that follows the delivery carries the new intent.
        self.beat.carry(if self.phase == Phase::Leaving {
            Intent::Leaving
        } else {
            Intent::Active
        });
    }

    /// Our record is gone (deleted, purged, undecodable, or missing from a snapshot): revoke all.
    fn on_record_absent(&mut self) {
        self.apply.target.clear();
        self.apply.target_version = None;
    }

    pub(super) fn on_own_record_read(
        &mut self,
        now: Instant,
        purpose: ReadPurpose,
        result: KvResult,
    ) {
        match purpose {
            ReadPurpose::DegradedExit => {
                self.on_degraded_read(now, matches!(result, Ok(KvReply::Entry(_))));
            }
            ReadPurpose::Unfence(round) => {
                let Some(f) = self.apply.fence.as_mut() else {
                    return;
                };
                if f.round != round || !f.read_pending {
                    return; // the answer of an earlier round
                }
                f.read_pending = false;
                let Ok(KvReply::Entry(entry)) = result else {
                    // The next stored heartbeat triggers another read.
                    return;
                };
                let read = match entry {
                    Some(e) => {
                        let bucket = self.names.assignments_bucket();
                        self.decode::<AssignmentRecord>(&bucket, &e.key, &e.value)
                            .map_or(Version::ZERO, |r| r.version)
                    }
                    None => Version::ZERO,
                };
                let floor = read.max(self.apply.accepted);
                let Some(f) = self.apply.fence.as_mut() else {
                    return;
                };
                f.floor = Some(floor);
                // A member that closed its pipeline (restart, leave timeout) accepts nothing.
                if let Some(held) = f.held.take()
                    && held.version > floor
                    && !self.apply.closed
                {
                    if self.addressed_to_us(&held) {
                        self.unfence();
                    }
                    self.accept(held);
                } else if floor > self.apply.applied {
                    // Acknowledge the floor while fenced: holding nothing is a subset of any
                    // record, and it tells the leader our newest record is "applied", which is
                    // when it re-grants a fenced member with a new version.
                    self.apply.accepted = self.apply.accepted.max(floor);
                    self.apply.applied = floor;
                    self.send_heartbeat(now);
                }
            }
        }
    }

    /// Moves the delivery pipeline: if nothing runs and the application's view differs from the
    /// target, emit one delivery; if it does not differ, the target's version is applied at once.
    pub(super) fn pump(&mut self, now: Instant) {
        if self.apply.in_flight.is_some() || self.told_is_target() {
            return;
        }
        let a = &self.apply;
        let revoked: Vec<OwnedPartition> = a
            .told
            .iter()
            .filter(|(k, _)| !a.target.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        let assigned: Vec<OwnedPartition> = a
            .target
            .iter()
            .filter(|(k, v)| a.told.get(*k).is_none_or(|t| t.fence != v.fence))
            .map(|(_, v)| v.clone())
            .collect();
        self.apply.told = self.apply.target.copied();
        if revoked.is_empty() && assigned.is_empty() {
            if let Some(v) = self.apply.target_version.take() {
                self.applied(now, v);
            }
            return;
        }
        self.apply.next_delivery += 1;
        let delivery = DeliveryId(self.apply.next_delivery);
        let parts = u32::from(!revoked.is_empty()) + u32::from(!assigned.is_empty());
        self.apply.in_flight = Some(InFlight {
            id: delivery,
            version: self.apply.target_version.take(),
            revoking: revoked.clone(),
        });
        self.timers.set(
            Timer::Handler,
            later(now, self.config.handler_timeout.saturating_mul(parts)),
        );
        self.actions.push_back(Action::Deliver {
            delivery,
            revoked,
            assigned,
        });
    }

    /// Nothing for the pipeline to do: the target has not moved since it was copied into
    /// `told` (so their diff is empty) and no version waits to be applied.
    fn told_is_target(&self) -> bool {
        !self.apply.target.is_changed() && self.apply.target_version.is_none()
    }

    pub(super) fn on_delivered(&mut self, now: Instant, delivery: DeliveryId, timed_out: bool) {
        let Some(f) = self.apply.in_flight.take_if(|f| f.id == delivery) else {
            return;
        };
        self.timers.stop(Timer::Handler);
        if timed_out {
            self.notify(Notification::HandlerTimedOut { delivery });
        }
        match f.version {
            Some(v) => self.applied(now, v),
            None => self.send_heartbeat(now),
        }
    }

    pub(super) fn on_handler_timeout(&mut self, now: Instant) {
        if let Some(id) = self.apply.in_flight.as_ref().map(|f| f.id) {
            self.on_delivered(now, id, true);
        }
    }

    /// `version` is applied: acknowledge it.
    fn applied(&mut self, now: Instant, version: Version) {
        self.apply.applied = self.apply.applied.max(version);
        if !self.ready && self.phase == Phase::Member {
            self.ready = true;
            self.timers.stop(Timer::StartupDeadline);
            self.notify(Notification::Ready);
        }
        self.send_heartbeat(now);
    }
}
