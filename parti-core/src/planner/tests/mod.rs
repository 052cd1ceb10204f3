//! Planner tests: pure, virtual time, exact writes (STYLE.md §14).

mod election;
mod go_ports;
mod handoff;
mod harness;
mod liveness;
mod planning;
mod prop;
