//! The byte layouts a Weir module exchanges with the broker through the `weir:module` WIT world
//! (sdk/wit): the input batch handed to `process` and the outcome it returns. Specified in
//! docs/module-abi.md; this crate is the reference implementation, shared by the broker (host) and
//! the `weir-module` SDK (guest), so it has no dependencies and builds for any target.
//!
//! Everything is little-endian. Readers borrow from the buffer and never panic: a malformed
//! buffer is an [`AbiError`] naming the byte offset where decoding stopped.
//!
//! ```text
//! batch    := u32 count, input*                       (count records)
//! input    := u64 offset, body
//! body     := i64 timestamp_ms, key, bytes value, u32 header_count, header*
//! key      := u32 len, len bytes  |  u32 0xFFFF_FFFF  (no key)
//! header   := bytes name (UTF-8), bytes value
//! bytes    := u32 len, len bytes
//! outcome  := u32 count, entry*                       (entries in input order)
//! entry    := u8 0 (KEEP),   u32 input_index          (the input record, unchanged)
//!           | u8 1 (RECORD), u32 input_index, body    (a record derived from that input)
//!           | u8 2 (REJECT), u32 input_index, bytes reason (UTF-8)
//! ```
//! An input with no entry is dropped (filtered out). Entries must name inputs in non-decreasing
//! order, so the output keeps the input's order; one input may have several RECORD entries
//! (flat-map). An output record keeps the offset of the input it derives from.

use std::fmt;

/// `key` length marking an absent key.
const NO_KEY: u32 = u32::MAX;
/// Outcome tag: keep the input record unchanged.
pub const TAG_KEEP: u8 = 0;
/// Outcome tag: a record derived from the input.
pub const TAG_RECORD: u8 = 1;
/// Outcome tag: the input is rejected, with a reason.
pub const TAG_REJECT: u8 = 2;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbiError {
    /// The buffer ended inside a field that starts at this byte offset.
    Truncated {
        /// Byte offset of the field.
        at: usize,
    },
    /// Bytes remain after the last record or entry.
    TrailingBytes {
        /// Byte offset of the first extra byte.
        at: usize,
    },
    /// A header name or reject reason is not UTF-8.
    NotUtf8 {
        /// Byte offset of the string.
        at: usize,
    },
    /// An outcome entry has an unknown tag.
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Byte offset of the entry.
        at: usize,
    },
    /// An outcome entry names an input that does not exist.
    IndexOutOfRange {
        /// The index named.
        index: u32,
        /// Number of inputs.
        inputs: u32,
    },
    /// An outcome entry names an input before the previous entry's.
    IndexOutOfOrder {
        /// The index named.
        index: u32,
        /// The previous entry's index.
        previous: u32,
    },
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbiError::Truncated { at } => write!(f, "buffer ends inside the field at byte {at}"),
            AbiError::TrailingBytes { at } => {
                write!(f, "unexpected bytes after the end at byte {at}")
            }
            AbiError::NotUtf8 { at } => write!(f, "string at byte {at} is not UTF-8"),
            AbiError::UnknownTag { tag, at } => write!(f, "unknown outcome tag {tag} at byte {at}"),
            AbiError::IndexOutOfRange { index, inputs } => {
                write!(f, "outcome names input {index} of a batch of {inputs}")
            }
            AbiError::IndexOutOfOrder { index, previous } => {
                write!(f, "outcome names input {index} after input {previous}")
            }
        }
    }
}

impl std::error::Error for AbiError {}

/// A record's fields as borrowed from a buffer (or from wherever the writer's caller keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any (an empty key is a key).
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Headers in order; names may repeat.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// An input record: its offset and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputView<'a> {
    /// The record's offset in its partition (on the produce path, the index in the request: the
    /// offset is not assigned yet).
    pub offset: u64,
    /// Its fields.
    pub record: RecordView<'a>,
}

/// One outcome entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The input at `index` passes unchanged.
    Keep {
        /// Input index.
        index: u32,
    },
    /// A record derived from the input at `index`.
    Record {
        /// Input index.
        index: u32,
        /// The new record.
        record: RecordView<'a>,
    },
    /// The input at `index` is rejected.
    Reject {
        /// Input index.
        index: u32,
        /// Why, for the producer and the dead-letter header.
        reason: &'a str,
    },
}

impl Entry<'_> {
    /// The input this entry is about.
    pub fn index(&self) -> u32 {
        match self {
            Entry::Keep { index } | Entry::Record { index, .. } | Entry::Reject { index, .. } => {
                *index
            }
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are u32 on the wire; a single field over 4 GiB cannot be handed to a module (its
    // memory is 32-bit), so callers never get this far with one. Saturate rather than wrap.
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX - 1));
    out.extend_from_slice(b);
}

fn put_body(out: &mut Vec<u8>, r: &RecordView<'_>) {
    out.extend_from_slice(&r.timestamp_ms.to_le_bytes());
    match r.key {
        Some(k) => put_bytes(out, k),
        None => put_u32(out, NO_KEY),
    }
    put_bytes(out, r.value);
    put_u32(out, u32::try_from(r.headers.len()).unwrap_or(u32::MAX));
    for (name, value) in &r.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value);
    }
}

/// Bytes a record's body takes, to size buffers up front.
pub fn body_len(r: &RecordView<'_>) -> usize {
    8 + 4
        + r.key.map_or(0, <[u8]>::len)
        + 4
        + r.value.len()
        + 4
        + r.headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>()
}

/// Writes an input batch.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// An empty batch with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(4));
        put_u32(&mut buf, 0);
        BatchWriter { buf, count: 0 }
    }

    /// Appends one input record.
    pub fn push(&mut self, offset: u64, record: &RecordView<'_>) {
        self.buf.extend_from_slice(&offset.to_le_bytes());
        put_body(&mut self.buf, record);
        self.count += 1;
    }

    /// Records written so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Writes an outcome.
#[derive(Debug)]
pub struct OutcomeWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for OutcomeWriter {
    fn default() -> Self {
        Self::with_capacity(64)
    }
}

impl OutcomeWriter {
    /// An empty outcome with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(4));
        put_u32(&mut buf, 0);
        OutcomeWriter { buf, count: 0 }
    }

    fn entry(&mut self, tag: u8, index: u32) {
        self.buf.push(tag);
        put_u32(&mut self.buf, index);
        self.count += 1;
    }

    /// The input at `index` passes unchanged.
    pub fn keep(&mut self, index: u32) {
        self.entry(TAG_KEEP, index);
    }

    /// Emits a record derived from the input at `index`.
    pub fn record(&mut self, index: u32, record: &RecordView<'_>) {
        self.entry(TAG_RECORD, index);
        put_body(&mut self.buf, record);
    }

    /// Rejects the input at `index`.
    pub fn reject(&mut self, index: u32, reason: &str) {
        self.entry(TAG_REJECT, index);
        put_bytes(&mut self.buf, reason.as_bytes());
    }

    /// The encoded outcome.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// A bounds-checked cursor over a buffer.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AbiError> {
        let at = self.pos;
        let end = at.checked_add(n).ok_or(AbiError::Truncated { at })?;
        let bytes = self.buf.get(at..end).ok_or(AbiError::Truncated { at })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AbiError> {
        let at = self.pos;
        self.take(N)?
            .try_into()
            .map_err(|_| AbiError::Truncated { at })
    }

    fn u8(&mut self) -> Result<u8, AbiError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, AbiError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, AbiError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, AbiError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], AbiError> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    fn str(&mut self) -> Result<&'a str, AbiError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| AbiError::NotUtf8 { at })
    }

    fn body(&mut self) -> Result<RecordView<'a>, AbiError> {
        let timestamp_ms = self.i64()?;
        let key_len = self.u32()?;
        let key = if key_len == NO_KEY {
            None
        } else {
            Some(self.take(key_len as usize)?)
        };
        let value = self.bytes()?;
        let header_count = self.u32()?;
        // Each header takes at least 8 bytes: a hostile count cannot make us allocate more than
        // the buffer could hold.
        let remaining = self.buf.len() - self.pos;
        let mut headers = Vec::with_capacity((header_count as usize).min(remaining / 8));
        for _ in 0..header_count {
            headers.push((self.str()?, self.bytes()?));
        }
        Ok(RecordView {
            timestamp_ms,
            key,
            value,
            headers,
        })
    }

    fn end(&self) -> Result<(), AbiError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(AbiError::TrailingBytes { at: self.pos })
        }
    }
}

/// Reads an input batch record by record.
pub struct BatchReader<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
    count: u32,
}

impl<'a> BatchReader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Result<Self, AbiError> {
        let mut cursor = Cursor { buf, pos: 0 };
        let count = cursor.u32()?;
        Ok(BatchReader {
            cursor,
            remaining: count,
            count,
        })
    }

    /// Records in the batch.
    pub fn count(&self) -> u32 {
        self.count
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<InputView<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return match self.cursor.end() {
                Ok(()) => None,
                Err(e) => {
                    // Report trailing bytes once.
                    self.cursor.pos = self.cursor.buf.len();
                    Some(Err(e))
                }
            };
        }
        self.remaining -= 1;
        let item = self.cursor.u64().and_then(|offset| {
            Ok(InputView {
                offset,
                record: self.cursor.body()?,
            })
        });
        if item.is_err() {
            self.remaining = 0;
            self.cursor.pos = self.cursor.buf.len();
        }
        Some(item)
    }
}

/// Reads an outcome entry by entry, checking its indices against the batch it answers.
pub struct OutcomeReader<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
    inputs: u32,
    previous: Option<u32>,
}

impl<'a> OutcomeReader<'a> {
    /// Starts reading `buf`, the outcome of a batch of `inputs` records.
    pub fn new(buf: &'a [u8], inputs: u32) -> Result<Self, AbiError> {
        let mut cursor = Cursor { buf, pos: 0 };
        let remaining = cursor.u32()?;
        Ok(OutcomeReader {
            cursor,
            remaining,
            inputs,
            previous: None,
        })
    }

    fn entry(&mut self) -> Result<Entry<'a>, AbiError> {
        let at = self.cursor.pos;
        let tag = self.cursor.u8()?;
        let index = self.cursor.u32()?;
        if index >= self.inputs {
            return Err(AbiError::IndexOutOfRange {
                index,
                inputs: self.inputs,
            });
        }
        if let Some(previous) = self.previous
            && index < previous
        {
            return Err(AbiError::IndexOutOfOrder { index, previous });
        }
        self.previous = Some(index);
        match tag {
            TAG_KEEP => Ok(Entry::Keep { index }),
            TAG_RECORD => Ok(Entry::Record {
                index,
                record: self.cursor.body()?,
            }),
            TAG_REJECT => Ok(Entry::Reject {
                index,
                reason: self.cursor.str()?,
            }),
            tag => Err(AbiError::UnknownTag { tag, at }),
        }
    }
}

impl<'a> Iterator for OutcomeReader<'a> {
    type Item = Result<Entry<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return match self.cursor.end() {
                Ok(()) => None,
                Err(e) => {
                    self.cursor.pos = self.cursor.buf.len();
                    Some(Err(e))
                }
            };
        }
        self.remaining -= 1;
        let item = self.entry();
        if item.is_err() {
            self.remaining = 0;
            self.cursor.pos = self.cursor.buf.len();
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: &[u8]) -> RecordView<'_> {
        RecordView {
            timestamp_ms: -5,
            key: Some(b"k"),
            value,
            headers: vec![("h", b"v"), ("h", b"")],
        }
    }

    #[test]
    fn batch_round_trips() {
        let mut w = BatchWriter::with_capacity(0);
        w.push(7, &sample(b"one"));
        let mut keyless = sample(b"");
        keyless.key = None;
        w.push(9, &keyless);
        let buf = w.finish();
        let read: Vec<_> = BatchReader::new(&buf)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].offset, 7);
        assert_eq!(read[0].record, sample(b"one"));
        assert_eq!(read[1].offset, 9);
        assert_eq!(read[1].record.key, None);
        assert_eq!(
            buf.len(),
            4 + 8 + body_len(&sample(b"one")) + 8 + body_len(&keyless)
        );
    }

    #[test]
    fn outcome_round_trips() {
        let mut w = OutcomeWriter::default();
        w.keep(0);
        w.record(1, &sample(b"x"));
        w.record(1, &sample(b"y"));
        w.reject(3, "too big");
        let buf = w.finish();
        let read: Vec<_> = OutcomeReader::new(&buf, 4)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            read,
            vec![
                Entry::Keep { index: 0 },
                Entry::Record {
                    index: 1,
                    record: sample(b"x")
                },
                Entry::Record {
                    index: 1,
                    record: sample(b"y")
                },
                Entry::Reject {
                    index: 3,
                    reason: "too big"
                },
            ]
        );
    }

    #[test]
    fn bad_outcomes_are_errors_not_panics() {
        let mut w = OutcomeWriter::default();
        w.keep(2);
        w.keep(1);
        let buf = w.finish();
        let errors: Vec<_> = OutcomeReader::new(&buf, 3)
            .unwrap()
            .filter_map(Result::err)
            .collect();
        assert_eq!(
            errors,
            vec![AbiError::IndexOutOfOrder {
                index: 1,
                previous: 2
            }]
        );

        let mut w = OutcomeWriter::default();
        w.keep(5);
        let buf = w.finish();
        assert_eq!(
            OutcomeReader::new(&buf, 3).unwrap().next(),
            Some(Err(AbiError::IndexOutOfRange {
                index: 5,
                inputs: 3
            }))
        );

        // Every truncation of a valid outcome is an error, never a panic or a silent success.
        let mut w = OutcomeWriter::default();
        w.record(0, &sample(b"value"));
        w.reject(1, "no");
        let buf = w.finish();
        for len in 0..buf.len() {
            let result: Result<Vec<_>, _> =
                OutcomeReader::new(&buf[..len], 2).and_then(|r| r.collect());
            assert!(result.is_err(), "truncated to {len} bytes decoded");
        }
        let mut extra = buf.clone();
        extra.push(0);
        let result: Result<Vec<_>, _> = OutcomeReader::new(&extra, 2).unwrap().collect();
        assert_eq!(result, Err(AbiError::TrailingBytes { at: buf.len() }));

        let mut tagged = OutcomeWriter::default().finish();
        tagged[0] = 1;
        tagged.extend_from_slice(&[9, 0, 0, 0, 0]);
        assert_eq!(
            OutcomeReader::new(&tagged, 1).unwrap().next(),
            Some(Err(AbiError::UnknownTag { tag: 9, at: 4 }))
        );
    }

    #[test]
    fn hostile_header_count_does_not_allocate() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        buf.extend_from_slice(&0i64.to_le_bytes());
        buf.extend_from_slice(&NO_KEY.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        let first = BatchReader::new(&buf).unwrap().next();
        assert!(matches!(first, Some(Err(AbiError::Truncated { .. }))));
    }
}
