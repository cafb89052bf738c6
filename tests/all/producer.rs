//! The idempotent `Producer`'s guarantee, against a real broker: each record sent is stored once,
//! in send order per partition, when acknowledgements are lost and batches are sent again.

use std::time::Duration;

use anyhow::Context;
use weir_client::{
    Client, ClientError, Delivery, FetchSpec, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata, TopicSpec,
};
use weir_tests::{InProcessBroker, LinkProxy, eventually};

/// Generous bound for a commit to show; never a timing assertion.
const SETTLE: Duration = Duration::from_secs(30);

async fn values(client: &Client, topic: &str) -> anyhow::Result<Vec<String>> {
    values_of(client, topic, 0).await
}

async fn values_of(client: &Client, topic: &str, partition: u32) -> anyhow::Result<Vec<String>> {
    let fetched = client.fetch(FetchSpec::new(topic, partition, 0)).await?;
    Ok(fetched
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect())
}

/// A producer whose answers pass through `proxy`, which can swallow them.
async fn producer_through(proxy: &LinkProxy, idempotence: bool) -> anyhow::Result<Producer> {
    let client = Client::connect(proxy.addr().to_string()).await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        idempotence,
        retry_backoff: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    Ok(Producer::new(client, config))
}

/// Sends `value` while its acknowledgement is swallowed, waits until the broker stored it,
/// then breaks the connection, so the producer sends the batch again.
async fn send_with_lost_acknowledgement(
    producer: &Producer,
    proxy: &LinkProxy,
    direct: &Client,
    topic: &str,
    value: &str,
    stored_count: u64,
) -> anyhow::Result<RecordMetadata> {
    proxy.mute();
    let delivery = producer
        .enqueue(topic, ProducerRecord::new(value.to_owned()))
        .await?;
    eventually(SETTLE, "the batch to be stored", || async {
        let end = direct
            .list_offsets(topic, 0, weir_client::OffsetSpec::Latest)
            .await
            .ok()?;
        (end.offset == Some(stored_count)).then_some(())
    })
    .await?;
    // The answer never came; the connection breaks; the producer sends the batch again.
    proxy.unmute();
    proxy.reset_connections();
    Ok(delivery.await?)
}

/// Two lost acknowledgements in a row: each batch is stored once and reported at its offset,
/// and the records after them continue the log without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_acknowledgement_is_lost_is_stored_once() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let direct = Client::connect(broker.url()).await?;
    direct.create_topic(TopicSpec::new("payments", 1)).await?;
    let proxy = LinkProxy::start(broker.addr()).await?;
    let producer = producer_through(&proxy, true).await?;

    let first = producer.send("payments", ProducerRecord::new("a")).await?;
    assert_eq!(first.offset, Some(0));
    let b = send_with_lost_acknowledgement(&producer, &proxy, &direct, "payments", "b", 2).await?;
    assert_eq!(
        b.offset,
        Some(1),
        "the retry is answered with the original offset"
    );
    let c = send_with_lost_acknowledgement(&producer, &proxy, &direct, "payments", "c", 3).await?;
    assert_eq!(c.offset, Some(2));
    let d = producer.send("payments", ProducerRecord::new("d")).await?;
    assert_eq!(d.offset, Some(3), "no gap after the retries");
    assert_eq!(values(&direct, "payments").await?, ["a", "b", "c", "d"]);
    Ok(())
}

/// The same without idempotence stores the retried batch twice: what the test above guards
/// against is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_a_lost_acknowledgement_stores_the_batch_twice() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let direct = Client::connect(broker.url()).await?;
    direct.create_topic(TopicSpec::new("payments", 1)).await?;
    let proxy = LinkProxy::start(broker.addr()).await?;
    let producer = producer_through(&proxy, false).await?;

    producer.send("payments", ProducerRecord::new("a")).await?;
    let b = send_with_lost_acknowledgement(&producer, &proxy, &direct, "payments", "b", 2).await?;
    assert_eq!(b.offset, Some(2), "the second copy's offset");
    assert_eq!(values(&direct, "payments").await?, ["a", "b", "b"]);
    Ok(())
}

/// Many batches in flight while their answers are lost: every record is stored once, in the
/// order sent, at the offset reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_when_answers_are_lost_are_stored_once_in_order() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let direct = Client::connect(broker.url()).await?;
    direct.create_topic(TopicSpec::new("orders", 1)).await?;
    let proxy = LinkProxy::start(broker.addr()).await?;
    let client = Client::connect(proxy.addr().to_string()).await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_max_records: 10,
            retry_backoff: Duration::from_millis(20),
            ..ProducerConfig::default()
        },
    );
    let value = |i: usize| format!("order-{i:03}");
    // The first record also brings the topic's metadata, before the answers are swallowed.
    let mut reported = vec![
        producer
            .send("orders", ProducerRecord::new(value(0)))
            .await?
            .offset
            .context("an offset")?,
    ];
    proxy.mute();
    let mut deliveries = Vec::new();
    for i in 1..200 {
        deliveries.push(
            producer
                .enqueue("orders", ProducerRecord::new(value(i)))
                .await?,
        );
    }
    // Some batches are stored while the answers are swallowed; then the connection breaks.
    eventually(SETTLE, "some batches to be stored", || async {
        let end = direct
            .list_offsets("orders", 0, weir_client::OffsetSpec::Latest)
            .await
            .ok()?;
        (end.offset >= Some(10)).then_some(())
    })
    .await?;
    proxy.unmute();
    proxy.reset_connections();
    for delivery in deliveries {
        reported.push(
            delivery
                .await?
                .offset
                .context("an offset for each record")?,
        );
    }
    assert_eq!(reported, (0..200).collect::<Vec<u64>>());
    assert_eq!(
        values(&direct, "orders").await?,
        (0..200).map(value).collect::<Vec<_>>()
    );
    Ok(())
}

/// A producer dropped with records still lingering sends them at once (it does not wait out
/// the linger), and every delivery taken before the drop is answered with its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_producer_sends_its_lingering_records_at_once() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("orders", 1)).await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            // Longer than any test: only a full batch or the drop sends anything.
            linger: Duration::from_secs(3600),
            batch_max_records: 3,
            ..ProducerConfig::default()
        },
    );
    let value = |i: u64| format!("order-{i}");
    let mut deliveries = Vec::new();
    for i in 0..7 {
        deliveries.push(
            producer
                .enqueue("orders", ProducerRecord::new(value(i)))
                .await?,
        );
    }
    // Two full batches went; the seventh record lingers until the drop.
    drop(producer);
    let mut offsets = Vec::new();
    for delivery in deliveries {
        let stored = tokio::time::timeout(SETTLE, delivery)
            .await
            .context("a record enqueued before the drop was never answered")??;
        assert_eq!((&*stored.topic, stored.partition), ("orders", 0));
        offsets.push(stored.offset.context("an offset")?);
    }
    assert_eq!(offsets, (0..7).collect::<Vec<u64>>());
    assert_eq!(
        values(&client, "orders").await?,
        (0..7).map(value).collect::<Vec<_>>()
    );
    Ok(())
}

/// The buffer's bytes come back as batches are answered: ten times the buffer goes through a
/// producer whose buffer holds four records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_buffer_is_reused_as_batches_are_answered() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("orders", 1)).await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_max_records: 2,
            buffer_max_bytes: 4 * 1024,
            ..ProducerConfig::default()
        },
    );
    let value = |i: u64| format!("{i:04}").repeat(256);
    let mut deliveries = Vec::new();
    for i in 0..40 {
        let enqueued = tokio::time::timeout(
            SETTLE,
            producer.enqueue("orders", ProducerRecord::new(value(i))),
        )
        .await
        .context("the buffer never had room again")??;
        deliveries.push(enqueued);
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await?.offset.context("an offset")?);
    }
    assert_eq!(offsets, (0..40).collect::<Vec<u64>>());
    assert_eq!(
        values(&client, "orders").await?,
        (0..40).map(value).collect::<Vec<_>>()
    );
    Ok(())
}

/// A record goes to the partition it names, else to its key's (Kafka's partitioner), else with
/// the other keyless records to one partition until their batch is full, then to the next; a
/// partition the topic does not have, or a topic that does not exist, is refused before
/// anything is buffered. Each delivery names its partition from the start and is answered
/// with where the record was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_to_the_partition_they_name_their_keys_or_a_sticky_one() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("orders", 3)).await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_max_records: 4,
            ..ProducerConfig::default()
        },
    );
    let refused = producer
        .enqueue("orders", ProducerRecord::new("nowhere").with_partition(3))
        .await
        .expect_err("the topic has no partition 3");
    assert!(
        matches!(&refused, ClientError::InvalidArgument(m) if m.contains("topic 'orders' has no partition 3 (it has 3)")),
        "{refused}"
    );
    let unknown = producer
        .enqueue("no-such-topic", ProducerRecord::new("lost"))
        .await
        .expect_err("the topic does not exist");
    assert_eq!(unknown.reason(), Some("UNKNOWN_TOPIC"), "{unknown}");

    // Keyless first: a named or keyed record that fills a batch moves the sticky partition on.
    let mut sent: Vec<(String, Delivery)> = Vec::new();
    let mut keyless = Vec::new();
    for i in 0..8 {
        let delivery = producer
            .enqueue("orders", ProducerRecord::new(format!("keyless-{i}")))
            .await?;
        keyless.push(delivery.partition());
        sent.push((format!("keyless-{i}"), delivery));
    }
    let first = keyless[0];
    let next = (first + 1) % 3;
    assert_eq!(keyless, [[first; 4], [next; 4]].concat(), "four per batch");
    let named = producer
        .enqueue("orders", ProducerRecord::new("named").with_partition(2))
        .await?;
    assert_eq!(named.partition(), 2);
    sent.push(("named".into(), named));
    let keyed = producer
        .enqueue(
            "orders",
            ProducerRecord::new("keyed").with_key("customer-7"),
        )
        .await?;
    assert_eq!(
        keyed.partition(),
        weir_client::partition_for_key(b"customer-7", 3)
    );
    sent.push(("keyed".into(), keyed));

    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (value, delivery) in sent {
        let partition = delivery.partition();
        let stored = tokio::time::timeout(SETTLE, delivery)
            .await
            .context("a record was never answered")??;
        assert_eq!(stored.partition, partition, "{value}");
        expected[partition as usize].push(value);
    }
    for (partition, values) in (0..).zip(&expected) {
        let stored = values_of(&client, "orders", partition).await?;
        assert_eq!(&stored, values, "partition {partition}");
    }
    Ok(())
}
