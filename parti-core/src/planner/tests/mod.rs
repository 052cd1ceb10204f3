//! Planner tests: pure, virtual time, exact writes (STYLE.md §14).

mod election;
mod handoff;
mod harness;
mod liveness;
mod planning;
