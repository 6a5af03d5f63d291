//! A small, bounded, blocking Kafka client for the vtp VTP-Kafka bridge.
//!
//! NASA GCN publishes its VOEvents on Kafka (`gcn.classic.voevent.<TYPE>` topics), so vtp
//! bridges VTP and Kafka. This crate is the Kafka side: a [`Consumer`] of every partition of
//! the subscribed topics with offsets stored under a consumer group, and an idempotent
//! [`Producer`]. The wire codec (message structs, header versions, record batches and their
//! compression) is the `kafka-protocol` crate's; this crate adds the connection, version
//! negotiation, SASL, metadata, offsets and the bounds.
//!
//! # Calling contract
//!
//! Everything blocks on `std::net` sockets, on the caller's thread: no async runtime, no
//! background threads, so the client works beside every vtp runtime (run it on a thread of
//! its own). Each call is bounded in time by [`Config::connect_timeout`],
//! [`Config::request_timeout`] and the timeout it is given.
//!
//! - [`Consumer::poll`] returns [`Item`]s ([`Record`]s, and [`Oversize`] reports for values
//!   over the bound); the caller handles them, then [`Consumer::commit`]s `offset + 1`.
//!   Topic-level problems (for example `TopicAuthorizationFailed` for a topic the
//!   credentials may not read) are in [`Consumer::topic_errors`] and do not stop the other
//!   topics.
//! - [`Producer::send`] queues (bounded: [`Error::QueueFull`]), [`Producer::flush`] sends
//!   and returns one [`Delivery`] per record.
//!
//! # Errors and retries
//!
//! Every error names the broker and says what to check. [`Error::is_retryable`] tells the
//! caller whether to try again after a backoff (a broker down, a timeout, a moving leader),
//! which the caller owns; the client has dropped its connections by then and reconnects on
//! the next call. Credentials, TLS and configuration faults are not retryable. No error or
//! `Debug` output contains a password, client secret or token.
//!
//! # Limits
//!
//! Every response frame's length is checked against [`Bounds::response_max`] before memory
//! is allocated for it (a larger frame is skipped without being kept); compressed batches are
//! decompressed up to the same bound; a record value over [`Bounds::record_value_max`] is
//! reported as [`Oversize`] rather than returned. A broker that lies inside a well-formed
//! frame (for example an array count far larger than the frame) is decoded by
//! `kafka-protocol`, which reserves memory for the count it reads: connect only to brokers
//! you trust, over TLS.
//!
//! # Security
//!
//! [`Security`] is Kafka's `security.protocol`. TLS uses a `rustls::ClientConfig` the caller
//! builds. SASL mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (the server's signature is
//! verified) and OAUTHBEARER with a [`TokenSource`], for example
//! [`OidcClientCredentials`] (OAuth client credentials, GCN's setting).
#![warn(missing_docs)]

mod cluster;
mod config;
mod conn;
mod consumer;
mod error;
mod oauth;
mod producer;
mod records;
mod sasl;

pub use cluster::{Metadata, Subscription, TopicInfo};
pub use config::{Bounds, Config, Sasl, Security};
pub use consumer::{Consumer, Lag, StartFrom};
pub use error::{Error, Result};
pub use kafka_protocol::ResponseError;
pub use kafka_protocol::records::Compression;
pub use oauth::{OidcClientCredentials, TokenSource};
pub use producer::{Delivery, Producer, murmur2, to_positive};
pub use records::{Item, Oversize, Record};
