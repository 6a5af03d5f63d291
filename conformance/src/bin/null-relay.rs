//! `null-relay`: the physical ceiling for fan-out. It accepts subscribers and authors like a
//! broker, and writes every frame an author sends to every subscriber, and does nothing else:
//! no parsing, no validation, no de-duplication, no receipts, no iamalives, no store.
//!
//! - Framing is the only protocol logic (the 4-byte prefix, via `vtp_core::frame`).
//! - Each subscriber gets one canned `authenticate` frame on accept (as brokers send), so that
//!   a load generator knows when it is registered. What subscribers send (acks, replies) is
//!   read and thrown away, so their writes never block.
//! - Each frame is copied once into a shared buffer; each subscriber holds a reference in its
//!   queue, flushed with vectored writes after every read from an author.
//! - Backpressure: while any subscriber has more than `--outbox-bytes` queued, authors are not
//!   read (so memory stays bounded and the fastest rate the slowest subscriber takes wins).
//!
//! One thread, one mio poll loop, edge-triggered. It runs until killed.
//!
//! ```sh
//! null-relay --receive 127.0.0.1:0 --broadcast 127.0.0.1:0
//! # null-relay: listening for authors on 127.0.0.1:41234
//! # null-relay: listening for subscribers on 127.0.0.1:41235
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use vtp_core::frame::{FRAME_LEN_MAX_DEFAULT, FrameDecoder};

/// Writes every frame received from authors to every subscriber; nothing else.
#[derive(Debug, Parser)]
#[command(name = "null-relay", version)]
struct Args {
    /// Address authors connect to (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    receive: SocketAddr,
    /// Address subscribers connect to (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    broadcast: SocketAddr,
    /// Bytes queued for one subscriber above which authors are not read until it drains.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    outbox_bytes: usize,
}

const RECEIVE: Token = Token(usize::MAX - 1);
const BROADCAST: Token = Token(usize::MAX - 2);
/// Frames written with one vectored write, at most.
const IOV_MAX: usize = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

type Frame = Rc<Vec<u8>>;

enum Conn {
    Author {
        stream: TcpStream,
        decoder: FrameDecoder,
        /// Not read since a subscriber's queue went over the limit; resumed when it drains.
        paused: bool,
    },
    Subscriber {
        stream: TcpStream,
        queue: VecDeque<Frame>,
        /// Bytes of the front frame already written.
        head: usize,
        /// Bytes queued, the front frame's written part excluded.
        queued: usize,
    },
}

struct Relay {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    subscribers: Vec<usize>,
    authenticate: Frame,
    outbox_bytes: usize,
    buf: Vec<u8>,
}

fn run(args: &Args) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut receive = TcpListener::bind(args.receive)?;
    let mut broadcast = TcpListener::bind(args.broadcast)?;
    poll.registry()
        .register(&mut receive, RECEIVE, Interest::READABLE)?;
    poll.registry()
        .register(&mut broadcast, BROADCAST, Interest::READABLE)?;
    eprintln!(
        "null-relay: listening for authors on {}",
        receive.local_addr()?
    );
    eprintln!(
        "null-relay: listening for subscribers on {}",
        broadcast.local_addr()?
    );
    let authenticate =
        vtp_core::message::build_authenticate("ivo://vtp.bench/null-relay", "2000-01-01T00:00:00Z");
    let mut relay = Relay {
        poll,
        conns: Vec::new(),
        free: Vec::new(),
        subscribers: Vec::new(),
        authenticate: Rc::new(authenticate.to_vec()),
        outbox_bytes: args.outbox_bytes.max(1),
        buf: vec![0u8; 256 * 1024],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = relay.poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events {
            match ev.token() {
                RECEIVE => relay.accept(&receive, false),
                BROADCAST => relay.accept(&broadcast, true),
                Token(i) => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        relay.readable(i);
                    }
                    if ev.is_writable() {
                        relay.flush(i);
                    }
                }
            }
        }
        relay.resume_authors();
    }
}

impl Relay {
    fn accept(&mut self, listener: &TcpListener, subscriber: bool) {
        loop {
            let mut stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: report and keep serving the others.
                    eprintln!("null-relay: accept: {e}");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let i = self.free.pop().unwrap_or(self.conns.len());
            let interest = if subscriber {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(i), interest)
            {
                eprintln!("null-relay: register: {e}");
                self.free.push(i);
                continue;
            }
            let conn = if subscriber {
                let auth = Rc::clone(&self.authenticate);
                let queued = auth.len();
                self.subscribers.push(i);
                Conn::Subscriber {
                    stream,
                    queue: VecDeque::from([auth]),
                    head: 0,
                    queued,
                }
            } else {
                Conn::Author {
                    stream,
                    decoder: FrameDecoder::new(FRAME_LEN_MAX_DEFAULT),
                    paused: false,
                }
            };
            if i == self.conns.len() {
                self.conns.push(Some(conn));
            } else {
                self.conns[i] = Some(conn);
            }
            if subscriber {
                self.flush(i);
            }
        }
    }

    fn readable(&mut self, i: usize) {
        match self.conns.get_mut(i) {
            Some(Some(Conn::Author { paused: false, .. })) => self.read_author(i),
            Some(Some(Conn::Author { paused: true, .. })) => {}
            Some(Some(Conn::Subscriber { stream, .. })) => {
                // Acks and replies: read and dropped.
                let closed = loop {
                    match stream.read(&mut self.buf) {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    self.close(i);
                }
            }
            _ => {}
        }
    }

    /// Reads an author until it would block (or a subscriber's queue is full), relaying every
    /// complete frame.
    fn read_author(&mut self, i: usize) {
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            if self.over_limit() {
                if let Some(Some(Conn::Author { paused, .. })) = self.conns.get_mut(i) {
                    *paused = true;
                }
                return;
            }
            let Some(Some(Conn::Author {
                stream, decoder, ..
            })) = self.conns.get_mut(i)
            else {
                return;
            };
            let n = match stream.read(&mut self.buf) {
                Ok(0) => {
                    self.close(i);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(i);
                    return;
                }
            };
            let decoded = decoder.decode(&self.buf[..n], |payload| {
                let mut f = Vec::with_capacity(payload.len() + 4);
                // The decoder caps payloads at 1 MiB, so the length fits in 32 bits.
                f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                f.extend_from_slice(payload);
                frames.push(Rc::new(f));
            });
            if decoded.is_err() {
                self.close(i);
                return;
            }
            if frames.is_empty() {
                continue;
            }
            for s in 0..self.subscribers.len() {
                let t = self.subscribers[s];
                if let Some(Some(Conn::Subscriber { queue, queued, .. })) = self.conns.get_mut(t) {
                    for f in &frames {
                        *queued += f.len();
                        queue.push_back(Rc::clone(f));
                    }
                }
            }
            frames.clear();
            // Flush in order; a failed subscriber is removed from the list as it goes.
            let subs = self.subscribers.clone();
            for t in subs {
                self.flush(t);
            }
        }
    }

    fn over_limit(&self) -> bool {
        self.subscribers.iter().any(|&t| {
            matches!(self.conns.get(t), Some(Some(Conn::Subscriber { queued, .. })) if *queued > self.outbox_bytes)
        })
    }

    /// Writes as much of a subscriber's queue as the socket takes.
    fn flush(&mut self, i: usize) {
        let Some(Some(Conn::Subscriber {
            stream,
            queue,
            head,
            queued,
        })) = self.conns.get_mut(i)
        else {
            return;
        };
        while !queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); IOV_MAX];
            let mut n = 0;
            for (k, f) in queue.iter().take(IOV_MAX).enumerate() {
                slices[k] = IoSlice::new(if k == 0 { &f[*head..] } else { &f[..] });
                n += 1;
            }
            match stream.write_vectored(&slices[..n]) {
                Ok(0) => {
                    self.close(i);
                    return;
                }
                Ok(mut written) => {
                    *queued -= written;
                    while written > 0 {
                        let Some(front) = queue.front() else { break };
                        let left = front.len() - *head;
                        if written >= left {
                            written -= left;
                            *head = 0;
                            queue.pop_front();
                        } else {
                            *head += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(i);
                    return;
                }
            }
        }
    }

    /// Resumes paused authors once every subscriber's queue is under half the limit.
    fn resume_authors(&mut self) {
        let paused: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Some(Conn::Author { paused: true, .. })))
            .map(|(i, _)| i)
            .collect();
        if paused.is_empty() {
            return;
        }
        let low = self.outbox_bytes / 2;
        let drained = self.subscribers.iter().all(|&t| {
            !matches!(self.conns.get(t), Some(Some(Conn::Subscriber { queued, .. })) if *queued > low)
        });
        if !drained {
            return;
        }
        for i in paused {
            if let Some(Some(Conn::Author { paused, .. })) = self.conns.get_mut(i) {
                *paused = false;
            }
            self.read_author(i);
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(slot) = self.conns.get_mut(i) {
            let conn = slot.take();
            if let Some(Conn::Subscriber { mut stream, .. } | Conn::Author { mut stream, .. }) =
                conn
            {
                let _ = self.poll.registry().deregister(&mut stream);
                self.subscribers.retain(|&t| t != i);
                self.free.push(i);
            }
        }
    }
}
