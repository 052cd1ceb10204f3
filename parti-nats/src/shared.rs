//! What the store and its watches share: the client and settings ([`Inner`]), one deadline per
//! call, and the NATS KV wire conventions (subjects, headers, key syntax, the leader's last
//! matching revision). `store` and `watch` both use this module and not each other's insides.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_nats::Client;
use async_nats::jetstream::{self, kv, stream::LastRawMessageErrorKind};
use parti_core::store::KvError;
use tokio::time::Instant;

use crate::config::NatsStoreConfig;
use crate::connection::ConnectionHub;
use crate::error;

/// The header NATS KV uses to mark deletes and purges.
pub(crate) const KV_OPERATION: &str = "KV-Operation";
/// The header of server-written limit markers (per-message TTL, max age with markers).
pub(crate) const MARKER_REASON: &str = "Nats-Marker-Reason";

/// The state behind a [`crate::NatsStore`] and its watches.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: NatsStoreConfig,
    /// Opened buckets. Shared handles: a `kv::Store` carries the whole stream info, too big
    /// to clone on every operation.
    pub(crate) buckets: RwLock<HashMap<String, Arc<kv::Store>>>,
    /// Connection state transitions, queued per reader.
    pub(crate) conn: Arc<ConnectionHub>,
}

/// Runs `fut` until `deadline`: [`KvError::Timeout`] after it. Every public operation takes one
/// deadline when it starts and runs all its steps under it, so the operation timeout bounds the
/// whole call, not each step.
pub(crate) async fn until<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| KvError::Timeout)?
}

/// Checks a key against the NATS KV key syntax (`[-/_=.a-zA-Z0-9]+`, no leading or trailing
/// `.`), before it becomes part of a subject.
pub(crate) fn validate_key(key: &str) -> Result<(), KvError> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(KvError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

/// The subject of a key: `$KV.<bucket>.<key>`.
pub(crate) fn subject(bucket: &str, key: &str) -> Result<String, KvError> {
    validate_key(key)?;
    Ok(format!("$KV.{bucket}.{key}"))
}

/// The name of a bucket's stream.
pub(crate) fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The widest subject filter that a key prefix can use: NATS wildcards match whole tokens, so
/// `w.` becomes `$KV.b.w.>`, `w.ab` also `$KV.b.w.>` (refined on the client), `worker-` the
/// whole bucket.
pub(crate) fn prefix_filter(bucket: &str, prefix: &str) -> String {
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'='))
    };
    match prefix.rfind('.') {
        Some(dot) if prefix[..dot].split('.').all(token_ok) => {
            format!("$KV.{bucket}.{}.>", &prefix[..dot])
        }
        _ => format!("$KV.{bucket}.>"),
    }
}

/// Whether a message's headers mark a delete, a purge or a server-written limit marker.
pub(crate) fn is_removal(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers.is_some_and(|h| h.get(KV_OPERATION).is_some() || h.get(MARKER_REASON).is_some())
}

/// The revision of the last message matching `filter`, asked of the stream leader (0 if no
/// message matches). A consumer may live on a follower that lags behind the leader; a snapshot
/// or a listing is complete only once it has seen this revision.
pub(crate) async fn last_matching(
    stream: &jetstream::stream::Stream,
    bucket: &str,
    filter: &str,
) -> Result<u64, KvError> {
    match stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(message.sequence),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(err) => Err(error::last_message(bucket, err)),
    }
}

/// The largest [`last_matching`] revision over several filters (asked together).
pub(crate) async fn last_matching_any(
    stream: &jetstream::stream::Stream,
    bucket: &str,
    filters: &[String],
) -> Result<u64, KvError> {
    let each = futures::future::join_all(
        filters
            .iter()
            .map(|filter| last_matching(stream, bucket, filter)),
    )
    .await;
    let mut last = 0;
    for revision in each {
        last = last.max(revision?);
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_nats_syntax() {
        for good in ["a", "w.worker-7", "x/y=z_1", "A.b.C"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "*", ">", "a.*", "é"] {
            assert_eq!(
                validate_key(bad),
                Err(KvError::InvalidKey { key: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prefixes_become_token_filters() {
        assert_eq!(prefix_filter("b", ""), "$KV.b.>");
        assert_eq!(prefix_filter("b", "w."), "$KV.b.w.>");
        assert_eq!(prefix_filter("b", "w.ab"), "$KV.b.w.>");
        assert_eq!(prefix_filter("b", "a.b.c"), "$KV.b.a.b.>");
        assert_eq!(prefix_filter("b", "worker-"), "$KV.b.>");
        assert_eq!(prefix_filter("b", "*.x"), "$KV.b.>");
        assert_eq!(prefix_filter("b", ".x"), "$KV.b.>");
    }
}
