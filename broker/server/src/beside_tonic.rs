//! The RPCs that carry record batches, served beside tonic's generated service: `Produce`'s
//! request and `Fetch`'s answer ([`crate::fetch_answer`]).
//!
//! tonic decodes a request by copying its body's frames into one buffer of its own, grown as
//! they arrive, and encodes an answer the same way; for the RPCs that carry record batches that
//! is a copy of every batch (two or three, counting the buffer's growth), into fresh memory that
//! the kernel zeroes for each request. Here those RPCs are decoded from the frames the body
//! came in, as admission passed them on ([`crate::admission`]): a `bytes` field that lies
//! within one frame (a record batch, a record's value) is shared with the frame, and one that
//! spans frames is copied once, into memory of its exact size. They are then handled by the
//! same [`Broker`] methods tonic's service calls (authentication, authorization, metrics and
//! errors all as before). Every other RPC goes to tonic's service unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower_service::Service;
use weir_proto::framing::{self, UnframeError};
use weir_proto::v1::ProduceRequest;
use weir_proto::v1::broker_server::Broker;

use crate::fetch_answer;
use crate::service::BrokerService;

/// The paths of the RPCs served here.
const PRODUCE: &str = "/weir.v1.Broker/Produce";
const FETCH: &str = "/weir.v1.Broker/Fetch";

/// tonic's service for `weir.v1.Broker` (`inner`), with `Produce` and `Fetch` served here.
#[derive(Clone)]
pub(crate) struct BesideTonic<S> {
    inner: S,
    service: Arc<BrokerService>,
    /// The largest answer sent, as tonic's `max_encoding_message_size` would bound it.
    max_answer_bytes: usize,
}

impl<S> BesideTonic<S> {
    /// Serves `Produce` and `Fetch` with `service` (the one `inner` serves every other RPC
    /// with).
    pub(crate) fn new(inner: S, service: Arc<BrokerService>, max_answer_bytes: usize) -> Self {
        Self {
            inner,
            service,
            max_answer_bytes,
        }
    }
}

impl<S: NamedService> NamedService for BesideTonic<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for BesideTonic<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (service, max_answer_bytes) = (self.service.clone(), self.max_answer_bytes);
        let answer =
            match request.uri().path() {
                PRODUCE => Box::pin(async move { produce(&service, request).await })
                    as Pin<Box<dyn Future<Output = _> + Send>>,
                FETCH => Box::pin(async move {
                    fetch_answer::fetch(&service, request, max_answer_bytes).await
                }),
                _ => return Box::pin(self.inner.call(request)),
            };
        Box::pin(async move {
            Ok(match answer.await {
                Ok(answer) => answer,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Decodes a `Produce` request, handles it as tonic's service would, and answers.
async fn produce(
    service: &BrokerService,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let request = read_request::<ProduceRequest>(request, "ProduceRequest").await?;
    let (metadata, answer, _) = Broker::produce(service, request).await?.into_parts();
    let message =
        framing::framed(&answer).ok_or_else(|| Status::internal("a produce answer over 4 GiB"))?;
    let trailers = ok_trailers()?;
    let body = Full::new(message).with_trailers(async move { Some(Ok(trailers)) });
    Ok(grpc_response(metadata, Body::new(body)))
}

/// The unary request `request` carries, decoded from the frames its body came in (`name` is
/// the message's, for errors).
pub(crate) async fn read_request<M: Message + Default>(
    request: http::Request<Body>,
    name: &str,
) -> Result<tonic::Request<M>, Status> {
    let (parts, body) = request.into_parts();
    // Admission has read the whole body already (and bounded it).
    let mut body = body
        .collect()
        .await
        .map_err(|e| Status::internal(format!("reading the request: {e}")))?
        .aggregate();
    framing::unframe(&mut body).map_err(|e| {
        let code = match e {
            // As tonic's service answers, compression being off on this server.
            UnframeError::Compressed => Code::Unimplemented,
            _ => Code::Internal,
        };
        Status::new(code, format!("the request {e}"))
    })?;
    let message = M::decode(body)
        .map_err(|e| Status::internal(format!("failed to decode the {name}: {e}")))?;
    Ok(tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// The trailers of a successful call.
pub(crate) fn ok_trailers() -> Result<http::HeaderMap, Status> {
    let mut trailers = http::HeaderMap::new();
    Status::ok("").add_header(&mut trailers)?;
    Ok(trailers)
}

/// A gRPC answer: `metadata` as its headers, and `body`.
pub(crate) fn grpc_response(metadata: MetadataMap, body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    *response.headers_mut() = metadata.into_headers();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use weir_proto::v1::{FetchRequest, Record};

    use super::*;

    /// `message` as tonic frames it: the prefix, then prost's encoding.
    pub(crate) fn grpc_framed(message: &impl Message) -> Bytes {
        framing::framed(message).expect("a test message is small")
    }

    /// A request whose body comes in the frames `frames`.
    fn request(frames: Vec<Bytes>) -> http::Request<Body> {
        let frames = futures::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, Infallible>(http_body::Frame::data(f))),
        );
        http::Request::new(Body::new(http_body_util::StreamBody::new(frames)))
    }

    #[tokio::test]
    async fn requests_must_be_one_whole_uncompressed_message() {
        let message = FetchRequest {
            topic: "t".into(),
            offset: 5,
            ..FetchRequest::default()
        };
        let framed = grpc_framed(&message);
        let read = |frames| read_request::<FetchRequest>(request(frames), "FetchRequest");
        let decoded = read(vec![framed.clone()]).await.unwrap();
        assert_eq!(decoded.into_inner(), message);
        let cut = read(vec![framed.slice(..framed.len() - 1)]).await;
        assert_eq!(cut.unwrap_err().code(), Code::Internal);
        let short = read(vec![Bytes::from_static(b"\0\0")]).await;
        assert_eq!(short.unwrap_err().code(), Code::Internal);
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        let compressed = read(vec![Bytes::from(compressed)]).await;
        assert_eq!(compressed.unwrap_err().code(), Code::Unimplemented);
        let garbage = read(vec![Bytes::from_static(b"\0\0\0\0\x02\xff\xff")]).await;
        let garbage = garbage.unwrap_err();
        assert_eq!(garbage.code(), Code::Internal);
        assert!(garbage.message().contains("FetchRequest"), "{garbage}");
    }

    #[tokio::test]
    async fn a_batch_within_one_frame_is_shared_and_one_across_frames_copied_whole() {
        let batch = Bytes::from(vec![9; 100_000]);
        let message = ProduceRequest {
            topic: "t".into(),
            record_batch: batch.clone(),
            records: vec![Record {
                value: Bytes::from_static(b"v"),
                ..Record::default()
            }],
            ..ProduceRequest::default()
        };
        let framed = grpc_framed(&message);
        // In one frame: the decoded batch is that frame's memory.
        let one = read_request::<ProduceRequest>(request(vec![framed.clone()]), "ProduceRequest")
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one, message);
        let start = framed.as_ptr() as usize;
        let at = one.record_batch.as_ptr() as usize;
        assert!(
            (start..start + framed.len()).contains(&at),
            "the batch was copied"
        );
        // In frames of 16 KiB, as HTTP/2 sends by default: the same message.
        let frames = framed
            .chunks(16 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        let many = read_request::<ProduceRequest>(request(frames), "ProduceRequest")
            .await
            .unwrap()
            .into_inner();
        assert_eq!(many, message);
    }
}
