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

use futures::StreamExt;
use weir_client::{Acks, Client, FetchSpec, ProducerRecord, StartAt, TopicSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Keep the embedded broker (if any) alive until the end of `main`.
    let (address, _embedded) = match std::env::var("WEIR_BROKER") {
        Ok(address) => (address, None),
        Err(_) => {
            let dir = tempfile::tempdir()?;
            let config = weir_server::BrokerConfig {
                listen: "127.0.0.1:0".parse()?,
                metrics_listen: None,
                data_dir: dir.path().to_path_buf(),
                ..Default::default()
            };
            let broker = weir_server::Broker::start(config).await?;
            (broker.local_addr().to_string(), Some((broker, dir)))
        }
    };
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
    if let Some((broker, _dir)) = _embedded {
        broker.shutdown().await;
    }
    Ok(())
}
