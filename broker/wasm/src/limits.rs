//! Sandbox limits, and how they size the engine: its instance pool, its linear-memory slots and
//! the epoch deadline of a call.

use std::time::Duration;

use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Limits applied to every module a [`Runtime`](crate::Runtime) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmLimits {
    /// Largest module (core module or component) that [`Runtime::load`](crate::Runtime::load)
    /// accepts, in bytes.
    pub max_module_bytes: usize,
    /// Linear memory one instance may grow to, in bytes (rounded up to whole 64 KiB wasm pages).
    /// Growing past it traps with [`ModuleError::OutOfMemory`](crate::ModuleError::OutOfMemory).
    pub memory_bytes: usize,
    /// Wall-clock limit of one call into a module (`init`, or `process` of one batch), enforced
    /// by epoch interruption with a resolution of 10 ms.
    pub call_timeout: Duration,
    /// Fuel (about one unit per wasm instruction) one call may burn; `None` turns fuel metering
    /// off, which makes the compiled code faster.
    pub fuel_per_call: Option<u64>,
    /// Largest outcome one `process` call may return, in bytes.
    pub max_output_bytes: usize,
    /// Log text one call may write; further lines are dropped and counted.
    pub max_log_bytes_per_call: usize,
    /// Instances that may exist at once in this runtime: the size of the pooling allocator.
    /// Each instance of a chain stage holds one slot while the chain lives.
    pub max_instances: u32,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: 16 * MIB,
            memory_bytes: 64 * MIB,
            call_timeout: Duration::from_secs(1),
            fuel_per_call: None,
            max_output_bytes: 16 * MIB,
            max_log_bytes_per_call: 16 * KIB,
            max_instances: 256,
        }
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const WASM_PAGE: usize = 64 * KIB;

/// Period of the epoch ticker: the resolution of [`WasmLimits::call_timeout`].
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest memory a 32-bit wasm module can address.
const MAX_MEMORY: usize = 4 * 1024 * MIB;

/// How the instance pool lays out linear memories in the address space: a trade between
/// reserved (not committed) virtual memory and the speed of memory accesses in module code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MemoryLayout {
    /// Each memory slot reserves exactly the memory limit plus a 64 KiB guard: with the default
    /// limits, 256 × 64 MiB ≈ 16.5 GiB of address space per runtime, so a process can hold many
    /// runtimes (several in-process brokers in a test). Cranelift then checks every load and
    /// store against the slot's (constant) size: a compare-and-branch that cost 10–20% on a
    /// naive byte-scanning substring filter and under the noise on keep-all, measured here.
    #[default]
    Compact,
    /// Each memory slot reserves 4 GiB plus a 32 MiB guard, wasmtime's default, so that
    /// Cranelift elides bounds checks and out-of-bounds accesses fault in the guard: about
    /// 1 TiB of address space per runtime with 256 instances. For a production node running
    /// memory-bound modules, with one runtime per process.
    GuardPages,
}

const GUARD_PAGES_RESERVATION: u64 = 4 << 30;
const GUARD_PAGES_GUARD: u64 = 32 << 20;
const COMPACT_GUARD: u64 = 64 * KIB as u64;

impl MemoryLayout {
    fn reservation(self, memory_cap: usize) -> u64 {
        match self {
            MemoryLayout::Compact => memory_cap as u64,
            MemoryLayout::GuardPages => GUARD_PAGES_RESERVATION.max(memory_cap as u64),
        }
    }

    fn guard(self) -> u64 {
        match self {
            MemoryLayout::Compact => COMPACT_GUARD,
            MemoryLayout::GuardPages => GUARD_PAGES_GUARD,
        }
    }
}

/// Core instances a componentized module needs: the module itself plus wit-component's shim and
/// fixup modules for its imports. Pool sizes are multiples of this.
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// Tables per component: the module's function table plus the shim's.
const TABLES_PER_COMPONENT: u32 = 4;
/// Largest function table of one core module, in elements.
pub(crate) const TABLE_ELEMENTS: usize = 10_000;

/// Why a set of limits cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitsProblem {
    NoInstances,
    NoMemory,
    MemoryTooLarge,
    NoTimeout,
}

impl std::fmt::Display for LimitsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitsProblem::NoInstances => "max_instances must be at least 1",
            LimitsProblem::NoMemory => "memory_bytes must be positive",
            LimitsProblem::MemoryTooLarge => "memory_bytes must be at most 4 GiB",
            LimitsProblem::NoTimeout => "call_timeout must be positive",
        })
    }
}

impl WasmLimits {
    /// Checks that the limits describe a usable sandbox.
    pub(crate) fn check(&self) -> Result<(), LimitsProblem> {
        if self.max_instances == 0 {
            return Err(LimitsProblem::NoInstances);
        }
        if self.memory_bytes == 0 {
            return Err(LimitsProblem::NoMemory);
        }
        if self.memory_bytes > MAX_MEMORY {
            return Err(LimitsProblem::MemoryTooLarge);
        }
        if self.call_timeout.is_zero() {
            return Err(LimitsProblem::NoTimeout);
        }
        Ok(())
    }

    /// The memory cap rounded up to whole wasm pages.
    pub(crate) fn memory_cap(&self) -> usize {
        self.memory_bytes
            .div_ceil(WASM_PAGE)
            .saturating_mul(WASM_PAGE)
            .min(MAX_MEMORY)
    }

    /// Epoch ticks a call may run: the timeout in ticks, rounded up, plus one because the call
    /// starts part-way through the current tick.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        let ticks = self.call_timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
    }

    /// The engine configuration these limits call for.
    pub(crate) fn engine_config(&self, layout: MemoryLayout) -> Config {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(self.fuel_per_call.is_some())
            .memory_init_cow(true)
            .memory_reservation(layout.reservation(self.memory_cap()))
            .memory_guard_size(layout.guard())
            .memory_reservation_for_growth(0)
            .memory_may_move(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(self.pool_config()));
        config
    }

    fn pool_config(&self) -> PoolingAllocationConfig {
        let instances = self.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(instances)
            .max_memories_per_component(1)
            .max_memories_per_module(1)
            .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_tables_per_module(1)
            .table_elements(TABLE_ELEMENTS)
            .max_memory_size(self.memory_cap());
        if std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| has_pagemap_scan(&r))
        {
            pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                .pagemap_scan(Enabled::Auto);
        }
        pool
    }
}

/// Linear memory a freed instance's slot resets in place, at most: the pages its guest wrote,
/// found with Linux's `PAGEMAP_SCAN`, are set back to their initial contents and stay mapped,
/// where they would otherwise be unmapped with `madvise` (interrupting every other core to flush
/// its TLB) and faulted in again by the slot's next instance. A `Fetch` through a chain
/// instantiates and drops one instance per stage (docs/modules.md), so this is a per-request
/// cost. Only with `PAGEMAP_SCAN` (Linux 6.7 and later): without it the lowest this many bytes
/// would be reset whatever the guest wrote, which measured slower than unmapping.
const MEMORY_KEEP_RESIDENT: usize = MIB;
/// The same for an instance's tables.
const TABLE_KEEP_RESIDENT: usize = 64 * KIB;

/// Whether a kernel of this release (`/proc/sys/kernel/osrelease`, e.g. "6.18.44-generic") has
/// the `PAGEMAP_SCAN` ioctl: Linux 6.7 or later.
fn has_pagemap_scan(release: &str) -> bool {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let mut next = || numbers.next().and_then(|n| n.parse::<u32>().ok());
    matches!((next(), next()), (Some(major), Some(minor)) if (major, minor) >= (6, 7))
}

/// `n` bytes in the largest binary unit that divides it exactly, e.g. "64 MiB", "1500 bytes".
pub(crate) fn human_bytes(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_scan_is_linux_6_7_and_later() {
        for (release, has) in [
            ("6.18.44-fc-v1300", true),
            ("6.7.0", true),
            ("7.0-rc1\n", true),
            ("6.6.87.2-microsoft-standard-WSL2", false),
            ("5.15.0-91-generic", false),
            ("6", false),
            ("", false),
            ("linux", false),
        ] {
            assert_eq!(has_pagemap_scan(release), has, "{release:?}");
        }
    }

    #[test]
    fn defaults_match_the_documented_limits() {
        let d = WasmLimits::default();
        assert_eq!(d.max_module_bytes, 16 << 20);
        assert_eq!(d.memory_bytes, 64 << 20);
        assert_eq!(d.call_timeout, Duration::from_secs(1));
        assert_eq!(d.fuel_per_call, None);
        assert_eq!(d.max_output_bytes, 16 << 20);
        assert_eq!(d.max_log_bytes_per_call, 16 << 10);
        assert_eq!(d.max_instances, 256);
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn memory_cap_rounds_up_to_pages() {
        let mut l = WasmLimits {
            memory_bytes: 1,
            ..WasmLimits::default()
        };
        assert_eq!(l.memory_cap(), WASM_PAGE);
        l.memory_bytes = 64 << 20;
        assert_eq!(l.memory_cap(), 64 << 20);
        l.memory_bytes = (64 << 20) + 1;
        assert_eq!(l.memory_cap(), (64 << 20) + WASM_PAGE);
        l.memory_bytes = 0;
        assert_eq!(l.memory_cap(), 0);
    }

    #[test]
    fn deadline_covers_the_whole_timeout() {
        let mut l = WasmLimits::default();
        assert_eq!(l.deadline_ticks(), 101);
        l.call_timeout = Duration::from_millis(205);
        assert_eq!(l.deadline_ticks(), 22);
        l.call_timeout = Duration::from_micros(1);
        assert_eq!(l.deadline_ticks(), 2);
        l.call_timeout = Duration::MAX;
        assert!(l.deadline_ticks() > 1);
    }

    #[test]
    fn unusable_limits_are_refused() {
        let base = WasmLimits::default();
        let none = WasmLimits {
            max_instances: 0,
            ..base.clone()
        };
        assert_eq!(none.check(), Err(LimitsProblem::NoInstances));
        let huge = WasmLimits {
            memory_bytes: MAX_MEMORY + 1,
            ..base.clone()
        };
        assert_eq!(huge.check(), Err(LimitsProblem::MemoryTooLarge));
        let empty = WasmLimits {
            memory_bytes: 0,
            ..base.clone()
        };
        assert_eq!(empty.check(), Err(LimitsProblem::NoMemory));
        let instant = WasmLimits {
            call_timeout: Duration::ZERO,
            ..base
        };
        assert_eq!(instant.check(), Err(LimitsProblem::NoTimeout));
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(16 << 10), "16 KiB");
        assert_eq!(human_bytes(1500), "1500 bytes");
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes((1 << 20) + 1024), "1025 KiB");
    }
}
