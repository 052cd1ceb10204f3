//! What every part of the member shares: timer and answer dispatch, queuing of outputs,
//! decoding, and `settle` — the step after every input that moves the delivery pipeline and the
//! leave, drains the planner and reports state changes.

use std::time::Instant;

use super::{Action, Member, Notification, Op, Phase, Timer};
use crate::machine::{IoAction, KvRequest, KvResult, OpId};
use crate::planner::{Planner, PlannerState};
use crate::records::{DecodeError, Record};
use crate::store::KvError;
use crate::types::WorkerState;

impl Member {
    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::StartupDeadline => self.on_startup_deadline(),
            Timer::ClaimRetry => self.on_claim_retry(now),
            Timer::RenewId => self.renew_id(now),
            Timer::IdentityLapse => self.on_identity_lapse(now),
            Timer::Heartbeat => self.send_heartbeat(now),
            Timer::Fence => self.on_fence_deadline(now),
            Timer::Candidate => self.stand(now),
            Timer::RenewLeader => self.write_leader(now),
            Timer::LeaseEnd => self.check_lease(now),
            Timer::TermRetry => self.read_term(),
            Timer::Handler => self.on_handler_timeout(now),
            Timer::DegradedEnter => self.on_degraded_enter_deadline(now),
            Timer::DegradedExit => self.on_degraded_exit_check(now),
            Timer::Alert => self.on_alert(now),
            Timer::LeaveDeadline => self.on_leave_deadline(),
            Timer::RewatchAssignments => self.reopen_assignment_watch(),
            Timer::RewatchLeader => self.reopen_leader_watch(),
        }
    }

    pub(super) fn on_kv_done(&mut self, now: Instant, op: Op, result: KvResult) {
        match op {
            Op::ListIds => self.on_ids_listed(now, result),
            Op::ReadPreferred { number } => self.on_preferred_read(now, number, result),
            Op::CreateId {
                number,
                claimed_at_ms,
                sent_at,
            } => self.on_claim_written(now, number, claimed_at_ms, sent_at, result, false),
            Op::ReadIdAfterCreate { number, sent_at } => {
                self.on_id_read_after_create(now, number, sent_at, result);
            }
            Op::TakeoverId {
                number,
                claimed_at_ms,
                sent_at,
            } => self.on_claim_written(now, number, claimed_at_ms, sent_at, result, true),
            Op::RenewId { sent_at } => self.on_id_renewed(now, sent_at, result),
            Op::ReadIdAfterRenew => self.on_id_read_after_renew(now, result),
            Op::Heartbeat { sent_at } => self.on_heartbeat_done(sent_at, result),
            Op::CreateLeader { sent_at } => self.on_leader_created(now, sent_at, result),
            Op::ReadLeader { sent_at } => self.on_leader_read(now, sent_at, result),
            Op::WriteLeader { sent_at, term } => self.on_leader_written(now, sent_at, term, result),
            Op::ReadTerm => self.on_term_read(now, result),
            Op::WriteTerm { term } => self.on_term_written(now, term, result),
            Op::ReadOwnRecord { purpose } => self.on_own_record_read(now, purpose, result),
            Op::RestartClaim
            | Op::ReleaseHeartbeat
            | Op::ReleaseLeader
            | Op::ReleaseId
            | Op::DropLeader => {
                self.on_release_step(op);
            }
        }
    }

    /// Queues a KV request of the member's own.
    pub(super) fn kv(&mut self, op: Op, request: KvRequest) -> OpId {
        let id = self.ids.op();
        self.ops.insert(id, op);
        self.actions
            .push_back(Action::Io(IoAction::Kv { op: id, request }));
        id
    }

    pub(super) fn notify(&mut self, n: Notification) {
        self.notifications.push_back(n);
    }

    /// Wall-clock Unix milliseconds at `now`, from the wall clock given at construction.
    pub(super) fn wall_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        self.wall_epoch_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Decodes `bytes`; an undecodable value is counted, reported once per key and treated as
    /// absent.
    pub(super) fn decode<R: Record>(&mut self, bucket: &str, key: &str, bytes: &[u8]) -> Option<R> {
        match R::decode(bytes) {
            Ok(r) => Some(r),
            Err(error) => {
                self.undecodable(bucket, key, error);
                None
            }
        }
    }

    pub(super) fn undecodable(&mut self, bucket: &str, key: &str, error: DecodeError) {
        self.decode_errors += 1;
        if self
            .undecodable_notified
            .insert((bucket.to_owned(), key.to_owned()))
        {
            self.notify(Notification::UndecodableValue {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                error,
            });
        }
    }

    pub(super) fn count_kv_result(&mut self, now: Instant, result: &KvResult) {
        if let Err(e) = result
            && !matches!(
                e,
                KvError::NotFound
                    | KvError::AlreadyExists
                    | KvError::RevisionMismatch { .. }
                    | KvError::ValueTooLarge { .. }
            )
        {
            self.on_kv_error(now);
        }
    }

    /// After every input: drain the planner, move the delivery pipeline, report state changes.
    pub(super) fn settle(&mut self, now: Instant) {
        self.pump(now);
        self.check_leave_progress(now);
        self.drain_planner();
        // A planner that stopped on its own (it saw a higher term) ends our leadership.
        if self.planner.as_ref().is_some_and(Planner::is_stopped) {
            self.step_down(now, false);
        }
        let state = self.derive_state();
        if state != self.reported {
            let from = self.reported;
            self.reported = state;
            self.notify(Notification::StateChanged { from, to: state });
        }
    }

    pub(super) fn drain_planner(&mut self) {
        if let Some(p) = self.planner.as_mut() {
            while let Some(a) = p.poll_action() {
                if let Some(a) = self.relay.outbound(a) {
                    self.actions.push_back(Action::Io(a));
                }
            }
            while let Some(n) = p.poll_notification() {
                self.notifications.push_back(Notification::Planner(n));
            }
        }
    }

    pub(super) fn derive_state(&self) -> WorkerState {
        match self.phase {
            Phase::Init => WorkerState::Init,
            Phase::Stopped | Phase::Restarting => WorkerState::Shutdown,
            Phase::Leaving | Phase::Releasing => WorkerState::Leaving,
            Phase::Claiming | Phase::Member if self.degraded.is_on() => WorkerState::Degraded,
            Phase::Claiming => WorkerState::ClaimingId,
            Phase::Member if self.apply.is_fenced() => WorkerState::Fenced,
            Phase::Member if !self.election.is_settled() => WorkerState::Election,
            Phase::Member if !self.ready => WorkerState::WaitingAssignment,
            // A leader mirrors its planner's work, as the Go library's leader does.
            Phase::Member => match self.planner.as_ref().map(Planner::state) {
                Some(PlannerState::Scaling) => WorkerState::Scaling,
                Some(PlannerState::Rebalancing) => WorkerState::Rebalancing,
                Some(PlannerState::Emergency) => WorkerState::Emergency,
                _ => WorkerState::Stable,
            },
        }
    }

    pub(super) fn on_startup_deadline(&mut self) {
        match self.phase {
            Phase::Claiming => self.fail_claim(),
            Phase::Member if !self.ready => {
                self.ready = true;
                self.notify(Notification::Ready);
            }
            _ => {}
        }
    }
}
