//! Faults a test broker can build in, to show that the nemesis's checker catches a broker that
//! breaks its guarantees (docs/reliability.md). Like the simulated disk of weir-storage's
//! `install_database_backend`, a process opts in before it starts a broker; the `weir` binary
//! never does.

use std::sync::atomic::{AtomicBool, Ordering};

pub use weir_raft::fault_injection::crash_in_joint_consensus;
pub use weir_storage::crash_mid_compaction;

static SERVE_UNCOMMITTED: AtomicBool = AtomicBool::new(false);

/// Makes every broker of this process serve fetches past the high watermark, up to the end of
/// the replica's log: records not yet committed, which a leader change may replace. A broken
/// broker, for testing only.
pub fn serve_uncommitted_records() {
    SERVE_UNCOMMITTED.store(true, Ordering::Relaxed);
}

/// Whether [`serve_uncommitted_records`] was called.
pub(crate) fn serves_uncommitted_records() -> bool {
    SERVE_UNCOMMITTED.load(Ordering::Relaxed)
}
