//! The socket tests every runtime runs (tokio, smol, mio), written once.
//!
//! Each test is generic over a [`Runtime`]: the runtime's own way to run a node on the calling
//! thread until a [`Stop`] fires. A runtime crate gets all of them with a few lines in its
//! `tests/`:
//!
//! ```text
//! struct MyRuntime;
//!
//! impl vtp_host::testing::Runtime for MyRuntime {
//!     fn run(node: Node, bound: Bound, fx: Collect, stop: Stop, options: Options)
//!         -> std::io::Result<Collect> {
//!         my_runtime::block_on(my_runtime::run(node, bound, fx, stop, options))
//!     }
//! }
//!
//! vtp_host::socket_tests!(MyRuntime);
//! ```
//!
//! The peers on the other side are plain blocking std sockets with timeouts: a broken runtime
//! fails a test, it never hangs it. Either the node runs on the test's thread and the peers on
//! another, which owns the stop signal (so a failing peer also stops the node), or the node
//! runs on a thread of its own ([`Running`]) and the test's thread is the peer.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use vtp_core::config::Upstream;
use vtp_core::endpoint::{DialAddr, ListenAddr, PORT_SUBMIT};
use vtp_core::filter::NoFilterEngine;
use vtp_core::message::{self, Message, TransportRole};
use vtp_core::outbox::OutboxLimits;
use vtp_core::{
    CloseReason, Config, ConnRole, Event, ListenerRole, Node, Peer, Position, Remote, Source,
};

use super::peers::{self, frame};
use super::{Collect, RawSubscriber, Reports, Stop, WAIT, collect, connect_from, submit};
use crate::external;
use crate::net::{Bound, Options, bind};

/// How a runtime runs a node: the parameter of every test in this module.
pub trait Runtime: 'static {
    /// Reads of one connection per wake-up before the others get their turn, when the runtime
    /// bounds them (`vtp_mio::READS_PER_WAKE`); `None` when each connection has a reader task
    /// of its own.
    const READS_PER_WAKE: Option<usize> = None;

    /// Runs `node` on the bound listeners until `stop` completes, blocking the calling thread,
    /// and returns the effects (the runtime's `run`, inside its own executor if it is async).
    ///
    /// # Errors
    ///
    /// As the runtime's `run`.
    fn run(
        node: Node,
        bound: Bound,
        fx: Collect,
        stop: Stop,
        options: Options,
    ) -> io::Result<Collect>;
}

/// Declares one `#[test]` per shared socket test, each running it on `$runtime` (a type that
/// implements [`Runtime`]).
#[macro_export]
macro_rules! socket_tests {
    ($runtime:ty) => {
        $crate::socket_tests!(
            $runtime:
            listeners_accept_submissions_over_ipv4_ipv6_and_unix,
            subscription_dials_a_host_name_and_acks_events,
            slow_subscriber_gets_every_event_once_it_reads,
            submit_then_broadcast_exact_bytes_over_ipv4_ipv6_and_unix,
            a_connection_over_its_read_budget_is_served_again_without_a_new_wakeup,
            a_frame_much_larger_than_socket_buffers_arrives_whole,
            a_subscriber_that_never_reads_is_dropped_while_a_healthy_one_keeps_receiving,
            run_blocks_with_own_effects_until_the_shutdown_future_completes,
            dials_host_names_off_the_loop_and_unix_sockets,
            a_refused_dial_is_reported_as_connect_failed,
            connections_over_the_per_address_limit_are_closed_at_once_and_others_served,
            external_records_are_forwarded_once_and_committed_in_order,
        );
    };
    ($runtime:ty: $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::testing::sockets::$test::<$runtime>();
            }
        )+
    };
}

/// A node running on a thread of its own, with effects that report to the test.
#[derive(Debug)]
pub struct Running {
    /// Stops the node.
    pub stop: Stop,
    /// What the node delivers and reports.
    pub reports: Reports,
    /// The node's thread: the effects `run` handed back.
    pub handle: JoinHandle<io::Result<Collect>>,
}

impl Running {
    /// Starts a broker ([`broker`]) on `R`, on the bound listeners.
    pub fn start<R: Runtime>(bound: Bound, options: Options) -> Self {
        Self::start_node::<R>(broker(), bound, options)
    }

    /// Starts `node` on `R`, on the bound listeners.
    pub fn start_node<R: Runtime>(node: Node, bound: Bound, options: Options) -> Self {
        let (fx, reports) = collect(None);
        let stop = Stop::default();
        let wait = stop.clone();
        let handle = std::thread::spawn(move || R::run(node, bound, fx, wait, options));
        Self {
            stop,
            reports,
            handle,
        }
    }

    /// Fires the shutdown signal and returns the effects `run` handed back.
    ///
    /// # Panics
    ///
    /// If the node's thread panicked or `run` failed.
    pub fn stop(self) -> Collect {
        self.stop.fire();
        self.handle
            .join()
            .expect("the node's thread")
            .expect("run ends without error")
    }
}

/// A broker (`ivo://vtp.test/broker`) that sends no test events.
pub fn broker() -> Node {
    let mut config = Config::new(Some("ivo://vtp.test/broker".into()));
    config.timing.test_event_interval = None;
    node(config)
}

/// A node with `config`, no filter engine, on the system clock.
///
/// # Panics
///
/// If the configuration is invalid.
pub fn node(config: Config) -> Node {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix).expect("a valid config")
}

// ------------------------------------------------------------------ listeners and dials

/// A broker listening for authors on IPv4, IPv6 and a Unix socket acks one submission on each,
/// delivers and persists all three, `run` hands back the caller's effects, and the socket file
/// is gone afterwards.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn listeners_accept_submissions_over_ipv4_ipv6_and_unix<R: Runtime>() {
    let sock = socket_path("listeners");
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Receive, listen("[::1]:0")),
        (ListenerRole::Receive, ListenAddr::Unix(sock.clone())),
    ])
    .expect("bind IPv4, IPv6 and Unix listeners");
    let addrs: Vec<String> = bound.addrs().into_iter().map(|(_, a)| a).collect();
    let (fx, reports) = collect(None);
    let stop = Stop::default();
    let fire = FireOnDrop(stop.clone());
    let author = std::thread::spawn(move || {
        let _fire = fire;
        let mut ivorns = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let ivorn = format!("ivo://vtp.test/author#{i}");
            let reply = match addr.strip_prefix("unix:") {
                Some(path) => submit_compact(&mut unix_stream(path), &ivorn),
                None => submit_compact(&mut tcp_stream(addr), &ivorn),
            };
            assert_eq!(
                reply,
                (TransportRole::Ack, ivorn.clone()),
                "reply from {addr}"
            );
            ivorns.push(ivorn);
        }
        for ivorn in &ivorns {
            let d = reports
                .deliveries
                .recv_timeout(WAIT)
                .expect("a delivery per event");
            assert_eq!(&*d.ivorn, ivorn);
            assert!(matches!(d.source, Source::Author(_)), "{:?}", d.source);
        }
    });
    let fx = R::run(broker(), bound, fx, stop, Options::default()).expect("run");
    author.join().expect("author thread");
    assert_eq!(fx.stored, 3, "run() returns the caller's effects");
    let left = sock.exists();
    let _ = std::fs::remove_file(&sock);
    assert!(
        !left,
        "the Unix socket file is removed when the broker stops"
    );
}

/// A subscriber node dials its upstream by host name (`localhost`), answers the broker's
/// authenticate, acks an event and delivers it.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn subscription_dials_a_host_name_and_acks_events<R: Runtime>() {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind the test broker");
    let port = upstream.local_addr().expect("local address").port();
    let mut config = Config::new(None);
    config.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::tcp("localhost", port)],
    }];
    let (fx, reports) = collect(None);
    let stop = Stop::default();
    let fire = FireOnDrop(stop.clone());
    let broker = std::thread::spawn(move || {
        let _fire = fire;
        let mut s = accept_within(&upstream);
        let origin = "ivo://vtp.test/upstream";
        s.write_all(&message::build_authenticate(origin, TS))
            .expect("send authenticate");
        assert_eq!(
            transport(&read_frame(&mut s)),
            (TransportRole::Authenticate, origin.to_owned()),
            "the subscriber answers authenticate"
        );
        let ivorn = "ivo://vtp.test/upstream#1";
        s.write_all(&frame(&compact_event(ivorn, "")))
            .expect("send event");
        assert_eq!(
            transport(&read_frame(&mut s)),
            (TransportRole::Ack, ivorn.to_owned())
        );
        let d = reports
            .deliveries
            .recv_timeout(WAIT)
            .expect("the event is delivered");
        assert_eq!(&*d.ivorn, ivorn);
        assert!(matches!(d.source, Source::Upstream(_)), "{:?}", d.source);
        let up = reports.wait_event("upstream up", |e| {
            matches!(
                e,
                Event::PeerUp {
                    role: ConnRole::Subscription,
                    ..
                }
            )
        });
        let endpoint = Remote::Dialled(format!("localhost:{port}").into());
        assert!(
            matches!(&up, Event::PeerUp { remote, .. } if *remote == endpoint),
            "named by the endpoint dialled: {up:?}"
        );
    });
    let bound = bind(&[]).expect("no listeners");
    R::run(node(config), bound, fx, stop, Options::default()).expect("run");
    broker.join().expect("broker thread");
}

/// `run` blocks the caller's thread with the caller's own effects until the shutdown future
/// completes, and returns those effects.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn run_blocks_with_own_effects_until_the_shutdown_future_completes<R: Runtime>() {
    let bound = bind(&[(ListenerRole::Receive, listen("127.0.0.1:0"))]).expect("bind");
    let port = bound.port(ListenerRole::Receive).expect("a TCP port");
    let (fx, reports) = collect(None);
    let stop = Stop::default();
    let stopper = stop.clone();
    let author = std::thread::spawn(move || {
        let role = submit(
            tcp_stream(&format!("127.0.0.1:{port}")),
            &event_xml("ivo://vtp.test/a#1", 10),
        )
        .0;
        let delivered = reports.deliveries.recv_timeout(WAIT).expect("a delivery");
        stopper.fire();
        (role, delivered)
    });
    let started = Instant::now();
    let fx = R::run(broker(), bound, fx, stop, Options::default()).expect("run");
    let (role, delivered) = author.join().expect("author thread");
    assert_eq!(role, "ack");
    assert_eq!(&*delivered.ivorn, "ivo://vtp.test/a#1");
    assert_eq!(fx.stored, 1, "run() returns the caller's effects");
    assert!(
        started.elapsed() < WAIT,
        "run returned once the future completed"
    );
}

/// A node with no listeners submits like `vtp send`, by host name (`localhost`, resolved
/// without blocking the loop) and over a Unix socket; the broker acks both and persists them,
/// and removes its socket file at shutdown.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn dials_host_names_off_the_loop_and_unix_sockets<R: Runtime>() {
    let sock = socket_path("dials");
    let unix = format!("unix:{}", sock.display());
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Receive, listen(&unix)),
    ])
    .expect("bind");
    let port = bound.port(ListenerRole::Receive).expect("a TCP port");
    let broker = Running::start::<R>(bound, Options::default());
    // "localhost" needs resolution; if it yields ::1 first, the refused attempt falls through
    // to 127.0.0.1.
    let by_name = send::<R>(&format!("localhost:{port}"), "ivo://vtp.test/a#name");
    assert!(
        matches!(by_name, Event::SubmissionAcked { .. }),
        "{by_name:?}"
    );
    let by_path = send::<R>(&unix, "ivo://vtp.test/a#unix");
    assert!(
        matches!(by_path, Event::SubmissionAcked { .. }),
        "{by_path:?}"
    );

    let fx = broker.stop();
    assert_eq!(fx.stored, 2);
    let left = sock.exists();
    let _ = std::fs::remove_file(&sock);
    assert!(!left, "the Unix socket file is removed at shutdown");
}

/// A submission to a port nobody listens on ends at once as a failed submission with
/// `ConnectRefused`, not after the receipt timeout.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn a_refused_dial_is_reported_as_connect_failed<R: Runtime>() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local address").port()
    };
    let started = Instant::now();
    let outcome = send::<R>(&format!("127.0.0.1:{port}"), "ivo://vtp.test/a#refused");
    match outcome {
        Event::SubmissionFailed { reason, .. } => {
            assert_eq!(reason, CloseReason::ConnectRefused, "{reason:?}");
        }
        other => panic!("expected a failed submission, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the receipt timeout"
    );
}

// -------------------------------------------------------------------- bytes and buffers

/// The exact bytes an author submits reach a subscriber: IPv4 and Unix in, IPv6 out. Shutdown
/// closes the subscriber's connection (it reads end of stream, not a timeout).
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn submit_then_broadcast_exact_bytes_over_ipv4_ipv6_and_unix<R: Runtime>() {
    let sock = socket_path("exact-bytes");
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Receive, ListenAddr::Unix(sock.clone())),
        (ListenerRole::Broadcast, listen("[::1]:0")),
    ])
    .expect("bind");
    let receive = bound.port(ListenerRole::Receive).expect("a TCP port");
    let broadcast = bound.port(ListenerRole::Broadcast).expect("a TCP port");
    let broker = Running::start::<R>(bound, Options::default());
    let mut sub =
        RawSubscriber::connect(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], broadcast)));
    let up = broker.reports.wait_event("subscriber up", is_feed_up);
    let sub_addr = sub.stream.local_addr().expect("the subscriber's address");
    assert!(
        matches!(&up, Event::PeerUp { remote, .. } if *remote == Remote::Accepted(Peer::Tcp(sub_addr))),
        "the subscriber's address and port, {sub_addr}: {up:?}"
    );

    let over_tcp = event_xml("ivo://vtp.test/a#tcp", 100);
    let s = tcp_stream(&format!("127.0.0.1:{receive}"));
    let author = s.local_addr().expect("the author's address");
    assert_eq!(submit(s, &over_tcp).0, "ack");
    assert_eq!(sub.next_event(), over_tcp, "exact bytes, IPv4 in, IPv6 out");
    let accepted = broker
        .reports
        .wait_event("accepted", |e| matches!(e, Event::Accepted { .. }));
    assert!(
        matches!(&accepted, Event::Accepted { remote, .. } if *remote == Remote::Accepted(Peer::Tcp(author))),
        "the author's address and port, {author}: {accepted:?}"
    );

    let over_unix = event_xml("ivo://vtp.test/a#unix", 200);
    let s = unix_stream(sock.to_str().expect("UTF-8 temp path"));
    assert_eq!(submit(s, &over_unix).0, "ack");
    assert_eq!(sub.next_event(), over_unix, "exact bytes, Unix in");

    let fx = broker.stop();
    assert_eq!(fx.stored, 2);
    // Shutdown closed the subscriber's connection: it reads end of stream.
    let mut rest = Vec::new();
    assert!(
        sub.stream.read_to_end(&mut rest).is_ok(),
        "EOF, not a timeout"
    );
    let _ = std::fs::remove_file(&sock);
}

/// With 16-byte reads, an event needs more reads than one wake-up allows; it arrives in one
/// segment, so no further readiness edge comes, and only serving the connection again lets the
/// rest be read.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn a_connection_over_its_read_budget_is_served_again_without_a_new_wakeup<R: Runtime>() {
    let options = Options {
        read_chunk: 16,
        ..Options::default()
    };
    let bound = bind(&[(ListenerRole::Receive, listen("127.0.0.1:0"))]).expect("bind");
    let receive = bound.port(ListenerRole::Receive).expect("a TCP port");
    let broker = Running::start::<R>(bound, options);
    let ev = event_xml("ivo://vtp.test/a#budget", 10);
    assert!(
        ev.len() > 16 * R::READS_PER_WAKE.unwrap_or(1),
        "more than one wake-up of reads"
    );
    let s = tcp_stream(&format!("127.0.0.1:{receive}"));
    assert_eq!(submit(s, &ev).0, "ack");
    assert_eq!(broker.stop().stored, 1);
}

/// A 900 KB event, far larger than a socket buffer, reaches the subscriber whole.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn a_frame_much_larger_than_socket_buffers_arrives_whole<R: Runtime>() {
    let (bound, receive, broadcast) = loopback_listeners();
    let broker = Running::start::<R>(bound, Options::default());
    let mut sub = RawSubscriber::connect(SocketAddr::from(([127, 0, 0, 1], broadcast)));
    let _ = broker.reports.wait_event("subscriber up", is_feed_up);
    // 900 KB of padding in a comment (captured texts are capped at 64 KiB).
    let mut big = event_xml("ivo://vtp.test/a#huge", 10);
    let at = big.len() - "</voe:VOEvent>\n".len();
    let comment = format!("<!-- {} -->\n", "y".repeat(900 * 1000));
    big.splice(at..at, comment.into_bytes());
    let s = tcp_stream(&format!("127.0.0.1:{receive}"));
    assert_eq!(submit(s, &big).0, "ack");
    assert!(
        sub.next_event() == big,
        "the subscriber gets the exact bytes"
    );
    broker.stop();
}

/// A subscriber that does not read while 1.5 MB of events are broadcast (far more than a socket
/// buffer holds) gets every one of them, in order, once it reads: the node waits for the
/// socket to become writable and resumes.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn slow_subscriber_gets_every_event_once_it_reads<R: Runtime>() {
    const EVENTS: usize = 48;
    let sock = socket_path("slow-subscriber");
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Broadcast, ListenAddr::Unix(sock.clone())),
    ])
    .expect("bind listeners");
    let receive = bound
        .addrs()
        .into_iter()
        .find(|(r, _)| *r == ListenerRole::Receive)
        .map(|(_, a)| a)
        .expect("receive address");
    let (fx, _reports) = collect(None);
    let stop = Stop::default();
    let fire = FireOnDrop(stop.clone());
    let path = sock.clone();
    let peers = std::thread::spawn(move || {
        let _fire = fire;
        let mut sub = unix_stream(path.to_str().expect("UTF-8 temp path"));
        assert_eq!(
            transport(&read_frame(&mut sub)).0,
            TransportRole::Authenticate
        );
        let padding = "x".repeat(32 * 1024);
        let ivorns: Vec<String> = (0..EVENTS)
            .map(|i| format!("ivo://vtp.test/author#slow{i}"))
            .collect();
        for ivorn in &ivorns {
            let mut s = tcp_stream(&receive);
            s.write_all(&frame(&compact_event(ivorn, &padding)))
                .expect("submit");
            assert_eq!(transport(&read_frame(&mut s)).0, TransportRole::Ack);
        }
        for ivorn in &ivorns {
            let f = read_frame(&mut sub);
            match message::parse(&f, &Default::default()).expect("a valid frame") {
                Message::VoEvent(ev) => assert_eq!(&*ev.ivorn, ivorn),
                other => panic!("expected {ivorn}, got {other:?}"),
            }
        }
    });
    R::run(broker(), bound, fx, stop, Options::default()).expect("run");
    peers.join().expect("peer thread");
    let _ = std::fs::remove_file(sock);
}

/// With a 256 KiB outbox, a subscriber that never reads (a 4 KiB receive buffer) is dropped
/// for a full outbox, and only it: a healthy subscriber gets every event, in order, and stays
/// connected. The dropped one reads what it had buffered, then end of stream.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn a_subscriber_that_never_reads_is_dropped_while_a_healthy_one_keeps_receiving<R: Runtime>() {
    let options = Options {
        outbox: OutboxLimits {
            bytes_max: 256 * 1024,
            frames_max: 64,
        },
        ..Options::default()
    };
    let (bound, receive, broadcast) = loopback_listeners();
    let broker = Running::start::<R>(bound, options);

    let mut healthy = RawSubscriber::connect(SocketAddr::from(([127, 0, 0, 1], broadcast)));
    let Event::PeerUp {
        conn: healthy_id, ..
    } = broker.reports.wait_event("healthy up", is_feed_up)
    else {
        unreachable!("a PeerUp")
    };
    let mut slow = slow_subscriber(broadcast);
    let Event::PeerUp { conn: slow_id, .. } = broker.reports.wait_event("slow up", is_feed_up)
    else {
        unreachable!("a PeerUp")
    };

    let (got_tx, got_rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        while let Some(ev) = healthy.try_next_event() {
            if got_tx.send(ev).is_err() {
                break;
            }
        }
    });

    // ~64 KB events until the slow subscriber is dropped, then a few more.
    let mut sent = Vec::new();
    let mut dropped_at = None;
    for i in 0..400 {
        let ev = event_xml(&format!("ivo://vtp.test/a#big{i}"), 64 * 1000);
        let s = tcp_stream(&format!("127.0.0.1:{receive}"));
        assert_eq!(submit(s, &ev).0, "ack");
        sent.push(ev);
        while let Ok(e) = broker.reports.events.try_recv() {
            if let Event::PeerDown {
                conn,
                reason,
                role: ConnRole::Feed,
                ..
            } = e
            {
                assert_eq!(
                    conn, slow_id,
                    "only the slow subscriber is dropped: {reason:?}"
                );
                assert_eq!(reason, CloseReason::OutboxFull);
                dropped_at.get_or_insert(i);
            }
        }
        if dropped_at.is_some_and(|d| i >= d + 3) {
            break;
        }
    }
    let dropped_at = dropped_at.expect("the slow subscriber was dropped for a full outbox");
    assert!(
        dropped_at >= 2,
        "dropped only after its outbox filled, at event {dropped_at}"
    );
    for (i, want) in sent.iter().enumerate() {
        let got = got_rx.recv_timeout(WAIT).expect("the next event");
        assert!(
            got == *want,
            "healthy subscriber: event {i} differs or is missing"
        );
    }
    assert!(
        broker
            .reports
            .events
            .try_iter()
            .all(|e| !matches!(e, Event::PeerDown { conn, .. } if conn == healthy_id)),
        "the healthy subscriber stays connected"
    );
    // The dropped subscriber's socket was closed: what it had buffered, then end of stream.
    let mut rest = Vec::new();
    assert!(slow.read_to_end(&mut rest).is_ok(), "EOF, not a timeout");

    broker.stop();
    reader.join().expect("reader thread");
}

// ------------------------------------------------------------------- per-address limits

/// With at most 2 author and 2 subscriber connections per address, 2 idle connections from
/// 127.0.0.1 to each listener are held, every further one from 127.0.0.1 is accepted and
/// closed at once without a byte, and an author and a subscriber at 127.0.0.2 are served.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn connections_over_the_per_address_limit_are_closed_at_once_and_others_served<R: Runtime>() {
    const EXTRA: usize = 20;
    let mut config = Config::new(Some("ivo://vtp.test/broker".into()));
    config.timing.test_event_interval = None;
    config.limits.author_connections_per_address = 2;
    config.limits.subscriber_connections_per_address = 2;
    let (bound, receive, broadcast) = loopback_listeners();
    let broker = Running::start_node::<R>(node(config), bound, Options::default());
    let flood: IpAddr = [127, 0, 0, 1].into();
    let other: IpAddr = [127, 0, 0, 2].into();
    let receive = SocketAddr::from((flood, receive));
    let broadcast = SocketAddr::from((flood, broadcast));
    // Accepted in connection order: the first two of each are held (the subscribers get the
    // authenticate), every later one is refused.
    let held_authors: Vec<TcpStream> = (0..2).map(|_| connect_from(flood, receive)).collect();
    let held_subs: Vec<RawSubscriber> = (0..2)
        .map(|_| RawSubscriber::on(connect_from(flood, broadcast)))
        .collect();
    let started = Instant::now();
    let refused: Vec<TcpStream> = (0..EXTRA)
        .flat_map(|_| [connect_from(flood, receive), connect_from(flood, broadcast)])
        .collect();
    for mut s in refused {
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(_) => panic!("a connection over the limit got a byte"),
            Err(e) => panic!("a connection over the limit was not closed: {e}"),
        }
    }
    assert!(
        started.elapsed() < WAIT / 3,
        "closed at once, not at a deadline: {:?}",
        started.elapsed()
    );
    // Another address is served on both listeners.
    let mut sub = RawSubscriber::on(connect_from(other, broadcast));
    let ev = event_xml("ivo://vtp.test/a#per-address", 10);
    assert_eq!(submit(connect_from(other, receive), &ev).0, "ack");
    assert_eq!(sub.next_event(), ev);
    let refusals = |e: &Event| match e {
        Event::Refused { reason, .. } => reason.contains("per-address limit reached"),
        _ => false,
    };
    let _ = broker.reports.wait_event("a per-address refusal", refusals);
    drop((held_authors, held_subs));
    broker.stop();
}

// ----------------------------------------------------------------------------- helpers

/// The timestamp on every Transport message the test peers send.
const TS: &str = "2024-01-01T00:00:00Z";

/// Fires its stop when dropped: at the end of a peer thread, also when it panics.
struct FireOnDrop(Stop);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

/// Records of an external source (what a Kafka consumer hands in, from its own thread) reach
/// a subscriber byte for byte, each distinct event once; garbage and duplicates are skipped;
/// every offset of every lane is committed back to the feeder.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn external_records_are_forwarded_once_and_committed_in_order<R: Runtime>() {
    let (bound, _, broadcast) = loopback_listeners();
    let (inbox, mut feeders, commits) = external::channel(&["kafka test".to_owned()], 8);
    let bound = bound.with_externals(inbox);
    let (mut fx, reports) = collect(None);
    fx.commits = Some(commits);
    let stop = Stop::default();
    let wait = stop.clone();
    let handle = std::thread::spawn(move || R::run(broker(), bound, fx, wait, Options::default()));
    let mut sub = RawSubscriber::connect(("127.0.0.1", broadcast));
    let _ = reports.wait_event("subscriber up", is_feed_up);

    // 60 records on two lanes: 40 distinct events, 10 repeats, 10 that are not VOEvents. The
    // source may have at most 8 records outstanding: the feeder waits for commits.
    let feeder = feeders.pop().expect("one feeder");
    let records: Vec<Vec<u8>> = (0..60u32)
        .map(|i| match i % 6 {
            5 => format!("not a voevent {i}").into_bytes(),
            4 => event_xml(&format!("ivo://vtp.test/k#{}", i / 6 * 4), 50),
            _ => event_xml(&format!("ivo://vtp.test/k#{}", i / 6 * 4 + i % 6), 50),
        })
        .collect();
    let sent = records.clone();
    let reader = std::thread::spawn(move || {
        for (i, r) in sent.into_iter().enumerate() {
            let at = Position {
                lane: u32::try_from(i % 2).expect("a lane"),
                offset: (i / 2) as u64,
            };
            let payload = Bytes::from(r);
            let deadline = Instant::now() + WAIT;
            while !feeder
                .send(at, payload.clone(), Duration::from_millis(200))
                .expect("the loop runs")
            {
                assert!(
                    Instant::now() < deadline,
                    "no room for record {i}: no commits?"
                );
                let _ = feeder.take_commits();
            }
        }
        let mut last = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while last.get(&0) != Some(&30) || last.get(&1) != Some(&30) {
            assert!(Instant::now() < deadline, "commits so far: {last:?}");
            feeder.wait_commits(Duration::from_millis(100));
            last.extend(feeder.take_commits());
        }
        (last, feeder.outstanding())
    });
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for r in &records {
        if r.starts_with(b"<?xml") && !expected.contains(r) {
            expected.push(r.clone());
        }
    }
    assert_eq!(expected.len(), 40);
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(sub.next_event());
    }
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every distinct event once, byte for byte");
    let (last, outstanding) = reader.join().expect("the reader");
    assert_eq!(last, BTreeMap::from([(0, 30), (1, 30)]));
    assert_eq!(outstanding, 0);
    stop.fire();
    let fx = handle.join().expect("the node's thread").expect("run");
    assert_eq!(fx.stored, 40);
    let skipped = std::iter::from_fn(|| reports.events.try_recv().ok())
        .filter(|e| matches!(e, Event::ExternalSkipped { .. }))
        .count();
    assert_eq!(skipped, 10);
}

/// An author and a subscriber listener on 127.0.0.1, ephemeral ports: (bound, receive, broadcast).
fn loopback_listeners() -> (Bound, u16, u16) {
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Broadcast, listen("127.0.0.1:0")),
    ])
    .expect("bind");
    let receive = bound.port(ListenerRole::Receive).expect("a TCP port");
    let broadcast = bound.port(ListenerRole::Broadcast).expect("a TCP port");
    (bound, receive, broadcast)
}

/// Submits like `vtp send`: a node with no listeners, stopped by its own outcome event.
fn send<R: Runtime>(endpoint: &str, ivorn: &str) -> Event {
    let mut author = node(Config::new(None));
    let addr = DialAddr::parse(endpoint, PORT_SUBMIT).expect("a valid endpoint");
    author
        .submit(addr, &event_xml(ivorn, 10), Instant::now())
        .expect("a valid submission");
    let stop = Stop::default();
    let (fx, reports) = collect(Some((stop.clone(), is_outcome)));
    R::run(
        author,
        bind(&[]).expect("no listeners"),
        fx,
        stop,
        Options::default(),
    )
    .expect("run");
    reports.wait_event("submission outcome", is_outcome)
}

fn is_outcome(e: &Event) -> bool {
    matches!(
        e,
        Event::SubmissionAcked { .. }
            | Event::SubmissionNaked { .. }
            | Event::SubmissionFailed { .. }
    )
}

fn is_feed_up(e: &Event) -> bool {
    matches!(
        e,
        Event::PeerUp {
            role: ConnRole::Feed,
            ..
        }
    )
}

fn listen(addr: &str) -> ListenAddr {
    ListenAddr::parse(addr).expect("a valid listen address")
}

/// A socket path unique to this test process and test.
fn socket_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vtp-sockets-{}-{test}.sock", std::process::id()))
}

fn tcp_stream(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect over TCP");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

fn unix_stream(path: &str) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect over a Unix socket");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

/// A subscriber socket with a tiny receive buffer that never reads.
fn slow_subscriber(port: u16) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a socket");
    s.set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(WAIT)).expect("read timeout");
                return s;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::park_timeout(Duration::from_millis(10));
            }
            Err(e) => panic!("the node did not dial: {e}"),
        }
    }
}

/// Submits one [`compact_event`] and returns the reply's role and origin.
fn submit_compact(s: &mut (impl Read + Write), ivorn: &str) -> (TransportRole, String) {
    s.write_all(&frame(&compact_event(ivorn, "")))
        .expect("submit");
    transport(&read_frame(s))
}

/// A VOEvent with `pad` bytes of description text.
fn event_xml(ivorn: &str, pad: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN></Who>\n  \
         <Description>{}</Description>\n\
         </voe:VOEvent>\n",
        "x".repeat(pad)
    )
    .into_bytes()
}

/// A test VOEvent on one line, with `padding` in a comment.
fn compact_event(ivorn: &str, padding: &str) -> Vec<u8> {
    format!(
        "<voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='{ivorn}' \
         role='test' version='2.0'><Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN>\
         </Who><!--{padding}--></voe:VOEvent>"
    )
    .into_bytes()
}

fn read_frame(s: &mut impl Read) -> Vec<u8> {
    peers::read_frame(s).expect("a frame before the timeout")
}

fn transport(payload: &[u8]) -> (TransportRole, String) {
    match message::parse(payload, &Default::default()).expect("a valid frame") {
        Message::Transport(t) => (t.role, t.origin.into_owned()),
        other => panic!("expected a Transport message, got {other:?}"),
    }
}
