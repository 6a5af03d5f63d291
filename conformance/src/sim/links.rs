//! Where links meet hosts: each host's driver is run, as a runtime runs it, on what its
//! sockets see (accepts, connects, bytes, ends of stream), and what it writes and dials goes
//! into the links.

use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::driver::{Driver, Flush};
use vtp_core::endpoint::{DialAddr, PORT_SUBMIT, PORT_SUBSCRIBE};
use vtp_core::{CloseReason, ConnId, ListenerRole, Peer};

use super::Violation;
use super::net::{CLIENT, DOWN, End, HostId, Item, Link, LinkId, PipeWriter, SERVER, UP};
use super::topology::{Kind, Recorder};
use super::world::{Sim, Submission, Timed};

impl Sim {
    // ------------------------------------------------------------------- node I/O

    /// Runs `f` on host `h`'s driver, then looks at what it produced.
    pub(crate) fn drive<R>(
        &mut self,
        h: HostId,
        f: impl FnOnce(&mut Driver, &mut Recorder, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let host = &mut self.hosts[h];
        let driver = host.driver.as_mut()?;
        let r = f(driver, &mut host.fx, now);
        self.absorb(h);
        Some(r)
    }

    /// Carries out what host `h`'s driver asks for, as a runtime does after every input:
    /// flushes each connection from [`Driver::poll_writable`], then starts each dial from
    /// [`Driver::poll_dial`].
    pub(crate) fn poll_host(&mut self, h: HostId) {
        while let Some(conn) = self.hosts[h]
            .driver
            .as_mut()
            .and_then(Driver::poll_writable)
        {
            self.flush(h, conn);
        }
        while let Some((conn, addr)) = self.hosts[h].driver.as_mut().and_then(Driver::poll_dial) {
            self.dial(h, conn, &addr);
        }
    }

    /// Writes what `conn` has queued into its link; a connection still dialling is written
    /// once connected (as the runtimes do).
    pub(crate) fn flush(&mut self, h: HostId, conn: ConnId) {
        let Some(&l) = self.hosts[h].sockets.get(&conn) else {
            return;
        };
        let Some(side) = self.links[l].side_of(h, conn) else {
            return;
        };
        let out = if side == CLIENT { UP } else { DOWN };
        let now = self.now;
        let host = &mut self.hosts[h];
        let Some(driver) = host.driver.as_mut() else {
            return;
        };
        let link = &mut self.links[l];
        let mut writer = PipeWriter {
            pipe: &mut link.pipes[out],
            rng: &mut self.rng,
            now,
            latency: self.options.latency,
            window: self.options.window,
            segments_max: self.options.segments_max,
        };
        let flush = driver.flush(conn, &mut writer, now, &mut host.fx);
        if !link.pipes[out].items.is_empty() {
            self.active.insert(l);
        }
        self.absorb(h);
        match flush {
            Flush::Idle => {}
            Flush::Pending => {
                if let Some(since) = self.links[l].pipes[out].stalled_since {
                    let at = (since + super::net::USER_TIMEOUT).max(now);
                    let incarnation = self.hosts[h].incarnation;
                    self.schedule(at, Timed::Writable(h, incarnation, conn));
                }
            }
            Flush::Close(reason) => {
                trace!(self, "{}: close {conn} ({reason})", self.hosts[h].name);
                self.close_socket(l, side);
            }
        }
    }

    /// Opens a link to `addr`: its host name is a host's name, its port picks the listener.
    fn dial(&mut self, h: HostId, conn: ConnId, addr: &DialAddr) {
        trace!(self, "{}: dial {conn} {addr}", self.hosts[h].name);
        let target = match addr {
            DialAddr::Tcp { host, port } => {
                let listener = match *port {
                    PORT_SUBMIT => Some(ListenerRole::Receive),
                    PORT_SUBSCRIBE => Some(ListenerRole::Broadcast),
                    _ => None,
                };
                let server = self.hosts.iter().position(|x| x.name == *host);
                server.zip(listener)
            }
            _ => None,
        };
        self.hosts[h].dialing.insert(conn);
        let Some((server, listener)) = target else {
            let at = self.now + Duration::from_millis(1);
            let incarnation = self.hosts[h].incarnation;
            self.schedule(at, Timed::DialFailed(h, incarnation, conn, "no such host"));
            return;
        };
        let upstream = self.hosts[h]
            .upstreams
            .iter()
            .position(|eps| eps.contains(&server));
        let l = self.links.len();
        let mut client = End::new(h, Some(conn));
        client.open = true;
        let mut link = Link::new(client, server, listener, upstream);
        let at = self.now + self.latency();
        link.pipes[UP].push(Item::Syn, at);
        self.links.push(link);
        self.active.insert(l);
        self.hosts[h].conn_links.insert(conn, l);
    }

    pub(crate) fn mute_dial(&mut self, h: HostId) {
        let Some((broker, _)) = self.hosts[h].mute else {
            return;
        };
        trace!(self, "{}: dial broker-{broker}", self.hosts[h].name);
        let l = self.links.len();
        let mut client = End::new(h, None);
        client.open = true;
        let mut link = Link::new(client, broker, ListenerRole::Broadcast, None);
        let at = self.now + self.latency();
        link.pipes[UP].push(Item::Syn, at);
        self.links.push(link);
        self.active.insert(l);
        self.hosts[h].mute = Some((broker, Some(l)));
    }

    pub(crate) fn submit(&mut self, author: HostId, event: usize, broker: usize, attempt: u8) {
        let addr = DialAddr::tcp(format!("broker-{broker}"), PORT_SUBMIT);
        let payload = self.events[event].payload.clone();
        trace!(
            self,
            "{}: submit {} to {addr} (try {attempt})",
            self.hosts[author].name,
            self.events[event].ivorn
        );
        let result = self.drive(author, |d, fx, now| d.submit(addr, &payload, now, fx));
        match result {
            Some(Ok(conn)) => {
                self.submissions.insert(
                    (author, conn),
                    Submission {
                        broker,
                        at: self.now,
                        event,
                        attempt,
                        outcomes: 0,
                    },
                );
            }
            Some(Err(e)) => self.fail(Violation::Panicked(format!(
                "the simulator built an event the node refuses to submit: {e}"
            ))),
            None => {}
        }
        self.poll_host(author);
    }

    // ----------------------------------------------------------------- deliveries

    /// Delivers the head of pipe `d` of link `l` to its reader.
    pub(crate) fn deliver(&mut self, l: LinkId, d: usize) {
        let reader = if d == UP { SERVER } else { CLIENT };
        let pipe = &mut self.links[l].pipes[d];
        let Some((_, item)) = pipe.items.pop_front() else {
            return;
        };
        if pipe.reader_gone {
            if let Item::Data(b) = &item {
                pipe.unread = pipe.unread.saturating_sub(b.len());
            }
            return;
        }
        match item {
            Item::Syn => self.handle_accept(l),
            Item::SynAck => self.handle_connected(l),
            Item::Data(first) => {
                // Sometimes the reader finds several segments waiting and reads them at once.
                let mut bytes = first;
                if self.rng.coin() {
                    let now = self.now;
                    let pipe = &mut self.links[l].pipes[d];
                    let mut merged: Option<Vec<u8>> = None;
                    while let Some((at, Item::Data(next))) = pipe.items.front()
                        && *at <= now
                        && pipe.paused_until.is_none_or(|p| p <= now)
                    {
                        merged
                            .get_or_insert_with(|| bytes.to_vec())
                            .extend_from_slice(next);
                        pipe.items.pop_front();
                    }
                    if let Some(m) = merged {
                        bytes = Bytes::from(m);
                    }
                }
                self.handle_input(l, d, reader, &bytes);
            }
            Item::Fin => self.handle_eof(l, reader, false),
            Item::Rst => self.handle_eof(l, reader, true),
        }
    }

    /// A `Syn` reached the server end of link `l`: its driver accepts the connection
    /// ([`Driver::handle_accept`]) or refuses it.
    fn handle_accept(&mut self, l: LinkId) {
        let server = self.links[l].ends[SERVER].host;
        let client = self.links[l].ends[CLIENT].host;
        let at = self.now + self.latency();
        if self.hosts[server].kind != Kind::Broker {
            self.links[l].pipes[DOWN].push(Item::Rst, at);
            return;
        }
        let listener = self.links[l].listener;
        // An ephemeral source port per link: every policy counts the address only.
        let port = 49152 + (l % 16384) as u16;
        let peer = Peer::Tcp(std::net::SocketAddr::new(self.hosts[client].ip, port));
        let accepted = self
            .drive(server, |d, fx, now| {
                d.handle_accept(listener, peer, now, fx)
            })
            .flatten();
        let link = &mut self.links[l];
        link.pipes[DOWN].push(Item::SynAck, at);
        match accepted {
            Some(conn) => {
                link.ends[SERVER].conn = Some(conn);
                link.ends[SERVER].open = true;
                link.accepted_at = Some(self.now);
                self.hosts[server].sockets.insert(conn, l);
                self.hosts[server].conn_links.insert(conn, l);
                trace!(
                    self,
                    "{}: accepted {conn} from {} ({listener:?})",
                    self.hosts[server].name,
                    self.hosts[client].name
                );
                self.poll_host(server);
            }
            None => {
                link.pipes[DOWN].push(Item::Fin, at);
                link.ends[SERVER].down_at = Some(self.now);
            }
        }
    }

    /// A `SynAck` reached the client end of link `l`: its dial succeeded
    /// ([`Driver::handle_connected`]).
    fn handle_connected(&mut self, l: LinkId) {
        let client = self.links[l].ends[CLIENT];
        let h = client.host;
        self.links[l].established_at = Some(self.now);
        let Some(conn) = client.conn else {
            trace!(self, "{}: connected", self.hosts[h].name);
            return;
        };
        self.hosts[h].dialing.remove(&conn);
        let still_wanted = self.hosts[h]
            .driver
            .as_ref()
            .is_some_and(|d| d.is_open(conn));
        if !still_wanted {
            // The node gave up on this dial: the runtime drops the new stream.
            self.close_socket(l, CLIENT);
            return;
        }
        trace!(self, "{}: connected {conn}", self.hosts[h].name);
        self.hosts[h].sockets.insert(conn, l);
        self.drive(h, |d, fx, now| d.handle_connected(conn, now, fx));
        self.poll_host(h);
    }

    /// Bytes of pipe `d` of link `l` reached its reader ([`Driver::handle_input`]).
    fn handle_input(&mut self, l: LinkId, d: usize, reader: usize, bytes: &[u8]) {
        {
            let pipe = &mut self.links[l].pipes[d];
            pipe.read += bytes.len() as u64;
            pipe.unread = pipe.unread.saturating_sub(bytes.len());
        }
        if d == DOWN && self.links[l].pipes[d].tap.is_some() {
            self.tap(l, bytes);
        }
        let end = self.links[l].ends[reader];
        if let Some(conn) = end.conn
            && end.open
        {
            self.drive(end.host, |dr, fx, now| {
                dr.handle_input(conn, bytes, now, fx)
            });
            self.poll_host(end.host);
        }
        // The read made room: a writer waiting on this pipe can go on.
        let writer = self.links[l].ends[1 - reader];
        if self.links[l].pipes[d].stalled_since.is_some()
            && let Some(conn) = writer.conn
            && writer.open
        {
            self.flush(writer.host, conn);
            self.poll_host(writer.host);
        }
    }

    /// The reader of a pipe reached its end, an orderly `Fin` or a reset
    /// ([`Driver::handle_eof`]; [`Driver::handle_closed`] for a refused dial).
    fn handle_eof(&mut self, l: LinkId, reader: usize, reset: bool) {
        let end = self.links[l].ends[reader];
        let h = end.host;
        let out = if reader == CLIENT { UP } else { DOWN };
        if reset {
            self.links[l].pipes[out].reset = true;
        }
        if self.hosts[h].kind == Kind::Mute {
            trace!(self, "{}: connection ended", self.hosts[h].name);
            self.close_socket(l, reader);
            let at = self.now
                + self
                    .rng
                    .duration(Duration::from_secs(1), Duration::from_secs(20));
            self.schedule(at, Timed::MuteDial(h));
            return;
        }
        let Some(conn) = end.conn else {
            return;
        };
        if reset && self.hosts[h].dialing.remove(&conn) {
            trace!(self, "{}: {conn} refused", self.hosts[h].name);
            let reason = CloseReason::ConnectRefused;
            self.drive(h, |d, fx, now| d.handle_closed(conn, reason, now, fx));
            self.poll_host(h);
            return;
        }
        if !end.open {
            return;
        }
        trace!(
            self,
            "{}: {} on {conn}",
            self.hosts[h].name,
            if reset { "reset" } else { "eof" }
        );
        // A runtime reports a reset as the end of the stream too; the next write then fails.
        let close_now = self.drive(h, |d, fx, now| d.handle_eof(conn, now, fx));
        if close_now == Some(true) {
            self.close_socket(l, reader);
        }
        self.poll_host(h);
    }

    // -------------------------------------------------------------------- sockets

    /// Host-side close of one end's socket: an orderly `Fin` goes out behind queued data, and
    /// whatever arrives from now on is discarded.
    fn close_socket(&mut self, l: LinkId, side: usize) {
        let (out, at) = self.end_down(l, side);
        let link = &mut self.links[l];
        if !link.pipes[out].write_closed {
            link.pipes[out].push(Item::Fin, at);
        }
        let end = &link.ends[side];
        if let Some(conn) = end.conn {
            self.hosts[end.host].sockets.remove(&conn);
        }
    }

    /// The socket of one end vanishes with its process: a reset goes out instead of what was
    /// queued, and whatever arrives is discarded.
    pub(crate) fn abort_socket(&mut self, l: LinkId, side: usize) {
        let (out, at) = self.end_down(l, side);
        let pipe = &mut self.links[l].pipes[out];
        if !pipe.write_closed {
            // A `Syn` still in flight stays ahead of the reset: the server then sees the
            // connection open and reset at once.
            pipe.items.retain(|(_, item)| matches!(item, Item::Syn));
            pipe.unread = 0;
            pipe.push(Item::Rst, at);
        }
    }

    /// What closing and aborting one end's socket share: the end is down from now on, and its
    /// incoming pipe discards what it holds and whatever arrives. Returns the end's outgoing
    /// pipe and when what is sent on it now arrives.
    fn end_down(&mut self, l: LinkId, side: usize) -> (usize, Instant) {
        let at = self.now + self.latency();
        let now = self.now;
        let link = &mut self.links[l];
        let end = &mut link.ends[side];
        end.open = false;
        end.down_at.get_or_insert(now);
        let out = if side == CLIENT { UP } else { DOWN };
        link.pipes[1 - out].reader_gone = true;
        link.pipes[1 - out].discard();
        self.active.insert(l);
        (out, at)
    }

    pub(crate) fn latency(&mut self) -> Duration {
        let (lo, hi) = self.options.latency;
        self.rng.duration(lo, hi)
    }

    pub(crate) fn partitioned(&self, a: HostId, b: HostId) -> bool {
        !self.partitions.is_empty() && self.partitions.contains_key(&(a.min(b), a.max(b)))
    }
}
