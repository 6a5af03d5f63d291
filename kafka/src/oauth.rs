//! OAuth 2.0 bearer tokens for SASL OAUTHBEARER: the [`TokenSource`] trait and
//! [`OidcClientCredentials`], the client-credentials grant GCN's Kafka uses.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, Result};

/// Gives a bearer token for each new connection.
///
/// Implementations cache: [`TokenSource::token`] is called once per connection attempt.
/// `Debug` must not print secrets or tokens.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A currently valid access token.
    ///
    /// # Errors
    ///
    /// [`Error::Token`] when none can be had (the caller retries with backoff).
    fn token(&self) -> Result<String>;
}

/// The OAuth 2.0 client-credentials grant (RFC 6749 section 4.4) against a token endpoint:
/// `POST grant_type=client_credentials[&scope=..]` with the client id and secret in HTTP
/// Basic authentication; the JSON answer's `access_token` is cached until `expires_in`
/// (less a margin of a minute, or a tenth of the lifetime for short ones) has passed.
///
/// The endpoint must be `https://`, or `http://` on a loopback address (tests). Answers are
/// read up to 64 KiB.
pub struct OidcClientCredentials {
    url: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    agent: ureq::Agent,
    cache: Mutex<Option<(String, Instant)>>,
}

/// Largest token endpoint answer read.
const TOKEN_RESPONSE_MAX: u64 = 64 * 1024;
/// Token lifetime assumed when the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

impl OidcClientCredentials {
    /// A token source for this endpoint and client; `timeout` bounds each HTTP exchange.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL is neither `https://` nor `http://` on loopback.
    pub fn new(
        url: &str,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        let loopback_http = url
            .strip_prefix("http://")
            .map(|rest| {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                matches!(host, "localhost" | "[::1]")
                    || host
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
            .unwrap_or(false);
        if !url.starts_with("https://") && !loopback_http {
            return Err(Error::Config(format!(
                "token endpoint {url:?} must be https:// (http:// only on loopback): the client secret is sent to it"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(OidcClientCredentials {
            url: url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            scope: scope.map(str::to_owned),
            agent,
            cache: Mutex::new(None),
        })
    }

    fn fetch(&self) -> Result<(String, Duration)> {
        let err = |reason: String| Error::Token {
            url: self.url.clone(),
            reason,
        };
        let basic = B64.encode(format!(
            "{}:{}",
            form_encode(&self.client_id),
            form_encode(&self.client_secret)
        ));
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Authorization", &format!("Basic {basic}"))
            .header("Accept", "application/json")
            .send_form(form)
            .map_err(|e| {
                err(format!(
                    "request failed ({e}); check the URL and the network"
                ))
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(TOKEN_RESPONSE_MAX)
            .read_to_string()
            .map_err(|e| err(format!("cannot read the answer ({e})")))?;
        if status != 200 {
            let what = if status == 400 || status == 401 {
                "check the client id and secret"
            } else {
                "the endpoint failed"
            };
            // The body of an OAuth error names the error; it holds no secret of ours.
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            return Err(err(format!("HTTP {status} {detail}: {what}")));
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| err("the answer is not JSON".into()))?;
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("the answer has no access_token".into()))?;
        let lifetime = json
            .get("expires_in")
            .and_then(|e| {
                e.as_u64()
                    .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            })
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok((token.to_owned(), lifetime))
    }
}

impl TokenSource for OidcClientCredentials {
    fn token(&self) -> Result<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch()?;
        let margin = Duration::from_secs(60).min(lifetime / 10);
        *cache = Some((token.clone(), Instant::now() + lifetime - margin));
        tracing::debug!(url = %self.url, lifetime_s = lifetime.as_secs(), "OAuth token fetched");
        Ok(token)
    }
}

impl fmt::Debug for OidcClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClientCredentials")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` encoding (RFC 6749 appendix B).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_only_for_loopback() {
        let t = Duration::from_secs(1);
        assert!(OidcClientCredentials::new("http://127.0.0.1:8/t", "a", "b", None, t).is_ok());
        assert!(OidcClientCredentials::new("http://localhost/t", "a", "b", None, t).is_ok());
        assert!(OidcClientCredentials::new("https://auth.example/t", "a", "b", None, t).is_ok());
        assert!(OidcClientCredentials::new("http://auth.example/t", "a", "b", None, t).is_err());
        assert!(OidcClientCredentials::new("http://127.0.0.1.evil/t", "a", "b", None, t).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let s =
            OidcClientCredentials::new("https://a/t", "id", "s3cret", None, Duration::from_secs(1))
                .unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form_encode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }
}
