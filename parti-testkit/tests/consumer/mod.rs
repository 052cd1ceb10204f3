//! Shared parts of the `PartitionConsumer` tests on a real `nats-server`: a stream, a paced
//! producer with a sequence number per partition, workers (a `Manager` whose handler is a
//! `PartitionConsumer`), and a log of every handled message from which gaps, duplicates,
//! order inversions, moves and overlapping owners are counted.

#![allow(dead_code)] // each test binary uses a part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use parking_lot::Mutex;
use parti_core::Config;
use parti_core::handler::HandlerError;
use parti_nats::consumer::{Delivery, PartitionConsumer, PartitionConsumerBuilder};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_runtime::{Manager, StaticSource};
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) const STREAM: &str = "WORK";
pub(crate) const WITHIN: Duration = Duration::from_secs(30);

/// The e2e tests' timings (`Config::fast()` about 2× slower), with room for a release.
pub(crate) fn config() -> Config {
    let ms = Duration::from_millis;
    let mut c = crate::e2e::config();
    c.handler_timeout = ms(3_000);
    c.revoke_timeout = ms(3_500);
    c.shutdown_timeout = ms(10_000);
    c
}

pub(crate) fn partition_name(i: usize) -> String {
    format!("p{i:04}")
}

pub(crate) async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .expect("connect to the test server")
}

/// Creates the stream `WORK` on `work.>` (file storage) admitting `max_consumers`.
pub(crate) async fn create_stream(client: &async_nats::Client, max_consumers: i32) {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["work.>".to_owned()],
            max_consumers,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the stream");
}

/// One handled message.
#[derive(Clone, Debug)]
pub(crate) struct Handled {
    pub(crate) partition: String,
    pub(crate) seq: u64,
    pub(crate) process: String,
    pub(crate) delivered: i64,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// Every message every worker handled.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Handled>>>);

impl Log {
    pub(crate) fn handled(&self) -> Vec<Handled> {
        self.0.lock().clone()
    }

    /// A consumer builder for worker `process`, whose handler takes `work` per message and
    /// records it.
    pub(crate) fn builder(
        &self,
        client: async_nats::Client,
        process: &str,
        work: Duration,
    ) -> PartitionConsumerBuilder {
        let log = self.clone();
        let process = process.to_owned();
        PartitionConsumer::builder(client, STREAM, "work.{0}")
            .release_timeout(Duration::from_secs(2))
            .ack_wait(Duration::from_secs(3))
            .handler(move |d: Delivery| {
                let log = log.clone();
                let process = process.clone();
                async move {
                    let start = Instant::now();
                    let seq: u64 = std::str::from_utf8(d.payload())?.parse()?;
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    log.0.lock().push(Handled {
                        partition: d.partition().to_string(),
                        seq,
                        process,
                        delivered: d.delivered(),
                        start,
                        end: Instant::now(),
                    });
                    Ok::<(), HandlerError>(())
                }
            })
    }
}

/// A worker: its manager and its consumer.
pub(crate) struct Node {
    pub(crate) process: String,
    pub(crate) manager: Manager,
    pub(crate) consumer: PartitionConsumer,
    pub(crate) alive: bool,
}

/// Starts a worker named `process` with `consumer` as its handler.
pub(crate) async fn start_node(
    url: &str,
    partitions: usize,
    preferred_id: Option<u32>,
    process: &str,
    consumer: PartitionConsumer,
) -> Node {
    let mut config = config();
    config.preferred_id = preferred_id;
    let valid = config.clone().validate().expect("a valid config");
    let store = NatsStore::connect_url(url, NatsStoreConfig::from_config(&valid))
        .await
        .expect("connect the store");
    let manager = Manager::builder(config)
        .store(store)
        .partitions(StaticSource::numbered(partitions))
        .handler(consumer.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{process} did not start: {e}"));
    Node {
        process: process.to_owned(),
        manager,
        consumer,
        alive: true,
    }
}

/// Waits until the live nodes own every partition exactly once, with at most one partition of
/// difference between two of them.
pub(crate) async fn wait_balanced(nodes: &[Node], partitions: usize) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let counts: Vec<usize> = nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.manager.owned().len())
            .collect();
        let owned: BTreeSet<String> = nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(|n| {
                n.manager
                    .owned()
                    .iter()
                    .map(|p| p.partition.id().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let total: usize = counts.iter().sum();
        let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
        if total == partitions && owned.len() == partitions && spread <= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "never balanced: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `per_second` messages a second to each of `partitions` partitions (payload: the
/// partition's next sequence number, from 1) until stopped; returns what the stream acknowledged.
pub(crate) struct Producer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<BTreeSet<(String, u64)>>,
}

impl Producer {
    pub(crate) fn start(client: async_nats::Client, partitions: usize, per_second: u32) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let js = jetstream::new(client);
            let mut published = BTreeSet::new();
            let mut next = vec![1u64; partitions];
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*stopped.borrow_and_update() {
                tick.tick().await;
                let mut acks = Vec::new();
                for (i, n) in next.iter_mut().enumerate() {
                    let seq = *n;
                    *n += 1;
                    let sent = js
                        .publish(
                            format!("work.{}", partition_name(i)),
                            seq.to_string().into(),
                        )
                        .await;
                    acks.push((partition_name(i), seq, sent));
                }
                for (p, seq, sent) in acks {
                    if let Ok(ack) = sent
                        && ack.await.is_ok()
                    {
                        published.insert((p, seq));
                    }
                }
            }
            published
        });
        Producer { stop, task }
    }

    pub(crate) async fn stop(self) -> BTreeSet<(String, u64)> {
        let _ = self.stop.send(true);
        self.task.await.expect("the producer")
    }
}

/// Waits until every published message was handled at least once.
pub(crate) async fn wait_all_handled(
    log: &Log,
    published: &BTreeSet<(String, u64)>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let handled: BTreeSet<(String, u64)> = log
            .handled()
            .into_iter()
            .map(|h| (h.partition, h.seq))
            .collect();
        let missing = published.difference(&handled).count();
        if missing == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let first: Vec<_> = published.difference(&handled).take(5).collect();
            panic!("{missing} published messages never handled, e.g. {first:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the log says.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) handled: usize,
    pub(crate) gaps: usize,
    pub(crate) duplicates: usize,
    pub(crate) inversions: usize,
    pub(crate) redelivered: usize,
    /// Per partition, how many times the handling process changed.
    pub(crate) moves: usize,
    /// Two processes handling one partition's messages at overlapping times.
    pub(crate) overlaps: Vec<String>,
}

pub(crate) fn tally(log: &Log, published: &BTreeSet<(String, u64)>) -> Tally {
    let mut handled = log.handled();
    handled.sort_by_key(|h| h.start);
    let mut t = Tally {
        handled: handled.len(),
        ..Tally::default()
    };
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut by_partition: BTreeMap<String, Vec<&Handled>> = BTreeMap::new();
    for h in &handled {
        *seen.entry((h.partition.clone(), h.seq)).or_default() += 1;
        by_partition.entry(h.partition.clone()).or_default().push(h);
        if h.delivered > 1 {
            t.redelivered += 1;
        }
    }
    t.gaps = published.iter().filter(|k| !seen.contains_key(*k)).count();
    t.duplicates = seen.values().map(|n| n - 1).sum();
    for (p, hs) in &by_partition {
        let mut highest = 0;
        let mut last_end: HashMap<&str, Instant> = HashMap::new();
        for (i, h) in hs.iter().enumerate() {
            if h.seq < highest {
                t.inversions += 1;
            }
            highest = highest.max(h.seq);
            if i > 0 && hs[i - 1].process != h.process {
                t.moves += 1;
            }
            // Any other process still inside a handler of this partition when this one starts?
            for (other, end) in &last_end {
                if *other != h.process && *end > h.start {
                    t.overlaps.push(format!(
                        "{p}: {other} until {end:?}, {} from {:?}",
                        h.process, h.start
                    ));
                }
            }
            last_end.insert(&h.process, h.end);
        }
    }
    t
}
