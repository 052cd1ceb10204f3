//! Invariant 7, bounded reaction: a crash's partitions are owned elsewhere within
//! `heartbeat_ttl + emergency_grace +` publication time.
//!
//! Measured on probe crashes made in a healthy, converged cluster (a crash during chaos has no
//! bound: the store may be down). For a crashed leader the election comes first, so its bound
//! adds `election_ttl`.

use std::collections::BTreeSet;
use std::time::Duration;

use parti_core::PartitionId;

use super::Violation;

/// One probe at a time.
#[derive(Debug, Default)]
pub struct BoundedReaction {
    probe: Option<Probe>,
    /// Reaction times measured.
    pub measured: Vec<Duration>,
}

#[derive(Debug)]
struct Probe {
    node: usize,
    at: Duration,
    bound: Duration,
    pending: BTreeSet<PartitionId>,
}

impl BoundedReaction {
    /// The invariant's name.
    pub const NAME: &'static str = "bounded-reaction";

    /// Process `node` was crashed at `at` holding `held`; they must be owned elsewhere within
    /// `bound`.
    pub fn crashed(
        &mut self,
        at: Duration,
        node: usize,
        held: BTreeSet<PartitionId>,
        bound: Duration,
    ) {
        self.probe = Some(Probe {
            node,
            at,
            bound,
            pending: held,
        });
    }

    /// Another process started owning `p`.
    pub fn owned(&mut self, at: Duration, node: usize, p: &PartitionId) {
        if let Some(pr) = &mut self.probe
            && pr.node != node
            && pr.pending.remove(p)
            && pr.pending.is_empty()
        {
            self.measured.push(at - pr.at);
        }
    }

    /// A partition left the catalog: nobody needs to take it.
    pub fn removed(&mut self, p: &PartitionId) {
        if let Some(pr) = &mut self.probe {
            pr.pending.remove(p);
        }
    }

    /// The probe's deadline: fails if something is still unowned.
    pub fn deadline(&mut self, at: Duration) -> Option<Violation> {
        let pr = self.probe.take()?;
        if pr.pending.is_empty() {
            return None;
        }
        Some(Violation {
            invariant: Self::NAME,
            at,
            node: Some(pr.node),
            detail: format!(
                "{} partitions of n{} (crashed at {:.3}s) still not owned elsewhere after {:?} (e.g. {})",
                pr.pending.len(),
                pr.node,
                pr.at.as_secs_f64(),
                pr.bound,
                pr.pending
                    .iter()
                    .next()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        })
    }
}
