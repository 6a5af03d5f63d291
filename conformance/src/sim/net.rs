//! The virtual network: TCP connections as pairs of ordered, latent, re-chunking pipes.
//!
//! # Theory of operation
//!
//! A [`Link`] is one TCP connection between a dialling host (the *client*) and a listening host
//! (the *server*). It has two [`Pipe`]s, one per direction. A pipe is an ordered queue of
//! [`Item`]s, each with the instant it arrives at the reader:
//!
//! - `Syn` (client → server) opens the connection at the server; `SynAck` (server → client)
//!   completes the dial; `Data` carries bytes; `Fin` is an orderly end of stream; `Rst` a reset.
//! - A write is accepted only up to the pipe's *window* (bytes in flight plus bytes arrived but
//!   unread: the two socket buffers); beyond, the writer gets `WouldBlock`, as a non-blocking
//!   socket does. Accepted bytes are cut into segments at random boundaries, each arriving after
//!   a random latency, never before the segment ahead of it (TCP is ordered).
//! - A *paused* pipe (slow reader) delivers nothing until the pause ends; a *frozen* pipe (a
//!   half-open connection) never delivers again, and a writer stuck on it fails after the TCP
//!   user timeout; a partition between two hosts holds every pipe between them until it heals.
//!
//! The pipe is pure data: the simulator decides when to deliver and what delivery means.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::ConnId;
use vtp_core::ListenerRole;
use vtp_core::frame::FrameDecoder;

use super::rng::Rng;

/// Index of a host in the simulation.
pub(crate) type HostId = usize;
/// Index of a link; never reused.
pub(crate) type LinkId = usize;

/// Client → server.
pub(crate) const UP: usize = 0;
/// Server → client.
pub(crate) const DOWN: usize = 1;

/// How long a writer may face a full window that never drains before its write fails (the TCP
/// user timeout; real stacks retransmit for many minutes, runtimes often cut it shorter).
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(180);

/// Something travelling through a pipe.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Syn,
    SynAck,
    Data(Bytes),
    Fin,
    Rst,
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    /// Items in order, each with its arrival instant (non-decreasing).
    pub(crate) items: VecDeque<(Instant, Item)>,
    /// Bytes accepted from the writer and not yet read (in flight or waiting in the reader's
    /// socket buffer).
    pub(crate) unread: usize,
    /// Stream offset: bytes accepted from the writer so far.
    pub(crate) written: u64,
    /// Stream offset: bytes handed to the reader so far.
    pub(crate) read: u64,
    /// Slow reader: nothing is read before this instant.
    pub(crate) paused_until: Option<Instant>,
    /// Half-open: nothing arrives ever again.
    pub(crate) frozen: bool,
    /// A `Fin` or `Rst` was queued: the writer is done.
    pub(crate) write_closed: bool,
    /// The reader's socket is closed: arriving items are discarded.
    pub(crate) reader_gone: bool,
    /// The connection was reset: writes fail.
    pub(crate) reset: bool,
    /// Since when the writer has faced a full window.
    pub(crate) stalled_since: Option<Instant>,
    /// Frame tap for invariant checks (feed direction of broadcast links only).
    pub(crate) tap: Option<Tap>,
}

impl Pipe {
    /// When the head item can be read, if ever (ignoring partitions, which the simulator knows).
    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        if self.frozen {
            return None;
        }
        let (at, _) = self.items.front()?;
        Some(match self.paused_until {
            Some(p) if p > *at => p,
            _ => *at,
        })
    }

    /// Queues a control item behind everything already queued.
    pub(crate) fn push(&mut self, item: Item, at: Instant) {
        let at = self.items.back().map_or(at, |(last, _)| at.max(*last));
        if matches!(item, Item::Fin | Item::Rst) {
            self.write_closed = true;
        }
        self.items.push_back((at, item));
    }

    /// Drops everything not yet read (a reset, or a reader that went away); the bytes no longer
    /// occupy the window.
    pub(crate) fn discard(&mut self) {
        self.items.clear();
        self.unread = 0;
    }

    /// Delays every queued item to arrive no earlier than `at` (a partition healed: the
    /// retransmissions go out now). Order is preserved.
    pub(crate) fn hold_until(&mut self, at: Instant) {
        for (t, _) in self.items.iter_mut() {
            if *t < at {
                *t = at;
            }
        }
    }
}

/// Decodes the frames a reader receives, remembering which events it has seen.
#[derive(Debug)]
pub(crate) struct Tap {
    pub(crate) decoder: FrameDecoder,
    /// Stream offset of the next frame's first byte.
    pub(crate) offset: u64,
    /// Events carried so far.
    pub(crate) ivorns: BTreeSet<Arc<str>>,
}

impl Tap {
    pub(crate) fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(vtp_core::frame::FRAME_LEN_MAX_DEFAULT),
            offset: 0,
            ivorns: BTreeSet::new(),
        }
    }
}

/// One end of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End {
    pub(crate) host: HostId,
    /// The node's handle for the connection (`None` for hand-written peers, and for a server
    /// that has not accepted yet).
    pub(crate) conn: Option<ConnId>,
    /// The host's socket is open.
    pub(crate) open: bool,
    /// When the node stopped serving the connection (its `PeerDown`), or the socket closed.
    pub(crate) down_at: Option<Instant>,
}

impl End {
    pub(crate) fn new(host: HostId, conn: Option<ConnId>) -> Self {
        Self {
            host,
            conn,
            open: false,
            down_at: None,
        }
    }
}

/// One TCP connection.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) ends: [End; 2],
    pub(crate) listener: ListenerRole,
    pub(crate) pipes: [Pipe; 2],
    /// Which upstream of the client this connection serves, for subscription links.
    pub(crate) upstream: Option<usize>,
    /// When the client learnt the connection was established.
    pub(crate) established_at: Option<Instant>,
    /// When the server accepted it.
    pub(crate) accepted_at: Option<Instant>,
    /// Half-open for good.
    pub(crate) black_hole: bool,
    /// Intervals during which the link could not carry data promptly (slow reader, black
    /// hole); the end of an open interval is `None`.
    pub(crate) disturbed: Vec<(Instant, Option<Instant>)>,
    /// Stream offset (server → client) from which every frame was queued after the server
    /// knew the client's filters.
    pub(crate) filter_boundary: Option<u64>,
}

/// Index of the client end.
pub(crate) const CLIENT: usize = 0;
/// Index of the server end.
pub(crate) const SERVER: usize = 1;

impl Link {
    pub(crate) fn new(
        client: End,
        server: HostId,
        listener: ListenerRole,
        upstream: Option<usize>,
    ) -> Self {
        let mut pipes = [Pipe::default(), Pipe::default()];
        if listener == ListenerRole::Broadcast {
            pipes[DOWN].tap = Some(Tap::new());
        }
        Self {
            ends: [client, End::new(server, None)],
            listener,
            pipes,
            upstream,
            established_at: None,
            accepted_at: None,
            black_hole: false,
            disturbed: Vec::new(),
            filter_boundary: None,
        }
    }

    /// The end on `host` with handle `conn`, if it is this link's.
    pub(crate) fn side_of(&self, host: HostId, conn: ConnId) -> Option<usize> {
        (0..2).find(|&s| self.ends[s].host == host && self.ends[s].conn == Some(conn))
    }

    /// True while both nodes serve the connection and it carries data both ways.
    pub(crate) fn healthy(&self) -> bool {
        self.established_at.is_some()
            && !self.black_hole
            && self.ends.iter().all(|e| e.open && e.down_at.is_none())
    }

    /// When the link stopped being served by either end, if it did.
    pub(crate) fn down_at(&self) -> Option<Instant> {
        match (self.ends[0].down_at, self.ends[1].down_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True if a disturbance overlaps `[from, to]`.
    pub(crate) fn disturbed_during(&self, from: Instant, to: Instant) -> bool {
        self.disturbed
            .iter()
            .any(|&(s, e)| s <= to && e.is_none_or(|e| e >= from))
    }
}

/// A non-blocking writer into one pipe, as a socket looks to a driver.
pub(crate) struct PipeWriter<'a> {
    pub(crate) pipe: &'a mut Pipe,
    pub(crate) rng: &'a mut Rng,
    pub(crate) now: Instant,
    pub(crate) latency: (Duration, Duration),
    pub(crate) window: usize,
    pub(crate) segments_max: usize,
}

impl io::Write for PipeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pipe.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if self.pipe.write_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.window.saturating_sub(self.pipe.unread);
        if room == 0 {
            let since = *self.pipe.stalled_since.get_or_insert(self.now);
            if self.now.duration_since(since) >= USER_TIMEOUT {
                return Err(io::ErrorKind::TimedOut.into());
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.pipe.stalled_since = None;
        let n = room.min(buf.len());
        let bytes = Bytes::copy_from_slice(&buf[..n]);
        // Cut at random boundaries: one segment or several, some possibly one byte long.
        let mut cuts: Vec<usize> = (1..self.rng.between(1, self.segments_max.max(1)))
            .map(|_| self.rng.between(1, n))
            .collect();
        cuts.push(n);
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        for cut in cuts {
            if cut > start {
                let at = self.now + self.rng.duration(self.latency.0, self.latency.1);
                self.pipe.push(Item::Data(bytes.slice(start..cut)), at);
                start = cut;
            }
        }
        self.pipe.written += n as u64;
        self.pipe.unread += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writes_respect_the_window_and_keep_order() {
        let t0 = crate::sim::origin();
        let mut pipe = Pipe::default();
        let mut rng = Rng::new(3);
        let mut w = PipeWriter {
            pipe: &mut pipe,
            rng: &mut rng,
            now: t0,
            latency: (Duration::from_millis(1), Duration::from_millis(100)),
            window: 10,
            segments_max: 4,
        };
        assert_eq!(w.write(b"0123456789abc").expect("room"), 10);
        let err = w.write(b"x").expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut seen = Vec::new();
        let mut last = t0;
        for (at, item) in &pipe.items {
            assert!(*at >= last, "segments arrive in order");
            last = *at;
            if let Item::Data(b) = item {
                seen.extend_from_slice(b);
            }
        }
        assert_eq!(seen, b"0123456789");
        assert_eq!(pipe.stalled_since, Some(t0));
        pipe.hold_until(t0 + Duration::from_secs(1));
        assert!(
            pipe.items
                .iter()
                .all(|(at, _)| *at >= t0 + Duration::from_secs(1))
        );
    }
}
