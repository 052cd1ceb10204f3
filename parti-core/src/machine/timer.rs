//! One table for every deadline of a machine (STYLE.md §3).
//!
//! A cooldown, a window or a renewal is a deadline in this table, not a flag plus a timestamp.
//! `poll_timeout` is [`TimerTable::next`]; `handle_timeout(now)` takes [`TimerTable::expired`]
//! and acts on each, so a spurious wake-up (nothing expired) does nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `t + d`, never panicking. Every deadline a machine computes from a setting goes through
/// here: when the clock cannot represent `t + d` (a clock near its end, a duration of
/// centuries) the deadline is the farthest instant it can represent within `d` — in practice
/// "never" — instead of an overflow panic. Validation bounds every setting
/// ([`DURATION_MAX`](crate::config::DURATION_MAX)); this keeps the machines safe whatever the
/// clock.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(at) = t.checked_add(d) {
            return at;
        }
        // Halving ends: `t + 0` is `t`.
        d /= 2;
    }
}

/// Deadlines keyed by a timer kind `T` (usually a small `enum`). At most one deadline per kind.
#[derive(Clone, Debug)]
pub struct TimerTable<T: Ord + Copy> {
    deadlines: BTreeMap<T, Instant>,
}

impl<T: Ord + Copy> Default for TimerTable<T> {
    fn default() -> Self {
        TimerTable {
            deadlines: BTreeMap::new(),
        }
    }
}

impl<T: Ord + Copy> TimerTable<T> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or moves) the deadline of `timer`.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.deadlines.insert(timer, at);
    }

    /// Sets the deadline of `timer` only if it is not set or is later than `at`.
    pub fn set_earliest(&mut self, timer: T, at: Instant) {
        let d = self.deadlines.entry(timer).or_insert(at);
        if at < *d {
            *d = at;
        }
    }

    /// Clears `timer`.
    pub fn stop(&mut self, timer: T) {
        self.deadlines.remove(&timer);
    }

    /// The deadline of `timer`.
    #[must_use]
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines.get(&timer).copied()
    }

    /// Whether `timer` is set.
    #[must_use]
    pub fn is_set(&self, timer: T) -> bool {
        self.deadlines.contains_key(&timer)
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Removes and returns every timer due at `now`, earliest first (ties in timer order).
    pub fn expired(&mut self, now: Instant) -> Vec<T> {
        let mut due: Vec<(Instant, T)> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, at)| (*at, *t))
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, t) in &due {
            self.deadlines.remove(t);
        }
        due.into_iter().map(|(_, t)| t).collect()
    }

    /// Clears every timer.
    pub fn clear(&mut self) {
        self.deadlines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum T {
        A,
        B,
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        #[allow(clippy::disallowed_methods)] // the test's one epoch
        let epoch = Instant::now();
        assert_eq!(
            later(epoch, Duration::from_secs(5)),
            epoch + Duration::from_secs(5)
        );
        let far = later(epoch, Duration::MAX);
        assert!(
            far > epoch + Duration::from_secs(1 << 40),
            "far in the future"
        );
        assert!(
            later(far, Duration::MAX) >= far,
            "no panic near the end of the clock"
        );
    }

    #[test]
    fn expired_returns_due_timers_in_deadline_order_and_removes_them() {
        #[allow(clippy::disallowed_methods)] // the test's one epoch
        let epoch = Instant::now();
        let mut t = TimerTable::new();
        t.set(T::A, epoch + Duration::from_secs(2));
        t.set(T::B, epoch + Duration::from_secs(1));
        assert_eq!(t.next(), Some(epoch + Duration::from_secs(1)));
        assert!(t.expired(epoch).is_empty());
        assert_eq!(t.expired(epoch + Duration::from_secs(5)), vec![T::B, T::A]);
        assert_eq!(t.next(), None);
        t.set(T::A, epoch + Duration::from_secs(3));
        t.set_earliest(T::A, epoch + Duration::from_secs(4));
        assert_eq!(t.get(T::A), Some(epoch + Duration::from_secs(3)));
        t.set_earliest(T::A, epoch + Duration::from_secs(1));
        assert_eq!(t.get(T::A), Some(epoch + Duration::from_secs(1)));
        t.stop(T::A);
        assert!(!t.is_set(T::A));
    }
}
