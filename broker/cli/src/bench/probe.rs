//! The physical-limit probe of `weir bench produce` (DESIGN §8): what the disk under `--probe-dir`
//! can do durably, so a durable produce rate can be read as a fraction of it.
//!
//! - Sequential bandwidth: append a file in chunks, `fdatasync` (`File::sync_data`) after each,
//!   the pattern of a group-committing log.
//! - Small-write latency: append a few KiB and `fdatasync`, many times; the floor of a durable
//!   acknowledgement.
//!
//! Both are plain blocking functions over a directory, so they are tested with small sizes; call
//! them from `spawn_blocking`. The probe measures the disk of the machine running the benchmark,
//! which is the broker's only when both share it.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::stats::{LatencyRecorder, LatencySummary};

/// Bytes written and the time it took, including every sync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialWrite {
    /// Bytes written and synced.
    pub bytes: u64,
    /// Size of each write, followed by a sync.
    pub chunk_bytes: usize,
    /// Time from the first write to the last sync.
    pub elapsed: Duration,
}

impl SequentialWrite {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 / secs / 1e6
        } else {
            0.0
        }
    }
}

/// Appends `total_bytes` to a new temporary file in `dir`, `chunk_bytes` at a time, calling
/// `sync_data` after every chunk. The file is removed afterwards.
pub fn sequential_write(
    dir: &Path,
    total_bytes: u64,
    chunk_bytes: usize,
) -> io::Result<SequentialWrite> {
    let chunk_bytes = chunk_bytes.max(1);
    let chunk = incompressible_bytes(chunk_bytes);
    let mut file = probe_file(dir)?;
    let mut written: u64 = 0;
    let started = Instant::now();
    while written < total_bytes {
        let n = usize::try_from(total_bytes - written)
            .map_or(chunk_bytes, |left| left.min(chunk_bytes));
        file.as_file_mut().write_all(&chunk[..n])?;
        file.as_file().sync_data()?;
        written += n as u64;
    }
    let elapsed = started.elapsed();
    file.close()?;
    Ok(SequentialWrite {
        bytes: written,
        chunk_bytes,
        elapsed,
    })
}

/// Appends `write_bytes` and calls `sync_data`, `writes` times, to a new temporary file in `dir`,
/// and summarises the latency of each write + sync. The file is removed afterwards.
pub fn sync_latency(
    dir: &Path,
    writes: u32,
    write_bytes: usize,
) -> io::Result<Option<LatencySummary>> {
    let data = incompressible_bytes(write_bytes);
    let mut file = probe_file(dir)?;
    let mut latencies = LatencyRecorder::default();
    for _ in 0..writes {
        let started = Instant::now();
        file.as_file_mut().write_all(&data)?;
        file.as_file().sync_data()?;
        latencies.record(started.elapsed());
    }
    file.close()?;
    Ok(latencies.summary())
}

/// A new file in `dir` that is deleted when dropped, hidden from casual listings.
fn probe_file(dir: &Path) -> io::Result<tempfile::NamedTempFile<File>> {
    tempfile::Builder::new()
        .prefix(".weir-probe-")
        .tempfile_in(dir)
}

/// Incompressible data, so a compressing or deduplicating file system cannot flatter the disk.
pub fn incompressible_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_write_writes_everything_and_cleans_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let result = sequential_write(dir.path(), 10_000, 4096).expect("probe runs");
        assert_eq!(result.bytes, 10_000, "a partial last chunk is written too");
        assert_eq!(result.chunk_bytes, 4096);
        assert!(result.mb_per_sec() > 0.0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("readable").collect();
        assert!(left.is_empty(), "the probe file is removed: {left:?}");
    }

    #[test]
    fn sync_latency_takes_one_sample_per_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let summary = sync_latency(dir.path(), 5, 512)
            .expect("probe runs")
            .expect("samples were taken");
        assert_eq!(summary.count, 5);
        assert!(summary.p50 <= summary.p99 && summary.p99 <= summary.max);
        assert_eq!(sync_latency(dir.path(), 0, 512).expect("probe runs"), None);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("absent");
        assert!(sequential_write(&missing, 1, 1).is_err());
        assert!(sync_latency(&missing, 1, 1).is_err());
    }
}
