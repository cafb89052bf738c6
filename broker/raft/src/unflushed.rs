//! The entries of a group's log that were appended but are not yet durable, shared by the
//! group's log store (which adds and removes them), its log readers (which overlay them on what
//! redb holds) and its state machine (which waits for them).
//!
//! Why the state machine waits: openraft applies a committed entry as soon as it has been
//! *submitted* to the local log store, not once it is flushed. A follower learns that an entry
//! is committed from the leader, and a leader counts a quorum of followers that may have
//! fsynced before it did; either may apply an entry whose local write is still in the
//! committer's queue. A partition's state machine publishes its high watermark to readers, and
//! readers read redb: publishing an offset redb does not hold yet would make a reader report
//! the partition's committed data missing. So a partition's state machine applies an entry only
//! once it is durable here ([`Unflushed::wait_durable`]), and its high watermark never runs
//! ahead of its own log.

use std::collections::BTreeMap;
use std::io;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::types::{Entry, LogId};

/// What waiters need to know of the unflushed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Flush {
    /// The lowest index still waiting for its write; `None` when every entry is durable.
    first_pending: Option<u64>,
    /// A write failed: the pending entries will never be durable.
    failed: bool,
}

/// A group's appended but not yet durable entries. Clones share them.
#[derive(Clone)]
pub(crate) struct Unflushed {
    entries: Arc<Mutex<BTreeMap<u64, Entry>>>,
    flush: Arc<watch::Sender<Flush>>,
}

impl Default for Unflushed {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
            flush: Arc::new(watch::Sender::new(Flush::default())),
        }
    }
}

impl Unflushed {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map is only ever mutated by complete insert/remove calls, so a panic elsewhere
        // cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells waiters where the pending entries now start. Called with the map locked, so the
    /// published value follows the map's changes in order.
    fn publish(&self, entries: &BTreeMap<u64, Entry>) {
        let first_pending = entries.keys().next().copied();
        self.flush.send_if_modified(|flush| {
            let changed = flush.first_pending != first_pending;
            flush.first_pending = first_pending;
            changed
        });
    }

    /// Adds entries just handed to the committer (replacing any at the same indexes).
    pub(crate) fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut map = self.lock();
        for entry in entries {
            map.insert(entry.log_id.index, entry);
        }
        self.publish(&map);
    }

    /// Removes entries whose write is durable. An index since taken by a newer entry (after a
    /// truncation) keeps the newer one.
    pub(crate) fn flushed(&self, log_ids: &[LogId]) {
        let mut map = self.lock();
        for log_id in log_ids {
            if map.get(&log_id.index).map(|e| e.log_id) == Some(*log_id) {
                map.remove(&log_id.index);
            }
        }
        self.publish(&map);
    }

    /// Records that a write failed: the entries still pending never will be durable, and
    /// whoever waits for them gets an error.
    pub(crate) fn write_failed(&self) {
        let _guard = self.lock();
        self.flush.send_modify(|flush| flush.failed = true);
    }

    /// Drops the entries from index `from` on (a truncation).
    pub(crate) fn truncate_from(&self, from: u64) {
        let mut map = self.lock();
        map.split_off(&from);
        self.publish(&map);
    }

    /// Drops the entries up to index `through` (a purge).
    pub(crate) fn purge_through(&self, through: u64) {
        let mut map = self.lock();
        let keep = map.split_off(&through.saturating_add(1));
        *map = keep;
        self.publish(&map);
    }

    /// Copies of the pending entries with indexes in `range`.
    pub(crate) fn overlay(&self, range: RangeInclusive<u64>) -> BTreeMap<u64, Entry> {
        self.lock()
            .range(range)
            .map(|(i, e)| (*i, e.clone()))
            .collect()
    }

    /// Waits until every entry up to `index` is durable; an error if a write failed first.
    pub(crate) async fn wait_durable(&self, index: u64) -> io::Result<()> {
        let mut flush = self.flush.subscribe();
        let settled = flush
            .wait_for(|f| f.failed || f.first_pending.is_none_or(|first| first > index))
            .await
            .map_err(|_| io::Error::other("the log store went away"))?;
        if settled.failed && settled.first_pending.is_some_and(|first| first <= index) {
            return Err(io::Error::other(format!(
                "entry {index} will not be durable: a write to the log failed"
            )));
        }
        Ok(())
    }

    /// How many callers are waiting in [`Unflushed::wait_durable`].
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        self.flush.receiver_count()
    }
}
