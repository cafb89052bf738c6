//! Converts a file of storage format 1 to the current format, in place, at open.
//!
//! Format 1 (Weir before December 2026) stored Weir's first batch layout (a 40-byte
//! little-endian header whose CRC covered only the payload) in envelopes without a checksum.
//! The conversion rewrites every `raft_log` entry, in chunks of about [`CHUNK_BYTES`], each chunk
//! in one transaction that also records where the next chunk starts, so an interrupted
//! conversion resumes where it stopped: the envelope gets its checksum and the stamped base
//! offset, and each batch that verifies is re-encoded as a Kafka v2 batch with the same records
//! and offsets (leader epoch 0, no producer). A batch that does not verify is kept as it was, so
//! it reads as corrupt at its offset, exactly as before the conversion. The offset index keeps
//! its rows (its layout did not change); the last transaction records the new format.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use weir_types::{BatchEncoder, BatchLimits, Header, Offset, Record};

use crate::error::OpenError;
use crate::format::{FORMAT, STORAGE_FORMAT, VERSION_KEY};
use crate::tables::{OFFSET_INDEX, RAFT_LOG, encode_envelope, envelope_as_is};

/// Bytes of entries converted per transaction.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024 * 1024;

const CURSOR_GROUP: &str = "migration.next_group";
const CURSOR_INDEX: &str = "migration.next_index";
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Converts `db` (at `path`) from format 1, `chunk_bytes` of entries per transaction.
pub(crate) fn from_format_1(
    db: &Database,
    path: &Path,
    chunk_bytes: usize,
) -> Result<(), OpenError> {
    let failed = |e: redb::Error| OpenError::Migration {
        path: path.to_path_buf(),
        to: STORAGE_FORMAT,
        source: Box::new(e),
    };
    let total = {
        let txn = db.begin_read().map_err(|e| failed(e.into()))?;
        let log = txn.open_table(RAFT_LOG).map_err(|e| failed(e.into()))?;
        log.len().map_err(|e| failed(e.into()))?
    };
    tracing::warn!(
        path = %path.display(),
        entries = total,
        "converting the log database from storage format 1 to {STORAGE_FORMAT}; this runs once"
    );
    let started = Instant::now();
    let mut last_report = started;
    let mut stats = Stats::default();
    while let Some(chunk) = convert_chunk(db, chunk_bytes).map_err(failed)? {
        stats.add(chunk);
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(
                path = %path.display(),
                converted = stats.entries,
                of = total,
                "converting the log database"
            );
        }
    }
    finish(db).map_err(failed)?;
    if stats.damaged > 0 {
        tracing::error!(
            path = %path.display(),
            damaged = stats.damaged,
            "batches that failed verification were kept as they were; reading them reports corruption at their offsets"
        );
    }
    tracing::info!(
        path = %path.display(),
        entries = stats.entries,
        batches = stats.batches,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log database converted to storage format {STORAGE_FORMAT}"
    );
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    entries: u64,
    batches: u64,
    damaged: u64,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.entries += other.entries;
        self.batches += other.batches;
        self.damaged += other.damaged;
    }
}

/// Converts the entries from the cursor on, up to `chunk_bytes`, in one transaction that also
/// moves the cursor. `None` when no entry was left.
fn convert_chunk(db: &Database, chunk_bytes: usize) -> Result<Option<Stats>, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let mut stats = Stats::default();
    {
        let mut format = txn.open_table(FORMAT)?;
        let start = (
            format.get(CURSOR_GROUP)?.map_or(0, |v| v.value()),
            format.get(CURSOR_INDEX)?.map_or(0, |v| v.value()),
        );
        let mut log = txn.open_table(RAFT_LOG)?;
        let offsets = txn.open_table(OFFSET_INDEX)?;
        let mut converted = Vec::new();
        let mut bytes = 0usize;
        for item in log.range(start..)? {
            let (key, value) = item?;
            let ((group, index), value) = (key.value(), value.value());
            bytes += value.len();
            // Only a damaged batch needs this: its own header cannot be trusted for it.
            let indexed_base = || -> Option<Offset> {
                offsets
                    .range((group, 0)..=(group, u64::MAX))
                    .ok()?
                    .filter_map(Result::ok)
                    .find(|(_, row)| row.value().0 == index)
                    .map(|(key, _)| Offset(key.value().1))
            };
            converted.push((
                (group, index),
                convert_entry(value, &mut stats, indexed_base),
            ));
            if bytes >= chunk_bytes {
                break;
            }
        }
        let Some(&((group, index), _)) = converted.last() else {
            return Ok(None);
        };
        for (key, value) in &converted {
            log.insert(*key, value.as_slice())?;
        }
        let next = match index.checked_add(1) {
            Some(next) => (group, next),
            None => (group.saturating_add(1), 0),
        };
        format.insert(CURSOR_GROUP, next.0)?;
        format.insert(CURSOR_INDEX, next.1)?;
        stats.entries = converted.len() as u64;
    }
    txn.commit()?;
    Ok(Some(stats))
}

/// The format-2 envelope for a format-1 entry. An entry whose envelope cannot be read is kept
/// as it is: the format-2 reader reports it as corrupt, as the format-1 reader did.
/// `indexed_base` gives the base offset the offset index holds for the entry.
fn convert_entry(
    old: &[u8],
    stats: &mut Stats,
    indexed_base: impl FnOnce() -> Option<Offset>,
) -> Vec<u8> {
    let Some((flags, meta, batch)) = split_old_envelope(old) else {
        stats.damaged += 1;
        return old.to_vec();
    };
    match (flags, batch) {
        (0, None) => encode_envelope(meta, None),
        (1, Some(batch)) => {
            stats.batches += 1;
            match reencode_old_batch(batch) {
                Some((base_offset, v2)) => {
                    encode_envelope(meta, Some((v2.bytes(), base_offset, 0)))
                }
                None => {
                    stats.damaged += 1;
                    // Kept verbatim inside a new envelope, at the offset the index gives it:
                    // its header is not a v2 header (its length field and CRC do not check
                    // out), so every read reports it as corrupt at that offset.
                    let base = indexed_base().unwrap_or_else(|| old_base_offset(batch));
                    envelope_as_is(meta, Some((batch, base, 0)))
                }
            }
        }
        _ => {
            stats.damaged += 1;
            old.to_vec()
        }
    }
}

/// A format-1 envelope's flags, metadata and batch.
type OldEnvelope<'a> = (u8, &'a [u8], Option<&'a [u8]>);

/// `[flags u8][meta_len u32 LE][meta][batch]`.
fn split_old_envelope(bytes: &[u8]) -> Option<OldEnvelope<'_>> {
    let (&flags, rest) = bytes.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let rest = &rest[4..];
    let meta = rest.get(..len)?;
    let batch = &rest[len..];
    Some((flags, meta, (!batch.is_empty()).then_some(batch)))
}

/// The little-endian `u64` at `at` (0 if the bytes are cut short).
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The base offset a format-1 batch header records.
fn old_base_offset(batch: &[u8]) -> Offset {
    Offset(le_u64(batch, 8))
}

/// Decodes a format-1 batch (verifying its CRC and records) and encodes its records as a v2
/// batch with the same base offset. `None` if it does not verify.
fn reencode_old_batch(bytes: &[u8]) -> Option<(Offset, weir_types::EncodedBatch)> {
    let header = bytes.get(..40)?;
    if header[0] != 1 {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
    let record_count = u32_at(4);
    let base_offset = old_base_offset(bytes);
    let first_timestamp = le_u64(bytes, 16) as i64;
    let payload = &bytes[40..];
    if payload.len() != u32_at(32) as usize || crc32c::crc32c(payload) != u32_at(36) {
        return None;
    }
    let mut rest = payload;
    // The count is unprotected (the old CRC covered the payload only): grow with what parses
    // rather than reserve what a damaged header claims.
    let mut records = Vec::new();
    for _ in 0..record_count {
        records.push(old_record(&mut rest, first_timestamp)?);
    }
    if !rest.is_empty() || records.is_empty() {
        return None;
    }
    // Format-1 batches were at most 8 MiB by default, but an operator may have raised that
    // limit: a conversion must never refuse what the old format stored.
    let limits = BatchLimits {
        max_record_bytes: usize::MAX,
        max_batch_bytes: usize::MAX,
    };
    let batch = BatchEncoder::new(limits).encode(&records).ok()?;
    Some((base_offset, batch))
}

fn old_record(buf: &mut &[u8], first_timestamp: i64) -> Option<Record> {
    let delta = zigzag(leb128(buf)?);
    let key = match zigzag(leb128(buf)?) {
        -1 => None,
        n if n >= 0 => Some(take(buf, n as u64)?),
        _ => return None,
    };
    let value_len = leb128(buf)?;
    let value = take(buf, value_len)?;
    let header_count = leb128(buf)?;
    let mut headers = Vec::new();
    for _ in 0..header_count {
        let key_len = leb128(buf)?;
        let key = String::from_utf8(take(buf, key_len)?.to_vec()).ok()?;
        let value_len = leb128(buf)?;
        headers.push(Header {
            key,
            value: take(buf, value_len)?,
        });
    }
    Some(Record {
        key,
        value,
        headers,
        timestamp_ms: first_timestamp.wrapping_add(delta),
        // Format 1 had no null values.
        tombstone: false,
    })
}

fn leb128(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

fn zigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn take(buf: &mut &[u8], len: u64) -> Option<Bytes> {
    let len = usize::try_from(len).ok()?;
    if buf.len() < len {
        return None;
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Some(Bytes::copy_from_slice(head))
}

/// Records the new format and drops the cursor, in one transaction.
fn finish(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        let mut format = txn.open_table(FORMAT)?;
        format.remove(CURSOR_GROUP)?;
        format.remove(CURSOR_INDEX)?;
        format.insert(VERSION_KEY, STORAGE_FORMAT)?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A format-1 writer, to build the files the conversion starts from.

    use super::*;

    fn put_leb128(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    fn put_zigzag(buf: &mut Vec<u8>, v: i64) {
        put_leb128(buf, ((v << 1) ^ (v >> 63)) as u64);
    }

    /// A format-1 batch of `values` at `base_offset`, keyed `k<i>`, one header, timestamps
    /// from 1 000.
    fn old_batch(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (i, value) in values.iter().enumerate() {
            put_zigzag(&mut payload, i as i64);
            let key = format!("k{i}");
            put_zigzag(&mut payload, key.len() as i64);
            payload.extend_from_slice(key.as_bytes());
            put_leb128(&mut payload, value.len() as u64);
            payload.extend_from_slice(value.as_bytes());
            put_leb128(&mut payload, 1);
            put_leb128(&mut payload, 1);
            payload.push(b'h');
            put_leb128(&mut payload, 1);
            payload.push(b'v');
        }
        let mut out = vec![1, 0, 0, 0];
        out.extend_from_slice(&(values.len() as u32).to_le_bytes());
        out.extend_from_slice(&base_offset.to_le_bytes());
        out.extend_from_slice(&1_000i64.to_le_bytes());
        out.extend_from_slice(&(1_000 + values.len() as i64 - 1).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// A format-1 envelope.
    fn old_envelope(meta: &[u8], batch: Option<&[u8]>) -> Vec<u8> {
        let mut out = vec![u8::from(batch.is_some())];
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(meta);
        out.extend_from_slice(batch.unwrap_or_default());
        out
    }

    /// A group's entries for [`write_format_1`]: `(raft index, values)`, where empty values
    /// make an entry without a batch.
    type OldGroup<'a> = (u64, Vec<(u64, Vec<&'a str>)>);

    /// Writes a format-1 file at `path`.
    fn write_format_1(path: &Path, groups: &[OldGroup<'_>]) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(RAFT_LOG).unwrap();
            let mut index = txn.open_table(crate::tables::OFFSET_INDEX).unwrap();
            txn.open_table(crate::tables::RAFT_META).unwrap();
            for (group, entries) in groups {
                let mut next_offset = 0u64;
                for (raft_index, values) in entries {
                    let meta = format!("meta-{raft_index}");
                    let envelope = if values.is_empty() {
                        old_envelope(meta.as_bytes(), None)
                    } else {
                        let batch = old_batch(next_offset, values);
                        index
                            .insert(
                                (*group, next_offset),
                                (
                                    *raft_index,
                                    values.len() as u32,
                                    1_000 + values.len() as i64 - 1,
                                ),
                            )
                            .unwrap();
                        next_offset += values.len() as u64;
                        old_envelope(meta.as_bytes(), Some(&batch))
                    };
                    log.insert((*group, *raft_index), envelope.as_slice())
                        .unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }

    fn read_all(db: &crate::LogDb, group: u64) -> Result<Vec<(u64, String)>, crate::ReadError> {
        let read = db.read_batches(group, Offset(0), Offset(u64::MAX), u64::MAX, usize::MAX)?;
        Ok(read
            .batches
            .iter()
            .flat_map(|b| b.records().map(Result::unwrap))
            .map(|(o, r)| (o.0, String::from_utf8(r.value.to_vec()).unwrap()))
            .collect())
    }

    fn pairs(values: &[(u64, &str)]) -> Vec<(u64, String)> {
        values.iter().map(|(o, v)| (*o, (*v).to_owned())).collect()
    }

    #[test]
    fn a_format_1_file_is_converted_in_place_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        write_format_1(
            &path,
            &[
                (7, vec![(1, vec![]), (2, vec!["a", "b"]), (3, vec!["c"])]),
                (
                    8,
                    vec![(1, vec!["x"]), (2, vec!["damaged"]), (3, vec!["after"])],
                ),
            ],
        );
        // Damage group 8's second batch, as a format-1 reader would have found it.
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(RAFT_LOG).unwrap();
                let mut bytes = log.get((8, 2)).unwrap().unwrap().value().to_vec();
                *bytes.last_mut().unwrap() ^= 1;
                log.insert((8, 2), bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
            // An interrupted conversion: one entry converted, then the process stops.
            assert_eq!(convert_chunk(&db, 1).unwrap().unwrap().entries, 1);
        }
        let db = crate::LogDb::open(&path, crate::LogDbOptions::default()).unwrap();
        assert_eq!(
            read_all(&db, 7).unwrap(),
            pairs(&[(0, "a"), (1, "b"), (2, "c")])
        );
        // The damaged batch is corruption at its offset; the batch before it is served.
        let err = db
            .read_batches(8, Offset(1), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap_err();
        assert_eq!(err.corrupt_offset(), Some(Offset(1)), "{err}");
        assert_eq!(read_all(&db, 8).unwrap(), pairs(&[(0, "x")]));
        let after = db
            .read_batches(8, Offset(2), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap();
        assert_eq!(after.batches[0].header().base_offset, Offset(2));
        // Entry metadata and blank entries came through.
        let entries = db.entries(7, 1..=3).unwrap();
        assert_eq!(&entries[0].meta[..], b"meta-1");
        assert!(entries[0].batch.is_none());
        // The log goes on where it was.
        db.write(crate::WriteBatch::one(crate::WriteOp::Append {
            group: 7,
            entries: vec![crate::NewEntry {
                index: 4,
                meta: Bytes::from_static(b"meta-4"),
                batch: Some(
                    weir_types::EncodedBatch::encode(
                        &[Record {
                            value: Bytes::from_static(b"d"),
                            ..Record::default()
                        }],
                        BatchLimits::default(),
                    )
                    .unwrap(),
                ),
                leader_epoch: 2,
            }],
        }))
        .unwrap();
        assert_eq!(
            read_all(&db, 7).unwrap(),
            pairs(&[(0, "a"), (1, "b"), (2, "c"), (3, "d")])
        );
        drop(db);
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let format = txn.open_table(FORMAT).unwrap();
        assert_eq!(
            format.get(VERSION_KEY).unwrap().unwrap().value(),
            STORAGE_FORMAT
        );
        assert!(format.get(CURSOR_GROUP).unwrap().is_none());
    }

    #[test]
    fn a_file_of_a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        drop(crate::LogDb::open(&path, crate::LogDbOptions::default()).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(FORMAT)
                .unwrap()
                .insert(VERSION_KEY, STORAGE_FORMAT + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = crate::LogDb::open(&path, crate::LogDbOptions::default()).unwrap_err();
        assert!(
            matches!(err, OpenError::Format { found, .. } if found == STORAGE_FORMAT + 1),
            "{err}"
        );
        assert!(err.to_string().contains("newer Weir"), "{err}");
    }

    #[test]
    fn an_old_batch_becomes_the_same_records_in_kafkas_format() {
        let old = old_batch(7, &["a", "bb"]);
        let (base, v2) = reencode_old_batch(&old).unwrap();
        assert_eq!(base, Offset(7));
        let records: Vec<Record> = v2.records().map(|r| r.unwrap().1).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(&records[1].value[..], b"bb");
        assert_eq!(records[1].timestamp_ms, 1_001);
        assert_eq!(records[1].headers[0].key, "h");
        let mut damaged = old.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(reencode_old_batch(&damaged).is_none());
    }
}
