//! What a partition leader knows of its partition's size, for `retention.bytes`.
//!
//! Storage keeps each log's total (`LogDb::log_bytes`), but not where to cut it, and that total
//! counts the entries below the log start still awaiting their purge. So the leader scans each
//! batch once (its stored length), the whole retained log when it starts leading and only the
//! new batches after, and
//! keeps a checkpoint every `granularity` bytes (a sixteenth of the bound, at least 4 KiB).
//! The log start it proposes is the first checkpoint after which the log fits the bound: the
//! partition keeps between `retention.bytes - granularity` and `retention.bytes` of batches
//! above the log start, as Kafka keeps whole segments.

use std::collections::VecDeque;

use weir_types::Offset;

/// The smallest distance between two checkpoints.
const MIN_GRANULARITY: u64 = 4096;

/// A partition's batch sizes as scanned so far.
#[derive(Debug)]
pub(crate) struct PartitionSizes {
    /// The bound (the topic's `retention.bytes`) these checkpoints were kept for.
    pub(crate) limit_bytes: u64,
    granularity: u64,
    /// Where the next scan starts: one past the last batch counted.
    pub(crate) scanned_to: Offset,
    /// Bytes of every batch counted.
    total: u64,
    /// `(base offset, bytes counted before that batch)`, oldest first.
    checkpoints: VecDeque<(Offset, u64)>,
}

impl PartitionSizes {
    /// Nothing counted yet, for a bound of `limit_bytes`.
    pub(crate) fn new(limit_bytes: u64) -> Self {
        Self {
            limit_bytes,
            granularity: (limit_bytes / 16).max(MIN_GRANULARITY),
            scanned_to: Offset(0),
            total: 0,
            checkpoints: VecDeque::new(),
        }
    }

    /// Counts the batch at `base` spanning `count` offsets and taking `bytes`.
    pub(crate) fn add(&mut self, base: Offset, count: u32, bytes: u64) {
        let due = self
            .checkpoints
            .back()
            .is_none_or(|&(_, before)| self.total - before >= self.granularity);
        if due {
            self.checkpoints.push_back((base, self.total));
        }
        self.total += bytes;
        self.scanned_to = base.plus(u64::from(count));
    }

    /// The log start that keeps at most `limit_bytes` (to the checkpoint), if it is above
    /// `log_start`; forgets the checkpoints below `log_start`.
    pub(crate) fn log_start_above(&mut self, log_start: Offset) -> Option<Offset> {
        while self.checkpoints.len() > 1 && self.checkpoints[1].0 <= log_start {
            self.checkpoints.pop_front();
        }
        let fits = self
            .checkpoints
            .iter()
            .find(|&&(_, before)| self.total - before <= self.limit_bytes)
            // A single stretch bigger than the bound: keep the newest checkpoint's.
            .or(self.checkpoints.back())
            .map(|&(base, _)| base)?;
        (fits > log_start).then_some(fits)
    }

    /// Bytes counted from the checkpoint at or below `log_start` on: the partition's retained
    /// size, to the granularity.
    #[cfg(test)]
    fn retained(&self, log_start: Offset) -> u64 {
        let before = self
            .checkpoints
            .iter()
            .rev()
            .find(|&&(base, _)| base <= log_start)
            .map_or(0, |&(_, before)| before);
        self.total - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_start_keeps_at_most_the_bound_to_the_granularity() {
        // 64 KiB bound: checkpoints every 4 KiB; batches of 1 KiB, one offset each.
        let mut sizes = PartitionSizes::new(64 * 1024);
        for i in 0..200 {
            sizes.add(Offset(i), 1, 1024);
        }
        assert_eq!(sizes.scanned_to, Offset(200));
        let start = sizes
            .log_start_above(Offset(0))
            .expect("200 KiB exceed 64 KiB");
        let kept = sizes.retained(start);
        assert!(
            kept <= 64 * 1024 && kept > 60 * 1024,
            "log start {start:?} keeps {kept} bytes"
        );
        assert_eq!(start, Offset(136));
        // Already there: nothing to move.
        assert_eq!(sizes.log_start_above(start), None);
        // More batches move it on.
        for i in 200..208 {
            sizes.add(Offset(i), 1, 1024);
        }
        assert_eq!(sizes.log_start_above(start), Some(Offset(144)));
    }

    #[test]
    fn a_log_within_the_bound_keeps_everything() {
        let mut sizes = PartitionSizes::new(1 << 20);
        for i in 0..100 {
            sizes.add(Offset(i * 10), 10, 1000);
        }
        assert_eq!(sizes.log_start_above(Offset(0)), None);
    }

    #[test]
    fn a_batch_bigger_than_the_bound_keeps_only_the_newest() {
        let mut sizes = PartitionSizes::new(4096);
        sizes.add(Offset(0), 5, 10_000);
        sizes.add(Offset(5), 5, 10_000);
        assert_eq!(sizes.log_start_above(Offset(0)), Some(Offset(5)));
    }
}
