//! The OAuth client-credentials token source against a local token endpoint
//! (`conformance/peers/oidc_token_server.py`, from the peers venv:
//! `bash conformance/peers/setup.sh`).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use vtp_kafka::{Error, OidcClientCredentials, TokenSource};
use vtp_testkit::Proc;
use vtp_testkit::kafka::peer_command;

/// Starts the endpoint for this client; returns it and its token URL.
fn endpoint(expires_in: u32) -> (Proc, String) {
    let cmd = peer_command(
        "oidc_token_server.py",
        &["vtp-client", "s3cret:&=", &expires_in.to_string()],
    );
    let proc = Proc::spawn("oidc", cmd);
    let line = proc
        .log
        .wait_for("the token endpoint's port", |l| l.starts_with("port "));
    let port = line.trim_start_matches("port ");
    (proc, format!("http://127.0.0.1:{port}/oauth2/token"))
}

#[test]
fn a_token_is_fetched_with_client_credentials_and_cached() {
    let (proc, url) = endpoint(3600);
    let source = OidcClientCredentials::new(
        &url,
        "vtp-client",
        "s3cret:&=",
        Some("gcn.nasa.gov/kafka-public-consumer"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(source.token().unwrap(), "token-1");
    assert_eq!(source.token().unwrap(), "token-1", "cached");
    proc.log.wait_for("the scope to arrive", |l| {
        l == "issued token-1 scope=gcn.nasa.gov/kafka-public-consumer"
    });
    assert_eq!(proc.log.count(|l| l.starts_with("issued")), 1);
}

#[test]
fn an_expired_token_is_fetched_again() {
    let (proc, url) = endpoint(0);
    let source = OidcClientCredentials::new(
        &url,
        "vtp-client",
        "s3cret:&=",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(source.token().unwrap(), "token-1");
    assert_eq!(source.token().unwrap(), "token-2");
    assert_eq!(proc.log.count(|l| l.starts_with("issued")), 2);
}

#[test]
fn wrong_credentials_are_a_token_error_that_hides_the_secret() {
    let (_proc, url) = endpoint(3600);
    let source = OidcClientCredentials::new(
        &url,
        "vtp-client",
        "wrong-secret",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let err = source.token().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Token { .. }), "{text}");
    assert!(
        text.contains("401") && text.contains("check the client id and secret"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret") && !format!("{err:?}").contains("wrong-secret"));
}

#[test]
fn an_unreachable_endpoint_is_a_retryable_token_error() {
    let port = vtp_testkit::kafka::free_port();
    let url = format!("http://127.0.0.1:{port}/oauth2/token");
    let source = OidcClientCredentials::new(&url, "a", "b", None, Duration::from_secs(2)).unwrap();
    let err = source.token().unwrap_err();
    assert!(
        matches!(err, Error::Token { .. }) && err.is_retryable(),
        "{err}"
    );
}
