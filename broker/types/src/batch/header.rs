//! The 61-byte header of a Kafka v2 record batch: its layout, decoding and encoding.
//!
//! ```text
//! offset size field                    covered by the CRC
//!   0     8   base_offset      int64
//!   8     4   batch_length     int32   bytes after this field: total length − 12
//!  12     4   partition_leader_epoch int32
//!  16     1   magic            int8    2
//!  17     4   crc              uint32  CRC-32C of bytes 21..end
//!  21     2   attributes       int16   ✓
//!  23     4   last_offset_delta int32  ✓
//!  27     8   base_timestamp   int64   ✓
//!  35     8   max_timestamp    int64   ✓
//!  43     8   producer_id      int64   ✓
//!  51     2   producer_epoch   int16   ✓
//!  53     4   base_sequence    int32   ✓
//!  57     4   record_count     int32   ✓
//!  61     …   records                  ✓
//! ```
//!
//! Every integer is big-endian, as everywhere in Kafka's protocol.

use crate::names::Offset;

use super::BatchError;

/// Length of the fixed batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 61;

/// Bytes before the part `batch_length` counts: the base offset and the length itself.
pub(crate) const LOG_OVERHEAD: usize = 12;

/// The record batch format version Weir reads and writes (Kafka's v2).
pub const MAGIC: i8 = 2;

/// Where the CRC-covered part of a batch starts.
pub(crate) const CRC_COVERS_FROM: usize = 21;

/// Where the stored base offset lives (the log stamps it at append time).
pub const BASE_OFFSET_AT: usize = 0;
/// Where the stored partition leader epoch lives (the log stamps it at append time).
pub const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;

/// The producer id of a batch sent by a producer without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// The producer epoch of a batch sent by a producer without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// The base sequence of a batch sent by a producer without idempotence.
pub const NO_SEQUENCE: i32 = -1;

/// The compression codec named by a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are. The only codec Weir accepts.
    None,
    /// gzip (1).
    Gzip,
    /// snappy (2).
    Snappy,
    /// lz4 (3).
    Lz4,
    /// zstd (4).
    Zstd,
    /// Codec ids 5–7, which Kafka does not define.
    Unknown(u8),
}

impl Compression {
    /// The codec's name, as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// The `attributes` field of a batch header.
///
/// Bits 0–2 compression, bit 3 timestamp type (1 = log append time), bit 4 transactional, bit 5
/// control batch, bit 6 delete horizon set (by compaction); bits 7–15 unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchAttributes(pub u16);

impl BatchAttributes {
    const COMPRESSION_MASK: u16 = 0x07;
    pub(crate) const LOG_APPEND_TIME: u16 = 0x08;
    const TRANSACTIONAL: u16 = 0x10;
    const CONTROL: u16 = 0x20;
    const DELETE_HORIZON: u16 = 0x40;
    const UNUSED: u16 = 0xff80;

    /// The compression codec.
    pub fn compression(self) -> Compression {
        match (self.0 & Self::COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    /// Whether the timestamps are the log's append time rather than the producer's create time.
    pub fn is_log_append_time(self) -> bool {
        self.0 & Self::LOG_APPEND_TIME != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (a transaction marker).
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }

    /// Whether compaction set the delete horizon in the base timestamp.
    pub fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON != 0
    }

    /// Refuses every feature Weir does not implement yet, naming it. What remains is an
    /// uncompressed, non-transactional data batch with create-time timestamps, or (where the
    /// log stored it, `stored`) log-append-time ones.
    pub(crate) fn check_supported(self, stored: bool) -> Result<(), BatchError> {
        let compression = self.compression();
        if compression != Compression::None {
            return Err(BatchError::Unsupported(match compression {
                Compression::Gzip => "gzip-compressed batches (send batches uncompressed)",
                Compression::Snappy => "snappy-compressed batches (send batches uncompressed)",
                Compression::Lz4 => "lz4-compressed batches (send batches uncompressed)",
                Compression::Zstd => "zstd-compressed batches (send batches uncompressed)",
                _ => "an unknown compression codec",
            }));
        }
        if self.is_control() {
            return Err(BatchError::Unsupported(
                "control batches (transactions are not supported yet)",
            ));
        }
        if self.is_transactional() {
            return Err(BatchError::Unsupported(
                "transactional batches (transactions are not supported yet)",
            ));
        }
        if self.is_log_append_time() && !stored {
            return Err(BatchError::Unsupported(
                "log-append-time timestamps in a batch (the broker sets that type itself)",
            ));
        }
        if self.has_delete_horizon() {
            return Err(BatchError::Unsupported(
                "a delete horizon (set only by compaction)",
            ));
        }
        if self.0 & Self::UNUSED != 0 {
            return Err(BatchError::Malformed("unused attribute bits 7-15 are set"));
        }
        Ok(())
    }
}

/// The idempotent producer's fields of a batch header: who wrote it and the sequence number of
/// its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// The producer id the controller issued (`InitProducerId`).
    pub producer_id: i64,
    /// The producer's epoch; a higher one fences the lower ones.
    pub producer_epoch: i16,
    /// The sequence number of the batch's first record; record `i` has `base_sequence + i`
    /// (wrapping from `i32::MAX` to 0).
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The sequence number `n` records after `sequence`: sequences wrap from `i32::MAX` to 0, as
    /// Kafka's do.
    pub fn sequence_after(sequence: i32, n: u64) -> i32 {
        let space = i64::from(i32::MAX) + 1;
        let n = (n % space as u64) as i64;
        (i64::from(sequence) + n).rem_euclid(space) as i32
    }
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as stamped by the log; 0 in a batch not yet appended).
    pub base_offset: Offset,
    /// Bytes of the batch after the `batch_length` field.
    pub batch_length: u32,
    /// The leader epoch (raft term) the batch was appended in, as stamped by the log.
    pub partition_leader_epoch: i32,
    /// CRC-32C of everything from `attributes` to the end.
    pub crc: u32,
    /// Compression, timestamp type and transaction flags.
    pub attributes: BatchAttributes,
    /// Offset of the last record relative to `base_offset`: the batch spans
    /// `last_offset_delta + 1` offsets.
    pub last_offset_delta: u32,
    /// The timestamp record timestamp deltas are relative to.
    pub base_timestamp_ms: i64,
    /// The largest record timestamp.
    pub max_timestamp_ms: i64,
    /// The producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// The producer epoch, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// The first record's sequence number, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Records in the batch (fewer than the offsets it spans when compaction removed some).
    pub record_count: u32,
}

impl BatchHeader {
    /// The timestamp of the record whose timestamp delta is `delta`: the base timestamp plus
    /// the delta, or with log-append time the batch's maximum (the time the log appended it).
    pub fn record_timestamp_ms(&self, delta: i64) -> i64 {
        if self.attributes.is_log_append_time() {
            self.max_timestamp_ms
        } else {
            self.base_timestamp_ms.wrapping_add(delta)
        }
    }

    /// Offset of the last record the batch spans.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(u64::from(self.last_offset_delta))
    }

    /// Offset one past the last record of the batch: where the next batch starts.
    pub fn next_offset(&self) -> Offset {
        self.base_offset.plus(self.offset_count())
    }

    /// Offsets the batch spans.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.last_offset_delta) + 1
    }

    /// The idempotent producer's fields, when a producer id is set.
    pub fn producer(&self) -> Option<ProducerStamp> {
        (self.producer_id >= 0).then_some(ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        })
    }
}

/// Decodes the header of `bytes`, checking what the header alone can tell: the length, the
/// magic byte and the supported attributes. The CRC and the records are checked by the caller.
pub(crate) fn read_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let h: &[u8; BATCH_HEADER_LEN] = bytes
        .get(..BATCH_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(BatchError::Malformed(
            "shorter than a batch header (61 bytes)",
        ))?;
    let magic = h[MAGIC_AT] as i8;
    if magic != MAGIC {
        return Err(BatchError::WrongMagic(magic));
    }
    let batch_length = i32_at(h, 8);
    if i64::from(batch_length) != (bytes.len() - LOG_OVERHEAD) as i64 {
        return Err(BatchError::LengthMismatch {
            header: batch_length,
            actual: bytes.len(),
        });
    }
    let attributes = BatchAttributes(u16::from_be_bytes([h[21], h[22]]));
    let last_offset_delta = u32::try_from(i32_at(h, 23))
        .map_err(|_| BatchError::Malformed("negative last offset delta"))?;
    let record_count =
        u32::try_from(i32_at(h, 57)).map_err(|_| BatchError::Malformed("negative record count"))?;
    Ok(BatchHeader {
        base_offset: Offset(i64_at(h, 0) as u64),
        batch_length: batch_length as u32,
        partition_leader_epoch: i32_at(h, LEADER_EPOCH_AT),
        crc: u32::from_be_bytes([h[CRC_AT], h[CRC_AT + 1], h[CRC_AT + 2], h[CRC_AT + 3]]),
        attributes,
        last_offset_delta,
        base_timestamp_ms: i64_at(h, 27),
        max_timestamp_ms: i64_at(h, 35),
        producer_id: i64_at(h, 43),
        producer_epoch: i16::from_be_bytes([h[51], h[52]]),
        base_sequence: i32_at(h, 53),
        record_count,
    })
}

/// Writes every header field but the CRC into `out` (the first [`BATCH_HEADER_LEN`] bytes of a
/// batch); [`seal`] computes the CRC once the records follow.
pub(crate) fn write_header(out: &mut [u8], h: &BatchHeader) {
    out[0..8].copy_from_slice(&(h.base_offset.0 as i64).to_be_bytes());
    out[8..12].copy_from_slice(&(h.batch_length as i32).to_be_bytes());
    out[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out[MAGIC_AT] = MAGIC as u8;
    out[21..23].copy_from_slice(&h.attributes.0.to_be_bytes());
    out[23..27].copy_from_slice(&(h.last_offset_delta as i32).to_be_bytes());
    out[27..35].copy_from_slice(&h.base_timestamp_ms.to_be_bytes());
    out[35..43].copy_from_slice(&h.max_timestamp_ms.to_be_bytes());
    out[43..51].copy_from_slice(&h.producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&h.producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&h.base_sequence.to_be_bytes());
    out[57..61].copy_from_slice(&(h.record_count as i32).to_be_bytes());
}

/// Computes the CRC of a complete batch, writes it into the header and returns it.
pub(crate) fn seal(batch: &mut [u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    crc
}

/// Writes `base_offset` and `leader_epoch` into the first bytes of a stored batch. Neither is
/// covered by the CRC, which is why the log can stamp them without re-encoding anything.
pub fn stamp(batch_prefix: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    batch_prefix[BASE_OFFSET_AT..BASE_OFFSET_AT + 8]
        .copy_from_slice(&(base_offset.0 as i64).to_be_bytes());
    batch_prefix[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

fn i32_at(h: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    i32::from_be_bytes(b)
}

fn i64_at(h: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    i64::from_be_bytes(b)
}
