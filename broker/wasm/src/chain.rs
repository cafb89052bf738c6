//! Chains: modules run one after the other over a batch of records, each stage seeing what the
//! previous one let through, with one reusable instance per stage.

use std::iter::Peekable;
use std::sync::Arc;
use std::vec;

use bytes::Bytes;
use weir_abi::{AbiError, BatchWriter, Entry, OutcomeReader, RecordView};
use weir_types::{Header, Record};

use crate::error::ModuleError;
use crate::module::{Instance, LogLine, MAX_MESSAGE_BYTES, Module, ModuleId, truncate};

/// One step of a chain: a module and the parameters its `init` receives.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The module.
    pub module: Arc<Module>,
    /// `init` parameters, in order.
    pub params: Vec<(String, String)>,
}

/// A record going through a chain, with the position it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// The record's index in the produce request, or its offset on the consume path. Records a
    /// module derives from an input keep the input's position.
    pub position: u64,
    /// The record.
    pub record: Record,
}

/// What came out of a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainOutput {
    /// The records that passed every stage, in input order.
    pub records: Vec<ChainRecord>,
    /// The records some stage rejected, in the order they were rejected (stage by stage).
    pub rejected: Vec<Rejection>,
    /// Every input came out as it went in: each stage kept each of its inputs once (KEEP), and
    /// dropped, rejected, derived or repeated none. `records` are then the input records, so a
    /// caller holding the input's own encoding (a produced or stored batch) may use it instead
    /// of encoding the output again.
    pub unchanged: bool,
}

/// A record a stage rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The record's position (see [`ChainRecord::position`]).
    pub position: u64,
    /// Index of the rejecting stage in the chain.
    pub stage: usize,
    /// The rejecting module.
    pub module: ModuleId,
    /// The module's reason (cut at 1 KiB).
    pub reason: String,
    /// The record as it entered the rejecting stage.
    pub record: Record,
}

/// A chain failed: one stage's module failed, and with it the whole batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stage {stage} of the module chain failed")]
pub struct ChainError {
    /// Index of the failing stage.
    pub stage: usize,
    /// How its module failed.
    #[source]
    pub error: ModuleError,
}

#[derive(Debug)]
struct Slot {
    stage: Stage,
    instance: Option<Instance>,
}

/// Ordered stages, each with an instance created on first use and reused by later runs (so a
/// stage's state, such as an aggregate, carries over from batch to batch).
///
/// A stage whose module fails loses its instance: the next run instantiates it anew (and runs
/// its `init` again). The other stages keep theirs.
///
/// Every stage's instance holds a slot of the runtime's instance pool while the chain lives.
#[derive(Debug)]
pub struct Chain {
    slots: Vec<Slot>,
    capture_logs: bool,
    logs: Vec<LogLine>,
}

impl Chain {
    /// A chain of these stages; nothing is instantiated yet.
    pub fn new(stages: Vec<Stage>) -> Chain {
        Chain {
            slots: stages
                .into_iter()
                .map(|stage| Slot {
                    stage,
                    instance: None,
                })
                .collect(),
            capture_logs: false,
            logs: Vec::new(),
        }
    }

    /// Number of stages.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the chain has no stage (it passes records through unchanged).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether every stage has its instance (and ran its `init`): [`Chain::prepare`] has nothing
    /// left to do.
    pub fn is_prepared(&self) -> bool {
        self.slots.iter().all(|slot| slot.instance.is_some())
    }

    /// Keeps the modules' log lines for [`Chain::take_logs`] instead of sending them to
    /// `tracing`. Lines accumulate until taken.
    pub fn capture_logs(&mut self, capture: bool) {
        self.capture_logs = capture;
        for instance in self.slots.iter_mut().filter_map(|s| s.instance.as_mut()) {
            instance.capture_logs(capture);
        }
    }

    /// The log lines captured since the last call, in the order they were written.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }

    /// Instantiates every stage that has no instance and runs its `init` now, so that bad
    /// parameters (or a module that cannot start) fail when the chain is set up rather than on
    /// its first batch.
    pub fn prepare(&mut self) -> Result<(), ChainError> {
        for stage in 0..self.slots.len() {
            self.ensure_instance(stage)
                .map_err(|error| ChainError { stage, error })?;
        }
        Ok(())
    }

    /// Runs the chain over `input`. Synchronous and CPU-bound (call it from a blocking thread);
    /// each module call is bounded by the runtime's time limit.
    ///
    /// A stage with no records left to process is not called.
    ///
    /// Tombstones (records with a null value) are handed to no stage, because the module ABI has
    /// no null value: they come out unchanged, among the survivors in position order (positions
    /// increase along the input, as offsets do). The consume path relies on this; the produce
    /// path refuses tombstones before its chain runs.
    pub fn run(&mut self, input: Vec<ChainRecord>) -> Result<ChainOutput, ChainError> {
        let (mut records, tombstones) = if input.iter().any(|r| r.record.tombstone) {
            input.into_iter().partition(|r| !r.record.tombstone)
        } else {
            (input, Vec::new())
        };
        let mut rejected = Vec::new();
        let mut unchanged = true;
        for stage in 0..self.slots.len() {
            if records.is_empty() {
                break;
            }
            let applied = self
                .run_stage(stage, records, &mut rejected)
                .map_err(|error| ChainError { stage, error })?;
            records = applied.records;
            unchanged &= applied.untouched;
        }
        if !tombstones.is_empty() {
            records = merge_by_position(records, tombstones);
        }
        Ok(ChainOutput {
            records,
            rejected,
            unchanged,
        })
    }

    /// Gives a stage an instance (instantiated and initialized) if it has none.
    fn ensure_instance(&mut self, stage: usize) -> Result<(), ModuleError> {
        let slot = &mut self.slots[stage];
        if slot.instance.is_none() {
            let (result, logs) = slot
                .stage
                .module
                .instantiate_logged(&slot.stage.params, self.capture_logs);
            self.logs.extend(logs);
            let mut instance = result?;
            // `init`'s lines.
            self.logs.extend(instance.take_logs());
            slot.instance = Some(instance);
        }
        Ok(())
    }

    /// Runs one stage over `records`, in as many `process` calls as [`MAX_CALL_BYTES`] asks.
    fn run_stage(
        &mut self,
        stage: usize,
        records: Vec<ChainRecord>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<Applied, ModuleError> {
        self.ensure_instance(stage)?;
        let slot = &mut self.slots[stage];
        let module = slot.stage.module.clone();
        let Some(instance) = slot.instance.as_mut() else {
            return Err(ModuleError::Host {
                module: module.id().clone(),
                message: "the stage has no instance".into(),
            });
        };
        let mut applied = Applied {
            records: Vec::with_capacity(records.len()),
            untouched: true,
        };
        let mut rest = records.into_iter().peekable();
        let mut result = Ok(());
        while rest.peek().is_some() {
            let (call, bytes) = next_call(&mut rest);
            result = process(instance, &module, stage, call, bytes, rejected).map(|call| {
                applied.records.extend(call.records);
                applied.untouched &= call.untouched;
            });
            if self.capture_logs {
                self.logs.extend(instance.take_logs());
            }
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => Ok(applied),
            Err(error) => {
                slot.instance = None;
                Err(error)
            }
        }
    }
}

/// Input bytes handed to a module in one `process` call, at most (a record larger than this
/// goes alone). A stage runs over a larger input in several calls to the same instance, which
/// sees the same records in the same order as in one call. Bounded calls bound the guest memory
/// a call needs, so an input may be larger than an instance's memory limit, and the memory a
/// fresh instance (each `Fetch` gets one) touches for the first time, paying a page fault for
/// each page: nearly half of what a keep-all chain cost a fetch of 2 MiB (docs/benchmarks.md).
pub const MAX_CALL_BYTES: usize = 256 * 1024;

/// The records of the next `process` call, at least one and then as many as fit in
/// [`MAX_CALL_BYTES`], and the bytes they take in a batch.
fn next_call(records: &mut Peekable<vec::IntoIter<ChainRecord>>) -> (Vec<ChainRecord>, usize) {
    let mut call = Vec::new();
    let mut bytes = 0;
    while let Some(record) = records.next_if(|r| {
        let len = INPUT_OVERHEAD + r.record.encoded_len_hint();
        let fits = call.is_empty() || bytes + len <= MAX_CALL_BYTES;
        if fits {
            bytes += len;
        }
        fits
    }) {
        call.push(record);
    }
    (call, bytes)
}

/// The offset an input carries in a batch, beside its body.
const INPUT_OVERHEAD: usize = 8;

/// One `process` call of a stage's instance over `records` (from [`next_call`], taking `bytes`
/// in the batch); rejections are appended to `rejected` only when the whole outcome is valid.
fn process(
    instance: &mut Instance,
    module: &Module,
    stage: usize,
    records: Vec<ChainRecord>,
    bytes: usize,
    rejected: &mut Vec<Rejection>,
) -> Result<Applied, ModuleError> {
    let inputs = records.len() as u64;
    let batch = encode(&records, bytes);
    let outcome = instance.process_raw(&batch)?;
    let before = rejected.len();
    match apply(outcome, records, stage, module.id(), rejected) {
        Ok(applied) => {
            let rejects = (rejected.len() - before) as u64;
            let out = applied.records.len() as u64;
            module.count_records(inputs, out, rejects);
            Ok(applied)
        }
        Err(error) => {
            rejected.truncate(before);
            Err(instance.bad_output(error))
        }
    }
}

/// Puts the tombstones a chain passed by back among its survivors: each before the first
/// survivor with a larger position.
fn merge_by_position(
    survivors: Vec<ChainRecord>,
    tombstones: Vec<ChainRecord>,
) -> Vec<ChainRecord> {
    let mut out = Vec::with_capacity(survivors.len() + tombstones.len());
    let mut tombstones = tombstones.into_iter().peekable();
    for survivor in survivors {
        while let Some(t) = tombstones.next_if(|t| t.position < survivor.position) {
            out.push(t);
        }
        out.push(survivor);
    }
    out.extend(tombstones);
    out
}

/// The input batch for a stage: positions travel in the `offset` field. `bytes` is the records'
/// size in it as [`next_call`] counted them, a capacity hint.
fn encode(records: &[ChainRecord], bytes: usize) -> Vec<u8> {
    let mut writer = BatchWriter::with_capacity(4 + bytes);
    for r in records {
        writer.push(r.position, &view(&r.record));
    }
    writer.finish()
}

fn view(record: &Record) -> RecordView<'_> {
    RecordView {
        timestamp_ms: record.timestamp_ms,
        key: record.key.as_deref(),
        value: &record.value,
        headers: record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect(),
    }
}

/// What one stage let through.
#[derive(Debug)]
struct Applied {
    records: Vec<ChainRecord>,
    /// The outcome was one KEEP per input, nothing else: `records` are the inputs.
    untouched: bool,
}

/// Applies a stage's outcome to its inputs: the records that go on, plus rejections appended
/// to `rejected`. Derived records share the outcome buffer instead of copying their fields.
fn apply(
    outcome: Vec<u8>,
    inputs: Vec<ChainRecord>,
    stage: usize,
    module: &ModuleId,
    rejected: &mut Vec<Rejection>,
) -> Result<Applied, AbiError> {
    let input_count = inputs.len();
    let count = u32::try_from(input_count).unwrap_or(u32::MAX);
    let buf = Bytes::from(outcome);
    let mut entries = OutcomeReader::new(&buf, count)?.peekable();
    let mut cursor = Cursor {
        inputs: inputs.into_iter().enumerate(),
        current: None,
    };
    let mut out = Vec::with_capacity(count as usize);
    // Only KEEP entries, none naming an input twice; with one entry per input, that is each
    // input once, in order (entries are in non-decreasing input order).
    let mut only_single_keeps = true;
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let index = entry.index();
        let Some(position) = cursor.seek(index) else {
            return Err(AbiError::IndexOutOfRange {
                index,
                inputs: count,
            });
        };
        // The input is moved out on its last entry and cloned for earlier ones.
        let again = matches!(entries.peek(), Some(Ok(next)) if next.index() == index);
        only_single_keeps &= !again && matches!(entry, Entry::Keep { .. });
        match entry {
            Entry::Keep { .. } => out.extend(cursor.take(again)),
            Entry::Record { record, .. } => out.push(ChainRecord {
                position,
                record: to_record(&buf, &record),
            }),
            Entry::Reject { reason, .. } => {
                if let Some(input) = cursor.take(again) {
                    rejected.push(Rejection {
                        position,
                        stage,
                        module: module.clone(),
                        reason: truncate(reason.to_owned(), MAX_MESSAGE_BYTES),
                        record: input.record,
                    });
                }
            }
        }
    }
    let untouched = only_single_keeps && out.len() == input_count;
    Ok(Applied {
        records: out,
        untouched,
    })
}

/// Walks the inputs of a batch in step with its outcome entries.
struct Cursor {
    inputs: std::iter::Enumerate<std::vec::IntoIter<ChainRecord>>,
    current: Option<(usize, ChainRecord)>,
}

impl Cursor {
    /// Moves to input `index` and returns its position; `None` if there is no such input.
    fn seek(&mut self, index: u32) -> Option<u64> {
        let index = index as usize;
        loop {
            match &self.current {
                Some((i, record)) if *i == index => return Some(record.position),
                Some((i, _)) if *i > index => return None,
                _ => self.current = Some(self.inputs.next()?),
            }
        }
    }

    /// The current input: a clone if later entries still refer to it, else the input itself.
    fn take(&mut self, again: bool) -> Option<ChainRecord> {
        if again {
            self.current.as_ref().map(|(_, r)| r.clone())
        } else {
            self.current.take().map(|(_, r)| r)
        }
    }
}

/// A record from an outcome entry, its fields sharing `buf`. A module's output has no null
/// value, so it is never a tombstone.
fn to_record(buf: &Bytes, view: &RecordView<'_>) -> Record {
    Record {
        tombstone: false,
        key: view.key.map(|k| buf.slice_ref(k)),
        value: buf.slice_ref(view.value),
        headers: view
            .headers
            .iter()
            .map(|(name, value)| Header {
                key: (*name).to_owned(),
                value: buf.slice_ref(value),
            })
            .collect(),
        timestamp_ms: view.timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use weir_abi::{BatchReader, OutcomeWriter};

    use super::*;

    fn record(value: &str) -> Record {
        Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"hv"),
            }],
            timestamp_ms: 42,
            tombstone: false,
        }
    }

    fn inputs(values: &[&str]) -> Vec<ChainRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| ChainRecord {
                position: 10 + i as u64,
                record: record(v),
            })
            .collect()
    }

    fn id() -> ModuleId {
        ModuleId {
            name: "m".into(),
            version: 1,
        }
    }

    #[test]
    fn batches_carry_positions_and_every_field() {
        let mut keyless = record("b");
        keyless.key = None;
        keyless.headers.clear();
        let records = vec![
            ChainRecord {
                position: 7,
                record: record("a"),
            },
            ChainRecord {
                position: 3,
                record: keyless.clone(),
            },
        ];
        let batch = encode(&records, 0);
        let read: Vec<_> = BatchReader::new(&batch)
            .expect("header")
            .collect::<Result<_, _>>()
            .expect("decodes");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].offset, 7);
        assert_eq!(read[0].record, view(&record("a")));
        assert_eq!(read[1].offset, 3);
        assert_eq!(read[1].record, view(&keyless));
    }

    #[test]
    fn outcomes_keep_derive_reject_and_drop() {
        let mut w = OutcomeWriter::default();
        w.keep(0);
        // Input 1 is dropped: no entry.
        let derived = RecordView {
            timestamp_ms: 9,
            key: None,
            value: b"NEW",
            headers: vec![("x", b"y")],
        };
        w.record(2, &derived);
        w.record(2, &derived);
        w.reject(3, "no thanks");
        let mut rejected = Vec::new();
        let out = apply(
            w.finish(),
            inputs(&["a", "b", "c", "d"]),
            1,
            &id(),
            &mut rejected,
        )
        .expect("valid outcome");
        assert!(!out.untouched);
        let out = out.records;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], inputs(&["a"])[0]);
        for r in &out[1..] {
            assert_eq!(r.position, 12);
            assert_eq!(r.record.value, Bytes::from_static(b"NEW"));
            assert_eq!(r.record.key, None);
            assert_eq!(r.record.timestamp_ms, 9);
            assert_eq!(r.record.headers[0].key, "x");
            assert_eq!(r.record.headers[0].value, Bytes::from_static(b"y"));
        }
        assert_eq!(
            rejected,
            vec![Rejection {
                position: 13,
                stage: 1,
                module: id(),
                reason: "no thanks".into(),
                record: record("d"),
            }]
        );
    }

    #[test]
    fn an_input_named_twice_is_cloned_then_moved() {
        let mut w = OutcomeWriter::default();
        w.keep(1);
        w.keep(1);
        w.reject(1, "and rejected");
        let mut rejected = Vec::new();
        let out = apply(w.finish(), inputs(&["a", "b"]), 0, &id(), &mut rejected).expect("valid");
        assert!(!out.untouched);
        let out = out.records;
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|r| r.position == 11 && r.record == record("b"))
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].record, record("b"));
    }

    #[test]
    fn keep_shares_the_input_bytes() {
        let records = inputs(&["shared"]);
        let pointer = records[0].record.value.as_ptr();
        let mut w = OutcomeWriter::default();
        w.keep(0);
        let out = apply(w.finish(), records, 0, &id(), &mut Vec::new()).expect("valid");
        assert_eq!(out.records[0].record.value.as_ptr(), pointer);
    }

    #[test]
    fn only_one_keep_per_input_leaves_the_inputs_untouched() {
        let outcome = |build: &dyn Fn(&mut OutcomeWriter)| {
            let mut w = OutcomeWriter::default();
            build(&mut w);
            let applied = apply(
                w.finish(),
                inputs(&["a", "b", "c"]),
                0,
                &id(),
                &mut Vec::new(),
            )
            .expect("valid");
            (applied.untouched, applied.records.len())
        };
        assert_eq!(outcome(&|w| (0..3).for_each(|i| w.keep(i))), (true, 3));
        // One dropped.
        assert_eq!(
            outcome(&|w| [0, 2].into_iter().for_each(|i| w.keep(i))),
            (false, 2)
        );
        // One kept twice and one dropped: as many records as inputs, yet not the inputs.
        assert_eq!(
            outcome(&|w| [0, 0, 2].into_iter().for_each(|i| w.keep(i))),
            (false, 3)
        );
        // One derived, even if it equals its input.
        let derived = |w: &mut OutcomeWriter| {
            w.keep(0);
            w.record(1, &view(&record("b")));
            w.keep(2);
        };
        assert_eq!(outcome(&derived), (false, 3));
        let rejecting = |w: &mut OutcomeWriter| {
            w.keep(0);
            w.keep(1);
            w.reject(2, "no");
        };
        assert_eq!(outcome(&rejecting), (false, 2));
    }

    #[test]
    fn malformed_outcomes_are_errors() {
        let mut w = OutcomeWriter::default();
        w.keep(5);
        let err = apply(w.finish(), inputs(&["a"]), 0, &id(), &mut Vec::new())
            .expect_err("index out of range");
        assert_eq!(
            err,
            AbiError::IndexOutOfRange {
                index: 5,
                inputs: 1
            }
        );
        let err =
            apply(vec![1, 0], inputs(&["a"]), 0, &id(), &mut Vec::new()).expect_err("truncated");
        assert_eq!(err, AbiError::Truncated { at: 0 });
        let mut w = OutcomeWriter::default();
        w.keep(1);
        w.keep(0);
        let err = apply(w.finish(), inputs(&["a", "b"]), 0, &id(), &mut Vec::new())
            .expect_err("out of order");
        assert_eq!(
            err,
            AbiError::IndexOutOfOrder {
                index: 0,
                previous: 1
            }
        );
    }

    fn tombstone(position: u64) -> ChainRecord {
        ChainRecord {
            position,
            record: Record {
                key: Some(Bytes::from_static(b"k")),
                tombstone: true,
                timestamp_ms: 42,
                ..Record::default()
            },
        }
    }

    #[test]
    fn tombstones_go_back_among_the_survivors_in_position_order() {
        // Survivors 10, 12, 12 (two derived from one input), 15; tombstones 9, 11, 13, 20.
        let mut survivors = inputs(&["a", "b", "c", "d", "e", "f"]);
        survivors.retain(|r| [10, 12, 15].contains(&r.position));
        survivors.insert(2, survivors[1].clone());
        let tombstones = vec![tombstone(9), tombstone(11), tombstone(13), tombstone(20)];
        let merged = merge_by_position(survivors, tombstones);
        let order: Vec<(u64, bool)> = merged
            .iter()
            .map(|r| (r.position, r.record.tombstone))
            .collect();
        assert_eq!(
            order,
            [
                (9, true),
                (10, false),
                (11, true),
                (12, false),
                (12, false),
                (13, true),
                (15, false),
                (20, true)
            ]
        );
    }

    #[test]
    fn a_chain_passes_tombstones_by_in_position_order() {
        // The integration tests run real modules (tests/all/tombstones.rs); here, the merge.
        let mut chain = Chain::new(Vec::new());
        let input = vec![tombstone(1), tombstone(2)];
        let output = chain.run(input.clone()).expect("nothing to fail");
        assert_eq!(output.records, input);
        assert!(output.rejected.is_empty());
        let mut mixed = inputs(&["a"]);
        mixed.insert(0, tombstone(3));
        let output = chain.run(mixed).expect("nothing to fail");
        let positions: Vec<u64> = output.records.iter().map(|r| r.position).collect();
        assert_eq!(positions, [3, 10]);
    }

    #[test]
    fn long_reasons_are_cut() {
        let mut w = OutcomeWriter::default();
        w.reject(0, &"x".repeat(5000));
        let mut rejected = Vec::new();
        apply(w.finish(), inputs(&["a"]), 0, &id(), &mut rejected).expect("valid");
        assert_eq!(rejected[0].reason.len(), MAX_MESSAGE_BYTES);
    }
}
