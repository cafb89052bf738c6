//! Log compaction of one group (Kafka's `cleanup.policy=compact`): below a point the raft layer
//! decided, only the latest record of each key stays, and tombstones older than a time go too.
//! Offsets never change: a batch keeps its offsets and loses records (weir-types' `compact.rs`).
//!
//! A pass is deterministic, so every replica that runs it on the same committed records ends
//! with the same records:
//! - The log below the previous pass's point (the *clean* part) holds one record per key. The
//!   pass maps every key of the *dirty* part (from that point to the new one) to its latest
//!   offset there, by the SHA-256 of the key (first 16 bytes), so the map's size is bounded by
//!   the dirty part, which the leader bounds.
//! - It then rewrites the log from its start to the new point: a keyed record goes when the
//!   map has a later offset for its key; a tombstone that is its key's latest goes once its
//!   timestamp is before `tombstones_before_ms`. Records without a key, and everything at or
//!   past the point, stay. The clean part is read again; a dirty batch is decided from what
//!   the first read remembered of it, and read again only when it keeps some records and
//!   loses others (one that loses all is rebuilt from its header, `EncodedBatch::emptied`).
//!
//! Running a pass again, or a later pass over a log another replica compacted further (a
//! follower catching up receives the leader's compacted batches), changes nothing that the
//! later pass would not: what stays is the latest record of each key below the point, less
//! expired tombstones. So a pass interrupted by a crash is simply run again.
//!
//! I/O is bounded: batches are read and rewritten a few MiB at a time, each rewrite a write of
//! its own, which replaces a batch only if it is still the one read ([`WriteOp::ReplaceBatch`]):
//! retention may trim batches meanwhile, and produce goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use weir_types::{BatchHeader, CompactionRecord, EncodedBatch, Offset};

use crate::committer::log_resets;
use crate::db::{GroupId, LogDb, MetaKey, WriteBatch, WriteOp};
use crate::error::{ReadError, WriteError};
use crate::tables::RAFT_META;

/// Bytes of batches read, or rewritten, at a time.
const CHUNK_BYTES: usize = 4 << 20;

static CRASH_MID_PASS: AtomicBool = AtomicBool::new(false);

/// Fault injection, for tests: makes this process abort in its next compaction pass that
/// rewrites batches, once the first rewrites are durable and before the pass records its state,
/// as a crash in the middle of a pass would. The `weir` binary never calls it.
pub fn crash_mid_compaction() {
    CRASH_MID_PASS.store(true, Ordering::Relaxed);
}

/// Writes `rewrites` (a pass's batch replacements), then aborts if asked to
/// ([`crash_mid_compaction`]).
fn write_rewrites(db: &LogDb, rewrites: Vec<WriteOp>) -> Result<(), WriteError> {
    let any = !rewrites.is_empty();
    db.write(WriteBatch { ops: rewrites })?;
    if any && CRASH_MID_PASS.load(Ordering::Relaxed) {
        eprintln!("fault injection: aborting in the middle of a compaction pass, as asked");
        std::process::abort();
    }
    Ok(())
}

/// How far a group's log is compacted, as the last finished pass left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionState {
    /// Records below this offset are compacted.
    pub below: Offset,
    /// Tombstones older than this (milliseconds since the epoch) were removed.
    pub tombstones_before_ms: i64,
    /// The oldest timestamp of a tombstone the pass kept, if it kept any: when the next pass
    /// would remove it.
    pub oldest_tombstone_ms: Option<i64>,
    /// The group's log bytes ([`LogDb::log_bytes`]) when the pass finished: what was written
    /// since is the log's dirty part, near enough.
    pub log_bytes_after: u64,
}

impl CompactionState {
    const LEN: usize = 33;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.below.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.tombstones_before_ms.to_le_bytes());
        if let Some(oldest) = self.oldest_tombstone_ms {
            out[16] = 1;
            out[17..25].copy_from_slice(&oldest.to_le_bytes());
        }
        out[25..33].copy_from_slice(&self.log_bytes_after.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            b
        };
        Some(Self {
            below: Offset(u64::from_le_bytes(u64_at(0))),
            tombstones_before_ms: i64::from_le_bytes(u64_at(8)),
            oldest_tombstone_ms: (bytes[16] == 1).then(|| i64::from_le_bytes(u64_at(17))),
            log_bytes_after: u64::from_le_bytes(u64_at(25)),
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionOutcome {
    /// Distinct keys in the dirty part.
    pub dirty_keys: usize,
    /// Batches rewritten.
    pub batches_rewritten: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Batch bytes before and after the rewritten batches.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// Reading the log failed (or found damage).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing a rewritten batch failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A batch that verified could not be taken apart (a bug, not damage).
    #[error("group {group}: compacting the batch at offset {offset}: {source}")]
    Batch {
        /// The raft group.
        group: GroupId,
        /// The batch's base offset.
        offset: Offset,
        /// What was wrong.
        source: weir_types::BatchError,
    },
}

type KeyHash = u128;

fn key_hash(key: &[u8]) -> KeyHash {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// The keys of a pass's dirty part: each key (by hash) gets an id, and the latest offset of
/// each id.
#[derive(Default)]
struct DirtyKeys {
    ids: HashMap<KeyHash, u32>,
    latest: Vec<Offset>,
}

impl DirtyKeys {
    /// Notes `key` at `offset` (offsets come in order); returns its id.
    fn saw(&mut self, key: &[u8], offset: Offset) -> u32 {
        let next = self.latest.len() as u32;
        let id = *self.ids.entry(key_hash(key)).or_insert(next);
        if id == next {
            self.latest.push(offset);
        } else {
            self.latest[id as usize] = offset;
        }
        id
    }

    /// The latest offset of `key` in the dirty part, if it is there.
    fn latest_of(&self, key: &[u8]) -> Option<Offset> {
        self.ids
            .get(&key_hash(key))
            .map(|id| self.latest[*id as usize])
    }
}

/// A batch of the dirty part as its first read saw it.
struct DirtyBatch {
    header: BatchHeader,
    records: Vec<DirtyRecord>,
}

/// A record of the dirty part: its offset, its key's id ([`DirtyKeys`]) when it has a key and
/// lies in the dirty part, and its timestamp when it is a tombstone.
struct DirtyRecord {
    offset: Offset,
    key: Option<u32>,
    tombstone_ms: Option<i64>,
}

/// Gathers a pass's batch replacements and writes them a few MiB at a time.
struct Rewriter<'a> {
    db: &'a LogDb,
    group: GroupId,
    rewrites: Vec<WriteOp>,
    /// Bytes of replacements, and of batches read, since the last write.
    pending_bytes: usize,
    read_bytes: usize,
    oldest_tombstone_ms: Option<i64>,
}

impl<'a> Rewriter<'a> {
    fn new(db: &'a LogDb, group: GroupId) -> Self {
        Self {
            db,
            group,
            rewrites: Vec::new(),
            pending_bytes: 0,
            read_bytes: 0,
            oldest_tombstone_ms: None,
        }
    }

    /// A tombstone below the pass's point stays.
    fn kept_tombstone(&mut self, timestamp_ms: i64) {
        let oldest = self
            .oldest_tombstone_ms
            .map_or(timestamp_ms, |o| o.min(timestamp_ms));
        self.oldest_tombstone_ms = Some(oldest);
    }

    /// `bytes` of batches were read.
    fn read(&mut self, bytes: usize) {
        self.read_bytes += bytes;
    }

    /// Replaces the batch of `header` by `compacted` (nothing when `None`), counting it in
    /// `outcome`, and writes what gathered once it is a few MiB: each write is short, and the
    /// pass's progress is kept.
    fn replace(
        &mut self,
        header: &BatchHeader,
        compacted: Option<EncodedBatch>,
        outcome: &mut CompactionOutcome,
    ) -> Result<(), CompactionError> {
        if let Some(compacted) = compacted {
            outcome.batches_rewritten += 1;
            outcome.records_removed +=
                u64::from(header.record_count - compacted.header().record_count);
            outcome.bytes_before += u64::from(header.batch_length) + 12;
            outcome.bytes_after += compacted.bytes().len() as u64;
            self.pending_bytes += compacted.bytes().len();
            self.rewrites.push(WriteOp::ReplaceBatch {
                group: self.group,
                base_offset: header.base_offset,
                expected_crc: header.crc,
                batch: compacted,
            });
        }
        if self.pending_bytes >= CHUNK_BYTES || self.read_bytes >= CHUNK_BYTES {
            (self.pending_bytes, self.read_bytes) = (0, 0);
            write_rewrites(self.db, std::mem::take(&mut self.rewrites))?;
        }
        Ok(())
    }

    /// The replacements not written yet, and the oldest tombstone kept.
    fn finish(self) -> (Vec<WriteOp>, Option<i64>) {
        (self.rewrites, self.oldest_tombstone_ms)
    }
}

impl LogDb {
    /// How far `group`'s log is compacted, if a pass ever finished.
    pub fn compaction_state(&self, group: GroupId) -> Result<Option<CompactionState>, ReadError> {
        Ok(self
            .meta(group, MetaKey::Compaction)?
            .and_then(|bytes| CompactionState::decode(&bytes)))
    }

    /// Compacts `group`'s committed log below `below` (see the module documentation), removing
    /// tombstones whose timestamp is before `tombstones_before_ms`, and records the new
    /// [`CompactionState`]. Blocking; every offset below `below` must be committed.
    pub fn compact(
        &self,
        group: GroupId,
        below: Offset,
        tombstones_before_ms: i64,
    ) -> Result<CompactionOutcome, CompactionError> {
        let (state, resets_seen) = self.compaction_start(group)?;
        let dirty_from = state.map_or(Offset(0), |s| s.below.min(below));
        let mut outcome = CompactionOutcome::default();

        // First read, of the dirty part: the latest offset of every key there, and what each
        // batch there holds, so the rewrite decides most batches without reading them again.
        let mut keys = DirtyKeys::default();
        let mut dirty: Vec<DirtyBatch> = Vec::new();
        self.each_batch(group, dirty_from, below, |batch| {
            let header = *batch.header();
            let mut records = Vec::with_capacity(header.record_count as usize);
            for record in batch.compaction_records() {
                let record = record.map_err(|source| corrupt(group, batch, source))?;
                let dirty_key = (record.offset >= dirty_from && record.offset < below)
                    .then_some(record.key)
                    .flatten();
                let key = dirty_key.map(|key| keys.saw(key, record.offset));
                records.push(DirtyRecord {
                    offset: record.offset,
                    key,
                    tombstone_ms: record.tombstone.then_some(record.timestamp_ms),
                });
            }
            // A batch reaching below the dirty part is read again with the clean part.
            if header.base_offset >= dirty_from {
                dirty.push(DirtyBatch { header, records });
            }
            Ok(())
        })?;
        outcome.dirty_keys = keys.latest.len();

        // Whether a record stays: everything from `below` on and every record without a key
        // does; a keyed one goes when its key is newer in the dirty part (`latest`), or when
        // it is a tombstone older than the cut-off.
        let keeps = |offset: Offset,
                     keyed: bool,
                     latest: Option<Offset>,
                     tombstone_ms: Option<i64>|
         -> bool {
            if offset >= below || !keyed {
                return true;
            }
            if latest.is_some_and(|newest| newest > offset) {
                return false;
            }
            tombstone_ms.is_none_or(|ts| ts >= tombstones_before_ms)
        };
        let keep = |record: &CompactionRecord<'_>| -> bool {
            let latest = record.key.and_then(|key| keys.latest_of(key));
            let tombstone_ms = record.tombstone.then_some(record.timestamp_ms);
            keeps(record.offset, record.key.is_some(), latest, tombstone_ms)
        };
        let mut writer = Rewriter::new(self, group);
        // The clean part, read: its keys are not in memory.
        self.each_batch(group, Offset(0), dirty_from, |batch| {
            let compacted = batch
                .retaining(keep)
                .map_err(|source| corrupt(group, batch, source))?;
            let kept = compacted.as_ref().unwrap_or(batch);
            for record in kept.compaction_records() {
                let record = record.map_err(|source| corrupt(group, batch, source))?;
                if record.tombstone && record.offset < below {
                    writer.kept_tombstone(record.timestamp_ms);
                }
            }
            writer.read(batch.bytes().len());
            writer.replace(batch.header(), compacted, &mut outcome)
        })?;
        // The dirty part, from what the first read remembered.
        for DirtyBatch { header, records } in dirty {
            let decisions: Vec<bool> = records
                .iter()
                .map(|r| {
                    let latest = r.key.map(|id| keys.latest[id as usize]);
                    keeps(r.offset, r.key.is_some(), latest, r.tombstone_ms)
                })
                .collect();
            for (record, kept) in records.iter().zip(&decisions) {
                if let Some(ts) = record.tombstone_ms
                    && *kept
                    && record.offset < below
                {
                    writer.kept_tombstone(ts);
                }
            }
            let compacted = if decisions.iter().all(|k| *k) {
                None
            } else if decisions.iter().all(|k| !*k) {
                Some(EncodedBatch::emptied(&header))
            } else {
                // Some records stay and some go: read it again to copy those that stay.
                let mut compacted = None;
                self.each_batch(
                    group,
                    header.base_offset,
                    header.base_offset.plus(1),
                    |batch| {
                        if batch.header().crc == header.crc {
                            compacted = batch
                                .retaining(keep)
                                .map_err(|source| corrupt(group, batch, source))?;
                        }
                        writer.read(batch.bytes().len());
                        Ok(())
                    },
                )?;
                compacted
            };
            writer.replace(&header, compacted, &mut outcome)?;
        }
        let (rewrites, oldest_tombstone_ms) = writer.finish();
        write_rewrites(self, rewrites)?;
        // The figure the committer keeps: exact as of this read, and nothing of this pass is
        // still to be written.
        let state = CompactionState {
            below,
            tombstones_before_ms,
            oldest_tombstone_ms,
            log_bytes_after: self.log_bytes(group)?,
        };
        self.write(WriteBatch::one(WriteOp::RecordCompaction {
            group,
            state,
            resets_seen,
        }))?;
        Ok(outcome)
    }

    /// How far `group` is compacted and how many times its log was reset, read together.
    fn compaction_start(
        &self,
        group: GroupId,
    ) -> Result<(Option<CompactionState>, u64), ReadError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let state = meta
            .get((group, MetaKey::Compaction as u8))?
            .and_then(|v| CompactionState::decode(v.value()));
        let resets = log_resets(&meta, group).map_err(ReadError::from)?;
        Ok((state, resets))
    }

    /// Calls `each` with every committed batch of `group` holding offsets in `from..below`, in
    /// order, reading [`CHUNK_BYTES`] at a time (a short read transaction each).
    fn each_batch(
        &self,
        group: GroupId,
        from: Offset,
        below: Offset,
        mut each: impl FnMut(&EncodedBatch) -> Result<(), CompactionError>,
    ) -> Result<(), CompactionError> {
        let mut next = from;
        while next < below {
            let read = self.read_batches(group, next, below, u64::MAX, CHUNK_BYTES)?;
            let Some(last) = read.batches.last() else {
                break;
            };
            let after = last.header().next_offset();
            for batch in &read.batches {
                if batch.header().base_offset >= below {
                    return Ok(());
                }
                each(batch)?;
            }
            if after <= next {
                break;
            }
            next = after;
        }
        Ok(())
    }
}

fn corrupt(
    group: GroupId,
    batch: &EncodedBatch,
    source: weir_types::BatchError,
) -> CompactionError {
    CompactionError::Batch {
        group,
        offset: batch.header().base_offset,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use weir_types::{BatchLimits, Record};

    use super::*;
    use crate::db::{LogDbOptions, NewEntry};

    /// Key and value of every record of `group` from offset 0, by offset.
    fn records(db: &LogDb, group: GroupId) -> BTreeMap<u64, (String, String)> {
        let read = db
            .read_batches(group, Offset(0), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap();
        read.batches
            .iter()
            .flat_map(|b| b.records().map(Result::unwrap))
            .map(|(offset, r)| {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                (offset.0, (text(&r.key.unwrap()), text(&r.value)))
            })
            .collect()
    }

    /// What compaction below `below` must leave of `all`: the latest record of each key below
    /// it, and everything from it on.
    fn expected(
        all: &BTreeMap<u64, (String, String)>,
        below: u64,
    ) -> BTreeMap<u64, (String, String)> {
        let mut latest: HashMap<&str, u64> = HashMap::new();
        for (offset, (key, _)) in all.range(..below) {
            latest.insert(key, *offset);
        }
        all.iter()
            .filter(|(offset, (key, _))| **offset >= below || latest[key.as_str()] == **offset)
            .map(|(o, kv)| (*o, kv.clone()))
            .collect()
    }

    /// Ten batches of five keyed records over seven keys: offsets 0..50.
    fn keyed_log(db: &LogDb, group: GroupId) {
        let entries = (0..10u64)
            .map(|b| {
                let records: Vec<Record> = (0..5u64)
                    .map(|r| {
                        let n = b * 5 + r;
                        Record {
                            key: Some(Bytes::from(format!("k{}", n % 7))),
                            value: Bytes::from(format!("v{n}")),
                            timestamp_ms: 1_000 + n as i64,
                            ..Record::default()
                        }
                    })
                    .collect();
                NewEntry {
                    index: b + 1,
                    meta: Bytes::from(format!("meta-{b}")),
                    batch: Some(EncodedBatch::encode(&records, BatchLimits::default()).unwrap()),
                    leader_epoch: 2,
                }
            })
            .collect();
        db.write(WriteBatch::one(WriteOp::Append { group, entries }))
            .unwrap();
    }

    #[test]
    fn a_pass_keeps_the_latest_record_of_each_key_below_its_point_at_the_same_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let db = LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).unwrap();
        keyed_log(&db, 4);
        let all = records(&db, 4);
        assert_eq!(all.len(), 50);
        let bytes_before = db.log_bytes(4).unwrap();

        // Below 32: mid-batch (the batch at 30 keeps 32..35 whatever the keys say).
        let first = db.compact(4, Offset(32), 0).unwrap();
        assert_eq!(records(&db, 4), expected(&all, 32));
        assert_eq!(first.dirty_keys, 7);
        assert_eq!(first.records_removed, 32 - 7);
        assert!(db.log_bytes(4).unwrap() < bytes_before);
        let state = db.compaction_state(4).unwrap().unwrap();
        assert_eq!(
            (
                state.below,
                state.tombstones_before_ms,
                state.oldest_tombstone_ms
            ),
            (Offset(32), 0, None)
        );
        assert_eq!(state.log_bytes_after, db.log_bytes(4).unwrap());

        // The next pass maps only 32..50 and ends where one pass over everything would.
        db.compact(4, Offset(50), 0).unwrap();
        let compacted = records(&db, 4);
        assert_eq!(compacted, expected(&all, 50));
        assert_eq!(compacted.len(), 7);
        // Every batch is still there, spanning its offsets (some empty): the log reads through.
        let read = db
            .read_batches(4, Offset(0), Offset(u64::MAX), u64::MAX, usize::MAX)
            .unwrap();
        assert_eq!(read.batches.len(), 10);
        assert_eq!(read.batches[9].header().next_offset(), Offset(50));

        // Again, or an earlier point over the later result: nothing to do.
        for below in [50, 32] {
            let again = db.compact(4, Offset(below), 0).unwrap();
            assert_eq!(again.batches_rewritten, 0, "below {below}");
            assert_eq!(records(&db, 4), compacted);
        }
    }

    #[test]
    fn a_tombstone_removes_its_key_and_goes_itself_once_older_than_the_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let db = LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).unwrap();
        let record = |key: &str, value: Option<&str>, timestamp_ms: i64| Record {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes())),
            tombstone: value.is_none(),
            timestamp_ms,
            ..Record::default()
        };
        let records = [
            record("a", Some("a1"), 1_000),
            record("b", Some("b1"), 1_000),
            record("a", None, 2_000),
            record("c", Some("c1"), 1_000),
            record("c", None, 5_000),
        ];
        db.write(WriteBatch::one(WriteOp::Append {
            group: 4,
            entries: vec![NewEntry {
                index: 1,
                meta: Bytes::from_static(b"meta"),
                batch: Some(EncodedBatch::encode(&records, BatchLimits::default()).unwrap()),
                leader_epoch: 1,
            }],
        }))
        .unwrap();
        let kept = |db: &LogDb| -> Vec<(u64, String, bool)> {
            let read = db
                .read_batches(4, Offset(0), Offset(u64::MAX), u64::MAX, usize::MAX)
                .unwrap();
            read.batches
                .iter()
                .flat_map(|b| b.records().map(Result::unwrap))
                .map(|(o, r)| {
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    (o.0, key, r.tombstone)
                })
                .collect()
        };

        // Tombstones before 3 000 go: a's (2 000) with a's value; c's (5 000) stays, c's value
        // goes.
        db.compact(4, Offset(5), 3_000).unwrap();
        assert_eq!(
            kept(&db),
            vec![(1, "b".to_owned(), false), (4, "c".to_owned(), true)]
        );
        let state = db.compaction_state(4).unwrap().unwrap();
        assert_eq!(state.oldest_tombstone_ms, Some(5_000));

        // A later cut-off, no new records: c's tombstone goes too.
        db.compact(4, Offset(5), 6_000).unwrap();
        assert_eq!(kept(&db), vec![(1, "b".to_owned(), false)]);
        let state = db.compaction_state(4).unwrap().unwrap();
        assert_eq!(state.oldest_tombstone_ms, None);
    }

    /// A snapshot installed past the log replaces it: how far the old one was compacted says
    /// nothing of the new one, and a pass that read the old one records nothing.
    #[test]
    fn a_reset_log_forgets_its_compaction_and_a_pass_across_it_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).unwrap();
        keyed_log(&db, 4);
        db.compact(4, Offset(32), 0).unwrap();
        let state = db.compaction_state(4).unwrap().unwrap();
        let (_, resets_before) = db.compaction_start(4).unwrap();

        db.write(WriteBatch::one(WriteOp::ResetLog {
            group: 4,
            next_offset: Offset(50),
        }))
        .unwrap();
        assert_eq!(db.compaction_state(4).unwrap(), None);
        // The end of a pass that began before the reset.
        db.write(WriteBatch::one(WriteOp::RecordCompaction {
            group: 4,
            state,
            resets_seen: resets_before,
        }))
        .unwrap();
        assert_eq!(db.compaction_state(4).unwrap(), None);
        // A pass after it records as usual.
        db.compact(4, Offset(50), 0).unwrap();
        assert_eq!(db.compaction_state(4).unwrap().unwrap().below, Offset(50));
    }

    #[test]
    fn a_batch_changed_since_it_was_read_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).unwrap();
        keyed_log(&db, 4);
        let read = db
            .read_batches(4, Offset(0), Offset(5), u64::MAX, usize::MAX)
            .unwrap();
        let first = read.batches[0].clone();
        let only_0 = first.retaining(|r| r.offset == Offset(0)).unwrap().unwrap();
        let only_1 = first.retaining(|r| r.offset == Offset(1)).unwrap().unwrap();
        let replace = |batch: &EncodedBatch, expected_crc| {
            db.write(WriteBatch::one(WriteOp::ReplaceBatch {
                group: 4,
                base_offset: Offset(0),
                expected_crc,
                batch: batch.clone(),
            }))
            .unwrap();
        };
        replace(&only_0, first.header().crc);
        // A second rewrite from the same read finds another batch there: no change.
        replace(&only_1, first.header().crc);
        let kept: Vec<u64> = records(&db, 4).into_keys().take_while(|o| *o < 5).collect();
        assert_eq!(kept, vec![0]);
    }
}
