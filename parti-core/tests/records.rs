//! Property tests of the wire records: every record round-trips, and no byte string panics the
//! decoder.

use parti_core::records::{
    AssignmentRecord, ClusterMeta, DecodeError, FORMAT_VERSION, Heartbeat, IdClaim, Intent,
    Leadership, Lifecycle, OwnedPartition, Phase, Record, TermCounter, catalog_digest,
};
use parti_core::{Fence, InstanceId, Partition, Term, Version, WorkerId, WorkerState};
use proptest::prelude::*;

fn worker_id() -> impl Strategy<Value = WorkerId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| WorkerId::new(s).expect("generated from the id charset"))
}

fn partition() -> impl Strategy<Value = Partition> {
    (prop::collection::vec(".{1,12}", 1..4), 1u64..=u64::MAX)
        .prop_map(|(keys, w)| Partition::new(keys, w).expect("non-empty keys, weight >= 1"))
}

fn fence() -> impl Strategy<Value = Fence> {
    (any::<u64>(), any::<u64>()).prop_map(|(t, v)| Fence::new(Term(t), Version(v)))
}

fn state() -> impl Strategy<Value = WorkerState> {
    any::<u8>().prop_map(WorkerState::from_code)
}

fn intent() -> impl Strategy<Value = Intent> {
    prop_oneof![
        Just(Intent::Active),
        Just(Intent::Leaving),
        Just(Intent::Restarting),
        Just(Intent::Fenced)
    ]
}

fn id_claim() -> impl Strategy<Value = IdClaim> {
    (any::<u128>(), any::<u64>(), any::<Option<u64>>()).prop_map(|(i, c, r)| IdClaim {
        instance: InstanceId(i),
        claimed_at_ms: c,
        restarting_until_ms: r,
    })
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        any::<u128>(),
        any::<u64>(),
        state(),
        any::<u64>(),
        intent(),
        any::<u32>(),
    )
        .prop_map(|(i, seq, state, applied, intent, capacity)| Heartbeat {
            instance: InstanceId(i),
            round: (seq % 5) as u32,
            seq,
            state,
            applied: Version(applied),
            intent,
            capacity,
        })
}

fn leadership() -> impl Strategy<Value = Leadership> {
    (worker_id(), any::<u128>(), any::<u64>()).prop_map(|(w, i, t)| Leadership {
        worker: w,
        instance: InstanceId(i),
        term: Term(t),
    })
}

fn assignment_record() -> impl Strategy<Value = AssignmentRecord> {
    (
        any::<u64>(),
        any::<u64>(),
        prop_oneof![Just(Phase::Revoke), Just(Phase::Grant)],
        any::<u128>(),
        prop::collection::vec((partition(), fence()), 0..20),
    )
        .prop_map(|(t, v, phase, i, ps)| AssignmentRecord {
            term: Term(t),
            version: Version(v),
            phase,
            instance: InstanceId(i),
            round: (v % 7) as u32,
            partitions: ps
                .into_iter()
                .map(|(partition, fence)| OwnedPartition { partition, fence })
                .collect(),
        })
}

fn cluster_meta() -> impl Strategy<Value = ClusterMeta> {
    (
        any::<u64>(),
        any::<u64>(),
        prop_oneof![Just(Lifecycle::ColdStart), Just(Lifecycle::Settled)],
        prop::collection::vec(worker_id(), 0..20),
        any::<u64>(),
        prop::collection::vec(worker_id(), 0..5),
    )
        .prop_map(
            |(t, v, lifecycle, members, digest, restarting)| ClusterMeta {
                term: Term(t),
                version: Version(v),
                lifecycle,
                members,
                catalog_digest: digest,
                restarting,
            },
        )
}

/// Encodes, checks the version byte, decodes, and checks every strict prefix is refused.
fn round_trip<R: Record + PartialEq + std::fmt::Debug>(r: &R) -> Result<(), TestCaseError> {
    let bytes = r.encode();
    prop_assert_eq!(bytes[0], FORMAT_VERSION);
    prop_assert_eq!(&R::decode(&bytes).expect("own encoding decodes"), r);
    // Every strict prefix of short records; about 64 evenly spread prefixes of long ones.
    let stride = (bytes.len() / 64).max(1);
    for cut in (0..bytes.len()).step_by(stride) {
        prop_assert!(
            R::decode(&bytes[..cut]).is_err(),
            "prefix of {} bytes decoded",
            cut
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert!(
        matches!(R::decode(&longer), Err(DecodeError::Malformed { .. })),
        "trailing byte accepted"
    );
    let mut other_version = bytes;
    other_version[0] = FORMAT_VERSION.wrapping_add(1);
    prop_assert_eq!(
        R::decode(&other_version),
        Err(DecodeError::UnknownVersion {
            found: FORMAT_VERSION.wrapping_add(1),
            supported: FORMAT_VERSION
        })
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn id_claim_round_trips(r in id_claim()) { round_trip(&r)?; }

    #[test]
    fn heartbeat_round_trips(r in heartbeat()) { round_trip(&r)?; }

    #[test]
    fn leadership_round_trips(r in leadership()) { round_trip(&r)?; }

    #[test]
    fn term_counter_round_trips(t in any::<u64>()) { round_trip(&TermCounter { term: Term(t) })?; }

    #[test]
    fn assignment_record_round_trips(r in assignment_record()) { round_trip(&r)?; }

    #[test]
    fn cluster_meta_round_trips(r in cluster_meta()) { round_trip(&r)?; }

    #[test]
    fn catalog_digest_ignores_order(mut ps in prop::collection::vec(partition(), 0..20), seed in any::<u64>()) {
        let before = catalog_digest(&ps);
        parti_core::rng::SplitMix64::new(seed).shuffle(&mut ps);
        prop_assert_eq!(catalog_digest(&ps), before);
    }
}

/// Decodes `bytes` as every record type; returns how many decoded.
fn decode_all(bytes: &[u8]) -> usize {
    usize::from(IdClaim::decode(bytes).is_ok())
        + usize::from(Heartbeat::decode(bytes).is_ok())
        + usize::from(Leadership::decode(bytes).is_ok())
        + usize::from(TermCounter::decode(bytes).is_ok())
        + usize::from(AssignmentRecord::decode(bytes).is_ok())
        + usize::from(ClusterMeta::decode(bytes).is_ok())
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    // 150,000 random strings of 0–64 bytes, half of them behind the right version byte so the
    // postcard decoder itself is exercised. Any panic fails the test.
    let mut rng = parti_core::rng::SplitMix64::new(0x5eed);
    let mut decoded = 0usize;
    for i in 0..150_000u32 {
        let len = usize::try_from(rng.below(65)).expect("below 65");
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = FORMAT_VERSION;
        }
        decoded += decode_all(&bytes);
    }
    // Short random strings do sometimes decode (a TermCounter is any varint); what matters is
    // that nothing panicked and most were refused.
    assert!(decoded < 150_000 * 6 / 2, "{decoded} decodes");
}

#[test]
fn garbage_gives_the_right_error_kind() {
    assert_eq!(TermCounter::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        TermCounter::decode(&[9, 1]),
        Err(DecodeError::UnknownVersion {
            found: 9,
            supported: FORMAT_VERSION
        })
    );
    assert_eq!(
        TermCounter::decode(&[FORMAT_VERSION]),
        Err(DecodeError::Truncated)
    );
    // A leadership whose worker id breaks the id rules is malformed, not accepted.
    let bad = Leadership {
        worker: WorkerId::new("w").unwrap(),
        instance: InstanceId(1),
        term: Term(1),
    }
    .encode();
    let mut bytes = bad.clone();
    let pos = bytes.iter().position(|b| *b == b'w').unwrap();
    bytes[pos] = b'.';
    assert!(matches!(
        Leadership::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
    // A heartbeat with a state code from the future still decodes.
    let hb = Heartbeat {
        instance: InstanceId(7),
        round: 0,
        seq: 1,
        state: WorkerState::Unknown(250),
        applied: Version(3),
        intent: Intent::Active,
        capacity: 1,
    };
    assert_eq!(
        Heartbeat::decode(&hb.encode()).unwrap().state,
        WorkerState::Unknown(250)
    );
    // A partition of weight 0 from the network is refused.
    let rec = AssignmentRecord {
        term: Term(1),
        version: Version(1),
        phase: Phase::Grant,
        instance: InstanceId(3),
        round: 2,
        partitions: vec![OwnedPartition {
            partition: Partition::new(["a"], 1).unwrap(),
            fence: Fence::default(),
        }],
    };
    let mut bytes = rec.encode();
    let last_weight = bytes.len() - 3; // ... weight(1) fence.term(0) fence.version(0)
    assert_eq!(bytes[last_weight], 1);
    bytes[last_weight] = 0;
    assert!(matches!(
        AssignmentRecord::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
}
