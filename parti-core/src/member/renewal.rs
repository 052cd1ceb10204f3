//! Keeping the id (PROTOCOL.md §3): compare-and-set renewal every `identity_ttl / 3`; a failed
//! renewal is followed by a re-read — a claim of our instance is ours (adopt its revision),
//! anything else means the id is lost: fence at once and claim again. The claim is trusted
//! only for 90 % of `identity_ttl` after its last successful write (then it is *suspect*).

use std::time::Instant;

use super::{Member, Notification, Op, Phase, Timer};
use crate::config::DisconnectPolicy;
use crate::machine::later;
use crate::machine::{KvReply, KvRequest, KvResult};
use crate::records::{IdClaim, Record};

impl Member {
    /// How long a claim is trusted after the send time of its last successful write.
    pub(super) fn identity_validity(&self) -> std::time::Duration {
        self.config.identity_ttl - self.config.identity_ttl / 10
    }

    pub(super) fn renew_id(&mut self, now: Instant) {
        let Some(c) = self.identity.clone() else {
            return;
        };
        // A restarting member keeps its claim until it rewrites it for the next process.
        let holding = match self.phase {
            Phase::Member | Phase::Leaving => true,
            Phase::Restarting => !c.is_handed_over(),
            _ => false,
        };
        if !holding {
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
            claimed_at_ms: c.claimed_at_ms(),
            restarting_until_ms: None,
        }
        .encode();
        let request = KvRequest::Update {
            bucket: self.names.ids_bucket(),
            key: c.id().to_string(),
            value,
            expected: c.revision(),
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
                let (valid_until, was_suspect) = c.renewed(revision, later(sent_at, validity));
                self.timers.set(Timer::IdentityLapse, valid_until);
                self.timers.set(
                    Timer::RenewId,
                    later(now, self.config.identity_renew_interval()),
                );
                if was_suspect {
                    // Confirmed ours again: take the record that waited, announce ourselves,
                    // stand again (a candidate timer may have passed meanwhile).
                    self.on_identity_confirmed();
                    self.send_heartbeat(now);
                    if self.election.watch().is_some() {
                        self.stand(now);
                    }
                }
            }
            _ => {
                // A conflict may be our own earlier renewal that landed late: re-read.
                let Some(c) = self.identity.as_ref() else {
                    return;
                };
                let request = KvRequest::Entry {
                    bucket: self.names.ids_bucket(),
                    key: c.id().to_string(),
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
                            mine.adopt_revision(entry.revision);
                        }
                        self.renew_id(now);
                    }
                    _ => self.identity_lost(now),
                }
            }
            Ok(_) => self.identity_lost(now),
            Err(_) => {
                self.retries.other += 1;
                let at = later(now, self.claim.backoff.next_delay());
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
        if !c.lapse(now) {
            return;
        }
        // Under `Hold` the cached assignment is kept through the outage (no exclusivity is
        // promised meanwhile); nothing is done under the id until it is confirmed — leading
        // included. A restarting member has revoked everything for good already, and its
        // heartbeat must keep saying `Restarting`.
        if self.config.on_disconnect == DisconnectPolicy::Fence && self.phase != Phase::Restarting {
            self.fence(now);
        }
        self.step_down(now, true);
        self.renew_id(now);
    }

    /// Whether the claim is trusted now.
    pub(super) fn identity_trusted(&self) -> bool {
        self.identity.as_ref().is_some_and(|c| !c.is_suspect())
    }

    /// The id belongs to someone else now: revoke everything locally, stop acting under the id,
    /// and claim again.
    pub(super) fn identity_lost(&mut self, now: Instant) {
        let Some(lost) = self.identity.take() else {
            return;
        };
        self.notify(Notification::IdentityLost {
            worker: lost.id().clone(),
        });
        self.fence(now);
        self.step_down(now, true);
        self.stop_election();
        self.stop_assignment_watch();
        self.beat.forget_acknowledgement();
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
        self.apply.new_fence_round();
        self.apply.forget_suspect();
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
