//! Weir's WebAssembly host: the only crate that touches wasmtime (DESIGN §5).
//!
//! - [`Runtime`]: one per broker node. Owns the wasmtime engine (pooling allocator, epoch
//!   interruption driven by a ticker thread, optional fuel), the host side of the
//!   `weir:module@1.0.0` world (only `host.log`: no WASI, no other imports) and the cache of
//!   compiled artifacts. [`Runtime::load`] validates, componentizes and compiles module bytes once.
//! - [`Module`]: a compiled, pre-linked module, ready to be instantiated quickly; counts its
//!   [`ModuleStats`].
//! - [`Instance`]: one sandboxed instance (its own store, memory cap, per-call deadline) whose
//!   `init` has run with the attachment's parameters.
//! - [`Chain`]: ordered [`Stage`]s run over a batch of records, stage by stage, each stage seeing
//!   what the previous one let through; rejections are reported with the record as it reached
//!   the rejecting stage.
//!
//! A module's misbehaviour (trap, timeout, memory bomb, deep recursion, malformed or oversized
//! output) is a [`ModuleError`] for the chain that ran it; the instance is discarded and the
//! runtime, the other modules and the broker carry on. Nothing here panics on module behaviour
//! or on bad bytes.
//!
//! Everything is synchronous and CPU-bound: async callers run chains with `spawn_blocking`. A
//! call never runs past its wall-clock limit ([`WasmLimits::call_timeout`]).
//!
//! # Sandbox
//!
//! - Imports: only `log` of `weir:module/host@1.0.0`. No WASI, no clock, no randomness, no files:
//!   a module can compute on its batch and write bounded log lines, nothing else.
//! - Memory: each instance's linear memory is capped by a resource limiter
//!   ([`WasmLimits::memory_bytes`]); growing past it traps at once and is reported as
//!   [`ModuleError::OutOfMemory`], rather than letting `memory.grow` fail and the guest abort.
//! - Time: epoch interruption. A thread per runtime advances the epoch every 10 ms and every call
//!   gets a deadline of `call_timeout` in ticks ([`ModuleError::Timeout`]). Optional fuel
//!   ([`WasmLimits::fuel_per_call`]) bounds work deterministically ([`ModuleError::FuelExhausted`]).
//! - Stack: wasmtime's default `max_wasm_stack` (512 KiB); runaway recursion is
//!   [`ModuleError::StackOverflow`].
//! - Output: at most [`WasmLimits::max_output_bytes`] per call, and decoded strictly against the
//!   batch it answers ([`ModuleError::BadOutput`]).
//! - Pool: the pooling allocator holds at most [`WasmLimits::max_instances`] component instances
//!   (4 core instances, 1 memory and 4 tables of 10 000 elements each), so instantiation is a
//!   few tens of microseconds and the node's total is bounded ([`ModuleError::PoolExhausted`]).
//!   [`MemoryLayout`] trades reserved address space against bounds checks in compiled code.
//! - Compiled code is cached per node (see [`Runtime::new`]); a cache file is integrity-checked
//!   before wasmtime deserializes it, the one `unsafe` operation of this crate.

mod cache;
mod chain;
mod error;
mod limits;
mod module;
mod runtime;
mod world;

pub use cache::CacheStats;
pub use chain::{Chain, ChainError, ChainOutput, ChainRecord, MAX_CALL_BYTES, Rejection, Stage};
pub use error::{ModuleError, WasmError};
pub use limits::{MemoryLayout, WasmLimits};
pub use module::{Instance, LogLevel, LogLine, Module, ModuleId, ModuleStats};
pub use runtime::{PERF_MAP_VAR, Runtime, sha256_hex};
