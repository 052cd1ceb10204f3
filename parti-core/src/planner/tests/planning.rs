//! Planning (PROTOCOL.md §6).

use super::harness::*;
use crate::planner::{PlanReason, PlannerState};
use crate::records::{Lifecycle, Phase};
use crate::types::Version;

#[test]
fn cold_start_covers_at_once_then_publishes_the_final_plan_after_the_window() {
    let mut s = Sim::cold(&[0, 1], parts(4));
    // Immediate coverage: one wave (version 1) with every partition, then meta (cold start).
    let recs = s.records_since(0);
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter()
            .all(|(_, r)| r.version == Version(1) && r.phase == Phase::Grant)
    );
    assert_eq!(s.holds_of(0), [pid(0), pid(2)].into());
    assert_eq!(s.holds_of(1), [pid(1), pid(3)].into());
    assert_eq!(s.published(), vec![(PlanReason::ColdStart, Version(1))]);
    assert_eq!(s.p.lifecycle(), Lifecycle::ColdStart);
    assert_eq!(s.p.state(), PlannerState::Scaling);
    s.run_to(secs(29));
    assert_eq!(s.published().len(), 1);
    s.run_to(secs(31));
    assert_eq!(s.p.lifecycle(), Lifecycle::Settled);
    assert_eq!(s.published().last().unwrap().0, PlanReason::ColdStartFinal);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
