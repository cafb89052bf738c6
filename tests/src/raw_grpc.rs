//! Requests sent as bytes already encoded: malformed messages, shapes the typed client could
//! only build by holding all of them decoded (millions of empty records), and fuzzed ones.

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

/// A client of any RPC, sending and receiving messages as bytes.
#[derive(Clone)]
pub struct RawGrpc {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawGrpc {
    /// Connects to the broker at `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?.connect().await?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX),
        })
    }

    /// Calls the unary method at `path` (`/package.Service/Method`) with `message`; returns
    /// the answer's bytes.
    pub async fn unary(&mut self, path: &str, message: Bytes) -> Result<Bytes, tonic::Status> {
        let path = PathAndQuery::try_from(path.to_owned())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        self.grpc
            .unary(tonic::Request::new(message), path, BytesCodec)
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
        let path = PathAndQuery::try_from(path.to_owned())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut stream = self
            .grpc
            .server_streaming(tonic::Request::new(message), path, BytesCodec)
            .await?
            .into_inner();
        stream.message().await
    }
}

/// Bytes both ways.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl tonic::codec::Decoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, Self::Error> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
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
