//! SIGHUP on a broker started with `--config FILE`: re-read the file and apply it without
//! dropping a connection (see `vtp_host::reload` for how the request reaches the loop).
//!
//! On the signal thread, [`Reloader::on_hup`] reads the file with the same command line, checks
//! it as a start would ([`broker_plan`](crate::broker_plan)), loads the TLS files and the
//! handlers, and sends the loop a request. On the loop, the node takes the new configuration
//! (or refuses it); then the TLS configurations, the handlers and the log level are swapped,
//! and what needs a restart is logged at WARN. Anything refused is logged at ERROR and the
//! running configuration stays whole: nothing is swapped before the node has said yes.
//! Under systemd, the service manager is told `RELOADING=1` when the signal arrives and
//! `READY=1` once the reload is applied or refused (`vtp_host::notify`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use vtp_core::ListenerRole;
use vtp_core::endpoint::ListenEndpoint;
use vtp_core::node::Fixed;
use vtp_host::handlers::{Handler, HandlerSet};
use vtp_host::net::Bound;
use vtp_host::notify::Notifier;
use vtp_host::reload::{Request, Requester, Swap};
use vtp_host::transport::{ClientTls, ServerTls};

use crate::args::{BrokerArgs, Common};
use crate::{Fail, config_file};

/// What a broker started with `--config` needs to reload.
pub(crate) struct Setup {
    /// The command line (its flags win over the file at every reload).
    pub(crate) argv: Vec<OsString>,
    /// The configuration file.
    pub(crate) file: PathBuf,
    /// The arguments the broker started with: settings that need a restart are compared with
    /// these.
    pub(crate) started: BrokerArgs,
    /// The common options it started with (log level, runtime).
    pub(crate) started_common: Common,
}

/// Prepares reloads on the signal thread and sends them to the loop.
pub(crate) struct Reloader {
    setup: Setup,
    requester: Requester,
    /// The TLS configuration of each listening endpoint, in order.
    server_tls: Vec<Option<Swap<ServerTls>>>,
    client_tls: Option<Swap<ClientTls>>,
    /// The running handlers (none when the broker started without any).
    handlers: Option<HandlerSet>,
    /// The broker started with a handler spool.
    spooling: bool,
    /// The service manager, told `RELOADING=1` before each reload and `READY=1` (with
    /// `status`) after it, applied or refused.
    notifier: Option<Arc<Notifier>>,
    status: String,
    /// Handlers the flags do not make (the Kafka publisher): kept after every reload.
    kept: Vec<Arc<dyn Handler>>,
}

impl Reloader {
    pub(crate) fn new(
        setup: Setup,
        requester: Requester,
        bound: &Bound,
        handlers: Option<HandlerSet>,
        spooling: bool,
    ) -> Self {
        Self {
            setup,
            requester,
            server_tls: bound.endpoint_tls().to_vec(),
            client_tls: bound.client_tls().cloned(),
            handlers,
            spooling,
            notifier: None,
            status: String::new(),
            kept: Vec::new(),
        }
    }

    /// Tells `notifier` (the service manager) of each reload: `RELOADING=1`, then `READY=1`
    /// with `status` once it is applied or refused.
    pub(crate) fn notifying(mut self, notifier: Option<Arc<Notifier>>, status: String) -> Self {
        self.notifier = notifier;
        self.status = status;
        self
    }

    /// Keeps `handlers` (made from no flag of the file: the Kafka publisher) after the ones
    /// a reload makes.
    pub(crate) fn keeping(mut self, handlers: Vec<Arc<dyn Handler>>) -> Self {
        self.kept = handlers;
        self
    }

    /// SIGHUP: prepares a reload and sends it to the loop, or logs why not.
    pub(crate) fn on_hup(&mut self) {
        let file = self.setup.file.display().to_string();
        tracing::info!("SIGHUP: reloading {file}");
        if let Some(n) = &self.notifier {
            n.reloading();
        }
        match self.prepare() {
            Ok(request) => {
                self.requester.send(request);
            }
            Err(msg) => {
                tracing::error!("reload of {file} refused: {msg}; the running configuration stays");
                if let Some(n) = &self.notifier {
                    n.ready(&refused(&self.status));
                }
            }
        }
    }

    fn prepare(&self) -> Result<Request, String> {
        let started = &self.setup.started;
        let (new, common) = config_file::broker_args(&self.setup.argv, &self.setup.file)?;
        let plan = crate::broker_plan(&new, true).map_err(|Fail(_, msg)| msg)?;
        let mut restart = Vec::new();
        // Listeners: kept as they are; their TLS files are read again (renewed certificates).
        let was = crate::listen_endpoints(started).map_err(|Fail(_, msg)| msg)?;
        let listeners = if same_sockets(&was, &plan.listeners) {
            plan.listeners.clone()
        } else {
            restart.push("--receive / --broadcast (listening endpoints)");
            // The identities must still fit the listeners that keep running.
            crate::check_identity_listeners(&plan.config, &was).map_err(|Fail(_, msg)| msg)?;
            was
        };
        let mut server_tls = Vec::new();
        for ((_, ep), swap) in listeners.iter().zip(&self.server_tls) {
            if let (Some(config), Some(swap)) = (load_tls(ep)?, swap) {
                server_tls.push((swap.clone(), config));
            }
        }
        let client_tls = match (&self.client_tls, plan.client_tls) {
            (Some(swap), Some(config)) => Some((swap.clone(), config)),
            _ => None,
        };
        let handlers = self.handlers(&new)?;
        if new.handling.handler_spool_bytes != started.handling.handler_spool_bytes {
            restart.push("--handler-spool-bytes");
        }
        if new.handling.handler_queue_bytes != started.handling.handler_queue_bytes
            && self.handlers.is_none()
        {
            restart.push("--handler-queue-bytes (the broker started without handlers)");
        }
        if new.eventdb != started.eventdb {
            restart.push("--eventdb");
        }
        if common.runtime != self.setup.started_common.runtime {
            restart.push("--runtime");
        }
        if common.log_format != self.setup.started_common.log_format {
            restart.push("--log-format");
        }
        if new.outbox_bytes != started.outbox_bytes {
            restart.push("--outbox-bytes");
        }
        if new.kafka != started.kafka {
            restart.push("--kafka-* / --gcn-kafka (the Kafka bridge)");
        }
        if new.catch_up != started.catch_up {
            restart.push("--catch-up / --catch-up-start");
        }
        if new.ops.http != started.ops.http {
            restart.push("--http");
        }
        if new.ops.archive != started.ops.archive {
            restart.push("--archive* / --http-token-file");
        }
        if new.ops.stats_interval != started.ops.stats_interval {
            restart.push("--stats-interval");
        }
        let mut config = plan.config;
        if self.spooling {
            config.policy.delivery_timing = vtp_core::config::DeliveryTiming::BeforeRecord;
        }
        let level = crate::log_level(&common);
        let queue_bytes = new.handling.handler_queue_bytes;
        let set = self.handlers.clone();
        let file = self.setup.file.display().to_string();
        let notify = self.notifier.clone().map(|n| (n, self.status.clone()));
        let keys = plan.signing.keys;
        let signing = (plan.signing.verifier, plan.signing.signer);
        let request = Request::new(config, move |answer| {
            let done = match answer {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(
                        "reload of {file} refused: {}; the running configuration stays",
                        crate::config_error(&e)
                    );
                    if let Some((n, status)) = &notify {
                        n.ready(&refused(status));
                    }
                    return;
                }
            };
            for (swap, config) in server_tls {
                swap.store(config);
            }
            if let Some((swap, config)) = client_tls {
                swap.store(config);
            }
            if let (Some(set), Some(list)) = (&set, handlers) {
                set.replace(list);
                set.set_queue_bytes(queue_bytes);
            }
            if let Some(old) = crate::set_log_level(level)
                && old != level
            {
                tracing::info!("log level {old} -> {level}");
            }
            for flag in restart {
                tracing::warn!("{flag} changed: needs a restart (the running value stays)");
            }
            for fixed in &done.ignored {
                tracing::warn!(
                    "{} changed: needs a restart (the running value stays)",
                    fixed_flag(*fixed)
                );
            }
            tracing::info!("configuration reloaded from {file} ({keys} trusted keys)");
            if let Some((n, status)) = &notify {
                n.ready(status);
            }
        });
        Ok(request.with_signatures(signing.0, signing.1))
    }

    /// The new handlers, when the broker runs a handler pool; adding handlers to a broker
    /// started without any needs a restart (`None` then, with a warning).
    fn handlers(&self, new: &BrokerArgs) -> Result<Option<Vec<Arc<dyn Handler>>>, String> {
        let mut list = crate::handler_list(&new.handling, false, false).map_err(|Fail(_, m)| m)?;
        if self.handlers.is_none() && !list.is_empty() {
            tracing::warn!(
                "--print-event / --save-event / --cmd: handlers added to a broker started \
                 without any: needs a restart"
            );
            return Ok(None);
        }
        list.extend(self.kept.iter().cloned());
        Ok(Some(list))
    }
}

/// The status line after a refused reload.
fn refused(status: &str) -> String {
    format!("{status} (the last reload was refused: see the log)")
}

/// The same sockets: each endpoint's role and address, and whether it speaks TLS (its files
/// may change).
fn same_sockets(
    a: &[(ListenerRole, ListenEndpoint)],
    b: &[(ListenerRole, ListenEndpoint)],
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ra, ea), (rb, eb))| {
            ra == rb && ea.addr == eb.addr && ea.tls.is_some() == eb.tls.is_some()
        })
}

fn load_tls(ep: &ListenEndpoint) -> Result<Option<ServerTls>, String> {
    vtp_host::net::load_server_tls(ep).map_err(|e| e.to_string())
}

/// The flag behind a setting the node keeps.
fn fixed_flag(fixed: Fixed) -> &'static str {
    match fixed {
        Fixed::LocalIvo => "--local-ivo",
        Fixed::Upstreams => "--subscribe",
        Fixed::SeenEntriesMax => "--seen-max",
        Fixed::Durability => "--durability",
        Fixed::DeliveryTiming => "--handler-spool-bytes",
        _ => "a node setting",
    }
}
