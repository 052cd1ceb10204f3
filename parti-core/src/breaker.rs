//! A circuit breaker for store calls, as a pure state machine (the Go roadmap's Task 4).
//!
//! **Why.** When the store is down, every store call of a member — heartbeat, renewals, reads,
//! the planner's publications — waits out its `operation_timeout` and fails, and each retry
//! piles more requests onto a server that is struggling to come back. The breaker notices a run
//! of connectivity failures and, for [`open_timeout`](BreakerConfig::open_timeout), turns store
//! calls away at once instead; then it lets calls probe the store again and closes only after
//! [`success_threshold`](BreakerConfig::success_threshold) of them in a row succeeded.
//!
//! **It decides nothing about ownership.** It is one input of the member's degraded mode, not a
//! competing notion of "cut off": a call the breaker rejects is reported to the member as a
//! failed store operation ([`KvError::Unavailable`]), so degraded mode, alerts and fencing see it
//! like any other failure. That is also why [`open_timeout`](BreakerConfig::open_timeout) must
//! be shorter than `heartbeat_ttl - fence_margin` (config validation refuses otherwise): while
//! the breaker is open no heartbeat is written, and a longer open time would make a member whose
//! store is back fence itself.
//!
//! # Transitions
//!
//! | from | input | to |
//! |---|---|---|
//! | Closed | [`on_failure`](CircuitBreaker::on_failure), the `failure_threshold`-th in a row | Open |
//! | Closed | [`on_success`](CircuitBreaker::on_success) | Closed (the failure run starts over) |
//! | Open | [`allow`](CircuitBreaker::allow) or [`handle_timeout`](CircuitBreaker::handle_timeout) at or after the open deadline | HalfOpen |
//! | Open | `allow` before the deadline | Open (the call is rejected and counted in [`rejected`](CircuitBreaker::rejected)) |
//! | Open | `on_success` / `on_failure` | Open (ignored: the result of a call started before the breaker opened) |
//! | HalfOpen | `on_success`, the `success_threshold`-th in a row | Closed |
//! | HalfOpen | `on_failure` | Open, with a fresh `open_timeout` |
//!
//! Calls are allowed in Closed and HalfOpen, rejected in Open. Every HalfOpen call is a probe;
//! their number is not limited (a member makes a handful of calls per heartbeat interval).
//!
//! # Which errors are failures
//!
//! [`counts_as_failure`] decides, and it is exactly [`KvError::is_connectivity`]:
//!
//! - `Timeout` and `Unavailable` — the store could not be reached or did not answer: failures.
//! - `NotFound`, `AlreadyExists`, `RevisionMismatch` — answers about the data; the round trip
//!   worked: successes.
//! - `BucketNotFound`, `BucketMismatch`, `InvalidBucketSpec`, `InvalidKey` — answers about the
//!   configuration or the caller; the store answered, and turning calls away would not fix them:
//!   successes for the breaker.
//! - `Backend` — what the store adapter could not classify. parti-nats maps every timeout, "no
//!   responders", broken connection and "stream without leader" to `Timeout` / `Unavailable`
//!   (walking source chains), so what is left is an answer the server gave (a malformed message,
//!   an unexpected JetStream API error). The same call gets the same answer sooner or later, so
//!   opening would only stop the heartbeats: a success for the breaker. The member still counts
//!   it towards degraded mode through its own error count.
//!
//! # How a driver uses it
//!
//! ```
//! use std::time::{Duration, Instant};
//! use parti_core::breaker::{BreakerState, CircuitBreaker, counts_as_failure};
//! use parti_core::config::BreakerConfig;
//! use parti_core::store::KvError;
//!
//! # fn store_call() -> Result<(), KvError> { Err(KvError::Timeout) }
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the driver's clock; parti-core itself never reads one
//! let mut breaker = CircuitBreaker::new(&BreakerConfig::default(), now);
//!
//! // For every store call:
//! let result = if breaker.allow(now) {
//!     let result = store_call();
//!     match &result {
//!         Err(e) if counts_as_failure(e) => breaker.on_failure(now),
//!         _ => breaker.on_success(now),
//!     }
//!     result
//! } else {
//!     // Rejected: the member is told the store is unavailable, so degraded mode counts it.
//!     Err(KvError::Unavailable { reason: "circuit breaker open".into() })
//! };
//! // ... feed `result` to the member as usual, then drain the breaker's outputs:
//! while let Some(t) = breaker.poll_transition() {
//!     println!("store breaker {} -> {}", t.from, t.to); // log / metric
//! }
//! // and wake up at `breaker.poll_timeout()` to call `breaker.handle_timeout(now)`.
//! assert_eq!(breaker.state(), BreakerState::Closed); // one failure of five
//! # let _ = result;
//! ```
//!
//! The driver decides nothing: whether a call may start, and when the breaker opens and closes,
//! are all answered here, over the injected clock, and tested in virtual time.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

pub use crate::config::BreakerConfig;
use crate::machine::timer::TimerTable;
use crate::store::KvError;

/// Whether a store call that ended with `error` counts as a failure for the breaker: exactly the
/// connectivity errors ([`KvError::is_connectivity`]: `Timeout`, `Unavailable`). Every other
/// error is an answer from the store and counts as a success; the
/// [module documentation](self#which-errors-are-failures) gives the reason for each.
#[must_use]
pub fn counts_as_failure(error: &KvError) -> bool {
    error.is_connectivity()
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Normal operation: calls are allowed, consecutive failures are counted.
    Closed,
    /// The store is considered unreachable: calls are rejected until `open_timeout` has passed.
    Open,
    /// Probing: calls are allowed; enough successes in a row close the breaker, one failure
    /// opens it again.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"` (for logs and metric labels).
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change of a [`CircuitBreaker`], as returned by
/// [`poll_transition`](CircuitBreaker::poll_transition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// The `now` of the input that caused the change.
    pub at: Instant,
}

/// The breaker's only deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Open ends: the next `allow` or `handle_timeout` moves to HalfOpen.
    OpenEnds,
}

/// A circuit breaker over store calls, sans-IO: inputs carry `now`, outputs are polled. See the
/// [module documentation](self) for the transitions.
///
/// Call order, for each store call: [`allow`](Self::allow) before it starts (do not start it on
/// `false`); [`on_success`](Self::on_success) or [`on_failure`](Self::on_failure) with its result
/// (decided by [`counts_as_failure`]); then drain [`poll_transition`](Self::poll_transition).
/// Between calls, sleep until [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout), so the move to HalfOpen is reported even when no call
/// is attempted.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    success_threshold: u32,
    open_timeout: Duration,
    state: BreakerState,
    /// Consecutive failures while Closed.
    failures: u32,
    /// Consecutive successes while HalfOpen.
    successes: u32,
    /// `OpenEnds` is set exactly while the state is Open (unless the open time overflows).
    timers: TimerTable<Timer>,
    transitions: VecDeque<Transition>,
    rejected: u64,
}

impl CircuitBreaker {
    /// A closed breaker. A threshold of 0 (which config validation refuses) acts as 1.
    #[must_use]
    pub fn new(config: &BreakerConfig, _now: Instant) -> Self {
        CircuitBreaker {
            failure_threshold: config.failure_threshold.max(1),
            success_threshold: config.success_threshold.max(1),
            open_timeout: config.open_timeout,
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
            timers: TimerTable::new(),
            transitions: VecDeque::new(),
            rejected: 0,
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a store call may start at `now`; moves Open → HalfOpen when open_timeout has
    /// passed. A rejected call counts in [`rejected`](Self::rejected).
    #[must_use]
    pub fn allow(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => {
                self.rejected = self.rejected.saturating_add(1);
                false
            }
        }
    }

    /// A store call allowed by [`allow`](Self::allow) completed: it succeeded, or failed with
    /// an error for which [`counts_as_failure`] is `false`. Ignored while Open (the call started
    /// before the breaker opened).
    pub fn on_success(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed => self.failures = 0,
            BreakerState::HalfOpen => {
                self.successes = self.successes.saturating_add(1);
                if self.successes >= self.success_threshold {
                    self.enter(now, BreakerState::Closed);
                }
            }
            BreakerState::Open => {}
        }
    }

    /// A store call allowed by [`allow`](Self::allow) failed with an error for which
    /// [`counts_as_failure`] is `true`. Ignored while Open (the call started before the breaker
    /// opened, and the open time is not extended by it).
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.failure_threshold {
                    self.enter(now, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => self.enter(now, BreakerState::Open),
            BreakerState::Open => {}
        }
    }

    /// Moves Open → HalfOpen when the open time has passed at `now`; a spurious call does
    /// nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            match timer {
                Timer::OpenEnds => self.enter(now, BreakerState::HalfOpen),
            }
        }
    }

    /// When the open time ends (`Some` only while Open): call
    /// [`handle_timeout`](Self::handle_timeout) then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next state change not yet returned: every change, in order, each once.
    #[must_use]
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    /// How many calls [`allow`](Self::allow) has rejected since the breaker was made.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Enters `to`, resetting the counts and the timer, and queues the transition.
    fn enter(&mut self, now: Instant, to: BreakerState) {
        let from = self.state;
        self.state = to;
        self.failures = 0;
        self.successes = 0;
        match to {
            // An open time too long to represent as an `Instant` (validation keeps it below
            // `heartbeat_ttl`) never ends rather than panicking.
            BreakerState::Open => match now.checked_add(self.open_timeout) {
                Some(until) => self.timers.set(Timer::OpenEnds, until),
                None => self.timers.stop(Timer::OpenEnds),
            },
            BreakerState::Closed | BreakerState::HalfOpen => self.timers.stop(Timer::OpenEnds),
        }
        self.transitions.push_back(Transition { from, to, at: now });
    }
}

#[cfg(test)]
mod tests;
