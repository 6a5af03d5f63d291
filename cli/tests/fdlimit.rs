//! A broker with few file descriptors, flooded with idle connections from one address, still
//! serves an author and a subscriber at another address at once (every runtime).
//!
//! The broker runs with `RLIMIT_NOFILE` 256 (soft and hard, set by `ulimit -n` in a shell that
//! then `exec`s it), so it cannot raise it; 127.0.0.1 opens a thousand idle connections to
//! each listener; 127.0.0.2 (loopback too on Linux) then subscribes, submits an event and
//! expects its ack and the event promptly. Before the per-address limits and the
//! file-descriptor budget, the broker ran out of descriptors: the idle connections filled every
//! slot freed and the healthy peers got nothing, not even after the 20 s author deadline.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use vtp_host::testing::{RawSubscriber, connect_from, submit};

/// The broker's file-descriptor limit, soft and hard.
const NOFILE: u64 = 256;
/// Idle connections opened from 127.0.0.1 to each listener (fewer if this process cannot
/// hold them).
const FLOOD: usize = 1000;
/// Author connections the broker keeps per address.
const PER_ADDRESS: usize = 4;
/// The healthy peers are served this soon (the author deadline is 20 s).
const PROMPT: Duration = Duration::from_secs(5);

#[test]
fn one_address_holding_thousands_of_connections_locks_out_no_author_and_no_subscriber() {
    // This process holds both floods at once.
    let ours = vtp_host::fdlimit::raise_nofile()
        .after
        .soft
        .unwrap_or(u64::MAX);
    let flood = usize::try_from(ours.saturating_sub(200) / 2)
        .unwrap_or(usize::MAX)
        .min(FLOOD);
    assert!(
        flood as u64 > 2 * NOFILE,
        "this process may open {ours} files: too few to flood the broker"
    );
    let flooder: IpAddr = [127, 0, 0, 1].into();
    let healthy: IpAddr = [127, 0, 0, 2].into();
    for rt in RUNTIMES {
        let b = start(rt);
        b.proc.log.wait_for("the low file-descriptor limit", |l| {
            l.contains(&format!(
                "file descriptors: soft limit {NOFILE} (hard limit {NOFILE})"
            ))
        });
        let receive = SocketAddr::from((flooder, b.receive));
        let broadcast = SocketAddr::from((flooder, b.broadcast));
        let idle: Vec<TcpStream> = (0..flood)
            .flat_map(|_| {
                [
                    TcpStream::connect(receive).unwrap(),
                    TcpStream::connect(broadcast).unwrap(),
                ]
            })
            .collect();

        // A new subscriber and an author at another address are served at once.
        let started = Instant::now();
        let mut sub = RawSubscriber::on(connect_from(healthy, broadcast));
        let ivorn = format!("ivo://vtp.test/author#fdlimit-{rt}");
        let ev = event_xml(&ivorn);
        let (role, result) = submit(within(PROMPT, connect_from(healthy, receive)), &ev);
        assert_eq!(role, "ack", "{rt}: {result:?}");
        assert_eq!(sub.next_event(), ev, "{rt}: the subscriber gets the event");
        assert!(
            started.elapsed() < PROMPT,
            "{rt}: served after {:?}",
            started.elapsed()
        );

        // The flooder holds its per-address share of author connections, idle; the rest of
        // its connections were accepted and closed without a byte.
        let mut open = 0;
        for mut s in idle.iter().step_by(2) {
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            match s.read(&mut [0u8; 1]) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
                other => panic!("{rt}: an idle author connection got {other:?}"),
            }
        }
        assert_eq!(open, PER_ADDRESS, "{rt}: idle author connections held");
        // Refusals are logged a few per window, then counted in one line.
        b.proc
            .log
            .wait_for("the count of refusals not logged", |l| {
                l.contains("more connections refused within 10 s")
                    && l.contains("over a per-address limit")
            });
        let logged = b
            .proc
            .log
            .count(|l| l.contains("receive listener: per-address limit"));
        assert!(
            logged <= 10,
            "{rt}: {logged} refusals logged one by one out of {}",
            2 * flood
        );
        // The limits refused the flood before the broker ran out of descriptors.
        let text = b.proc.log.text();
        assert!(
            !text.contains("accept failed"),
            "{rt}: out of file descriptors:\n{text}"
        );
        drop(idle);
    }
}

/// `vtp broker` on `rt` with [`NOFILE`] file descriptors and at most [`PER_ADDRESS`] author
/// connections per address.
fn start(rt: &str) -> Broker {
    let name = format!("fdlimit-{rt}");
    let db = TempDir::new(&name);
    // `ulimit -n` sets the soft and the hard limit: the broker cannot raise them.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""),
        VTP,
    ]);
    cmd.args(["broker", "--runtime", rt])
        .args(["--local-ivo", &format!("ivo://vtp.test/{name}")])
        .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
        .args(["--broadcast-test-interval", "0"])
        .args(["--author-connections-per-address", &PER_ADDRESS.to_string()])
        .arg("--eventdb")
        .arg(db.path());
    Broker::spawn(&name, cmd, db)
}

/// `s` with reads bounded by `limit`.
fn within(limit: Duration, s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(limit)).unwrap();
    s
}
