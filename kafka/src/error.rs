//! The one error type of the crate, split by who is at fault: the network or the broker
//! (retry later), the peer's bytes (a bad frame), the credentials, or the caller.

use std::io;

use kafka_protocol::ResponseError;

/// What went wrong, naming the broker and saying what to do.
///
/// `Display` never repeats the message of [`std::error::Error::source`]; print the chain to
/// see the cause (for example the `io::Error` of a refused connection). No variant carries a
/// password, secret or token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (caller misuse); the message names the setting.
    #[error("kafka configuration: {0}")]
    Config(String),
    /// No TCP connection to this broker (refused, unreachable, no such host). Retry with
    /// backoff; check the address and that the broker runs.
    #[error("kafka {broker}: cannot connect; check the address and that the broker runs")]
    Connect {
        /// `host:port` of the broker.
        broker: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing an established connection failed (the broker went away). The
    /// connection is dropped; retry with backoff.
    #[error("kafka {broker}: connection lost")]
    Io {
        /// `host:port` of the broker.
        broker: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The broker did not answer within the request timeout. Retry with backoff.
    #[error(
        "kafka {broker}: no answer to {what} within {timeout_ms} ms; the broker is overloaded or unreachable"
    )]
    Timeout {
        /// `host:port` of the broker.
        broker: String,
        /// The request that timed out.
        what: &'static str,
        /// The timeout that ran out.
        timeout_ms: u64,
    },
    /// The TLS handshake or record layer failed (certificate, protocol).
    #[error("kafka {broker}: TLS failed; check the broker's certificate and the trust roots")]
    Tls {
        /// `host:port` of the broker.
        broker: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The broker sent bytes that are not a valid response (truncated, undecodable, wrong
    /// correlation id). The connection is dropped.
    #[error("kafka {broker}: bad response frame: {reason}")]
    BadFrame {
        /// `host:port` of the broker.
        broker: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A response frame is longer than the configured bound (`Bounds::response_max`). The
    /// connection is dropped; raise the bound if the broker's batches really are this large.
    #[error(
        "kafka {broker}: response frame of {len} bytes exceeds the bound of {max} bytes; raise the response bound"
    )]
    FrameTooLarge {
        /// `host:port` of the broker.
        broker: String,
        /// The length prefix the broker sent.
        len: u64,
        /// The configured bound.
        max: usize,
    },
    /// The broker supports no version of this API that this client implements.
    #[error("kafka {broker}: the broker supports no version of {api} this client speaks ({ours})")]
    Unsupported {
        /// `host:port` of the broker.
        broker: String,
        /// The API name.
        api: &'static str,
        /// The version range this client implements.
        ours: String,
    },
    /// Authentication failed; the message says which mechanism and what to check.
    #[error("kafka {broker}: SASL {mechanism} refused: {advice}")]
    Sasl {
        /// `host:port` of the broker.
        broker: String,
        /// The SASL mechanism.
        mechanism: &'static str,
        /// What the broker said and what to check (never the secret itself).
        advice: String,
    },
    /// The OAuth token endpoint did not give a token.
    #[error("OAuth token from {url}: {reason}")]
    Token {
        /// The token endpoint.
        url: String,
        /// What went wrong and what to check.
        reason: String,
    },
    /// The broker answered a request with an error code that concerns the whole request (per
    /// topic and per partition errors are reported where they occur).
    #[error("kafka {broker}: {api} failed: {code}{hint}")]
    Broker {
        /// `host:port` of the broker.
        broker: String,
        /// The API name.
        api: &'static str,
        /// The Kafka error code.
        code: ResponseError,
        /// What to do about it, if known (starts with "; ").
        hint: &'static str,
    },
    /// The broker answered with an error for one partition (of a commit, an offset look-up,
    /// a produce).
    #[error("kafka {broker}: {api} of {topic}/{partition} failed: {code}{hint}")]
    Partition {
        /// `host:port` of the broker.
        broker: String,
        /// The API name.
        api: &'static str,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The Kafka error code.
        code: ResponseError,
        /// What to do about it, if known (starts with "; ").
        hint: &'static str,
    },
    /// No broker of the bootstrap list could be reached or none is the leader of what was
    /// asked; retry with backoff.
    #[error("kafka: no broker available ({0}); retry later")]
    NoBroker(String),
    /// The producer queue is full (`Bounds::producer_queue_max`); the record was not queued.
    /// Call [`crate::Producer::flush`] or count the overflow.
    #[error("kafka producer queue full ({capacity} records); flush or drop")]
    QueueFull {
        /// The bound.
        capacity: usize,
    },
}

impl Error {
    /// True if the same call may succeed later (the network, a timeout, a broker that is
    /// moving leadership or not up yet): the caller retries with its own backoff. False for
    /// configuration, credential and protocol faults, which need a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::NoBroker(_)
            | Error::QueueFull { .. }
            | Error::BadFrame { .. } => true,
            Error::Broker { code, .. } | Error::Partition { code, .. } => code.is_retriable(),
            Error::Token { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn bad_frame(broker: &str, reason: impl Into<String>) -> Self {
        Error::BadFrame {
            broker: broker.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn broker(broker: &str, api: &'static str, code: ResponseError) -> Self {
        Error::Broker {
            broker: broker.to_owned(),
            api,
            code,
            hint: hint(code),
        }
    }

    pub(crate) fn partition(
        broker: &str,
        api: &'static str,
        topic: &str,
        partition: i32,
        code: ResponseError,
    ) -> Self {
        Error::Partition {
            broker: broker.to_owned(),
            api,
            topic: topic.to_owned(),
            partition,
            code,
            hint: hint(code),
        }
    }
}

/// What to do about an error code, if there is something to say.
fn hint(code: ResponseError) -> &'static str {
    {
        match code {
            ResponseError::TopicAuthorizationFailed
            | ResponseError::GroupAuthorizationFailed
            | ResponseError::ClusterAuthorizationFailed => {
                "; the credentials lack the permission: ask the cluster's operator"
            }
            ResponseError::UnknownTopicOrPartition => "; check the topic name",
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                "; the group coordinator moved: retry"
            }
            _ => "",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
