//! Fault injection for crash and corruption tests, and for operators reproducing incidents.
//!
//! These functions open the database file directly, so the node that owns it must be stopped.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::db::GroupId;
use crate::tables::RAFT_LOG;

/// Flips one bit in the last byte of the stored entry `(group, index)`, which for a data entry
/// lies in the record payload that the batch CRC covers. Returns `false` if there is no such
/// entry.
pub fn flip_last_byte(path: &Path, group: GroupId, index: u64) -> Result<bool, redb::Error> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    let found = {
        let mut log = txn.open_table(RAFT_LOG)?;
        let value = log.get((group, index))?.map(|v| v.value().to_vec());
        match value {
            Some(mut bytes) => {
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0x01;
                }
                log.insert((group, index), bytes.as_slice())?;
                true
            }
            None => false,
        }
    };
    txn.commit()?;
    Ok(found)
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
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    let found = {
        let mut log = txn.open_table(RAFT_LOG)?;
        let exists = log.get((group, index))?.is_some();
        if exists {
            log.insert((group, index), bytes)?;
        }
        exists
    };
    txn.commit()?;
    Ok(found)
}
