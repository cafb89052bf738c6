//! One `Fetch` of `weir bench consume`, in either answer format the broker offers, sent as it is
//! (`Client::fetch_raw`, answers read as `Client::fetch` reads them): weir-client's
//! `Client::fetch` always asks for record batches, and the per-record format is only reachable
//! with a `FetchRequest` of one's own.
//!
//! - `records` (`FetchRequest.record_batches = false`): the broker decodes its stored batches
//!   and answers one protobuf message per record; the client decodes nothing beyond what prost
//!   does for the response.
//! - `batches` (`record_batches = true`): the broker answers the stored batches unchanged; the
//!   client verifies each (`EncodedBatch::verify`: CRC-32C, lengths, every record parsed) and
//!   decodes its records (`records()`, keys and values as slices of the response), as
//!   weir-client's fetch does.

use std::fmt;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::ValueEnum;
use weir_client::Client;
use weir_client::codec::EncodedBatch;
use weir_proto::v1;

/// The answer format a fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One protobuf message per record (`FetchResponse.records`).
    Records,
    /// The stored record batches as they are (`FetchResponse.record_batches`).
    Batches,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Records => "records",
            Self::Batches => "batches",
        })
    }
}

impl Format {
    /// What a run in this format includes, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Records => {
                "FetchRequest.record_batches = false: the broker decodes its batches into one \
                 protobuf message per record; the client only decodes the protobuf response"
            }
            Self::Batches => {
                "FetchRequest.record_batches = true: the broker sends its stored batches as they \
                 are; the client verifies each (CRC-32C, every record parsed) and decodes its \
                 records, as weir-client's fetch does"
            }
        }
    }
}

/// A client of one broker, which must hold a replica of the partitions read (any replica serves
/// fetches). Not routed: a `NOT_LEADER` answer is an error.
pub type RawBroker = Client;

/// What one fetch brought below the end offset asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fetched {
    /// Records at or after the offset asked for and before the end.
    pub records: u64,
    /// Their payload bytes: keys, values and headers.
    pub bytes: u64,
    /// Where the next fetch starts.
    pub next_offset: u64,
}

/// Sends one fetch of `topic`/`partition` from `offset` in `format`; [`count`] takes its
/// answer apart. Split in two so that a reader can send its next fetch before decoding this one.
pub async fn request(
    broker: &RawBroker,
    topic: &str,
    partition: u32,
    offset: u64,
    max_bytes: u32,
    format: Format,
) -> anyhow::Result<v1::FetchResponse> {
    let request = v1::FetchRequest {
        topic: topic.to_owned(),
        partition,
        offset: i64::try_from(offset).context("offset out of the protocol's range")?,
        max_bytes,
        record_batches: format == Format::Batches,
        ..v1::FetchRequest::default()
    };
    Ok(broker.fetch_raw(&request).await?)
}

/// Where the fetch after `response` (asked for at `offset`) starts, by the broker's word alone,
/// so that it can be sent before this answer is decoded; `None` if the answer does not move
/// forward.
pub fn next_offset(response: &v1::FetchResponse, offset: u64) -> Option<u64> {
    (response.next_offset > offset).then_some(response.next_offset)
}

/// Verifies and decodes the answer to a fetch at `offset` in `format`, counting what lies
/// before `end`.
pub fn count(
    response: v1::FetchResponse,
    offset: u64,
    end: u64,
    format: Format,
) -> anyhow::Result<Fetched> {
    let next_offset = response.next_offset;
    let fetched = match format {
        Format::Records => count_records(&response.records, offset, end),
        Format::Batches => count_batches(response.record_batches, offset, end)?,
    };
    // A broker answers where to continue; never go backwards, nor stand still.
    let next_offset = next_offset.max(fetched.next_offset);
    if next_offset <= offset {
        bail!("the fetch at offset {offset} returned nothing below the end {end}");
    }
    Ok(Fetched {
        next_offset,
        ..fetched
    })
}

impl Fetched {
    /// Counts a record served at `offset` of `bytes` if it lies in `wanted`, and moves the next
    /// offset past it either way.
    fn count(&mut self, offset: u64, wanted: std::ops::Range<u64>, bytes: u64) {
        self.next_offset = self.next_offset.max(offset + 1);
        if wanted.contains(&offset) {
            self.records += 1;
            self.bytes += bytes;
        }
    }
}

/// Counts the records of a per-record answer in `[from, end)`.
fn count_records(records: &[v1::ConsumedRecord], from: u64, end: u64) -> Fetched {
    let mut fetched = Fetched {
        next_offset: from,
        ..Fetched::default()
    };
    for record in records {
        fetched.count(
            record.offset,
            from..end,
            payload_len(
                record.key.as_ref(),
                &record.value,
                record.headers.iter().map(|h| (h.key.len(), h.value.len())),
            ),
        );
    }
    fetched
}

/// Verifies and decodes batches, counting their records in `[from, end)` (the first batch may
/// start before `from`).
fn count_batches(batches: Vec<Bytes>, from: u64, end: u64) -> anyhow::Result<Fetched> {
    let mut fetched = Fetched {
        next_offset: from,
        ..Fetched::default()
    };
    for bytes in batches {
        let batch = EncodedBatch::verify(bytes).context("a fetched batch is damaged")?;
        for item in batch.records() {
            let (offset, record) = item.context("a fetched batch has an undecodable record")?;
            fetched.count(
                offset.0,
                from..end,
                payload_len(
                    record.key.as_ref(),
                    &record.value,
                    record.headers.iter().map(|h| (h.key.len(), h.value.len())),
                ),
            );
        }
    }
    Ok(fetched)
}

/// Bytes of a record's key, value and headers (key and value lengths of each).
fn payload_len(
    key: Option<&Bytes>,
    value: &Bytes,
    headers: impl Iterator<Item = (usize, usize)>,
) -> u64 {
    let headers: usize = headers.map(|(k, v)| k + v).sum();
    (key.map_or(0, Bytes::len) + value.len() + headers) as u64
}

#[cfg(test)]
mod tests {
    use weir_client::codec::{BatchEncoder, BatchLimits, Header, Record};
    use weir_types::Offset;

    use super::*;

    fn record(value: &str) -> Record {
        Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: 1,
            tombstone: false,
        }
    }

    /// A stored batch of `values` from offset `base`.
    fn stored(base: u64, values: &[&str]) -> Bytes {
        let records: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (Offset(base + i as u64), record(v)))
            .collect();
        BatchEncoder::new(BatchLimits::default())
            .encode_at_offsets(&records)
            .expect("encodes")
            .into_bytes()
    }

    #[test]
    fn batches_are_counted_from_the_offset_asked_for_to_the_end() {
        // Offsets 8..=10 and 11..=12; the read asked for 9 and ends before 12.
        let batches = vec![stored(8, &["a", "bb", "ccc"]), stored(11, &["d", "e"])];
        let fetched = count_batches(batches, 9, 12).expect("valid batches");
        // 9 (bb), 10 (ccc), 11 (d): values 2 + 3 + 1, each with key "k" and header "h"="v".
        assert_eq!(fetched.records, 3);
        assert_eq!(fetched.bytes, 6 + 3 * 3);
        assert_eq!(fetched.next_offset, 13);
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_data() {
        let mut damaged = stored(0, &["a"]).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(count_batches(vec![Bytes::from(damaged)], 0, 1).is_err());
    }

    #[test]
    fn records_are_counted_like_batches() {
        let consumed = |offset: u64, value: &str| v1::ConsumedRecord {
            offset,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: vec![v1::Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: 1,
            tombstone: false,
        };
        let records = [
            consumed(9, "bb"),
            consumed(10, "ccc"),
            consumed(11, "d"),
            consumed(12, "e"),
        ];
        let fetched = count_records(&records, 9, 12);
        assert_eq!((fetched.records, fetched.bytes), (3, 6 + 3 * 3));
        assert_eq!(fetched.next_offset, 13);
    }

    #[test]
    fn each_format_says_what_it_includes() {
        assert!(
            Format::Records
                .describe()
                .contains("record_batches = false")
        );
        assert!(Format::Batches.describe().contains("verifies"));
        assert_eq!(Format::Batches.to_string(), "batches");
    }
}
