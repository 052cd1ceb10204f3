//! Heartbeats, acknowledgements and the `Fence` disconnect policy (PROTOCOL.md §5, §8).
//!
//! A heartbeat is put every `heartbeat_interval`, and at once after a record was applied (that
//! put is the acknowledgement) or the intent changed. Under [`DisconnectPolicy::Fence`] the
//! member revokes everything locally once its last *stored* heartbeat was sent
//! `heartbeat_ttl - fence_margin` ago — before the leader can declare it dead — and heartbeats
//! with intent `Fenced`; once such a heartbeat is stored it reads its own record afresh and
//! applies only newer records (the leader's re-grant).

use std::time::Instant;

use super::{Member, Notification, Op, Phase, ReadPurpose, Timer};
use crate::config::DisconnectPolicy;
use crate::machine::later;
use crate::machine::{KvReply, KvRequest, KvResult};
use crate::records::{Heartbeat, Intent, Record};

/// Heartbeat bookkeeping.
#[derive(Clone, Debug)]
pub(super) struct Beat {
    seq: u64,
    intent: Intent,
    /// Send time of the newest heartbeat the store acknowledged.
    last_acked: Option<Instant>,
    /// Whether heartbeats go out at all (from the claim until the release).
    running: bool,
}

impl Beat {
    pub(super) fn new() -> Self {
        Beat {
            seq: 0,
            intent: Intent::Active,
            last_acked: None,
            running: false,
        }
    }

    /// Heartbeats from now on say `intent`; the caller sends one if it must go out now (a
    /// fence that ends lets the acknowledgement of its delivery carry it).
    pub(super) fn carry(&mut self, intent: Intent) {
        self.intent = intent;
    }

    /// No heartbeat sent so far counts as acknowledged (a new identity starts over).
    pub(super) fn forget_acknowledgement(&mut self) {
        self.last_acked = None;
    }
}

impl Member {
    /// Whether the member's ownership rests on its heartbeats: it holds (or is still
    /// releasing) partitions under its claim, so the `Fence` discipline applies. A restarting
    /// member is included until it has handed its claim over: its application may still be
    /// releasing partitions then, and the leader takes a silent member for dead.
    pub(super) fn fences_by_heartbeats(&self) -> bool {
        self.config.on_disconnect == DisconnectPolicy::Fence
            && match self.phase {
                Phase::Member | Phase::Leaving => true,
                Phase::Restarting => !self.handed_over(),
                _ => false,
            }
    }

    /// The claim was rewritten for the next process (restart): nothing more under it.
    pub(super) fn handed_over(&self) -> bool {
        self.identity.as_ref().is_some_and(|c| c.is_handed_over())
    }

    /// Puts a heartbeat now and schedules the next one.
    pub(super) fn send_heartbeat(&mut self, now: Instant) {
        let Some(id) = self.identity.as_ref().map(|c| c.id().clone()) else {
            return;
        };
        if !matches!(
            self.phase,
            Phase::Member | Phase::Leaving | Phase::Restarting
        ) || self.handed_over()
        {
            return;
        }
        if !self.identity_trusted() {
            // The id may be someone else's: no heartbeat under it until a renewal confirms it.
            self.timers
                .set(Timer::Heartbeat, later(now, self.config.heartbeat_interval));
            return;
        }
        self.beat.running = true;
        self.beat.seq += 1;
        let value = Heartbeat {
            instance: self.instance,
            round: self.fence_round(),
            seq: self.beat.seq,
            state: self.derive_state(),
            applied: self.apply.applied(),
            intent: self.beat.intent,
            capacity: self.config.capacity,
        }
        .encode();
        let request = KvRequest::Put {
            bucket: self.names.heartbeats_bucket(),
            key: id.to_string(),
            value,
        };
        if let Some(p) = self.planner.as_mut() {
            // The planner measures liveness by the send times of its own echoes.
            p.heartbeat_sent(now, self.beat.seq);
        }
        self.kv(Op::Heartbeat { sent_at: now }, request);
        // Until a heartbeat is acknowledged the fence counts from the first one sent: one whose
        // outcome is unknown (a stalled bucket) may still land and make the leader grant us
        // partitions, and it is declared dead from that heartbeat on if nothing follows.
        if self.beat.last_acked.is_none()
            && self.fences_by_heartbeats()
            && !self.timers.is_set(Timer::Fence)
            && !self.apply.is_fenced()
        {
            self.timers
                .set(Timer::Fence, later(now, self.config.fence_after()));
        }
        // A restarting member heartbeats too (intent `Restarting`) until it hands its claim
        // over: while its application still releases partitions it is alive, and a silent
        // member is one the leader declares dead and whose partitions it grants elsewhere.
        self.timers
            .set(Timer::Heartbeat, later(now, self.config.heartbeat_interval));
    }

    /// Changes the intent and announces it at once.
    pub(super) fn set_intent(&mut self, now: Instant, intent: Intent) {
        if self.beat.intent != intent {
            self.beat.intent = intent;
            self.send_heartbeat(now);
        }
    }

    pub(super) fn on_heartbeat_done(&mut self, sent_at: Instant, result: KvResult) {
        if !matches!(result, Ok(KvReply::Written(_))) {
            return;
        }
        if self.beat.last_acked.is_none_or(|t| t < sent_at) {
            self.beat.last_acked = Some(sent_at);
        }
        // Armed while fenced too: if the condition recurs before the leader re-granted, the
        // fence round starts over (the leader may have declared us dead again meanwhile).
        if self.fences_by_heartbeats()
            && let Some(t) = self.beat.last_acked
        {
            self.timers
                .set(Timer::Fence, later(t, self.config.fence_after()));
        }
        // A stored `Fenced` heartbeat: the leader can now see us; read our record afresh.
        if let Some(round) = self.apply.start_floor_read() {
            self.read_own_record(ReadPurpose::Unfence(round));
        }
    }

    pub(super) fn read_own_record(&mut self, purpose: ReadPurpose) {
        let Some(id) = self.identity.as_ref().map(|c| c.id().clone()) else {
            return;
        };
        let request = KvRequest::Entry {
            bucket: self.names.assignments_bucket(),
            key: crate::records::Names::assignment_key(&id),
        };
        self.kv(Op::ReadOwnRecord { purpose }, request);
    }

    pub(super) fn on_fence_deadline(&mut self, now: Instant) {
        if !self.fences_by_heartbeats() {
            return;
        }
        if self.phase == Phase::Restarting {
            return self.give_up_while_restarting();
        }
        if self.apply.is_fenced() {
            // Still fenced and cut off again: a floor read before may predate a revocation the
            // leader writes when it declares us dead; read again after the next stored
            // heartbeat.
            self.apply.new_fence_round();
            self.arm_round_timer(now);
        } else {
            self.fence(now);
        }
    }

    /// A fence round lasts `fence_after` unless a heartbeat is acknowledged meanwhile (which
    /// re-arms the timer from its send time). A heartbeat of this round that lands late may
    /// make the leader address records to the round, then declare us dead — no sooner than
    /// `fence_after` after that heartbeat was sent, i.e. after this round began: by then we
    /// are in the next round, and those records count as empty.
    fn arm_round_timer(&mut self, now: Instant) {
        self.timers
            .set(Timer::Fence, later(now, self.config.fence_after()));
    }

    /// A restarting member's heartbeats went unacknowledged for `fence_after` while its
    /// application still held or released partitions (cut off, paused): the leader may soon
    /// declare it dead. Everything still held or being released is lost at once
    /// (`OwnershipLost`); the intent stays `Restarting` (the leader keeps the reservation).
    fn give_up_while_restarting(&mut self) {
        let mut partitions = self.owned();
        let revoking = self.apply.take_revoking();
        if !revoking.is_empty() {
            partitions.extend(revoking);
            partitions.sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
        }
        if !partitions.is_empty() {
            self.notify(Notification::OwnershipLost { partitions });
        }
    }

    /// Revokes everything locally (`OwnershipLost` when something was owned) and heartbeats with
    /// intent `Fenced`.
    pub(super) fn fence(&mut self, now: Instant) {
        if self.apply.is_fenced() {
            return;
        }
        // Everything the application may still work on: what it owns and what a running
        // revocation is still releasing (it must stop now, not when its handler returns).
        let mut partitions = self.owned();
        let revoking = self.apply.revoking();
        if !revoking.is_empty() {
            partitions.extend(revoking.iter().cloned());
            partitions.sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
        }
        self.apply.begin_fence();
        if self.config.on_disconnect == DisconnectPolicy::Fence {
            self.arm_round_timer(now);
        } else {
            self.timers.stop(Timer::Fence);
        }
        if !partitions.is_empty() {
            self.notify(Notification::OwnershipLost { partitions });
        }
        self.pump(now);
        self.set_intent(now, Intent::Fenced);
    }
}
