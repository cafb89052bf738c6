//! Broker configuration: defaults, a TOML file, and validation.
//!
//! Every field has a default, so `weir broker` with no flags runs a single node on
//! 127.0.0.1:7070 with its data in `./weir-data`. A config file names only what it changes;
//! an unknown key is an error (a typo must not silently fall back to a default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_raft::{GroupTimings, NodeId, ProducerLimits};
use weir_types::BatchLimits;

use crate::metadata::{MAX_MODULE_BYTES, MAX_PARTITIONS_PER_TOPIC, check_topic_config};
use crate::security::SecuritySettings;
use crate::tls::TlsSettings;

/// Everything a broker node needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This node's id; never reused within a cluster.
    pub node_id: NodeId,
    /// Address the gRPC server listens on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address the Prometheus metrics endpoint (`GET /metrics`) listens on; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Address other nodes and clients should use; defaults to `listen`.
    pub advertised_address: Option<String>,
    /// Directory for the node's databases.
    pub data_dir: PathBuf,
    /// Every voter of the cluster's controller, this node included, as `ID=HOST:PORT`. Empty
    /// means a single-node cluster of this node alone. Every node of a cluster must be given
    /// the same list.
    pub peers: Vec<Peer>,
    /// Join an existing cluster instead of forming one: the node does not initialise the
    /// controller and waits until a member adds it (`weir cluster add-node`).
    pub join: bool,
    /// Record and request size limits.
    pub limits: Limits,
    /// Raft timings.
    pub raft: RaftTimings,
    /// Sandbox limits for WebAssembly modules.
    pub modules: ModuleLimits,
    /// Consumer group session timeouts.
    pub groups: GroupSettings,
    /// What partitions remember of idempotent producers.
    pub producers: ProducerSettings,
    /// How retention runs (docs/operations.md, "Retention").
    pub retention: RetentionSettings,
    /// The free-space reserve of the data directory (docs/operations.md, "Disk space").
    pub disk: DiskSettings,
    /// How the partition log database commits (docs/operations.md, "Crash recovery").
    pub storage: StorageSettings,
    /// This node's defaults for topic configs a topic does not set, with Kafka's names
    /// (`"max.message.bytes" = 1048576`). Give every node the same.
    pub topic_defaults: BTreeMap<String, TopicConfigValue>,
    /// TLS for the listener and between nodes (docs/security.md); off unless `cert` and `key`
    /// are set.
    pub tls: TlsSettings,
    /// Authentication and authorization (docs/security.md); off by default.
    pub security: SecuritySettings,
}

/// A value in `[topic_defaults]`: TOML's integer, float or string, as the topic config takes
/// it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TopicConfigValue {
    /// An integer, such as `retention.ms`'s.
    Integer(i64),
    /// A number with a fraction, such as `min.cleanable.dirty.ratio`'s.
    Float(f64),
    /// Text, such as `cleanup.policy`'s.
    Text(String),
}

impl std::fmt::Display for TopicConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicConfigValue::Integer(v) => write!(f, "{v}"),
            TopicConfigValue::Float(v) => write!(f, "{v}"),
            TopicConfigValue::Text(v) => f.write_str(v),
        }
    }
}

/// What each partition remembers of idempotent producers (docs/api.md, "Idempotent
/// producers").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// Producers one partition remembers at most; beyond, the one whose last batch is oldest in
    /// the log is forgotten (its next batch is accepted at any sequence, unchecked).
    pub max_per_partition: usize,
    /// A producer that sent nothing to a partition for this long is forgotten there, in
    /// milliseconds (Kafka's `producer.id.expiration.ms`).
    pub idle_expiry_ms: u64,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        let d = ProducerLimits::default();
        Self {
            max_per_partition: d.max_producers,
            idle_expiry_ms: d.idle_expiry.as_millis() as u64,
        }
    }
}

impl ProducerSettings {
    /// The limits as the partitions take them.
    pub fn limits(&self) -> ProducerLimits {
        ProducerLimits {
            max_producers: self.max_per_partition,
            idle_expiry: Duration::from_millis(self.idle_expiry_ms),
        }
    }
}

/// How retention runs (docs/operations.md, "Retention").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// How often each partition leader looks for batches past their topic's `retention.ms`, in
    /// milliseconds (Kafka's `log.retention.check.interval.ms`).
    pub check_interval_ms: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            check_interval_ms: 30_000,
        }
    }
}

/// The free-space reserve of the data directory (docs/operations.md, "Disk space").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskSettings {
    /// While the data directory's filesystem has fewer bytes free than this, partitions this
    /// node leads refuse new records with `DISK_FULL` (Redpanda's `storage_min_free_bytes`),
    /// and the replicas it follows hold back the entries their leaders send.
    pub min_free_bytes: u64,
    /// How often the free space is read, in milliseconds.
    pub check_interval_ms: u64,
}

impl Default for DiskSettings {
    fn default() -> Self {
        Self {
            min_free_bytes: 256 * 1024 * 1024,
            check_interval_ms: 100,
        }
    }
}

/// The most `storage.cache_mib` may be: 1 TiB.
pub const MAX_CACHE_MIB: u64 = 1024 * 1024;

/// How the partition log database commits and caches (docs/operations.md, "Crash recovery"
/// and "Read cache").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Every commit of the partition log also writes the database's allocator state, so that
    /// the node restarts after a crash without reading the whole file. That state grows with
    /// the file and is written whole at each commit, so on a large log it costs throughput and
    /// latency; off, a restart after a crash reads every page of the file first. On by default.
    pub quick_repair: bool,
    /// MiB of the partition log's pages kept in memory (redb's page cache, pages written and
    /// read alike): a fetch of a page held there is served from that memory, with no read of
    /// the file and no copy. Unset, [`default_cache_mib`] of the memory the broker may use.
    pub cache_mib: Option<u64>,
}

impl StorageSettings {
    /// The partition log's page cache in MiB: the setting, or sized from `usable_memory`
    /// (bytes; `None` where unknown) when it is unset.
    pub fn cache_mib_for(&self, usable_memory: Option<u64>) -> u64 {
        self.cache_mib
            .unwrap_or_else(|| default_cache_mib(usable_memory))
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            quick_repair: true,
            cache_mib: None,
        }
    }
}

/// The partition log's page cache when `[storage] cache_mib` is unset: an eighth of the memory
/// the broker may use (`usable_memory`, bytes), at least [`MIN_DEFAULT_CACHE_MIB`] and at most
/// [`MAX_DEFAULT_CACHE_MIB`]; [`FALLBACK_CACHE_MIB`] where that memory is unknown. A warm log
/// is served from this cache without reading the file (docs/operations.md, "Read cache").
pub fn default_cache_mib(usable_memory: Option<u64>) -> u64 {
    usable_memory.map_or(FALLBACK_CACHE_MIB, |bytes| {
        ((bytes / 8) >> 20).clamp(MIN_DEFAULT_CACHE_MIB, MAX_DEFAULT_CACHE_MIB)
    })
}

/// The smallest page cache [`default_cache_mib`] picks.
pub const MIN_DEFAULT_CACHE_MIB: u64 = 64;
/// The largest page cache [`default_cache_mib`] picks: larger caches are an operator's choice.
pub const MAX_DEFAULT_CACHE_MIB: u64 = 4096;
/// The page cache where the memory the broker may use cannot be read.
pub const FALLBACK_CACHE_MIB: u64 = 256;

/// Consumer group session timeouts (docs/consumer-groups.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// The session timeout of a member that asks for none, in milliseconds.
    pub default_session_timeout_ms: u32,
    /// The shortest session timeout granted; shorter requests get this.
    pub min_session_timeout_ms: u32,
    /// The longest session timeout granted; longer requests get this.
    pub max_session_timeout_ms: u32,
    /// How long the committed offsets of a group without members are kept after its last
    /// commit (Kafka's `offsets.retention.minutes`, 7 days by default).
    pub offsets_retention_ms: u64,
    /// Most members one group may have (Kafka's `group.max.size`); a join beyond is refused
    /// with `GROUP_MAX_SIZE_REACHED`.
    pub max_members_per_group: usize,
    /// Most members of all groups the node coordinates at once; a join beyond is refused with
    /// `OVERLOADED` until members leave or expire.
    pub max_members: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            default_session_timeout_ms: 10_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            max_members_per_group: 10_000,
            max_members: 100_000,
        }
    }
}

impl GroupSettings {
    /// The session timeout granted for a request of `requested_ms` (0: the default).
    pub fn session_timeout(&self, requested_ms: u32) -> Duration {
        let ms = if requested_ms == 0 {
            self.default_session_timeout_ms
        } else {
            requested_ms
        };
        Duration::from_millis(u64::from(
            ms.clamp(self.min_session_timeout_ms, self.max_session_timeout_ms),
        ))
    }
}

/// Sandbox limits for WebAssembly modules (docs/modules.md, "Limits").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleLimits {
    /// Largest module that can be registered, in bytes.
    pub max_module_bytes: usize,
    /// Linear memory one module instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit of one call into a module (one batch), in milliseconds.
    pub call_timeout_ms: u64,
    /// Fuel (roughly, wasm instructions) one call may burn; unset means unmetered.
    pub fuel_per_call: Option<u64>,
    /// Largest output one call may return, in bytes.
    pub max_output_bytes: usize,
    /// Log output one call may write, in bytes; the rest is dropped and counted.
    pub max_log_bytes_per_call: usize,
    /// Module instances that may exist at once on this node (the pooling allocator's size).
    pub max_instances: u32,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        let d = weir_wasm::WasmLimits::default();
        Self {
            max_module_bytes: d.max_module_bytes,
            memory_bytes: d.memory_bytes,
            call_timeout_ms: d.call_timeout.as_millis() as u64,
            fuel_per_call: d.fuel_per_call,
            max_output_bytes: d.max_output_bytes,
            max_log_bytes_per_call: d.max_log_bytes_per_call,
            max_instances: d.max_instances,
        }
    }
}

impl ModuleLimits {
    /// The limits as the wasm host takes them.
    pub fn wasm_limits(&self) -> weir_wasm::WasmLimits {
        weir_wasm::WasmLimits {
            max_module_bytes: self.max_module_bytes,
            memory_bytes: self.memory_bytes,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            fuel_per_call: self.fuel_per_call,
            max_output_bytes: self.max_output_bytes,
            max_log_bytes_per_call: self.max_log_bytes_per_call,
            max_instances: self.max_instances,
        }
    }
}

/// A cluster member: node id and the address its gRPC port is reached at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Peer {
    /// The node's id.
    pub id: NodeId,
    /// Its `HOST:PORT`.
    pub address: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// Parses `ID=HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, address) = s
            .split_once('=')
            .ok_or_else(|| format!("peer '{s}' is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer '{s}': node id '{id}' is not a positive integer"))?;
        let address = address.trim();
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("peer '{s}': address '{address}' is not HOST:PORT")),
        }
        if id == 0 {
            return Err(format!("peer '{s}': node ids start at 1"));
        }
        Ok(Self {
            id,
            address: address.to_owned(),
        })
    }
}

impl TryFrom<String> for Peer {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Peer> for String {
    fn from(peer: Peer) -> Self {
        format!("{}={}", peer.id, peer.address)
    }
}

/// The largest byte budget a limit may set (1 TiB): beyond any machine, and within what the
/// budgets' counters hold.
const MAX_BUDGET_BYTES: usize = 1 << 40;

/// Size and count limits applied to requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest record in bytes, as encoded in a record batch (key, value, headers and their
    /// length prefixes).
    pub max_record_bytes: usize,
    /// Largest produce request's record batch in bytes (as sent, or as encoded from `records`).
    pub max_batch_bytes: usize,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: u32,
    /// Default and upper bound of records per fetch.
    pub max_fetch_records: u32,
    /// Default and upper bound of bytes per fetch.
    pub max_fetch_bytes: u32,
    /// Upper bound of a fetch's long-poll wait, in milliseconds.
    pub max_fetch_wait_ms: u32,
    /// How long a produce waits for its batch to be committed by a quorum before it fails
    /// with `OUTCOME_UNKNOWN` (the batch may still commit later), in milliseconds.
    pub produce_timeout_ms: u32,
    /// Client request bytes the node holds at once (requests read but not yet answered);
    /// beyond, requests are refused with the retriable `OVERLOADED`.
    pub max_request_bytes_in_flight: usize,
    /// Client request bytes one connection holds at once.
    pub max_connection_bytes_in_flight: usize,
    /// Requests (HTTP/2 streams) one connection may have open at once, subscriptions included.
    /// A peer's connection carries every raft group's RPCs to this node, so this must exceed
    /// the partitions two nodes share; the byte budgets bound the memory.
    pub max_concurrent_requests_per_connection: u32,
    /// Bytes of acks=none batches the node has handed to raft and not yet applied; beyond,
    /// acks=none produces wait (up to `produce_timeout_ms`), then fail `OVERLOADED`.
    pub max_unacknowledged_bytes: usize,
    /// Subscriptions open on the node at once; beyond, `Subscribe` fails `OVERLOADED`.
    pub max_subscriptions: u32,
}

impl Limits {
    /// The largest client request the node accepts: a produce request of `max_batch_bytes` or a
    /// module registration of `max_module_bytes`, and room for the rest of the message.
    pub fn max_request_bytes(&self, modules: &ModuleLimits) -> usize {
        self.max_batch_bytes
            .max(modules.max_module_bytes)
            .saturating_add(1024 * 1024)
    }
}

/// Raft heartbeat and election timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    /// Heartbeat interval: the controller leader's, and that of the one heartbeat per pair of
    /// nodes that stands in for the partitions' own while they are quiet.
    pub heartbeat_ms: u64,
    /// Minimum election timeout; also how long a peer may go unheard before the partitions it
    /// leads elect another leader.
    pub election_min_ms: u64,
    /// Maximum election timeout, and the leader lease: how long a follower refuses to vote for
    /// another after its leader's last message.
    pub election_max_ms: u64,
    /// How long a replica being added (a replica move, a node joining the controller) may make
    /// no progress catching up before the change fails.
    pub learner_stall_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7071))),
            advertised_address: None,
            data_dir: PathBuf::from("weir-data"),
            peers: Vec::new(),
            join: false,
            limits: Limits::default(),
            raft: RaftTimings::default(),
            modules: ModuleLimits::default(),
            groups: GroupSettings::default(),
            producers: ProducerSettings::default(),
            retention: RetentionSettings::default(),
            disk: DiskSettings::default(),
            storage: StorageSettings::default(),
            topic_defaults: BTreeMap::new(),
            tls: TlsSettings::default(),
            security: SecuritySettings::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let batch = BatchLimits::default();
        Self {
            max_record_bytes: batch.max_record_bytes,
            max_batch_bytes: batch.max_batch_bytes,
            max_partitions_per_topic: 1024,
            max_fetch_records: 10_000,
            max_fetch_bytes: 4 * 1024 * 1024,
            max_fetch_wait_ms: 30_000,
            produce_timeout_ms: 10_000,
            max_request_bytes_in_flight: 256 * 1024 * 1024,
            max_connection_bytes_in_flight: 64 * 1024 * 1024,
            max_concurrent_requests_per_connection: 4096,
            max_unacknowledged_bytes: 64 * 1024 * 1024,
            max_subscriptions: 10_000,
        }
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        let t = GroupTimings::default();
        Self {
            heartbeat_ms: t.heartbeat.as_millis() as u64,
            election_min_ms: t.election_min.as_millis() as u64,
            election_max_ms: t.election_max.as_millis() as u64,
            learner_stall_ms: t.learner_stall.as_millis() as u64,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Reads a TOML file; fields it does not name keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let clustered = !self.peers.is_empty() || self.join;
        self.tls.validate(clustered).map_err(ConfigError::Invalid)?;
        self.security
            .validate(&self.tls, clustered)
            .map_err(ConfigError::Invalid)?;
        let l = &self.limits;
        if l.max_record_bytes == 0 || l.max_record_bytes > l.max_batch_bytes {
            return invalid(format!(
                "limits.max_record_bytes ({}) must be between 1 and limits.max_batch_bytes ({})",
                l.max_record_bytes, l.max_batch_bytes
            ));
        }
        if l.max_batch_bytes > 256 * 1024 * 1024 {
            return invalid("limits.max_batch_bytes may be at most 256 MiB".into());
        }
        if l.max_partitions_per_topic == 0 || l.max_partitions_per_topic > MAX_PARTITIONS_PER_TOPIC
        {
            return invalid(format!(
                "limits.max_partitions_per_topic must be between 1 and {MAX_PARTITIONS_PER_TOPIC}"
            ));
        }
        if !(10..=86_400_000).contains(&self.retention.check_interval_ms) {
            return invalid(format!(
                "retention.check_interval_ms ({}) must be between 10 and 86400000 (a day)",
                self.retention.check_interval_ms
            ));
        }
        if !(10..=60_000).contains(&self.disk.check_interval_ms) {
            return invalid(format!(
                "disk.check_interval_ms ({}) must be between 10 and 60000 (a minute)",
                self.disk.check_interval_ms
            ));
        }
        if let Some(mib) = self
            .storage
            .cache_mib
            .filter(|m| !(1..=MAX_CACHE_MIB).contains(m))
        {
            return invalid(format!(
                "storage.cache_mib ({mib}) must be between 1 and {MAX_CACHE_MIB} (1 TiB)"
            ));
        }
        if l.produce_timeout_ms == 0 {
            return invalid("limits.produce_timeout_ms must be at least 1".into());
        }
        if l.max_fetch_records == 0 || l.max_fetch_bytes == 0 {
            return invalid(
                "limits.max_fetch_records and max_fetch_bytes must be at least 1".into(),
            );
        }
        let m = &self.modules;
        let largest = l.max_request_bytes(m);
        if l.max_connection_bytes_in_flight < largest
            || l.max_request_bytes_in_flight < l.max_connection_bytes_in_flight
        {
            return invalid(format!(
                "limits must satisfy max_connection_bytes_in_flight ({}) <= max_request_bytes_in_flight ({}), and both must hold the largest request ({largest} bytes: the larger of max_batch_bytes and modules.max_module_bytes, plus 1 MiB)",
                l.max_connection_bytes_in_flight, l.max_request_bytes_in_flight
            ));
        }
        if l.max_request_bytes_in_flight > MAX_BUDGET_BYTES
            || l.max_unacknowledged_bytes > MAX_BUDGET_BYTES
        {
            return invalid(format!(
                "limits.max_request_bytes_in_flight and max_unacknowledged_bytes may be at most {MAX_BUDGET_BYTES} (1 TiB)"
            ));
        }
        if l.max_unacknowledged_bytes < l.max_batch_bytes {
            return invalid(format!(
                "limits.max_unacknowledged_bytes ({}) must hold one batch of limits.max_batch_bytes ({})",
                l.max_unacknowledged_bytes, l.max_batch_bytes
            ));
        }
        if l.max_subscriptions == 0 {
            return invalid("limits.max_subscriptions must be at least 1".into());
        }
        if l.max_concurrent_requests_per_connection == 0 {
            return invalid(
                "limits.max_concurrent_requests_per_connection must be at least 1".into(),
            );
        }
        if m.max_module_bytes == 0 || m.memory_bytes < 64 * 1024 || m.call_timeout_ms == 0 {
            return invalid(
                "modules.max_module_bytes and call_timeout_ms must be at least 1, memory_bytes at least 65536 (one wasm page)".into(),
            );
        }
        if m.max_module_bytes > MAX_MODULE_BYTES {
            return invalid(format!(
                "modules.max_module_bytes may be at most {MAX_MODULE_BYTES} (64 MiB)"
            ));
        }
        if m.max_instances == 0 || m.max_output_bytes == 0 {
            return invalid("modules.max_instances and max_output_bytes must be at least 1".into());
        }
        let g = &self.groups;
        if g.min_session_timeout_ms == 0
            || g.min_session_timeout_ms > g.max_session_timeout_ms
            || !(g.min_session_timeout_ms..=g.max_session_timeout_ms)
                .contains(&g.default_session_timeout_ms)
        {
            return invalid(format!(
                "group session timeouts must satisfy 0 < min_session_timeout_ms ({}) <= default_session_timeout_ms ({}) <= max_session_timeout_ms ({})",
                g.min_session_timeout_ms, g.default_session_timeout_ms, g.max_session_timeout_ms
            ));
        }
        if g.offsets_retention_ms == 0 {
            return invalid("groups.offsets_retention_ms must be at least 1".into());
        }
        if g.max_members_per_group == 0 || g.max_members == 0 {
            return invalid(
                "groups.max_members_per_group and groups.max_members must be at least 1".into(),
            );
        }
        self.topic_defaults()?;
        let p = &self.producers;
        if p.max_per_partition == 0 || p.idle_expiry_ms == 0 {
            return invalid(
                "producers.max_per_partition and idle_expiry_ms must be at least 1".into(),
            );
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_min_ms <= r.heartbeat_ms
            || r.election_max_ms <= r.election_min_ms
        {
            return invalid(format!(
                "raft timings must satisfy 0 < heartbeat_ms ({}) < election_min_ms ({}) < election_max_ms ({})",
                r.heartbeat_ms, r.election_min_ms, r.election_max_ms
            ));
        }
        if r.learner_stall_ms <= r.election_max_ms {
            return invalid(format!(
                "raft.learner_stall_ms ({}) must be above raft.election_max_ms ({}): a learner may wait out an election",
                r.learner_stall_ms, r.election_max_ms
            ));
        }
        if self.node_id == 0 {
            return invalid("node_id must be at least 1".into());
        }
        if !self.peers.is_empty() {
            let mut ids = std::collections::BTreeSet::new();
            for peer in &self.peers {
                if !ids.insert(peer.id) {
                    return invalid(format!("peers name node {} more than once", peer.id));
                }
            }
            if !ids.contains(&self.node_id) {
                return invalid(format!(
                    "node_id {} is not among the peers ({}); every node lists itself",
                    self.node_id,
                    ids.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The address other nodes and clients reach this node at: the advertised address, else
    /// this node's entry in `peers`, else the bound address.
    pub(crate) fn address(&self, bound: std::net::SocketAddr) -> String {
        self.advertised_address
            .clone()
            .or_else(|| {
                self.peers
                    .iter()
                    .find(|p| p.id == self.node_id)
                    .map(|p| p.address.clone())
            })
            .unwrap_or_else(|| bound.to_string())
    }

    /// The controller's voters: the peers, or this node alone.
    pub(crate) fn voters(&self, address: &str) -> std::collections::BTreeMap<NodeId, String> {
        if self.peers.is_empty() {
            std::collections::BTreeMap::from([(self.node_id, address.to_owned())])
        } else {
            self.peers
                .iter()
                .map(|p| (p.id, p.address.clone()))
                .collect()
        }
    }

    pub(crate) fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_record_bytes: self.limits.max_record_bytes,
            max_batch_bytes: self.limits.max_batch_bytes,
        }
    }

    /// `[topic_defaults]`, checked and normalised as topic configs are.
    pub(crate) fn topic_defaults(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        self.topic_defaults
            .iter()
            .map(|(key, value)| {
                check_topic_config(key, &value.to_string())
                    .map(|v| (key.clone(), v))
                    .map_err(|e| ConfigError::Invalid(format!("topic_defaults: {e}")))
            })
            .collect()
    }

    pub(crate) fn group_timings(&self) -> GroupTimings {
        GroupTimings {
            heartbeat: Duration::from_millis(self.raft.heartbeat_ms),
            election_min: Duration::from_millis(self.raft.election_min_ms),
            election_max: Duration::from_millis(self.raft.election_max_ms),
            learner_stall: Duration::from_millis(self.raft.learner_stall_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A config file of known sections and keys (and some unknown), each with a value of any
    /// TOML type and any size.
    fn config_file() -> impl Strategy<Value = String> {
        const KEYS: &[(&str, &str)] = &[
            ("", "node_id"),
            ("", "listen"),
            ("", "metrics_listen"),
            ("", "data_dir"),
            ("", "peers"),
            ("", "join"),
            ("", "typo"),
            ("limits", "max_record_bytes"),
            ("limits", "max_batch_bytes"),
            ("limits", "max_partitions_per_topic"),
            ("limits", "max_fetch_records"),
            ("limits", "max_fetch_bytes"),
            ("limits", "max_fetch_wait_ms"),
            ("limits", "produce_timeout_ms"),
            ("limits", "max_request_bytes_in_flight"),
            ("limits", "max_connection_bytes_in_flight"),
            ("limits", "max_concurrent_requests_per_connection"),
            ("limits", "max_unacknowledged_bytes"),
            ("limits", "max_subscriptions"),
            ("raft", "heartbeat_ms"),
            ("raft", "election_min_ms"),
            ("raft", "election_max_ms"),
            ("raft", "learner_stall_ms"),
            ("modules", "max_module_bytes"),
            ("modules", "memory_bytes"),
            ("modules", "call_timeout_ms"),
            ("modules", "fuel_per_call"),
            ("modules", "max_output_bytes"),
            ("modules", "max_log_bytes_per_call"),
            ("modules", "max_instances"),
            ("groups", "default_session_timeout_ms"),
            ("groups", "min_session_timeout_ms"),
            ("groups", "max_session_timeout_ms"),
            ("groups", "offsets_retention_ms"),
            ("groups", "max_members_per_group"),
            ("groups", "max_members"),
            ("producers", "max_per_partition"),
            ("producers", "idle_expiry_ms"),
            ("topic_defaults", "\"max.message.bytes\""),
            ("topic_defaults", "\"message.timestamp.type\""),
            ("topic_defaults", "\"retention.ms\""),
            ("topic_defaults", "\"cleanup.policy\""),
            ("topic_defaults", "\"no.such.config\""),
        ];
        let value = prop_oneof![
            any::<u64>().prop_map(|v| v.to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            (0u64..100_000).prop_map(|v| v.to_string()),
            prop_oneof![Just(0u64), Just(1), Just(u32::MAX as u64), Just(1 << 40)]
                .prop_map(|v| v.to_string()),
            "[ -~]{0,12}".prop_map(|v| format!("{v:?}")),
            any::<bool>().prop_map(|v| v.to_string()),
            Just("[\"1=127.0.0.1:1\", \"2=x\"]".to_owned()),
        ];
        proptest::collection::vec((proptest::sample::select(KEYS), value), 0..12).prop_map(
            |entries| {
                let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for ((section, key), value) in entries {
                    sections
                        .entry(section)
                        .or_default()
                        .push(format!("{key} = {value}"));
                }
                let mut file = String::new();
                for (section, lines) in sections {
                    if !section.is_empty() {
                        file.push_str(&format!("[{section}]\n"));
                    }
                    for line in lines {
                        file.push_str(&line);
                        file.push('\n');
                    }
                }
                file
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Whatever a config file says, reading and checking it never panics, and a config that
        /// passes the checks builds everything the broker builds from it at start-up.
        #[test]
        fn any_config_file_is_read_checked_and_used_without_panicking(file in config_file()) {
            let Ok(config) = toml::from_str::<BrokerConfig>(&file) else {
                return Ok(());
            };
            if config.validate().is_err() {
                return Ok(());
            }
            let _ = config.group_timings();
            let _ = config.modules.wasm_limits();
            let _ = config.producers.limits();
            let defaults = config.topic_defaults().expect("checked by validate");
            let _ = crate::metadata::TopicConfig::resolve(&BTreeMap::new(), &defaults, config.limits.max_batch_bytes);
            let _ = crate::budgets::Budgets::new(&config.limits);
            let limits = &config.limits;
            let _ = crate::admission::Admission::new(crate::admission::AdmissionLimits {
                max_request_bytes: limits.max_request_bytes(&config.modules),
                max_peer_request_bytes: weir_raft::MAX_PEER_MESSAGE_BYTES,
                node_bytes: limits.max_request_bytes_in_flight,
                connection_bytes: limits.max_connection_bytes_in_flight,
                peer_bytes: 2 * weir_raft::MAX_PEER_MESSAGE_BYTES,
                max_produce_records: limits.max_batch_bytes / crate::admission::MIN_RECORD_BYTES,
            });
        }
    }

    #[test]
    fn topic_defaults_are_checked_like_topic_configs() {
        let config: BrokerConfig = toml::from_str(
            "[topic_defaults]\n\"max.message.bytes\" = 1000\n\"message.timestamp.type\" = \"logappendtime\"\n",
        )
        .unwrap();
        let defaults = config.topic_defaults().unwrap();
        assert_eq!(defaults["max.message.bytes"], "1000");
        assert_eq!(defaults["message.timestamp.type"], "LogAppendTime");
        for (file, named) in [
            (
                "[topic_defaults]\n\"max.message.bytes\" = -3\n",
                "max.message.bytes",
            ),
            (
                "[topic_defaults]\n\"retention.minutes\" = 3\n",
                "retention.minutes",
            ),
            (
                "[topic_defaults]\n\"retention.bytes\" = -60000\n",
                "retention.bytes",
            ),
        ] {
            let config: BrokerConfig = toml::from_str(file).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("topic_defaults") && err.contains(named),
                "{err}"
            );
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_documented_single_node() {
        let c = BrokerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.data_dir, PathBuf::from("weir-data"));
    }

    #[test]
    fn a_file_names_only_what_it_changes_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "node_id = 3\n[limits]\nmax_record_bytes = 1000\n").unwrap();
        let c = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.limits.max_record_bytes, 1000);
        assert_eq!(
            c.limits.max_fetch_records,
            Limits::default().max_fetch_records
        );

        std::fs::write(&path, "node_idd = 3\n").unwrap();
        let err = BrokerConfig::from_file(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(format!("{:?}", err).contains("node_idd"));
    }

    #[test]
    fn the_tls_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "[tls]\ncert = \"node.pem\"\nkey = \"node-key.pem\"\nca = \"ca.pem\"\nclient_auth = \"required\"\n",
        )
        .unwrap();
        let c = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(c.tls.cert, Some(PathBuf::from("node.pem")));
        assert_eq!(c.tls.client_auth, Some(crate::ClientAuth::Required));
        c.validate().unwrap();

        std::fs::write(&path, "[tls]\nclient_auth = \"sometimes\"\n").unwrap();
        let err = format!("{:?}", BrokerConfig::from_file(&path).unwrap_err());
        assert!(err.contains("sometimes"), "{err}");

        std::fs::write(&path, "[tls]\ncert = \"node.pem\"\n").unwrap();
        let err = BrokerConfig::from_file(&path)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }

    #[test]
    fn peers_parse_and_bad_lists_are_refused() {
        let peer: Peer = "2=127.0.0.1:7072".parse().unwrap();
        assert_eq!((peer.id, peer.address.as_str()), (2, "127.0.0.1:7072"));
        for bad in [
            "2",
            "x=127.0.0.1:1",
            "0=h:1",
            "2=:1",
            "2=host",
            "2=host:0",
            "2=host:99999",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
        let mut c = BrokerConfig {
            node_id: 1,
            peers: vec!["1=a:1".parse().unwrap(), "1=b:2".parse().unwrap()],
            ..BrokerConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        c.peers = vec!["2=a:1".parse().unwrap(), "3=b:2".parse().unwrap()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not among the peers")
        );
        c.peers.push("1=c:3".parse().unwrap());
        c.validate().unwrap();
        assert_eq!(c.address("127.0.0.1:9".parse().unwrap()), "c:3");
        assert_eq!(c.voters("ignored").len(), 3);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut c = BrokerConfig::default();
        c.raft.election_min_ms = c.raft.heartbeat_ms;
        assert!(c.validate().is_err());
        let mut c = BrokerConfig::default();
        c.limits.max_record_bytes = c.limits.max_batch_bytes + 1;
        assert!(c.validate().is_err());
        let mut c = BrokerConfig::default();
        c.disk.check_interval_ms = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("disk.check_interval_ms"), "{err}");
        let mut c = BrokerConfig::default();
        c.storage.cache_mib = Some(0);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("storage.cache_mib (0)"), "{err}");
        c.storage.cache_mib = Some(MAX_CACHE_MIB + 1);
        assert!(c.validate().is_err());
    }

    #[test]
    fn an_unset_page_cache_is_an_eighth_of_memory_within_bounds() {
        assert_eq!(default_cache_mib(Some(24 << 30)), 3072);
        assert_eq!(default_cache_mib(Some(1 << 30)), 128);
        assert_eq!(default_cache_mib(Some(256 << 20)), MIN_DEFAULT_CACHE_MIB);
        assert_eq!(default_cache_mib(Some(0)), MIN_DEFAULT_CACHE_MIB);
        assert_eq!(default_cache_mib(Some(1 << 40)), MAX_DEFAULT_CACHE_MIB);
        assert_eq!(default_cache_mib(None), FALLBACK_CACHE_MIB);
    }

    #[test]
    fn the_page_cache_size_is_read_from_the_file() {
        let unset = BrokerConfig::default().storage;
        assert_eq!(
            unset.cache_mib_for(Some(24 << 30)),
            3072,
            "an eighth of 24 GiB"
        );
        let c: BrokerConfig = toml::from_str("[storage]\ncache_mib = 2048\n").unwrap();
        assert_eq!(c.storage.cache_mib_for(Some(24 << 30)), 2048);
        assert_eq!(c.storage.cache_mib_for(None), 2048);
        assert!(
            c.storage.quick_repair,
            "the other storage settings keep their defaults"
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_disk_reserve_is_read_from_the_file() {
        let c: BrokerConfig =
            toml::from_str("[disk]\nmin_free_bytes = 1048576\ncheck_interval_ms = 50\n").unwrap();
        assert_eq!(c.disk.min_free_bytes, 1 << 20);
        assert_eq!(c.disk.check_interval_ms, 50);
        assert!(c.validate().is_ok());
    }
}
