//! Identity: claiming a worker id (PROTOCOL.md §3); keeping it is in `renewal`.
//!
//! Claim: list the ids bucket once; try the preferred number first (taking it over by
//! compare-and-set if its claim says `restarting_until` in the future, after reading what the
//! previous process acknowledged), then the lowest free number; `create` it. On "already
//! exists" re-list and try the next. Pool exhausted: retry with backoff until the startup
//! timeout, then fail with `IdentityPoolExhausted`. A create that timed out is re-read: a claim
//! of our instance is ours. A claim whose answer arrives after its validity (send time + 90 % of
//! `identity_ttl`, see `renewal`) is suspect from the start: it may have expired and been taken
//! while the answer was on its way.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Member, Notification, Op, Phase, Timer};
use crate::config::ValidConfig;
use crate::machine::later;
use crate::machine::{Backoff, KvReply, KvRequest, KvResult};
use crate::records::IdClaim;
use crate::records::Record;
use crate::store::{KvEntry, KvError};
use crate::types::{Revision, WorkerId};

use super::types::MemberError;

/// The id this member holds.
#[derive(Clone, Debug)]
pub(super) struct Claimed {
    id: WorkerId,
    revision: Revision,
    claimed_at_ms: u64,
    /// Local end of the claim's validity: send time of the last successful write of the claim
    /// plus 90 % of `identity_ttl` (the store cannot expire it earlier than the full ttl).
    valid_until: Instant,
    /// The validity lapsed: the id may be someone else's now. Nothing is done under it (no
    /// heartbeat, no record applied) until a renewal confirms it.
    suspect: bool,
    /// The claim was rewritten with `restarting_until` (shutdown for restart): it is the next
    /// process's to take over now, so it is never renewed again.
    handed_over: bool,
}

impl Claimed {
    /// The id.
    pub(super) fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The revision of the claim (compare-and-set of the renewal).
    pub(super) fn revision(&self) -> Revision {
        self.revision
    }

    /// When the claim was first made (kept across renewals).
    pub(super) fn claimed_at_ms(&self) -> u64 {
        self.claimed_at_ms
    }

    /// The validity lapsed and no renewal confirmed it since.
    pub(super) fn is_suspect(&self) -> bool {
        self.suspect
    }

    /// Rewritten for the next process: never renewed again.
    pub(super) fn is_handed_over(&self) -> bool {
        self.handed_over
    }

    /// The claim was rewritten for the next process (shutdown for restart): never renewed
    /// again.
    pub(super) fn hand_over(&mut self) {
        self.handed_over = true;
    }

    /// A renewal landed at `revision`, valid until at least `valid_until`; returns the new
    /// validity end and whether the claim was suspect until now.
    pub(super) fn renewed(&mut self, revision: Revision, valid_until: Instant) -> (Instant, bool) {
        self.revision = revision;
        self.valid_until = self.valid_until.max(valid_until);
        let was_suspect = std::mem::replace(&mut self.suspect, false);
        (self.valid_until, was_suspect)
    }

    /// A re-read found our own claim at `revision` (a renewal whose answer was lost landed).
    pub(super) fn adopt_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    /// At `now` the validity lapses: the claim becomes suspect (returns true) unless it is
    /// still valid, already suspect, or handed over.
    pub(super) fn lapse(&mut self, now: Instant) -> bool {
        if now < self.valid_until || self.suspect || self.handed_over {
            return false;
        }
        self.suspect = true;
        true
    }
}

/// One claiming round (from start or from an identity loss until an id is held).
#[derive(Clone, Debug)]
pub(super) struct Claim {
    /// Numbers seen taken (listed, or a create/takeover failed) in this pass.
    taken: BTreeSet<u32>,
    /// Whether the preferred number was tried in this pass.
    tried_preferred: bool,
    /// Whether the last pass found the whole pool taken.
    exhausted: bool,
    deadline: Instant,
    pub(super) backoff: Backoff,
}

impl Claim {
    pub(super) fn new(config: &ValidConfig, seed: u64, now: Instant) -> Self {
        Claim {
            taken: BTreeSet::new(),
            tried_preferred: false,
            exhausted: false,
            deadline: later(now, config.startup_timeout),
            backoff: Backoff::new(config.retry.clone(), seed),
        }
    }
}

impl Member {
    /// Starts a claiming round: list the ids once.
    pub(super) fn begin_claim(&mut self, now: Instant) {
        self.phase = Phase::Claiming;
        self.claim.taken.clear();
        self.claim.tried_preferred = false;
        self.claim.exhausted = false;
        self.claim.deadline = later(now, self.config.startup_timeout);
        self.claim.backoff.reset();
        self.list_ids();
    }

    fn list_ids(&mut self) {
        let request = KvRequest::Keys {
            bucket: self.names.ids_bucket(),
            prefix: format!("{}-", self.config.worker_id_prefix),
        };
        self.kv(Op::ListIds, request);
    }

    fn id_of(&self, number: u32) -> Option<WorkerId> {
        WorkerId::from_parts(&self.config.worker_id_prefix, number).ok()
    }

    pub(super) fn on_ids_listed(&mut self, now: Instant, result: KvResult) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Keys(keys)) => {
                let prefix = self.config.worker_id_prefix.clone();
                for key in keys {
                    if let Ok(id) = WorkerId::new(&key)
                        && let Some(n) = id.number(&prefix)
                    {
                        self.claim.taken.insert(n);
                    }
                }
                self.try_next_id(now);
            }
            _ => self.retry_claim_later(now),
        }
    }

    /// Tries the preferred number (once per pass), then the lowest number not seen taken.
    fn try_next_id(&mut self, now: Instant) {
        if let Some(preferred) = self.config.preferred_id
            && !self.claim.tried_preferred
        {
            self.claim.tried_preferred = true;
            if self.claim.taken.contains(&preferred) {
                if let Some(id) = self.id_of(preferred) {
                    let request = KvRequest::Entry {
                        bucket: self.names.ids_bucket(),
                        key: id.to_string(),
                    };
                    self.kv(Op::ReadPreferred { number: preferred }, request);
                    return;
                }
            } else {
                self.create_id(now, preferred);
                return;
            }
        }
        let (min, max) = (self.config.worker_id_min, self.config.worker_id_max);
        match (min..=max).find(|n| !self.claim.taken.contains(n)) {
            Some(n) => self.create_id(now, n),
            None => {
                self.claim.exhausted = true;
                self.retry_claim_later(now);
            }
        }
    }

    fn create_id(&mut self, now: Instant, number: u32) {
        let Some(id) = self.id_of(number) else {
            self.claim.taken.insert(number);
            return self.try_next_id(now);
        };
        let claimed_at_ms = self.wall_ms(now);
        let value = IdClaim {
            instance: self.instance,
            claimed_at_ms,
            restarting_until_ms: None,
        }
        .encode();
        let request = KvRequest::Create {
            bucket: self.names.ids_bucket(),
            key: id.to_string(),
            value,
        };
        self.kv(
            Op::CreateId {
                number,
                claimed_at_ms,
                sent_at: now,
            },
            request,
        );
    }

    pub(super) fn on_preferred_read(&mut self, now: Instant, number: u32, result: KvResult) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Entry(None)) => self.create_id(now, number),
            Ok(KvReply::Entry(Some(entry))) => {
                let bucket = self.names.ids_bucket();
                let claim: Option<IdClaim> = self.decode(&bucket, &entry.key, &entry.value);
                let wall = self.wall_ms(now);
                match claim {
                    Some(c) if c.restarting_until_ms.is_some_and(|until| until > wall) => {
                        // The predecessor announced a restart: take its claim over. Its
                        // record is not ours (it is addressed to its process): the leader
                        // gives its partitions to us once it sees our heartbeat.
                        self.take_over(now, number, &entry);
                    }
                    // Undecodable counts as absent: `create` decides (it fails if the key lives).
                    None => self.create_id(now, number),
                    Some(_) => self.try_next_id(now),
                }
            }
            _ => self.try_next_id(now),
        }
    }

    fn take_over(&mut self, now: Instant, number: u32, entry: &KvEntry) {
        let claimed_at_ms = self.wall_ms(now);
        let value = IdClaim {
            instance: self.instance,
            claimed_at_ms,
            restarting_until_ms: None,
        }
        .encode();
        let request = KvRequest::Update {
            bucket: self.names.ids_bucket(),
            key: entry.key.clone(),
            value,
            expected: entry.revision,
        };
        self.kv(
            Op::TakeoverId {
                number,
                claimed_at_ms,
                sent_at: now,
            },
            request,
        );
    }

    /// The result of a claim write: a `create` of a free id, or (`takeover`) a compare-and-set
    /// over a preferred id's `restarting` claim. Either way a success claims the id and a
    /// timeout (unknown outcome) re-reads it; a refused takeover, like a lost `create` race,
    /// means the id is taken, so the member lists again and tries the next. Any other failure of
    /// a `create` is retried later.
    pub(super) fn on_claim_written(
        &mut self,
        now: Instant,
        number: u32,
        claimed_at_ms: u64,
        sent_at: Instant,
        result: KvResult,
        takeover: bool,
    ) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Written(revision)) => {
                self.claimed(now, number, revision, claimed_at_ms, sent_at);
            }
            // Unknown outcome: re-read before trying anything else.
            Err(KvError::Timeout) => self.read_id_after_create(number, sent_at),
            Err(KvError::AlreadyExists) => {
                self.claim.taken.insert(number);
                self.list_ids();
            }
            _ if takeover => {
                self.claim.taken.insert(number);
                self.list_ids();
            }
            _ => self.retry_claim_later(now),
        }
    }

    fn read_id_after_create(&mut self, number: u32, sent_at: Instant) {
        let Some(id) = self.id_of(number) else { return };
        let request = KvRequest::Entry {
            bucket: self.names.ids_bucket(),
            key: id.to_string(),
        };
        self.kv(Op::ReadIdAfterCreate { number, sent_at }, request);
    }

    pub(super) fn on_id_read_after_create(
        &mut self,
        now: Instant,
        number: u32,
        sent_at: Instant,
        result: KvResult,
    ) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Entry(Some(entry))) => {
                let bucket = self.names.ids_bucket();
                match self.decode::<IdClaim>(&bucket, &entry.key, &entry.value) {
                    Some(c) if c.instance == self.instance => {
                        self.claimed(now, number, entry.revision, c.claimed_at_ms, sent_at);
                    }
                    _ => {
                        self.claim.taken.insert(number);
                        self.list_ids();
                    }
                }
            }
            Ok(_) => self.list_ids(),
            Err(_) => self.retry_claim_later(now),
        }
    }

    fn retry_claim_later(&mut self, now: Instant) {
        self.retries.claim += 1;
        let at = later(now, self.claim.backoff.next_delay());
        self.timers
            .set(Timer::ClaimRetry, at.min(self.claim.deadline));
    }

    pub(super) fn on_claim_retry(&mut self, now: Instant) {
        if self.phase != Phase::Claiming {
            return;
        }
        if now >= self.claim.deadline {
            return self.fail_claim();
        }
        // A new pass: ids may have expired since.
        self.claim.taken.clear();
        self.claim.tried_preferred = false;
        self.list_ids();
    }

    pub(super) fn fail_claim(&mut self) {
        self.retries.exhausted += 1;
        let error = if self.claim.exhausted {
            MemberError::IdentityPoolExhausted {
                min: self.config.worker_id_min,
                max: self.config.worker_id_max,
            }
        } else {
            MemberError::StartupTimedOut {
                timeout: self.config.startup_timeout,
            }
        };
        self.phase = Phase::Stopped;
        self.timers.clear();
        self.ops.clear();
        self.notify(Notification::Failed(error));
        self.notify(Notification::Stopped);
    }

    fn claimed(
        &mut self,
        now: Instant,
        number: u32,
        revision: Revision,
        claimed_at_ms: u64,
        sent_at: Instant,
    ) {
        let Some(id) = self.id_of(number) else { return };
        self.timers.stop(Timer::ClaimRetry);
        let valid_until = later(sent_at, self.identity_validity());
        self.identity = Some(Claimed {
            id: id.clone(),
            revision,
            claimed_at_ms,
            valid_until,
            suspect: false,
            handed_over: false,
        });
        self.timers.set(Timer::IdentityLapse, valid_until);
        self.phase = Phase::Member;
        self.notify(Notification::IdentityClaimed { worker: id.clone() });
        self.timers.set(
            Timer::RenewId,
            later(now, self.config.identity_renew_interval()),
        );
        if now >= valid_until {
            // The answer came too late to be trusted (a paused process, a slow reply): the
            // claim may have expired and been taken since. Suspect from the start, exactly as
            // if it had lapsed — nothing is done under it until a renewal confirms it.
            self.on_identity_lapse(now);
        }
        self.start_assignment_watch(&id);
        self.start_election();
        self.send_heartbeat(now);
    }
}
