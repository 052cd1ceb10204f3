//! One owned partition: bind its consumer, pull, hand messages to the handler, and release.
//!
//! The release procedure (reference: the measured design in `jetstream-consumer-design.md` §4)
//! is what keeps a handoff from losing or stalling messages:
//!
//! 1. stop taking messages; let the message in hand finish, up to `release_timeout` (then its
//!    handler is cancelled and the message counts as unhandled);
//! 2. drain what the client already buffered, without waiting;
//! 3. drop the pull, so the server stops delivering to it;
//! 4. nak every unhandled message **after** step 3 (a nak while one's own pull is open comes
//!    straight back, and with a finite `max_deliver` uses up deliveries), in stream-sequence
//!    order (the server redelivers in nak order) — except a message already on its last allowed
//!    delivery, which is handled here instead, so that a handoff never spends the last one;
//! 5. under manual acks, wait for the deliveries the application still holds, up to the
//!    timeout; pinned: unpin;
//! 6. flush the connection, so every ack and nak is at the server before the release is
//!    reported (and so before the partition is granted elsewhere).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::FutureExt;
use parti_core::{Fence, PartitionId};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::Instant;

use super::config::{AckMode, Exclusivity};
use super::delivery::Delivery;
use super::error::ConsumerError;
use super::puller::{Pull, PullError, PullSettings};
use super::{ReleaseReport, Shared, metric};

/// What the owner of a partition's task asks of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Consume.
    Run,
    /// Release (the partition is revoked): finish the message in hand within the timeout.
    Release,
    /// Stop at once (ownership lost): cancel the handler, give everything back.
    Abort,
}

/// How a consume loop ended.
enum Ended {
    /// Asked to stop; the message whose handler was cancelled, if any.
    Stop(Option<Delivery>),
    /// The pull ended (consumer deleted, stream gone): bind again.
    Rebind,
    /// The pull went silent (the server stopped sending, even heartbeats): give back what it
    /// buffered and start a new one.
    Reopen,
}

/// Runs one owned partition until it is released; reports the release.
pub(crate) async fn run(
    shared: Arc<Shared>,
    partition: PartitionId,
    fence: Arc<Mutex<Fence>>,
    mut control: watch::Receiver<Control>,
    bound: oneshot::Sender<Result<(), ConsumerError>>,
) -> ReleaseReport {
    let mut report = ReleaseReport::new(partition.clone());
    let mut bound = Some(bound);
    let in_flight = match shared.settings.ack_mode {
        AckMode::Manual { max_in_flight } => Some(Arc::new(Semaphore::new(max_in_flight))),
        AckMode::Auto => None,
    };
    let mut failures: u32 = 0;
    loop {
        if *control.borrow() != Control::Run {
            return report;
        }
        let started = Instant::now();
        let opened = match bind(&shared, &partition).await {
            Ok(consumer) => open(&shared, &consumer).await,
            Err(e) => Err(e),
        };
        let mut messages = match opened {
            Ok(m) => m,
            Err(error) => {
                failures += 1;
                metrics::counter!(metric::BIND_FAILURES, "stream" => shared.stream_label())
                    .increment(1);
                if failures.is_power_of_two() {
                    tracing::warn!(partition = %partition, %error, failures, "cannot bind the partition's consumer; trying again");
                }
                if let Some(b) = bound.take() {
                    let _ = b.send(Err(error));
                }
                let pause = shared.settings.retry_delay(i64::from(failures));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop_requested(&mut control) => return report,
                }
                continue;
            }
        };
        failures = 0;
        metrics::histogram!(metric::BIND_SECONDS, "stream" => shared.stream_label())
            .record(started.elapsed().as_secs_f64());
        if let Some(b) = bound.take() {
            let _ = b.send(Ok(()));
        }
        match consume(
            &shared,
            &partition,
            &fence,
            &mut messages,
            &mut control,
            in_flight.as_ref(),
        )
        .await
        {
            Ended::Rebind => {
                tracing::warn!(partition = %partition, "the partition's pull ended (consumer deleted?); binding again");
            }
            Ended::Reopen => {
                metrics::counter!(metric::PULL_RESTARTS, "stream" => shared.stream_label())
                    .increment(1);
                shared
                    .pull_restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(partition = %partition, "the pull went silent (missed heartbeats); starting a new one");
                give_back(&shared, &partition, &fence, messages).await;
            }
            Ended::Stop(in_hand) => {
                release(
                    &shared,
                    &partition,
                    &fence,
                    messages,
                    in_hand,
                    &control,
                    in_flight.as_ref(),
                    &mut report,
                )
                .await;
                return report;
            }
        }
    }
}

/// Resolves once the task is asked to stop (also when its owner is gone).
async fn stop_requested(control: &mut watch::Receiver<Control>) {
    let _ = control.wait_for(|c| *c != Control::Run).await;
}

/// Resolves when a running handler must be cancelled: at once on `Abort`, `timeout` after a
/// `Release`.
async fn cancel_point(control: &mut watch::Receiver<Control>, timeout: Duration) {
    stop_requested(control).await;
    if *control.borrow() == Control::Abort || control.has_changed().is_err() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(timeout) => {}
        _ = control.wait_for(|c| *c == Control::Abort) => {}
    }
}

/// The partition's consumer: existing (its settings reconciled) or created.
pub(crate) async fn bind(
    shared: &Shared,
    partition: &PartitionId,
) -> Result<PullConsumer, ConsumerError> {
    let name = shared.consumer_name(partition);
    let subject = shared.template.render(partition)?;
    shared.check_covered(&subject)?;
    let wanted = shared.pull_config(&name, &subject);
    let reading =
        |e: &dyn std::fmt::Display| ConsumerError::nats(format!("reading consumer `{name}`"), e);
    let existing = match shared.stream.consumer_info(&name).await {
        Ok(info) => Some(info.config),
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => None,
        Err(e) => return Err(reading(&e)),
    };
    let consumer =
        match existing {
            Some(have) => {
                if have.filter_subject != wanted.filter_subject {
                    return Err(ConsumerError::ConsumerConflict {
                        consumer: name,
                        field: "filter_subject",
                        existing: have.filter_subject.clone(),
                        wanted: wanted.filter_subject,
                    });
                }
                if super::needs_update(&have, &wanted) {
                    let mut update = wanted.clone();
                    update.deliver_policy = have.deliver_policy; // fixed at creation
                    tracing::info!(consumer = %name, "updating the partition consumer's settings");
                    shared.stream.update_consumer(update).await.map_err(|e| {
                        ConsumerError::nats(format!("updating consumer `{name}`"), e)
                    })?
                } else {
                    shared
                        .stream
                        .get_consumer::<jetstream::consumer::pull::Config>(&name)
                        .await
                        .map_err(|e| reading(&*e))?
                }
            }
            None => shared
                .stream
                .create_consumer(wanted)
                .await
                .map_err(|e| shared.create_error(&name, e))?,
        };
    if let Exclusivity::Pinned { group, .. } = &shared.settings.exclusivity {
        unpin(shared, &name, group).await;
    }
    Ok(consumer)
}

async fn unpin(shared: &Shared, name: &str, group: &str) {
    if let Err(e) = shared.stream.unpin_consumer(name, group).await {
        // "no pin" is the common case (nobody held it); anything else only delays delivery
        // until the old pin's priority_timeout.
        tracing::debug!(consumer = %name, error = %e, "unpin");
    }
}

async fn open(shared: &Shared, consumer: &PullConsumer) -> Result<Pull, ConsumerError> {
    let s = &shared.settings;
    let settings = PullSettings {
        batch: s.batch,
        expires: s.pull_expires,
        // Two missed heartbeats end a silent pull (see `consume`).
        heartbeat: s.heartbeat(),
        group: match &s.exclusivity {
            Exclusivity::Pinned { group, .. } => Some(group.clone()),
            _ => None,
        },
    };
    Pull::open(shared.js.clone(), consumer.clone(), settings)
        .await
        .map_err(|e| ConsumerError::nats("starting the pull", e))
}

async fn consume(
    shared: &Arc<Shared>,
    partition: &PartitionId,
    fence: &Arc<Mutex<Fence>>,
    messages: &mut Pull,
    control: &mut watch::Receiver<Control>,
    in_flight: Option<&Arc<Semaphore>>,
) -> Ended {
    let mut errors: u32 = 0;
    loop {
        let permit = match in_flight {
            Some(sem) => tokio::select! {
                biased;
                () = stop_requested(control) => return Ended::Stop(None),
                p = sem.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return Ended::Stop(None),
                },
            },
            None => None,
        };
        let next = tokio::select! {
            biased;
            () = stop_requested(control) => return Ended::Stop(None),
            next = messages.next() => next,
        };
        let message = match next {
            None | Some(Err(PullError::ConsumerGone)) => return Ended::Rebind,
            // The server holds no pull request of ours (or cannot reach us): a new pull ends
            // the stall at once.
            Some(Err(PullError::Silent)) => return Ended::Reopen,
            Some(Err(e)) => {
                errors += 1;
                if errors.is_power_of_two() {
                    tracing::warn!(partition = %partition, error = %e, errors, "pull error; the pull goes on");
                }
                continue;
            }
            Some(Ok(m)) => m,
        };
        errors = 0;
        let delivery = Delivery::new(message, partition.clone(), current(fence), permit);
        let timeout = shared.settings.release_timeout;
        tokio::select! {
            biased;
            () = dispatch(shared, delivery.clone()) => {}
            () = cancel_point(control, timeout) => return Ended::Stop(Some(delivery)),
        }
    }
}

fn current(fence: &Mutex<Fence>) -> Fence {
    match fence.lock() {
        Ok(f) => *f,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

/// Hands one message to the handler and settles it by the outcome (auto mode: ack on `Ok`;
/// both modes: nak with backoff on `Err` or a panic, or dead-letter it on its last delivery).
pub(crate) async fn dispatch(shared: &Arc<Shared>, delivery: Delivery) {
    let stream = shared.stream_label();
    if delivery.delivered() > 1 {
        metrics::counter!(metric::REDELIVERIES, "stream" => stream.clone()).increment(1);
    }
    let started = Instant::now();
    let outcome = AssertUnwindSafe(shared.handler.handle(delivery.clone()))
        .catch_unwind()
        .await;
    metrics::histogram!(metric::HANDLER_SECONDS, "stream" => stream.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(metric::PARTITION_MESSAGES, "stream" => stream.clone(), "partition" => delivery.partition().to_string())
        .increment(1);
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the handler panicked".to_owned()),
    };
    if delivery.is_settled() {
        return;
    }
    match error {
        None => {
            if shared.settings.ack_mode == AckMode::Auto {
                settle(shared, &delivery, AckKind::Ack, "acked").await;
            }
        }
        Some(error) if shared.settings.last_attempt(delivery.delivered()) => {
            super::dead_letter(shared, &delivery, &error).await;
        }
        Some(error) => {
            tracing::debug!(partition = %delivery.partition(), seq = delivery.stream_sequence(), %error, "handler failed; nak with backoff");
            let delay = shared.settings.retry_delay(delivery.delivered());
            metrics::counter!(metric::NAKS, "stream" => stream, "reason" => "handler_error")
                .increment(1);
            settle(shared, &delivery, AckKind::Nak(Some(delay)), "nacked").await;
        }
    }
}

pub(crate) async fn settle(
    shared: &Shared,
    delivery: &Delivery,
    kind: AckKind,
    outcome: &'static str,
) {
    match delivery.settle(kind).await {
        Ok(()) => metrics::counter!(metric::MESSAGES, "stream" => shared.stream_label(), "outcome" => outcome)
            .increment(1),
        Err(e) => tracing::warn!(error = %e, "could not settle a message; it comes back after ack_wait"),
    }
}

/// What the client already buffered for a pull, taken without waiting, in stream order; then
/// the pull is dropped (its inbox unsubscribed: the server stops delivering to it), so that what
/// is nak'd next does not come straight back to it.
fn drain(messages: Pull) -> Vec<jetstream::Message> {
    let mut buffered = messages.drain();
    buffered.sort_by_key(|m| m.info().map(|i| i.stream_sequence).unwrap_or(0));
    buffered
}

/// Drops a pull that is being replaced: what it buffered is nak'd (after the drop, in stream
/// order), so that it comes back at once instead of after `ack_wait`.
async fn give_back(
    shared: &Arc<Shared>,
    partition: &PartitionId,
    fence: &Arc<Mutex<Fence>>,
    messages: Pull,
) {
    for m in drain(messages) {
        let d = Delivery::new(m, partition.clone(), current(fence), None);
        metrics::counter!(metric::NAKS, "stream" => shared.stream_label(), "reason" => "pull_restart").increment(1);
        settle(shared, &d, AckKind::Nak(None), "nacked").await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn release(
    shared: &Arc<Shared>,
    partition: &PartitionId,
    fence: &Arc<Mutex<Fence>>,
    messages: Pull,
    in_hand: Option<Delivery>,
    control: &watch::Receiver<Control>,
    in_flight: Option<&Arc<Semaphore>>,
    report: &mut ReleaseReport,
) {
    let started = Instant::now();
    let deadline = started + shared.settings.release_timeout;
    let aborting = *control.borrow() == Control::Abort;
    // 2-3. Drain the client's buffer without waiting, then drop the pull.
    let buffered = drain(messages);
    // 4. Give back what was not handled, in stream order.
    if let Some(d) = in_hand {
        report.cancelled += 1;
        if shared.settings.last_attempt(d.delivered()) {
            tracing::error!(partition = %partition, seq = d.stream_sequence(),
                "the release timeout cancelled the handler of a message on its last allowed delivery (max_deliver); the server will not deliver it again");
            metrics::counter!(metric::MESSAGES, "stream" => shared.stream_label(), "outcome" => "dropped").increment(1);
        }
        metrics::counter!(metric::NAKS, "stream" => shared.stream_label(), "reason" => "release")
            .increment(1);
        settle(shared, &d, AckKind::Nak(None), "nacked").await;
        report.nacked += 1;
    }
    for m in buffered {
        let d = Delivery::new(m, partition.clone(), current(fence), None);
        if shared.settings.last_attempt(d.delivered()) && !aborting && Instant::now() < deadline {
            // Its last delivery: handle it here, or the handoff would use it up.
            let handled = tokio::time::timeout_at(deadline, dispatch(shared, d.clone())).await;
            if handled.is_ok() {
                report.handled_during_release += 1;
                if !d.is_settled() {
                    // Manual mode: the handler has it; wait below like any other.
                    report.unsettled += 1;
                }
                continue;
            }
            report.cancelled += 1;
        }
        metrics::counter!(metric::NAKS, "stream" => shared.stream_label(), "reason" => "release")
            .increment(1);
        settle(shared, &d, AckKind::Nak(None), "nacked").await;
        report.nacked += 1;
    }
    // 5. Manual acks: the application's deliveries settle (or time out).
    if let (Some(sem), AckMode::Manual { max_in_flight }) = (in_flight, shared.settings.ack_mode) {
        let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        if !aborting
            && tokio::time::timeout_at(deadline, sem.acquire_many(all))
                .await
                .is_err()
        {
            report.unsettled += max_in_flight.saturating_sub(sem.available_permits());
        }
    }
    if let Exclusivity::Pinned { group, .. } = &shared.settings.exclusivity {
        unpin(shared, &shared.consumer_name(partition), group).await;
    }
    // 6. Every ack and nak at the server before the release is reported.
    let flush_for = if aborting {
        Duration::from_millis(200)
    } else {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    if tokio::time::timeout(flush_for, shared.client.flush())
        .await
        .map_or(true, |r| r.is_err())
    {
        tracing::warn!(partition = %partition, "acknowledgements not confirmed flushed at release; unflushed ones come back after ack_wait");
    }
    report.elapsed = started.elapsed();
    metrics::histogram!(metric::RELEASE_SECONDS, "stream" => shared.stream_label())
        .record(report.elapsed.as_secs_f64());
}
