//! The `Fetch` RPC's answers, sent with the stored record batches as they are.
//!
//! tonic encodes a response message into one buffer of its own before sending it, which copies
//! every byte of a fetch's record batches once more: at 1 KiB records that copy and the fresh
//! memory it takes were a third of the broker's work per fetched byte. Here the `Fetch` RPC is
//! served beside tonic's generated service ([`crate::beside_tonic`]): the request is decoded
//! and handled by the same [`Broker::fetch`] (authentication, authorization, metrics and errors
//! all as before), and the answer goes out as a gRPC message of several pieces: the response's
//! other fields as prost encodes them, then each stored batch's field key and length, then the
//! batch's bytes themselves, which hyper hands to the socket without copying. The bytes on the
//! wire are the ones prost would write (the batches are the last field, written last in either
//! case).
//!
//! A stored batch served this way shares the memory of the storage read it came from, which
//! holds that read transaction open, and an open read transaction keeps redb from reusing the
//! pages freed since (retention's, compaction's). An answer normally leaves within
//! milliseconds; one a client is slow to take (or never takes: a stopped process whose
//! connection stays open) copies what is left of it after [`HOLD_STORAGE_FOR`] and lets go.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio::task::AbortHandle;
use tonic::Status;
use tonic::body::Body;
use weir_proto::v1::broker_server::Broker;
use weir_proto::v1::{FetchRequest, FetchResponse};

use crate::admission::GRPC_PREFIX;
use crate::beside_tonic::{grpc_response, ok_trailers, read_request};
use crate::lock;
use crate::service::BrokerService;

/// `FetchResponse.record_batches`'s field number.
const RECORD_BATCHES_FIELD: u32 = 6;
/// Batches smaller than this are copied into the piece before them rather than sent as pieces
/// of their own: a small copy costs less than a frame and a write of its own.
const COPY_BELOW: usize = 4 * 1024;
/// How long an answer may hold on to stored batches' memory before copying what it has not
/// sent yet.
const HOLD_STORAGE_FOR: Duration = Duration::from_secs(10);

/// Decodes a `Fetch` request, handles it as tonic's service would, and frames the answer.
pub(crate) async fn fetch(
    service: &BrokerService,
    request: http::Request<Body>,
    max_answer_bytes: usize,
) -> Result<http::Response<Body>, Status> {
    let request = read_request::<FetchRequest>(request, "FetchRequest").await?;
    let (metadata, answer, _) = Broker::fetch(service, request).await?.into_parts();
    let pieces = frame(answer, max_answer_bytes)?;
    let body = Pieces::new(pieces, ok_trailers()?, HOLD_STORAGE_FOR);
    Ok(grpc_response(metadata, Body::new(body)))
}

/// `answer` as a gRPC message in pieces: the prefix and every field but the batches first, then
/// each batch's key and length followed by the batch itself (small ones copied in).
fn frame(mut answer: FetchResponse, max_answer_bytes: usize) -> Result<Vec<Bytes>, Status> {
    let batches = std::mem::take(&mut answer.record_batches);
    let field_len = |batch: &Bytes| {
        key_len(RECORD_BATCHES_FIELD) + encoded_len_varint(batch.len() as u64) + batch.len()
    };
    let head_len = answer.encoded_len();
    let message_len = head_len + batches.iter().map(field_len).sum::<usize>();
    let too_large = || {
        Status::out_of_range(format!(
            "the answer of {message_len} bytes is larger than the {max_answer_bytes} this server \
             sends"
        ))
    };
    if message_len > max_answer_bytes {
        return Err(too_large());
    }
    let prefix_len = u32::try_from(message_len).map_err(|_| too_large())?;
    let mut pieces = Vec::with_capacity(2 * batches.len() + 1);
    let mut head = BytesMut::with_capacity(GRPC_PREFIX + head_len + 16);
    head.put_u8(0);
    head.put_u32(prefix_len);
    answer.encode_raw(&mut head);
    for batch in batches {
        encode_key(RECORD_BATCHES_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(batch.len() as u64, &mut head);
        if batch.len() < COPY_BELOW {
            head.extend_from_slice(&batch);
        } else {
            pieces.push(head.split().freeze());
            pieces.push(batch);
        }
    }
    if !head.is_empty() {
        pieces.push(head.freeze());
    }
    Ok(pieces)
}

/// A response body of pieces sent as they are, then the gRPC status trailers.
struct Pieces {
    left: Arc<Mutex<Left>>,
    /// Copies what is left of the pieces once they have waited long enough; stopped when the
    /// body is dropped (sent, or its request gone).
    detacher: Option<AbortHandle>,
}

/// What a [`Pieces`] body has not sent yet.
struct Left {
    pieces: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Pieces {
    /// A body of `pieces`, then `trailers`. Pieces that share memory with storage (there are
    /// such when there is more than one: a lone piece is the framing's own) are copied if the
    /// body still holds them after `hold_for`.
    fn new(pieces: Vec<Bytes>, trailers: http::HeaderMap, hold_for: Duration) -> Self {
        let shares_storage = pieces.len() > 1;
        let left = Arc::new(Mutex::new(Left {
            pieces: pieces.into(),
            trailers: Some(trailers),
        }));
        let detacher = shares_storage.then(|| {
            let left = Arc::downgrade(&left);
            tokio::spawn(async move {
                tokio::time::sleep(hold_for).await;
                if let Some(left) = left.upgrade() {
                    for piece in &mut lock(&left).pieces {
                        *piece = Bytes::copy_from_slice(piece);
                    }
                }
            })
            .abort_handle()
        });
        Self { left, detacher }
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        if let Some(detacher) = self.detacher.take() {
            detacher.abort();
        }
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut left = lock(&self.left);
        if let Some(piece) = left.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        Poll::Ready(left.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        let left = lock(&self.left);
        left.pieces.is_empty() && left.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use weir_proto::v1::{ConsumedRecord, RejectedOffset};

    use tonic::Code;

    use super::*;
    use crate::beside_tonic::tests::grpc_framed;

    fn answer(batch_sizes: &[usize]) -> FetchResponse {
        FetchResponse {
            records: vec![ConsumedRecord {
                offset: 7,
                value: Bytes::from_static(b"v"),
                ..ConsumedRecord::default()
            }],
            high_watermark: 300,
            log_start_offset: 2,
            next_offset: 150,
            rejected: vec![RejectedOffset {
                offset: 9,
                reason: "no".into(),
                module: "m".into(),
            }],
            record_batches: batch_sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
                .collect(),
        }
    }

    #[test]
    fn the_pieces_are_the_bytes_prost_writes_and_large_batches_go_uncopied() {
        for sizes in [
            &[][..],
            &[10],
            &[100_000],
            &[5_000, 10, 200_000, 4_096, 4_095],
            &[127, 128, 16_383, 16_384],
        ] {
            let answer = answer(sizes);
            let pieces = frame(answer.clone(), usize::MAX).expect("within bounds");
            assert_eq!(
                pieces.concat(),
                grpc_framed(&answer),
                "batches of {sizes:?}"
            );
            // Each batch of COPY_BELOW bytes or more is a piece of its own, the very bytes.
            for batch in answer
                .record_batches
                .iter()
                .filter(|b| b.len() >= COPY_BELOW)
            {
                assert!(
                    pieces.iter().any(|p| p.as_ptr() == batch.as_ptr()),
                    "a batch of {} bytes was copied",
                    batch.len()
                );
            }
        }
    }

    /// Marks when the memory it owns is let go.
    struct Owned(Vec<u8>, Arc<std::sync::atomic::AtomicBool>);

    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Owned {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_answer_not_taken_in_time_lets_go_of_the_stored_batches_it_still_holds() {
        use std::sync::atomic::{AtomicBool, Ordering};

        use http_body_util::BodyExt;

        let released = Arc::new(AtomicBool::new(false));
        let stored = Bytes::from_owner(Owned(vec![7; 64 * 1024], released.clone()));
        let mut answer = answer(&[]);
        answer.record_batches = vec![stored.slice(..32 * 1024), stored.slice(32 * 1024..)];
        drop(stored);
        let expected = grpc_framed(&answer);
        let pieces = frame(answer, usize::MAX).expect("within bounds");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = Pieces::new(pieces, trailers, Duration::ZERO);
        // The client takes the first piece only, then nothing for a while.
        let first = body.frame().await.expect("a piece").expect("infallible");
        let first = first.into_data().expect("data");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !released.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stored batches were not let go"
            );
            tokio::task::yield_now().await;
        }
        // What is sent after is the same bytes, from copies.
        let rest = body.collect().await.expect("infallible");
        assert_eq!(
            rest.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        let mut sent = first.to_vec();
        sent.extend_from_slice(&rest.to_bytes());
        assert_eq!(sent, expected);
    }

    #[tokio::test]
    async fn an_answer_sent_in_time_keeps_no_copier_behind() {
        let stored = Bytes::from(vec![1; 64 * 1024]);
        let mut answer = answer(&[]);
        answer.record_batches = vec![stored];
        let pieces = frame(answer, usize::MAX).expect("within bounds");
        let body = Pieces::new(pieces, http::HeaderMap::new(), Duration::from_secs(3600));
        let detacher = body.detacher.clone().expect("a stored batch is held");
        let _ = http_body_util::BodyExt::collect(body).await;
        // Dropped with the body: no task left waiting an hour for each answer.
        for _ in 0..100 {
            if detacher.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(detacher.is_finished());
    }

    #[test]
    fn an_answer_larger_than_the_bound_is_an_error_not_a_truncated_message() {
        let answer = answer(&[1_000]);
        let len = answer.encoded_len();
        assert!(frame(answer.clone(), len).is_ok());
        let err = frame(answer, len - 1).unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
        assert!(err.message().contains("larger than"), "{err}");
    }
}
