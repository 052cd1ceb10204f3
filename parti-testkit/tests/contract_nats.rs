//! The `KvStore` contract suite against `NatsStore`: every case on a single real server, and a
//! subset on a 3-node JetStream cluster (replicas 3).
//!
//! The cases of one target run concurrently on one server (each provisions its own buckets);
//! a failing case is reported by name, after all cases finished.

use std::sync::Arc;
use std::time::Duration;

use parti_core::store::StorageKind;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::contract::{self, CASES, Case, ContractOptions};
use parti_testkit::nats::{NatsCluster, NatsServer};

/// The cases run on the cluster: the CAS, delete, listing, watch and expiry semantics that
/// replication could disturb.
const CLUSTER_CASES: &[&str] = &[
    "create_conflict",
    "concurrent_creates_one_wins",
    "cas_conflict_reports_current_revision",
    "cas_counter_under_contention",
    "delete_with_expected_revision",
    "keys_by_prefix",
    "watch_snapshot_then_live_changes",
    "watch_empty_snapshot_marker",
    "watch_several_keys",
    "max_age_expiry",
    "provision_mismatch_and_reconcile",
    "connection_starts_connected",
];

fn options(replicas: usize) -> ContractOptions {
    ContractOptions {
        replicas,
        storage: StorageKind::File,
        ..ContractOptions::default()
    }
}

/// How the cases of one target are run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// All at once: a single server answers them well within the operation timeout.
    Together,
    /// One after another: on a replicas-3 cluster every case creates a raft group, and the
    /// JetStream meta leader creates them one at a time; twelve at once on a loaded 2-core
    /// machine once took a provisioning call past its 20 s timeout (CI, exit 101).
    OneByOne,
}

/// Runs the cases; returns the names of those that failed.
async fn run_cases(
    store: NatsStore,
    opts: ContractOptions,
    cases: Vec<Case>,
    order: Order,
) -> Vec<&'static str> {
    let store = Arc::new(store);
    let mut running = Vec::new();
    let mut outcomes = Vec::new();
    for case in cases {
        let store = Arc::clone(&store);
        let opts = opts.clone();
        let task = tokio::spawn(async move {
            let start = std::time::Instant::now();
            (case.run)(&*store, &opts).await;
            start.elapsed()
        });
        if order == Order::OneByOne {
            outcomes.push((case.name, task.await));
        } else {
            running.push((case.name, task));
        }
    }
    for (name, task) in running {
        outcomes.push((name, task.await));
    }
    let mut failed = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(took) => println!("  ok   {name} ({took:?})"),
            Err(err) => {
                println!("  FAIL {name}: {err}");
                failed.push(name);
            }
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_on_a_single_server() {
    let server = NatsServer::start().unwrap();
    let config = NatsStoreConfig::default().with_op_timeout(Duration::from_secs(5));
    let store = NatsStore::connect_url(&server.url(), config).await.unwrap();
    let failed = run_cases(store, options(1), CASES.to_vec(), Order::Together).await;
    if !failed.is_empty() {
        eprintln!("server log, last lines:\n{}", server.log_tail());
    }
    assert!(failed.is_empty(), "contract cases failed: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_on_a_three_node_cluster() {
    let cluster = NatsCluster::start().unwrap();
    // Every case provisions a replicas-3 file stream; on a loaded 2-core machine one raft
    // group's creation took over 5 s (seen once in CI-like runs), and once a provisioning
    // call got no answer for its whole 20 s (CI; provisioning now asks again when an answer
    // is lost: `nats_faults::provision_asks_again_when_an_answer_is_lost`). The cases are
    // about semantics, not latency: run them one by one and give operations room.
    let config = NatsStoreConfig::default().with_op_timeout(Duration::from_secs(20));
    let store = NatsStore::connect_url(&cluster.urls(), config)
        .await
        .unwrap();
    let cases: Vec<Case> = CLUSTER_CASES
        .iter()
        .map(|name| contract::case(name).unwrap_or_else(|| panic!("no contract case {name}")))
        .collect();
    let failed = run_cases(store, options(3), cases, Order::OneByOne).await;
    if !failed.is_empty() {
        // What the servers said (a meta leader elected again, a raft group slow to form) is
        // what explains a failure here.
        for node in cluster.nodes() {
            eprintln!("{} log, last lines:\n{}", node.name(), node.log_tail());
        }
    }
    assert!(failed.is_empty(), "contract cases failed: {failed:?}");
    drop(cluster);
}
