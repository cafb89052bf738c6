//! Cluster metadata: the controller's replicated state and the commands that change it.
//!
//! Pure and deterministic: every controller replica applies the same commands in the same order
//! and must reach the same state, so nothing here reads a clock, a random source or the disk.
//! Placement decisions are taken here, at apply time, from the state alone.
//!
//! One job per file:
//! - `model`: the replicated data (nodes, topics and their placement, module versions and the
//!   chains they are attached to);
//! - `command`: the commands that change it, their validation and application, and their wire
//!   encoding;
//! - `store`: the controller state machine the raft layer drives (the replicated state beside
//!   consumer groups' offsets and the producer id counter, its snapshot layout, and the watch
//!   channels that publish every change);
//! - `bounds`: the bounds every command is checked against where it applies, the same on every
//!   node whatever its configuration;
//! - `topic_config`: the topic configs (Kafka's names), their values, and how a topic's own
//!   and the node's defaults resolve;
//! - `base64_bytes`: the JSON encoding of module bytes, shared by the data and the commands.

mod base64_bytes;
mod bounds;
mod command;
mod model;
mod store;
mod topic_config;

pub use bounds::{
    MAX_CHAIN_STAGES, MAX_COMMIT_METADATA, MAX_MODULE_BYTES, MAX_PARTITIONS_PER_TOPIC,
    check_module_name, check_params,
};
pub use command::{Applied, Command, CommandError, decode_reply, encode_command};
pub use model::{
    Attachment, CONTROLLER_GROUP, ClusterMetadata, ModulePath, ModuleVersionInfo, NodeInfo,
    PartitionInfo, RejectPolicy, TopicInfo,
};
pub use store::MetadataStore;
pub use topic_config::{
    ConfigSource, TimestampType, TopicConfig, alter_topic_configs, check_topic_config,
    check_topic_configs, effective_configs,
};
