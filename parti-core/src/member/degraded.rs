//! Degraded mode and its alerts (PROTOCOL.md §8).
//!
//! Entered after the connection has been down for `degraded.enter_after`, or after
//! `degraded.kv_error_threshold` failed store operations (any operation, the planner's too)
//! within `degraded.kv_error_window`. Left after the connection has been up for `exit_after` and
//! a fresh read of the member's own record succeeded. While degraded, alerts escalate
//! Info → Warn → Error → Critical at the configured ages (a level set to `None` never fires)
//! and the current level repeats every `alerts.interval`. The planner is told when the member
//! enters and leaves degraded mode.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{AlertLevel, DegradedReason, Member, Notification, ReadPurpose, Timer};
use crate::machine::later;
use crate::store::ConnectionState;

/// Degraded-mode bookkeeping.
#[derive(Clone, Debug)]
pub(super) struct Degraded {
    connected: bool,
    /// When degraded mode was entered; `None` when not degraded.
    since: Option<Instant>,
    errors: VecDeque<Instant>,
    exit_read_pending: bool,
    level: Option<AlertLevel>,
    last_alert: Option<Instant>,
}

impl Degraded {
    /// In degraded mode.
    pub(super) fn is_on(&self) -> bool {
        self.since.is_some()
    }

    pub(super) fn new() -> Self {
        Degraded {
            connected: true,
            since: None,
            errors: VecDeque::new(),
            exit_read_pending: false,
            level: None,
            last_alert: None,
        }
    }
}

impl Member {
    pub(super) fn on_connection(&mut self, now: Instant, state: ConnectionState) {
        match state {
            ConnectionState::Disconnected => {
                if self.degraded.connected {
                    self.degraded.connected = false;
                    self.timers.set(
                        Timer::DegradedEnter,
                        later(now, self.config.degraded.enter_after),
                    );
                }
                self.timers.stop(Timer::DegradedExit);
            }
            ConnectionState::Connected => {
                if !self.degraded.connected {
                    self.degraded.connected = true;
                    self.timers.stop(Timer::DegradedEnter);
                    if self.degraded.since.is_some() {
                        self.timers.set(
                            Timer::DegradedExit,
                            later(now, self.config.degraded.exit_after),
                        );
                    }
                    // A member unsure of its id confirms it first; a fenced member announces
                    // itself as soon as it can.
                    if self.identity.as_ref().is_some_and(|c| c.is_suspect()) {
                        self.renew_id(now);
                    } else if self.apply.is_fenced() {
                        self.send_heartbeat(now);
                    }
                }
            }
        }
    }

    pub(super) fn on_degraded_enter_deadline(&mut self, now: Instant) {
        if !self.degraded.connected {
            self.enter_degraded(now, DegradedReason::ConnectionDown);
        }
    }

    /// A store operation failed (not merely answered "no").
    pub(super) fn on_kv_error(&mut self, now: Instant) {
        let d = &self.config.degraded;
        let (threshold, window) = (d.kv_error_threshold, d.kv_error_window);
        self.degraded.errors.push_back(now);
        while self
            .degraded
            .errors
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.degraded.errors.pop_front();
        }
        if threshold > 0 && self.degraded.errors.len() >= threshold as usize {
            self.enter_degraded(now, DegradedReason::KvErrors);
        }
    }

    fn enter_degraded(&mut self, now: Instant, reason: DegradedReason) {
        if self.degraded.since.is_some() {
            return;
        }
        self.degraded.since = Some(now);
        self.degraded.errors.clear();
        self.degraded.level = None;
        self.degraded.last_alert = None;
        self.notify(Notification::DegradedEntered { reason });
        if let Some(p) = self.planner.as_mut() {
            p.set_degraded(now, true);
        }
        self.schedule_alert();
        if self.degraded.connected {
            self.timers.set(
                Timer::DegradedExit,
                later(now, self.config.degraded.exit_after),
            );
        }
    }

    pub(super) fn on_degraded_exit_check(&mut self, now: Instant) {
        if self.degraded.since.is_none() || !self.degraded.connected {
            return;
        }
        if self.identity.is_none() {
            return self.exit_degraded(now);
        }
        if !self.degraded.exit_read_pending {
            self.degraded.exit_read_pending = true;
            self.read_own_record(ReadPurpose::DegradedExit);
        }
    }

    /// Forgets a pending exit read (its answer will never be routed) and checks again later.
    pub(super) fn reset_degraded_exit(&mut self, now: Instant) {
        if self.degraded.exit_read_pending {
            self.degraded.exit_read_pending = false;
            if self.degraded.since.is_some() && self.degraded.connected {
                self.timers.set(
                    Timer::DegradedExit,
                    later(now, self.config.degraded.exit_after),
                );
            }
        }
    }

    pub(super) fn on_degraded_read(&mut self, now: Instant, ok: bool) {
        self.degraded.exit_read_pending = false;
        if self.degraded.since.is_none() || !self.degraded.connected {
            return;
        }
        if ok {
            self.exit_degraded(now);
        } else {
            self.timers.set(
                Timer::DegradedExit,
                later(now, self.config.degraded.exit_after),
            );
        }
    }

    fn exit_degraded(&mut self, now: Instant) {
        let Some(since) = self.degraded.since.take() else {
            return;
        };
        self.timers.stop(Timer::Alert);
        self.timers.stop(Timer::DegradedExit);
        self.degraded.errors.clear();
        self.notify(Notification::DegradedExited {
            duration: now.saturating_duration_since(since),
        });
        if let Some(p) = self.planner.as_mut() {
            p.set_degraded(now, false);
        }
    }

    fn alert_thresholds(&self) -> [(AlertLevel, Option<Duration>); 4] {
        let a = &self.config.degraded.alerts;
        [
            (AlertLevel::Info, a.info),
            (AlertLevel::Warn, a.warn),
            (AlertLevel::Error, a.error),
            (AlertLevel::Critical, a.critical),
        ]
    }

    /// The highest level whose age is reached after `age` of degraded mode.
    fn alert_level_at(&self, age: Duration) -> Option<AlertLevel> {
        self.alert_thresholds()
            .into_iter()
            .filter(|(_, th)| th.is_some_and(|th| th <= age))
            .map(|(l, _)| l)
            .max()
    }

    fn schedule_alert(&mut self) {
        let Some(t0) = self.degraded.since else {
            return;
        };
        let current = self.degraded.level;
        let escalate = self
            .alert_thresholds()
            .into_iter()
            .filter(|(l, _)| current.is_none_or(|c| *l > c))
            .filter_map(|(_, th)| th.map(|th| later(t0, th)))
            .min();
        let repeat = self
            .degraded
            .last_alert
            .map(|t| later(t, self.config.degraded.alerts.interval));
        let next = match (escalate, repeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(at) => self.timers.set(Timer::Alert, at),
            None => self.timers.stop(Timer::Alert),
        }
    }

    pub(super) fn on_alert(&mut self, now: Instant) {
        let Some(t0) = self.degraded.since else {
            return;
        };
        let age = now.saturating_duration_since(t0);
        if let Some(level) = self.alert_level_at(age) {
            self.degraded.level = Some(level);
            self.degraded.last_alert = Some(now);
            self.notify(Notification::DegradedAlert {
                level,
                degraded_for: age,
            });
        }
        self.schedule_alert();
    }
}
