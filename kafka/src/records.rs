//! Bounded decoding of the `records` bytes of a fetch response into [`Item`]s.
//!
//! The batch format (magic 2) is decoded by `kafka_protocol::records`; this module adds the
//! bounds that decoder lacks: it walks the batch headers itself (so a truncated last batch,
//! which brokers send when a fetch hits its size limit, is left for the next fetch), checks
//! each record count against the bytes that could hold it, decompresses with an output bound
//! (gzip, snappy, lz4, zstd: the same crates kafka-protocol uses, but never past
//! [`crate::Bounds::response_max`]) and checks every record's header count before the decoder
//! reserves memory for it. A record whose value is larger than
//! [`crate::Bounds::record_value_max`] is returned as [`Oversize`], never as bytes.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

/// One consumed record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset; commit `offset + 1` once it is handled.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value (empty for a null value).
    pub value: Bytes,
    /// The record's timestamp (create or log-append time), milliseconds since the epoch.
    pub timestamp_ms: i64,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("value_len", &self.value.len())
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

/// A record too large to return: its value exceeded the value bound, or its batch exceeded
/// the response bound (then `size` is that of the whole response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversize {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset; commit `offset + 1` to move past it.
    pub offset: i64,
    /// Its size in bytes (see the type's summary).
    pub size: usize,
}

/// What [`crate::Consumer::poll`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A record.
    Record(Record),
    /// A record that was too large to return.
    Oversize(Oversize),
}

impl Item {
    /// The topic, partition and offset of the item.
    pub fn position(&self) -> (&str, i32, i64) {
        match self {
            Item::Record(r) => (&r.topic, r.partition, r.offset),
            Item::Oversize(o) => (&o.topic, o.partition, o.offset),
        }
    }
}

/// Bytes of a v2 batch header up to and including the record count.
const BATCH_HEADER: usize = 61;
/// Bytes of the batch header counted by its length field (after base offset and length).
const BATCH_OVERHEAD: usize = BATCH_HEADER - 12;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
const RECORD_MIN: usize = 7;

/// What one partition's records decoded to.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) items: Vec<Item>,
    /// The offset to read next: the end of the last batch decoded, when that is past `from`.
    pub(crate) next_offset: Option<i64>,
    /// The base offset of a batch that begins after the offset expected next (`next_offset`,
    /// else `from`): the offsets between are missing from this response. Decoding stopped
    /// there.
    pub(crate) gap: Option<i64>,
    /// The largest batch end at or below `from`: a batch boundary before the position (for a
    /// consumer looking for the batch that holds `from`).
    pub(crate) boundary: Option<i64>,
}

/// Decodes the complete batches of `raw` that hold offsets from `from` on, in one contiguous
/// run: batches that end at or before `from` are skipped (their end is kept as
/// [`Decoded::boundary`]); a batch that begins after the offset expected next ends the run
/// ([`Decoded::gap`]), since a broker may show a later batch before an earlier one is visible
/// (tansu 0.6.0 does under concurrent produce requests), or may not return the batch holding a
/// position in its middle (tansu again). The caller decides when a gap is a real hole.
pub(crate) fn decode(
    topic: &Arc<str>,
    partition: i32,
    mut raw: Bytes,
    from: i64,
    response_max: usize,
    value_max: usize,
) -> Result<Decoded, String> {
    let mut out = Decoded::default();
    let mut expected = from;
    while raw.len() >= 12 {
        let base_offset = i64::from_be_bytes(raw[0..8].try_into().unwrap_or_default());
        let batch_len = i32::from_be_bytes(raw[8..12].try_into().unwrap_or_default());
        let Ok(batch_len) = usize::try_from(batch_len) else {
            return Err(format!(
                "negative batch length {batch_len} at offset {base_offset}"
            ));
        };
        if raw.len() - 12 < batch_len {
            break; // the last batch is cut off at the fetch size: fetch it again later
        }
        if base_offset > expected {
            out.gap = Some(base_offset);
            break;
        }
        let batch = raw.split_to(12 + batch_len);
        if batch_len < BATCH_OVERHEAD {
            return Err(format!(
                "batch of {batch_len} bytes at offset {base_offset}"
            ));
        }
        let magic = batch[16];
        if magic != 2 {
            return Err(format!(
                "message format v{magic} at offset {base_offset}: only v2 record batches (Kafka 0.11+) are supported"
            ));
        }
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap_or_default());
        let count = i32::from_be_bytes(batch[57..61].try_into().unwrap_or_default());
        let batch_end = base_offset
            .saturating_add(i64::from(last_delta))
            .saturating_add(1);
        if batch_end <= from {
            out.boundary = out.boundary.max(Some(batch_end));
            continue; // records already had
        }
        let start = std::mem::replace(&mut expected, batch_end);
        out.next_offset = Some(batch_end);
        if attributes & (1 << 5) != 0 {
            continue; // a control batch (transaction markers)
        }
        let compression = attributes & 7;
        let room = if compression == 0 {
            batch_len - BATCH_OVERHEAD
        } else {
            response_max
        };
        if count < 0 || count as usize > room / RECORD_MIN {
            return Err(format!(
                "batch at offset {base_offset} claims {count} records in {room} bytes"
            ));
        }
        let mut batch = batch;
        // kafka-protocol's decoder takes an `anyhow` error from a custom decompressor.
        let decompress = |buf: &mut Bytes, c: Compression| -> anyhow::Result<Bytes> {
            let plain = decompress(buf, c, response_max).map_err(anyhow::Error::msg)?;
            check_record_headers(&plain, count as usize).map_err(anyhow::Error::msg)?;
            Ok(plain)
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(decompress))
            .map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
        for r in set.records {
            if r.offset < start {
                continue;
            }
            let value = r.value.unwrap_or_default();
            if value.len() > value_max {
                out.items.push(Item::Oversize(Oversize {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset,
                    size: value.len(),
                }));
            } else {
                out.items.push(Item::Record(Record {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset,
                    key: r.key,
                    value,
                    timestamp_ms: r.timestamp,
                }));
            }
        }
    }
    Ok(out)
}

/// Decompresses a batch's records with the output bounded by `max` bytes.
pub(crate) fn decompress(raw: &mut Bytes, c: Compression, max: usize) -> Result<Bytes, String> {
    let limit = max as u64 + 1;
    let mut out = Vec::new();
    let result = match c {
        Compression::None => return Ok(raw.clone()),
        Compression::Gzip => flate2::read::GzDecoder::new(&raw[..])
            .take(limit)
            .read_to_end(&mut out),
        Compression::Zstd => zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|d| d.take(limit).read_to_end(&mut out)),
        Compression::Lz4 => {
            lz4::Decoder::new(&raw[..]).and_then(|d| d.take(limit).read_to_end(&mut out))
        }
        Compression::Snappy => return snappy(raw, max),
    };
    result.map_err(|e| format!("cannot decompress {c:?}: {e}"))?;
    if out.len() > max {
        return Err(format!("{c:?} batch decompresses to more than {max} bytes"));
    }
    Ok(Bytes::from(out))
}

/// Snappy, in the xerial framing Kafka's Java client writes or raw.
fn snappy(raw: &[u8], max: usize) -> Result<Bytes, String> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(b).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + n > max {
            return Err(format!(
                "snappy batch decompresses to more than {max} bytes"
            ));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(b, &mut out[start..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if raw.len() >= 16 && raw.starts_with(MAGIC) {
        let mut rest = &raw[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("snappy: truncated block length".into());
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if rest.len() < n {
                return Err("snappy: truncated block".into());
            }
            block(&rest[..n], &mut out)?;
            rest = &rest[n..];
        }
    } else {
        block(raw, &mut out)?;
    }
    Ok(Bytes::from(out))
}

/// Walks `count` records of a (decompressed) batch and checks that each header count could
/// fit in its record, so the decoder's reservation for headers is bounded by the bytes.
fn check_record_headers(mut b: &[u8], count: usize) -> Result<(), String> {
    for i in 0..count {
        let len = varint(&mut b).ok_or("truncated record length")?;
        let len = usize::try_from(len).map_err(|_| format!("record {i}: negative length"))?;
        if b.len() < len {
            return Err(format!("record {i}: truncated"));
        }
        let (mut rec, rest) = b.split_at(len);
        b = rest;
        rec = rec.get(1..).ok_or("empty record")?; // attributes
        varint(&mut rec).ok_or("timestamp delta")?;
        varint(&mut rec).ok_or("offset delta")?;
        for field in ["key", "value"] {
            let n = varint(&mut rec).ok_or(field)?;
            if n > 0 {
                rec = rec
                    .get(n as usize..)
                    .ok_or(format!("record {i}: {field} truncated"))?;
            }
        }
        let headers = varint(&mut rec).ok_or("header count")?;
        // Each header has at least a key length and a value length.
        if headers < 0 || headers as usize > rec.len() / 2 {
            return Err(format!(
                "record {i}: {headers} headers in {} bytes",
                rec.len()
            ));
        }
    }
    Ok(())
}

/// A zigzag varint (up to 64 bits), advancing `b`.
fn varint(b: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn batch(base: i64, values: &[&[u8]], compression: Compression) -> Bytes {
        let records: Vec<WireRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32, // offset - sequence constant: one batch
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::copy_from_slice(v)),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    fn offsets(d: &Decoded) -> Vec<i64> {
        d.items.iter().map(|i| i.position().2).collect()
    }

    #[test]
    fn every_compression_decodes() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let raw = batch(10, &[b"a", b"bb", b"ccc"], c);
            let d = decode(&topic(), 0, raw, 10, 1 << 20, 1 << 10).unwrap();
            assert_eq!(offsets(&d), [10, 11, 12], "{c:?}");
            assert_eq!(d.next_offset, Some(13));
            let Item::Record(r) = &d.items[2] else {
                panic!("{c:?}")
            };
            assert_eq!(&r.value[..], b"ccc");
            assert_eq!(r.key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(r.timestamp_ms, 1_700_000_000_002);
        }
    }

    #[test]
    fn records_before_the_position_are_skipped() {
        let raw = batch(10, &[b"a", b"b", b"c"], Compression::Zstd);
        let d = decode(&topic(), 0, raw, 12, 1 << 20, 1 << 10).unwrap();
        assert_eq!(offsets(&d), [12]);
    }

    #[test]
    fn a_batch_after_a_hole_ends_the_run_and_names_the_hole() {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        raw.extend_from_slice(&batch(2, &[b"c"], Compression::None));
        raw.extend_from_slice(&batch(9, &[b"j"], Compression::None));
        let d = decode(&topic(), 0, raw.freeze(), 0, 1 << 20, 1 << 10).unwrap();
        assert_eq!(offsets(&d), [0, 1, 2]);
        assert_eq!((d.next_offset, d.gap, d.boundary), (Some(3), Some(9), None));
    }

    #[test]
    fn a_first_batch_after_the_position_is_a_hole_with_nothing_decoded() {
        let raw = batch(7, &[b"h", b"i"], Compression::None);
        let d = decode(&topic(), 0, raw, 4, 1 << 20, 1 << 10).unwrap();
        assert!(d.items.is_empty());
        assert_eq!((d.next_offset, d.gap, d.boundary), (None, Some(7), None));
    }

    #[test]
    fn batches_before_the_position_give_the_boundary() {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        raw.extend_from_slice(&batch(2, &[b"c", b"d"], Compression::None));
        raw.extend_from_slice(&batch(6, &[b"g"], Compression::None));
        let d = decode(&topic(), 0, raw.freeze(), 5, 1 << 20, 1 << 10).unwrap();
        assert!(d.items.is_empty());
        assert_eq!((d.next_offset, d.gap, d.boundary), (None, Some(6), Some(4)));
        // The batch holding the position is decoded from the position on.
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        raw.extend_from_slice(&batch(2, &[b"c", b"d", b"e", b"f"], Compression::Zstd));
        raw.extend_from_slice(&batch(6, &[b"g"], Compression::None));
        let d = decode(&topic(), 0, raw.freeze(), 5, 1 << 20, 1 << 10).unwrap();
        assert_eq!(offsets(&d), [5, 6]);
        assert_eq!((d.next_offset, d.gap, d.boundary), (Some(7), None, Some(2)));
    }

    #[test]
    fn a_value_over_the_bound_is_reported_as_oversize() {
        let big = vec![b'x'; 2000];
        let raw = batch(0, &[b"small", &big, b"after"], Compression::Gzip);
        let d = decode(&topic(), 3, raw, 0, 1 << 20, 1000).unwrap();
        assert_eq!(offsets(&d), [0, 1, 2]);
        assert_eq!(
            d.items[1],
            Item::Oversize(Oversize {
                topic: topic(),
                partition: 3,
                offset: 1,
                size: 2000
            })
        );
        assert!(matches!(d.items[2], Item::Record(_)));
    }

    #[test]
    fn a_cut_off_last_batch_is_left_for_the_next_fetch() {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        let second = batch(2, &[b"c"], Compression::None);
        raw.extend_from_slice(&second[..second.len() - 5]);
        let d = decode(&topic(), 0, raw.freeze(), 0, 1 << 20, 1 << 10).unwrap();
        assert_eq!(offsets(&d), [0, 1]);
        assert_eq!(d.next_offset, Some(2));
    }

    #[test]
    fn a_decompression_bomb_is_stopped_at_the_bound() {
        let big = vec![0u8; 100_000];
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let raw = batch(0, &[&big], c);
            assert!(raw.len() < 20_000, "{c:?} compresses");
            let err = decode(&topic(), 0, raw, 0, 50_000, 1 << 20).unwrap_err();
            assert!(err.contains("more than 50000 bytes"), "{c:?}: {err}");
        }
    }

    #[test]
    fn a_hostile_record_count_is_refused_before_decoding() {
        let mut raw = BytesMut::from(&batch(0, &[b"a"], Compression::None)[..]);
        raw[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let err = decode(&topic(), 0, raw.freeze(), 0, 1 << 20, 1 << 10).unwrap_err();
        assert!(err.contains("claims"), "{err}");
    }

    #[test]
    fn a_hostile_header_count_is_refused_before_decoding() {
        // One uncompressed record whose header count (its last byte, a zigzag varint) is
        // replaced by a huge one: the CRC is recomputed so only the count is wrong.
        let raw = batch(0, &[b"a"], Compression::None);
        let mut records = raw[61..].to_vec();
        records.pop();
        records.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // zigzag of i32::MAX
        records[0] += 8; // the record length (zigzag) grows by 4
        let mut out = raw[..61].to_vec();
        out.extend_from_slice(&records);
        let batch_len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&topic(), 0, Bytes::from(out), 0, 1 << 20, 1 << 10).unwrap_err();
        assert!(err.contains("headers"), "{err}");
    }

    #[test]
    fn old_message_formats_and_garbage_are_errors_not_panics() {
        let mut raw = BytesMut::from(&batch(0, &[b"a"], Compression::None)[..]);
        raw[16] = 1;
        assert!(decode(&topic(), 0, raw.freeze(), 0, 1 << 20, 1 << 10).is_err());
        for n in 0..200u8 {
            let junk: Vec<u8> = (0..100u32).map(|i| (i as u8).wrapping_mul(n)).collect();
            let _ = decode(&topic(), 0, Bytes::from(junk), 0, 1 << 16, 1 << 10);
        }
    }

    /// CRC-32C (Castagnoli), bitwise, for the test that rewrites a batch.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
