//! The `Member` machine in virtual time: identity, election, applying records, disconnect
//! policies, degraded mode and the lifecycle, one member against an in-memory store
//! (`harness`), and several members together (`cluster`). Pure: no async, no sleeps
//! (STYLE.md §14).

// The harness is a private module of this test crate; `pub` there means "for the test modules".
#![allow(unreachable_pub)]

#[path = "member_machine/apply.rs"]
mod apply;
#[path = "member_machine/bounds.rs"]
mod bounds;
#[path = "member_machine/cluster.rs"]
mod cluster;
#[path = "member_machine/cluster_scenarios.rs"]
mod cluster_scenarios;
#[path = "member_machine/degraded.rs"]
mod degraded;
#[path = "member_machine/disconnect.rs"]
mod disconnect;
#[path = "member_machine/driver_api.rs"]
mod driver_api;
#[path = "member_machine/election.rs"]
mod election;
#[path = "member_machine/harness.rs"]
mod harness;
#[path = "member_machine/identity.rs"]
mod identity;
#[path = "member_machine/lifecycle.rs"]
mod lifecycle;
#[path = "member_machine/properties.rs"]
mod properties;
#[path = "member_machine/watch_end.rs"]
mod watch_end;
#[path = "member_machine/with_planner.rs"]
mod with_planner;
