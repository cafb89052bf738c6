//! Tombstones (records with a null value) through a real broker: produced as gRPC records,
//! through weir-client's `Producer`, as a batch Weir encodes and as a batch another Kafka codec
//! encodes; read back by fetch, subscribe and record batches apart from empty values; refused
//! with a value, and by a topic's produce chain, storing nothing; passed by consume chains in
//! offset order; and the command line's `--tombstone` and how `weir consume` prints them.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use weir_client::codec::{BatchEncoder, BatchLimits, EncodedBatch, Record};
use weir_client::{
    Acks, Client, ConsumedRecord, FetchSpec, Producer, ProducerConfig, ProducerRecord, StartAt,
    SubscribeSpec,
};
use weir_proto::error::reason_of;
use weir_proto::v1 as pb;
use weir_tests::modules::{module_ref as module, register};
use weir_tests::{InProcessBroker, RawClient};

use crate::cli::{stderr, stdout, weir};
use crate::record_batches::{kafka_decode, kafka_encode, kafka_record};

/// How long one message of a subscription may take to arrive.
const STREAM_WAIT: Duration = Duration::from_secs(20);

/// What a reader should see of one record: offset, key, tombstone, value.
type Seen = (u64, Option<String>, bool, String);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn seen_pb(records: &[pb::ConsumedRecord]) -> Vec<Seen> {
    records
        .iter()
        .map(|r| {
            let key = r.key.as_deref().map(text);
            (r.offset, key, r.tombstone, text(&r.value))
        })
        .collect()
}

fn seen_client(records: &[ConsumedRecord]) -> Vec<Seen> {
    records
        .iter()
        .map(|r| {
            let key = r.key.as_deref().map(text);
            (r.offset, key, r.tombstone, text(&r.value))
        })
        .collect()
}

fn seen_batches(batches: &[Bytes]) -> anyhow::Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for batch in batches {
        let (_, records) = EncodedBatch::verify_and_decode(batch.clone())?;
        seen.extend(records.into_iter().map(|(offset, r)| {
            let key = r.key.as_deref().map(text);
            (offset.0, key, r.tombstone, text(&r.value))
        }));
    }
    Ok(seen)
}

fn seen(offset: u64, key: &str, value: Option<&str>) -> Seen {
    (
        offset,
        Some(key.to_owned()),
        value.is_none(),
        value.unwrap_or_default().to_owned(),
    )
}

/// A gRPC record with `key` and `value`; `None` is a tombstone.
fn pb_record(key: &str, value: Option<&str>) -> pb::Record {
    pb::Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Bytes::copy_from_slice(value.unwrap_or_default().as_bytes()),
        tombstone: value.is_none(),
        timestamp_ms: Some(1_000),
        ..pb::Record::default()
    }
}

fn produce_request(topic: &str, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

/// The first `count` records of a weir-client subscription, each within [`STREAM_WAIT`].
async fn first_records<T, E>(
    stream: &mut (impl futures::Stream<Item = Result<T, E>> + Unpin),
    count: usize,
) -> anyhow::Result<Vec<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let record = tokio::time::timeout(STREAM_WAIT, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the subscription ended"))??;
        got.push(record);
    }
    Ok(got)
}

async fn high_watermark(client: &mut RawClient, topic: &str) -> anyhow::Result<u64> {
    let offset = client
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            spec: Some(pb::list_offsets_request::Spec::Latest(true)),
        })
        .await?
        .into_inner()
        .offset;
    offset.ok_or_else(|| anyhow::anyhow!("no high watermark for {topic}"))
}

fn fetch_request(topic: &str, modules: Vec<pb::ModuleRef>, batches: bool) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        modules,
        record_batches: batches,
        ..Default::default()
    }
}

fn subscribe_request(
    topic: &str,
    modules: Vec<pb::ModuleRef>,
    batches: bool,
) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        topic: topic.into(),
        partition: 0,
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Earliest(true)),
        }),
        modules,
        record_batches: batches,
        ..Default::default()
    }
}

/// Subscribes from the beginning and gathers what arrives until the stream has read through
/// offset `end` (exclusive).
async fn subscribed(
    client: &mut RawClient,
    request: pb::SubscribeRequest,
    end: u64,
) -> anyhow::Result<Vec<Seen>> {
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut got = Vec::new();
    loop {
        let message = tokio::time::timeout(STREAM_WAIT, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the subscription ended"))??;
        got.extend(seen_pb(&message.records));
        got.extend(seen_batches(&message.record_batches)?);
        if message.next_offset >= end {
            return Ok(got);
        }
    }
}

/// Every produce path stores a tombstone as a null value, and every read path gives it back as
/// a tombstone, apart from an empty value, at its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_and_empty_values_stay_apart_on_every_produce_and_read_path()
-> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut raw = broker.raw_client().await?;
    let client = Client::connect(broker.url()).await?;
    weir_tests::create_topic(&raw, "users", 1, 0, &[]).await?;

    // gRPC records: offsets 0-2.
    let answer = raw
        .produce(produce_request(
            "users",
            vec![
                pb_record("a", None),
                pb_record("b", Some("")),
                pb_record("c", Some("x")),
            ],
        ))
        .await?
        .into_inner();
    assert_eq!((answer.base_offset, answer.record_count), (Some(0), 3));

    // weir-client's Producer, idempotent by default: offsets 3-4.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let tombstone = producer
        .send("users", ProducerRecord::tombstone("d").with_partition(0))
        .await?;
    assert_eq!(tombstone.offset, Some(3));
    let empty = producer
        .send(
            "users",
            ProducerRecord::new("").with_key("e").with_partition(0),
        )
        .await?;
    assert_eq!(empty.offset, Some(4));

    // A batch Weir's codec encodes, sent as it is: offsets 5-6.
    let batch = BatchEncoder::new(BatchLimits::default()).encode(&[
        Record {
            key: Some(Bytes::from_static(b"f")),
            tombstone: true,
            timestamp_ms: 1_000,
            ..Record::default()
        },
        Record {
            key: Some(Bytes::from_static(b"g")),
            timestamp_ms: 1_000,
            ..Record::default()
        },
    ])?;
    let answer = client
        .produce_batch("users", 0, batch.into_bytes(), Acks::All)
        .await?;
    assert_eq!(answer.base_offset, Some(5));

    // A batch another Kafka codec encodes, value length -1 and 0: offsets 7-8.
    let kafka = kafka_encode(&[
        kafka_record(0, Some(b"h"), None, &[], 1_000),
        kafka_record(1, Some(b"i"), Some(b""), &[], 1_000),
    ])?;
    let answer = client.produce_batch("users", 0, kafka, Acks::All).await?;
    assert_eq!(answer.base_offset, Some(7));

    let expected = vec![
        seen(0, "a", None),
        seen(1, "b", Some("")),
        seen(2, "c", Some("x")),
        seen(3, "d", None),
        seen(4, "e", Some("")),
        seen(5, "f", None),
        seen(6, "g", Some("")),
        seen(7, "h", None),
        seen(8, "i", Some("")),
    ];
    assert_eq!(high_watermark(&mut raw, "users").await?, 9);

    // Fetch, as records and as the stored batches (which another Kafka codec reads as null
    // values too).
    let fetched = raw
        .fetch(fetch_request("users", Vec::new(), false))
        .await?
        .into_inner();
    assert_eq!(seen_pb(&fetched.records), expected);
    let fetched = raw
        .fetch(fetch_request("users", Vec::new(), true))
        .await?
        .into_inner();
    assert_eq!(seen_batches(&fetched.record_batches)?, expected);
    let mut nulls = Vec::new();
    for batch in &fetched.record_batches {
        for record in kafka_decode(batch)? {
            nulls.push((record.offset as u64, record.value.is_none()));
        }
    }
    let expected_nulls: Vec<(u64, bool)> = expected.iter().map(|s| (s.0, s.2)).collect();
    assert_eq!(nulls, expected_nulls);

    // Subscribe, as records and as batches.
    let got = subscribed(&mut raw, subscribe_request("users", Vec::new(), false), 9).await?;
    assert_eq!(got, expected);
    let got = subscribed(&mut raw, subscribe_request("users", Vec::new(), true), 9).await?;
    assert_eq!(got, expected);

    // weir-client's fetch and subscription (which read record batches).
    let fetched = client.fetch(FetchSpec::new("users", 0, 0)).await?;
    assert_eq!(seen_client(&fetched.records), expected);
    let mut stream = client.subscribe("users", 0, StartAt::Earliest).await?;
    let got = first_records(&mut stream, expected.len()).await?;
    assert_eq!(seen_client(&got), expected);
    broker.stop().await;
    Ok(())
}

/// A tombstone that carries a value is refused, naming the record, and nothing of its request
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_with_a_value_is_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut raw = broker.raw_client().await?;
    weir_tests::create_topic(&raw, "users", 1, 0, &[]).await?;
    let mut with_value = pb_record("b", Some("not empty"));
    with_value.tombstone = true;
    let refused = raw
        .produce(produce_request(
            "users",
            vec![pb_record("a", Some("fine")), with_value],
        ))
        .await
        .expect_err("a tombstone with a value is refused");
    assert_eq!(reason_of(&refused).as_deref(), Some("INVALID_RECORD"));
    assert!(
        refused.message().contains("record 1") && refused.message().contains("tombstone"),
        "{}",
        refused.message()
    );
    assert_eq!(high_watermark(&mut raw, "users").await?, 0);

    // weir-client's Producer refuses it before batching it with anything.
    let client = Client::connect(broker.url()).await?;
    let producer = Producer::new(client, ProducerConfig::default());
    let mut record = ProducerRecord::tombstone("b").with_partition(0);
    record.value = Bytes::from_static(b"v");
    let err = producer
        .enqueue("users", record)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("tombstone"), "{err}");
    let stored = producer
        .send("users", ProducerRecord::tombstone("b").with_partition(0))
        .await?;
    assert_eq!(stored.offset, Some(0));
    assert_eq!(high_watermark(&mut raw, "users").await?, 1);
    broker.stop().await;
    Ok(())
}

/// A topic with a produce chain refuses a tombstone (the module ABI has no null value) with
/// INVALID_RECORD naming it, as records and as a batch, and stores nothing of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_chain_refuses_tombstones_and_stores_nothing() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut raw = broker.raw_client().await?;
    register(&mut raw, "keep-all").await?;
    weir_tests::create_topic(&raw, "users", 1, 0, &[]).await?;
    raw.attach_module(pb::AttachModuleRequest {
        topic: "users".into(),
        module: Some(module("keep-all", &[])),
        path: pb::ModulePath::Produce as i32,
        on_reject: pb::RejectPolicy::Unspecified as i32,
        dead_letter_topic: String::new(),
    })
    .await?;

    let refused = raw
        .produce(produce_request(
            "users",
            vec![pb_record("a", Some("x")), pb_record("b", None)],
        ))
        .await
        .expect_err("a produce chain takes no tombstone");
    assert_eq!(reason_of(&refused).as_deref(), Some("INVALID_RECORD"));
    assert!(
        refused.message().contains("record 1") && refused.message().contains("produce chain"),
        "{}",
        refused.message()
    );
    assert_eq!(high_watermark(&mut raw, "users").await?, 0);

    let client = Client::connect(broker.url()).await?;
    let batch = BatchEncoder::new(BatchLimits::default()).encode(&[Record {
        key: Some(Bytes::from_static(b"c")),
        tombstone: true,
        timestamp_ms: 1_000,
        ..Record::default()
    }])?;
    let err = client
        .produce_batch("users", 0, batch.into_bytes(), Acks::All)
        .await
        .expect_err("a produce chain takes no tombstone");
    assert_eq!(err.reason(), Some("INVALID_RECORD"), "{err}");
    assert!(err.to_string().contains("record 0"), "{err}");
    assert_eq!(high_watermark(&mut raw, "users").await?, 0);

    // The chain still takes records with values, empty ones included.
    let answer = raw
        .produce(produce_request(
            "users",
            vec![pb_record("a", Some("x")), pb_record("b", Some(""))],
        ))
        .await?
        .into_inner();
    assert_eq!(answer.base_offset, Some(0));
    let fetched = raw
        .fetch(fetch_request("users", Vec::new(), false))
        .await?
        .into_inner();
    assert_eq!(
        seen_pb(&fetched.records),
        [seen(0, "a", Some("x")), seen(1, "b", Some(""))]
    );
    broker.stop().await;
    Ok(())
}

/// Consume chains hand tombstones to no module: a filter that drops everything still lets them
/// through, and they come among the survivors in offset order, on every read path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_chains_pass_tombstones_by_in_offset_order() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut raw = broker.raw_client().await?;
    for name in ["contains", "uppercase"] {
        register(&mut raw, name).await?;
    }
    weir_tests::create_topic(&raw, "users", 1, 0, &[]).await?;
    raw.produce(produce_request(
        "users",
        vec![
            pb_record("a", Some("keep one")),
            pb_record("b", None),
            pb_record("c", Some("drop")),
            pb_record("d", Some("")),
            pb_record("e", None),
            pb_record("f", Some("keep two")),
        ],
    ))
    .await?;

    let nothing = vec![module("contains", &[("needle", "matches nothing")])];
    let tombstones_only = vec![seen(1, "b", None), seen(4, "e", None)];
    let fetched = raw
        .fetch(fetch_request("users", nothing.clone(), false))
        .await?
        .into_inner();
    assert_eq!(seen_pb(&fetched.records), tombstones_only);
    assert_eq!(fetched.next_offset, 6);
    let fetched = raw
        .fetch(fetch_request("users", nothing.clone(), true))
        .await?
        .into_inner();
    assert_eq!(seen_batches(&fetched.record_batches)?, tombstones_only);
    let got = subscribed(
        &mut raw,
        subscribe_request("users", nothing.clone(), false),
        6,
    )
    .await?;
    assert_eq!(got, tombstones_only);

    // A filter and a map: survivors changed, tombstones unchanged, in offset order.
    let chain = vec![
        module("contains", &[("needle", "keep")]),
        module("uppercase", &[]),
    ];
    let expected = vec![
        seen(0, "a", Some("KEEP ONE")),
        seen(1, "b", None),
        seen(4, "e", None),
        seen(5, "f", Some("KEEP TWO")),
    ];
    let fetched = raw
        .fetch(fetch_request("users", chain.clone(), false))
        .await?
        .into_inner();
    assert_eq!(seen_pb(&fetched.records), expected);
    let fetched = raw
        .fetch(fetch_request("users", chain.clone(), true))
        .await?
        .into_inner();
    assert_eq!(seen_batches(&fetched.record_batches)?, expected);
    let got = subscribed(&mut raw, subscribe_request("users", chain, true), 6).await?;
    assert_eq!(got, expected);

    // The topic's own consume chain, read with weir-client.
    raw.attach_module(pb::AttachModuleRequest {
        topic: "users".into(),
        module: Some(nothing[0].clone()),
        path: pb::ModulePath::Consume as i32,
        on_reject: pb::RejectPolicy::Unspecified as i32,
        dead_letter_topic: String::new(),
    })
    .await?;
    let client = Client::connect(broker.url()).await?;
    let fetched = client.fetch(FetchSpec::new("users", 0, 0)).await?;
    assert_eq!(seen_client(&fetched.records), tombstones_only);
    let mut stream = client
        .subscribe_with(SubscribeSpec::new("users", 0, StartAt::Earliest))
        .await?;
    let got = first_records(&mut stream, tombstones_only.len()).await?;
    assert_eq!(seen_client(&got), tombstones_only);
    broker.stop().await;
    Ok(())
}

/// `weir produce --tombstone` turns empty values into tombstones; `weir consume` prints a
/// tombstone as NULL (and %S as -1), an empty value as nothing (and 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_produces_tombstones_and_prints_them_apart_from_empty_values() -> anyhow::Result<()>
{
    let broker = InProcessBroker::start().await?;
    let mut raw = broker.raw_client().await?;
    weir_tests::create_topic(&raw, "users", 1, 0, &[]).await?;
    let produced = weir(
        &broker,
        &["produce", "users", "-K", ":", "--tombstone"],
        "a:1\nb:\n",
    )?;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let produced = weir(&broker, &["produce", "users", "-K", ":"], "c:\n")?;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let fetched = raw
        .fetch(fetch_request("users", Vec::new(), false))
        .await?
        .into_inner();
    assert_eq!(
        seen_pb(&fetched.records),
        [
            seen(0, "a", Some("1")),
            seen(1, "b", None),
            seen(2, "c", Some(""))
        ]
    );

    let consumed = weir(
        &broker,
        &[
            "consume",
            "users",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
        "",
    )?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), "1\nNULL\n\n");
    let consumed = weir(
        &broker,
        &[
            "consume",
            "users",
            "--from-beginning",
            "--max-messages",
            "3",
            "--format",
            "%o %k %S [%v]\\n",
        ],
        "",
    )?;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    assert_eq!(stdout(&consumed), "0 a 1 [1]\n1 b -1 [NULL]\n2 c 0 []\n");
    broker.stop().await;
    Ok(())
}
