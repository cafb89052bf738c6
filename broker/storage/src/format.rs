//! The storage format version of a database file, checked (and the tables created) at open.
//!
//! Every file records the format it was written in, in the `format` table. A file without
//! that table but with a raft log was written before versions were recorded (format 1: Weir's
//! first batch layout) and is converted in place ([`crate::migrate`]); a file of a format newer
//! than this build's is refused, never misread.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use crate::error::OpenError;
use crate::migrate;
use crate::tables::{OFFSET_INDEX, PRODUCERS, RAFT_LOG, RAFT_META};

/// The storage format this build writes and reads: Kafka's record batch v2 inside checksummed
/// entry envelopes that record the base offset and leader epoch stamped into each batch.
pub const STORAGE_FORMAT: u64 = 2;

pub(crate) const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
pub(crate) const VERSION_KEY: &str = "version";

/// Brings the file at `path` to [`STORAGE_FORMAT`]: creates the tables of a new file, converts
/// a format-1 file, and refuses a newer one.
pub(crate) fn prepare(db: &Database, path: &Path) -> Result<(), OpenError> {
    let tables_err = |e: redb::Error| OpenError::Tables {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let (has_format, has_log) = {
        let txn = db.begin_read().map_err(|e| tables_err(e.into()))?;
        let names: Vec<String> = txn
            .list_tables()
            .map_err(|e| tables_err(e.into()))?
            .map(|t| t.name().to_owned())
            .collect();
        (
            names.iter().any(|n| n == FORMAT.name()),
            names.iter().any(|n| n == RAFT_LOG.name()),
        )
    };
    let version = if has_format {
        let txn = db.begin_read().map_err(|e| tables_err(e.into()))?;
        let table = txn.open_table(FORMAT).map_err(|e| tables_err(e.into()))?;
        table
            .get(VERSION_KEY)
            .map_err(|e| tables_err(e.into()))?
            .map(|v| v.value())
    } else {
        None
    };
    match version {
        Some(STORAGE_FORMAT) => {}
        Some(found) if found > STORAGE_FORMAT => {
            return Err(OpenError::Format {
                path: path.to_path_buf(),
                found,
                supported: STORAGE_FORMAT,
                hint: "it was written by a newer Weir; run that version, or a newer one",
            });
        }
        Some(found) => {
            return Err(OpenError::Format {
                path: path.to_path_buf(),
                found,
                supported: STORAGE_FORMAT,
                hint: "no conversion from that format exists",
            });
        }
        // Written before formats were recorded (or a conversion from it was interrupted).
        None if has_log => migrate::from_format_1(db, path, migrate::CHUNK_BYTES)?,
        None => {}
    }
    let mut txn = db.begin_write().map_err(|e| tables_err(e.into()))?;
    txn.set_quick_repair(true);
    txn.open_table(RAFT_LOG).map_err(|e| tables_err(e.into()))?;
    txn.open_table(RAFT_META)
        .map_err(|e| tables_err(e.into()))?;
    txn.open_table(OFFSET_INDEX)
        .map_err(|e| tables_err(e.into()))?;
    txn.open_table(PRODUCERS)
        .map_err(|e| tables_err(e.into()))?;
    txn.open_table(FORMAT)
        .map_err(|e| tables_err(e.into()))?
        .insert(VERSION_KEY, STORAGE_FORMAT)
        .map_err(|e| tables_err(e.into()))?;
    txn.commit().map_err(|e| tables_err(e.into()))?;
    Ok(())
}
