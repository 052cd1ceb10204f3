//! Graceful leave and shutdown-for-restart (PROTOCOL.md §3, §8).
//!
//! **Leave**: heartbeat with intent `Leaving`, wait — bounded by `shutdown_timeout` — until the
//! leader's records have revoked everything and the revocation was delivered and acknowledged,
//! then delete the heartbeat, the leader key (if held; after the planner stopped) and the id,
//! one after the other. At the timeout everything is revoked locally and the member leaves
//! anyway.
//!
//! **Restart**: rewrite the id claim with `restarting_until = now + rejoin_window`, heartbeat
//! with intent `Restarting`, revoke everything locally; once these are answered (and the leader
//! key handed over if held) the member stops. The heartbeat and the id stay, so the leader keeps
//! the partitions reserved and the next process with this preferred id takes the id over.

use std::time::Instant;

use super::{Member, Notification, Op, Phase, Timer};
use crate::machine::{KvRequest, KvResult};
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
                self.stop_election(now);
                self.timers
                    .set(Timer::LeaveDeadline, now + self.config.shutdown_timeout);
                self.set_intent(now, Intent::Leaving);
            }
            Phase::Leaving | Phase::Releasing | Phase::Restarting | Phase::Stopped => {}
        }
        self.settle(now);
    }

    /// Shuts down for a restart: the id claim is rewritten with `restarting_until = now +
    /// rejoin_window`, the heartbeat says `Restarting`, everything is revoked locally; heartbeat
    /// and id stay so the leader keeps the partitions reserved and the next process with this
    /// preferred id takes the id over. [`Notification::Stopped`] once the writes are answered.
    pub fn request_restart(&mut self, now: Instant) {
        self.check_lease(now);
        match self.phase {
            Phase::Init | Phase::Claiming => self.stop_now(),
            Phase::Member | Phase::Leaving => {
                self.phase = Phase::Restarting;
                self.stop_election(now);
                for t in [
                    Timer::RenewId,
                    Timer::IdentityLapse,
                    Timer::Fence,
                    Timer::LeaveDeadline,
                ] {
                    self.timers.stop(t);
                }
                self.revoke_locally_for_good();
                if let Some(c) = self.identity.clone() {
                    let until = self
                        .wall_ms(now)
                        .saturating_add(duration_ms(self.config.rejoin_window));
                    let value = IdClaim {
                        instance: self.instance,
                        claimed_at_ms: c.claimed_at_ms,
                        restarting_until_ms: Some(until),
                    }
                    .encode();
                    let request = KvRequest::Update {
                        bucket: self.names.ids_bucket(),
                        key: c.id.to_string(),
                        value,
                        expected: c.revision,
                    };
                    self.kv(Op::RestartClaim, request);
                }
                self.beat.intent = Intent::Restarting;
                self.send_heartbeat(now);
            }
            Phase::Releasing | Phase::Restarting | Phase::Stopped => {}
        }
        self.settle(now);
    }

    pub(super) fn on_leave_deadline(&mut self, _now: Instant) {
        if self.phase == Phase::Leaving {
            self.revoke_locally_for_good();
        }
    }

    /// Revokes everything and accepts no further record.
    fn revoke_locally_for_good(&mut self) {
        self.apply.closed = true;
        self.apply.target.clear();
        self.apply.target_version = None;
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

    fn nothing_owned(&self) -> bool {
        let a = &self.apply;
        a.in_flight.is_none() && a.told.is_empty() && a.target.is_empty()
    }

    /// Called after every input: moves a leave or a restart along.
    pub(super) fn check_leave_progress(&mut self, now: Instant) {
        match self.phase {
            Phase::Leaving
                if self.nothing_owned()
                    && self.apply.target_version.is_none()
                    && !self.heartbeat_pending() =>
            {
                self.begin_release(now);
            }
            Phase::Restarting
                if self.nothing_owned()
                    && !self.heartbeat_pending()
                    && !self.ops.values().any(|o| matches!(o, Op::RestartClaim)) =>
            {
                self.step_down(now, true);
                self.stop_assignment_watch(None);
                self.phase = Phase::Stopped;
                self.timers.clear();
                self.notify(Notification::Stopped);
            }
            _ => {}
        }
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
        // re-grant after a `Fenced` heartbeat sent while leaving) must not be applied.
        self.revoke_locally_for_good();
        self.release_leader = self.election.lead.as_ref().map(|l| l.revision);
        self.step_down(now, false);
        let Some(id) = self.identity.as_ref().map(|c| c.id.clone()) else {
            return self.finish_release();
        };
        let request = KvRequest::Delete {
            bucket: self.names.heartbeats_bucket(),
            key: id.to_string(),
            expected: None,
        };
        self.kv(Op::ReleaseHeartbeat, request);
    }

    pub(super) fn on_release_step(&mut self, _now: Instant, op: Op, _result: KvResult) {
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
            key: c.id.to_string(),
            expected: Some(c.revision),
        };
        self.kv(Op::ReleaseId, request);
    }

    fn finish_release(&mut self) {
        self.stop_assignment_watch(None);
        self.phase = Phase::Stopped;
        self.timers.clear();
        self.notify(Notification::Stopped);
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
