//! Invariant 6, no churn: with no membership or catalog change, nothing is published.
//!
//! The simulator watches the assignments bucket itself; during a still period (after the heal
//! phase converged) no write may reach it and no plan may be published.

use std::time::Duration;

use super::Violation;

/// Writes to the assignments bucket.
#[derive(Debug, Default)]
pub struct NoChurn {
    /// Every write to the assignments bucket so far.
    pub writes: u64,
    still_from: Option<(Duration, u64)>,
}

impl NoChurn {
    /// The invariant's name.
    pub const NAME: &'static str = "no-churn";

    /// A write reached the assignments bucket.
    pub fn written(&mut self) {
        self.writes += 1;
    }

    /// The cluster is still from now on.
    pub fn begin_still(&mut self, at: Duration) {
        self.still_from = Some((at, self.writes));
    }

    /// Ends a still period: nothing may have been written since [`NoChurn::begin_still`].
    pub fn end_still(&mut self, at: Duration, publications: u64) -> Option<Violation> {
        let (from, writes) = self.still_from.take()?;
        let n = self.writes - writes;
        (n > 0 || publications > 0).then(|| Violation {
            invariant: Self::NAME,
            at,
            node: None,
            detail: format!(
                "{n} assignment writes and {publications} publications between {:.3}s and {:.3}s \
                 with no membership or catalog change",
                from.as_secs_f64(),
                at.as_secs_f64()
            ),
        })
    }
}
