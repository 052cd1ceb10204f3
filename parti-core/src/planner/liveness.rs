//! Liveness (PROTOCOL.md §5): receive-time stamps, observation-channel gating, restart
//! reservations and the degraded quiet period.
//!
//! Every heartbeat the planner's watch delivers is stamped with the receive time `now`
//! (`seen[w]`). The leader's own heartbeat echo is stamped too, and time as far as liveness is
//! concerned only advances while the leader can see itself:
//! `observed_now = min(now, own_echo + heartbeat_interval)`. A worker is dead iff
//! `observed_now - seen[w] >= heartbeat_ttl + emergency_grace`, never while the leader is
//! degraded nor during `degraded.recovery_grace` after. A heartbeat received in between simply
//! moves the stamp: nothing about an earlier absence is remembered (Go keeps a stale
//! first-missing time and later skips the grace, §17 row 9).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::records::{Heartbeat, Intent};
use crate::types::{InstanceId, Version, WorkerId};

/// The last heartbeat of a worker, as far as planning cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Beat {
    pub instance: InstanceId,
    pub applied: Version,
    pub intent: Intent,
    pub capacity: u32,
}

impl From<&Heartbeat> for Beat {
    fn from(h: &Heartbeat) -> Self {
        Beat {
            instance: h.instance,
            applied: h.applied,
            intent: h.intent,
            capacity: h.capacity.max(1),
        }
    }
}

/// What the planner knows about one worker's liveness.
#[derive(Clone, Debug)]
pub(super) struct WorkerInfo {
    /// Receive time of the last heartbeat (or of the takeover, for members expected from `meta`).
    pub seen: Instant,
    /// The last heartbeat; `None` for a member expected from `meta` that has not appeared yet.
    pub beat: Option<Beat>,
    /// Declared dead (until a heartbeat is seen again).
    pub dead: bool,
    /// `intent = Restarting` was seen: its partitions stay reserved until this instant.
    pub reserved_until: Option<Instant>,
    /// The reservation ran out without the worker coming back: handled as a crash.
    pub reservation_expired: bool,
}

/// What observing one heartbeat changed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Observed {
    /// The worker had been declared dead and is back.
    pub revived: bool,
    /// The heartbeat comes from another process than the previous one (a restart).
    pub new_instance: bool,
}

/// The liveness table.
#[derive(Clone, Debug)]
pub(super) struct Liveness {
    workers: BTreeMap<WorkerId, WorkerInfo>,
    /// `(seen, worker)` of every worker not declared dead: the first entry dies first.
    by_seen: BTreeSet<(Instant, WorkerId)>,
    me: WorkerId,
    my_instance: InstanceId,
    own_echo: Instant,
    interval: Duration,
    dead_after: Duration,
    rejoin_window: Duration,
    degraded: bool,
    quiet_until: Option<Instant>,
    /// Observation-channel gating on (only a test-only fault turns it off).
    pub(super) gating: bool,
}

impl Liveness {
    pub(super) fn new(
        me: WorkerId,
        my_instance: InstanceId,
        now: Instant,
        interval: Duration,
        dead_after: Duration,
        rejoin_window: Duration,
    ) -> Self {
        Liveness {
            workers: BTreeMap::new(),
            by_seen: BTreeSet::new(),
            me,
            my_instance,
            // The member heartbeated before it won the election; until the first echo arrives,
            // liveness time may run one interval past the planner's creation, no further.
            own_echo: now,
            interval,
            dead_after,
            rejoin_window,
            degraded: false,
            quiet_until: None,
            gating: true,
        }
    }

    /// `min(now, own_echo + heartbeat_interval)`.
    pub(super) fn observed_now(&self, now: Instant) -> Instant {
        if !self.gating {
            return now;
        }
        now.min(self.own_echo + self.interval)
    }

    /// Stamps a heartbeat of `worker` received at `now`.
    pub(super) fn observe(&mut self, now: Instant, worker: &WorkerId, hb: &Heartbeat) -> Observed {
        if *worker == self.me && hb.instance == self.my_instance {
            self.own_echo = self.own_echo.max(now);
        }
        let beat = Beat::from(hb);
        let mut out = Observed::default();
        let info = self.workers.entry(worker.clone()).or_insert(WorkerInfo {
            seen: now,
            beat: None,
            dead: false,
            reserved_until: None,
            reservation_expired: false,
        });
        if info.dead {
            out.revived = true;
        } else {
            self.by_seen.remove(&(info.seen, worker.clone()));
        }
        if let Some(prev) = &info.beat {
            out.new_instance = prev.instance != beat.instance;
        }
        info.dead = false;
        info.seen = info.seen.max(now);
        match beat.intent {
            Intent::Restarting => {
                if info.reserved_until.is_none() && !info.reservation_expired {
                    info.reserved_until = Some(now + self.rejoin_window);
                }
            }
            _ => {
                // Back (new instance) or the restart was called off: the reservation ends and
                // the worker is an ordinary member again.
                info.reserved_until = None;
                info.reservation_expired = false;
            }
        }
        if out.new_instance && beat.intent == Intent::Restarting {
            // A new process that immediately restarts again gets a fresh reservation.
            info.reserved_until = Some(now + self.rejoin_window);
            info.reservation_expired = false;
        }
        info.beat = Some(beat);
        self.by_seen.insert((info.seen, worker.clone()));
        out
    }

    /// A member named by `meta` (or owning partitions in a record) that has no heartbeat at
    /// takeover: it must appear within `heartbeat_ttl + emergency_grace` of `now`.
    pub(super) fn expect(&mut self, now: Instant, worker: &WorkerId) {
        if self.workers.contains_key(worker) {
            return;
        }
        self.workers.insert(
            worker.clone(),
            WorkerInfo {
                seen: now,
                beat: None,
                dead: false,
                reserved_until: None,
                reservation_expired: false,
            },
        );
        self.by_seen.insert((now, worker.clone()));
    }

    /// Whether deaths may be declared at `now` (not degraded, not in the recovery grace).
    fn may_declare(&self, now: Instant) -> bool {
        !self.degraded && self.quiet_until.is_none_or(|q| now >= q)
    }

    /// Declares dead every worker silent for `dead_after` of observed time; returns them.
    pub(super) fn declare_deaths(&mut self, now: Instant) -> Vec<WorkerId> {
        if !self.may_declare(now) {
            return Vec::new();
        }
        let observed = self.observed_now(now);
        let mut dead = Vec::new();
        while let Some((seen, w)) = self.by_seen.first().cloned() {
            if observed.saturating_duration_since(seen) < self.dead_after {
                break;
            }
            self.by_seen.pop_first();
            if let Some(info) = self.workers.get_mut(&w) {
                info.dead = true;
            }
            dead.push(w);
        }
        dead
    }

    /// Ends every reservation due at `now`; returns the workers whose reservation expired.
    pub(super) fn expire_reservations(&mut self, now: Instant) -> Vec<WorkerId> {
        let mut out = Vec::new();
        for (w, info) in &mut self.workers {
            if info.reserved_until.is_some_and(|t| t <= now) {
                info.reserved_until = None;
                info.reservation_expired = true;
                out.push(w.clone());
            }
        }
        out
    }

    /// When liveness needs a look again: the next possible death, the end of the recovery
    /// grace, the next reservation end. `None` while nothing can happen without an event (for
    /// instance while the leader's own echo is stale: only a new echo moves observed time).
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(q) = self.quiet_until {
            consider(q);
        }
        if !self.degraded
            && let Some((seen, _)) = self.by_seen.first()
        {
            consider(*seen + self.dead_after);
        }
        for info in self.workers.values() {
            if let Some(t) = info.reserved_until {
                consider(t);
            }
        }
        next
    }

    pub(super) fn set_degraded(&mut self, now: Instant, degraded: bool, grace: Duration) {
        if self.degraded && !degraded {
            self.quiet_until = Some(now + grace);
        }
        self.degraded = degraded;
    }

    pub(super) fn get(&self, w: &WorkerId) -> Option<&WorkerInfo> {
        self.workers.get(w)
    }

    /// Known and not declared dead.
    pub(super) fn is_alive(&self, w: &WorkerId) -> bool {
        self.workers.get(w).is_some_and(|i| !i.dead)
    }

    /// Reserved for a restart at `now`.
    pub(super) fn is_reserved(&self, w: &WorkerId, now: Instant) -> bool {
        self.workers
            .get(w)
            .and_then(|i| i.reserved_until)
            .is_some_and(|t| t > now)
    }

    pub(super) fn workers(&self) -> impl Iterator<Item = (&WorkerId, &WorkerInfo)> {
        self.workers.iter()
    }
}
