//! Invariant 2, coverage: once faults stop and membership has been still for
//! `window + heartbeat_ttl + emergency_grace + ε`, every partition is owned by exactly one live
//! member (and nothing outside the catalog is owned).

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::PartitionId;

use super::Violation;

/// Coverage checks made at the heal phase's instants.
#[derive(Debug, Default)]
pub struct Coverage {
    /// How many instants were checked.
    pub checks: u64,
}

impl Coverage {
    /// The invariant's name.
    pub const NAME: &'static str = "coverage";

    /// Checks `believers` (partition → how many live members believe they own it) against the
    /// catalog.
    pub fn check(
        &mut self,
        at: Duration,
        catalog: &[PartitionId],
        believers: &BTreeMap<PartitionId, usize>,
        why: &str,
    ) -> Option<Violation> {
        self.checks += 1;
        let missing: Vec<&PartitionId> = catalog
            .iter()
            .filter(|p| believers.get(*p).copied().unwrap_or(0) == 0)
            .collect();
        let doubled: Vec<&PartitionId> = believers
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| p)
            .collect();
        let extra = believers.len() - (catalog.len() - missing.len());
        if missing.is_empty() && doubled.is_empty() && extra == 0 {
            return None;
        }
        let show = |v: &[&PartitionId]| {
            let mut s: Vec<String> = v.iter().take(5).map(|p| p.to_string()).collect();
            if v.len() > 5 {
                s.push(format!("… {} in all", v.len()));
            }
            s.join(", ")
        };
        Some(Violation {
            invariant: Self::NAME,
            at,
            node: None,
            detail: format!(
                "{why}: {} of {} partitions unowned [{}], {} owned twice [{}], {} owned outside the catalog",
                missing.len(),
                catalog.len(),
                show(&missing),
                doubled.len(),
                show(&doubled),
                extra
            ),
        })
    }
}
