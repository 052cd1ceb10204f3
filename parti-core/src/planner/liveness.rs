//! Liveness (PROTOCOL.md §5): stamps on the observation channel's clock, observation-channel
//! gating, restart reservations and the degraded quiet period.
//!
//! Every heartbeat the planner's watch delivers is stamped when it is received. The leader's
//! own heartbeat echo is watched too, and time as far as liveness is concerned only advances
//! while the leader can see itself: `observed_now = min(now, own_echo + heartbeat_interval)`.
//! A worker is dead iff `observed_now - seen[w] >= heartbeat_ttl + emergency_grace`, never
//! while the leader is degraded nor during `degraded.recovery_grace` after. A heartbeat
//! received in between simply moves the stamp: nothing about an earlier absence is remembered
//! (Go keeps a stale first-missing time and later skips the grace, §17 row 9).
//!
//! **`own_echo` is the send time of the newest echo received, not its receive time** (channel
//! time; a choice where PROTOCOL.md is silent). The heartbeats bucket is one revision-ordered
//! stream: once the echo of a heartbeat the leader sent at `s` has arrived, everything written
//! before `s` has arrived too. The member that runs the planner tells it when it sends each
//! heartbeat ([`Planner::heartbeat_sent`](super::Planner::heartbeat_sent)); an echo the planner
//! was not told about (sent before the planner existed) counts as sent when it is received.
//! With receive times, a watch that lags as a whole (delayed, chunked delivery) made observed
//! time jump when the leader's delayed echo arrived, ahead of the live workers' heartbeats
//! queued behind it: false deaths. Measured by send times, delivery lag moves nothing.
//!
//! **Deaths are declared only while the channel is current**: the newest echo received was
//! sent at most one `heartbeat_interval` ago (`now <= own_echo + heartbeat_interval`, when
//! `observed_now` is not frozen). A death is a judgement about the present (the worker's
//! partitions are granted elsewhere now), but a lagging channel only shows the past: a worker
//! silent up to the channel's position may have heartbeated since (and even applied a grant
//! of this leader) without the leader knowing yet. While the watch lags by more than an
//! interval nobody is declared dead, as during a stall; deaths resume when it has caught up.
//!
//! **Frozen time does not count, also after it ends**: stamps and `observed_now` are kept on
//! an *observed clock* that stops while the echo is stale and resumes where it stopped when
//! the echo comes back, instead of jumping to `now`. A gap between two consecutive echoes'
//! send times longer than an interval (the leader's own writes stalled or failed) is frozen
//! time too. When a stalled watch delivers its backlog, the leader's own echo may arrive a
//! moment before the others' heartbeats; with the literal formula everyone silent for the stall
//! would be dead in that moment (a mass emergency after a broker hiccup). On the observed clock
//! nobody is declared dead earlier than by the literal formula, and with a healthy channel
//! (echoes received promptly, every interval) both agree.
//!
//! **A heartbeat received while the echo is stale counts as received when the channel is current
//! again.** While stale, observed time stands at `own_echo + heartbeat_interval`, and a stamp
//! taken then is that stop. But the echoes that end the staleness may show the leader's writes
//! merely slow, not stalled (sent every interval, stored late): their send times move observed
//! time on past the stop, by up to the whole stale time, and a stamp left at the stop would
//! count a worker silent over time in which the leader heard it (false deaths: a worker that
//! heartbeated a moment before the leader's slow echoes arrived, stamped ages ago). Such a
//! stamp is therefore moved to observed time at the echo after which the channel is current:
//! the heartbeat was received before, so no later than that (a stamp only moves later).
//!
//! **Dead means fenced** (a choice where PROTOCOL.md is silent): a worker is declared dead only
//! if, besides the formula, the leader's own echo came at least `heartbeat_ttl - fence_margin`
//! (`fence_after`) after the worker's last delivered heartbeat, on the observed clock (the echo
//! counts at its send time). Gating
//! lets observed time run up to one `heartbeat_interval` past the last echo, and a heartbeat
//! stored after that echo may not be delivered yet (a stalled watch): a worker cut off for a
//! while that got one heartbeat through just then does not fence before `fence_after` after
//! it. Everything stored before the echo has been delivered, so a worker silent for
//! `fence_after` up to the echo has fenced itself (under `Fence`). With `emergency_grace +
//! fence_margin >= heartbeat_interval` (the defaults: 3 s + 0.6 s ≥ 2 s) the formula implies
//! this; with a shorter grace (zero is allowed) it holds the death back until an echo shows
//! the silence, so a partition is never granted away from a member that may still hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::later;
use crate::hash::StableHashMap;
use crate::records::{Heartbeat, Intent};
use crate::types::{InstanceId, Version, WorkerId};

/// How many send times of the leader's own heartbeats are kept while not echoed.
const MAX_UNECHOED: usize = 64;

/// The last heartbeat of a worker, as far as planning cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Beat {
    pub instance: InstanceId,
    pub round: u32,
    pub applied: Version,
    pub intent: Intent,
    pub capacity: u32,
}

impl From<&Heartbeat> for Beat {
    fn from(h: &Heartbeat) -> Self {
        Beat {
            instance: h.instance,
            round: h.round,
            applied: h.applied,
            intent: h.intent,
            capacity: h.capacity.max(1),
        }
    }
}

/// What the planner knows about one worker's liveness.
#[derive(Clone, Debug)]
pub(super) struct WorkerInfo {
    /// Observed-clock stamp of the last heartbeat (or of the takeover, for members expected
    /// from `meta`).
    pub seen: Instant,
    /// The last heartbeat; `None` for a member expected from `meta` that has not appeared yet.
    pub beat: Option<Beat>,
    /// Declared dead (until a heartbeat is seen again).
    pub dead: bool,
    /// `intent = Restarting` was seen: its partitions stay reserved until this instant.
    pub reserved_until: Option<Instant>,
    /// The reservation ran out without the worker coming back: handled as a crash.
    pub reservation_expired: bool,
    /// Process and sequence number of the newest heartbeat observed: a heartbeat of that
    /// process with a sequence number not above it is older (or the same one again) and
    /// changes nothing (see [`Liveness::observe`]).
    pub last_seq: Option<(InstanceId, u64)>,
}

impl WorkerInfo {
    /// Reserved for a restart at `now`.
    pub(super) fn is_reserved(&self, now: Instant) -> bool {
        self.reserved_until.is_some_and(|t| t > now)
    }
}

/// What observing one heartbeat changed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Observed {
    /// The worker had been declared dead and is back.
    pub revived: bool,
    /// The heartbeat comes from another process than the previous one (a restart).
    pub new_instance: bool,
    /// Anything planning cares about changed (first heartbeat, instance, intent,
    /// acknowledged version, capacity, revival); a plain "still here" is not a change.
    pub changed: bool,
}

/// The liveness table.
#[derive(Clone, Debug)]
pub(super) struct Liveness {
    /// Looked up per worker on every input the planner classifies (O(1), not O(log n) string
    /// comparisons); iterated in `order`.
    workers: StableHashMap<WorkerId, WorkerInfo>,
    /// Every key of `workers`, in order (decisions iterate in worker order).
    order: BTreeSet<WorkerId>,
    /// `(seen, worker)` of every worker not declared dead: the first entry dies first.
    by_seen: BTreeSet<(Instant, WorkerId)>,
    /// `(reserved_until, worker)` of every running restart reservation.
    reserved: BTreeSet<(Instant, WorkerId)>,
    me: WorkerId,
    my_instance: InstanceId,
    /// Send time of the newest own heartbeat echo received (channel time).
    own_echo: Instant,
    /// Send times of the leader's own heartbeats not echoed yet, by `seq` (bounded).
    sent: BTreeMap<u64, Instant>,
    /// Observed-clock position of the last echo of the leader's own heartbeat (at its send
    /// time): every heartbeat stored before it has been delivered (one ordered watch).
    echo_seen: Instant,
    /// `heartbeat_ttl - fence_margin`: a member silent that long has fenced itself.
    fence_after: Duration,
    /// Time during which the echo was stale, summed: the observed clock is behind `now` by it.
    frozen: Duration,
    /// Workers stamped while the echo was stale: restamped when the channel is current again.
    heard_stale: BTreeSet<WorkerId>,
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
        fence_after: Duration,
        rejoin_window: Duration,
    ) -> Self {
        Liveness {
            workers: StableHashMap::default(),
            order: BTreeSet::new(),
            by_seen: BTreeSet::new(),
            reserved: BTreeSet::new(),
            me,
            my_instance,
            // The member heartbeated before it won the election; until the first echo arrives,
            // liveness time may run one interval past the planner's creation, no further.
            own_echo: now,
            sent: BTreeMap::new(),
            echo_seen: now,
            fence_after,
            frozen: Duration::ZERO,
            heard_stale: BTreeSet::new(),
            interval,
            dead_after,
            rejoin_window,
            degraded: false,
            quiet_until: None,
            gating: true,
        }
    }

    /// The observed clock: `min(now, own_echo + heartbeat_interval)`, minus the time the echo
    /// was stale before.
    pub(super) fn observed_now(&self, now: Instant) -> Instant {
        if !self.gating {
            return now;
        }
        let o = now.min(later(self.own_echo, self.interval));
        o.checked_sub(self.frozen).unwrap_or(o)
    }

    /// The leader's member sent its own heartbeat `seq` at `now`.
    pub(super) fn heartbeat_sent(&mut self, now: Instant, seq: u64) {
        self.sent.insert(seq, now);
        // Heartbeats whose put failed are never echoed: keep the table bounded.
        while self.sent.len() > MAX_UNECHOED {
            self.sent.pop_first();
        }
    }

    /// Whether the observation channel is current at `now`: the newest echo received was sent
    /// at most one interval ago. Always, without gating.
    fn channel_current(&self, now: Instant) -> bool {
        !self.gating || now <= later(self.own_echo, self.interval)
    }

    /// Whether `hb` is older than (or the same as) a heartbeat of the same process already
    /// observed for `worker`.
    pub(super) fn is_stale(&self, worker: &WorkerId, hb: &Heartbeat) -> bool {
        self.workers
            .get(worker)
            .and_then(|i| i.last_seq)
            .is_some_and(|(instance, seq)| instance == hb.instance && hb.seq <= seq)
    }

    /// Stamps a heartbeat of `worker` received at `now`.
    ///
    /// **The sequence number decides, not arrival order.** A store may apply two puts of one
    /// heartbeat key in another order than they were sent (pipelined puts, a write replayed
    /// after a reconnect: [`KvStore`](crate::store::KvStore) contract), and a watch that
    /// resyncs delivers the current value again. A heartbeat of a process whose newer (or
    /// same) heartbeat was already observed is ignored entirely: it moves neither the stamp
    /// nor the intent, capacity or acknowledged version back — nor, for the leader's own
    /// echo, the channel's position (its send time is no longer known and would count as now).
    pub(super) fn observe(&mut self, now: Instant, worker: &WorkerId, hb: &Heartbeat) -> Observed {
        if self.is_stale(worker, hb) {
            return Observed::default();
        }
        if *worker == self.me && hb.instance == self.my_instance {
            // Channel time: the send time of this echo (its receive time if unknown).
            let sent_at = self.sent.get(&hb.seq).copied().unwrap_or(now).min(now);
            self.sent = self.sent.split_off(&hb.seq.saturating_add(1));
            let fresh_until = later(self.own_echo, self.interval);
            if sent_at > fresh_until {
                self.frozen = self.frozen.saturating_add(sent_at - fresh_until);
            }
            self.own_echo = self.own_echo.max(sent_at);
            // Everything stored before the echo was sent has been delivered: its position.
            self.echo_seen = self.echo_seen.max(self.observed_now(sent_at));
            if self.channel_current(now) {
                self.restamp_heard_stale(now);
            }
        }
        let stamp = self.observed_now(now);
        if !self.channel_current(now) {
            self.heard_stale.insert(worker.clone());
        }
        let beat = Beat::from(hb);
        let mut out = Observed::default();
        if !self.workers.contains_key(worker) {
            self.order.insert(worker.clone());
        }
        let info = self.workers.entry(worker.clone()).or_insert(WorkerInfo {
            seen: stamp,
            beat: None,
            dead: false,
            reserved_until: None,
            reservation_expired: false,
            last_seq: None,
        });
        info.last_seq = Some((hb.instance, hb.seq));
        if info.dead {
            out.revived = true;
        } else {
            self.by_seen.remove(&(info.seen, worker.clone()));
        }
        if let Some(prev) = &info.beat {
            out.new_instance = prev.instance != beat.instance;
        }
        out.changed = out.revived || info.beat.as_ref() != Some(&beat);
        info.dead = false;
        info.seen = info.seen.max(stamp);
        let reserved_before = info.reserved_until;
        match beat.intent {
            Intent::Restarting => {
                if info.reserved_until.is_none() && !info.reservation_expired {
                    info.reserved_until = Some(later(now, self.rejoin_window));
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
            info.reserved_until = Some(later(now, self.rejoin_window));
            info.reservation_expired = false;
        }
        if info.reserved_until != reserved_before {
            if let Some(t) = reserved_before {
                self.reserved.remove(&(t, worker.clone()));
            }
            if let Some(t) = info.reserved_until {
                self.reserved.insert((t, worker.clone()));
            }
        }
        info.beat = Some(beat);
        self.by_seen.insert((info.seen, worker.clone()));
        out
    }

    /// The channel is current again: every worker stamped while the echo was stale is stamped
    /// at observed `now` instead (module docs), unless declared dead since.
    fn restamp_heard_stale(&mut self, now: Instant) {
        let stamp = self.observed_now(now);
        for w in std::mem::take(&mut self.heard_stale) {
            if let Some(info) = self.workers.get_mut(&w)
                && !info.dead
                && info.seen < stamp
            {
                self.by_seen.remove(&(info.seen, w.clone()));
                info.seen = stamp;
                self.by_seen.insert((stamp, w));
            }
        }
    }

    /// A member named by `meta` (or owning partitions in a record) that has no heartbeat at
    /// takeover: it must appear within `heartbeat_ttl + emergency_grace` of `now`.
    pub(super) fn expect(&mut self, now: Instant, worker: &WorkerId) {
        if self.workers.contains_key(worker) {
            return;
        }
        let stamp = self.observed_now(now);
        if !self.channel_current(now) {
            self.heard_stale.insert(worker.clone());
        }
        self.order.insert(worker.clone());
        self.workers.insert(
            worker.clone(),
            WorkerInfo {
                seen: stamp,
                beat: None,
                dead: false,
                reserved_until: None,
                reservation_expired: false,
                last_seq: None,
            },
        );
        self.by_seen.insert((stamp, worker.clone()));
    }

    /// A member `meta` says was restarting: reserve its partitions for `rejoin_window` from
    /// `now` unless its heartbeat already says where it is (restarting, or back).
    pub(super) fn reserve_from_meta(&mut self, now: Instant, worker: &WorkerId) {
        self.expect(now, worker);
        let until = later(now, self.rejoin_window);
        if let Some(info) = self.workers.get_mut(worker)
            && info.beat.is_none()
            && info.reserved_until.is_none()
        {
            info.reserved_until = Some(until);
            self.reserved.insert((until, worker.clone()));
        }
    }

    /// Workers whose reservation is running at `now`, sorted.
    pub(super) fn reserved_workers(&self, now: Instant) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = self
            .reserved
            .iter()
            .filter(|(t, _)| *t > now)
            .map(|(_, w)| w.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether deaths may be declared at `now` (not degraded, not in the recovery grace, the
    /// observation channel current).
    fn may_declare(&self, now: Instant) -> bool {
        !self.degraded && self.quiet_until.is_none_or(|q| now >= q) && self.channel_current(now)
    }

    /// Declares dead every worker silent for `dead_after` of observed time whose silence the
    /// leader has also seen last `fence_after` up to its own echo (see the module docs);
    /// returns them.
    pub(super) fn declare_deaths(&mut self, now: Instant) -> Vec<WorkerId> {
        if !self.may_declare(now) {
            return Vec::new();
        }
        let observed = self.observed_now(now);
        let mut dead = Vec::new();
        while let Some((seen, w)) = self.by_seen.first().cloned() {
            if observed.saturating_duration_since(seen) < self.dead_after
                || (self.gating
                    && self.echo_seen.saturating_duration_since(seen) < self.fence_after)
            {
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
        while let Some((t, w)) = self.reserved.first().cloned() {
            if t > now {
                break;
            }
            self.reserved.pop_first();
            if let Some(info) = self.workers.get_mut(&w) {
                info.reserved_until = None;
                info.reservation_expired = true;
            }
            out.push(w);
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
            // In real time, assuming the channel stays healthy; if it freezes, this wake-up
            // finds nobody dead and sets the next one. A death held back only by the
            // `fence_after` rule waits for the next own echo, an event.
            let left =
                later(*seen, self.dead_after).saturating_duration_since(self.observed_now(now));
            if !left.is_zero() {
                consider(later(now, left));
            }
        }
        if let Some((t, _)) = self.reserved.first() {
            consider(*t);
        }
        next
    }

    pub(super) fn set_degraded(&mut self, now: Instant, degraded: bool, grace: Duration) {
        if self.degraded && !degraded {
            self.quiet_until = Some(later(now, grace));
        }
        self.degraded = degraded;
    }

    pub(super) fn get(&self, w: &WorkerId) -> Option<&WorkerInfo> {
        self.workers.get(w)
    }

    /// How many workers are known and not declared dead.
    pub(super) fn live_count(&self) -> usize {
        self.by_seen.len()
    }

    /// Known and not declared dead.
    pub(super) fn is_alive(&self, w: &WorkerId) -> bool {
        self.workers.get(w).is_some_and(|i| !i.dead)
    }

    /// Reserved for a restart at `now`.
    pub(super) fn is_reserved(&self, w: &WorkerId, now: Instant) -> bool {
        self.workers.get(w).is_some_and(|i| i.is_reserved(now))
    }

    /// Every known worker, in worker order.
    pub(super) fn workers(&self) -> impl Iterator<Item = (&WorkerId, &WorkerInfo)> {
        self.order
            .iter()
            .filter_map(|w| self.workers.get(w).map(|i| (w, i)))
    }
}
