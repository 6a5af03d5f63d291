//! Tests of framing: encoding, the length limit and its little-endian hint, zero-copy decoding
//! and buffer release, errors after good frames, and property tests over any chunking and
//! arbitrary bytes.

use super::*;
use proptest::prelude::*;

/// Decodes `chunks` in order, collecting payloads; returns the first error too.
fn decode_all<'c>(
    decoder: &mut FrameDecoder,
    chunks: impl IntoIterator<Item = &'c [u8]>,
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut frames = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.decode(chunk, |p| frames.push(p.to_vec())) {
            return (frames, Some(err));
        }
    }
    (frames, None)
}

/// Concatenated frames of `payloads`.
fn stream(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads
        .iter()
        .flat_map(|p| encode(p).expect("small payload").to_vec())
        .collect()
}

/// Splits `bytes` at the given points (sorted, clamped, deduplicated).
fn split_at_points(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points.iter().map(|&p| p % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut start = 0;
    cuts.into_iter()
        .map(|end| {
            let chunk = bytes[start..end].to_vec();
            start = end;
            chunk
        })
        .collect()
}

#[test]
fn encode_writes_big_endian_prefix() {
    let frame = encode(b"hello").unwrap();
    assert_eq!(&frame[..], b"\0\0\0\x05hello");
    assert_eq!(&encode(b"").unwrap()[..], b"\0\0\0\0");
}

#[test]
fn encode_with_patches_prefix() {
    let frame = encode_with(|buf| buf.extend_from_slice(&[7; 300])).unwrap();
    assert_eq!(&frame[..PREFIX_LEN], &[0x00, 0x00, 0x01, 0x2C]);
    assert_eq!(frame.len(), PREFIX_LEN + 300);
    assert!(frame[PREFIX_LEN..].iter().all(|&b| b == 7));
    let empty = encode_with_capacity(0, |_| {}).unwrap();
    assert_eq!(&empty[..], b"\0\0\0\0");
}

#[test]
#[should_panic(expected = "prefix placeholder")]
fn encode_with_rejects_truncated_placeholder() {
    let _ = encode_with(Vec::clear);
}

#[test]
fn payload_too_long_is_reported() {
    // A real 4 GiB payload is too big for a unit test; check the conversion directly.
    let len = u32::MAX as usize + 1;
    assert_eq!(payload_len(len), Err(FrameError::PayloadTooLong { len }));
    assert_eq!(payload_len(u32::MAX as usize), Ok(u32::MAX));
    let msg = FrameError::PayloadTooLong { len }.to_string();
    assert!(msg.contains("4294967296"), "{msg}");
}

#[test]
fn limit_exactly_at_max_is_accepted() {
    let mut decoder = FrameDecoder::new(8);
    let (frames, err) = decode_all(&mut decoder, [&b"\0\0\0\x0812345678"[..]]);
    assert_eq!(err, None);
    assert_eq!(frames, [b"12345678".to_vec()]);
    // Also when the frame is reassembled byte by byte.
    let bytes = b"\0\0\0\x08abcdefgh";
    let (frames, err) = decode_all(&mut decoder, bytes.chunks(1));
    assert_eq!(err, None);
    assert_eq!(frames, [b"abcdefgh".to_vec()]);
    assert!(decoder.buf.capacity() <= 8 + PREFIX_LEN);
    assert!(decoder.is_idle());
}

#[test]
fn max_plus_one_is_rejected_before_payload_arrives() {
    let max = FRAME_LEN_MAX_DEFAULT;
    let prefix = (max + 1).to_be_bytes();
    // Prefix in one read: nothing is buffered at all.
    let mut decoder = FrameDecoder::new(max);
    let (frames, err) = decode_all(&mut decoder, [&prefix[..]]);
    assert!(frames.is_empty());
    let expected = FrameError::TooLong {
        len: max + 1,
        max,
        swapped: None,
    };
    assert_eq!(err, Some(expected.clone()));
    assert_eq!(decoder.buffered(), 0);
    assert!(decoder.buf.capacity() <= 8);
    assert!(!decoder.is_idle());
    // Prefix byte by byte: only the 4 prefix bytes are ever held.
    let mut decoder = FrameDecoder::new(max);
    let (frames, err) = decode_all(&mut decoder, prefix.chunks(1));
    assert!(frames.is_empty());
    assert_eq!(err, Some(expected.clone()));
    assert_eq!(decoder.buffered(), PREFIX_LEN);
    assert!(decoder.buf.capacity() <= 8, "{}", decoder.buf.capacity());
    // Poisoned: later input is ignored and the same error comes back.
    let (frames, err) = decode_all(&mut decoder, [&b"\0\0\0\0"[..]]);
    assert!(frames.is_empty());
    assert_eq!(err, Some(expected));
    assert_eq!(decoder.buffered(), PREFIX_LEN);
}

#[test]
fn little_endian_300_gives_hint() {
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
    let err = decoder
        .decode(&[0x2C, 0x01, 0x00, 0x00, b'<'], |_| {
            panic!("no frame expected")
        })
        .unwrap_err();
    assert_eq!(err.little_endian_hint(), Some(300));
    assert_eq!(
        err.to_string(),
        "frame length 738263040 exceeds the limit of 1048576 bytes \
         (little-endian prefix? byte-swapped it reads 300)"
    );
}

#[test]
fn no_hint_when_swapped_value_does_not_fit_or_is_zero() {
    // 0x01000000 swaps to 1: hint. 0x7F000001 swaps to 0x0100007F: above the limit, no hint.
    assert_eq!(
        FrameError::too_long(0x0100_0000, 100).little_endian_hint(),
        Some(1)
    );
    let err = FrameError::too_long(0x7F00_0001, FRAME_LEN_MAX_DEFAULT);
    assert_eq!(err.little_endian_hint(), None);
    assert!(err.to_string().contains("raise frame_len_max"), "{err}");
    // A limit of zero: any nonzero prefix swaps to nonzero > 0, so no hint.
    assert_eq!(
        FrameError::too_long(0x0100_0000, 0).little_endian_hint(),
        None
    );
    let oversize = FrameError::PayloadTooLong { len: 1 };
    assert_eq!(oversize.little_endian_hint(), None);
}

#[test]
fn zero_length_frame_gives_empty_payload() {
    let mut decoder = FrameDecoder::new(0);
    let (frames, err) = decode_all(&mut decoder, [&b"\0\0\0\0\0\0"[..], &b"\0\0"[..]]);
    assert_eq!(err, None);
    assert_eq!(frames, [Vec::<u8>::new(), Vec::new()]);
    assert!(decoder.is_idle());
    // Limit zero still rejects a one-byte frame.
    let (_, err) = decode_all(&mut decoder, [&b"\0\0\0\x01x"[..]]);
    assert!(matches!(
        err,
        Some(FrameError::TooLong { len: 1, max: 0, .. })
    ));
}

#[test]
fn many_frames_in_one_read_are_zero_copy() {
    let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i)]).collect();
    let bytes = stream(&payloads);
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
    let range = bytes.as_ptr_range();
    let mut seen = Vec::new();
    decoder
        .decode(&bytes, |p| {
            // Whole frames are slices of the input itself.
            assert!(range.start <= p.as_ptr() && p.as_ptr() <= range.end);
            seen.push(p.to_vec());
        })
        .unwrap();
    assert_eq!(seen, payloads);
    assert!(decoder.is_idle());
    assert_eq!(decoder.buf.capacity(), 0, "nothing was buffered");
}

#[test]
fn partial_frame_reserves_exactly_its_length() {
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
    let mut bytes = encode(b"one").unwrap().to_vec();
    bytes.extend_from_slice(&encode(&[9; 1000]).unwrap()[..10]);
    let (frames, err) = decode_all(&mut decoder, [&bytes[..]]);
    assert_eq!((frames, err), (vec![b"one".to_vec()], None));
    assert_eq!(decoder.buffered(), 10);
    assert_eq!(decoder.buf.capacity(), PREFIX_LEN + 1000);
    assert!(!decoder.is_idle());
    let (frames, err) = decode_all(&mut decoder, [&[9; 994][..]]);
    assert_eq!((frames, err), (vec![vec![9; 1000]], None));
    assert!(decoder.is_idle());
}

#[test]
fn large_buffer_is_released_after_its_frame() {
    let payload = vec![1; RETAINED_CAPACITY_MAX * 2];
    let bytes = encode(&payload).unwrap();
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
    let (frames, err) = decode_all(&mut decoder, bytes.chunks(4096));
    assert_eq!((frames, err), (vec![payload], None));
    assert_eq!(decoder.buf.capacity(), 0);
}

#[test]
fn frames_before_bad_prefix_are_delivered() {
    let mut bytes = stream(&[b"a".to_vec(), b"bc".to_vec()]);
    bytes.extend_from_slice(&[0x2C, 0x01, 0x00, 0x00]);
    bytes.extend_from_slice(&encode(b"never").unwrap());
    let mut decoder = FrameDecoder::new(100);
    let (frames, err) = decode_all(&mut decoder, [&bytes[..]]);
    assert_eq!(frames, [b"a".to_vec(), b"bc".to_vec()]);
    // 300 is above this limit of 100, so no little-endian hint.
    assert_eq!(err.as_ref().and_then(FrameError::little_endian_hint), None);
    assert!(matches!(
        err,
        Some(FrameError::TooLong {
            len: 0x2C01_0000,
            max: 100,
            ..
        })
    ));
    assert_eq!(decoder.error(), err.as_ref());
}

#[test]
fn pending_frame_completes_then_bad_prefix_follows() {
    let mut decoder = FrameDecoder::new(10);
    let mut frames = Vec::new();
    decoder
        .decode(b"\0\0\0\x03a", |p| frames.push(p.to_vec()))
        .unwrap();
    let err = decoder
        .decode(b"bc\0\0\0\x0B", |p| frames.push(p.to_vec()))
        .unwrap_err();
    assert_eq!(frames, [b"abc".to_vec()]);
    assert_eq!(err, FrameError::too_long(11, 10));
}

#[test]
fn debug_prints_lengths_not_bytes() {
    let mut decoder = FrameDecoder::new(100);
    decoder.decode(b"\0\0\0\x06secre", |_| {}).unwrap();
    let debug = format!("{decoder:?}");
    assert!(debug.contains("buffered: 9"), "{debug}");
    assert!(
        !debug.contains("secre") && !debug.contains("115"),
        "{debug}"
    );
}

proptest! {
    #[test]
    fn any_chunking_gives_same_frames(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 0..20),
        points in prop::collection::vec(any::<usize>(), 0..64),
        one_byte in any::<bool>(),
    ) {
        let bytes = stream(&payloads);
        let chunks = if one_byte {
            bytes.chunks(1).map(<[u8]>::to_vec).collect()
        } else {
            split_at_points(&bytes, &points)
        };
        let mut decoder = FrameDecoder::new(2000);
        let (frames, err) = decode_all(&mut decoder, chunks.iter().map(Vec::as_slice));
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames, payloads);
        prop_assert!(decoder.is_idle());
        prop_assert!(decoder.buf.capacity() <= 2000 + PREFIX_LEN);
    }

    #[test]
    fn encode_decode_round_trip(payload in prop::collection::vec(any::<u8>(), 0..5000)) {
        let framed = encode(&payload).unwrap();
        let built = encode_with(|buf| buf.extend_from_slice(&payload)).unwrap();
        prop_assert_eq!(&framed, &built);
        prop_assert_eq!(framed.len(), PREFIX_LEN + payload.len());
        let mut decoder = FrameDecoder::new(5000);
        let (frames, err) = decode_all(&mut decoder, [&framed[..]]);
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames, vec![payload]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..40),
        // Small prefixes so frames within the limit are common, not just instant errors.
        small_prefixes in any::<bool>(),
        limit in 0u32..64,
    ) {
        let mut decoder = FrameDecoder::new(limit);
        let mut first_err: Option<FrameError> = None;
        for mut chunk in chunks {
            if small_prefixes && chunk.len() >= 3 {
                chunk[..3].fill(0);
            }
            let mut called = false;
            let result = decoder.decode(&chunk, |p| {
                called = true;
                assert!(p.len() <= limit as usize);
            });
            prop_assert!(decoder.buffered() <= limit as usize + PREFIX_LEN);
            prop_assert!(decoder.buf.capacity() <= limit as usize + PREFIX_LEN);
            match (&first_err, result) {
                (None, Ok(())) => {}
                (None, Err(err)) => {
                    let expected_error =
                        matches!(err, FrameError::TooLong { len, max, .. } if len > max && max == limit);
                    prop_assert!(expected_error, "unexpected error {:?}", err);
                    first_err = Some(err);
                }
                (Some(poison), result) => {
                    prop_assert!(!called, "poisoned decoder delivered a frame");
                    prop_assert_eq!(result, Err(poison.clone()));
                    prop_assert!(!decoder.is_idle());
                }
            }
        }
    }
}
