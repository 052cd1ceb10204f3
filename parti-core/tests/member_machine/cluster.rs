//! Several members on one in-memory store, with crashes, network cuts and late writes;
//! exclusive ownership is checked after every step. The scenarios are in `cluster_scenarios`.

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

pub fn kv_bucket(r: &parti_core::machine::KvRequest) -> &str {
    r.bucket()
}

pub fn kv_key(r: &parti_core::machine::KvRequest) -> &str {
    r.key()
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
                        partitions: catalog(partitions).into(),
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
                    partitions: catalog(partitions).into(),
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
