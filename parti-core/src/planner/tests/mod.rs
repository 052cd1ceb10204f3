//! Planner tests: pure, virtual time, exact writes (STYLE.md §14).

mod harness;
mod planning;
