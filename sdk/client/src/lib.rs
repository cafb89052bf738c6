//! Weir's Rust client: admin, produce and consume over the `weir.v1` gRPC API.
//!
//! This crate is the application-facing side of the broker's contract. Its public types are plain
//! Rust structs ([`TopicInfo`], [`ProducerRecord`], [`ConsumedRecord`], ...), not the generated
//! protobuf messages, so applications do not depend on the wire layout; the conversions live here.
//! It never depends on broker crates.
//!
//! One [`Client`] holds one HTTP/2 connection to one broker; it is cheap to clone and every clone
//! shares the connection, so a single client can serve many tasks. Requests go to the broker the
//! client was connected to; partition-aware routing, batching producers and consumer groups are
//! built on top of this layer.
//!
//! Errors are [`ClientError`]s. Broker errors carry the stable, machine-readable reason the broker
//! puts in the status details ([`ClientError::reason`], e.g. `UNKNOWN_TOPIC`); branch on it, or on
//! [`ClientError::is_retriable`], never on the human-readable message.
//!
//! # Example
//!
//! ```no_run
//! use futures::StreamExt;
//! use weir_client::{Acks, Client, FetchSpec, ProducerRecord, StartAt, TopicSpec};
//!
//! # async fn run() -> Result<(), weir_client::ClientError> {
//! let client = Client::connect("127.0.0.1:7070").await?;
//! client.create_topic(TopicSpec::new("orders", 3)).await?;
//!
//! let records = vec![
//!     ProducerRecord::new("first").with_key("customer-7"),
//!     ProducerRecord::new("second").with_header("source", "example"),
//! ];
//! let outcome = client.produce("orders", Some(0), records, Acks::All).await?;
//! println!("stored at offset {:?} of partition {}", outcome.base_offset, outcome.partition);
//!
//! // One request: what is there now, waiting up to a second for something to arrive.
//! let fetched = client
//!     .fetch(FetchSpec::new("orders", 0, 0).with_max_wait_ms(1_000))
//!     .await?;
//! for record in &fetched.records {
//!     println!("{}: {:?}", record.offset, record.value);
//! }
//!
//! // A stream that tails the partition from its current end.
//! let mut tail = client.subscribe("orders", 0, StartAt::Latest).await?;
//! while let Some(record) = tail.next().await {
//!     let record = record?;
//!     println!("{}: {:?}", record.offset, record.value);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
mod consume;
mod error;
mod produce;

pub use admin::{ClusterInfo, NodeInfo, PartitionInfo, TopicInfo, TopicSpec, TopicSummary};
pub use client::{Client, MAX_MESSAGE_BYTES};
pub use consume::{
    ConsumedRecord, FetchSpec, Fetched, ListedOffset, OffsetSpec, RecordStream, StartAt,
};
pub use error::{AddressError, ClientError};
pub use produce::{Acks, ParseAcksError, ProduceOutcome, ProducerRecord, RejectedRecord};

/// Bytes of a record's key, value and headers: its payload size, excluding framing.
fn payload_len(
    key: Option<&bytes::Bytes>,
    value: &bytes::Bytes,
    headers: &[(String, bytes::Bytes)],
) -> usize {
    key.map_or(0, bytes::Bytes::len)
        + value.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}
