//! The operator endpoint (`--http ADDR:PORT`): `GET /` (the status page, HTML: see
//! [`super::page`]), `GET /metrics` (Prometheus text), `GET /healthz` (200 or 503 with the
//! reason) and `GET /status` (JSON).
//!
//! # Theory of operation
//!
//! hyper's HTTP/1 server on a current-thread tokio runtime of its own thread (`vtp-http`),
//! whichever runtime drives the node: it only reads the [`Metrics`] (atomics, the status board
//! a chunk at a time, the store's and handlers' probes), so a scrape never waits for the
//! event loop nor makes it wait. `/healthz` may wake the loop once (see
//! [`Metrics::health`](super::Metrics::health)).
//!
//! Bounds, from [`HttpLimits`]: at most `connections_max` connections at once (more are
//! closed as soon as they are accepted); one request per connection (no keep-alive); a
//! request head (request line and headers) of at most `head_bytes_max` bytes (hyper answers
//! 431 beyond it; a path over [`PATH_MAX`] bytes gets 414); the head must arrive within
//! `header_read_timeout` and the whole exchange finish within `request_timeout`, or the
//! connection is dropped. Only `GET` and `HEAD` are served (405 otherwise, with `Allow`); a
//! request body is never read; unknown paths get 404.
//!
//! The status page shows what peers wrote (IVORNs, streams), escaped; it is served with a
//! Content-Security-Policy that allows no script, no external asset and no frame
//! ([`PAGE_CSP`]), so even a mistake in the escaping could not run anything. It is rendered
//! (and the archive read) on tokio's blocking pool, so a slow archive never holds the other
//! requests.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

pub use super::render::STATUS_SUBSCRIBERS_MAX;
use super::{Health, Metrics};

/// The limits of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Connections served at once (default 16).
    pub connections_max: usize,
    /// Bytes of a request's head (default 16 KiB; hyper's floor is 8 KiB).
    pub head_bytes_max: usize,
    /// Time for a request's head to arrive (default 5 s).
    pub header_read_timeout: Duration,
    /// Time for a whole exchange (default 10 s).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            connections_max: 16,
            head_bytes_max: 16 * 1024,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The status page's Content-Security-Policy: inline styles and `data:` images, nothing else.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                            base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Longest path served, in bytes (longer ones get 414).
pub const PATH_MAX: usize = 256;

pub use super::LOOP_STUCK_AFTER;

/// The running endpoint; stops (and joins its thread) when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` now (so that a bad address or a port in use is reported at start) and
    /// serves `metrics` on a thread of its own.
    ///
    /// # Errors
    ///
    /// If the address cannot be bound, or the thread or its runtime cannot be started.
    pub fn start(addr: SocketAddr, metrics: Metrics, limits: HttpLimits) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let stop = Arc::new(Notify::new());
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("vtp-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => serve(l, metrics, limits, &stopped).await,
                        Err(e) => tracing::error!("HTTP endpoint: cannot serve {addr}: {e}"),
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts until `stop` is notified; each connection is served on a task of its own.
async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    limits: HttpLimits,
    stop: &Notify,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(false)
        .max_buf_size(limits.head_bytes_max.max(8192))
        .max_headers(64)
        .header_read_timeout(limits.header_read_timeout)
        .timer(TokioTimer::new());
    loop {
        let accepted = {
            let mut accept = pin!(listener.accept());
            let mut stopped = pin!(stop.notified());
            poll_fn(|cx| {
                if stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                accept.as_mut().poll(cx).map(Some)
            })
            .await
        };
        let stream = match accepted {
            None => return,
            Some(Ok((stream, _))) => stream,
            Some(Err(e)) => {
                // Out of descriptors, most likely: do not spin.
                tracing::debug!("HTTP endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= limits.connections_max {
            tracing::debug!(
                "HTTP endpoint: {} connections open; closing a new one",
                limits.connections_max
            );
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let guard = Active(Arc::clone(&active));
        let metrics = metrics.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics).await) }
            }),
        );
        let timeout = limits.request_timeout;
        tokio::spawn(async move {
            let _guard = guard;
            // A peer too slow (or an error) just loses its connection.
            let _ = tokio::time::timeout(timeout, conn).await;
        });
    }
}

/// Counts a connection out when its task ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path.len() > PATH_MAX {
        return text(StatusCode::URI_TOO_LONG, "path too long\n".into());
    }
    let known = matches!(path, "/" | "/metrics" | "/healthz" | "/status");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try / (the status page), /metrics, /healthz or /status\n".into(),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (and HEAD) are served\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, super::render::prometheus(metrics));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        "/healthz" => match health(metrics).await {
            Health::Ok => text(StatusCode::OK, "ok\n".into()),
            unhealthy => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {unhealthy}\n"),
            ),
        },
        "/status" => {
            let health = health(metrics).await;
            let mut r = text(StatusCode::OK, super::render::status(metrics, &health));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => page(metrics).await,
    }
}

/// The status page (`/`).
async fn page(metrics: &Metrics) -> Response<Full<Bytes>> {
    let health = health(metrics).await;
    let m = metrics.clone();
    let now = super::unix_ms_now();
    let rendered = tokio::task::spawn_blocking(move || super::page::page(&m, &health, now)).await;
    let Ok(body) = rendered else {
        tracing::warn!("HTTP endpoint: the status page could not be rendered");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the status page could not be rendered (see the node's log)\n".into(),
        );
    };
    let mut r = text(StatusCode::OK, body);
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// The node's health; a loop idle for a while is woken first and given
/// [`LOOP_STUCK_AFTER`] to turn.
async fn health(metrics: &Metrics) -> Health {
    let probe = metrics.probe_loop(LOOP_STUCK_AFTER);
    while probe.verdict(metrics).is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    metrics.health(LOOP_STUCK_AFTER)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
