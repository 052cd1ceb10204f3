//! Provisioning: a bucket created, or checked against its [`BucketSpec`], and ready for
//! writes before [`KvStore::provision`](parti_core::store::KvStore::provision) returns.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use parti_core::store::{BucketSpec, KvError, OnMismatch, Provisioned, StorageKind};
use tokio::time::Instant;

use crate::error;
use crate::shared;
use crate::store::NatsStore;

/// The key of the refused probe write with which provisioning checks that a bucket's
/// stream answers writes (it expects a revision the key cannot have, so nothing is stored).
const PROBE_KEY: &str = "parti-provision-probe";

/// The longest one JetStream API request of a provisioning call waits for its answer before
/// it is asked again (see [`NatsStore::attempt_end`]): a quarter of the operation timeout, at
/// least a second.
fn attempt_bound(op_timeout: Duration) -> Duration {
    (op_timeout / 4).max(Duration::from_secs(1))
}

/// A request's fate within its part of the budget.
enum Answer<T> {
    /// It answered.
    Got(T),
    /// No answer within its part of the budget; there is budget left to ask again.
    Lost,
}

/// What a request whose answer was lost may have done, so that a later look-up that finds it
/// done reports it as this call's work.
enum InDoubt {
    Nothing,
    Create,
    Update(Vec<(String, String, String)>),
}

impl NatsStore {
    /// When a request sent now stops waiting for its answer: after [`attempt_bound`], never
    /// past the call's `deadline`. An answer can be lost — a connection replaced while it was
    /// on its way, a JetStream meta leader elected again under it — and every request of a
    /// provisioning call is idempotent (a look-up; a create or an update with the same
    /// configuration answers as the first one did; a refused probe write), so asking again
    /// costs a round trip where waiting would cost the whole budget.
    fn attempt_end(&self, deadline: Instant) -> Instant {
        (Instant::now() + attempt_bound(self.inner.config.op_timeout)).min(deadline)
    }

    /// Runs one request until [`NatsStore::attempt_end`].
    async fn ask<F: Future>(
        &self,
        deadline: Instant,
        request: F,
    ) -> Result<Answer<F::Output>, KvError> {
        match tokio::time::timeout_at(self.attempt_end(deadline), request).await {
            Ok(answer) => Ok(Answer::Got(answer)),
            Err(_) if Instant::now() >= deadline => Err(KvError::Timeout),
            Err(_) => Ok(Answer::Lost),
        }
    }

    /// Creates, checks or reconciles the bucket, then waits until it takes writes; all before
    /// `deadline`.
    pub(crate) async fn provision_inner(
        &self,
        spec: &BucketSpec,
        on_mismatch: OnMismatch,
        deadline: Instant,
    ) -> Result<Provisioned, KvError> {
        let wanted = kv_config(spec);
        let stream_name = shared::stream_name(&spec.name);
        let mut last_err = None;
        // A refused create (`Unavailable`: no stream was made, e.g. a peer counted offline for
        // a moment) is sent again after a pause, until the deadline; so is any request whose
        // answer did not come within its part of the budget. A concurrent provisioner creating
        // the bucket between our look-up and our create costs one more turn (two at most).
        let mut pause = Duration::from_millis(50);
        let mut conflicts = 0;
        let mut in_doubt = InDoubt::Nothing;
        while conflicts < 2 {
            let looked_up = match self
                .ask(deadline, self.inner.js.get_stream(&stream_name))
                .await?
            {
                Answer::Got(looked_up) => looked_up,
                Answer::Lost => {
                    tracing::debug!(bucket = %spec.name, "bucket look-up unanswered; asking again");
                    continue;
                }
            };
            let existing = match looked_up {
                Ok(stream) => Some(stream.cached_info().config.clone()),
                Err(err) => match error::get_stream(&spec.name, &err) {
                    KvError::BucketNotFound { .. } => None,
                    other => return Err(other),
                },
            };
            let Some(existing) = existing else {
                let created = match self
                    .ask(deadline, self.inner.js.create_key_value(wanted.clone()))
                    .await?
                {
                    Answer::Got(created) => created,
                    Answer::Lost => {
                        tracing::debug!(bucket = %spec.name, "bucket create unanswered; looking again");
                        in_doubt = InDoubt::Create;
                        continue;
                    }
                };
                match created {
                    Ok(store) => {
                        self.remember(&spec.name, store);
                        self.wait_until_writable(&spec.name, deadline).await?;
                        return Ok(Provisioned::Created);
                    }
                    Err(err) => {
                        let err = error::create_bucket(err);
                        match err {
                            KvError::Unavailable { .. } => {
                                if Instant::now() + pause >= deadline {
                                    return Err(err);
                                }
                                tracing::debug!(bucket = %spec.name, error = %err, "bucket create refused; trying again");
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(1));
                            }
                            KvError::Timeout => return Err(err),
                            _ => {
                                tracing::debug!(bucket = %spec.name, error = %err, "bucket create failed; checking again");
                                in_doubt = InDoubt::Nothing;
                                conflicts += 1;
                            }
                        }
                        last_err = Some(err);
                        continue;
                    }
                }
            };
            let changes = differences(spec, &existing);
            if changes.is_empty() {
                let opened = match self
                    .ask(deadline, self.inner.js.get_key_value(&spec.name))
                    .await?
                {
                    Answer::Got(opened) => opened,
                    Answer::Lost => continue,
                };
                let store = opened.map_err(|e| error::open_bucket(&spec.name, e))?;
                self.remember(&spec.name, store);
                self.wait_until_writable(&spec.name, deadline).await?;
                // A create or an update of ours whose answer was lost, found done: ours.
                return Ok(match in_doubt {
                    InDoubt::Nothing => Provisioned::Existing,
                    InDoubt::Create => Provisioned::Created,
                    InDoubt::Update(changes) => Provisioned::Reconciled { changes },
                });
            }
            return match on_mismatch {
                OnMismatch::Fail => {
                    let (field, existing, wanted) = changes
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| ("config".into(), "?".into(), "?".into()));
                    Err(KvError::BucketMismatch {
                        bucket: spec.name.clone(),
                        field,
                        existing,
                        wanted,
                    })
                }
                OnMismatch::Reconcile => {
                    tracing::warn!(bucket = %spec.name, ?changes, "reconciling bucket configuration");
                    let updated = match self
                        .ask(deadline, self.inner.js.update_key_value(wanted.clone()))
                        .await?
                    {
                        Answer::Got(updated) => updated,
                        Answer::Lost => {
                            tracing::debug!(bucket = %spec.name, "bucket update unanswered; looking again");
                            in_doubt = InDoubt::Update(changes);
                            continue;
                        }
                    };
                    let store = updated.map_err(|e| error::update_bucket(&spec.name, e))?;
                    self.remember(&spec.name, store);
                    self.wait_until_writable(&spec.name, deadline).await?;
                    Ok(Provisioned::Reconciled { changes })
                }
            };
        }
        Err(last_err.unwrap_or_else(|| KvError::Unavailable {
            reason: format!(
                "bucket {:?} could neither be created nor found (concurrent provisioning?)",
                spec.name
            ),
        }))
    }

    /// Waits until the bucket's stream answers a write sent through this client's server, so
    /// that a caller's first write after provisioning does not meet "no responders": a new
    /// replicated stream needs a leader, and its subjects' interest must reach the server the
    /// client is connected to. The probe is a write that is certainly refused (it expects a
    /// revision its key cannot have), so nothing is stored; any answer from the stream will do.
    /// Bounded by the provisioning call's deadline: past it, the bucket exists but
    /// [`KvError::Unavailable`] says it does not take writes yet.
    async fn wait_until_writable(&self, bucket: &str, deadline: Instant) -> Result<(), KvError> {
        let subject = shared::subject(bucket, PROBE_KEY)?;
        let mut pause = Duration::from_millis(2);
        let mut last_refusal = None;
        loop {
            let probe = jetstream::message::PublishMessage::build()
                .expected_last_subject_sequence(u64::MAX);
            // Each probe waits a part of the budget: a lost answer is asked again.
            let sent =
                tokio::time::timeout_at(self.attempt_end(deadline), self.send(&subject, probe))
                    .await;
            match sent {
                // Stored after all (it cannot be: the key's last revision is never u64::MAX).
                Ok(Ok(Ok(_))) => return Ok(()),
                // No responders / a write in flight: nobody answered yet.
                Ok(Ok(Err(refused))) => last_refusal = Some(refused),
                // The stream answered: refused for the wrong revision, as intended.
                Ok(Err(KvError::RevisionMismatch { .. })) => return Ok(()),
                Ok(Err(other)) if !other.is_connectivity() => return Ok(()),
                Ok(Err(other)) => last_refusal = Some(other),
                Err(_) => {}
            }
            if Instant::now() + pause >= deadline {
                let why = last_refusal.map_or_else(|| "no answer".to_owned(), |e| e.to_string());
                return Err(KvError::Unavailable {
                    reason: format!(
                        "bucket {bucket:?} exists but its stream did not answer a write within \
                         the operation timeout ({why}); provision again"
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

fn kv_config(spec: &BucketSpec) -> kv::Config {
    kv::Config {
        bucket: spec.name.clone(),
        history: i64::from(spec.history.max(1)),
        max_age: spec.max_age.unwrap_or(Duration::ZERO),
        num_replicas: spec.replicas.max(1),
        storage: match spec.storage {
            StorageKind::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        ..Default::default()
    }
}

/// The spec a bucket's stream has, in the port's terms.
fn existing_spec(name: &str, existing: &jetstream::stream::Config) -> BucketSpec {
    BucketSpec {
        name: name.to_owned(),
        history: u8::try_from(existing.max_messages_per_subject.max(1)).unwrap_or(u8::MAX),
        max_age: (!existing.max_age.is_zero()).then_some(existing.max_age),
        replicas: existing.num_replicas.max(1),
        storage: match existing.storage {
            StorageType::Memory => StorageKind::Memory,
            StorageType::File => StorageKind::File,
        },
    }
}

/// What differs between a bucket's stream and the spec: `(field, existing, wanted)`, as
/// [`BucketSpec::mismatches`] says it (the same words as every other store).
fn differences(
    spec: &BucketSpec,
    existing: &jetstream::stream::Config,
) -> Vec<(String, String, String)> {
    let wanted = BucketSpec {
        history: spec.history.max(1),
        replicas: spec.replicas.max(1),
        ..spec.clone()
    };
    existing_spec(&spec.name, existing).mismatches(&wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let spec = BucketSpec {
            name: "b".into(),
            history: 1,
            max_age: Some(Duration::from_secs(10)),
            replicas: 1,
            storage: StorageKind::File,
        };
        let mut existing = jetstream::stream::Config {
            max_age: Duration::from_secs(10),
            max_messages_per_subject: 1,
            num_replicas: 1,
            storage: StorageType::File,
            ..Default::default()
        };
        assert!(differences(&spec, &existing).is_empty());
        existing.max_age = Duration::from_secs(20);
        existing.max_messages_per_subject = 5;
        let changes = differences(&spec, &existing);
        assert_eq!(changes[0], ("max_age".into(), "20s".into(), "10s".into()));
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1], ("history".into(), "5".into(), "1".into()));
    }
}
