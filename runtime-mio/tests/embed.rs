//! The embedding API: `vtp_mio::run` blocks the caller's thread with the caller's own effects
//! and shutdown future, and dials out like `vtp send` (host names resolved off the loop, Unix
//! sockets, failed connects reported).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;
use vtp_core::endpoint::{DialAddr, PORT_SUBMIT};
use vtp_core::{CloseReason, Event, ListenerRole};

#[test]
fn run_blocks_with_own_effects_until_the_shutdown_future_completes() {
    let bound = bind(&[(ListenerRole::Receive, "127.0.0.1:0")]);
    let port = bound.port(ListenerRole::Receive).unwrap();
    let (fx, reports) = collect(None);
    let stop = Stop::default();
    let stopper = stop.clone();
    let author = std::thread::spawn(move || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let role = submit_raw(s, &event_xml("ivo://vtp.test/a#1", 10));
        let delivered = reports.deliveries.recv_timeout(WAIT).unwrap();
        stopper.fire();
        (role, delivered)
    });
    let started = Instant::now();
    let fx = vtp_mio::run(
        node(Some("ivo://vtp.test/embedded")),
        bound,
        fx,
        stop.wait(),
        Default::default(),
    )
    .unwrap();
    let (role, delivered) = author.join().unwrap();
    assert_eq!(role, "ack");
    assert_eq!(&*delivered.ivorn, "ivo://vtp.test/a#1");
    assert_eq!(fx.stored, 1, "run() returns the caller's effects");
    assert!(
        started.elapsed() < WAIT,
        "run returned once the future completed"
    );
}

fn is_outcome(e: &Event) -> bool {
    matches!(
        e,
        Event::SubmissionAcked { .. }
            | Event::SubmissionNaked { .. }
            | Event::SubmissionFailed { .. }
    )
}

/// Submits like `vtp send`: a node with no listeners, stopped by its own outcome event.
fn send(endpoint: &str, ivorn: &str) -> Event {
    let mut author = node(None);
    let addr = DialAddr::parse(endpoint, PORT_SUBMIT).unwrap();
    author
        .submit(addr, &event_xml(ivorn, 10), Instant::now())
        .unwrap();
    let stop = Stop::default();
    let (fx, reports) = collect(Some((stop.clone(), is_outcome)));
    vtp_mio::run(author, bind(&[]), fx, stop.wait(), Default::default()).unwrap();
    reports.wait_event("submission outcome", is_outcome)
}

#[test]
fn dials_host_names_off_the_loop_and_unix_sockets() {
    let dir = std::env::temp_dir().join(format!("vtp-mio-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("receive.sock");
    let unix = format!("unix:{}", sock.display());
    let bound = bind(&[
        (ListenerRole::Receive, "127.0.0.1:0"),
        (ListenerRole::Receive, unix.as_str()),
    ]);
    let port = bound.port(ListenerRole::Receive).unwrap();
    let broker = Running::start(bound, Default::default());
    // "localhost" needs resolution; if it yields ::1 first, the refused attempt falls through
    // to 127.0.0.1.
    let by_name = send(&format!("localhost:{port}"), "ivo://vtp.test/a#name");
    assert!(
        matches!(by_name, Event::SubmissionAcked { .. }),
        "{by_name:?}"
    );
    let by_path = send(&unix, "ivo://vtp.test/a#unix");
    assert!(
        matches!(by_path, Event::SubmissionAcked { .. }),
        "{by_path:?}"
    );

    let fx = broker.stop();
    assert_eq!(fx.stored, 2);
    assert!(
        !sock.exists(),
        "the Unix socket file is removed at shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_dial_is_reported_as_connect_failed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let outcome = send(&format!("127.0.0.1:{port}"), "ivo://vtp.test/a#refused");
    match outcome {
        Event::SubmissionFailed { reason, .. } => {
            assert!(
                matches!(reason, CloseReason::ConnectFailed(_)),
                "{reason:?}"
            );
        }
        other => panic!("expected a failed submission, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the receipt timeout"
    );
}
