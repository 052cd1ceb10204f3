//! Invariant 1, exclusive ownership (policy `Fence`): at no instant do two members believe they
//! own the same partition.
//!
//! "Believe" is the application model's view: a partition is owned from the moment
//! `on_assigned` starts until `on_revoked` has finished, or until the member reports
//! `OwnershipLost` (its local fence), whichever comes first. A paused process does nothing, so its
//! frozen belief is compared when it resumes — after its overdue timers ran, exactly as a real
//! process would act on them first.

use std::collections::HashMap;
use std::time::Duration;

use parti_core::PartitionId;

use super::Violation;

/// Who believes they own what.
#[derive(Debug, Default)]
pub struct ExclusiveOwnership {
    owners: HashMap<PartitionId, Vec<usize>>,
}

impl ExclusiveOwnership {
    /// The invariant's name.
    pub const NAME: &'static str = "exclusive-ownership";

    /// `node` starts believing it owns `p`; `active(m)` says whether process `m` runs now.
    pub fn gain(
        &mut self,
        at: Duration,
        node: usize,
        p: &PartitionId,
        active: impl Fn(usize) -> bool,
        describe: impl Fn(usize) -> String,
    ) -> Option<Violation> {
        let list = self.owners.entry(p.clone()).or_default();
        let other = list.iter().copied().find(|m| *m != node && active(*m));
        if !list.contains(&node) {
            list.push(node);
        }
        other.map(|m| Violation {
            invariant: Self::NAME,
            at,
            node: Some(node),
            detail: format!(
                "partition {p} believed owned by {} and by {}",
                describe(node),
                describe(m)
            ),
        })
    }

    /// `node` no longer believes it owns `p`.
    pub fn lose(&mut self, node: usize, p: &PartitionId) {
        if let Some(list) = self.owners.get_mut(p) {
            list.retain(|m| *m != node);
            if list.is_empty() {
                self.owners.remove(p);
            }
        }
    }

    /// `node` resumed (or otherwise became active again) holding `held`: compare with the others.
    pub fn recheck<'a>(
        &mut self,
        at: Duration,
        node: usize,
        held: impl Iterator<Item = &'a PartitionId>,
        active: impl Fn(usize) -> bool,
        describe: impl Fn(usize) -> String,
    ) -> Option<Violation> {
        for p in held {
            if let Some(list) = self.owners.get(p)
                && let Some(m) = list.iter().copied().find(|m| *m != node && active(*m))
            {
                return Some(Violation {
                    invariant: Self::NAME,
                    at,
                    node: Some(node),
                    detail: format!(
                        "partition {p} believed owned by {} (resumed) and by {}",
                        describe(node),
                        describe(m)
                    ),
                });
            }
        }
        None
    }
}
