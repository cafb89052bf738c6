//! Weir's integration tests: one binary, one module per area.

mod produce_fetch;
