//! Random interleavings of records (stale, duplicate, zombie-term, deleted), term bumps,
//! handler completions and time, against one member.
//!
//! Invariants: the application's view (the replay of every delivery) is exactly what the member
//! says it owns; a delivery revokes only what the application has and assigns only what it
//! lacks (or with a new fence); acknowledged versions never go down and are always versions of
//! records written under the term current in the stream; and once things calm down, the
//! application holds exactly the newest acceptable record.

use std::collections::BTreeMap;

use parti_core::PartitionId;
use parti_core::records::{Names, OwnedPartition};
use proptest::prelude::*;

use crate::harness::*;

#[derive(Clone, Debug)]
enum Step {
    /// A record: version step (0 = duplicate of the last version), term offset (-1, 0, +1),
    /// partitions as a bit set of a..d.
    Record {
        dv: u64,
        dt: i8,
        parts: u8,
    },
    BumpTerm,
    Delete,
    Complete,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..3, -1i8..=1, 0u8..16).prop_map(|(dv, dt, parts)| Step::Record { dv, dt, parts }),
        1 => Just(Step::BumpTerm),
        1 => Just(Step::Delete),
        3 => Just(Step::Complete),
        2 => (0u64..40_000).prop_map(Step::Advance),
    ]
}

fn view_of(h: &H) -> BTreeMap<PartitionId, OwnedPartition> {
    let mut view = BTreeMap::new();
    for (_, revoked, assigned) in &h.deliveries {
        for p in revoked {
            view.remove(p.partition.id());
        }
        for p in assigned {
            view.insert(p.partition.id().clone(), p.clone());
        }
    }
    view
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // A failure prints its minimal input; no regression file next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn deliveries_stay_ordered_coalesced_and_term_fenced(steps in prop::collection::vec(step(), 1..60)) {
        let mut h = H::follower(config(|_| {}));
        h.auto_deliver = false;
        let mut term: u64 = 1; // the term in the stream
        let mut version: u64 = 0; // the last version written
        // Versions written under the stream's current term, with their partitions.
        let mut acceptable: BTreeMap<u64, Vec<OwnedPartition>> = BTreeMap::new();
        // The newest acceptable record, or None after a delete.
        let mut newest: Option<Vec<OwnedPartition>> = None;
        let mut last_ack = 0u64;
        let mut checked = 0usize; // deliveries checked so far
        let mut view: BTreeMap<PartitionId, OwnedPartition> = BTreeMap::new();

        for s in steps {
            match s {
                Step::Record { dv, dt, parts } => {
                    version += dv;
                    let t = (term as i64 + i64::from(dt)).max(0) as u64;
                    let ps: Vec<OwnedPartition> = ["a", "b", "c", "d"]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| parts & (1 << i) != 0)
                        .map(|(_, n)| owned(n, t, version))
                        .collect();
                    let fresh = t == term && version > acceptable.keys().next_back().copied().unwrap_or(0);
                    if fresh {
                        acceptable.insert(version, ps.clone());
                        newest = Some(ps.clone());
                    }
                    h.grant(0, t, version, &ps);
                }
                Step::BumpTerm => {
                    term += 1;
                    h.set_term(term);
                }
                Step::Delete => {
                    let ab = h.names.assignments_bucket();
                    h.kv.remove(&ab, &Names::assignment_key(&wid(0)));
                    h.run();
                    newest = None;
                }
                Step::Complete => {
                    if let Some((d, _, _)) = h.deliveries.last().cloned() {
                        h.complete(d);
                    }
                }
                Step::Advance(ms_) => h.advance(ms(ms_)),
            }
            // Each new delivery: revokes what the application has, assigns what it lacks.
            for (_, revoked, assigned) in &h.deliveries[checked..] {
                for p in revoked {
                    let had = view.remove(p.partition.id());
                    prop_assert_eq!(had.as_ref(), Some(p));
                }
                for p in assigned {
                    prop_assert!(view.get(p.partition.id()).is_none_or(|old| old.fence != p.fence));
                    view.insert(p.partition.id().clone(), p.clone());
                }
            }
            checked = h.deliveries.len();
            let owned: Vec<OwnedPartition> = view.values().cloned().collect();
            prop_assert_eq!(h.m.owned(), owned);
            for hb in h.heartbeats_since(0) {
                prop_assert!(hb.applied.0 >= last_ack, "acknowledgements never go down");
                last_ack = hb.applied.0;
                prop_assert!(hb.applied.0 == 0 || acceptable.contains_key(&hb.applied.0),
                    "acknowledged version {} was not written under the current term", hb.applied.0);
            }
            h.log.clear();
        }
        // Calm: every handler finishes.
        for _ in 0..10 {
            if let Some((d, _, _)) = h.deliveries.last().cloned() {
                h.complete(d);
            }
            h.advance(secs(61));
        }
        let expected: Vec<OwnedPartition> = newest.unwrap_or_default();
        let mut expected_by_id: Vec<OwnedPartition> = expected;
        expected_by_id.sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
        prop_assert_eq!(view_of(&h).into_values().collect::<Vec<_>>(), expected_by_id.clone());
        prop_assert_eq!(h.m.owned(), expected_by_id);
    }
}
