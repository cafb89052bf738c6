//! Produce requests sent as bytes already encoded: malformed messages, and shapes the typed
//! client could only build by holding all of them decoded (millions of empty records).

use bytes::{BufMut, Bytes};
use futures::StreamExt;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use weir_proto::v1 as pb;

const PRODUCE: &str = "/weir.v1.Broker/Produce";

/// A client of the Produce RPC that sends an encoded `ProduceRequest` as it is.
#[derive(Clone)]
pub struct RawProducer {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawProducer {
    /// Connects to the broker at `url` (a connection of its own).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?.connect().await?;
        Ok(Self::over(channel))
    }

    /// A producer over `channel`, sharing its connection.
    pub fn over(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX),
        }
    }

    /// Sends `message` (an encoded `ProduceRequest`, or anything else) and decodes the answer.
    pub async fn produce(&mut self, message: Bytes) -> Result<pb::ProduceResponse, tonic::Status> {
        self.ready().await?;
        self.grpc
            .unary(
                tonic::Request::new(message),
                PathAndQuery::from_static(PRODUCE),
                RawCodec,
            )
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sends `message` and then never ends the request's body: the broker holds what it read
    /// until it answers, or this future is dropped.
    pub async fn produce_unfinished(
        &mut self,
        message: Bytes,
    ) -> Result<pb::ProduceResponse, tonic::Status> {
        self.ready().await?;
        let body = futures::stream::iter([message]).chain(futures::stream::pending());
        self.grpc
            .client_streaming(
                tonic::Request::new(body),
                PathAndQuery::from_static(PRODUCE),
                RawCodec,
            )
            .await
            .map(tonic::Response::into_inner)
    }

    async fn ready(&mut self) -> Result<(), tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }
}

/// Encodes bytes as they are; decodes a `ProduceResponse`.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = pb::ProduceResponse;
    type Encoder = RawCodec;
    type Decoder = tonic_prost::ProstDecoder<pb::ProduceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}
