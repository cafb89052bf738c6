//! A group consumer that is restarted continues exactly after its last committed offset.
//!
//! Shows: a `Consumer` in group `resume-example` (auto-commit off) reads records and commits,
//! then reads a few more without committing and stops without warning, like a crashed process;
//! the broker restarts on the same data directory; a new `Consumer` in the same group starts at
//! the committed offset. It gets the records that were read but not committed once more, then
//! the new ones, and none of the committed ones: at-least-once delivery, with the redelivery
//! bounded by the last commit.
//!
//! ```sh
//! cargo run -p weir-examples --example resume_after_restart
//! ```
//!
//! Without `WEIR_BROKER`, the example starts a broker of its own in a temporary directory and
//! restarts it (same address, same data directory) between the two consumers. Against a broker
//! you started, only the consumer restarts, and the new one waits out the crashed member's
//! session timeout (3 s here) before the partition is handed to it:
//!
//! ```sh
//! WEIR_BROKER=127.0.0.1:7070 cargo run -p weir-examples --example resume_after_restart
//! ```

mod broker;

use std::time::Duration;

use tokio::time::Instant;
use weir_client::{
    Acks, Client, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, ProducerRecord,
    TopicPartition, TopicSpec,
};

/// The consumer group both consumers belong to.
const GROUP: &str = "resume-example";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (address, mut embedded) = broker::from_env().await?;

    let client = Client::connect(address.as_str()).await?;
    let topic = format!("resume-example-{}", std::process::id());
    client
        .create_topic(TopicSpec::new(topic.as_str(), 1))
        .await?;
    let partition = TopicPartition::new(topic.as_str(), 0);

    // First run of the application: process and commit the first batch, then crash halfway
    // through the second. The records are produced in batches so that the commit points are
    // exact: `poll` returns whatever its fetch read, and `commit` covers all of it.
    produce(&client, &topic, 0..6).await?;
    let mut consumer = Consumer::new(client.clone(), consumer_config());
    consumer.subscribe(&[topic.as_str()]).await?;

    let processed = poll_records(&mut consumer, 6).await?;
    print_records("consumer 1 processed", &processed);
    consumer.commit().await?;
    let committed = committed_offset(&client, &partition).await?;
    anyhow::ensure!(
        committed == Some(6),
        "the commit should store offset 6, found {committed:?}"
    );
    println!("consumer 1 committed: the group continues at offset 6");

    produce(&client, &topic, 6..10).await?;
    let uncommitted = poll_records(&mut consumer, 4).await?;
    print_records("consumer 1 processed, not committed", &uncommitted);
    // A crash: no commit, no LeaveGroup. Dropping the consumer stops its heartbeats.
    drop(consumer);
    drop(client);
    println!("consumer 1 stopped without committing offsets 6..=9");

    // Restart the broker too, when it is ours: committed offsets are replicated and fsynced
    // in the controller, so they survive; group membership lives in memory and does not.
    if let Some(broker::Embedded { broker, dir }) = embedded.take() {
        let listen = broker.local_addr();
        broker.shutdown().await;
        println!("broker stopped");
        let broker = broker::start(dir.path(), listen).await?;
        println!(
            "broker restarted on {} with the same data directory",
            broker.local_addr()
        );
        embedded = Some(broker::Embedded { broker, dir });
    }

    // Second run of the application: a new client and a new consumer in the same group.
    let client = Client::connect(address.as_str()).await?;
    let committed = committed_offset(&client, &partition).await?;
    println!("after the restart, group {GROUP} has committed offset {committed:?}");
    anyhow::ensure!(
        committed == Some(6),
        "the committed offset should be 6 (after the first batch), found {committed:?}"
    );
    produce(&client, &topic, 10..12).await?;

    let mut consumer = Consumer::new(client.clone(), consumer_config());
    consumer.subscribe(&[topic.as_str()]).await?;
    let resumed = poll_records(&mut consumer, 6).await?;
    print_records("consumer 2 resumed with", &resumed);
    let offsets: Vec<u64> = resumed.iter().map(|r| r.record.offset).collect();
    anyhow::ensure!(
        offsets == (6..12).collect::<Vec<u64>>(),
        "the resumed consumer should get offsets 6..=11 (the uncommitted tail, then the new \
         records), got {offsets:?}"
    );
    anyhow::ensure!(
        resumed
            .iter()
            .all(|r| r.record.value == format!("event {}", r.record.offset)),
        "a resumed record does not hold the value produced at its offset"
    );
    consumer.commit().await?;
    let committed = committed_offset(&client, &partition).await?;
    anyhow::ensure!(
        committed == Some(12),
        "after processing everything the committed offset should be 12, found {committed:?}"
    );
    println!("consumer 2 committed: the group continues at offset 12");

    consumer.close().await?;
    // The group first: deleting the topic deletes its committed offsets, and with them the
    // (then empty) group.
    client.delete_group(GROUP).await?;
    client.delete_topic(topic.as_str()).await?;
    if let Some(embedded) = embedded {
        embedded.shutdown().await;
    }
    Ok(())
}

/// Both runs of the application use the same configuration: the same group, commits only
/// after processing.
fn consumer_config() -> ConsumerConfig {
    let mut config = ConsumerConfig::with_group(GROUP);
    config.auto_commit = false;
    // Only for a group that has never committed; here, for the first run.
    config.offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    // The crashed member holds the partition until its session expires (on a broker that is
    // not restarted); keep that short for the example.
    config.session_timeout = Duration::from_secs(3);
    config
}

/// Produces `event I` for each `I` in `range`, in one request, and checks it landed at offset
/// `range.start`.
async fn produce(client: &Client, topic: &str, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let records = range
        .clone()
        .map(|i| ProducerRecord::new(format!("event {i}")))
        .collect();
    let outcome = client.produce(topic, Some(0), records, Acks::All).await?;
    anyhow::ensure!(
        outcome.base_offset == Some(range.start),
        "expected the records at offset {}, stored at {:?}",
        range.start,
        outcome.base_offset
    );
    println!(
        "produced offsets {}..={}",
        range.start,
        range.end.saturating_sub(1)
    );
    Ok(())
}

/// Polls until at least `count` records arrived, failing after 30 s instead of hanging.
async fn poll_records(
    consumer: &mut Consumer,
    count: usize,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while records.len() < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {count} records arrived within 30 s",
            records.len()
        );
        records.extend(consumer.poll().await?);
    }
    Ok(records)
}

/// The group's committed offset for `partition`: the next offset it will consume.
async fn committed_offset(
    client: &Client,
    partition: &TopicPartition,
) -> anyhow::Result<Option<u64>> {
    let committed = client
        .committed_offsets(GROUP, std::slice::from_ref(partition))
        .await?;
    Ok(committed.first().map(|c| c.offset))
}

fn print_records(what: &str, records: &[ConsumerRecord]) {
    let values: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r.record.offset,
                String::from_utf8_lossy(&r.record.value)
            )
        })
        .collect();
    println!("{what} [{}]", values.join(", "));
}
