//! Client configuration: where the brokers are, how to secure and authenticate the
//! connection, timeouts and bounds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::oauth::TokenSource;

/// How to reach a cluster. Shared by [`crate::Consumer`] and [`crate::Producer`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Bootstrap brokers, `host:port`; the rest of the cluster is learnt from metadata.
    pub bootstrap: Vec<String>,
    /// The client id sent in every request header (brokers log it and quota by it).
    pub client_id: String,
    /// Transport security and whether SASL is used.
    pub security: Security,
    /// TLS client configuration for [`Security::Ssl`] and [`Security::SaslSsl`]; the caller
    /// builds it (trust roots, client certificate). Required for those two.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL credentials for [`Security::SaslPlaintext`] and [`Security::SaslSsl`].
    pub sasl: Option<Sasl>,
    /// Bound on establishing a TCP connection (and the TLS and SASL handshakes after it).
    pub connect_timeout: Duration,
    /// Bound on waiting for one response (a fetch waits at most `fetch_wait` on top).
    pub request_timeout: Duration,
    /// Memory bounds.
    pub bounds: Bounds,
}

impl Config {
    /// A plaintext configuration for these bootstrap brokers (`host:port[,host:port..]`),
    /// with the default timeouts (10 s connect, 30 s request) and bounds.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the list is empty or an entry has no port.
    pub fn new(bootstrap: &str, client_id: &str) -> Result<Self> {
        let bootstrap = parse_bootstrap(bootstrap)?;
        Ok(Config {
            bootstrap,
            client_id: client_id.to_owned(),
            security: Security::Plaintext,
            tls: None,
            sasl: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            bounds: Bounds::default(),
        })
    }

    /// Checks that the parts fit together (TLS config present when TLS is asked for, SASL
    /// credentials when SASL is).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the missing or contradictory setting.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap broker".into()));
        }
        if self.security.tls() && self.tls.is_none() {
            return Err(Error::Config(format!(
                "security {:?} needs a TLS client configuration",
                self.security
            )));
        }
        if self.security.sasl() != self.sasl.is_some() {
            return Err(Error::Config(format!(
                "security {:?} {} SASL credentials",
                self.security,
                if self.security.sasl() {
                    "needs"
                } else {
                    "does not use"
                }
            )));
        }
        if self.bounds.record_value_max >= self.bounds.response_max {
            return Err(Error::Config(
                "the record value bound must be below the response bound".into(),
            ));
        }
        Ok(())
    }
}

/// Splits `host:port[,host:port..]`.
pub(crate) fn parse_bootstrap(list: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                out.push(entry.to_owned());
            }
            _ => {
                return Err(Error::Config(format!(
                    "bootstrap broker {entry:?} is not host:port"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Config("no bootstrap broker".into()));
    }
    Ok(out)
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TCP, no authentication.
    Plaintext,
    /// TLS, no SASL (the certificate may authenticate the client).
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS (GCN's setting).
    SaslSsl,
}

impl Security {
    /// True for the two TLS variants.
    pub fn tls(self) -> bool {
        matches!(self, Security::Ssl | Security::SaslSsl)
    }

    /// True for the two SASL variants.
    pub fn sasl(self) -> bool {
        matches!(self, Security::SaslPlaintext | Security::SaslSsl)
    }
}

/// SASL mechanism and credentials. `Debug` prints the user, never the password or token.
#[derive(Clone)]
#[non_exhaustive]
pub enum Sasl {
    /// `PLAIN` (RFC 4616): user and password in clear, so only over TLS in production.
    Plain {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256 {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `SCRAM-SHA-512`.
    ScramSha512 {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `OAUTHBEARER` (RFC 7628) with tokens from this source (for example
    /// [`crate::OidcClientCredentials`]).
    OauthBearer(Arc<dyn TokenSource>),
}

impl Sasl {
    /// The mechanism name as sent in SaslHandshake.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain { .. } => "PLAIN",
            Sasl::ScramSha256 { .. } => "SCRAM-SHA-256",
            Sasl::ScramSha512 { .. } => "SCRAM-SHA-512",
            Sasl::OauthBearer(_) => "OAUTHBEARER",
        }
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sasl::Plain { user, .. }
            | Sasl::ScramSha256 { user, .. }
            | Sasl::ScramSha512 { user, .. } => f
                .debug_struct(self.mechanism())
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Sasl::OauthBearer(source) => f.debug_tuple("OAUTHBEARER").field(source).finish(),
        }
    }
}

/// Memory bounds. Every response frame is checked against `response_max` before anything is
/// allocated for it.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Largest response frame accepted (default 64 MiB). Also bounds the decompressed size
    /// of one record batch.
    pub response_max: usize,
    /// Largest record value returned as bytes (default 4 MiB); a larger one is reported as
    /// [`crate::Oversize`].
    pub record_value_max: usize,
    /// Fetch response size asked of the broker (default 16 MiB; the broker may exceed it by
    /// one batch).
    pub fetch_max: usize,
    /// How long a fetch waits at the broker for new data (default 500 ms).
    pub fetch_wait: Duration,
    /// Records the producer queues before [`Error::QueueFull`] (default 10,000).
    pub producer_queue_max: usize,
    /// Bytes of record values in one produce request (default 1 MiB).
    pub produce_request_max: usize,
    /// How long a hole in a partition's offsets is waited for before the consumer moves past
    /// it (default 5 s). A broker may show a later batch before an earlier one (tansu does
    /// under concurrent produce requests); a hole that stays is a compacted or deleted batch.
    pub gap_wait: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            response_max: 64 << 20,
            record_value_max: 4 << 20,
            fetch_max: 16 << 20,
            fetch_wait: Duration::from_millis(500),
            producer_queue_max: 10_000,
            produce_request_max: 1 << 20,
            gap_wait: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_are_split_and_checked() {
        assert_eq!(
            parse_bootstrap("a:1, b:2,").unwrap(),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
        assert!(parse_bootstrap("a").is_err());
        assert!(parse_bootstrap("a:x").is_err());
        assert!(parse_bootstrap(" , ").is_err());
    }

    #[test]
    fn sasl_debug_hides_the_password() {
        let s = Sasl::ScramSha512 {
            user: "alice".into(),
            password: "hunter2".into(),
        };
        let text = format!("{s:?}");
        assert!(
            text.contains("alice") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
