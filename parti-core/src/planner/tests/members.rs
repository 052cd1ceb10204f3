//! The simulated members' side of the harness: heartbeats, applying records (with the
//! exclusivity and fence checks), crashes, intents, restarts, cut-offs under the `Fence` policy.

#![allow(dead_code)]

use std::collections::BTreeMap;

use super::fixtures::*;
use crate::machine::{IoEvent, WatchId};
use crate::records::{AssignmentRecord, Intent, Names, Record};
use crate::store::{KvEvent, KvOperation, WatchEvent};
use crate::types::{Fence, InstanceId, PartitionId, Revision, Version, WorkerId};

use super::harness::{Member, Sim};

impl Sim {
    /// The member applies the record in the store if it is up, acknowledging, and the record
    /// is newer than what it applied; then heartbeats (the acknowledgement).
    pub(crate) fn apply(&mut self, worker: &WorkerId) {
        let Some(m) = self.members.get(worker) else {
            return;
        };
        if !m.up || !m.acks {
            return;
        }
        let key = (
            self.names.assignments_bucket(),
            Names::assignment_key(worker),
        );
        let Some((rec, rev)) = self
            .kv
            .get(&key)
            .and_then(|(v, r)| AssignmentRecord::decode(&v).ok().map(|x| (x, r)))
        else {
            return;
        };
        // PROTOCOL §4: a record of an older term that came after a newer term in the
        // member's ordered stream was refused when it landed.
        let valid = !m.refused.contains(&rev);
        if rec.version <= m.applied || !valid {
            return;
        }
        // A record addressed to another process of this id gives this one nothing.
        let new: BTreeMap<PartitionId, Fence> = rec
            .partitions
            .iter()
            .filter(|_| rec.instance == m.instance && rec.round == m.round)
            .map(|o| (o.partition.id().clone(), o.fence))
            .collect();
        for (pp, f) in &new {
            if m.holds.contains_key(pp) {
                continue;
            }
            if let Some((prev_owner, prev_fence)) = self.last_fence.get(pp)
                && prev_owner != worker
                && *f <= *prev_fence
            {
                self.violations.push(format!(
                    "fence of {pp:?} did not grow from {prev_owner} {prev_fence} to {worker} {f}"
                ));
            }
            self.last_fence.insert(pp.clone(), (worker.clone(), *f));
        }
        let m = self.members.get_mut(worker).unwrap();
        m.holds = new;
        m.applied = rec.version;
        if m.intent == Intent::Fenced {
            m.intent = Intent::Active;
        }
        self.check_exclusive();
        self.beat(worker);
    }

    /// Members cut off for `fence_after` revoke everything locally (PROTOCOL §8 `Fence`).
    pub(crate) fn fence_due(&mut self) {
        let fence_after = self.cfg.fence_after();
        let now = self.now;
        for m in self.members.values_mut() {
            if m.cut_off && now.saturating_duration_since(m.last_ok_beat) >= fence_after {
                m.holds.clear();
                m.intent = Intent::Fenced;
            }
        }
    }

    /// Cuts the member off from the store.
    pub(crate) fn cut_off(&mut self, n: u32) {
        let m = self.members.get_mut(&w(n)).unwrap();
        m.up = false;
        m.cut_off = true;
    }

    /// The member reaches the store again: heartbeats (fenced if it had to) and applies.
    pub(crate) fn reconnect(&mut self, n: u32) {
        self.fence_due();
        let m = self.members.get_mut(&w(n)).unwrap();
        m.up = true;
        m.cut_off = false;
        m.next_beat = self.now;
        self.catch_up_view(&w(n));
        self.beat(&w(n));
        self.apply(&w(n));
    }

    pub(crate) fn check_exclusive(&mut self) {
        self.fence_due();
        let mut owner: BTreeMap<&PartitionId, &WorkerId> = BTreeMap::new();
        let mut bad = Vec::new();
        for (id, m) in &self.members {
            for pp in m.holds.keys() {
                if let Some(o) = owner.insert(pp, id) {
                    bad.push(format!(
                        "at {:?}: {pp:?} held by {o} and {id}",
                        self.now - self.epoch
                    ));
                }
            }
        }
        self.violations.extend(bad);
    }

    /// Puts the heartbeat of `worker` and delivers it to the planner's watch.
    pub(crate) fn beat(&mut self, worker: &WorkerId) {
        let hb = self.heartbeat_of(worker);
        let bucket = self.names.heartbeats_bucket();
        let revision = self.put_raw(&bucket, worker.as_str(), hb.clone());
        let now = self.now;
        if let Some(m) = self.members.get_mut(worker) {
            m.next_beat = now + self.cfg.heartbeat_interval;
            m.last_ok_beat = now;
            if *worker == w(0) {
                // The leader's member tells its planner when it sends (channel time).
                let seq = m.seq;
                self.p.heartbeat_sent(now, seq);
            }
        }
        if self.hb_stalled_until.is_some() {
            // The leader's heartbeat watch is stalled: the write landed, delivery comes later.
            self.hb_backlog.insert(worker.clone(), (revision, hb));
            return;
        }
        if self.hb_lag.is_some() || !self.hb_lagged.is_empty() {
            // The leader's heartbeat watch lags: delivered in order, `hb_lag` after the write.
            let due = now + self.hb_lag.unwrap_or_default();
            self.hb_lagged
                .push_back((due, worker.clone(), revision, hb));
            return;
        }
        self.deliver_beat(worker, revision, hb);
        self.pump();
    }

    /// Delivers one heartbeat to the planner's watches.
    pub(crate) fn deliver_beat(&mut self, worker: &WorkerId, revision: Revision, hb: Vec<u8>) {
        let bucket = self.names.heartbeats_bucket();
        let now = self.now;
        let targets: Vec<WatchId> = self
            .watches
            .iter()
            .filter(|(_, (b, k))| *b == bucket && k.matches(worker.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for watch in targets {
            let ev = WatchEvent::Change(KvEvent {
                key: worker.to_string(),
                revision,
                op: KvOperation::Put(hb.clone()),
            });
            self.p.handle_event(
                now,
                IoEvent::Watch {
                    watch,
                    event: Ok(ev),
                },
            );
        }
    }

    /// Stalls the delivery of heartbeats to the planner for `d` (a stream leader election
    /// stalls the consumer; members keep writing and do not fence).
    pub(crate) fn stall_heartbeats(&mut self, d: std::time::Duration) {
        self.hb_stalled_until = Some(self.now + d);
    }

    /// Ends a stall due at `now`: the backlog arrives, newest per worker, in revision order.
    pub(crate) fn flush_stall(&mut self) {
        if self.hb_stalled_until.is_some_and(|t| t <= self.now) {
            self.hb_stalled_until = None;
            let mut backlog: Vec<(WorkerId, (Revision, Vec<u8>))> =
                std::mem::take(&mut self.hb_backlog).into_iter().collect();
            backlog.sort_by_key(|(_, (r, _))| *r);
            for (w, (r, hb)) in backlog {
                self.deliver_beat(&w, r, hb);
            }
            self.pump();
        }
    }

    /// Makes the leader's heartbeat watch lag by `d` from now on (`None`: no more lag; what is
    /// queued is still delivered in order).
    pub(crate) fn lag_heartbeats(&mut self, d: Option<std::time::Duration>) {
        self.hb_lag = d;
    }

    /// Delivers, in order, the lagging watch's heartbeats due at `now`.
    pub(crate) fn deliver_lagged(&mut self) {
        let mut any = false;
        while self.hb_lagged.front().is_some_and(|l| l.0 <= self.now) {
            let (_, w, r, hb) = self.hb_lagged.pop_front().unwrap();
            self.deliver_beat(&w, r, hb);
            any = true;
        }
        if any {
            self.pump();
        }
    }

    /// A new member process joins: heartbeats now.
    pub(crate) fn join(&mut self, n: u32) {
        self.add_member_quiet(w(n));
        self.beat(&w(n));
        self.apply(&w(n));
    }

    fn add_member_quiet(&mut self, id: WorkerId) {
        let previous_applied = self.members.get(&id).map(|m| m.applied);
        self.next_instance += 1;
        self.members.insert(
            id.clone(),
            Member {
                instance: InstanceId(self.next_instance),
                round: 0,
                seq: 0,
                applied: Version::ZERO,
                intent: Intent::Active,
                up: true,
                acks: true,
                holds: BTreeMap::new(),
                next_beat: self.now,
                last_ok_beat: self.now,
                cut_off: false,
                term_seen: crate::types::Term::ZERO,
                refused: std::collections::BTreeSet::new(),
            },
        );
        self.fresh_view(&id);
        self.snapshot_rule(&id, previous_applied);
    }

    /// A new process finds its record in a snapshot, after the newest `term` only: a record of
    /// an older term written before that bump is applied only if exactly one bump separates
    /// them, or if it is the version the previous process of this id acknowledged (the member's
    /// rules (a) and (b), `member/README.md`); any other may be a late write of a deposed
    /// leader and is refused.
    fn snapshot_rule(&mut self, id: &WorkerId, previous_applied: Option<Version>) {
        let b = self.names.assignments_bucket();
        let term = self
            .kv
            .get(&(b.clone(), Names::TERM_KEY.to_owned()))
            .and_then(|(v, _)| crate::records::TermCounter::decode(&v).ok())
            .map_or(crate::types::Term::ZERO, |t| t.term);
        let Some((rec, rev)) = self
            .kv
            .get(&(b, Names::assignment_key(id)))
            .and_then(|(v, r)| AssignmentRecord::decode(&v).ok().map(|x| (x, r)))
        else {
            return;
        };
        let one_bump = rec.term.next() == term;
        let acknowledged = previous_applied == Some(rec.version);
        if rec.term < term
            && !one_bump
            && !acknowledged
            && let Some(m) = self.members.get_mut(id)
        {
            m.refused.insert(rev);
        }
    }

    /// The process dies: no more heartbeats, holds nothing.
    pub(crate) fn crash(&mut self, n: u32) {
        let m = self.members.get_mut(&w(n)).unwrap();
        m.up = false;
        m.cut_off = false;
        m.holds.clear();
    }

    /// The member announces `intent` and heartbeats at once.
    pub(crate) fn intent(&mut self, n: u32, intent: Intent) {
        let m = self.members.get_mut(&w(n)).unwrap();
        if intent == Intent::Fenced {
            m.round += 1; // a member fences itself in a new round
        }
        m.intent = intent;
        self.beat(&w(n));
    }

    /// The same id comes back as a new process and applies its record.
    pub(crate) fn restart_back(&mut self, n: u32) {
        self.add_member_quiet(w(n));
        self.beat(&w(n));
        self.apply(&w(n));
    }

    /// The member stops (or resumes) applying records; it keeps heartbeating.
    pub(crate) fn set_acks(&mut self, n: u32, acks: bool) {
        self.members.get_mut(&w(n)).unwrap().acks = acks;
        if acks {
            self.apply(&w(n));
        }
    }
}
