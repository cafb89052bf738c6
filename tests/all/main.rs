//! Weir's integration tests: one binary, one module per area.

/// The `weir` command line built for these tests (see `tests/src/bin/weir-e2e.rs`).
pub(crate) const WEIR: &str = env!("CARGO_BIN_EXE_weir-e2e");

/// [`WEIR`] as a path, as `ProcessCluster` takes it.
pub(crate) fn weir() -> &'static std::path::Path {
    std::path::Path::new(WEIR)
}

/// The wall clock in milliseconds since the Unix epoch, as record timestamps count.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

mod bad_input;
mod cli;
mod cluster;
mod compaction;
mod corruption;
mod crash;
mod disk_faults;
mod disk_full;
mod forged_commands;
mod fuzz;
mod groups;
mod idempotence;
mod module_cli;
mod modules;
mod nemesis;
mod offsets_and_tailing;
mod operations;
mod overload;
mod produce_fetch;
mod producer;
mod record_batches;
mod recovery;
mod retention;
mod security;
mod tls;
mod tombstones;
mod topic_configs;
mod wasm_host;
