//! Stdin to records for `weir produce`: one record per line, optionally split into key and value.
//! Runs on its own thread; [`read_records`] is a plain function over any reader, so it is tested
//! on byte slices.

use std::io::{BufRead, BufReader, Read};

use anyhow::anyhow;
use bytes::Bytes;
use weir_client::ProducerRecord;

/// Stdin read buffer: large enough that a piped file is read in few system calls.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// What the reader hands to the sender.
#[derive(Debug)]
pub enum Input {
    /// Records of consecutive lines, in input order.
    Records(Vec<ProducerRecord>),
    /// Reading stopped at a bad line or a read error; every earlier line was delivered.
    Failed(anyhow::Error),
}

/// Reads `input` line by line into records and hands them to `deliver` in chunks of at most
/// `max_chunk`, until the end of input, an error, or `deliver` returning false (receiver gone).
///
/// A chunk is also handed over whenever the read buffer is empty, before a read that may block,
/// so an interactive line is not held back waiting for more.
pub fn read_records(
    input: impl Read,
    separator: Option<&[u8]>,
    max_chunk: usize,
    mut deliver: impl FnMut(Input) -> bool,
) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, input);
    let mut chunk = Vec::new();
    let mut line_number: u64 = 0;
    loop {
        let mut line = Vec::new();
        let failure = match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                line_number += 1;
                match record_from_line(line, separator) {
                    Ok(record) => {
                        chunk.push(record);
                        None
                    }
                    Err(MissingSeparator) => Some(anyhow!(
                        "line {line_number} has no key separator {:?}",
                        String::from_utf8_lossy(separator.unwrap_or_default())
                    )),
                }
            }
            Err(err) => Some(
                anyhow::Error::new(err)
                    .context(format!("cannot read stdin after line {line_number}")),
            ),
        };
        if let Some(failure) = failure {
            if !chunk.is_empty() && !deliver(Input::Records(std::mem::take(&mut chunk))) {
                return;
            }
            deliver(Input::Failed(failure));
            return;
        }
        if (chunk.len() >= max_chunk || reader.buffer().is_empty())
            && !deliver(Input::Records(std::mem::take(&mut chunk)))
        {
            return;
        }
    }
    if !chunk.is_empty() {
        deliver(Input::Records(chunk));
    }
}

/// A keyed line lacks the key separator.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingSeparator;

/// The record for one input line: the line ending (`\n` or `\r\n`) is dropped, and with a
/// separator the line splits at its first occurrence into key and value.
pub fn record_from_line(
    mut line: Vec<u8>,
    separator: Option<&[u8]>,
) -> Result<ProducerRecord, MissingSeparator> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let line = Bytes::from(line);
    let Some(separator) = separator.filter(|s| !s.is_empty()) else {
        return Ok(ProducerRecord::new(line));
    };
    let at = line
        .windows(separator.len())
        .position(|window| window == separator)
        .ok_or(MissingSeparator)?;
    Ok(ProducerRecord::new(line.slice(at + separator.len()..)).with_key(line.slice(..at)))
}

/// `record` as a tombstone (a null value) if its value is empty, else unchanged: what
/// `--tombstone` does to every line.
pub fn empty_as_tombstone(mut record: ProducerRecord) -> ProducerRecord {
    record.tombstone = record.value.is_empty();
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &str, separator: Option<&str>, max_chunk: usize) -> Vec<Input> {
        let mut delivered = Vec::new();
        read_records(
            input.as_bytes(),
            separator.map(str::as_bytes),
            max_chunk,
            |input| {
                delivered.push(input);
                true
            },
        );
        delivered
    }

    #[test]
    fn with_tombstone_only_empty_values_become_tombstones() {
        let keyed = empty_as_tombstone(record_from_line(b"k:\n".to_vec(), Some(b":")).unwrap());
        assert!(keyed.tombstone);
        assert_eq!(keyed.key.as_deref(), Some(&b"k"[..]));
        let empty_line = empty_as_tombstone(record_from_line(b"\n".to_vec(), None).unwrap());
        assert!(empty_line.tombstone && empty_line.key.is_none());
        let valued = empty_as_tombstone(record_from_line(b"k:v\n".to_vec(), Some(b":")).unwrap());
        assert!(!valued.tombstone);
        assert_eq!(valued.value, "v");
    }

    fn values(inputs: &[Input]) -> Vec<Vec<String>> {
        inputs
            .iter()
            .filter_map(|input| match input {
                Input::Records(records) => Some(
                    records
                        .iter()
                        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                        .collect(),
                ),
                Input::Failed(_) => None,
            })
            .collect()
    }

    #[test]
    fn line_endings_are_stripped() {
        let plain = record_from_line(b"hello\n".to_vec(), None).expect("no separator needed");
        assert_eq!(plain.value, "hello");
        assert_eq!(plain.key, None);
        let crlf = record_from_line(b"hello\r\n".to_vec(), None).expect("no separator needed");
        assert_eq!(crlf.value, "hello");
        let last = record_from_line(b"no newline".to_vec(), None).expect("no separator needed");
        assert_eq!(last.value, "no newline");
        let lone_cr = record_from_line(b"a\rb\n".to_vec(), None).expect("no separator needed");
        assert_eq!(
            lone_cr.value, "a\rb",
            "only a CR right before the LF is a line ending"
        );
    }

    #[test]
    fn key_separator_splits_at_its_first_occurrence() {
        let record = record_from_line(b"k1::v::w\n".to_vec(), Some(b"::")).expect("has separator");
        assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(record.value, "v::w");
        let empty_key = record_from_line(b":v".to_vec(), Some(b":")).expect("has separator");
        assert_eq!(empty_key.key.as_deref(), Some(&b""[..]));
        assert_eq!(
            record_from_line(b"no key\n".to_vec(), Some(b":")),
            Err(MissingSeparator)
        );
    }

    #[test]
    fn reader_delivers_every_line_in_order_and_bounded_chunks() {
        let input: String = (1..=7).map(|i| format!("v{i}\n")).collect();
        let delivered = read_all(&input, None, 3);
        // The whole input fits in the read buffer, so chunks are cut only by their size.
        assert_eq!(
            values(&delivered),
            [vec!["v1", "v2", "v3"], vec!["v4", "v5", "v6"], vec!["v7"]]
        );
        assert!(
            read_all("", None, 3).is_empty(),
            "empty input sends nothing"
        );
        assert_eq!(values(&read_all("\n\n", None, 10)), [vec!["", ""]]);
    }

    #[test]
    fn a_line_without_separator_stops_reading_and_is_named() {
        let delivered = read_all("a:1\nb:2\nbad\nc:3\n", Some(":"), 10);
        assert_eq!(values(&delivered), [vec!["1", "2"]]);
        let Some(Input::Failed(err)) = delivered.last() else {
            panic!("reading must end with the failure: {delivered:?}");
        };
        assert_eq!(err.to_string(), "line 3 has no key separator \":\"");
    }
}
