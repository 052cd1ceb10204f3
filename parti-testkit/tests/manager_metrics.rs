//! The runtime's metrics reach a recorder under the names its crate docs list: a capturing
//! recorder (its own test binary: a recorder is process-global) watches a cluster start, plan,
//! lose a worker and re-plan.

mod manager;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manager::Backend;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;
use parti_core::Config;
use parti_core::store::KvStore;
use parti_runtime::MemoryStore;

#[derive(Debug, Default)]
struct Capture {
    names: Mutex<BTreeSet<String>>,
}

impl Capture {
    fn seen(&self, key: &Key) {
        self.names.lock().insert(key.name().to_owned());
    }
}

impl Recorder for &'static Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.seen(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.seen(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.seen(key);
        Histogram::noop()
    }
}

static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

fn capture() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::default());
        metrics::set_global_recorder(c).expect("the only recorder of this test binary");
        c
    })
}

struct Memory(MemoryStore);

#[async_trait::async_trait]
impl Backend for Memory {
    async fn store(&self) -> Arc<dyn KvStore> {
        Arc::new(self.0.clone())
    }
    fn config(&self) -> Config {
        Config::fast()
    }
    fn slack(&self) -> Duration {
        Duration::ZERO
    }
}

#[tokio::test(start_paused = true)]
async fn the_documented_metrics_are_recorded() {
    let capture = capture();
    let mut c = manager::cluster(&Memory(MemoryStore::new()), 3, 30).await;
    let leader = c.leader().expect("leader");
    let victim = c
        .live()
        .into_iter()
        .find(|&i| i != leader)
        .expect("follower");
    c.crash(victim);
    c.wait_covered(Duration::from_secs(10))
        .await
        .expect("covered");
    c.shutdown_all().await;
    let names = capture.names.lock().clone();
    for name in [
        "parti_state",
        "parti_is_leader",
        "parti_term",
        "parti_assignment_version",
        "parti_owned_partitions",
        "parti_owned_weight",
        "parti_partitions",
        "parti_rebalances_total",
        "parti_rebalance_duration_seconds",
        "parti_partitions_moved_total",
        "parti_emergencies_total",
        "parti_handoff_duration_seconds",
        "parti_handler_duration_seconds",
        "parti_kv_operation_duration_seconds",
    ] {
        assert!(
            names.contains(name),
            "{name} was never recorded; seen: {names:?}"
        );
    }
    let runtime_docs = include_str!("../../parti-runtime/src/metrics.rs");
    for name in &names {
        assert!(
            runtime_docs.contains(&format!("`{name}`")),
            "{name} is recorded but not documented in parti-runtime's metrics module"
        );
    }
}
