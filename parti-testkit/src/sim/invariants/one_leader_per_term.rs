//! Invariant 4, one leader per term, and no record of a lower term is applied after a higher one
//! is known.
//!
//! The first half is checked after every step of a member: the term it leads must not be led by
//! another process. The second is checked where the simulator feeds a member's ordered
//! assignments watch: a record whose term is below the highest term already delivered in that
//! stream must change nothing (no delivery, no new applied version).

use std::collections::HashMap;
use std::time::Duration;

use parti_core::{InstanceId, Term, Version};

use super::Violation;

/// Leaders by term.
#[derive(Debug, Default)]
pub struct OneLeaderPerTerm {
    leaders: HashMap<Term, (InstanceId, usize)>,
    /// Stale records fed to members (and refused, as they must be).
    pub stale_records: u64,
}

impl OneLeaderPerTerm {
    /// The invariant's name.
    pub const NAME: &'static str = "one-leader-per-term";

    /// Process `node` (`instance`) leads `term` now.
    pub fn leads(
        &mut self,
        at: Duration,
        node: usize,
        instance: InstanceId,
        term: Term,
    ) -> Option<Violation> {
        let (first, first_node) = *self.leaders.entry(term).or_insert((instance, node));
        (first != instance).then(|| Violation {
            invariant: Self::NAME,
            at,
            node: Some(node),
            detail: format!("term {term:?} led by n{first_node} and by n{node}"),
        })
    }

    /// A record of `record_term` was fed after `stream_term` was seen; the member's applied
    /// version went from `before` to `after` and it emitted `deliveries` deliveries.
    #[allow(clippy::too_many_arguments)]
    pub fn stale_record(
        &mut self,
        at: Duration,
        node: usize,
        record_term: Term,
        stream_term: Term,
        before: Version,
        after: Version,
        deliveries: usize,
    ) -> Option<Violation> {
        self.stale_records += 1;
        (before != after || deliveries > 0).then(|| Violation {
            invariant: Self::NAME,
            at,
            node: Some(node),
            detail: format!(
                "record of term {record_term:?} acted on after term {stream_term:?} was seen \
                 (applied {before:?} -> {after:?}, {deliveries} deliveries)"
            ),
        })
    }
}
