//! The tokio driver of parti.
//!
//! **What this crate is.** The `Manager` handle an application holds, the driver task that feeds
//! the pure machines of `parti-core` with events and executes their actions, the embedded
//! in-process `MemoryStore`, and metrics.
//!
//! **What it is not.** It decides nothing: every coordination decision is made in `parti-core`.
//! It never links async-nats (the NATS backend is `parti-nats`).
//!
//! Status: [`MemoryStore`] is here; the driver and the `Manager` arrive with later issues.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod memory;

pub use memory::MemoryStore;
