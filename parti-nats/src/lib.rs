//! parti over NATS JetStream.
//!
//! **What this crate is.** The production backend of parti: [`NatsStore`], a
//! [`KvStore`](parti_core::store::KvStore) (the port defined in `parti_core::store`) over NATS
//! JetStream Key-Value with async-nats; and [`PartitionConsumer`] (module [`consumer`]), an
//! [`AssignmentHandler`](parti_core::handler::AssignmentHandler) that has each partition's owner
//! consume that partition's messages from a JetStream stream, one durable consumer per
//! partition, released before the partition moves so that nothing is skipped or repeated.
//!
//! **What it is not.** It makes no coordination decisions (those live in `parti-core`) and runs
//! no cluster (that is `parti-runtime`). It is the only crate that sees async-nats types; its
//! API shows the client and connect options its constructors take (so credentials, TLS and
//! reconnect policy pass through) and, in the consumer, the JetStream message a handler
//! receives ([`consumer::Delivery::message`]) and its headers.
//!
//! # What `NatsStore` guarantees
//!
//! - **Supported servers**: nats-server 2.10 or newer, checked at connect; an older server is
//!   refused with [`ConnectError::UnsupportedServer`] naming the version found.
//! - **Buckets** are provisioned from a [`BucketSpec`](parti_core::store::BucketSpec): created,
//!   or checked; an existing bucket with another max age, history, replica count or storage is
//!   reported as [`KvError::BucketMismatch`](parti_core::store::KvError::BucketMismatch), or
//!   updated under [`OnMismatch::Reconcile`](parti_core::store::OnMismatch::Reconcile).
//! - **Timeouts**: every call is bounded, from start to return, by
//!   [`NatsStoreConfig::op_timeout`] — one deadline for everything it does inside (a `create`
//!   over a tombstone publishes, re-reads and publishes again; an `update` that conflicts
//!   re-reads the key). A timed-out write is
//!   [`KvError::Timeout`](parti_core::store::KvError::Timeout) — an *unknown outcome*:
//!   async-nats may still deliver it after reconnecting — and so is a write whose connection
//!   broke after it was sent (`BrokenPipe`). It is never retried by the store (only refusals
//!   that prove nothing was stored are sent again, within the same deadline). While the client
//!   is disconnected, operations fail at once with `Unavailable` and are not sent
//!   ([`NatsStoreConfig::fail_fast_when_disconnected`]). A store used by parti members is built
//!   with [`NatsStoreConfig::from_config`] from the members' own `parti_core::Config`, so its
//!   timeout is their `operation_timeout`: one source of truth.
//! - **Provisioning** returns once the bucket's stream answers writes through the client's
//!   server (a probe write that is certainly refused), so the first write after it never meets
//!   "no responders" on a freshly created replicated bucket. Its requests are idempotent, so
//!   one whose answer is lost (a connection replaced while it was on its way, a meta leader
//!   elected again) is asked again after a quarter of the timeout (at least 1 s) rather than
//!   waited for until the end; a create or update found done afterwards is reported as this
//!   call's (`Created`, `Reconciled`).
//! - **Concurrency**: no lock around the client; independent operations are pipelined.
//! - **Reads** (`entry`) go through the stream leader, so a read never misses a write
//!   acknowledged before it began (no direct-get follower lag).
//! - **Watches** deliver the snapshot marker also on an empty bucket, survive disconnects and
//!   server restarts (resuming after the last revision delivered, with backoff, never twice),
//!   and say [`WatchEvent::Resync`](parti_core::store::WatchEvent::Resync) — followed by a fresh
//!   snapshot and its marker, even if the first attempts to start it fail — when the server
//!   lost the history they needed: the stream's last revision is below the last one delivered,
//!   or it is another stream (a bucket deleted and created again, a memory bucket lost in a
//!   restart and provisioned again), also when the disconnect was too short to be seen as one.
//!   A watch that cannot be re-established yields an `Err(KvError::Unavailable)` item every
//!   [`NatsStoreConfig::watch_unhealthy_after`] (default 5 s) and carries on; a bucket that is
//!   gone is reported once as `Err(KvError::BucketNotFound)`, and the watch resyncs when it
//!   comes back.
//! - **Connection state** changes are reported by
//!   [`KvStore::connection`](parti_core::store::KvStore::connection), every transition to every
//!   reader (each has its own queue): a reader never sees the same state twice in a row, and a
//!   disconnect that was over before it looked is still reported.
//! - **Errors**: every async-nats error kind is mapped onto
//!   [`KvError`](parti_core::store::KvError) in one module.
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade (nothing is recorded
//! unless the application installs a recorder):
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | `parti_watch_restarts_total` | counter | `bucket` | watch consumers re-established (after a reconnect, a consumer error, a resync) |
//! | `parti_watch_failures_total` | counter | `bucket` | failed attempts to re-establish a watch consumer (each also retried with backoff; logged at `warn!` after 1, 2, 4, 8, … in a row) |
//!
//! # Batched publication
//!
//! A plan that touches many workers is published as one compare-and-set `update` per worker
//! key, all in flight at once on the one connection (the store takes `&self` and holds no lock;
//! async-nats pipelines the publishes and matches each acknowledgement to its request). Each
//! write succeeds or fails on its own, with its own
//! [`KvError::RevisionMismatch`](parti_core::store::KvError::RevisionMismatch) and current
//! revision. Measured with `cargo run -p parti-testkit --release --example publish_batch`
//! (nats-server 2.15.1, one node, file storage, loopback; a 2-core machine shared with other
//! builds, load average 2.5–6), 1,000 updates of 256 bytes per plan:
//!
//! | plan | median | p90 | best |
//! |---|---|---|---|
//! | sequential (each write awaited) | 225–320 ms | 300–390 ms | 150–255 ms |
//! | pipelined (all in flight) | 27–37 ms | 36–57 ms | 17–28 ms |
//! | the same through async-nats directly | 23–32 ms | 31–50 ms | 16–24 ms |
//!
//! Pipelining is 7–10× faster; the store costs ~15 % over the bare client. The 25 ms target
//! for a pipelined plan was met by the best runs only on that loaded machine.
//!
//! parti does **not** use the server's atomic batch publish (ADR-50, nats-server 2.12+: messages
//! carrying `Nats-Batch-Id` / `Nats-Batch-Sequence`, the last one `Nats-Batch-Commit`, stored
//! all or none). Per-key compare-and-set does work inside a batch — the server checks
//! `Nats-Expected-Last-Subject-Sequence` at commit against the stream as it was before the
//! batch, as long as no earlier message of the batch writes the same subject — but it does not
//! fit parti:
//!
//! - one stale key rejects the *whole* batch with one error, which names no key and no current
//!   revision, while the planner needs each worker's outcome and current revision;
//! - the stream must be created with `allow_atomic` (a server 2.12+ stream setting that
//!   async-nats 0.51's `kv::Config` does not expose), and parti supports servers from 2.10;
//! - a batch holds at most 1,000 messages and a stream at most 50 batches in flight, so a plan
//!   for more than 1,000 workers would be split anyway, losing the all-or-nothing property;
//! - async-nats 0.51 has the header names and the stream flag but no batch publishing API
//!   (that lives in the separate `jetstream-extra` crate);
//! - parti does not need atomicity across keys: each worker's record is its own
//!   compare-and-set carrying the plan's term and version, and a partition is granted only
//!   after its revocation was acknowledged (PROTOCOL.md §7), so no handoff's safety rests on
//!   two keys changing together; a publication that fails part-way is retried. (PROTOCOL.md §7
//!   allows the grant step to be one atomic batch on servers that have it; for the reasons
//!   above parti does not take that option.)
//!
//! Sources: ADR-50 "JetStream Batch Publishing" in nats-io/nats-architecture-and-design
//! (`adr/ADR-50.md`: headers, commit-time checks of expected sequences, the 1,000-message and
//! 50-batch limits, `allow_atomic`); async-nats 0.51.0 (`src/header.rs` `NATS_BATCH_*`,
//! `src/jetstream/stream.rs` `allow_atomic_publish`); the `jetstream-extra` crate docs
//! (`batch_publish`).
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

mod config;
mod connection;
pub mod consumer;
mod error;
mod provision;
mod shared;
mod store;
mod watch;

pub use config::NatsStoreConfig;
pub use consumer::{PartitionConsumer, PartitionConsumerBuilder};
pub use error::ConnectError;
pub use store::NatsStore;
