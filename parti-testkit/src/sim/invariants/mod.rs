//! The protocol's invariants (PROTOCOL.md §10), one per file, checked as the simulation runs.
//!
//! Each checker keeps the little state it needs and is fed by the world at the moment something
//! relevant happens (a partition is believed owned, a member's step ended, a record was written);
//! a broken rule becomes a [`Violation`]. The whole-cluster rules (coverage, no churn, bounded
//! reaction) are checked at the instants the heal phase defines.

mod bounded_reaction;
mod coverage;
mod exclusive_ownership;
mod monotonic;
mod no_churn;
mod one_leader_per_term;
mod unique_identity;

use std::fmt;
use std::time::Duration;

pub use bounded_reaction::BoundedReaction;
pub use coverage::Coverage;
pub use exclusive_ownership::ExclusiveOwnership;
pub use monotonic::Monotonic;
pub use no_churn::NoChurn;
pub use one_leader_per_term::OneLeaderPerTerm;
pub use unique_identity::UniqueIdentity;

/// The invariants, by name (as printed and as accepted by tests).
pub const NAMES: [&str; 7] = [
    ExclusiveOwnership::NAME,
    Coverage::NAME,
    Monotonic::NAME,
    OneLeaderPerTerm::NAME,
    UniqueIdentity::NAME,
    NoChurn::NAME,
    BoundedReaction::NAME,
];

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (one of [`NAMES`]).
    pub invariant: &'static str,
    /// Simulated time.
    pub at: Duration,
    /// The simulated process involved, if one is.
    pub node: Option<usize>,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at {:.6}s", self.invariant, self.at.as_secs_f64())?;
        if let Some(n) = self.node {
            write!(f, " n{n}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Every checker of a run.
#[derive(Debug, Default)]
pub struct Checks {
    /// Invariant 1.
    pub exclusive: ExclusiveOwnership,
    /// Invariant 2.
    pub coverage: Coverage,
    /// Invariant 3.
    pub monotonic: Monotonic,
    /// Invariant 4.
    pub leaders: OneLeaderPerTerm,
    /// Invariant 5.
    pub identity: UniqueIdentity,
    /// Invariant 6.
    pub churn: NoChurn,
    /// Invariant 7.
    pub reaction: BoundedReaction,
    /// Everything found so far.
    pub violations: Vec<Violation>,
}

impl Checks {
    /// Records a violation (at most 50 per run are kept).
    pub fn report(&mut self, v: Violation) {
        if self.violations.len() < 50 {
            self.violations.push(v);
        }
    }
}
