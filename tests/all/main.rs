//! Weir's integration tests: one binary, one module per area.

/// The `weir` command line built for these tests (see `tests/src/bin/weir-e2e.rs`).
pub(crate) const WEIR: &str = env!("CARGO_BIN_EXE_weir-e2e");

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
mod tls;
mod tombstones;
mod topic_configs;
mod wasm_host;
