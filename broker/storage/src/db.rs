//! The database handle: opening, submitting writes, and reads.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};
use weir_types::{EncodedBatch, Offset};

use crate::closing::{Closed, OpenDatabase};
use crate::committer::{Committer, Job};
use crate::compaction::CompactionState;
use crate::error::{OpenError, ReadError, WriteError};
use crate::format;
use crate::stats::StorageStats;
use crate::tables::{
    IndexRow, LOG_BYTES_META_KEY, OFFSET_INDEX, PRODUCERS, RAFT_LOG, RAFT_META, StoredValue,
    decode_envelope, stored_log_bytes, verify_stored,
};

/// Identifies one raft log inside a database. Group ids are never reused, so a deleted topic's
/// rows can never be mistaken for a new topic's.
pub type GroupId = u64;

/// Small per-group values stored beside the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MetaKey {
    /// The raft vote (term and candidate); must be durable before a vote is granted.
    Vote = 1,
    /// The last committed log id.
    Committed = 2,
    /// The last purged log id.
    Purged = 3,
    /// The state machine's applied state.
    Applied = 4,
    /// The current state machine snapshot.
    Snapshot = 5,
    /// How far the group's log is compacted (see [`CompactionState`](crate::CompactionState)),
    /// written by storage itself.
    Compaction = 6,
}

/// One entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Raft log index; entries of one group must be appended in increasing, contiguous order.
    pub index: u64,
    /// Opaque metadata from the raft layer (log id, payload kind, membership, …).
    pub meta: Bytes,
    /// A record batch, for data entries. The log assigns it the next offsets of the group.
    pub batch: Option<EncodedBatch>,
    /// The leader epoch (raft term) stamped into the stored batch, as Kafka's partition leader
    /// epoch.
    pub leader_epoch: i32,
}

/// One entry as read back.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Raft log index.
    pub index: u64,
    /// The metadata given at append time.
    pub meta: Bytes,
    /// The verified batch, with its assigned base offset and leader epoch in the header.
    pub batch: Option<EncodedBatch>,
}

/// One operation in a [`WriteBatch`]. Operations are applied in order.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Append entries to a group's log.
    Append {
        /// The raft group.
        group: GroupId,
        /// Entries in index order, continuing the log.
        entries: Vec<NewEntry>,
    },
    /// Delete every entry after `last_kept` (all of them for `None`), and their offsets.
    TruncateAfter {
        /// The raft group.
        group: GroupId,
        /// The last index to keep.
        last_kept: Option<u64>,
    },
    /// Delete every entry up to and including `index`, and their offsets.
    PurgeUpTo {
        /// The raft group.
        group: GroupId,
        /// The last index to delete.
        index: u64,
    },
    /// Set a metadata value.
    PutMeta {
        /// The raft group.
        group: GroupId,
        /// Which value.
        key: MetaKey,
        /// Its bytes.
        value: Bytes,
    },
    /// Set the state of one idempotent producer of a group.
    PutProducer {
        /// The raft group.
        group: GroupId,
        /// The producer id.
        producer_id: u64,
        /// Its state, encoded by the raft layer.
        value: Bytes,
    },
    /// Forget one idempotent producer of a group.
    DeleteProducer {
        /// The raft group.
        group: GroupId,
        /// The producer id.
        producer_id: u64,
    },
    /// Delete every entry of a group's log and their offsets, and continue the log at
    /// `next_offset`: what a replica does when it installs a snapshot cut past its whole log
    /// (it then receives the entries after the snapshot, the first at `next_offset`).
    ResetLog {
        /// The raft group.
        group: GroupId,
        /// The offset the next batch appended gets.
        next_offset: Offset,
    },
    /// Forget every idempotent producer of a group (before a snapshot's are written).
    ClearProducers {
        /// The raft group.
        group: GroupId,
    },
    /// Replace the batch at `base_offset` of `group` by `batch`, its compacted copy (same base
    /// offset, leader epoch and offsets spanned; fewer records), if the stored batch is still
    /// the one compaction read (its CRC is `expected_crc`); otherwise (trimmed, or compacted
    /// meanwhile) change nothing. The offset index row takes the copy's maximum timestamp.
    ReplaceBatch {
        /// The raft group.
        group: GroupId,
        /// The batch's base offset.
        base_offset: Offset,
        /// The CRC of the batch compaction read.
        expected_crc: u32,
        /// The compacted copy.
        batch: EncodedBatch,
    },
    /// Record how far a group's log is compacted ([`LogDb::compact`] writes it at the end of a
    /// pass), unless the log was reset ([`WriteOp::ResetLog`]) since the pass began: the pass
    /// read a log that is gone, so the state would describe batches it never saw.
    RecordCompaction {
        /// The raft group.
        group: GroupId,
        /// The state to record.
        state: CompactionState,
        /// The group's reset count when the pass began.
        resets_seen: u64,
    },
    /// Delete a group's log, offsets, producers and metadata.
    DeleteGroup {
        /// The raft group.
        group: GroupId,
    },
}

impl WriteOp {
    /// The raft group the operation changes.
    pub fn group(&self) -> GroupId {
        match self {
            WriteOp::Append { group, .. }
            | WriteOp::TruncateAfter { group, .. }
            | WriteOp::PurgeUpTo { group, .. }
            | WriteOp::ResetLog { group, .. }
            | WriteOp::PutMeta { group, .. }
            | WriteOp::PutProducer { group, .. }
            | WriteOp::DeleteProducer { group, .. }
            | WriteOp::ReplaceBatch { group, .. }
            | WriteOp::RecordCompaction { group, .. }
            | WriteOp::ClearProducers { group }
            | WriteOp::DeleteGroup { group } => *group,
        }
    }
}

/// Operations committed atomically, in one transaction (possibly shared with other batches).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// The operations, in order.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// A batch of one operation.
    pub fn one(op: WriteOp) -> Self {
        Self { ops: vec![op] }
    }
}

/// Tuning for a [`LogDb`].
#[derive(Debug, Clone)]
pub struct LogDbOptions {
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// Upper bound on the bytes one group commit gathers before committing, so one commit's
    /// latency stays bounded under a flood of writes.
    pub max_commit_bytes: usize,
    /// How long lazy writes (applied-state markers) may wait for a commit to ride on.
    pub lazy_flush_interval: Duration,
    /// Told when a commit fails, after which the database refuses every write.
    pub on_failure: OnFailure,
    /// Commit with redb's quick-repair: each commit also writes the allocator's state, so that
    /// a reopen after a crash loads it instead of walking the whole file. That state grows with
    /// the file and a commit writes it whole; without it a commit takes one fsync instead of
    /// two, and a reopen after a crash reads every page (measured in docs/operations.md, "Crash
    /// recovery"). On by default.
    pub quick_repair: bool,
}

/// What to do when a commit of a [`LogDb`] fails (an fsync error, a full disk, a broken
/// device). The database refuses every later write: after a failed fsync the kernel may have
/// dropped pages it could not write, so what the database reads back is no longer what is
/// durable, and only a restart, which reads the file again, can go on safely. Called once, on
/// the committer thread; it must be quick.
#[derive(Clone, Default)]
pub struct OnFailure(Option<Arc<FailureHook>>);

type FailureHook = dyn Fn(&WriteError) + Send + Sync;

impl OnFailure {
    /// Calls `hook` with the error of the commit that failed.
    pub fn new(hook: impl Fn(&WriteError) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(hook)))
    }

    pub(crate) fn notify(&self, error: &WriteError) {
        if let Some(hook) = &self.0 {
            hook(error);
        }
    }
}

impl std::fmt::Debug for OnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnFailure(hook)"
        } else {
            "OnFailure(none)"
        })
    }
}

impl Default for LogDbOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 256 * 1024 * 1024,
            max_commit_bytes: 64 * 1024 * 1024,
            lazy_flush_interval: Duration::from_millis(500),
            on_failure: OnFailure::default(),
            quick_repair: true,
        }
    }
}

/// The log range of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogBounds {
    /// Index of the first stored entry.
    pub first_index: Option<u64>,
    /// Index of the last stored entry.
    pub last_index: Option<u64>,
}

/// Result of a batch read for consumers.
#[derive(Debug, Clone, Default)]
pub struct BatchRead {
    /// Verified batches in offset order; the first one may start before the requested offset.
    pub batches: Vec<EncodedBatch>,
}

struct Shared {
    path: PathBuf,
    db: Arc<OpenDatabase>,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<StorageStats>,
}

/// A redb database holding many raft logs, with its committer thread.
///
/// Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct LogDb {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDb")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl LogDb {
    /// Opens (or creates) the database at `path` and starts its committer thread.
    ///
    /// After an unclean shutdown redb repairs the file; when the last commit was a quick-repair
    /// one ([`LogDbOptions::quick_repair`]) that costs O(1) rather than a walk of the whole file.
    pub fn open(path: impl AsRef<Path>, options: LogDbOptions) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let repair_path = path.clone();
        let mut builder = Database::builder();
        builder
            .set_cache_size(options.cache_bytes)
            .set_repair_callback(move |session| {
                tracing::warn!(path = %repair_path.display(), progress = session.progress(), "repairing log database after an unclean shutdown");
            });
        let db = crate::backend::create(&builder, &path).map_err(|source| OpenError::Database {
            path: path.clone(),
            source: Box::new(source),
        })?;
        format::prepare(&db, &path)?;

        let db = Arc::new(OpenDatabase::new(db));
        let stats = Arc::new(StorageStats::default());
        let (sender, receiver) = mpsc::channel();
        let committer = Committer::new(db.clone(), receiver, options, stats.clone());
        let name = format!(
            "weir-commit-{}",
            path.file_stem().and_then(|s| s.to_str()).unwrap_or("db")
        );
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || committer.run())
            .map_err(OpenError::Thread)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                db,
                sender: Mutex::new(Some(sender)),
                thread: Mutex::new(Some(thread)),
                stats,
            }),
        })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Counters of the committer.
    pub fn stats(&self) -> &StorageStats {
        &self.shared.stats
    }

    /// Tells when the file is closed: every handle to this database dropped (this one and its
    /// clones) and the committer thread ended. Until then a second open of the file fails.
    /// Batches read without a copy hold their read transaction, and with it the file, until
    /// they are dropped too.
    pub fn closed(&self) -> Closed {
        self.shared.db.closed()
    }

    /// Queues `batch` for the next group commit; `done` runs on the committer thread once it is
    /// durable (or has failed). `done` must be quick: it delays every other caller.
    ///
    /// Batches are committed in submission order.
    pub fn submit(
        &self,
        batch: WriteBatch,
        done: impl FnOnce(Result<(), WriteError>) + Send + 'static,
    ) {
        self.send(Job::durable(batch, Box::new(done)));
    }

    /// Writes `batch` and blocks until it is durable.
    pub fn write(&self, batch: WriteBatch) -> Result<(), WriteError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(batch, move |result| {
            // The receiver only disappears if the caller stopped waiting; nothing to tell then.
            let _ = tx.send(result);
        });
        rx.recv().map_err(|_| WriteError::CommitterStopped)?
    }

    /// Queues a write that needs no fsync of its own: it is committed with the next durable
    /// write, or after [`LogDbOptions::lazy_flush_interval`]. Used for state that can be
    /// rebuilt from the log after a crash, such as the applied index.
    pub fn put_lazy(&self, group: GroupId, key: MetaKey, value: Bytes) {
        self.submit_lazy(WriteBatch::one(WriteOp::PutMeta { group, key, value }));
    }

    /// Queues `batch` as a lazy write (see [`put_lazy`](Self::put_lazy)): its operations are
    /// committed together, in order with every other write, but nobody waits for them.
    pub fn submit_lazy(&self, batch: WriteBatch) {
        self.send(Job::lazy(batch));
    }

    fn send(&self, job: Job) {
        let guard = self
            .shared
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some(sender) => {
                // The receiver is gone only if the committer thread ended without a
                // shutdown: it panicked.
                if let Err(mpsc::SendError(job)) = sender.send(job) {
                    job.complete(Err(WriteError::CommitterStopped));
                }
            }
            None => job.complete(Err(WriteError::ShutDown)),
        }
    }

    /// Flushes pending lazy writes, stops the committer thread and waits for it. Later writes
    /// fail with [`WriteError::ShutDown`]; reads keep working.
    pub fn shutdown(&self) {
        let sender = self
            .shared
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(sender);
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "committer thread panicked");
        }
    }

    /// Reads a metadata value.
    pub fn meta(&self, group: GroupId, key: MetaKey) -> Result<Option<Bytes>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(RAFT_META)?;
        Ok(table
            .get((group, key as u8))?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// The idempotent producer state rows of `group`: `(producer id, value)`.
    pub fn producers(&self, group: GroupId) -> Result<Vec<(u64, Bytes)>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(PRODUCERS)?;
        table
            .range((group, 0)..=(group, u64::MAX))?
            .map(|item| {
                let (key, value) = item?;
                Ok((key.value().1, Bytes::copy_from_slice(value.value())))
            })
            .collect()
    }

    /// The first and last index stored for `group`.
    pub fn bounds(&self, group: GroupId) -> Result<LogBounds, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(RAFT_LOG)?;
        let mut range = table.range((group, 0)..=(group, u64::MAX))?;
        let first = range.next().transpose()?.map(|(k, _)| k.value().1);
        let last = range.next_back().transpose()?.map(|(k, _)| k.value().1);
        Ok(LogBounds {
            first_index: first,
            last_index: last.or(first),
        })
    }

    /// The offset after the last batch of `group` stored at a raft index up to `max_index`:
    /// where a state machine that applied the log through `max_index` continues. `None` when
    /// no batch is stored at or below it.
    pub fn next_offset_through(
        &self,
        group: GroupId,
        max_index: u64,
    ) -> Result<Option<Offset>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(OFFSET_INDEX)?;
        for row in table.range((group, 0)..=(group, u64::MAX))?.rev() {
            let (key, row) = row?;
            let (index, count, _) = row.value();
            if index <= max_index {
                return Ok(Some(Offset(key.value().1 + u64::from(count))));
            }
        }
        Ok(None)
    }

    /// The raft index and base offset of the first batch of `group` that holds an offset at or
    /// above `offset`: where a log trimmed to start at `offset` begins. `None` when every
    /// stored batch lies wholly below it.
    pub fn first_batch_reaching(
        &self,
        group: GroupId,
        offset: Offset,
    ) -> Result<Option<(u64, Offset)>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(OFFSET_INDEX)?;
        for row in table.range((group, 0)..=(group, u64::MAX))? {
            let (key, row) = row?;
            let (index, count, _) = row.value();
            let base = key.value().1;
            if base + u64::from(count) > offset.0 {
                return Ok(Some((index, Offset(base))));
            }
        }
        Ok(None)
    }

    /// Where time-based retention lets the log of `group` start: the base offset of the first
    /// batch whose newest record is to be kept (its timestamp is at or after
    /// `keep_from_ms`), or `limit` (the high watermark) when every batch below it is older. Whole
    /// batches only; never past `limit`.
    pub fn retention_point(
        &self,
        group: GroupId,
        keep_from_ms: i64,
        limit: Offset,
    ) -> Result<Offset, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(OFFSET_INDEX)?;
        for row in table.range((group, 0)..=(group, u64::MAX))? {
            let (key, row) = row?;
            let (_, count, max_timestamp) = row.value();
            let base = key.value().1;
            if max_timestamp >= keep_from_ms || base + u64::from(count) > limit.0 {
                return Ok(Offset(base.min(limit.0)));
            }
        }
        Ok(limit)
    }

    /// The first `max_batches` batches of `group` whose base offset is in `from..limit`, in
    /// order, as `(base offset, offset count, bytes stored)`: what size-based retention counts.
    /// Reads the entries themselves (their stored length), so callers scan each batch once,
    /// a bounded stretch at a time.
    pub fn batch_sizes(
        &self,
        group: GroupId,
        from: Offset,
        limit: Offset,
        max_batches: usize,
    ) -> Result<Vec<(Offset, u32, u64)>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let offsets = txn.open_table(OFFSET_INDEX)?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut sizes = Vec::new();
        if from >= limit {
            return Ok(sizes);
        }
        for row in offsets
            .range((group, from.0)..(group, limit.0))?
            .take(max_batches)
        {
            let (key, row) = row?;
            let (index, count, _) = row.value();
            let bytes = log
                .get((group, index))?
                .map_or(0, |entry| entry.value().len() as u64);
            sizes.push((Offset(key.value().1), count, bytes));
        }
        Ok(sizes)
    }

    /// A read transaction, for the crate's other readers.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, ReadError> {
        Ok(self.shared.db.begin_read()?)
    }

    /// The metadata of entry `index` of `group`, if it is stored.
    pub fn entry_meta(&self, group: GroupId, index: u64) -> Result<Option<Bytes>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(RAFT_LOG)?;
        match table.get((group, index))? {
            Some(value) => {
                let envelope = decode_envelope(group, index, value.value())?;
                Ok(Some(Bytes::copy_from_slice(envelope.meta)))
            }
            None => Ok(None),
        }
    }

    /// The metadata of the last entry of `group`, without reading its batch: enough to
    /// recover the log's position even when the batch itself is damaged.
    pub fn last_entry_meta(&self, group: GroupId) -> Result<Option<(u64, Bytes)>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(RAFT_LOG)?;
        let last = table
            .range((group, 0)..=(group, u64::MAX))?
            .next_back()
            .transpose()?;
        match last {
            Some((key, value)) => {
                let index = key.value().1;
                let envelope = decode_envelope(group, index, value.value())?;
                Ok(Some((index, Bytes::copy_from_slice(envelope.meta))))
            }
            None => Ok(None),
        }
    }

    /// Reads the entries of `group` with indexes in `range`, verifying every batch against
    /// what the log recorded for it.
    pub fn entries(
        &self,
        group: GroupId,
        range: RangeInclusive<u64>,
    ) -> Result<Vec<StoredEntry>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(RAFT_LOG)?;
        let mut out = Vec::new();
        for item in table.range((group, *range.start())..=(group, *range.end()))? {
            let (key, value) = item?;
            let index = key.value().1;
            let envelope = decode_envelope(group, index, value.value())?;
            out.push(StoredEntry {
                index,
                meta: Bytes::copy_from_slice(envelope.meta),
                batch: envelope
                    .batch
                    .map(|batch| {
                        // Raft keeps entries for a while (in flight to followers): a copy, so
                        // that no read transaction lives as long.
                        let bytes = Bytes::copy_from_slice(batch.bytes);
                        verify_stored(group, index, batch, bytes, None)
                    })
                    .transpose()?,
            });
        }
        Ok(out)
    }

    /// Reads batches holding offsets from `from` on, up to raft index `max_index` (the applied
    /// index: nothing uncommitted is ever returned), stopping once `max_bytes` of batches are
    /// gathered or a batch reaches offset `until` (at least one batch is returned when one is
    /// available): a reader that will serve records up to `until` need not read past it.
    ///
    /// A batch that fails verification is never returned: it ends the read if batches before
    /// it were gathered, and is the error if it is the first.
    pub fn read_batches(
        &self,
        group: GroupId,
        from: Offset,
        until: Offset,
        max_index: u64,
        max_bytes: usize,
    ) -> Result<BatchRead, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let offsets = txn.open_table(OFFSET_INDEX)?;
        // The batch holding `from`, or the first batch after it.
        let start = match offsets
            .range((group, 0)..=(group, from.0))?
            .next_back()
            .transpose()?
        {
            Some((key, _)) => key.value().1,
            None => from.0,
        };
        let log = txn.open_table(RAFT_LOG)?;
        let mut read = BatchRead::default();
        let mut bytes = 0usize;
        let mut expected_base: Option<u64> = None;
        for item in offsets.range((group, start)..=(group, u64::MAX))? {
            let (key, row) = item?;
            let (base_offset, row) = (Offset(key.value().1), row.value());
            let index = row.0;
            if index > max_index {
                break;
            }
            let checked = match expected_base {
                // Rows are contiguous: a missing or damaged row breaks the chain.
                Some(expected) if expected != base_offset.0 => Err(ReadError::CorruptEntry {
                    group,
                    index,
                    offset: Some(Offset(expected)),
                    reason: "the offset index has a gap here",
                }),
                _ => self.stored_batch(&log, group, index, base_offset, row),
            };
            let batch = match checked {
                Ok(batch) => batch,
                // Serve the intact prefix; the reader meets the error when it reaches the
                // damaged batch, at an exact offset.
                Err(_) if !read.batches.is_empty() => break,
                Err(e) => return Err(e),
            };
            expected_base = Some(batch.header().next_offset().0);
            if batch.header().next_offset() <= from {
                continue;
            }
            bytes += batch.bytes().len();
            let reaches_until = batch.header().next_offset() >= until;
            read.batches.push(batch);
            if bytes >= max_bytes || reaches_until {
                break;
            }
        }
        Ok(read)
    }

    /// The batch of raft entry `index`, verified against its offset index row (whose key is
    /// `base_offset`). Damage is reported at `base_offset`.
    fn stored_batch(
        &self,
        log: &redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
        group: GroupId,
        index: u64,
        base_offset: Offset,
        row: IndexRow,
    ) -> Result<EncodedBatch, ReadError> {
        let corrupt = |reason| ReadError::CorruptEntry {
            group,
            index,
            offset: Some(base_offset),
            reason,
        };
        let stored = log
            .get_owned((group, index))?
            .ok_or(corrupt("the offset index points at a missing raft entry"))?;
        // The batch is served straight from the stored value, not copied out of it.
        let stored = Bytes::from_owner(StoredValue(stored));
        let envelope = decode_envelope(group, index, &stored).map_err(|e| match e {
            ReadError::CorruptEntry { reason, .. } => corrupt(reason),
            other => other,
        })?;
        let batch = envelope.batch.ok_or(corrupt(
            "the offset index points at an entry without a batch",
        ))?;
        if batch.base_offset != base_offset {
            return Err(corrupt(
                "the raft entry's batch has another base offset than the offset index says",
            ));
        }
        let bytes = stored.slice_ref(batch.bytes);
        verify_stored(group, index, batch, bytes, Some(row))
    }

    /// The bytes of the log entries `group` stores (their envelopes: the record batches and
    /// raft's metadata; not the offset index rows or the pages redb keeps free). What a replica
    /// takes on disk, near enough: the data file is larger by redb's overhead and free pages.
    pub fn log_bytes(&self, group: GroupId) -> Result<u64, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        if let Some(value) = meta.get((group, LOG_BYTES_META_KEY))? {
            let bytes = <[u8; 8]>::try_from(value.value()).map_err(|_| {
                ReadError::from(redb::StorageError::Corrupted(format!(
                    "group {group}: the stored log bytes are not 8 bytes"
                )))
            })?;
            return Ok(u64::from_le_bytes(bytes));
        }
        // Not written since the figure was kept: count once.
        let log = txn.open_table(RAFT_LOG)?;
        Ok(stored_log_bytes(&log, group)?)
    }

    /// The first offset still stored in `group`, if any batch is stored.
    pub fn first_offset(&self, group: GroupId) -> Result<Option<Offset>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let offsets = txn.open_table(OFFSET_INDEX)?;
        let first = offsets
            .range((group, 0)..=(group, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| Offset(k.value().1));
        Ok(first)
    }

    /// The first record whose timestamp is at least `timestamp_ms`, looking only at entries up
    /// to raft index `max_index`. Returns its offset and timestamp.
    ///
    /// Scans the offset index (one small row per batch) for the first batch whose maximum
    /// timestamp qualifies, then decodes that batch only.
    pub fn offset_for_timestamp(
        &self,
        group: GroupId,
        timestamp_ms: i64,
        max_index: u64,
    ) -> Result<Option<(Offset, i64)>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let offsets = txn.open_table(OFFSET_INDEX)?;
        let log = txn.open_table(RAFT_LOG)?;
        for item in offsets.range((group, 0)..=(group, u64::MAX))? {
            let (key, row) = item?;
            let (base_offset, row) = (Offset(key.value().1), row.value());
            let (index, _, max_ts) = row;
            if index > max_index {
                break;
            }
            if max_ts < timestamp_ms {
                continue;
            }
            let batch = self.stored_batch(&log, group, index, base_offset, row)?;
            for record in batch.records() {
                let (offset, record) = record.map_err(|source| ReadError::Corrupt {
                    group,
                    index,
                    offset: base_offset,
                    source,
                })?;
                if record.timestamp_ms >= timestamp_ms {
                    return Ok(Some((offset, record.timestamp_ms)));
                }
            }
        }
        Ok(None)
    }

    /// Every group with at least one stored row in its log or its metadata.
    pub fn groups(&self) -> Result<Vec<GroupId>, ReadError> {
        let txn = self.shared.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut groups = std::collections::BTreeSet::new();
        // Skip from group to group rather than scanning every row.
        let mut next = meta.first()?.map(|(k, _)| k.value().0);
        while let Some(group) = next {
            groups.insert(group);
            next = match group.checked_add(1) {
                Some(g) => meta
                    .range((g, 0u8)..)?
                    .next()
                    .transpose()?
                    .map(|(k, _)| k.value().0),
                None => None,
            };
        }
        let mut next = log.first()?.map(|(k, _)| k.value().0);
        while let Some(group) = next {
            groups.insert(group);
            next = match group.checked_add(1) {
                Some(g) => log
                    .range((g, 0u64)..)?
                    .next()
                    .transpose()?
                    .map(|(k, _)| k.value().0),
                None => None,
            };
        }
        Ok(groups.into_iter().collect())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping the sender ends the committer loop; join so the file is closed cleanly.
        self.sender
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::{BatchLimits, Record};

    fn batch(values: &[&str]) -> EncodedBatch {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                value: Bytes::copy_from_slice(v.as_bytes()),
                timestamp_ms: 1_000 + v.len() as i64,
                ..Record::default()
            })
            .collect();
        EncodedBatch::encode(&records, BatchLimits::default()).unwrap()
    }

    fn data(index: u64, values: &[&str]) -> NewEntry {
        NewEntry {
            index,
            meta: Bytes::from(format!("meta-{index}")),
            batch: Some(batch(values)),
            leader_epoch: 3,
        }
    }

    fn blank(index: u64) -> NewEntry {
        NewEntry {
            index,
            meta: Bytes::from_static(b"blank"),
            batch: None,
            leader_epoch: 3,
        }
    }

    fn append(db: &LogDb, group: GroupId, entries: Vec<NewEntry>) {
        db.write(WriteBatch::one(WriteOp::Append { group, entries }))
            .unwrap();
    }

    fn values(db: &LogDb, group: GroupId, from: u64, max_index: u64) -> Vec<(u64, String)> {
        let read = db
            .read_batches(group, Offset(from), Offset(u64::MAX), max_index, usize::MAX)
            .unwrap();
        read.batches
            .iter()
            .flat_map(|b| b.records().map(Result::unwrap))
            .filter(|(o, _)| o.0 >= from)
            .map(|(o, r)| (o.0, String::from_utf8(r.value.to_vec()).unwrap()))
            .collect()
    }

    fn open(dir: &tempfile::TempDir) -> LogDb {
        LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).unwrap()
    }

    /// Bytes of the database's allocated pages, read in a write transaction that is dropped:
    /// the committer is idle between the test's writes.
    fn allocated_bytes(db: &LogDb) -> u64 {
        let stats = db.shared.db.begin_write().unwrap().stats().unwrap();
        stats.allocated_pages() * stats.page_size() as u64
    }

    /// An entry holding a batch of exactly `batch_len` bytes, with `meta_len` bytes of metadata.
    fn entry_of_len(index: u64, meta_len: usize, batch_len: usize) -> NewEntry {
        // Records of 1 KiB, and a last one grown or shrunk by what the batch lacks or overshoots
        // (a longer value may take a wider length field, hence a second round).
        let kib = Record {
            value: Bytes::from(vec![b'v'; 1024]),
            ..Record::default()
        };
        let mut records = vec![kib; batch_len / 1100];
        records.push(Record::default());
        let batch = (0..4)
            .find_map(|_| {
                let batch = EncodedBatch::encode(&records, BatchLimits::default()).unwrap();
                let len = batch.bytes().len();
                if len == batch_len {
                    return Some(batch);
                }
                let last = records.last_mut().unwrap();
                let wanted = (last.value.len() + batch_len).checked_sub(len).unwrap();
                last.value = Bytes::from(vec![b'w'; wanted]);
                None
            })
            .expect("a batch of exactly the length asked for");
        NewEntry {
            index,
            meta: Bytes::from(vec![b'm'; meta_len]),
            batch: Some(batch),
            leader_epoch: 3,
        }
    }

    /// The log keeps each entry in a power-of-two run of pages, so the batch size that
    /// `STORED_BATCH_OVERHEAD` promises fills 1 MiB with 1 KiB of metadata (more than any
    /// entry's, see weir-raft's log store), and one byte more than 1 MiB takes 2 MiB.
    #[test]
    fn a_batch_within_the_stored_overhead_of_a_power_of_two_fills_one_page_run() {
        const MIB: usize = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(&db, 4, vec![data(1, &["first"])]);
        let cost = |index, batch_len| {
            let before = allocated_bytes(&db);
            append(&db, 4, vec![entry_of_len(index, 1024, batch_len)]);
            allocated_bytes(&db) - before
        };
        let fitting = cost(2, MIB - weir_types::STORED_BATCH_OVERHEAD);
        assert!(
            (MIB as u64..MIB as u64 + 64 * 1024).contains(&fitting),
            "{fitting}"
        );
        let over = cost(3, MIB + 1);
        assert!(over >= 2 * MIB as u64, "{over}");
    }

    /// Batches are served straight from the stored values (no copy), so a reader holding them
    /// holds their read transaction: the log may be purged and written on meanwhile, and what
    /// the reader holds stays what it read (redb frees the pages only after the reader lets go;
    /// in a debug build redb asserts that no page still referenced is freed or reused).
    #[test]
    fn batches_a_reader_holds_outlive_the_purge_of_their_entries_and_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let big = |tag: char| tag.to_string().repeat(20_000);
        let (a, b) = (big('a'), big('b'));
        append(&db, 4, vec![data(1, &[&a, &b]), data(2, &[&a])]);
        let held = db
            .read_batches(4, Offset(0), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap()
            .batches;
        db.write(WriteBatch::one(WriteOp::PurgeUpTo { group: 4, index: 2 }))
            .unwrap();
        for index in 3..10 {
            let c = big(char::from(b'c' + index as u8));
            append(&db, 4, vec![data(index, &[&c, &c])]);
        }
        let read: Vec<(u64, String)> = held
            .iter()
            .flat_map(|b| b.records().map(Result::unwrap))
            .map(|(o, r)| (o.0, String::from_utf8(r.value.to_vec()).unwrap()))
            .collect();
        assert_eq!(read, vec![(0, a.clone()), (1, b), (2, a)]);
        drop(held);
        // Once let go, the purged entries' pages are reused without complaint.
        append(&db, 4, vec![data(10, &[&big('z')])]);
        assert_eq!(values(&db, 4, 17, u64::MAX), vec![(17, big('z'))]);
    }

    /// A replica moved away may still be applying when its data is deleted: its lazily
    /// written applied marker must not land afterwards, or a replica moved back would find a
    /// state machine ahead of an empty log.
    #[test]
    fn a_deleted_group_takes_no_late_lazy_write_until_it_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(&db, 5, vec![data(1, &["a"])]);
        db.put_lazy(5, MetaKey::Applied, Bytes::from_static(b"old"));
        db.write(WriteBatch::one(WriteOp::DeleteGroup { group: 5 }))
            .unwrap();
        db.put_lazy(5, MetaKey::Applied, Bytes::from_static(b"late"));
        // A durable write of another group commits the pending lazy ones.
        append(&db, 6, vec![data(1, &["b"])]);
        assert_eq!(db.meta(5, MetaKey::Applied).unwrap(), None);
        assert!(!db.groups().unwrap().contains(&5));

        // Moved back: the group's first durable write starts it again.
        append(&db, 5, vec![data(1, &["c"])]);
        db.put_lazy(5, MetaKey::Applied, Bytes::from_static(b"new"));
        append(&db, 6, vec![data(2, &["d"])]);
        assert_eq!(
            db.meta(5, MetaKey::Applied).unwrap().as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(values(&db, 5, 0, u64::MAX), [(0, "c".to_owned())]);
    }

    /// Callers waiting on a committer thread that died must be told, not left waiting: a raft
    /// group waiting for its append would hang with every produce behind it.
    #[test]
    fn writes_waiting_on_a_committer_that_panicked_fail_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let (told, outcome) = mpsc::channel();
        // Completions run on the committer thread: one that panics takes the thread down.
        db.submit(WriteBatch { ops: Vec::new() }, |_| {
            panic!("a completion panics on the committer thread")
        });
        for _ in 0..3 {
            let told = told.clone();
            db.submit(
                WriteBatch::one(WriteOp::Append {
                    group: 1,
                    entries: vec![blank(1)],
                }),
                move |result| {
                    let _ = told.send(result);
                },
            );
        }
        for _ in 0..3 {
            let result = outcome
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a write queued behind the panic was never completed");
            assert!(
                matches!(result, Err(WriteError::CommitterStopped)),
                "{result:?}"
            );
        }
        assert!(matches!(
            db.write(WriteBatch { ops: Vec::new() }),
            Err(WriteError::CommitterStopped)
        ));
    }

    #[test]
    fn offsets_are_assigned_from_the_log_prefix_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(
            &db,
            7,
            vec![blank(1), data(2, &["a", "b"]), data(3, &["c"])],
        );
        append(&db, 8, vec![data(1, &["x"])]);
        append(&db, 7, vec![blank(4), data(5, &["d", "e", "f"])]);
        assert_eq!(
            values(&db, 7, 0, u64::MAX),
            vec![
                (0, "a".into()),
                (1, "b".into()),
                (2, "c".into()),
                (3, "d".into()),
                (4, "e".into()),
                (5, "f".into())
            ]
        );
        assert_eq!(values(&db, 8, 0, u64::MAX), vec![(0, "x".into())]);
        assert_eq!(
            values(&db, 7, 4, u64::MAX),
            vec![(4, "e".into()), (5, "f".into())]
        );
        // Nothing past the applied index is served.
        assert_eq!(values(&db, 7, 0, 2), vec![(0, "a".into()), (1, "b".into())]);
        // A reader that serves offsets below 2 reads no batch past the one that reaches 2.
        let read = db
            .read_batches(7, Offset(0), Offset(2), u64::MAX, usize::MAX)
            .unwrap();
        let bases: Vec<u64> = read
            .batches
            .iter()
            .map(|b| b.header().base_offset.0)
            .collect();
        assert_eq!(bases, [0]);
        let read = db
            .read_batches(7, Offset(0), Offset(3), u64::MAX, usize::MAX)
            .unwrap();
        assert_eq!(read.batches.len(), 2);
        let entries = db.entries(7, 1..=5).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(&entries[0].meta[..], b"blank");
        assert_eq!(
            entries[4].batch.as_ref().unwrap().header().base_offset,
            Offset(3)
        );
        assert_eq!(
            db.bounds(7).unwrap(),
            LogBounds {
                first_index: Some(1),
                last_index: Some(5)
            }
        );
        assert_eq!(db.groups().unwrap(), vec![7, 8]);
    }

    /// The envelope bytes of `group`'s entries, added up from what reading them returns.
    fn envelope_bytes(db: &LogDb, group: GroupId) -> u64 {
        db.entries(group, 0..=u64::MAX)
            .unwrap()
            .iter()
            .map(|e| {
                (crate::tables::ENVELOPE_HEADER
                    + e.meta.len()
                    + e.batch.as_ref().map_or(0, |b| b.bytes().len())) as u64
            })
            .sum()
    }

    #[test]
    fn log_bytes_follow_appends_truncations_purges_resets_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        assert_eq!(db.log_bytes(1).unwrap(), 0);
        append(
            &db,
            1,
            vec![
                blank(1),
                data(2, &["a", "bb"]),
                data(3, &["ccc"]),
                data(4, &["d"]),
            ],
        );
        append(&db, 2, vec![data(1, &["other group"])]);
        let full = envelope_bytes(&db, 1);
        assert!(full > 0);
        assert_eq!(db.log_bytes(1).unwrap(), full);
        db.write(WriteBatch::one(WriteOp::TruncateAfter {
            group: 1,
            last_kept: Some(3),
        }))
        .unwrap();
        assert!(envelope_bytes(&db, 1) < full);
        assert_eq!(db.log_bytes(1).unwrap(), envelope_bytes(&db, 1));
        db.write(WriteBatch::one(WriteOp::PurgeUpTo { group: 1, index: 2 }))
            .unwrap();
        assert_eq!(db.log_bytes(1).unwrap(), envelope_bytes(&db, 1));
        assert_eq!(db.log_bytes(2).unwrap(), envelope_bytes(&db, 2));

        // The figure survives a reopen, and goes on from there.
        drop(db);
        let db = open(&dir);
        append(&db, 1, vec![data(4, &["e"])]);
        assert_eq!(db.log_bytes(1).unwrap(), envelope_bytes(&db, 1));
        db.write(WriteBatch::one(WriteOp::ResetLog {
            group: 1,
            next_offset: Offset(100),
        }))
        .unwrap();
        assert_eq!(db.log_bytes(1).unwrap(), 0);
        append(&db, 1, vec![data(9, &["after the reset"])]);
        assert_eq!(db.log_bytes(1).unwrap(), envelope_bytes(&db, 1));
        db.write(WriteBatch::one(WriteOp::DeleteGroup { group: 1 }))
            .unwrap();
        assert_eq!(db.log_bytes(1).unwrap(), 0);
        append(&db, 1, vec![data(1, &["moved back"])]);
        assert_eq!(db.log_bytes(1).unwrap(), envelope_bytes(&db, 1));
        assert_eq!(db.log_bytes(2).unwrap(), envelope_bytes(&db, 2));
    }

    #[test]
    fn truncation_rewinds_offsets_and_purge_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(
            &db,
            1,
            vec![data(1, &["a"]), data(2, &["b", "c"]), data(3, &["d"])],
        );
        db.write(WriteBatch::one(WriteOp::TruncateAfter {
            group: 1,
            last_kept: Some(1),
        }))
        .unwrap();
        append(&db, 1, vec![data(2, &["B"])]);
        assert_eq!(
            values(&db, 1, 0, u64::MAX),
            vec![(0, "a".into()), (1, "B".into())]
        );

        db.write(WriteBatch::one(WriteOp::PurgeUpTo { group: 1, index: 2 }))
            .unwrap();
        assert_eq!(db.first_offset(1).unwrap(), None);
        assert_eq!(db.bounds(1).unwrap(), LogBounds::default());
        drop(db);
        // The next offset survives a purge of the whole log and a restart.
        let db = open(&dir);
        append(&db, 1, vec![data(3, &["z"])]);
        assert_eq!(values(&db, 1, 0, u64::MAX), vec![(2, "z".into())]);
        assert_eq!(db.first_offset(1).unwrap(), Some(Offset(2)));
    }

    #[test]
    fn retention_and_trim_points_follow_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        // Record timestamps are 1 000 + the value's length.
        append(
            &db,
            1,
            vec![
                data(1, &["a", "bb"]),
                blank(2),
                data(3, &["ccc"]),
                data(4, &["dddd", "e"]),
            ],
        );
        // Offsets: 0-1 at index 1 (newest 1 002), 2 at index 3 (1 003), 3-4 at index 4 (1 004).
        assert_eq!(db.retention_point(1, 1_003, Offset(5)).unwrap(), Offset(2));
        assert_eq!(db.retention_point(1, 1_002, Offset(5)).unwrap(), Offset(0));
        assert_eq!(db.retention_point(1, 9_999, Offset(5)).unwrap(), Offset(5));
        // Never past the limit (the high watermark), even when older.
        assert_eq!(db.retention_point(1, 9_999, Offset(3)).unwrap(), Offset(3));
        assert_eq!(
            db.first_batch_reaching(1, Offset(1)).unwrap(),
            Some((1, Offset(0)))
        );
        assert_eq!(
            db.first_batch_reaching(1, Offset(2)).unwrap(),
            Some((3, Offset(2)))
        );
        assert_eq!(db.first_batch_reaching(1, Offset(5)).unwrap(), None);
        assert_eq!(db.entry_meta(1, 2).unwrap().as_deref(), Some(&b"blank"[..]));
        assert_eq!(db.entry_meta(1, 9).unwrap(), None);
    }

    #[test]
    fn batch_sizes_are_the_stored_lengths_of_the_batches_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(
            &db,
            1,
            vec![
                data(1, &["a", "bb"]),
                blank(2),
                data(3, &["c".repeat(500).as_str()]),
            ],
        );
        let sizes = db.batch_sizes(1, Offset(0), Offset(3), 10).unwrap();
        assert_eq!(
            sizes.iter().map(|&(o, c, _)| (o, c)).collect::<Vec<_>>(),
            vec![(Offset(0), 2), (Offset(2), 1)]
        );
        assert!(sizes[1].2 > 500 && sizes[1].2 > sizes[0].2, "{sizes:?}");
        assert_eq!(
            db.batch_sizes(1, Offset(2), Offset(3), 10).unwrap().len(),
            1
        );
        assert_eq!(
            db.batch_sizes(1, Offset(0), Offset(3), 1).unwrap(),
            sizes[..1]
        );
        assert_eq!(
            db.batch_sizes(1, Offset(3), Offset(3), 10).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn a_reset_log_continues_at_the_given_offset_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(&db, 1, vec![data(1, &["a"]), data(2, &["b"])]);
        db.write(WriteBatch::one(WriteOp::ResetLog {
            group: 1,
            next_offset: Offset(40),
        }))
        .unwrap();
        assert_eq!(db.bounds(1).unwrap(), LogBounds::default());
        assert_eq!(db.first_offset(1).unwrap(), None);
        drop(db);
        let db = open(&dir);
        append(&db, 1, vec![data(10, &["x", "y"])]);
        assert_eq!(
            values(&db, 1, 0, u64::MAX),
            vec![(40, "x".into()), (41, "y".into())]
        );
    }

    #[test]
    fn data_survives_reopen_and_lazy_writes_are_flushed_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(&db, 3, vec![data(1, &["one"]), data(2, &["two"])]);
        db.put_lazy(3, MetaKey::Applied, Bytes::from_static(b"applied-2"));
        db.shutdown();
        assert!(matches!(
            db.write(WriteBatch::one(WriteOp::DeleteGroup { group: 3 })),
            Err(WriteError::ShutDown)
        ));
        drop(db);
        let db = open(&dir);
        assert_eq!(
            db.meta(3, MetaKey::Applied).unwrap().as_deref(),
            Some(&b"applied-2"[..])
        );
        append(&db, 3, vec![data(3, &["three"])]);
        assert_eq!(
            values(&db, 3, 1, u64::MAX),
            vec![(1, "two".into()), (2, "three".into())]
        );
    }

    #[test]
    fn a_damaged_batch_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
            append(&db, 5, vec![data(1, &["good"]), data(2, &["bad"])]);
        }
        assert_eq!(crate::fault::batch_indexes(&path, 5).unwrap(), vec![1, 2]);
        assert!(crate::fault::flip_last_byte(&path, 5, 2).unwrap());
        let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
        let err = db
            .read_batches(5, Offset(1), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Corrupt {
                    group: 5,
                    index: 2,
                    offset: Offset(1),
                    ..
                }
            ),
            "{err:?}"
        );
        // The batch before the damage is still served, and the read stops before the damage.
        assert_eq!(values(&db, 5, 0, u64::MAX), vec![(0, "good".into())]);
    }

    /// Every byte of a stored batch, flipped on its own: header fields the CRC covers, those it
    /// does not (base offset, length, leader epoch, magic, the CRC itself), and the records.
    /// Every read path reports the damage at the batch's offset; nothing wrong is returned;
    /// the other group is untouched.
    #[test]
    fn every_flipped_byte_of_a_stored_batch_is_corruption_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
            append(
                &db,
                1,
                vec![data(1, &["a", "b"]), data(2, &["victim", "c"])],
            );
            append(&db, 2, vec![data(1, &["other"])]);
        }
        let len = crate::fault::batch_len(&path, 1, 2).unwrap().unwrap();
        assert!(len > weir_types::BATCH_HEADER_LEN);
        for at in 0..len {
            assert!(crate::fault::flip_batch_byte(&path, 1, 2, at).unwrap());
            {
                let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
                let err = db
                    .read_batches(1, Offset(2), Offset(u64::MAX), u64::MAX, usize::MAX)
                    .unwrap_err();
                assert_eq!(err.corrupt_offset(), Some(Offset(2)), "byte {at}: {err}");
                let err = db.entries(1, 1..=2).unwrap_err();
                assert_eq!(err.corrupt_offset(), Some(Offset(2)), "byte {at}: {err}");
                let err = db.offset_for_timestamp(1, 1_006, u64::MAX).unwrap_err();
                assert_eq!(err.corrupt_offset(), Some(Offset(2)), "byte {at}: {err}");
                // The intact batch before it, and the other group, are served as they were.
                assert_eq!(
                    values(&db, 1, 0, u64::MAX),
                    vec![(0, "a".into()), (1, "b".into())],
                    "byte {at}"
                );
                assert_eq!(values(&db, 2, 0, u64::MAX), vec![(0, "other".into())]);
            }
            // Undo, and check the undo, before the next byte.
            assert!(crate::fault::flip_batch_byte(&path, 1, 2, at).unwrap());
        }
        let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
        assert_eq!(values(&db, 1, 2, u64::MAX).len(), 2);
    }

    /// The file stays open (a second open fails) while any handle lives, shut down or not, and
    /// `closed` says when the last one let go and the file can be opened again.
    #[test]
    fn closed_tells_when_the_last_handle_let_go_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let db = LogDb::open(&path, LogDbOptions::default()).unwrap();
        append(&db, 1, vec![data(1, &["v"])]);
        let held = db.clone();
        let closed = db.closed();
        db.shutdown();
        drop(db);
        assert!(
            !closed.wait(Duration::ZERO),
            "a handle still holds the file"
        );
        let err = LogDb::open(&path, LogDbOptions::default()).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause.as_ref().is_some_and(|c| c.contains("already open")),
            "{err}: {cause:?}"
        );
        drop(held);
        assert!(closed.wait(Duration::from_secs(30)));
        let reopened = LogDb::open(&path, LogDbOptions::default()).unwrap();
        assert_eq!(values(&reopened, 1, 0, u64::MAX), vec![(0, "v".to_owned())]);

        // Without a shutdown, the file closes once the committer thread has seen the last
        // handle go.
        let closed = reopened.closed();
        drop(reopened);
        assert!(closed.wait(Duration::from_secs(30)));
        LogDb::open(&path, LogDbOptions::default()).unwrap();
    }

    #[test]
    fn concurrent_writers_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let threads: Vec<_> = (0..8u64)
            .map(|group| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for index in 1..=50 {
                        append(&db, group, vec![data(index, &["v"])]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for group in 0..8 {
            let got = values(&db, group, 0, u64::MAX);
            assert_eq!(got.len(), 50);
            assert_eq!(got.last().unwrap().0, 49);
        }
        let requests = db
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(requests, 400);
    }

    #[test]
    fn delete_group_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        append(&db, 4, vec![data(1, &["a"])]);
        db.write(WriteBatch::one(WriteOp::PutMeta {
            group: 4,
            key: MetaKey::Vote,
            value: Bytes::from_static(b"v"),
        }))
        .unwrap();
        db.write(WriteBatch {
            ops: vec![
                WriteOp::PutProducer {
                    group: 4,
                    producer_id: 7,
                    value: Bytes::from_static(b"p7"),
                },
                WriteOp::PutProducer {
                    group: 4,
                    producer_id: 8,
                    value: Bytes::from_static(b"p8"),
                },
                WriteOp::DeleteProducer {
                    group: 4,
                    producer_id: 7,
                },
            ],
        })
        .unwrap();
        assert_eq!(
            db.producers(4).unwrap(),
            vec![(8, Bytes::from_static(b"p8"))]
        );
        db.write(WriteBatch::one(WriteOp::DeleteGroup { group: 4 }))
            .unwrap();
        assert!(db.groups().unwrap().is_empty());
        assert!(db.producers(4).unwrap().is_empty());
        assert!(values(&db, 4, 0, u64::MAX).is_empty());
        // A recreated group starts at offset 0 again.
        append(&db, 4, vec![data(1, &["b"])]);
        assert_eq!(values(&db, 4, 0, u64::MAX), vec![(0, "b".into())]);
    }
}
