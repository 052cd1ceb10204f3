//! Named deterministic scenarios: the Go integration suite's situations, replayed in virtual
//! time with their assertions (`../shared/reference/go-parti-tests-and-targets.md` §4, §10).

use std::fmt;
use std::time::Duration;

/// What a scenario found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The scenario.
    pub name: &'static str,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Failed assertions and invariant violations.
    pub failures: Vec<String>,
    /// Measurements worth printing.
    pub notes: Vec<String>,
}

impl Outcome {
    /// No failure.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} ({:.1}s simulated)",
            self.name,
            if self.passed() { "ok" } else { "FAILED" },
            self.simulated.as_secs_f64()
        )?;
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        for x in &self.failures {
            writeln!(f, "  FAIL {x}")?;
        }
        Ok(())
    }
}

/// A scenario: runs with a seed (latencies and clock rates), returns what it found.
pub type Scenario = fn(u64) -> Outcome;

/// Every named scenario.
pub const ALL: &[(&str, Scenario)] = &[];

/// The scale run.
#[must_use]
pub fn scale(_seed: u64, _members: usize, _partitions: usize) -> Outcome {
    Outcome::default()
}
