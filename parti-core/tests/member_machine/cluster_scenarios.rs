//! Scenarios on the cluster harness. With the stub planner of `main` nobody ever assigns
//! anything, so they need the `Planner` behaviour (branch `planner`) and are ignored until it is
//! merged; on a trial merge with `planner` (fe292f5) every one passes.

use parti_core::ValidConfig;

use crate::cluster::*;
use crate::harness::*;

const IGNORE: &str = "needs the Planner behaviour (branch `planner`)";

#[test]
fn three_members_cover_every_partition_exclusively() {
    let _ = IGNORE;
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert!(c.leader().is_some());
    for n in &c.nodes {
        assert!(!n.m.owned().is_empty(), "every member got a share");
    }
}

#[test]
fn a_crashed_leader_is_replaced_and_its_partitions_move_without_double_ownership() {
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    let old = c.leader().expect("a leader");
    let term = c.nodes[old].m.term();
    c.crash(old);
    c.advance(secs(40));
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    assert!(c.nodes[new].m.term() > term);
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn a_cut_off_member_fences_before_its_partitions_move_and_is_granted_again() {
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    let leader = c.leader().expect("a leader");
    let k = (0..3).find(|i| *i != leader).expect("a follower");
    assert!(!c.nodes[k].m.owned().is_empty());
    c.cut(k);
    c.advance(secs(30));
    assert!(c.nodes[k].m.owned().is_empty(), "fenced while cut off");
    c.assert_covered(12);
    c.heal(k);
    c.advance(secs(60));
    c.assert_covered(12);
    assert!(
        !c.nodes[k].m.owned().is_empty(),
        "granted again after reconnecting"
    );
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn a_cut_off_leader_stops_leading_before_a_successor_writes() {
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    let old = c.leader().expect("a leader");
    c.cut(old);
    c.advance(ms(4_600));
    assert!(!c.nodes[old].m.is_leader(), "its lease lapsed locally");
    c.advance(secs(40));
    let new = c.leader().expect("a successor");
    assert_ne!(new, old);
    c.heal(old);
    c.advance(secs(60));
    assert_eq!(c.leader(), Some(new));
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn a_leaving_member_hands_its_partitions_over_and_stops() {
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    let leader = c.leader().expect("a leader");
    let k = (0..3).find(|i| *i != leader).expect("a follower");
    let now = c.now;
    c.nodes[k].m.request_leave(now);
    c.run();
    c.advance(secs(10));
    assert!(c.nodes[k].m.is_stopped(), "{:?}", c.nodes[k].notes);
    c.crash(k); // the process exits
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn a_restarted_member_gets_its_partitions_back_with_new_fences() {
    let cfgs: Vec<ValidConfig> = (0..3)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs.clone(), 12);
    c.start_all();
    c.advance(secs(90));
    let leader = c.leader().expect("a leader");
    let k = (0..3).find(|i| *i != leader).expect("a follower");
    let before = c.nodes[k].m.owned();
    assert!(!before.is_empty());
    let now = c.now;
    c.nodes[k].m.request_restart(now);
    c.run();
    assert!(c.nodes[k].m.is_stopped());
    c.advance(secs(3));
    c.replace(k, cfgs[k].clone(), 0xF00D, 12);
    c.advance(secs(10));
    assert_eq!(c.nodes[k].m.worker_id(), Some(&wid(k as u32)));
    // Same partitions (nothing moved), granted to the new process with fences above the old
    // ones: the records are addressed to a process, not to an id.
    let after = c.nodes[k].m.owned();
    let ids = |v: &[parti_core::records::OwnedPartition]| {
        v.iter()
            .map(|o| o.partition.id().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before), "same partitions: nothing moved");
    assert!(
        after.iter().zip(&before).all(|(a, b)| a.fence > b.fence),
        "new fences for the new process: {after:?} vs {before:?}"
    );
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn a_leaving_leader_hands_over_leadership_and_partitions() {
    let mut c = Cluster::new(config(|_| {}), 3, 12);
    c.start_all();
    c.advance(secs(90));
    let old = c.leader().expect("a leader");
    let now = c.now;
    c.nodes[old].m.request_leave(now);
    c.run();
    c.advance(secs(10));
    assert!(c.nodes[old].m.is_stopped(), "{:?}", c.nodes[old].notes);
    c.crash(old);
    c.advance(secs(5));
    let new = c
        .leader()
        .expect("a successor at once (the key was deleted)");
    assert_ne!(new, old);
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
fn late_writes_of_a_deposed_leader_are_ignored() {
    let mut c = Cluster::new(config(|_| {}), 4, 12);
    c.start_all();
    c.advance(secs(90));
    let old = c.leader().expect("a leader");
    let others: Vec<usize> = (0..4).filter(|i| *i != old).collect();
    // The leader's writes stall (they will land later); a follower crashes, so it must replan.
    c.lagging.push(old);
    c.crash(others[0]);
    c.advance(secs(40));
    let new = c.leader().expect("a successor");
    assert_ne!(new, old);
    c.assert_covered_by(&others[1..], 12);
    let landed = c.land();
    c.advance(secs(5));
    assert!(
        c.violations.is_empty(),
        "{:?} (landed {landed})",
        c.violations
    );
    c.assert_covered_by(&others[1..], 12);
}

#[test]
fn a_grant_of_a_deposed_leader_that_lands_after_the_term_bump_is_refused() {
    // 13 partitions dealt round-robin over 3: a 14th goes to the second worker, not the leader.
    let mut c = Cluster::new(config(|_| {}), 3, 13);
    c.start_all();
    c.advance(secs(90));
    let old = c.leader().expect("a leader");
    assert_eq!(old, 0, "the first member to start leads");
    // The leader's record writes stall; it grants a new partition (written, not yet landed).
    c.lagging_assignments.push(old);
    let mut more = catalog(13);
    more.push(part("p99"));
    let now = c.now;
    c.nodes[old].m.set_partitions(now, more);
    c.run();
    assert!(
        c.in_the_pipe
            .iter()
            .any(|w| kv_bucket(w) == "parti-assignments"),
        "a record write is in the pipe"
    );
    // Then it is cut off: its lease lapses, a successor bumps the term — and the stalled writes
    // land right after the bump, before the successor writes anything.
    c.land_after_term_bump = true;
    c.cut(old);
    c.advance(secs(30));
    let new = c.leader().expect("a successor");
    assert_ne!(new, old);
    assert!(!c.land_after_term_bump, "the zombie writes landed");
    let landed = c.land();
    c.advance(secs(2));
    assert_eq!(c.nodes[1].m.known_term(), c.nodes[new].m.term());
    for (i, n) in c.nodes.iter().enumerate() {
        if i != old {
            assert!(
                !n.ever_assigned.contains("p99"),
                "node {i} applied a record of the deposed leader (landed {landed})"
            );
        }
    }
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

mod random {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    pub enum Fault {
        Wait(u64),
        Crash(usize),
        Cut(usize),
        Heal(usize),
        Leave(usize),
        Restart(usize),
    }

    fn fault(n: usize) -> impl Strategy<Value = Fault> {
        prop_oneof![
            4 => (100u64..20_000).prop_map(Fault::Wait),
            1 => (0..n).prop_map(Fault::Crash),
            2 => (0..n).prop_map(Fault::Cut),
            2 => (0..n).prop_map(Fault::Heal),
            1 => (0..n).prop_map(Fault::Leave),
            1 => (0..n).prop_map(Fault::Restart),
        ]
    }

    proptest! {
        // A few cases by default (each is a 4-member cluster over minutes of virtual time);
        // `PARTI_CLUSTER_CASES=20000 cargo test --release -p parti-core --test member_machine
        // random_faults` to hunt (73 s).
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PARTI_CLUSTER_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Exclusive ownership at every step, one leader at a time, and full coverage by the
        /// members still running once the faults stop.
        #[test]
        fn random_faults_never_break_exclusive_ownership(faults in prop::collection::vec(fault(4), 1..14)) {
            const N: usize = 4;
            let cfgs: Vec<ValidConfig> = (0..N as u32)
                .map(|i| config(|c| c.preferred_id = Some(i)))
                .collect();
            let mut c = Cluster::with_configs(cfgs.clone(), 16);
            c.start_all();
            c.advance(secs(60));
            let mut incarnation = 0u128;
            for f in faults {
                let alive = |c: &Cluster, i: usize| {
                    !c.nodes[i].crashed
                        && !matches!(
                            c.nodes[i].m.state(),
                            parti_core::WorkerState::Leaving | parti_core::WorkerState::Shutdown
                        )
                };
                match f {
                    Fault::Wait(ms_) => c.advance(ms(ms_)),
                    Fault::Crash(i) => {
                        // Keep at least two members running.
                        if (0..N).filter(|j| alive(&c, *j)).count() > 2 {
                            c.crash(i);
                        }
                    }
                    Fault::Cut(i) => c.cut(i),
                    Fault::Heal(i) => c.heal(i),
                    Fault::Leave(i) => {
                        if (0..N).filter(|j| alive(&c, *j)).count() > 2 {
                            let now = c.now;
                            c.nodes[i].m.request_leave(now);
                            c.run();
                        }
                    }
                    Fault::Restart(i) => {
                        if alive(&c, i) {
                            let now = c.now;
                            c.nodes[i].m.request_restart(now);
                            c.run();
                            c.advance(secs(2));
                            incarnation += 1;
                            c.replace(i, cfgs[i].clone(), 0x9000 + incarnation, 16);
                        }
                    }
                }
                let _ = c.leader(); // asserts at most one
                prop_assert!(c.violations.is_empty(), "{:?}", c.violations);
            }
            // Faults stop: heal everyone, let the cluster settle.
            for i in 0..N {
                if !c.nodes[i].up {
                    c.heal(i);
                }
            }
            c.advance(secs(120));
            prop_assert!(c.violations.is_empty(), "{:?}", c.violations);
            let running: Vec<usize> = (0..N)
                .filter(|i| !c.nodes[*i].crashed && !c.nodes[*i].m.is_stopped())
                .collect();
            let owners = c.owners();
            prop_assert_eq!(owners.len(), 16, "coverage: {:?} running {:?}; {}", owners, running, c.diagnose());
            for (p, o) in &owners {
                prop_assert!(o.len() == 1 && running.contains(&o[0]), "{}: {:?}", p, o);
            }
        }
    }
}

/// Found by the random test: a member cut off long enough for its claim to expire must not
/// come back as the id a new process has claimed meanwhile.
#[test]
fn a_member_back_from_a_long_cut_never_acts_under_an_id_taken_meanwhile() {
    const N: usize = 4;
    let cfgs: Vec<ValidConfig> = (0..N as u32)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs.clone(), 16);
    c.start_all();
    c.advance(secs(60));
    c.cut(1);
    c.advance(secs(28));
    // A restart of node 3 while cut off: its new process finds worker-1 expired and takes it.
    c.cut(3);
    let now = c.now;
    c.nodes[3].m.request_restart(now);
    c.run();
    c.advance(secs(2));
    c.replace(3, cfgs[3].clone(), 0x9001, 16);
    assert_eq!(c.nodes[3].m.worker_id(), Some(&wid(1)));
    c.advance(secs(3));
    c.heal(1);
    c.advance(secs(120));
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_ne!(
        c.nodes[1].m.worker_id(),
        Some(&wid(1)),
        "the old process claimed again"
    );
    c.assert_covered(16);
}

/// Found by the random test: a leader cut off long enough to fence comes back while its
/// successor's first plan already names it; it must be granted again.
#[test]
fn a_fenced_former_leader_is_granted_again_by_its_successor() {
    const N: usize = 4;
    let cfgs: Vec<ValidConfig> = (0..N as u32)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs, 16);
    c.start_all();
    c.advance(secs(60));
    assert_eq!(c.leader(), Some(0));
    c.cut(0);
    c.advance(ms(5_400));
    let now = c.now;
    c.nodes[2].m.request_leave(now);
    c.run();
    c.heal(0);
    c.advance(secs(60));
    assert!(!c.nodes[0].m.is_fenced());
    assert!(!c.nodes[0].m.owned().is_empty());
    c.crash(2);
    c.assert_covered(16);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

/// Found by the random test (failed with the planner of branch `planner` at b1eee80, passes
/// at fe292f5): after
/// three term bumps, a new process of worker-0 refuses the term-1 record its id still has (one
/// of the bumps may have preceded it), while the leader of term 4 — that same process — keeps
/// the record as current and waits for its acknowledgement (`HandoffStalled`) instead of
/// rewriting it under its term. PROTOCOL §4 says the member must refuse; the planner has to
/// rewrite (or revoke, under its term) a record its worker has not acknowledged.
#[test]
fn a_record_several_terms_old_is_rewritten_for_a_new_process() {
    const N: usize = 4;
    let cfgs: Vec<ValidConfig> = (0..N as u32)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs.clone(), 16);
    c.start_all();
    c.advance(secs(60));
    c.cut(1);
    let now = c.now;
    c.nodes[3].m.request_leave(now);
    c.run();
    c.advance(ms(14_457));
    c.cut(0);
    c.advance(ms(8_039));
    c.crash(2);
    c.advance(ms(6_908));
    for (incarnation, wait) in [(0x9001, 6_596), (0x9002, 0)] {
        let now = c.now;
        c.nodes[0].m.request_restart(now);
        c.run();
        c.advance(secs(2));
        c.replace(0, cfgs[0].clone(), incarnation, 16);
        c.advance(ms(wait));
    }
    c.heal(1);
    c.advance(secs(120));
    c.crash(3); // it left
    c.assert_covered(16);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

/// Found by the random test: a fenced former leader heals for an instant (its `Fenced`
/// heartbeat is seen, it is granted again), is cut off again and declared dead; when it comes
/// back, the re-grant it finds in its backlog was already taken back and given to others.
#[test]
fn a_member_cut_off_again_never_applies_a_regrant_taken_back_meanwhile() {
    const N: usize = 4;
    let cfgs: Vec<ValidConfig> = (0..N as u32)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs.clone(), 16);
    c.start_all();
    c.advance(secs(60));
    c.cut(0);
    let now = c.now;
    c.nodes[1].m.request_restart(now);
    c.run();
    c.advance(secs(2));
    c.replace(1, cfgs[1].clone(), 0x9001, 16);
    c.advance(secs(12));
    c.heal(0);
    c.cut(0);
    c.crash(1);
    c.advance(secs(9));
    c.heal(0);
    c.advance(secs(60));
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    c.assert_covered(16);
}

/// Found by the random test; fails with the planner of branch `planner` at fe292f5. The leader
/// is cut off while worker-1 leaves and worker-3 restarts; the new process of worker-3 takes
/// its id back and applies its record (p03, p07, p11, p15 at 1.1: a restart return publishes
/// nothing) and is cut off for an instant; then the leader heals and, planning the leave,
/// grants p03 and p15 to worker-0 in
/// its first wave — before worker-3, alive and holding them, has acknowledged a revocation.
#[test]
fn partitions_of_a_returned_restarting_worker_are_revoked_before_moving() {
    const N: usize = 4;
    let cfgs: Vec<ValidConfig> = (0..N as u32)
        .map(|i| config(|c| c.preferred_id = Some(i)))
        .collect();
    let mut c = Cluster::with_configs(cfgs.clone(), 16);
    c.start_all();
    c.advance(secs(60));
    c.cut(0);
    let now = c.now;
    c.nodes[1].m.request_leave(now);
    c.run();
    let now = c.now;
    c.nodes[3].m.request_restart(now);
    c.run();
    c.advance(secs(2));
    c.replace(3, cfgs[3].clone(), 0x9001, 16);
    c.cut(3);
    c.heal(0);
    c.heal(3);
    c.advance(secs(60));
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}
