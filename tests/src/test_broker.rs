//! What the test brokers (`weir-e2e`, `nemesis broker`) build in when their environment asks:
//! the simulated disk ([`crate::disk::ENV`]) and the faults of [`BuiltInFault`].

/// A fault a test broker builds in when its environment variable is `1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltInFault {
    /// Serve records past the high watermark
    /// (`weir_server::fault_injection::serve_uncommitted_records`): a broken broker the
    /// nemesis's checker must catch.
    ServeUncommitted,
    /// Abort when a leading partition replica applies the joint membership it proposed
    /// (`weir_server::fault_injection::crash_in_joint_consensus`): a replica move cut short
    /// between its two membership entries.
    CrashInJointConsensus,
    /// Abort in the middle of a compaction pass, its first rewrites durable and its state not
    /// recorded (`weir_server::fault_injection::crash_mid_compaction`).
    CrashMidCompaction,
}

impl BuiltInFault {
    const ALL: [BuiltInFault; 3] = [
        BuiltInFault::ServeUncommitted,
        BuiltInFault::CrashInJointConsensus,
        BuiltInFault::CrashMidCompaction,
    ];

    /// The environment variable that switches the fault on.
    pub fn env(self) -> &'static str {
        match self {
            BuiltInFault::ServeUncommitted => "WEIR_SERVE_UNCOMMITTED",
            BuiltInFault::CrashInJointConsensus => "WEIR_CRASH_IN_JOINT_CONSENSUS",
            BuiltInFault::CrashMidCompaction => "WEIR_CRASH_MID_COMPACTION",
        }
    }

    fn install(self) {
        match self {
            BuiltInFault::ServeUncommitted => {
                weir_server::fault_injection::serve_uncommitted_records()
            }
            BuiltInFault::CrashInJointConsensus => {
                weir_server::fault_injection::crash_in_joint_consensus()
            }
            BuiltInFault::CrashMidCompaction => {
                weir_server::fault_injection::crash_mid_compaction()
            }
        }
    }
}

/// Installs what the environment asks for; call before the broker starts. Fails on a value
/// it does not know.
pub fn install_from_env() -> Result<(), String> {
    crate::disk::install_from_env()?;
    for fault in BuiltInFault::ALL {
        match std::env::var(fault.env()).as_deref() {
            Err(_) | Ok("0") => {}
            Ok("1") => fault.install(),
            Ok(other) => return Err(format!("{}={other:?}: expected 0 or 1", fault.env())),
        }
    }
    Ok(())
}
