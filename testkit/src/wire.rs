//! A raw VTP author and subscriber over std sockets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use vtp_core::message::{self, Message};

use crate::WAIT;

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads one frame (bounded by the stream's read timeout, if it has one).
pub fn read_frame(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes `payload` as one frame.
pub fn write_frame(s: &mut impl Write, payload: &[u8]) {
    s.write_all(&vtp_core::frame::encode(payload).unwrap())
        .unwrap();
}

/// Submits `payload` on `s` and returns the receipt's role (`ack` or `nak`) and Result text.
pub fn submit(mut s: impl Read + Write, payload: &[u8]) -> (String, Option<String>) {
    write_frame(&mut s, payload);
    let reply = read_frame(&mut s).unwrap();
    match message::parse(&reply, &Default::default()).unwrap() {
        Message::Transport(t) => (t.role.as_str().to_owned(), t.result.map(|r| r.into_owned())),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// A raw subscriber: answers iamalive, acks events, returns their payloads.
#[derive(Debug)]
pub struct RawSubscriber {
    pub stream: TcpStream,
}

impl RawSubscriber {
    /// Connects to a broadcast port and reads the broker's authenticate (which it speaks
    /// first). Reads time out after [`WAIT`].
    pub fn connect(addr: impl ToSocketAddrs) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut s = Self { stream };
        let f = read_frame(&mut s.stream).expect("authenticate from the broker");
        match message::parse(&f, &Default::default()).unwrap() {
            Message::Transport(t) => assert_eq!(t.role.as_str(), "authenticate"),
            other => panic!("expected authenticate, got {other:?}"),
        }
        s
    }

    /// The next event payload, answering Transport messages on the way; panics if none comes
    /// before the read timeout.
    pub fn next_event(&mut self) -> Vec<u8> {
        self.try_next_event().expect("an event before the deadline")
    }

    /// The next event, or `None` once the connection ends (or the deadline passes).
    pub fn try_next_event(&mut self) -> Option<Vec<u8>> {
        loop {
            let f = read_frame(&mut self.stream).ok()?;
            let reply = match message::parse(&f, &Default::default()).unwrap() {
                Message::VoEvent(ev) => {
                    let ack = message::build_ack(&ev.ivorn, None, "2024-01-01T00:00:00Z");
                    self.stream.write_all(&ack).ok()?;
                    return Some(f);
                }
                Message::Transport(t) if t.role.as_str() == "iamalive" => {
                    message::build_iamalive_reply(&t.origin, None, "2024-01-01T00:00:00Z")
                }
                _ => continue,
            };
            self.stream.write_all(&reply).ok()?;
        }
    }
}
