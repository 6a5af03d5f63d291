//! The operator side of `vtp broker` and `vtp listen`: the metrics the loop counts into, the
//! stats line, and the HTTP endpoint (`--http`).

use std::time::Duration;

use vtp_core::ListenerRole;
use vtp_core::config::Config;
use vtp_host::handlers::HandlersProbe;
use vtp_host::net::Bound;
use vtp_host::ops::stats::StatsLine;
use vtp_host::ops::{ListenerInfo, Metrics, NodeInfo, Observer};
use vtp_host::store::StoreProbe;

use crate::args::Operations;
use crate::{Fail, FilterCounters, usage};

/// What runs beside the node; stops when dropped.
pub(crate) struct Ops {
    /// What the loop counts into (its liveness for the systemd watchdog).
    pub(crate) metrics: Metrics,
    #[cfg(feature = "http")]
    _http: Option<vtp_host::ops::http::HttpServer>,
    _stats: Option<StatsLine>,
}

/// Starts the stats line and the HTTP endpoint for a node (`role`: `broker` or `listener`)
/// serving `bound` with `config` (its IVO, its upstreams); returns them and the observer for
/// the effects.
pub(crate) fn start(
    args: &Operations,
    role: &'static str,
    bound: &Bound,
    config: &Config,
    probes: (Option<StoreProbe>, Option<HandlersProbe>),
    filters: &FilterCounters,
    bridge: &crate::kafka::Bridge,
) -> Result<(Ops, Observer), Fail> {
    let listeners = bound
        .addrs()
        .into_iter()
        .map(|(r, address)| {
            let (address, tls) = match address.strip_prefix("tls:") {
                Some(a) => (a.to_owned(), true),
                None => (address, false),
            };
            ListenerInfo {
                serves: match r {
                    ListenerRole::Receive => "authors",
                    ListenerRole::Broadcast => "subscribers",
                },
                address,
                tls,
            }
        })
        .collect();
    let info = NodeInfo {
        role,
        ivo: config.local_ivo.clone(),
        listeners,
        upstreams: config
            .upstreams
            .iter()
            .map(|u| u.endpoints.iter().map(ToString::to_string).collect())
            .collect(),
    };
    let (metrics, observer) = Metrics::new(info);
    if let Some(p) = probes.0 {
        metrics.attach_store(p);
    }
    if let Some(p) = probes.1 {
        metrics.attach_handlers(p);
    }
    filters.attach(&metrics);
    bridge.attach_metrics(&metrics);
    #[cfg(not(feature = "http"))]
    http_unavailable(args)?;
    let stats = match args.stats_interval {
        0 => None,
        secs => Some(StatsLine::spawn(
            metrics.clone(),
            Duration::from_secs(secs),
        )?),
    };
    Ok((
        Ops {
            metrics: metrics.clone(),
            #[cfg(feature = "http")]
            _http: http(args, metrics)?,
            _stats: stats,
        },
        observer,
    ))
}

#[cfg(feature = "http")]
fn http(
    args: &Operations,
    metrics: Metrics,
) -> Result<Option<vtp_host::ops::http::HttpServer>, Fail> {
    use vtp_host::ops::http::{HttpLimits, HttpServer};
    let Some(addr) = args.http else {
        return Ok(None);
    };
    let server = HttpServer::start(addr, metrics, HttpLimits::default())
        .map_err(|e| usage(format!("--http {addr}: {e}")))?;
    let addr = server.local_addr();
    tracing::info!("HTTP endpoint on http://{addr}: / (status page), /metrics, /healthz, /status");
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "--http {addr} is not a loopback address: anyone who reaches it reads the metrics \
             and /status (subscribers' addresses); there is no authentication"
        );
    }
    Ok(Some(server))
}

#[cfg(not(feature = "http"))]
fn http_unavailable(args: &Operations) -> Result<(), Fail> {
    match args.http {
        Some(_) => Err(usage(
            "--http needs a build with the HTTP endpoint (cargo feature `http`)",
        )),
        None => Ok(()),
    }
}
