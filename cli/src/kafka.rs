//! `vtp broker`'s Kafka bridge flags (cargo feature `kafka`): what they mean, checked at
//! start, turned into the host's ingest and publish settings (`vtp_host::kafka`).

#[cfg(feature = "kafka")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// The Kafka bridge: read Kafka topics into the broker (GCN's VOEvents), publish accepted
/// events to a topic.
#[derive(Debug, Clone, Args, Default, PartialEq, Eq)]
#[command(next_help_heading = "Kafka bridge")]
pub(crate) struct KafkaArgs {
    /// Kafka brokers to start from, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub(crate) kafka_bootstrap: Option<String>,
    /// Read the VOEvents of this Kafka topic (repeatable; a glob such as
    /// 'gcn.classic.voevent.*' matches the cluster's topics, re-checked every minute). Each
    /// event enters like an upstream's: checked, deduplicated, forwarded, handled; its offset
    /// is committed once its record is durable. Records that are not VOEvents are logged
    /// with topic, partition and offset and skipped.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) kafka_subscribe: Vec<String>,
    /// Consumer group the read offsets are stored under (default: derived from --local-ivo,
    /// the same after a restart, so reading resumes where it stopped).
    #[arg(long, value_name = "ID")]
    pub(crate) kafka_group: Option<String>,
    /// Where a partition the group has no offset for starts: the oldest record kept, or only
    /// what arrives from now on.
    #[arg(long, value_name = "WHERE", default_value = "latest")]
    pub(crate) kafka_start: KafkaStart,
    /// Publish every accepted event (from authors, upstreams and Kafka) to this topic once
    /// its record is durable: key the IVORN, value the exact bytes, idempotent producer.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) kafka_publish: Option<String>,
    /// Publish test events (role="test") too.
    #[arg(long)]
    pub(crate) kafka_publish_test: bool,
    /// Most bytes of events waiting to be published while Kafka cannot be reached; beyond
    /// it events are not published, counted and logged (VTP service goes on).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) kafka_publish_backlog_bytes: usize,
    /// Kafka's security.protocol.
    #[arg(long, value_name = "PROTOCOL", default_value = "plaintext")]
    pub(crate) kafka_security: KafkaSecurity,
    /// Verify Kafka's TLS certificates against the CA certificates in FILE (PEM) only,
    /// instead of the system's trust roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) kafka_tls_ca: Option<PathBuf>,
    /// SASL mechanism, with --kafka-security sasl_plaintext or sasl_ssl.
    #[arg(long, value_name = "MECHANISM")]
    pub(crate) kafka_sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[arg(long, value_name = "USER")]
    pub(crate) kafka_sasl_username: Option<String>,
    /// File holding the SASL password (its first line). The environment variable
    /// VTP_KAFKA_SASL_PASSWORD is read when no file is given. Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub(crate) kafka_sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER with OpenID Connect client credentials: the client id.
    #[arg(long, value_name = "ID")]
    pub(crate) kafka_oidc_client_id: Option<String>,
    /// File holding the OIDC client secret (its first line); else the environment variable
    /// VTP_KAFKA_OIDC_CLIENT_SECRET.
    #[arg(long, value_name = "FILE")]
    pub(crate) kafka_oidc_client_secret_file: Option<PathBuf>,
    /// The OIDC token endpoint (https://; http:// only on loopback).
    #[arg(long, value_name = "URL")]
    pub(crate) kafka_oidc_token_url: Option<String>,
    /// The OIDC scope to ask for, if the provider needs one.
    #[arg(long, value_name = "SCOPE")]
    pub(crate) kafka_oidc_scope: Option<String>,
    /// NASA GCN's Kafka with this client id (from gcn.nasa.gov/quickstart): bootstrap
    /// kafka.DOMAIN:9092, sasl_ssl, OAUTHBEARER with OIDC at `https://auth.DOMAIN/oauth2/token`,
    /// as GCN's own clients; subscribes to gcn.classic.voevent.* unless --kafka-subscribe says
    /// otherwise. Needs --gcn-kafka-secret-file.
    #[arg(long, value_name = "CLIENT_ID")]
    pub(crate) gcn_kafka: Option<String>,
    /// File holding the GCN client secret (its first line); else the environment variable
    /// VTP_GCN_KAFKA_SECRET.
    #[arg(long, value_name = "FILE")]
    pub(crate) gcn_kafka_secret_file: Option<PathBuf>,
    /// GCN's domain: gcn.nasa.gov (production), test.gcn.nasa.gov or dev.gcn.nasa.gov.
    #[arg(long, value_name = "DOMAIN", default_value = "gcn.nasa.gov")]
    pub(crate) gcn_domain: String,
}

/// Where a partition without a stored offset starts.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub(crate) enum KafkaStart {
    /// The oldest record the broker keeps.
    Earliest,
    /// Only records written from now on.
    #[default]
    Latest,
}

/// Kafka's security.protocol.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub(crate) enum KafkaSecurity {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    /// SASL over TLS.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum SaslMechanism {
    /// User and password in clear (use it over TLS only).
    #[value(name = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth bearer tokens from the OIDC token endpoint (--kafka-oidc-*).
    #[value(name = "OAUTHBEARER")]
    OauthBearer,
}

/// What the bridge runs with, checked.
#[cfg(feature = "kafka")]
#[derive(Debug)]
pub(crate) struct KafkaPlan {
    pub(crate) ingest: Option<vtp_host::kafka::IngestSettings>,
    pub(crate) publish: Option<vtp_host::kafka::PublishSettings>,
}

/// What the bridge runs with, for the banner and /status: names and places, never a secret.
#[cfg(feature = "kafka")]
fn info(plan: &KafkaPlan) -> vtp_host::ops::KafkaInfo {
    use vtp_kafka::Security;
    let config = match (&plan.ingest, &plan.publish) {
        (Some(i), _) => &i.config,
        (None, Some(p)) => &p.config,
        (None, None) => return vtp_host::ops::KafkaInfo::default(),
    };
    vtp_host::ops::KafkaInfo {
        bootstrap: config.bootstrap.clone(),
        security: match config.security {
            Security::Plaintext => "plaintext",
            Security::Ssl => "ssl",
            Security::SaslPlaintext => "sasl_plaintext",
            Security::SaslSsl => "sasl_ssl",
        },
        sasl: config.sasl.as_ref().map(vtp_kafka::Sasl::mechanism),
        consumer: plan.ingest.as_ref().map(|i| vtp_host::ops::ConsumerInfo {
            topics: i.topics.clone(),
            group: i.group.clone(),
            start: match i.start {
                vtp_kafka::StartFrom::Earliest => "earliest",
                _ => "latest",
            },
        }),
        publish_topic: plan.publish.as_ref().map(|p| p.topic.clone()),
    }
}

/// Most bytes of a secret file.
#[cfg(feature = "kafka")]
const SECRET_MAX: u64 = 64 * 1024;

impl KafkaArgs {
    /// True when any Kafka flag asks for the bridge.
    pub(crate) fn wanted(&self) -> bool {
        self.kafka_bootstrap.is_some()
            || !self.kafka_subscribe.is_empty()
            || self.kafka_publish.is_some()
            || self.gcn_kafka.is_some()
    }
}

/// The bridge's settings from the flags, or `None` when no Kafka flag is given.
///
/// # Errors
///
/// A message naming the flag that is missing, contradictory or unreadable.
#[cfg(feature = "kafka")]
pub(crate) fn plan(a: &KafkaArgs, local_ivo: Option<&str>) -> Result<Option<KafkaPlan>, String> {
    use vtp_kafka::{Config, Security, StartFrom};

    if !a.wanted() {
        return Ok(None);
    }
    let gcn = a.gcn_kafka.as_deref();
    let bootstrap = match (&a.kafka_bootstrap, gcn) {
        (Some(b), _) => b.clone(),
        (None, Some(_)) => format!("kafka.{}:9092", a.gcn_domain),
        (None, None) => {
            return Err(
                "--kafka-subscribe and --kafka-publish need --kafka-bootstrap HOST:PORT (or \
                 --gcn-kafka CLIENT_ID)"
                    .into(),
            );
        }
    };
    let client_id = format!("vtp-{}", env!("CARGO_PKG_VERSION"));
    let mut config = Config::new(&bootstrap, &client_id)
        .map_err(|e| format!("--kafka-bootstrap {bootstrap:?}: {e}"))?;
    let (security, mechanism) = match gcn {
        Some(_) => (KafkaSecurity::SaslSsl, Some(SaslMechanism::OauthBearer)),
        None => (a.kafka_security, a.kafka_sasl_mechanism),
    };
    config.security = match security {
        KafkaSecurity::Plaintext => Security::Plaintext,
        KafkaSecurity::Ssl => Security::Ssl,
        KafkaSecurity::SaslPlaintext => Security::SaslPlaintext,
        KafkaSecurity::SaslSsl => Security::SaslSsl,
    };
    if config.security.tls() {
        let files = vtp_host::tls::ClientFiles {
            ca: a.kafka_tls_ca.clone(),
            cert: None,
            key: None,
        };
        let (tls, warnings) = vtp_host::tls::client_config(&files)
            .map_err(|e| format!("Kafka TLS (--kafka-tls-ca): {e}"))?;
        for w in warnings {
            tracing::warn!("Kafka TLS: {w}");
        }
        config.tls = Some(tls);
    }
    if config.security.sasl() {
        let Some(mechanism) = mechanism else {
            return Err(format!(
                "--kafka-security {} needs --kafka-sasl-mechanism (PLAIN, SCRAM-SHA-256, \
                 SCRAM-SHA-512 or OAUTHBEARER)",
                security
                    .to_possible_value()
                    .map_or_else(|| "sasl".to_owned(), |v| v.get_name().to_owned())
            ));
        };
        config.sasl = Some(sasl(a, mechanism)?);
    } else if mechanism.is_some() {
        return Err(
            "--kafka-sasl-mechanism needs --kafka-security sasl_plaintext or sasl_ssl".into(),
        );
    }
    config.validate().map_err(|e| format!("Kafka: {e}"))?;

    let mut topics = a.kafka_subscribe.clone();
    if topics.is_empty() && gcn.is_some() {
        topics.push("gcn.classic.voevent.*".into());
    }
    let ingest = if topics.is_empty() {
        None
    } else {
        let group = match &a.kafka_group {
            Some(g) if g.is_empty() => return Err("--kafka-group: the id is empty".into()),
            Some(g) => g.clone(),
            None => default_group(local_ivo),
        };
        Some(vtp_host::kafka::IngestSettings {
            config: config.clone(),
            group,
            topics,
            start: match a.kafka_start {
                KafkaStart::Earliest => StartFrom::Earliest,
                KafkaStart::Latest => StartFrom::Latest,
            },
        })
    };
    let publish = a
        .kafka_publish
        .as_ref()
        .map(|topic| vtp_host::kafka::PublishSettings {
            config,
            topic: topic.clone(),
            test_events: a.kafka_publish_test,
            backlog_bytes: a.kafka_publish_backlog_bytes,
        });
    if let (Some(i), Some(p)) = (&ingest, &publish)
        && i.topics.iter().any(|t| t == &p.topic)
    {
        return Err(format!(
            "--kafka-publish {0} is also read (--kafka-subscribe {0}): every event would come \
             back as a duplicate; publish to another topic",
            p.topic
        ));
    }
    Ok(Some(KafkaPlan { ingest, publish }))
}

#[cfg(feature = "kafka")]
fn sasl(a: &KafkaArgs, mechanism: SaslMechanism) -> Result<vtp_kafka::Sasl, String> {
    use vtp_kafka::{OidcClientCredentials, Sasl};
    if mechanism == SaslMechanism::OauthBearer {
        let (client_id, secret, url) = match &a.gcn_kafka {
            Some(id) => (
                id.clone(),
                secret(
                    a.gcn_kafka_secret_file.as_deref(),
                    "--gcn-kafka-secret-file",
                    "VTP_GCN_KAFKA_SECRET",
                )?,
                format!("https://auth.{}/oauth2/token", a.gcn_domain),
            ),
            None => (
                a.kafka_oidc_client_id.clone().ok_or(
                    "OAUTHBEARER needs --kafka-oidc-client-id, --kafka-oidc-client-secret-file \
                     and --kafka-oidc-token-url",
                )?,
                secret(
                    a.kafka_oidc_client_secret_file.as_deref(),
                    "--kafka-oidc-client-secret-file",
                    "VTP_KAFKA_OIDC_CLIENT_SECRET",
                )?,
                a.kafka_oidc_token_url
                    .clone()
                    .ok_or("OAUTHBEARER needs --kafka-oidc-token-url URL")?,
            ),
        };
        let source = OidcClientCredentials::new(
            &url,
            &client_id,
            &secret,
            a.kafka_oidc_scope.as_deref(),
            Duration::from_secs(30),
        )
        .map_err(|e| format!("--kafka-oidc-token-url: {e}"))?;
        return Ok(Sasl::OauthBearer(Arc::new(source)));
    }
    let user = a
        .kafka_sasl_username
        .clone()
        .ok_or("SASL PLAIN and SCRAM need --kafka-sasl-username USER")?;
    let password = secret(
        a.kafka_sasl_password_file.as_deref(),
        "--kafka-sasl-password-file",
        "VTP_KAFKA_SASL_PASSWORD",
    )?;
    Ok(match mechanism {
        SaslMechanism::Plain => Sasl::Plain { user, password },
        SaslMechanism::ScramSha256 => Sasl::ScramSha256 { user, password },
        _ => Sasl::ScramSha512 { user, password },
    })
}

/// The first line of `file`, else the environment variable `var`.
#[cfg(feature = "kafka")]
fn secret(file: Option<&Path>, flag: &str, var: &str) -> Result<String, String> {
    let text = match file {
        Some(path) => {
            use std::io::Read;
            let f =
                std::fs::File::open(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
            let mut text = String::new();
            f.take(SECRET_MAX + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("{flag} {}: {e} (a text file is expected)", path.display()))?;
            if text.len() as u64 > SECRET_MAX {
                return Err(format!(
                    "{flag} {}: larger than {SECRET_MAX} bytes: not a secret file",
                    path.display()
                ));
            }
            text
        }
        None => std::env::var(var)
            .map_err(|_| format!("give {flag} FILE (or set the environment variable {var})"))?,
    };
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(match file {
            Some(p) => format!("{flag} {}: the first line is empty", p.display()),
            None => format!("{var} is empty"),
        });
    }
    Ok(line)
}

/// A group id from the local IVO, stable across restarts: `vtp.example.org.broker` for
/// `ivo://example.org/broker`.
#[cfg(feature = "kafka")]
pub(crate) fn default_group(local_ivo: Option<&str>) -> String {
    let ivo = local_ivo.unwrap_or("ivo://vtp/unnamed");
    let body = ivo.strip_prefix("ivo://").unwrap_or(ivo);
    let clean: String = body
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("vtp.{}", clean.trim_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "kafka")]
    #[test]
    fn the_default_group_is_stable_and_safe() {
        assert_eq!(
            default_group(Some("ivo://example.org/broker")),
            "vtp.example.org.broker"
        );
        assert_eq!(default_group(None), "vtp.vtp.unnamed");
        assert_eq!(default_group(Some("ivo://a/b#c d")), "vtp.a.b.c.d");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn a_secret_is_the_first_line_of_its_file_and_bounded() {
        let dir = std::env::temp_dir().join(format!("vtp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "hunter2\nignored\n").unwrap();
        assert_eq!(secret(Some(&f), "--x", "NOPE").unwrap(), "hunter2");
        std::fs::write(&f, "\n").unwrap();
        assert!(
            secret(Some(&f), "--x", "NOPE")
                .unwrap_err()
                .contains("empty")
        );
        std::fs::write(&f, vec![b'a'; 70_000]).unwrap();
        assert!(
            secret(Some(&f), "--x", "NOPE")
                .unwrap_err()
                .contains("larger than")
        );
        let missing = secret(Some(&dir.join("none")), "--x", "NOPE").unwrap_err();
        assert!(missing.starts_with("--x "), "{missing}");
        let unset = secret(None, "--x", "VTP_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(unset.contains("VTP_TEST_SURELY_UNSET_VAR"), "{unset}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The bridge while the broker runs: the publisher (a handler) and the ingest thread.
#[derive(Debug, Default)]
pub(crate) struct Bridge {
    #[cfg(feature = "kafka")]
    ingest: Option<vtp_host::kafka::IngestSettings>,
    #[cfg(feature = "kafka")]
    publish: Option<Arc<vtp_host::kafka::Publish>>,
    #[cfg(feature = "kafka")]
    running: Option<vtp_host::kafka::Ingest>,
    /// What it runs with (for the banner and /status).
    #[cfg(feature = "kafka")]
    info: Option<vtp_host::ops::KafkaInfo>,
    /// Extra words for the banner: the publish backlog's bound, test events.
    #[cfg(feature = "kafka")]
    publish_note: String,
}

/// Without the `kafka` feature, a Kafka flag is an error that says so.
#[cfg(not(feature = "kafka"))]
#[derive(Debug)]
pub(crate) struct KafkaPlan;

#[cfg(not(feature = "kafka"))]
pub(crate) fn plan(a: &KafkaArgs, _local_ivo: Option<&str>) -> Result<Option<KafkaPlan>, String> {
    if a.wanted() {
        return Err(
            "this vtp was built without the Kafka bridge (cargo feature `kafka`): rebuild with \
             it, or drop the --kafka-* and --gcn-kafka flags"
                .into(),
        );
    }
    Ok(None)
}

impl Bridge {
    /// Starts the publisher (if any); the ingest starts with [`Bridge::start`].
    ///
    /// # Errors
    ///
    /// Its thread cannot be started.
    #[cfg(feature = "kafka")]
    pub(crate) fn new(plan: Option<KafkaPlan>) -> std::io::Result<Self> {
        let Some(plan) = plan else {
            return Ok(Self::default());
        };
        let info = info(&plan);
        let publish_note = plan.publish.as_ref().map_or_else(String::new, |p| {
            format!(
                " (backlog up to {}{})",
                crate::units::bytes(p.backlog_bytes as u64),
                if p.test_events {
                    ", test events too"
                } else {
                    ""
                }
            )
        });
        let publish = match plan.publish {
            Some(p) => {
                tracing::info!(
                    "kafka: publishing accepted events to {} on {}{}",
                    p.topic,
                    p.config.bootstrap.join(","),
                    if p.test_events {
                        " (test events too)"
                    } else {
                        ""
                    }
                );
                Some(Arc::new(vtp_host::kafka::Publish::spawn(p)?))
            }
            None => None,
        };
        Ok(Self {
            ingest: plan.ingest,
            publish,
            running: None,
            info: Some(info),
            publish_note,
        })
    }

    /// The banner's line for the bridge (never a secret), if it runs.
    #[cfg(feature = "kafka")]
    pub(crate) fn banner(&self) -> Option<String> {
        let info = self.info.as_ref()?;
        let mut line = format!(
            "kafka: bootstrap {}; security {}",
            info.bootstrap.join(","),
            info.security
        );
        if let Some(m) = info.sasl {
            line.push_str(&format!(", SASL {m}"));
        }
        if let Some(c) = &info.consumer {
            line.push_str(&format!(
                "; reading {} as group {} (start {} where the group has no offset)",
                c.topics.join(", "),
                c.group,
                c.start
            ));
        }
        if let Some(t) = &info.publish_topic {
            line.push_str(&format!("; publishing to {t}{}", self.publish_note));
        }
        Some(line)
    }

    #[cfg(not(feature = "kafka"))]
    pub(crate) fn banner(&self) -> Option<String> {
        None
    }

    /// Lets the metrics read the bridge's counters (after [`Bridge::start`]).
    pub(crate) fn attach_metrics(&self, metrics: &vtp_host::ops::Metrics) {
        #[cfg(feature = "kafka")]
        if let Some(info) = &self.info {
            metrics.attach_kafka(
                info.clone(),
                self.running.as_ref().map(vtp_host::kafka::Ingest::stats),
                self.publish.as_ref().map(|p| p.stats()),
            );
        }
        #[cfg(not(feature = "kafka"))]
        let _ = metrics;
    }

    #[cfg(not(feature = "kafka"))]
    pub(crate) fn new(_plan: Option<KafkaPlan>) -> std::io::Result<Self> {
        Ok(Self::default())
    }

    /// The handlers the bridge adds (the publisher), after the ones of the flags.
    pub(crate) fn handlers(&self) -> Vec<Arc<dyn vtp_host::handlers::Handler>> {
        #[cfg(feature = "kafka")]
        if let Some(p) = &self.publish {
            return vec![Arc::new(vtp_host::kafka::PublishHandler(Arc::clone(p)))];
        }
        Vec::new()
    }

    /// The name of the ingest's external source, if it reads Kafka (`kafka TOPICS`).
    pub(crate) fn source_name(&self) -> Option<String> {
        #[cfg(feature = "kafka")]
        if let Some(settings) = &self.ingest {
            return Some(format!("kafka {}", settings.topics.join(",")));
        }
        None
    }

    /// Starts reading, into the loop's inbox through `feeder` (the source of
    /// [`source_name`](Self::source_name)).
    ///
    /// # Errors
    ///
    /// The ingest thread cannot be started.
    #[cfg(feature = "kafka")]
    pub(crate) fn start(&mut self, feeder: vtp_host::external::Feeder) -> std::io::Result<()> {
        if let Some(settings) = self.ingest.take() {
            self.running = Some(vtp_host::kafka::Ingest::spawn(settings, feeder)?);
        }
        Ok(())
    }

    #[cfg(not(feature = "kafka"))]
    pub(crate) fn start(&mut self, _feeder: vtp_host::external::Feeder) -> std::io::Result<()> {
        Ok(())
    }

    /// Stops reading (committing what is durable) and gives the publisher `grace` to send
    /// what waits.
    pub(crate) fn finish(self, grace: Duration) {
        #[cfg(feature = "kafka")]
        {
            drop(self.running);
            if let Some(p) = self.publish
                && let Ok(p) = Arc::try_unwrap(p)
            {
                p.finish(grace);
            }
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (self, grace);
    }
}
