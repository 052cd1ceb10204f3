//! The driver: one task that owns a worker's [`Member`] (and, through it, the planner while it
//! leads) by `&mut`, feeds it every input stamped with its receive time, and executes what it
//! asks for. It is the loop and nothing else: no branch here chooses between behaviours — every
//! such choice is the member's, tested in virtual time and covered by the simulator.
//!
//! ```text
//!   commands (handle) ─┐
//!   handler reports ───┤                          ┌─▶ Exec: store ops in flight, watches
//!   connection ────────┼─▶ select! ─▶ Member ─────┼─▶ handler task (one delivery at a time)
//!   deadline ──────────┤     (stamped now)        └─▶ views: status, assignment, notifications
//!   store results ─────┤
//!   source listings ───┘
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use parti_core::breaker::{BreakerState, CircuitBreaker, counts_as_failure};
use parti_core::machine::IoAction;
use parti_core::machine::IoEvent;
use parti_core::member::{
    Action, DeliveryId, Event, Member, Notification as MemberNote, RetryCounts,
};
use parti_core::planner::PlannerNotification;
use parti_core::records::OwnedPartition;
use parti_core::store::{ConnectionWatch, KvError};
use parti_core::{Partition, ValidConfig};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::field;

use crate::error::{Error, SourceError};
use crate::exec::{Completed, Exec, Output};
use crate::handler::{AssignmentHandler, Delivery, HandlerReport};
use crate::metrics::Labels;
use crate::source::{self, PartitionSource};
use crate::status::{Notification, Status};

/// The driver's clock: tokio's, so tests with paused time run the machines in virtual time.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a [`Manager`](crate::Manager) handle asks of its driver.
#[derive(Debug)]
pub(crate) enum Command {
    TriggerRebalance(oneshot::Sender<Result<(), Error>>),
    RefreshPartitions(oneshot::Sender<Result<usize, Error>>),
    Shutdown { restart: bool },
}

/// The views the driver publishes to the handles.
#[derive(Debug)]
pub(crate) struct Views {
    pub(crate) status: watch::Sender<Status>,
    pub(crate) assignment: watch::Sender<Arc<[OwnedPartition]>>,
    pub(crate) notifications: broadcast::Sender<Notification>,
}

type Listing = BoxFuture<'static, Result<Vec<Partition>, SourceError>>;

pub(crate) struct Driver {
    pub(crate) config: ValidConfig,
    pub(crate) member: Member,
    pub(crate) exec: Exec,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) views: Arc<Views>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) deliveries: mpsc::UnboundedSender<Delivery>,
    pub(crate) reports: mpsc::UnboundedReceiver<HandlerReport>,
    pub(crate) handler: Arc<dyn AssignmentHandler>,
    pub(crate) connection: ConnectionWatch,
    pub(crate) source: Arc<dyn PartitionSource>,
    pub(crate) catalog: Arc<[Partition]>,
    pub(crate) refresh_every: Option<Duration>,
    pub(crate) span: tracing::Span,
}

/// The driver's own bookkeeping (not the member's): what it needs to report and measure.
#[derive(Default)]
struct Books {
    commands_open: bool,
    connection_open: bool,
    labels: Labels,
    listing: FuturesUnordered<Listing>,
    listing_waiters: Vec<oneshot::Sender<Result<usize, Error>>>,
    deliveries: HashMap<DeliveryId, (Instant, Vec<OwnedPartition>, Vec<OwnedPartition>)>,
    /// Plans started and not yet published: when, and how many partitions they move.
    plans: HashMap<String, (Instant, usize)>,
    owned_dirty: bool,
    /// Retry counts already reported.
    retries: RetryCounts,
    published_term: Option<u64>,
    published_version: u64,
}

impl Driver {
    /// Runs the member until it stops.
    pub(crate) async fn run(mut self) {
        let mut books = Books {
            commands_open: true,
            connection_open: true,
            owned_dirty: true,
            ..Books::default()
        };
        let mut refresh = self.refresh_every.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        books
            .labels
            .gauge("parti_partitions", self.catalog.len() as f64);
        self.member.start(now());
        self.after_input(&mut books);
        while !self.member.is_stopped() {
            let deadline = match (self.member.poll_timeout(), self.breaker.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match refresh.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = self.commands.recv(), if books.commands_open => {
                    self.on_command(&mut books, command);
                }
                Some(report) = self.reports.recv() => self.on_report(&mut books, report),
                state = self.connection.next(), if books.connection_open => match state {
                    Some(state) => self.member.handle_event(now(), Event::Connection(state)),
                    None => books.connection_open = false,
                },
                () = sleep => {
                    let now = now();
                    self.breaker.handle_timeout(now);
                    self.member.handle_timeout(now);
                }
                out = self.exec.next() => self.on_output(&mut books, out),
                Some(listed) = books.listing.next() => self.on_listing(&mut books, listed),
                () = tick => self.start_listing(&mut books, None),
            }
            self.after_input(&mut books);
        }
        self.finish(books).await;
    }

    fn on_command(&mut self, books: &mut Books, command: Option<Command>) {
        let now = now();
        match command {
            Some(Command::TriggerRebalance(reply)) => {
                let result = self
                    .member
                    .trigger_rebalance(now)
                    .map_err(|e| Error::NotLeader { leader: e.leader });
                let _ = reply.send(result);
            }
            Some(Command::RefreshPartitions(reply)) => self.start_listing(books, Some(reply)),
            Some(Command::Shutdown { restart: false }) => self.member.request_leave(now),
            Some(Command::Shutdown { restart: true }) => self.member.request_restart(now),
            None => {
                // Every handle is gone: leave gracefully, handing the partitions over.
                books.commands_open = false;
                tracing::info!("every Manager handle was dropped: leaving the cluster");
                self.member.request_leave(now);
            }
        }
    }

    fn on_output(&mut self, books: &mut Books, out: Output) {
        let now = now();
        match out {
            Output::Kv(Completed {
                op,
                name,
                result,
                took,
                rejected,
            }) => {
                if !rejected {
                    match &result {
                        Err(e) if counts_as_failure(e) => self.breaker.on_failure(now),
                        _ => self.breaker.on_success(now),
                    }
                }
                books.labels.time_by(
                    "parti_kv_operation_duration_seconds",
                    "op",
                    name.to_owned(),
                    took,
                );
                if let Err(e) = &result {
                    books.labels.kv_error(name, error_kind(e));
                }
                self.member
                    .handle_event(now, Event::Io(IoEvent::KvDone { op, result }));
            }
            Output::Watch { watch, event } => {
                if event.is_err() {
                    books.labels.count("parti_watch_failures_total", 1);
                }
                self.member
                    .handle_event(now, Event::Io(IoEvent::Watch { watch, event }));
            }
            Output::WatchEnded { watch, error } => {
                // The member decides what follows (it opens the watch again after its backoff).
                books.labels.count("parti_watch_failures_total", 1);
                match &error {
                    Some(e) => tracing::warn!(?watch, error = %e, "a store watch failed"),
                    None => tracing::warn!(?watch, "a store watch ended"),
                }
                self.member
                    .handle_event(now, Event::Io(IoEvent::WatchEnded { watch, error }));
            }
        }
    }

    fn on_report(&mut self, books: &mut Books, report: HandlerReport) {
        match report {
            HandlerReport::Took { callback, duration } => books.labels.time_by(
                "parti_handler_duration_seconds",
                "kind",
                callback.as_str().to_owned(),
                duration,
            ),
            HandlerReport::Failed { callback, error } => {
                books.labels.count_by(
                    "parti_handler_failures_total",
                    "kind",
                    callback.as_str().to_owned(),
                    1,
                );
                self.notify(Notification::HandlerFailed { callback, error });
            }
            HandlerReport::Done(delivery) => {
                self.member
                    .handle_event(now(), Event::Delivered { delivery });
                if let Some((started, revoked, assigned)) = books.deliveries.remove(&delivery) {
                    books
                        .labels
                        .time("parti_handoff_duration_seconds", now() - started);
                    self.notify(Notification::AssignmentChanged {
                        version: self.member.applied_version(),
                        assigned,
                        revoked,
                    });
                }
            }
        }
    }

    /// Lists the source on its own task; `reply` (if any) is answered when the listing is in.
    fn start_listing(
        &mut self,
        books: &mut Books,
        reply: Option<oneshot::Sender<Result<usize, Error>>>,
    ) {
        books.listing_waiters.extend(reply);
        if !books.listing.is_empty() {
            return; // one listing at a time; the waiter gets the running one's answer
        }
        let source = self.source.clone();
        // Its own task (a slow source never holds the driver up), aborted if the driver stops
        // first: no background work outlives the driver.
        let task = AbortOnDrop(tokio::spawn(async move { source.list().await }));
        books.listing.push(Box::pin(async move {
            let mut task = task;
            (&mut task.0)
                .await
                .unwrap_or_else(|e| Err(SourceError::failed(format!("the source panicked: {e}"))))
        }));
    }

    fn on_listing(&mut self, books: &mut Books, listed: Result<Vec<Partition>, SourceError>) {
        let result = listed.and_then(source::catalog);
        let answer = match result {
            Ok(catalog) => {
                let count = catalog.len();
                if catalog != self.catalog {
                    self.catalog = catalog.clone();
                    self.member.set_partitions(now(), catalog);
                    books.labels.gauge("parti_partitions", count as f64);
                    self.notify(Notification::CatalogChanged { partitions: count });
                }
                Ok(count)
            }
            Err(error) => {
                tracing::warn!(%error, "the partition source failed; keeping the last catalog");
                books.labels.count("parti_source_failures_total", 1);
                self.notify(Notification::PartitionSourceFailed {
                    error: error.clone(),
                });
                Err(Error::PartitionSource(error))
            }
        };
        for waiter in books.listing_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Executes every action the last input produced, then passes on its notifications and
    /// publishes the views.
    fn after_input(&mut self, books: &mut Books) {
        while let Some(action) = self.member.poll_action() {
            match action {
                Action::Io(IoAction::Kv { op, request }) => {
                    // The breaker (parti-core) decides whether the call goes out.
                    if self.breaker.allow(now()) {
                        self.exec.run(IoAction::Kv { op, request });
                    } else {
                        books
                            .labels
                            .count("parti_circuit_breaker_rejected_total", 1);
                        self.exec.answer(
                            op,
                            request.name(),
                            Err(KvError::Unavailable {
                                reason: "circuit breaker open: the store failed repeatedly; \
                                         calls resume after breaker.open_timeout"
                                    .to_owned(),
                            }),
                        );
                    }
                }
                Action::Io(io) => self.exec.run(io),
                Action::Deliver {
                    delivery,
                    revoked,
                    assigned,
                } => {
                    books.owned_dirty = true;
                    books
                        .deliveries
                        .insert(delivery, (now(), revoked.clone(), assigned.clone()));
                    let _ = self.deliveries.send(Delivery {
                        id: delivery,
                        revoked,
                        assigned,
                    });
                }
                other => tracing::warn!(?other, "an action this driver does not know was skipped"),
            }
        }
        while let Some(note) = self.member.poll_notification() {
            self.on_member_note(books, note);
        }
        while let Some(t) = self.breaker.poll_transition() {
            tracing::warn!(from = %t.from, to = %t.to, "circuit breaker");
            let code = match t.to {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                _ => 2.0,
            };
            books.labels.gauge("parti_circuit_breaker_state", code);
            books.labels.count_by(
                "parti_circuit_breaker_transitions_total",
                "to",
                t.to.as_str().to_owned(),
                1,
            );
            self.views.status.send_modify(|s| s.breaker = t.to);
            self.notify(Notification::CircuitBreaker {
                from: t.from,
                to: t.to,
            });
        }
        self.publish(books);
    }

    fn on_member_note(&mut self, books: &mut Books, note: MemberNote) {
        let labels = &mut books.labels;
        match &note {
            MemberNote::StateChanged { from, to } => {
                tracing::info!(%from, %to, "state changed");
                labels.state(&from.to_string(), false);
                labels.state(&to.to_string(), true);
                self.views.status.send_modify(|s| {
                    *s.entered.entry(to.code()).or_default() += 1;
                });
            }
            MemberNote::IdentityClaimed { worker } => {
                tracing::info!(%worker, "worker id claimed");
                labels.set_worker(worker.to_string());
                self.span.record("worker_id", field::display(worker));
            }
            MemberNote::IdentityLost { worker } => {
                tracing::warn!(%worker, "worker id lost; claiming again");
            }
            MemberNote::OwnershipLost { partitions } => {
                tracing::warn!(
                    partitions = partitions.len(),
                    "ownership can no longer be guaranteed: everything revoked locally"
                );
                books.owned_dirty = true;
                let handler = self.handler.clone();
                let partitions = partitions.clone();
                // Application code never runs on the driver task; this one must not wait
                // behind a running callback either.
                tokio::spawn(async move {
                    let call =
                        std::panic::AssertUnwindSafe(|| handler.on_ownership_lost(&partitions));
                    if std::panic::catch_unwind(call).is_err() {
                        tracing::error!("on_ownership_lost panicked");
                    }
                });
            }
            MemberNote::Ready => {
                tracing::info!(owned = self.member.owned().len(), "ready");
                self.views.status.send_modify(|s| s.ready = true);
            }
            MemberNote::LeadershipAcquired { term } => {
                tracing::info!(%term, "leadership acquired");
            }
            MemberNote::LeadershipLost { term } => {
                tracing::info!(?term, "leadership lost");
            }
            MemberNote::HandlerTimedOut { delivery } => {
                tracing::warn!(?delivery, timeout = ?self.config.handler_timeout, "a handler outlived handler_timeout; moving on");
                labels.count("parti_handler_timeouts_total", 1);
            }
            MemberNote::DegradedEntered { reason } => {
                tracing::warn!(?reason, "degraded mode entered");
                labels.gauge("parti_degraded", 1.0);
            }
            MemberNote::DegradedExited { duration } => {
                tracing::info!(?duration, "degraded mode left");
                labels.gauge("parti_degraded", 0.0);
                labels.count("parti_degraded_seconds_total", duration.as_secs());
            }
            MemberNote::DegradedAlert {
                level,
                degraded_for,
            } => {
                tracing::warn!(?level, ?degraded_for, "degraded-mode alert");
                labels.count_by(
                    "parti_degraded_alerts_total",
                    "level",
                    format!("{level:?}").to_lowercase(),
                    1,
                );
            }
            MemberNote::UndecodableValue { bucket, key, error } => {
                tracing::warn!(%bucket, %key, %error, "a stored value did not decode");
                labels.count("parti_decode_errors_total", 1);
            }
            MemberNote::Failed(error) => {
                tracing::error!(%error, "the worker failed");
                let error = error.clone();
                self.views.status.send_modify(|s| s.failure = Some(error));
            }
            MemberNote::Planner(p) => match p {
                PlannerNotification::PlanStarted { reason, moved, .. } => {
                    tracing::info!(?reason, moved, "plan started");
                    books.plans.insert(format!("{reason:?}"), (now(), *moved));
                }
                PlannerNotification::Published { reason, version } => {
                    tracing::info!(?reason, %version, "plan published");
                    let reason = format!("{reason:?}");
                    let label = snake(&reason);
                    labels.count_by("parti_rebalances_total", "reason", label.clone(), 1);
                    if let Some((started, moved)) = books.plans.remove(&reason) {
                        labels.count("parti_partitions_moved_total", moved as u64);
                        labels.time_by(
                            "parti_rebalance_duration_seconds",
                            "reason",
                            label,
                            now() - started,
                        );
                    }
                }
                PlannerNotification::RecordTooLarge {
                    worker,
                    partitions,
                    error,
                } => {
                    tracing::error!(%worker, partitions, %error, "the store refused an assignment record as too large; it is not retried until the plan changes");
                    labels.count("parti_records_too_large_total", 1);
                }
                PlannerNotification::WorkerDead { worker } => {
                    tracing::warn!(%worker, "worker declared dead");
                    labels.count("parti_emergencies_total", 1);
                }
                other => tracing::debug!(?other, "planner"),
            },
            other => tracing::debug!(?other, "member"),
        }
        self.notify(Notification::Member(note));
    }

    fn notify(&self, note: Notification) {
        // No receiver is not an error: nobody asked.
        let _ = self.views.notifications.send(note);
    }

    /// Publishes the status (and the assignment, when it may have changed).
    fn publish(&mut self, books: &mut Books) {
        let m = &self.member;
        let worker_id = m.worker_id().cloned();
        let leader = if m.is_leader() {
            worker_id.clone()
        } else {
            None
        };
        let next = (
            m.state(),
            worker_id,
            m.is_leader(),
            leader,
            m.term(),
            m.applied_version(),
            m.is_fenced(),
            m.is_degraded(),
        );
        self.views.status.send_if_modified(|s| {
            let (state, worker_id, is_leader, leader, term, version, fenced, degraded) =
                next.clone();
            let changed = s.state != state
                || s.worker_id != worker_id
                || s.is_leader != is_leader
                || s.leader != leader
                || s.term != term
                || s.version != version
                || s.fenced != fenced
                || s.degraded != degraded;
            s.state = state;
            s.worker_id = worker_id;
            s.is_leader = is_leader;
            s.leader = leader;
            s.term = term;
            s.version = version;
            s.fenced = fenced;
            s.degraded = degraded;
            changed
        });
        let term = self.member.term().map(|t| t.0);
        if term != books.published_term {
            books.published_term = term;
            books
                .labels
                .gauge("parti_is_leader", f64::from(u8::from(term.is_some())));
            books.labels.gauge("parti_term", term.unwrap_or(0) as f64);
            match term {
                Some(t) => self.span.record("term", t),
                None => self.span.record("term", field::Empty),
            };
        }
        if let Some(p) = self.member.planner() {
            books
                .labels
                .gauge("parti_live_members", p.live_count() as f64);
            books
                .labels
                .gauge("parti_unowned_partitions", p.unowned() as f64);
        }
        let retries = self.member.retries();
        for (op, now, seen) in [
            ("claim", retries.claim, &mut books.retries.claim),
            ("election", retries.election, &mut books.retries.election),
            (
                "publication",
                retries.publication,
                &mut books.retries.publication,
            ),
            ("other", retries.other, &mut books.retries.other),
        ] {
            if now > *seen {
                books
                    .labels
                    .count_by("parti_retries_total", "op", op.to_owned(), now - *seen);
                *seen = now;
            }
        }
        if retries.exhausted > books.retries.exhausted {
            books.labels.count(
                "parti_retries_exhausted_total",
                retries.exhausted - books.retries.exhausted,
            );
            books.retries.exhausted = retries.exhausted;
        }
        let version = self.member.applied_version().0;
        if version != books.published_version {
            books.published_version = version;
            books
                .labels
                .gauge("parti_assignment_version", version as f64);
            self.span.record("version", version);
        }
        if books.owned_dirty {
            books.owned_dirty = false;
            let owned: Arc<[OwnedPartition]> = if self.member.is_fenced() {
                // Fenced: everything was revoked locally, even what a running callback has
                // not been told to give up yet.
                Arc::from(Vec::new())
            } else {
                self.member.owned().into()
            };
            books
                .labels
                .gauge("parti_owned_partitions", owned.len() as f64);
            books.labels.gauge(
                "parti_owned_weight",
                owned.iter().map(|p| p.partition.weight()).sum::<u64>() as f64,
            );
            self.views.assignment.send_if_modified(|a| {
                if **a == *owned {
                    false
                } else {
                    *a = owned;
                    true
                }
            });
        }
    }

    /// The member has stopped: let its last writes land (bounded by the operation timeout),
    /// then close everything.
    async fn finish(mut self, mut books: Books) {
        let deadline = tokio::time::Instant::now() + self.config.operation_timeout;
        while self.exec.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.exec.next()).await {
                Ok(Output::Kv(done)) => {
                    self.member.handle_event(
                        now(),
                        Event::Io(IoEvent::KvDone {
                            op: done.op,
                            result: done.result,
                        }),
                    );
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.exec.in_flight(),
                        "stopping with store operations still unanswered"
                    );
                    break;
                }
            }
        }
        books.owned_dirty = true;
        self.after_input(&mut books);
        for waiter in books.listing_waiters.drain(..) {
            let _ = waiter.send(Err(Error::Stopped));
        }
        self.views.status.send_modify(|s| s.stopped = true);
        tracing::info!("stopped");
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A metric label for an error.
fn error_kind(e: &KvError) -> &'static str {
    match e {
        KvError::NotFound => "not_found",
        KvError::AlreadyExists => "already_exists",
        KvError::RevisionMismatch { .. } => "revision_mismatch",
        KvError::Timeout => "timeout",
        KvError::Unavailable { .. } => "unavailable",
        KvError::BucketNotFound { .. } => "bucket_not_found",
        KvError::BucketMismatch { .. } => "bucket_mismatch",
        KvError::InvalidBucketSpec { .. } => "invalid_bucket_spec",
        KvError::InvalidKey { .. } => "invalid_key",
        _ => "backend",
    }
}

/// `ColdStartFinal` → `cold_start_final`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
