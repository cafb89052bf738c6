//! What the committer counts, for metrics and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters kept by the committer, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Transactions committed (each one fsync).
    pub commits: AtomicU64,
    /// Write requests completed (each a caller waiting for durability).
    pub requests: AtomicU64,
    /// Bytes of entries appended.
    pub appended_bytes: AtomicU64,
    /// How long each commit took (their sum is the total time spent committing).
    pub commit_durations: DurationBuckets,
    /// How long each durable write waited, from its submission to the commit that made it
    /// durable: the commit in progress when it came, plus its own. Storage's share of a
    /// produce's latency.
    pub write_waits: DurationBuckets,
}

/// Upper bounds, in microseconds, of the buckets storage durations are counted in: from a commit
/// the page cache absorbs to one that stalls every partition of the node for seconds.
pub const DURATION_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000, 2_000_000, 5_000_000,
];

/// Durations counted in the buckets of [`DURATION_BOUNDS_MICROS`], plus one for those
/// longer than the last bound.
#[derive(Debug, Default)]
pub struct DurationBuckets {
    counts: [AtomicU64; DURATION_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl DurationBuckets {
    /// Counts one duration in the first bucket whose bound it does not exceed.
    pub fn record(&self, micros: u64) {
        let bucket = DURATION_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The sum of every duration recorded, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Each bucket's upper bound in seconds (`f64::INFINITY` for the last) with the durations
    /// counted in it alone (not cumulative), in the order of the bounds.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = DURATION_BOUNDS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain([f64::INFINITY]);
        bounds
            .zip(&self.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_it_does_not_exceed() {
        let durations = DurationBuckets::default();
        for micros in [0, 50, 51, 999, 1_000, 7_000_000] {
            durations.record(micros);
        }
        let buckets = durations.buckets();
        assert_eq!(buckets.len(), DURATION_BOUNDS_MICROS.len() + 1);
        assert_eq!(buckets[0], (50e-6, 2)); // 0 and 50
        assert_eq!(buckets[1], (100e-6, 1)); // 51
        assert_eq!(buckets[4], (1e-3, 2)); // 999 and 1 000
        assert_eq!(buckets[16], (f64::INFINITY, 1)); // beyond 5 s
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 6);
        assert!((durations.sum_seconds() - 7.002_1).abs() < 1e-9);
    }
}
