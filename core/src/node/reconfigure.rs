//! A new configuration at run time (a reload): what a running node takes, and what it keeps.
//!
//! [`Node::reconfigure`] validates the whole new [`Config`] as [`Node::new`] does; a config the
//! node cannot run with is refused and the node keeps the old one, unchanged. Otherwise every
//! setting that can change without dropping a connection is taken at once, and the few that
//! cannot are kept at their old values and named in [`Reconfigured::ignored`] (the caller
//! reports them: they need a restart). [`Node::reconfigure`] has the table of what applies
//! when.

use std::time::Instant;

use crate::config::{Config, IAMALIVE_PERIOD_MAX};
use crate::ivoid::Ivoid;

use super::{ConfigError, Node, TimerKey};

/// What [`Node::reconfigure`] did with a new configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
#[must_use]
pub struct Reconfigured {
    /// Settings whose new value differs from the running one but cannot change while the node
    /// runs: the node keeps the old value; a restart applies the new one. In the order of
    /// [`Fixed`]'s variants.
    pub ignored: Vec<Fixed>,
}

/// A setting fixed for the life of a node: [`Node::reconfigure`] keeps its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fixed {
    /// [`Config::local_ivo`]: receipts and iamalives of open connections name the node.
    LocalIvo,
    /// [`Config::product`].
    Product,
    /// [`Config::upstreams`]: each upstream owns its connection and back-off.
    Upstreams,
    /// [`Timing::backoff`](crate::config::Timing::backoff): the upstreams' back-offs are built
    /// with it.
    Backoff,
    /// [`Limits::seen_entries_max`](crate::config::Limits::seen_entries_max): the seen-index
    /// is sized with it.
    SeenEntriesMax,
    /// [`Limits::seen_sources_max`](crate::config::Limits::seen_sources_max): likewise.
    SeenSourcesMax,
    /// [`Policy::durability`](crate::config::Policy::durability): output held for durable
    /// records follows it.
    Durability,
    /// [`Policy::delivery_timing`](crate::config::Policy::delivery_timing): the host's handler
    /// spool relies on it.
    DeliveryTiming,
}

impl Node {
    /// Runs with `new` from now on, keeping every connection open: the settings that can
    /// change live are taken, the others keep their running values and are listed in
    /// [`Reconfigured::ignored`]. May arm timers: drain the node's output afterwards as after
    /// any command.
    ///
    /// | setting | when a new value applies |
    /// |---|---|
    /// | whitelists, identities, connection limits, handshake and intake deadlines, frame limit | connections accepted from now on; open ones are kept as they are |
    /// | the node's own filters | the next authenticate reply to each upstream (at the next connection, or when an upstream asks again) |
    /// | policy switches (duplicate reply, subscriber nak, versions, schema, invalid filters, signatures), author-key bindings | the next message they concern |
    /// | iamalive period, test-event interval, prune interval | at once: the pending tick is brought forward when the new period is shorter |
    /// | retention, silence, receipt and violation settings, parse limits | the next time they are checked |
    /// | local IVOID, product, upstreams, back-off, seen-index sizes, durability, delivery timing | not at run time: [`Fixed`] |
    ///
    /// # Errors
    ///
    /// [`ConfigError`], as [`Node::new`] would refuse `new`: the node keeps its configuration,
    /// unchanged.
    pub fn reconfigure(&mut self, new: Config, now: Instant) -> Result<Reconfigured, ConfigError> {
        self.advance(now);
        validate(&new)?;
        let mut new = new;
        let old = &self.config;
        let mut ignored = Vec::new();
        macro_rules! keep {
            ($variant:ident, $($field:ident).+) => {
                if new.$($field).+ != old.$($field).+ {
                    ignored.push(Fixed::$variant);
                    new.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(LocalIvo, local_ivo);
        keep!(Product, product);
        keep!(Upstreams, upstreams);
        keep!(Backoff, timing.backoff);
        keep!(SeenEntriesMax, limits.seen_entries_max);
        keep!(SeenSourcesMax, limits.seen_sources_max);
        keep!(Durability, policy.durability);
        keep!(DeliveryTiming, policy.delivery_timing);
        if !self.shut_down {
            self.retime(&new, now);
        }
        self.config = new;
        Ok(Reconfigured { ignored })
    }

    /// Re-arms the node-wide ticks whose period changes: a shorter period brings the pending
    /// tick forward (never later than it was due), a longer one applies from the next tick.
    fn retime(&mut self, new: &Config, now: Instant) {
        let old = &self.config.timing;
        let sooner = |timers: &mut crate::timer::Timers<TimerKey>, key, at: Instant| {
            if timers.deadline(key).is_none_or(|due| at < due) {
                timers.set(key, at);
            }
        };
        if new.timing.iamalive_period != old.iamalive_period {
            sooner(
                &mut self.timers,
                TimerKey::IamaliveTick,
                now + new.timing.iamalive_period,
            );
        }
        if new.timing.prune_interval != old.prune_interval {
            sooner(
                &mut self.timers,
                TimerKey::Prune,
                now + new.timing.prune_interval,
            );
        }
        match (old.test_event_interval, new.timing.test_event_interval) {
            (_, None) => self.timers.cancel(TimerKey::TestEvent),
            // Turned on: the first test event goes out now, as at start.
            (None, Some(_)) => self.timers.set(TimerKey::TestEvent, now),
            (Some(a), Some(b)) if a != b => sooner(&mut self.timers, TimerKey::TestEvent, now + b),
            (Some(_), Some(_)) => {}
        }
    }
}

/// Whether a node can run with `config` (see [`Node::new`]'s errors).
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    if let Some(ivo) = &config.local_ivo {
        Ivoid::parse(ivo).map_err(|e| ConfigError::LocalIvo {
            ivo: ivo.clone(),
            reason: e.to_string(),
        })?;
    }
    let period = config.timing.iamalive_period;
    if period.is_zero() || period > IAMALIVE_PERIOD_MAX {
        return Err(ConfigError::IamalivePeriod { given: period });
    }
    for (index, f) in config.filters.iter().enumerate() {
        if f.len() > config.limits.filter_len_max {
            return Err(ConfigError::FilterTooLong {
                index,
                len: f.len(),
                max: config.limits.filter_len_max,
            });
        }
    }
    if let Some(i) = config.upstreams.iter().position(|u| u.endpoints.is_empty()) {
        return Err(ConfigError::EmptyUpstream(i));
    }
    Ok(())
}
