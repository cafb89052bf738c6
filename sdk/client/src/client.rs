//! [`Client`]: connections to a cluster's brokers and one method per `weir.v1.Broker` RPC, with
//! requests about a partition routed to its leader ([`crate::routing`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};
use weir_proto::v1::{self, broker_client::BrokerClient};

use crate::address::BrokerAddress;
use crate::bootstrap::BrokerChannel;
use crate::consume::AtOffset;
use crate::fetch_frames;
use crate::module::attach_request;
use crate::routing::{self, LeaderCache, follow_leader};
use crate::security::Credentials;
use crate::tls::ClientTls;
use crate::{
    Acks, BatchStream, ClientError, ClusterInfo, ConsumedRecord, FetchSpec, Fetched, ListedOffset,
    ModuleInfo, ModulePath, ModuleRef, OffsetSpec, ProduceOutcome, ProducerId, ProducerRecord,
    RecordStream, RejectPolicy, StartAt, SubscribeSpec, SubscribedBatch, TopicInfo, TopicSpec,
    TopicSummary,
};

/// Largest gRPC message the client sends or accepts, in bytes. tonic's default of 4 MiB is below
/// one full fetch of large records plus framing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A connection to one broker: the channel, with the client's credentials added to every
/// request.
pub type Connection = InterceptedService<BrokerChannel, Credentials>;

/// A client of a Weir cluster, bootstrapped from one broker or from the first live one of a
/// list.
///
/// Cloning is cheap and clones share the connections and the leader cache; requests from many
/// tasks are multiplexed on them. If a connection drops, the next request over it reconnects.
///
/// Requests about one partition (produce to a given partition, fetch, list offsets, subscribe)
/// go to the partition's leader once a `NOT_LEADER` answer has named it; everything else goes to
/// the bootstrap broker: with several, the current one, and the next after a transport failure
/// there. See the crate's "Routing" section.
///
/// Cancel safety: dropping a method's future abandons its request on the client side only; the
/// broker may still carry it out (a produce may still be stored).
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// What the clones of a [`Client`] share.
#[derive(Debug)]
struct Shared {
    /// The broker (or the current one of the brokers) the client was created for; it serves
    /// cluster-wide requests.
    bootstrap: Connection,
    /// A connection per broker address, the bootstrap broker's included when its address is
    /// known; created on first use, never closed while the client lives (a cluster has few
    /// nodes).
    pool: Mutex<HashMap<BrokerAddress, Connection>>,
    /// The known leaders of partitions.
    leaders: Mutex<LeaderCache>,
    /// TLS to every broker, when the client was built with it.
    tls: Option<ClientTlsConfig>,
    /// Sent with every request to every broker.
    credentials: Credentials,
}

/// Builds a [`Client`] with settings beyond [`Client::connect`]'s: TLS, credentials.
///
/// ```no_run
/// # async fn run() -> Result<(), weir_client::ClientError> {
/// let ca = std::fs::read("ca.pem").expect("the CA file");
/// let client = weir_client::Client::builder("broker-1:7070")
///     .tls_ca(ca)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    tls: Option<ClientTls>,
    credentials: Option<(String, String)>,
}

impl ClientBuilder {
    /// Speaks TLS to every broker, trusting the CA certificates in `pem` (PEM) for their
    /// certificates.
    pub fn tls_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls = Some(self.tls.take().unwrap_or_default().ca(pem));
        self
    }

    /// Presents `cert_pem` (the chain, leaf first) and its private key `key_pem` to brokers
    /// that ask for a client certificate (mutual TLS). Needs [`ClientBuilder::tls_ca`].
    pub fn tls_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls = Some(
            self.tls
                .take()
                .unwrap_or_default()
                .identity(cert_pem, key_pem),
        );
        self
    }

    /// Replaces the TLS settings with `tls` (`None`: plaintext).
    pub fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Authenticates as `user` with `password` on every request (docs/security.md). Use it
    /// with TLS: over plaintext the password travels in clear.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Connects to the bootstrap broker, as [`Client::connect`] does.
    ///
    /// Fails with [`ClientError::Tls`] for TLS settings that cannot be used (a CA or certificate
    /// that is not PEM, a client certificate without a CA), and with [`ClientError::Connect`]
    /// when no connection is established, a failed TLS handshake included.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let tls = self.tls.as_ref().map(ClientTls::config).transpose()?;
        let credentials = match &self.credentials {
            Some((user, password)) => Credentials::new(user, password)?,
            None => Credentials::default(),
        };
        connect(self.addr, tls, credentials).await
    }
}

/// Connects to the broker at `addrs` (or the first of a comma-separated list that answers) over
/// TLS with `tls`, else plaintext.
async fn connect(
    addrs: String,
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
) -> Result<Client, ClientError> {
    let addresses = addrs
        .split(',')
        .map(|addr| {
            addr.parse::<BrokerAddress>()
                .map_err(|source| ClientError::InvalidAddress {
                    addr: addr.trim().to_owned(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut channels = Vec::with_capacity(addresses.len());
    for address in &addresses {
        channels.push(address.endpoint(tls.as_ref())?);
    }
    // The first that connects is where requests start; the others connect on first use. The
    // last is tried alone, so its failure (naming it) is the error when none connects.
    let last = channels.len() - 1; // `split` yields at least one address
    let mut first = None;
    for (index, endpoint) in channels[..last].iter().enumerate() {
        if let Ok(channel) = endpoint.connect().await {
            first = Some((index, channel));
            break;
        }
    }
    let (start, connected) = match first {
        Some(first) => first,
        None => {
            let channel =
                channels[last]
                    .connect()
                    .await
                    .map_err(|source| ClientError::Connect {
                        addr: addresses[last].to_string(),
                        source,
                    })?;
            (last, channel)
        }
    };
    let channels: Vec<Channel> = channels
        .into_iter()
        .enumerate()
        .map(|(index, endpoint)| match index == start {
            true => connected.clone(),
            false => endpoint.connect_lazy(),
        })
        .collect();
    let pool = addresses
        .into_iter()
        .zip(&channels)
        .map(|(address, channel)| {
            let single = BrokerChannel::single(channel.clone());
            (address, connection_over(single, &credentials))
        })
        .collect();
    let bootstrap = connection_over(BrokerChannel::first_of(channels, start), &credentials);
    Ok(Client::new(bootstrap, pool, tls, credentials))
}

impl Client {
    /// Connects to the broker at `addr`, given as `HOST:PORT` or `http://HOST:PORT`, or to the
    /// first that answers of a comma-separated list of them (`a:7070,b:7070,c:7070`, Kafka's
    /// `bootstrap.servers`): cluster-wide requests then go to that broker, and move on to the
    /// next of the list after a transport failure there.
    ///
    /// Fails with [`ClientError::InvalidAddress`] for an address it cannot parse and with
    /// [`ClientError::Connect`] when no connection is established within 5 seconds (to any of
    /// the list, tried in order).
    ///
    /// Connections to the other brokers of the cluster are opened when a `NOT_LEADER` answer
    /// first sends a request to them, with the same settings. Plaintext; for TLS, see
    /// [`Client::builder`].
    pub async fn connect(addr: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(addr).connect().await
    }

    /// A builder for a client of the broker at `addr`, for settings [`Client::connect`] does
    /// not take (TLS).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            tls: None,
            credentials: None,
        }
    }

    /// A new client of the broker at `addr` with this client's settings (TLS), over a
    /// connection of its own: for asking one node in particular, which requests routed by
    /// the cluster cannot.
    pub async fn connect_to(&self, addr: impl Into<String>) -> Result<Self, ClientError> {
        connect(
            addr.into(),
            self.shared.tls.clone(),
            self.shared.credentials.clone(),
        )
        .await
    }

    /// A client over an existing channel, for transports [`Client::connect`] does not set up
    /// (custom TLS, in-process connectors). The message size limits are raised as in `connect`.
    ///
    /// The channel serves as the bootstrap broker. Leaders that `NOT_LEADER` answers name are
    /// reached over plain connections opened as `connect` opens them, which a custom transport
    /// may not accept; such requests then fail, and the next attempt starts from the bootstrap
    /// broker again.
    pub fn from_channel(channel: Channel) -> Self {
        let credentials = Credentials::default();
        Self::new(
            connection_over(BrokerChannel::single(channel), &credentials),
            HashMap::new(),
            None,
            credentials,
        )
    }

    fn new(
        bootstrap: Connection,
        pool: HashMap<BrokerAddress, Connection>,
        tls: Option<ClientTlsConfig>,
        credentials: Credentials,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                bootstrap,
                pool: Mutex::new(pool),
                leaders: Mutex::new(LeaderCache::default()),
                tls,
                credentials,
            }),
        }
    }

    /// The address requests about `topic`/`partition` are sent to, as `HOST:PORT`, when a
    /// `NOT_LEADER` answer has named its leader; `None` while they go to the bootstrap broker.
    pub fn cached_leader(&self, topic: &str, partition: u32) -> Option<String> {
        routing::lock(&self.shared.leaders)
            .leader(topic, partition)
            .map(|address| address.to_string())
    }

    /// The generated gRPC client of the `weir.v1` API over this client's connection to its
    /// bootstrap broker (its TLS settings and message size limits), for tools that call the
    /// API directly. Requests through it are not routed: a `NOT_LEADER` answer is the caller's
    /// to handle.
    pub fn raw_broker(&self) -> BrokerClient<Connection> {
        self.bootstrap()
    }

    /// Sends `request` as it is to the bootstrap broker, not routed, and returns the answer as
    /// protobuf decoded it, read from its frames as [`Client::fetch`] reads answers (record
    /// batches within a frame not copied): for tools that ask for what `fetch` does not, such
    /// as `weir bench consume` asking for one message per record. A `NOT_LEADER` answer is the
    /// caller's to handle.
    pub async fn fetch_raw(
        &self,
        request: &v1::FetchRequest,
    ) -> Result<v1::FetchResponse, ClientError> {
        Ok(fetch_frames::fetch(self.shared.bootstrap.clone(), request).await?)
    }

    /// The connection to the bootstrap broker.
    fn bootstrap(&self) -> BrokerClient<Connection> {
        broker_client(self.shared.bootstrap.clone())
    }

    /// Where cluster administration requests (users, ACLs) go: the bootstrap broker, which
    /// forwards what must run on the controller.
    pub(crate) fn admin(&self) -> BrokerClient<Connection> {
        self.bootstrap()
    }

    /// Where consumer group requests go: any broker forwards them to the coordinator (the
    /// controller leader), so the bootstrap broker.
    pub(crate) fn coordinator(&self) -> BrokerClient<Connection> {
        self.bootstrap()
    }

    /// The connection to `target` (`None`: the bootstrap broker), opened lazily on first use.
    fn connection(&self, target: Option<&BrokerAddress>) -> Result<Connection, ClientError> {
        let Some(address) = target else {
            return Ok(self.shared.bootstrap.clone());
        };
        // Every change is one insert, so a poisoned pool is still consistent.
        let mut pool = self
            .shared
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(connection) = pool.get(address) {
            return Ok(connection.clone());
        }
        let connection = connection_over(
            BrokerChannel::single(address.endpoint(self.shared.tls.as_ref())?.connect_lazy()),
            &self.shared.credentials,
        );
        pool.insert(address.clone(), connection.clone());
        Ok(connection)
    }

    /// Sends a request about `topic`/`partition` to its leader: `call` makes the request over
    /// the connection it is given, once per attempt.
    async fn to_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(BrokerClient<Connection>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.to_leader_over(topic, partition, |connection| {
            let response = call(broker_client(connection));
            async move { response.await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Sends a request about `topic`/`partition` to its leader as [`Client::to_leader`] does,
    /// `call` making it over the bare connection (for RPCs answered beside tonic's codec).
    async fn to_leader_over<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        follow_leader(&self.shared.leaders, topic, partition, |target| {
            let response = self.connection(target.as_ref()).map(&mut call);
            async move { response?.await.map_err(ClientError::from) }
        })
        .await
    }

    /// Creates a topic and returns it as created.
    ///
    /// Broker reasons: `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME`, `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, ClientError> {
        let response = self
            .bootstrap()
            .create_topic(v1::CreateTopicRequest::from(spec))
            .await?
            .into_inner();
        topic_of(response.topic, "CreateTopic answered without the topic")
    }

    /// Sets topic configs (`set`, name and value) and removes others (`delete`: their
    /// defaults apply again), all or nothing; returns the topic as it is afterwards. Broker
    /// reasons: `UNKNOWN_TOPIC`, `INVALID_CONFIG` (naming the key).
    pub async fn alter_topic_configs(
        &self,
        topic: impl Into<String>,
        set: impl IntoIterator<Item = (String, String)>,
        delete: impl IntoIterator<Item = String>,
    ) -> Result<TopicInfo, ClientError> {
        let response = self
            .bootstrap()
            .alter_topic_configs(v1::AlterTopicConfigsRequest {
                topic: topic.into(),
                set: set.into_iter().collect(),
                delete: delete.into_iter().collect(),
            })
            .await?
            .into_inner();
        topic_of(
            response.topic,
            "AlterTopicConfigs answered without the topic",
        )
    }

    /// Deletes a topic and all of its data. Broker reason: `UNKNOWN_TOPIC`.
    pub async fn delete_topic(&self, name: impl Into<String>) -> Result<(), ClientError> {
        self.bootstrap()
            .delete_topic(v1::DeleteTopicRequest { name: name.into() })
            .await?;
        Ok(())
    }

    /// Lists the topics, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        let response = self
            .bootstrap()
            .list_topics(v1::ListTopicsRequest {})
            .await?
            .into_inner();
        let mut topics: Vec<TopicSummary> = response
            .topics
            .into_iter()
            .map(TopicSummary::from)
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Describes a topic: each partition's leader, replicas and offsets. Broker reason:
    /// `UNKNOWN_TOPIC`.
    pub async fn describe_topic(&self, name: impl Into<String>) -> Result<TopicInfo, ClientError> {
        let response = self
            .bootstrap()
            .describe_topic(v1::DescribeTopicRequest { name: name.into() })
            .await?
            .into_inner();
        topic_of(response.topic, "DescribeTopic answered without the topic")
    }

    /// Appends `records` to one partition of `topic` as one batch, and returns where they went.
    ///
    /// With a `partition`, the request goes to the partition's leader (see the crate's "Routing"
    /// section). With `None` the bootstrap broker picks the partition, from the first record's
    /// key hash, or round-robin for records without a key, and the request is not rerouted. The
    /// records of one call get consecutive offsets from [`ProduceOutcome::base_offset`], except
    /// those the topic's produce chain dropped or dead-lettered, which are listed in
    /// [`ProduceOutcome::rejected`].
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `NOT_LEADER`, `INVALID_RECORD`,
    /// `RECORD_TOO_LARGE`, `EMPTY_BATCH`, `UNAVAILABLE`; with a produce chain also
    /// `RECORD_REJECTED` (nothing stored; [`ClientError::rejected_records`] lists the records)
    /// and `MODULE_FAILED`. Two calls in flight at once may be
    /// stored in either order; wait for one before sending the next when order matters.
    pub async fn produce(
        &self,
        topic: impl Into<String>,
        partition: Option<u32>,
        records: Vec<ProducerRecord>,
        acks: Acks,
    ) -> Result<ProduceOutcome, ClientError> {
        let request = v1::ProduceRequest {
            topic: topic.into(),
            partition,
            records: records.into_iter().map(v1::Record::from).collect(),
            acks: v1::Acks::from(acks).into(),
            ..v1::ProduceRequest::default()
        };
        self.send_produce(request).await
    }

    /// Appends one record batch the caller encoded, in Kafka's record batch format v2
    /// ([`codec::BatchEncoder`](crate::codec::BatchEncoder), or any Kafka client library's
    /// encoder), to `topic`/`partition`, routed to the partition's leader. The broker validates
    /// it in full and stores it as it is (with its base offset and leader epoch set).
    ///
    /// When the batch carries a producer id (from [`Client::init_producer_id`]), epoch and base
    /// sequence, the request is idempotent: sent again after any failure, it is stored once,
    /// and the retry's answer ([`ProduceOutcome::duplicate`]) carries the original offsets.
    /// That is what [`Producer`](crate::Producer) does.
    ///
    /// Broker reasons: those of [`Client::produce`], and for an idempotent batch
    /// `OUT_OF_ORDER_SEQUENCE` (a batch before it is missing), `DUPLICATE_SEQUENCE_NUMBER` (a
    /// retry of a batch stored before the last five the partition remembers: it is stored, at
    /// offsets no longer known), `INVALID_PRODUCER_EPOCH` (a newer epoch of the producer fenced
    /// this one) and `UNKNOWN_PRODUCER_ID`.
    pub async fn produce_batch(
        &self,
        topic: impl Into<String>,
        partition: u32,
        batch: Bytes,
        acks: Acks,
    ) -> Result<ProduceOutcome, ClientError> {
        let request = v1::ProduceRequest {
            topic: topic.into(),
            partition: Some(partition),
            record_batch: batch,
            acks: v1::Acks::from(acks).into(),
            ..v1::ProduceRequest::default()
        };
        self.send_produce(request).await
    }

    async fn send_produce(
        &self,
        request: v1::ProduceRequest,
    ) -> Result<ProduceOutcome, ClientError> {
        let response = match request.partition {
            // A NOT_LEADER answer means nothing was stored, so sending again cannot duplicate.
            Some(partition) => {
                let topic = request.topic.clone();
                self.to_leader(&topic, partition, |mut broker| {
                    let request = request.clone();
                    async move { broker.produce(request).await }
                })
                .await?
            }
            None => self.bootstrap().produce(request).await?.into_inner(),
        };
        Ok(ProduceOutcome::from(response))
    }

    /// Asks the cluster for a producer id, for an idempotent producer: unique in the cluster and
    /// never issued again, with epoch 0. [`Producer`](crate::Producer) asks for one itself.
    pub async fn init_producer_id(&self) -> Result<ProducerId, ClientError> {
        let response = self
            .bootstrap()
            .init_producer_id(v1::InitProducerIdRequest {})
            .await?
            .into_inner();
        let epoch = i16::try_from(response.producer_epoch)
            .map_err(|_| ClientError::UnexpectedResponse("a producer epoch out of range"))?;
        Ok(ProducerId {
            id: response.producer_id,
            epoch,
        })
    }

    /// Reads committed records from one partition, waiting up to
    /// [`FetchSpec::max_wait_ms`] when none is available yet. Sent to the partition's leader (see
    /// the crate's "Routing" section).
    ///
    /// With [`FetchSpec::modules`] (or a topic consume chain), the broker runs the chain over
    /// the records read: only its output is returned, and the next fetch starts at
    /// [`Fetched::next_offset`].
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `OFFSET_OUT_OF_RANGE`, `NOT_LEADER`;
    /// with modules also `UNKNOWN_MODULE`, `INVALID_MODULE_PARAMS` and `MODULE_FAILED`.
    pub async fn fetch(&self, spec: FetchSpec) -> Result<Fetched, ClientError> {
        self.fetch_into(spec, |record| record).await
    }

    /// [`Client::fetch`], each record made what the caller keeps (`make`) as it is decoded.
    pub(crate) async fn fetch_into<R: AtOffset>(
        &self,
        spec: FetchSpec,
        make: impl FnMut(ConsumedRecord) -> R,
    ) -> Result<Fetched<R>, ClientError> {
        let (requested, max_records) = (spec.offset, spec.max_records);
        let request = v1::FetchRequest::try_from(spec)?;
        let response = self
            .to_leader_over(&request.topic, request.partition, |connection| {
                fetch_frames::fetch(connection, &request)
            })
            .await?;
        Fetched::from_wire_into(response, requested, max_records, make)
    }

    /// Subscribes to one partition: the stream yields each committed record from `start` on, as
    /// the broker commits them, and does not end on its own while the partition exists. Opened
    /// at the partition's leader (see the crate's "Routing" section). The topic's consume chain,
    /// if it has one, applies; [`Client::subscribe_with`] names a chain of its own.
    ///
    /// The stream ends after yielding its first error; a consumer that wants to continue
    /// subscribes again from the offset after the last record it got.
    pub async fn subscribe(
        &self,
        topic: impl Into<String>,
        partition: u32,
        start: StartAt,
    ) -> Result<RecordStream, ClientError> {
        self.subscribe_with(SubscribeSpec::new(topic, partition, start))
            .await
    }

    /// Subscribes as [`Client::subscribe`] does, with the options of `spec`: a module chain
    /// and a message size bound.
    ///
    /// The records are those the chain let through; what it rejected is not reported here, and
    /// a consumer that continues after an error should do so from the last
    /// [`SubscribedBatch::next_offset`], which [`Client::subscribe_batches`] gives.
    pub async fn subscribe_with(&self, spec: SubscribeSpec) -> Result<RecordStream, ClientError> {
        let batches = self.subscribe_batches(spec).await?;
        let records = batches.flat_map(|batch| {
            let items: Vec<Result<ConsumedRecord, ClientError>> = match batch {
                Ok(batch) => batch.records.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(records))
    }

    /// Subscribes as [`Client::subscribe_with`] does, yielding the broker's messages whole:
    /// records, the records the module chain rejected, and where the stream stands
    /// ([`SubscribedBatch::next_offset`]).
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `OFFSET_OUT_OF_RANGE`, `NOT_LEADER`;
    /// with modules also `UNKNOWN_MODULE`, `INVALID_MODULE_PARAMS`, and, in the stream,
    /// `MODULE_FAILED`.
    pub async fn subscribe_batches(&self, spec: SubscribeSpec) -> Result<BatchStream, ClientError> {
        // Earliest and latest start at a batch boundary; an offset may fall inside a batch,
        // whose records before it are skipped.
        let start = match spec.start {
            StartAt::Offset(offset) => offset,
            StartAt::Earliest | StartAt::Latest => 0,
        };
        let request = v1::SubscribeRequest::from(spec);
        let partition = request.partition;
        let batches = self
            .to_leader(&request.topic, partition, |mut broker| {
                let request = request.clone();
                async move { broker.subscribe(request).await }
            })
            .await?;
        let batches = batches
            // Statuses after the first error would describe the same failure.
            .scan((false, start), |(failed, position), message| {
                if *failed {
                    return futures::future::ready(None);
                }
                let item = message
                    .map_err(ClientError::from)
                    .and_then(|message| SubscribedBatch::from_wire(message, *position));
                match &item {
                    Ok(batch) => *position = batch.next_offset,
                    Err(_) => *failed = true,
                }
                futures::future::ready(Some(item))
            });
        Ok(Box::pin(batches))
    }

    /// Looks up an offset in one partition: the earliest, the latest (high watermark), or the
    /// first at or after a timestamp. Sent to the partition's leader (see the crate's "Routing"
    /// section).
    pub async fn list_offsets(
        &self,
        topic: impl Into<String>,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        let request = v1::ListOffsetsRequest {
            topic: topic.into(),
            partition,
            spec: Some(spec.into()),
        };
        let response = self
            .to_leader(&request.topic, partition, |mut broker| {
                let request = request.clone();
                async move { broker.list_offsets(request).await }
            })
            .await?;
        Ok(ListedOffset::from(response))
    }

    /// Describes the cluster: its nodes and the controller.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo, ClientError> {
        let response = self
            .bootstrap()
            .describe_cluster(v1::DescribeClusterRequest {})
            .await?
            .into_inner();
        Ok(ClusterInfo::from(response))
    }

    /// Adds the node `node_id`, serving at `address` and started with `weir broker --join`, to
    /// the cluster; returns the cluster as it is afterwards. One membership change at a time.
    ///
    /// Broker reasons: `NODE_ALREADY_EXISTS`, `INVALID_ARGUMENT`, `UNAVAILABLE`.
    pub async fn add_node(
        &self,
        node_id: u64,
        address: impl Into<String>,
    ) -> Result<ClusterInfo, ClientError> {
        let response = self
            .bootstrap()
            .add_node(v1::AddNodeRequest {
                node_id,
                address: address.into(),
            })
            .await?
            .into_inner();
        Ok(ClusterInfo::from(response))
    }

    /// Moves the replica of `topic`/`partition` on node `from` to node `to`, and returns the
    /// topic afterwards. Runs on the partition's leader (followed like the other partition
    /// requests); returns once the new replica has caught up and replaced the old one.
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `UNKNOWN_NODE`, `INVALID_ARGUMENT`,
    /// `NOT_LEADER`, `UNAVAILABLE`.
    pub async fn move_replica(
        &self,
        topic: impl Into<String>,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<TopicInfo, ClientError> {
        let request = v1::MoveReplicaRequest {
            topic: topic.into(),
            partition,
            from_node: from,
            to_node: to,
        };
        let response = self
            .to_leader(&request.topic, partition, |mut broker| {
                let request = request.clone();
                async move { broker.move_replica(request).await }
            })
            .await?;
        topic_of(response.topic, "MoveReplica answered without the topic")
    }

    /// Deletes the records of `topic`/`partition` below `before` (Kafka's DeleteRecords): the
    /// partition's log start moves up to it on every replica, and reads below it fail with
    /// `OFFSET_OUT_OF_RANGE`. Returns the log start after it. Sent to the partition's leader;
    /// an offset past the high watermark is `OFFSET_OUT_OF_RANGE`.
    pub async fn delete_records(
        &self,
        topic: impl Into<String>,
        partition: u32,
        before: u64,
    ) -> Result<u64, ClientError> {
        let request = v1::DeleteRecordsRequest {
            topic: topic.into(),
            partition,
            before_offset: before,
        };
        let response = self
            .to_leader(&request.topic, partition, |mut broker| {
                let request = request.clone();
                async move { broker.delete_records(request).await }
            })
            .await?;
        Ok(response.log_start_offset)
    }

    /// Registers `wasm` as version `version` of the module `name` (`None`: one more than the
    /// latest, 1 for a new name), and returns the module as registered. The broker validates
    /// and compiles the module before storing anything. Sent to the bootstrap broker, which
    /// hands the registration to the controller.
    ///
    /// Broker reasons: `INVALID_MODULE` (not wasm, forbidden imports, nothing Weir can call,
    /// too large), `MODULE_EXISTS`, `INVALID_ARGUMENT` (a bad name or version 0), `UNAVAILABLE`.
    pub async fn register_module(
        &self,
        name: impl Into<String>,
        version: Option<u32>,
        wasm: impl Into<Bytes>,
    ) -> Result<ModuleInfo, ClientError> {
        let response = self
            .bootstrap()
            .register_module(v1::RegisterModuleRequest {
                name: name.into(),
                version,
                wasm: wasm.into(),
            })
            .await?
            .into_inner();
        ModuleInfo::try_from(response)
    }

    /// Lists the registered modules, sorted by name, with their versions and attachments. The
    /// counters are those of the bootstrap broker.
    pub async fn list_modules(&self) -> Result<Vec<ModuleInfo>, ClientError> {
        let response = self
            .bootstrap()
            .list_modules(v1::ListModulesRequest {})
            .await?
            .into_inner();
        let mut modules = response
            .modules
            .into_iter()
            .map(ModuleInfo::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(modules)
    }

    /// Describes one module: its versions with their counters on the bootstrap broker (each
    /// node counts the runs it made; ask each node's address for the whole cluster's), and
    /// where it is attached. Broker reason: `UNKNOWN_MODULE`.
    pub async fn describe_module(
        &self,
        name: impl Into<String>,
    ) -> Result<ModuleInfo, ClientError> {
        let response = self
            .bootstrap()
            .describe_module(v1::DescribeModuleRequest { name: name.into() })
            .await?
            .into_inner();
        ModuleInfo::try_from(response)
    }

    /// Deletes one version of the module `name`, or every version with `None`.
    ///
    /// Broker reasons: `UNKNOWN_MODULE`, `MODULE_IN_USE` (attached to a topic: detach it
    /// first), `UNAVAILABLE`.
    pub async fn delete_module(
        &self,
        name: impl Into<String>,
        version: Option<u32>,
    ) -> Result<(), ClientError> {
        self.bootstrap()
            .delete_module(v1::DeleteModuleRequest {
                name: name.into(),
                version,
            })
            .await?;
        Ok(())
    }

    /// Appends `module` to the `path` chain of `topic`, and returns the topic with its chains
    /// afterwards. A module without a version is attached at the latest one, which the
    /// attachment then keeps. The broker first runs the module's `init` with the parameters.
    /// `on_reject` applies to the produce path; a consume-path attachment takes
    /// [`RejectPolicy::Reject`] (its rejections are reported to the consumer).
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_MODULE`, `INVALID_MODULE_PARAMS`,
    /// `INVALID_ARGUMENT` (e.g. a dead-letter topic that does not exist or is `topic` itself, or
    /// a policy on the consume path), `UNAVAILABLE`.
    pub async fn attach_module(
        &self,
        topic: impl Into<String>,
        module: ModuleRef,
        path: ModulePath,
        on_reject: RejectPolicy,
    ) -> Result<TopicInfo, ClientError> {
        let response = self
            .bootstrap()
            .attach_module(attach_request(topic.into(), module, path, on_reject))
            .await?
            .into_inner();
        topic_of(response.topic, "AttachModule answered without the topic")
    }

    /// Removes the module `name` from the `path` chain of `topic`, and returns the topic with
    /// its chains afterwards.
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_MODULE` (not in that chain), `UNAVAILABLE`.
    pub async fn detach_module(
        &self,
        topic: impl Into<String>,
        name: impl Into<String>,
        path: ModulePath,
    ) -> Result<TopicInfo, ClientError> {
        let response = self
            .bootstrap()
            .detach_module(v1::DetachModuleRequest {
                topic: topic.into(),
                name: name.into(),
                path: v1::ModulePath::from(path).into(),
            })
            .await?
            .into_inner();
        topic_of(response.topic, "DetachModule answered without the topic")
    }

    /// Removes the node `node_id`, which must hold no partition replicas, from the cluster;
    /// returns the cluster as it is afterwards.
    ///
    /// Broker reasons: `UNKNOWN_NODE`, `NODE_HAS_REPLICAS`, `UNAVAILABLE`.
    pub async fn remove_node(&self, node_id: u64) -> Result<ClusterInfo, ClientError> {
        let response = self
            .bootstrap()
            .remove_node(v1::RemoveNodeRequest { node_id })
            .await?
            .into_inner();
        Ok(ClusterInfo::from(response))
    }
}

/// A generated client over `channel` with the message size limits raised to
/// [`MAX_MESSAGE_BYTES`].
/// The topic a call answered with, or `missing` as the error when the broker left it out.
fn topic_of(
    topic: Option<v1::TopicDescription>,
    missing: &'static str,
) -> Result<TopicInfo, ClientError> {
    topic
        .map(TopicInfo::from)
        .ok_or(ClientError::UnexpectedResponse(missing))
}

/// A connection over `channel` that sends `credentials` with every request.
fn connection_over(channel: BrokerChannel, credentials: &Credentials) -> Connection {
    InterceptedService::new(channel, credentials.clone())
}

/// The generated gRPC client over `connection`, with the message size limits raised.
fn broker_client(connection: Connection) -> BrokerClient<Connection> {
    BrokerClient::new(connection)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bootstrap_list_names_the_address_it_cannot_use() {
        let err = Client::connect("127.0.0.1:7070, broker-2")
            .await
            .expect_err("no port");
        assert!(
            matches!(&err, ClientError::InvalidAddress { addr, .. } if addr == "broker-2"),
            "{err}"
        );
        // Nothing listens on port 1 of loopback: every address of the list was tried, and the
        // error names the last.
        let err = Client::connect("127.0.0.1:1,127.0.0.2:1")
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&err, ClientError::Connect { addr, .. } if addr == "127.0.0.2:1"),
            "{err}"
        );
    }
}
