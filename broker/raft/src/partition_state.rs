//! A partition's state machine: it assigns offsets, keeps the idempotent producers' state, and
//! publishes the high watermark.
//!
//! The data already lives in the log; applying an entry only counts. A batch spans
//! `last_offset_delta + 1` offsets from the group's next offset (the same ones the log store
//! stamped, because both count from the log prefix); an idempotent producer's batch also
//! updates that producer's entry in the producer state.
//!
//! Persistence: the applied state (last applied log id, membership, next offset) and the
//! producer entries that changed are written lazily, together, after every apply, so what is on
//! disk is always the state as of one applied index; after a crash openraft re-applies the
//! committed entries after it.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_storage::{GroupId, LogDb, MetaKey, WriteBatch, WriteOp};
use weir_types::Offset;

use crate::log_store::{blocking, read_meta_json, storage_err, stored_log_id};
use crate::producers::{Changes, ProducerEntry, ProducerLimits, ProducerState};
use crate::recent::RecentEntries;
use crate::snapshot::{self, PreparedSnapshot};
use crate::types::{
    AppendBatch, AppendOutcome, CompactionTarget, LogId, Request, Response, Snapshot,
    SnapshotBytes, SnapshotMeta, StoredMembership, TypeConfig,
};

/// How often idle producers are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// How far a partition has been applied: what consumers may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionProgress {
    /// The last applied raft index; log entries up to it are committed.
    pub applied_index: u64,
    /// One past the last committed offset: the next offset a consumer will see.
    pub high_watermark: Offset,
    /// The first offset consumers may read: records below it were trimmed (retention or an
    /// explicit trim), on every replica alike.
    pub log_start: Offset,
    /// The compaction the leader last asked for, if it ever did ([`Request::Compact`]).
    pub compaction: Option<CompactionTarget>,
    /// Snapshots this replica installed past its whole log since it started, replacing the log
    /// (and forgetting how far it was compacted).
    pub log_resets: u64,
}

impl PartitionProgress {
    /// The first offset a consumer may read: the log start, which a replica that installed a
    /// snapshot may see before the high watermark has caught up with it.
    pub fn first_readable(&self) -> Offset {
        self.log_start.min(self.high_watermark)
    }
}

/// The applied state, persisted lazily.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: Offset,
    /// The replicated log start ([`Request::Trim`]).
    #[serde(default)]
    log_start: Offset,
    /// The membership before `membership`: what a snapshot cut between the two carries.
    #[serde(default)]
    previous_membership: StoredMembership,
    /// The producer state already holds the entries up to this index: it was installed from a
    /// snapshot whose producers were taken after its cut, so applying those entries again must
    /// not record their batches twice.
    #[serde(default)]
    producers_through: u64,
    /// The compaction asked for ([`Request::Compact`]), every request merged.
    #[serde(default)]
    compaction: Option<CompactionTarget>,
}

/// Checks the stored applied state against the log it was applied from, at start-up.
///
/// The state is written lazily and the log durably, so the log may hold entries past the state
/// (openraft applies them again), but the offsets of the batches stored up to the applied index
/// must end exactly where the state's next offset says. When they do not, offsets would be
/// assigned twice or skipped: the replica refuses to start. A state with neither a log nor a
/// snapshot behind it is what a deleted replica left (it was moved away, and is now moved
/// back): it is dropped, and the replica starts empty.
fn check_against_log(
    db: &LogDb,
    group: GroupId,
    applied: Option<AppliedState>,
) -> io::Result<Option<AppliedState>> {
    let Some(state) = applied else {
        return Ok(None);
    };
    let Some(last_applied) = state.last_applied else {
        return Ok(Some(state));
    };
    let bounds = db.bounds(group).map_err(storage_err)?;
    if bounds.first_index.is_none()
        && db
            .meta(group, MetaKey::Snapshot)
            .map_err(storage_err)?
            .is_none()
    {
        tracing::warn!(
            group,
            applied_index = last_applied.index,
            next_offset = %state.next_offset,
            "dropping the applied state of a deleted replica: the group has neither a log nor a snapshot"
        );
        return Ok(None);
    }
    let stored = db
        .next_offset_through(group, last_applied.index)
        .map_err(storage_err)?;
    match stored {
        Some(stored) if stored != state.next_offset => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "group {group}: the applied state says the next offset is {}, but the batches stored through raft index {} end at {stored}",
                state.next_offset, last_applied.index
            ),
        )),
        _ => Ok(Some(state)),
    }
}

/// Where a snapshot of the partition is cut: the last entry wholly below the log start.
struct Cut {
    last_log_id: LogId,
    /// The membership as of that entry.
    membership: StoredMembership,
    /// The offset the first entry after it starts at.
    next_offset: Offset,
}

/// The cut for a snapshot at the retention point (blocking), or `None` when the log start has
/// not moved past the current snapshot, or the cut falls before the two memberships the state
/// remembers (a later trim tries again).
fn retention_cut(db: &LogDb, group: GroupId, state: &AppliedState) -> io::Result<Option<Cut>> {
    let Some(applied) = state.last_applied else {
        return Ok(None);
    };
    let (index, next_offset) = match db
        .first_batch_reaching(group, state.log_start)
        .map_err(storage_err)?
    {
        Some((first_kept, base)) if first_kept <= applied.index => {
            match first_kept.checked_sub(1) {
                Some(index) => (index, base),
                None => return Ok(None),
            }
        }
        // Every applied batch lies below the log start.
        _ => (applied.index, state.next_offset),
    };
    let snapshot: Option<(SnapshotMeta, SnapshotBytes)> =
        read_meta_json(db, group, MetaKey::Snapshot)?;
    let covered = snapshot.and_then(|(meta, _)| meta.last_log_id.map(|l| l.index));
    if covered.is_some_and(|covered| covered >= index) {
        return Ok(None);
    }
    let Some(last_log_id) = stored_log_id(db, group, index)? else {
        return Ok(None);
    };
    // The membership as of the cut: the current one if it is no later, else the one before
    // it if that is known (a state installed from a snapshot remembers no earlier one).
    let membership = match (
        state.membership.log_id(),
        state.previous_membership.log_id(),
    ) {
        (None, _) => state.membership.clone(),
        (Some(current), _) if current.index <= index => state.membership.clone(),
        (Some(_), Some(previous)) if previous.index <= index => state.previous_membership.clone(),
        _ => return Ok(None),
    };
    Ok(Some(Cut {
        last_log_id,
        membership,
        next_offset,
    }))
}

/// What a partition snapshot carries: metadata only, never records.
///
/// A snapshot is cut at the retention point, not at the applied index (DESIGN §4): `applied`
/// is the state right after the last entry it covers (the last one below the log start), so
/// a replica that installs it then receives every retained entry. The producer state is the
/// one the builder had, as of `applied.producers_through`; the replica skips recording the
/// batches up to there again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotState {
    applied: AppliedState,
    producers: Vec<(i64, ProducerEntry)>,
}

/// The producer state shared between the state machine (which applies) and the replica's
/// sequencer (which judges new batches against it).
pub(crate) type SharedProducers = Arc<Mutex<ProducerState>>;

pub(crate) fn lock_producers(
    producers: &SharedProducers,
) -> std::sync::MutexGuard<'_, ProducerState> {
    // Every critical section leaves the state consistent.
    producers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The partition state machine.
pub(crate) struct PartitionStateMachine {
    db: LogDb,
    group: GroupId,
    state: AppliedState,
    pub(crate) progress: watch::Sender<PartitionProgress>,
    pub(crate) producers: SharedProducers,
    next_expiry_ms: i64,
    /// The log's entries not yet durable: an entry is applied only once it is not among them.
    recent: RecentEntries,
    /// See [`PartitionProgress::log_resets`].
    log_resets: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionStateMachine {
    pub(crate) async fn open(
        db: LogDb,
        group: GroupId,
        limits: ProducerLimits,
        recent: RecentEntries,
    ) -> io::Result<Self> {
        let (applied, rows) = {
            let db = db.clone();
            blocking(move || {
                let applied: Option<AppliedState> = read_meta_json(&db, group, MetaKey::Applied)?;
                let stored = applied.is_some();
                let applied = check_against_log(&db, group, applied)?;
                // A dropped state's producers went with it.
                let rows = if stored && applied.is_none() {
                    Vec::new()
                } else {
                    db.producers(group).map_err(storage_err)?
                };
                Ok((applied, rows))
            })
            .await?
        };
        let mut producers = ProducerState::new(limits);
        let entries = rows
            .into_iter()
            .map(|(id, bytes)| {
                let entry: ProducerEntry = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("group {group}: stored state of producer {id} is unreadable: {e}"),
                    )
                })?;
                Ok((id as i64, entry))
            })
            .collect::<io::Result<Vec<_>>>()?;
        producers.restore(entries);
        let state = applied.unwrap_or_default();
        let (progress, _) = watch::channel(progress_of(&state, 0));
        Ok(Self {
            db,
            group,
            state,
            progress,
            producers: Arc::new(Mutex::new(producers)),
            next_expiry_ms: now_ms() + EXPIRY_INTERVAL.as_millis() as i64,
            recent,
            log_resets: 0,
        })
    }

    fn publish(&self) {
        let progress = progress_of(&self.state, self.log_resets);
        self.progress.send_if_modified(|current| {
            let changed = *current != progress;
            *current = progress;
            changed
        });
    }

    /// Queues the applied state and the changed producer entries as one lazy write.
    fn persist_lazily(&self, changes: &Changes) -> io::Result<()> {
        let mut ops = vec![WriteOp::PutMeta {
            group: self.group,
            key: MetaKey::Applied,
            value: serde_json::to_vec(&self.state)
                .map_err(io::Error::other)?
                .into(),
        }];
        let producers = lock_producers(&self.producers);
        let updated: BTreeSet<i64> = changes.updated.iter().copied().collect();
        for id in updated {
            if let Some(entry) = producers.entry(id) {
                ops.push(WriteOp::PutProducer {
                    group: self.group,
                    producer_id: id as u64,
                    value: serde_json::to_vec(entry).map_err(io::Error::other)?.into(),
                });
            }
        }
        for id in &changes.removed {
            ops.push(WriteOp::DeleteProducer {
                group: self.group,
                producer_id: *id as u64,
            });
        }
        self.db.submit_lazy(WriteBatch { ops });
        Ok(())
    }

    /// Every idempotent producer's entry, for a snapshot.
    fn producer_entries(&self) -> Vec<(i64, ProducerEntry)> {
        lock_producers(&self.producers)
            .entries()
            .map(|(id, e)| (id, e.clone()))
            .collect()
    }
}

fn progress_of(state: &AppliedState, log_resets: u64) -> PartitionProgress {
    PartitionProgress {
        applied_index: state.last_applied.map_or(0, |l| l.index),
        high_watermark: state.next_offset,
        log_start: state.log_start,
        compaction: state.compaction,
        log_resets,
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let now = now_ms();
        let mut changes = Changes::default();
        while let Some((entry, responder)) = entries.try_next().await? {
            // Readers read the log in redb up to the high watermark this publishes: it must
            // not count an entry redb does not hold yet (`crate::recent` says why it can).
            self.recent.wait_durable(entry.log_id.index).await?;
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Normal(Request::Append(AppendBatch { batch, producer })) => {
                    let (record_count, offset_count) = batch.as_ref().map_or((0, 0), |b| {
                        (b.header().record_count, b.header().offset_count())
                    });
                    let outcome = AppendOutcome {
                        base_offset: self.state.next_offset,
                        record_count,
                    };
                    self.state.next_offset = outcome.base_offset.plus(offset_count);
                    if let Some(producer) = producer
                        && entry.log_id.index > self.state.producers_through
                    {
                        lock_producers(&self.producers).apply(
                            &producer,
                            outcome,
                            now,
                            &mut changes,
                        );
                    }
                    Response::Appended {
                        base_offset: outcome.base_offset,
                        record_count: outcome.record_count,
                    }
                }
                EntryPayload::Normal(Request::Trim { log_start }) => {
                    let log_start = log_start.min(self.state.next_offset);
                    if log_start > self.state.log_start {
                        self.state.log_start = log_start;
                    }
                    Response::Trimmed {
                        log_start: self.state.log_start,
                    }
                }
                EntryPayload::Normal(Request::Compact(asked)) => {
                    let asked = CompactionTarget {
                        below: asked.below.min(self.state.next_offset),
                        ..asked
                    };
                    let target = self
                        .state
                        .compaction
                        .map_or(asked, |current| current.merged(asked));
                    self.state.compaction = Some(target);
                    Response::Compacting(target)
                }
                EntryPayload::Normal(Request::Controller(_)) => {
                    tracing::warn!(
                        group = self.group,
                        "controller command in a partition log ignored"
                    );
                    Response::Nothing
                }
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Membership(m) => {
                    if responder.is_some() && m.get_joint_config().len() > 1 {
                        // Only the leader that proposed the entry holds its responder.
                        crate::fault_injection::crash_if_asked_in_joint_consensus(self.group);
                    }
                    let previous = std::mem::replace(
                        &mut self.state.membership,
                        StoredMembership::new(Some(entry.log_id), m),
                    );
                    self.state.previous_membership = previous;
                    Response::Nothing
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        if let Some(last) = self.state.last_applied {
            self.recent.applied(last.index);
        }
        if now >= self.next_expiry_ms {
            self.next_expiry_ms = now + EXPIRY_INTERVAL.as_millis() as i64;
            lock_producers(&self.producers).expire(now, &mut changes);
        }
        self.persist_lazily(&changes)?;
        self.publish();
        Ok(())
    }

    /// A snapshot cut at the retention point, when the log start has moved past the current
    /// snapshot (`None` otherwise: there is nothing to purge). Forced (openraft found purged
    /// entries without a snapshot, which Weir never leaves), it falls back to the applied index.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        let (db, group, state) = (self.db.clone(), self.group, self.state.clone());
        let cut = blocking(move || retention_cut(&db, group, &state)).await;
        let cut = match cut {
            Ok(cut) => cut,
            Err(e) => {
                tracing::warn!(group = self.group, error = %e, "finding where to cut a snapshot failed; not snapshotting now");
                None
            }
        };
        let (last_applied, membership, next_offset) = match cut {
            Some(cut) => (Some(cut.last_log_id), cut.membership, cut.next_offset),
            None if force => (
                self.state.last_applied,
                self.state.membership.clone(),
                self.state.next_offset,
            ),
            None => return None,
        };
        let applied_through = self.state.last_applied.map_or(0, |l| l.index);
        let state = SnapshotState {
            applied: AppliedState {
                last_applied,
                membership: membership.clone(),
                next_offset,
                log_start: self.state.log_start,
                previous_membership: StoredMembership::default(),
                producers_through: self.state.producers_through.max(applied_through),
                compaction: self.state.compaction,
            },
            producers: self.producer_entries(),
        };
        tracing::info!(group = self.group, cut = ?last_applied.map(|l| l.index), log_start = %self.state.log_start, "snapshotting at the retention point");
        Some(PreparedSnapshot {
            db: self.db.clone(),
            group: self.group,
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
            },
            data: serde_json::to_vec(&state).expect(
                "the snapshot state is plain data (integers, log ids, producer entries) that JSON encodes",
            ),
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.try_create_snapshot_builder(true)
            .await
            .expect("a forced snapshot always has a cut: the applied index when there is no other")
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotBytes,
    ) -> Result<(), io::Error> {
        let installed: SnapshotState = serde_json::from_slice(&snapshot).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad partition snapshot: {e}"),
            )
        })?;
        self.state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            ..installed.applied
        };
        // The snapshot covers the log up to its cut. A replica whose own log holds that very
        // entry keeps what follows it; any other (behind, or diverged) has nothing to keep, and
        // its next batch must get the offset after the cut.
        let (db, group, cut) = (self.db.clone(), self.group, meta.last_log_id);
        let keeps_log = match cut {
            Some(cut) => blocking(move || stored_log_id(&db, group, cut.index))
                .await?
                .is_some_and(|local| local == cut),
            None => false,
        };
        let mut extra = Vec::new();
        if !keeps_log {
            self.log_resets += 1;
            extra.push(WriteOp::ResetLog {
                group: self.group,
                next_offset: self.state.next_offset,
            });
        }
        extra.extend([
            WriteOp::PutMeta {
                group: self.group,
                key: MetaKey::Applied,
                value: serde_json::to_vec(&self.state)
                    .map_err(io::Error::other)?
                    .into(),
            },
            WriteOp::ClearProducers { group: self.group },
        ]);
        for (id, entry) in &installed.producers {
            extra.push(WriteOp::PutProducer {
                group: self.group,
                producer_id: *id as u64,
                value: serde_json::to_vec(entry).map_err(io::Error::other)?.into(),
            });
        }
        lock_producers(&self.producers).restore(installed.producers);
        snapshot::store(&self.db, self.group, meta, &snapshot, extra).await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::load(&self.db, self.group).await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::testing::common::log_id;
    use weir_storage::{LogDbOptions, NewEntry};
    use weir_types::{BatchLimits, EncodedBatch, Record};

    use super::*;

    const GROUP: GroupId = 9;

    fn open_db(dir: &tempfile::TempDir) -> LogDb {
        LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).expect("open log db")
    }

    fn put_applied(db: &LogDb, index: u64, next_offset: u64) {
        let state = AppliedState {
            last_applied: Some(log_id::<TypeConfig>(1, 1, index)),
            next_offset: Offset(next_offset),
            ..AppliedState::default()
        };
        let value = serde_json::to_vec(&state).expect("encode").into();
        db.write(WriteBatch::one(WriteOp::PutMeta {
            group: GROUP,
            key: MetaKey::Applied,
            value,
        }))
        .expect("write");
    }

    async fn open_state(db: &LogDb) -> io::Result<PartitionStateMachine> {
        PartitionStateMachine::open(
            db.clone(),
            GROUP,
            ProducerLimits::default(),
            RecentEntries::default(),
        )
        .await
    }

    /// What a replica moved away and back found: the old applied state over an empty log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_replicas_applied_state_is_dropped_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(&dir);
        put_applied(&db, 3, 5);
        let sm = open_state(&db).await.expect("open");
        assert_eq!(*sm.progress.borrow(), PartitionProgress::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_applied_state_the_log_disagrees_with_refuses_to_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(&dir);
        let records = vec![Record::default(); 2];
        let batch = EncodedBatch::encode(&records, BatchLimits::default()).expect("encode");
        db.write(WriteBatch::one(WriteOp::Append {
            group: GROUP,
            entries: vec![NewEntry {
                index: 1,
                meta: Bytes::from_static(b"entry"),
                batch: Some(batch),
                leader_epoch: 1,
            }],
        }))
        .expect("append");

        put_applied(&db, 1, 5);
        let error = open_state(&db)
            .await
            .err()
            .expect("a state ahead of its log");
        assert!(
            error.to_string().contains("the next offset is 5")
                && error.to_string().contains("end at 2"),
            "{error}"
        );

        put_applied(&db, 1, 2);
        let sm = open_state(&db).await.expect("open");
        assert_eq!(sm.progress.borrow().high_watermark, Offset(2));
    }
}
