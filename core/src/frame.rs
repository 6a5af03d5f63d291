//! VTP framing: a 4-byte big-endian payload length, then the payload (docs/protocol.md §1).
//!
//! # Theory of operation
//!
//! Every VTP message travels as one *frame*: an unsigned 32-bit big-endian count of the payload
//! bytes, followed by exactly that many payload bytes (VTP V2 §3.2; Comet's Twisted
//! `Int32StringReceiver`, pygcn's `struct.Struct("!I")`). There is no delimiter, checksum or
//! padding. TCP delivers a byte stream, so a single read may hold part of a frame, exactly one
//! frame, or several frames and a part of the next; [`FrameDecoder`] reassembles them.
//!
//! Reading side: feed every chunk read from the socket to [`FrameDecoder::decode`]. Whole frames
//! inside the chunk are handed to the callback straight from the chunk (zero copy). Only the
//! trailing partial frame is copied into a per-connection buffer, and only after its prefix has been
//! checked against the limit, so a bogus prefix never causes a large allocation. A prefix above the
//! limit is a fatal framing error: the decoder is poisoned and the connection should be closed
//! without a reply, as Comet does.
//!
//! Writing side: [`encode`] and [`encode_with`] build a frame as one [`Bytes`], ready to be
//! cloned for every subscriber and queued in an [`Outbox`](crate::outbox::Outbox).
//!
//! Zero-length frames are valid framing (the payload is then not valid XML, which is the
//! message layer's concern).

use std::fmt;

use bytes::Bytes;

/// Default payload limit: 1 MiB.
///
/// Comet's receive limit is 99 999 bytes; real VOEvent packets are 0.5–10 kB, so 1 MiB is ample
/// while still bounding memory per connection (docs/protocol.md §1 "Size limit in practice").
pub const FRAME_LEN_MAX_DEFAULT: u32 = 1 << 20;

/// Length of the prefix.
///
/// The prefix is a big-endian `u32` counting the payload bytes only (VTP V2 §3.2).
pub const PREFIX_LEN: usize = 4;

/// Reassembles frames from a TCP byte stream arriving in arbitrary chunks.
///
/// One decoder serves one connection. It holds at most one partial frame: at most
/// `frame_len_max + 4` bytes, and memory for the payload is reserved only once its length prefix
/// has been read and checked against `frame_len_max`.
///
/// After a prefix above the limit the decoder is *poisoned*: that call and every later call to
/// [`decode`](Self::decode) return the same [`FrameError`] without reading their input. The
/// connection cannot be resynchronised (there is no delimiter), so the caller should close it.
///
/// # Example
///
/// ```
/// use vtp_core::frame::{FrameDecoder, FRAME_LEN_MAX_DEFAULT};
///
/// let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
/// let mut frames = Vec::new();
/// // Two frames, the second split across reads.
/// decoder.decode(b"\0\0\0\x02hi\0\0\0\x05he", |p| frames.push(p.to_vec()))?;
/// decoder.decode(b"llo", |p| frames.push(p.to_vec()))?;
/// assert_eq!(frames, [b"hi".to_vec(), b"hello".to_vec()]);
/// assert!(decoder.is_idle());
/// # Ok::<(), vtp_core::frame::FrameError>(())
/// ```
pub struct FrameDecoder {
    /// Partial frame: a partial prefix, or a whole prefix and a partial payload. Its capacity is
    /// at most `frame_len_max + 4`.
    buf: Vec<u8>,
    /// Largest accepted payload length.
    frame_len_max: u32,
    /// The error that poisoned the decoder, returned by every later call.
    poisoned: Option<FrameError>,
}

impl FrameDecoder {
    /// Creates a decoder accepting payloads of at most `frame_len_max` bytes.
    ///
    /// Use [`FRAME_LEN_MAX_DEFAULT`] unless there is a reason not to; Comet peers never accept
    /// more than 99 999 bytes anyway. A limit above `u32::MAX - 4` is lowered to `u32::MAX - 4` so
    /// that a whole frame's length always fits in a 32-bit `usize`.
    #[must_use]
    pub fn new(frame_len_max: u32) -> Self {
        Self {
            buf: Vec::new(),
            frame_len_max: frame_len_max.min(FRAME_LEN_MAX_CEILING),
            poisoned: None,
        }
    }

    /// Feeds bytes as read from the socket (any chunking: 1 byte, many frames at once).
    ///
    /// Calls `on_frame(payload)` for each complete frame, in order. Whole frames contained in
    /// `input` are passed straight from `input` (zero copy); only a partial frame is copied into
    /// the internal buffer, whose capacity is reserved only after the prefix has been checked
    /// against the limit. The callback never sees a payload longer than the limit. An empty
    /// `input` is allowed and does nothing.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLong`] when a prefix announces more than the limit. The decoder is then
    /// poisoned: every later call returns the same error without reading its input. Frames that
    /// were completed *before* the bad prefix in the same `input` have already been passed to
    /// `on_frame` when the error is returned.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut on_frame: impl FnMut(&[u8]),
    ) -> Result<(), FrameError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let mut input = input;

        // 1. Complete the pending partial frame, if any, from the head of `input`.
        if !self.buf.is_empty() {
            let rest = self.fill_pending(input)?;
            if self.buf.len() == PREFIX_LEN + self.pending_len() {
                on_frame(&self.buf[PREFIX_LEN..]);
                self.recycle_buf();
            }
            input = rest;
            if !self.buf.is_empty() {
                // `input` is exhausted: the frame is still incomplete.
                debug_assert!(input.is_empty());
                return Ok(());
            }
        }

        // 2. Hand out whole frames straight from `input`.
        while let Some(prefix) = input.first_chunk::<PREFIX_LEN>() {
            let len = self.check_prefix(*prefix)?;
            let Some(payload) = input.get(PREFIX_LEN..PREFIX_LEN + len) else {
                break;
            };
            on_frame(payload);
            input = &input[PREFIX_LEN + len..];
        }

        // 3. Keep the trailing partial frame (its prefix, if complete, was checked above).
        if !input.is_empty() {
            let capacity = match input.first_chunk::<PREFIX_LEN>() {
                Some(prefix) => PREFIX_LEN + u32::from_be_bytes(*prefix) as usize,
                None => PREFIX_LEN,
            };
            debug_assert!(input.len() < capacity);
            self.buf.reserve_exact(capacity);
            self.buf.extend_from_slice(input);
        }
        Ok(())
    }

    /// Bytes currently buffered (partial prefix + partial payload).
    ///
    /// Never more than `frame_len_max + 4`.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial frame is pending (useful at EOF: a clean close).
    ///
    /// A poisoned decoder is never idle: its stream ended in a framing error.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.poisoned.is_none()
    }

    /// The error that poisoned the decoder, if any.
    #[must_use]
    pub fn error(&self) -> Option<&FrameError> {
        self.poisoned.as_ref()
    }

    /// The largest payload length this decoder accepts.
    #[must_use]
    pub fn frame_len_max(&self) -> u32 {
        self.frame_len_max
    }

    /// Moves bytes from the head of `input` into the pending partial frame, up to the end of that
    /// frame, and returns the rest of `input`.
    ///
    /// Reserves the payload's capacity as soon as the prefix is complete and checked.
    fn fill_pending<'i>(&mut self, input: &'i [u8]) -> Result<&'i [u8], FrameError> {
        let mut input = input;
        if self.buf.len() < PREFIX_LEN {
            let (head, rest) = input.split_at(input.len().min(PREFIX_LEN - self.buf.len()));
            self.buf.extend_from_slice(head);
            input = rest;
            let Some(prefix) = self.buf.first_chunk::<PREFIX_LEN>() else {
                return Ok(input);
            };
            let len = self.check_prefix(*prefix)?;
            self.buf.reserve_exact(len);
        }
        let missing = PREFIX_LEN + self.pending_len() - self.buf.len();
        let (head, rest) = input.split_at(input.len().min(missing));
        self.buf.extend_from_slice(head);
        Ok(rest)
    }

    /// Payload length announced by the buffered prefix, which must be complete (and checked).
    fn pending_len(&self) -> usize {
        match self.buf.first_chunk::<PREFIX_LEN>() {
            Some(prefix) => u32::from_be_bytes(*prefix) as usize,
            None => 0,
        }
    }

    /// Checks a prefix against the limit, poisoning the decoder when it is exceeded.
    fn check_prefix(&mut self, prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
        let len = u32::from_be_bytes(prefix);
        if len <= self.frame_len_max {
            return Ok(len as usize);
        }
        let err = FrameError::too_long(len, self.frame_len_max);
        self.poisoned = Some(err.clone());
        Err(err)
    }

    /// Empties the buffer after a completed frame, releasing it if it grew large.
    fn recycle_buf(&mut self) {
        if self.buf.capacity() > RETAINED_CAPACITY_MAX {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

impl fmt::Debug for FrameDecoder {
    /// Prints lengths, never the buffered bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buf.len())
            .field("capacity", &self.buf.capacity())
            .field("frame_len_max", &self.frame_len_max)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// A framing error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A received prefix announces more than the limit.
    ///
    /// Fatal for the connection: close it without a reply (Comet does the same above 99 999
    /// bytes). A common cause is a peer writing the prefix little-endian; `swapped` then holds the
    /// plausible length.
    #[error("frame length {len} exceeds the limit of {max} bytes ({})", TooLongAdvice(*swapped))]
    TooLong {
        /// Payload length announced by the prefix.
        len: u32,
        /// The decoder's limit.
        max: u32,
        /// The prefix read little-endian, when that is nonzero and within the limit.
        swapped: Option<u32>,
    },
    /// A payload to send is too long for the 32-bit length prefix.
    #[error(
        "payload of {len} bytes cannot be framed: the length prefix holds at most 4294967295 \
         bytes; split or shrink the message"
    )]
    PayloadTooLong {
        /// Length of the rejected payload.
        len: usize,
    },
}

impl FrameError {
    /// The byte-swapped length when a too-long prefix looks like a little-endian mistake.
    ///
    /// `Some(n)` only for [`FrameError::TooLong`] whose prefix, read little-endian, is a nonzero
    /// length within the limit: 300 bytes sent as `2C 01 00 00` gives `Some(300)`.
    #[must_use]
    pub fn little_endian_hint(&self) -> Option<u32> {
        match self {
            Self::TooLong { swapped, .. } => *swapped,
            Self::PayloadTooLong { .. } => None,
        }
    }

    /// Builds [`FrameError::TooLong`], deriving the little-endian hint.
    fn too_long(len: u32, max: u32) -> Self {
        let swapped = len.swap_bytes();
        Self::TooLong {
            len,
            max,
            swapped: (swapped != 0 && swapped <= max).then_some(swapped),
        }
    }
}

/// The advice part of a [`FrameError::TooLong`] message.
struct TooLongAdvice(Option<u32>);

impl fmt::Display for TooLongAdvice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(swapped) => write!(f, "little-endian prefix? byte-swapped it reads {swapped}"),
            None => f.write_str("raise frame_len_max if the peer really sends frames this large"),
        }
    }
}

/// Encodes one frame into a single [`Bytes`] (prefix + payload, one allocation).
///
/// # Errors
///
/// [`FrameError::PayloadTooLong`] if `payload.len()` exceeds `u32::MAX`.
pub fn encode(payload: &[u8]) -> Result<Bytes, FrameError> {
    let len = payload_len(payload.len())?;
    let mut frame = Vec::with_capacity(PREFIX_LEN + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(Bytes::from(frame))
}

/// Encodes one frame whose payload the caller appends to the buffer after a reserved prefix.
///
/// `build` receives a `Vec<u8>` that already holds a 4-byte placeholder and must only *append*
/// the payload; the prefix is patched afterwards. Message builders use this to write their output
/// straight into the frame, avoiding a second copy. Starts with room for 512 payload bytes; use
/// [`encode_with_capacity`] when the size is known.
///
/// # Errors
///
/// [`FrameError::PayloadTooLong`] if the payload exceeds `u32::MAX` bytes.
///
/// # Panics
///
/// If `build` shortens the buffer below the 4-byte placeholder it was given (a caller bug).
pub fn encode_with(build: impl FnOnce(&mut Vec<u8>)) -> Result<Bytes, FrameError> {
    encode_with_capacity(ENCODE_WITH_CAPACITY_DEFAULT, build)
}

/// Like [`encode_with`], reserving room for `payload_capacity` payload bytes up front.
///
/// The buffer still grows if `build` appends more.
///
/// # Errors
///
/// [`FrameError::PayloadTooLong`] if the payload exceeds `u32::MAX` bytes.
///
/// # Panics
///
/// If `build` shortens the buffer below the 4-byte placeholder it was given (a caller bug).
pub fn encode_with_capacity(
    payload_capacity: usize,
    build: impl FnOnce(&mut Vec<u8>),
) -> Result<Bytes, FrameError> {
    let mut frame = Vec::with_capacity(PREFIX_LEN.saturating_add(payload_capacity));
    frame.extend_from_slice(&[0; PREFIX_LEN]);
    build(&mut frame);
    assert!(
        frame.len() >= PREFIX_LEN,
        "encode_with: the build closure must only append after the 4-byte prefix placeholder"
    );
    let len = payload_len(frame.len() - PREFIX_LEN)?;
    frame[..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(frame))
}

/// Converts a payload length to its prefix value.
fn payload_len(len: usize) -> Result<u32, FrameError> {
    u32::try_from(len).map_err(|_| FrameError::PayloadTooLong { len })
}

/// Highest effective limit, so that `PREFIX_LEN + len` cannot overflow a 32-bit `usize`.
const FRAME_LEN_MAX_CEILING: u32 = u32::MAX - PREFIX_LEN as u32;

/// Reassembly buffers larger than this are freed after their frame completes, so an idle
/// connection that once received a big frame does not keep holding it.
const RETAINED_CAPACITY_MAX: usize = 64 * 1024;

/// Payload capacity [`encode_with`] reserves up front: covers typical transport messages.
const ENCODE_WITH_CAPACITY_DEFAULT: usize = 512;

#[cfg(test)]
mod tests;
