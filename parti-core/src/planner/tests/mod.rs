//! Planner tests: pure, virtual time, exact writes (STYLE.md §14).

mod election;
mod fixtures;
mod go_ports;
mod handoff;
mod harness;
mod liveness;
mod members;
mod oversize;
mod planning;
mod prop;
