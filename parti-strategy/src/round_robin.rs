//! [`RoundRobin`]: partition `i` (in id order) to worker `i mod W` (in id order).

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

use crate::canon::{self, Workers};

/// Deals the partitions, sorted by id, to the workers, sorted by id. Exact count balance, but a
/// join or a leave shifts almost everything: use it for tests and tiny fleets.
///
/// Unlike the Go library's `RoundRobin` (which deals in input order, so its result depends on the
/// order the leader listed the heartbeats), this one sorts first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundRobin;

impl AssignmentStrategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        let workers = Workers::new(input)?;
        let order = canon::partitions_by_id(input.partitions);
        canon::check_sorted_unique(input.partitions, &order)?;
        let mut owners = vec![0; input.partitions.len()];
        for (k, &p) in order.iter().enumerate() {
            owners[p] = workers.at_rank(k % workers.len());
        }
        Ok(Plan::from_owners(owners))
    }
}
