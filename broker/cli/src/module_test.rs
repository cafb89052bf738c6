//! `weir module test FILE.wasm [--param K=V]... [--key-separator SEP] < lines`: runs a module on
//! this machine, without a broker, over stdin, one record per line, so an author can try a module
//! before registering it.
//!
//! The module runs in the same sandbox as in the broker (the same `weir-wasm` runtime and
//! limits), in batches of lines. Surviving records go to stdout, one value per line (as
//! `KEY SEP VALUE` when a key separator is given and the record has a key); rejections go to
//! stderr as `rejected INDEX: REASON` (INDEX counts input lines from 0, like the `index` a
//! producer is told), followed by the module's log lines and a one-line summary. Output appears
//! batch by batch: after every [`TestOptions::batch_size`] lines, and at the end of input.
//!
//! A module failure (trap, timeout, memory limit, refused parameters, ...) stops the run with
//! an error naming the lines of the failing batch.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use weir_types::Record;
use weir_wasm::{Chain, ChainRecord, LogLine, ModuleId, Runtime, Stage, WasmLimits};

/// Lines per call when not told otherwise: large enough to amortize the call, small enough to
/// show output soon.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// How to run the test.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// `init` parameters, in order.
    pub params: Vec<(String, String)>,
    /// Splits each line at the first occurrence into key and value (as `weir produce
    /// --key-separator`), and joins key and value with it on output.
    pub key_separator: Option<Vec<u8>>,
    /// Lines per `process` call.
    pub batch_size: usize,
    /// The sandbox limits (the broker's defaults unless told otherwise).
    pub limits: WasmLimits,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            params: Vec::new(),
            key_separator: None,
            batch_size: DEFAULT_BATCH_SIZE,
            limits: WasmLimits {
                // One instance runs at a time; a small pool reserves little address space.
                max_instances: 2,
                ..WasmLimits::default()
            },
        }
    }
}

/// What a test run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestSummary {
    /// Input lines.
    pub records_in: u64,
    /// Records written to the output.
    pub records_out: u64,
    /// Records rejected.
    pub rejected: u64,
    /// `process` calls.
    pub batches: u64,
    /// Time spent inside the module.
    pub busy: Duration,
}

impl std::fmt::Display for TestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u64| if n == 1 { "" } else { "es" };
        write!(
            f,
            "{} records in, {} out, {} rejected ({} batch{}, {:.1} ms in the module)",
            self.records_in,
            self.records_out,
            self.rejected,
            self.batches,
            plural(self.batches),
            self.busy.as_secs_f64() * 1000.0
        )
    }
}

/// Runs the module at `wasm` with `params` over the lines of `input` (see the module docs).
pub fn run(
    wasm: &Path,
    params: Vec<(String, String)>,
    input: impl BufRead,
    out: impl Write,
    err: impl Write,
) -> anyhow::Result<TestSummary> {
    let options = TestOptions {
        params,
        ..TestOptions::default()
    };
    run_with(wasm, options, input, out, err)
}

/// [`run`] with every option.
pub fn run_with(
    wasm: &Path,
    options: TestOptions,
    mut input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> anyhow::Result<TestSummary> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let runtime =
        Runtime::new(options.limits, None).context("cannot start the WebAssembly runtime")?;
    let id = ModuleId {
        name: wasm
            .file_stem()
            .map_or_else(|| "module".into(), |s| s.to_string_lossy().into_owned()),
        // Not registered: no version.
        version: 0,
    };
    let module = runtime
        .load(id, &bytes)
        .with_context(|| format!("{} is not a usable Weir module", wasm.display()))?;

    let mut chain = Chain::new(vec![Stage {
        module: module.clone(),
        params: options.params,
    }]);
    chain.capture_logs(true);
    let prepared = chain.prepare();
    write_logs(&mut err, chain.take_logs())?;
    prepared.map_err(|e| anyhow!(e.error))?;

    let separator = options.key_separator.as_deref().filter(|s| !s.is_empty());
    let batch_size = options.batch_size.max(1);
    let mut summary = TestSummary::default();
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        let mut line = Vec::new();
        let read = input
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read line {} of the input", summary.records_in + 1))?;
        if read > 0 {
            let record = record_from_line(line, separator).ok_or_else(|| {
                anyhow!(
                    "line {} has no key separator {:?}",
                    summary.records_in + 1,
                    String::from_utf8_lossy(separator.unwrap_or_default())
                )
            })?;
            batch.push(ChainRecord {
                position: summary.records_in,
                record,
            });
            summary.records_in += 1;
        }
        if !batch.is_empty() && (read == 0 || batch.len() >= batch_size) {
            let records = std::mem::take(&mut batch);
            let first = records.first().map_or(0, |r| r.position);
            let last = records.last().map_or(0, |r| r.position);
            let result = chain.run(records);
            write_logs(&mut err, chain.take_logs())?;
            let output = result.map_err(|e| {
                anyhow!(e.error).context(format!("lines {}-{}", first + 1, last + 1))
            })?;
            summary.batches += 1;
            for r in &output.records {
                write_record(&mut out, &r.record, separator)?;
            }
            for rejection in &output.rejected {
                writeln!(
                    err,
                    "rejected {}: {}",
                    rejection.position,
                    one_line(&rejection.reason)
                )?;
            }
            summary.records_out += output.records.len() as u64;
            summary.rejected += output.rejected.len() as u64;
            out.flush()?;
        }
        if read == 0 {
            break;
        }
    }
    summary.busy = module.stats().busy;
    writeln!(err, "{summary}")?;
    Ok(summary)
}

/// The record of one input line: without its line ending, split into key and value at the
/// first `separator` if given (`None` if the line lacks it).
fn record_from_line(mut line: Vec<u8>, separator: Option<&[u8]>) -> Option<Record> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let line = Bytes::from(line);
    let (key, value) = match separator {
        None => (None, line),
        Some(separator) => {
            let at = line
                .windows(separator.len())
                .position(|window| window == separator)?;
            (Some(line.slice(..at)), line.slice(at + separator.len()..))
        }
    };
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Some(Record {
        key,
        value,
        headers: Vec::new(),
        timestamp_ms,
        tombstone: false,
    })
}

fn write_record(
    out: &mut impl Write,
    record: &Record,
    separator: Option<&[u8]>,
) -> std::io::Result<()> {
    if let (Some(separator), Some(key)) = (separator, &record.key) {
        out.write_all(key)?;
        out.write_all(separator)?;
    }
    out.write_all(&record.value)?;
    out.write_all(b"\n")
}

fn write_logs(err: &mut impl Write, lines: Vec<LogLine>) -> std::io::Result<()> {
    for line in lines {
        writeln!(
            err,
            "log {} {}: {}",
            line.level,
            line.module,
            one_line(&line.message)
        )?;
    }
    Ok(())
}

/// `text` on one line: line breaks shown as `\n`, so one message is one line of output.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_records() {
        let r = record_from_line(b"hello\r\n".to_vec(), None).expect("no separator needed");
        assert_eq!(r.value, "hello");
        assert_eq!(r.key, None);
        let r = record_from_line(b"k::v::w\n".to_vec(), Some(b"::")).expect("has separator");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, "v::w");
        assert!(record_from_line(b"no sep\n".to_vec(), Some(b"::")).is_none());
        let r = record_from_line(b"::v".to_vec(), Some(b"::")).expect("empty key");
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn records_print_with_their_key_when_asked() {
        let mut out = Vec::new();
        let record = Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            ..Record::default()
        };
        write_record(&mut out, &record, Some(b"\t")).expect("write");
        write_record(&mut out, &record, None).expect("write");
        let keyless = Record {
            value: Bytes::from_static(b"w"),
            ..Record::default()
        };
        write_record(&mut out, &keyless, Some(b"\t")).expect("write");
        assert_eq!(out, b"k\tv\nv\nw\n");
    }

    #[test]
    fn summaries_read_as_one_line() {
        let summary = TestSummary {
            records_in: 10,
            records_out: 7,
            rejected: 2,
            batches: 1,
            busy: Duration::from_micros(1500),
        };
        assert_eq!(
            summary.to_string(),
            "10 records in, 7 out, 2 rejected (1 batch, 1.5 ms in the module)"
        );
    }

    #[test]
    fn files_that_are_not_modules_are_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.wasm");
        std::fs::write(&path, b"not wasm").expect("write");
        let err = run(&path, Vec::new(), &b"x\n"[..], Vec::new(), Vec::new()).expect_err("garbage");
        let text = format!("{err:#}");
        assert!(
            text.contains("bad.wasm is not a usable Weir module"),
            "{text}"
        );
        assert!(text.contains("not a WebAssembly module"), "{text}");
        let err = run(
            &dir.path().join("missing.wasm"),
            Vec::new(),
            &b""[..],
            Vec::new(),
            Vec::new(),
        )
        .expect_err("missing");
        assert!(format!("{err:#}").contains("cannot read"));
    }
}
