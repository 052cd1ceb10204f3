//! Metric names and their recording, through the [`metrics`] facade: install any recorder
//! (Prometheus, StatsD, …) in the application and these appear. Without a recorder they cost a
//! relaxed atomic load each.
//!
//! Every metric carries the label `worker` (the claimed worker id, empty before one is held)
//! where it describes one worker. Names follow PROTOCOL.md §9:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `parti_state` | gauge | `state` | 1 for the worker's current state, 0 for the others it has been in |
//! | `parti_is_leader` | gauge | | 1 while this worker leads |
//! | `parti_term` | gauge | | the term this worker leads (0 when not leading) |
//! | `parti_assignment_version` | gauge | | the highest assignment version applied |
//! | `parti_owned_partitions` | gauge | | partitions this worker owns now |
//! | `parti_owned_weight` | gauge | | their total weight |
//! | `parti_partitions` | gauge | | the catalog size (every worker lists it) |
//! | `parti_live_members` | gauge | | leader: workers it considers alive |
//! | `parti_unowned_partitions` | gauge | | leader: catalog partitions nobody holds (counted at most once per heartbeat interval) |
//! | `parti_rebalances_total` | counter | `reason` | leader: plans published, by reason (`cold_start`, `planned_scale`, `emergency`, …) |
//! | `parti_rebalance_duration_seconds` | histogram | `reason` | leader: from a plan's start to its publication |
//! | `parti_partitions_moved_total` | counter | | leader: partitions that changed owner in published plans |
//! | `parti_emergencies_total` | counter | | leader: workers declared dead |
//! | `parti_records_too_large_total` | counter | | leader: assignment records the store refused as too large (not retried until the plan changes) |
//! | `parti_handoff_duration_seconds` | histogram | | a delivery, from its start to its completion (both callbacks) |
//! | `parti_handler_duration_seconds` | histogram | `kind` | one callback (`assigned`, `revoked`) |
//! | `parti_handler_failures_total` | counter | `kind` | callbacks that returned an error or panicked |
//! | `parti_handler_timeouts_total` | counter | | deliveries that outlived `handler_timeout` |
//! | `parti_kv_operation_duration_seconds` | histogram | `op` | one store call (`entry`, `create`, `update`, `put`, `delete`, `keys`) |
//! | `parti_kv_errors_total` | counter | `op`, `kind` | failed store calls by kind (`timeout`, `unavailable`, `rejected`, …) |
//! | `parti_watch_failures_total` | counter | | watch items that were errors, and watches that ended or could not open |
//! | `parti_circuit_breaker_state` | gauge | | 0 closed, 1 half open, 2 open |
//! | `parti_circuit_breaker_transitions_total` | counter | `to` | breaker state changes |
//! | `parti_circuit_breaker_rejected_total` | counter | | store calls refused while open |
//! | `parti_retries_total` | counter | `op` | attempts the machines retried (`claim`, `election`, `publication`, …) |
//! | `parti_retries_exhausted_total` | counter | `op` | retry loops that gave up |
//! | `parti_degraded` | gauge | | 1 while in degraded mode |
//! | `parti_degraded_seconds_total` | counter | | time spent degraded (added when it ends) |
//! | `parti_degraded_alerts_total` | counter | `level` | degraded-mode alerts raised |
//! | `parti_decode_errors_total` | counter | | stored values that did not decode |
//! | `parti_source_failures_total` | counter | | partition source listings that failed |

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// The labels of one worker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Labels {
    worker: String,
}

impl Labels {
    pub(crate) fn set_worker(&mut self, worker: String) {
        self.worker = worker;
    }

    pub(crate) fn gauge(&self, name: &'static str, value: f64) {
        gauge!(name, "worker" => self.worker.clone()).set(value);
    }

    pub(crate) fn count(&self, name: &'static str, n: u64) {
        counter!(name, "worker" => self.worker.clone()).increment(n);
    }

    pub(crate) fn count_by(&self, name: &'static str, label: &'static str, value: String, n: u64) {
        counter!(name, "worker" => self.worker.clone(), label => value).increment(n);
    }

    pub(crate) fn kv_error(&self, op: &'static str, kind: &'static str) {
        counter!("parti_kv_errors_total", "worker" => self.worker.clone(), "op" => op, "kind" => kind)
            .increment(1);
    }

    pub(crate) fn time(&self, name: &'static str, d: Duration) {
        histogram!(name, "worker" => self.worker.clone()).record(d.as_secs_f64());
    }

    pub(crate) fn time_by(
        &self,
        name: &'static str,
        label: &'static str,
        value: String,
        d: Duration,
    ) {
        histogram!(name, "worker" => self.worker.clone(), label => value).record(d.as_secs_f64());
    }

    pub(crate) fn state(&self, state: &str, on: bool) {
        gauge!("parti_state", "worker" => self.worker.clone(), "state" => state.to_owned())
            .set(if on { 1.0 } else { 0.0 });
    }
}
