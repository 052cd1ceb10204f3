//! Tools that prove parti correct.
//!
//! **What this crate is.** The deterministic simulator, the protocol invariant checkers, the real
//! `nats-server` process harness, a chaos TCP proxy, and the `KvStore` contract suite that every
//! store implementation is held to.
//!
//! **What it is not.** Not part of a production build: applications depend on it only as a
//! dev-dependency.
//!
//! Modules: the [`contract`] suite, the [`nats`] server harness, the
//! [`chaos`] proxy, the deterministic simulator ([`sim`], with the `parti-sim` binary), and for
//! runtime scenarios the ownership [`ledger`], in-process [`cluster`]s of `Manager`s and a
//! [`faulty`] store wrapper that cuts workers off the embedded store.

pub mod chaos;
pub mod cluster;
pub mod contract;
pub mod faulty;
pub mod ledger;
pub mod nats;
pub mod sim;
