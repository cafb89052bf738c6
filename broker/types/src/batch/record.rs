//! Kafka's v2 record, inside a batch's payload:
//!
//! ```text
//! length          varint   bytes of the record after this field
//! attributes      int8     unused (0)
//! timestamp_delta varlong  relative to the batch's base timestamp
//! offset_delta    varint   relative to the batch's base offset
//! key_length      varint   -1 for no key
//! key             bytes
//! value_length    varint   -1 for a null value (a tombstone)
//! value           bytes
//! header_count    varint
//! headers         header_count × (key_length varint, key UTF-8, value_length varint, value)
//! ```

use bytes::Bytes;

use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};

use super::{Header, Record};

/// The fewest bytes a record takes: its length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each at least.
pub(crate) const MIN_RECORD_LEN: usize = 7;

/// One record as it lies in a batch, borrowed and structurally checked: its length field
/// matches the bytes it uses, lengths are in range and header keys are UTF-8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<&'a [u8]>,
    /// `None` is Kafka's null value (a tombstone).
    pub(crate) value: Option<&'a [u8]>,
    /// Set when some header has a null value, which Weir does not accept yet.
    pub(crate) has_null_header_value: bool,
    header_count: usize,
    /// The encoded headers, checked.
    headers: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Parses the record at the front of `buf` and advances past it.
    pub(crate) fn parse(buf: &mut &'a [u8]) -> Result<Self, &'static str> {
        let length = get_varint(buf).ok_or("truncated record length")?;
        let length = usize::try_from(length).map_err(|_| "negative record length")?;
        if buf.len() < length {
            return Err("record length past the end of the batch");
        }
        let (mut body, rest) = buf.split_at(length);
        // The attributes byte is unused in v2; Kafka ignores its value, and so does Weir.
        take(&mut body, 1).ok_or("truncated record attributes")?;
        let timestamp_delta = get_varlong(&mut body).ok_or("truncated timestamp delta")?;
        let offset_delta = get_varint(&mut body).ok_or("truncated offset delta")?;
        let key = nullable(&mut body, "key")?;
        let value = nullable(&mut body, "value")?;
        let header_count = get_varint(&mut body).ok_or("truncated header count")?;
        let header_count = usize::try_from(header_count).map_err(|_| "negative header count")?;
        let headers = body;
        let mut has_null_header_value = false;
        for _ in 0..header_count {
            let key_len = get_varint(&mut body).ok_or("truncated header key length")?;
            let key_len = usize::try_from(key_len).map_err(|_| "negative header key length")?;
            let key = take(&mut body, key_len).ok_or("header key past the end of the record")?;
            std::str::from_utf8(key).map_err(|_| "header key is not UTF-8")?;
            has_null_header_value |= nullable(&mut body, "header value")?.is_none();
        }
        if !body.is_empty() {
            return Err("record length does not match its fields");
        }
        let headers = &headers[..headers.len() - body.len()];
        *buf = rest;
        Ok(Self {
            timestamp_delta,
            offset_delta,
            key,
            value,
            has_null_header_value,
            header_count,
            headers,
        })
    }

    /// The record as an owned [`Record`], sharing `source`'s memory (which must hold every slice
    /// of this record), its timestamp `timestamp_ms` of its timestamp delta (the batch's rule,
    /// [`BatchHeader::record_timestamp_ms`]). A null value becomes a tombstone with an empty
    /// value; a null header value becomes empty, so callers refuse those first.
    pub(crate) fn to_record(self, source: &Bytes, timestamp_ms: impl FnOnce(i64) -> i64) -> Record {
        let share = |slice: &[u8]| source.slice_ref(slice);
        let mut headers = Vec::with_capacity(self.header_count);
        let mut buf = self.headers;
        for _ in 0..self.header_count {
            // Checked by `parse`; a failure here would mean `headers` was not what it parsed.
            let Some(key_len) = get_varint(&mut buf).and_then(|l| usize::try_from(l).ok()) else {
                break;
            };
            let Some(key) = take(&mut buf, key_len) else {
                break;
            };
            let Ok(value) = nullable(&mut buf, "header value") else {
                break;
            };
            headers.push(Header {
                key: String::from_utf8_lossy(key).into_owned(),
                value: value.map_or_else(Bytes::new, share),
            });
        }
        Record {
            key: self.key.map(share),
            value: self.value.map_or_else(Bytes::new, share),
            tombstone: self.value.is_none(),
            headers,
            timestamp_ms: timestamp_ms(self.timestamp_delta),
        }
    }
}

/// Reads a varint length (-1 for null) and that many bytes.
fn nullable<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<Option<&'a [u8]>, &'static str> {
    let len = get_varint(buf).ok_or(match what {
        "key" => "truncated key length",
        "value" => "truncated value length",
        _ => "truncated header value length",
    })?;
    match len {
        -1 => Ok(None),
        len if len < 0 => Err(match what {
            "key" => "negative key length",
            "value" => "negative value length",
            _ => "negative header value length",
        }),
        len => take(buf, len as usize).map(Some).ok_or(match what {
            "key" => "key past the end of the record",
            "value" => "value past the end of the record",
            _ => "header value past the end of the record",
        }),
    }
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Some(head)
}

/// A length as a varint, or `None` when it does not fit Kafka's `int32`.
fn len_i32(len: usize) -> Option<i32> {
    i32::try_from(len).ok()
}

/// Bytes of a record's key, value and headers with their length fields (a `None` key or value
/// is null), or `None` when a length is over Kafka's `int32`.
fn fields_len(
    key: Option<usize>,
    value: Option<usize>,
    headers: impl ExactSizeIterator<Item = (usize, usize)>,
) -> Option<usize> {
    let nullable = |len: Option<usize>| match len {
        None => Some(varint_len(-1)),
        Some(len) => Some(varint_len(len_i32(len)?) + len),
    };
    let mut len = nullable(key)? + nullable(value)? + varint_len(len_i32(headers.len())?);
    for (key, value) in headers {
        len += nullable(Some(key))? + nullable(Some(value))?;
    }
    Some(len)
}

/// The most bytes a record with these key, value and header lengths (a `None` key or value is
/// null) takes in a batch, wherever it lies and whatever its timestamp: its two deltas counted
/// at their widest. For bounding a batch's size before encoding it.
pub fn record_len_bound(
    key: Option<usize>,
    value: Option<usize>,
    headers: impl ExactSizeIterator<Item = (usize, usize)>,
) -> usize {
    const WIDEST_DELTAS: usize = 10 + 5;
    let body =
        (1 + WIDEST_DELTAS).saturating_add(fields_len(key, value, headers).unwrap_or(usize::MAX));
    body.saturating_add(varint_len(len_i32(body).unwrap_or(i32::MAX)))
}

/// Appends `record` to `buf` with the given deltas; returns the bytes written, or `None` when a
/// field is longer than Kafka's `int32` lengths allow (the batch limits refuse such records
/// long before).
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    record: &Record,
    timestamp_delta: i64,
    offset_delta: i32,
) -> Option<usize> {
    let key_len = match &record.key {
        None => -1,
        Some(key) => len_i32(key.len())?,
    };
    // A tombstone's value is null (-1) and its bytes empty (the encoder refuses one that is not).
    let value_len = if record.tombstone {
        -1
    } else {
        len_i32(record.value.len())?
    };
    let value = (!record.tombstone).then_some(record.value.len());
    let headers = record.headers.iter().map(|h| (h.key.len(), h.value.len()));
    let body = 1
        + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + fields_len(record.key.as_ref().map(Bytes::len), value, headers)?;
    let body_len = len_i32(body)?;
    let start = buf.len();
    buf.reserve(varint_len(body_len) + body);
    put_varint(buf, body_len);
    buf.push(0);
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    put_varint(buf, key_len);
    if let Some(key) = &record.key {
        buf.extend_from_slice(key);
    }
    put_varint(buf, value_len);
    if !record.tombstone {
        buf.extend_from_slice(&record.value);
    }
    put_varint(buf, record.headers.len() as i32);
    for header in &record.headers {
        put_varint(buf, header.key.len() as i32);
        buf.extend_from_slice(header.key.as_bytes());
        put_varint(buf, header.value.len() as i32);
        buf.extend_from_slice(&header.value);
    }
    Some(buf.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound is exact at the widest deltas, and a record at the narrowest takes 13 bytes
    /// fewer (the deltas' 15 widest bytes against 2), or 14 where its length field narrows too.
    #[test]
    fn the_record_length_bound_holds_for_every_delta_and_is_tight_at_the_widest() {
        let header = |key: &str, len: usize| Header {
            key: key.into(),
            value: Bytes::from(vec![7; len]),
        };
        let records = [
            Record::default(),
            Record {
                key: Some(Bytes::from(vec![1; 200])),
                value: Bytes::from(vec![2; 1024]),
                headers: vec![header("trace", 16), header(&"h".repeat(300), 70_000)],
                ..Record::default()
            },
            Record {
                key: Some(Bytes::from_static(b"k")),
                tombstone: true,
                ..Record::default()
            },
        ];
        for record in &records {
            let bound = record_len_bound(
                record.key.as_ref().map(Bytes::len),
                (!record.tombstone).then_some(record.value.len()),
                record.headers.iter().map(|h| (h.key.len(), h.value.len())),
            );
            let len = |timestamp_delta, offset_delta| {
                encode_record(&mut Vec::new(), record, timestamp_delta, offset_delta).unwrap()
            };
            assert_eq!(len(i64::MIN, i32::MIN), bound, "{record:?}");
            assert_eq!(len(i64::MAX, i32::MAX), bound, "{record:?}");
            assert!((13..=14).contains(&(bound - len(0, 0))), "{record:?}");
        }
    }

    #[test]
    fn a_record_round_trips_with_kafkas_layout() {
        let record = Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"x"),
            }],
            timestamp_ms: 1_005,
            tombstone: false,
        };
        let mut buf = Vec::new();
        let written = encode_record(&mut buf, &record, 5, 2).unwrap();
        // length 12, attributes, ts delta 5, offset delta 2, key 1 "k", value 1 "v",
        // 1 header: key 1 "h", value 1 "x".
        assert_eq!(
            buf,
            [24, 0, 10, 4, 2, b'k', 2, b'v', 2, 2, b'h', 2, b'x'],
            "zig-zag varints, as Kafka writes them"
        );
        assert_eq!(written, buf.len());
        let source = Bytes::from(buf);
        let mut slice = &source[..];
        let raw = RawRecord::parse(&mut slice).unwrap();
        assert!(slice.is_empty());
        assert_eq!(raw.offset_delta, 2);
        assert_eq!(raw.to_record(&source, |delta| 1_000 + delta), record);
    }

    #[test]
    fn null_values_are_reported_not_hidden() {
        // length 9, attributes, ts 0, offset 0, no key, null value, 1 header "h" with null value.
        let bytes = [18, 0, 0, 0, 1, 1, 2, 2, b'h', 1];
        let raw = RawRecord::parse(&mut &bytes[..]).unwrap();
        assert_eq!(raw.key, None);
        assert_eq!(raw.value, None);
        assert!(raw.has_null_header_value);
    }

    #[test]
    fn a_tombstone_is_written_as_a_null_value_and_read_back_as_one() {
        let tombstone = Record {
            key: Some(Bytes::from_static(b"k")),
            tombstone: true,
            timestamp_ms: 7,
            ..Record::default()
        };
        let mut buf = Vec::new();
        encode_record(&mut buf, &tombstone, 0, 0).unwrap();
        // length 7, attributes, ts 0, offset 0, key 1 "k", value -1 (null), no headers.
        assert_eq!(buf, [14, 0, 0, 0, 2, b'k', 1, 0]);
        let source = Bytes::from(buf);
        let raw = RawRecord::parse(&mut &source[..]).unwrap();
        assert_eq!(raw.value, None);
        assert_eq!(raw.to_record(&source, |delta| 7 + delta), tombstone);
    }

    #[test]
    fn lengths_that_lie_are_refused() {
        // Declares 5 body bytes but its fields use 6.
        let bytes = [10, 0, 0, 0, 1, 2, b'v', 0];
        assert_eq!(
            RawRecord::parse(&mut &bytes[..]).unwrap_err(),
            "value past the end of the record"
        );
        // Declares 8 body bytes but its fields use 7: a byte left over.
        let bytes = [16, 0, 0, 0, 1, 2, b'v', 0, 0];
        assert_eq!(
            RawRecord::parse(&mut &bytes[..]).unwrap_err(),
            "record length does not match its fields"
        );
        // A header key that is not UTF-8.
        let bytes = [18, 0, 0, 0, 1, 0, 2, 2, 0xff, 0];
        assert_eq!(
            RawRecord::parse(&mut &bytes[..]).unwrap_err(),
            "header key is not UTF-8"
        );
    }
}
