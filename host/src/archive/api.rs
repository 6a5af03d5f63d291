//! The archive's HTTP API on the operator endpoint, and who may read it.
//!
//! - `GET /api/events?after=&since=&until=&role=&stream=&ivorn=&cone=&limit=&include=payload`:
//!   JSON, ascending `seq`, paged by `after`;
//! - `GET /api/events/SEQ` and `GET /api/event?ivorn=IVORN`: the exact bytes
//!   (`application/xml`, headers `X-Vtp-Seq` and `X-Vtp-Ivorn`).
//!
//! Errors: 400 `{"error": ...}` naming the parameter, 403 when the client may not read the
//! archive, 404 for an unknown event, 503 when a query ran out of time or the database
//! failed.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;
use vtp_core::whitelist::Whitelist;

use super::Readers;
use super::query::{self, EventsQuery, QueryError};

/// Who may read the archive: the same networks that may subscribe, unless a certificate
/// identity is required to subscribe (the HTTP listener has no TLS, so no client certificate
/// can be checked there: only the token then); and anyone presenting the bearer token.
#[derive(Clone)]
pub struct Access {
    whitelist: Whitelist,
    identity_required: bool,
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("whitelist", &self.whitelist)
            .field("identity_required", &self.identity_required)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Access {
    /// The rules: subscribers' networks, whether subscribing needs a certificate identity,
    /// and the bearer token (if any; its surrounding whitespace is not part of it).
    pub fn new(whitelist: Whitelist, identity_required: bool, token: Option<&str>) -> Self {
        Self {
            whitelist,
            identity_required,
            token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| t.as_bytes().to_vec()),
        }
    }

    /// Whether a request from `peer` with this `Authorization` header may read; `Err` says
    /// why not (for the log line).
    pub fn check(&self, peer: IpAddr, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        if let Some(header) = authorization {
            let Some(token) = &self.token else {
                return Err("a bearer token was sent but none is configured (--http-token-file)");
            };
            let given = header.strip_prefix(b"Bearer ").unwrap_or(b"");
            return if constant_time_eq(given.trim_ascii(), token) {
                Ok(())
            } else {
                Err("wrong bearer token")
            };
        }
        if self.identity_required {
            return Err(
                "subscribing needs a certificate identity (--subscriber-identity) and \
                        the HTTP listener has no TLS: use the bearer token",
            );
        }
        if !self.whitelist.allows(peer) {
            return Err("address not in --subscriber-whitelist");
        }
        Ok(())
    }
}

/// Compares in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Answers an `/api/` request (`path` starts with `/api/`), or `None` for a path that is not
/// the archive's.
pub async fn respond(
    readers: &Readers,
    access: &Access,
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    authorization: Option<&[u8]>,
) -> Option<Response<Full<Bytes>>> {
    enum Route {
        List,
        BySeq(String),
        ByIvorn,
    }
    let route = match path {
        "/api/events" => Route::List,
        "/api/event" => Route::ByIvorn,
        p => match p.strip_prefix("/api/events/") {
            Some(seq) => Route::BySeq(seq.to_owned()),
            None => return None,
        },
    };
    if let Err(why) = access.check(peer.ip(), authorization) {
        REFUSALS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(
                std::time::Instant::now(),
                || tracing::warn!("archive API: refused {peer} ({path}): {why}"),
                |n| {
                    tracing::warn!(
                        "archive API: {n} more refused requests not logged (more than \
                         {REFUSALS_LOGGED_PER_SEC} a second)"
                    );
                },
            );
        return Some(error(
            StatusCode::FORBIDDEN,
            "this client may not read the archive: it may read it from an address allowed to \
             subscribe, or with the bearer token (Authorization: Bearer ...)",
        ));
    }
    let outcome = match route {
        Route::List => match EventsQuery::parse(query) {
            Ok(q) => readers
                .run(move |c| query::events(c, &q))
                .await
                .map(|j| json_ok(&j)),
            Err(e) => Err(e),
        },
        Route::BySeq(s) => match query::params(query, &[]) {
            Err(e) => Err(e),
            Ok(_) => match s.parse::<u64>() {
                Ok(seq) => {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    readers
                        .run(move |c| query::one(c, Some(seq), None))
                        .await
                        .map(xml)
                }
                Err(_) => Err(QueryError::Bad(format!(
                    "bad sequence number {}: expected /api/events/SEQ with SEQ a whole number",
                    json!(s)
                ))),
            },
        },
        Route::ByIvorn => match query::params(query, &["ivorn"]) {
            Err(e) => Err(e),
            Ok(p) => match p.into_iter().next() {
                Some((_, ivorn)) if !ivorn.is_empty() && ivorn.len() <= query::VALUE_MAX => readers
                    .run(move |c| query::one(c, None, Some(&ivorn)))
                    .await
                    .map(xml),
                _ => Err(QueryError::Bad(
                    "missing or bad parameter \"ivorn\": expected /api/event?ivorn=IVORN".into(),
                )),
            },
        },
    };
    Some(match outcome {
        Ok(r) => r,
        Err(QueryError::Bad(m)) => error(StatusCode::BAD_REQUEST, &m),
        Err(QueryError::NotFound(m)) => error(StatusCode::NOT_FOUND, &m),
        Err(QueryError::Internal(m)) => {
            tracing::warn!("archive API: {peer} {path}: {m}");
            error(StatusCode::SERVICE_UNAVAILABLE, &m)
        }
    })
}

/// Most refused requests logged a second (each with its client); beyond it, a count.
pub(crate) const REFUSALS_LOGGED_PER_SEC: u32 = 10;

/// The refused requests' log lines, across every connection.
static REFUSALS: std::sync::Mutex<crate::ratelog::RateLog> =
    std::sync::Mutex::new(crate::ratelog::RateLog::new(REFUSALS_LOGGED_PER_SEC));

fn json_ok(body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = json_ok(&json!({ "error": message }));
    *r.status_mut() = status;
    r
}

fn xml((seq, ivorn, payload): (i64, String, Vec<u8>)) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(payload)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-vtp-seq", HeaderValue::from(seq));
    if let Ok(v) = HeaderValue::from_str(&ivorn) {
        h.insert("x-vtp-ivorn", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.1.2.3".parse().expect("ip");
        let nets = Whitelist::parse_list("127.0.0.0/8").expect("nets");
        let a = Access::new(Whitelist::new(nets), false, Some("s3cret\n"));
        assert_eq!(a.check(lo, None), Ok(()));
        assert!(a.check(other, None).is_err());
        assert_eq!(a.check(other, Some(b"Bearer s3cret")), Ok(()));
        assert!(a.check(other, Some(b"Bearer s3cre")).is_err());
        assert!(a.check(lo, Some(b"Bearer wrong")).is_err());
        assert!(a.check(lo, Some(b"Basic s3cret")).is_err());
        let ids = Access::new(Whitelist::allow_all(), true, None);
        assert!(ids.check(lo, None).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
