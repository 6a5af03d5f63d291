//! Per-connection send queue with a partial-write cursor.
//!
//! # Theory of operation
//!
//! The core produces whole frames as [`Bytes`]; a non-blocking socket accepts however many bytes
//! it likes. An [`Outbox`] sits between the two: frames are [`push`](Outbox::push)ed whole, the
//! runtime writes from the front (with [`write_to`](Outbox::write_to), or with
//! [`io_slices`](Outbox::io_slices) / [`front`](Outbox::front) and [`advance`](Outbox::advance)
//! for runtimes that do not speak `std::io::Write`), and a cursor remembers how much of the front
//! frame has gone out. Fully written frames are dropped, releasing their share of a fan-out buffer.
//!
//! The queue is bounded in frames and in unwritten bytes. A full outbox means the peer is not
//! reading; the caller decides what to do (typically close a slow subscriber). The type is pure:
//! it never touches a socket itself, so every runtime reuses it (through
//! [`Driver`](crate::driver::Driver), which keeps one per connection).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};

use bytes::Bytes;

/// Bounds of an [`Outbox`].
///
/// Both bounds apply to frames not yet completely written; a partially written front frame counts
/// as one frame and by its unwritten bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most unwritten bytes the outbox holds (see [`Outbox::push`] for the one exception).
    pub bytes_max: usize,
    /// Most frames the outbox holds, counting the partially written one.
    pub frames_max: usize,
}

impl Default for OutboxLimits {
    /// 4 MiB and 1024 frames: hundreds of typical VOEvents (0.5–10 kB) per slow peer.
    fn default() -> Self {
        Self {
            bytes_max: OUTBOX_BYTES_MAX_DEFAULT,
            frames_max: OUTBOX_FRAMES_MAX_DEFAULT,
        }
    }
}

/// A bounded queue of outgoing frames with a cursor into the partially written front frame.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use vtp_core::outbox::{Outbox, OutboxLimits};
///
/// let mut outbox = Outbox::new(OutboxLimits::default());
/// outbox.push(Bytes::from_static(b"\0\0\0\x02hi"))?;
/// let mut socket = Vec::new(); // any `std::io::Write`, e.g. a non-blocking `TcpStream`
/// let drained = outbox.write_to(&mut socket)?;
/// assert!(drained && outbox.is_empty());
/// assert_eq!(socket, b"\0\0\0\x02hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Outbox {
    /// Queued frames, oldest first; none is empty.
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written; less than its length when the queue is non-empty.
    cursor: usize,
    /// Unwritten bytes over all queued frames.
    queued_bytes: usize,
    /// Bounds checked by `push`.
    limits: OutboxLimits,
}

impl Outbox {
    /// Creates an empty outbox with the given bounds.
    #[must_use]
    pub fn new(limits: OutboxLimits) -> Self {
        Self {
            frames: VecDeque::new(),
            cursor: 0,
            queued_bytes: 0,
            limits,
        }
    }

    /// Queues a frame behind those already queued.
    ///
    /// An **empty outbox always accepts one frame**, even if that frame alone exceeds
    /// `bytes_max` (or `frames_max` is 0), so that a big event can still be sent to an idle peer;
    /// the bounds then refuse further frames until it has been written. An empty `frame` is
    /// accepted and ignored: there is nothing to write.
    ///
    /// # Errors
    ///
    /// [`OutboxFull`] if queuing the frame would exceed either bound; the frame is then not
    /// queued. It means the peer is not reading fast enough.
    pub fn push(&mut self, frame: Bytes) -> Result<(), OutboxFull> {
        if frame.is_empty() {
            return Ok(());
        }
        if !self.frames.is_empty() {
            let frames_over = self.frames.len() >= self.limits.frames_max;
            let bytes_over = self.queued_bytes.saturating_add(frame.len()) > self.limits.bytes_max;
            if frames_over || bytes_over {
                return Err(OutboxFull {
                    queued_frames: self.frames.len(),
                    queued_bytes: self.queued_bytes,
                    frames_max: self.limits.frames_max,
                    bytes_max: self.limits.bytes_max,
                });
            }
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        Ok(())
    }

    /// Records that `n` bytes were written (may span several frames).
    ///
    /// Frames written completely are dropped. `n` larger than [`queued_bytes`](Self::queued_bytes)
    /// is a caller bug: it fails a debug assertion and is clamped in release builds.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(
            n <= self.queued_bytes,
            "advance({n}) past the {} queued bytes",
            self.queued_bytes
        );
        let mut n = n.min(self.queued_bytes);
        self.queued_bytes -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let remaining = front.len() - self.cursor;
            if n < remaining {
                self.cursor += n;
                break;
            }
            n -= remaining;
            self.cursor = 0;
            self.frames.pop_front();
        }
    }

    /// Writes as much as possible into a [`io::Write`] that may return `WouldBlock`.
    ///
    /// Loops over `write_vectored` until the outbox is empty (`Ok(true)`) or the writer returns
    /// `WouldBlock` (`Ok(false)`: bytes still pending, wait for writability). `Interrupted` is
    /// retried. Several frames go out per call when the writer supports vectored writes.
    ///
    /// # Errors
    ///
    /// - `WriteZero` if the writer accepts zero bytes (the peer is gone).
    /// - `InvalidData` if the writer reports more bytes written than it was offered (a broken
    ///   writer; the outbox is left unchanged).
    /// - Any other error the writer returns; the outbox keeps the unwritten bytes.
    pub fn write_to<W: io::Write>(&mut self, w: &mut W) -> io::Result<bool> {
        loop {
            if self.is_empty() {
                return Ok(true);
            }
            let result = {
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
                let count = self.io_slices(&mut slices);
                let offered: usize = slices[..count].iter().map(|s| s.len()).sum();
                w.write_vectored(&slices[..count]).map(|n| (n, offered))
            };
            match result {
                Ok((0, _)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the writer accepted no bytes of a queued frame; the peer is gone",
                    ));
                }
                Ok((n, offered)) if n > offered => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the writer reported {n} bytes written but was offered {offered}"),
                    ));
                }
                Ok((n, _)) => self.advance(n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
    }

    /// Drops everything queued, including the unwritten rest of a partially written frame.
    ///
    /// After a partial write the peer's stream is then mid-frame: only clear before closing.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.cursor = 0;
        self.queued_bytes = 0;
    }

    /// True when nothing is left to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames queued, including the partially written one.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes not yet written.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The bounds this outbox enforces.
    #[must_use]
    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Fills `dst` with [`IoSlice`]s of unwritten bytes, the first starting at the cursor.
    ///
    /// Returns how many entries of `dst` were filled: the number of queued frames or `dst.len()`,
    /// whichever is smaller. Pass `&dst[..count]` to `write_vectored`, then call
    /// [`advance`](Self::advance) with the number of bytes written.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (slot, (i, frame)) in dst.iter_mut().zip(self.frames.iter().enumerate()) {
            let start = if i == 0 { self.cursor } else { 0 };
            *slot = IoSlice::new(&frame[start..]);
            count += 1;
        }
        count
    }

    /// Unwritten part of the front frame, if any.
    ///
    /// For writers without vectored IO: write it, then [`advance`](Self::advance).
    #[must_use]
    pub fn front(&self) -> Option<&[u8]> {
        self.frames.front().map(|frame| &frame[self.cursor..])
    }
}

impl fmt::Debug for Outbox {
    /// Prints counts, never the queued bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("frames", &self.frames.len())
            .field("queued_bytes", &self.queued_bytes)
            .field("cursor", &self.cursor)
            .field("limits", &self.limits)
            .finish()
    }
}

/// [`Outbox::push`] refused a frame because a bound would be exceeded.
///
/// The values describe the outbox at the time of the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "outbox full: {queued_frames} frames / {queued_bytes} bytes queued (limits {frames_max} \
     frames / {bytes_max} bytes); the peer is not reading"
)]
pub struct OutboxFull {
    /// Frames queued, including a partially written one.
    pub queued_frames: usize,
    /// Unwritten bytes queued.
    pub queued_bytes: usize,
    /// The frame bound.
    pub frames_max: usize,
    /// The byte bound.
    pub bytes_max: usize,
}

/// Default [`OutboxLimits::bytes_max`]: 4 MiB.
const OUTBOX_BYTES_MAX_DEFAULT: usize = 4 << 20;

/// Default [`OutboxLimits::frames_max`].
const OUTBOX_FRAMES_MAX_DEFAULT: usize = 1024;

/// Slices offered per `write_vectored` call (Linux's `UIO_MAXIOV` is 1024; 64 is plenty).
const WRITE_SLICES_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// A writer accepting at most `k` bytes per call (across slices) for `calls` calls, then
    /// `WouldBlock` until `calls` is topped up again.
    struct Trickle {
        written: Vec<u8>,
        k: usize,
        calls: usize,
        /// Number of `write_vectored` calls seen.
        seen: usize,
    }

    impl Trickle {
        fn new(k: usize, calls: usize) -> Self {
            Self {
                written: Vec::new(),
                k,
                calls,
                seen: 0,
            }
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.seen += 1;
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let mut budget = self.k;
            for buf in bufs {
                let take = buf.len().min(budget);
                self.written.extend_from_slice(&buf[..take]);
                budget -= take;
            }
            Ok(self.k - budget)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that fails in scripted ways, then writes everything.
    struct Scripted {
        script: Vec<io::Result<usize>>,
        written: Vec<u8>,
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.script.is_empty() {
                self.written.extend_from_slice(buf);
                return Ok(buf.len());
            }
            self.script.remove(0)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn limits(bytes_max: usize, frames_max: usize) -> OutboxLimits {
        OutboxLimits {
            bytes_max,
            frames_max,
        }
    }

    /// Concatenates the unwritten bytes via `io_slices`.
    fn unwritten(outbox: &Outbox) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = outbox.io_slices(&mut slices);
        slices[..count].iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn default_limits() {
        assert_eq!(OutboxLimits::default(), limits(4 * 1024 * 1024, 1024));
    }

    #[test]
    fn partial_writes_then_would_block() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"abcde")).unwrap();
        outbox.push(Bytes::from_static(b"fgh")).unwrap();
        outbox.push(Bytes::from_static(b"ijklmn")).unwrap();
        let mut w = Trickle::new(3, 2);
        assert!(!outbox.write_to(&mut w).unwrap());
        assert_eq!(w.written, b"abcdef");
        assert_eq!(w.seen, 3, "two writes, then WouldBlock");
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.queued_bytes(), 8);
        assert_eq!(outbox.front(), Some(&b"gh"[..]));
        assert_eq!(unwritten(&outbox), b"ghijklmn");
        // Writable again: one more call of 3 bytes, then blocked.
        w.calls = 1;
        assert!(!outbox.write_to(&mut w).unwrap());
        assert_eq!(w.written, b"abcdefghi");
        assert_eq!(outbox.front(), Some(&b"jklmn"[..]));
        w.calls = 10;
        assert!(outbox.write_to(&mut w).unwrap());
        assert_eq!(w.written, b"abcdefghijklmn");
        assert!(outbox.is_empty());
        assert_eq!(
            (outbox.len(), outbox.queued_bytes(), outbox.front()),
            (0, 0, None)
        );
        // Empty: returns true without calling the writer.
        let seen = w.seen;
        assert!(outbox.write_to(&mut w).unwrap());
        assert_eq!(w.seen, seen);
    }

    #[test]
    fn default_write_vectored_drains_frame_by_frame() {
        // `Scripted` keeps std's default `write_vectored`, which writes only the first slice.
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"ab")).unwrap();
        outbox.push(Bytes::from_static(b"cd")).unwrap();
        let mut w = Scripted {
            script: vec![Ok(1)],
            written: Vec::new(),
        };
        assert!(outbox.write_to(&mut w).unwrap());
        // The scripted `Ok(1)` "wrote" nothing to `written`, but advanced by 1 byte.
        assert_eq!(w.written, b"bcd");
    }

    #[test]
    fn interrupted_is_retried_and_errors_surface() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"xyz")).unwrap();
        let mut w = Scripted {
            script: vec![
                Err(io::ErrorKind::Interrupted.into()),
                Err(io::ErrorKind::ConnectionReset.into()),
            ],
            written: Vec::new(),
        };
        let err = outbox.write_to(&mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(outbox.queued_bytes(), 3, "nothing lost on error");
        assert!(outbox.write_to(&mut w).unwrap());
        assert_eq!(w.written, b"xyz");
    }

    #[test]
    fn write_zero_is_an_error() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"xyz")).unwrap();
        let mut w = Scripted {
            script: vec![Ok(0)],
            written: Vec::new(),
        };
        let err = outbox.write_to(&mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(outbox.queued_bytes(), 3);
    }

    #[test]
    fn overreporting_writer_is_an_error() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"xyz")).unwrap();
        let mut w = Scripted {
            script: vec![Ok(4)],
            written: Vec::new(),
        };
        let err = outbox.write_to(&mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(outbox.queued_bytes(), 3);
    }

    #[test]
    fn bytes_bound() {
        let mut outbox = Outbox::new(limits(10, 100));
        outbox.push(Bytes::from_static(b"12345")).unwrap();
        outbox.push(Bytes::from_static(b"67890")).unwrap();
        let err = outbox.push(Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(
            err,
            OutboxFull {
                queued_frames: 2,
                queued_bytes: 10,
                frames_max: 100,
                bytes_max: 10,
            }
        );
        assert_eq!(
            err.to_string(),
            "outbox full: 2 frames / 10 bytes queued (limits 100 frames / 10 bytes); \
             the peer is not reading"
        );
        assert_eq!((outbox.len(), outbox.queued_bytes()), (2, 10));
        // Writing 3 bytes frees room for exactly 3 more.
        outbox.advance(3);
        outbox.push(Bytes::from_static(b"abc")).unwrap();
        assert!(outbox.push(Bytes::from_static(b"d")).is_err());
        assert_eq!(unwritten(&outbox), b"4567890abc");
    }

    #[test]
    fn frames_bound() {
        let mut outbox = Outbox::new(limits(1000, 2));
        outbox.push(Bytes::from_static(b"a")).unwrap();
        outbox.push(Bytes::from_static(b"b")).unwrap();
        let err = outbox.push(Bytes::from_static(b"c")).unwrap_err();
        assert_eq!((err.queued_frames, err.frames_max), (2, 2));
        // A partially written front frame still counts.
        outbox.push(Bytes::new()).unwrap();
        assert_eq!(outbox.len(), 2, "empty frames are ignored");
        outbox.advance(1);
        outbox.push(Bytes::from_static(b"c")).unwrap();
        assert_eq!(unwritten(&outbox), b"bc");
    }

    #[test]
    fn empty_outbox_accepts_one_oversize_frame() {
        let mut outbox = Outbox::new(limits(4, 0));
        outbox.push(Bytes::from(vec![1; 100])).unwrap();
        assert_eq!(outbox.queued_bytes(), 100);
        assert!(outbox.push(Bytes::from_static(b"x")).is_err());
        outbox.advance(99);
        assert!(
            outbox.push(Bytes::from_static(b"x")).is_err(),
            "not empty yet"
        );
        outbox.advance(1);
        assert!(outbox.is_empty());
        outbox.push(Bytes::from(vec![2; 100])).unwrap();
    }

    #[test]
    fn io_slices_start_at_cursor_and_respect_dst_len() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        for frame in [&b"abc"[..], b"de", b"fghi"] {
            outbox.push(Bytes::copy_from_slice(frame)).unwrap();
        }
        outbox.advance(2);
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(outbox.io_slices(&mut two), 2);
        assert_eq!((&*two[0], &*two[1]), (&b"c"[..], &b"de"[..]));
        assert_eq!(outbox.io_slices(&mut []), 0);
        assert_eq!(unwritten(&outbox), b"cdefghi");
    }

    #[test]
    fn clear_drops_everything() {
        let mut outbox = Outbox::new(limits(10, 10));
        outbox.push(Bytes::from_static(b"abcdef")).unwrap();
        outbox.advance(2);
        outbox.clear();
        assert!(outbox.is_empty());
        assert_eq!(
            (outbox.len(), outbox.queued_bytes(), outbox.front()),
            (0, 0, None)
        );
        outbox.push(Bytes::from_static(b"0123456789")).unwrap();
        assert_eq!(outbox.front(), Some(&b"0123456789"[..]));
    }

    #[test]
    #[should_panic(expected = "past the")]
    fn advance_past_end_is_a_debug_bug() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"ab")).unwrap();
        outbox.advance(3);
    }

    #[test]
    fn debug_prints_counts_not_bytes() {
        let mut outbox = Outbox::new(OutboxLimits::default());
        outbox.push(Bytes::from_static(b"secret")).unwrap();
        let debug = format!("{outbox:?}");
        assert!(debug.contains("queued_bytes: 6"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    proptest! {
        #[test]
        fn trickled_writes_reproduce_the_stream(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..30),
            k in 1usize..40,
            calls in 1usize..5,
        ) {
            let mut outbox = Outbox::new(limits(usize::MAX, usize::MAX));
            let mut expected = Vec::new();
            for frame in &frames {
                expected.extend_from_slice(frame);
                outbox.push(Bytes::copy_from_slice(frame)).unwrap();
            }
            let mut w = Trickle::new(k, 0);
            // Bounded: each round writes at least one byte while bytes remain.
            for _ in 0..=expected.len() {
                w.calls = calls;
                let before = outbox.queued_bytes();
                let done = outbox.write_to(&mut w).unwrap();
                prop_assert_eq!(outbox.queued_bytes() + w.written.len(), expected.len());
                prop_assert_eq!(&unwritten_all(&outbox), &expected[w.written.len()..]);
                if done {
                    break;
                }
                prop_assert!(outbox.queued_bytes() < before);
            }
            prop_assert!(outbox.is_empty());
            prop_assert_eq!(w.written, expected);
        }
    }

    /// Concatenates all unwritten bytes, however many frames are queued.
    fn unwritten_all(outbox: &Outbox) -> Vec<u8> {
        let mut slices = vec![IoSlice::new(&[]); outbox.len()];
        let count = outbox.io_slices(&mut slices);
        assert_eq!(count, outbox.len());
        slices.iter().flat_map(|s| s.to_vec()).collect()
    }
}
