//! Graceful leave and shutdown-for-restart (PROTOCOL.md §3, §8).
//!
//! **Leave**: heartbeat with intent `Leaving`, wait — bounded by `shutdown_timeout` — until the
//! leader's records have revoked everything and the revocation was delivered and acknowledged,
//! then delete the heartbeat, the leader key (if held; after the planner stopped) and the id,
//! one after the other. At the timeout everything is revoked locally and the member leaves
//! anyway.
//!
//! **Restart**: heartbeat with intent `Restarting` and revoke everything locally; once the
//! revocation was delivered (bounded by `handler_timeout`) and the heartbeat stored, hand the
//! leader key over (if held), then rewrite the id claim with `restarting_until = now +
//! rejoin_window` and stop once that is answered. The heartbeat and the id stay, so the leader
//! keeps the partitions reserved and the next process with this preferred id takes the id over.
//!
//! The rewritten claim invites that takeover at once, so it is written last: until then the
//! member still acts under the id (its application works on the partitions being revoked, it
//! may lead), the claim is renewed and trusted for its validity only, as always (a lapse
//! steps down), and the member heartbeats (intent `Restarting`) under the `Fence` discipline —
//! a silent member is taken for dead while its application may still be releasing. Once the
//! claim is written the member does nothing under the id any more.

use std::time::Instant;

use super::{Member, Notification, Op, Phase, Timer};
use crate::machine::KvRequest;
use crate::machine::later;
use crate::planner::PlannerState;
use crate::records::{IdClaim, Intent, Names, Record};
use crate::types::Revision;

impl Member {
    /// Leaves the cluster gracefully: heartbeat with intent `Leaving`, wait (at most
    /// `shutdown_timeout`) until the leader has revoked everything and the revocation was
    /// delivered and acknowledged, then delete the heartbeat, the leader key (if held) and the
    /// id, in that order; [`Notification::Stopped`] at the end. Before an id is held it stops at
    /// once.
    pub fn request_leave(&mut self, now: Instant) {
        self.check_lease(now);
        match self.phase {
            Phase::Init | Phase::Claiming => self.stop_now(),
            Phase::Member => {
                self.phase = Phase::Leaving;
                self.stop_election();
                self.timers.set(
                    Timer::LeaveDeadline,
                    later(now, self.config.shutdown_timeout),
                );
                self.set_intent(now, Intent::Leaving);
            }
            Phase::Leaving | Phase::Releasing | Phase::Restarting | Phase::Stopped => {}
        }
        self.settle(now);
    }

    /// Shuts down for a restart: the heartbeat says `Restarting` and everything is revoked
    /// locally; once the revocation was delivered and the heartbeat stored, leadership (if
    /// held) is handed over and the id claim is rewritten with `restarting_until = now +
    /// rejoin_window`. Heartbeat and id stay so the leader keeps the partitions reserved and the
    /// next process with this preferred id takes the id over. [`Notification::Stopped`] once
    /// the claim's rewrite is answered.
    pub fn request_restart(&mut self, now: Instant) {
        self.check_lease(now);
        match self.phase {
            Phase::Init | Phase::Claiming => self.stop_now(),
            Phase::Member | Phase::Leaving => {
                self.phase = Phase::Restarting;
                self.stop_election();
                // The claim stays renewed (and its lapse watched), the heartbeats go on and the
                // fence stays armed until the claim is handed over: the application may still
                // be releasing partitions until then.
                self.timers.stop(Timer::LeaveDeadline);
                self.revoke_locally_for_good();
                self.beat.carry(Intent::Restarting);
                self.send_heartbeat(now);
            }
            Phase::Releasing | Phase::Restarting | Phase::Stopped => {}
        }
        self.settle(now);
    }

    /// The last step of a restart: nothing is done under the id any more (no leadership, no
    /// record, no renewal), and the claim is rewritten with `restarting_until` for the next
    /// process to take over.
    fn hand_over_for_restart(&mut self, now: Instant) {
        self.step_down(now, true);
        self.stop_assignment_watch();
        for t in [
            Timer::RenewId,
            Timer::IdentityLapse,
            Timer::Heartbeat,
            Timer::Fence,
        ] {
            self.timers.stop(t);
        }
        let Some(c) = self.identity.as_mut() else {
            return;
        };
        c.hand_over();
        let c = c.clone();
        let until = self
            .wall_ms(now)
            .saturating_add(duration_ms(self.config.rejoin_window));
        let value = IdClaim {
            instance: self.instance,
            claimed_at_ms: c.claimed_at_ms(),
            restarting_until_ms: Some(until),
        }
        .encode();
        let request = KvRequest::Update {
            bucket: self.names.ids_bucket(),
            key: c.id().to_string(),
            value,
            expected: c.revision(),
        };
        self.kv(Op::RestartClaim, request);
    }

    pub(super) fn on_leave_deadline(&mut self) {
        if self.phase == Phase::Leaving {
            self.revoke_locally_for_good();
        }
    }

    /// Revokes everything and accepts no further record (nor one that waited for the claim's
    /// confirmation).
    fn revoke_locally_for_good(&mut self) {
        self.apply.close();
    }

    fn stop_now(&mut self) {
        self.phase = Phase::Stopped;
        self.timers.clear();
        self.ops.clear();
        self.notify(Notification::Stopped);
    }

    fn heartbeat_pending(&self) -> bool {
        self.ops.values().any(|o| matches!(o, Op::Heartbeat { .. }))
    }

    fn renewal_pending(&self) -> bool {
        self.ops
            .values()
            .any(|o| matches!(o, Op::RenewId { .. } | Op::ReadIdAfterRenew))
    }

    fn nothing_owned(&self) -> bool {
        self.apply.nothing_owned()
    }

    /// Called after every input: moves a leave or a restart along.
    pub(super) fn check_leave_progress(&mut self, now: Instant) {
        match self.phase {
            Phase::Leaving
                if self.nothing_owned()
                    && !self.apply.target_pending()
                    && !self.heartbeat_pending()
                    && self.publication_done() =>
            {
                self.begin_release(now);
            }
            // A renewal in flight would make the rewrite's compare-and-set fail: wait for it.
            Phase::Restarting
                if self.nothing_owned() && !self.heartbeat_pending() && !self.renewal_pending() =>
            {
                if self.identity.as_ref().is_some_and(|c| !c.is_handed_over()) {
                    self.hand_over_for_restart(now);
                } else if !self.ops.values().any(|o| matches!(o, Op::RestartClaim)) {
                    self.phase = Phase::Stopped;
                    self.timers.clear();
                    self.notify(Notification::Stopped);
                }
            }
            _ => {}
        }
    }

    /// A leaving leader keeps leading until the publication that took its partitions away
    /// has also granted them (or the leave timed out): otherwise they stay unowned until the
    /// next leader's takeover repairs it.
    fn publication_done(&self) -> bool {
        self.apply.is_closed()
            || self.planner.as_ref().is_none_or(|p| {
                !matches!(
                    p.state(),
                    PlannerState::Loading | PlannerState::Rebalancing | PlannerState::Emergency
                )
            })
    }

    fn begin_release(&mut self, now: Instant) {
        self.phase = Phase::Releasing;
        for t in [
            Timer::Heartbeat,
            Timer::RenewId,
            Timer::IdentityLapse,
            Timer::Candidate,
            Timer::Fence,
            Timer::LeaveDeadline,
        ] {
            self.timers.stop(t);
        }
        // Its heartbeat goes now: the leader will take it for dead and grant its partitions
        // elsewhere, and nothing fences a releasing member. A record that arrives meanwhile (a
        // re-grant after a `Fenced` heartbeat sent while leaving, a grant of a leader taking
        // over from `meta`) must not be applied.
        self.revoke_locally_for_good();
        self.release_leader = self.election.lead_revision();
        self.step_down(now, false);
        let Some(id) = self.identity.as_ref().map(|c| c.id().clone()) else {
            return self.finish_release();
        };
        let request = KvRequest::Delete {
            bucket: self.names.heartbeats_bucket(),
            key: id.to_string(),
            expected: None,
        };
        self.kv(Op::ReleaseHeartbeat, request);
    }

    /// The next release step follows whatever the outcome of the last one: each is attempted
    /// once (a key left behind expires; the member is going away either way).
    pub(super) fn on_release_step(&mut self, op: Op) {
        match op {
            Op::ReleaseHeartbeat => match self.release_leader.take() {
                Some(revision) => self.release_leader_key(revision),
                None => self.release_id(),
            },
            Op::ReleaseLeader => self.release_id(),
            Op::ReleaseId => self.finish_release(),
            // Restart steps and hand-overs are waited for through `ops`; nothing to do here.
            _ => {}
        }
    }

    fn release_leader_key(&mut self, revision: Revision) {
        let request = KvRequest::Delete {
            bucket: self.names.leader_bucket(),
            key: Names::LEADER_KEY.to_owned(),
            expected: Some(revision),
        };
        self.kv(Op::ReleaseLeader, request);
    }

    fn release_id(&mut self) {
        let Some(c) = self.identity.as_ref() else {
            return self.finish_release();
        };
        let request = KvRequest::Delete {
            bucket: self.names.ids_bucket(),
            key: c.id().to_string(),
            expected: Some(c.revision()),
        };
        self.kv(Op::ReleaseId, request);
    }

    fn finish_release(&mut self) {
        self.stop_assignment_watch();
        self.phase = Phase::Stopped;
        self.timers.clear();
        self.notify(Notification::Stopped);
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
