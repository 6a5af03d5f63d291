//! `frame_decoder`: reassembly under random chunking, checked against a reference decoder.
//!
//! Input format: byte 0 picks the limit from [`LIMITS`]; byte 1 (mod 17) is the number `n` of
//! cut bytes that follow; each cut byte is the length of one chunk (0 gives an empty read), and
//! the rest of the stream is the final chunk. The stream is everything after the cut bytes.

use std::ops::Range;

use vtp_core::frame::{self, FRAME_LEN_MAX_DEFAULT, FrameDecoder, FrameError, PREFIX_LEN};

use super::Bytes;

/// Frame limits to choose from: the default, the degenerate 0, and small ones that make
/// "too long" and "exactly the limit" cheap to reach.
pub(crate) const LIMITS: [u32; 8] = [FRAME_LEN_MAX_DEFAULT, 0, 1, 7, 64, 255, 4096, 65_535];

/// The fuzz body.
pub(crate) fn frame_decoder(data: &[u8]) {
    let mut input = Bytes::new(data);
    let limit = LIMITS[usize::from(input.byte()) % LIMITS.len()];
    let cuts = input.byte() % 17;
    let sizes = input.take(usize::from(cuts));
    let stream = input.rest();
    let expected = reference(stream, limit);

    let mut decoder = FrameDecoder::new(limit);
    let mut rest = stream;
    let mut delivered = 0;
    let mut error: Option<FrameError> = None;
    // The last "size" takes whatever is left (possibly nothing: an empty read is allowed).
    for size in sizes.iter().map(|&s| usize::from(s)).chain([usize::MAX]) {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let before = delivered;
        let result = decoder.decode(chunk, |payload| {
            assert!(payload.len() <= limit as usize, "payload over the limit");
            let want = expected
                .frames
                .get(delivered)
                .unwrap_or_else(|| panic!("extra frame #{delivered}"));
            assert_eq!(payload, &stream[want.clone()], "frame #{delivered} differs");
            delivered += 1;
        });
        match (result, &error) {
            (Ok(()), None) => {}
            (Err(e), None) => {
                let want = expected.error.expect("the reference decoder saw no error");
                check_error(&e, want, limit);
                assert_eq!(
                    delivered,
                    expected.frames.len(),
                    "frames before the bad prefix"
                );
                error = Some(e);
            }
            (Err(e), Some(first)) => {
                assert_eq!(&e, first, "a poisoned decoder returns its first error");
                assert_eq!(delivered, before, "a poisoned decoder delivered a frame");
            }
            (Ok(()), Some(_)) => panic!("a poisoned decoder accepted input"),
        }
        assert!(decoder.buffered() <= limit as usize + PREFIX_LEN);
        assert_eq!(decoder.frame_len_max(), limit);
    }

    assert_eq!(delivered, expected.frames.len(), "missing frames");
    match error {
        Some(e) => {
            assert_eq!(decoder.error(), Some(&e));
            assert!(!decoder.is_idle());
        }
        None => {
            assert!(expected.error.is_none(), "the decoder missed a bad prefix");
            assert_eq!(decoder.error(), None);
            assert_eq!(decoder.buffered(), stream.len() - expected.consumed);
            assert_eq!(decoder.is_idle(), decoder.buffered() == 0);
        }
    }
    // Re-encoding each payload gives back its bytes on the wire.
    for range in &expected.frames {
        let framed = frame::encode(&stream[range.clone()]).expect("small payload");
        assert_eq!(&framed[..], &stream[range.start - PREFIX_LEN..range.end]);
    }
}

/// What a decoder must make of a whole stream.
struct Expected {
    /// Payload spans, in order.
    frames: Vec<Range<usize>>,
    /// The first prefix above the limit, if any.
    error: Option<u32>,
    /// Bytes making up the complete frames.
    consumed: usize,
}

/// The obvious decoder: walk the stream prefix by prefix.
fn reference(stream: &[u8], limit: u32) -> Expected {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(prefix) = stream[at..].first_chunk::<PREFIX_LEN>() {
        let len = u32::from_be_bytes(*prefix);
        if len > limit {
            return Expected {
                frames,
                error: Some(len),
                consumed: at,
            };
        }
        let start = at + PREFIX_LEN;
        let end = start + len as usize;
        if end > stream.len() {
            break;
        }
        frames.push(start..end);
        at = end;
    }
    Expected {
        frames,
        error: None,
        consumed: at,
    }
}

fn check_error(e: &FrameError, want_len: u32, limit: u32) {
    match *e {
        FrameError::TooLong { len, max, swapped } => {
            assert_eq!((len, max), (want_len, limit));
            let s = len.swap_bytes();
            assert_eq!(swapped, (s != 0 && s <= limit).then_some(s));
            assert_eq!(e.little_endian_hint(), swapped);
        }
        ref other => panic!("unexpected error {other:?}"),
    }
    assert!(!e.to_string().is_empty());
}
