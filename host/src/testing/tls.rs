//! The TLS socket tests every runtime runs (tokio, smol, mio), written once, and the
//! certificates they use ([`Pki`], made by the test itself with rcgen, written as PEM files so
//! the loading code is exercised too).
//!
//! The peers are blocking rustls clients (`StreamOwned`) and raw TCP sockets with timeouts.
//! Declared in a runtime's tests by [`tls_socket_tests!`](crate::tls_socket_tests).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use vtp_core::config::Upstream;
use vtp_core::endpoint::{DialAddr, ListenEndpoint};
use vtp_core::identity::IdentityRule;
use vtp_core::message::{self, Message, TransportRole};
use vtp_core::{CloseReason, Config, ConnRole, Event, ListenerRole, Node, Remote, Source};

use super::peers::{frame, read_frame};
use super::sockets::{Runtime, node};
use super::{Collect, Reports, Stop, WAIT, collect};
use crate::net::{Bound, Options, bind, bind_endpoints};
use crate::tls::ClientFiles;

/// Declares one `#[test]` per shared TLS socket test, each running it on `$runtime`.
#[macro_export]
macro_rules! tls_socket_tests {
    ($runtime:ty) => {
        $crate::tls_socket_tests!(
            $runtime:
            tls_author_and_subscriber_with_certificate_identities,
            tls_peers_without_an_allowed_certificate_get_no_vtp_exchange,
            tls_hostile_handshakes_are_closed_and_others_still_served,
            tls_dials_verify_the_server_certificate_and_name,
        );
    };
    ($runtime:ty: $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::testing::tls::$test::<$runtime>();
            }
        )+
    };
}

/// A test PKI in a temporary directory: a CA, a server certificate for `localhost` (DNS name
/// only: dialling `127.0.0.1` must fail the name check), client certificates, and a second CA
/// nobody trusts. ECDSA P-256 throughout.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's key (PEM).
    pub server_key: PathBuf,
    ca_issuer: (CertificateParams, KeyPair),
    rogue_issuer: (CertificateParams, KeyPair),
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Pki {
    /// Generates everything under a directory named after `test`.
    ///
    /// # Panics
    ///
    /// If generation or writing fails.
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vtp-pki-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("PKI directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_p = ca_params("vtp test CA");
        let ca_cert = ca_p.self_signed(&ca_key).expect("CA cert");
        let rogue_key = KeyPair::generate().expect("rogue CA key");
        let rogue_p = ca_params("rogue CA");
        let pki = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
            ca_issuer: (ca_p, ca_key),
            rogue_issuer: (rogue_p, rogue_key),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).expect("write CA");
        let (cert, key) = pki.leaf("localhost", &["localhost"], false, false);
        std::fs::rename(cert, &pki.server_cert).expect("server cert");
        std::fs::rename(key, &pki.server_key).expect("server key");
        pki
    }

    /// A certificate for `cn` (also its DNS name), signed by the CA, or by the rogue CA, valid
    /// now or expired a year ago: (certificate file, key file).
    ///
    /// # Panics
    ///
    /// If generation or writing fails.
    pub fn leaf(&self, cn: &str, dns: &[&str], rogue: bool, expired: bool) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let (ip, ik) = if rogue {
            &self.rogue_issuer
        } else {
            &self.ca_issuer
        };
        let issuer = Issuer::from_params(ip, ik);
        let cert = p.signed_by(&key, &issuer).expect("sign leaf");
        let tag = format!("{cn}-{rogue}-{expired}");
        let (c, k) = (
            self.dir.join(format!("{tag}.pem")),
            self.dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write leaf");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    /// A TLS listen endpoint on 127.0.0.1, ephemeral port, with this PKI's server certificate,
    /// asking for client certificates from the CA when `client_ca`.
    ///
    /// # Panics
    ///
    /// If the endpoint does not parse.
    pub fn endpoint(&self, client_ca: bool) -> ListenEndpoint {
        let mut s = format!(
            "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}",
            self.server_key.display(),
            self.server_cert.display()
        );
        if client_ca {
            s.push_str(&format!(":clientCA={}", self.ca.display()));
        }
        ListenEndpoint::parse(&s).expect("a valid TLS endpoint")
    }

    /// A client configuration trusting this PKI's CA (or `ca`), presenting `client` if given.
    ///
    /// # Panics
    ///
    /// If the files cannot be loaded.
    pub fn client(
        &self,
        client: Option<&(PathBuf, PathBuf)>,
        ca: Option<&Path>,
    ) -> Arc<ClientConfig> {
        let files = ClientFiles {
            ca: Some(ca.unwrap_or(&self.ca).to_owned()),
            cert: client.map(|c| c.0.clone()),
            key: client.map(|c| c.1.clone()),
        };
        crate::tls::client_config(&files).expect("client config").0
    }
}

/// Submits `payload` over TLS to 127.0.0.1:`port` (the server verified as `localhost`) and
/// returns the receipt's role and Result text, or what went wrong instead.
///
/// # Errors
///
/// The handshake, the write or the read failed, or the reply is not a receipt.
pub fn submit_tls(
    port: u16,
    config: Arc<ClientConfig>,
    payload: &[u8],
) -> Result<(String, Option<String>), String> {
    let mut s = tls_connect(port, config);
    s.write_all(&frame(payload))
        .map_err(|e| format!("submit: {e}"))?;
    let reply = read_frame(&mut s).map_err(|e| format!("no receipt: {e}"))?;
    match message::parse(&reply, &Default::default()) {
        Ok(Message::Transport(t)) => {
            Ok((t.role.as_str().to_owned(), t.result.map(|r| r.into_owned())))
        }
        other => Err(format!("not a receipt: {other:?}")),
    }
}

/// The first flight of a TLS client (its ClientHello record), as a hostile peer replays it.
///
/// # Panics
///
/// If rustls cannot start a session with `config`.
pub fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut conn = ClientConnection::new(config, name).expect("a session");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("a ClientHello");
    }
    out
}

/// A blocking TLS stream to 127.0.0.1:`port`, verifying the server as `localhost`.
type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tls_connect(port: u16, config: Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("read timeout");
    let name = ServerName::try_from("localhost").expect("a server name");
    StreamOwned::new(ClientConnection::new(config, name).expect("a session"), tcp)
}

/// Reads until end of stream or error; the bytes read (a refused peer gets none).
fn read_to_end_or_error(s: &mut impl Read) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn role_of(payload: &[u8]) -> (TransportRole, String) {
    match message::parse(payload, &Default::default()).expect("a valid frame") {
        Message::Transport(t) => (t.role, t.origin.into_owned()),
        other => panic!("expected a Transport message, got {other:?}"),
    }
}

fn event(ivorn: &str) -> Vec<u8> {
    format!(
        "<voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='{ivorn}' \
         role='test' version='2.0'><Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN>\
         </Who></voe:VOEvent>"
    )
    .into_bytes()
}

/// A broker with `config` running on `R` on a thread of its own.
struct Broker {
    stop: Stop,
    reports: Reports,
    handle: std::thread::JoinHandle<io::Result<Collect>>,
}

impl Broker {
    fn start<R: Runtime>(config: Config, bound: Bound) -> Self {
        let (fx, reports) = collect(None);
        let stop = Stop::default();
        let wait = stop.clone();
        let n: Node = node(config);
        let handle = std::thread::spawn(move || R::run(n, bound, fx, wait, Options::default()));
        Self {
            stop,
            reports,
            handle,
        }
    }

    fn stop(self) {
        self.stop.fire();
        self.handle
            .join()
            .expect("the node's thread")
            .expect("run ends without error");
    }

    /// The reason the connection from a peer was closed, waiting for it.
    fn closed_because(&self, what: &str, f: impl Fn(&CloseReason) -> bool) -> CloseReason {
        match self.reports.wait_event(
            what,
            |e| matches!(e, Event::PeerDown { reason, remote: Remote::Accepted(_), .. } if f(reason)),
        ) {
            Event::PeerDown { reason, .. } => reason,
            _ => unreachable!(),
        }
    }
}

fn broker_config() -> Config {
    let mut c = Config::new(Some("ivo://vtp.test/broker".into()));
    c.timing.test_event_interval = None;
    c
}

// ----------------------------------------------------------------------------------- tests

/// A TLS subscriber (no client certificate needed on its listener) gets the authenticate
/// message and then the event a TLS author with an allowed certificate submitted; the author
/// is acked and its identity reported.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn tls_author_and_subscriber_with_certificate_identities<R: Runtime>() {
    let pki = Pki::new("identities");
    let author = pki.leaf("author1", &["author1.example.org"], false, false);
    let bound = bind_endpoints(&[
        (ListenerRole::Receive, pki.endpoint(true)),
        (ListenerRole::Broadcast, pki.endpoint(false)),
    ])
    .expect("bind TLS listeners");
    let receive = bound.port(ListenerRole::Receive).expect("port");
    let broadcast = bound.port(ListenerRole::Broadcast).expect("port");
    let mut config = broker_config();
    config.author_identities = vec![IdentityRule::parse("AUTHOR1.example.org").expect("a rule")];
    let b = Broker::start::<R>(config, bound);

    let mut sub = tls_connect(broadcast, pki.client(None, None));
    let auth = read_frame(&mut sub).expect("authenticate over TLS");
    assert_eq!(role_of(&auth).0, TransportRole::Authenticate);
    sub.write_all(&message::build_authenticate(
        "ivo://vtp.test/sub",
        "2024-01-01T00:00:00Z",
    ))
    .expect("reply");
    let _ = b.reports.wait_event("subscriber filters", |e| {
        matches!(e, Event::FiltersSet { .. })
    });

    let mut a = tls_connect(receive, pki.client(Some(&author), None));
    a.write_all(&frame(&event("ivo://vtp.test/author#1")))
        .expect("submit over TLS");
    let receipt = read_frame(&mut a).expect("a receipt over TLS");
    assert_eq!(
        role_of(&receipt),
        (TransportRole::Ack, "ivo://vtp.test/author#1".to_owned())
    );
    let secured = b.reports.wait_event("the author's identity", |e| {
        matches!(
            e,
            Event::Secured {
                identity: Some(_),
                ..
            }
        )
    });
    let Event::Secured {
        identity: Some(id), ..
    } = secured
    else {
        unreachable!()
    };
    assert_eq!(id.common_name.as_deref(), Some("author1"));
    assert_eq!(id.dns_names, ["author1.example.org"]);

    let forwarded = read_frame(&mut sub).expect("the event, over TLS");
    assert_eq!(forwarded, event("ivo://vtp.test/author#1"));
    let d = b.reports.deliveries.recv_timeout(WAIT).expect("delivered");
    assert!(matches!(d.source, Source::Author(_)));
    b.stop();
}

/// Authors without a client certificate, with one from another CA, with an expired one, or
/// with a valid one whose identity is not allowed, are closed without a VTP message; each is
/// logged with the peer's address and the reason. A plain connection to the TLS port is closed
/// without an answer too.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn tls_peers_without_an_allowed_certificate_get_no_vtp_exchange<R: Runtime>() {
    let pki = Pki::new("refusals");
    let bound = bind_endpoints(&[
        (ListenerRole::Receive, pki.endpoint(true)),
        (ListenerRole::Broadcast, pki.endpoint(true)),
    ])
    .expect("bind TLS listeners");
    let receive = bound.port(ListenerRole::Receive).expect("port");
    let broadcast = bound.port(ListenerRole::Broadcast).expect("port");
    let mut config = broker_config();
    config.author_identities = vec![IdentityRule::parse("author1").expect("a rule")];
    config.subscriber_identities = vec![IdentityRule::parse("subscriber1").expect("a rule")];
    let b = Broker::start::<R>(config, bound);

    let rogue = pki.leaf("author1", &[], true, false);
    let expired = pki.leaf("author1", &[], false, true);
    let mallory = pki.leaf("mallory", &[], false, false);
    type Case<'a> = (Option<&'a (PathBuf, PathBuf)>, fn(&CloseReason) -> bool);
    let cases: [Case<'_>; 4] = [
        (None, |r| matches!(r, CloseReason::Tls(_))),
        (Some(&rogue), |r| matches!(r, CloseReason::Tls(_))),
        (Some(&expired), |r| matches!(r, CloseReason::Tls(_))),
        (
            Some(&mallory),
            |r| matches!(r, CloseReason::NotAuthorized(w) if w.contains("CN=mallory")),
        ),
    ];
    for (i, (client, want)) in cases.into_iter().enumerate() {
        let mut a = tls_connect(receive, pki.client(client, None));
        // The write may fail already (TLS 1.2 would refuse in the handshake); what matters is
        // that no receipt comes.
        let _ = a.write_all(&frame(&event(&format!("ivo://vtp.test/author#{i}"))));
        let (got, _) = read_to_end_or_error(&mut a);
        assert!(got.is_empty(), "case {i}: the refused author read {got:?}");
        let reason = b.closed_because("the refusal", want);
        assert!(!reason.to_string().is_empty());
    }
    // A subscriber with a valid certificate but not in --subscriber-identity: no authenticate.
    let mut s = tls_connect(broadcast, pki.client(Some(&mallory), None));
    let (got, _) = read_to_end_or_error(&mut s);
    assert!(got.is_empty(), "the refused subscriber read {got:?}");
    b.closed_because(
        "the subscriber's refusal",
        |r| matches!(r, CloseReason::NotAuthorized(w) if w.contains("--subscriber-identity")),
    );
    // Plaintext VTP to the TLS port: not a ClientHello.
    let mut plain = TcpStream::connect(("127.0.0.1", receive)).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    plain
        .write_all(&frame(&event("ivo://vtp.test/author#plain")))
        .expect("write");
    let (got, _) = read_to_end_or_error(&mut plain);
    assert!(
        !got.windows(5).any(|w| w == b"<?xml") && !got.windows(4).any(|w| w == b"ack'"),
        "no VTP answer to plaintext: {got:?}"
    );
    b.closed_because("the plaintext peer", |r| matches!(r, CloseReason::Tls(_)));
    assert!(
        b.reports.deliveries.try_recv().is_err(),
        "nothing from a refused author was accepted"
    );
    b.stop();
}

/// Garbage instead of a ClientHello is closed at once; peers that connect and never finish a
/// handshake are closed at the deadline; beyond the cap on concurrent handshakes a TLS
/// connection is closed at once; a ClientHello sent to a plain port is refused as a bad
/// frame; and all the while a healthy TLS author is acked.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn tls_hostile_handshakes_are_closed_and_others_still_served<R: Runtime>() {
    let pki = Pki::new("hostile");
    let mut endpoints = vec![(ListenerRole::Receive, pki.endpoint(false))];
    let plain: ListenEndpoint = vtp_core::endpoint::ListenAddr::parse("127.0.0.1:0")
        .expect("addr")
        .into();
    endpoints.push((ListenerRole::Broadcast, plain));
    let bound = bind_endpoints(&endpoints).expect("bind");
    let tls_port = bound.port_of(ListenerRole::Receive, true).expect("port");
    let plain_port = bound.port_of(ListenerRole::Broadcast, false).expect("port");
    let mut config = broker_config();
    config.limits.handshakes_max = 4;
    config.timing.handshake_deadline = Duration::from_millis(700);
    let b = Broker::start::<R>(config, bound);

    // Garbage: not a TLS record.
    let mut g = TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    g.set_read_timeout(Some(WAIT)).expect("timeout");
    g.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff])
        .expect("write");
    let _ = read_to_end_or_error(&mut g);
    b.closed_because("the garbage ClientHello", |r| {
        matches!(r, CloseReason::Tls(_))
    });

    // Four silent peers fill the handshake slots; the fifth is refused at once.
    let started = Instant::now();
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", tls_port)).expect("connect"))
        .collect();
    // Wait until the broker holds all four (each is reported up to the node on accept).
    let mut fifth = TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    fifth.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = b.reports.wait_event(
        "the handshake cap",
        |e| matches!(e, Event::Refused { reason, .. } if reason.contains("TLS handshake limit")),
    );
    let (got, _) = read_to_end_or_error(&mut fifth);
    assert!(got.is_empty());
    // At the deadline the silent ones are closed...
    for mut s in silent {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        // A TLS alert at most; never VTP.
        let (got, _) = read_to_end_or_error(&mut s);
        assert!(!got.windows(9).any(|w| w == b"Transport"), "{got:?}");
    }
    b.closed_because("the handshake deadline", |r| {
        *r == CloseReason::TlsHandshakeTimeout
    });
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "closed by the deadline, not before"
    );
    // ...and a healthy author gets its ack.
    let mut a = tls_connect(tls_port, pki.client(None, None));
    a.write_all(&frame(&event("ivo://vtp.test/author#ok")))
        .expect("submit");
    let receipt = read_frame(&mut a).expect("a receipt");
    assert_eq!(role_of(&receipt).0, TransportRole::Ack);

    // A ClientHello to the plain subscriber port: its first bytes are no frame length.
    let mut hello = TcpStream::connect(("127.0.0.1", plain_port)).expect("connect");
    hello.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut conn = ClientConnection::new(
        pki.client(None, None),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("session");
    let mut first = Vec::new();
    conn.write_tls(&mut first).expect("a ClientHello");
    hello.write_all(&first).expect("write");
    // The broker sends its authenticate on accept (the port is plain), then drops the peer.
    let (got, _) = read_to_end_or_error(&mut hello);
    let auth = got.get(4..).map(role_of_lossy);
    assert_eq!(auth, Some(Some(TransportRole::Authenticate)));
    b.stop();
}

fn role_of_lossy(payload: &[u8]) -> Option<TransportRole> {
    match message::parse(payload, &Default::default()) {
        Ok(Message::Transport(t)) => Some(t.role),
        _ => None,
    }
}

/// A subscriber node dials `tls:localhost:PORT`: with the right CA it gets the authenticate
/// and relays events; with a CA that did not sign the server's certificate, or dialling an
/// address the certificate does not name (`127.0.0.1`), the dial fails with a TLS reason and
/// nothing is delivered.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn tls_dials_verify_the_server_certificate_and_name<R: Runtime>() {
    let pki = Pki::new("dials");
    let bound = bind_endpoints(&[
        (ListenerRole::Receive, pki.endpoint(false)),
        (ListenerRole::Broadcast, pki.endpoint(false)),
    ])
    .expect("bind");
    let receive = bound.port(ListenerRole::Receive).expect("port");
    let broadcast = bound.port(ListenerRole::Broadcast).expect("port");
    let upstream = Broker::start::<R>(broker_config(), bound);

    // Good: right CA, right name.
    let mut config = Config::new(None);
    config.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::Tls {
            host: "localhost".into(),
            port: broadcast,
        }],
    }];
    let sub = Broker::start::<R>(
        config,
        bind(&[])
            .expect("no listeners")
            .with_client_tls(pki.client(None, None)),
    );
    let _ = sub.reports.wait_event("the subscription up", |e| {
        matches!(
            e,
            Event::PeerUp {
                role: ConnRole::Subscription,
                ..
            }
        )
    });
    let _ = upstream
        .reports
        .wait_event("the feed", |e| matches!(e, Event::FiltersSet { .. }));
    let mut a = tls_connect(receive, pki.client(None, None));
    a.write_all(&frame(&event("ivo://vtp.test/author#relay")))
        .expect("submit");
    assert_eq!(
        role_of(&read_frame(&mut a).expect("receipt")).0,
        TransportRole::Ack
    );
    let d = sub
        .reports
        .deliveries
        .recv_timeout(WAIT)
        .expect("relayed over TLS");
    assert_eq!(&*d.ivorn, "ivo://vtp.test/author#relay");
    sub.stop();

    // Bad: another CA; then the right CA but a name the certificate does not have.
    let other = Pki::new("dials-other-ca");
    for (host, trust) in [
        ("localhost", other.ca.clone()),
        ("127.0.0.1", pki.ca.clone()),
    ] {
        let mut config = Config::new(None);
        config.upstreams = vec![Upstream {
            endpoints: vec![DialAddr::Tls {
                host: host.into(),
                port: broadcast,
            }],
        }];
        let tls = pki.client(None, Some(&trust));
        let n = Broker::start::<R>(config, bind(&[]).expect("none").with_client_tls(tls));
        let e = n.reports.wait_event("the failed dial", |e| {
            matches!(
                e,
                Event::PeerDown {
                    role: ConnRole::Subscription,
                    ..
                }
            )
        });
        let Event::PeerDown { reason, .. } = e else {
            unreachable!()
        };
        assert!(
            matches!(&reason, CloseReason::Tls(w) if w.contains("certificate")),
            "{host}: {reason}"
        );
        assert!(n.reports.deliveries.try_recv().is_err());
        n.stop();
    }
    upstream.stop();
}
