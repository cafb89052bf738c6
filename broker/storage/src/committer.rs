//! The committer thread: the only writer of a database, and the place group commit happens.
//!
//! Invariants:
//! - Jobs are applied in the order they were submitted, so a group's appends, truncations and
//!   votes reach the disk in raft's order.
//! - A caller is completed only after the transaction holding its job committed with
//!   `Durability::Immediate` (fsync). Lazy jobs have no caller; they ride on the next commit.
//! - After any failed commit every later job fails with [`WriteError::Failed`]: the file's state
//!   is unknown, and retrying an fsync that failed can report success for lost data.
//! - A group's deletion is final for the replica that had it: lazy writes to a deleted group
//!   are dropped until a durable write starts the group again, so a late applied marker of a
//!   replica moved away cannot land after its data was deleted.
//! - Every durable job's caller is told, exactly once: a job dropped uncompleted (the thread
//!   panicked) fails with [`WriteError::CommitterStopped`].
//! - `tails` holds, per group, the offset the next appended batch gets (the last batch's base
//!   offset plus the offsets it spans). Only this thread changes
//!   offsets, so assignment is deterministic in log order.
//! - `log_bytes` holds, per group, the bytes of the log entries it stores (their envelopes), and
//!   every transaction that changes them writes the group's [`LOG_BYTES_META_KEY`] row too, so
//!   the stored figure is always that of the stored entries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use redb::{ReadableTable, Table};
use weir_types::{EncodedBatch, Offset};

use crate::closing::OpenDatabase;
use crate::db::{GroupId, LogDbOptions, MetaKey, WriteBatch, WriteOp};
use crate::error::WriteError;
use crate::stats::StorageStats;
use crate::tables::{
    IndexRow, LOG_BYTES_META_KEY, OFFSET_INDEX, PRODUCERS, RAFT_LOG, RAFT_META, RESETS_META_KEY,
    decode_envelope, encode_envelope, envelope_len, index_row, stored_batch_crc, stored_log_bytes,
    write_envelope,
};

type Done = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

/// A submitted write.
pub(crate) struct Job {
    batch: WriteBatch,
    done: Option<Done>,
    /// When the job was handed to the committer.
    submitted: Instant,
}

impl Job {
    pub(crate) fn durable(batch: WriteBatch, done: Done) -> Self {
        Self {
            batch,
            done: Some(done),
            submitted: Instant::now(),
        }
    }

    pub(crate) fn lazy(batch: WriteBatch) -> Self {
        Self {
            batch,
            done: None,
            submitted: Instant::now(),
        }
    }

    fn is_lazy(&self) -> bool {
        self.done.is_none()
    }

    fn bytes(&self) -> usize {
        self.batch
            .ops
            .iter()
            .map(|op| match op {
                WriteOp::Append { entries, .. } => entries
                    .iter()
                    .map(|e| e.meta.len() + e.batch.as_ref().map_or(0, |b| b.bytes().len()))
                    .sum(),
                WriteOp::PutMeta { value, .. } | WriteOp::PutProducer { value, .. } => value.len(),
                WriteOp::ReplaceBatch { batch, .. } => batch.bytes().len(),
                _ => 0,
            })
            .sum()
    }

    pub(crate) fn complete(mut self, result: Result<(), WriteError>) {
        if let Some(done) = self.done.take() {
            done(result);
        }
    }
}

/// A job dropped before it was completed tells its caller so instead of leaving it waiting
/// forever: that happens when the committer thread panics (the jobs it held, and those queued
/// behind them, are dropped as it unwinds).
impl Drop for Job {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(WriteError::CommitterStopped));
        }
    }
}

/// Lazy jobs waiting for a commit; flushed on their own when this many pile up.
const MAX_PENDING_LAZY: usize = 4096;

/// A commit taking at least this long is logged: every durable write of the node waited for it.
const SLOW_COMMIT: Duration = Duration::from_secs(1);

/// Slow commits are logged at most once per this interval, with the count since the last line.
const SLOW_COMMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct Committer {
    db: Arc<OpenDatabase>,
    receiver: mpsc::Receiver<Job>,
    options: LogDbOptions,
    stats: Arc<StorageStats>,
    tails: HashMap<GroupId, u64>,
    /// Per group, the bytes of its stored log entries (loaded when first changed).
    log_bytes: HashMap<GroupId, u64>,
    /// Groups deleted since the database opened, and not written durably since: lazy writes
    /// to them are dropped.
    deleted: HashSet<GroupId>,
    lazy: Vec<Job>,
    failed: bool,
    slow_commits: SlowCommits,
}

impl Committer {
    pub(crate) fn new(
        db: Arc<OpenDatabase>,
        receiver: mpsc::Receiver<Job>,
        options: LogDbOptions,
        stats: Arc<StorageStats>,
    ) -> Self {
        Self {
            db,
            receiver,
            options,
            stats,
            tails: HashMap::new(),
            log_bytes: HashMap::new(),
            deleted: HashSet::new(),
            lazy: Vec::new(),
            failed: false,
            slow_commits: SlowCommits::default(),
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let first = if self.lazy.is_empty() {
                match self.receiver.recv() {
                    Ok(job) => job,
                    Err(mpsc::RecvError) => break,
                }
            } else {
                match self.receiver.recv_timeout(self.options.lazy_flush_interval) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let lazy = std::mem::take(&mut self.lazy);
                        self.commit(lazy);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut bytes = first.bytes();
            let mut jobs = vec![first];
            while bytes < self.options.max_commit_bytes {
                match self.receiver.try_recv() {
                    Ok(job) => {
                        bytes += job.bytes();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if jobs.iter().all(Job::is_lazy) && self.lazy.len() + jobs.len() < MAX_PENDING_LAZY {
                self.lazy.extend(jobs);
                continue;
            }
            // Lazy jobs were submitted earlier than these, so they go first.
            let mut all = std::mem::take(&mut self.lazy);
            all.extend(jobs);
            self.commit(all);
        }
        let lazy = std::mem::take(&mut self.lazy);
        if !lazy.is_empty() {
            self.commit(lazy);
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let result = if self.failed {
            Err(WriteError::Failed)
        } else {
            let started = Instant::now();
            let result = self.write(&jobs);
            let took = started.elapsed();
            let micros = took.as_micros() as u64;
            match &result {
                Ok(appended) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.commit_durations.record(micros);
                    self.slow_commits.note(took, jobs.len(), *appended);
                    self.stats
                        .appended_bytes
                        .fetch_add(*appended as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::error!(error = %error, "log database commit failed; refusing further writes");
                    self.failed = true;
                    // Offsets assigned in the failed transaction never reached the disk.
                    self.tails.clear();
                    self.log_bytes.clear();
                    self.options.on_failure.notify(error);
                }
            }
            result.map(|_| ())
        };
        let committed = Instant::now();
        let mut requests = 0;
        for job in jobs {
            if !job.is_lazy() {
                requests += 1;
                if result.is_ok() {
                    let waited = committed.saturating_duration_since(job.submitted);
                    self.stats.write_waits.record(waited.as_micros() as u64);
                }
            }
            job.complete(result.clone());
        }
        // After the waits, so a scrape never counts more requests than waits while commits
        // succeed (a failed commit's writes are counted, their waits are not).
        self.stats.requests.fetch_add(requests, Ordering::Relaxed);
    }

    /// Applies every job in one transaction and commits it; returns the bytes appended.
    fn write(&mut self, jobs: &[Job]) -> Result<usize, WriteError> {
        let mut txn = self.db.begin_write().map_err(WriteError::commit)?;
        txn.set_quick_repair(self.options.quick_repair);
        let mut appended = 0;
        {
            let mut log = txn.open_table(RAFT_LOG).map_err(WriteError::commit)?;
            let mut meta = txn.open_table(RAFT_META).map_err(WriteError::commit)?;
            let mut offsets = txn.open_table(OFFSET_INDEX).map_err(WriteError::commit)?;
            let mut producers = txn.open_table(PRODUCERS).map_err(WriteError::commit)?;
            let mut tables = Tables {
                log: &mut log,
                meta: &mut meta,
                offsets: &mut offsets,
                producers: &mut producers,
                tails: &mut self.tails,
                log_bytes: &mut self.log_bytes,
                resized: HashSet::new(),
            };
            for job in jobs {
                for op in &job.batch.ops {
                    let group = op.group();
                    if job.is_lazy() {
                        if self.deleted.contains(&group) {
                            // A late write of a deleted replica (its state machine may still
                            // have been applying): landing now would resurrect its state.
                            continue;
                        }
                    } else if matches!(op, WriteOp::DeleteGroup { .. }) {
                        self.deleted.insert(group);
                    } else {
                        // A durable write starts the group anew (a replica moved back).
                        self.deleted.remove(&group);
                    }
                    appended += tables.apply(op).map_err(WriteError::commit)?;
                }
            }
            tables.record_log_bytes().map_err(WriteError::commit)?;
        }
        txn.commit().map_err(WriteError::commit)?;
        Ok(appended)
    }
}

/// Commits that took [`SLOW_COMMIT`] or longer, logged without flooding the log.
#[derive(Default)]
struct SlowCommits {
    /// Slow commits since the last line logged.
    unreported: u64,
    last_logged: Option<Instant>,
}

impl SlowCommits {
    fn note(&mut self, took: Duration, jobs: usize, appended_bytes: usize) {
        if took < SLOW_COMMIT {
            return;
        }
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < SLOW_COMMIT_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            jobs,
            appended_bytes,
            slow_commits = self.unreported,
            "slow log commit: every durable write of this node waited for it (usually the disk's fsync or the kernel's writeback)"
        );
        self.unreported = 0;
        self.last_logged = Some(now);
    }
}

struct Tables<'a, 't> {
    log: &'a mut Table<'t, (u64, u64), &'static [u8]>,
    meta: &'a mut Table<'t, (u64, u8), &'static [u8]>,
    offsets: &'a mut Table<'t, (u64, u64), IndexRow>,
    producers: &'a mut Table<'t, (u64, u64), &'static [u8]>,
    tails: &'a mut HashMap<GroupId, u64>,
    log_bytes: &'a mut HashMap<GroupId, u64>,
    /// Groups whose log bytes this transaction changed.
    resized: HashSet<GroupId>,
}

impl Tables<'_, '_> {
    fn apply(&mut self, op: &WriteOp) -> Result<usize, redb::Error> {
        let mut appended = 0;
        match op {
            WriteOp::Append { group, entries } => {
                let group = *group;
                let before = self.log_bytes(group)?;
                let mut next_offset = self.tail(group)?;
                for entry in entries {
                    let batch = entry.batch.as_ref().map(|batch| {
                        (
                            batch.bytes().as_ref(),
                            Offset(next_offset),
                            entry.leader_epoch,
                        )
                    });
                    if let Some(batch) = &entry.batch {
                        self.offsets
                            .insert((group, next_offset), index_row(entry.index, batch))?;
                        next_offset += batch.header().offset_count();
                    }
                    // Written straight into the page redb reserves: the batch is copied once.
                    let len = envelope_len(&entry.meta, batch);
                    let mut value = self.log.insert_reserve((group, entry.index), len)?;
                    write_envelope(value.as_mut(), &entry.meta, batch);
                    appended += len;
                }
                self.tails.insert(group, next_offset);
                self.set_log_bytes(group, before + appended as u64);
            }
            WriteOp::TruncateAfter { group, last_kept } => {
                let group = *group;
                let from = last_kept.map_or(0, |i| i + 1);
                self.delete_entries(group, from, u64::MAX)?;
                // Offsets grow with the raft index, so the doomed rows are a suffix.
                let mut doomed = Vec::new();
                for item in self.offsets.range((group, 0)..=(group, u64::MAX))?.rev() {
                    let (key, value) = item?;
                    if value.value().0 < from {
                        break;
                    }
                    doomed.push(key.value().1);
                }
                for base in &doomed {
                    self.offsets.remove((group, *base))?;
                }
                if let Some(lowest) = doomed.last() {
                    self.tails.insert(group, *lowest);
                }
            }
            WriteOp::PurgeUpTo { group, index } => {
                let group = *group;
                self.delete_entries(group, 0, *index)?;
                let mut doomed = Vec::new();
                for item in self.offsets.range((group, 0)..=(group, u64::MAX))? {
                    let (key, value) = item?;
                    if value.value().0 > *index {
                        break;
                    }
                    doomed.push(key.value().1);
                }
                // Keep the tail row's information: the next offset must survive a purge of the
                // whole log.
                let tail = self.tail(group)?;
                for base in doomed {
                    self.offsets.remove((group, base))?;
                }
                self.tails.insert(group, tail);
                self.meta
                    .insert((group, TAIL_META_KEY), tail.to_le_bytes().as_slice())?;
            }
            WriteOp::ResetLog { group, next_offset } => {
                let group = *group;
                self.delete_entries(group, 0, u64::MAX)?;
                // How far the old log was compacted says nothing of the new one.
                self.meta.remove((group, MetaKey::Compaction as u8))?;
                let resets = log_resets(self.meta, group)?;
                self.meta.insert(
                    (group, RESETS_META_KEY),
                    (resets + 1).to_le_bytes().as_slice(),
                )?;
                self.offsets
                    .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
                self.tails.insert(group, next_offset.0);
                self.meta.insert(
                    (group, TAIL_META_KEY),
                    next_offset.0.to_le_bytes().as_slice(),
                )?;
            }
            WriteOp::ReplaceBatch {
                group,
                base_offset,
                expected_crc,
                batch,
            } => self.replace_batch(*group, *base_offset, *expected_crc, batch)?,
            WriteOp::RecordCompaction {
                group,
                state,
                resets_seen,
            } => {
                if log_resets(self.meta, *group)? == *resets_seen {
                    self.meta.insert(
                        (*group, MetaKey::Compaction as u8),
                        state.encode().as_slice(),
                    )?;
                }
            }
            WriteOp::PutMeta { group, key, value } => {
                self.meta.insert((*group, *key as u8), value.as_ref())?;
            }
            WriteOp::PutProducer {
                group,
                producer_id,
                value,
            } => {
                self.producers
                    .insert((*group, *producer_id), value.as_ref())?;
            }
            WriteOp::DeleteProducer { group, producer_id } => {
                self.producers.remove((*group, *producer_id))?;
            }
            WriteOp::ClearProducers { group } => {
                self.producers
                    .retain_in((*group, 0)..=(*group, u64::MAX), |_, _| false)?;
            }
            WriteOp::DeleteGroup { group } => {
                let group = *group;
                self.producers
                    .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
                self.log
                    .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
                self.offsets
                    .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
                self.meta
                    .retain_in((group, 0)..=(group, u8::MAX), |_, _| false)?;
                self.tails.remove(&group);
                // Nothing left to record: a later append counts from zero.
                self.log_bytes.insert(group, 0);
                self.resized.remove(&group);
            }
        }
        Ok(appended)
    }

    /// [`WriteOp::ReplaceBatch`]: replaces the batch at `base_offset` if it is still the one
    /// whose CRC is `expected_crc` and spans the offsets `batch` does.
    fn replace_batch(
        &mut self,
        group: GroupId,
        base_offset: Offset,
        expected_crc: u32,
        batch: &EncodedBatch,
    ) -> Result<(), redb::Error> {
        let Some((index, count, _)) = self
            .offsets
            .get((group, base_offset.0))?
            .map(|row| row.value())
        else {
            return Ok(()); // trimmed meanwhile
        };
        if u64::from(count) != batch.header().offset_count() {
            return Ok(());
        }
        let (meta, leader_epoch, old_len) = {
            let Some(stored) = self.log.get((group, index))? else {
                return Ok(());
            };
            let stored = stored.value();
            let Ok(envelope) = decode_envelope(group, index, stored) else {
                return Ok(()); // damaged: left for readers to report
            };
            match envelope.batch {
                Some(old)
                    if old.base_offset == base_offset
                        && stored_batch_crc(old.bytes) == Some(expected_crc) =>
                {
                    (envelope.meta.to_vec(), old.leader_epoch, stored.len())
                }
                _ => return Ok(()), // compacted meanwhile
            }
        };
        let value = encode_envelope(&meta, Some((batch.bytes(), base_offset, leader_epoch)));
        let before = self.log_bytes(group)?;
        self.log.insert((group, index), value.as_slice())?;
        self.offsets
            .insert((group, base_offset.0), index_row(index, batch))?;
        self.set_log_bytes(
            group,
            (before + value.len() as u64).saturating_sub(old_len as u64),
        );
        Ok(())
    }

    /// Deletes `group`'s entries from `first` to `last` (raft indexes, inclusive), counting
    /// their bytes off its log bytes.
    fn delete_entries(&mut self, group: GroupId, first: u64, last: u64) -> Result<(), redb::Error> {
        let before = self.log_bytes(group)?;
        let mut removed = 0u64;
        self.log
            .retain_in((group, first)..=(group, last), |_, value| {
                removed += value.len() as u64;
                false
            })?;
        self.set_log_bytes(group, before.saturating_sub(removed));
        Ok(())
    }

    /// The bytes of `group`'s stored log entries before this operation: as last recorded, or
    /// counted once from the log (a group written before the figure was kept).
    fn log_bytes(&mut self, group: GroupId) -> Result<u64, redb::Error> {
        if let Some(bytes) = self.log_bytes.get(&group) {
            return Ok(*bytes);
        }
        let bytes = match self.meta.get((group, LOG_BYTES_META_KEY))? {
            Some(value) => decode_u64(value.value(), group, "log bytes")?,
            None => stored_log_bytes(&*self.log, group)?,
        };
        self.log_bytes.insert(group, bytes);
        Ok(bytes)
    }

    fn set_log_bytes(&mut self, group: GroupId, bytes: u64) {
        self.log_bytes.insert(group, bytes);
        self.resized.insert(group);
    }

    /// Writes the log bytes of every group this transaction changed.
    fn record_log_bytes(&mut self) -> Result<(), redb::Error> {
        for group in std::mem::take(&mut self.resized) {
            let bytes = self.log_bytes.get(&group).copied().unwrap_or(0);
            self.meta
                .insert((group, LOG_BYTES_META_KEY), bytes.to_le_bytes().as_slice())?;
        }
        Ok(())
    }

    /// The offset the next batch appended to `group` gets.
    fn tail(&mut self, group: GroupId) -> Result<u64, redb::Error> {
        if let Some(tail) = self.tails.get(&group) {
            return Ok(*tail);
        }
        let from_index = self
            .offsets
            .range((group, 0)..=(group, u64::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, v)| k.value().1 + u64::from(v.value().1));
        let tail = match from_index {
            Some(tail) => tail,
            // Every batch was purged (or none was ever written): the purge left the tail.
            None => match self.meta.get((group, TAIL_META_KEY))? {
                None => 0,
                Some(value) => decode_u64(value.value(), group, "next offset")?,
            },
        };
        self.tails.insert(group, tail);
        Ok(tail)
    }
}

/// Metadata key, private to storage, remembering the next offset across a full purge.
const TAIL_META_KEY: u8 = 200;

/// The times `group`'s log was reset ([`WriteOp::ResetLog`]), as its meta row counts them.
pub(crate) fn log_resets(
    meta: &impl ReadableTable<(u64, u8), &'static [u8]>,
    group: GroupId,
) -> Result<u64, redb::Error> {
    match meta.get((group, RESETS_META_KEY))? {
        Some(value) => decode_u64(value.value(), group, "log resets"),
        None => Ok(0),
    }
}

/// A little-endian `u64` of a metadata row, `what` of `group`.
fn decode_u64(bytes: &[u8], group: GroupId, what: &str) -> Result<u64, redb::Error> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .map_err(|_| {
            redb::Error::Corrupted(format!("group {group}: the stored {what} is not 8 bytes"))
        })
}
