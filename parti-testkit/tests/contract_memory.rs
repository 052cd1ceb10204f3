//! The `KvStore` contract suite against `MemoryStore`, one test per case, on paused tokio time
//! (the max-age case then takes no wall-clock time).

use std::sync::Arc;

use parti_runtime::MemoryStore;
use parti_testkit::contract::{self, CASES, ContractOptions};

macro_rules! memory_cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            contract::$name(&MemoryStore::new(), &ContractOptions::default()).await;
        }
    )*};
}

memory_cases!(
    create_conflict,
    concurrent_creates_one_wins,
    cas_conflict_reports_current_revision,
    cas_counter_under_contention,
    delete_with_expected_revision,
    create_after_delete,
    keys_by_prefix,
    revisions_increase_across_keys,
    watch_snapshot_then_live_changes,
    watch_empty_snapshot_marker,
    watch_one_key,
    watch_several_keys,
    watches_are_independent,
    binary_and_empty_values,
    max_age_expiry,
    provision_mismatch_and_reconcile,
    unknown_bucket_and_invalid_key,
    connection_starts_connected,
    a_value_over_the_limit_is_refused,
);

/// Every case above is listed: a case added to the suite without a test here fails this one.
#[test]
fn every_case_has_a_test() {
    let source = include_str!("contract_memory.rs");
    for case in CASES {
        assert!(
            source.contains(&format!("    {},\n", case.name)),
            "contract case {} has no test here",
            case.name
        );
        assert_eq!(contract::case(case.name).map(|c| c.name), Some(case.name));
    }
    assert!(contract::case("no-such-case").is_none());
}

/// `run_all` runs the whole suite on one store, on real (multi-threaded) time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_store() {
    contract::run_all(Arc::new(MemoryStore::new()), ContractOptions::default()).await;
}
