//! Requests sent as bytes already encoded: malformed messages, shapes the typed client could
//! only build by holding all of them decoded (millions of empty records), and fuzzed ones.

use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::prost::Message;
use weir_proto::v1 as pb;

const PRODUCE: &str = "/weir.v1.Broker/Produce";

/// Every unary RPC of `weir.v1.Broker` (Subscribe streams and is called apart).
pub const UNARY_RPCS: &[&str] = &[
    "CreateTopic",
    "AlterTopicConfigs",
    "DeleteTopic",
    "ListTopics",
    "DescribeTopic",
    "Produce",
    "InitProducerId",
    "Fetch",
    "ListOffsets",
    "DescribeCluster",
    "AddNode",
    "RemoveNode",
    "MoveReplica",
    "DeleteRecords",
    "RegisterModule",
    "ListModules",
    "DescribeModule",
    "DeleteModule",
    "AttachModule",
    "DetachModule",
    "JoinGroup",
    "GroupHeartbeat",
    "LeaveGroup",
    "CommitOffsets",
    "FetchCommittedOffsets",
    "ListGroups",
    "DescribeGroup",
    "ResetGroupOffsets",
    "DeleteGroup",
    "CreateUser",
    "SetUserPassword",
    "DeleteUser",
    "ListUsers",
    "CreateAcls",
    "DeleteAcls",
    "ListAcls",
];

/// A client of any RPC, sending and receiving messages as bytes.
#[derive(Clone)]
pub struct RawGrpc {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawGrpc {
    /// Connects to the broker at `url` (a connection of its own).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?.connect().await?;
        Ok(Self::over(channel))
    }

    /// A client over `channel`, sharing its connection.
    pub fn over(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX),
        }
    }

    /// Calls the unary method at `path` (`/package.Service/Method`) with `message`; returns
    /// the answer's bytes.
    pub async fn unary(&mut self, path: &str, message: Bytes) -> Result<Bytes, tonic::Status> {
        let path = self.ready(path).await?;
        self.grpc
            .unary(tonic::Request::new(message), path, BytesCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls the unary method at `path` with `message` and then never ends the request's
    /// body: the broker holds what it read until it answers, or this future is dropped.
    pub async fn unary_unfinished(
        &mut self,
        path: &str,
        message: Bytes,
    ) -> Result<Bytes, tonic::Status> {
        let path = self.ready(path).await?;
        let body = futures::stream::iter([message]).chain(futures::stream::pending());
        self.grpc
            .client_streaming(tonic::Request::new(body), path, BytesCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls the server-streaming method at `path` with `message`; returns the first message
    /// of the answer, if any.
    pub async fn first_of_stream(
        &mut self,
        path: &str,
        message: Bytes,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let path = self.ready(path).await?;
        let mut stream = self
            .grpc
            .server_streaming(tonic::Request::new(message), path, BytesCodec)
            .await?
            .into_inner();
        stream.message().await
    }

    /// Waits until the connection takes a call, and parses `path`.
    async fn ready(&mut self, path: &str) -> Result<PathAndQuery, tonic::Status> {
        let path = PathAndQuery::try_from(path.to_owned())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(path)
    }
}

/// A client of the Produce RPC that sends an encoded `ProduceRequest` as it is.
#[derive(Clone)]
pub struct RawProducer {
    grpc: RawGrpc,
}

impl RawProducer {
    /// Connects to the broker at `url` (a connection of its own).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: RawGrpc::connect(url).await?,
        })
    }

    /// A producer over `channel`, sharing its connection.
    pub fn over(channel: Channel) -> Self {
        Self {
            grpc: RawGrpc::over(channel),
        }
    }

    /// Sends `message` (an encoded `ProduceRequest`, or anything else) and decodes the answer.
    pub async fn produce(&mut self, message: Bytes) -> Result<pb::ProduceResponse, tonic::Status> {
        decode(self.grpc.unary(PRODUCE, message).await?)
    }

    /// Sends `message` and then never ends the request's body: the broker holds what it read
    /// until it answers, or this future is dropped.
    pub async fn produce_unfinished(
        &mut self,
        message: Bytes,
    ) -> Result<pb::ProduceResponse, tonic::Status> {
        decode(self.grpc.unary_unfinished(PRODUCE, message).await?)
    }
}

fn decode(answer: Bytes) -> Result<pb::ProduceResponse, tonic::Status> {
    pb::ProduceResponse::decode(answer).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// Bytes both ways.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
