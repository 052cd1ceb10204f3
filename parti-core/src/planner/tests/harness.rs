//! A pure test harness: an in-memory KV answering the planner's actions, simulated members that
//! heartbeat, apply their records and acknowledge, and virtual time.
//!
//! Every action is executed in the order the planner emitted it; the results of one drain are fed
//! back after the whole drain was taken, so writes the planner issues together are visibly in
//! flight together. Members apply a record the moment it is written (unless they are told not
//! to acknowledge) and heartbeat at once (the acknowledgement), as PROTOCOL.md §5 says.

#![allow(dead_code)] // helpers are used by some test modules and not others

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::fixtures::*;
use crate::assignment::Assignment;
use crate::config::{Config, ValidConfig};
use crate::machine::{IoAction, IoEvent, KvReply, KvRequest, KvResult, WatchId};
use crate::planner::{Planner, PlannerInit, PlannerNotification};
use crate::records::{
    AssignmentRecord, ClusterMeta, Heartbeat, Intent, Lifecycle, Names, Record, TermCounter,
    catalog_digest,
};
use crate::store::model::StoreModel;
use crate::store::{KvError, KvEvent, KvOperation, OnMismatch, WatchEvent, WatchKeys};
use crate::types::{
    Fence, InstanceId, Partition, PartitionId, Revision, Term, Version, WorkerId, WorkerState,
};

/// A simulated member process.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub instance: InstanceId,
    /// Fence round (each `Intent::Fenced` starts a new one).
    pub round: u32,
    pub seq: u64,
    pub applied: Version,
    pub intent: Intent,
    /// Heartbeating and reachable.
    pub up: bool,
    /// Applies records (false: a silent live owner, it keeps heartbeating its old `applied`).
    pub acks: bool,
    /// What the application was told it owns.
    pub holds: BTreeMap<PartitionId, Fence>,
    pub next_beat: Instant,
    pub last_ok_beat: Instant,
    /// Cut off from the store: no heartbeats, no records; under the `Fence` policy it revokes
    /// everything once its last heartbeat is `heartbeat_ttl - fence_margin` old.
    pub cut_off: bool,
    /// The highest term this process has seen in its ordered stream of `term` and `w.<id>`.
    pub term_seen: Term,
    /// Revisions of its record it refused (an older term after a newer one, PROTOCOL §4).
    pub refused: BTreeSet<Revision>,
}

/// One write to the assignments bucket, decoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Written {
    Record(WorkerId, AssignmentRecord),
    Meta(ClusterMeta),
}

/// Faults injected into the next writes of the assignments bucket.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Not applied; this error returned.
    Fail(KvError),
    /// Applied, but reported as a timeout.
    TimeoutApplied,
    /// Reported as a timeout and applied this much later — if its compare-and-set still holds
    /// then (async-nats replays queued writes after a reconnect, PROTOCOL.md §1).
    TimeoutLate(Duration),
}

/// A write that will land later.
#[derive(Clone, Debug)]
pub(crate) struct LateWrite {
    pub at: Instant,
    pub bucket: String,
    pub key: String,
    pub value: Vec<u8>,
    pub expected: Option<Revision>,
}

/// The harness's store: the crate's [`StoreModel`] — one model of the store's semantics for the
/// simulator and every test harness (revisions per bucket, compare-and-set, tombstones, value
/// limits) — provisioned with the config's buckets **without expiry** (this harness decides
/// deaths by silence, and a test removes a key to say it expired), with map-like helpers.
#[derive(Clone, Debug)]
pub(crate) struct Kv {
    pub(crate) store: StoreModel,
    buckets: Vec<String>,
    /// Any instant: without expiry, reads do not depend on time.
    at: Instant,
}

impl Kv {
    fn new(cfg: &ValidConfig, at: Instant) -> Kv {
        let mut store = StoreModel::new();
        let mut buckets = Vec::new();
        for mut spec in cfg.bucket_specs() {
            spec.max_age = None;
            store
                .provision(&spec, OnMismatch::Fail)
                .expect("the config's bucket specs are valid");
            buckets.push(spec.name);
        }
        Kv { store, buckets, at }
    }

    /// The live value of `(bucket, key)` and its revision.
    pub(crate) fn get(&self, key: &(String, String)) -> Option<(Vec<u8>, Revision)> {
        self.store
            .entry(&key.0, &key.1, self.at)
            .ok()
            .flatten()
            .map(|e| (e.value, e.revision))
    }

    pub(crate) fn contains_key(&self, key: &(String, String)) -> bool {
        self.get(key).is_some()
    }

    /// Deletes the key (a tombstone, as the store writes one).
    pub(crate) fn remove(&mut self, key: &(String, String)) {
        self.store
            .delete(&key.0, &key.1, None, self.at)
            .expect("a provisioned bucket and a valid key");
    }

    /// Every live value, by `(bucket, key)`.
    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), (Vec<u8>, Revision)> {
        let mut out = BTreeMap::new();
        for bucket in &self.buckets {
            for k in self.store.keys(bucket, "", self.at).unwrap_or_default() {
                let key = (bucket.clone(), k);
                if let Some(v) = self.get(&key) {
                    out.insert(key, v);
                }
            }
        }
        out
    }

    /// The live values of one bucket whose keys `keys` matches, in revision order.
    pub(crate) fn matching(
        &self,
        bucket: &str,
        keys: &WatchKeys,
    ) -> Vec<(String, Vec<u8>, Revision)> {
        let mut v: Vec<(String, Vec<u8>, Revision)> = self
            .store
            .keys(bucket, "", self.at)
            .unwrap_or_default()
            .into_iter()
            .filter(|k| keys.matches(k))
            .filter_map(|k| {
                let (value, rev) = self.get(&(bucket.to_owned(), k.clone()))?;
                Some((k, value, rev))
            })
            .collect();
        v.sort_by_key(|x| x.2);
        v
    }
}

impl PartialEq for Kv {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot() == other.snapshot()
    }
}

pub(crate) struct Sim {
    pub p: Planner,
    pub epoch: Instant,
    pub now: Instant,
    pub names: Names,
    pub cfg: ValidConfig,
    pub kv: Kv,
    pub(crate) watches: BTreeMap<WatchId, (String, WatchKeys)>,
    pub members: BTreeMap<WorkerId, Member>,
    pub writes: Vec<Written>,
    pub faults: VecDeque<Fault>,
    pub notes: Vec<PlannerNotification>,
    pub actions: Vec<IoAction>,
    pub violations: Vec<String>,
    pub(crate) last_fence: BTreeMap<PartitionId, (WorkerId, Fence)>,
    pub(crate) next_instance: u128,
    pub(crate) in_pump: bool,
    pub(crate) hb_stalled_until: Option<Instant>,
    pub(crate) late: Vec<LateWrite>,
    /// The strategy every planner of this simulation uses.
    pub(crate) strat: Strat,
    pub(crate) hb_backlog: BTreeMap<WorkerId, (Revision, Vec<u8>)>,
    /// Delivery delay of the leader's heartbeat watch (a lagging watch: every heartbeat is
    /// delivered, in order, this long after it was written).
    pub(crate) hb_lag: Option<Duration>,
    /// Heartbeats written and not delivered yet by the lagging watch: `(due, worker, revision,
    /// value)`, in revision order.
    pub(crate) hb_lagged: VecDeque<(Instant, WorkerId, Revision, Vec<u8>)>,
    pub term: Term,
    /// Until then the heartbeats bucket refuses watches: the driver reports them ended.
    pub(crate) refuse_hb_watches_until: Option<Instant>,
    /// Every value the `term` key was given, with its revision (the store keeps one; a member's
    /// ordered stream sees them all).
    pub(crate) term_bumps: Vec<(Term, Revision)>,
    /// Values of the assignments bucket larger than this are refused (`ValueTooLarge`), as
    /// a NATS server's `max_payload` does.
    pub(crate) max_value: Option<usize>,
}

pub(crate) fn config() -> ValidConfig {
    Config::default().validate().unwrap()
}

impl Sim {
    /// A planner for `worker-0` at term 1 over an empty store (a cold start), with `members`
    /// already heartbeating.
    pub(crate) fn cold(members: &[u32], catalog: Vec<Partition>) -> Sim {
        Self::build(config(), members, catalog, |_| {})
    }

    pub(crate) fn build(
        cfg: ValidConfig,
        members: &[u32],
        catalog: Vec<Partition>,
        seed_store: impl FnOnce(&mut Sim),
    ) -> Sim {
        Self::build_after_bump(cfg, members, catalog, seed_store, |_| {})
    }

    /// As [`Sim::build`], with `after_bump` run once the new term is in the store (before the
    /// planner exists): for writes of an older leader that land after the bump.
    pub(crate) fn build_after_bump(
        cfg: ValidConfig,
        members: &[u32],
        catalog: Vec<Partition>,
        seed_store: impl FnOnce(&mut Sim),
        after_bump: impl FnOnce(&mut Sim),
    ) -> Sim {
        Self::build_full(cfg, Strat::Sticky, members, catalog, seed_store, after_bump)
    }

    /// The general constructor: any config and test strategy.
    pub(crate) fn build_full(
        cfg: ValidConfig,
        strat: Strat,
        members: &[u32],
        catalog: Vec<Partition>,
        seed_store: impl FnOnce(&mut Sim),
        after_bump: impl FnOnce(&mut Sim),
    ) -> Sim {
        #[allow(clippy::disallowed_methods)] // the test's one epoch
        let epoch = Instant::now();
        let names = cfg.names();
        let dummy = Planner::new(
            cfg.clone(),
            std::sync::Arc::new(Sticky),
            PlannerInit {
                me: w(0),
                instance: InstanceId(0),
                term: Term(1),
                partitions: Vec::new(),
                seed: 1,
            },
            epoch,
        );
        let mut sim = Sim {
            p: dummy,
            epoch,
            now: epoch,
            names,
            cfg: cfg.clone(),
            kv: Kv::new(&cfg, epoch),
            watches: BTreeMap::new(),
            members: BTreeMap::new(),
            writes: Vec::new(),
            faults: VecDeque::new(),
            notes: Vec::new(),
            actions: Vec::new(),
            violations: Vec::new(),
            max_value: None,
            last_fence: BTreeMap::new(),
            next_instance: 100,
            in_pump: false,
            hb_stalled_until: None,
            late: Vec::new(),
            strat,
            hb_backlog: BTreeMap::new(),
            hb_lag: None,
            hb_lagged: VecDeque::new(),
            term: Term(1),
            refuse_hb_watches_until: None,
            term_bumps: Vec::new(),
        };
        for &m in members {
            sim.add_member(w(m));
        }
        seed_store(&mut sim);
        let term = sim.term_in_store().next();
        sim.term = term;
        sim.put_raw(
            &sim.names.assignments_bucket(),
            Names::TERM_KEY,
            TermCounter { term }.encode(),
        );
        for m in sim.members.values_mut() {
            m.term_seen = term;
        }
        after_bump(&mut sim);
        let me_instance = sim.members.get(&w(0)).map_or(InstanceId(0), |m| m.instance);
        sim.p = Planner::new(
            cfg,
            strat.make(),
            PlannerInit {
                me: w(0),
                instance: me_instance,
                term,
                partitions: catalog,
                seed: 7,
            },
            epoch,
        );
        sim.pump();
        sim
    }

    pub(crate) fn term_in_store(&self) -> Term {
        self.kv
            .get(&(self.names.assignments_bucket(), Names::TERM_KEY.to_owned()))
            .and_then(|(v, _)| TermCounter::decode(&v).ok())
            .map_or(Term::ZERO, |t| t.term)
    }

    /// A member whose heartbeat is already in the store (no watch delivery).
    /// The process id of simulated member `worker-<n>` (`InstanceId(0)` if there is none).
    pub(crate) fn instance_of(&self, n: u32) -> InstanceId {
        self.members
            .get(&w(n))
            .map_or(InstanceId(0), |m| m.instance)
    }

    pub(crate) fn add_member(&mut self, id: WorkerId) {
        self.next_instance += 1;
        let m = Member {
            instance: InstanceId(self.next_instance),
            round: 0,
            seq: 0,
            applied: Version::ZERO,
            intent: Intent::Active,
            up: true,
            acks: true,
            holds: BTreeMap::new(),
            next_beat: self.now + self.cfg.heartbeat_interval,
            last_ok_beat: self.now,
            cut_off: false,
            term_seen: Term::ZERO,
            refused: BTreeSet::new(),
        };
        self.members.insert(id.clone(), m);
        self.fresh_view(&id);
        let hb = self.heartbeat_of(&id);
        self.put_raw(&self.names.heartbeats_bucket(), id.as_str(), hb);
    }

    pub(crate) fn heartbeat_of(&mut self, id: &WorkerId) -> Vec<u8> {
        let m = self.members.get_mut(id).unwrap();
        m.seq += 1;
        Heartbeat {
            instance: m.instance,
            round: m.round,
            seq: m.seq,
            state: WorkerState::Stable,
            applied: m.applied,
            intent: m.intent,
            capacity: 1,
        }
        .encode()
    }

    /// What a process that starts watching now sees: the current term, and its record refused
    /// if that is of an older term and landed after the term's bump.
    pub(crate) fn fresh_view(&mut self, id: &WorkerId) {
        let b = self.names.assignments_bucket();
        let (term, term_rev) = self
            .kv
            .get(&(b.clone(), Names::TERM_KEY.to_owned()))
            .and_then(|(v, r)| TermCounter::decode(&v).ok().map(|t| (t.term, r)))
            .unwrap_or((Term::ZERO, Revision(0)));
        let rec = self
            .kv
            .get(&(b, Names::assignment_key(id)))
            .and_then(|(v, r)| AssignmentRecord::decode(&v).ok().map(|x| (x.term, r)));
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        m.term_seen = m.term_seen.max(term);
        if let Some((t, r)) = rec
            && t < term
            && r > term_rev
        {
            m.refused.insert(r);
        }
    }

    /// What a running member that reconnects sees: its ordered stream of `term` and its record
    /// catches up, so its record is refused if a bump to a newer term came before it — a
    /// deposed leader's write that landed late, after a bump the store no longer shows (the
    /// `term` key keeps only its newest value). Found by the planner property at 100,000
    /// cases: a cut-off member applied, on reconnecting, a late write of term 1 that had
    /// landed after the bump to 2 (the store showed only the bump to 3, after it).
    pub(crate) fn catch_up_view(&mut self, id: &WorkerId) {
        self.fresh_view(id);
        let b = self.names.assignments_bucket();
        let rec = self
            .kv
            .get(&(b, Names::assignment_key(id)))
            .and_then(|(v, r)| AssignmentRecord::decode(&v).ok().map(|x| (x.term, r)));
        let Some((t, r)) = rec else {
            return;
        };
        let newer_before = self.term_bumps.iter().any(|(bt, br)| *bt > t && *br < r);
        if newer_before && let Some(m) = self.members.get_mut(id) {
            m.refused.insert(r);
        }
    }

    /// Writes a value without telling anyone (setup).
    pub(crate) fn put_raw(&mut self, bucket: &str, key: &str, value: Vec<u8>) -> Revision {
        let r = self
            .kv
            .store
            .put(bucket, key, value.clone(), self.now)
            .expect("a provisioned bucket and a valid key");
        if key == Names::TERM_KEY
            && bucket == self.names.assignments_bucket()
            && let Ok(t) = TermCounter::decode(&value)
        {
            self.term_bumps.push((t.term, r));
        }
        r
    }

    /// Seeds a settled cluster: records, meta, members with those records applied.
    pub(crate) fn seed_settled(&mut self, a: &[(u32, &[u32])], catalog: &[Partition], v: u64) {
        let bucket = self.names.assignments_bucket();
        let old_term = Term(1);
        self.put_raw(
            &bucket,
            Names::TERM_KEY,
            TermCounter { term: old_term }.encode(),
        );
        for (wn, ps) in a {
            let instance = self
                .members
                .get(&w(*wn))
                .map_or(InstanceId(0), |m| m.instance);
            let rec = AssignmentRecord {
                term: old_term,
                version: Version(v),
                phase: crate::records::Phase::Grant,
                instance,
                round: 0,
                partitions: ps
                    .iter()
                    .map(|n| crate::records::OwnedPartition {
                        partition: p(*n),
                        fence: Fence::new(old_term, Version(v)),
                    })
                    .collect(),
            };
            self.put_raw(&bucket, &Names::assignment_key(&w(*wn)), rec.encode());
            if let Some(m) = self.members.get_mut(&w(*wn)) {
                m.applied = Version(v);
                m.holds = rec
                    .partitions
                    .iter()
                    .map(|o| (o.partition.id().clone(), o.fence))
                    .collect();
                for (pp, f) in &m.holds {
                    self.last_fence.insert(pp.clone(), (w(*wn), *f));
                }
                let hb = self.heartbeat_of(&w(*wn));
                self.put_raw(&self.names.heartbeats_bucket(), w(*wn).as_str(), hb);
            }
        }
        let meta = ClusterMeta {
            term: old_term,
            version: Version(v),
            lifecycle: Lifecycle::Settled,
            members: a.iter().map(|(n, _)| w(*n)).collect(),
            catalog_digest: catalog_digest(catalog),
            restarting: Vec::new(),
        };
        self.put_raw(&bucket, Names::META_KEY, meta.encode());
    }

    /// A settled cluster of `n` members (`worker-0` leads) owning `catalog` round robin at
    /// version 5 of term 1; the planner takes over at term 2.
    pub(crate) fn settled(n: u32, catalog: u32) -> Sim {
        Self::settled_with(config(), n, catalog)
    }

    pub(crate) fn settled_with(cfg: ValidConfig, n: u32, catalog: u32) -> Sim {
        let members: Vec<u32> = (0..n).collect();
        let cat = parts(catalog);
        let lists: Vec<(u32, Vec<u32>)> = (0..n)
            .map(|k| (k, (0..catalog).filter(|i| i % n == k).collect()))
            .collect();
        let c2 = cat.clone();
        Self::build(cfg, &members, cat, move |s| {
            let refs: Vec<(u32, &[u32])> = lists.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            s.seed_settled(&refs, &c2, 5);
        })
    }

    /// Leadership moves (to a new planner on `worker-0`, as after a lease loss and re-election):
    /// the old planner stops, the term is bumped, a new planner takes over from the store.
    pub(crate) fn new_leader(&mut self, catalog: Vec<Partition>) {
        let now = self.now;
        self.p.stop(now);
        self.pump();
        let term = self.term_in_store().next();
        self.term = term;
        let b = self.names.assignments_bucket();
        self.put_raw(&b, Names::TERM_KEY, TermCounter { term }.encode());
        for m in self.members.values_mut() {
            if m.up && !m.cut_off {
                m.term_seen = term;
            }
        }
        let instance = self
            .members
            .get(&w(0))
            .map_or(InstanceId(0), |m| m.instance);
        self.p = Planner::new(
            self.cfg.clone(),
            self.strat.make(),
            PlannerInit {
                me: w(0),
                instance,
                term,
                partitions: catalog,
                seed: term.0,
            },
            now,
        );
        self.pump();
    }

    /// Another process writes `value` (delivered to the planner's watches that follow it).
    pub(crate) fn external_put(&mut self, bucket: &str, key: &str, value: Vec<u8>) {
        let revision = self.put_raw(bucket, key, value.clone());
        let targets: Vec<WatchId> = self
            .watches
            .iter()
            .filter(|(_, (b, k))| b == bucket && k.matches(key))
            .map(|(id, _)| *id)
            .collect();
        for watch in targets {
            let ev = WatchEvent::Change(KvEvent {
                key: key.to_owned(),
                revision,
                op: KvOperation::Put(value.clone()),
            });
            self.p.handle_event(
                self.now,
                IoEvent::Watch {
                    watch,
                    event: Ok(ev),
                },
            );
        }
        self.pump();
    }

    /// The driver reports the planner's heartbeats watch ended (and forgets it).
    pub(crate) fn end_heartbeats_watch(&mut self, error: Option<KvError>) {
        let hb = self.names.heartbeats_bucket();
        let ids: Vec<WatchId> = self
            .watches
            .iter()
            .filter(|(_, (b, _))| *b == hb)
            .map(|(id, _)| *id)
            .collect();
        for watch in ids {
            self.watches.remove(&watch);
            self.p.handle_event(
                self.now,
                IoEvent::WatchEnded {
                    watch,
                    error: error.clone(),
                },
            );
        }
        self.pump();
    }

    /// The record of `worker` in the store.
    pub(crate) fn record(&self, n: u32) -> Option<AssignmentRecord> {
        self.kv
            .get(&(
                self.names.assignments_bucket(),
                Names::assignment_key(&w(n)),
            ))
            .and_then(|(v, _)| AssignmentRecord::decode(&v).ok())
    }

    /// Executes every pending action, feeding results back, until the planner is quiet.
    pub(crate) fn pump(&mut self) {
        if self.in_pump {
            return;
        }
        self.in_pump = true;
        loop {
            let mut batch = Vec::new();
            while let Some(a) = self.p.poll_action() {
                batch.push(a);
            }
            while let Some(n) = self.p.poll_notification() {
                self.notes.push(n);
            }
            if batch.is_empty() {
                break;
            }
            for a in batch {
                self.actions.push(a.clone());
                self.execute(a);
            }
        }
        self.in_pump = false;
    }

    fn execute(&mut self, a: IoAction) {
        match a {
            IoAction::Watch {
                watch,
                bucket,
                keys,
            } => {
                if bucket == self.names.heartbeats_bucket()
                    && self.refuse_hb_watches_until.is_some_and(|t| self.now < t)
                {
                    let error = Some(KvError::Unavailable {
                        reason: "refused".into(),
                    });
                    self.p
                        .handle_event(self.now, IoEvent::WatchEnded { watch, error });
                    return;
                }
                self.watches.insert(watch, (bucket.clone(), keys.clone()));
                for (key, value, revision) in self.kv.matching(&bucket, &keys) {
                    let ev = WatchEvent::Change(KvEvent {
                        key,
                        revision,
                        op: KvOperation::Put(value),
                    });
                    self.p.handle_event(
                        self.now,
                        IoEvent::Watch {
                            watch,
                            event: Ok(ev),
                        },
                    );
                }
                self.p.handle_event(
                    self.now,
                    IoEvent::Watch {
                        watch,
                        event: Ok(WatchEvent::SnapshotComplete),
                    },
                );
            }
            IoAction::Unwatch { watch } => {
                assert!(
                    self.watches.remove(&watch).is_some(),
                    "Unwatch of a watch that is not open: {watch:?}"
                );
            }
            IoAction::Kv { op, request } => {
                let result = self.kv_op(request);
                self.p
                    .handle_event(self.now, IoEvent::KvDone { op, result });
            }
        }
    }

    fn kv_op(&mut self, request: KvRequest) -> KvResult {
        let (store, now) = (&mut self.kv.store, self.now);
        match request {
            KvRequest::Entry { bucket, key } => store.entry(&bucket, &key, now).map(KvReply::Entry),
            KvRequest::Keys { bucket, prefix } => {
                store.keys(&bucket, &prefix, now).map(KvReply::Keys)
            }
            KvRequest::Create { bucket, key, value } => {
                self.conditional_write(bucket, key, value, None)
            }
            KvRequest::Update {
                bucket,
                key,
                value,
                expected,
            } => self.conditional_write(bucket, key, value, Some(expected)),
            KvRequest::Put { bucket, key, value } => {
                Ok(KvReply::Written(self.put_raw(&bucket, &key, value)))
            }
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => store
                .delete(&bucket, &key, expected, now)
                .map(|_| KvReply::Deleted),
        }
    }

    fn conditional_write(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> KvResult {
        if let Some(limit) = self.max_value
            && value.len() > limit
        {
            // The store's own check, for the assignments bucket only (as before the
            // harness used the store model).
            return Err(KvError::ValueTooLarge {
                size: Some(value.len()),
                limit: Some(limit),
            });
        }
        let fault = self.faults.pop_front();
        if let Some(Fault::Fail(e)) = fault {
            return Err(e);
        }
        if let Some(Fault::TimeoutLate(d)) = fault {
            self.late.push(LateWrite {
                at: self.now + d,
                bucket,
                key,
                value,
                expected,
            });
            return Err(KvError::Timeout);
        }
        self.cas_apply(bucket, key, value, expected)
            .map(|rev| match fault {
                Some(Fault::TimeoutApplied) => Err(KvError::Timeout),
                _ => Ok(KvReply::Written(rev)),
            })?
    }

    /// Applies a compare-and-set write (no faults).
    fn cas_apply(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, KvError> {
        let written = match expected {
            None => self.kv.store.create(&bucket, &key, value.clone(), self.now),
            Some(e) => self
                .kv
                .store
                .update(&bucket, &key, value.clone(), e, self.now),
        }?;
        self.after_write(&key, &value);
        Ok(written)
    }

    /// Lands the late writes due at `now` (each only if its compare-and-set holds).
    pub(crate) fn land_late_writes(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<LateWrite>, Vec<LateWrite>) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|l| l.at <= now);
        self.late = rest;
        for l in due {
            let _ = self.cas_apply(l.bucket, l.key, l.value, l.expected);
        }
        self.pump();
    }

    fn after_write(&mut self, key: &str, value: &[u8]) {
        if key == Names::META_KEY {
            let m = ClusterMeta::decode(value).unwrap();
            if let Some(Written::Meta(prev)) = self
                .writes
                .iter()
                .rev()
                .find(|x| matches!(x, Written::Meta(_)))
                && prev.version > m.version
            {
                self.violations.push(format!(
                    "meta version went down {} -> {}",
                    prev.version, m.version
                ));
            }
            self.writes.push(Written::Meta(m));
            return;
        }
        let Some(worker) = Names::worker_of_assignment_key(key) else {
            return;
        };
        let rec = AssignmentRecord::decode(value).unwrap();
        let prev_version = self.writes.iter().rev().find_map(|x| match x {
            Written::Record(ww, r) if *ww == worker => Some(r.version),
            _ => None,
        });
        if prev_version.is_some_and(|v| v >= rec.version) {
            self.violations.push(format!(
                "version of {worker} did not grow: {prev_version:?} -> {}",
                rec.version
            ));
        }
        if let Some(m) = self.members.get_mut(&worker)
            && rec.term < m.term_seen
        {
            let rev = self
                .kv
                .get(&(self.names.assignments_bucket(), key.to_owned()))
                .map_or(Revision(0), |x| x.1);
            m.refused.insert(rev);
        }
        self.writes.push(Written::Record(worker.clone(), rec));
        self.apply(&worker);
    }

    /// Advances virtual time to `epoch + t`, heartbeating every live member on schedule and
    /// firing the planner's timeouts.
    pub(crate) fn run_to(&mut self, t: Duration) {
        let end = self.epoch + t;
        loop {
            let beat_at = self
                .members
                .values()
                .filter(|m| m.up)
                .map(|m| m.next_beat)
                .min();
            let late_at = self.late.iter().map(|l| l.at).min();
            let lagged_at = self.hb_lagged.front().map(|l| l.0);
            let next = [
                beat_at,
                self.p.poll_timeout(),
                self.hb_stalled_until,
                late_at,
                lagged_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|n| *n <= end) else {
                break;
            };
            // A fence deadline between two events takes effect before the next one.
            self.now = self.now.max(next);
            self.fence_due();
            self.flush_stall();
            self.deliver_lagged();
            self.land_late_writes();
            let due: Vec<WorkerId> = self
                .members
                .iter()
                .filter(|(_, m)| m.up && m.next_beat <= self.now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                self.beat(&id);
            }
            if self.p.poll_timeout().is_some_and(|t| t <= self.now) {
                self.p.handle_timeout(self.now);
                self.pump();
            }
        }
        self.now = self.now.max(end);
        self.p.handle_timeout(self.now);
        self.pump();
    }

    /// Advances by `d`.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let t = self.now - self.epoch + d;
        self.run_to(t);
    }

    /// Records written since index `from`.
    pub(crate) fn records_since(&self, from: usize) -> Vec<(WorkerId, AssignmentRecord)> {
        self.writes[from..]
            .iter()
            .filter_map(|x| match x {
                Written::Record(w, r) => Some((w.clone(), r.clone())),
                Written::Meta(_) => None,
            })
            .collect()
    }

    /// What the members hold, as an assignment of up members.
    pub(crate) fn held(&self) -> Assignment {
        let mut a = Assignment::new();
        for (id, m) in &self.members {
            for pp in m.holds.keys() {
                let _ = a.insert(id.clone(), pp.clone());
            }
        }
        a
    }

    /// Partitions held by exactly one up member, compared with the catalog.
    pub(crate) fn fully_covered(&self, catalog: &[Partition]) -> bool {
        let a = self.held();
        catalog.iter().all(|pp| {
            a.owner(pp.id())
                .is_some_and(|o| self.members.get(o).is_some_and(|m| m.up))
        }) && a.len() == catalog.len()
    }

    pub(crate) fn kv_writes(&self, from: usize) -> usize {
        self.actions[from..]
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    IoAction::Kv {
                        request: KvRequest::Update { .. } | KvRequest::Create { .. },
                        ..
                    }
                )
            })
            .count()
    }

    pub(crate) fn published(&self) -> Vec<(crate::planner::PlanReason, Version)> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                PlannerNotification::Published { reason, version } => Some((*reason, *version)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn holds_of(&self, n: u32) -> BTreeSet<PartitionId> {
        self.members
            .get(&w(n))
            .map(|m| m.holds.keys().cloned().collect())
            .unwrap_or_default()
    }
}
