//! openraft's log storage over [`LogDb`]: one adapter per group, sharing the node's database.
//!
//! Correctness (openraft's storage contract, and how it is met):
//! - Entries are readable as soon as `append` returns, but `IOFlushed` is signalled only after
//!   the committer's fsync. Appended entries therefore sit in `recent` (shared with every
//!   reader of the group) at least until their commit completes (a partition's until they are
//!   applied too); readers overlay it on what redb holds. A reader copies the overlay *before*
//!   opening its read transaction, and an entry leaves the overlay only *after* its commit, so
//!   no entry is ever invisible to a reader. openraft may apply an entry before it is flushed;
//!   a partition's state machine waits for it (see [`crate::recent`]).
//! - Votes, truncations and purges are written through the same ordered committer queue and
//!   awaited before returning, so they are durable in order with the appends around them.
//! - The committed log id is written lazily: a stale value only makes recovery re-apply a few
//!   more entries, never fewer.
//! - An error from the committer is handed to openraft, which stops the group: an fsync that
//!   failed is never retried and acknowledged.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, Membership, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};
use weir_storage::{GroupId, LogDb, MetaKey, NewEntry, StoredEntry, WriteBatch, WriteOp};
use weir_types::Offset;

use crate::producers::ProducerBatch;
use crate::recent::RecentEntries;
use crate::types::{
    AppendBatch, CompactionTarget, Entry, LogId, NodeId, Request, TypeConfig, Vote,
};

/// Everything about an entry except its record batch, as stored in the entry's metadata.
#[derive(Serialize, Deserialize)]
struct EntryMeta {
    log_id: LogId,
    payload: PayloadMeta,
}

#[derive(Serialize, Deserialize)]
enum PayloadMeta {
    Blank,
    /// The batch is stored beside the metadata, once.
    Append,
    /// An idempotent producer's batch, stored beside the metadata, with its sequence range.
    AppendIdempotent(ProducerBatch),
    Controller(Bytes),
    Membership(Membership<NodeId, openraft::BasicNode>),
    /// A partition's new log start ([`Request::Trim`]).
    Trim(Offset),
    /// A partition's compaction ([`Request::Compact`]).
    Compact(CompactionTarget),
}

/// The leader epoch stamped into a stored batch: the raft term it was proposed in, as Kafka's
/// partition leader epoch (clamped to its `int32`).
fn leader_epoch(log_id: &LogId) -> i32 {
    i32::try_from(log_id.committed_leader_id().term).unwrap_or(i32::MAX)
}

fn to_new_entry(entry: &Entry) -> io::Result<NewEntry> {
    let (payload, batch) = match &entry.payload {
        EntryPayload::Blank => (PayloadMeta::Blank, None),
        EntryPayload::Normal(Request::Append(append)) => (
            match append.producer {
                None => PayloadMeta::Append,
                Some(producer) => PayloadMeta::AppendIdempotent(producer),
            },
            append.batch.clone(),
        ),
        EntryPayload::Normal(Request::Controller(cmd)) => {
            (PayloadMeta::Controller(cmd.clone()), None)
        }
        EntryPayload::Membership(m) => (PayloadMeta::Membership(m.clone()), None),
        EntryPayload::Normal(Request::Trim { log_start }) => (PayloadMeta::Trim(*log_start), None),
        EntryPayload::Normal(Request::Compact(target)) => (PayloadMeta::Compact(*target), None),
    };
    let meta = serde_json::to_vec(&EntryMeta {
        log_id: entry.log_id,
        payload,
    })
    .map_err(io::Error::other)?;
    Ok(NewEntry {
        index: entry.index(),
        meta: Bytes::from(meta),
        batch,
        leader_epoch: leader_epoch(&entry.log_id),
    })
}

fn decode_meta(group: GroupId, index: u64, meta: &[u8]) -> io::Result<EntryMeta> {
    serde_json::from_slice(meta).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("group {group} entry {index}: bad metadata: {e}"),
        )
    })
}

fn from_stored(group: GroupId, stored: StoredEntry) -> io::Result<Entry> {
    let meta = decode_meta(group, stored.index, &stored.meta)?;
    let payload = match (meta.payload, stored.batch) {
        (PayloadMeta::Blank, None) => EntryPayload::Blank,
        (PayloadMeta::Append, Some(batch)) => EntryPayload::Normal(Request::Append(AppendBatch {
            batch: Some(batch),
            producer: None,
        })),
        (PayloadMeta::AppendIdempotent(producer), batch) => {
            EntryPayload::Normal(Request::Append(AppendBatch {
                batch,
                producer: Some(producer),
            }))
        }
        (PayloadMeta::Controller(cmd), None) => EntryPayload::Normal(Request::Controller(cmd)),
        (PayloadMeta::Membership(m), None) => EntryPayload::Membership(m),
        (PayloadMeta::Trim(log_start), None) => EntryPayload::Normal(Request::Trim { log_start }),
        (PayloadMeta::Compact(target), None) => EntryPayload::Normal(Request::Compact(target)),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "group {group} entry {}: batch presence disagrees with its kind",
                    stored.index
                ),
            ));
        }
    };
    Ok(Entry {
        log_id: meta.log_id,
        payload,
    })
}

pub(crate) fn storage_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

/// The log id of entry `index` of `group`, if the entry is stored (blocking).
pub(crate) fn stored_log_id(db: &LogDb, group: GroupId, index: u64) -> io::Result<Option<LogId>> {
    match db.entry_meta(group, index).map_err(storage_err)? {
        Some(meta) => Ok(Some(decode_meta(group, index, &meta)?.log_id)),
        None => Ok(None),
    }
}

/// Runs a blocking storage call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}

/// Submits `batch` and waits for it to be durable without blocking the runtime.
pub(crate) async fn write_durable(db: &LogDb, batch: WriteBatch) -> io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    db.submit(batch, move |result| {
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| io::Error::other("log database committer went away"))?
        .map_err(storage_err)
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    group: GroupId,
    what: &str,
    bytes: Option<Bytes>,
) -> io::Result<Option<T>> {
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("group {group}: stored {what} is unreadable: {e}"),
                )
            })
        })
        .transpose()
}

pub(crate) fn read_meta_json<T: for<'de> Deserialize<'de>>(
    db: &LogDb,
    group: GroupId,
    key: MetaKey,
) -> io::Result<Option<T>> {
    let bytes = db.meta(group, key).map_err(storage_err)?;
    decode_json(group, &format!("{key:?}"), bytes)
}

fn json(value: &impl Serialize) -> io::Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(io::Error::other)
}

/// Bytes of record batches one AppendEntries message carries at most (plus one entry).
const MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;

/// Reads a group's log: redb plus the entries not yet flushed.
#[derive(Clone)]
pub(crate) struct GroupLogReader {
    db: LogDb,
    group: GroupId,
    recent: RecentEntries,
}

impl RaftLogReader<TypeConfig> for GroupLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&e) => e - 1,
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Ok(Vec::new());
        }
        // Copy the overlay first (see the module docs for why the order matters).
        let overlay: BTreeMap<u64, Entry> = self.recent.overlay(start..=end);
        // Entries below the overlay's first index come from disk; none above it do, because
        // the overlay always holds the log's newest entries.
        let disk_end = overlay
            .keys()
            .next()
            .map_or(end, |first| first.saturating_sub(1).min(end));
        let mut entries = if overlay.keys().next() == Some(&start) {
            Vec::new()
        } else {
            let (db, group) = (self.db.clone(), self.group);
            blocking(move || {
                db.entries(group, start..=disk_end)
                    .map_err(storage_err)?
                    .into_iter()
                    .map(|stored| from_stored(group, stored))
                    .collect::<io::Result<Vec<_>>>()
            })
            .await?
        };
        entries.extend(overlay.into_values());
        Ok(entries)
    }

    /// Replication reads through here: the entries are cut at [`MAX_APPEND_BYTES`] of payload
    /// (record batches and controller commands alike; at least one entry), so one
    /// AppendEntries message stays bounded in bytes, not only in entries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let mut entries = self.try_get_log_entries(start..end).await?;
        let mut bytes = 0usize;
        let keep = entries
            .iter()
            .take_while(|entry| {
                let fits = bytes < MAX_APPEND_BYTES;
                if let EntryPayload::Normal(request) = &entry.payload {
                    bytes += request.payload_bytes();
                }
                fits
            })
            .count()
            .max(1);
        entries.truncate(keep);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let (db, group) = (self.db.clone(), self.group);
        blocking(move || read_meta_json(&db, group, MetaKey::Vote)).await
    }
}

/// openraft's log storage for one group.
pub(crate) struct GroupLogStore {
    reader: GroupLogReader,
    last_purged: Option<LogId>,
    last_log_id: Option<LogId>,
}

impl GroupLogStore {
    /// Loads the group's log bounds from `db`. `recent` holds the group's newest entries (those
    /// not yet durable, and a partition's not yet applied); the group's state machine may share
    /// it to wait for them.
    pub(crate) async fn open(db: LogDb, group: GroupId, recent: RecentEntries) -> io::Result<Self> {
        let reader = GroupLogReader {
            db: db.clone(),
            group,
            recent,
        };
        let (last_purged, last_stored) = blocking(move || {
            let purged: Option<LogId> = read_meta_json(&db, group, MetaKey::Purged)?;
            let last = db
                .last_entry_meta(group)
                .map_err(storage_err)?
                .map(|(index, meta)| decode_meta(group, index, &meta).map(|m| m.log_id))
                .transpose()?;
            Ok((purged, last))
        })
        .await?;
        Ok(Self {
            reader,
            last_log_id: last_stored.or(last_purged),
            last_purged,
        })
    }

    fn group(&self) -> GroupId {
        self.reader.group
    }

    fn db(&self) -> &LogDb {
        &self.reader.db
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = GroupLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let op = WriteOp::PutMeta {
            group: self.group(),
            key: MetaKey::Vote,
            value: json(vote)?,
        };
        write_durable(self.db(), WriteBatch::one(op)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.db()
            .put_lazy(self.group(), MetaKey::Committed, json(&committed)?);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let (db, group) = (self.db().clone(), self.group());
        let committed: Option<Option<LogId>> =
            blocking(move || read_meta_json(&db, group, MetaKey::Committed)).await?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let new_entries = entries
            .iter()
            .map(to_new_entry)
            .collect::<io::Result<Vec<_>>>()?;
        let flushed: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
        self.reader.recent.insert(entries);
        self.last_log_id = Some(last);
        let recent = self.reader.recent.clone();
        let group = self.group();
        self.db().submit(
            WriteBatch::one(WriteOp::Append {
                group,
                entries: new_entries,
            }),
            move |result| {
                match &result {
                    Ok(()) => recent.flushed(&flushed),
                    Err(_) => recent.write_failed(),
                }
                callback.io_completed(result.map_err(storage_err));
            },
        );
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.reader.recent.truncate_from(from);
        let op = WriteOp::TruncateAfter {
            group: self.group(),
            last_kept: last_log_id.map(|l| l.index),
        };
        write_durable(self.db(), WriteBatch::one(op)).await?;
        // Truncating after an index past the end keeps the log as it is.
        if last_log_id < self.last_log_id {
            self.last_log_id = last_log_id.or(self.last_purged);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.reader.recent.purge_through(log_id.index);
        let group = self.group();
        let batch = WriteBatch {
            ops: vec![
                WriteOp::PutMeta {
                    group,
                    key: MetaKey::Purged,
                    value: json(&log_id)?,
                },
                WriteOp::PurgeUpTo {
                    group,
                    index: log_id.index,
                },
            ],
        };
        write_durable(self.db(), batch).await?;
        self.last_purged = Some(log_id);
        if self.last_log_id < Some(log_id) {
            self.last_log_id = Some(log_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::common::log_id;
    use weir_storage::LogDbOptions;

    use super::*;

    /// weir-storage checks that a batch of `STORED_BATCH_OVERHEAD` less than a power of two
    /// fills one page run with 1 KiB of metadata; a batch entry's metadata at its longest (every
    /// number at its widest) stays under that.
    #[test]
    fn a_batch_entrys_metadata_is_under_a_kibibyte_at_its_longest() {
        let producer = ProducerBatch {
            producer_id: i64::MIN,
            producer_epoch: i16::MIN,
            first_sequence: i32::MIN,
            last_sequence: i32::MIN,
        };
        let batch =
            weir_types::EncodedBatch::encode(&[weir_types::Record::default()], Default::default())
                .expect("encode");
        let entry = Entry::new_normal(
            log_id::<TypeConfig>(u64::MAX, u64::MAX, u64::MAX),
            Request::Append(AppendBatch {
                batch: Some(batch),
                producer: Some(producer),
            }),
        );
        let meta = to_new_entry(&entry).expect("entry").meta;
        assert!(meta.len() <= 1024, "{} bytes: {meta:?}", meta.len());
    }

    /// A follower behind a few large controller commands (module registrations) must get them
    /// over several messages: counting only record batches sent them all at once, past the
    /// peer message limit, and retried that forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replication_reads_are_bounded_by_controller_commands_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db =
            LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).expect("open log db");
        let mut log = GroupLogStore::open(db, 0, RecentEntries::default())
            .await
            .expect("open log store");
        const COMMAND_BYTES: usize = 4 * 1024 * 1024;
        let entries: Vec<Entry> = (1..=10)
            .map(|index| {
                Entry::new_normal(
                    log_id::<TypeConfig>(1, 1, index),
                    Request::Controller(Bytes::from(vec![b'x'; COMMAND_BYTES])),
                )
            })
            .collect();
        log.append(entries, IOFlushed::noop())
            .await
            .expect("append");

        let mut reader = log.get_log_reader().await;
        let sent = reader
            .limited_get_log_entries(1, 11)
            .await
            .expect("read entries");
        let bytes: usize = sent
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(request) => request.payload_bytes(),
                _ => 0,
            })
            .sum();
        assert!(
            (1..10).contains(&sent.len()) && bytes <= MAX_APPEND_BYTES + COMMAND_BYTES,
            "{} entries, {bytes} bytes in one message",
            sent.len()
        );
        assert_eq!(sent[0].log_id.index, 1);
    }
}
