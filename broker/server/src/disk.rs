//! Free space on the data directory's filesystem, and the produce refusal when it runs low.
//!
//! A commit that fails for want of space fails the database for good (an fsync error leaves
//! the file in doubt; `storage_failure`), which stops the broker. So the node keeps a reserve:
//! a background task samples the filesystem's free space every `disk.check_interval_ms`, and
//! while it is below `disk.min_free_bytes` the partitions this node leads refuse new records
//! with `DISK_FULL` (RESOURCE_EXHAUSTED, retriable), as Redpanda refuses writes below
//! `storage_min_free_bytes`, and the partition replicas it follows hold back new entries (the
//! transport's entry gate: their leaders back off and send them again, and the other replicas
//! make the quorum). Everything else goes on: fetches, group commits and the controller's
//! entries, trims (which free space inside the data file for new batches). The reserve absorbs
//! what is in flight. Produce and replication resume by themselves at the first sample above
//! the reserve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;

/// Free space before the first sample: room enough.
const UNKNOWN: u64 = u64::MAX;

/// What a node knows of its data directory's free space.
#[derive(Debug)]
pub(crate) struct DiskSpace {
    /// The node whose data directory this is, for the messages.
    node_id: u64,
    data_dir: PathBuf,
    min_free_bytes: u64,
    /// Bytes free to the broker's user at the last sample.
    free_bytes: AtomicU64,
    /// Produce requests refused for want of space.
    refused: AtomicU64,
}

impl DiskSpace {
    /// Watches the filesystem holding node `node_id`'s `data_dir`, refusing produce below
    /// `min_free_bytes`; takes the first sample now.
    pub(crate) fn new(node_id: u64, data_dir: &Path, min_free_bytes: u64) -> Arc<Self> {
        let disk = Arc::new(Self {
            node_id,
            data_dir: data_dir.to_owned(),
            min_free_bytes,
            free_bytes: AtomicU64::new(UNKNOWN),
            refused: AtomicU64::new(0),
        });
        if let Err(e) = disk.sample() {
            tracing::warn!(
                data_dir = %disk.data_dir.display(),
                "cannot read the free space of the data directory's filesystem: {e}"
            );
        }
        disk
    }

    /// Reads the free space now; returns whether it is below the reserve.
    fn sample(&self) -> std::io::Result<bool> {
        let stats = rustix::fs::statvfs(&self.data_dir)?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        self.free_bytes.store(free, Ordering::Relaxed);
        Ok(free < self.min_free_bytes)
    }

    /// Samples every `every` until `shutdown`, logging once when the space falls below the
    /// reserve and once when it is back.
    pub(crate) fn spawn_sampler(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut low = self.free_bytes() < self.min_free_bytes;
            let mut unreadable = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match self.sample() {
                    Ok(now_low) => {
                        unreadable = false;
                        if now_low != low {
                            low = now_low;
                            if low {
                                tracing::warn!(
                                    free_bytes = self.free_bytes(),
                                    min_free_bytes = self.min_free_bytes,
                                    "the data directory's disk is below its reserve: produce is refused (DISK_FULL) and replicated entries are held back until space is freed"
                                );
                            } else {
                                tracing::info!(
                                    free_bytes = self.free_bytes(),
                                    "the data directory's disk is above its reserve again: produce and replication resume"
                                );
                            }
                        }
                    }
                    Err(e) if !unreadable => {
                        unreadable = true;
                        tracing::warn!(
                            data_dir = %self.data_dir.display(),
                            "cannot read the free space of the data directory's filesystem (keeping the last sample): {e}"
                        );
                    }
                    Err(_) => {}
                }
            }
        });
    }

    /// Bytes free at the last sample (`u64::MAX` before one succeeded).
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Relaxed)
    }

    /// The reserve, `disk.min_free_bytes`.
    pub(crate) fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Produce requests refused so far for want of space.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// `DISK_FULL` for a produce request if the last sample was below the reserve.
    pub(crate) fn check_room(&self) -> Result<(), BrokerError> {
        match self.shortage() {
            None => Ok(()),
            Some(shortage) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(BrokerError::DiskFull(format!(
                    "{shortage}: new records are refused until space is freed (retention, \
                     `weir topic trim`, or the operator); nothing was stored"
                )))
            }
        }
    }

    /// What is short, if the last sample was below the reserve.
    pub(crate) fn shortage(&self) -> Option<String> {
        let free = self.free_bytes();
        (free < self.min_free_bytes).then(|| {
            format!(
                "node {}'s data directory has {free} bytes free, below its reserve \
                 (disk.min_free_bytes = {})",
                self.node_id, self.min_free_bytes
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_reserve_is_refused_and_above_it_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskSpace::new(1, dir.path(), 0);
        assert!(roomy.free_bytes() > 0 && roomy.free_bytes() < UNKNOWN);
        assert!(roomy.check_room().is_ok());

        let cramped = DiskSpace::new(7, dir.path(), u64::MAX - 1);
        let err = cramped.check_room().unwrap_err();
        assert_eq!(err.reason(), "DISK_FULL");
        assert!(err.to_string().contains("node 7"), "{err}");
        assert_eq!(cramped.refused(), 1);
    }

    #[test]
    fn an_unreadable_directory_does_not_refuse() {
        let disk = DiskSpace::new(1, Path::new("/no/such/weir/data/dir"), 1 << 30);
        assert_eq!(disk.free_bytes(), UNKNOWN);
        assert!(disk.check_room().is_ok());
    }
}
