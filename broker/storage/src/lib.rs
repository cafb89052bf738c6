//! Weir's log store on redb: many raft logs in one database, written by one group-commit thread.
//!
//! A node keeps every partition's raft log in a single redb file (and the controller's in a
//! second, small one). The raft log *is* the partition log: an entry that carries a record batch
//! is stored once, and the batch's Kafka-style offsets are assigned from the log prefix at append
//! time and indexed in `offset_index (group, base_offset) → raft index`.
//!
//! Writes go to one committer thread per database ([`LogDb::submit`]). It takes the first
//! request, drains everything else queued (appends of every group, votes, truncations, purges),
//! commits once with `Durability::Immediate` (and quick-repair, unless
//! [`LogDbOptions::quick_repair`] is off), and only then completes every caller: group commit,
//! with no timer, so the bytes per fsync grow with the load. Reads run on the caller's thread in
//! short read transactions; async callers use `spawn_blocking`.
//!
//! The API is synchronous and knows nothing of openraft: the raft layer hands in opaque entry
//! metadata and, for data entries, an [`EncodedBatch`](weir_types::EncodedBatch) (Kafka's
//! record batch v2) with the leader epoch to stamp into it.
//!
//! Nothing damaged is returned as data: every read verifies each batch (CRC, structure, records)
//! and checks what the batch CRC does not cover (base offset, leader epoch) against what the
//! entry's checksummed envelope recorded at append, and the batch against its offset index row. The file records its storage format
//! ([`STORAGE_FORMAT`]); an older file is converted at open, a newer one refused.

mod backend;
mod closing;
mod committer;
mod compaction;
mod db;
mod error;
pub mod fault;
mod format;
mod migrate;
mod stats;
mod tables;

pub use backend::{CreateDatabase, install_database_backend};
pub use closing::Closed;
pub use compaction::{CompactionError, CompactionOutcome, CompactionState, crash_mid_compaction};
pub use db::{
    BatchRead, GroupId, LogBounds, LogDb, LogDbOptions, MetaKey, NewEntry, OnFailure, StoredEntry,
    WriteBatch, WriteOp,
};
pub use error::{OpenError, ReadError, WriteError};
pub use format::STORAGE_FORMAT;
pub use stats::{DURATION_BOUNDS_MICROS, DurationBuckets, StorageStats};
