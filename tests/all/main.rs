//! Weir's integration tests: one binary, one module per area.

mod bad_input;
mod offsets_and_tailing;
mod operations;
mod produce_fetch;
mod recovery;
