//! Several members on one in-memory store, with crashes and network cuts; exclusive ownership
//! is checked after every step. With the stub planner of `main` nobody ever assigns anything,
//! so these scenarios need the `Planner` behaviour (branch `planner`) and are ignored until it
//! is merged.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parti_core::machine::{IoAction, IoEvent};
use parti_core::member::{Action, DeliveryId, Event, Member, MemberInit, Notification};
use parti_core::store::{ConnectionState, KvError};
use parti_core::{InstanceId, Partition, ValidConfig};

use crate::harness::*;

pub struct Node {
    pub m: Member,
    pub up: bool,
    pub crashed: bool,
    pub notes: Vec<Notification>,
    /// Every partition ever handed to the application, by name.
    pub ever_assigned: std::collections::BTreeSet<String>,
    to_deliver: VecDeque<DeliveryId>,
}

pub struct Cluster {
    pub kv: Kv,
    /// Nodes whose operations time out; their writes are kept and land later (`land`).
    pub lagging: Vec<usize>,
    /// Nodes whose operations on the assignments bucket time out (writes kept, as `lagging`).
    pub lagging_assignments: Vec<usize>,
    /// Land the pipe right after the next successful write of the `term` key (the race the
    /// term fence exists for).
    pub land_after_term_bump: bool,
    /// Writes that timed out and have not landed yet.
    pub in_the_pipe: Vec<parti_core::machine::KvRequest>,
    pub nodes: Vec<Node>,
    pub epoch: Instant,
    pub now: Instant,
    /// Every moment two live members owned one partition.
    pub violations: Vec<String>,
}

fn kv_bucket(r: &parti_core::machine::KvRequest) -> &str {
    use parti_core::machine::KvRequest;
    match r {
        KvRequest::Entry { bucket, .. }
        | KvRequest::Create { bucket, .. }
        | KvRequest::Update { bucket, .. }
        | KvRequest::Put { bucket, .. }
        | KvRequest::Delete { bucket, .. }
        | KvRequest::Keys { bucket, .. } => bucket,
    }
}

fn kv_key(r: &parti_core::machine::KvRequest) -> &str {
    use parti_core::machine::KvRequest;
    match r {
        KvRequest::Entry { key, .. }
        | KvRequest::Create { key, .. }
        | KvRequest::Update { key, .. }
        | KvRequest::Put { key, .. }
        | KvRequest::Delete { key, .. } => key,
        KvRequest::Keys { prefix, .. } => prefix,
    }
}

pub fn catalog(n: usize) -> Vec<Partition> {
    (0..n).map(|i| part(&format!("p{i:02}"))).collect()
}

impl Cluster {
    pub fn new(cfg: ValidConfig, members: usize, partitions: usize) -> Cluster {
        Cluster::with_configs(vec![cfg; members], partitions)
    }

    /// One member per config (e.g. different preferred ids).
    pub fn with_configs(cfgs: Vec<ValidConfig>, partitions: usize) -> Cluster {
        #[allow(clippy::disallowed_methods)] // the test's one epoch
        let epoch = Instant::now();
        let cfg = cfgs[0].clone();
        let names = cfg.names();
        let mut kv = Kv {
            now: Some(epoch),
            ..Kv::default()
        };
        kv.set_max_age(&names.ids_bucket(), cfg.identity_ttl);
        kv.set_max_age(&names.heartbeats_bucket(), cfg.heartbeat_ttl);
        kv.set_max_age(&names.leader_bucket(), cfg.election_ttl);
        let nodes = cfgs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| Node {
                m: Member::new(
                    cfg,
                    Arc::new(RoundRobin),
                    MemberInit {
                        instance: InstanceId(0x1000 + i as u128),
                        seed: 100 + i as u64,
                        wall_epoch_ms: WALL0,
                        partitions: catalog(partitions),
                    },
                    epoch,
                ),
                up: true,
                crashed: false,
                notes: Vec::new(),
                ever_assigned: Default::default(),
                to_deliver: VecDeque::new(),
            })
            .collect();
        Cluster {
            kv,
            lagging: Vec::new(),
            lagging_assignments: Vec::new(),
            land_after_term_bump: false,
            in_the_pipe: Vec::new(),
            nodes,
            epoch,
            now: epoch,
            violations: Vec::new(),
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i].m.start(now);
        }
        self.run();
    }

    fn exec(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Io(IoAction::Kv { op, request }) => {
                let lags = self.lagging.contains(&i)
                    || (self.lagging_assignments.contains(&i)
                        && kv_bucket(&request) == "parti-assignments");
                let result = if lags {
                    if !matches!(
                        request,
                        parti_core::machine::KvRequest::Entry { .. }
                            | parti_core::machine::KvRequest::Keys { .. }
                    ) {
                        self.in_the_pipe.push(request);
                    }
                    Err(KvError::Timeout)
                } else if self.nodes[i].up {
                    let r = self.kv.exec(&request);
                    if self.land_after_term_bump
                        && r.is_ok()
                        && kv_key(&request) == "term"
                        && matches!(
                            request,
                            parti_core::machine::KvRequest::Update { .. }
                                | parti_core::machine::KvRequest::Create { .. }
                        )
                    {
                        self.land_after_term_bump = false;
                        let writes = std::mem::take(&mut self.in_the_pipe);
                        for w in &writes {
                            let _ = self.kv.exec(w);
                        }
                    }
                    r
                } else {
                    Err(KvError::Unavailable {
                        reason: "cut off".into(),
                    })
                };
                self.nodes[i]
                    .m
                    .handle_event(now, Event::Io(IoEvent::KvDone { op, result }));
            }
            Action::Io(IoAction::Watch {
                watch,
                bucket,
                keys,
            }) => {
                self.kv.open(i, watch, &bucket, keys);
            }
            Action::Io(IoAction::Unwatch { watch }) => {
                self.kv
                    .watches
                    .retain(|(o, w, _, _)| !(*o == i && *w == watch));
                self.kv
                    .pending
                    .retain(|(o, w, _)| !(*o == i && *w == watch));
            }
            Action::Deliver {
                delivery, assigned, ..
            } => {
                for p in &assigned {
                    self.nodes[i]
                        .ever_assigned
                        .insert(p.partition.id().to_string());
                }
                self.nodes[i].to_deliver.push_back(delivery);
            }
            _ => {}
        }
    }

    pub fn run(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].crashed {
                    continue;
                }
                while let Some(a) = self.nodes[i].m.poll_action() {
                    progressed = true;
                    self.exec(i, a);
                }
                while let Some(n) = self.nodes[i].m.poll_notification() {
                    self.nodes[i].notes.push(n);
                }
            }
            let now = self.now;
            let ready = self
                .kv
                .pending
                .iter()
                .position(|(o, _, _)| self.nodes[*o].up && !self.nodes[*o].crashed);
            if let Some(pos) = ready {
                progressed = true;
                let (o, watch, event) = self.kv.pending.remove(pos).expect("position is valid");
                self.nodes[o].m.handle_event(
                    now,
                    Event::Io(IoEvent::Watch {
                        watch,
                        event: Ok(event),
                    }),
                );
            } else if let Some(i) = (0..self.nodes.len())
                .find(|i| !self.nodes[*i].crashed && !self.nodes[*i].to_deliver.is_empty())
            {
                progressed = true;
                let d = self.nodes[i].to_deliver.pop_front().expect("not empty");
                self.nodes[i]
                    .m
                    .handle_event(now, Event::Delivered { delivery: d });
            }
            self.check_exclusive();
            if !progressed {
                break;
            }
        }
    }

    /// Partition → live members that believe they own it.
    pub fn owners(&self) -> BTreeMap<String, Vec<usize>> {
        let mut map: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.crashed {
                continue;
            }
            for p in n.m.owned() {
                map.entry(p.partition.id().to_string()).or_default().push(i);
            }
        }
        map
    }

    fn check_exclusive(&mut self) {
        for (p, owners) in self.owners() {
            if owners.len() > 1 {
                let t = self.now - self.epoch;
                self.violations
                    .push(format!("at {t:?}: {p} owned by {owners:?}"));
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter(|n| !n.crashed)
                .filter_map(|n| n.m.poll_timeout())
                .min();
            let Some(next) = next.filter(|t| *t <= target) else {
                break;
            };
            self.now = self.now.max(next);
            self.kv.now = Some(self.now);
            self.kv.expire_due(self.now);
            let now = self.now;
            for n in self.nodes.iter_mut().filter(|n| !n.crashed) {
                if n.m.poll_timeout().is_some_and(|t| t <= now) {
                    n.m.handle_timeout(now);
                }
            }
            self.run();
        }
        self.now = target;
        self.kv.now = Some(target);
        self.kv.expire_due(target);
        self.run();
    }

    /// A new process (new instance) in place of node `i`, started now.
    pub fn replace(&mut self, i: usize, cfg: ValidConfig, instance: u128, partitions: usize) {
        self.crash(i);
        let now = self.now;
        self.nodes[i] = Node {
            m: Member::new(
                cfg,
                Arc::new(RoundRobin),
                MemberInit {
                    instance: InstanceId(instance),
                    seed: instance as u64,
                    wall_epoch_ms: WALL0 + (now - self.epoch).as_millis() as u64,
                    partitions: catalog(partitions),
                },
                now,
            ),
            up: true,
            crashed: false,
            notes: Vec::new(),
            ever_assigned: Default::default(),
            to_deliver: VecDeque::new(),
        };
        self.nodes[i].m.start(now);
        self.run();
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
        self.kv.watches.retain(|(o, _, _, _)| *o != i);
        self.kv.pending.retain(|(o, _, _)| *o != i);
    }

    pub fn cut(&mut self, i: usize) {
        self.nodes[i].up = false;
        let now = self.now;
        self.nodes[i]
            .m
            .handle_event(now, Event::Connection(ConnectionState::Disconnected));
        self.run();
    }

    pub fn heal(&mut self, i: usize) {
        self.nodes[i].up = true;
        let now = self.now;
        self.nodes[i]
            .m
            .handle_event(now, Event::Connection(ConnectionState::Connected));
        self.run();
    }

    /// Every write that timed out lands now, in order (compare-and-set still applies).
    pub fn land(&mut self) -> usize {
        let writes = std::mem::take(&mut self.in_the_pipe);
        let mut landed = 0;
        for w in &writes {
            if self.kv.exec(w).is_ok() {
                landed += 1;
            }
        }
        self.run();
        landed
    }

    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].crashed && self.nodes[*i].m.is_leader())
            .collect();
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        leaders.first().copied()
    }

    /// For each running member: its id, the term and version of its record, what it applied,
    /// the newest term it saw, whether it is fenced (to tell a stuck handoff from a member bug).
    pub fn diagnose(&self) -> String {
        use parti_core::records::{AssignmentRecord, Record};
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.crashed || n.m.is_stopped() {
                continue;
            }
            let id = n.m.worker_id().cloned();
            let rec = id
                .as_ref()
                .and_then(|id| self.kv.get("parti-assignments", &format!("w.{id}")))
                .and_then(|(v, _)| AssignmentRecord::decode(&v).ok())
                .map(|r| (r.term.0, r.version.0, r.partitions.len()));
            out.push(format!(
                "node {i} {:?} record(term, version, n) {:?} applied {} known term {:?} fenced {} leader {}",
                id.map(|w| w.to_string()),
                rec,
                n.m.applied_version(),
                n.m.known_term().map(|t| t.0),
                n.m.is_fenced(),
                n.m.is_leader()
            ));
        }
        out.join("; ")
    }

    /// Every partition owned by exactly one of `members`.
    pub fn assert_covered_by(&self, members: &[usize], partitions: usize) {
        let owners = self.owners();
        assert_eq!(owners.len(), partitions, "coverage: {owners:?}");
        for (p, o) in &owners {
            assert!(o.len() == 1 && members.contains(&o[0]), "{p}: {o:?}");
        }
    }

    /// Every partition owned by exactly one live member.
    pub fn assert_covered(&self, partitions: usize) {
        let owners = self.owners();
        assert_eq!(owners.len(), partitions, "coverage: {owners:?}");
        assert!(owners.values().all(|o| o.len() == 1), "{owners:?}");
    }
}

const IGNORE: &str = "needs the Planner behaviour (branch `planner`)";

#[test]
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
fn a_restarted_member_gets_its_partitions_back_unchanged() {
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
    assert_eq!(
        c.nodes[k].m.owned(),
        before,
        "same partitions, same fences: nothing moved"
    );
    c.assert_covered(12);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[test]
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
        // `PARTI_CLUSTER_CASES=5000 cargo test --release … -- --include-ignored` to hunt.
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
        #[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
#[ignore = "needs the Planner behaviour (branch `planner`)"]
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
