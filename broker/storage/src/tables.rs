//! Table definitions and the stored entry envelope.
//!
//! ```text
//! raft_log      (group, index)        → envelope
//! raft_meta     (group, key)          → opaque bytes (vote, committed, purged, applied, …)
//! offset_index  (group, base_offset)  → (raft index, record count, max timestamp)
//! ```
//!
//! The envelope is `[flags u8][meta_len u32 LE][meta][batch]`; flag bit 0 says a record batch
//! follows the metadata. Keys are fixed-width tuples so a group's rows are contiguous and ranges
//! are cheap.

use redb::TableDefinition;

use crate::error::ReadError;

pub(crate) const RAFT_LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");
pub(crate) const RAFT_META: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("raft_meta");
pub(crate) const OFFSET_INDEX: TableDefinition<(u64, u64), (u64, u32, i64)> =
    TableDefinition::new("offset_index");

const FLAG_HAS_BATCH: u8 = 1;
const ENVELOPE_HEADER: usize = 5;

/// Writes an envelope for `meta` and an optional batch whose header gets `base_offset`.
pub(crate) fn encode_envelope(meta: &[u8], batch: Option<(&[u8], u64)>) -> Vec<u8> {
    let batch_len = batch.map_or(0, |(b, _)| b.len());
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + meta.len() + batch_len);
    out.push(if batch.is_some() { FLAG_HAS_BATCH } else { 0 });
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    if let Some((bytes, base_offset)) = batch {
        let at = out.len();
        out.extend_from_slice(bytes);
        // Stamp the offset the log assigned; the batch CRC does not cover its header.
        out[at + 8..at + 16].copy_from_slice(&base_offset.to_le_bytes());
    }
    out
}

/// Splits an envelope into metadata and batch bytes.
pub(crate) fn decode_envelope(
    group: u64,
    index: u64,
    bytes: &[u8],
) -> Result<(&[u8], Option<&[u8]>), ReadError> {
    let corrupt = |reason| ReadError::CorruptEntry {
        group,
        index,
        reason,
    };
    if bytes.len() < ENVELOPE_HEADER {
        return Err(corrupt("envelope shorter than its header"));
    }
    let flags = bytes[0];
    let meta_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let rest = &bytes[ENVELOPE_HEADER..];
    if rest.len() < meta_len {
        return Err(corrupt("metadata length past the end of the entry"));
    }
    let (meta, batch) = rest.split_at(meta_len);
    match flags {
        0 if batch.is_empty() => Ok((meta, None)),
        FLAG_HAS_BATCH => Ok((meta, Some(batch))),
        _ => Err(corrupt("unknown envelope flags or trailing bytes")),
    }
}
