//! Every async-nats error, mapped onto [`KvError`] here and nowhere else (STYLE.md §10).
//!
//! The rules:
//!
//! - a **timeout** of any kind (publish ack, API request, direct get, consumer creation) is
//!   [`KvError::Timeout`]: for a write the outcome is unknown;
//! - a write whose bytes may have left before the connection broke (`BrokenPipe`: sent, then
//!   the reply channel closed) is [`KvError::Timeout`] too: its outcome is unknown;
//! - **no responders**, a stream without leader, or a connection that was down before anything
//!   was sent is [`KvError::Unavailable`];
//! - `wrong last sequence` (10071) is [`KvError::RevisionMismatch`], with the sequence the server
//!   names; its clustered variant without a number (10164, another write to the key still in
//!   flight) is a mismatch with no current revision;
//! - stream not found (10059) when opening a bucket is [`KvError::BucketNotFound`];
//! - an invalid key or subject is [`KvError::InvalidKey`];
//! - anything else is [`KvError::Backend`], keeping the async-nats error as its source.
//!
//! Wrapper errors (`Other`, `Request`, `Publish`, …) are classified by walking their source
//! chain, so a timeout buried under a generic kind is still a timeout.

use std::error::Error as StdError;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind, KeyValueErrorKind,
    PublishError, PublishErrorKind, RequestError, RequestErrorKind, UpdateKeyValueErrorKind,
};
use async_nats::jetstream::stream::{ConsumerErrorKind, LastRawMessageErrorKind};
use parti_core::store::{BackendError, KvError};
use parti_core::types::Revision;

/// Why [`crate::NatsStore`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client could not connect.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// The server is older than parti supports, or did not announce a version.
    #[error(
        "NATS server version {found:?} is not supported: parti needs nats-server {minimum} or \
         newer (older servers cannot create its buckets and silently ignore multiple consumer \
         filters)"
    )]
    UnsupportedServer {
        /// The version the server announced (empty if none).
        found: String,
        /// The oldest supported version.
        minimum: &'static str,
    },
    /// The server does not have JetStream enabled.
    #[error("NATS server {version} does not have JetStream enabled (start it with -js)")]
    JetStreamDisabled {
        /// The server's version.
        version: String,
    },
}

/// The oldest supported server version.
pub(crate) const MIN_SERVER: (u64, u64) = (2, 10);

/// Checks an announced server version against [`MIN_SERVER`].
pub(crate) fn check_server_version(version: &str) -> Result<(), ConnectError> {
    let refuse = || ConnectError::UnsupportedServer {
        found: version.to_owned(),
        minimum: "2.10",
    };
    let core = version.trim_start_matches('v');
    let mut parts = core.split(['.', '-']);
    let major: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(refuse)?;
    let minor: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(refuse)?;
    if (major, minor) < MIN_SERVER {
        return Err(refuse());
    }
    Ok(())
}

fn backend(err: impl StdError + Send + Sync + 'static) -> KvError {
    KvError::Backend(BackendError::new(err))
}

/// The revision in a server message `wrong last sequence: N` (10071), if any.
pub(crate) fn wrong_last_sequence(message: &str) -> Option<u64> {
    let rest = message.split("wrong last sequence: ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Walks an error's source chain for something that says "timed out" or "unavailable".
fn classify_chain(err: &(dyn StdError + 'static)) -> Option<KvError> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(req) = e.downcast_ref::<RequestError>() {
            match req.kind() {
                RequestErrorKind::TimedOut => return Some(KvError::Timeout),
                RequestErrorKind::NoResponders => {
                    return Some(KvError::Unavailable {
                        reason: "no responders (JetStream unavailable or no stream leader)".into(),
                    });
                }
                _ => {}
            }
        }
        if let Some(req) = e.downcast_ref::<async_nats::RequestError>() {
            match req.kind() {
                async_nats::RequestErrorKind::TimedOut => return Some(KvError::Timeout),
                async_nats::RequestErrorKind::NoResponders => {
                    return Some(KvError::Unavailable {
                        reason: "no responders".into(),
                    });
                }
                _ => {}
            }
        }
        if let Some(publish) = e.downcast_ref::<PublishError>()
            && let Some(mapped) = publish_kind(publish)
        {
            return Some(mapped);
        }
        if let Some(js) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(jetstream_api(js));
        }
        // Creating a bucket wraps the stream creation's error, whose JetStream API error is in
        // its kind, not in its source (10005 "peer offline" came this way on a 3-node cluster).
        if let Some(create) = e.downcast_ref::<async_nats::jetstream::context::CreateStreamError>()
            && let CreateStreamErrorKind::JetStream(js) = create.kind()
        {
            return Some(jetstream_api(&js));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Some(KvError::Timeout);
        }
        current = e.source();
    }
    None
}

/// A JetStream API error response.
fn jetstream_api(err: &async_nats::jetstream::Error) -> KvError {
    let code = err.error_code();
    if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE {
        return mismatch_from_message(&err.to_string());
    }
    // 10164: a clustered stream leader refuses an expected-sequence write while another write
    // to the same subject is still being replicated. A conflict, current revision unknown.
    if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT {
        return KvError::RevisionMismatch { current: None };
    }
    if code == ErrorCode::STREAM_NOT_FOUND {
        return KvError::Unavailable {
            reason: format!("stream not found: {err}"),
        };
    }
    // 10054: the stream's own maximum message size (the bucket's max value size).
    if code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM {
        return KvError::ValueTooLarge {
            size: None,
            limit: None,
        };
    }
    // 503: JetStream not enabled / temporarily unavailable (no leader, cluster recovering).
    if code == ErrorCode::JETSTREAM_NOT_ENABLED
        || code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
        || code == ErrorCode::CLUSTER_NOT_AVAILABLE
        || code == ErrorCode::STREAM_OFFLINE
        // 10005 "no suitable peers for placement, peer offline": the meta leader counts a peer
        // offline for a moment (seen on a healthy 3-node cluster under load); nothing was
        // created. Permanent only if the cluster has fewer nodes than replicas, which the
        // message says.
        || code == ErrorCode::CLUSTER_NO_PEERS
        || err.code() == 503
    {
        return KvError::Unavailable {
            reason: err.to_string(),
        };
    }
    backend(err.clone())
}

fn mismatch_from_message(message: &str) -> KvError {
    KvError::RevisionMismatch {
        current: wrong_last_sequence(message)
            .filter(|seq| *seq > 0)
            .map(Revision),
    }
}

/// The mapping of publish kinds that carry meaning by themselves.
fn publish_kind(err: &PublishError) -> Option<KvError> {
    Some(match err.kind() {
        PublishErrorKind::TimedOut => KvError::Timeout,
        PublishErrorKind::WrongLastSequence => {
            let message = err.source().map(ToString::to_string).unwrap_or_default();
            mismatch_from_message(&message)
        }
        PublishErrorKind::StreamNotFound => KvError::Unavailable {
            reason: "no responders: the bucket's stream does not exist or has no leader".into(),
        },
        // The message was handed to the connection, then the reply channel closed (the
        // connection dropped): the bytes may have reached the server and the write may be
        // applied, now or when async-nats replays it after reconnecting. An unknown outcome,
        // which the port calls a timeout — never `Unavailable`, which callers may read as
        // "certainly not applied".
        PublishErrorKind::BrokenPipe => KvError::Timeout,
        PublishErrorKind::MaxAckPending => KvError::Unavailable {
            reason: "too many writes awaiting acknowledgement".into(),
        },
        // Refused by the client before sending (it knows the server's `max_payload`): nothing
        // was written.
        PublishErrorKind::MaxPayloadExceeded => {
            let message = err.source().map(ToString::to_string).unwrap_or_default();
            let (limit, size) = payload_sizes(&message);
            KvError::ValueTooLarge { size, limit }
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::Other => return None,
    })
}

/// `(limit, size)` from async-nats' "Payload size limit of {limit} exceeded by message size of
/// {size}"; `None` where the message says otherwise.
fn payload_sizes(message: &str) -> (Option<usize>, Option<usize>) {
    let numbers: Vec<usize> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    match numbers.as_slice() {
        [limit, size] if message.starts_with("Payload size limit of") => {
            (Some(*limit), Some(*size))
        }
        _ => (None, None),
    }
}

/// Whether a publish was refused because another write to the same key was still in flight on
/// a clustered stream (10164): a definite refusal, safe to send again.
pub(crate) fn is_in_flight_conflict(err: &PublishError) -> bool {
    err.kind() == PublishErrorKind::Other
        && err
            .source()
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|js| js.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}

/// A JetStream publish (put, create, update, delete).
pub(crate) fn publish(err: PublishError) -> KvError {
    if let Some(mapped) = publish_kind(&err) {
        return mapped;
    }
    if let Some(mapped) = err.source().and_then(classify_chain) {
        return mapped;
    }
    backend(err)
}

/// A read of the last message of a key, through the stream leader.
pub(crate) fn last_message(
    bucket: &str,
    err: async_nats::jetstream::stream::LastRawMessageError,
) -> KvError {
    match err.kind() {
        LastRawMessageErrorKind::InvalidSubject => KvError::InvalidKey { key: String::new() },
        // The bucket was deleted, or lost with a memory-storage server's restart.
        LastRawMessageErrorKind::JetStream(js)
            if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
        {
            KvError::BucketNotFound {
                bucket: bucket.to_owned(),
            }
        }
        LastRawMessageErrorKind::JetStream(js) => jetstream_api(&js),
        LastRawMessageErrorKind::NoMessageFound | LastRawMessageErrorKind::Other => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// Opening a bucket.
pub(crate) fn open_bucket(
    bucket: &str,
    err: async_nats::jetstream::context::KeyValueError,
) -> KvError {
    match err.kind() {
        KeyValueErrorKind::InvalidStoreName => KvError::Backend(BackendError::msg(format!(
            "invalid bucket name {bucket:?} (allowed: [A-Za-z0-9_-]+)"
        ))),
        KeyValueErrorKind::GetBucket | KeyValueErrorKind::JetStream => {
            if let Some(source) = err.source()
                && let Some(get) =
                    source.downcast_ref::<async_nats::jetstream::context::GetStreamError>()
            {
                return get_stream(bucket, get);
            }
            err.source()
                .and_then(classify_chain)
                .unwrap_or_else(|| backend(err))
        }
    }
}

/// Fetching a stream's info (also used when provisioning).
pub(crate) fn get_stream(
    bucket: &str,
    err: &async_nats::jetstream::context::GetStreamError,
) -> KvError {
    match err.kind() {
        GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            KvError::BucketNotFound {
                bucket: bucket.to_owned(),
            }
        }
        GetStreamErrorKind::JetStream(js) => jetstream_api(&js),
        GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
            KvError::Backend(BackendError::msg(format!(
                "invalid bucket name {bucket:?} (allowed: [A-Za-z0-9_-]+)"
            )))
        }
        GetStreamErrorKind::Request => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| KvError::Backend(BackendError::msg(err.to_string()))),
    }
}

/// A stream info request.
pub(crate) fn stream_info(bucket: &str, err: RequestError) -> KvError {
    if let Some(js) = err
        .source()
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        && js.error_code() == ErrorCode::STREAM_NOT_FOUND
    {
        return KvError::BucketNotFound {
            bucket: bucket.to_owned(),
        };
    }
    match err.kind() {
        RequestErrorKind::TimedOut => KvError::Timeout,
        RequestErrorKind::NoResponders => KvError::Unavailable {
            reason: "no responders (JetStream unavailable)".into(),
        },
        RequestErrorKind::InvalidSubject | RequestErrorKind::Other => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// Creating a bucket.
pub(crate) fn create_bucket(err: async_nats::jetstream::context::CreateKeyValueError) -> KvError {
    match err.kind() {
        CreateKeyValueErrorKind::TimedOut => KvError::Timeout,
        CreateKeyValueErrorKind::InvalidStoreName
        | CreateKeyValueErrorKind::TooLongHistory
        | CreateKeyValueErrorKind::LimitMarkersNotSupported => backend(err),
        CreateKeyValueErrorKind::JetStream | CreateKeyValueErrorKind::BucketCreate => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// Updating a bucket.
pub(crate) fn update_bucket(
    bucket: &str,
    err: async_nats::jetstream::context::UpdateKeyValueError,
) -> KvError {
    match err.kind() {
        UpdateKeyValueErrorKind::TimedOut => KvError::Timeout,
        UpdateKeyValueErrorKind::NotFound => KvError::BucketNotFound {
            bucket: bucket.to_owned(),
        },
        UpdateKeyValueErrorKind::InvalidStoreName
        | UpdateKeyValueErrorKind::TooLongHistory
        | UpdateKeyValueErrorKind::LimitMarkersNotSupported => backend(err),
        UpdateKeyValueErrorKind::JetStream | UpdateKeyValueErrorKind::BucketUpdate => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// Fetching a batch of a key listing.
pub(crate) fn fetch(err: async_nats::jetstream::consumer::pull::BatchError) -> KvError {
    use async_nats::jetstream::consumer::pull::BatchErrorKind;
    match err.kind() {
        BatchErrorKind::Flush | BatchErrorKind::Pull | BatchErrorKind::Subscribe => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| KvError::Unavailable {
                reason: err.to_string(),
            }),
        _ => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// An item of a fetched batch (async-nats reports these as a boxed error). Besides timeouts,
/// these are status replies of the server (503 no responders, 409 leadership change or
/// consumer deleted): the consumer was not reachable, so the store is unavailable for now.
pub(crate) fn fetch_item(err: async_nats::Error) -> KvError {
    classify_chain(&*err).unwrap_or_else(|| KvError::Unavailable {
        reason: err.to_string(),
    })
}

/// Creating a watch consumer.
pub(crate) fn consumer(bucket: &str, err: async_nats::jetstream::stream::ConsumerError) -> KvError {
    match err.kind() {
        ConsumerErrorKind::TimedOut => KvError::Timeout,
        ConsumerErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            KvError::BucketNotFound {
                bucket: bucket.to_owned(),
            }
        }
        ConsumerErrorKind::JetStream(js) => jetstream_api(&js),
        ConsumerErrorKind::Request
        | ConsumerErrorKind::InvalidConsumerType
        | ConsumerErrorKind::InvalidName
        | ConsumerErrorKind::Other => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// Subscribing to a watch consumer's messages.
pub(crate) fn consumer_stream(err: async_nats::jetstream::consumer::StreamError) -> KvError {
    use async_nats::jetstream::consumer::StreamErrorKind;
    match err.kind() {
        StreamErrorKind::TimedOut => KvError::Timeout,
        StreamErrorKind::Other => err
            .source()
            .and_then(classify_chain)
            .unwrap_or_else(|| backend(err)),
    }
}

/// An error of a watch's ordered consumer (reported, then the watch re-establishes itself).
pub(crate) fn ordered(err: async_nats::jetstream::consumer::push::OrderedError) -> KvError {
    err.source()
        .and_then(classify_chain)
        .unwrap_or_else(|| backend(err))
}

/// A malformed message from the server (bad metadata).
pub(crate) fn malformed(what: &str) -> KvError {
    KvError::Backend(BackendError::msg(format!(
        "malformed message from NATS: {what}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrong_last_sequence() {
        assert_eq!(
            wrong_last_sequence("wrong last sequence: 42 (code 400, error code 10071)"),
            Some(42)
        );
        assert_eq!(wrong_last_sequence("wrong last sequence: 0"), Some(0));
        assert_eq!(wrong_last_sequence("something else"), None);
        assert_eq!(wrong_last_sequence("wrong last sequence: x"), None);
        assert_eq!(
            mismatch_from_message("wrong last sequence: 0"),
            KvError::RevisionMismatch { current: None }
        );
    }

    /// A write whose reply channel closed after it was sent may have been applied: unknown
    /// outcome, not "unavailable".
    #[test]
    fn a_broken_pipe_is_an_unknown_outcome() {
        assert_eq!(
            publish(PublishError::new(PublishErrorKind::BrokenPipe)),
            KvError::Timeout
        );
        assert_eq!(
            publish(PublishError::new(PublishErrorKind::TimedOut)),
            KvError::Timeout
        );
        assert!(matches!(
            publish(PublishError::new(PublishErrorKind::StreamNotFound)),
            KvError::Unavailable { .. }
        ));
    }

    #[test]
    fn a_value_over_the_limit_is_a_typed_refusal_with_its_sizes() {
        let err = PublishError::with_source(
            PublishErrorKind::MaxPayloadExceeded,
            "Payload size limit of 1048576 exceeded by message size of 1300000",
        );
        assert_eq!(
            publish(err),
            KvError::ValueTooLarge {
                size: Some(1_300_000),
                limit: Some(1_048_576)
            }
        );
        let err: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}"#,
        )
        .expect("a JetStream API error");
        assert_eq!(
            jetstream_api(&err),
            KvError::ValueTooLarge {
                size: None,
                limit: None
            }
        );
        assert!(
            KvError::ValueTooLarge {
                size: Some(2),
                limit: Some(1)
            }
            .to_string()
            .contains("max_payload")
        );
    }

    #[test]
    fn a_bucket_create_refused_for_a_peer_offline_is_unavailable() {
        // As the 3-node contract suite met it in CI: CreateKeyValueError(BucketCreate) whose
        // source is the CreateStreamError carrying the API error in its kind.
        let js: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10005,"description":"no suitable peers for placement, peer offline"}"#,
        )
        .expect("a JetStream API error");
        let stream = async_nats::jetstream::context::CreateStreamError::new(
            CreateStreamErrorKind::JetStream(js),
        );
        let err = async_nats::jetstream::context::CreateKeyValueError::with_source(
            CreateKeyValueErrorKind::BucketCreate,
            stream,
        );
        let mapped = create_bucket(err);
        assert!(
            matches!(&mapped, KvError::Unavailable { reason } if reason.contains("peer offline")),
            "{mapped:?}"
        );
    }

    #[test]
    fn a_peer_counted_offline_is_a_refusal_to_try_again() {
        // As a 3-node cluster answered a stream create once under load (CI-like run).
        let err: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10005,"description":"no suitable peers for placement, peer offline"}"#,
        )
        .expect("a JetStream API error");
        let mapped = jetstream_api(&err);
        assert!(
            matches!(&mapped, KvError::Unavailable { reason } if reason.contains("peer offline")),
            "{mapped:?}"
        );
    }

    #[test]
    fn refuses_old_servers_by_name() {
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("3.0.0-beta").is_ok());
        let err = check_server_version("2.9.10").unwrap_err();
        assert!(err.to_string().contains("2.9.10"), "{err}");
        assert!(check_server_version("").is_err());
        assert!(check_server_version("garbage").is_err());
    }
}
