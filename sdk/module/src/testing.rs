//! Runs a module natively, in a plain `cargo test`, through the same glue the wasm export uses:
//! init with parameters, encode the records as a batch, process, decode the outcome.
//!
//! ```
//! use weir_module::{Record, testing};
//!
//! fn short(record: &Record) -> bool {
//!     record.value.len() < 4
//! }
//! weir_module::filter!(short);
//!
//! let outcome = testing::run::<WeirModule>(&[], vec![Record::new("abc"), Record::new("abcd")])?;
//! assert_eq!(outcome.values(), ["abc"]);
//! assert_eq!(outcome.kept(), [0]);
//! # Ok::<(), weir_module::Error>(())
//! ```

use weir_abi::{BatchWriter, Entry, OutcomeReader, body_len};

use crate::error::{Error, Result};
use crate::glue::{self, Module};
use crate::log::{Capture, LogLine};
use crate::params::Params;
use crate::record::Record;

/// Initialises module `M` with `params`, processes `records` as one batch and returns the
/// outcome: one instance, one call.
pub fn run<M: Module>(params: &[(&str, &str)], records: Vec<Record>) -> Result<Outcome> {
    Instance::new::<M>(params)?.process(records)
}

/// One instance of a module, like the broker keeps per attachment or subscription: initialised
/// once, then called with any number of batches (an aggregate's state carries over).
pub struct Instance {
    inner: glue::Instance,
    init_logs: Vec<LogLine>,
}

impl Instance {
    /// Runs module `M`'s init hook with `params`. An error is what the broker would refuse the
    /// parameters with.
    pub fn new<M: Module>(params: &[(&str, &str)]) -> Result<Self> {
        let capture = Capture::start();
        let inner = glue::Instance::new::<M>(Params::from(params))?;
        Ok(Instance {
            inner,
            init_logs: capture.finish(),
        })
    }

    /// Lines logged by the init hook.
    pub fn init_logs(&self) -> &[LogLine] {
        &self.init_logs
    }

    /// Processes `records` as one batch. Each record's `offset` is passed as is.
    pub fn process(&mut self, records: Vec<Record>) -> Result<Outcome> {
        let size = records
            .iter()
            .map(|r| 8 + body_len(&r.view()))
            .sum::<usize>();
        let mut batch = BatchWriter::with_capacity(4 + size);
        for record in &records {
            batch.push(record.offset, &record.view());
        }
        let capture = Capture::start();
        let encoded = self.inner.process(&batch.finish())?;
        let logs = capture.finish();

        let count = u32::try_from(records.len())
            .map_err(|_| Error::new("a batch holds at most u32::MAX records"))?;
        let malformed = |e| Error::new(format!("the module returned a malformed outcome: {e}"));
        let mut entries = Vec::new();
        for entry in OutcomeReader::new(&encoded, count).map_err(malformed)? {
            // The reader checked every index against `count`.
            entries.push(match entry.map_err(malformed)? {
                Entry::Keep { index } => Output::Keep {
                    index,
                    record: records[index as usize].clone(),
                },
                Entry::Record { index, record } => Output::Record {
                    index,
                    record: Record::from_view(records[index as usize].offset, &record),
                },
                Entry::Reject { index, reason } => Output::Reject {
                    index,
                    reason: reason.to_owned(),
                },
            });
        }
        Ok(Outcome { entries, logs })
    }

    /// Processes an already encoded batch and returns the encoded outcome, undecoded: for testing
    /// what a module does with a malformed batch.
    pub fn process_encoded(&mut self, batch: &[u8]) -> Result<Vec<u8>> {
        self.inner.process(batch)
    }
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One entry per outcome entry, in order (an input that was dropped has none).
    pub entries: Vec<Output>,
    /// Lines the module logged during the call.
    pub logs: Vec<LogLine>,
}

/// One outcome entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The input passes unchanged.
    Keep {
        /// Index of the input in the batch.
        index: u32,
        /// The input record.
        record: Record,
    },
    /// A record the module made from the input.
    Record {
        /// Index of the input in the batch.
        index: u32,
        /// The new record; its offset is the input's.
        record: Record,
    },
    /// The input is rejected.
    Reject {
        /// Index of the input in the batch.
        index: u32,
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The records that come out, kept and made, in order.
    pub fn records(&self) -> Vec<&Record> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Output::Keep { record, .. } | Output::Record { record, .. } => Some(record),
                Output::Reject { .. } => None,
            })
            .collect()
    }

    /// The values of [`records`](Outcome::records) as text (invalid UTF-8 replaced).
    pub fn values(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect()
    }

    /// Indices of the inputs kept unchanged.
    pub fn kept(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Output::Keep { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }

    /// The rejections: input index and reason.
    pub fn rejections(&self) -> Vec<(u32, &str)> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Output::Reject { index, reason } => Some((*index, reason.as_str())),
                _ => None,
            })
            .collect()
    }
}
