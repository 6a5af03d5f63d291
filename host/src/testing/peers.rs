//! A raw VTP author and subscriber over blocking std sockets.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};

use bytes::Bytes;
use vtp_core::message::{self, Message};

use super::WAIT;

/// A raw subscriber: answers iamalive, acks events, returns their payloads.
#[derive(Debug)]
pub struct RawSubscriber {
    /// The connection to the broker's broadcast port.
    pub stream: TcpStream,
}

impl RawSubscriber {
    /// Connects to a broadcast port and reads the broker's authenticate (which it speaks
    /// first). Reads time out after [`WAIT`].
    ///
    /// # Panics
    ///
    /// If the connection fails or the broker's first frame is not an authenticate.
    pub fn connect(addr: impl ToSocketAddrs) -> Self {
        Self::on(TcpStream::connect(addr).expect("connect to the broadcast port"))
    }

    /// Like [`RawSubscriber::connect`], on a connection made by the caller (say, with
    /// [`connect_from`]).
    ///
    /// # Panics
    ///
    /// If the broker's first frame is not an authenticate.
    pub fn on(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut s = Self { stream };
        let f = read_frame(&mut s.stream).expect("authenticate from the broker");
        match message::parse(&f, &Default::default()).expect("a valid frame") {
            Message::Transport(t) => assert_eq!(t.role.as_str(), "authenticate"),
            other => panic!("expected authenticate, got {other:?}"),
        }
        s
    }

    /// The next event payload, answering Transport messages on the way.
    ///
    /// # Panics
    ///
    /// If none comes before the read timeout.
    pub fn next_event(&mut self) -> Vec<u8> {
        self.try_next_event().expect("an event before the deadline")
    }

    /// The next event, or `None` once the connection ends (or the deadline passes).
    ///
    /// # Panics
    ///
    /// If the broker sends a frame that does not parse.
    pub fn try_next_event(&mut self) -> Option<Vec<u8>> {
        loop {
            let f = read_frame(&mut self.stream).ok()?;
            let reply = match message::parse(&f, &Default::default()).expect("a valid frame") {
                Message::VoEvent(ev) => {
                    let ack = message::build_ack(&ev.ivorn, None, TS);
                    // The event arrived even if the ack cannot go back (a broker killed with
                    // our acks unread resets the connection): the next read reports the end.
                    let _ = self.stream.write_all(&ack);
                    return Some(f);
                }
                Message::Transport(t) if t.role.as_str() == "iamalive" => {
                    message::build_iamalive_reply(&t.origin, None, TS)
                }
                _ => continue,
            };
            self.stream.write_all(&reply).ok()?;
        }
    }
}

/// A TCP connection to `to` from the address `from` (any port): on Linux every address of
/// 127.0.0.0/8 is loopback, so `127.0.0.2` lets a test be a peer other than `127.0.0.1`.
/// Reads time out after [`WAIT`].
///
/// # Panics
///
/// If the socket cannot be bound or the connection fails.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s =
        Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).expect("a socket");
    s.bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    s.connect(&to.into())
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

/// Submits `payload` on `s` and returns the receipt's role (`ack` or `nak`) and Result text.
///
/// # Panics
///
/// If the write fails, no receipt comes (before the stream's read timeout, if it has one) or
/// the reply is not a Transport message.
pub fn submit(mut s: impl Read + Write, payload: &[u8]) -> (String, Option<String>) {
    s.write_all(&frame(payload)).expect("submit");
    let reply = read_frame(&mut s).expect("a receipt");
    match message::parse(&reply, &Default::default()).expect("a valid frame") {
        Message::Transport(t) => (t.role.as_str().to_owned(), t.result.map(|r| r.into_owned())),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// The timestamp on every message the peers send.
const TS: &str = "2024-01-01T00:00:00Z";

/// `payload` as one frame.
pub(super) fn frame(payload: &[u8]) -> Bytes {
    vtp_core::frame::encode(payload).expect("a payload below 4 GiB")
}

/// Reads one frame (bounded by the stream's read timeout, if it has one).
pub(super) fn read_frame(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}
