//! The embedding API: a node run in-process with the caller's own effects and shutdown signal.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vtp_core::driver::{Effects, StoreOp};
use vtp_core::endpoint::ListenAddr;
use vtp_core::filter::NoFilterEngine;
use vtp_core::message::{self, Message};
use vtp_core::{Config, Delivery, Event, ListenerRole, Node};

struct Collect {
    deliveries: mpsc::Sender<Delivery>,
    stored: usize,
}

impl Effects for Collect {
    fn store(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Persist(_)) {
            self.stored += 1;
        }
    }
    fn deliver(&mut self, d: Delivery) {
        let _ = self.deliveries.send(d);
    }
    fn event(&mut self, _e: Event) {}
}

#[test]
fn run_with_own_effects_until_shutdown() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let config = Config::new(Some("ivo://vtp.test/embedded".into()));
    let node = Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix).unwrap();
    let bound = vtp_tokio::bind(&[(
        ListenerRole::Receive,
        ListenAddr::parse("127.0.0.1:0").unwrap(),
    )])
    .unwrap();
    let port = bound.port(ListenerRole::Receive).unwrap();
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let author = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let ev =
            b"<VOEvent xmlns='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='ivo://vtp.test/a#1' \
                   role='test' version='2.0'/>";
        s.write_all(&vtp_core::frame::encode(ev).unwrap()).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut reply).unwrap();
        let role = match message::parse(&reply, &Default::default()).unwrap() {
            Message::Transport(t) => t.role.as_str().to_owned(),
            _ => String::new(),
        };
        let delivered = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let _ = stop_tx.send(());
        (role, delivered)
    });
    let fx = rt
        .block_on(vtp_tokio::run(
            node,
            bound,
            Collect {
                deliveries: tx,
                stored: 0,
            },
            async {
                let _ = stop_rx.await;
            },
            Default::default(),
        ))
        .unwrap();
    let (role, delivered) = author.join().unwrap();
    assert_eq!(role, "ack");
    assert_eq!(&*delivered.ivorn, "ivo://vtp.test/a#1");
    assert_eq!(fx.stored, 1, "run() returns the caller's effects");
}
