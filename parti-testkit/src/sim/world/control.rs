//! Processes (start, exit, crash, pause, resume, connectivity) and the faults and workload.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parti_core::member::{Event, Member, MemberInit};
use parti_core::records::{AssignmentRecord, Names, OwnedPartition, Phase, Record, TermCounter};
use parti_core::store::ConnectionState;
use parti_core::store::KvEntry;
use parti_core::store::model::WatcherId;
use parti_core::{Fence, Term, Version};
use parti_core::{InstanceId, Partition, PartitionId, ValidConfig};

use super::{
    App, Control, Drift, Ev, Node, Pick, Status, WALL0, World, bucket_of, describe_node, dur_ns,
};

impl World {
    // ----- processes ---------------------------------------------------------------------------

    /// Starts a new process with this preferred id number; returns its index.
    pub fn start_node(&mut self, preferred: Option<u32>) -> usize {
        let mut cfg = self.config.clone();
        cfg.preferred_id = preferred;
        let valid: ValidConfig = cfg.validate().expect("the simulator's config validates");
        let instance =
            InstanceId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
        let ppm = if self.settings.drift_ppm > 0 && self.chance(500) {
            let span = u64::try_from(self.settings.drift_ppm * 2 + 1).unwrap_or(1);
            i64::try_from(self.rng.below(span)).unwrap_or(0) - self.settings.drift_ppm
        } else {
            0
        };
        let drift = Drift {
            born: self.now,
            ppm,
        };
        let seed = self.rng.next_u64();
        let wall = WALL0 + u64::try_from(self.now.as_millis()).unwrap_or(0);
        let member = Member::new(
            valid,
            self.strategy.clone(),
            MemberInit {
                instance,
                seed,
                wall_epoch_ms: wall,
                partitions: self.catalog.clone(),
            },
            self.epoch + drift.local(self.now),
        );
        let n = self.nodes.len();
        self.nodes.push(Node {
            member,
            instance,
            preferred,
            drift,
            status: Status::Running,
            wake_at: None,
            deferred: Vec::new(),
            last_arrival: self.now,
            connected: true,
            queued: Vec::new(),
            pending_opens: Vec::new(),
            watches: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            app: App::default(),
            slow_until: Duration::ZERO,
            slow_extra: Duration::ZERO,
            slow_handlers_until: Duration::ZERO,
            slow_handler_max: Duration::ZERO,
            cut_until: Duration::ZERO,
            respawn: false,
            assign_watch: None,
            stream_term: None,
            catalog_gen: self.catalog_gen,
            planner_state: None,
        });
        self.stats.started += 1;
        self.trace.mix(&[8, n as u64, dur_ns(self.now)]);
        self.trace.line(self.now, Some(n), || {
            format!("start preferred={preferred:?} drift={ppm}ppm")
        });
        self.input(n, |m, now| m.start(now));
        if !self.is_connected(n) {
            self.nodes[n].connected = false;
            self.input(n, |m, now| {
                m.handle_event(now, Event::Connection(ConnectionState::Disconnected));
            });
        }
        n
    }

    /// The process is gone (crash) or exited (its member stopped).
    pub(super) fn exit(&mut self, n: usize, status: Status) {
        let node = &mut self.nodes[n];
        if matches!(node.status, Status::Crashed | Status::Exited) {
            return;
        }
        node.status = status;
        node.wake_at = None;
        node.deferred.clear();
        node.queued.clear();
        node.pending_opens.clear();
        node.outstanding.clear();
        node.app.queue.clear();
        node.app.running = None;
        let held: Vec<PartitionId> = node.app.held.keys().cloned().collect();
        let wids: Vec<WatcherId> = node.watches.values().flatten().copied().collect();
        node.watches.clear();
        for p in &held {
            self.lose(n, p);
        }
        for w in wids {
            self.store.unwatch(w);
            self.watchers.remove(&w);
        }
        let now = self.now;
        let _ = self.checks.identity.update(now, n, None, |_| false, false);
        self.trace.mix(&[9, n as u64, dur_ns(now)]);
        self.trace
            .line(now, Some(n), || format!("process {status:?}"));
        if status == Status::Exited && self.nodes[n].respawn {
            let preferred = self.nodes[n].preferred;
            let d = self.between(Duration::from_millis(20), Duration::from_millis(300));
            self.schedule(now + d, Ev::Respawn(preferred));
        }
    }

    pub(super) fn on_resume(&mut self, n: usize) {
        if self.nodes[n].status != Status::Paused {
            return;
        }
        self.nodes[n].status = Status::Running;
        self.nodes[n].wake_at = None;
        self.trace.mix(&[10, n as u64, dur_ns(self.now)]);
        self.trace.line(self.now, Some(n), || "resume".into());
        // Overdue timers first, as a real process would act on them.
        self.input(n, |m, now| m.handle_timeout(now));
        if self.nodes[n].status != Status::Running {
            return;
        }
        if self.nodes[n].catalog_gen != self.catalog_gen {
            self.nodes[n].catalog_gen = self.catalog_gen;
            let c = self.catalog.clone();
            self.input(n, |m, now| m.set_partitions(now, c));
        }
        self.sync_connection(n);
        let now = self.now;
        let nodes = &self.nodes;
        let v = self.checks.exclusive.recheck(
            now,
            n,
            nodes[n].app.held.keys(),
            |m| nodes[m].status == Status::Running,
            |m| describe_node(nodes, m),
        );
        if let Some(v) = v {
            self.violation(v);
        }
        self.check_node(n, true);
        let deferred = std::mem::take(&mut self.nodes[n].deferred);
        for ev in deferred {
            self.schedule(now, ev);
        }
        self.kick_watches(n);
    }

    /// Feeds a connectivity change to a running process, and on reconnect sends what waited.
    pub(super) fn sync_connection(&mut self, n: usize) {
        if self.nodes[n].status != Status::Running {
            return;
        }
        let up = self.is_connected(n);
        if up == self.nodes[n].connected {
            return;
        }
        self.nodes[n].connected = up;
        let state = if up {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        };
        self.trace
            .line(self.now, Some(n), || format!("connection {state:?}"));
        self.input(n, |m, now| m.handle_event(now, Event::Connection(state)));
        if up && self.nodes[n].status == Status::Running {
            let queued = std::mem::take(&mut self.nodes[n].queued);
            for (sent, op, req) in queued {
                if self.now <= sent + self.settings.late_window {
                    let l1 = self.latency(n);
                    let arrival = (self.now + l1).max(self.nodes[n].last_arrival);
                    self.nodes[n].last_arrival = arrival;
                    self.schedule(
                        arrival,
                        Ev::Arrive {
                            node: n,
                            op,
                            req,
                            sent,
                            reply: None,
                        },
                    );
                }
            }
            let opens = std::mem::take(&mut self.nodes[n].pending_opens);
            for (watch, bucket, keys) in opens {
                let lat = self.latency(n);
                self.schedule(
                    self.now + lat,
                    Ev::OpenWatch {
                        node: n,
                        watch,
                        bucket,
                        keys,
                    },
                );
            }
            self.kick_watches(n);
        }
    }

    pub(super) fn recheck(&mut self) {
        for n in 0..self.nodes.len() {
            self.sync_connection(n);
        }
        let now = self.now;
        let (release, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stalled)
            .into_iter()
            .partition(|(_, _, req, _, _)| {
                self.stalls
                    .get(bucket_of(req))
                    .is_none_or(|until| now >= *until)
            });
        self.stalled = keep;
        for (n, op, req, sent, reply) in release {
            if self.chance(750) {
                let reply = reply.filter(|l2| now + *l2 < sent + self.config.operation_timeout);
                self.apply(n, op, req, sent, reply);
            }
        }
    }

    // ----- faults and workload -----------------------------------------------------------------

    /// A running process chosen by `pick`.
    pub(crate) fn resolve(&mut self, pick: Pick) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Running)
            .collect();
        match pick {
            Pick::Node(i) => (i < self.nodes.len()).then_some(i),
            Pick::Leader => running
                .iter()
                .copied()
                .find(|i| self.nodes[*i].member.is_leader()),
            Pick::Random => {
                if running.is_empty() {
                    None
                } else {
                    let k = self.rng.below(running.len() as u64) as usize;
                    Some(running[k])
                }
            }
            Pick::Follower => {
                let f: Vec<usize> = running
                    .into_iter()
                    .filter(|i| !self.nodes[*i].member.is_leader())
                    .collect();
                if f.is_empty() {
                    None
                } else {
                    let k = self.rng.below(f.len() as u64) as usize;
                    Some(f[k])
                }
            }
        }
    }

    pub(super) fn running_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|x| x.status == Status::Running && !x.member.is_stopped())
            .count()
    }

    pub(super) fn on_control(&mut self, c: Control) {
        if self.now >= self.chaos_until {
            return; // the heal phase began: no more faults or workload
        }
        self.trace.line(self.now, None, || format!("control {c:?}"));
        self.trace.mix(&[11, dur_ns(self.now)]);
        match c {
            Control::Start(p) => {
                let _ = self.start_node(p);
            }
            Control::Crash(pick, restart) => {
                if self.running_count() <= 1 && !matches!(pick, Pick::Node(_)) {
                    return;
                }
                if let Some(n) = self.resolve(pick) {
                    self.crash(n);
                    if let Some((after, same)) = restart {
                        let p = if same { self.nodes[n].preferred } else { None };
                        self.control_at(self.now + after, Control::Start(p));
                    }
                }
            }
            Control::Pause(pick, d) => {
                if let Some(n) = self.resolve(pick) {
                    self.pause(n, d);
                }
            }
            Control::Leave(pick) => {
                if self.running_count() <= 1 && !matches!(pick, Pick::Node(_)) {
                    return;
                }
                if let Some(n) = self.resolve(pick)
                    && self.nodes[n].status == Status::Running
                {
                    self.input(n, |m, now| m.request_leave(now));
                }
            }
            Control::Restart(pick) => {
                if let Some(n) = self.resolve(pick)
                    && self.nodes[n].status == Status::Running
                {
                    self.nodes[n].respawn = true;
                    self.input(n, |m, now| m.request_restart(now));
                }
            }
            Control::Outage(d) => self.outage(d),
            Control::Cut(pick, d) => {
                if let Some(n) = self.resolve(pick) {
                    self.cut(n, d);
                }
            }
            Control::Stall(bucket, d) => {
                self.stats.faults += 1;
                let until = self.now + d;
                let e = self.stalls.entry(bucket).or_insert(until);
                *e = (*e).max(until);
                self.schedule(until, Ev::Recheck);
            }
            Control::Slow(pick, extra, d) => {
                self.stats.faults += 1;
                match pick {
                    None => {
                        self.slow_all_until = self.now + d;
                        self.slow_all_extra = extra;
                    }
                    Some(p) => {
                        if let Some(n) = self.resolve(p) {
                            self.nodes[n].slow_until = self.now + d;
                            self.nodes[n].slow_extra = extra;
                        }
                    }
                }
            }
            Control::WatchDelay(max, d) => {
                self.stats.faults += 1;
                self.watch_delay_until = self.now + d;
                self.watch_delay_max = max;
            }
            Control::Errors(pm, d) => {
                self.stats.faults += 1;
                self.errors_until = self.now + d;
                self.errors_per_mille = pm;
            }
            Control::Resync => {
                let wids: Vec<WatcherId> = self.watchers.keys().copied().collect();
                if !wids.is_empty() {
                    self.stats.faults += 1;
                    let w = wids[self.rng.below(wids.len() as u64) as usize];
                    let t = self.epoch + self.now;
                    self.store.resync_watch(w, t);
                    self.drain_wakes();
                }
            }
            Control::EndWatch => {
                let wids: Vec<WatcherId> = self.watchers.keys().copied().collect();
                if !wids.is_empty() {
                    self.stats.faults += 1;
                    let w = wids[self.rng.below(wids.len() as u64) as usize];
                    self.end_watch(w);
                }
            }
            Control::LateWrite(tries) => self.late_write(tries),
            Control::SlowHandlers(pick, max, d) => {
                if let Some(n) = self.resolve(pick) {
                    self.stats.faults += 1;
                    let max = max.min(self.config.handler_timeout * 4 / 5);
                    self.nodes[n].slow_handlers_until = self.now + d;
                    self.nodes[n].slow_handler_max = max;
                }
            }
            Control::Catalog => self.change_catalog(),
            Control::Weights => self.change_weights(),
        }
    }

    /// The `LateWrite` fault (see [`Control::LateWrite`]).
    pub(super) fn late_write(&mut self, tries: u32) {
        let t = self.epoch + self.now;
        let b = self.names.assignments_bucket();
        let Some(term) = self
            .store
            .entry(&b, Names::TERM_KEY, t)
            .ok()
            .flatten()
            .and_then(|e| TermCounter::decode(&e.value).ok())
            .map(|c| c.term)
        else {
            return;
        };
        if term.0 < 2 {
            return; // no leader was deposed yet
        }
        let old = Term(term.0 - 1);
        let keys = self
            .store
            .keys(&b, Names::ASSIGNMENT_PREFIX, t)
            .unwrap_or_default();
        // Records the deposed leader could still compare-and-set: written under its term or
        // before, not by the current leader.
        let mut candidates: Vec<(String, KvEntry, AssignmentRecord)> = keys
            .into_iter()
            .filter_map(|k| {
                let e = self.store.entry(&b, &k, t).ok().flatten()?;
                let r = AssignmentRecord::decode(&e.value).ok()?;
                (r.term <= old).then_some((k, e, r))
            })
            .collect();
        if candidates.is_empty() || self.catalog.is_empty() {
            return;
        }
        let (key, entry, mut rec) =
            candidates.swap_remove(self.rng.below(candidates.len() as u64) as usize);
        // Preferably a partition some application still works on while its own record no
        // longer names it (a revocation not acknowledged yet): the case where acting on the
        // late write as if it had been applied grants a partition that is still held.
        let releasing: Vec<PartitionId> = self
            .running()
            .flat_map(|(_, x)| {
                let named: BTreeSet<PartitionId> = x
                    .member
                    .worker_id()
                    .and_then(|id| {
                        self.store
                            .entry(&b, &Names::assignment_key(id), t)
                            .ok()
                            .flatten()
                    })
                    .and_then(|e| AssignmentRecord::decode(&e.value).ok())
                    .map(|r| {
                        r.partitions
                            .iter()
                            .map(|o| o.partition.id().clone())
                            .collect()
                    })
                    .unwrap_or_default();
                x.app
                    .held
                    .keys()
                    .filter(|p| !named.contains(*p))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        if releasing.is_empty() && tries > 0 {
            // Lands a moment later (the write was queued behind others).
            self.schedule(
                self.now + Duration::from_millis(100),
                Ev::Control(Control::LateWrite(tries - 1)),
            );
            return;
        }
        let extra = if releasing.is_empty() {
            self.catalog[self.rng.below(self.catalog.len() as u64) as usize].clone()
        } else {
            let id = &releasing[self.rng.below(releasing.len() as u64) as usize];
            match self.catalog.iter().find(|p| p.id() == id) {
                Some(p) => p.clone(),
                None => return,
            }
        };
        let version = Version(rec.version.0 + 1);
        if !rec
            .partitions
            .iter()
            .any(|o| o.partition.id() == extra.id())
        {
            rec.partitions.push(OwnedPartition {
                partition: extra,
                fence: Fence::new(old, version),
            });
            rec.partitions
                .sort_by(|a, b| a.partition.id().cmp(b.partition.id()));
        }
        rec.term = old;
        rec.version = version;
        rec.phase = Phase::Grant;
        self.stats.faults += 1;
        self.trace
            .line(self.now, None, || format!("late write {key} {rec:?}"));
        let _ = self.store.update(&b, &key, rec.encode(), entry.revision, t);
        self.drain_wakes();
        // Late writes come with leadership trouble: half the time the current leader stalls
        // past its lease now, and the next leader takes over from what the store holds.
        if self.chance(500)
            && let Some(n) = self.resolve(Pick::Leader)
        {
            let d = self.between(self.config.election_ttl, self.config.election_ttl * 2);
            self.pause(n, d);
        }
    }

    /// Crashes process `n` now.
    pub fn crash(&mut self, n: usize) {
        if matches!(self.nodes[n].status, Status::Crashed | Status::Exited) {
            return;
        }
        self.stats.crashes += 1;
        self.exit(n, Status::Crashed);
    }

    /// The heap held by process `n`'s member (its planner included, if it leads), measured with
    /// `live_bytes` (a counting allocator's bytes in use): the process is crashed, its member
    /// swapped for a fresh one without partitions and dropped, and the bytes freed returned.
    /// Partition keys the member shares with the catalog (the same `Arc`) stay allocated and
    /// are not counted. For benchmarks; the process cannot run afterwards.
    pub fn measure_member_heap(&mut self, n: usize, live_bytes: &dyn Fn() -> usize) -> usize {
        self.crash(n);
        let valid: ValidConfig = self
            .config
            .clone()
            .validate()
            .expect("the simulator's config validates");
        let fresh = Member::new(
            valid,
            self.strategy.clone(),
            MemberInit {
                instance: self.nodes[n].instance,
                seed: 0,
                wall_epoch_ms: WALL0,
                partitions: Vec::new().into(),
            },
            self.epoch,
        );
        let old = std::mem::replace(&mut self.nodes[n].member, fresh);
        let before = live_bytes();
        drop(old);
        before.saturating_sub(live_bytes())
    }

    /// `shutdown_for_restart` of process `n`, without starting a new process afterwards.
    pub fn shutdown_for_restart(&mut self, n: usize) {
        if self.nodes[n].status == Status::Running {
            self.input(n, |m, now| m.request_restart(now));
        }
    }

    /// Pauses process `n` for `d`.
    pub fn pause(&mut self, n: usize, d: Duration) {
        if self.nodes[n].status != Status::Running {
            return;
        }
        self.stats.faults += 1;
        self.nodes[n].status = Status::Paused;
        self.trace
            .line(self.now, Some(n), || format!("pause {d:?}"));
        self.schedule(self.now + d, Ev::Resume(n));
    }

    /// Cuts process `n` off the store for `d`.
    pub fn cut(&mut self, n: usize, d: Duration) {
        self.stats.faults += 1;
        let until = self.now + d;
        self.nodes[n].cut_until = self.nodes[n].cut_until.max(until);
        self.schedule(until, Ev::Recheck);
        self.sync_connection(n);
    }

    /// Makes the store unreachable for everyone for `d`.
    pub fn outage(&mut self, d: Duration) {
        self.stats.faults += 1;
        self.outage_until = self.outage_until.max(self.now + d);
        let t = self.outage_until;
        self.schedule(t, Ev::Recheck);
        self.recheck();
    }

    /// Ends every open watch of every process now (each driver reports `WatchEnded`).
    pub fn end_all_watches(&mut self) {
        let wids: Vec<WatcherId> = self.watchers.keys().copied().collect();
        self.stats.faults += 1;
        for w in wids {
            self.end_watch(w);
        }
    }

    /// Stalls every operation on `bucket` for `d`.
    pub fn stall(&mut self, bucket: &str, d: Duration) {
        self.on_control(Control::Stall(bucket.to_owned(), d));
    }

    /// Slows every KV operation of process `n` by up to `extra` for `d`.
    pub fn slow(&mut self, n: usize, extra: Duration, d: Duration) {
        self.nodes[n].slow_until = self.now + d;
        self.nodes[n].slow_extra = extra;
    }

    /// Ends every fault now (the heal phase).
    pub fn heal(&mut self) {
        self.chaos_until = self.now;
        self.outage_until = self.outage_until.min(self.now);
        for node in &mut self.nodes {
            node.cut_until = node.cut_until.min(self.now);
            node.slow_until = Duration::ZERO;
            node.slow_handlers_until = Duration::ZERO;
        }
        for until in self.stalls.values_mut() {
            *until = (*until).min(self.now);
        }
        self.slow_all_until = Duration::ZERO;
        self.watch_delay_until = Duration::ZERO;
        self.errors_until = Duration::ZERO;
        self.recheck();
        let paused: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].status == Status::Paused)
            .collect();
        for n in paused {
            self.on_resume(n);
        }
        self.trace.line(self.now, None, || "heal".into());
    }

    /// Replaces the catalog on every process (the leader acts on it).
    pub fn set_catalog(&mut self, catalog: Vec<Partition>) {
        let ids: BTreeSet<PartitionId> = catalog.iter().map(|p| p.id().clone()).collect();
        for p in self.catalog.iter() {
            if !ids.contains(p.id()) {
                self.checks.reaction.removed(p.id());
            }
        }
        self.catalog = catalog.into();
        self.catalog_gen += 1;
        self.stats.faults += 1;
        for n in 0..self.nodes.len() {
            if self.nodes[n].status == Status::Running {
                self.nodes[n].catalog_gen = self.catalog_gen;
                let c = self.catalog.clone();
                self.input(n, |m, now| m.set_partitions(now, c));
            }
        }
    }

    pub(super) fn change_catalog(&mut self) {
        let mut c = self.catalog.to_vec();
        let remove = self.rng.below(3) as usize;
        for _ in 0..remove.min(c.len().saturating_sub(1)) {
            let i = self.rng.below(c.len() as u64) as usize;
            c.remove(i);
        }
        let add = self.rng.below(3);
        for _ in 0..add {
            let id = self.next_partition;
            self.next_partition += 1;
            if let Ok(p) = Partition::with_default_weight([format!("p{id}")]) {
                c.push(p);
            }
        }
        self.set_catalog(c);
    }

    pub(super) fn change_weights(&mut self) {
        let mut c = self.catalog.to_vec();
        let k = 1 + self.rng.below(4);
        for _ in 0..k {
            if c.is_empty() {
                break;
            }
            let i = self.rng.below(c.len() as u64) as usize;
            let w = 1 + self.rng.below(1000);
            if let Ok(p) = Partition::from_id(c[i].id().clone(), w) {
                c[i] = p;
            }
        }
        self.set_catalog(c);
    }
}
