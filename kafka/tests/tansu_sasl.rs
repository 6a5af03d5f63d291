//! SASL against tansu 0.6.0 (setup: `bash conformance/peers/setup_tansu.sh`, and
//! `bash conformance/peers/setup.sh` for the token endpoint).
//!
//! What tansu 0.6.0 (as setup_tansu.sh builds it: in-memory storage) allows to test:
//! - SCRAM-SHA-256/512 are offered with `--authentication`, but users live in the broker's
//!   storage and `tansu user create` talks to the broker without authenticating, which such a
//!   broker refuses (it closes the connection); with in-memory storage a user made before a
//!   restart is gone. So no SCRAM login can succeed here: the tests run the exchange as far
//!   as the broker's refusal of an unknown user (the successful path is checked against RFC
//!   7677's example in the unit tests).
//! - PLAIN is not compiled into tansu (its rsasl has no `plain` feature): the broker closes
//!   the connection on the handshake.
//! - OAUTHBEARER is offered, but tansu's validation callback knows only PLAIN and SCRAM, so
//!   every token is refused ("SASL Authentication failed.").
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use vtp_kafka::{Config, Consumer, Error, OidcClientCredentials, Sasl, Security, StartFrom};
use vtp_testkit::Proc;
use vtp_testkit::kafka::{Tansu, peer_command};

fn sasl_config(broker: &Tansu, sasl: Sasl) -> Config {
    let mut c = Config::new(&broker.addr(), "vtp-kafka-test").unwrap();
    c.security = Security::SaslPlaintext;
    c.sasl = Some(sasl);
    c.connect_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// The error of a consumer's first poll (the connection is made then).
fn first_poll_error(config: Config) -> Error {
    let mut consumer = Consumer::new(config, "g", &["t"], StartFrom::Earliest).unwrap();
    consumer.poll(Duration::from_millis(100)).unwrap_err()
}

#[test]
fn scram_for_an_unknown_user_is_refused_with_advice_and_without_the_password() {
    let broker = Tansu::start_with(&["--authentication"]);
    for sasl in [
        Sasl::ScramSha256 {
            user: "alice".into(),
            password: "pa55word".into(),
        },
        Sasl::ScramSha512 {
            user: "alice".into(),
            password: "pa55word".into(),
        },
    ] {
        let mechanism = sasl.mechanism();
        let err = first_poll_error(sasl_config(&broker, sasl));
        let text = err.to_string();
        assert!(
            matches!(err, Error::Sasl { .. }) && !err.is_retryable(),
            "{text}"
        );
        assert!(
            text.contains(&format!("SASL {mechanism} refused"))
                && text.contains("unknown-user")
                && text.contains("check the user and password"),
            "{text}"
        );
        assert!(!text.contains("pa55word") && !format!("{err:?}").contains("pa55word"));
    }
}

#[test]
fn an_oauthbearer_token_from_the_token_endpoint_reaches_the_broker() {
    let endpoint = Proc::spawn(
        "oidc",
        peer_command("oidc_token_server.py", &["vtp-client", "secret", "3600"]),
    );
    let port = endpoint
        .log
        .wait_for("the token endpoint's port", |l| l.starts_with("port "))
        .trim_start_matches("port ")
        .to_owned();
    let source = OidcClientCredentials::new(
        &format!("http://127.0.0.1:{port}/oauth2/token"),
        "vtp-client",
        "secret",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let broker = Tansu::start_with(&["--authentication"]);
    let err = first_poll_error(sasl_config(&broker, Sasl::OauthBearer(Arc::new(source))));
    // The token was fetched and sent; tansu 0.6.0 validates no OAUTHBEARER token.
    endpoint.log.wait_for("the token to be issued", |l| {
        l.starts_with("issued token-1")
    });
    let text = err.to_string();
    assert!(matches!(err, Error::Sasl { .. }), "{text}");
    assert!(
        text.contains("SASL OAUTHBEARER refused") && text.contains("SASL Authentication failed"),
        "{text}"
    );
    assert!(
        !text.contains("token-1"),
        "the token is not in the error: {text}"
    );
}

#[test]
fn plain_which_tansu_lacks_is_a_sasl_error_not_a_retry() {
    let broker = Tansu::start_with(&["--authentication"]);
    let err = first_poll_error(sasl_config(
        &broker,
        Sasl::Plain {
            user: "alice".into(),
            password: "pw".into(),
        },
    ));
    assert!(
        matches!(err, Error::Sasl { .. }) && !err.is_retryable(),
        "{err}"
    );
    assert!(
        err.to_string().contains("probably does not support it"),
        "{err}"
    );
}

#[test]
fn sasl_against_a_broker_without_authentication_says_so() {
    let broker = Tansu::start();
    let err = first_poll_error(sasl_config(
        &broker,
        Sasl::ScramSha512 {
            user: "alice".into(),
            password: "pw".into(),
        },
    ));
    assert!(
        err.to_string()
            .contains("check that this listener has SASL enabled"),
        "{err}"
    );
}

#[test]
fn a_client_without_sasl_is_cut_off_by_an_authenticating_broker() {
    let broker = Tansu::start_with(&["--authentication"]);
    let mut c = Config::new(&broker.addr(), "vtp-kafka-test").unwrap();
    c.request_timeout = Duration::from_secs(5);
    // tansu answers ApiVersions, then closes the connection on the first other request.
    let err = first_poll_error(c);
    assert!(matches!(err, Error::Io { .. }), "{err}");
}
