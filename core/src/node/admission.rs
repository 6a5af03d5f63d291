//! Who may connect: the checks of [`Node::handle_accept`] and [`Node::handle_accept_tls`]
//! (local IVOID, connection limit, whitelist, per-address limits, certificate identities
//! required of the role, concurrent TLS handshakes), the per-address counts, and the rate limit
//! on reporting refusals.
//!
//! A refusal is counted by cause ([`Node::refusals`]). The first
//! [`Limits::refusals_logged_max`] of a window of [`Limits::refusals_window`] are reported as
//! [`Event::Refused`]; the rest are counted in the window and reported together as one
//! [`Event::RefusalsSuppressed`] when it ends (a timer), when a refusal after its end opens
//! the next one, or at shutdown.
//!
//! [`Limits::refusals_logged_max`]: crate::config::Limits::refusals_logged_max
//! [`Limits::refusals_window`]: crate::config::Limits::refusals_window

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Node, TimerKey};
use crate::output::{Event, ListenerRole, Peer, RefusalCause as Cause, RefusalCounts};

/// Why an accept is refused.
#[derive(Debug)]
pub(super) struct Refusal {
    cause: Cause,
    /// The text of [`Event::Refused`].
    reason: String,
}

/// The current refusal window.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// When the window began: at the first refusal after the previous one ended.
    since: Option<Instant>,
    /// Refusals reported as [`Event::Refused`] in the window.
    reported: u32,
    /// Refusals counted but not reported in the window.
    suppressed: RefusalCounts,
}

impl Node {
    /// The local IVOID the new connection will use, or why it is refused.
    pub(super) fn admit(
        &self,
        listener: ListenerRole,
        peer: Peer,
        tls: bool,
    ) -> Result<Arc<str>, Refusal> {
        let refuse = |cause, reason: String| Err(Refusal { cause, reason });
        if self.shut_down {
            return refuse(Cause::Other, "node is shutting down".into());
        }
        let Some(local_ivo) = self.local_ivo.clone() else {
            return refuse(
                Cause::Other,
                "no local IVOID configured: a broker needs --local-ivo to receive or broadcast"
                    .into(),
            );
        };
        let limits = &self.config.limits;
        let (open, what, whitelist, per_address, flag) = match listener {
            ListenerRole::Receive => (
                self.served,
                "author",
                &self.config.author_whitelist,
                limits.author_connections_per_address,
                "--author-connections-per-address",
            ),
            ListenerRole::Broadcast => (
                self.feeds,
                "subscriber",
                &self.config.subscriber_whitelist,
                limits.subscriber_connections_per_address,
                "--subscriber-connections-per-address",
            ),
        };
        if open >= limits.connections_max {
            return refuse(
                Cause::ConnectionsMax,
                format!(
                    "connection limit reached ({} {what} connections; --max-connections)",
                    limits.connections_max
                ),
            );
        }
        if let Some(ip) = peer.ip()
            && !whitelist.allows(ip)
        {
            let attempt = match listener {
                ListenerRole::Receive => "submission",
                ListenerRole::Broadcast => "subscription",
            };
            return refuse(
                Cause::Whitelist,
                format!("attempted {attempt} from non-whitelisted {ip}"),
            );
        }
        if let Some(net) = peer.network() {
            let held = self.per_address.get(&(listener, net)).copied().unwrap_or(0);
            if held >= per_address {
                let net = match net {
                    IpAddr::V4(_) => net.to_string(),
                    IpAddr::V6(_) => format!("{net}/64"),
                };
                return refuse(
                    Cause::PerAddress,
                    format!(
                        "per-address limit reached: {net} holds {held} {what} connections \
                         ({flag} {per_address})"
                    ),
                );
            }
        }
        if !tls {
            let (rules, flag) = self.identity_rules(listener);
            if !rules.is_empty() {
                return refuse(
                    Cause::Other,
                    format!(
                        "plain connection on a listener whose role requires a certificate \
                         identity ({flag}); connect with TLS and a client certificate"
                    ),
                );
            }
        } else if self.handshakes >= limits.handshakes_max {
            return refuse(
                Cause::Handshakes,
                format!(
                    "TLS handshake limit reached ({} handshakes in progress; --tls-handshakes-max)",
                    limits.handshakes_max
                ),
            );
        }
        Ok(local_ivo)
    }

    /// Counts a refused accept and reports it, within the window's limit.
    pub(super) fn refuse(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        refusal: Refusal,
        now: Instant,
    ) {
        self.refusals.add(refusal.cause);
        let window = self.config.limits.refusals_window;
        if self
            .refusal_log
            .since
            .is_none_or(|since| now >= since + window)
        {
            // The previous window is over: what it suppressed is reported before this.
            self.report_suppressed_refusals();
            self.refusal_log.since = Some(now);
            self.refusal_log.reported = 0;
        }
        let log = &mut self.refusal_log;
        if log.reported < self.config.limits.refusals_logged_max {
            log.reported += 1;
            self.events.push_back(Event::Refused {
                listener,
                peer,
                cause: refusal.cause,
                reason: refusal.reason,
            });
            return;
        }
        if log.suppressed.total() == 0
            && let Some(since) = log.since
        {
            self.timers.set(TimerKey::RefusalReport, since + window);
        }
        log.suppressed.add(refusal.cause);
    }

    /// Reports the refusals the window counted but did not report, if any.
    pub(super) fn report_suppressed_refusals(&mut self) {
        self.timers.cancel(TimerKey::RefusalReport);
        let counts = std::mem::take(&mut self.refusal_log.suppressed);
        if counts.total() > 0 {
            self.events.push_back(Event::RefusalsSuppressed {
                counts,
                window: self.config.limits.refusals_window,
            });
        }
    }

    /// Counts a connection accepted on `listener` from `peer` against its network.
    pub(super) fn hold_address(&mut self, listener: ListenerRole, peer: Peer) {
        if let Some(net) = peer.network() {
            *self.per_address.entry((listener, net)).or_insert(0) += 1;
        }
    }

    /// Releases what [`Node::hold_address`] counted, when the connection is gone.
    pub(super) fn release_address(&mut self, listener: ListenerRole, peer: Option<Peer>) {
        let Some(net) = peer.and_then(Peer::network) else {
            return;
        };
        if let Some(held) = self.per_address.get_mut(&(listener, net)) {
            *held -= 1;
            if *held == 0 {
                self.per_address.remove(&(listener, net));
            }
        }
    }
}
