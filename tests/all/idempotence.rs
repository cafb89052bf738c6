//! Idempotent producers (Kafka's KIP-98) end to end: a retry of one of a producer's last five
//! batches gets the original offsets and stores nothing; a gap in the sequence, a fenced epoch,
//! a producer id never issued and idempotence without acknowledgements are refused and store
//! nothing; the producer state survives a graceful restart, a SIGKILL and leader failovers in a
//! three-node cluster; and a batch whose records a produce chain drops still takes its sequence
//! numbers (and its dead letters are not sent again on a retry).
//!
//! Batches are sent both ways the API offers: as a Kafka record batch whose header carries the
//! producer id, epoch and base sequence (`record_batch`), and as `records` with `producer`.
//! Every test checks what the partition holds afterwards (high watermark and every record),
//! not only what the broker answered.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tonic::{Code, Status};
use weir_proto::error::reason_of;
use weir_proto::v1 as pb;
use weir_tests::modules::{module_ref, register};
use weir_tests::{BrokerProcess, InProcessBroker, NodeId, ProcessCluster, RawClient, eventually};
use weir_types::{BatchEncoder, BatchLimits, ProducerStamp, Record};

/// How long a restart, an election or a catch-up may take before a test fails. Generous: this
/// bounds a hang, it does not measure speed.
const GENEROUS: Duration = Duration::from_secs(30);

/// How long one produce attempt in a cluster may take: without an answer its outcome is unknown,
/// which these tests treat as a failure.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a produce answer says: `(base_offset, record_count, duplicate)`.
type Answer = (Option<u64>, u32, bool);

/// Answer of a first write of `count` records stored from `base`.
fn stored_at(base: u64, count: u32) -> Answer {
    (Some(base), count, false)
}

/// Answer of a retry of a batch of `count` records stored from `base`.
fn duplicate_of(base: u64, count: u32) -> Answer {
    (Some(base), count, true)
}

fn answer(response: &pb::ProduceResponse) -> Answer {
    (
        response.base_offset,
        response.record_count,
        response.duplicate,
    )
}

/// The reason of a refused produce; panics if it was accepted or has no reason.
#[track_caller]
fn refusal(result: Result<pb::ProduceResponse, Status>) -> (Code, String) {
    match result {
        Ok(response) => panic!("the produce was accepted: {response:?}"),
        Err(status) => {
            let reason = reason_of(&status)
                .unwrap_or_else(|| panic!("a refusal without a reason: {status:?}"));
            (status.code(), reason)
        }
    }
}

/// `tag-0`, `tag-1`, … `tag-(count-1)`.
fn values(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i}")).collect()
}

/// A Kafka record batch of `values`, its header stamped with the producer's id, epoch and base
/// sequence, as an idempotent client encodes it.
fn stamped_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[String]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            key: None,
            value: Bytes::from(v.clone()),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            tombstone: false,
        })
        .collect();
    BatchEncoder::new(BatchLimits::default())
        .with_producer(Some(ProducerStamp {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
        }))
        .encode(&records)
        .expect("small records always encode")
        .bytes()
        .clone()
}

fn batch_request(topic: &str, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        record_batch: batch,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

fn records_request(
    topic: &str,
    values: &[String],
    producer: pb::ProducerSequence,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records: values
            .iter()
            .map(|v| pb::Record {
                value: Bytes::from(v.clone()),
                ..Default::default()
            })
            .collect(),
        acks: pb::Acks::All as i32,
        producer: Some(producer),
        ..Default::default()
    }
}

fn sequence(producer_id: i64, producer_epoch: i32, base_sequence: i32) -> pb::ProducerSequence {
    pb::ProducerSequence {
        producer_id,
        producer_epoch,
        base_sequence,
    }
}

async fn send(
    client: &RawClient,
    request: pb::ProduceRequest,
) -> Result<pb::ProduceResponse, Status> {
    Ok(client.clone().produce(request).await?.into_inner())
}

/// A refusal that says nothing was written and the leader may take the request soon: no leader
/// yet, a leader still applying its predecessor's entries, or a node that is down.
fn transient(status: &Status) -> bool {
    match reason_of(status).as_deref() {
        Some(reason) => matches!(reason, "NOT_LEADER" | "UNAVAILABLE"),
        None => status.code() == Code::Unavailable,
    }
}

/// Sends `request` until the broker behind `client` answers other than [`transient`]ly.
///
/// A partition leader judges idempotent batches only once it has applied an entry of its own
/// term, and refuses them with `UNAVAILABLE` until then, where a plain produce waits: so each
/// test's first idempotent write to a new partition, and the first after a restart, goes
/// through here.
async fn send_when_ready(
    client: &RawClient,
    request: pb::ProduceRequest,
) -> anyhow::Result<Result<pb::ProduceResponse, Status>> {
    eventually(GENEROUS, "the partition to take produce requests", || {
        let request = request.clone();
        async move {
            match send(client, request).await {
                Err(status) if transient(&status) => None,
                other => Some(other),
            }
        }
    })
    .await
}

async fn init_producer_id(client: &RawClient) -> anyhow::Result<i64> {
    let issued = client
        .clone()
        .init_producer_id(pb::InitProducerIdRequest {})
        .await?
        .into_inner();
    assert_eq!(
        issued.producer_epoch, 0,
        "a new producer id starts at epoch 0"
    );
    Ok(issued.producer_id)
}

async fn create_topic(
    client: &RawClient,
    topic: &str,
    replication_factor: u32,
) -> anyhow::Result<()> {
    client
        .clone()
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions: 1,
            replication_factor,
            configs: HashMap::new(),
        })
        .await?;
    Ok(())
}

/// Every committed record of partition 0 of `topic`, as `(offset, value)`; offsets are checked
/// to be dense.
async fn stored(client: &RawClient, topic: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let records = weir_tests::fetch_all(&mut client.clone(), topic, 0).await?;
    Ok(records
        .into_iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect())
}

async fn high_watermark(client: &RawClient, topic: &str) -> anyhow::Result<u64> {
    let described = client
        .clone()
        .describe_topic(pb::DescribeTopicRequest { name: topic.into() })
        .await?
        .into_inner()
        .topic
        .ok_or_else(|| anyhow::anyhow!("DescribeTopic describes no topic"))?;
    Ok(described.partitions[0].high_watermark)
}

/// `(offset, value)` of `values` stored one after another from offset 0.
fn laid_out(values: &[String]) -> Vec<(u64, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_the_last_five_batches_get_their_offsets_and_store_nothing() -> anyhow::Result<()>
{
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "retries", 1).await?;
    // The batch form through the SDK, as an application sends it.
    let client = weir_client::Client::connect(broker.url()).await?;
    let producer = client.init_producer_id().await?;
    assert_eq!(producer.epoch, 0);

    // Seven batches of two records: sequences 0, 2, …, 12 at offsets 0, 2, …, 12.
    let batches: Vec<(Vec<String>, Bytes)> = (0..7)
        .map(|i| {
            let values = values(&format!("b{i}"), 2);
            let batch = stamped_batch(producer.id, 0, 2 * i, &values);
            (values, batch)
        })
        .collect();
    for (i, (_, batch)) in batches.iter().enumerate() {
        let outcome = eventually(
            GENEROUS,
            "the new partition to take idempotent writes",
            || {
                let client = client.clone();
                let batch = batch.clone();
                async move {
                    match client
                        .produce_batch("retries", 0, batch, weir_client::Acks::All)
                        .await
                    {
                        Err(e) if i == 0 && e.reason() == Some("UNAVAILABLE") => None,
                        other => Some(other),
                    }
                }
            },
        )
        .await??;
        assert_eq!(
            (outcome.base_offset, outcome.record_count, outcome.duplicate),
            stored_at(2 * i as u64, 2),
            "batch {i}"
        );
    }
    // A retry of each of the last five, newest first: the original offsets, nothing stored.
    for i in (2..7).rev() {
        let outcome = client
            .produce_batch("retries", 0, batches[i].1.clone(), weir_client::Acks::All)
            .await?;
        assert_eq!(
            (outcome.base_offset, outcome.record_count, outcome.duplicate),
            duplicate_of(2 * i as u64, 2),
            "retry of batch {i}"
        );
        assert_eq!(outcome.partition, 0);
    }
    // The sixth from last is no longer remembered, but its sequence comes before those that
    // are, and the partition takes a producer's batches only in sequence: it was stored. The
    // retry is told so (Kafka's DUPLICATE_SEQUENCE_NUMBER), without the offsets, and nothing is
    // stored twice. (Answering OUT_OF_ORDER_SEQUENCE made a producer that had kept sending
    // behind a retried batch start a new epoch and store that batch again: found by the
    // nemesis.)
    for i in [1, 0] {
        let refused = client
            .produce_batch("retries", 0, batches[i].1.clone(), weir_client::Acks::All)
            .await
            .expect_err("a retry older than the last five batches has no offsets to answer with");
        assert_eq!(
            refused.reason(),
            Some("DUPLICATE_SEQUENCE_NUMBER"),
            "retry of batch {i}: {refused:?}"
        );
    }
    // A batch past the sequence, though, is out of order.
    let ahead = stamped_batch(producer.id, 0, 20, &values("ahead", 1));
    let refused = client
        .produce_batch("retries", 0, ahead, weir_client::Acks::All)
        .await
        .expect_err("a gap in the sequence");
    assert_eq!(
        refused.reason(),
        Some("OUT_OF_ORDER_SEQUENCE"),
        "{refused:?}"
    );
    assert_eq!(high_watermark(&raw, "retries").await?, 14);
    let all: Vec<String> = batches.iter().flat_map(|(v, _)| v.clone()).collect();
    assert_eq!(stored(&raw, "retries").await?, laid_out(&all));

    // The same through `records` + `producer`, with a producer of its own.
    let other = init_producer_id(&raw).await?;
    assert_ne!(other, producer.id);
    let first = values("r0", 3);
    let response = send(
        &raw,
        records_request("retries", &first, sequence(other, 0, 0)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(14, 3));
    let retried = send(
        &raw,
        records_request("retries", &first, sequence(other, 0, 0)),
    )
    .await?;
    assert_eq!(answer(&retried), duplicate_of(14, 3));
    let next = values("r1", 1);
    let response = send(
        &raw,
        records_request("retries", &next, sequence(other, 0, 3)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(17, 1));
    // The first producer's sequence is its own: its next batch still continues at 14.
    let batch = stamped_batch(producer.id, 0, 14, &values("b7", 1));
    let response = send(&raw, batch_request("retries", batch)).await?;
    assert_eq!(answer(&response), stored_at(18, 1));

    assert_eq!(high_watermark(&raw, "retries").await?, 19);
    let mut expected = all;
    expected.extend(first);
    expected.extend(next);
    expected.extend(values("b7", 1));
    assert_eq!(stored(&raw, "retries").await?, laid_out(&expected));
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_a_batch_are_stored_once() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "copies", 1).await?;
    // Another producer's write first, so that the leader judges idempotent batches.
    let other = init_producer_id(&raw).await?;
    let warm_up = records_request("copies", &values("w", 1), sequence(other, 0, 0));
    assert_eq!(
        answer(&send_when_ready(&raw, warm_up).await??),
        stored_at(0, 1)
    );
    let producer = init_producer_id(&raw).await?;
    let batch = stamped_batch(producer, 0, 0, &values("c", 3));
    // Eight copies at once: whichever the leader judges first is stored; the others find it
    // in raft (and wait for its answer) or already applied.
    let copies = futures::future::join_all(
        (0..8).map(|_| send(&raw, batch_request("copies", batch.clone()))),
    )
    .await;
    let answers: Vec<Answer> = copies
        .into_iter()
        .map(|r| r.map(|response| answer(&response)))
        .collect::<Result<_, _>>()?;
    let originals = answers.iter().filter(|a| !a.2).count();
    assert_eq!(originals, 1, "exactly one copy is stored: {answers:?}");
    for a in &answers {
        assert_eq!((a.0, a.1), (Some(1), 3), "every copy gets the same offsets");
    }
    assert_eq!(high_watermark(&raw, "copies").await?, 4);
    let expected = [values("w", 1), values("c", 3)].concat();
    assert_eq!(stored(&raw, "copies").await?, laid_out(&expected));
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_is_refused_and_the_next_sequence_lands_contiguously() -> anyhow::Result<()>
{
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "gaps", 1).await?;
    let producer = init_producer_id(&raw).await?;

    let first = values("a", 3);
    let response = send_when_ready(
        &raw,
        batch_request("gaps", stamped_batch(producer, 0, 0, &first)),
    )
    .await??;
    assert_eq!(answer(&response), stored_at(0, 3));
    // Sequence 3 is next; 5 means the batch with 3 and 4 is missing.
    let gap = send(
        &raw,
        batch_request("gaps", stamped_batch(producer, 0, 5, &values("gap", 2))),
    )
    .await;
    let (code, reason) = refusal(gap);
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE")
    );
    // The same through `records` + `producer`, one short of the next sequence (a batch the
    // partition never stored, not a retry).
    let (code, reason) = refusal(
        send(
            &raw,
            records_request("gaps", &values("gap", 1), sequence(producer, 0, 2)),
        )
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE")
    );
    assert_eq!(
        high_watermark(&raw, "gaps").await?,
        3,
        "a refused batch stored records"
    );

    let second = values("b", 2);
    let response = send(
        &raw,
        records_request("gaps", &second, sequence(producer, 0, 3)),
    )
    .await?;
    assert_eq!(
        answer(&response),
        stored_at(3, 2),
        "no offset was taken by the gaps"
    );
    let third = values("c", 1);
    let response = send(
        &raw,
        batch_request("gaps", stamped_batch(producer, 0, 5, &third)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(5, 1));

    assert_eq!(high_watermark(&raw, "gaps").await?, 6);
    let expected: Vec<String> = [first, second, third].concat();
    assert_eq!(stored(&raw, "gaps").await?, laid_out(&expected));
    broker.stop().await;
    Ok(())
}

/// A producer's requests travel on separate HTTP/2 streams, so its second batch can reach the
/// leader first. The leader holds a batch ahead of its producer's sequence for the batches
/// before it: both are stored in sequence order. (Taking an unknown producer's first batch at
/// any sequence, as Kafka does over its ordered connections, stored them the other way round.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_overtakes_the_one_before_it_waits_for_it() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "overtaken", 1).await?;
    let producer = init_producer_id(&raw).await?;
    // The partition is ready for idempotent batches (a plain one waits for its leader).
    send_when_ready(
        &raw,
        records_request("overtaken", &["ready".to_owned()], sequence(producer, 0, 0)),
    )
    .await??;

    let (first, second) = (values("first", 3), values("second", 2));
    let overtaking = tokio::spawn({
        let (raw, batch) = (raw.clone(), stamped_batch(producer, 0, 4, &second));
        async move { send(&raw, batch_request("overtaken", batch)).await }
    });
    // The second batch is held at the leader; now the first arrives.
    let metrics = broker
        .metrics_addr()
        .context("the test broker serves metrics")?;
    eventually(GENEROUS, "the second batch to be held", || async {
        let text = weir_tests::scrape_metrics(metrics).await.ok()?;
        text.contains(r#"weir_partition_held_batches_total{topic="overtaken",partition="0"} 1"#)
            .then_some(())
    })
    .await?;
    let response = send(
        &raw,
        batch_request("overtaken", stamped_batch(producer, 0, 1, &first)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(1, 3));
    let response = overtaking.await??;
    assert_eq!(answer(&response), stored_at(4, 2), "stored after the first");
    let expected: Vec<String> = [vec!["ready".to_owned()], first, second].concat();
    assert_eq!(stored(&raw, "overtaken").await?, laid_out(&expected));

    // A batch ahead of its sequence with nothing before it on the way is refused after the
    // hold, storing nothing.
    let ahead = send(
        &raw,
        batch_request("overtaken", stamped_batch(producer, 0, 9, &values("x", 1))),
    )
    .await;
    let (code, reason) = refusal(ahead);
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE")
    );
    // And an unknown producer's first batch must start at sequence 0.
    let newcomer = init_producer_id(&raw).await?;
    let (_, reason) = refusal(
        send(
            &raw,
            batch_request("overtaken", stamped_batch(newcomer, 0, 7, &values("y", 1))),
        )
        .await,
    );
    assert_eq!(reason, "OUT_OF_ORDER_SEQUENCE");
    assert_eq!(high_watermark(&raw, "overtaken").await?, 6);
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_epoch_fences_the_older_ones_and_starts_at_sequence_zero() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "epochs", 1).await?;
    let producer = init_producer_id(&raw).await?;
    let batch = |epoch: i16, sequence: i32, values: &[String]| {
        batch_request("epochs", stamped_batch(producer, epoch, sequence, values))
    };

    let epoch1 = values("e1", 1);
    let response = send_when_ready(&raw, batch(1, 0, &epoch1)).await??;
    assert_eq!(answer(&response), stored_at(0, 1));
    // Epoch 0 is older than what the partition has seen: fenced, whatever its sequence, and
    // not taken for a retry of epoch 1's batch 0.
    for sequence in [1, 0] {
        let (code, reason) = refusal(send(&raw, batch(0, sequence, &values("e0", 1))).await);
        assert_eq!(
            (code, reason.as_str()),
            (Code::FailedPrecondition, "INVALID_PRODUCER_EPOCH"),
            "epoch 0, sequence {sequence}"
        );
    }
    assert_eq!(high_watermark(&raw, "epochs").await?, 1);
    // A new epoch starts its sequence again: 5 is out of order, in both forms.
    let (code, reason) = refusal(send(&raw, batch(2, 5, &values("e2", 1))).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE")
    );
    let (code, reason) = refusal(
        send(
            &raw,
            records_request("epochs", &values("e2", 1), sequence(producer, 2, 5)),
        )
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE")
    );
    assert_eq!(high_watermark(&raw, "epochs").await?, 1);

    let epoch2 = values("e2", 2);
    let response = send(&raw, batch(2, 0, &epoch2)).await?;
    assert_eq!(answer(&response), stored_at(1, 2));
    // Epoch 1 is fenced now, its retries included.
    for (sequence, values) in [(1, values("e1-late", 1)), (0, epoch1.clone())] {
        let (code, reason) = refusal(send(&raw, batch(1, sequence, &values)).await);
        assert_eq!(
            (code, reason.as_str()),
            (Code::FailedPrecondition, "INVALID_PRODUCER_EPOCH"),
            "epoch 1, sequence {sequence}"
        );
    }
    let retried = send(&raw, batch(2, 0, &epoch2)).await?;
    assert_eq!(answer(&retried), duplicate_of(1, 2));

    assert_eq!(high_watermark(&raw, "epochs").await?, 3);
    let expected: Vec<String> = [epoch1, epoch2].concat();
    assert_eq!(stored(&raw, "epochs").await?, laid_out(&expected));
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unissued_producer_ids_and_unacknowledged_idempotence_are_refused() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "ids", 1).await?;

    let first = init_producer_id(&raw).await?;
    let second = init_producer_id(&raw).await?;
    assert_ne!(first, second, "InitProducerId issued one id twice");
    assert!(first >= 0 && second >= 0);

    let never_issued = 1_000_000;
    assert!(never_issued > first.max(second));
    let (code, reason) = refusal(
        send(
            &raw,
            batch_request("ids", stamped_batch(never_issued, 0, 0, &values("x", 1))),
        )
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "UNKNOWN_PRODUCER_ID")
    );
    let (code, reason) = refusal(
        send(
            &raw,
            records_request("ids", &values("x", 1), sequence(never_issued, 0, 0)),
        )
        .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "UNKNOWN_PRODUCER_ID")
    );
    // An idempotent producer must hear whether its batch was stored.
    let mut unacknowledged = records_request("ids", &values("x", 1), sequence(first, 0, 0));
    unacknowledged.acks = pb::Acks::None as i32;
    let (code, reason) = refusal(send(&raw, unacknowledged).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_ARGUMENT")
    );
    let mut unacknowledged = batch_request("ids", stamped_batch(first, 0, 0, &values("x", 1)));
    unacknowledged.acks = pb::Acks::None as i32;
    let (code, reason) = refusal(send(&raw, unacknowledged).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_ARGUMENT")
    );
    assert_eq!(
        high_watermark(&raw, "ids").await?,
        0,
        "a refused batch stored records"
    );
    assert_eq!(stored(&raw, "ids").await?, Vec::new());

    // Ids are never reused, across a restart too.
    let (dir, temp) = broker.stop().await;
    let broker = InProcessBroker::start_in(&dir).await?;
    let raw = broker.raw_client().await?;
    let third = init_producer_id(&raw).await?;
    assert!(
        third > first.max(second),
        "the id issued after a restart ({third}) is not above those issued before ({first}, {second})"
    );
    // An id issued before the restart is still known; one never issued still is not.
    let response = send_when_ready(
        &raw,
        records_request("ids", &values("first", 1), sequence(first, 0, 0)),
    )
    .await??;
    assert_eq!(answer(&response), stored_at(0, 1));
    let (_, reason) = refusal(
        send(
            &raw,
            records_request("ids", &values("x", 1), sequence(never_issued, 0, 0)),
        )
        .await,
    );
    assert_eq!(reason, "UNKNOWN_PRODUCER_ID");
    assert_eq!(stored(&raw, "ids").await?, laid_out(&values("first", 1)));
    broker.stop().await;
    drop(temp);
    Ok(())
}

/// A node takes producer ids from the controller a thousand at a time (one controller write
/// per block, as Kafka's brokers do) and hands them out one by one, to concurrent callers too;
/// a restart forgets the rest of its block and takes a new one, so no id is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_come_from_blocks_and_a_restart_takes_a_new_one() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let raw = raw.clone();
            tokio::spawn(async move { init_producer_id(&raw).await })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await??);
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..20).collect::<Vec<i64>>(),
        "the first block's first ids"
    );

    let (dir, temp) = broker.stop().await;
    let broker = InProcessBroker::start_in(&dir).await?;
    let raw = broker.raw_client().await?;
    assert_eq!(
        init_producer_id(&raw).await?,
        1000,
        "the next block's first id"
    );
    assert_eq!(init_producer_id(&raw).await?, 1001);
    broker.stop().await;
    drop(temp);
    Ok(())
}

/// Writes batches 0..3 of one producer (two records each, sequences 0, 2, 4) to partition 0 of
/// `topic`; returns the producer id and the batches.
async fn write_three_batches(
    client: &RawClient,
    topic: &str,
) -> anyhow::Result<(i64, Vec<(Vec<String>, Bytes)>)> {
    let producer = init_producer_id(client).await?;
    let mut batches = Vec::new();
    for i in 0..3 {
        let values = values(&format!("b{i}"), 2);
        let batch = stamped_batch(producer, 0, 2 * i, &values);
        let response = send_when_ready(client, batch_request(topic, batch.clone())).await??;
        assert_eq!(answer(&response), stored_at(2 * i as u64, 2), "batch {i}");
        batches.push((values, batch));
    }
    Ok((producer, batches))
}

/// After a restart of the only broker: retries of batches written before it are recognised, a
/// gap is still a gap (an unknown producer could start anywhere), and the sequence continues.
async fn assert_producer_state_survived(
    client: &RawClient,
    topic: &str,
    producer: i64,
    batches: &[(Vec<String>, Bytes)],
) -> anyhow::Result<()> {
    let retried = send_when_ready(client, batch_request(topic, batches[2].1.clone())).await??;
    assert_eq!(
        answer(&retried),
        duplicate_of(4, 2),
        "retry of the last batch"
    );
    let retried = send(client, batch_request(topic, batches[0].1.clone())).await?;
    assert_eq!(
        answer(&retried),
        duplicate_of(0, 2),
        "retry of the first batch"
    );
    let (_, reason) = refusal(
        send(
            client,
            batch_request(topic, stamped_batch(producer, 0, 10, &values("gap", 1))),
        )
        .await,
    );
    assert_eq!(reason, "OUT_OF_ORDER_SEQUENCE");
    let next = values("b3", 2);
    let response = send(
        client,
        records_request(topic, &next, sequence(producer, 0, 6)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(6, 2));
    assert_eq!(high_watermark(client, topic).await?, 8);
    let mut expected: Vec<String> = batches.iter().flat_map(|(v, _)| v.clone()).collect();
    expected.extend(next);
    assert_eq!(stored(client, topic).await?, laid_out(&expected));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_what_the_partition_knows_of_its_producers() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "restart", 1).await?;
    let (producer, batches) = write_three_batches(&raw, "restart").await?;
    let (dir, temp) = broker.stop().await;

    let broker = InProcessBroker::start_in(&dir).await?;
    let raw = broker.raw_client().await?;
    assert_producer_state_survived(&raw, "restart", producer, &batches).await?;
    broker.stop().await;
    drop(temp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_keeps_what_the_partition_knows_of_its_producers() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let weir = Path::new(crate::WEIR);
    let broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    create_topic(&raw, "crash", 1).await?;
    let (producer, batches) = write_three_batches(&raw, "crash").await?;
    // No shutdown code runs: what the partition knows must come from disk and the log.
    broker.kill()?;

    let broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    assert_producer_state_survived(&raw, "crash", producer, &batches).await?;
    broker.kill()?;
    Ok(())
}

/// Crash cycles in [`a_retry_right_after_each_sigkill_is_still_a_duplicate`]. Each cycle kills
/// the broker right after an acknowledgement and retries that batch first thing after the
/// restart, when the broker may still be rebuilding its state: a window a single crash may
/// miss.
const CRASHES: i32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_right_after_each_sigkill_is_still_a_duplicate() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let weir = Path::new(crate::WEIR);
    let mut broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    create_topic(&raw, "crashes", 1).await?;
    let producer = init_producer_id(&raw).await?;
    let batch = |i: i32| {
        let values = values(&format!("b{i}"), 2);
        let bytes = stamped_batch(producer, 0, 2 * i, &values);
        (values, batch_request("crashes", bytes))
    };
    let (mut written, first) = batch(0);
    assert_eq!(
        answer(&send_when_ready(&raw, first).await??),
        stored_at(0, 2)
    );
    for crash in 1..=CRASHES {
        broker.kill()?;
        broker = BrokerProcess::start(weir, &data_dir)?;
        let raw = RawClient::connect(broker.url()).await?;
        let last = crash - 1;
        let retried = send_when_ready(&raw, batch(last).1).await??;
        assert_eq!(
            answer(&retried),
            duplicate_of(2 * last as u64, 2),
            "after crash {crash}: the retry of batch {last}, acknowledged before the crash"
        );
        let (values, next) = batch(crash);
        let response = send(&raw, next).await?;
        assert_eq!(
            answer(&response),
            stored_at(2 * crash as u64, 2),
            "after crash {crash}: batch {crash}"
        );
        written.extend(values);
    }
    broker.kill()?;
    let broker = BrokerProcess::start(weir, &data_dir)?;
    let raw = RawClient::connect(broker.url()).await?;
    assert_eq!(stored(&raw, "crashes").await?, laid_out(&written));
    broker.kill()?;
    Ok(())
}

/// Sends `request` to the leader of partition 0 of `topic` that the running nodes agree on,
/// again while the answer is [`transient`]; returns the answering node and its answer.
async fn send_to_leader(
    cluster: &ProcessCluster,
    topic: &str,
    request: pb::ProduceRequest,
) -> anyhow::Result<(NodeId, Result<pb::ProduceResponse, Status>)> {
    eventually(GENEROUS, "the partition leader to answer", || {
        let request = request.clone();
        async move {
            let leader = cluster.leader_of(topic, 0).await.ok()?;
            let client = cluster.client(leader).ok()?;
            let answered = match tokio::time::timeout(ATTEMPT_TIMEOUT, send(&client, request)).await
            {
                Ok(answered) => answered,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "node {leader} did not answer within {ATTEMPT_TIMEOUT:?}"
                ))),
            };
            match answered {
                Err(status) if transient(&status) => None,
                other => Some((leader, other)),
            }
        }
    })
    .await
}

/// Values of every record node `id` serves of partition 0 of `topic`, checking that offsets are
/// dense from 0, once it has committed up to `high_watermark`.
async fn values_on(
    cluster: &ProcessCluster,
    id: NodeId,
    topic: &str,
    high_watermark: u64,
) -> anyhow::Result<Vec<String>> {
    let reached = cluster
        .wait_for_high_watermark(id, topic, 0, high_watermark)
        .await?;
    assert_eq!(
        reached, high_watermark,
        "node {id} holds more than was written"
    );
    let records = cluster.read_partition(id, topic, 0).await?;
    Ok(records
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_recognises_retries_of_its_predecessors_batches() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let topic = "failover";
    let mut cluster = ProcessCluster::start(Path::new(crate::WEIR), 3).await?;
    let admin = cluster.client(1)?;
    create_topic(&admin, topic, 3).await?;
    let producer = init_producer_id(&admin).await?;

    // Batches 0..=4 of three records each (sequence 3i, offset 3i), acknowledged by one leader.
    let batch = |i: i32| {
        let values = values(&format!("b{i}"), 3);
        let bytes = stamped_batch(producer, 0, 3 * i, &values);
        (values, batch_request(topic, bytes))
    };
    let mut written: Vec<String> = Vec::new();
    let mut first_leader = None;
    for i in 0..=4 {
        let (values, request) = batch(i);
        let (node, answered) = send_to_leader(&cluster, topic, request).await?;
        assert_eq!(answer(&answered?), stored_at(3 * i as u64, 3), "batch {i}");
        assert_eq!(
            *first_leader.get_or_insert(node),
            node,
            "the leader changed"
        );
        written.extend(values);
    }
    let first_leader = first_leader.expect("batches were written");

    // Batch 4 was acknowledged; the leader dies. Its successor knows batch 4 (a quorum had
    // applied it), so the producer's retry, and one of an older batch, store nothing.
    cluster.kill(first_leader)?;
    let (second_leader, retried) = send_to_leader(&cluster, topic, batch(4).1).await?;
    assert_ne!(second_leader, first_leader);
    assert_eq!(answer(&retried?), duplicate_of(12, 3), "retry of batch 4");
    let (_, retried) = send_to_leader(&cluster, topic, batch(2).1).await?;
    assert_eq!(answer(&retried?), duplicate_of(6, 3), "retry of batch 2");
    let (_, gap) = send_to_leader(
        &cluster,
        topic,
        batch_request(topic, stamped_batch(producer, 0, 30, &values("gap", 1))),
    )
    .await?;
    assert_eq!(refusal(gap).1, "OUT_OF_ORDER_SEQUENCE");
    let (values5, request) = batch(5);
    let (_, answered) = send_to_leader(&cluster, topic, request).await?;
    assert_eq!(
        answer(&answered?),
        stored_at(15, 3),
        "batch 5 follows batch 4"
    );
    written.extend(values5);
    assert_eq!(
        values_on(&cluster, second_leader, topic, 18).await?,
        written
    );

    // The old leader comes back, catches up and holds each record once as well.
    cluster.restart(first_leader).await?;
    assert_eq!(values_on(&cluster, first_leader, topic, 18).await?, written);

    // A second failover: the third leader (maybe the restarted one) knows batch 5.
    cluster.kill(second_leader)?;
    let (third_leader, retried) = send_to_leader(&cluster, topic, batch(5).1).await?;
    assert_ne!(third_leader, second_leader);
    assert_eq!(answer(&retried?), duplicate_of(15, 3), "retry of batch 5");
    let (values6, request) = batch(6);
    let (_, answered) = send_to_leader(&cluster, topic, request).await?;
    assert_eq!(
        answer(&answered?),
        stored_at(18, 3),
        "batch 6 follows batch 5"
    );
    written.extend(values6);
    for node in cluster.node_ids() {
        if cluster.is_running(node) {
            assert_eq!(
                values_on(&cluster, node, topic, 21).await?,
                written,
                "node {node}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_produce_chain_drops_entirely_still_takes_its_sequence() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "filtered", 1).await?;
    register(&mut raw.clone(), "contains").await?;
    raw.clone()
        .attach_module(pb::AttachModuleRequest {
            topic: "filtered".into(),
            module: Some(module_ref("contains", &[("needle", "keep")])),
            path: pb::ModulePath::Produce as i32,
            on_reject: pb::RejectPolicy::Drop as i32,
            dead_letter_topic: String::new(),
        })
        .await?;
    let producer = init_producer_id(&raw).await?;
    let dropped = vec!["drop-0".to_owned(), "drop-1".to_owned()];
    let batch_a = stamped_batch(producer, 0, 0, &dropped);

    // A: every record dropped, nothing stored, but sequences 0 and 1 are used.
    let response = send_when_ready(&raw, batch_request("filtered", batch_a.clone())).await??;
    assert_eq!(answer(&response), (None, 0, false), "batch A");
    assert_eq!(high_watermark(&raw, "filtered").await?, 0);
    // B continues at sequence 2: the partition counts what the producer sent.
    let sent_b = vec![
        "keep-0".to_owned(),
        "drop-2".to_owned(),
        "keep-1".to_owned(),
    ];
    let batch_b = stamped_batch(producer, 0, 2, &sent_b);
    let response = send(&raw, batch_request("filtered", batch_b.clone())).await?;
    assert_eq!(answer(&response), stored_at(0, 2), "batch B");
    // Retries of both are recognised, the one that stored nothing included.
    let retried = send(&raw, batch_request("filtered", batch_a)).await?;
    assert_eq!(answer(&retried), (None, 0, true), "retry of batch A");
    assert!(
        retried.rejected.is_empty(),
        "a retry repeats no rejected list"
    );
    let retried = send(&raw, batch_request("filtered", batch_b)).await?;
    assert_eq!(answer(&retried), duplicate_of(0, 2), "retry of batch B");
    // And the sequence goes on after B's three records.
    let sent_c = vec!["keep-2".to_owned()];
    let response = send(
        &raw,
        records_request("filtered", &sent_c, sequence(producer, 0, 5)),
    )
    .await?;
    assert_eq!(answer(&response), stored_at(2, 1), "batch C");

    assert_eq!(high_watermark(&raw, "filtered").await?, 3);
    assert_eq!(
        stored(&raw, "filtered").await?,
        laid_out(&values("keep", 3))
    );
    broker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sends_no_dead_letters_again() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "orders", 1).await?;
    create_topic(&raw, "orders-dlq", 1).await?;
    register(&mut raw.clone(), "json-validate").await?;
    raw.clone()
        .attach_module(pb::AttachModuleRequest {
            topic: "orders".into(),
            module: Some(module_ref("json-validate", &[("required", "id")])),
            path: pb::ModulePath::Produce as i32,
            on_reject: pb::RejectPolicy::DeadLetter as i32,
            dead_letter_topic: "orders-dlq".into(),
        })
        .await?;
    let producer = init_producer_id(&raw).await?;
    let sent = vec![
        r#"{"id":"a"}"#.to_owned(),
        "not json".to_owned(),
        r#"{"id":"c"}"#.to_owned(),
    ];
    let batch = stamped_batch(producer, 0, 0, &sent);
    let response = send_when_ready(&raw, batch_request("orders", batch.clone())).await??;
    assert_eq!(answer(&response), stored_at(0, 2));
    assert_eq!(response.rejected.len(), 1, "{:?}", response.rejected);
    let retried = send(&raw, batch_request("orders", batch)).await?;
    assert_eq!(answer(&retried), duplicate_of(0, 2));

    assert_eq!(
        stored(&raw, "orders").await?,
        vec![(0, sent[0].clone()), (1, sent[2].clone())]
    );
    assert_eq!(
        stored(&raw, "orders-dlq").await?,
        vec![(0, sent[1].clone())],
        "the retry sent its dead letter again"
    );
    broker.stop().await;
    Ok(())
}
