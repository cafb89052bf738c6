//! What log compaction needs of a stored batch: each record's offset, key, tombstone flag and
//! timestamp ([`EncodedBatch::compaction_records`]), and a copy that keeps only some records
//! ([`EncodedBatch::retaining`]).
//!
//! A compacted batch is the same batch with records left out (DESIGN §3): its base offset, last
//! offset delta (so it spans the same offsets), leader epoch, attributes, base timestamp and
//! producer fields stay; the kept records' bytes are copied as they are (their deltas are
//! relative to the unchanged base offset and base timestamp); the record count, length, maximum
//! timestamp and CRC are the new batch's. A batch that loses every record stays, empty, so the
//! offsets and producer sequences it held are still accounted for, as Kafka keeps one.

use bytes::Bytes;

use super::header::{BATCH_HEADER_LEN, LOG_OVERHEAD, seal, write_header};
use super::record::RawRecord;
use super::{BatchError, BatchHeader, EncodedBatch};
use crate::names::Offset;

/// One record of a stored batch, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionRecord<'a> {
    /// The record's offset.
    pub offset: Offset,
    /// Its key; compaction keeps the latest record of each key.
    pub key: Option<&'a [u8]>,
    /// Its value is null: it deletes its key.
    pub tombstone: bool,
    /// Its timestamp, as readers see it (the batch's rule).
    pub timestamp_ms: i64,
}

impl EncodedBatch {
    /// The batch's records as compaction sees them, in offset order, borrowing the batch.
    pub fn compaction_records(
        &self,
    ) -> impl Iterator<Item = Result<CompactionRecord<'_>, BatchError>> + '_ {
        let header = self.header;
        raw_records(&self.bytes, header).map(move |raw| raw.map(|(raw, _)| view(&header, &raw)))
    }

    /// The batch keeping only the records `keep` accepts, or `None` when it accepts them all
    /// (nothing to rewrite). See the module documentation for what the copy keeps.
    pub fn retaining(
        &self,
        mut keep: impl FnMut(&CompactionRecord<'_>) -> bool,
    ) -> Result<Option<EncodedBatch>, BatchError> {
        let header = self.header;
        let mut kept: Vec<&[u8]> = Vec::with_capacity(header.record_count as usize);
        let mut max_timestamp_ms: Option<i64> = None;
        let mut dropped = false;
        for raw in raw_records(&self.bytes, header) {
            let (raw, bytes) = raw?;
            let record = view(&header, &raw);
            if keep(&record) {
                kept.push(bytes);
                let max =
                    max_timestamp_ms.map_or(record.timestamp_ms, |m| m.max(record.timestamp_ms));
                max_timestamp_ms = Some(max);
            } else {
                dropped = true;
            }
        }
        if !dropped {
            return Ok(None);
        }
        assemble(&header, &kept, max_timestamp_ms).map(Some)
    }

    /// The batch of `header` with every record removed, built from the header alone: exactly
    /// what [`retaining`](Self::retaining) gives when it keeps no record, so a replica that
    /// knows a batch's records are all superseded need not read it.
    pub fn emptied(header: &BatchHeader) -> EncodedBatch {
        assemble(header, &[], None).expect("an empty batch is far under 2 GiB")
    }
}

/// A batch of `header` holding the records `kept` (their bytes as stored), with its length,
/// count, CRC and (when there are records and the batch is not log-append time) maximum
/// timestamp made the new batch's.
fn assemble(
    header: &BatchHeader,
    kept: &[&[u8]],
    max_timestamp_ms: Option<i64>,
) -> Result<EncodedBatch, BatchError> {
    let payload: usize = kept.iter().map(|b| b.len()).sum();
    let mut out = vec![0u8; BATCH_HEADER_LEN];
    out.reserve_exact(payload);
    for bytes in kept {
        out.extend_from_slice(bytes);
    }
    let mut new_header = BatchHeader {
        batch_length: u32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| BatchError::Malformed("batch over 2 GiB"))?,
        record_count: kept.len() as u32,
        ..*header
    };
    // With log-append time the maximum is the append time, which every record reads as.
    if !header.attributes.is_log_append_time()
        && let Some(max) = max_timestamp_ms
    {
        new_header.max_timestamp_ms = max;
    }
    write_header(&mut out[..BATCH_HEADER_LEN], &new_header);
    new_header.crc = seal(&mut out);
    Ok(EncodedBatch {
        bytes: Bytes::from(out),
        header: new_header,
    })
}

fn view<'a>(header: &BatchHeader, raw: &RawRecord<'a>) -> CompactionRecord<'a> {
    CompactionRecord {
        offset: header.base_offset.plus(raw.offset_delta as u64),
        key: raw.key,
        tombstone: raw.value.is_none(),
        timestamp_ms: header.record_timestamp_ms(raw.timestamp_delta),
    }
}

/// The records of a verified batch, each with the bytes it takes.
fn raw_records(
    bytes: &Bytes,
    header: BatchHeader,
) -> impl Iterator<Item = Result<(RawRecord<'_>, &[u8]), BatchError>> + '_ {
    let mut rest = &bytes[BATCH_HEADER_LEN..];
    let mut index = 0usize;
    std::iter::from_fn(move || {
        if index >= header.record_count as usize {
            return None;
        }
        let before = rest;
        let parsed = RawRecord::parse(&mut rest);
        let at = index;
        index += 1;
        Some(match parsed {
            Ok(raw) => Ok((raw, &before[..before.len() - rest.len()])),
            Err(reason) => {
                // A verified batch never gets here; stop at the damage.
                index = header.record_count as usize;
                Err(BatchError::InvalidRecord { index: at, reason })
            }
        })
    })
}
