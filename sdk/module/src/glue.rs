//! The glue between the `process` export and an author's function: decode the batch, call the
//! function once per record, encode what became of each record. One generic driver per kind; the
//! export macros pick one and the test harness drives the very same code.

use std::cell::RefCell;

use weir_abi::{AbiError, BatchReader, InputView, OutcomeWriter, RecordView};

use crate::error::{Error, Reject, Result};
use crate::params::{self, Params};
use crate::record::Record;

/// A module as an export macro defines it: how to make an instance from its parameters.
/// Implemented by the `WeirModule` type each export macro ([`filter!`](crate::filter),
/// [`map!`](crate::map), …) defines; the test harness ([`testing`](crate::testing)) takes that type.
/// Authors do not implement it themselves.
pub trait Module {
    /// Runs the module's init hook with `params` and returns the instance's processor.
    #[doc(hidden)]
    fn instantiate(params: &Params) -> Result<Box<dyn Processor>>;
}

/// One instance's batch processor: encoded batch in, encoded outcome out.
#[doc(hidden)]
pub trait Processor {
    /// Processes one encoded batch. An error is a malformed batch (or, for raw modules, whatever
    /// the module says): the whole call fails.
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>>;
}

/// An initialised module instance: its parameters and its processor.
#[doc(hidden)]
pub struct Instance {
    params: Params,
    processor: Box<dyn Processor>,
}

impl Instance {
    /// Runs `M`'s init hook with `params`.
    pub fn new<M: Module>(params: Params) -> Result<Self> {
        let _current = params::enter(&params);
        let processor = M::instantiate(&params)?;
        Ok(Instance { params, processor })
    }

    /// Processes one encoded batch.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>> {
        let _current = params::enter(&self.params);
        self.processor.process(batch)
    }
}

thread_local! {
    // The instance behind the component's exports. A wasm instance is single-threaded; the host
    // calls `init` once and then `process` any number of times, never re-entrantly.
    static EXPORTED: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// The `init` export: makes the instance, replacing any previous one.
#[doc(hidden)]
pub fn export_init<M: Module>(params: Vec<(String, String)>) -> Result<(), String> {
    EXPORTED.with_borrow_mut(|slot| *slot = None);
    let instance = Instance::new::<M>(Params::from(params)).map_err(|e| e.to_string())?;
    EXPORTED.with_borrow_mut(|slot| *slot = Some(instance));
    Ok(())
}

/// The `process` export.
#[doc(hidden)]
pub fn export_process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
    EXPORTED.with_borrow_mut(|slot| match slot {
        Some(instance) => instance.process(&batch).map_err(|e| e.to_string()),
        None => Err("process called before a successful init".to_owned()),
    })
}

/// What an aggregate emits: its state turned into a record value.
///
/// Integers and floats become their decimal text, `bool` `true`/`false`, strings and byte vectors
/// themselves. Implement it for your own state type to emit e.g. JSON.
pub trait ToValue {
    /// The bytes of the value to emit.
    fn to_value(&self) -> Vec<u8>;
}

macro_rules! to_value_as_text {
    ($($t:ty),*) => {
        $(impl ToValue for $t {
            fn to_value(&self) -> Vec<u8> {
                self.to_string().into_bytes()
            }
        })*
    };
}

to_value_as_text!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, String
);

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Vec<u8> {
        self.clone()
    }
}

/// What happens to each input record, for one kind of module.
trait PerRecord {
    /// Bytes to reserve for the outcome of a batch of `count` records taking `len` bytes.
    fn outcome_capacity(len: usize, count: u32) -> usize;

    /// Handles the input at `index`, writing its outcome entries.
    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter);
}

/// The batch loop shared by every kind.
struct Driver<K>(K);

fn malformed(error: AbiError) -> Error {
    Error::new(format!("malformed input batch: {error}"))
}

impl<K: PerRecord> Processor for Driver<K> {
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>> {
        let reader = BatchReader::new(batch).map_err(malformed)?;
        // `BatchReader::count` (the header's count), not the consuming `Iterator::count`.
        let count = BatchReader::count(&reader);
        let mut out = OutcomeWriter::with_capacity(K::outcome_capacity(batch.len(), count));
        for (index, input) in (0u32..).zip(reader) {
            let input = input.map_err(malformed)?;
            self.0.each(index, &input, &mut out);
        }
        Ok(out.finish())
    }
}

// A KEEP entry is 5 bytes, plus the 4-byte count.
const fn keep_capacity(count: u32) -> usize {
    4 + 5 * count as usize
}

struct Filter<C, F> {
    config: C,
    f: F,
    scratch: Record,
}

impl<C, F: Fn(&C, &Record) -> bool> PerRecord for Filter<C, F> {
    fn outcome_capacity(_len: usize, count: u32) -> usize {
        keep_capacity(count)
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        self.scratch.fill_from(input.offset, &input.record);
        if (self.f)(&self.config, &self.scratch) {
            out.keep(index);
        }
    }
}

struct Validate<C, F> {
    config: C,
    f: F,
    scratch: Record,
}

impl<C, F: Fn(&C, &Record) -> Result<(), Reject>> PerRecord for Validate<C, F> {
    fn outcome_capacity(_len: usize, count: u32) -> usize {
        keep_capacity(count)
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        self.scratch.fill_from(input.offset, &input.record);
        match (self.f)(&self.config, &self.scratch) {
            Ok(()) => out.keep(index),
            Err(reject) => out.reject(index, reject.reason()),
        }
    }
}

struct Map<C, F> {
    config: C,
    f: F,
}

impl<C, F: Fn(&C, Record) -> Result<Record>> PerRecord for Map<C, F> {
    fn outcome_capacity(len: usize, _count: u32) -> usize {
        len
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        match (self.f)(&self.config, Record::from_view(input.offset, &input.record)) {
            Ok(record) => out.record(index, &record.view()),
            Err(error) => out.reject(index, error.message()),
        }
    }
}

struct FilterMap<C, F> {
    config: C,
    f: F,
}

impl<C, F: Fn(&C, Record) -> Result<Option<Record>>> PerRecord for FilterMap<C, F> {
    fn outcome_capacity(len: usize, _count: u32) -> usize {
        len
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        match (self.f)(&self.config, Record::from_view(input.offset, &input.record)) {
            Ok(Some(record)) => out.record(index, &record.view()),
            Ok(None) => {}
            Err(error) => out.reject(index, error.message()),
        }
    }
}

struct FlatMap<C, F> {
    config: C,
    f: F,
}

impl<C, F: Fn(&C, Record) -> Result<Vec<Record>>> PerRecord for FlatMap<C, F> {
    fn outcome_capacity(len: usize, _count: u32) -> usize {
        len
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        match (self.f)(&self.config, Record::from_view(input.offset, &input.record)) {
            Ok(records) => {
                for record in &records {
                    out.record(index, &record.view());
                }
            }
            Err(error) => out.reject(index, error.message()),
        }
    }
}

struct Aggregate<C, S, F> {
    config: C,
    state: S,
    f: F,
    scratch: Record,
}

impl<C, S, F> PerRecord for Aggregate<C, S, F>
where
    S: Default + ToValue,
    F: Fn(&C, S, &Record) -> S,
{
    fn outcome_capacity(len: usize, _count: u32) -> usize {
        len
    }

    fn each(&mut self, index: u32, input: &InputView<'_>, out: &mut OutcomeWriter) {
        self.scratch.fill_from(input.offset, &input.record);
        let state = std::mem::take(&mut self.state);
        self.state = (self.f)(&self.config, state, &self.scratch);
        let value = self.state.to_value();
        out.record(
            index,
            &RecordView {
                value: &value,
                ..input.record.clone()
            },
        );
    }
}

struct Raw<C, F> {
    config: C,
    f: F,
}

impl<C, F: Fn(&C, &[u8]) -> Result<Vec<u8>>> Processor for Raw<C, F> {
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>> {
        (self.f)(&self.config, batch)
    }
}

/// Processor constructors for the export macros. Each takes the instance's configuration (what
/// the init hook returned, `()` for plain init hooks) and the author's function adapted to take it.
#[doc(hidden)]
pub mod make {
    use super::*;

    /// A filter: KEEP when `f` is true, nothing otherwise.
    pub fn filter<C: 'static>(
        config: C,
        f: impl Fn(&C, &Record) -> bool + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(Filter {
            config,
            f,
            scratch: Record::default(),
        }))
    }

    /// A validator: KEEP when `f` is `Ok`, REJECT with its reason otherwise.
    pub fn validate<C: 'static>(
        config: C,
        f: impl Fn(&C, &Record) -> Result<(), Reject> + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(Validate {
            config,
            f,
            scratch: Record::default(),
        }))
    }

    /// A map: RECORD with what `f` returns, REJECT with its error.
    pub fn map<C: 'static>(
        config: C,
        f: impl Fn(&C, Record) -> Result<Record> + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(Map { config, f }))
    }

    /// A filter-map: RECORD for `Some`, nothing for `None`, REJECT with its error.
    pub fn filter_map<C: 'static>(
        config: C,
        f: impl Fn(&C, Record) -> Result<Option<Record>> + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(FilterMap { config, f }))
    }

    /// A flat-map: one RECORD per record returned, REJECT with its error.
    pub fn flat_map<C: 'static>(
        config: C,
        f: impl Fn(&C, Record) -> Result<Vec<Record>> + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(FlatMap { config, f }))
    }

    /// An aggregate: folds each record into the state (which lives as long as the instance) and
    /// emits the input with the state's value.
    pub fn aggregate<C: 'static, S: Default + ToValue + 'static>(
        config: C,
        f: impl Fn(&C, S, &Record) -> S + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Driver(Aggregate {
            config,
            state: S::default(),
            f,
            scratch: Record::default(),
        }))
    }

    /// A raw processor: `f` gets the encoded batch and returns the encoded outcome.
    pub fn raw<C: 'static>(
        config: C,
        f: impl Fn(&C, &[u8]) -> Result<Vec<u8>> + 'static,
    ) -> Box<dyn Processor> {
        Box::new(Raw { config, f })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, Instance, Output};
    use crate::{Error, Params, Record, Reject, Result};

    fn batch() -> Vec<Record> {
        vec![
            Record::new("keep me")
                .with_key("k")
                .with_header("h", "v")
                .with_offset(10)
                .with_timestamp(5),
            Record::new("drop").with_offset(11),
            Record::new(vec![0xff]).with_offset(12),
        ]
    }

    mod filter {
        use super::*;

        fn keep(record: &Record) -> bool {
            record.value.starts_with(b"keep")
        }
        crate::filter!(keep);

        #[test]
        fn true_keeps_the_input_unchanged() {
            let out = testing::run::<WeirModule>(&[], batch()).unwrap();
            assert_eq!(
                out.entries,
                [Output::Keep {
                    index: 0,
                    record: batch()[0].clone()
                }]
            );
        }
    }

    mod validate {
        use super::*;

        fn utf8(record: &Record) -> Result<(), Reject> {
            record.value_str()?;
            if record.value == b"drop" {
                return Err(Reject::new("no drops here"));
            }
            Ok(())
        }
        crate::validate!(utf8);

        #[test]
        fn ok_keeps_and_reject_carries_its_reason() {
            let out = testing::run::<WeirModule>(&[], batch()).unwrap();
            assert_eq!(out.kept(), [0]);
            assert_eq!(
                out.rejections(),
                [
                    (1, "no drops here"),
                    (
                        2,
                        "the value is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0"
                    )
                ]
            );
        }
    }

    mod map {
        use super::*;

        fn upper(record: Record) -> Result<Record> {
            let value = record.value_str()?.to_uppercase();
            Ok(record.with_value(value).with_offset(999))
        }
        crate::map!(upper);

        #[test]
        fn ok_replaces_and_error_rejects() {
            let out = testing::run::<WeirModule>(&[], batch()).unwrap();
            let expected = batch()[0].clone().with_value("KEEP ME");
            assert_eq!(
                out.entries,
                [
                    Output::Record {
                        index: 0,
                        record: expected
                    },
                    Output::Record {
                        index: 1,
                        record: Record::new("DROP").with_offset(11)
                    },
                    Output::Reject {
                        index: 2,
                        reason: "the value is not UTF-8: invalid utf-8 sequence of 1 bytes \
                                 from index 0"
                            .into()
                    },
                ],
                "outputs keep their input's key, headers, timestamp and offset"
            );
        }
    }

    mod filter_map {
        use super::*;

        fn only_short(record: Record) -> Result<Option<Record>> {
            match record.value.len() {
                0 => Err(Error::new("empty")),
                1..=4 => Ok(Some(record.with_value("short"))),
                _ => Ok(None),
            }
        }
        crate::filter_map!(only_short);

        #[test]
        fn none_drops() {
            let records = vec![
                Record::new("long value"),
                Record::new("ab"),
                Record::new(""),
            ];
            let out = testing::run::<WeirModule>(&[], records).unwrap();
            assert_eq!(out.values(), ["short"]);
            assert!(matches!(out.entries[0], Output::Record { index: 1, .. }));
            assert_eq!(out.rejections(), [(2, "empty")]);
        }
    }

    mod flat_map {
        use super::*;

        fn split(record: Record) -> Result<Vec<Record>> {
            if record.value.is_empty() {
                return Err(Error::new("nothing to split"));
            }
            Ok(record
                .value
                .split(|b| *b == b',')
                .filter(|part| !part.is_empty())
                .map(Record::new)
                .collect())
        }
        crate::flat_map!(split);

        #[test]
        fn each_output_is_a_record_of_its_input() {
            let records = vec![
                Record::new("a,b").with_offset(7),
                Record::new(",").with_offset(8),
                Record::new("").with_offset(9),
                Record::new("c").with_offset(10),
            ];
            let out = testing::run::<WeirModule>(&[], records).unwrap();
            let summary: Vec<_> = out
                .entries
                .iter()
                .filter_map(|e| match e {
                    Output::Record { index, record } => Some((
                        *index,
                        record.offset,
                        record.value_str().unwrap().to_owned(),
                    )),
                    _ => None,
                })
                .collect();
            assert_eq!(
                summary,
                [(0, 7, "a".into()), (0, 7, "b".into()), (3, 10, "c".into())]
            );
            assert_eq!(out.rejections(), [(2, "nothing to split")]);
        }
    }

    mod aggregate {
        use super::*;

        fn count(n: u32, _record: &Record) -> u32 {
            n + 1
        }
        crate::aggregate!(count);

        #[test]
        fn state_persists_across_calls_of_one_instance() {
            let mut instance = Instance::new::<WeirModule>(&[]).unwrap();
            let out = instance.process(batch()).unwrap();
            assert_eq!(out.values(), ["1", "2", "3"]);
            assert_eq!(
                out.records()[0],
                &batch()[0].clone().with_value("1"),
                "the input record with the state's value"
            );
            let out = instance.process(batch()).unwrap();
            assert_eq!(out.values(), ["4", "5", "6"]);
            let fresh = testing::run::<WeirModule>(&[], batch()).unwrap();
            assert_eq!(
                fresh.values(),
                ["1", "2", "3"],
                "a new instance starts over"
            );
        }
    }

    mod aggregate_with_config {
        use super::*;

        fn step(params: &Params) -> Result<i64> {
            params.parse_or("step", 1)
        }

        fn add(step: &i64, total: f64, _record: &Record) -> f64 {
            total + *step as f64 / 2.0
        }
        crate::aggregate!(add, config = step);

        #[test]
        fn config_reaches_the_function() {
            let out = testing::run::<WeirModule>(&[("step", "3")], batch()).unwrap();
            assert_eq!(out.values(), ["1.5", "3", "4.5"]);
        }
    }

    mod init_hook {
        use super::*;

        fn setup(params: &Params) -> Result<()> {
            params.allow_only(&["needle"])?;
            let needle: String = params.require("needle")?;
            crate::info!("looking for {needle}");
            Ok(())
        }

        fn has_needle(record: &Record) -> bool {
            let params = crate::params();
            let needle = params.get("needle").unwrap_or_default();
            crate::debug!("checking {}", record.offset);
            record.value_str().is_ok_and(|v| v.contains(needle))
        }
        crate::filter!(has_needle, init = setup);

        #[test]
        fn init_sees_params_and_errors_refuse_them() {
            let instance = Instance::new::<WeirModule>(&[("needle", "me")]).unwrap();
            assert_eq!(instance.init_logs()[0].message, "looking for me");
            let out = testing::run::<WeirModule>(&[("needle", "me")], batch()).unwrap();
            assert_eq!(out.kept(), [0]);
            assert_eq!(out.logs.len(), 3, "one debug line per record");
            assert_eq!(out.logs[2].message, "checking 12");
            assert!(crate::params().is_empty(), "params are scoped to calls");

            let refused = Instance::new::<WeirModule>(&[]).err().unwrap();
            assert_eq!(refused.message(), "missing required parameter `needle`");
            let refused = Instance::new::<WeirModule>(&[("needle", "x"), ("nedle", "y")])
                .err()
                .unwrap();
            assert_eq!(
                refused.message(),
                "unknown parameter `nedle` (known: needle)"
            );
        }

        #[test]
        fn malformed_batches_fail_the_call() {
            let mut instance = Instance::new::<WeirModule>(&[("needle", "x")]).unwrap();
            let error = instance.process_encoded(&[1, 0, 0, 0, 9]).unwrap_err();
            assert_eq!(
                error.message(),
                "malformed input batch: buffer ends inside the field at byte 4"
            );
            let error = instance.process_encoded(&[0, 0, 0, 0, 9]).unwrap_err();
            assert_eq!(
                error.message(),
                "malformed input batch: unexpected bytes after the end at byte 4"
            );
            let empty = instance.process_encoded(&[0, 0, 0, 0]).unwrap();
            assert_eq!(empty, [0, 0, 0, 0]);
        }

        #[test]
        fn exports_require_a_successful_init() {
            use super::super::{export_init, export_process};
            let batch = weir_abi::BatchWriter::with_capacity(0).finish();
            assert!(export_process(batch.clone()).is_err());
            assert_eq!(
                export_init::<WeirModule>(vec![]),
                Err("missing required parameter `needle`".to_owned())
            );
            assert_eq!(
                export_process(batch.clone()),
                Err("process called before a successful init".to_owned())
            );
            export_init::<WeirModule>(vec![("needle".into(), "x".into())]).unwrap();
            assert_eq!(export_process(batch), Ok(vec![0, 0, 0, 0]));
        }
    }

    mod raw {
        use super::*;

        fn garbage(bytes: &usize, _batch: &[u8]) -> Result<Vec<u8>> {
            Ok(vec![0xee; *bytes])
        }
        crate::raw!(garbage, config = |p: &Params| p.parse_or("bytes", 3usize));

        #[test]
        fn raw_output_reaches_the_decoder() {
            let error = testing::run::<WeirModule>(&[], batch()).unwrap_err();
            assert_eq!(
                error.message(),
                "the module returned a malformed outcome: buffer ends inside the field at byte 0"
            );
            let mut instance = Instance::new::<WeirModule>(&[("bytes", "2")]).unwrap();
            assert_eq!(instance.process_encoded(&[]).unwrap(), [0xee, 0xee]);
        }
    }
}
