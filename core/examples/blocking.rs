//! A complete VTP broker on plain `std::net`, one thread, no async runtime: the proof that the
//! core fits any event loop. Usage:
//!
//! ```text
//! cargo run -p vtp-core --example blocking -- 127.0.0.1:8098 127.0.0.1:8099
//! ```
//!
//! Authors submit on the first address, subscribers (Comet, pygcn, `vtp listen`) connect to the
//! second. Events are printed to stdout; the seen-index lives in memory only.
// This file is the IO side: it is the one place that reads the clock and sleeps.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vtp_core::driver::{Driver, Effects, Flush, StoreOp};
use vtp_core::filter::NoFilterEngine;
use vtp_core::{CloseReason, Config, ConnId, Delivery, Event, ListenerRole, Node, Peer};

struct Print;
impl Effects for Print {
    fn store(&mut self, _op: StoreOp) {}
    fn deliver(&mut self, d: Delivery) {
        println!("event {} ({} bytes)", d.ivorn, d.payload.len());
    }
    fn event(&mut self, e: Event) {
        eprintln!("{e:?}");
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (recv_addr, bcast_addr) = match &args[..] {
        [_, r, b] => (r.as_str(), b.as_str()),
        _ => ("127.0.0.1:8098", "127.0.0.1:8099"),
    };
    let listeners = [
        (TcpListener::bind(recv_addr)?, ListenerRole::Receive),
        (TcpListener::bind(bcast_addr)?, ListenerRole::Broadcast),
    ];
    for (l, _) in &listeners {
        l.set_nonblocking(true)?;
    }
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let config = Config::new(Some("ivo://example.org/blocking-broker".into()));
    let node = Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix)
        .expect("valid configuration");
    let mut driver = Driver::new(node, Default::default());
    let mut socks: HashMap<ConnId, TcpStream> = HashMap::new();
    let mut pending: Vec<ConnId> = Vec::new();
    let (fx, mut buf) = (&mut Print, vec![0u8; 64 * 1024]);
    loop {
        let mut busy = false;
        for (listener, role) in &listeners {
            while let Ok((sock, addr)) = listener.accept() {
                busy = true;
                let peer = Peer::Tcp(addr);
                if let Some(conn) = driver.handle_accept(*role, peer, Instant::now(), fx) {
                    sock.set_nonblocking(true)?;
                    socks.insert(conn, sock);
                }
            }
        }
        let conns: Vec<ConnId> = socks.keys().copied().collect();
        for conn in conns {
            let Some(sock) = socks.get_mut(&conn) else {
                continue;
            };
            match sock.read(&mut buf) {
                Ok(0) => {
                    socks.remove(&conn);
                    driver.handle_closed(conn, CloseReason::PeerClosed, Instant::now(), fx);
                }
                Ok(n) => {
                    busy = true;
                    driver.handle_input(conn, &buf[..n], Instant::now(), fx);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    socks.remove(&conn);
                    driver.handle_closed(conn, CloseReason::PeerClosed, Instant::now(), fx);
                }
            }
        }
        driver.handle_wakeup(Instant::now(), fx);
        // Connections with new output, plus those whose socket buffer was full last time. (This
        // broker has no upstreams and submits nothing: `poll_dial` never has a dial for it.)
        let mut todo = std::mem::take(&mut pending);
        todo.extend(std::iter::from_fn(|| driver.poll_writable()));
        for conn in todo {
            let Some(sock) = socks.get_mut(&conn) else {
                continue;
            };
            match driver.flush(conn, sock, Instant::now(), fx) {
                Flush::Idle => {}
                Flush::Pending => pending.push(conn),
                Flush::Close(_) => drop(socks.remove(&conn)),
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
