//! The handler spool: a broker whose `--cmd` is stuck when it is stopped (SIGTERM) or killed
//! (SIGKILL) hands every event it acked to the command after a restart on the same event
//! database: none is missing; only after a kill may one be handled twice.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Events handled before the stop, with the command free to run.
const BEFORE: usize = 10;
/// Events accepted while the command is stuck: queued, parked in the spool, or running.
const STUCK: usize = 30;

/// The `--cmd`: keeps the event, waits until the gate file exists, then files it as
/// `done.*` in the output directory. It gives up if the broker that started it is gone (after
/// a SIGKILL nobody kills it).
const SCRIPT: &str = r#"#!/bin/sh
parent=$PPID
t=$(mktemp "$1/.run.XXXXXX") || exit 1
cat > "$t"
while [ ! -e "$2" ]; do
    kill -0 "$parent" 2>/dev/null || exit 1
    sleep 0.02
done
mv "$t" "$1/done.${t##*.}"
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

#[test]
fn every_acked_event_reaches_the_command_after_a_sigterm_or_sigkill_and_a_restart() {
    let runs: Vec<_> = RUNTIMES
        .iter()
        .flat_map(|rt| [(*rt, Stop::Term), (*rt, Stop::Kill)])
        .map(|(rt, stop)| thread::spawn(move || stop_and_restart(rt, stop)))
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

fn stop_and_restart(rt: &str, stop: Stop) {
    let name = format!("spool-{rt}-{stop:?}").to_lowercase();
    let work = TempDir::new(&name);
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let gate = work.path().join("gate");
    let script = work.path().join("handler.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = format!("{} {} {}", script.display(), out.display(), gate.display());
    // Room in memory for about three events: the rest wait in the spool.
    let args = [
        "--broadcast-test-interval",
        "0",
        "--runtime",
        rt,
        "--cmd",
        &cmd,
        "--handler-queue-bytes",
        "1000",
    ];
    let ivorn = |i: usize| format!("ivo://vtp.test/spool#{name}-{i}");

    let mut b = Broker::start_with_db(&format!("{name}-a"), &args, TempDir::new(&name));
    std::fs::write(&gate, b"").unwrap();
    for i in 0..BEFORE {
        assert_eq!(submit_raw(b.receive, &event_xml(&ivorn(i))).0, "ack");
    }
    wait_handled(&out, BEFORE, &b);
    std::fs::remove_file(&gate).unwrap();
    for i in BEFORE..BEFORE + STUCK {
        assert_eq!(
            submit_raw(b.receive, &event_xml(&ivorn(i))).0,
            "ack",
            "{name}"
        );
    }
    match stop {
        // The stuck commands are killed when the 5 s grace period runs out: not done.
        Stop::Term => assert_eq!(b.proc.terminate(), Some(0), "{name}: clean stop"),
        Stop::Kill => {
            b.proc.child.kill().unwrap();
            b.proc.child.wait().unwrap();
        }
    }
    let log = b.proc.log.text();
    assert!(
        !log.contains("not handed to the handlers") && !log.contains("dropped at shutdown"),
        "{name}: nothing dropped:\n{log}"
    );
    if stop == Stop::Term {
        assert!(
            log.contains("not handled yet stay in the spool"),
            "{name}: the stop says what is left:\n{log}"
        );
    }
    let before = handled(&out);

    // The restart, with the command free to run.
    std::fs::write(&gate, b"").unwrap();
    let db = std::mem::replace(&mut b.db, TempDir::new("unused"));
    drop(b);
    let mut b = Broker::start_with_db(&format!("{name}-b"), &args, db);
    b.proc.log.wait_for("the replay", |l| {
        l.contains("events accepted before the restart were not handled yet")
    });
    wait_handled(&out, BEFORE + STUCK, &b);
    assert_eq!(b.proc.terminate(), Some(0), "{name}: clean stop");

    let all = handled(&out);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        *counts.entry(i.clone()).or_default() += 1;
    }
    for i in 0..BEFORE + STUCK {
        let n = counts.get(&ivorn(i)).copied().unwrap_or(0);
        match stop {
            Stop::Term => assert_eq!(n, 1, "{name}: {} handled {n} times", ivorn(i)),
            Stop::Kill => assert!(n >= 1, "{name}: {} never handled", ivorn(i)),
        }
    }
    assert_eq!(counts.len(), BEFORE + STUCK, "{name}: {counts:?}");
    eprintln!(
        "{name}: {} handled before the stop, {} after the restart",
        before.len(),
        all.len() - before.len()
    );
}

#[test]
fn nothing_is_spooled_without_handlers_or_with_the_spool_off() {
    for (name, args) in [
        ("spool-none", &["--broadcast-test-interval", "0"][..]),
        (
            "spool-off",
            &[
                "--broadcast-test-interval",
                "0",
                "--print-event",
                "--handler-spool-bytes",
                "0",
            ][..],
        ),
        (
            "spool-on",
            &["--broadcast-test-interval", "0", "--print-event"][..],
        ),
    ] {
        let mut b = Broker::start(name, args);
        let ivorn = format!("ivo://vtp.test/spool#{name}");
        assert_eq!(submit_raw(b.receive, &event_xml(&ivorn)).0, "ack");
        if name != "spool-none" {
            b.proc
                .log
                .wait_for("print-event", |l| l.contains(&format!("ivorn=\"{ivorn}\"")));
        }
        assert_eq!(b.proc.terminate(), Some(0));
        let spooled = std::fs::read_dir(b.db.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_str().unwrap().starts_with("vtp-spool.")
            })
            .count();
        assert_eq!(spooled, usize::from(name == "spool-on"), "{name}");
    }
}

/// The ivorns of the events the command has filed in `out`.
fn handled(out: &Path) -> Vec<String> {
    let mut ivorns = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.starts_with("done.") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("ivorn=\"").expect("an event") + "ivorn=\"".len();
        let len = text[start..].find('"').unwrap();
        ivorns.push(text[start..start + len].to_owned());
    }
    ivorns
}

/// Waits (bounded) until the command has filed `n` distinct events.
fn wait_handled(out: &Path, n: usize, b: &Broker) {
    let deadline = Instant::now() + WAIT + Duration::from_secs(15);
    loop {
        let mut got = handled(out);
        got.sort();
        got.dedup();
        if got.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events handled:\n{}",
            got.len(),
            b.proc.log.text()
        );
        thread::park_timeout(Duration::from_millis(20));
    }
}
