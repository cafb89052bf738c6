//! Produce records to a topic and read them back with the Rust client.
//!
//! Shows: creating a topic, producing keyed records with headers (acknowledged after fsync),
//! fetching them from the beginning with their offsets, and tailing the partition.
//!
//! Run against a broker you started (`cargo run --release -p weir-cli -- broker`):
//!
//! ```sh
//! WEIR_BROKER=127.0.0.1:7070 cargo run -p weir-examples --example produce_consume
//! ```
//!
//! Without `WEIR_BROKER`, the example starts a broker of its own in a temporary directory.

mod broker;

use futures::StreamExt;
use weir_client::{Acks, Client, FetchSpec, ProducerRecord, StartAt, TopicSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The embedded broker, if any, lives until the end of `main`.
    let (address, embedded) = broker::from_env().await?;
    let client = Client::connect(address.as_str()).await?;

    let topic = format!("example-{}", std::process::id());
    client
        .create_topic(TopicSpec::new(topic.as_str(), 1))
        .await?;

    let records: Vec<ProducerRecord> = ["apple", "banana", "cherry"]
        .into_iter()
        .map(|fruit| {
            ProducerRecord::new(fruit)
                .with_key(format!("key-{fruit}"))
                .with_header("source", "produce_consume example")
        })
        .collect();
    let outcome = client
        .produce(topic.as_str(), Some(0), records, Acks::All)
        .await?;
    println!("stored 3 records from offset {:?}", outcome.base_offset);

    let fetched = client.fetch(FetchSpec::new(topic.as_str(), 0, 0)).await?;
    for record in &fetched.records {
        println!(
            "offset {} key {:?} value {:?}",
            record.offset,
            record.key.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(&record.value)
        );
    }
    assert_eq!(fetched.records.len(), 3);

    // Tail the partition: the stream yields the next record as soon as it is committed.
    let mut tail = client.subscribe(topic.as_str(), 0, StartAt::Latest).await?;
    client
        .produce(
            topic.as_str(),
            Some(0),
            vec![ProducerRecord::new("date")],
            Acks::All,
        )
        .await?;
    let record = tail
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))??;
    println!(
        "tailed offset {}: {}",
        record.offset,
        String::from_utf8_lossy(&record.value)
    );
    anyhow::ensure!(
        (record.offset, record.value.as_ref()) == (3, &b"date"[..]),
        "the tail should start with the record produced after subscribing"
    );

    client.delete_topic(topic.as_str()).await?;
    if let Some(embedded) = embedded {
        embedded.shutdown().await;
    }
    Ok(())
}
