//! The network and the store: KV operations with seeded latency, failures and unknown
//! outcomes; watches with delays and batches.

use std::time::Duration;

use parti_core::WorkerId;
use parti_core::machine::{IoEvent, KvReply, KvRequest, KvResult, OpId, WatchId};
use parti_core::member::Event;
use parti_core::records::{AssignmentRecord, ClusterMeta, Names, Record, TermCounter};
use parti_core::store::model::WatcherId;
use parti_core::store::{KvError, KvOperation, WatchEvent, WatchKeys};

use super::{
    Ev, EventKind, Status, World, bucket_of, describe, dur_ns, is_write, short_result, unavailable,
};

impl World {
    // ----- the network and the store ----------------------------------------------------------

    pub(crate) fn is_connected(&self, n: usize) -> bool {
        self.now >= self.outage_until && self.now >= self.nodes[n].cut_until
    }

    pub(super) fn latency(&mut self, n: usize) -> Duration {
        let base = self.settings.kv_latency;
        let mut l = self.between(Duration::from_micros(100), base);
        let node = &self.nodes[n];
        let mut extra = Duration::ZERO;
        if self.now < node.slow_until {
            extra = extra.max(node.slow_extra);
        }
        if self.now < self.slow_all_until {
            extra = extra.max(self.slow_all_extra);
        }
        if extra > Duration::ZERO {
            l += self.between(Duration::ZERO, extra);
        }
        l
    }

    pub(super) fn send(&mut self, n: usize, op: OpId, req: KvRequest) {
        self.stats.kv_ops += 1;
        self.nodes[n].outstanding.insert(op);
        let sent = self.now;
        let timeout = self.config.operation_timeout;
        self.trace.mix(&[2, n as u64, op.0, dur_ns(sent)]);
        if self.trace.is_on() {
            let (name, key) = describe(&req);
            self.trace.line(self.now, Some(n), || {
                format!("send {:x} {name} {key}", op.0)
            });
        }
        if !self.nodes[n].connected || !self.is_connected(n) {
            if self.chance(500) {
                let d = self.between(Duration::from_micros(200), Duration::from_millis(5));
                self.reply_err(n, op, sent, sent + d, unavailable());
            } else {
                self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
                if is_write(&req) {
                    self.nodes[n].queued.push((sent, op, req));
                }
            }
            return;
        }
        if self.now < self.errors_until && self.chance(self.errors_per_mille) {
            match self.rng.below(3) {
                0 => {
                    let d = self.between(Duration::from_micros(200), Duration::from_millis(5));
                    self.reply_err(n, op, sent, sent + d, unavailable());
                }
                1 => self.reply_err(n, op, sent, sent + timeout, KvError::Timeout),
                _ => {
                    // A timeout whose write lands anyway: the outcome is unknown to the member.
                    self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
                    let l1 = self.latency(n);
                    let arrival = (sent + l1).max(self.nodes[n].last_arrival);
                    self.nodes[n].last_arrival = arrival;
                    self.schedule(
                        arrival,
                        Ev::Arrive {
                            node: n,
                            op,
                            req,
                            sent,
                            reply: None,
                        },
                    );
                }
            }
            return;
        }
        let l1 = self.latency(n);
        let l2 = self.latency(n);
        let arrival = (sent + l1).max(self.nodes[n].last_arrival);
        self.nodes[n].last_arrival = arrival;
        let reply = if arrival + l2 >= sent + timeout {
            self.reply_err(n, op, sent, sent + timeout, KvError::Timeout);
            None
        } else {
            Some(l2)
        };
        self.schedule(
            arrival,
            Ev::Arrive {
                node: n,
                op,
                req,
                sent,
                reply,
            },
        );
    }

    pub(super) fn reply_err(
        &mut self,
        n: usize,
        op: OpId,
        sent: Duration,
        at: Duration,
        e: KvError,
    ) {
        self.schedule(
            at,
            Ev::Reply {
                node: n,
                op,
                sent,
                result: Err(e),
            },
        );
    }

    pub(super) fn on_arrive(
        &mut self,
        n: usize,
        op: OpId,
        req: KvRequest,
        sent: Duration,
        reply: Option<Duration>,
    ) {
        let bucket = bucket_of(&req).to_owned();
        if self
            .stalls
            .get(&bucket)
            .is_some_and(|until| self.now < *until)
        {
            if reply.is_some() {
                let t = sent + self.config.operation_timeout;
                self.reply_err(n, op, sent, t, KvError::Timeout);
            }
            self.stalled.push((n, op, req, sent, reply));
            return;
        }
        self.apply(n, op, req, sent, reply);
    }

    pub(super) fn apply(
        &mut self,
        n: usize,
        op: OpId,
        req: KvRequest,
        sent: Duration,
        reply: Option<Duration>,
    ) {
        let result = self.exec(&req);
        self.trace.mix(&[
            3,
            n as u64,
            op.0,
            dur_ns(self.now),
            u64::from(result.is_ok()),
        ]);
        if self.trace.is_on() {
            let (name, key) = describe(&req);
            let r = short_result(&result);
            self.trace.line(self.now, Some(n), || {
                format!("store {:x} {name} {key} -> {r}", op.0)
            });
        }
        self.drain_wakes();
        if let Some(l2) = reply {
            self.schedule(
                self.now + l2,
                Ev::Reply {
                    node: n,
                    op,
                    sent,
                    result,
                },
            );
        }
    }

    pub(super) fn exec(&mut self, req: &KvRequest) -> KvResult {
        let t = self.epoch + self.now;
        match req {
            KvRequest::Entry { bucket, key } => {
                self.store.entry(bucket, key, t).map(KvReply::Entry)
            }
            KvRequest::Create { bucket, key, value } => self
                .store
                .create(bucket, key, value.clone(), t)
                .map(KvReply::Written),
            KvRequest::Update {
                bucket,
                key,
                value,
                expected,
            } => self
                .store
                .update(bucket, key, value.clone(), *expected, t)
                .map(KvReply::Written),
            KvRequest::Put { bucket, key, value } => self
                .store
                .put(bucket, key, value.clone(), t)
                .map(KvReply::Written),
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => self
                .store
                .delete(bucket, key, *expected, t)
                .map(|_| KvReply::Deleted),
            KvRequest::Keys { bucket, prefix } => {
                self.store.keys(bucket, prefix, t).map(KvReply::Keys)
            }
            other => panic!("the simulated store does not execute {other:?}; teach it"),
        }
    }

    pub(super) fn on_reply(&mut self, n: usize, op: OpId, sent: Duration, result: KvResult) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n].deferred.push(Ev::Reply {
                    node: n,
                    op,
                    sent,
                    result,
                });
                return;
            }
            Status::Crashed | Status::Exited => return,
        }
        if !self.nodes[n].outstanding.contains(&op) {
            return;
        }
        if result.is_ok() && !self.is_connected(n) {
            // The answer cannot come back through a cut: the operation times out.
            let t = sent + self.config.operation_timeout;
            self.reply_err(n, op, sent, t, KvError::Timeout);
            return;
        }
        self.nodes[n].outstanding.remove(&op);
        self.trace.mix(&[
            4,
            n as u64,
            op.0,
            dur_ns(self.now),
            u64::from(result.is_ok()),
        ]);
        if self.trace.is_on() {
            let r = short_result(&result);
            self.trace
                .line(self.now, Some(n), || format!("reply {:x} {r}", op.0));
        }
        self.input(n, |m, now| {
            m.handle_event(now, Event::Io(IoEvent::KvDone { op, result }));
        });
    }

    // ----- watches -----------------------------------------------------------------------------

    pub(super) fn watch_delay(&mut self) -> Duration {
        let mut d = self.between(Duration::from_micros(50), self.settings.watch_delay);
        if self.now < self.watch_delay_until {
            d += self.between(Duration::ZERO, self.watch_delay_max);
        }
        d
    }

    pub(super) fn drain_wakes(&mut self) {
        while let Some(w) = self.store.poll_woken() {
            if w == self.global_watch {
                self.drain_global();
            } else if self.watchers.contains_key(&w) && self.flush_scheduled.insert(w) {
                let d = self.watch_delay();
                self.schedule(self.now + d, Ev::Flush(w));
            }
        }
    }

    /// The simulator's own watch of the assignments bucket: store-side invariants.
    pub(super) fn drain_global(&mut self) {
        let w = self.global_watch;
        while let Some(ev) = self.store.poll_watch(w) {
            let WatchEvent::Change(c) = ev else {
                continue;
            };
            self.checks.churn.written();
            let KvOperation::Put(bytes) = &c.op else {
                continue;
            };
            let v = if c.key == Names::META_KEY {
                ClusterMeta::decode(bytes)
                    .ok()
                    .and_then(|m| self.checks.monotonic.meta_written(self.now, m.version))
            } else if c.key.starts_with(Names::ASSIGNMENT_PREFIX) {
                AssignmentRecord::decode(bytes).ok().and_then(|r| {
                    self.checks
                        .monotonic
                        .record_written(self.now, &c.key, r.version)
                })
            } else {
                None
            };
            if let Some(v) = v {
                self.violation(v);
            }
        }
    }

    pub(super) fn on_open_watch(
        &mut self,
        n: usize,
        watch: WatchId,
        bucket: &str,
        keys: WatchKeys,
    ) {
        if !self.nodes[n].watches.contains_key(&watch)
            || matches!(self.nodes[n].status, Status::Crashed | Status::Exited)
        {
            return;
        }
        let t = self.epoch + self.now;
        match self.store.watch(bucket, keys, t) {
            Ok(wid) => {
                self.nodes[n].watches.insert(watch, Some(wid));
                self.watchers.insert(wid, (n, watch));
                self.drain_wakes();
            }
            Err(e) => {
                // The watch cannot be opened: the driver reports it ended and forgets it.
                self.trace
                    .line(self.now, Some(n), || format!("watch open failed: {e}"));
                self.nodes[n].watches.remove(&watch);
                let d = self.watch_delay();
                self.schedule(
                    self.now + d,
                    Ev::WatchEnded {
                        node: n,
                        watch,
                        error: Some(e),
                    },
                );
            }
        }
    }

    /// Ends one open watch now (the `EndWatch` fault): the store drops it, and the driver
    /// reports it ended a moment later — with an error or as a plain end of the stream.
    pub(super) fn end_watch(&mut self, w: WatcherId) {
        let Some((n, watch)) = self.watchers.remove(&w) else {
            return;
        };
        self.store.unwatch(w);
        self.flush_scheduled.remove(&w);
        self.nodes[n].watches.remove(&watch);
        let error = self.chance(500).then(unavailable);
        self.trace.line(self.now, Some(n), || {
            format!("watch {:x} ends ({error:?})", watch.0)
        });
        let d = self.watch_delay();
        self.schedule(
            self.now + d,
            Ev::WatchEnded {
                node: n,
                watch,
                error,
            },
        );
    }

    pub(super) fn on_watch_ended(&mut self, n: usize, watch: WatchId, error: Option<KvError>) {
        match self.nodes[n].status {
            Status::Running => {}
            Status::Paused => {
                self.nodes[n].deferred.push(Ev::WatchEnded {
                    node: n,
                    watch,
                    error,
                });
                return;
            }
            Status::Crashed | Status::Exited => return,
        }
        self.trace.mix(&[12, n as u64, watch.0, dur_ns(self.now)]);
        self.input(n, |m, now| {
            m.handle_event(now, Event::Io(IoEvent::WatchEnded { watch, error }));
        });
    }

    pub(super) fn kick_watches(&mut self, n: usize) {
        let wids: Vec<WatcherId> = self.nodes[n].watches.values().flatten().copied().collect();
        for w in wids {
            if self.store.pending(w) > 0 && self.flush_scheduled.insert(w) {
                let d = self.watch_delay();
                self.schedule(self.now + d, Ev::Flush(w));
            }
        }
    }

    pub(super) fn on_flush(&mut self, w: WatcherId) {
        self.flush_scheduled.remove(&w);
        let Some(&(n, watch)) = self.watchers.get(&w) else {
            return;
        };
        if self.nodes[n].status != Status::Running || !self.nodes[n].connected {
            return; // resumed or reconnected later: kick_watches
        }
        let batch = 1 + self.rng.below(self.settings.watch_batch.max(1));
        for _ in 0..batch {
            if self.nodes[n].status != Status::Running || !self.watchers.contains_key(&w) {
                return;
            }
            let Some(item) = self.store.poll_watch(w) else {
                break;
            };
            self.feed_watch_item(n, watch, item);
        }
        if self.watchers.contains_key(&w)
            && self.store.pending(w) > 0
            && self.flush_scheduled.insert(w)
        {
            let d = self.watch_delay();
            self.schedule(self.now + d, Ev::Flush(w));
        }
    }

    pub(super) fn feed_watch_item(&mut self, n: usize, watch: WatchId, item: WatchEvent) {
        self.trace.mix(&[5, n as u64, watch.0, dur_ns(self.now)]);
        if self.trace.is_on() {
            let text = match &item {
                WatchEvent::Change(c) => format!(
                    "watch {:x} {} r{} {}",
                    watch.0,
                    c.key,
                    c.revision.0,
                    match &c.op {
                        KvOperation::Put(_) => "put",
                        KvOperation::Delete => "del",
                        KvOperation::Purge => "purge",
                    }
                ),
                other => format!("watch {:x} {other:?}", watch.0),
            };
            self.trace.line(self.now, Some(n), || text);
        }
        let mut stale = None;
        if self.nodes[n].assign_watch == Some(watch)
            && let WatchEvent::Change(c) = &item
            && let KvOperation::Put(bytes) = &c.op
        {
            if c.key == Names::TERM_KEY {
                if let Ok(t) = TermCounter::decode(bytes) {
                    let node = &mut self.nodes[n];
                    node.stream_term = Some(node.stream_term.map_or(t.term, |s| s.max(t.term)));
                }
            } else if let Ok(r) = AssignmentRecord::decode(bytes)
                && let Some(s) = self.nodes[n].stream_term
                && r.term < s
            {
                stale = Some((r.term, s, self.nodes[n].member.applied_version()));
            }
        }
        // Heartbeat keys are worker ids (the leader's heartbeats watch); the assignments watch
        // carries `w.<id>`, `meta` and `term`.
        let kind = match &item {
            WatchEvent::Change(c)
                if self.nodes[n].assign_watch != Some(watch) && WorkerId::new(&c.key).is_ok() =>
            {
                EventKind::Heartbeat
            }
            _ => EventKind::Other,
        };
        let delivers = self.input_as(n, kind, |m, now| {
            m.handle_event(
                now,
                Event::Io(IoEvent::Watch {
                    watch,
                    event: Ok(item),
                }),
            );
        });
        if let Some((rt, st, before)) = stale {
            let after = self.nodes[n].member.applied_version();
            if let Some(v) = self
                .checks
                .leaders
                .stale_record(self.now, n, rt, st, before, after, delivers)
            {
                self.violation(v);
            }
        }
    }
}
