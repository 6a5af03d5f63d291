//! The start-up banner: what this process runs with, logged at INFO once the configuration is
//! known valid, before the "listening for ..." lines that name the bound addresses.
//!
//! ```text
//! vtp 0.1.0 starting (runtime tokio): local IVO ivo://example.org/broker
//! authors: plain 0.0.0.0:8098; TLS tls:8443 (certificate cert.pem, client certificates verified against ca.pem); whitelist everyone; at most 32 connections per address
//! subscribers: plain tcp:8099; whitelist 10.0.0.0/8; at most 64 connections per address
//! event database /var/lib/vtp, durability before-reply (acks and forwards wait for the record on disk); seen-index up to 500000 events for 30 days
//! upstreams: tls:gcn.example:8099
//! handlers: save-event to /srv/events; cmd /usr/local/bin/alert (timeout 30 s); kafka-publish; handler spool up to 256 MiB
//! kafka: bootstrap kafka.gcn.nasa.gov:9092; security sasl_ssl, SASL OAUTHBEARER; reading gcn.classic.voevent.* as group vtp.example.org.broker (start latest where the group has no offset); publishing to vtp.events (backlog up to 64 MiB)
//! filters sent upstream: none
//! ```

use std::path::Path;

use clap::ValueEnum;
use vtp_core::config::Durability;
use vtp_core::endpoint::{ListenAddr, ListenEndpoint};
use vtp_core::identity::IdentityRule;
use vtp_core::whitelist::Whitelist;
use vtp_core::{Config, ListenerRole};

use crate::args::{Handling, Runtime};
use crate::units::bytes;

/// What a node runs with: the banner's inputs.
pub(crate) struct Banner<'a> {
    /// The configuration, validated.
    pub(crate) config: &'a Config,
    /// The listeners, as configured (the bound addresses are logged when they are bound).
    pub(crate) listeners: &'a [(ListenerRole, ListenEndpoint)],
    /// The event handlers.
    pub(crate) handling: &'a Handling,
    /// The event database directory, if any.
    pub(crate) eventdb: Option<&'a Path>,
    /// The handler spool's bound in bytes (0: none).
    pub(crate) spool_bytes: u64,
    /// The runtime.
    pub(crate) runtime: Runtime,
    /// Handlers no flag of `handling` names (the Kafka publisher).
    pub(crate) bridged: &'a [std::sync::Arc<dyn vtp_host::handlers::Handler>],
    /// The Kafka bridge's line, if it runs.
    pub(crate) kafka: Option<String>,
}

impl Banner<'_> {
    /// Logs the banner, one INFO line per topic.
    pub(crate) fn log(&self) {
        for line in self.lines() {
            tracing::info!("{line}");
        }
    }

    /// The banner's lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        let c = self.config;
        let runtime = self
            .runtime
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        let mut lines = vec![format!(
            "vtp {} starting (runtime {runtime}): local IVO {}",
            env!("CARGO_PKG_VERSION"),
            c.local_ivo.as_deref().unwrap_or("none")
        )];
        for role in [ListenerRole::Receive, ListenerRole::Broadcast] {
            if let Some(line) = self.role_line(role) {
                lines.push(line);
            }
        }
        lines.push(self.store_line());
        let upstreams: Vec<String> = c
            .upstreams
            .iter()
            .map(|u| {
                let endpoints: Vec<String> = u.endpoints.iter().map(ToString::to_string).collect();
                endpoints.join(" or ")
            })
            .collect();
        lines.push(format!("upstreams: {}", list(&upstreams)));
        lines.push(format!("handlers: {}", self.handlers()));
        lines.extend(self.kafka.clone());
        let filters: Vec<String> = c.filters.iter().map(|f| format!("{f:?}")).collect();
        lines.push(format!("filters sent upstream: {}", list(&filters)));
        lines
    }

    /// The listeners of a role, its whitelist, identities and per-address limit; `None` when
    /// the role has no listener.
    fn role_line(&self, role: ListenerRole) -> Option<String> {
        let c = self.config;
        let (who, whitelist, identities, per_address) = match role {
            ListenerRole::Receive => (
                "authors",
                &c.author_whitelist,
                &c.author_identities,
                c.limits.author_connections_per_address,
            ),
            ListenerRole::Broadcast => (
                "subscribers",
                &c.subscriber_whitelist,
                &c.subscriber_identities,
                c.limits.subscriber_connections_per_address,
            ),
        };
        let endpoints: Vec<String> = self
            .listeners
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, e)| listener(e))
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let mut line = format!(
            "{who}: {}; whitelist {}; at most {per_address} connections per address",
            endpoints.join("; "),
            nets(whitelist)
        );
        if !identities.is_empty() {
            let ids: Vec<String> = identities.iter().map(IdentityRule::to_string).collect();
            line.push_str(&format!("; certificate identities {}", ids.join(", ")));
        }
        Some(line)
    }

    fn store_line(&self) -> String {
        let c = self.config;
        let seen = format!(
            "seen-index up to {} events for {} days",
            c.limits.seen_entries_max,
            c.timing.seen_retention.as_secs() / 86_400
        );
        let Some(dir) = self.eventdb else {
            return format!("event database: none (in memory only); {seen}");
        };
        let durability = match c.policy.durability {
            Durability::BeforeReply => {
                "before-reply (acks and forwards wait for the record on disk)"
            }
            Durability::Async => "async (acks and forwards do not wait for the disk)",
        };
        format!(
            "event database {}, durability {durability}; {seen}",
            dir.display()
        )
    }

    fn handlers(&self) -> String {
        let h = self.handling;
        let mut parts = Vec::new();
        if h.print_event {
            parts.push("print-event".to_owned());
        }
        if h.save_event || h.save_event_directory.is_some() {
            parts.push(match &h.save_event_directory {
                Some(dir) => format!("save-event to {}", dir.display()),
                None => "save-event to the current directory".to_owned(),
            });
            if h.save_event_skip_test {
                parts.push("save-event skips test events".to_owned());
            }
        }
        for cmd in &h.cmd {
            parts.push(format!("cmd {cmd} (timeout {} s)", h.cmd_timeout));
        }
        if let Some(format) = h.stdout {
            parts.push(match format {
                crate::args::StdoutFormat::Xml0 => "stdout as xml0 (NUL-separated)".to_owned(),
                crate::args::StdoutFormat::Jsonl => "stdout as jsonl".to_owned(),
            });
        }
        parts.extend(self.bridged.iter().map(|h| h.name().to_owned()));
        if parts.is_empty() {
            return "none".to_owned();
        }
        if self.spool_bytes > 0 {
            parts.push(format!("handler spool up to {}", bytes(self.spool_bytes)));
        }
        parts.join("; ")
    }
}

/// A listener as configured: `plain 127.0.0.1:8098`, `TLS tls:8443 (certificate ..., client
/// certificates verified against ...)`, `Unix socket unix:/run/vtp.sock`.
fn listener(e: &ListenEndpoint) -> String {
    match (&e.tls, &e.addr) {
        (None, ListenAddr::Unix(_)) => format!("Unix socket {e} (no IP whitelist)"),
        (None, _) => format!("plain {e}"),
        (Some(tls), _) => {
            let clients = match &tls.client_ca {
                Some(ca) => format!("client certificates verified against {}", ca.display()),
                None => "no client certificates asked".to_owned(),
            };
            format!(
                "TLS {e} (certificate {}, {clients})",
                tls.cert_key.display()
            )
        }
    }
}

/// A whitelist: `everyone`, or its networks.
fn nets(w: &Whitelist) -> String {
    if *w == Whitelist::allow_all() {
        return "everyone".to_owned();
    }
    let nets: Vec<String> = w.nets().iter().map(ToString::to_string).collect();
    list(&nets)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
