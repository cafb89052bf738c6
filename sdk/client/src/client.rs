//! [`Client`]: one connection to a broker and one method per `weir.v1.Broker` RPC.

use std::time::Duration;

use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1::{self, broker_client::BrokerClient};

use crate::{
    Acks, AddressError, ClientError, ClusterInfo, ConsumedRecord, FetchSpec, Fetched, ListedOffset,
    OffsetSpec, ProduceOutcome, ProducerRecord, RecordStream, StartAt, TopicInfo, TopicSpec,
    TopicSummary,
};

/// Largest gRPC message the client sends or accepts, in bytes. tonic's default of 4 MiB is below
/// one full fetch of large records plus framing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long the first connection may take before [`Client::connect`] gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings keep idle connections (e.g. a consumer in a long poll) from being dropped by
/// middleboxes, and detect a dead broker within interval + timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Weir broker.
///
/// Cloning is cheap and clones share the connection; requests from many tasks are multiplexed
/// on it. If the connection drops, the next request reconnects.
///
/// Cancel safety: every method sends one request. Dropping its future abandons the request on
/// the client side only; the broker may still carry it out (a produce may still be stored).
#[derive(Debug, Clone)]
pub struct Client {
    inner: BrokerClient<Channel>,
}

impl Client {
    /// Connects to the broker at `addr`, given as `HOST:PORT` or `http://HOST:PORT`.
    ///
    /// Fails with [`ClientError::InvalidAddress`] for an address it cannot parse and with
    /// [`ClientError::Connect`] when no connection is established within 5 seconds.
    pub async fn connect(addr: impl Into<String>) -> Result<Self, ClientError> {
        let addr = addr.into();
        let endpoint = endpoint(&addr).map_err(|source| ClientError::InvalidAddress {
            addr: addr.clone(),
            source,
        })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel, for transports [`Client::connect`] does not set up
    /// (custom TLS, in-process connectors). The message size limits are raised as in `connect`.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: BrokerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Creates a topic and returns it as created.
    ///
    /// Broker reasons: `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME`, `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, ClientError> {
        let response = self
            .inner
            .clone()
            .create_topic(v1::CreateTopicRequest::from(spec))
            .await?
            .into_inner();
        response
            .topic
            .map(TopicInfo::from)
            .ok_or(ClientError::UnexpectedResponse(
                "CreateTopic answered without the topic",
            ))
    }

    /// Deletes a topic and all of its data. Broker reason: `UNKNOWN_TOPIC`.
    pub async fn delete_topic(&self, name: impl Into<String>) -> Result<(), ClientError> {
        self.inner
            .clone()
            .delete_topic(v1::DeleteTopicRequest { name: name.into() })
            .await?;
        Ok(())
    }

    /// Lists the topics, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        let response = self
            .inner
            .clone()
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
            .inner
            .clone()
            .describe_topic(v1::DescribeTopicRequest { name: name.into() })
            .await?
            .into_inner();
        response
            .topic
            .map(TopicInfo::from)
            .ok_or(ClientError::UnexpectedResponse(
                "DescribeTopic answered without the topic",
            ))
    }

    /// Appends `records` to one partition of `topic` as one batch, and returns where they went.
    ///
    /// With `partition` `None` the broker picks it: from the first record's key hash, or
    /// round-robin for records without a key. The records of one call get consecutive offsets
    /// from [`ProduceOutcome::base_offset`], except those the topic's modules rejected, which are
    /// listed in [`ProduceOutcome::rejected`].
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `NOT_LEADER`, `INVALID_RECORD`,
    /// `RECORD_TOO_LARGE`, `EMPTY_BATCH`, `UNAVAILABLE`. Two calls in flight at once may be
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
        };
        let response = self.inner.clone().produce(request).await?.into_inner();
        Ok(ProduceOutcome::from(response))
    }

    /// Reads committed records from one partition, waiting up to
    /// [`FetchSpec::max_wait_ms`] when none is available yet.
    ///
    /// Broker reasons: `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `OFFSET_OUT_OF_RANGE`, `NOT_LEADER`.
    pub async fn fetch(&self, spec: FetchSpec) -> Result<Fetched, ClientError> {
        let request = v1::FetchRequest::try_from(spec)?;
        let response = self.inner.clone().fetch(request).await?.into_inner();
        Ok(Fetched::from(response))
    }

    /// Subscribes to one partition: the stream yields each committed record from `start` on, as
    /// the broker commits them, and does not end on its own while the partition exists.
    ///
    /// The stream ends after yielding its first error; a consumer that wants to continue
    /// subscribes again from the offset after the last record it got.
    pub async fn subscribe(
        &self,
        topic: impl Into<String>,
        partition: u32,
        start: StartAt,
    ) -> Result<RecordStream, ClientError> {
        let request = v1::SubscribeRequest {
            topic: topic.into(),
            partition,
            start: Some(v1::StartPosition::from(start)),
            max_bytes: 0,
        };
        let batches = self.inner.clone().subscribe(request).await?.into_inner();
        let records = batches
            .map(|batch| {
                let items: Vec<Result<ConsumedRecord, ClientError>> = match batch {
                    Ok(batch) => batch.records.into_iter().map(|r| Ok(r.into())).collect(),
                    Err(status) => vec![Err(status.into())],
                };
                futures::stream::iter(items)
            })
            .flatten()
            // Statuses after the first error would describe the same failure.
            .scan(false, |failed, item| {
                let stop = *failed;
                *failed |= item.is_err();
                futures::future::ready((!stop).then_some(item))
            });
        Ok(Box::pin(records))
    }

    /// Looks up an offset in one partition: the earliest, the latest (high watermark), or the
    /// first at or after a timestamp.
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
        let response = self.inner.clone().list_offsets(request).await?.into_inner();
        Ok(ListedOffset::from(response))
    }

    /// Describes the cluster: its nodes and the controller.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo, ClientError> {
        let response = self
            .inner
            .clone()
            .describe_cluster(v1::DescribeClusterRequest {})
            .await?
            .into_inner();
        Ok(ClusterInfo::from(response))
    }
}

/// The endpoint for a broker address, with Weir's connection settings.
fn endpoint(addr: &str) -> Result<Endpoint, AddressError> {
    Ok(Endpoint::from(normalize_address(addr)?)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// `HOST:PORT` or `http://HOST:PORT[/]` as an `http` URI. The port is required, as in Kafka's
/// bootstrap addresses, because a default of 80 would only hide a typo. TLS is not built in yet,
/// so `https` (and every other scheme) is refused rather than silently sent in clear text.
fn normalize_address(addr: &str) -> Result<tonic::codegen::http::Uri, AddressError> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    let with_scheme = match addr.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => addr.to_owned(),
        Some((scheme, _)) => {
            return Err(AddressError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            });
        }
        None => format!("http://{addr}"),
    };
    let uri: tonic::codegen::http::Uri = with_scheme.parse().map_err(AddressError::Malformed)?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(AddressError::Empty);
    }
    // `Uri::port` is `None` both without a port and with an unparsable one; tell them apart.
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, after_ipv6)| after_ipv6);
    match after_host.rsplit_once(':') {
        None => Err(AddressError::MissingPort),
        Some((_, port)) if port.parse::<u16>().is_err() => Err(AddressError::InvalidPort {
            port: port.to_owned(),
        }),
        Some(_) => Ok(uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(addr: &str) -> String {
        normalize_address(addr)
            .unwrap_or_else(|err| panic!("{addr:?} should parse: {err}"))
            .to_string()
    }

    #[test]
    fn host_port_gets_the_http_scheme() {
        assert_eq!(normalized("127.0.0.1:7070"), "http://127.0.0.1:7070/");
        assert_eq!(normalized(" localhost:7070 "), "http://localhost:7070/");
        assert_eq!(normalized("[::1]:7070"), "http://[::1]:7070/");
    }

    #[test]
    fn http_addresses_are_kept() {
        assert_eq!(normalized("http://broker-1:7070"), "http://broker-1:7070/");
        assert_eq!(normalized("HTTP://broker-1:7070/"), "http://broker-1:7070/");
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        assert!(matches!(
            normalize_address("https://broker:7070"),
            Err(AddressError::UnsupportedScheme { scheme }) if scheme == "https"
        ));
        assert!(matches!(normalize_address("   "), Err(AddressError::Empty)));
        assert!(matches!(
            normalize_address("http://"),
            Err(AddressError::Malformed(_) | AddressError::Empty)
        ));
        assert!(matches!(
            normalize_address("broker:port"),
            Err(AddressError::InvalidPort { port }) if port == "port"
        ));
        assert!(matches!(
            normalize_address("broker"),
            Err(AddressError::MissingPort)
        ));
        assert!(matches!(
            normalize_address("http://broker"),
            Err(AddressError::MissingPort)
        ));
        assert!(matches!(
            normalize_address("a b:7070"),
            Err(AddressError::Malformed(_))
        ));
    }

    #[test]
    fn every_valid_address_makes_an_endpoint() {
        let endpoint = endpoint("localhost:7070").expect("valid address");
        assert_eq!(endpoint.uri().to_string(), "http://localhost:7070/");
    }
}
