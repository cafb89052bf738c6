//! The newest entries of a group's log, held in memory: those appended but not yet durable,
//! and, for a partition, those durable but not yet applied. Shared by the group's log store
//! (which adds and removes them), its log readers (which overlay them on what redb holds) and
//! its state machine (which waits for them, and says when it has applied them).
//!
//! Why the state machine waits: openraft applies a committed entry as soon as it has been
//! *submitted* to the local log store, not once it is flushed. A follower learns that an entry
//! is committed from the leader, and a leader counts a quorum of followers that may have
//! fsynced before it did; either may apply an entry whose local write is still in the
//! committer's queue. A partition's state machine publishes its high watermark to readers, and
//! readers read redb: publishing an offset redb does not hold yet would make a reader report
//! the partition's committed data missing. So a partition's state machine applies an entry only
//! once it is durable here ([`RecentEntries::wait_durable`]), and its high watermark never runs
//! ahead of its own log.
//!
//! Why a partition keeps durable entries until they are applied: openraft hands the state
//! machine the entries to apply by reading them through the log reader. On a leader an entry
//! is committed only after its own write is durable, so without them here every applied entry
//! would be read back from redb (a read transaction, a copy of the batch and its checksum),
//! although the state machine needs little more than the batch's header. They are kept up to
//! [`KEPT_MAX_BYTES`] per partition, and up to [`KeptEntries`]' bound for all of a node's
//! partitions together: past either (a leader that lost its quorum keeps appending entries
//! nobody commits, and a node may lead a thousand such partitions) the oldest are let go, and
//! readers find them in redb as before.
//!
//! The entries held are always the log's newest: a contiguous run up to its last entry, so a
//! reader takes from redb exactly the indexes below the first one held. Entries leave from the
//! front (durable, applied or over the bound; a purge) or from the back (a truncation) only.

use std::collections::{BTreeMap, btree_map};
use std::io;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::types::{Entry, LogId};

/// The most bytes of durable, unapplied entries a partition keeps in memory for its state
/// machine (each entry counted as its payload plus [`ENTRY_OVERHEAD`]).
pub(crate) const KEPT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes of durable, unapplied entries all of a node's partitions keep in memory
/// together, by default.
pub const NODE_KEPT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What an entry counts for besides its payload, so that entries without one are bounded too.
const ENTRY_OVERHEAD: usize = 256;

/// What a node's partitions keep in memory, together, of durable entries not yet applied, and
/// its bound. Clones share the count.
///
/// In a healthy cluster an entry is applied within a round trip of being durable, so the count
/// stays near what is in flight; it grows where entries are durable but not committed (a
/// leader without its quorum). Past the bound, a partition adding entries lets its own oldest
/// go until the node is under it again, so the node's total stays within the bound plus what
/// one flush adds.
#[derive(Debug, Clone)]
pub struct KeptEntries {
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Default for KeptEntries {
    /// Bounded by [`NODE_KEPT_MAX_BYTES`].
    fn default() -> Self {
        Self::with_max_bytes(NODE_KEPT_MAX_BYTES)
    }
}

impl KeptEntries {
    /// A count bounded by `max_bytes`.
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            bytes: Arc::default(),
            max_bytes,
        }
    }

    /// Bytes kept now, by all of the node's partitions (each entry counted as its payload plus
    /// a fixed overhead).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn over(&self) -> bool {
        self.bytes() > self.max_bytes
    }
}

/// What waiters need to know of the entries not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Flush {
    /// The lowest index still waiting for its write; `None` when every entry is durable.
    first_pending: Option<u64>,
    /// A write failed: the pending entries will never be durable.
    failed: bool,
}

#[derive(Default)]
struct Held {
    /// Appended, waiting for their write.
    pending: BTreeMap<u64, Entry>,
    /// Durable, kept until applied (only with [`RecentEntries::kept_until_applied`]); all
    /// below the pending ones.
    durable: BTreeMap<u64, Entry>,
    /// What `durable` counts for against [`KEPT_MAX_BYTES`]; also counted in `node`.
    durable_bytes: usize,
    /// The node's count, which `durable` is part of.
    node: KeptEntries,
}

impl Held {
    /// Every change to `durable` goes through `keep` and `forget`, so both counts follow it.
    fn keep(&mut self, index: u64, entry: Entry) {
        let bytes = counted_bytes(&entry);
        self.durable_bytes += bytes;
        self.node.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(replaced) = self.durable.insert(index, entry) {
            self.forget([replaced]);
        }
    }

    /// Uncounts entries taken out of `durable`.
    fn forget(&mut self, dropped: impl IntoIterator<Item = Entry>) {
        let bytes: usize = dropped.into_iter().map(|e| counted_bytes(&e)).sum();
        self.durable_bytes -= bytes;
        self.node.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn drop_durable_through(&mut self, through: u64) {
        let kept = self.durable.split_off(&through.saturating_add(1));
        let dropped = std::mem::replace(&mut self.durable, kept);
        self.forget(dropped.into_values());
    }

    /// Lets the oldest durable entries go while this partition is over its bound or the node
    /// over its own.
    fn trim(&mut self) {
        while self.durable_bytes > KEPT_MAX_BYTES || self.node.over() {
            let Some((_, oldest)) = self.durable.pop_first() else {
                break;
            };
            self.forget([oldest]);
        }
    }
}

impl Drop for Held {
    /// A partition stopped: what it kept no longer counts for the node.
    fn drop(&mut self) {
        self.node
            .bytes
            .fetch_sub(self.durable_bytes, Ordering::Relaxed);
    }
}

fn counted_bytes(entry: &Entry) -> usize {
    let payload = match &entry.payload {
        openraft::EntryPayload::Normal(request) => request.payload_bytes(),
        _ => 0,
    };
    payload + ENTRY_OVERHEAD
}

/// A group's newest entries. Clones share them.
#[derive(Clone)]
pub(crate) struct RecentEntries {
    held: Arc<Mutex<Held>>,
    flush: Arc<watch::Sender<Flush>>,
    /// Whether durable entries are kept until [`RecentEntries::applied`] (a partition), or let
    /// go once durable (the controller, whose state machine reads its own way).
    keep_until_applied: bool,
}

impl Default for RecentEntries {
    /// Entries held only until they are durable.
    fn default() -> Self {
        Self {
            held: Arc::default(),
            flush: Arc::new(watch::Sender::new(Flush::default())),
            keep_until_applied: false,
        }
    }
}

impl RecentEntries {
    /// Entries held until they are durable and applied (or over [`KEPT_MAX_BYTES`], or the
    /// node over `node`'s bound): a partition's, whose state machine reports what it applied.
    pub(crate) fn kept_until_applied(node: KeptEntries) -> Self {
        Self {
            held: Arc::new(Mutex::new(Held {
                pending: BTreeMap::new(),
                durable: BTreeMap::new(),
                durable_bytes: 0,
                node,
            })),
            keep_until_applied: true,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // The maps are only ever mutated by complete calls below, none of which can panic
        // half-way, so a panic elsewhere cannot leave them half-updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells waiters where the pending entries now start. Called with the maps locked, so the
    /// published value follows their changes in order.
    fn publish(&self, held: &Held) {
        let first_pending = held.pending.keys().next().copied();
        self.flush.send_if_modified(|flush| {
            let changed = flush.first_pending != first_pending;
            flush.first_pending = first_pending;
            changed
        });
    }

    /// Adds entries just handed to the committer (replacing any at the same indexes).
    pub(crate) fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut held = self.lock();
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(replaced) = held.durable.remove(&index) {
                held.forget([replaced]);
            }
            held.pending.insert(index, entry);
        }
        self.publish(&held);
    }

    /// Marks entries whose write is durable: let go, or kept until applied. An index since
    /// taken by a newer entry (after a truncation) keeps the newer one, pending.
    pub(crate) fn flushed(&self, log_ids: &[LogId]) {
        let mut held = self.lock();
        for log_id in log_ids {
            let entry = match held.pending.entry(log_id.index) {
                btree_map::Entry::Occupied(slot) if slot.get().log_id == *log_id => slot.remove(),
                _ => continue,
            };
            if self.keep_until_applied {
                held.keep(log_id.index, entry);
            }
        }
        held.trim();
        self.publish(&held);
    }

    /// Lets go of the durable entries up to index `through`: the state machine applied them.
    pub(crate) fn applied(&self, through: u64) {
        self.lock().drop_durable_through(through);
    }

    /// Records that a write failed: the entries still pending never will be durable, and
    /// whoever waits for them gets an error.
    pub(crate) fn write_failed(&self) {
        let _guard = self.lock();
        self.flush.send_modify(|flush| flush.failed = true);
    }

    /// Drops the entries from index `from` on (a truncation).
    pub(crate) fn truncate_from(&self, from: u64) {
        let mut held = self.lock();
        held.pending.split_off(&from);
        let dropped = held.durable.split_off(&from);
        held.forget(dropped.into_values());
        self.publish(&held);
    }

    /// Drops the entries up to index `through` (a purge).
    pub(crate) fn purge_through(&self, through: u64) {
        let mut held = self.lock();
        held.drop_durable_through(through);
        let kept = held.pending.split_off(&through.saturating_add(1));
        held.pending = kept;
        self.publish(&held);
    }

    /// Copies of the entries held with indexes in `range`.
    pub(crate) fn overlay(&self, range: RangeInclusive<u64>) -> BTreeMap<u64, Entry> {
        let held = self.lock();
        held.durable
            .range(range.clone())
            .chain(held.pending.range(range))
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

    /// How many callers are waiting in [`RecentEntries::wait_durable`].
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        self.flush.receiver_count()
    }

    /// The indexes of the durable entries kept.
    #[cfg(test)]
    pub(crate) fn durable_indexes(&self) -> Vec<u64> {
        self.lock().durable.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::entry::RaftEntry;
    use openraft::testing::common::log_id;

    use super::*;
    use crate::types::{Request, TypeConfig};

    fn entry(index: u64, payload: usize) -> Entry {
        Entry::new_normal(
            log_id::<TypeConfig>(1, 1, index),
            Request::Controller(Bytes::from(vec![b'x'; payload])),
        )
    }

    fn ids(indexes: impl IntoIterator<Item = u64>) -> Vec<LogId> {
        indexes
            .into_iter()
            .map(|i| log_id::<TypeConfig>(1, 1, i))
            .collect()
    }

    fn overlaid(recent: &RecentEntries) -> Vec<u64> {
        recent.overlay(0..=u64::MAX).into_keys().collect()
    }

    #[test]
    fn a_partition_keeps_durable_entries_until_they_are_applied() {
        let recent = RecentEntries::kept_until_applied(KeptEntries::default());
        recent.insert((1..=4).map(|i| entry(i, 10)));
        recent.flushed(&ids(1..=3));
        assert_eq!(recent.durable_indexes(), [1, 2, 3]);
        assert_eq!(
            overlaid(&recent),
            [1, 2, 3, 4],
            "readers still see them all"
        );
        recent.applied(2);
        assert_eq!(overlaid(&recent), [3, 4]);
        // A truncation drops durable and pending entries alike; a purge the oldest.
        recent.insert([entry(5, 10)]);
        recent.flushed(&ids([4]));
        recent.truncate_from(4);
        assert_eq!(overlaid(&recent), [3]);
        recent.purge_through(3);
        assert!(overlaid(&recent).is_empty());
        assert_eq!(recent.lock().durable_bytes, 0);

        // Without a partition's state machine (the controller), durable entries go at once.
        let recent = RecentEntries::default();
        recent.insert((1..=2).map(|i| entry(i, 10)));
        recent.flushed(&ids([1]));
        assert_eq!(overlaid(&recent), [2]);
    }

    /// A leader that lost its quorum keeps appending entries nobody commits: past the bound the
    /// oldest durable ones go (readers find them in redb), always from the front, so what is
    /// held stays the log's newest entries without a gap.
    #[test]
    fn durable_entries_over_the_bound_go_oldest_first() {
        let recent = RecentEntries::kept_until_applied(KeptEntries::default());
        let third = KEPT_MAX_BYTES / 3 - ENTRY_OVERHEAD;
        recent.insert((1..=6).map(|i| entry(i, third)));
        recent.flushed(&ids(1..=5));
        assert_eq!(recent.durable_indexes(), [3, 4, 5]);
        assert_eq!(overlaid(&recent), [3, 4, 5, 6]);
        assert!(recent.lock().durable_bytes <= KEPT_MAX_BYTES);
    }

    /// A node's partitions together keep no more than the node's bound: once over it, a
    /// partition adding entries lets its own oldest go (a thousand leaders without a quorum
    /// must not hold 4 MiB each). What a stopped partition kept stops counting.
    #[test]
    fn a_nodes_partitions_together_keep_no_more_than_its_bound() {
        let node = KeptEntries::with_max_bytes(1024 * 1024);
        let payload = 100 * 1024 - ENTRY_OVERHEAD;
        let first = RecentEntries::kept_until_applied(node.clone());
        first.insert((1..=8).map(|i| entry(i, payload)));
        first.flushed(&ids(1..=8));
        assert_eq!(node.bytes(), 800 * 1024, "under the bound, all are kept");

        let second = RecentEntries::kept_until_applied(node.clone());
        second.insert((1..=5).map(|i| entry(i, payload)));
        second.flushed(&ids(1..=5));
        assert_eq!(
            second.durable_indexes(),
            [4, 5],
            "the partition adding entries lets its own oldest go"
        );
        assert_eq!(first.durable_indexes(), (1..=8).collect::<Vec<_>>());
        assert_eq!(node.bytes(), 1000 * 1024);
        assert_eq!(overlaid(&second), [4, 5], "readers find 1 to 3 in the log");

        // Applying, truncating and stopping all give bytes back.
        first.applied(4);
        assert_eq!(node.bytes(), 600 * 1024);
        second.truncate_from(5);
        assert_eq!(node.bytes(), 500 * 1024);
        drop(first);
        assert_eq!(node.bytes(), 100 * 1024);
        drop(second);
        assert_eq!(node.bytes(), 0);
    }

    /// An index rewritten after a truncation keeps the newer entry: the older one's late
    /// completion does not mark it durable.
    #[test]
    fn a_late_completion_of_a_replaced_entry_changes_nothing() {
        let recent = RecentEntries::kept_until_applied(KeptEntries::default());
        recent.insert([entry(1, 10)]);
        recent.truncate_from(1);
        let newer = Entry::new_normal(
            log_id::<TypeConfig>(2, 1, 1),
            Request::Controller(Bytes::from_static(b"newer")),
        );
        recent.insert([newer]);
        recent.flushed(&ids([1]));
        assert!(recent.durable_indexes().is_empty());
        assert_eq!(
            recent.overlay(1..=1)[&1].log_id,
            log_id::<TypeConfig>(2, 1, 1)
        );
    }
}
