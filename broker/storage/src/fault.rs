//! Fault injection for crash and corruption tests, and for operators reproducing incidents.
//!
//! These functions open the database file directly, so the node that owns it must be stopped.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::db::GroupId;
use crate::tables::{ENVELOPE_HEADER, RAFT_LOG};

/// Flips one bit in the last byte of the stored entry `(group, index)`, which for a data entry
/// lies in the last record of its batch. Returns `false` if there is no such entry.
pub fn flip_last_byte(path: &Path, group: GroupId, index: u64) -> Result<bool, redb::Error> {
    update_entry(path, group, index, |bytes| {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x01;
        }
    })
}

/// Flips one bit of byte `at` of the record batch stored in entry `(group, index)`, counting
/// from the batch's first byte (its base offset). Returns `false` if there is no such entry,
/// or it holds no batch, or the batch is shorter.
pub fn flip_batch_byte(
    path: &Path,
    group: GroupId,
    index: u64,
    at: usize,
) -> Result<bool, redb::Error> {
    let mut flipped = false;
    update_entry(path, group, index, |bytes| {
        if let Some(start) = batch_start(bytes)
            && let Some(byte) = bytes.get_mut(start + at)
        {
            *byte ^= 0x01;
            flipped = true;
        }
    })?;
    Ok(flipped)
}

/// The length of the record batch stored in entry `(group, index)`, if it holds one.
pub fn batch_len(path: &Path, group: GroupId, index: u64) -> Result<Option<usize>, redb::Error> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let log = txn.open_table(RAFT_LOG)?;
    Ok(log
        .get((group, index))?
        .and_then(|v| batch_start(v.value()).map(|start| v.value().len() - start)))
}

/// The raft indexes of the entries of `group` that hold record batches.
pub fn batch_indexes(path: &Path, group: GroupId) -> Result<Vec<u64>, redb::Error> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let log = txn.open_table(RAFT_LOG)?;
    let mut out = Vec::new();
    for item in log.range((group, 0)..=(group, u64::MAX))? {
        let (key, value) = item?;
        if value.value().first() == Some(&1) {
            out.push(key.value().1);
        }
    }
    Ok(out)
}

/// Replaces the stored entry `(group, index)` with `bytes` (typically garbage, to make the
/// group's stored state unreadable). Returns `false` if there is no such entry.
pub fn overwrite_entry(
    path: &Path,
    group: GroupId,
    index: u64,
    bytes: &[u8],
) -> Result<bool, redb::Error> {
    update_entry(path, group, index, |stored| *stored = bytes.to_vec())
}

/// Where the batch of an envelope starts, if it has one.
fn batch_start(envelope: &[u8]) -> Option<usize> {
    let flags = *envelope.first()?;
    let meta_len = u32::from_le_bytes(envelope.get(1..5)?.try_into().ok()?) as usize;
    let start = ENVELOPE_HEADER + meta_len;
    (flags == 1 && start < envelope.len()).then_some(start)
}

fn update_entry(
    path: &Path,
    group: GroupId,
    index: u64,
    change: impl FnOnce(&mut Vec<u8>),
) -> Result<bool, redb::Error> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    let found = {
        let mut log = txn.open_table(RAFT_LOG)?;
        let value = log.get((group, index))?.map(|v| v.value().to_vec());
        match value {
            Some(mut bytes) => {
                change(&mut bytes);
                log.insert((group, index), bytes.as_slice())?;
                true
            }
            None => false,
        }
    };
    txn.commit()?;
    Ok(found)
}
