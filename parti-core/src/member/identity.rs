//! Identity: claim, renew, loss and reclaim (PROTOCOL.md §3).
//!
//! Claim: list the ids bucket once; try the preferred number first (taking it over by
//! compare-and-set if its claim says `restarting_until` in the future), then the lowest free
//! number; `create` it. On "already exists" re-list and try the next. Pool exhausted: retry with
//! backoff until the startup timeout. Renew every `identity_ttl / 3` by compare-and-set; a
//! failed renewal is followed by a re-read: a claim of our instance is ours (adopt its
//! revision), anything else means the id is lost — fence at once and claim again.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Member, Notification, Op, Phase, Timer};
use crate::config::{DisconnectPolicy, ValidConfig};
use crate::machine::{Backoff, KvReply, KvRequest, KvResult};
use crate::records::Record;
use crate::records::{Heartbeat, IdClaim, Intent};
use crate::store::{KvEntry, KvError};
use crate::types::{Revision, WorkerId};

use super::types::MemberError;

/// The id this member holds.
#[derive(Clone, Debug)]
pub(super) struct Claimed {
    pub(super) id: WorkerId,
    pub(super) revision: Revision,
    pub(super) claimed_at_ms: u64,
    /// Local end of the claim's validity: send time of the last successful write of the claim
    /// plus 90 % of `identity_ttl` (the store cannot expire it earlier than the full ttl).
    pub(super) valid_until: Instant,
    /// The validity lapsed: the id may be someone else's now. Nothing is done under it (no
    /// heartbeat, no record applied) until a renewal confirms it.
    pub(super) suspect: bool,
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
    backoff: Backoff,
}

impl Claim {
    pub(super) fn new(config: &ValidConfig, seed: u64, now: Instant) -> Self {
        Claim {
            taken: BTreeSet::new(),
            tried_preferred: false,
            exhausted: false,
            deadline: now + config.startup_timeout,
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
        self.claim.deadline = now + self.config.startup_timeout;
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
                        // First read what the previous process had applied (its last
                        // heartbeat), then take the claim over.
                        let request = KvRequest::Entry {
                            bucket: self.names.heartbeats_bucket(),
                            key: entry.key.clone(),
                        };
                        self.kv(
                            Op::ReadInheritedHeartbeat {
                                number,
                                revision: entry.revision,
                            },
                            request,
                        );
                    }
                    // Undecodable counts as absent: `create` decides (it fails if the key lives).
                    None => self.create_id(now, number),
                    Some(_) => self.try_next_id(now),
                }
            }
            _ => self.try_next_id(now),
        }
    }

    /// The previous process's last heartbeat: if it announced a restart, the version it had
    /// applied is inherited (see `Apply::inherited`).
    pub(super) fn on_inherited_heartbeat_read(
        &mut self,
        now: Instant,
        number: u32,
        revision: Revision,
        result: KvResult,
    ) {
        if self.phase != Phase::Claiming {
            return;
        }
        self.apply.inherited = match result {
            Ok(KvReply::Entry(Some(e))) => {
                let bucket = self.names.heartbeats_bucket();
                self.decode::<Heartbeat>(&bucket, &e.key, &e.value)
                    .filter(|hb| hb.intent == Intent::Restarting)
                    .map(|hb| hb.applied)
            }
            _ => None,
        };
        let Some(id) = self.id_of(number) else { return };
        let entry = KvEntry {
            key: id.to_string(),
            value: Vec::new(),
            revision,
        };
        self.take_over(now, number, &entry);
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

    pub(super) fn on_id_taken_over(
        &mut self,
        now: Instant,
        number: u32,
        claimed_at_ms: u64,
        sent_at: Instant,
        result: KvResult,
    ) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Written(revision)) => {
                self.claimed(now, number, revision, claimed_at_ms, sent_at);
            }
            Err(KvError::Timeout) => self.read_id_after_create(number, sent_at),
            _ => {
                self.claim.taken.insert(number);
                self.list_ids();
            }
        }
    }

    pub(super) fn on_id_created(
        &mut self,
        now: Instant,
        number: u32,
        claimed_at_ms: u64,
        sent_at: Instant,
        result: KvResult,
    ) {
        if self.phase != Phase::Claiming {
            return;
        }
        match result {
            Ok(KvReply::Written(revision)) => {
                self.claimed(now, number, revision, claimed_at_ms, sent_at);
            }
            Err(KvError::AlreadyExists) => {
                self.claim.taken.insert(number);
                self.list_ids();
            }
            // Unknown outcome: re-read before trying anything else.
            Err(KvError::Timeout) => self.read_id_after_create(number, sent_at),
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
        let at = now + self.claim.backoff.next_delay();
        self.timers
            .set(Timer::ClaimRetry, at.min(self.claim.deadline));
    }

    pub(super) fn on_claim_retry(&mut self, now: Instant) {
        if self.phase != Phase::Claiming {
            return;
        }
        if now >= self.claim.deadline {
            return self.fail_claim(now);
        }
        // A new pass: ids may have expired since.
        self.claim.taken.clear();
        self.claim.tried_preferred = false;
        self.list_ids();
    }

    pub(super) fn fail_claim(&mut self, _now: Instant) {
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
        let valid_until = sent_at + self.identity_validity();
        self.identity = Some(Claimed {
            id: id.clone(),
            revision,
            claimed_at_ms,
            valid_until,
            suspect: false,
        });
        self.timers.set(Timer::IdentityLapse, valid_until);
        self.phase = Phase::Member;
        self.notify(Notification::IdentityClaimed { worker: id.clone() });
        self.timers
            .set(Timer::RenewId, now + self.config.identity_renew_interval());
        self.start_assignment_watch(now, &id);
        self.start_election(now);
        self.send_heartbeat(now);
    }

    /// How long a claim is trusted after the send time of its last successful write.
    fn identity_validity(&self) -> std::time::Duration {
        self.config.identity_ttl - self.config.identity_ttl / 10
    }

    pub(super) fn renew_id(&mut self, now: Instant) {
        let Some(c) = self.identity.clone() else {
            return;
        };
        if self.phase != Phase::Member && self.phase != Phase::Leaving {
            return;
        }
        if self
            .ops
            .values()
            .any(|o| matches!(o, Op::RenewId { .. } | Op::ReadIdAfterRenew))
        {
            return;
        }
        let value = IdClaim {
            instance: self.instance,
            claimed_at_ms: c.claimed_at_ms,
            restarting_until_ms: None,
        }
        .encode();
        let request = KvRequest::Update {
            bucket: self.names.ids_bucket(),
            key: c.id.to_string(),
            value,
            expected: c.revision,
        };
        self.kv(Op::RenewId { sent_at: now }, request);
    }

    pub(super) fn on_id_renewed(&mut self, now: Instant, sent_at: Instant, result: KvResult) {
        match result {
            Ok(KvReply::Written(revision)) => {
                let validity = self.identity_validity();
                let Some(c) = self.identity.as_mut() else {
                    return;
                };
                c.revision = revision;
                c.valid_until = c.valid_until.max(sent_at + validity);
                let (valid_until, was_suspect) = (c.valid_until, c.suspect);
                c.suspect = false;
                self.timers.set(Timer::IdentityLapse, valid_until);
                self.timers
                    .set(Timer::RenewId, now + self.config.identity_renew_interval());
                if was_suspect {
                    // Confirmed ours again: take the record that waited, announce ourselves.
                    self.on_identity_confirmed(now);
                    self.send_heartbeat(now);
                }
            }
            _ => {
                // A conflict may be our own earlier renewal that landed late: re-read.
                let Some(c) = self.identity.as_ref() else {
                    return;
                };
                let request = KvRequest::Entry {
                    bucket: self.names.ids_bucket(),
                    key: c.id.to_string(),
                };
                self.kv(Op::ReadIdAfterRenew, request);
            }
        }
    }

    pub(super) fn on_id_read_after_renew(&mut self, now: Instant, result: KvResult) {
        match result {
            Ok(KvReply::Entry(Some(entry))) => {
                let bucket = self.names.ids_bucket();
                match self.decode::<IdClaim>(&bucket, &entry.key, &entry.value) {
                    Some(c) if c.instance == self.instance => {
                        if let Some(mine) = self.identity.as_mut() {
                            mine.revision = entry.revision;
                        }
                        self.renew_id(now);
                    }
                    _ => self.identity_lost(now),
                }
            }
            Ok(_) => self.identity_lost(now),
            Err(_) => {
                let at = now + self.claim.backoff.next_delay();
                self.timers.set(Timer::RenewId, at);
            }
        }
    }

    /// The claim was not confirmed for 90 % of `identity_ttl`: it may have expired and been taken.
    /// Revoke everything locally (policy `Fence`), act no more under the id (no heartbeat, no
    /// record applied), and try to confirm it at once.
    pub(super) fn on_identity_lapse(&mut self, now: Instant) {
        let Some(c) = self.identity.as_mut() else {
            return;
        };
        if now < c.valid_until || c.suspect {
            return;
        }
        c.suspect = true;
        // Under `Hold` the cached assignment is kept through the outage (no exclusivity is
        // promised meanwhile); nothing is done under the id until it is confirmed.
        if self.config.on_disconnect == DisconnectPolicy::Fence {
            self.fence(now);
        }
        self.renew_id(now);
    }

    /// Whether the claim is trusted now.
    pub(super) fn identity_trusted(&self) -> bool {
        self.identity.as_ref().is_some_and(|c| !c.suspect)
    }

    /// The id belongs to someone else now: revoke everything locally, stop acting under the id,
    /// and claim again.
    pub(super) fn identity_lost(&mut self, now: Instant) {
        let Some(lost) = self.identity.take() else {
            return;
        };
        self.notify(Notification::IdentityLost {
            worker: lost.id.clone(),
        });
        self.fence(now);
        self.step_down(now, true);
        self.stop_election(now);
        self.stop_assignment_watch(Some(lost.id));
        self.beat.last_acked = None;
        for t in [
            Timer::RenewId,
            Timer::IdentityLapse,
            Timer::Heartbeat,
            Timer::Fence,
        ] {
            self.timers.stop(t);
        }
        // Answers to operations made under the old id mean nothing now; whatever waited for
        // one starts afresh under the new id.
        self.ops.retain(|_, op| matches!(op, Op::DropLeader));
        self.new_fence_round();
        self.apply.suspect_held = None;
        self.reset_degraded_exit(now);
        if self.phase == Phase::Member {
            self.begin_claim(now);
        } else {
            // Leaving or restarting without an id: nothing left to hand over or release.
            self.phase = Phase::Stopped;
            self.timers.clear();
            self.notify(Notification::Stopped);
        }
    }
}
