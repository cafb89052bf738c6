//! Compiled modules and their sandboxed instances: the store of an instance, its memory limiter,
//! its per-call deadline, fuel and log budget, and how a failed call becomes a [`ModuleError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentExportIndex, ComponentType, Func, InstancePre, Lift, WasmStr};
use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap};
use weir_abi::{Entry, OutcomeReader};

use crate::error::{ModuleError, chain_text};
use crate::limits::TABLE_ELEMENTS;
use crate::runtime::{PoolSlot, Shared};

/// Longest module-provided message (error, reject reason) kept, in bytes; longer ones are cut.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// A registered module version: its name and version number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId {
    /// The module's name.
    pub name: String,
    /// Its version.
    pub version: u32,
}

impl fmt::Display for ModuleId {
    /// `name@version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// This node's counters of one module, over all its instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// `process` calls.
    pub invocations: u64,
    /// Records handed to `process`.
    pub records_in: u64,
    /// Records `process` let through or produced.
    pub records_out: u64,
    /// Records `process` rejected.
    pub records_rejected: u64,
    /// Failed instantiations, `init` and `process` calls.
    pub errors: u64,
    /// Log lines dropped because a call went over its log budget.
    pub log_lines_dropped: u64,
    /// Time spent inside `process`.
    pub busy: Duration,
}

#[derive(Debug, Default)]
struct StatsCounters {
    invocations: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    records_rejected: AtomicU64,
    errors: AtomicU64,
    log_lines_dropped: AtomicU64,
    busy_nanos: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A compiled module, linked against the host and ready to instantiate.
pub struct Module {
    id: ModuleId,
    sha256: String,
    size: usize,
    from_cache: bool,
    pre: InstancePre<HostState>,
    init: ComponentExportIndex,
    process: ComponentExportIndex,
    shared: Arc<Shared>,
    stats: StatsCounters,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What [`Module::new`] needs, gathered by the runtime.
pub(crate) struct ModuleParts {
    pub(crate) id: ModuleId,
    pub(crate) sha256: String,
    pub(crate) size: usize,
    pub(crate) from_cache: bool,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) init: ComponentExportIndex,
    pub(crate) process: ComponentExportIndex,
}

impl Module {
    pub(crate) fn new(parts: ModuleParts, shared: Arc<Shared>) -> Self {
        Self {
            id: parts.id,
            sha256: parts.sha256,
            size: parts.size,
            from_cache: parts.from_cache,
            pre: parts.pre,
            init: parts.init,
            process: parts.process,
            shared,
            stats: StatsCounters::default(),
        }
    }

    /// Name and version.
    pub fn id(&self) -> &ModuleId {
        &self.id
    }

    /// SHA-256 of the bytes it was loaded from, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the bytes it was loaded from.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether its compiled artifact came from the cache rather than the compiler.
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// This node's counters of the module.
    pub fn stats(&self) -> ModuleStats {
        let s = &self.stats;
        ModuleStats {
            invocations: s.invocations.load(Ordering::Relaxed),
            records_in: s.records_in.load(Ordering::Relaxed),
            records_out: s.records_out.load(Ordering::Relaxed),
            records_rejected: s.records_rejected.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            log_lines_dropped: s.log_lines_dropped.load(Ordering::Relaxed),
            busy: Duration::from_nanos(s.busy_nanos.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn count_error(&self) {
        add(&self.stats.errors, 1);
    }

    pub(crate) fn count_records(&self, records_in: u64, out: u64, rejected: u64) {
        add(&self.stats.records_in, records_in);
        add(&self.stats.records_out, out);
        add(&self.stats.records_rejected, rejected);
    }

    /// A fresh instance (from the pool, with its own store and memory cap) whose `init` has run
    /// with `params`.
    pub fn instantiate(
        self: &Arc<Self>,
        params: &[(String, String)],
    ) -> Result<Instance, ModuleError> {
        self.instantiate_logged(params, false).0
    }

    /// [`Module::instantiate`], with the log lines written while it failed when `capture` is set
    /// (those of a successful `init` stay in the instance for [`Instance::take_logs`]).
    pub(crate) fn instantiate_logged(
        self: &Arc<Self>,
        params: &[(String, String)],
        capture: bool,
    ) -> (Result<Instance, ModuleError>, Vec<LogLine>) {
        let mut store = self.new_store();
        store.data_mut().log.capture = capture;
        let result = self.pre_instantiate(&mut store).and_then(|instance| {
            let func = |index: &ComponentExportIndex, store: &mut Store<HostState>| {
                instance
                    .get_func(store, index)
                    .ok_or_else(|| ModuleError::Host {
                        module: self.id.clone(),
                        message: "an export checked at load time is missing".into(),
                    })
            };
            Ok((
                func(&self.init, &mut store)?,
                func(&self.process, &mut store)?,
            ))
        });
        let (init, process) = match result {
            Ok(funcs) => funcs,
            Err(e) => {
                self.count_error();
                return (Err(e), std::mem::take(&mut store.data_mut().log.lines));
            }
        };
        let mut instance = Instance {
            module: self.clone(),
            store,
            process,
            failed: false,
        };
        match instance.init(init, params) {
            Ok(()) => (Ok(instance), Vec::new()),
            Err(e) => {
                self.count_error();
                (Err(e), instance.take_logs())
            }
        }
    }

    /// Instantiates the module in `store` without calling into it.
    pub(crate) fn pre_instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<wasmtime::component::Instance, ModuleError> {
        store.data_mut().begin_call();
        let result = self.pre.instantiate(&mut *store);
        self.flush_logs(store);
        let instance = result.map_err(|e| self.classify(store.data(), e))?;
        store.data_mut().pool_slot = Some(self.shared.pool_slot());
        Ok(instance)
    }

    /// A store for one instance of this module.
    pub(crate) fn new_store(&self) -> Store<HostState> {
        new_store(&self.shared, self.id.clone())
    }

    fn flush_logs(&self, store: &mut Store<HostState>) {
        let dropped = store.data_mut().log.end_call(&self.id);
        add(&self.stats.log_lines_dropped, dropped);
    }

    /// The [`ModuleError`] for a failed instantiation or call.
    fn classify(&self, state: &HostState, e: wasmtime::Error) -> ModuleError {
        classify(&self.shared, &self.id, state, e)
    }
}

/// A store for an instance of module `id`, with the runtime's limits.
pub(crate) fn new_store(shared: &Shared, id: ModuleId) -> Store<HostState> {
    let limits = shared.limits();
    let state = HostState {
        limiter: Limiter {
            memory: limits.memory_cap(),
            hit: false,
        },
        log: LogBuffer::new(id, limits.max_log_bytes_per_call),
        pool_slot: None,
    };
    let mut store = Store::new(shared.engine(), state);
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_trap();
    // Instantiation runs the module's start function, if any: it gets one call's deadline and
    // fuel too. Every call resets both.
    store.set_epoch_deadline(limits.deadline_ticks());
    if let Some(fuel) = limits.fuel_per_call {
        // Cannot fail: fuel metering is on in the engine exactly when this limit is set.
        let _ = store.set_fuel(fuel);
    }
    store
}

/// The [`ModuleError`] for a failed instantiation or call of module `id`.
pub(crate) fn classify(
    shared: &Shared,
    id: &ModuleId,
    state: &HostState,
    e: wasmtime::Error,
) -> ModuleError {
    let limits = shared.limits();
    let module = id.clone();
    if state.limiter.hit {
        return ModuleError::OutOfMemory {
            module,
            limit: limits.memory_cap(),
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => ModuleError::Timeout {
                module,
                limit: limits.call_timeout,
            },
            Trap::OutOfFuel => ModuleError::FuelExhausted {
                module,
                limit: limits.fuel_per_call.unwrap_or_default(),
            },
            Trap::StackOverflow => ModuleError::StackOverflow { module },
            // Rust (and C) keep large frames on a shadow stack at the bottom of linear memory:
            // deep recursion runs off its end before the wasm stack limit, and safe Rust has
            // no other way to access memory out of bounds.
            Trap::MemoryOutOfBounds => ModuleError::Trap {
                module,
                message:
                    "out of bounds memory access (usually a stack overflow: recursion too deep)"
                        .into(),
            },
            other => {
                let text = other.to_string();
                ModuleError::Trap {
                    module,
                    message: text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned(),
                }
            }
        };
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return ModuleError::PoolExhausted {
            module,
            limit: limits.max_instances,
        };
    }
    // Canonical ABI violations (a pointer out of bounds, a string that is not UTF-8, ...) are
    // the module's doing, reported like traps.
    ModuleError::Trap {
        module,
        message: truncate(chain_text(e.as_ref()), MAX_MESSAGE_BYTES),
    }
}

/// A sandboxed instance of a module, initialized with its parameters.
///
/// An instance keeps state between calls (aggregates live in it). After any failed call it is
/// unusable ([`ModuleError::Unusable`]); instantiate a new one.
pub struct Instance {
    module: Arc<Module>,
    store: Store<HostState>,
    process: Func,
    failed: bool,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("module", &self.module.id)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The parameters of `init`, as lowered into the guest.
type InitParams<'a> = (&'a [(&'a str, &'a str)],);

impl Instance {
    /// The module this is an instance of.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// Keeps the module's log lines for [`Instance::take_logs`] instead of sending them to
    /// `tracing` (for tools that show a module's log to its author).
    pub fn capture_logs(&mut self, capture: bool) {
        self.store.data_mut().log.capture = capture;
    }

    /// The log lines of the latest call, when capturing; a last line says how many were dropped
    /// over the limit.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.store.data_mut().log.lines)
    }

    fn init(&mut self, init: Func, params: &[(String, String)]) -> Result<(), ModuleError> {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let module = self.module.clone();
        let result = self.call(|store| {
            init.typed::<InitParams<'_>, (Result<(), String>,)>(&*store)?
                .call(store, (&pairs,))
        });
        match result? {
            (Ok(()),) => Ok(()),
            (Err(message),) => {
                self.failed = true;
                Err(ModuleError::InvalidParams {
                    module: module.id.clone(),
                    message: truncate(message, MAX_MESSAGE_BYTES),
                })
            }
        }
    }

    /// Runs `f` as one call: with a fresh deadline, fuel and log budget; a failure classified
    /// and the instance marked failed.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, ModuleError> {
        if self.failed {
            return Err(ModuleError::Unusable {
                module: self.module.id.clone(),
            });
        }
        let shared = &self.module.shared;
        self.store
            .set_epoch_deadline(shared.limits().deadline_ticks());
        if let Some(fuel) = shared.limits().fuel_per_call {
            // Fuel is enabled in the engine exactly when the limit is set.
            self.store.set_fuel(fuel).map_err(|e| ModuleError::Host {
                module: self.module.id.clone(),
                message: chain_text(e.as_ref()),
            })?;
        }
        self.store.data_mut().begin_call();
        let result = f(&mut self.store);
        self.module.flush_logs(&mut self.store);
        result.map_err(|e| {
            self.failed = true;
            self.module.classify(self.store.data(), e)
        })
    }

    /// Calls `process` with an encoded batch of `inputs` records and returns the encoded
    /// outcome, checked: within the output limit and decodable against the batch.
    pub fn process(&mut self, batch: &[u8], inputs: u32) -> Result<Vec<u8>, ModuleError> {
        let outcome = self.process_raw(batch)?;
        let mut out = 0u64;
        let mut rejected = 0u64;
        let checked = OutcomeReader::new(&outcome, inputs).and_then(|reader| {
            for entry in reader {
                match entry? {
                    Entry::Keep { .. } | Entry::Record { .. } => out += 1,
                    Entry::Reject { .. } => rejected += 1,
                }
            }
            Ok(())
        });
        match checked {
            Ok(()) => {
                self.module.count_records(u64::from(inputs), out, rejected);
                Ok(outcome)
            }
            Err(error) => Err(self.bad_output(error)),
        }
    }

    /// Calls `process` and applies the output limit; decoding is the caller's.
    pub(crate) fn process_raw(&mut self, batch: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let module = self.module.clone();
        add(&module.stats.invocations, 1);
        let started = Instant::now();
        let process = self.process;
        let result = self.call(|store| {
            process
                .typed::<(&[u8],), (Result<Vec<u8>, String>,)>(&*store)?
                .call(store, (batch,))
        });
        add(
            &module.stats.busy_nanos,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        let outcome = match result {
            Ok((Ok(outcome),)) => outcome,
            Ok((Err(message),)) => {
                self.failed = true;
                module.count_error();
                return Err(ModuleError::Failed {
                    module: module.id.clone(),
                    message: truncate(message, MAX_MESSAGE_BYTES),
                });
            }
            Err(e) => {
                module.count_error();
                return Err(e);
            }
        };
        let limit = module.shared.limits().max_output_bytes;
        if outcome.len() > limit {
            self.failed = true;
            module.count_error();
            return Err(ModuleError::OutputTooLarge {
                module: module.id.clone(),
                size: outcome.len(),
                limit,
            });
        }
        Ok(outcome)
    }

    /// Marks the instance failed for an outcome that does not decode.
    pub(crate) fn bad_output(&mut self, error: weir_abi::AbiError) -> ModuleError {
        self.failed = true;
        self.module.count_error();
        ModuleError::BadOutput {
            module: self.module.id.clone(),
            error,
        }
    }
}

/// Severity of a module's log line (the WIT `host.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for the module's author.
    Debug,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        })
    }
}

/// The WIT `level` enum as lifted from the guest.
#[derive(ComponentType, Lift, Clone, Copy)]
#[expect(
    dead_code,
    reason = "variants are constructed by lifting them from the guest"
)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitLevel {
    #[component(name = "error")]
    Error,
    #[component(name = "warn")]
    Warn,
    #[component(name = "info")]
    Info,
    #[component(name = "debug")]
    Debug,
}

impl From<WitLevel> for LogLevel {
    fn from(level: WitLevel) -> Self {
        match level {
            WitLevel::Error => LogLevel::Error,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Debug => LogLevel::Debug,
        }
    }
}

/// One line a module logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The module that wrote it.
    pub module: ModuleId,
    /// Its severity.
    pub level: LogLevel,
    /// The text (cut at the call's remaining log budget).
    pub message: String,
}

/// The `tracing` target of module log lines.
pub(crate) const LOG_TARGET: &str = "weir::module";

/// The log lines of the current call: bounded, and either captured or forwarded to `tracing`.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    module: ModuleId,
    limit: usize,
    used: usize,
    dropped: u64,
    capture: bool,
    lines: Vec<LogLine>,
}

impl LogBuffer {
    pub(crate) fn new(module: ModuleId, limit: usize) -> Self {
        Self {
            module,
            limit,
            used: 0,
            dropped: 0,
            capture: false,
            lines: Vec::new(),
        }
    }

    /// Bytes the current call may still log.
    pub(crate) fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Starts a call: a fresh budget; captured lines of the previous call are discarded.
    fn begin_call(&mut self) {
        self.used = 0;
        self.dropped = 0;
        self.lines.clear();
    }

    /// Records a line already cut to the remaining budget (`None` when nothing remained).
    pub(crate) fn push(&mut self, level: LogLevel, message: Option<String>) {
        let Some(message) = message else {
            self.dropped += 1;
            return;
        };
        // Every line costs at least one byte, so a flood of empty lines is bounded too.
        self.used = self.used.saturating_add(message.len().max(1));
        if self.capture {
            self.lines.push(LogLine {
                module: self.module.clone(),
                level,
                message,
            });
        } else {
            emit(&self.module, level, &message);
        }
    }

    /// Ends a call; reports and returns the number of lines dropped in it.
    fn end_call(&mut self, module: &ModuleId) -> u64 {
        let dropped = std::mem::take(&mut self.dropped);
        if dropped > 0 {
            let message = format!(
                "{dropped} more log lines dropped: over the limit of {} bytes per call",
                self.limit
            );
            if self.capture {
                self.lines.push(LogLine {
                    module: module.clone(),
                    level: LogLevel::Warn,
                    message,
                });
            } else {
                emit(module, LogLevel::Warn, &message);
            }
        }
        dropped
    }
}

fn emit(module: &ModuleId, level: LogLevel, message: &str) {
    match level {
        LogLevel::Error => tracing::error!(target: LOG_TARGET, %module, "{message}"),
        LogLevel::Warn => tracing::warn!(target: LOG_TARGET, %module, "{message}"),
        LogLevel::Info => tracing::info!(target: LOG_TARGET, %module, "{message}"),
        LogLevel::Debug => tracing::debug!(target: LOG_TARGET, %module, "{message}"),
    }
}

/// Memory and table growth limits of one store.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory: usize,
    /// Set when the instance asked for more memory than allowed, so the resulting trap is
    /// reported as [`ModuleError::OutOfMemory`].
    hit: bool,
}

/// The error that turns a refused `memory.grow` into a trap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired} bytes)")]
struct MemoryLimitExceeded {
    limit: usize,
    desired: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = true;
            // A trap instead of a failed `memory.grow`: guests would abort on allocation failure
            // anyway, and this way the error says what happened.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.memory,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}

/// The data of an instance's store.
#[derive(Debug)]
pub(crate) struct HostState {
    limiter: Limiter,
    pub(crate) log: LogBuffer,
    /// Set once the instance holds a slot of the pool.
    pool_slot: Option<PoolSlot>,
}

impl HostState {
    fn begin_call(&mut self) {
        self.limiter.hit = false;
        self.log.begin_call();
    }
}

/// The host's `log` function.
pub(crate) fn host_log(
    mut cx: StoreContextMut<'_, HostState>,
    (level, message): (WitLevel, WasmStr),
) -> wasmtime::Result<()> {
    let remaining = cx.data().log.remaining();
    let text = if remaining == 0 {
        None
    } else {
        Some(prefix(&message.to_str(&cx)?, remaining).to_owned())
    };
    cx.data_mut().log.push(level.into(), text);
    Ok(())
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    let len = prefix(&text, max).len();
    text.truncate(len);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ModuleId {
        ModuleId {
            name: "m".into(),
            version: 3,
        }
    }

    #[test]
    fn ids_read_name_at_version() {
        assert_eq!(id().to_string(), "m@3");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("hello".into(), 10), "hello");
        assert_eq!(truncate("hello".into(), 3), "hel");
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate(String::new(), 0), "");
    }

    #[test]
    fn log_budget_is_per_call_and_counts_drops() {
        let mut log = LogBuffer::new(id(), 10);
        log.capture = true;
        log.begin_call();
        log.push(LogLevel::Info, Some("12345678".into()));
        assert_eq!(log.remaining(), 2);
        log.push(LogLevel::Warn, Some("ab".into()));
        assert_eq!(log.remaining(), 0);
        log.push(LogLevel::Warn, None);
        log.push(LogLevel::Warn, None);
        assert_eq!(log.end_call(&id()), 2);
        let lines: Vec<_> = log.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            lines,
            vec![
                "12345678",
                "ab",
                "2 more log lines dropped: over the limit of 10 bytes per call"
            ]
        );
        log.begin_call();
        assert_eq!(log.remaining(), 10);
        assert!(log.lines.is_empty());
        assert_eq!(log.end_call(&id()), 0);
    }

    #[test]
    fn empty_lines_use_budget() {
        let mut log = LogBuffer::new(id(), 3);
        log.begin_call();
        for _ in 0..3 {
            log.push(LogLevel::Debug, Some(String::new()));
        }
        assert_eq!(log.remaining(), 0);
    }
}
