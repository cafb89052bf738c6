//! Weir's domain vocabulary and the record batch codec.
//!
//! This crate is pure: no I/O, no async, no knowledge of redb, openraft or gRPC. Everything the
//! other crates agree on about names, offsets, the bytes of a record batch, ACL bindings and
//! users' credentials lives here, so the storage layer, the replication layer, the broker and
//! the client cannot drift apart.

pub mod acl;
mod batch;
mod names;
mod partitioner;
pub mod scram;
mod varint;

pub use batch::{
    BASE_OFFSET_AT, BATCH_HEADER_LEN, BatchAttributes, BatchEncoder, BatchError, BatchHeader,
    BatchLimits, CompactionRecord, Compression, EncodedBatch, Header, LEADER_EPOCH_AT, MAGIC,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, ProducerStamp, Record, RecordIter,
    STORED_BATCH_OVERHEAD, record_len_bound, stamp,
};
pub use names::{GroupName, InvalidName, MAX_TOPIC_NAME_LEN, Offset, PartitionId, TopicName};
pub use partitioner::{murmur2, partition_for_key};
