//! The pull of one partition's consumer: pull requests kept open on the server, the messages
//! they bring, and the count of what is still owed.
//!
//! async-nats 0.51's `pull::Stream` keeps that count across two tasks: a background task
//! publishes each new request and reports it afterwards, and the count grows by the request's
//! batch only when the report is read. A request whose messages arrive before the report is
//! counted down to zero first and then back up by a whole batch: the client waits for a batch
//! that is not coming, sends no new request, and the server — holding none — sends neither
//! messages nor heartbeats until the client's fallback after `expires` + 5 s (measured:
//! `parti-nats/README.md`, "A pull that goes silent"). Here one task does both, in order: a
//! request is counted as soon as it is published, before the subscription is read again, so
//! the count never runs behind the messages.
//!
//! In the pinned mode each request also carries the pin id the server handed out with its
//! messages (`Nats-Pin-Id`); a request refused for a stale id (423) drops it, and the next
//! request goes without one (it waits, unpinned, while another pull holds the pin). A pull that
//! misses two heartbeats while waiting ends (the caller starts a new one).

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::{self, Message};
use async_nats::{StatusCode, Subscriber};
use futures::{FutureExt, StreamExt};
use tokio::time::{Instant, Sleep};

/// Why a pull gives no message.
#[derive(Debug)]
pub(crate) enum PullError {
    /// Two heartbeats missed: the server holds no request of ours (or cannot reach us).
    Silent,
    /// The consumer was deleted (or is no longer a pull consumer): bind again.
    ConsumerGone,
    /// Anything else (a request not published, JetStream not answering); the pull goes on.
    Other(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Silent => f.write_str("two idle heartbeats missed"),
            PullError::ConsumerGone => f.write_str("the consumer is gone"),
            PullError::Other(e) => f.write_str(e),
        }
    }
}

/// Pull settings.
#[derive(Clone, Debug)]
pub(crate) struct PullSettings {
    pub batch: usize,
    pub expires: Duration,
    pub heartbeat: Duration,
    /// The priority group of the pinned mode.
    pub group: Option<String>,
}

/// Pull requests published and counted in the task that reads their messages.
pub(crate) struct Pull {
    consumer: PullConsumer,
    context: jetstream::Context,
    inbox: String,
    subscriber: Subscriber,
    settings: PullSettings,
    /// Messages the open requests may still bring.
    owed: usize,
    /// No request before this (after one could not be published or JetStream did not answer).
    pause_until: Option<Instant>,
    /// Two heartbeats from when the pull began to wait on an empty buffer (not from the last
    /// message: a slow handler is not a silent server).
    watchdog: Option<Pin<Box<Sleep>>>,
    /// The pinned mode: the pin id the server gave this pull, sent with every request.
    pin: Option<String>,
}

impl Pull {
    /// Subscribes the pull's inbox; the first request goes out with the first `next`.
    pub(crate) async fn open(
        context: jetstream::Context,
        consumer: PullConsumer,
        settings: PullSettings,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = context.client().new_inbox();
        let subscriber = context.client().subscribe(inbox.clone()).await?;
        Ok(Pull {
            consumer,
            context,
            inbox,
            subscriber,
            settings,
            owed: 0,
            pause_until: None,
            watchdog: None,
            pin: None,
        })
    }

    /// What the client already buffered, taken without waiting and without asking for more;
    /// then the pull is dropped (its inbox unsubscribed: the server stops delivering to it).
    pub(crate) fn drain(mut self) -> Vec<Message> {
        let mut buffered = Vec::new();
        while let Some(Some(m)) = self.subscriber.next().now_or_never() {
            if m.status.is_none_or(|s| s == StatusCode::OK) {
                buffered.push(self.message(m));
            }
        }
        buffered
    }

    fn message(&self, message: async_nats::Message) -> Message {
        Message {
            message,
            context: self.context.clone(),
        }
    }

    /// Publishes a request when at most half a batch is still owed; counts it once published.
    async fn top_up(&mut self) -> Result<(), PullError> {
        if self.owed > self.settings.batch / 2 {
            return Ok(());
        }
        if let Some(until) = self.pause_until {
            tokio::time::sleep_until(until).await;
            self.pause_until = None;
        }
        let request = BatchConfig {
            batch: self.settings.batch,
            expires: Some(self.settings.expires),
            idle_heartbeat: self.settings.heartbeat,
            group: self.settings.group.clone(),
            ..BatchConfig::default()
        };
        let sent = self.request(&request).await;
        match sent {
            Ok(()) => {
                self.owed += self.settings.batch;
                Ok(())
            }
            Err(e) => {
                self.pause_until = Some(Instant::now() + self.settings.heartbeat);
                Err(PullError::Other(format!("sending a pull request: {e}")))
            }
        }
    }

    /// Publishes `request` to the pull's inbox, with the pin id in the pinned mode (a field
    /// async-nats' request type lacks). The consumer's context is `jetstream::new`'s, so the
    /// API prefix is `$JS.API`.
    async fn request(&self, request: &BatchConfig) -> Result<(), String> {
        let mut body = serde_json::to_value(request).map_err(|e| e.to_string())?;
        if let (Some(pin), Some(fields)) = (&self.pin, body.as_object_mut()) {
            fields.insert("id".to_owned(), pin.as_str().into());
        }
        let payload = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let info = self.consumer.cached_info();
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            info.stream_name, info.name
        );
        self.context
            .client()
            .publish_with_reply(subject, self.inbox.clone(), payload.into())
            .await
            .map_err(|e| e.to_string())
    }

    /// The next message, waiting for it. Cancel-safe: a message is taken from the
    /// subscription only in the poll that returns it, and a request is counted only once
    /// published.
    pub(crate) async fn next(&mut self) -> Option<Result<Message, PullError>> {
        loop {
            if let Err(e) = self.top_up().await {
                return Some(Err(e));
            }
            let m = match self.subscriber.next().now_or_never() {
                Some(m) => m?,
                None => {
                    let twice = self.settings.heartbeat.saturating_mul(2);
                    let watchdog = self
                        .watchdog
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(twice)));
                    tokio::select! {
                        biased;
                        m = self.subscriber.next() => m?,
                        () = watchdog.as_mut() => {
                            self.watchdog = None;
                            // Whatever was owed will not come: ask again from nothing.
                            self.owed = 0;
                            return Some(Err(PullError::Silent));
                        }
                    }
                }
            };
            self.watchdog = None;
            match m.status.unwrap_or(StatusCode::OK) {
                StatusCode::OK => {
                    self.owed = self.owed.saturating_sub(1);
                    if self.settings.group.is_some()
                        && let Some(pin) = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(async_nats::header::NATS_PIN_ID))
                    {
                        self.pin = Some(pin.as_str().to_owned());
                    }
                    return Some(Ok(self.message(m)));
                }
                StatusCode::IDLE_HEARTBEAT => {}
                StatusCode::TIMEOUT
                | StatusCode::REQUEST_TERMINATED
                | StatusCode::PIN_ID_MISMATCH => {
                    if m.status == Some(StatusCode::PIN_ID_MISMATCH) {
                        // Another pull holds the pin now: ask without one (and wait unpinned).
                        self.pin = None;
                    }
                    let description = m.description.as_deref().unwrap_or_default();
                    if description == "Consumer Deleted" || description == "Consumer is push based"
                    {
                        return Some(Err(PullError::ConsumerGone));
                    }
                    // A request that ended (expired, or cut short by a limit) owes what it
                    // did not bring; without the header, a whole batch.
                    let left = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Pending-Messages"))
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(self.settings.batch);
                    self.owed = self.owed.saturating_sub(left);
                    if description.starts_with("Exceeded MaxRequest") {
                        // The consumer's limits refuse our requests: asking again at once
                        // would be refused again.
                        self.pause_until = Some(Instant::now() + self.settings.heartbeat);
                        return Some(Err(PullError::Other(description.to_owned())));
                    }
                }
                StatusCode::NO_RESPONDERS => {
                    // JetStream did not take the request: nothing is owed for it.
                    self.owed = self.owed.saturating_sub(self.settings.batch);
                    self.pause_until = Some(Instant::now() + self.settings.heartbeat);
                    return Some(Err(PullError::Other("JetStream did not answer".to_owned())));
                }
                status => {
                    return Some(Err(PullError::Other(format!(
                        "unexpected status {status} on the pull: {:?}",
                        m.description
                    ))));
                }
            }
        }
    }
}
