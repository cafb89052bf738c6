//! `Fetch` answers read from the HTTP/2 frames they arrive in, beside tonic's codec.
//!
//! tonic decodes an answer by copying its body's frames into one buffer of its own, fresh for
//! each answer (the previous one's record batches still hold the last), so every fetched byte
//! was copied once more and its memory faulted in anew. Here the frames are kept as they came
//! and prost decodes from them: a record batch within one frame (the broker sends frames of up
//! to 1 MiB to this client, `address.rs`) is that frame's memory, and one that
//! spans frames is copied once, into memory of its exact size. The request goes over the same
//! [`Connection`] as every other call (its credentials, TLS and bootstrap failover), and the
//! answer's status is read as tonic reads it.

use std::future::poll_fn;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost::Message;
use tonic::{Code, Status};
use tower_service::Service;
use weir_proto::framing;
use weir_proto::v1::{FetchRequest, FetchResponse};

use crate::client::{Connection, MAX_MESSAGE_BYTES};

/// The path of the RPC.
const FETCH: &str = "/weir.v1.Broker/Fetch";

/// Sends `request` over `connection` and decodes the answer from its frames.
pub(crate) async fn fetch(
    mut connection: Connection,
    request: &FetchRequest,
) -> Result<FetchResponse, Status> {
    let body = framing::framed(request)
        .ok_or_else(|| Status::invalid_argument("a fetch request over 4 GiB"))?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(FETCH)
        .version(http::Version::HTTP_2)
        .header(http::header::TE, "trailers")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(tonic::body::Body::new(Full::new(body)))
        .map_err(|e| Status::internal(format!("building the fetch request: {e}")))?;
    poll_fn(|cx| connection.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let answer = connection
        .call(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    read_answer(answer).await
}

/// Decodes a unary answer from the frames of its body, or the error status it carries.
async fn read_answer<B>(answer: http::Response<B>) -> Result<FetchResponse, Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A trailers-only answer: the status is in the headers, and there is no message.
    if let Some(status) = Status::from_header_map(answer.headers()) {
        return Err(if status.code() == Code::Ok {
            Status::internal("the fetch was answered without a message")
        } else {
            status
        });
    }
    let http_status = answer.status();
    let limit = framing::PREFIX_BYTES + MAX_MESSAGE_BYTES;
    let collected = Limited::new(answer.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "the fetch answer is larger than the {MAX_MESSAGE_BYTES} bytes this client \
                     takes"
                ))
            } else {
                Status::from_error(e)
            }
        })?;
    match collected.trailers().and_then(Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status),
        None if http_status == http::StatusCode::OK => {
            return Err(Status::internal(
                "the fetch answer ended without a gRPC status",
            ));
        }
        None => return Err(status_of_http(http_status)),
    }
    let mut message = collected.aggregate();
    framing::unframe(&mut message)
        .map_err(|e| Status::internal(format!("the fetch answer {e}")))?;
    FetchResponse::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode the FetchResponse: {e}")))
}

/// The status of an answer that is not gRPC (a proxy's, say), by its HTTP status, as gRPC's
/// HTTP-to-gRPC status mapping has it.
fn status_of_http(status: http::StatusCode) -> Status {
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(
        code,
        format!("the fetch was answered with HTTP status {status}"),
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;

    use super::*;

    /// An answer whose body comes in `frames`, then `trailers`.
    fn answer(
        frames: Vec<Bytes>,
        trailers: Option<http::HeaderMap>,
    ) -> http::Response<tonic::body::Body> {
        let frames = frames
            .into_iter()
            .map(|f| Ok::<_, Infallible>(Frame::data(f)))
            .chain(trailers.map(|t| Ok(Frame::trailers(t))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        http::Response::new(tonic::body::Body::new(body))
    }

    fn status_trailers(code: Code, message: &str) -> http::HeaderMap {
        let mut trailers = http::HeaderMap::new();
        Status::new(code, message)
            .add_header(&mut trailers)
            .expect("valid status");
        trailers
    }

    fn ok() -> Option<http::HeaderMap> {
        Some(status_trailers(Code::Ok, ""))
    }

    /// An answer of two batches, the second large.
    fn response() -> FetchResponse {
        FetchResponse {
            high_watermark: 9,
            next_offset: 9,
            record_batches: vec![Bytes::from(vec![1; 300]), Bytes::from(vec![2; 100_000])],
            ..FetchResponse::default()
        }
    }

    #[tokio::test]
    async fn a_batch_within_one_frame_is_that_frames_memory() {
        let framed = framing::framed(&response()).expect("small");
        let decoded = read_answer(answer(vec![framed.clone()], ok()))
            .await
            .expect("a whole answer");
        assert_eq!(decoded, response());
        let frame = framed.as_ptr() as usize..framed.as_ptr() as usize + framed.len();
        for batch in &decoded.record_batches {
            assert!(
                frame.contains(&(batch.as_ptr() as usize)),
                "a batch of {} bytes was copied",
                batch.len()
            );
        }
    }

    #[tokio::test]
    async fn an_answer_cut_into_frames_anywhere_decodes_the_same() {
        let framed = framing::framed(&response()).expect("small");
        for size in [1, 7, 300, 16 * 1024] {
            let frames = framed.chunks(size).map(Bytes::copy_from_slice).collect();
            let decoded = read_answer(answer(frames, ok()))
                .await
                .expect("a whole answer");
            assert_eq!(decoded, response(), "frames of {size} bytes");
        }
    }

    #[tokio::test]
    async fn an_error_status_is_the_answer_whether_in_headers_or_trailers() {
        let mut trailers_only = answer(vec![], None);
        *trailers_only.headers_mut() = status_trailers(Code::NotFound, "UNKNOWN_TOPIC");
        let err = read_answer(trailers_only).await.expect_err("an error");
        assert_eq!(
            (err.code(), err.message()),
            (Code::NotFound, "UNKNOWN_TOPIC")
        );

        let framed = framing::framed(&response()).expect("small");
        let trailers = Some(status_trailers(Code::Unavailable, "going away"));
        let err = read_answer(answer(vec![framed], trailers))
            .await
            .expect_err("an error");
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn a_malformed_answer_is_an_error_naming_what_is_wrong() {
        let framed = framing::framed(&response()).expect("small");
        let no_status = read_answer(answer(vec![framed.clone()], None))
            .await
            .expect_err("no status");
        assert!(
            no_status.message().contains("without a gRPC status"),
            "{no_status}"
        );

        let cut = framed.slice(..framed.len() - 1);
        let cut = read_answer(answer(vec![cut], ok())).await.expect_err("cut");
        assert_eq!(cut.code(), Code::Internal);
        assert!(cut.message().contains("says"), "{cut}");

        let garbage = Bytes::from_static(b"\0\0\0\0\x02\xff\xff");
        let garbage = read_answer(answer(vec![garbage], ok()))
            .await
            .expect_err("garbage");
        assert!(garbage.message().contains("FetchResponse"), "{garbage}");

        let mut proxy = answer(vec![Bytes::from_static(b"<html>")], None);
        *proxy.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let proxy = read_answer(proxy).await.expect_err("not gRPC");
        assert_eq!(proxy.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn an_answer_beyond_the_message_bound_is_refused_before_it_is_all_held() {
        // The prefix claims the largest message, and frames keep coming past it.
        let frame = Bytes::from(vec![0; 1024 * 1024]);
        let frames = vec![frame; MAX_MESSAGE_BYTES / (1024 * 1024) + 1];
        let err = read_answer(answer(frames, ok()))
            .await
            .expect_err("too large");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("larger than"), "{err}");
    }
}
