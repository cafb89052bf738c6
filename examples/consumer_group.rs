//! A consumer group of three members sharing a six-partition topic, fed by a batching producer.
//!
//! Shows: the `Producer` (keys choose partitions, records are batched per partition), three
//! `Consumer`s joining one group and getting two partitions each, committing after
//! processing, and one member leaving so the other two take over its partitions from its
//! committed offsets.
//!
//! ```sh
//! WEIR_BROKER=127.0.0.1:7070 cargo run -p weir-examples --example consumer_group
//! ```
//!
//! Without `WEIR_BROKER`, the example starts a broker of its own in a temporary directory.

mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use weir_client::{
    Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicSpec,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The embedded broker, if any, lives until the end of `main`.
    let (address, embedded) = broker::from_env().await?;
    let client = Client::connect(address.as_str()).await?;
    let topic = format!("clicks-{}", std::process::id());
    let group = format!("analytics-{}", std::process::id());
    client
        .create_topic(TopicSpec::new(topic.as_str(), 6))
        .await?;

    // 600 records keyed by user: each user's clicks land in one partition, in order.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..600 {
        let record = ProducerRecord::new(format!("click {i}")).with_key(format!("user-{}", i % 25));
        deliveries.push(producer.enqueue(&topic, record).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    println!("produced 600 records");

    let mut config = ConsumerConfig::with_group(group.as_str());
    config.offset_reset = OffsetReset::Earliest;
    config.auto_commit = false;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut consumer = Consumer::new(client.clone(), config.clone());
        consumer.subscribe(&[topic.as_str()]).await?;
        members.push(consumer);
    }

    // Each member applies its assignment inside poll; process, then commit.
    let mut seen = BTreeSet::new();
    while seen.len() < 600 {
        for (i, member) in members.iter_mut().enumerate() {
            for record in member.poll().await? {
                seen.insert((record.partition, record.record.offset));
                if record.record.offset == 0 {
                    println!("member {i} reads partition {}", record.partition);
                }
            }
            member.commit().await?;
        }
    }
    for (i, member) in members.iter().enumerate() {
        println!("member {i} owns {:?}", member.assignment());
    }

    // One member leaves: its partitions go to the others, which continue from its commits.
    if let Some(leaving) = members.pop() {
        leaving.close().await?;
    }
    while members.iter().map(|m| m.assignment().len()).sum::<usize>() < 6 {
        for member in &mut members {
            // Nothing new was produced: only the hand-over happens.
            assert!(
                member.poll().await?.is_empty(),
                "committed records came again"
            );
        }
    }
    for (i, member) in members.iter().enumerate() {
        println!("after the leave, member {i} owns {:?}", member.assignment());
    }
    println!("{}", format_describe(&client.describe_group(&group).await?));
    for member in members {
        member.close().await?;
    }
    if let Some(embedded) = embedded {
        embedded.shutdown().await;
    }
    Ok(())
}

fn format_describe(info: &weir_client::GroupInfo) -> String {
    let lag: u64 = info.partitions.iter().filter_map(|p| p.lag).sum();
    format!(
        "group {}: {} ({} members, total lag {lag})",
        info.group,
        info.state,
        info.members.len()
    )
}
