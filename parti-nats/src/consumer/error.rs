//! What can go wrong setting up or running a [`PartitionConsumer`](super::PartitionConsumer).

/// Why a [`PartitionConsumer`](super::PartitionConsumer) could not start, or could not bind a
/// partition's consumer. Each variant says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// No stream has this name (the consumer never creates or alters the stream).
    #[error(
        "stream `{stream}` does not exist; create it (the partition consumer reads an existing \
         stream and never creates one) or fix the stream name"
    )]
    StreamNotFound {
        /// The stream asked for.
        stream: String,
    },
    /// The subject template is not a valid subject pattern.
    #[error("subject template `{template}` is not valid: {reason}")]
    InvalidTemplate {
        /// The template as given.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// The stream does not capture every subject the template can produce.
    #[error(
        "stream `{stream}` captures {stream_subjects:?}, which does not cover `{subject}` (from \
         the subject template); add a subject covering it to the stream or fix the template"
    )]
    SubjectNotCovered {
        /// The stream.
        stream: String,
        /// The subject (or the template as a wildcard filter) that is not covered.
        subject: String,
        /// The stream's subjects.
        stream_subjects: Vec<String>,
    },
    /// A partition's keys cannot be put into the subject template.
    #[error("partition {partition} cannot be consumed: {reason}")]
    InvalidPartitionKey {
        /// The partition.
        partition: String,
        /// Why.
        reason: String,
    },
    /// The stream admits fewer consumers than there are partitions (nats-server 2.15 defaults
    /// to 1,000 per stream).
    #[error(
        "stream `{stream}` admits {limit} consumers ({source_of_limit}) and {needed} are needed \
         (one per partition, plus {others} other consumers already on the stream); raise the \
         stream's max_consumers (e.g. `nats stream edit {stream} --max-consumers {suggested}`)"
    )]
    ConsumerLimit {
        /// The stream.
        stream: String,
        /// How many consumers it admits.
        limit: i64,
        /// Where the limit comes from (the stream's setting or the server default).
        source_of_limit: String,
        /// Consumers needed in total.
        needed: i64,
        /// Consumers on the stream that are not this partition consumer's.
        others: i64,
        /// A value that would fit, with headroom.
        suggested: i64,
    },
    /// An existing consumer of a partition has a setting that cannot be changed in place.
    #[error(
        "consumer `{consumer}` exists with {field} = {existing}, and this partition consumer \
         wants {wanted}; it cannot be changed in place (its progress belongs to the old setting): \
         delete the consumer if that progress may go (`nats consumer rm`), or keep the old setting"
    )]
    ConsumerConflict {
        /// The consumer's name.
        consumer: String,
        /// The setting.
        field: &'static str,
        /// Its value on the server.
        existing: String,
        /// The value configured here.
        wanted: String,
    },
    /// Server-enforced exclusivity (pinned priority groups) needs nats-server 2.11 or newer.
    #[error(
        "Exclusivity::Pinned needs nats-server 2.11 or newer and the server is {server_version}; \
         upgrade the server or use Exclusivity::None"
    )]
    ExclusivityUnsupported {
        /// The server's version.
        server_version: String,
    },
    /// The dead-letter subject is captured by no stream, so dead letters would be lost.
    #[error(
        "dead-letter subject `{subject}` is captured by no stream; add it to a stream (not the \
         one being consumed) or choose another subject"
    )]
    DeadLetterNotCaptured {
        /// The subject.
        subject: String,
    },
    /// A setting is out of its range.
    #[error("invalid partition consumer setting: {0}")]
    InvalidSetting(String),
    /// The server could not be reached or refused a request for another reason.
    #[error("{during}: {message}")]
    Nats {
        /// What was being done.
        during: String,
        /// The client's or server's message.
        message: String,
    },
}

impl ConsumerError {
    pub(crate) fn nats(during: impl Into<String>, error: impl std::fmt::Display) -> Self {
        ConsumerError::Nats {
            during: during.into(),
            message: error.to_string(),
        }
    }

    /// Whether trying the same thing again later can succeed without a change of
    /// configuration (the server was unreachable or busy).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, ConsumerError::Nats { .. })
    }
}
