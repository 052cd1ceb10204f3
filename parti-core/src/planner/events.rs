//! Inputs shared by every stage: watch deliveries, state, the step after every input, timers.

use std::time::Instant;

use super::later;

use super::{PlanReason, Planner, PlannerNotification, PlannerState, Stage, Timer};
use crate::records::DecodeError;
use crate::store::WatchEvent;
use crate::types::{Term, WorkerId};

impl Planner {
    pub(super) fn set_state(&mut self, to: PlannerState) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.notes
                .push_back(PlannerNotification::StateChanged { from, to });
        }
    }

    pub(super) fn step_down(&mut self, now: Instant, term: Term) {
        self.notes
            .push_back(PlannerNotification::SteppedDown { term });
        self.stop(now);
    }

    pub(super) fn report_undecodable(&mut self, bucket: &str, key: &str, error: DecodeError) {
        self.decode_errors += 1;
        if self.reported.insert((bucket.to_owned(), key.to_owned())) {
            self.notes.push_back(PlannerNotification::Undecodable {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                error,
            });
        }
    }

    pub(super) fn on_term_event(&mut self, now: Instant, ev: WatchEvent) {
        use crate::records::{Record, TermCounter};
        use crate::store::KvOperation;
        match ev {
            WatchEvent::Change(c) => {
                if let KvOperation::Put(bytes) = &c.op {
                    match TermCounter::decode(bytes) {
                        Ok(t) if t.term > self.term => self.step_down(now, t.term),
                        Ok(t) if t.term == self.term => {
                            if let Stage::Loading(l) = &mut self.stage {
                                l.term_rev = Some(c.revision);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let b = self.as_bucket.clone();
                            self.report_undecodable(&b, &c.key, e);
                        }
                    }
                }
            }
            WatchEvent::SnapshotComplete => {
                self.watch_settled();
                if let Stage::Loading(l) = &mut self.stage {
                    l.term_snapshot = true;
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_heartbeat_event(&mut self, now: Instant, ev: WatchEvent) {
        use crate::records::{Heartbeat, Intent, Record};
        use crate::store::KvOperation;
        match ev {
            WatchEvent::Change(c) => {
                let KvOperation::Put(bytes) = &c.op else {
                    return; // deletes carry no liveness information (module docs)
                };
                let Ok(worker) = WorkerId::new(&c.key) else {
                    return;
                };
                let hb = match Heartbeat::decode(bytes) {
                    Ok(hb) => hb,
                    Err(e) => {
                        let b = self.hb_bucket.clone();
                        self.report_undecodable(&b, &c.key, e);
                        return;
                    }
                };
                // An older heartbeat than one already seen (reordered or replayed writes)
                // changes nothing; `observe` ignores it.
                let seen = self.live.observe(now, &worker, &hb);
                if matches!(self.stage, Stage::Loading(_)) {
                    return;
                }
                if !seen.changed {
                    // The steady state (every member, every interval): only the stamp moved.
                    return;
                }
                self.dirty = true;
                let slot = self.slots.entry(worker);
                if seen.revived || seen.new_instance || hb.intent == Intent::Fenced {
                    slot.on_fresh_member(now);
                }
                slot.on_applied(hb.applied);
                if hb.applied > self.version {
                    self.version = hb.applied;
                }
            }
            WatchEvent::SnapshotComplete => {
                self.dirty = true;
                self.watch_settled();
                if let Stage::Loading(l) = &mut self.stage {
                    l.hb_snapshot = true;
                }
            }
            _ => {}
        }
    }

    /// Everything that follows an input: liveness, classification, publication, timers.
    pub(super) fn step(&mut self, now: Instant) {
        if matches!(self.stage, Stage::Loading(_)) {
            self.loading_step(now);
        }
        if !matches!(self.stage, Stage::Running) {
            return;
        }
        for w in self.live.declare_deaths(now) {
            self.dirty = true;
            if let Some(s) = self.slots.get_mut(&w) {
                s.awaiting = None;
            }
            self.notes
                .push_back(PlannerNotification::WorkerDead { worker: w });
        }
        if !self.live.expire_reservations(now).is_empty() {
            self.dirty = true;
        }
        // Classification and reconciliation cost O(members + partitions); they run only when
        // an input could have changed their outcome (not for a plain heartbeat).
        if std::mem::take(&mut self.dirty) {
            self.eligible_memo = Some(self.eligible(now));
            self.classify(now);
            self.reconcile(now);
            self.eligible_memo = None;
            self.update_stall_timer(now);
            self.unowned.stale = true;
        }
        self.recount_unowned(now);
        self.update_timers(now);
        self.update_state();
    }

    pub(super) fn update_timers(&mut self, now: Instant) {
        match self.live.next_deadline(now) {
            Some(t) => self.timers.set(Timer::Liveness, t),
            None => self.timers.stop(Timer::Liveness),
        }
        match self.window_due() {
            Some(t) => self.timers.set(Timer::Window, t),
            None => self.timers.stop(Timer::Window),
        }
    }

    /// Revocations change only on inputs that mark the planner dirty; O(workers).
    fn update_stall_timer(&mut self, now: Instant) {
        let stall = self
            .slots
            .iter()
            .filter_map(|(w, s)| s.awaiting.as_ref().map(|a| (w, a)))
            .filter(|(w, a)| !a.reported && self.live.is_alive(w))
            .map(|(_, a)| a)
            .map(|a| later(a.since, self.config.revoke_timeout))
            .min();
        match stall {
            Some(t) => self.timers.set(Timer::Stall, t.max(now)),
            None => self.timers.stop(Timer::Stall),
        }
    }

    pub(super) fn update_state(&mut self) {
        let s = match (&self.current, &self.window) {
            (Some(PlanReason::Emergency), _) => PlannerState::Emergency,
            (Some(_), _) => PlannerState::Rebalancing,
            (None, Some(_)) => PlannerState::Scaling,
            (None, None) => PlannerState::Idle,
        };
        self.set_state(s);
    }
}
