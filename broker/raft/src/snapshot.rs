//! Stored snapshots, shared by the partition and controller state machines.
//!
//! A snapshot is kept as `(meta, data)` in the group's `Snapshot` metadata row and written
//! durably, so the current snapshot survives restarts and openraft can install it at start-up.

use std::io;

use weir_storage::{GroupId, LogDb, MetaKey, WriteBatch, WriteOp};

use crate::log_store::{blocking, read_meta_json, write_durable};
use crate::types::{Snapshot, SnapshotBytes, SnapshotMeta};

/// Makes `(meta, data)` the group's current snapshot, durably, together with `extra` writes.
pub(crate) async fn store(
    db: &LogDb,
    group: GroupId,
    meta: &SnapshotMeta,
    data: &SnapshotBytes,
    extra: Vec<WriteOp>,
) -> io::Result<()> {
    let stored = serde_json::to_vec(&(meta, data)).map_err(io::Error::other)?;
    let mut ops = vec![WriteOp::PutMeta {
        group,
        key: MetaKey::Snapshot,
        value: stored.into(),
    }];
    ops.extend(extra);
    write_durable(db, WriteBatch { ops }).await
}

/// The group's current snapshot, if one was ever built or installed.
pub(crate) async fn load(db: &LogDb, group: GroupId) -> io::Result<Option<Snapshot>> {
    let db = db.clone();
    let stored: Option<(SnapshotMeta, SnapshotBytes)> =
        blocking(move || read_meta_json(&db, group, MetaKey::Snapshot)).await?;
    Ok(stored.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
}

/// Builds, stores and returns a snapshot of `data` taken at `meta`.
pub(crate) async fn build(
    db: &LogDb,
    group: GroupId,
    meta: SnapshotMeta,
    data: SnapshotBytes,
) -> io::Result<Snapshot> {
    store(db, group, &meta, &data, Vec::new()).await?;
    Ok(Snapshot {
        meta,
        snapshot: data,
    })
}

/// A snapshot whose bytes were captured when the builder was made; building stores it.
pub(crate) struct PreparedSnapshot {
    pub(crate) db: LogDb,
    pub(crate) group: GroupId,
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: SnapshotBytes,
}

impl openraft::RaftSnapshotBuilder<crate::types::TypeConfig> for PreparedSnapshot {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        build(&self.db, self.group, self.meta.clone(), self.data.clone()).await
    }
}
