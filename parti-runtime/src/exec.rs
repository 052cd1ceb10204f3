//! Runs the machines' I/O against a [`KvStore`]: every store operation as its own future, all in
//! flight together (a plan that touches a thousand workers is a thousand compare-and-set writes
//! on the wire at once, not a thousand round trips), and every open watch polled side by side.
//!
//! It decides nothing: it starts what it is asked to, in the order asked, and hands back each
//! result with the id it was asked with. A watch that was closed (`Unwatch`) delivers nothing
//! more, even an item that was already on its way.

use std::collections::HashSet;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use parti_core::machine::{IoAction, KvReply, KvRequest, KvResult, OpId, WatchId};
use parti_core::store::{BackendError, KvError, KvStore, KvWatch, WatchEvent};

/// A finished store operation.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) op: OpId,
    pub(crate) name: &'static str,
    pub(crate) result: KvResult,
    pub(crate) took: Duration,
    /// Answered without calling the store (the breaker turned it away).
    pub(crate) rejected: bool,
}

/// What the executor hands back.
#[derive(Debug)]
pub(crate) enum Output {
    /// A store operation finished.
    Kv(Completed),
    /// A watch delivered an item.
    Watch {
        watch: WatchId,
        event: Result<WatchEvent, KvError>,
    },
    /// A watch ended (`error: None`) or could not be opened (`Some`); it delivers nothing more.
    WatchEnded {
        watch: WatchId,
        error: Option<KvError>,
    },
}

type Opening = BoxFuture<'static, (WatchId, Result<KvWatch, KvError>)>;

pub(crate) struct Exec {
    store: Arc<dyn KvStore>,
    ops: FuturesUnordered<BoxFuture<'static, Completed>>,
    opening: FuturesUnordered<Opening>,
    open: Vec<(WatchId, KvWatch)>,
    /// Watches asked for and not closed (opening or open).
    wanted: HashSet<WatchId>,
    /// Where the round-robin over open watches starts next.
    next_watch: usize,
}

impl Exec {
    pub(crate) fn new(store: Arc<dyn KvStore>) -> Self {
        Exec {
            store,
            ops: FuturesUnordered::new(),
            opening: FuturesUnordered::new(),
            open: Vec::new(),
            wanted: HashSet::new(),
            next_watch: 0,
        }
    }

    /// Store operations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts `io`.
    pub(crate) fn run(&mut self, io: IoAction) {
        match io {
            IoAction::Kv { op, request } => {
                let name = request.name();
                let call = call(self.store.clone(), request);
                self.push(op, name, call, false);
            }
            IoAction::Watch {
                watch,
                bucket,
                keys,
            } => {
                self.wanted.insert(watch);
                let store = self.store.clone();
                self.opening
                    .push(async move { (watch, store.watch(&bucket, keys).await) }.boxed());
            }
            IoAction::Unwatch { watch } => {
                self.wanted.remove(&watch);
                self.open.retain(|(w, _)| *w != watch);
            }
            other => tracing::error!(
                ?other,
                "an I/O action this runtime does not know was skipped"
            ),
        }
    }

    /// Answers `op` with `result` without calling the store (a call the breaker refused).
    pub(crate) fn answer(&mut self, op: OpId, name: &'static str, result: KvResult) {
        self.push(op, name, async move { result }.boxed(), true);
    }

    fn push(
        &mut self,
        op: OpId,
        name: &'static str,
        call: BoxFuture<'static, KvResult>,
        rejected: bool,
    ) {
        self.ops.push(
            async move {
                let started = tokio::time::Instant::now();
                let result = call.await;
                Completed {
                    op,
                    name,
                    result,
                    took: started.elapsed(),
                    rejected,
                }
            }
            .boxed(),
        );
    }

    /// The next output. Pends while there is none (also when nothing is in flight). Cancel-safe:
    /// dropping the future loses nothing.
    pub(crate) async fn next(&mut self) -> Output {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        if let Poll::Ready(Some(done)) = self.ops.poll_next_unpin(cx) {
            return Poll::Ready(Output::Kv(done));
        }
        while let Poll::Ready(Some((watch, opened))) = self.opening.poll_next_unpin(cx) {
            if !self.wanted.contains(&watch) {
                continue; // closed while it was opening: drop it
            }
            match opened {
                Ok(stream) => self.open.push((watch, stream)),
                Err(error) => {
                    self.wanted.remove(&watch);
                    return Poll::Ready(Output::WatchEnded {
                        watch,
                        error: Some(error),
                    });
                }
            }
        }
        let n = self.open.len();
        for k in 0..n {
            let i = (self.next_watch + k) % n;
            let watch = self.open[i].0;
            match self.open[i].1.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => {
                    self.next_watch = i + 1;
                    return Poll::Ready(Output::Watch { watch, event });
                }
                Poll::Ready(None) => {
                    drop(self.open.swap_remove(i));
                    self.wanted.remove(&watch);
                    return Poll::Ready(Output::WatchEnded { watch, error: None });
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// One store call for a request.
fn call(store: Arc<dyn KvStore>, request: KvRequest) -> BoxFuture<'static, KvResult> {
    async move {
        match request {
            KvRequest::Entry { bucket, key } => {
                store.entry(&bucket, &key).await.map(KvReply::Entry)
            }
            KvRequest::Create { bucket, key, value } => store
                .create(&bucket, &key, value)
                .await
                .map(KvReply::Written),
            KvRequest::Update {
                bucket,
                key,
                value,
                expected,
            } => store
                .update(&bucket, &key, value, expected)
                .await
                .map(KvReply::Written),
            KvRequest::Put { bucket, key, value } => {
                store.put(&bucket, &key, value).await.map(KvReply::Written)
            }
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => store
                .delete(&bucket, &key, expected)
                .await
                .map(|()| KvReply::Deleted),
            KvRequest::Keys { bucket, prefix } => {
                store.keys(&bucket, &prefix).await.map(KvReply::Keys)
            }
            other => Err(KvError::Backend(BackendError::msg(format!(
                "a store request this runtime does not know: {}",
                other.name()
            )))),
        }
    }
    .boxed()
}
