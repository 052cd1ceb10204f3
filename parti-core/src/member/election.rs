//! Candidacy, terms, lease discipline and the embedded planner (PROTOCOL.md §4).
//!
//! Candidates watch the `leader` key and `create` it when it is absent — on a delete, on an
//! empty snapshot, and on a timer `election_ttl` after the last write they saw (max-age expiry
//! is silent). The winner renews every `election_ttl / 3` by compare-and-set, takes the next
//! term by compare-and-set on the `term` key (retrying on conflict), writes its `Leadership`
//! with that term and only then builds its [`Planner`]. It acts as leader only until
//! `sent_at(last successful write) + election_ttl - lease_margin`; a failed write is followed by
//! a re-read and retried until then, so one timeout never drops leadership. At the lapse the
//! planner is stopped and dropped: nothing it asks for afterwards but closing its watches leaves
//! the member.

use std::time::Instant;

use super::{Action, Member, Notification, Op, Phase, Timer};
use crate::config::ValidConfig;
use crate::machine::later;
use crate::machine::{Backoff, IoAction, KvReply, KvRequest, KvResult, WatchId};
use crate::planner::{Planner, PlannerInit};
use crate::records::{Leadership, Names, Record, TermCounter};
use crate::store::{KvError, KvOperation, WatchEvent, WatchKeys};
use crate::types::{Revision, Term, WorkerId};

/// The election side of a member.
#[derive(Clone, Debug)]
pub(super) struct Election {
    watch: Option<WatchId>,
    /// The first round is over (the snapshot showed a leader, or our `create` was answered).
    settled: bool,
    snapshot_done: bool,
    key_present: bool,
    /// A `create` attempt is open: sent, or timed out and re-reading the key.
    creating: bool,
    lead: Option<Lead>,
    /// The worker the leader key named last, as this member's watch showed it (`None`:
    /// absent, undecodable, or not known since the watch (re)started).
    leader: Option<WorkerId>,
    backoff: Backoff,
}

/// Holding the leader key.
#[derive(Clone, Debug)]
pub(super) struct Lead {
    pub(super) revision: Revision,
    pub(super) lease_until: Instant,
    /// The term taken, once the `term` key was written.
    pub(super) term: Option<Term>,
    writing: bool,
}

impl Election {
    pub(super) fn new(config: &ValidConfig, seed: u64) -> Self {
        Election {
            watch: None,
            settled: false,
            snapshot_done: false,
            key_present: false,
            creating: false,
            lead: None,
            leader: None,
            backoff: Backoff::new(config.retry.clone(), seed),
        }
    }
}

impl Election {
    /// A snapshot starts again (a resync, or a new watch after one ended): the key is learnt
    /// afresh.
    fn resync(&mut self) {
        self.snapshot_done = false;
        self.key_present = false;
        self.leader = None;
    }

    /// The leader watch, while open.
    pub(super) fn watch(&self) -> Option<WatchId> {
        self.watch
    }

    /// The first round is over.
    pub(super) fn is_settled(&self) -> bool {
        self.settled
    }

    /// The revision of the leader key we hold, if we lead.
    pub(super) fn lead_revision(&self) -> Option<Revision> {
        self.lead.as_ref().map(|l| l.revision)
    }

    /// The worker the leader key named last, as our watch showed it.
    pub(super) fn leader(&self) -> Option<&WorkerId> {
        self.leader.as_ref()
    }

    /// Whether `watch` is the leader watch; if so it is closed (it ended).
    pub(super) fn watch_ended(&mut self, watch: WatchId) -> bool {
        self.watch.take_if(|w| *w == watch).is_some()
    }

    /// The leader watch opened again: its snapshot is a resync.
    pub(super) fn reopened(&mut self, watch: WatchId) {
        self.resync();
        self.watch = Some(watch);
    }
}

impl Member {
    pub(super) fn start_election(&mut self) {
        let watch = self.ids.watch();
        self.election.watch = Some(watch);
        self.election.settled = false;
        self.election.snapshot_done = false;
        self.election.key_present = false;
        self.election.creating = false;
        self.election.leader = None;
        self.actions.push_back(Action::Io(IoAction::Watch {
            watch,
            bucket: self.names.leader_bucket(),
            keys: WatchKeys::Key(Names::LEADER_KEY.to_owned()),
        }));
    }

    pub(super) fn stop_election(&mut self) {
        self.timers.stop(Timer::RewatchLeader);
        if let Some(watch) = self.election.watch.take() {
            self.actions
                .push_back(Action::Io(IoAction::Unwatch { watch }));
        }
        self.election.creating = false;
        self.timers.stop(Timer::Candidate);
    }

    pub(super) fn on_leader_watch(&mut self, now: Instant, event: Result<WatchEvent, KvError>) {
        match event {
            Err(_) => self.on_kv_error(now),
            Ok(WatchEvent::SnapshotComplete) => {
                self.watch_settled();
                self.election.snapshot_done = true;
                if self.election.key_present {
                    self.election.settled = true;
                } else {
                    self.stand(now);
                }
            }
            Ok(WatchEvent::Resync) => self.election.resync(),
            Ok(WatchEvent::Change(change)) => match change.op {
                KvOperation::Put(bytes) => {
                    self.election.key_present = true;
                    let bucket = self.names.leader_bucket();
                    self.election.leader = self
                        .decode::<Leadership>(&bucket, &change.key, &bytes)
                        .map(|l| l.worker);
                    if self.election.lead.is_none() {
                        // Expiry is silent: try again once this write would have expired.
                        self.timers
                            .set(Timer::Candidate, later(now, self.config.election_ttl));
                    }
                }
                KvOperation::Delete | KvOperation::Purge => {
                    self.election.key_present = false;
                    self.election.leader = None;
                    if self.election.snapshot_done {
                        self.stand(now);
                    }
                }
            },
        }
    }

    fn leadership_value(&self, term: Term) -> Option<Vec<u8>> {
        let worker = self.identity.as_ref()?.id().clone();
        Some(
            Leadership {
                worker,
                instance: self.instance,
                term,
            }
            .encode(),
        )
    }

    /// Tries to `create` the leader key (if standing makes sense now).
    pub(super) fn stand(&mut self, now: Instant) {
        if self.phase != Phase::Member
            || self.election.lead.is_some()
            || self.election.creating
            || !self.identity_trusted()
        {
            return;
        }
        let Some(value) = self.leadership_value(Term::ZERO) else {
            return;
        };
        self.election.creating = true;
        self.timers.stop(Timer::Candidate);
        let request = KvRequest::Create {
            bucket: self.names.leader_bucket(),
            key: Names::LEADER_KEY.to_owned(),
            value,
        };
        self.kv(Op::CreateLeader { sent_at: now }, request);
    }

    pub(super) fn on_leader_created(&mut self, now: Instant, sent_at: Instant, result: KvResult) {
        // After a timeout the attempt is still open until the re-read answers: a second
        // `create` meanwhile could land unseen (the re-read may not show it) and leave the key
        // held by a candidate that does not know it.
        self.election.creating = matches!(result, Err(KvError::Timeout));
        match result {
            Ok(KvReply::Written(revision)) => self.become_leader(now, sent_at, revision),
            Err(KvError::AlreadyExists) => {
                self.election.settled = true;
                self.timers.set(
                    Timer::Candidate,
                    later(now, self.config.election_renew_interval()),
                );
            }
            // Unknown outcome: re-read; our instance in the key means the create landed.
            Err(KvError::Timeout) => self.read_leader(sent_at),
            Err(_) | Ok(_) => {
                self.election.settled = true;
                let at = self.election_retry_at(now);
                self.timers.set(Timer::Candidate, at);
            }
        }
    }

    /// When to retry an election step that failed (standing, taking a term, renewing); counted.
    fn election_retry_at(&mut self, now: Instant) -> Instant {
        self.retries.election += 1;
        later(now, self.election.backoff.next_delay())
    }

    fn read_leader(&mut self, sent_at: Instant) {
        let request = KvRequest::Entry {
            bucket: self.names.leader_bucket(),
            key: Names::LEADER_KEY.to_owned(),
        };
        self.kv(Op::ReadLeader { sent_at }, request);
    }

    fn become_leader(&mut self, now: Instant, sent_at: Instant, revision: Revision) {
        self.election.settled = true;
        self.election.backoff.reset();
        self.timers.stop(Timer::Candidate);
        let lease_until = later(sent_at, self.config.lease());
        self.election.lead = Some(Lead {
            revision,
            lease_until,
            term: None,
            writing: false,
        });
        self.timers.set(Timer::LeaseEnd, lease_until);
        self.timers.set(
            Timer::RenewLeader,
            (later(sent_at, self.config.election_renew_interval())).max(now),
        );
        // A new leader bumps the term before it reads or writes anything else.
        self.read_term();
    }

    pub(super) fn read_term(&mut self) {
        if self.election.lead.as_ref().is_none_or(|l| l.term.is_some()) {
            return;
        }
        let request = KvRequest::Entry {
            bucket: self.names.assignments_bucket(),
            key: Names::TERM_KEY.to_owned(),
        };
        self.kv(Op::ReadTerm, request);
    }

    pub(super) fn on_term_read(&mut self, now: Instant, result: KvResult) {
        if self.election.lead.is_none() {
            return;
        }
        match result {
            Ok(KvReply::Entry(entry)) => {
                let bucket = self.names.assignments_bucket();
                let current = entry
                    .as_ref()
                    .and_then(|e| self.decode::<TermCounter>(&bucket, &e.key, &e.value))
                    .map_or(Term::ZERO, |t| t.term);
                let next = current.next();
                let value = TermCounter { term: next }.encode();
                let key = Names::TERM_KEY.to_owned();
                let request = match entry {
                    Some(e) => KvRequest::Update {
                        bucket,
                        key,
                        value,
                        expected: e.revision,
                    },
                    None => KvRequest::Create { bucket, key, value },
                };
                self.kv(Op::WriteTerm { term: next }, request);
            }
            _ => self.retry_term_later(now),
        }
    }

    fn retry_term_later(&mut self, now: Instant) {
        let at = self.election_retry_at(now);
        self.timers.set(Timer::TermRetry, at);
    }

    pub(super) fn on_term_written(&mut self, now: Instant, term: Term, result: KvResult) {
        let Some(lead) = self.election.lead.as_mut() else {
            return;
        };
        match result {
            Ok(KvReply::Written(_)) => {
                lead.term = Some(term);
                self.write_leader(now);
            }
            // Another writer took a term meanwhile: read and take the next one.
            Err(KvError::AlreadyExists | KvError::RevisionMismatch { .. }) => self.read_term(),
            _ => self.retry_term_later(now),
        }
    }

    /// Writes the leader key (a renewal; after the term bump it carries the term).
    pub(super) fn write_leader(&mut self, now: Instant) {
        let Some(lead) = self.election.lead.as_ref() else {
            return;
        };
        if lead.writing {
            return;
        }
        let (term, expected) = (lead.term.unwrap_or(Term::ZERO), lead.revision);
        let Some(value) = self.leadership_value(term) else {
            return;
        };
        if let Some(l) = self.election.lead.as_mut() {
            l.writing = true;
        }
        let request = KvRequest::Update {
            bucket: self.names.leader_bucket(),
            key: Names::LEADER_KEY.to_owned(),
            value,
            expected,
        };
        self.kv(Op::WriteLeader { sent_at: now, term }, request);
    }

    pub(super) fn on_leader_written(
        &mut self,
        now: Instant,
        sent_at: Instant,
        written: Term,
        result: KvResult,
    ) {
        let Some(lead) = self.election.lead.as_mut() else {
            return;
        };
        lead.writing = false;
        let Ok(KvReply::Written(revision)) = result else {
            // Maybe our own earlier write landed late, maybe someone else's: re-read.
            return self.read_leader(sent_at);
        };
        lead.revision = revision;
        lead.lease_until = lead.lease_until.max(later(sent_at, self.config.lease()));
        let lease_until = lead.lease_until;
        let term = lead.term;
        self.election.backoff.reset();
        self.timers.set(Timer::LeaseEnd, lease_until);
        self.timers.set(
            Timer::RenewLeader,
            (later(sent_at, self.config.election_renew_interval())).max(now),
        );
        if self.planner.is_none()
            && let Some(term) = term
        {
            if written == term {
                self.start_planner(now, term);
            } else {
                // The term was taken while an older write was in flight: write it now.
                self.write_leader(now);
            }
        }
    }

    pub(super) fn on_leader_read(&mut self, now: Instant, sent_at: Instant, result: KvResult) {
        if self.election.lead.is_none() {
            // The re-read after a timed-out `create` closes that attempt.
            self.election.creating = false;
        }
        let bucket = self.names.leader_bucket();
        let ours = match &result {
            Ok(KvReply::Entry(Some(e))) => self
                .decode::<Leadership>(&bucket, &e.key, &e.value)
                .filter(|l| l.instance == self.instance && Some(&l.worker) == self.worker_id())
                .map(|_| e.revision),
            _ => None,
        };
        match (result, ours, self.election.lead.is_some()) {
            (Ok(_), Some(revision), false) => self.become_leader(now, sent_at, revision),
            (Ok(_), Some(revision), true) => {
                if let Some(l) = self.election.lead.as_mut() {
                    l.revision = revision;
                }
                let at = self.election_retry_at(now);
                self.timers.set(Timer::RenewLeader, at);
            }
            (Ok(_), None, true) => self.step_down(now, false),
            (Ok(_), None, false) => {
                self.election.settled = true;
                self.timers.set(
                    Timer::Candidate,
                    later(now, self.config.election_renew_interval()),
                );
            }
            (Err(_), _, true) => {
                let at = self.election_retry_at(now);
                self.timers.set(Timer::RenewLeader, at);
            }
            (Err(_), _, false) => {
                self.election.settled = true;
                let at = self.election_retry_at(now);
                self.timers.set(Timer::Candidate, at);
            }
        }
    }

    fn start_planner(&mut self, now: Instant, term: Term) {
        let Some(me) = self.worker_id().cloned() else {
            return;
        };
        let init = PlannerInit {
            me,
            instance: self.instance,
            term,
            partitions: self.partitions.to_vec(),
            seed: self.rng.next_u64(),
        };
        self.relay.new_generation();
        let mut planner = Planner::new(self.config.clone(), self.strategy.clone(), init, now);
        if self.degraded.is_on() {
            planner.set_degraded(now, true);
        }
        self.planner = Some(planner);
        self.notify(Notification::LeadershipAcquired { term });
    }

    /// Lease discipline: past the local lease end, stop leading at once.
    pub(super) fn check_lease(&mut self, now: Instant) {
        if self
            .election
            .lead
            .as_ref()
            .is_some_and(|l| now >= l.lease_until)
        {
            self.step_down(now, false);
        }
    }

    /// Stops leading: the planner is stopped and dropped (only the closing of its watches still
    /// leaves), pending leader operations are forgotten. With `delete_key` the leader key is
    /// deleted by compare-and-set so a successor need not wait for its expiry.
    pub(super) fn step_down(&mut self, now: Instant, delete_key: bool) {
        let Some(lead) = self.election.lead.take() else {
            return;
        };
        for t in [Timer::RenewLeader, Timer::LeaseEnd, Timer::TermRetry] {
            self.timers.stop(t);
        }
        if let Some(mut p) = self.planner.take() {
            self.retries.publication += p.retries();
            self.retries.other += p.rewatches();
            p.stop(now);
            while let Some(a) = p.poll_action() {
                if matches!(a, IoAction::Unwatch { .. })
                    && let Some(a) = self.relay.outbound(a)
                {
                    self.actions.push_back(Action::Io(a));
                }
            }
            while let Some(n) = p.poll_notification() {
                self.notify(Notification::Planner(n));
            }
        }
        self.ops.retain(|_, op| {
            !matches!(
                op,
                Op::CreateLeader { .. }
                    | Op::ReadLeader { .. }
                    | Op::WriteLeader { .. }
                    | Op::ReadTerm
                    | Op::WriteTerm { .. }
            )
        });
        // A candidate attempt whose answer was just forgotten is over: without this, `stand`
        // would wait for that answer for ever and the member would never stand again.
        self.election.creating = false;
        self.notify(Notification::LeadershipLost { term: lead.term });
        if delete_key {
            let request = KvRequest::Delete {
                bucket: self.names.leader_bucket(),
                key: Names::LEADER_KEY.to_owned(),
                expected: Some(lead.revision),
            };
            self.kv(Op::DropLeader, request);
        }
        if self.phase == Phase::Member {
            self.timers.set(
                Timer::Candidate,
                later(now, self.config.election_renew_interval()),
            );
        }
    }
}
