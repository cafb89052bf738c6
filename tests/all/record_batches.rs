//! Kafka record batches (v2) on the API: what another Kafka implementation encodes is accepted
//! and served record for record, what Weir serves decodes with it, malformed or unsupported
//! batches are refused by name and store nothing, fetches and subscriptions in batch form serve
//! whole stored batches, a consume chain's survivors come in batches at their original offsets,
//! and a data directory of storage format 1 is converted at start-up
//! without losing or moving a record.
//!
//! The independent implementation is the `kafka-protocol` crate's `RecordBatchEncoder` and
//! `RecordBatchDecoder`, which check the CRC-32C and lengths of everything they decode.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tonic::Code;
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, RawClient, fetch_all};

/// How long one message of a subscription may take to arrive.
const STREAM_WAIT: Duration = Duration::from_secs(20);

/// A millisecond timestamp in late 2023, the base of the test records' timestamps.
const T0: i64 = 1_700_000_000_000;

async fn create(c: &mut RawClient, topic: &str, partitions: u32) -> anyhow::Result<()> {
    c.create_topic(pb::CreateTopicRequest {
        name: topic.into(),
        partitions,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    Ok(())
}

/// A record as `kafka-protocol` encodes it for a producer without idempotence.
///
/// `kafka-protocol` derives a batch's base sequence from its records and starts a new batch
/// wherever `offset - sequence` changes, so record `offset` carries sequence `offset - 1`:
/// one batch whose base sequence is -1 (no sequence), as a non-idempotent Kafka producer sends.
pub(crate) fn kafka_record(
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&'static str, &[u8])],
    timestamp: i64,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32 - 1,
        timestamp,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: headers
            .iter()
            .map(|&(k, v)| {
                (
                    StrBytes::from_static_str(k),
                    Some(Bytes::copy_from_slice(v)),
                )
            })
            .collect::<IndexMap<_, _>>(),
    }
}

/// Records covering what a batch can carry: keys (a null one and an empty one), headers (an
/// empty value among them), binary and empty values, and distinct timestamps that are not in
/// offset order (so the batch's base timestamp is not the first record's).
fn kafka_records() -> Vec<Record> {
    let binary: Vec<u8> = (0..=255).collect();
    vec![
        kafka_record(
            0,
            Some(b"order-17"),
            Some(b"created"),
            &[("trace-id", b"abc-123"), ("empty", b"")],
            T0 + 40,
        ),
        kafka_record(1, None, Some(b"no key at all"), &[], T0 + 10),
        kafka_record(2, Some(b""), Some(b""), &[("source", b"kafka")], T0 + 25),
        kafka_record(
            3,
            Some(b"order-17"),
            Some(&binary),
            &[("a", b"1"), ("b", b"2"), ("c", &[0, 255])],
            T0 + 70,
        ),
    ]
}

/// Encodes `records` with `kafka-protocol` as one uncompressed v2 batch.
pub(crate) fn kafka_encode(records: &[Record]) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let bytes = buf.freeze();
    let batches = RecordBatchDecoder::decode_batch_info(&mut bytes.clone())?;
    anyhow::ensure!(
        batches.len() == 1,
        "kafka-protocol split the records into {} batches",
        batches.len()
    );
    Ok(bytes)
}

/// Decodes one batch with `kafka-protocol` (which checks its CRC and lengths), requiring that
/// it spans the bytes exactly.
pub(crate) fn kafka_decode(batch: &Bytes) -> anyhow::Result<Vec<Record>> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf)
        .with_context(|| format!("kafka-protocol cannot decode {batch:02x?}"))?;
    anyhow::ensure!(
        buf.is_empty(),
        "{} bytes after the batch kafka-protocol decoded",
        buf.len()
    );
    anyhow::ensure!(set.version == 2, "a v{} batch", set.version);
    Ok(set.records)
}

/// What a consumer of records should see for `record`, stored at `offset`.
fn as_consumed(record: &Record, offset: u64) -> pb::ConsumedRecord {
    pb::ConsumedRecord {
        offset,
        key: record.key.clone(),
        value: record.value.clone().unwrap_or_default(),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| pb::Header {
                key: k.as_str().to_owned(),
                value: v.clone().unwrap_or_default(),
            })
            .collect(),
        timestamp_ms: record.timestamp,
        tombstone: record.value.is_none(),
    }
}

/// A `kafka-protocol` record as a consumed record, so both decoders' results compare directly.
fn decoded_as_consumed(record: &Record) -> pb::ConsumedRecord {
    as_consumed(record, record.offset as u64)
}

fn produce_batch(topic: &str, partition: u32, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        record_batch: batch,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

fn produce_records(topic: &str, partition: u32, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        records,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

fn fetch_batches(topic: &str, partition: u32, offset: i64, max_bytes: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_bytes,
        record_batches: true,
        ..Default::default()
    }
}

fn fetch_records(topic: &str, partition: u32, offset: i64) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        ..Default::default()
    }
}

/// A record with a key, a header and an explicit timestamp.
fn weir_record(value: &str, seq: i64) -> pb::Record {
    pb::Record {
        key: Some(Bytes::from(format!("key-{}", seq % 3))),
        value: Bytes::from(value.to_owned()),
        headers: vec![pb::Header {
            key: "seq".into(),
            value: Bytes::from(seq.to_string()),
        }],
        timestamp_ms: Some(T0 + seq),
        tombstone: false,
    }
}

async fn high_watermark(c: &mut RawClient, topic: &str, partition: u32) -> anyhow::Result<u64> {
    let described = c
        .describe_topic(pb::DescribeTopicRequest { name: topic.into() })
        .await?
        .into_inner()
        .topic
        .context("DescribeTopic describes the topic")?;
    described
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .map(|p| p.high_watermark)
        .context("no such partition")
}

/// Writes the CRC-32C of bytes 21.. into bytes 17..21 (big-endian), as a Kafka encoder does, so
/// that the check a test aims at is the one that fires, not the CRC's.
fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Asserts that `result` failed with `code` and `reason`, and that its message mentions each of
/// `mentions`; returns the message.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
    mentions: &[&str],
    case: &str,
) -> String {
    let status = match result {
        Ok(answer) => panic!("{case}: the request must fail, but it was answered {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert_eq!(
        weir_proto::error::reason_of(&status).as_deref(),
        Some(reason),
        "{case}: {status:?}"
    );
    for mention in mentions {
        assert!(
            status.message().contains(mention),
            "{case}: the message should mention {mention:?}: {}",
            status.message()
        );
    }
    status.message().to_owned()
}

/// Produces two records to partition 0 of `topic`, then [`kafka_records`] as one batch
/// `kafka-protocol` encodes (so its base offset, 0 as sent, must be replaced by the log's 2);
/// returns those records, the batch as sent and the answer to it.
async fn produce_a_kafka_batch_after_two_records(
    c: &mut RawClient,
    topic: &str,
) -> anyhow::Result<(Vec<Record>, Bytes, pb::ProduceResponse)> {
    c.produce(produce_records(
        topic,
        0,
        vec![weir_record("before-0", 0), weir_record("before-1", 1)],
    ))
    .await?;
    let records = kafka_records();
    let sent = kafka_encode(&records)?;
    let produced = c
        .produce(produce_batch(topic, 0, sent.clone()))
        .await?
        .into_inner();
    Ok((records, sent, produced))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_encoded_by_another_kafka_codec_is_stored_as_sent_and_served_record_for_record()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, "interop", 1).await?;
    let (records, sent, produced) =
        produce_a_kafka_batch_after_two_records(&mut c, "interop").await?;
    assert_eq!(produced.base_offset, Some(2));
    assert_eq!(produced.record_count, 4);
    assert_eq!(high_watermark(&mut c, "interop", 0).await?, 6);

    // As records: every field, at consecutive offsets from the stamped base offset.
    let fetched = c.fetch(fetch_records("interop", 0, 2)).await?.into_inner();
    let expected: Vec<pb::ConsumedRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| as_consumed(r, 2 + i as u64))
        .collect();
    assert_eq!(fetched.records, expected);
    assert_eq!(fetched.next_offset, 6);
    assert_eq!(
        fetched.records[1].key, None,
        "a null key stays distinct from an empty one"
    );
    assert_eq!(fetched.records[2].key, Some(Bytes::new()));

    // As batches: the bytes sent, with only the base offset and leader epoch stamped.
    let fetched = c
        .fetch(fetch_batches("interop", 0, 2, 0))
        .await?
        .into_inner();
    assert!(fetched.records.is_empty(), "batch form carries no records");
    assert_eq!(fetched.record_batches.len(), 1, "{fetched:?}");
    assert_eq!(fetched.next_offset, 6);
    let stored = &fetched.record_batches[0];
    assert_eq!(stored.len(), sent.len());
    assert_eq!(
        stored[..8],
        2i64.to_be_bytes(),
        "the base offset is the log's"
    );
    assert_eq!(stored[8..12], sent[8..12], "the batch length is as sent");
    assert_eq!(
        stored[16..],
        sent[16..],
        "magic, CRC, attributes, producer fields and records are stored as sent"
    );

    // Another codec reads what was stored: valid CRC, the same records at the stored offsets.
    let decoded = kafka_decode(stored)?;
    assert_eq!(
        decoded.iter().map(decoded_as_consumed).collect::<Vec<_>>(),
        expected
    );
    for record in &decoded {
        assert_eq!(record.producer_id, NO_PRODUCER_ID);
        assert_eq!(record.producer_epoch, NO_PRODUCER_EPOCH);
        assert!(!record.transactional && !record.control);
        assert_eq!(record.timestamp_type, TimestampType::Creation);
        assert!(
            record.partition_leader_epoch >= 0,
            "the log stamps its leader epoch over the producer's -1: {record:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_weir_encodes_from_records_decode_with_another_kafka_codec() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, "native", 1).await?;
    let first = vec![
        weir_record("a", 0),
        pb::Record {
            key: None,
            value: Bytes::from_static(b"unkeyed"),
            headers: vec![
                pb::Header {
                    key: "x".into(),
                    value: Bytes::from_static(b"1"),
                },
                pb::Header {
                    key: "y".into(),
                    value: Bytes::new(),
                },
            ],
            timestamp_ms: Some(T0 - 5),
            tombstone: false,
        },
        // The broker's append time.
        pb::Record {
            key: Some(Bytes::new()),
            value: Bytes::from_static(b"stamped by the broker"),
            ..Default::default()
        },
    ];
    let second = vec![weir_record("b", 3), weir_record("c", 4)];
    c.produce(produce_records("native", 0, first.clone()))
        .await?;
    c.produce(produce_records("native", 0, second.clone()))
        .await?;

    let as_records = c
        .fetch(fetch_records("native", 0, 0))
        .await?
        .into_inner()
        .records;
    assert_eq!(as_records.len(), 5);
    let produced: Vec<&pb::Record> = first.iter().chain(&second).collect();
    for (stored, sent) in as_records.iter().zip(&produced) {
        assert_eq!(
            (&stored.key, &stored.value, &stored.headers),
            (&sent.key, &sent.value, &sent.headers)
        );
        if let Some(t) = sent.timestamp_ms {
            assert_eq!(stored.timestamp_ms, t);
        }
    }

    let batches = c
        .fetch(fetch_batches("native", 0, 0, 0))
        .await?
        .into_inner()
        .record_batches;
    assert_eq!(batches.len(), 2, "one batch per produce request");
    let mut decoded = Vec::new();
    for (batch, base) in batches.iter().zip([0i64, 3]) {
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone())?;
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].min_offset, base);
        assert_eq!(info[0].producer_id, NO_PRODUCER_ID);
        assert_eq!(info[0].compression, Compression::None);
        decoded.extend(kafka_decode(batch)?);
    }
    assert_eq!(
        decoded.iter().map(decoded_as_consumed).collect::<Vec<_>>(),
        as_records,
        "kafka-protocol reads the same records, offsets and timestamps Weir serves"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_batches_are_refused_by_name_and_store_nothing()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, "strict", 1).await?;
    c.produce(produce_records("strict", 0, vec![weir_record("kept", 0)]))
        .await?;

    let good = kafka_encode(&kafka_records())?.to_vec();
    assert_eq!(
        crc32c::crc32c(&good[21..]).to_be_bytes(),
        good[17..21],
        "the CRC covers bytes 21.. and is stored big-endian at 17"
    );
    let doctored = |change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        change(&mut bytes);
        Bytes::from(bytes)
    };
    let with_attributes = |bits: u16| {
        doctored(&|b: &mut Vec<u8>| {
            let attributes = u16::from_be_bytes([b[21], b[22]]) | bits;
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            reseal(b);
        })
    };
    let cases: Vec<(&str, Bytes, &[&str])> = vec![
        (
            "bad CRC",
            doctored(&|b| *b.last_mut().expect("a batch has bytes") ^= 0x01),
            &["checksum"],
        ),
        ("wrong magic", doctored(&|b| b[16] = 1), &["magic byte 1"]),
        (
            "a batch length that says more than there is",
            doctored(&|b| {
                let lie = (b.len() - 12 + 5) as i32;
                b[8..12].copy_from_slice(&lie.to_be_bytes());
            }),
            &["batch length"],
        ),
        (
            "a batch cut short",
            doctored(&|b| b.truncate(b.len() - 3)),
            &["batch length"],
        ),
        (
            "a record count that lies",
            doctored(&|b| {
                b[57..61].copy_from_slice(&5i32.to_be_bytes());
                reseal(b);
            }),
            &["counts 5 records", "holds 4"],
        ),
        ("control bit", with_attributes(0x20), &["control"]),
        (
            "transactional bit",
            with_attributes(0x10),
            &["transactional"],
        ),
        ("gzip attribute", with_attributes(0x01), &["gzip"]),
        (
            // A null value is a tombstone, stored (tests/all/tombstones.rs); a null header
            // value is not.
            "a null header value",
            kafka_encode(&[{
                let mut record = kafka_record(0, Some(b"k"), Some(b"v"), &[], T0);
                record.headers.insert(StrBytes::from_static_str("h"), None);
                record
            }])?,
            &["record 0", "header has a null value"],
        ),
    ];
    for (case, batch, mentions) in cases {
        assert_refused(
            c.produce(produce_batch("strict", 0, batch)).await,
            Code::InvalidArgument,
            "INVALID_RECORD",
            mentions,
            case,
        );
    }
    let mut both = produce_batch("strict", 0, Bytes::from(good.clone()));
    both.records = vec![weir_record("also", 1)];
    assert_refused(
        c.produce(both).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        &["records", "record_batch"],
        "records and record_batch both set",
    );

    // Nothing of any of them was stored, and no offset was used up.
    assert_eq!(high_watermark(&mut c, "strict", 0).await?, 1);
    let values: Vec<Bytes> = c
        .fetch(fetch_records("strict", 0, 0))
        .await?
        .into_inner()
        .records
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, vec![Bytes::from_static(b"kept")]);
    let accepted = c
        .produce(produce_batch("strict", 0, Bytes::from(good)))
        .await?
        .into_inner();
    assert_eq!(accepted.base_offset, Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_size_limit_is_refused_whole() -> anyhow::Result<()> {
    const LIMIT: usize = 1024;
    let broker = InProcessBroker::start_adjusted(|config| {
        config.limits.max_batch_bytes = LIMIT;
        config.limits.max_record_bytes = LIMIT;
    })
    .await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, "small", 1).await?;

    // Every record is within the record limit; together they are over the batch limit.
    let value = vec![b'v'; 400];
    let records: Vec<Record> = (0..4)
        .map(|i| kafka_record(i, Some(b"k"), Some(&value), &[], T0 + i))
        .collect();
    let large = kafka_encode(&records)?;
    assert!(large.len() > LIMIT);
    let message = assert_refused(
        c.produce(produce_batch("small", 0, large.clone())).await,
        Code::InvalidArgument,
        "RECORD_TOO_LARGE",
        &[
            &format!("{} bytes", large.len()),
            &format!("limit is {LIMIT}"),
        ],
        "a batch over limits.max_batch_bytes",
    );
    assert!(message.contains("batch"), "{message}");
    assert_eq!(high_watermark(&mut c, "small", 0).await?, 0);

    // The same records in batches under the limit are taken.
    let small = kafka_encode(&records[..2])?;
    assert!(small.len() <= LIMIT);
    let produced = c
        .produce(produce_batch("small", 0, small))
        .await?
        .into_inner();
    assert_eq!(produced.base_offset, Some(0));
    assert_eq!(high_watermark(&mut c, "small", 0).await?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_subscribe_serve_whole_stored_batches() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, "t", 1).await?;
    // Three batches: offsets 0-2, 3-5, 6-8.
    for b in 0..3i64 {
        let records = (0..3)
            .map(|i| weir_record(&format!("b{b}-{i}"), 3 * b + i))
            .collect();
        c.produce(produce_records("t", 0, records)).await?;
    }
    let offsets_of = |batch: &Bytes| -> anyhow::Result<Vec<i64>> {
        Ok(kafka_decode(batch)?.iter().map(|r| r.offset).collect())
    };

    // From inside the second batch: the whole batch, its first record before the offset.
    let one = c.fetch(fetch_batches("t", 0, 4, 1)).await?.into_inner();
    assert_eq!(
        one.record_batches.len(),
        1,
        "max_bytes 1 still serves a batch"
    );
    assert_eq!(offsets_of(&one.record_batches[0])?, vec![3, 4, 5]);
    assert_eq!(one.next_offset, 6, "one past the batch served");
    assert!(one.records.is_empty());
    let rest = c.fetch(fetch_batches("t", 0, 4, 0)).await?.into_inner();
    assert_eq!(rest.record_batches.len(), 2);
    assert_eq!(rest.record_batches[0], one.record_batches[0]);
    assert_eq!(offsets_of(&rest.record_batches[1])?, vec![6, 7, 8]);
    assert_eq!(rest.next_offset, 9);
    let at_end = c.fetch(fetch_batches("t", 0, 9, 0)).await?.into_inner();
    assert!(at_end.record_batches.is_empty());
    assert_eq!(at_end.next_offset, 9);
    // Records are cut at the offset asked for.
    let records = c.fetch(fetch_records("t", 0, 4)).await?.into_inner();
    assert_eq!(
        records.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );

    // A subscription from offset 4 gets the stored batches, then each batch as it commits.
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(4)),
            }),
            record_batches: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut streamed: Vec<Bytes> = Vec::new();
    let mut next_offset = 0;
    while next_offset < 9 {
        let message = tokio::time::timeout(STREAM_WAIT, stream.message())
            .await??
            .context("the subscription ended")?;
        assert!(message.records.is_empty());
        next_offset = message.next_offset;
        streamed.extend(message.record_batches);
    }
    assert_eq!(next_offset, 9);
    assert_eq!(streamed, rest.record_batches, "the bytes Fetch serves");

    let records = kafka_records();
    let sent = kafka_encode(&records)?;
    c.produce(produce_batch("t", 0, sent.clone())).await?;
    let message = tokio::time::timeout(STREAM_WAIT, stream.message())
        .await??
        .context("the subscription ended")?;
    assert_eq!(message.record_batches.len(), 1);
    assert_eq!(message.next_offset, 13);
    assert_eq!(message.high_watermark, 13);
    let batch = &message.record_batches[0];
    assert_eq!(batch[16..], sent[16..], "stored as sent");
    assert_eq!(
        kafka_decode(batch)?
            .iter()
            .map(decoded_as_consumed)
            .collect::<Vec<_>>(),
        records
            .iter()
            .enumerate()
            .map(|(i, r)| as_consumed(r, 9 + i as u64))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// `{"status":"…"}` values, alternating `active` and `closed` from `active` at offset 0.
fn statuses(count: usize) -> Vec<pb::Record> {
    (0..count)
        .map(|i| {
            let status = if i % 2 == 0 { "active" } else { "closed" };
            pb::Record {
                value: Bytes::from(format!(r#"{{"n":{i},"status":"{status}"}}"#)),
                timestamp_ms: Some(T0 + i as i64),
                ..Default::default()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_chain_serves_its_survivors_as_batches_at_their_original_offsets()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    weir_tests::modules::register(&mut c, "field-filter").await?;
    create(&mut c, "t", 1).await?;
    // Two stored batches, offsets 0-4 and 5-9.
    let records = statuses(10);
    for batch in records.chunks(5) {
        c.produce(produce_records("t", 0, batch.to_vec())).await?;
    }
    let active = weir_tests::modules::module_ref(
        "field-filter",
        &[("field", "status"), ("value", "active")],
    );
    let expected = |offsets: &[u64]| -> Vec<(u64, Bytes)> {
        offsets
            .iter()
            .map(|&o| (o, records[o as usize].value.clone()))
            .collect()
    };
    // What `kafka-protocol` decodes from batches (CRC checked), as (offset, value).
    let decoded = |batches: &[Bytes]| -> anyhow::Result<Vec<(u64, Bytes)>> {
        let mut out = Vec::new();
        for batch in batches {
            for record in kafka_decode(batch)? {
                out.push((record.offset as u64, record.value.unwrap_or_default()));
            }
        }
        Ok(out)
    };

    let mut request = fetch_batches("t", 0, 0, 0);
    request.modules = vec![active.clone()];
    let fetched = c.fetch(request).await?.into_inner();
    assert!(fetched.records.is_empty());
    assert_eq!(
        decoded(&fetched.record_batches)?,
        expected(&[0, 2, 4, 6, 8]),
        "the survivors, at the offsets they are stored at"
    );
    assert_eq!(fetched.next_offset, 10);

    // From inside the second batch: the chain runs from the offset asked for (offset 6, an
    // active record before it, is neither run nor served) to the end of the batch.
    let mut request = fetch_batches("t", 0, 7, 0);
    request.modules = vec![active.clone()];
    let fetched = c.fetch(request).await?.into_inner();
    assert_eq!(decoded(&fetched.record_batches)?, expected(&[8]));
    assert_eq!(fetched.next_offset, 10);

    // The topic's consume chain applies to a subscription in batch form.
    c.attach_module(pb::AttachModuleRequest {
        topic: "t".into(),
        module: Some(weir_tests::modules::module_ref(
            "field-filter",
            &[("field", "status"), ("value", "closed")],
        )),
        path: pb::ModulePath::Consume as i32,
        ..Default::default()
    })
    .await?;
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(0)),
            }),
            record_batches: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut streamed = Vec::new();
    let mut next_offset = 0;
    while next_offset < 10 {
        let message = tokio::time::timeout(STREAM_WAIT, stream.message())
            .await??
            .context("the subscription ended")?;
        assert!(message.records.is_empty());
        next_offset = message.next_offset;
        streamed.extend(decoded(&message.record_batches)?);
    }
    assert_eq!(streamed, expected(&[1, 3, 5, 7, 9]));
    assert_eq!(next_offset, 10);
    Ok(())
}

/// A chain that keeps every record as it is changes nothing, so the batches are stored and
/// served as they came: the producer's bytes (another codec's, which Weir's encoder would not
/// reproduce), not the records encoded again. A batch the consume chain saw only part of (a
/// fetch from inside it) is still encoded again with the records the chain saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_that_keep_every_record_store_and_serve_the_batches_as_sent() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    weir_tests::modules::register(&mut c, "keep-all").await?;
    create(&mut c, "kept", 1).await?;
    let keep_all = weir_tests::modules::module_ref("keep-all", &[]);
    c.attach_module(pb::AttachModuleRequest {
        topic: "kept".into(),
        module: Some(keep_all.clone()),
        path: pb::ModulePath::Produce as i32,
        ..Default::default()
    })
    .await?;
    let (records, sent, produced) = produce_a_kafka_batch_after_two_records(&mut c, "kept").await?;
    assert_eq!(produced.base_offset, Some(2));
    assert!(produced.rejected.is_empty());

    let as_sent = |stored: &Bytes| {
        assert_eq!(stored.len(), sent.len());
        assert_eq!(
            stored[..8],
            2i64.to_be_bytes(),
            "the base offset is the log's"
        );
        assert_eq!(
            stored[16..],
            sent[16..],
            "CRC, attributes, producer fields and records are the producer's"
        );
    };
    // Stored as sent by the produce chain: read with no chain.
    let fetched = c.fetch(fetch_batches("kept", 0, 2, 0)).await?.into_inner();
    assert_eq!(fetched.record_batches.len(), 1);
    as_sent(&fetched.record_batches[0]);

    // Served as stored through a consume chain that keeps everything.
    let mut request = fetch_batches("kept", 0, 0, 0);
    request.modules = vec![keep_all.clone()];
    let fetched = c.fetch(request).await?.into_inner();
    assert_eq!(fetched.record_batches.len(), 2);
    as_sent(&fetched.record_batches[1]);
    assert_eq!(fetched.next_offset, 6);

    // From inside the batch: only what the chain saw (offsets 3 to 5), in a batch of its own.
    let mut request = fetch_batches("kept", 0, 3, 0);
    request.modules = vec![keep_all];
    let fetched = c.fetch(request).await?.into_inner();
    assert_eq!(fetched.record_batches.len(), 1);
    let served = kafka_decode(&fetched.record_batches[0])?;
    let offsets: Vec<i64> = served.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [3, 4, 5]);
    let values: Vec<_> = served.iter().map(|r| r.value.clone()).collect();
    let expected: Vec<_> = records[1..].iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, expected);
    assert_eq!(fetched.next_offset, 6);
    Ok(())
}

/// The data directory of storage format 1 committed with the tests: topic `orders`, two
/// partitions, written by node 1 alone.
fn format_1_fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/v1-data-dir"))
}

/// What the fixture holds, per partition: `(offset, key, value)`.
fn format_1_contents() -> [Vec<(u64, Option<String>, String)>; 2] {
    let keyed = |pairs: &[(&str, &str)]| -> Vec<(u64, Option<String>, String)> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (i as u64, Some((*k).to_owned()), (*v).to_owned()))
            .collect()
    };
    let zero = keyed(&[
        ("k3", "value-3"),
        ("k4", "value-4"),
        ("k3", "value-8"),
        ("k4", "value-9"),
        ("k3", "value-13"),
        ("k4", "value-14"),
        ("k3", "value-18"),
        ("k4", "value-19"),
    ]);
    let mut one = keyed(&[
        ("k1", "value-1"),
        ("k2", "value-2"),
        ("k0", "value-5"),
        ("k1", "value-6"),
        ("k2", "value-7"),
        ("k0", "value-10"),
        ("k1", "value-11"),
        ("k2", "value-12"),
        ("k0", "value-15"),
        ("k1", "value-16"),
        ("k2", "value-17"),
        ("k0", "value-20"),
    ]);
    for value in 1..=5u64 {
        one.push((11 + value, None, value.to_string()));
    }
    [zero, one]
}

async fn contents(
    c: &mut RawClient,
    topic: &str,
    partition: u32,
) -> anyhow::Result<Vec<(u64, Option<String>, String)>> {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    Ok(fetch_all(c, topic, partition)
        .await?
        .iter()
        .map(|r| (r.offset, r.key.as_ref().map(text), text(&r.value)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_directory_is_converted_and_serves_every_record() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("data");
    std::fs::create_dir(&dir)?;
    for name in ["controller.redb", "partitions.redb"] {
        std::fs::copy(format_1_fixture().join(name), dir.join(name))
            .with_context(|| format!("copying the fixture's {name}"))?;
    }
    let mut expected = format_1_contents();
    assert_eq!(expected[0].len(), 8);
    assert_eq!(expected[1].len(), 17);

    // The fixture's node is node 1 alone, which is what the test configuration runs as.
    let config = weir_tests::test_config(&dir);
    assert_eq!(config.node_id, 1);
    assert!(config.peers.is_empty());
    let broker = InProcessBroker::start_with(config).await?;
    let mut c = broker.raw_client().await?;
    for partition in 0..2u32 {
        let p = partition as usize;
        assert_eq!(
            contents(&mut c, "orders", partition).await?,
            expected[p],
            "orders/{partition}"
        );
        assert_eq!(
            high_watermark(&mut c, "orders", partition).await?,
            expected[p].len() as u64
        );
        // The converted batches are Kafka batches another codec reads, at the same offsets.
        let batches = c
            .fetch(fetch_batches("orders", partition, 0, 0))
            .await?
            .into_inner()
            .record_batches;
        let mut decoded = Vec::new();
        for batch in &batches {
            decoded.extend(kafka_decode(batch)?);
        }
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            decoded
                .iter()
                .map(|r| (
                    r.offset as u64,
                    r.key.as_ref().map(text),
                    r.value.as_ref().map(text).unwrap_or_default()
                ))
                .collect::<Vec<_>>(),
            expected[p]
        );
    }

    // New records continue the offsets.
    for (partition, next) in [(0u32, 8u64), (1, 17)] {
        let value = format!("after-{partition}");
        let produced = c
            .produce(produce_records(
                "orders",
                partition,
                vec![pb::Record {
                    key: Some(Bytes::from_static(b"new")),
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                }],
            ))
            .await?
            .into_inner();
        assert_eq!(produced.base_offset, Some(next));
        expected[partition as usize].push((next, Some("new".into()), value));
    }
    broker.stop().await;

    // The converted directory opens as it is and still serves everything.
    let broker = InProcessBroker::start_in(&dir).await?;
    let mut c = broker.raw_client().await?;
    for partition in 0..2u32 {
        assert_eq!(
            contents(&mut c, "orders", partition).await?,
            expected[partition as usize],
            "orders/{partition} after a restart"
        );
    }
    broker.stop().await;
    Ok(())
}
