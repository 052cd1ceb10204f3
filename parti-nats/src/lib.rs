//! parti over NATS JetStream.
//!
//! **What this crate is.** The production backend of parti: [`NatsStore`], a
//! [`KvStore`](parti_core::store::KvStore) (the port defined in `parti_core::store`) over NATS
//! JetStream Key-Value with async-nats.
//!
//! **What it is not.** It makes no coordination decisions (those live in `parti-core`) and runs
//! no cluster (that is `parti-runtime`). It is the only crate that sees async-nats types, and it
//! shows none of them in its API except the client and connect options its constructors take
//! (so credentials, TLS and reconnect policy pass through).
//!
//! # What `NatsStore` guarantees
//!
//! - **Supported servers**: nats-server 2.10 or newer, checked at connect; an older server is
//!   refused with [`ConnectError::UnsupportedServer`] naming the version found.
//! - **Buckets** are provisioned from a [`BucketSpec`](parti_core::store::BucketSpec): created,
//!   or checked; an existing bucket with another max age, history, replica count or storage is
//!   reported as [`KvError::BucketMismatch`](parti_core::store::KvError::BucketMismatch), or
//!   updated under [`OnMismatch::Reconcile`](parti_core::store::OnMismatch::Reconcile).
//! - **Timeouts**: every operation is bounded by [`NatsStoreConfig::op_timeout`]. A timed-out
//!   write is [`KvError::Timeout`](parti_core::store::KvError::Timeout) — an *unknown outcome*:
//!   async-nats may still deliver it after reconnecting — and is never retried by the store
//!   (only refusals that prove nothing was stored are sent again, within the timeout).
//!   While the client is disconnected, operations fail at once with `Unavailable` and are not
//!   sent ([`NatsStoreConfig::fail_fast_when_disconnected`]).
//! - **Concurrency**: no lock around the client; independent operations are pipelined.
//! - **Reads** (`entry`) go through the stream leader, so a read never misses a write
//!   acknowledged before it began (no direct-get follower lag).
//! - **Watches** deliver the snapshot marker also on an empty bucket, survive disconnects and
//!   server restarts (resuming after the last revision delivered, with backoff, never twice),
//!   and say [`WatchEvent::Resync`](parti_core::store::WatchEvent::Resync) when the server lost
//!   the history they needed.
//! - **Connection state** changes are reported by
//!   [`KvStore::connection`](parti_core::store::KvStore::connection).
//! - **Errors**: every async-nats error kind is mapped onto
//!   [`KvError`](parti_core::store::KvError) in one module.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use parti_core::store::{BucketSpec, KvError, KvStore, OnMismatch, StorageKind};
//! use parti_nats::{NatsStore, NatsStoreConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NatsStoreConfig::default().with_op_timeout(Duration::from_secs(2));
//! let store = NatsStore::connect_url("nats://127.0.0.1:4222", config).await?;
//! let spec = BucketSpec {
//!     name: "parti-ids".into(),
//!     history: 1,
//!     max_age: Some(Duration::from_secs(30)),
//!     replicas: 1,
//!     storage: StorageKind::File,
//! };
//! store.provision(&spec, OnMismatch::Fail).await?;
//! let rev = store.create("parti-ids", "worker-1", b"me".to_vec()).await?;
//! match store.update("parti-ids", "worker-1", b"still me".to_vec(), rev).await {
//!     Ok(_) => {}
//!     Err(KvError::RevisionMismatch { current }) => println!("lost it; now at {current:?}"),
//!     // A timeout is an unknown outcome: re-read before retrying.
//!     Err(KvError::Timeout) => { let _ = store.entry("parti-ids", "worker-1").await?; }
//!     Err(other) => return Err(other.into()),
//! }
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
mod store;
mod watch;

pub use error::ConnectError;
pub use store::{NatsStore, NatsStoreConfig};
