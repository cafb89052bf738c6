//! Weir's Rust client: admin, produce and consume over the `weir.v1` gRPC API.
//!
//! This crate is the application-facing side of the broker's contract. Its public types are plain
//! Rust structs ([`TopicInfo`], [`ProducerRecord`], [`ConsumedRecord`], ...), not the generated
//! protobuf messages, so applications do not depend on the wire layout; the conversions live here.
//! It never depends on broker crates.
//!
//! A [`Client`] is created for one bootstrap broker and holds one HTTP/2 connection per broker it
//! talks to; it is cheap to clone and every clone shares the connections, so a single client can
//! serve many tasks. Batching producers and consumer groups are built on top of this layer.
//!
//! Errors are [`ClientError`]s. Broker errors carry the stable, machine-readable reason the broker
//! puts in the status details ([`ClientError::reason`], e.g. `UNKNOWN_TOPIC`); branch on it, or on
//! [`ClientError::is_retriable`], never on the human-readable message.
//!
//! # Routing
//!
//! In a cluster, each partition has a leader node. Requests about one partition
//! ([`Client::produce`] to a given partition, [`Client::fetch`], [`Client::list_offsets`],
//! [`Client::subscribe`]) go to the partition's leader when the client knows it, and to the
//! bootstrap broker otherwise. A broker that cannot serve the request answers `NOT_LEADER`,
//! naming the leader's address when it knows it; the client then remembers that address for the
//! partition and sends the request there at once, following at most 3 such hints per call. So
//! the first request about a partition may take one extra round trip, and later ones go straight
//! to the leader, as with Kafka clients' metadata-driven routing.
//!
//! When the client cannot follow (no address in the answer, the hop limit reached, or the
//! remembered leader unreachable), the call fails with that error, which
//! [`ClientError::is_retriable`] counts as retriable; an unusable entry is forgotten first, so
//! the caller's retry (after a backoff, while leadership settles) starts again from the
//! bootstrap broker. A produce answered `NOT_LEADER` was not stored, so following the hint never
//! duplicates records. Requests about the cluster or a whole topic (create, describe, delete,
//! list, describe cluster), the module registry and attachments, and [`Client::produce`] without
//! a partition always go to the bootstrap broker. [`Client::cached_leader`] tells where a partition's requests go.
//!
//! A client connected to a list of brokers (`Client::connect("a:7070,b:7070,c:7070")`, Kafka's
//! `bootstrap.servers`) uses the first that answers as its bootstrap broker and moves on to the
//! next of the list after a transport failure there (refused, unreachable, cut off): the request
//! that met the failure fails, retriable, and the retry goes to the next broker. With one
//! address, a client whose bootstrap broker is down can reach no partition whose leader it
//! does not know yet; give it every node (or several) in a cluster.
//!
//! Fetches, offset look-ups and subscriptions may be served by any node holding a replica of the
//! partition; a node answers `NOT_LEADER` to them if it holds none, or if the offset asked for
//! is past what its replica has applied yet (a follower that is behind sends the reader to the
//! leader rather than calling the offset out of range).
//!
//! # Producer and consumer
//!
//! [`Client::produce`] and [`Client::fetch`] are single requests. Applications usually want the
//! layer Kafka clients offer, built on them:
//!
//! - [`Producer`]: records are buffered per partition and sent in batches (linger and batch
//!   size in [`ProducerConfig`]), keyed records go to the partition Kafka's partitioner picks
//!   ([`partition_for_key`], stable across runs and languages), retriable failures are retried
//!   with backoff until a delivery timeout, and [`Producer::send`] returns the record's offset
//!   (or [`Producer::enqueue`] a [`Delivery`] to await later). It is idempotent by default:
//!   each record sent is stored once, in send order per partition, across retries, leader
//!   failover and broker restarts (see [`Producer`]).
//! - [`Consumer`]: [`Consumer::subscribe`] joins a consumer group whose coordinator (the
//!   controller leader) assigns partitions among the live members and rebalances when members
//!   come and go; [`Consumer::assign`] consumes chosen partitions alone. [`Consumer::poll`] or
//!   [`Consumer::stream`] deliver records, [`Consumer::commit`] (or auto-commit) stores the
//!   position in the group, replicated, so a restarted consumer continues where it committed.
//!   Group administration ([`Client::describe_group`], [`Client::reset_group_offsets`], ...) is
//!   on [`Client`].
//!
//! The repository's `examples/` directory has a runnable program for each: producing and
//! consuming, a group of three members, resuming after a restart, and modules.
//!
//! # Modules
//!
//! Topics can run WebAssembly modules over their records (see docs/module-abi.md for writing
//! one). A module is registered once ([`Client::register_module`]) under a name and a version,
//! then referenced by a [`ModuleRef`]: the name, an optional version (the latest when absent)
//! and parameters for its `init`, also written `NAME[@VERSION][:KEY=VALUE,...]` ([`ModuleRef`]'s
//! `FromStr`, the syntax of `weir consume --module`).
//!
//! - On the produce path ([`Client::attach_module`] with [`ModulePath::Produce`]), the topic's
//!   chain runs on the partition leader before anything is stored. The [`RejectPolicy`] of the
//!   attachment decides what a rejection does: fail the whole request (`RECORD_REJECTED`, with
//!   the records in [`ClientError::rejected_records`]), or drop the record or send it to a
//!   dead-letter topic, reported in [`ProduceOutcome::rejected`].
//! - On the consume path, a fetch or subscription names its own chain ([`FetchSpec::modules`],
//!   [`SubscribeSpec::modules`]) or gets the topic's consume chain. Records keep their offsets;
//!   those filtered out are skipped, so a consumer continues from [`Fetched::next_offset`], and
//!   those a module rejected are listed in [`Fetched::rejected`].
//!
//! ```no_run
//! use weir_client::{Client, FetchSpec, ModulePath, ModuleRef, RejectPolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("127.0.0.1:7070").await?;
//! let wasm = std::fs::read("field_filter.wasm")?;
//! let module = client.register_module("field-filter", None, wasm).await?;
//! println!("registered version {:?}", module.latest());
//!
//! // Every consumer of "clicks" that names no chain of its own gets the filtered records.
//! let filter: ModuleRef = "field-filter:field=type,value=click".parse()?;
//! let topic = client
//!     .attach_module("clicks", filter, ModulePath::Consume, RejectPolicy::Reject)
//!     .await?;
//! assert_eq!(topic.consume_chain.len(), 1);
//!
//! // Or name a chain for one fetch, replacing the topic's.
//! let mut offset = 0;
//! loop {
//!     let spec = FetchSpec::new("clicks", 0, offset)
//!         .with_max_wait_ms(1_000)
//!         .with_module(ModuleRef::new("field-filter").with_param("field", "user"));
//!     let fetched = client.fetch(spec).await?;
//!     for record in &fetched.records {
//!         println!("{}: {:?}", record.offset, record.value);
//!     }
//!     for rejected in &fetched.rejected {
//!         eprintln!("offset {} rejected by {}: {}", rejected.offset, rejected.module, rejected.reason);
//!     }
//!     // Not the last record's offset + 1: the records after it may have been filtered out.
//!     offset = fetched.next_offset;
//! }
//! # }
//! ```
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

mod address;
mod admin;
mod bootstrap;
mod client;
mod consume;
mod consumer;
mod error;
mod fetch_frames;
mod group;
mod module;
mod produce;
mod producer;
mod routing;
mod security;
mod tls;

pub use admin::{
    ClusterInfo, ConfigEntry, NodeInfo, PartitionInfo, ReplicaStatus, TopicInfo, TopicSpec,
    TopicSummary,
};
pub use bootstrap::BrokerChannel;
pub use client::{Client, ClientBuilder, Connection, MAX_MESSAGE_BYTES};
pub use consume::{
    BatchStream, ConsumedRecord, FetchSpec, Fetched, ListedOffset, OffsetSpec, RecordStream,
    StartAt, SubscribeSpec, SubscribedBatch,
};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use error::{AddressError, ClientError};
pub use group::{
    CommittedOffset, GroupInfo, GroupMemberInfo, GroupPartitionInfo, GroupSummary, Heartbeat,
    Joined, ResetTo, TopicPartition,
};
pub use module::{
    ModuleAttachment, ModuleInfo, ModulePath, ModuleRef, ModuleRefProblem, ModuleStats, ModuleUse,
    ModuleVersionInfo, ParseModulePathError, ParseModuleRefError, RejectAction, RejectPolicy,
    RejectedOffset,
};
pub use produce::{
    Acks, ParseAcksError, ProduceOutcome, ProducerId, ProducerRecord, RejectedRecord,
};
pub use security::{
    AclBinding, AclFilter, AclOperation, AclPermission, CLUSTER_RESOURCE, Credentials, PatternType,
    ResourceType, UserInfo,
};
pub use tls::{ClientTls, TlsError};

/// Kafka's record batch format v2, which the broker stores and serves: encode batches for
/// [`Client::produce_batch`] and decode what a fetch returns. (The codec is `weir-types`'s, the
/// same the broker uses.)
pub mod codec {
    pub use weir_types::{
        BatchEncoder, BatchError, BatchHeader, BatchLimits, EncodedBatch, Header, ProducerStamp,
        Record, STORED_BATCH_OVERHEAD,
    };
}
pub use producer::{
    DEFAULT_BATCH_MAX_BYTES, Delivery, DeliveryError, MAX_IN_FLIGHT_IDEMPOTENT, Producer,
    ProducerConfig, RecordMetadata, partition_for_key,
};

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
