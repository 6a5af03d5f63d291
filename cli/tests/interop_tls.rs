//! vtp's TLS (issue #13) against TLS stacks it shares no code with, on 127.0.0.1:
//!
//! - the real legacy peers behind stunnel (Debian's stunnel4, OpenSSL), the deployment GCN
//!   told its users to adopt: pygcn 1.1.3 and `comet-sendvo` reach vtp's TLS listeners through
//!   stunnel in client mode, and vtp subscribes over TLS to a Comet 3.1.0 broker behind
//!   stunnel in server mode;
//! - Python's `ssl` module (OpenSSL) as a TLS author and subscriber
//!   (`conformance/peers/tls_peer.py`), with and without client certificates, against listeners
//!   that require certificate identities; and verifying vtp's certificate with the wrong CA or
//!   the wrong host name.
//!
//! Certificates are made per test by `conformance/peers/tls_certs.sh` (the openssl command).
//! stunnel is installed by `conformance/peers/setup_stunnel.sh` (also run by `setup.sh`); a
//! missing stunnel, like a missing peer, fails the test. Where vtp is the TLS server, each test
//! runs on every runtime. Every wait is on a log line or a process exit, with a bounded
//! deadline; every process is killed when its test ends.

#![allow(clippy::unwrap_used)]

mod peers;
mod support;

use peers::*;
use support::*;

const GCN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/gcn_swift_bat.xml"
);

/// A TLS listener on an ephemeral loopback port with the test server certificate; requiring
/// client certificates from the test CA when `client_ca`.
fn tls_listener(certs: &Certs, client_ca: bool) -> String {
    let mut s = format!(
        "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}",
        certs.arg("server.key"),
        certs.arg("server.pem")
    );
    if client_ca {
        s += &format!(":clientCA={}", certs.arg("ca.pem"));
    }
    s
}

/// A vtp broker on `runtime` with these listeners and arguments.
fn broker(name: &str, runtime: &str, args: &[&str]) -> Broker {
    let all = [
        &["--runtime", runtime, "--broadcast-test-interval", "0"],
        args,
    ]
    .concat();
    Broker::start_listening(name, &all, TempDir::new(name))
}

// ------------------------------------------------------------- pygcn -> stunnel -> vtp

fn pygcn_through_stunnel(runtime: &str) {
    let name = |what: &str| format!("t1-{runtime}-{what}");
    let certs = Certs::new(&name("certs"));
    let b = broker(
        &name("broker"),
        runtime,
        &[
            "--receive",
            "127.0.0.1:0",
            "--broadcast",
            &tls_listener(&certs, false),
        ],
    );
    let st = Stunnel::client(
        &name("stunnel"),
        b.broadcast,
        &certs.path("ca.pem"),
        "localhost",
        None,
    );
    // Returns once vtp's authenticate has come through stunnel to pygcn.
    let pygcn = Pygcn::start(&name("pygcn"), st.port);
    st.proc.log.wait_for("stunnel verified vtp", |l| {
        l.contains("Certificate accepted at depth=0: CN=vtp-test-server")
    });
    // Once secured (no client certificate: that is DEBUG), the feed is up, named at INFO.
    b.proc.log.wait_for("vtp secured the feed", |l| {
        l.contains(" INFO ") && l.contains("subscriber 127.0.0.1:") && l.contains(" connected")
    });

    let files = TempDir::new(&name("files"));
    let (_, small_bytes) = write_event(&files, "small.xml", "ivo://vtp.test/author#tls-pygcn");
    let gcn_bytes = std::fs::read(GCN).unwrap();
    for (n, bytes) in [&gcn_bytes, &small_bytes].into_iter().enumerate() {
        let (role, _) = submit_raw(b.receive, bytes);
        assert_eq!(role, "ack");
        assert!(pygcn.received(n + 1) == *bytes, "pygcn got other bytes");
    }
    pygcn.proc.log.wait_for("pygcn acked", |l| {
        l.contains("vtp.pygcn INFO sent ack origin=ivo://vtp.test/author#tls-pygcn")
    });
    let blog = &b.proc.log;
    for bad in ["subscriber nak'd", "protocol violation"] {
        assert_eq!(blog.count(|l| l.contains(bad)), 0, "{}", blog.text());
    }
    assert_eq!(blog.count(peer_down), 0, "{}", blog.text());
}

#[test]
fn pygcn_through_stunnel_receives_and_acks_a_vtp_tls_broadcast_on_tokio() {
    pygcn_through_stunnel("tokio");
}

#[test]
fn pygcn_through_stunnel_receives_and_acks_a_vtp_tls_broadcast_on_smol() {
    pygcn_through_stunnel("smol");
}

#[test]
fn pygcn_through_stunnel_receives_and_acks_a_vtp_tls_broadcast_on_mio() {
    pygcn_through_stunnel("mio");
}

// ------------------------------------------------------- comet-sendvo -> stunnel -> vtp

/// stunnel presents the author certificate: the vtp listener requires client certificates and
/// `--author-identity good-author`.
fn comet_sendvo_through_stunnel(runtime: &str) {
    let name = |what: &str| format!("t2-{runtime}-{what}");
    let certs = Certs::new(&name("certs"));
    let b = broker(
        &name("broker"),
        runtime,
        &[
            "--receive",
            &tls_listener(&certs, true),
            "--broadcast",
            "127.0.0.1:0",
            "--author-identity",
            "good-author",
        ],
    );
    let st = Stunnel::client(
        &name("stunnel"),
        b.receive,
        &certs.path("ca.pem"),
        "localhost",
        Some((&certs.path("author.pem"), &certs.path("author.key"))),
    );
    let files = TempDir::new(&name("files"));
    let ivorn = format!("ivo://vtp.test/author#tls-sendvo-{runtime}");
    let (good, _) = write_event(&files, "good.xml", &ivorn);
    let (code, out) = comet_sendvo(st.port, &good);
    assert_eq!(code, Some(0), "comet-sendvo:\n{out}");
    assert!(out.contains("Acknowledgement received from"), "{out}");
    assert!(out.contains("Event was sent successfully"), "{out}");
    let blog = &b.proc.log;
    blog.wait_for("vtp saw the author's certificate", |l| {
        l.contains("TLS peer 127.0.0.1:")
            && l.contains(": certificate identity CN=good-author DNS=good-author sha256:")
    });
    blog.wait_for("vtp accepted it", |l| {
        l.contains(&format!("accepted event {ivorn}"))
    });
    st.proc.log.wait_for("stunnel verified vtp", |l| {
        l.contains("Certificate accepted at depth=0: CN=vtp-test-server")
    });

    // A nak and its reason come back through the tunnel too.
    let (bad, _) = write_event(&files, "bad.xml", "ivo://a2#x");
    let (code, out) = comet_sendvo(st.port, &bad);
    assert_eq!(code, Some(1), "comet-sendvo:\n{out}");
    assert!(out.contains("Invalid IVOID: ivo://a2#x"), "{out}");
}

#[test]
fn comet_sendvo_through_stunnel_with_a_client_certificate_is_acked_by_vtp_tls_on_tokio() {
    comet_sendvo_through_stunnel("tokio");
}

#[test]
fn comet_sendvo_through_stunnel_with_a_client_certificate_is_acked_by_vtp_tls_on_smol() {
    comet_sendvo_through_stunnel("smol");
}

#[test]
fn comet_sendvo_through_stunnel_with_a_client_certificate_is_acked_by_vtp_tls_on_mio() {
    comet_sendvo_through_stunnel("mio");
}

// ---------------------------------------------------------- vtp -> stunnel -> Comet

#[test]
fn vtp_subscribes_over_tls_through_stunnel_to_a_comet_broker_and_relays_its_events() {
    let certs = Certs::new("t3-certs");
    let comet = CometBroker::start("t3-comet");
    let st = Stunnel::server(
        "t3-stunnel",
        comet.broadcast,
        &certs.path("server.pem"),
        &certs.path("server.key"),
    );
    let upstream = format!("tls:localhost:{}", st.port);
    let ca = certs.arg("ca.pem");
    // One vtp broker per runtime, all subscribed to Comet through the same stunnel.
    let mut relays: Vec<_> = RUNTIMES
        .iter()
        .map(|rt| {
            let b = broker(
                &format!("t3-{rt}-broker"),
                rt,
                &[
                    "--receive",
                    "127.0.0.1:0",
                    "--broadcast",
                    "127.0.0.1:0",
                    "--subscribe",
                    &upstream,
                    "--tls-ca",
                    &ca,
                ],
            );
            let sub = RawSubscriber::connect(loopback(b.broadcast));
            (b, sub)
        })
        .collect();
    // A broker that trusts another CA refuses stunnel's certificate.
    let other_ca = certs.arg("other-ca.pem");
    let refusing = broker(
        "t3-refusing-broker",
        "tokio",
        &[
            "--receive",
            "127.0.0.1:0",
            "--broadcast",
            "127.0.0.1:0",
            "--subscribe",
            &upstream,
            "--tls-ca",
            &other_ca,
        ],
    );
    refusing
        .proc
        .log
        .wait_for("vtp refused the certificate", |l| {
            l.contains("WARN")
                && l.contains(&format!("reconnecting to {upstream} in "))
                && l.contains(" s: TLS: invalid peer certificate: UnknownIssuer")
                && l.contains("class=tls")
        });

    // Comet has each relay's authenticate reply, so each is registered.
    let auth = "Authentication received from IPv4Address(type='TCP', host='127.0.0.1'";
    comet
        .proc
        .log
        .wait_count("three vtp relays", RUNTIMES.len(), |l| l.contains(auth));
    let files = TempDir::new("t3-files");
    let (file, bytes) = write_event(&files, "e.xml", "ivo://vtp.test/author#tls-comet");
    let (code, out) = comet_sendvo(comet.receive, &file);
    assert_eq!(code, Some(0), "comet-sendvo:\n{out}");
    for (b, sub) in &mut relays {
        assert!(
            sub.next_event() == bytes,
            "{} relayed other bytes",
            b.proc.name
        );
        let blog = &b.proc.log;
        assert_eq!(blog.count(peer_down), 0, "{}", blog.text());
    }
    // Each relay acked Comet's broadcast.
    comet
        .proc
        .log
        .wait_count("three acks", RUNTIMES.len(), |l| {
            l.contains("Ack received from")
        });
    assert_eq!(
        comet.proc.log.count(|l| l.contains(auth)),
        RUNTIMES.len(),
        "only the relays that verified stunnel's certificate subscribed:\n{}",
        comet.proc.log.text()
    );
}

// ------------------------------------------------------- Python ssl -> vtp identities

fn python_ssl_peers(runtime: &str) {
    let name = |what: &str| format!("t4-{runtime}-{what}");
    let certs = Certs::new(&name("certs"));
    let b = broker(
        &name("broker"),
        runtime,
        &[
            "--receive",
            &tls_listener(&certs, true),
            "--broadcast",
            &tls_listener(&certs, true),
            "--author-identity",
            "good-author",
            "--subscriber-identity",
            "good-subscriber",
        ],
    );
    let blog = &b.proc.log;
    let files = TempDir::new(&name("files"));
    let ca = certs.arg("ca.pem");
    let receive = b.receive.to_string();
    let broadcast = b.broadcast.to_string();
    let client = |who: &str| {
        vec![
            "--cert".to_owned(),
            certs.arg(&format!("{who}.pem")),
            "--key".to_owned(),
            certs.arg(&format!("{who}.key")),
        ]
    };
    let author = |n: usize, extra: &[String]| {
        let (file, _) = write_event(
            &files,
            &format!("{n}.xml"),
            &format!("ivo://vtp.test/author#py-{n}"),
        );
        let file = file.to_str().unwrap().to_owned();
        let mut args: Vec<&str> = vec!["author", "127.0.0.1", &receive, &file, "--ca", &ca];
        args.extend(extra.iter().map(String::as_str));
        tls_peer(&name(&format!("author-{n}")), &args)
    };
    let subscriber = |tag: &str, extra: &[String]| {
        let mut args: Vec<&str> = vec!["subscribe", "127.0.0.1", &broadcast];
        args.extend(extra.iter().map(String::as_str));
        tls_peer(&name(tag), &args)
    };
    let dropped = |what: &str, reason: &str| {
        blog.wait_for(what, |l| {
            l.contains(" 127.0.0.1:")
                && l.contains(" dropped before its TLS session was up: ")
                && l.contains(reason)
        })
    };

    // An author with a certificate of the allowed identity: acked.
    let (code, out) = author(1, &client("author"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("frame n=1 len=") && out.contains("role=ack"),
        "{out}"
    );
    blog.wait_for("the author's identity", |l| {
        l.contains("TLS peer 127.0.0.1:")
            && l.contains(": certificate identity CN=good-author DNS=good-author sha256:")
    });
    blog.wait_for("event 1 accepted", |l| {
        l.contains("accepted event ivo://vtp.test/author#py-1")
    });

    // No client certificate: in TLS 1.3 the client finishes first and gets the alert after;
    // in TLS 1.2 the handshake itself fails. No ack either way.
    let (code, out) = author(2, &[]);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("closed after 0 bytes") && out.contains("certificate required"),
        "{out}"
    );
    dropped("no certificate refused", "TLS: peer sent no certificates");
    let (code, out) = author(3, &["--tls-max".into(), "1.2".into()]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("handshake failed:") && out.contains("certificate required"),
        "{out}"
    );
    blog.wait_count("two refusals without a certificate", 2, |l| {
        l.contains("author 127.0.0.1:")
            && l.contains(" dropped before its TLS session was up: TLS: peer sent no certificates")
    });

    // A certificate from another CA, and an expired one from the right CA: refused.
    let (code, out) = author(4, &client("rogue"));
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("closed after 0 bytes") && out.contains("unknown ca"),
        "{out}"
    );
    dropped(
        "the other CA refused",
        "TLS: invalid peer certificate: UnknownIssuer",
    );
    let (code, out) = author(5, &client("expired"));
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("closed after 0 bytes") && out.contains("certificate expired"),
        "{out}"
    );
    dropped(
        "the expired certificate refused",
        "TLS: invalid peer certificate: certificate expired",
    );

    // A valid certificate of an identity not in --author-identity: closed, no ack.
    let (code, out) = author(6, &client("stranger"));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("closed after 0 bytes"), "{out}");
    dropped(
        "the stranger author refused",
        "not authorized: certificate identity CN=stranger DNS=stranger sha256:",
    );

    // Subscribers: the allowed identity gets vtp's authenticate; another valid certificate is
    // closed before any VTP byte.
    let ca_arg = ["--ca".to_owned(), ca.clone()];
    let (code, out) = subscriber("sub-good", &[&ca_arg[..], &client("subscriber")].concat());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("frame n=1 ") && out.contains("role=authenticate"),
        "{out}"
    );
    let (code, out) = subscriber("sub-stranger", &[&ca_arg[..], &client("stranger")].concat());
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("closed after 0 bytes"),
        "zero bytes of VTP: {out}"
    );
    let line = dropped(
        "the stranger subscriber refused",
        "is not allowed by --subscriber-identity",
    );
    assert!(
        line.contains("CN=stranger") && line.contains("subscriber 127.0.0.1:"),
        "{line}"
    );

    // The client verifies vtp (with the allowed subscriber's certificate in hand): against
    // another CA, or for a host name vtp's certificate does not carry.
    let other_ca = ["--ca".to_owned(), certs.arg("other-ca.pem")];
    let (code, out) = subscriber("wrong-ca", &[&other_ca[..], &client("subscriber")].concat());
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("handshake failed:") && out.contains("CERTIFICATE_VERIFY_FAILED"),
        "{out}"
    );
    dropped(
        "vtp saw the client's refusal",
        "TLS: received fatal alert: UnknownCA",
    );
    let (code, out) = subscriber(
        "wrong-host",
        &[
            &ca_arg[..],
            &client("subscriber"),
            &["--server-hostname".into(), "wrong.example".into()],
        ]
        .concat(),
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Hostname mismatch"), "{out}");
    dropped(
        "vtp saw the client's refusal",
        "TLS: received fatal alert: BadCertificate",
    );

    // Still serving: a last good author is acked; no refused author's event was accepted.
    let (code, out) = author(7, &client("author"));
    assert_eq!(code, Some(0), "{out}");
    blog.wait_for("event 7 accepted", |l| {
        l.contains("accepted event ivo://vtp.test/author#py-7")
    });
    assert_eq!(
        blog.count(|l| l.contains("accepted event")),
        2,
        "{}",
        blog.text()
    );
}

#[test]
fn python_ssl_author_and_subscriber_meet_vtp_tls_identities_on_tokio() {
    python_ssl_peers("tokio");
}

#[test]
fn python_ssl_author_and_subscriber_meet_vtp_tls_identities_on_smol() {
    python_ssl_peers("smol");
}

#[test]
fn python_ssl_author_and_subscriber_meet_vtp_tls_identities_on_mio() {
    python_ssl_peers("mio");
}
