//! Consume types: fetch requests and their answers, subscriptions and their start positions,
//! and offset look-ups.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use weir_proto::v1;
use weir_types::{EncodedBatch, Record};

use crate::{ClientError, ModuleRef, RejectedOffset};

/// A record as read from a partition: what was produced, plus its offset and stored timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Its position in the partition.
    pub offset: u64,
    /// The key; `None` is "no key", which differs from an empty key.
    pub key: Option<Bytes>,
    /// The value; empty for a tombstone.
    pub value: Bytes,
    /// Headers, in the order produced.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch: the producer's timestamp or the broker's append time.
    pub timestamp_ms: i64,
    /// The value is null: a tombstone, which deletes the key from a compacted topic, as distinct
    /// from an empty value.
    pub tombstone: bool,
}

impl ConsumedRecord {
    /// Bytes of key, value and headers: the payload size, excluding framing.
    pub fn payload_len(&self) -> usize {
        crate::payload_len(self.key.as_ref(), &self.value, &self.headers)
    }
}

impl ConsumedRecord {
    fn from_batch_record(offset: u64, record: Record) -> Self {
        Self {
            offset,
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|header| (header.key, header.value))
                .collect(),
            timestamp_ms: record.timestamp_ms,
            tombstone: record.tombstone,
        }
    }
}

/// A consumed record as the caller keeps it: [`ConsumedRecord`] itself, or one wrapped with
/// where it came from (the `Consumer`'s records), made as each is decoded.
pub(crate) trait AtOffset {
    /// The record's offset in its partition.
    fn offset(&self) -> u64;
}

impl AtOffset for ConsumedRecord {
    fn offset(&self) -> u64 {
        self.offset
    }
}

/// Appends to `records` the records of the record batches a broker answered with, from offset
/// `from` on (the first batch may start before it), each decoded and made what the caller keeps
/// (`make`) straight into place. Every batch is verified first (CRC, lengths, record count), so
/// nothing damaged on the way is taken for data: on an error `records` holds what it held
/// before.
pub(crate) fn append_records_of_batches<R>(
    records: &mut Vec<R>,
    batches: Vec<Bytes>,
    from: u64,
    mut make: impl FnMut(ConsumedRecord) -> R,
) -> Result<(), ClientError> {
    let held = records.len();
    for bytes in batches {
        // One pass: every record is checked and decoded together.
        let decoded = EncodedBatch::verify_and_decode_into(bytes, records, |offset, record| {
            (offset.0 >= from).then(|| make(ConsumedRecord::from_batch_record(offset.0, record)))
        });
        if let Err(e) = decoded {
            records.truncate(held);
            return Err(ClientError::CorruptBatch(e));
        }
    }
    Ok(())
}

impl From<v1::ConsumedRecord> for ConsumedRecord {
    fn from(record: v1::ConsumedRecord) -> Self {
        Self {
            offset: record.offset,
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|header| (header.key, header.value))
                .collect(),
            timestamp_ms: record.timestamp_ms,
            tombstone: record.tombstone,
        }
    }
}

/// One fetch: where to read and how much to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// First offset wanted, between the log start and the high watermark.
    pub offset: u64,
    /// Most records to return; 0 means the broker default.
    pub max_records: u32,
    /// Soft bound on the bytes returned (at least one record is returned if any is available); 0
    /// means the broker default.
    pub max_bytes: u32,
    /// How long the broker waits for a record at `offset` when there is none yet; 0 answers at
    /// once.
    pub max_wait_ms: u32,
    /// A module chain the broker runs over the records before returning them, in order; empty
    /// means the topic's consume chain, if it has one.
    pub modules: Vec<ModuleRef>,
}

impl FetchSpec {
    /// A fetch from `offset` with the broker's default limits that answers at once.
    pub fn new(topic: impl Into<String>, partition: u32, offset: u64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            max_records: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            modules: Vec::new(),
        }
    }

    /// Sets the most records to return.
    pub fn with_max_records(mut self, max_records: u32) -> Self {
        self.max_records = max_records;
        self
    }

    /// Sets the soft bound on the bytes returned.
    pub fn with_max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Makes the broker wait up to `max_wait_ms` for a record when there is none yet (long poll).
    pub fn with_max_wait_ms(mut self, max_wait_ms: u32) -> Self {
        self.max_wait_ms = max_wait_ms;
        self
    }

    /// Appends a module to the chain the broker runs over the records (replacing the topic's
    /// consume chain for this fetch).
    pub fn with_module(mut self, module: ModuleRef) -> Self {
        self.modules.push(module);
        self
    }
}

impl TryFrom<FetchSpec> for v1::FetchRequest {
    type Error = ClientError;

    fn try_from(spec: FetchSpec) -> Result<Self, Self::Error> {
        let offset = i64::try_from(spec.offset).map_err(|_| {
            ClientError::InvalidArgument(format!(
                "offset {} is beyond the protocol's maximum {}",
                spec.offset,
                i64::MAX
            ))
        })?;
        Ok(Self {
            topic: spec.topic,
            partition: spec.partition,
            offset,
            max_records: spec.max_records,
            max_bytes: spec.max_bytes,
            max_wait_ms: spec.max_wait_ms,
            modules: spec.modules.into_iter().map(v1::ModuleRef::from).collect(),
            // Stored batches pass through the broker as they are, and are decoded here.
            record_batches: true,
        })
    }
}

/// The answer to a fetch: the records read, where to read next, and the partition's bounds at
/// that moment.
///
/// `R` is what each record is kept as: [`ConsumedRecord`] for [`crate::Client::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<R = ConsumedRecord> {
    /// The records, in offset order, with their original offsets; with a module chain, only
    /// those that came out of it. Empty when nothing arrived within the wait, or when the chain
    /// kept nothing of what was read.
    pub records: Vec<R>,
    /// Where the next fetch should start: one past the last offset this fetch read, whether or
    /// not a module kept it; the requested offset when nothing was read. With a filter this can
    /// be past the last record returned, so a consumer continues from here, not from the last
    /// record's offset + 1.
    pub next_offset: u64,
    /// Records a consume-chain module rejected, with the reason.
    pub rejected: Vec<RejectedOffset>,
    /// One past the last committed offset.
    pub high_watermark: u64,
    /// The first offset still stored.
    pub log_start_offset: u64,
}

impl<R> Fetched<R> {
    /// Reads a fetch answer to a request for `requested` (`max_records` as asked, 0 for no
    /// bound), each record made what the caller keeps (`make`) as it is decoded. `next_offset`
    /// is never before the requested offset nor before the last record returned: a broker older
    /// than the field sends 0, and a consumer must never be sent backwards.
    pub(crate) fn from_wire_into(
        response: v1::FetchResponse,
        requested: u64,
        max_records: u32,
        mut make: impl FnMut(ConsumedRecord) -> R,
    ) -> Result<Self, ClientError>
    where
        R: AtOffset,
    {
        let mut records: Vec<R> = response
            .records
            .into_iter()
            .map(|record| make(ConsumedRecord::from(record)))
            .collect();
        append_records_of_batches(&mut records, response.record_batches, requested, make)?;
        let mut next_offset = response.next_offset;
        // The broker serves whole batches; the records past the bound are read again next time.
        if max_records > 0 && records.len() > max_records as usize {
            records.truncate(max_records as usize);
            next_offset = records.last().map_or(requested, |r| r.offset() + 1);
        }
        let after_last = records.last().map_or(requested, |r| r.offset() + 1);
        Ok(Self {
            next_offset: next_offset.max(requested).max(after_last),
            records,
            rejected: response
                .rejected
                .into_iter()
                .map(RejectedOffset::from)
                .collect(),
            high_watermark: response.high_watermark,
            log_start_offset: response.log_start_offset,
        })
    }
}

/// Where a subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the first record still stored.
    Earliest,
    /// At the end: only records committed from now on.
    Latest,
    /// At this offset.
    Offset(u64),
}

impl From<StartAt> for v1::StartPosition {
    fn from(start: StartAt) -> Self {
        use v1::start_position::Position;
        let position = match start {
            StartAt::Earliest => Position::Earliest(true),
            StartAt::Latest => Position::Latest(true),
            StartAt::Offset(offset) => Position::Offset(offset),
        };
        Self {
            position: Some(position),
        }
    }
}

/// One subscription: where to tail, from where, and the module chain to run over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSpec {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Where the stream starts.
    pub start: StartAt,
    /// Upper bound on the bytes of one streamed message; 0 means the broker default.
    pub max_bytes: u32,
    /// A module chain the broker runs over the records, in order; empty means the topic's
    /// consume chain, if it has one. The chain lives as long as the subscription, so an
    /// aggregate's state runs across the whole stream.
    pub modules: Vec<ModuleRef>,
}

impl SubscribeSpec {
    /// A subscription to `topic`/`partition` from `start`, with the broker's default message
    /// size and the topic's consume chain.
    pub fn new(topic: impl Into<String>, partition: u32, start: StartAt) -> Self {
        Self {
            topic: topic.into(),
            partition,
            start,
            max_bytes: 0,
            modules: Vec::new(),
        }
    }

    /// Sets the upper bound on the bytes of one streamed message.
    pub fn with_max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Appends a module to the chain the broker runs over the stream (replacing the topic's
    /// consume chain for this subscription).
    pub fn with_module(mut self, module: ModuleRef) -> Self {
        self.modules.push(module);
        self
    }
}

impl From<SubscribeSpec> for v1::SubscribeRequest {
    fn from(spec: SubscribeSpec) -> Self {
        Self {
            topic: spec.topic,
            partition: spec.partition,
            start: Some(v1::StartPosition::from(spec.start)),
            max_bytes: spec.max_bytes,
            modules: spec.modules.into_iter().map(v1::ModuleRef::from).collect(),
            record_batches: true,
        }
    }
}

/// One message of a subscription: records as the broker committed them, after its module
/// chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedBatch {
    /// The records, in offset order, with their original offsets; with a module chain, only
    /// those that came out of it (possibly none, when the batch carries only rejections).
    pub records: Vec<ConsumedRecord>,
    /// Records a consume-chain module rejected, with the reason.
    pub rejected: Vec<RejectedOffset>,
    /// One past the last offset the broker read for this message: where to subscribe again
    /// from to continue after it.
    pub next_offset: u64,
    /// The partition's high watermark when the message was sent.
    pub high_watermark: u64,
}

impl SubscribedBatch {
    /// Reads a subscription message; the stream was opened (or last continued) at `from`, so
    /// records of its batches before it are skipped.
    pub(crate) fn from_wire(
        response: v1::SubscribeResponse,
        from: u64,
    ) -> Result<Self, ClientError> {
        let mut records: Vec<ConsumedRecord> = response
            .records
            .into_iter()
            .map(ConsumedRecord::from)
            .collect();
        append_records_of_batches(&mut records, response.record_batches, from, |record| record)?;
        // A broker older than the field sends 0; it never filtered anything.
        let after_last = records.last().map_or(0, |r| r.offset + 1);
        Ok(Self {
            next_offset: response.next_offset.max(after_last),
            records,
            rejected: response
                .rejected
                .into_iter()
                .map(RejectedOffset::from)
                .collect(),
            high_watermark: response.high_watermark,
        })
    }
}

/// What offset to look up in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still stored.
    Earliest,
    /// The high watermark: the offset the next committed record will take.
    Latest,
    /// The first offset whose record timestamp is at or after this many milliseconds since the
    /// Unix epoch.
    Timestamp(i64),
}

impl From<OffsetSpec> for v1::list_offsets_request::Spec {
    fn from(spec: OffsetSpec) -> Self {
        match spec {
            OffsetSpec::Earliest => Self::Earliest(true),
            OffsetSpec::Latest => Self::Latest(true),
            OffsetSpec::Timestamp(timestamp_ms) => Self::TimestampMs(timestamp_ms),
        }
    }
}

/// The answer to an offset look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found; `None` when looking up a timestamp later than every record.
    pub offset: Option<u64>,
    /// For a timestamp look-up, the timestamp of the record found.
    pub timestamp_ms: Option<i64>,
    /// The partition's high watermark at that moment.
    pub high_watermark: u64,
    /// The partition's first stored offset at that moment.
    pub log_start_offset: u64,
}

impl From<v1::ListOffsetsResponse> for ListedOffset {
    fn from(response: v1::ListOffsetsResponse) -> Self {
        Self {
            offset: response.offset,
            timestamp_ms: response.timestamp_ms,
            high_watermark: response.high_watermark,
            log_start_offset: response.log_start_offset,
        }
    }
}

/// The records of a subscription, one at a time, in offset order. It ends after yielding an
/// error, or when the broker closes the stream.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<ConsumedRecord, ClientError>> + Send>>;

/// The messages of a subscription, each with its records, rejections and next offset. It ends
/// after yielding an error, or when the broker closes the stream.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<SubscribedBatch, ClientError>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch answer read as `Client::fetch` reads it.
    fn from_wire(
        response: v1::FetchResponse,
        requested: u64,
        max_records: u32,
    ) -> Result<Fetched, ClientError> {
        Fetched::from_wire_into(response, requested, max_records, |record| record)
    }

    #[test]
    fn fetch_offsets_beyond_i64_are_refused_before_sending() {
        let err = v1::FetchRequest::try_from(FetchSpec::new("t", 0, u64::MAX))
            .expect_err("u64::MAX does not fit the wire's int64");
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");

        let request = v1::FetchRequest::try_from(
            FetchSpec::new("t", 2, 41)
                .with_max_records(10)
                .with_max_bytes(4096)
                .with_max_wait_ms(500),
        )
        .expect("small offsets convert");
        assert_eq!(
            (request.partition, request.offset, request.max_records),
            (2, 41, 10)
        );
        assert_eq!((request.max_bytes, request.max_wait_ms), (4096, 500));
        assert!(request.modules.is_empty());
    }

    #[test]
    fn fetch_and_subscribe_specs_carry_their_chain_in_order() {
        let chain = [
            ModuleRef::new("filter").with_param("field", "type"),
            ModuleRef::new("upper").with_version(2),
        ];
        let request = v1::FetchRequest::try_from(
            FetchSpec::new("t", 0, 0)
                .with_module(chain[0].clone())
                .with_module(chain[1].clone()),
        )
        .expect("valid");
        let names: Vec<_> = request.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["filter", "upper"]);
        assert_eq!(request.modules[1].version, Some(2));
        assert_eq!(request.modules[0].params[0].value, "type");

        let request = v1::SubscribeRequest::from(
            SubscribeSpec::new("t", 3, StartAt::Offset(9))
                .with_max_bytes(100)
                .with_module(chain[1].clone()),
        );
        assert_eq!((request.partition, request.max_bytes), (3, 100));
        assert_eq!(
            request.start.and_then(|s| s.position),
            Some(v1::start_position::Position::Offset(9))
        );
        assert_eq!(request.modules.len(), 1);
    }

    #[test]
    fn next_offset_comes_from_the_broker_and_never_goes_back() {
        let record = |offset| v1::ConsumedRecord {
            offset,
            ..Default::default()
        };
        // A filter kept offset 10 of the 10..20 read: continue at 20, not 11.
        let filtered = from_wire(
            v1::FetchResponse {
                records: vec![record(10)],
                high_watermark: 30,
                log_start_offset: 0,
                next_offset: 20,
                rejected: vec![v1::RejectedOffset {
                    offset: 12,
                    reason: "no id".to_owned(),
                    module: "v@1".to_owned(),
                }],
                record_batches: Vec::new(),
            },
            10,
            0,
        )
        .unwrap();
        assert_eq!(filtered.next_offset, 20);
        assert_eq!(
            filtered.rejected,
            [RejectedOffset {
                offset: 12,
                reason: "no id".to_owned(),
                module: "v@1".to_owned()
            }]
        );
        // A broker without the field sends 0.
        let old = |records| v1::FetchResponse {
            records,
            ..Default::default()
        };
        assert_eq!(
            from_wire(old(vec![record(5), record(6)]), 5, 0)
                .unwrap()
                .next_offset,
            7
        );
        assert_eq!(from_wire(old(Vec::new()), 5, 0).unwrap().next_offset, 5);

        let batch = SubscribedBatch::from_wire(
            v1::SubscribeResponse {
                records: vec![record(3)],
                high_watermark: 9,
                next_offset: 8,
                rejected: Vec::new(),
                record_batches: Vec::new(),
            },
            0,
        )
        .unwrap();
        assert_eq!((batch.next_offset, batch.high_watermark), (8, 9));
    }

    fn stored_batch(base_offset: u64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                key: Some(Bytes::from_static(b"k")),
                value: Bytes::copy_from_slice(v.as_bytes()),
                headers: vec![weir_types::Header {
                    key: "h".to_owned(),
                    value: Bytes::from_static(b"x"),
                }],
                timestamp_ms: 100,
                tombstone: false,
            })
            .collect();
        EncodedBatch::encode(&records, weir_types::BatchLimits::default())
            .unwrap()
            .stamped(weir_types::Offset(base_offset), 1)
            .into_bytes()
    }

    #[test]
    fn batches_are_decoded_from_the_requested_offset_and_cut_at_max_records() {
        let response = || v1::FetchResponse {
            record_batches: vec![stored_batch(8, &["a", "b", "c"]), stored_batch(11, &["d"])],
            next_offset: 12,
            high_watermark: 12,
            ..Default::default()
        };
        let fetched = from_wire(response(), 9, 0).unwrap();
        let offsets: Vec<u64> = fetched.records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            [9, 10, 11],
            "the first batch starts before the offset asked"
        );
        assert_eq!(fetched.next_offset, 12);
        assert_eq!(&fetched.records[0].value[..], b"b");
        assert_eq!(
            fetched.records[0].headers,
            [("h".to_owned(), Bytes::from_static(b"x"))]
        );
        let cut = from_wire(response(), 9, 2).unwrap();
        assert_eq!(cut.records.len(), 2);
        assert_eq!(cut.next_offset, 11, "the rest is read again next time");

        let mut damaged = stored_batch(8, &["a"]).to_vec();
        *damaged.last_mut().unwrap() ^= 1;
        let err = from_wire(
            v1::FetchResponse {
                record_batches: vec![Bytes::from(damaged.clone())],
                ..Default::default()
            },
            8,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::CorruptBatch(_)), "{err}");
        // A good batch before a damaged one: nothing of the answer is appended.
        let mut records = from_wire(response(), 9, 1).unwrap().records;
        let err = append_records_of_batches(
            &mut records,
            vec![stored_batch(20, &["e"]), Bytes::from(damaged)],
            0,
            |record| record,
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::CorruptBatch(_)), "{err}");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 9);
    }

    #[test]
    fn consumed_record_keeps_absent_and_empty_keys_apart() {
        let wire = |key| v1::ConsumedRecord {
            offset: 3,
            key,
            value: Bytes::from_static(b"v"),
            headers: vec![v1::Header {
                key: "h".to_owned(),
                value: Bytes::from_static(b"x"),
            }],
            timestamp_ms: 9,
            tombstone: false,
        };
        let absent = ConsumedRecord::from(wire(None));
        let empty = ConsumedRecord::from(wire(Some(Bytes::new())));
        assert_eq!(absent.key, None);
        assert_eq!(empty.key, Some(Bytes::new()));
        assert_eq!(absent.headers, [("h".to_owned(), Bytes::from_static(b"x"))]);
        assert_eq!(absent.payload_len(), 1 + 1 + 1);
    }

    #[test]
    fn tombstones_and_empty_values_stay_apart_from_records_and_from_batches() {
        let wire = |tombstone| v1::ConsumedRecord {
            offset: 4,
            key: Some(Bytes::from_static(b"k")),
            tombstone,
            ..Default::default()
        };
        assert!(ConsumedRecord::from(wire(true)).tombstone);
        assert!(!ConsumedRecord::from(wire(false)).tombstone);
        let batch = EncodedBatch::encode(
            &[
                Record {
                    key: Some(Bytes::from_static(b"k")),
                    tombstone: true,
                    ..Record::default()
                },
                Record::default(),
            ],
            weir_types::BatchLimits::default(),
        )
        .unwrap();
        let mut records = Vec::new();
        append_records_of_batches(&mut records, vec![batch.into_bytes()], 0, |r| r).unwrap();
        let kinds: Vec<(u64, bool, usize)> = records
            .iter()
            .map(|r| (r.offset, r.tombstone, r.value.len()))
            .collect();
        assert_eq!(kinds, [(0, true, 0), (1, false, 0)]);
    }
}
