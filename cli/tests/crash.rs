//! Crash safety: `kill -9` a broker while authors are submitting; after a restart on the same
//! event database, no event it acked or forwarded before the kill is forwarded again.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;
use vtp_core::message::{self, Message};

/// Author threads submitting at once.
const AUTHORS: usize = 4;
/// Acks before the kill.
const ACKED_BEFORE_KILL: usize = 200;

#[test]
fn kill_9_never_makes_a_restarted_broker_forward_an_acked_or_forwarded_event_again() {
    for rt in RUNTIMES {
        crash_and_restart(rt);
    }
}

fn crash_and_restart(rt: &str) {
    let args = ["--broadcast-test-interval", "0", "--runtime", rt];
    let mut b = Broker::start_with_db("crash-a", &args, TempDir::new("crash"));

    // A subscriber recording every event forwarded before the kill.
    let forwarded_before: Arc<Mutex<Vec<String>>> = Arc::default();
    let sub = RawSubscriber::connect(loopback(b.broadcast));
    let recorder = {
        let seen = forwarded_before.clone();
        thread::spawn(move || record_events(sub.stream, &seen, None))
    };

    // Authors submitting distinct events until the broker dies.
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let authors: Vec<_> = (0..AUTHORS)
        .map(|a| {
            let (sent, acked, stop) = (sent.clone(), acked.clone(), stop.clone());
            let port = b.receive;
            let rt = rt.to_owned();
            thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let ivorn = format!("ivo://vtp.test/crash#{rt}-{a}-{i}");
                    sent.lock().unwrap().push(ivorn.clone());
                    match try_submit(port, &event_xml(&ivorn)) {
                        Some(true) => acked.lock().unwrap().push(ivorn),
                        Some(false) => panic!("{ivorn} was refused"),
                        None => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "{rt}: only {} acks; broker log:\n{}",
            acked.lock().unwrap().len(),
            b.proc.log.text()
        );
        thread::park_timeout(Duration::from_millis(5));
    }
    // SIGKILL, while the authors are still submitting.
    b.proc.child.kill().unwrap();
    b.proc.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for a in authors {
        a.join().unwrap();
    }
    recorder.join().unwrap();
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let forwarded_before: BTreeSet<String> =
        forwarded_before.lock().unwrap().iter().cloned().collect();
    assert!(!forwarded_before.is_empty(), "{rt}: nothing forwarded");

    // Restart on the same event database, new ports; the subscriber comes back.
    let db = std::mem::replace(&mut b.db, TempDir::new("unused"));
    drop(b);
    let b = Broker::start_with_db("crash-b", &args, db);
    b.proc
        .log
        .wait_for("the restore", |l| l.contains("entries restored"));
    let sub = RawSubscriber::connect(loopback(b.broadcast));
    let forwarded_after: Arc<Mutex<Vec<String>>> = Arc::default();
    let sentinel = format!("ivo://vtp.test/crash#{rt}-sentinel");
    let recorder = {
        let seen = forwarded_after.clone();
        let sentinel = sentinel.clone();
        thread::spawn(move || record_events(sub.stream, &seen, Some(&sentinel)))
    };
    // Every event the authors sent, acked or not, is submitted again: each is acked, as new
    // or as a duplicate.
    for ivorn in sent.iter().chain([&sentinel]) {
        assert_eq!(
            try_submit(b.receive, &event_xml(ivorn)),
            Some(true),
            "{rt}: {ivorn} after the restart"
        );
    }
    // Forwards follow submission order: once the sentinel is in, so is everything before it.
    recorder.join().unwrap();
    let forwarded_after = std::mem::take(&mut *forwarded_after.lock().unwrap());
    assert_eq!(forwarded_after.last(), Some(&sentinel));

    for ivorn in &forwarded_after {
        assert!(
            !acked.contains(ivorn),
            "{rt}: {ivorn} was acked before the kill, yet forwarded again after the restart"
        );
        assert!(
            !forwarded_before.contains(ivorn),
            "{rt}: {ivorn} was forwarded before the kill and again after the restart"
        );
    }
    // At most once, and not much less. A batch whose fdatasync had not returned at the kill is
    // dropped at the restart (seen-index format 3), so its events are not held as seen; what
    // can still be recorded without reaching this subscriber is an event whose commit was
    // published durable just before the kill: its forwards not yet written, or written and
    // discarded with the killed process's socket. At most one in flight per author, plus one
    // per author whose ack was being written when the kill came.
    let forwarded_after: BTreeSet<&String> = forwarded_after.iter().collect();
    let lost: Vec<&String> = sent
        .iter()
        .filter(|i| !forwarded_before.contains(*i) && !forwarded_after.contains(i))
        .collect();
    assert!(
        lost.len() <= 2 * AUTHORS,
        "{rt}: {} events never forwarded: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{rt}: {} sent, {} acked and {} forwarded before the kill, {} forwarded after the \
         restart, {} recorded but never forwarded",
        sent.len(),
        acked.len(),
        forwarded_before.len(),
        forwarded_after.len() - 1,
        lost.len()
    );
}

/// Submits one event on its own connection; `Some(true)` on an ack, `Some(false)` on a nak,
/// `None` if the broker is gone.
fn try_submit(port: u16, payload: &[u8]) -> Option<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.write_all(&vtp_core::frame::encode(payload).unwrap())
        .ok()?;
    let reply = read_frame(&mut s).ok()?;
    match message::parse(&reply, &Default::default()) {
        Ok(Message::Transport(t)) => Some(t.role.as_str() == "ack"),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// Records the ivorn of every event until the connection ends (or `until` arrives), acking
/// each one.
fn record_events(mut s: TcpStream, seen: &Mutex<Vec<String>>, until: Option<&str>) {
    while let Ok(frame) = read_frame(&mut s) {
        if let Ok(Message::VoEvent(ev)) = message::parse(&frame, &Default::default()) {
            seen.lock().unwrap().push(ev.ivorn.to_string());
            let ack = message::build_ack(&ev.ivorn, None, "2024-01-01T00:00:00Z");
            if s.write_all(&ack).is_err() || until == Some(&*ev.ivorn) {
                return;
            }
        }
    }
    assert!(until.is_none(), "the subscriber lost its broker");
}
