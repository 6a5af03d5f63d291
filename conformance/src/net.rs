//! Blocking TCP peers for the scenarios: an author that submits and reads the receipt, and a
//! subscriber served by a reader thread; over TLS when the target has [`Tls`](crate::Tls).
//!
//! Everything the node sends is peer input: frames are capped before allocating, and nothing
//! here panics on what the node sends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use vtp_core::message::{self, Message, ParseLimits};

use crate::Ctx;

/// Largest frame the suite accepts from the node (real events are under 100 kB).
const FRAME_MAX: u32 = 4 << 20;

/// The suite's own IVOID, sent as `Response` in its replies.
pub(crate) const SUITE_IVO: &str = "ivo://vtp.conformance/suite";

/// A frame received from the node, classified.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) bytes: Vec<u8>,
    pub(crate) kind: Kind,
}

/// What a frame holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A VOEvent with this ivorn.
    Event { ivorn: String },
    /// A Transport message.
    Transport {
        role: &'static str,
        origin: String,
        response: Option<String>,
        result: Option<String>,
    },
    /// Not a document the suite could parse (the reason).
    Unparsable(String),
}

impl Frame {
    pub(crate) fn classify(bytes: Vec<u8>) -> Self {
        let kind = match message::parse(&bytes, &ParseLimits::default()) {
            Ok(Message::VoEvent(ev)) => Kind::Event {
                ivorn: ev.ivorn.into_owned(),
            },
            Ok(Message::Transport(t)) => Kind::Transport {
                role: t.role.as_str(),
                origin: t.origin.into_owned(),
                response: t.response.map(|r| r.into_owned()),
                result: t.result.map(|r| r.into_owned()),
            },
            Ok(_) => Kind::Unparsable("unknown message kind".to_owned()),
            Err(e) => Kind::Unparsable(e.to_string()),
        };
        Self { bytes, kind }
    }

    /// The Transport role, if this is a Transport message.
    pub(crate) fn role(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Transport { role, .. } => Some(role),
            _ => None,
        }
    }

    pub(crate) fn is_event(&self, ivorn: &str) -> bool {
        matches!(&self.kind, Kind::Event { ivorn: i } if i == ivorn)
    }

    /// Whether the frame contains `needle` anywhere in its bytes.
    pub(crate) fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// A short description for failure messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Event { ivorn } => format!("a VOEvent ({ivorn}, {} bytes)", self.bytes.len()),
            Kind::Transport {
                role,
                origin,
                result,
                ..
            } => match result {
                Some(r) => format!("a Transport {role} (Origin {origin}, Result {r:?})"),
                None => format!("a Transport {role} (Origin {origin})"),
            },
            Kind::Unparsable(why) => {
                format!("an unparsable frame of {} bytes ({why})", self.bytes.len())
            }
        }
    }
}

/// Why reading a frame stopped.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// Nothing (more) arrived before the deadline.
    Timeout,
    /// The node closed the connection (EOF) or reset it.
    Closed(String),
    /// The node sent a prefix above [`FRAME_MAX`], or the socket failed otherwise.
    Broken(String),
}

impl ReadEnd {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Timeout => "nothing arrived".to_owned(),
            Self::Closed(how) | Self::Broken(how) => how.clone(),
        }
    }
}

/// A connection to the node: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath (for timeouts and shutdown).
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// Reads one frame, until `deadline` if given (else blocking).
pub(crate) fn read_frame(s: &mut Stream, deadline: Option<Instant>) -> Result<Vec<u8>, ReadEnd> {
    let mut prefix = [0u8; 4];
    read_full(s, &mut prefix, deadline, true)?;
    let len = u32::from_be_bytes(prefix);
    if len > FRAME_MAX {
        return Err(ReadEnd::Broken(format!(
            "the node sent a frame prefix of {len} bytes (more than the suite's {FRAME_MAX})"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    read_full(s, &mut buf, deadline, false)?;
    Ok(buf)
}

fn read_full(
    s: &mut Stream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    at_boundary: bool,
) -> Result<(), ReadEnd> {
    let mut filled = 0;
    while filled < buf.len() {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadEnd::Timeout);
                }
                Some(left)
            }
            None => None,
        };
        s.tcp()
            .set_read_timeout(timeout)
            .map_err(|e| ReadEnd::Broken(format!("cannot set a read timeout: {e}")))?;
        match s.read(&mut buf[filled..]) {
            Ok(0) if at_boundary && filled == 0 => {
                return Err(ReadEnd::Closed("the node closed the connection".to_owned()));
            }
            // Over TLS, a close without close_notify is an UnexpectedEof error.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && at_boundary && filled == 0 => {
                return Err(ReadEnd::Closed(
                    "the node closed the connection (without a TLS close_notify)".to_owned(),
                ));
            }
            Ok(0) => {
                return Err(ReadEnd::Closed(
                    "the node closed the connection in the middle of a frame".to_owned(),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ReadEnd::Closed(
                    "the node closed the connection in the middle of a frame".to_owned(),
                ));
            }
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadEnd::Timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(ReadEnd::Closed(format!(
                    "the node reset the connection ({e})"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ReadEnd::Broken(format!("TLS failed: {e}")));
            }
            Err(e) => return Err(ReadEnd::Broken(format!("read failed: {e}"))),
        }
    }
    Ok(())
}

/// Frames `payload` with a big-endian length prefix.
pub(crate) fn framed(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Which of the node's addresses a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The receive address (authors).
    Receive,
    /// The broadcast address (subscribers).
    Broadcast,
}

/// Connects to the node's address for `side` within the slack, and runs the TLS handshake
/// within the slack too when the target has TLS.
pub(crate) fn connect(ctx: &Ctx<'_>, side: Side) -> Result<Stream, String> {
    let deadline = Instant::now() + ctx.slack();
    let addr: SocketAddr = match side {
        Side::Receive => ctx.target.receive,
        Side::Broadcast => ctx.target.broadcast,
    };
    let s = TcpStream::connect_timeout(&addr, ctx.slack())
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    // Small frames must not wait for Nagle's algorithm.
    let _ = s.set_nodelay(true);
    match &ctx.target.tls {
        None => Ok(Stream::Plain(s)),
        Some(tls) => tls
            .handshake(s, side, deadline)
            .map(|s| Stream::Tls(Box::new(s)))
            .map_err(|e| format!("{addr}: {e}")),
    }
}

/// An author connection to the node's receive address.
pub(crate) struct Author {
    stream: Stream,
    slack: Duration,
}

impl Author {
    pub(crate) fn connect(ctx: &Ctx<'_>) -> Result<Self, String> {
        Ok(Self {
            stream: connect(ctx, Side::Receive)?,
            slack: ctx.slack(),
        })
    }

    /// Writes raw bytes. A node may close while we write (e.g. after a bad prefix); that is
    /// not an error here: the scenario judges what it reads next.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
    }

    /// Reads the next frame within the slack.
    pub(crate) fn read(&mut self) -> Result<Frame, ReadEnd> {
        let deadline = Instant::now() + self.slack;
        read_frame(&mut self.stream, Some(deadline)).map(Frame::classify)
    }

    /// Reads until `deadline`: a frame, or how the connection ended.
    pub(crate) fn read_until(&mut self, deadline: Instant) -> Result<Frame, ReadEnd> {
        read_frame(&mut self.stream, Some(deadline)).map(Frame::classify)
    }

    /// Expects the connection to end (EOF or reset) within the slack, with nothing more sent.
    pub(crate) fn expect_closed(&mut self, after: &str) -> Result<(), String> {
        match self.read() {
            Err(ReadEnd::Closed(_)) => Ok(()),
            Err(ReadEnd::Timeout) => Err(format!(
                "the connection was still open {} after {after}",
                crate::report::secs(self.slack)
            )),
            Err(e @ ReadEnd::Broken(_)) => Err(format!("after {after}: {}", e.describe())),
            Ok(f) => Err(format!("after {after} the node sent {}", f.describe())),
        }
    }
}

/// Submits `payload` on a new connection and returns the receipt (the first frame back) and
/// the connection.
pub(crate) fn submit(ctx: &Ctx<'_>, payload: &[u8]) -> Result<(Frame, Author), String> {
    let mut a = Author::connect(ctx)?;
    a.send_raw(&framed(payload));
    match a.read() {
        Ok(f) => Ok((f, a)),
        Err(e) => Err(format!(
            "no receipt within {} of the submission: {}",
            crate::report::secs(ctx.slack()),
            e.describe()
        )),
    }
}

/// Submits an event and requires an `ack` whose `Origin` is its ivorn.
pub(crate) fn submit_acked(ctx: &Ctx<'_>, payload: &[u8], ivorn: &str) -> Result<(), String> {
    let (receipt, _) = submit(ctx, payload).map_err(|e| format!("valid event {ivorn}: {e}"))?;
    expect_ack(&receipt, ivorn).map_err(|e| format!("valid event {ivorn}: {e}"))
}

/// Checks that `receipt` is an `ack` with `Origin` = `ivorn` byte-for-byte.
pub(crate) fn expect_ack(receipt: &Frame, ivorn: &str) -> Result<(), String> {
    match &receipt.kind {
        Kind::Transport {
            role: "ack",
            origin,
            ..
        } if origin == ivorn => Ok(()),
        Kind::Transport {
            role: "ack",
            origin,
            ..
        } => Err(format!(
            "the ack's Origin is {origin:?}, not the event's ivorn {ivorn:?}"
        )),
        _ => Err(format!("expected an ack, got {}", receipt.describe())),
    }
}

/// What a subscriber's reader thread does on its own.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberOptions {
    /// Answer `iamalive` (V2 §6.2).
    pub(crate) answer_iamalive: bool,
    /// Nak (instead of ack) the event with this ivorn.
    pub(crate) nak_ivorn: Option<String>,
    /// Answer the broker's `authenticate` with these `xpath-filter`s (no answer when empty,
    /// like pygcn).
    pub(crate) filters: Vec<String>,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        Self {
            answer_iamalive: true,
            nak_ivorn: None,
            filters: Vec::new(),
        }
    }
}

/// What the reader thread reports.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Frame),
    /// The connection ended; no more frames will come.
    End(String),
}

/// A subscriber connection served by a reader thread (it answers and acks on its own).
pub(crate) struct Subscriber {
    rx: Receiver<Incoming>,
    /// The socket under the reader's stream, to shut it down.
    socket: TcpStream,
    reader: Option<JoinHandle<()>>,
    ended: Option<String>,
    /// The first frame the node sent: its `authenticate`.
    pub(crate) greeting: Frame,
    /// When the connection was established.
    pub(crate) connected_at: Instant,
}

impl Subscriber {
    /// Connects with the default options and waits for the node's `authenticate`, which tells
    /// that the node has registered the subscriber.
    pub(crate) fn connect(ctx: &Ctx<'_>) -> Result<Self, String> {
        Self::connect_with(ctx, SubscriberOptions::default())
    }

    /// As [`Subscriber::connect`], with `options`.
    pub(crate) fn connect_with(ctx: &Ctx<'_>, options: SubscriberOptions) -> Result<Self, String> {
        let stream = connect(ctx, Side::Broadcast)?;
        let connected_at = Instant::now();
        let socket = stream
            .tcp()
            .try_clone()
            .map_err(|e| format!("cannot clone the subscriber socket: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name(format!("subscriber {}", ctx.name))
            .spawn(move || serve(stream, &options, &tx))
            .map_err(|e| format!("cannot start a subscriber thread: {e}"))?;
        let mut sub = Self {
            rx,
            socket,
            reader: Some(reader),
            ended: None,
            greeting: Frame {
                bytes: Vec::new(),
                kind: Kind::Unparsable("nothing yet".to_owned()),
            },
            connected_at,
        };
        let first = match sub.next(Instant::now() + ctx.slack()) {
            Some(Incoming::Frame(f)) => f,
            Some(Incoming::End(why)) => {
                return Err(format!(
                    "subscriber connection ended before the broker's authenticate: {why}"
                ));
            }
            None => {
                return Err(format!(
                    "no authenticate from the broker within {} of subscribing",
                    crate::report::secs(ctx.slack())
                ));
            }
        };
        if first.role() != Some("authenticate") {
            return Err(format!(
                "the broker's first frame to a new subscriber was {}, not an authenticate",
                first.describe()
            ));
        }
        sub.greeting = first;
        Ok(sub)
    }

    /// The next report from the reader, or `None` at `deadline`.
    pub(crate) fn next(&mut self, deadline: Instant) -> Option<Incoming> {
        if let Some(why) = &self.ended {
            return Some(Incoming::End(why.clone()));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(Incoming::End(why)) => {
                self.ended = Some(why.clone());
                Some(Incoming::End(why))
            }
            Ok(frame) => Some(frame),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let why = "the subscriber's reader stopped".to_owned();
                self.ended = Some(why.clone());
                Some(Incoming::End(why))
            }
        }
    }

    /// Waits up to `timeout` for the event `ivorn`; returns it and every frame containing
    /// `marker` that arrived before it (in order).
    pub(crate) fn wait_event(
        &mut self,
        ivorn: &str,
        marker: &[u8],
        timeout: Duration,
    ) -> Result<(Frame, Vec<Frame>), String> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            match self.next(deadline) {
                Some(Incoming::Frame(f)) if f.is_event(ivorn) => return Ok((f, before)),
                Some(Incoming::Frame(f)) => {
                    if f.contains(marker) {
                        before.push(f);
                    }
                }
                Some(Incoming::End(why)) => {
                    return Err(format!(
                        "the subscriber's connection ended before {ivorn} arrived: {why}"
                    ));
                }
                None => {
                    return Err(format!(
                        "{ivorn} did not reach the subscriber within {}",
                        crate::report::secs(timeout)
                    ));
                }
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Unblocks the reader's read; it then ends and is joined.
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The reader thread: answers what a subscriber must answer, then reports the frame. It both
/// reads and writes the stream (a TLS stream cannot be split between threads).
fn serve(mut stream: Stream, options: &SubscriberOptions, tx: &Sender<Incoming>) {
    loop {
        let bytes = match read_frame(&mut stream, None) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Incoming::End(e.describe()));
                return;
            }
        };
        let frame = Frame::classify(bytes);
        let ts = timestamp();
        let reply = match &frame.kind {
            Kind::Event { ivorn } if options.nak_ivorn.as_deref() == Some(ivorn.as_str()) => {
                Some(message::build_nak(
                    ivorn,
                    Some(SUITE_IVO),
                    &ts,
                    "refused on purpose by the conformance suite",
                ))
            }
            Kind::Event { ivorn } => Some(message::build_ack(ivorn, Some(SUITE_IVO), &ts)),
            Kind::Transport {
                role: "iamalive",
                origin,
                ..
            } if options.answer_iamalive => {
                Some(message::build_iamalive_reply(origin, Some(SUITE_IVO), &ts))
            }
            Kind::Transport {
                role: "authenticate",
                origin,
                ..
            } if !options.filters.is_empty() => {
                let filters: Vec<&str> = options.filters.iter().map(String::as_str).collect();
                Some(message::build_authenticate_reply(
                    origin,
                    Some(SUITE_IVO),
                    &ts,
                    &filters,
                ))
            }
            _ => None,
        };
        // Reply before reporting, so that a scenario acting on the report knows the reply is
        // already on its way to the node.
        if let Some(reply) = reply
            && let Err(e) = stream.write_all(&reply).and_then(|()| stream.flush())
        {
            let _ = tx.send(Incoming::Frame(frame));
            let _ = tx.send(Incoming::End(format!(
                "the connection broke: our reply could not be written ({e})"
            )));
            return;
        }
        if tx.send(Incoming::Frame(frame)).is_err() {
            return;
        }
    }
}

/// The current UTC time as a VTP `TimeStamp`.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    vtp_core::time::format_utc(secs).as_str().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::TcpListener;

    use super::*;

    fn pair() -> (TcpStream, Stream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, Stream::Plain(b))
    }

    #[test]
    fn a_huge_prefix_is_refused_before_allocating() {
        let (mut a, mut b) = pair();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        match read_frame(&mut b, Some(deadline)) {
            Err(ReadEnd::Broken(why)) => assert!(why.contains("4294967295"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn frames_split_across_writes_are_reassembled_and_eof_is_a_close() {
        let (mut a, mut b) = pair();
        let framed = framed(b"<x/>");
        a.write_all(&framed[..3]).unwrap();
        a.flush().unwrap();
        a.write_all(&framed[3..]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_frame(&mut b, Some(deadline)).unwrap(), b"<x/>");
        drop(a);
        assert!(matches!(
            read_frame(&mut b, Some(deadline)),
            Err(ReadEnd::Closed(_))
        ));
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (_a, mut b) = pair();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            read_frame(&mut b, Some(deadline)),
            Err(ReadEnd::Timeout)
        ));
    }

    #[test]
    fn frames_are_classified() {
        let ack = message::build_ack("ivo://a.b/c#d", Some(SUITE_IVO), "2024-01-01T00:00:00Z");
        let f = Frame::classify(ack[4..].to_vec());
        assert_eq!(f.role(), Some("ack"));
        assert!(f.contains(b"ivo://a.b/c#d"));
        assert!(!f.contains(b""));
        assert!(matches!(
            Frame::classify(Vec::new()).kind,
            Kind::Unparsable(_)
        ));
    }
}
