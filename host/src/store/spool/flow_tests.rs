//! The handler spool with its worker and the handlers, through
//! [`HostEffects`](crate::effects::HostEffects): what is spooled reaches the handlers, beyond the
//! queue's bound and across a stop or a crash.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use vtp_core::SeenRecord;
use vtp_core::driver::{Effects, StoreOp};

use super::*;
use crate::effects::HostEffects;
use crate::handlers::{Handler, HandlerError, Handlers};
use crate::store::{SeenStore, StoreWorker};
use crate::testutil::{TempDir, capture_logs, delivery};

/// Records every event it handles; blocks while its gate is shut. `stop` opens the gate and
/// makes the runs in progress report [`HandlerError::Stopped`], as a killed command does.
#[derive(Default)]
struct Gated {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    shut: bool,
    stopped: bool,
    running: usize,
    handled: Vec<String>,
}

impl Gated {
    fn shut() -> Arc<Self> {
        let g = Self::default();
        g.state.lock().unwrap().shut = true;
        Arc::new(g)
    }

    fn open(&self) {
        self.state.lock().unwrap().shut = false;
        self.changed.notify_all();
    }

    /// Waits until `n` events are handled (or one is running, with `running`).
    fn wait_for(&self, what: &str, f: impl Fn(&GateState) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut s = self.state.lock().unwrap();
        while !f(&s) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}: {:?}",
                s.handled
            );
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
    }

    fn handled(&self) -> Vec<String> {
        self.state.lock().unwrap().handled.clone()
    }
}

impl Handler for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let mut s = self.state.lock().unwrap();
        s.running += 1;
        self.changed.notify_all();
        while s.shut && !s.stopped {
            s = self.changed.wait(s).unwrap();
        }
        s.running -= 1;
        if s.stopped {
            return Err(HandlerError::Stopped {
                program: "gated".into(),
            });
        }
        s.handled.push(d.ivorn.to_string());
        self.changed.notify_all();
        Ok(())
    }

    fn stop(&self) {
        self.state.lock().unwrap().stopped = true;
        self.changed.notify_all();
    }
}

fn ivorn(i: u64) -> String {
    format!("ivo://vtp.test/flow#{i}")
}

fn event(i: u64) -> Delivery {
    delivery(
        &ivorn(i),
        format!("<e n='{i}'>{}</e>", "y".repeat(1000)).as_bytes(),
    )
}

fn persist(d: &Delivery) -> StoreOp {
    StoreOp::Persist(SeenRecord {
        key: d.key,
        unix_secs: 1_700_000_000,
    })
}

/// Effects over a store with a spool in `dir` and one handler worker with a queue of two
/// events, as the node drives them with `DeliveryTiming::BeforeRecord`.
fn effects(dir: &Path, handler: Arc<Gated>) -> HostEffects {
    let mut store = SeenStore::open(dir).unwrap();
    store.open_spool(SPOOL_BYTES_DEFAULT).unwrap();
    let worker = StoreWorker::spawn(store, None).unwrap();
    let handlers = Handlers::new(vec![handler], 1, 2).with_queue_bytes(1 << 20);
    let fx = HostEffects::new()
        .with_store(worker)
        .with_handlers(handlers);
    assert!(fx.is_spooling());
    fx
}

/// The node's part: the delivery, then its record; returns the persists handed so far.
fn accept(fx: &mut HostEffects, range: std::ops::Range<u64>) -> u64 {
    let mut persists = 0;
    for i in range {
        let d = event(i);
        let op = persist(&d);
        fx.deliver(d);
        fx.store(op);
        persists += 1;
    }
    persists
}

fn pending_in(dir: &Path) -> usize {
    let store = SeenStore::open(dir).unwrap();
    let spool = Spool::open(&store.dir, dir, SPOOL_BYTES_DEFAULT).unwrap();
    spool.pending()
}

#[test]
fn events_beyond_the_queue_bound_are_spooled_not_dropped_and_all_reach_the_handler() {
    let tmp = TempDir::new("flow-bound");
    let gated = Gated::shut();
    let mut fx = effects(tmp.path(), gated.clone());
    let (_, logs) = capture_logs(|| {
        let n = accept(&mut fx, 0..50);
        assert_eq!(fx.flush_persists(n), n, "records and spool entries durable");
    });
    assert!(
        !logs.contains("not handed to the handlers"),
        "nothing dropped: {logs}"
    );
    gated.wait_for("the first event to block", |s| s.running == 1);
    gated.open();
    gated.wait_for("every event", |s| s.handled.len() == 50);
    assert_eq!(gated.handled(), (0..50).map(ivorn).collect::<Vec<_>>());
    let (_, logs) = capture_logs(|| fx.finish(Duration::from_secs(30)));
    assert!(logs.contains("every accepted event was handed"), "{logs}");
    assert!(!logs.contains("stay in the spool"), "{logs}");
    assert_eq!(pending_in(tmp.path()), 0, "all marked done");
}

#[test]
fn what_a_stop_leaves_unhandled_stays_in_the_spool_and_is_handled_once_after_the_restart() {
    let tmp = TempDir::new("flow-stop");
    let gated = Gated::shut();
    let mut fx = effects(tmp.path(), gated.clone());
    let n = accept(&mut fx, 0..20);
    assert_eq!(fx.flush_persists(n), n);
    gated.wait_for("the first event to block", |s| s.running == 1);
    // Stop while the handler is stuck: the grace period runs out at once.
    let (_, logs) = capture_logs(|| fx.finish(Duration::from_millis(50)));
    // Whatever was queued stays in the spool, like what was still parked. (The store
    // worker's own line, "20 events not handled yet stay in the spool", is logged on its
    // thread.)
    assert!(!logs.contains("queued event dropped"), "{logs}");
    assert_eq!(pending_in(tmp.path()), 20);

    // The restart: everything is replayed, in order, the stopped run included.
    let again = Arc::new(Gated::default());
    let (mut fx, logs) = capture_logs(|| effects(tmp.path(), again.clone()));
    assert!(
        logs.contains("20 events accepted before the restart"),
        "{logs}"
    );
    again.wait_for("the replay", |s| s.handled.len() == 20);
    let n = accept(&mut fx, 20..25);
    assert_eq!(fx.flush_persists(n), n);
    again.wait_for("the new events", |s| s.handled.len() == 25);
    assert_eq!(again.handled(), (0..25).map(ivorn).collect::<Vec<_>>());
    fx.finish(Duration::from_secs(30));
    assert!(gated.handled().is_empty());
    assert_eq!(pending_in(tmp.path()), 0);
}

#[test]
fn handled_events_are_not_replayed_and_the_rest_are() {
    let tmp = TempDir::new("flow-partial");
    let gated = Arc::new(Gated::default());
    let mut fx = effects(tmp.path(), gated.clone());
    let n = accept(&mut fx, 0..10);
    assert_eq!(fx.flush_persists(n), n);
    gated.wait_for("ten events", |s| s.handled.len() == 10);
    fx.finish(Duration::from_secs(30));
    assert_eq!(pending_in(tmp.path()), 0);
    let again = Arc::new(Gated::default());
    let mut fx = effects(tmp.path(), again.clone());
    let n = accept(&mut fx, 10..12);
    assert_eq!(fx.flush_persists(n), n);
    again.wait_for("two events", |s| s.handled.len() == 2);
    fx.finish(Duration::from_secs(30));
    assert_eq!(again.handled(), [ivorn(10), ivorn(11)]);
}

const CRASH_ENV: &str = "VTP_HOST_SPOOL_CRASH_DIR";
const CRASH_EVENTS: u64 = 300;

/// Re-runs this test in a child process that aborts once its events are durable, with the
/// handler stuck on the first: every one of them is replayed after the crash.
#[test]
fn every_event_whose_record_is_durable_is_replayed_after_an_abort() {
    if let Some(dir) = std::env::var_os(CRASH_ENV) {
        crash_child(Path::new(&dir));
    }
    let tmp = TempDir::new("flow-crash");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::spool::flow_tests::every_event_whose_record_is_durable_is_replayed_after_an_abort",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CRASH_ENV, tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "child: {:?}\n{stderr}",
            out.status
        );
    }
    let again = Arc::new(Gated::default());
    let fx = effects(tmp.path(), again.clone());
    again.wait_for("the replay", |s| s.handled.len() >= CRASH_EVENTS as usize);
    fx.finish(Duration::from_secs(30));
    let handled = again.handled();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &handled {
        *counts.entry(i.as_str()).or_default() += 1;
    }
    for i in 0..CRASH_EVENTS {
        assert_eq!(
            counts.get(ivorn(i).as_str()),
            Some(&1),
            "{} in {handled:?}",
            ivorn(i)
        );
    }
}

fn crash_child(dir: &Path) -> ! {
    let gated = Gated::shut();
    let mut fx = effects(dir, gated.clone());
    let n = accept(&mut fx, 0..CRASH_EVENTS);
    assert_eq!(fx.flush_persists(n), n, "child: durable");
    gated.wait_for("child: the first event to block", |s| s.running == 1);
    std::process::abort();
}
