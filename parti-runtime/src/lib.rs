//! The tokio driver of parti: start a worker, and it takes part in the cluster.
//!
//! **What this crate is.** The [`Manager`] handle an application holds, the driver task that
//! feeds the pure machines of `parti-core` with events and executes their actions, the
//! application's [`AssignmentHandler`] and [`PartitionSource`], the embedded in-process
//! [`MemoryStore`], and metrics (see [`metrics`] for every name).
//!
//! **What it is not.** It decides nothing: every coordination decision is made in `parti-core`
//! (the `Member` and `Planner` machines the simulator proves); this crate runs them. It never
//! links async-nats (the NATS backend is `parti-nats`; give its `NatsStore` to
//! [`ManagerBuilder::store`]).
//!
//! # Starting a worker
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use parti_core::Config;
//! use parti_core::records::OwnedPartition;
//! use parti_runtime::{AssignmentHandler, HandlerError, Manager, MemoryStore, StaticSource};
//!
//! struct Work;
//!
//! #[async_trait::async_trait]
//! impl AssignmentHandler for Work {
//!     async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
//!         // start consuming these partitions (carry p.fence into downstream writes)
//!         Ok(())
//!     }
//!     async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
//!         // stop, and return only once nothing works on them any more
//!         Ok(())
//!     }
//! }
//!
//! let worker = Manager::builder(Config::fast())
//!     .store(MemoryStore::new())
//!     .partitions(StaticSource::numbered(16))
//!     .handler(Work)
//!     .start()
//!     .await?;
//! assert!(worker.worker_id().is_some());
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//!
//! One driver task per worker owns its `Member` by `&mut` and `select!`s over the handle's
//! commands, the handler's reports, the store's connection state, the next deadline, finished
//! store operations and watch items, and partition listings. Store operations are all in flight
//! together (a plan touching a thousand workers is a thousand writes on the wire at once).
//! The application's callbacks run on their own task, one at a time, in order; heartbeats,
//! renewals and leadership go on while one runs.
//!
//! Every public async method of [`Manager`] says whether it is cancel-safe.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod driver;
mod error;
mod exec;
mod handler;
mod manager;
pub mod memory;
pub mod metrics;
mod source;
mod status;

pub use error::{Error, SourceError, StartError};
pub use handler::{AssignmentHandler, Callback, HandlerError, NoopHandler};
pub use manager::{Manager, ManagerBuilder, NOTIFICATION_BUFFER};
pub use memory::MemoryStore;
pub use source::{PartitionSource, StaticSource};
pub use status::{Health, Notification, Status};
