//! parti over NATS JetStream.
//!
//! **What this crate is.** The production backend of parti: a `KvStore` (the port defined in
//! `parti_core::store`) over NATS JetStream Key-Value, and a helper that keeps one durable
//! JetStream consumer per worker following that worker's partitions.
//!
//! **What it is not.** It makes no coordination decisions (those live in `parti-core`) and runs
//! no cluster (that is `parti-runtime`). It is the only crate that sees async-nats types.
//!
//! Status: the store arrives with the store issue; this crate holds only this description today.
