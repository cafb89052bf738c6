//! One error enum per operation: opening, writing and reading.

use std::path::PathBuf;
use std::sync::Arc;

use weir_types::{BatchError, Offset};

use crate::db::GroupId;

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory for the file could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// redb refused to open or create the file (locked by another process, corrupt, I/O error).
    #[error("cannot open log database {path}")]
    Database {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The tables could not be created or checked.
    #[error("cannot initialise tables in {path}")]
    Tables {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The file was written in a storage format this build does not read.
    #[error(
        "{path} is in storage format {found}, which this build of Weir does not read (it reads format {supported}): {hint}"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format version found.
        found: u64,
        /// The format version this build writes and reads.
        supported: u64,
        /// What to do about it.
        hint: &'static str,
    },
    /// Converting the file from an older storage format failed; the file is unchanged from
    /// the last completed step, and the conversion resumes from there at the next start.
    #[error("cannot convert {path} to storage format {to}")]
    Migration {
        /// The file.
        path: PathBuf,
        /// The format being converted to.
        to: u64,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The committer thread could not be started.
    #[error("cannot start the committer thread")]
    Thread(#[source] std::io::Error),
}

/// A write was not made durable. The database refuses every later write too: after a failed
/// fsync the state of the file is unknown, and acknowledging anything more would be a lie.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The commit (or an operation inside it) failed.
    #[error("log database commit failed")]
    Commit(#[source] Arc<redb::Error>),
    /// A previous commit failed; the database is read-only until restarted.
    #[error("log database is failed after an earlier write error; restart the node")]
    Failed,
    /// The database was shut down.
    #[error("log database is shut down")]
    ShutDown,
    /// The committer thread stopped unexpectedly (it panicked): the write may or may not be
    /// on disk, and no later write will be.
    #[error("the log database's committer thread stopped unexpectedly; restart the node")]
    CommitterStopped,
}

impl WriteError {
    pub(crate) fn commit(e: impl Into<redb::Error>) -> Self {
        Self::Commit(Arc::new(e.into()))
    }
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// redb reported an error.
    #[error("log database read failed")]
    Database(#[source] Box<redb::Error>),
    /// A stored batch failed verification: the data on disk is damaged and is not served.
    #[error("corrupt batch at offset {offset} (group {group}, raft index {index})")]
    Corrupt {
        /// The raft group.
        group: GroupId,
        /// The raft log index of the damaged entry.
        index: u64,
        /// The offset the log assigned to the batch's first record.
        offset: Offset,
        /// What the verification found.
        #[source]
        source: BatchError,
    },
    /// A stored batch verified on its own but disagrees with what the log recorded for it: a
    /// field the batch CRC does not cover (base offset, leader epoch) was damaged, or the
    /// offset index was.
    #[error("corrupt batch at offset {offset} (group {group}, raft index {index}): {reason}")]
    IndexMismatch {
        /// The raft group.
        group: GroupId,
        /// The raft log index of the entry.
        index: u64,
        /// The offset the log gave the batch.
        offset: Offset,
        /// What disagrees.
        reason: &'static str,
    },
    /// A stored entry's envelope is unreadable.
    #[error("corrupt log entry in group {group} at raft index {index}{}: {reason}", .offset.map(|o| format!(" (the batch at offset {o})")).unwrap_or_default())]
    CorruptEntry {
        /// The raft group.
        group: GroupId,
        /// The raft log index.
        index: u64,
        /// The offset of the entry's batch, when the offset index tells.
        offset: Option<Offset>,
        /// What was wrong.
        reason: &'static str,
    },
}

impl ReadError {
    /// The offset of the damaged batch, when the damage is in a batch.
    pub fn corrupt_offset(&self) -> Option<Offset> {
        match self {
            Self::Corrupt { offset, .. } | Self::IndexMismatch { offset, .. } => Some(*offset),
            Self::CorruptEntry { offset, .. } => *offset,
            Self::Database(_) => None,
        }
    }
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        Self::Database(Box::new(e.into()))
    }
}
