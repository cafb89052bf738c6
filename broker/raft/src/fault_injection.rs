//! Faults a test broker can build in, to put a raft group in states that real failures reach
//! only by chance (docs/reliability.md). A process opts in before it starts a broker; the
//! `weir` binary never does.

use std::sync::atomic::{AtomicBool, Ordering};

static CRASH_IN_JOINT_CONSENSUS: AtomicBool = AtomicBool::new(false);

/// Makes this process abort as soon as one of its partition replicas, leading, applies a joint
/// membership it proposed: the first of a membership change's two entries is committed and the
/// second is never proposed, as when a leader dies in the middle of a replica move.
pub fn crash_in_joint_consensus() {
    CRASH_IN_JOINT_CONSENSUS.store(true, Ordering::Relaxed);
}

/// Aborts the process if [`crash_in_joint_consensus`] was called.
pub(crate) fn crash_if_asked_in_joint_consensus(group: u64) {
    if CRASH_IN_JOINT_CONSENSUS.load(Ordering::Relaxed) {
        eprintln!("fault injection: aborting with raft group {group} in joint consensus, as asked");
        std::process::abort();
    }
}
