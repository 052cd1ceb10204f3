//! A pure harness: an in-memory KV that answers the member's actions, virtual time, a log.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parti_core::config::Config;
use parti_core::machine::{IoAction, IoEvent, KvReply, KvRequest, KvResult, OpId, WatchId};
use parti_core::member::{Action, DeliveryId, Event, Member, MemberInit, Notification};
use parti_core::records::{
    AssignmentRecord, Heartbeat, IdClaim, Leadership, Names, OwnedPartition, Phase, Record,
    TermCounter,
};
use parti_core::store::model::StoreModel;
use parti_core::store::{
    BucketSpec, ConnectionState, KvError, KvEvent, KvOperation, OnMismatch, StorageKind,
    WatchEvent, WatchKeys,
};
use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};
use parti_core::{Fence, InstanceId, Partition, Revision, Term, ValidConfig, Version, WorkerId};

pub const ME: InstanceId = InstanceId(0xAAAA);
pub const OTHER: InstanceId = InstanceId(0xBBBB);
/// Wall clock at the epoch (Unix ms).
pub const WALL0: u64 = 1_700_000_000_000;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Everything to the first worker.
#[derive(Debug)]
pub struct First;
impl AssignmentStrategy for First {
    fn name(&self) -> &'static str {
        "first"
    }
    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        input.require_workers()?;
        Ok(Plan::from_owners(vec![0; input.partitions.len()]))
    }
}

/// Partitions in id order dealt round-robin to workers in id order.
#[derive(Debug)]
pub struct RoundRobin;
impl AssignmentStrategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }
    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        input.require_workers()?;
        let mut workers: Vec<usize> = (0..input.workers.len()).collect();
        workers.sort_by(|a, b| input.workers[*a].id.cmp(&input.workers[*b].id));
        let mut parts: Vec<usize> = (0..input.partitions.len()).collect();
        parts.sort_by(|a, b| input.partitions[*a].id().cmp(input.partitions[*b].id()));
        let mut owners = vec![0; input.partitions.len()];
        for (j, p) in parts.into_iter().enumerate() {
            owners[p] = workers[j % workers.len()];
        }
        Ok(Plan::from_owners(owners))
    }
}

pub fn part(name: &str) -> Partition {
    Partition::with_default_weight([name]).unwrap()
}

pub fn owned(name: &str, term: u64, version: u64) -> OwnedPartition {
    OwnedPartition {
        partition: part(name),
        fence: Fence::new(Term(term), Version(version)),
    }
}

pub fn wid(n: u32) -> WorkerId {
    WorkerId::from_parts("worker", n).unwrap()
}

/// The test store: parti-core's `StoreModel` (the store contract's semantics, shared with the
/// simulator and the planner's harness: revisions per bucket, compare-and-set, tombstones,
/// max-age expiry) under this harness's own watch delivery, which tests steer (`pending` is a
/// queue they may reorder or drop from). Buckets are created on first use without a max age;
/// `set_max_age` gives one. Max-age expiry is silent (no watch event), as on servers without
/// delete markers.
#[derive(Debug)]
pub struct Kv {
    pub store: StoreModel,
    /// Open watches: (owner node, id, bucket, keys).
    pub watches: Vec<(usize, WatchId, String, WatchKeys)>,
    /// Watch items produced by writes, not yet delivered: (owner node, id, item).
    pub pending: VecDeque<(usize, WatchId, WatchEvent)>,
    /// The time writes are stamped with (`None`: the store's own clock, i.e. the latest
    /// time it saw, or its creation).
    pub now: Option<Instant>,
    pub created: Instant,
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            store: StoreModel::new(),
            watches: Vec::new(),
            pending: VecDeque::new(),
            now: None,
            #[allow(clippy::disallowed_methods)] // a fallback clock for writes before any time
            created: Instant::now(),
        }
    }
}

fn spec(bucket: &str, max_age: Option<Duration>) -> BucketSpec {
    BucketSpec {
        name: bucket.to_owned(),
        history: 1,
        max_age,
        replicas: 1,
        storage: StorageKind::Memory,
    }
}

impl Kv {
    fn at(&self) -> Instant {
        self.now.unwrap_or(self.created)
    }

    fn ensure(&mut self, b: &str) {
        if self.store.bucket_spec(b).is_none() {
            self.store
                .provision(&spec(b, None), OnMismatch::Fail)
                .expect("a valid bucket name");
        }
    }

    pub fn get(&self, b: &str, key: &str) -> Option<(Vec<u8>, Revision)> {
        self.store
            .entry(b, key, self.at())
            .ok()
            .flatten()
            .map(|e| (e.value, e.revision))
    }

    /// Gives `bucket` a max age.
    pub fn set_max_age(&mut self, b: &str, age: Duration) {
        self.ensure(b);
        self.store
            .provision(&spec(b, Some(age)), OnMismatch::Reconcile)
            .expect("a max age can be reconciled");
    }

    /// Removes, silently, every value older than its bucket's max age.
    pub fn expire_due(&mut self, now: Instant) {
        self.store.expire(now);
    }

    fn emit(&mut self, b: &str, key: &str, revision: Revision, op: KvOperation) {
        for (owner, w, wb, keys) in &self.watches {
            if wb == b && keys.matches(key) {
                self.pending.push_back((
                    *owner,
                    *w,
                    WatchEvent::Change(KvEvent {
                        key: key.to_owned(),
                        revision,
                        op: op.clone(),
                    }),
                ));
            }
        }
    }

    pub fn write(&mut self, b: &str, key: &str, value: Vec<u8>) -> Revision {
        self.ensure(b);
        let at = self.at();
        let r = self
            .store
            .put(b, key, value.clone(), at)
            .expect("a provisioned bucket and a valid key");
        self.emit(b, key, r, KvOperation::Put(value));
        r
    }

    pub fn remove(&mut self, b: &str, key: &str) {
        self.ensure(b);
        let at = self.at();
        let r = self
            .store
            .delete(b, key, None, at)
            .expect("a provisioned bucket and a valid key");
        self.emit(b, key, r, KvOperation::Delete);
    }

    /// Silent expiry: gone, no watch event.
    pub fn expire(&mut self, b: &str, key: &str) {
        self.store.forget(b, key);
    }

    pub fn exec(&mut self, req: &KvRequest) -> KvResult {
        let at = self.at();
        match req.clone() {
            KvRequest::Entry { bucket, key } => {
                self.ensure(&bucket);
                self.store.entry(&bucket, &key, at).map(KvReply::Entry)
            }
            KvRequest::Create { bucket, key, value } => {
                self.ensure(&bucket);
                let r = self.store.create(&bucket, &key, value.clone(), at)?;
                self.emit(&bucket, &key, r, KvOperation::Put(value));
                Ok(KvReply::Written(r))
            }
            KvRequest::Update {
                bucket,
                key,
                value,
                expected,
            } => {
                self.ensure(&bucket);
                let r = self
                    .store
                    .update(&bucket, &key, value.clone(), expected, at)?;
                self.emit(&bucket, &key, r, KvOperation::Put(value));
                Ok(KvReply::Written(r))
            }
            KvRequest::Put { bucket, key, value } => {
                Ok(KvReply::Written(self.write(&bucket, &key, value)))
            }
            KvRequest::Delete {
                bucket,
                key,
                expected,
            } => {
                self.ensure(&bucket);
                let current = self.get(&bucket, &key).map(|(_, r)| r);
                if let Some(e) = expected
                    && current != Some(e)
                {
                    return Err(KvError::RevisionMismatch { current });
                }
                // A key without a live value is left as it is (no marker, no event).
                if current.is_some() {
                    self.remove(&bucket, &key);
                }
                Ok(KvReply::Deleted)
            }
            KvRequest::Keys { bucket, prefix } => {
                self.ensure(&bucket);
                self.store.keys(&bucket, &prefix, at).map(KvReply::Keys)
            }
            other => panic!("the test store does not know {other:?}"),
        }
    }

    pub fn open(&mut self, owner: usize, watch: WatchId, bucket: &str, keys: WatchKeys) {
        self.ensure(bucket);
        let at = self.at();
        let mut snap: Vec<(String, Vec<u8>, Revision)> = self
            .store
            .keys(bucket, "", at)
            .unwrap_or_default()
            .into_iter()
            .filter(|k| keys.matches(k))
            .filter_map(|k| {
                let (v, r) = self.get(bucket, &k)?;
                Some((k, v, r))
            })
            .collect();
        snap.sort_by_key(|(_, _, r)| *r);
        for (key, value, revision) in snap {
            self.pending.push_back((
                owner,
                watch,
                WatchEvent::Change(KvEvent {
                    key,
                    revision,
                    op: KvOperation::Put(value),
                }),
            ));
        }
        self.pending
            .push_back((owner, watch, WatchEvent::SnapshotComplete));
        self.watches.push((owner, watch, bucket.to_owned(), keys));
    }
}

type Pred = Box<dyn Fn(&KvRequest) -> bool>;

pub struct Fault {
    pred: Pred,
    error: KvError,
    /// How many more times it fires (`usize::MAX` = always).
    times: usize,
    /// Whether the write is applied anyway (a timeout whose write landed).
    apply: bool,
}

/// The member, its store, time, and a log of everything that left the member.
pub struct H {
    pub m: Member,
    pub kv: Kv,
    pub names: Names,
    pub epoch: Instant,
    pub now: Instant,
    pub cfg: ValidConfig,
    /// Every action the member emitted, in order.
    pub log: Vec<Action>,
    pub notes: Vec<Notification>,
    /// Deliveries emitted, in order.
    pub deliveries: Vec<(DeliveryId, Vec<OwnedPartition>, Vec<OwnedPartition>)>,
    /// Complete deliveries at once.
    pub auto_deliver: bool,
    /// Store unreachable: every op fails `Unavailable`, watch items wait.
    pub offline: bool,
    pub faults: Vec<Fault>,
    /// Ops held back unanswered (by `hold_when`).
    pub held: Vec<(OpId, KvRequest)>,
    hold: Vec<Pred>,
    to_deliver: VecDeque<DeliveryId>,
    /// Watches of this bucket cannot be opened: the driver reports them ended with this error.
    pub refuse_watches: Option<(String, KvError)>,
}

pub fn config(f: impl FnOnce(&mut Config)) -> ValidConfig {
    let mut c = Config::default();
    f(&mut c);
    c.validate().unwrap()
}

impl H {
    pub fn new(cfg: ValidConfig) -> H {
        #[allow(clippy::disallowed_methods)] // the test's one epoch
        let epoch = Instant::now();
        H::at(cfg, epoch, ME)
    }

    pub fn at(cfg: ValidConfig, epoch: Instant, instance: InstanceId) -> H {
        let m = Member::new(
            cfg.clone(),
            Arc::new(First),
            MemberInit {
                instance,
                seed: 7,
                wall_epoch_ms: WALL0,
                partitions: vec![part("a"), part("b"), part("c")].into(),
            },
            epoch,
        );
        H {
            m,
            kv: Kv::default(),
            names: cfg.names(),
            epoch,
            now: epoch,
            cfg,
            log: Vec::new(),
            notes: Vec::new(),
            deliveries: Vec::new(),
            auto_deliver: true,
            offline: false,
            faults: Vec::new(),
            held: Vec::new(),
            hold: Vec::new(),
            to_deliver: VecDeque::new(),
            refuse_watches: None,
        }
    }

    /// Seconds since the epoch, for messages.
    pub fn t(&self) -> Duration {
        self.now - self.epoch
    }

    pub fn start(&mut self) {
        self.m.start(self.now);
        self.run();
    }

    pub fn fail_when(
        &mut self,
        error: KvError,
        times: usize,
        pred: impl Fn(&KvRequest) -> bool + 'static,
    ) {
        self.faults.push(Fault {
            pred: Box::new(pred),
            error,
            times,
            apply: false,
        });
    }

    /// A timeout whose write lands anyway (unknown outcome).
    pub fn timeout_but_apply_when(
        &mut self,
        times: usize,
        pred: impl Fn(&KvRequest) -> bool + 'static,
    ) {
        self.faults.push(Fault {
            pred: Box::new(pred),
            error: KvError::Timeout,
            times,
            apply: true,
        });
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub fn hold_when(&mut self, pred: impl Fn(&KvRequest) -> bool + 'static) {
        self.hold.push(Box::new(pred));
    }

    pub fn release_holds(&mut self) {
        self.hold.clear();
    }

    fn answer_of(&mut self, req: &KvRequest) -> KvResult {
        if self.offline {
            return Err(KvError::Unavailable {
                reason: "offline".into(),
            });
        }
        for f in &mut self.faults {
            if f.times > 0 && (f.pred)(req) {
                if f.times != usize::MAX {
                    f.times -= 1;
                }
                let (error, apply) = (f.error.clone(), f.apply);
                if apply {
                    let _ = self.kv.exec(req);
                }
                return Err(error);
            }
        }
        self.kv.exec(req)
    }

    /// Answers a held op now (executing it against the store).
    pub fn answer_held(&mut self, index: usize) {
        let (op, req) = self.held.remove(index);
        let result = self.answer_of(&req);
        self.m
            .handle_event(self.now, Event::Io(IoEvent::KvDone { op, result }));
        self.run();
    }

    /// Answers a held op with a given result (without executing it).
    pub fn answer_held_with(&mut self, index: usize, result: KvResult) {
        let (op, _) = self.held.remove(index);
        self.m
            .handle_event(self.now, Event::Io(IoEvent::KvDone { op, result }));
        self.run();
    }

    /// Executes every action and feeds every answer until the member is quiet.
    pub fn run(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.m.poll_action() {
                progressed = true;
                self.log.push(a.clone());
                match a {
                    Action::Io(IoAction::Kv { op, request }) => {
                        if self.hold.iter().any(|p| p(&request)) {
                            self.held.push((op, request));
                            continue;
                        }
                        let result = self.answer_of(&request);
                        self.m
                            .handle_event(self.now, Event::Io(IoEvent::KvDone { op, result }));
                    }
                    Action::Io(IoAction::Watch {
                        watch,
                        bucket,
                        keys,
                    }) => match &self.refuse_watches {
                        Some((b, error)) if *b == bucket => {
                            let error = Some(error.clone());
                            self.m.handle_event(
                                self.now,
                                Event::Io(IoEvent::WatchEnded { watch, error }),
                            );
                        }
                        _ => self.kv.open(0, watch, &bucket, keys),
                    },
                    Action::Io(IoAction::Unwatch { watch }) => {
                        self.kv.watches.retain(|(_, w, _, _)| *w != watch);
                        self.kv.pending.retain(|(_, w, _)| *w != watch);
                    }
                    Action::Deliver {
                        delivery,
                        revoked,
                        assigned,
                    } => {
                        self.deliveries.push((delivery, revoked, assigned));
                        if self.auto_deliver {
                            self.to_deliver.push_back(delivery);
                        }
                    }
                    _ => {}
                }
            }
            if !self.offline
                && let Some((_, watch, event)) = self.kv.pending.pop_front()
            {
                progressed = true;
                self.m.handle_event(
                    self.now,
                    Event::Io(IoEvent::Watch {
                        watch,
                        event: Ok(event),
                    }),
                );
            } else if let Some(d) = self.to_deliver.pop_front() {
                progressed = true;
                self.m
                    .handle_event(self.now, Event::Delivered { delivery: d });
            }
            while let Some(n) = self.m.poll_notification() {
                self.notes.push(n);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Moves virtual time forward by `d`, firing every timer due on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.m.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.m.handle_timeout(self.now);
            self.run();
        }
        self.now = target;
        self.run();
    }

    pub fn advance_to(&mut self, since_epoch: Duration) {
        let target = self.epoch + since_epoch;
        assert!(target >= self.now);
        self.advance(target - self.now);
    }

    pub fn complete(&mut self, delivery: DeliveryId) {
        self.m.handle_event(self.now, Event::Delivered { delivery });
        self.run();
    }

    /// The driver reports the watch `watch` over (its stream ended, or it failed for good) and
    /// forgets it: nothing more is delivered for it.
    pub fn end_watch(&mut self, watch: WatchId, error: Option<KvError>) {
        self.kv.watches.retain(|(_, w, _, _)| *w != watch);
        self.kv.pending.retain(|(_, w, _)| *w != watch);
        self.m
            .handle_event(self.now, Event::Io(IoEvent::WatchEnded { watch, error }));
        self.run();
    }

    /// The open watches of `bucket` (the store's view), oldest first.
    pub fn watches_of(&self, bucket: &str) -> Vec<WatchId> {
        self.kv
            .watches
            .iter()
            .filter(|(_, _, b, _)| b == bucket)
            .map(|(_, w, _, _)| *w)
            .collect()
    }

    pub fn connection(&mut self, state: ConnectionState) {
        self.offline = state == ConnectionState::Disconnected;
        self.m.handle_event(self.now, Event::Connection(state));
        self.run();
    }

    // ----- what a leader would write -----

    pub fn set_term(&mut self, term: u64) {
        let b = self.names.assignments_bucket();
        self.kv.write(
            &b,
            Names::TERM_KEY,
            TermCounter { term: Term(term) }.encode(),
        );
        self.run();
    }

    pub fn grant(&mut self, worker: u32, term: u64, version: u64, parts: &[OwnedPartition]) {
        self.record(worker, term, version, Phase::Grant, parts);
    }

    pub fn record(
        &mut self,
        worker: u32,
        term: u64,
        version: u64,
        phase: Phase,
        parts: &[OwnedPartition],
    ) {
        let me = self.m.instance();
        let round = self.m.fence_round();
        self.record_to(me, round, worker, term, version, phase, parts);
    }

    /// A record addressed to process `instance` in its fence round `round`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_to(
        &mut self,
        instance: InstanceId,
        round: u32,
        worker: u32,
        term: u64,
        version: u64,
        phase: Phase,
        parts: &[OwnedPartition],
    ) {
        let b = self.names.assignments_bucket();
        let rec = AssignmentRecord {
            term: Term(term),
            version: Version(version),
            phase,
            instance,
            round,
            partitions: parts.to_vec(),
        };
        self.kv
            .write(&b, &Names::assignment_key(&wid(worker)), rec.encode());
        self.run();
    }

    pub fn claim_of(&self, n: u32) -> Option<IdClaim> {
        let (v, _) = self.kv.get(&self.names.ids_bucket(), wid(n).as_str())?;
        IdClaim::decode(&v).ok()
    }

    pub fn put_claim(&mut self, n: u32, claim: IdClaim) -> Revision {
        let b = self.names.ids_bucket();
        self.kv.write(&b, wid(n).as_str(), claim.encode())
    }

    pub fn leadership(&self) -> Option<Leadership> {
        let (v, _) = self
            .kv
            .get(&self.names.leader_bucket(), Names::LEADER_KEY)?;
        Leadership::decode(&v).ok()
    }

    pub fn heartbeat_of(&self, n: u32) -> Option<Heartbeat> {
        let (v, _) = self
            .kv
            .get(&self.names.heartbeats_bucket(), wid(n).as_str())?;
        Heartbeat::decode(&v).ok()
    }

    pub fn term_key(&self) -> Option<Term> {
        let (v, _) = self
            .kv
            .get(&self.names.assignments_bucket(), Names::TERM_KEY)?;
        TermCounter::decode(&v).ok().map(|t| t.term)
    }

    /// KV requests logged from index `from` on.
    pub fn requests_since(&self, from: usize) -> Vec<KvRequest> {
        self.log[from..]
            .iter()
            .filter_map(|a| match a {
                Action::Io(IoAction::Kv { request, .. }) => Some(request.clone()),
                _ => None,
            })
            .collect()
    }

    /// Heartbeats put from log index `from` on, decoded.
    pub fn heartbeats_since(&self, from: usize) -> Vec<Heartbeat> {
        let hb = self.names.heartbeats_bucket();
        self.requests_since(from)
            .into_iter()
            .filter_map(|r| match r {
                KvRequest::Put { bucket, value, .. } if bucket == hb => {
                    Heartbeat::decode(&value).ok()
                }
                _ => None,
            })
            .collect()
    }

    pub fn notes_since(&self, from: usize) -> Vec<Notification> {
        self.notes[from..].to_vec()
    }

    pub fn take_notes(&mut self) -> Vec<Notification> {
        std::mem::take(&mut self.notes)
    }

    /// A started member holding worker-0 with the leader key held by someone else, term 1 set.
    pub fn follower(cfg: ValidConfig) -> H {
        let mut h = H::unstarted_follower(cfg);
        h.start();
        h
    }

    /// A member not started yet, on a store where worker-9 leads term 1.
    pub fn unstarted_follower(cfg: ValidConfig) -> H {
        let mut h = H::new(cfg);
        let lb = h.names.leader_bucket();
        h.kv.write(
            &lb,
            Names::LEADER_KEY,
            Leadership {
                worker: wid(9),
                instance: OTHER,
                term: Term(1),
            }
            .encode(),
        );
        let ab = h.names.assignments_bucket();
        h.kv.write(&ab, Names::TERM_KEY, TermCounter { term: Term(1) }.encode());
        h
    }
}

pub fn state_changes(
    notes: &[Notification],
) -> Vec<(parti_core::WorkerState, parti_core::WorkerState)> {
    notes
        .iter()
        .filter_map(|n| match n {
            Notification::StateChanged { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

pub fn connected() -> ConnectionState {
    ConnectionState::Connected
}
pub fn disconnected() -> ConnectionState {
    ConnectionState::Disconnected
}
