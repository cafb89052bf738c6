//! `hostile`: a test fixture that misbehaves on purpose, to check that the broker's sandbox
//! contains a bad module (timeouts, memory caps, traps, output checks, log bounds) and keeps
//! serving everything else. Not for production topics.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `behaviour` (required) | what to do, below |
//! | `after` | behave (keep every record) for the first N `process` calls, misbehave from then on (default 0) |
//! | `bytes` | size of the `huge-output` outcome (default 48 MiB) |
//! | `lines` | lines per call for `log-flood` (default 10 000) |
//!
//! Behaviours (misbehaving in `process` unless said otherwise):
//!
//! | `behaviour` | what it does |
//! | --- | --- |
//! | `loop` | loops forever |
//! | `memory` | allocates 1 MiB blocks until allocation fails (a trap) |
//! | `recursion` | recurses without bound until a stack overflows (a trap) |
//! | `trap` | panics (a trap) |
//! | `huge-output` | returns a well-formed outcome of about `bytes` bytes: RECORD entries for the first input, whatever the input (an empty outcome for an empty batch) |
//! | `bad-output` | returns a malformed outcome (an entry with an unknown tag) |
//! | `log-flood` | logs `lines` lines of about 100 bytes, then keeps every record |
//! | `init-fails` | `init` returns an error |
//! | `loop-in-init` | `init` loops forever |
//! | `count-memory` | writes 2 MiB of its heap, then rejects every record with the reason `call N of this memory`, N counting the `process` calls its linear memory has seen in a static that `init` does not reset: a fresh instance must say `call 1` (not misbehaving, but checking the host) |
//!
//! An unknown behaviour is an init error.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use weir_abi::{BatchReader, OutcomeWriter, RecordView};
use weir_module::{Error, Params, Result};

/// What the fixture does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Loops forever in `process`.
    Loop,
    /// Allocates until allocation fails.
    Memory,
    /// Recurses until a stack overflows.
    Recursion,
    /// Panics.
    Trap,
    /// Returns an outcome of about `bytes` bytes.
    HugeOutput,
    /// Returns a malformed outcome.
    BadOutput,
    /// Logs `lines` lines, then keeps every record.
    LogFlood,
    /// `init` fails.
    InitFails,
    /// `init` loops forever.
    LoopInInit,
    /// Counts the `process` calls its memory has seen.
    CountMemory,
}

impl std::str::FromStr for Behaviour {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "loop" => Behaviour::Loop,
            "memory" => Behaviour::Memory,
            "recursion" => Behaviour::Recursion,
            "trap" => Behaviour::Trap,
            "huge-output" => Behaviour::HugeOutput,
            "bad-output" => Behaviour::BadOutput,
            "log-flood" => Behaviour::LogFlood,
            "init-fails" => Behaviour::InitFails,
            "loop-in-init" => Behaviour::LoopInInit,
            "count-memory" => Behaviour::CountMemory,
            other => return Err(Error::new(format!("unknown behaviour `{other}`"))),
        })
    }
}

/// The fixture's configuration and call count.
pub struct Hostile {
    behaviour: Behaviour,
    after: u64,
    bytes: usize,
    lines: usize,
    calls: Cell<u64>,
}

impl Hostile {
    /// Reads the parameters; `init-fails` and `loop-in-init` misbehave here.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["behaviour", "after", "bytes", "lines"])?;
        let behaviour = params.require("behaviour")?;
        match behaviour {
            Behaviour::InitFails => {
                return Err(Error::new("hostile module: init fails on purpose"));
            }
            Behaviour::LoopInInit => spin(),
            _ => {}
        }
        Ok(Hostile {
            behaviour,
            after: params.parse_or("after", 0)?,
            bytes: params.parse_or("bytes", 48 << 20)?,
            lines: params.parse_or("lines", 10_000)?,
            calls: Cell::new(0),
        })
    }
}

/// Processes one encoded batch, misbehaving as configured.
pub fn process(hostile: &Hostile, batch: &[u8]) -> Result<Vec<u8>> {
    let call = hostile.calls.get();
    hostile.calls.set(call + 1);
    if call < hostile.after {
        return keep_all(batch);
    }
    match hostile.behaviour {
        Behaviour::Loop => spin(),
        Behaviour::Memory => hoard(),
        Behaviour::Recursion => Ok(vec![black_box(recurse(0)) as u8]),
        Behaviour::Trap => panic!("hostile module: trapping on purpose"),
        Behaviour::HugeOutput => huge_output(batch, hostile.bytes),
        // One entry, tag 9 (there is no such tag), for input 0.
        Behaviour::BadOutput => Ok(vec![1, 0, 0, 0, 9, 0, 0, 0, 0]),
        Behaviour::LogFlood => {
            let padding = "x".repeat(64);
            for line in 0..hostile.lines {
                weir_module::warn!("hostile module: log flood line {line} {padding}");
            }
            keep_all(batch)
        }
        Behaviour::CountMemory => count_memory(batch),
        Behaviour::InitFails | Behaviour::LoopInInit => keep_all(batch),
    }
}

/// `process` calls this instance's linear memory has seen. A static, so `init` does not reset
/// it: only a memory set back to the module's image does.
static MEMORY_CALLS: AtomicU64 = AtomicU64::new(0);

fn count_memory(batch: &[u8]) -> Result<Vec<u8>> {
    // More than the host keeps mapped when it resets a freed instance's memory.
    black_box(vec![7u8; 2 << 20]);
    let seen = MEMORY_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let reason = format!("call {seen} of this memory");
    let mut out = OutcomeWriter::default();
    for index in 0..inputs(batch)? {
        out.reject(index, &reason);
    }
    Ok(out.finish())
}

fn inputs(batch: &[u8]) -> Result<u32> {
    // `BatchReader::count` (the header's count), not the consuming `Iterator::count`.
    Ok(BatchReader::count(&BatchReader::new(batch)?))
}

fn keep_all(batch: &[u8]) -> Result<Vec<u8>> {
    let count = inputs(batch)?;
    let mut out = OutcomeWriter::with_capacity(4 + 5 * count as usize);
    for index in 0..count {
        out.keep(index);
    }
    Ok(out.finish())
}

fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; 1 << 20]));
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // A frame on the shadow stack (in linear memory) as well as on the wasm stack.
    let frame = black_box([depth as u8; 256]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[depth as usize % 256]))
}

fn huge_output(batch: &[u8], bytes: usize) -> Result<Vec<u8>> {
    if inputs(batch)? == 0 {
        return Ok(OutcomeWriter::default().finish());
    }
    let chunk = vec![b'x'; bytes.clamp(1, 1 << 20)];
    let entries = bytes.div_ceil(chunk.len()).max(1);
    // Sized up front: growing by doubling would need half as much again while copying.
    let mut out = OutcomeWriter::with_capacity(4 + entries * (chunk.len() + 32));
    let record = RecordView {
        timestamp_ms: 0,
        key: None,
        value: &chunk,
        headers: Vec::new(),
    };
    for _ in 0..entries {
        out.record(0, &record);
    }
    Ok(out.finish())
}

weir_module::raw!(process, config = Hostile::from_params);

#[cfg(test)]
mod tests {
    use weir_module::testing::{self, Instance};
    use weir_module::{Level, Record};

    use super::WeirModule;

    fn records() -> Vec<Record> {
        vec![Record::new("a"), Record::new("b")]
    }

    #[test]
    fn init_misbehaviours() {
        let error = Instance::new::<WeirModule>(&[("behaviour", "init-fails")])
            .err()
            .unwrap();
        assert_eq!(error.message(), "hostile module: init fails on purpose");
        let error = Instance::new::<WeirModule>(&[("behaviour", "nice")])
            .err()
            .unwrap();
        assert_eq!(
            error.message(),
            "parameter `behaviour`: cannot parse `nice`: unknown behaviour `nice`"
        );
        let error = Instance::new::<WeirModule>(&[]).err().unwrap();
        assert_eq!(error.message(), "missing required parameter `behaviour`");
    }

    #[test]
    fn bad_output_is_malformed_after_the_good_calls() {
        let mut instance =
            Instance::new::<WeirModule>(&[("behaviour", "bad-output"), ("after", "2")]).unwrap();
        for _ in 0..2 {
            assert_eq!(instance.process(records()).unwrap().kept(), [0, 1]);
        }
        let error = instance.process(records()).unwrap_err();
        assert_eq!(
            error.message(),
            "the module returned a malformed outcome: unknown outcome tag 9 at byte 4"
        );
    }

    #[test]
    fn huge_output_is_well_formed_and_as_big_as_asked() {
        let mut instance =
            Instance::new::<WeirModule>(&[("behaviour", "huge-output"), ("bytes", "3000000")])
                .unwrap();
        let outcome = instance.process(records()).unwrap();
        let total: usize = outcome.records().iter().map(|r| r.value.len()).sum();
        assert_eq!(total, 3 << 20, "three 1 MiB records");
        assert!(instance.process(vec![]).unwrap().entries.is_empty());
    }

    #[test]
    fn log_flood_logs_then_keeps() {
        let outcome =
            testing::run::<WeirModule>(&[("behaviour", "log-flood"), ("lines", "500")], records())
                .unwrap();
        assert_eq!(outcome.logs.len(), 500);
        assert_eq!(outcome.logs[0].level, Level::Warn);
        assert!(outcome.logs[499].message.len() > 64);
        assert_eq!(outcome.kept(), [0, 1]);
    }

    #[test]
    fn trap_panics() {
        let mut instance = Instance::new::<WeirModule>(&[("behaviour", "trap")]).unwrap();
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| instance.process(records())));
        assert!(panicked.is_err());
    }
}
