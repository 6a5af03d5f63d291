//! The socket tests every async runtime runs, written once (cargo feature `testing`).
//!
//! Each test takes a [`RunFn`]: the runtime's own way to block on its `run` with the given node,
//! listeners, effects and shutdown signal. A runtime crate gets all of them with one line in
//! its `tests/`:
//!
//! ```text
//! fn run(node: Node, bound: Bound, fx: Collect, stop: Stop) -> std::io::Result<Collect> {
//!     my_runtime::block_on(my_runtime::run(node, bound, fx, stop, Default::default()))
//! }
//! vtp_host::async_runtime_tests!(run);
//! ```
//!
//! The peers on the other side are plain blocking std sockets in threads, with timeouts: a
//! broken runtime fails a test, it never hangs it. The peer thread owns the stop signal, so a
//! failing peer also stops the node.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vtp_core::config::Upstream;
use vtp_core::driver::{Effects, StoreOp};
use vtp_core::endpoint::ListenAddr;
use vtp_core::filter::NoFilterEngine;
use vtp_core::message::{self, Message, TransportRole};
use vtp_core::{Config, Delivery, Event, ListenerRole, Node, Source};

use crate::net::{Bound, bind};

/// The shutdown signal handed to a runtime's `run`: completes when the test's peer is done.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a node on one runtime until `Stop` completes and returns its effects.
pub type RunFn = fn(Node, Bound, Collect, Stop) -> io::Result<Collect>;

/// Declares one `#[test]` per shared test, each calling it with `$run` (a [`RunFn`]).
#[macro_export]
macro_rules! async_runtime_tests {
    ($run:path) => {
        #[test]
        fn listeners_accept_submissions_over_ipv4_ipv6_and_unix() {
            $crate::aio::testing::listeners_accept_submissions($run);
        }

        #[test]
        fn subscription_dials_a_host_name_and_acks_events() {
            $crate::aio::testing::subscription_dials_a_host_name($run);
        }

        #[test]
        fn slow_subscriber_gets_every_event_once_it_reads() {
            $crate::aio::testing::slow_subscriber_gets_every_event($run);
        }
    };
}

/// Test effects: deliveries go to a channel, persisted records are counted.
#[derive(Debug)]
pub struct Collect {
    deliveries: mpsc::Sender<Delivery>,
    stored: usize,
}

impl Effects for Collect {
    fn store(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Persist(_)) {
            self.stored += 1;
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let _ = self.deliveries.send(delivery);
    }

    fn event(&mut self, _event: Event) {}
}

/// A broker listening for authors on IPv4, IPv6 and a Unix socket acks one submission on each,
/// delivers and persists all three, `run` hands back the caller's effects, and the socket file
/// is gone afterwards.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn listeners_accept_submissions(run: RunFn) {
    let sock = socket_path("receive");
    let bound = bind(&[
        (ListenerRole::Receive, listen("127.0.0.1:0")),
        (ListenerRole::Receive, listen("[::1]:0")),
        (ListenerRole::Receive, ListenAddr::Unix(sock.clone())),
    ])
    .expect("bind IPv4, IPv6 and Unix listeners");
    let addrs: Vec<String> = bound.addrs().into_iter().map(|(_, a)| a).collect();
    let (fx, deliveries) = collect();
    let (stop_tx, stop) = stop();
    let author = std::thread::spawn(move || {
        let _stop = stop_tx;
        let mut ivorns = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let ivorn = format!("ivo://vtp.test/author#{i}");
            let reply = match addr.strip_prefix("unix:") {
                Some(path) => submit(&mut unix_stream(path), &ivorn),
                None => submit(&mut tcp_stream(addr), &ivorn),
            };
            assert_eq!(
                reply,
                (TransportRole::Ack, ivorn.clone()),
                "reply from {addr}"
            );
            ivorns.push(ivorn);
        }
        for ivorn in &ivorns {
            let d = deliveries.recv_timeout(WAIT).expect("a delivery per event");
            assert_eq!(&*d.ivorn, ivorn);
            assert!(matches!(d.source, Source::Author(_)), "{:?}", d.source);
        }
    });
    let fx = run(broker(), bound, fx, stop).expect("run");
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
pub fn subscription_dials_a_host_name(run: RunFn) {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind the test broker");
    let port = upstream.local_addr().expect("local address").port();
    let mut config = Config::new(None);
    config.upstreams = vec![Upstream {
        endpoints: vec![vtp_core::endpoint::DialAddr::tcp("localhost", port)],
    }];
    let (fx, deliveries) = collect();
    let (stop_tx, stop) = stop();
    let broker = std::thread::spawn(move || {
        let _stop = stop_tx;
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
        s.write_all(&frame(&event_xml(ivorn, "")))
            .expect("send event");
        assert_eq!(
            transport(&read_frame(&mut s)),
            (TransportRole::Ack, ivorn.to_owned())
        );
        let d = deliveries
            .recv_timeout(WAIT)
            .expect("the event is delivered");
        assert_eq!(&*d.ivorn, ivorn);
        assert!(matches!(d.source, Source::Upstream(_)), "{:?}", d.source);
    });
    let node = node(config);
    let bound = bind(&[]).expect("no listeners");
    run(node, bound, fx, stop).expect("run");
    broker.join().expect("broker thread");
}

/// A subscriber that does not read while 1.5 MB of events are broadcast (far more than a socket
/// buffer holds) gets every one of them, in order, once it reads: the owner waits for the
/// socket to become writable and resumes.
///
/// # Panics
///
/// When the runtime misbehaves.
pub fn slow_subscriber_gets_every_event(run: RunFn) {
    const EVENTS: usize = 48;
    let sock = socket_path("broadcast");
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
    let (fx, _deliveries) = collect();
    let (stop_tx, stop) = stop();
    let path = sock.clone();
    let peers = std::thread::spawn(move || {
        let _stop = stop_tx;
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
            s.write_all(&frame(&event_xml(ivorn, &padding)))
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
    run(broker(), bound, fx, stop).expect("run");
    peers.join().expect("peer thread");
    let _ = std::fs::remove_file(sock);
}

/// How long any peer waits for the node.
const WAIT: Duration = Duration::from_secs(10);
const TS: &str = "2024-01-01T00:00:00Z";

fn broker() -> Node {
    let mut config = Config::new(Some("ivo://vtp.test/broker".into()));
    config.timing.test_event_interval = None;
    node(config)
}

fn node(config: Config) -> Node {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix).expect("a valid config")
}

fn collect() -> (Collect, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel();
    let fx = Collect {
        deliveries: tx,
        stored: 0,
    };
    (fx, rx)
}

/// The stop signal completes when the sender is dropped (also when a peer thread panics).
fn stop() -> (async_channel::Sender<()>, Stop) {
    let (tx, rx) = async_channel::bounded::<()>(1);
    let stop = Box::pin(async move {
        let _ = rx.recv().await;
    });
    (tx, stop)
}

fn listen(addr: &str) -> ListenAddr {
    ListenAddr::parse(addr).expect("a valid listen address")
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vtp-aio-{}-{name}.sock", std::process::id()))
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

/// Submits one event and returns the reply's role and origin.
fn submit(s: &mut (impl Read + Write), ivorn: &str) -> (TransportRole, String) {
    s.write_all(&frame(&event_xml(ivorn, ""))).expect("submit");
    transport(&read_frame(s))
}

fn event_xml(ivorn: &str, padding: &str) -> Vec<u8> {
    format!(
        "<voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='{ivorn}' \
         role='test' version='2.0'><Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN>\
         </Who><!--{padding}--></voe:VOEvent>"
    )
    .into_bytes()
}

fn frame(payload: &[u8]) -> bytes::Bytes {
    vtp_core::frame::encode(payload).expect("a frame below the limit")
}

fn read_frame(s: &mut impl Read) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a frame before the timeout");
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload).expect("the whole frame");
    payload
}

fn transport(payload: &[u8]) -> (TransportRole, String) {
    match message::parse(payload, &Default::default()).expect("a valid frame") {
        Message::Transport(t) => (t.role, t.origin.into_owned()),
        other => panic!("expected a Transport message, got {other:?}"),
    }
}
