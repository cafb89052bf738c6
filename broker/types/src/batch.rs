//! Records and the record batch codec: the bytes that are replicated, stored and verified.
//!
//! A batch is a fixed header followed by a payload of records:
//!
//! ```text
//! offset size field
//!   0     1   magic (format version, 1)
//!   1     1   attributes (reserved, 0)
//!   2     2   reserved (0)
//!   4     4   record_count      u32 LE
//!   8     8   base_offset       u64 LE   stamped by the log when the batch is appended
//!  16     8   first_timestamp   i64 LE   milliseconds since the Unix epoch
//!  24     8   max_timestamp     i64 LE
//!  32     4   payload_len       u32 LE
//!  36     4   crc32c            u32 LE   CRC-32C (Castagnoli) of the payload
//!  40     …   payload: record_count records
//! ```
//!
//! Each record is `timestamp_delta` (zig-zag varint, relative to `first_timestamp`), the key as a
//! zig-zag varint length (-1 for no key) plus bytes, the value as a varint length plus bytes, and
//! a varint header count followed by that many (varint length + UTF-8 key, varint length +
//! value) pairs. Record `i` of a batch has offset `base_offset + i`.
//!
//! As in Kafka, the CRC covers the payload but not the header, so the log can stamp
//! `base_offset` at append time without recomputing it; the header fields are checked against
//! the payload on every parse.

use bytes::{Bytes, BytesMut};

use crate::names::Offset;
use crate::varint;

/// Length of the fixed batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 40;
const MAGIC: u8 = 1;
const BASE_OFFSET_AT: usize = 8;

/// A record header: a UTF-8 key and an opaque value, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value.
    pub value: Bytes,
}

/// One record: an optional key, a value, headers and a timestamp in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partitioning and compaction key; `None` is distinct from an empty key.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Application headers, in the order they were given.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Record {
    /// Bytes this record occupies in a batch payload, a bound used for size limits.
    pub fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len() + 20)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len() + headers + 40
    }
}

/// Size limits applied when encoding a batch from untrusted input.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Largest single record (key + value + headers), in bytes.
    pub max_record_bytes: usize,
    /// Largest encoded batch, header included, in bytes.
    pub max_batch_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why a batch could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A batch must hold at least one record.
    #[error("a batch must contain at least one record")]
    Empty,
    /// One record is larger than the limit.
    #[error("record {index} is {size} bytes; the limit is {limit}")]
    RecordTooLarge {
        /// Position of the record in the request.
        index: usize,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The whole batch is larger than the limit.
    #[error("the batch is {size} bytes; the limit is {limit}")]
    BatchTooLarge {
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The stored checksum does not match the payload: the bytes were damaged.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC of the payload as read.
        computed: u32,
    },
    /// The bytes are not a well-formed batch.
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Number of records in the batch.
    pub record_count: u32,
    /// Offset of the first record (0 until the log stamps it).
    pub base_offset: Offset,
    /// Timestamp of the first record.
    pub first_timestamp_ms: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
}

impl BatchHeader {
    /// Offset one past the last record of the batch.
    pub fn next_offset(&self) -> Offset {
        self.base_offset.plus(u64::from(self.record_count))
    }
}

/// An encoded batch whose header and checksum were verified (or that was just encoded).
///
/// Cloning is cheap: the bytes are reference counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl EncodedBatch {
    /// Encodes `records` into a batch, refusing empty input and anything over `limits`.
    pub fn encode(records: &[Record], limits: BatchLimits) -> Result<Self, BatchError> {
        let first = records.first().ok_or(BatchError::Empty)?;
        let record_count = u32::try_from(records.len()).map_err(|_| BatchError::BatchTooLarge {
            size: records.len(),
            limit: limits.max_batch_bytes,
        })?;
        let first_ts = first.timestamp_ms;
        let mut max_ts = first_ts;
        let mut buf = Vec::with_capacity(
            BATCH_HEADER_LEN
                + records
                    .iter()
                    .map(Record::encoded_len_hint)
                    .sum::<usize>()
                    .min(limits.max_batch_bytes),
        );
        buf.resize(BATCH_HEADER_LEN, 0);
        for (index, record) in records.iter().enumerate() {
            let start = buf.len();
            max_ts = max_ts.max(record.timestamp_ms);
            varint::put_i64(&mut buf, record.timestamp_ms.wrapping_sub(first_ts));
            match &record.key {
                None => varint::put_i64(&mut buf, -1),
                Some(key) => {
                    varint::put_i64(&mut buf, key.len() as i64);
                    buf.extend_from_slice(key);
                }
            }
            varint::put_u64(&mut buf, record.value.len() as u64);
            buf.extend_from_slice(&record.value);
            varint::put_u64(&mut buf, record.headers.len() as u64);
            for header in &record.headers {
                varint::put_u64(&mut buf, header.key.len() as u64);
                buf.extend_from_slice(header.key.as_bytes());
                varint::put_u64(&mut buf, header.value.len() as u64);
                buf.extend_from_slice(&header.value);
            }
            let size = buf.len() - start;
            if size > limits.max_record_bytes {
                return Err(BatchError::RecordTooLarge {
                    index,
                    size,
                    limit: limits.max_record_bytes,
                });
            }
            if buf.len() > limits.max_batch_bytes {
                return Err(BatchError::BatchTooLarge {
                    size: buf.len(),
                    limit: limits.max_batch_bytes,
                });
            }
        }
        let payload_len = u32::try_from(buf.len() - BATCH_HEADER_LEN)
            .map_err(|_| BatchError::Malformed("payload over 4 GiB"))?;
        let header = BatchHeader {
            record_count,
            base_offset: Offset(0),
            first_timestamp_ms: first_ts,
            max_timestamp_ms: max_ts,
            payload_len,
            crc: crc32c::crc32c(&buf[BATCH_HEADER_LEN..]),
        };
        write_header(&mut buf[..BATCH_HEADER_LEN], &header);
        Ok(Self {
            bytes: Bytes::from(buf),
            header,
        })
    }

    /// Parses and verifies a batch: header consistency, CRC, and that every record decodes.
    ///
    /// This is the gate for bytes that come from disk or the network: anything that passes can
    /// be served; anything that fails is corruption.
    pub fn verify(bytes: Bytes) -> Result<Self, BatchError> {
        let view = BatchView::parse(&bytes)?;
        let mut count = 0u32;
        for record in view.records() {
            record?;
            count += 1;
        }
        if count != view.header.record_count {
            return Err(BatchError::Malformed(
                "record count does not match the payload",
            ));
        }
        Ok(Self {
            header: view.header,
            bytes,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The encoded bytes, header included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the batch, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// A copy of this batch with `base_offset` written into its header.
    ///
    /// The CRC does not cover the header, so stamping keeps the batch valid.
    pub fn with_base_offset(&self, base_offset: Offset) -> EncodedBatch {
        let mut bytes = BytesMut::from(&self.bytes[..]);
        bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.0.to_le_bytes());
        EncodedBatch {
            bytes: bytes.freeze(),
            header: BatchHeader {
                base_offset,
                ..self.header
            },
        }
    }

    /// The records with their offsets.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            payload: &self.bytes[BATCH_HEADER_LEN..],
            header: self.header,
            next_index: 0,
        }
    }
}

impl serde::Serialize for EncodedBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

/// Deserialising verifies the batch, so bytes from a peer or a file are checked at the boundary.
impl<'de> serde::Deserialize<'de> for EncodedBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_buf::ByteBuf = serde::Deserialize::deserialize(deserializer)?;
        EncodedBatch::verify(Bytes::from(bytes.0)).map_err(serde::de::Error::custom)
    }
}

mod serde_bytes_buf {
    //! A minimal owned byte buffer that deserialises from either a byte string or a sequence.
    use serde::de::{SeqAccess, Visitor};

    pub(super) struct ByteBuf(pub(super) Vec<u8>);

    impl<'de> serde::Deserialize<'de> for ByteBuf {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an encoded record batch")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                    while let Some(b) = seq.next_element()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

/// A borrowed view of a batch whose header and CRC were checked (records decode lazily).
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// The decoded header.
    pub header: BatchHeader,
    payload: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Checks the header and the CRC of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let header = read_header(bytes)?;
        let payload = &bytes[BATCH_HEADER_LEN..];
        if payload.len() != header.payload_len as usize {
            return Err(BatchError::Malformed(
                "payload length does not match the header",
            ));
        }
        let computed = crc32c::crc32c(payload);
        if computed != header.crc {
            return Err(BatchError::ChecksumMismatch {
                stored: header.crc,
                computed,
            });
        }
        if header.record_count == 0 {
            return Err(BatchError::Empty);
        }
        Ok(Self { header, payload })
    }

    /// The records with their offsets.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            payload: self.payload,
            header: self.header,
            next_index: 0,
        }
    }
}

/// Decodes the records of a batch in order, yielding `(offset, record)`.
#[derive(Debug)]
pub struct RecordIter<'a> {
    payload: &'a [u8],
    header: BatchHeader,
    next_index: u32,
}

impl Iterator for RecordIter<'_> {
    type Item = Result<(Offset, Record), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_index >= self.header.record_count {
            return None;
        }
        let offset = self.header.base_offset.plus(u64::from(self.next_index));
        self.next_index += 1;
        let item = decode_record(&mut self.payload, self.header.first_timestamp_ms);
        if item.is_err() {
            // A malformed record makes the rest of the payload meaningless.
            self.next_index = self.header.record_count;
        }
        Some(item.map(|record| (offset, record)))
    }
}

fn decode_record(buf: &mut &[u8], first_ts: i64) -> Result<Record, BatchError> {
    let delta = varint::get_i64(buf).ok_or(BatchError::Malformed("truncated timestamp"))?;
    let key_len = varint::get_i64(buf).ok_or(BatchError::Malformed("truncated key length"))?;
    let key = match key_len {
        -1 => None,
        n if n >= 0 => Some(take(buf, n as u64, "key")?),
        _ => return Err(BatchError::Malformed("negative key length")),
    };
    let value_len = varint::get_u64(buf).ok_or(BatchError::Malformed("truncated value length"))?;
    let value = take(buf, value_len, "value")?;
    let header_count =
        varint::get_u64(buf).ok_or(BatchError::Malformed("truncated header count"))?;
    let mut headers = Vec::new();
    for _ in 0..header_count {
        let key_len =
            varint::get_u64(buf).ok_or(BatchError::Malformed("truncated header key length"))?;
        let key = take(buf, key_len, "header key")?;
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| BatchError::Malformed("header key is not UTF-8"))?;
        let value_len =
            varint::get_u64(buf).ok_or(BatchError::Malformed("truncated header value length"))?;
        let value = take(buf, value_len, "header value")?;
        headers.push(Header { key, value });
    }
    Ok(Record {
        key,
        value,
        headers,
        timestamp_ms: first_ts.wrapping_add(delta),
    })
}

fn take(buf: &mut &[u8], len: u64, what: &'static str) -> Result<Bytes, BatchError> {
    let len = usize::try_from(len).map_err(|_| BatchError::Malformed(what))?;
    if buf.len() < len {
        return Err(BatchError::Malformed(what));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(Bytes::copy_from_slice(head))
}

fn write_header(out: &mut [u8], h: &BatchHeader) {
    out[0] = MAGIC;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&h.record_count.to_le_bytes());
    out[8..16].copy_from_slice(&h.base_offset.0.to_le_bytes());
    out[16..24].copy_from_slice(&h.first_timestamp_ms.to_le_bytes());
    out[24..32].copy_from_slice(&h.max_timestamp_ms.to_le_bytes());
    out[32..36].copy_from_slice(&h.payload_len.to_le_bytes());
    out[36..40].copy_from_slice(&h.crc.to_le_bytes());
}

fn read_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = bytes
        .get(..BATCH_HEADER_LEN)
        .ok_or(BatchError::Malformed("shorter than a batch header"))?;
    if h[0] != MAGIC {
        return Err(BatchError::Malformed("unknown batch format version"));
    }
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(BatchHeader {
        record_count: u32_at(4),
        base_offset: Offset(u64_at(8)),
        first_timestamp_ms: u64_at(16) as i64,
        max_timestamp_ms: u64_at(24) as i64,
        payload_len: u32_at(32),
        crc: u32_at(36),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, value: &str, ts: i64) -> Record {
        Record {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn encode_verify_round_trip_keeps_every_field() {
        let records = vec![
            record(Some("k1"), "one", 1_000),
            record(None, "two", 900),
            record(Some(""), "", 5_000),
        ];
        let batch = EncodedBatch::encode(&records, BatchLimits::default()).unwrap();
        let stamped = batch.with_base_offset(Offset(42));
        let verified = EncodedBatch::verify(stamped.bytes().clone()).unwrap();
        assert_eq!(verified.header().record_count, 3);
        assert_eq!(verified.header().base_offset, Offset(42));
        assert_eq!(verified.header().max_timestamp_ms, 5_000);
        assert_eq!(verified.header().next_offset(), Offset(45));
        let decoded: Vec<_> = verified.records().map(Result::unwrap).collect();
        assert_eq!(decoded.len(), 3);
        for (i, (offset, rec)) in decoded.iter().enumerate() {
            assert_eq!(*offset, Offset(42 + i as u64));
            assert_eq!(rec, &records[i]);
        }
    }

    #[test]
    fn a_flipped_payload_bit_is_a_checksum_error() {
        let batch =
            EncodedBatch::encode(&[record(Some("k"), "value", 1)], BatchLimits::default()).unwrap();
        let mut bytes = batch.bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            EncodedBatch::verify(Bytes::from(bytes)),
            Err(BatchError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_bytes_are_malformed_not_panics() {
        let batch =
            EncodedBatch::encode(&[record(Some("k"), "value", 1)], BatchLimits::default()).unwrap();
        for cut in 0..batch.bytes().len() {
            assert!(EncodedBatch::verify(batch.bytes().slice(..cut)).is_err());
        }
        assert!(EncodedBatch::verify(Bytes::from_static(&[0xff; 64])).is_err());
    }

    #[test]
    fn limits_are_enforced_and_name_the_record() {
        let limits = BatchLimits {
            max_record_bytes: 100,
            max_batch_bytes: 1_000,
        };
        let big = record(None, &"x".repeat(200), 0);
        assert_eq!(
            EncodedBatch::encode(&[record(None, "a", 0), big], limits).unwrap_err(),
            BatchError::RecordTooLarge {
                index: 1,
                size: 209,
                limit: 100
            }
        );
        let many: Vec<_> = (0..50).map(|_| record(None, &"y".repeat(50), 0)).collect();
        assert!(matches!(
            EncodedBatch::encode(&many, limits),
            Err(BatchError::BatchTooLarge { .. })
        ));
        assert_eq!(
            EncodedBatch::encode(&[], limits).unwrap_err(),
            BatchError::Empty
        );
    }
}
