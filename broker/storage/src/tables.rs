//! Table definitions, the stored entry envelope, and the checks that tie a stored batch to its
//! envelope and its offset index row.
//!
//! ```text
//! raft_log      (group, index)        → envelope
//! raft_meta     (group, key)          → opaque bytes (vote, committed, purged, applied, …)
//! offset_index  (group, base_offset)  → (raft index, offset count, max timestamp)
//! producers     (group, producer id)  → opaque bytes (the partition's idempotent producer state)
//! format        "version"             → storage format version
//! ```
//!
//! The envelope is
//! `[flags u8][meta_len u32 LE][base_offset u64 LE][leader_epoch i32 LE][crc u32 LE][meta][batch]`:
//! flag bit 0 says a record batch follows the metadata; the base offset and leader epoch are
//! what the log stamped into that batch (zero without one); the CRC-32C covers the first 17
//! bytes and the metadata. The batch carries its own CRC over everything but its base offset,
//! length, leader epoch and magic, and those are checked against the envelope and the stored
//! length. Keys are fixed-width tuples so a group's rows are contiguous and ranges are cheap.

use bytes::Bytes;
use redb::TableDefinition;
use weir_types::{EncodedBatch, Offset, stamp};

use crate::db::GroupId;
use crate::error::ReadError;

pub(crate) const RAFT_LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");
pub(crate) const RAFT_META: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("raft_meta");
pub(crate) const OFFSET_INDEX: TableDefinition<(u64, u64), IndexRow> =
    TableDefinition::new("offset_index");

pub(crate) const PRODUCERS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("producers");

/// Metadata key, private to storage: the bytes of a group's stored log entries
/// (little-endian `u64`), written with every change to them.
pub(crate) const LOG_BYTES_META_KEY: u8 = 201;

/// Metadata key, private to storage: how many times a group's log was reset (a snapshot
/// installed past it, `WriteOp::ResetLog`), little-endian `u64`; a compaction pass records its
/// state only if no reset happened while it ran.
pub(crate) const RESETS_META_KEY: u8 = 202;

/// Counts the bytes of `group`'s stored log entries (every envelope, read in full).
pub(crate) fn stored_log_bytes(
    log: &impl redb::ReadableTable<(u64, u64), &'static [u8]>,
    group: GroupId,
) -> Result<u64, redb::StorageError> {
    let mut bytes = 0u64;
    for item in log.range((group, 0)..=(group, u64::MAX))? {
        bytes += item?.1.value().len() as u64;
    }
    Ok(bytes)
}

/// An `offset_index` row: `(raft index, offset count, max timestamp)` of the batch at the key's
/// base offset.
pub(crate) type IndexRow = (u64, u32, i64);

const FLAG_HAS_BATCH: u8 = 1;
/// Bytes of the envelope before the metadata.
pub(crate) const ENVELOPE_HEADER: usize = 21;
const CRC_AT: usize = 17;

/// A decoded envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub(crate) meta: &'a [u8],
    pub(crate) batch: Option<StoredBatch<'a>>,
}

/// The batch bytes of an envelope and what the log stamped into them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredBatch<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) base_offset: Offset,
    pub(crate) leader_epoch: i32,
}

/// A value read from a table, kept as it is: its bytes serve as [`Bytes`] without a copy, and
/// the read transaction it came from lives as long as they do, so that redb frees none of its
/// pages meanwhile. For values that leave the storage crate briefly (a fetch answer on its way
/// out); a copy is better for anything kept longer, which would hold back the reuse of pages.
pub(crate) struct StoredValue(pub(crate) redb::OwnedAccessGuard<&'static [u8]>);

impl AsRef<[u8]> for StoredValue {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

/// Writes an envelope for `meta` and an optional batch, stamping the batch's base offset and
/// leader epoch into the stored copy (and into the envelope, under its CRC).
pub(crate) fn encode_envelope(meta: &[u8], batch: Option<(&[u8], Offset, i32)>) -> Vec<u8> {
    let mut out = vec![0; envelope_len(meta, batch)];
    write_envelope(&mut out, meta, batch);
    out
}

/// Writes an envelope for `meta` and batch bytes exactly as given (with the base offset and
/// leader epoch the envelope records for them).
pub(crate) fn envelope_as_is(meta: &[u8], batch: Option<(&[u8], Offset, i32)>) -> Vec<u8> {
    let mut out = vec![0; envelope_len(meta, batch)];
    write_envelope_as_is(&mut out, meta, batch);
    out
}

/// The length of the envelope of `meta` and `batch`.
pub(crate) fn envelope_len(meta: &[u8], batch: Option<(&[u8], Offset, i32)>) -> usize {
    ENVELOPE_HEADER + meta.len() + batch.map_or(0, |(b, _, _)| b.len())
}

/// [`encode_envelope`] into `out`, which is [`envelope_len`] long: for writing straight into the
/// space the database reserved for the value, without a copy in between.
pub(crate) fn write_envelope(out: &mut [u8], meta: &[u8], batch: Option<(&[u8], Offset, i32)>) {
    write_envelope_as_is(out, meta, batch);
    if let Some((bytes, base_offset, leader_epoch)) = batch {
        let at = out.len() - bytes.len();
        stamp(&mut out[at..], base_offset, leader_epoch);
    }
}

fn write_envelope_as_is(out: &mut [u8], meta: &[u8], batch: Option<(&[u8], Offset, i32)>) {
    let (base_offset, leader_epoch) = batch.map_or((0, 0), |(_, o, e)| (o.0, e));
    out[0] = if batch.is_some() { FLAG_HAS_BATCH } else { 0 };
    out[1..5].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    out[5..13].copy_from_slice(&base_offset.to_le_bytes());
    out[13..CRC_AT].copy_from_slice(&leader_epoch.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_AT]), meta);
    out[CRC_AT..ENVELOPE_HEADER].copy_from_slice(&crc.to_le_bytes());
    let meta_end = ENVELOPE_HEADER + meta.len();
    out[ENVELOPE_HEADER..meta_end].copy_from_slice(meta);
    if let Some((bytes, _, _)) = batch {
        out[meta_end..].copy_from_slice(bytes);
    }
}

/// Splits an envelope into metadata and batch, checking its CRC.
pub(crate) fn decode_envelope(
    group: GroupId,
    index: u64,
    bytes: &[u8],
) -> Result<Envelope<'_>, ReadError> {
    let corrupt = |reason| ReadError::CorruptEntry {
        group,
        index,
        offset: None,
        reason,
    };
    let header: &[u8; ENVELOPE_HEADER] = bytes
        .get(..ENVELOPE_HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or(corrupt("envelope shorter than its header"))?;
    let flags = header[0];
    let meta_len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut base_offset = [0u8; 8];
    base_offset.copy_from_slice(&header[5..13]);
    let mut leader_epoch = [0u8; 4];
    leader_epoch.copy_from_slice(&header[13..17]);
    let mut stored_crc = [0u8; 4];
    stored_crc.copy_from_slice(&header[CRC_AT..CRC_AT + 4]);
    let rest = &bytes[ENVELOPE_HEADER..];
    if rest.len() < meta_len {
        return Err(corrupt("metadata length past the end of the entry"));
    }
    let (meta, batch) = rest.split_at(meta_len);
    if crc32c::crc32c_append(crc32c::crc32c(&header[..CRC_AT]), meta)
        != u32::from_le_bytes(stored_crc)
    {
        return Err(corrupt("entry envelope checksum mismatch"));
    }
    let batch = match flags {
        0 if batch.is_empty() => None,
        FLAG_HAS_BATCH => Some(StoredBatch {
            bytes: batch,
            base_offset: Offset(u64::from_le_bytes(base_offset)),
            leader_epoch: i32::from_le_bytes(leader_epoch),
        }),
        _ => return Err(corrupt("unknown envelope flags or trailing bytes")),
    };
    Ok(Envelope { meta, batch })
}

/// Verifies a stored batch: the batch itself (CRC, structure, records), then what its CRC does
/// not cover against what the log recorded (base offset and leader epoch in the envelope), and,
/// when given, the batch's offset index row. Any difference is corruption at the offset the
/// envelope gives the batch. `bytes` are `stored.bytes` taken out of the read transaction: a
/// copy, or the stored value itself ([`StoredValue`]).
pub(crate) fn verify_stored(
    group: GroupId,
    index: u64,
    stored: StoredBatch<'_>,
    bytes: Bytes,
    row: Option<IndexRow>,
) -> Result<EncodedBatch, ReadError> {
    debug_assert_eq!(
        bytes.len(),
        stored.bytes.len(),
        "the stored batch's own bytes"
    );
    let offset = stored.base_offset;
    let batch = EncodedBatch::verify(bytes).map_err(|source| ReadError::Corrupt {
        group,
        index,
        offset,
        source,
    })?;
    let header = batch.header();
    let disagrees = if header.base_offset != offset {
        Some("the batch's base offset is not the one the log assigned")
    } else if header.partition_leader_epoch != stored.leader_epoch {
        Some("the batch's leader epoch is not the one the log stamped")
    } else {
        // (The row's raft index is the entry's: the caller found the entry through it.)
        match row {
            Some((_, offset_count, _)) if header.offset_count() != u64::from(offset_count) => {
                Some("the batch spans other offsets than the offset index says")
            }
            Some((_, _, max_timestamp)) if header.max_timestamp_ms != max_timestamp => {
                Some("the batch's max timestamp differs from the offset index's")
            }
            _ => None,
        }
    };
    match disagrees {
        Some(reason) => Err(ReadError::IndexMismatch {
            group,
            index,
            offset,
            reason,
        }),
        None => Ok(batch),
    }
}

/// The CRC-32C field of stored batch bytes (big-endian, at byte 17), if they are that long.
pub(crate) fn stored_batch_crc(batch: &[u8]) -> Option<u32> {
    let crc: [u8; 4] = batch.get(17..21)?.try_into().ok()?;
    Some(u32::from_be_bytes(crc))
}

/// The `offset_index` row for a batch appended by raft entry `index`.
pub(crate) fn index_row(index: u64, batch: &EncodedBatch) -> IndexRow {
    let header = batch.header();
    (index, header.last_offset_delta + 1, header.max_timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flipped_envelope_byte_is_noticed() {
        let envelope = encode_envelope(b"{\"log_id\":7}", None);
        let decoded = decode_envelope(1, 2, &envelope).unwrap();
        assert_eq!(decoded.meta, b"{\"log_id\":7}");
        assert!(decoded.batch.is_none());
        for at in 0..envelope.len() {
            let mut damaged = envelope.clone();
            damaged[at] ^= 0x01;
            assert!(decode_envelope(1, 2, &damaged).is_err(), "byte {at}");
        }
    }
}
