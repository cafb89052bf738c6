//! Records and the record batch codec: Kafka's RecordBatch v2 (magic 2), bit for bit.
//!
//! A batch is the unit that is produced, replicated, stored and fetched. Its header (61 bytes,
//! big-endian) is laid out in `header.rs`, its records (varints, as Kafka writes them) in
//! `record.rs`. Any Kafka client library's v2 decoder reads what Weir stores, and a batch
//! any of them encodes (uncompressed) is what Weir stores.
//!
//! The CRC-32C covers everything from the attributes to the end, but not the base offset, the
//! batch length, the partition leader epoch or the magic byte: the log stamps the base offset
//! and leader epoch at append time without touching what the producer's CRC covers. What the
//! CRC does not cover is checked against what the log knows instead (the batch length against
//! the stored length here; the base offset and leader epoch, by weir-storage, against what it
//! recorded when it stamped them).
//!
//! Two gates turn bytes into an [`EncodedBatch`]:
//! - [`EncodedBatch::verify`] for bytes that come from disk or a peer: CRC, magic, length,
//!   supported attributes, consistent producer fields, and every record decoded and counted
//!   against the header (record count, last offset delta, max timestamp, offset deltas
//!   increasing), with nothing left over. A stored batch may be compacted (see `compact.rs`):
//!   empty, or with its last record before its last offset.
//! - [`EncodedBatch::validate_produced`] for bytes from a producer: all of that, plus what a
//!   producer's batch must satisfy (offsets contiguous from 0, timestamps not negative, size
//!   limits).
//!
//! A null value (Kafka's tombstone, which deletes its key from a compacted topic) is a
//! [`Record`] with `tombstone` set and an empty `value`. Features Weir does not implement yet are
//! refused by name rather than misread: compressed, transactional and control batches,
//! log-append-time timestamps, delete horizons and null header values.

mod compact;
mod header;
mod record;

use bytes::Bytes;

use crate::names::Offset;

pub use compact::CompactionRecord;
pub use header::{
    BASE_OFFSET_AT, BATCH_HEADER_LEN, BatchAttributes, BatchHeader, Compression, LEADER_EPOCH_AT,
    MAGIC, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, ProducerStamp, stamp,
};
use header::{CRC_COVERS_FROM, LOG_OVERHEAD, read_header, seal, write_header};
pub use record::record_len_bound;
use record::{MIN_RECORD_LEN, RawRecord, encode_record};

/// A record header: a UTF-8 key and an opaque value, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value.
    pub value: Bytes,
}

/// One record: an optional key, a value (or none: a tombstone), headers and a timestamp in
/// milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partitioning and compaction key; `None` is distinct from an empty key.
    pub key: Option<Bytes>,
    /// The payload; empty when `tombstone` is set.
    pub value: Bytes,
    /// The value is null (Kafka's tombstone, which deletes the key from a compacted topic),
    /// as distinct from an empty value. A tombstone's `value` must be empty: encoding one that
    /// is not is an error.
    pub tombstone: bool,
    /// Application headers, in the order they were given.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Record {
    /// Bytes this record occupies in a batch, a bound used to size buffers.
    pub fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len() + 10)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len() + headers + 30
    }
}

/// Bytes the broker's log stores around a batch at most: the entry's envelope, its raft
/// metadata and the database page's own header. The log keeps each entry in a run of pages whose
/// size is a power of two (4 KiB, 8 KiB, ... 1 MiB, ...), so a batch of `2^k × 4 KiB −
/// STORED_BATCH_OVERHEAD` bytes or less fills one run, and a batch just over a power of two
/// takes twice its size on disk and in every write. Producers that size batches near a power of
/// two stay this far under it (as `weir-client`'s does).
pub const STORED_BATCH_OVERHEAD: usize = 4096;

/// Size limits applied to batches from untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest single record, as encoded in the batch (length prefix included), in bytes.
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

/// Why a batch could not be encoded, validated or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A batch must hold at least one record.
    #[error("a batch must contain at least one record")]
    Empty,
    /// One record is larger than the limit.
    #[error("record {index} is {size} bytes; the limit is {limit}")]
    RecordTooLarge {
        /// Position of the record in the batch.
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
    /// The magic byte names another format version.
    #[error("the batch has magic byte {0}; Weir reads record batch format v2 (magic 2) only")]
    WrongMagic(i8),
    /// The `batch_length` field disagrees with the bytes there are.
    #[error("the batch length field says {header} bytes follow it, but the batch is {actual} bytes in all (so {} follow)", .actual.saturating_sub(12))]
    LengthMismatch {
        /// The `batch_length` field.
        header: i32,
        /// The bytes of the whole batch.
        actual: usize,
    },
    /// The stored checksum does not match the bytes: they were damaged (or never valid).
    #[error(
        "batch checksum mismatch: the header says {stored:#010x}, the bytes give {computed:#010x}"
    )]
    ChecksumMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC of the bytes as read.
        computed: u32,
    },
    /// The header's record count disagrees with the records in the payload.
    #[error("the header counts {header} records but the payload holds {decoded}")]
    CountMismatch {
        /// The `record_count` field.
        header: u32,
        /// Records actually decoded.
        decoded: u32,
    },
    /// The header's last offset delta disagrees with the last record's.
    #[error("the header's last offset delta is {header} but the last record's is {decoded}")]
    LastOffsetDeltaMismatch {
        /// The `last_offset_delta` field.
        header: u32,
        /// The last record's offset delta.
        decoded: i32,
    },
    /// The header's max timestamp disagrees with the records'.
    #[error("the header's max timestamp is {header} but the records' largest is {decoded}")]
    MaxTimestampMismatch {
        /// The `max_timestamp` field.
        header: i64,
        /// The largest record timestamp.
        decoded: i64,
    },
    /// One record is not acceptable as it is.
    #[error("record {index}: {reason}")]
    InvalidRecord {
        /// Position of the record in the batch.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The batch uses a feature Weir does not implement (yet), named here.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The bytes are not a well-formed batch.
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// What a batch must satisfy beyond being well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Bytes from disk or a peer: verified as they are.
    Stored,
    /// Bytes from a producer.
    Produced(BatchLimits),
}

/// An encoded batch whose bytes were verified (or that was just encoded).
///
/// Cloning is cheap: the bytes are reference counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl EncodedBatch {
    /// Encodes `records` into a batch without producer fields, refusing empty input and anything
    /// over `limits`. Shorthand for [`BatchEncoder::encode`].
    pub fn encode(records: &[Record], limits: BatchLimits) -> Result<Self, BatchError> {
        BatchEncoder::new(limits).encode(records)
    }

    /// Parses and verifies bytes from disk or a peer: magic, batch length, CRC, supported
    /// attributes, and every record decoded against the header (count, last offset delta,
    /// max timestamp, increasing offset deltas, nothing left over).
    ///
    /// This is the gate for stored bytes: anything that passes can be served; anything that
    /// fails is corruption.
    pub fn verify(bytes: Bytes) -> Result<Self, BatchError> {
        let header = check(&bytes, Gate::Stored)?;
        Ok(Self { bytes, header })
    }

    /// Parses and validates a batch a producer encoded: everything [`verify`](Self::verify)
    /// checks (producer fields included: all unset, `-1`, or all set), plus the size limits,
    /// offset deltas `0, 1, 2, …` (a producer's batch has no gaps) and timestamps that are not
    /// negative. The base offset and leader epoch the producer wrote are ignored:
    /// the log stamps its own.
    pub fn validate_produced(bytes: Bytes, limits: BatchLimits) -> Result<Self, BatchError> {
        if bytes.len() > limits.max_batch_bytes {
            return Err(BatchError::BatchTooLarge {
                size: bytes.len(),
                limit: limits.max_batch_bytes,
            });
        }
        let header = check(&bytes, Gate::Produced(limits))?;
        Ok(Self { bytes, header })
    }

    /// Verifies bytes from disk or a peer as [`verify`](Self::verify) does and decodes their
    /// records in the same pass (the records share `bytes`' memory). For a reader that wants
    /// the records anyway: verifying, then calling [`records`](Self::records), parses each
    /// record twice.
    pub fn verify_and_decode(bytes: Bytes) -> Result<(Self, Vec<(Offset, Record)>), BatchError> {
        let mut records = Vec::new();
        let batch = Self::verify_and_decode_into(bytes, &mut records, |offset, record| {
            Some((offset, record))
        })?;
        Ok((batch, records))
    }

    /// Verifies and decodes as [`verify_and_decode`](Self::verify_and_decode) does, appending
    /// what `make` makes of each record (`None`: nothing) to `out`, so that the records of
    /// several batches land in one vector, each written once. If the batch fails, `out` is
    /// truncated back to its length at the call: nothing of a damaged batch is kept.
    pub fn verify_and_decode_into<T>(
        bytes: Bytes,
        out: &mut Vec<T>,
        mut make: impl FnMut(Offset, Record) -> Option<T>,
    ) -> Result<Self, BatchError> {
        let kept = out.len();
        let mut reserved = false;
        let checked = check_each(&bytes, Gate::Stored, |header, record| {
            if !reserved {
                // The count is the header's claim, checked only once every record is decoded:
                // reserve no more than the bytes can hold.
                let fits = (bytes.len() - BATCH_HEADER_LEN) / MIN_RECORD_LEN;
                out.reserve((header.record_count as usize).min(fits));
                reserved = true;
            }
            let offset = header.base_offset.plus(record.offset_delta as u64);
            let record = record.to_record(&bytes, |delta| header.record_timestamp_ms(delta));
            out.extend(make(offset, record));
        });
        match checked {
            Ok(header) => Ok(Self { bytes, header }),
            Err(e) => {
                out.truncate(kept);
                Err(e)
            }
        }
    }

    /// The verified header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The encoded bytes, header included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The same batch in memory of its own, for a holder that keeps it longer than the memory
    /// its bytes share should live (a stored value holding a read transaction open).
    pub fn detached(&self) -> Self {
        Self {
            bytes: Bytes::copy_from_slice(&self.bytes),
            header: self.header,
        }
    }

    /// Consumes the batch, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The records with their offsets, decoded without copying keys, values or header values.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            source: &self.bytes,
            rest: &self.bytes[BATCH_HEADER_LEN..],
            header: self.header,
            next_index: 0,
        }
    }

    /// A copy with other producer fields (id, epoch, base sequence) and the CRC recomputed: an
    /// idempotent producer re-sequencing a batch it has not had stored yet, without encoding
    /// its records again.
    pub fn with_producer(&self, producer: ProducerStamp) -> Self {
        let mut bytes = self.bytes.to_vec();
        bytes[43..51].copy_from_slice(&producer.producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&producer.producer_epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&producer.base_sequence.to_be_bytes());
        let crc = seal(&mut bytes);
        Self {
            bytes: Bytes::from(bytes),
            header: BatchHeader {
                producer_id: producer.producer_id,
                producer_epoch: producer.producer_epoch,
                base_sequence: producer.base_sequence,
                crc,
                ..self.header
            },
        }
    }

    /// A copy whose records carry the log-append time `now_ms` (Kafka's
    /// `message.timestamp.type=LogAppendTime`): the timestamp-type attribute set and the
    /// maximum timestamp, which readers then give every record, made `now_ms`; the records'
    /// own bytes are unchanged. The CRC is recomputed.
    pub fn with_log_append_time(&self, now_ms: i64) -> Self {
        let mut bytes = self.bytes.to_vec();
        let attributes =
            BatchAttributes(self.header.attributes.0 | BatchAttributes::LOG_APPEND_TIME);
        bytes[21..23].copy_from_slice(&attributes.0.to_be_bytes());
        bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
        let crc = seal(&mut bytes);
        Self {
            bytes: Bytes::from(bytes),
            header: BatchHeader {
                attributes,
                max_timestamp_ms: now_ms,
                crc,
                ..self.header
            },
        }
    }

    /// A copy with `base_offset` and `leader_epoch` stamped, as the log stores it. The CRC does
    /// not cover them, so the copy stays valid.
    pub fn stamped(&self, base_offset: Offset, leader_epoch: i32) -> Self {
        let mut bytes = self.bytes.to_vec();
        stamp(&mut bytes, base_offset, leader_epoch);
        Self {
            bytes: Bytes::from(bytes),
            header: BatchHeader {
                base_offset,
                partition_leader_epoch: leader_epoch,
                ..self.header
            },
        }
    }
}

/// Checks `bytes` through `gate`; returns the header.
fn check(bytes: &[u8], gate: Gate) -> Result<BatchHeader, BatchError> {
    check_each(bytes, gate, |_, _| {})
}

/// Checks `bytes` through `gate`, handing every record to `each` as it is checked; returns the
/// header. `each` may have seen records of a batch that turns out bad: callers discard what it
/// gathered on an error.
fn check_each<'a>(
    bytes: &'a [u8],
    gate: Gate,
    mut each: impl FnMut(&BatchHeader, &RawRecord<'a>),
) -> Result<BatchHeader, BatchError> {
    let header = read_header(bytes)?;
    let computed = crc32c::crc32c(&bytes[CRC_COVERS_FROM..]);
    if computed != header.crc {
        return Err(BatchError::ChecksumMismatch {
            stored: header.crc,
            computed,
        });
    }
    header
        .attributes
        .check_supported(matches!(gate, Gate::Stored))?;
    check_producer_fields(&header)?;
    // A stored batch may have lost every record to compaction; it keeps its offsets (and its
    // producer fields), so it stays in the log.
    if header.record_count == 0 && gate != Gate::Stored {
        return Err(BatchError::Empty);
    }
    let mut payload = &bytes[BATCH_HEADER_LEN..];
    let mut decoded = 0u32;
    let mut last_delta = -1i32;
    let mut max_timestamp = i64::MIN;
    while !payload.is_empty() {
        let index = decoded as usize;
        let before = payload.len();
        let record = RawRecord::parse(&mut payload)
            .map_err(|reason| BatchError::InvalidRecord { index, reason })?;
        let invalid = |reason| BatchError::InvalidRecord { index, reason };
        if record.offset_delta <= last_delta {
            return Err(invalid("offset deltas do not increase"));
        }
        if record.has_null_header_value {
            return Err(invalid(
                "a header has a null value, which Weir does not store",
            ));
        }
        let timestamp = header
            .base_timestamp_ms
            .checked_add(record.timestamp_delta)
            .ok_or(invalid("timestamp out of range"))?;
        if let Gate::Produced(limits) = gate {
            if i64::from(record.offset_delta) != index as i64 {
                return Err(invalid(
                    "offset delta is not its position: a producer's batch has offsets 0, 1, 2, …",
                ));
            }
            if timestamp < 0 {
                return Err(invalid("negative timestamp"));
            }
            let size = before - payload.len();
            if size > limits.max_record_bytes {
                return Err(BatchError::RecordTooLarge {
                    index,
                    size,
                    limit: limits.max_record_bytes,
                });
            }
        }
        each(&header, &record);
        last_delta = record.offset_delta;
        max_timestamp = max_timestamp.max(timestamp);
        decoded += 1;
    }
    if decoded != header.record_count {
        return Err(BatchError::CountMismatch {
            header: header.record_count,
            decoded,
        });
    }
    // Compaction removes records but keeps the offsets a batch spans: a stored batch's last
    // record may lie before its last offset.
    let last_delta_fits = match gate {
        Gate::Stored => i64::from(last_delta) <= i64::from(header.last_offset_delta),
        Gate::Produced(_) => i64::from(last_delta) == i64::from(header.last_offset_delta),
    };
    if !last_delta_fits {
        return Err(BatchError::LastOffsetDeltaMismatch {
            header: header.last_offset_delta,
            decoded: last_delta,
        });
    }
    // With log-append time the maximum is the time the leader appended the batch at, and the
    // records' own timestamps stay as the producer sent them. A batch compaction emptied keeps
    // the maximum it had.
    if decoded > 0
        && max_timestamp != header.max_timestamp_ms
        && !header.attributes.is_log_append_time()
    {
        return Err(BatchError::MaxTimestampMismatch {
            header: header.max_timestamp_ms,
            decoded: max_timestamp,
        });
    }
    Ok(header)
}

/// Producer fields are all unset (`-1`), or a producer id with an epoch and a sequence.
fn check_producer_fields(header: &BatchHeader) -> Result<(), BatchError> {
    match header.producer_id {
        NO_PRODUCER_ID
            if header.producer_epoch == NO_PRODUCER_EPOCH
                && header.base_sequence == NO_SEQUENCE =>
        {
            Ok(())
        }
        NO_PRODUCER_ID => Err(BatchError::Malformed(
            "a producer epoch or base sequence without a producer id",
        )),
        id if id < 0 => Err(BatchError::Malformed("negative producer id")),
        _ if header.producer_epoch < 0 => Err(BatchError::Malformed(
            "a producer id with a negative producer epoch",
        )),
        _ if header.base_sequence < 0 => Err(BatchError::Malformed(
            "a producer id with a negative base sequence",
        )),
        _ => Ok(()),
    }
}

/// Encodes records into batches: Weir's producers, a produce chain's output, a consume chain's
/// survivors.
#[derive(Debug, Clone, Copy)]
pub struct BatchEncoder {
    limits: BatchLimits,
    producer: Option<ProducerStamp>,
}

impl BatchEncoder {
    /// An encoder refusing records and batches over `limits`, writing no producer fields.
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            producer: None,
        }
    }

    /// Writes `producer`'s id, epoch and base sequence into the batches.
    pub fn with_producer(mut self, producer: Option<ProducerStamp>) -> Self {
        self.producer = producer;
        self
    }

    /// Encodes `records` as a producer does: offsets `0, 1, 2, …` from base offset 0, which the
    /// log replaces with the offset the batch gets.
    pub fn encode(&self, records: &[Record]) -> Result<EncodedBatch, BatchError> {
        self.encode_deltas(
            Offset(0),
            records.iter().enumerate().map(|(i, r)| (i as u64, r)),
            records.len(),
        )
    }

    /// Encodes records that keep their offsets, which must increase but may leave gaps (records
    /// a consume chain filtered out). The batch's base offset is the first record's.
    pub fn encode_at_offsets(
        &self,
        records: &[(Offset, Record)],
    ) -> Result<EncodedBatch, BatchError> {
        let base = records.first().ok_or(BatchError::Empty)?.0;
        self.encode_deltas(
            base,
            records
                .iter()
                .map(|(offset, r)| (offset.0.wrapping_sub(base.0), r)),
            records.len(),
        )
    }

    fn encode_deltas<'a>(
        &self,
        base_offset: Offset,
        records: impl Iterator<Item = (u64, &'a Record)> + Clone,
        count: usize,
    ) -> Result<EncodedBatch, BatchError> {
        let limits = self.limits;
        let Some((_, first)) = records.clone().next() else {
            return Err(BatchError::Empty);
        };
        let record_count = u32::try_from(count)
            .ok()
            .filter(|c| *c <= i32::MAX as u32)
            .ok_or(BatchError::BatchTooLarge {
                size: count,
                limit: limits.max_batch_bytes,
            })?;
        let base_timestamp_ms = first.timestamp_ms;
        let hint: usize = records.clone().map(|(_, r)| r.encoded_len_hint()).sum();
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + hint.min(limits.max_batch_bytes));
        buf.resize(BATCH_HEADER_LEN, 0);
        let mut max_timestamp_ms = base_timestamp_ms;
        let mut last_delta: Option<u64> = None;
        for (index, (delta, record)) in records.enumerate() {
            let malformed = |reason| BatchError::InvalidRecord { index, reason };
            if last_delta.is_some_and(|last| delta <= last) {
                return Err(malformed("offsets do not increase"));
            }
            let offset_delta =
                i32::try_from(delta).map_err(|_| malformed("offset too far from the first"))?;
            if record.tombstone && !record.value.is_empty() {
                return Err(malformed("a tombstone carries no value"));
            }
            let timestamp_delta = record
                .timestamp_ms
                .checked_sub(base_timestamp_ms)
                .ok_or(malformed("timestamp out of range"))?;
            let size = encode_record(&mut buf, record, timestamp_delta, offset_delta).ok_or(
                BatchError::RecordTooLarge {
                    index,
                    size: record.encoded_len_hint(),
                    limit: limits.max_record_bytes,
                },
            )?;
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
            max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
            last_delta = Some(delta);
        }
        let producer = self.producer.unwrap_or(ProducerStamp {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        });
        let mut header = BatchHeader {
            base_offset,
            batch_length: u32::try_from(buf.len() - LOG_OVERHEAD)
                .map_err(|_| BatchError::Malformed("batch over 2 GiB"))?,
            partition_leader_epoch: -1,
            crc: 0,
            attributes: BatchAttributes::default(),
            last_offset_delta: last_delta.unwrap_or(0) as u32,
            base_timestamp_ms,
            max_timestamp_ms,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: producer.base_sequence,
            record_count,
        };
        write_header(&mut buf[..BATCH_HEADER_LEN], &header);
        header.crc = seal(&mut buf);
        Ok(EncodedBatch {
            bytes: Bytes::from(buf),
            header,
        })
    }
}

impl serde::Serialize for EncodedBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

/// Deserialising verifies the batch, so bytes from a peer are checked at the boundary: a
/// follower never appends a batch that does not verify.
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

/// Decodes the records of a verified batch in order, yielding `(offset, record)`.
#[derive(Debug)]
pub struct RecordIter<'a> {
    source: &'a Bytes,
    rest: &'a [u8],
    header: BatchHeader,
    next_index: u32,
}

impl Iterator for RecordIter<'_> {
    type Item = Result<(Offset, Record), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_index >= self.header.record_count {
            return None;
        }
        let index = self.next_index as usize;
        self.next_index += 1;
        match RawRecord::parse(&mut self.rest) {
            Ok(raw) => {
                let offset = self.header.base_offset.plus(raw.offset_delta as u64);
                let header = self.header;
                let record = raw.to_record(self.source, |delta| header.record_timestamp_ms(delta));
                Some(Ok((offset, record)))
            }
            Err(reason) => {
                // A malformed record makes the rest of the payload meaningless. (A verified
                // batch never gets here.)
                self.next_index = self.header.record_count;
                Some(Err(BatchError::InvalidRecord { index, reason }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.header.record_count - self.next_index) as usize;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests;
