//! Admission: what a request may make the node hold before any handler sees it.
//!
//! Every request to the client API (`weir.v1.Broker`) and the peer API (`weir.internal.v1.Raft`)
//! is read here in full before it is decoded, and its bytes are charged, as they arrive, to its
//! connection's budget and the node's. A request that would pass either budget is answered at
//! once with `OVERLOADED` (RESOURCE_EXHAUSTED, retriable) and what it held is released; a request
//! larger than the largest one the node accepts is `REQUEST_TOO_LARGE` before it is buffered; a
//! body that stalls for [`BODY_IDLE_TIMEOUT`] is `REQUEST_TIMED_OUT`. What was charged is
//! released when the handler answers (for a stream, when its first response is ready), so the
//! budgets bound the request bytes the node holds at once. With HTTP/2's limit on concurrent
//! streams per connection, no client can make the node hold unbounded request memory.
//!
//! A produce request's records are counted before they are decoded: protobuf decodes an empty
//! record of two bytes on the wire into about a hundred in memory, so a request of millions of
//! empty records would take gigabytes. Every record takes at least [`MIN_RECORD_BYTES`] in a
//! record batch, so more than `max_batch_bytes / MIN_RECORD_BYTES` of them can never be stored,
//! and such a request is refused unread.
//!
//! A body is passed on in the frames it came in (small ones joined, see [`ReadBody`]), not
//! copied into one buffer: tonic's decoder copies them into its own, and `Produce`, which
//! carries record batches, is decoded from them where they lie ([`crate::beside_tonic`]).
//!
//! Health checks and reflection pass through untouched: they are small, and reflection streams.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use crate::error::BrokerError;

/// The client API's path prefix.
const CLIENT_API: &str = "/weir.v1.Broker/";
/// The peer API's path prefix.
const PEER_API: &str = "/weir.internal.v1.Raft/";
/// The produce RPC, whose records are counted before decoding.
const PRODUCE: &str = "/weir.v1.Broker/Produce";
/// The fewest bytes a record takes in a Kafka v2 record batch: its length, attributes,
/// timestamp and offset deltas, key and value lengths and header count, one byte each.
pub const MIN_RECORD_BYTES: usize = 7;
/// How long a request's body may go without a byte arriving.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The gRPC message prefix: a compression flag and a 4-byte length.
pub(crate) const GRPC_PREFIX: usize = weir_proto::framing::PREFIX_BYTES;
/// Frames of a request body smaller than this are joined with their neighbours rather than
/// kept each on its own, so a body of tiny frames costs its bytes, not a frame's bookkeeping
/// per byte.
const JOIN_FRAMES_BELOW: usize = 4096;

/// The admission limits of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Largest client request (its gRPC message), in bytes.
    pub max_request_bytes: usize,
    /// Largest peer request, in bytes.
    pub max_peer_request_bytes: usize,
    /// Client request bytes the node holds at once.
    pub node_bytes: usize,
    /// Client request bytes one connection holds at once.
    pub connection_bytes: usize,
    /// Peer request bytes the node holds at once.
    pub peer_bytes: usize,
    /// Most records in one produce request's `records`.
    pub max_produce_records: usize,
}

/// The budgets and counters shared by every connection.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    node: Arc<Semaphore>,
    peer: Arc<Semaphore>,
    connections: Mutex<HashMap<SocketAddr, Weak<Semaphore>>>,
    refused: [AtomicU64; REFUSAL_REASONS.len()],
}

/// The reasons admission refuses a request for, as the metrics label them.
pub const REFUSAL_REASONS: [&str; 3] = ["OVERLOADED", "REQUEST_TOO_LARGE", "REQUEST_TIMED_OUT"];

/// What a request holds while it is handled.
struct Charge {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// Where a request's bytes are charged.
enum Budget {
    Client { connection: Option<Arc<Semaphore>> },
    Peer,
}

impl Admission {
    /// Budgets for `limits`.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            node: Arc::new(Semaphore::new(limits.node_bytes)),
            peer: Arc::new(Semaphore::new(limits.peer_bytes)),
            connections: Mutex::new(HashMap::new()),
            refused: Default::default(),
        })
    }

    /// Client request bytes held now.
    pub fn client_bytes_in_flight(&self) -> usize {
        self.limits.node_bytes - self.node.available_permits()
    }

    /// Peer request bytes held now.
    pub fn peer_bytes_in_flight(&self) -> usize {
        self.limits.peer_bytes - self.peer.available_permits()
    }

    /// Requests refused so far, by reason (in the order of [`REFUSAL_REASONS`]).
    pub fn refused(&self) -> [u64; REFUSAL_REASONS.len()] {
        std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed))
    }

    fn count_refusal(&self, reason: &str) {
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// The budget of the connection from `peer`, shared by its requests in flight.
    fn connection(&self, peer: SocketAddr) -> Arc<Semaphore> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(budget) = connections.get(&peer).and_then(Weak::upgrade) {
            return budget;
        }
        // Entries of connections with nothing in flight are dead; sweep them as the map grows.
        if connections.len() >= 1024 && connections.len().is_power_of_two() {
            connections.retain(|_, budget| budget.strong_count() > 0);
        }
        let budget = Arc::new(Semaphore::new(self.limits.connection_bytes));
        connections.insert(peer, Arc::downgrade(&budget));
        budget
    }

    /// Reads `body` in full, charging its bytes as they arrive.
    async fn read(
        &self,
        budget: &Budget,
        max_bytes: usize,
        mut body: Body,
    ) -> Result<(Frames, Charge), BrokerError> {
        let mut read = ReadBody::default();
        let mut permits = Vec::new();
        loop {
            // A body may take long (a large snapshot over a slow link), but not stall.
            let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    return Err(BrokerError::RequestTimedOut(format!(
                        "the request's body stalled: nothing arrived for {BODY_IDLE_TIMEOUT:?}"
                    )));
                }
            };
            let frame = frame
                .map_err(|e| BrokerError::InvalidArgument(format!("reading the request: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if read.len + data.len() > max_bytes {
                return Err(BrokerError::RequestTooLarge(format!(
                    "the request is over {max_bytes} bytes, the most this node accepts"
                )));
            }
            permits.extend(self.charge(budget, data.len())?);
            read.push(data);
        }
        Ok((read.finish(), Charge { _permits: permits }))
    }

    /// Takes `bytes` from the budgets, or fails without taking any.
    fn charge(
        &self,
        budget: &Budget,
        bytes: usize,
    ) -> Result<Vec<OwnedSemaphorePermit>, BrokerError> {
        let Ok(bytes) = u32::try_from(bytes) else {
            return Err(BrokerError::RequestTooLarge(format!(
                "a request frame of {bytes} bytes"
            )));
        };
        let take = |semaphore: &Arc<Semaphore>, what: &str, limit: usize| {
            semaphore
                .clone()
                .try_acquire_many_owned(bytes)
                .map_err(|_| {
                    BrokerError::Overloaded(format!(
                        "{what} holds its limit of {limit} request bytes in flight; retry later"
                    ))
                })
        };
        match budget {
            Budget::Peer => Ok(vec![take(
                &self.peer,
                "this node's peer service",
                self.limits.peer_bytes,
            )?]),
            Budget::Client { connection } => {
                let mut permits = Vec::with_capacity(2);
                if let Some(connection) = connection {
                    permits.push(take(
                        connection,
                        "this connection",
                        self.limits.connection_bytes,
                    )?);
                }
                permits.push(take(&self.node, "this node", self.limits.node_bytes)?);
                Ok(permits)
            }
        }
    }

    /// Refuses a produce request whose `records` could never fit in a batch, before decoding.
    fn check_produce(&self, message: impl Buf) -> Result<(), BrokerError> {
        let records = count_produce_records(message);
        if records > self.limits.max_produce_records {
            return Err(BrokerError::RequestTooLarge(format!(
                "the request has {records} records; a batch of at most {} bytes holds at most {} (each takes at least {MIN_RECORD_BYTES} bytes)",
                self.limits.max_produce_records * MIN_RECORD_BYTES,
                self.limits.max_produce_records
            )));
        }
        Ok(())
    }

    /// Admits `request`: reads its body within the budgets and returns it, rebuilt, with what
    /// it holds; or the refusal to answer with.
    async fn admit(
        &self,
        request: http::Request<Body>,
    ) -> Result<(http::Request<Body>, Option<Charge>), BrokerError> {
        let path = request.uri().path();
        let (budget, max_bytes) = if path.starts_with(PEER_API) {
            (Budget::Peer, self.limits.max_peer_request_bytes)
        } else if path.starts_with(CLIENT_API) {
            let connection = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(|peer| self.connection(peer));
            (Budget::Client { connection }, self.limits.max_request_bytes)
        } else {
            return Ok((request, None));
        };
        let is_produce = path == PRODUCE;
        let (parts, body) = request.into_parts();
        let (body, charge) = self.read(&budget, max_bytes, body).await?;
        if is_produce && body.chunk().first() == Some(&0) {
            let mut message = body.clone();
            message.advance(GRPC_PREFIX);
            self.check_produce(message)?;
        }
        Ok((
            http::Request::from_parts(parts, Body::new(body)),
            Some(charge),
        ))
    }
}

/// How many `records` (field 3) a `ProduceRequest` message holds, read from its top-level
/// fields without decoding them. A malformed message counts what precedes the damage; the
/// decoder reports the damage itself.
fn count_produce_records(mut message: impl Buf) -> usize {
    const RECORDS_FIELD: u64 = 3;
    let mut records = 0;
    while let Some(key) = varint(&mut message) {
        let skip = match key & 7 {
            0 => varint(&mut message).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut message).and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.filter(|&s| s <= message.remaining()) else {
            break;
        };
        if key >> 3 == RECORDS_FIELD && key & 7 == 2 {
            records += 1;
        }
        message.advance(skip);
    }
    records
}

/// Takes a protobuf varint off the front of `bytes`.
fn varint(bytes: &mut impl Buf) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        if !bytes.has_remaining() {
            return None;
        }
        let byte = bytes.get_u8();
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A request body as it is read: frames of [`JOIN_FRAMES_BELOW`] bytes or more kept as they
/// arrived, smaller ones joined.
#[derive(Default)]
struct ReadBody {
    frames: VecDeque<Bytes>,
    /// Small frames read since the last large one, joined.
    small: BytesMut,
    /// Bytes read.
    len: usize,
}

impl ReadBody {
    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if data.len() < JOIN_FRAMES_BELOW {
            self.small.extend_from_slice(&data);
            return;
        }
        self.take_small();
        self.frames.push_back(data);
    }

    fn take_small(&mut self) {
        if !self.small.is_empty() {
            self.frames.push_back(self.small.split().freeze());
        }
    }

    fn finish(mut self) -> Frames {
        self.take_small();
        Frames {
            frames: self.frames,
            remaining: self.len,
        }
    }
}

/// A request body read in full, passed on in the frames it came in; none of them empty.
#[derive(Clone)]
struct Frames {
    frames: VecDeque<Bytes>,
    remaining: usize,
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.frames.front().map_or(&[], |frame| frame)
    }

    fn advance(&mut self, count: usize) {
        let mut count = count.min(self.remaining);
        self.remaining -= count;
        while let Some(front) = self.frames.front_mut() {
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.frames.pop_front();
        }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = self.frames.pop_front();
        if let Some(frame) = &frame {
            self.remaining -= frame.len();
        }
        Poll::Ready(frame.map(|frame| Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

/// The tower layer that puts [`Admission`] in front of the gRPC services.
#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl AdmissionLayer {
    /// A layer admitting requests against `admission`'s budgets.
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }
}

impl<S> tower_layer::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// See [`AdmissionLayer`].
#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S> tower_service::Service<http::Request<Body>> for AdmissionService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The inner service was polled ready; the clone left behind takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        Box::pin(async move {
            match admission.admit(request).await {
                Ok((request, charge)) => {
                    let response = inner.call(request).await;
                    drop(charge);
                    response
                }
                Err(refusal) => {
                    admission.count_refusal(refusal.reason());
                    tracing::debug!(reason = refusal.reason(), error = %refusal, "request refused at admission");
                    Ok(refusal.to_status().into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use weir_proto::v1 as pb;

    use super::*;

    #[test]
    fn produce_records_are_counted_without_decoding() {
        let request = pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(3),
            records: vec![pb::Record::default(); 1000],
            acks: pb::Acks::All as i32,
            record_batch: Bytes::from_static(b"ignored"),
            ..Default::default()
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_produce_records(&bytes[..]), 1000);
        // A cut message counts what precedes the cut.
        assert!(count_produce_records(&bytes[..bytes.len() / 2]) < 1000);
        assert_eq!(count_produce_records(&[0xffu8; 16][..]), 0);
        assert_eq!(count_produce_records(&[][..]), 0);
        // In frames cut anywhere, even inside a varint, the count is the same.
        for frame_len in [1, 2, 3, 7, 4096, 5000] {
            let mut read = ReadBody::default();
            for frame in bytes.chunks(frame_len) {
                read.push(Bytes::copy_from_slice(frame));
            }
            assert_eq!(count_produce_records(read.finish()), 1000, "{frame_len}");
        }
    }

    #[tokio::test]
    async fn a_body_passes_on_in_its_large_frames_with_small_ones_joined() {
        let sizes = [10, 20, 5000, 1, 4096, 4095, 6000, 3];
        let mut read = ReadBody::default();
        let mut sent = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let frame = vec![i as u8; size];
            sent.extend_from_slice(&frame);
            read.push(Bytes::from(frame));
        }
        let body = read.finish();
        let lens: Vec<usize> = body.frames.iter().map(Bytes::len).collect();
        assert_eq!(lens, [30, 5000, 1, 4096, 4095, 6000, 3]);
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(sent.len() as u64)
        );
        let received = body.collect().await.unwrap().to_bytes();
        assert_eq!(received, sent);
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_request_bytes: 1000,
            max_peer_request_bytes: 1000,
            node_bytes: 300,
            connection_bytes: 200,
            peer_bytes: 500,
            max_produce_records: 10,
        }
    }

    #[test]
    fn a_charge_takes_from_the_connection_and_the_node_or_from_neither() {
        let admission = Admission::new(limits());
        let a = Budget::Client {
            connection: Some(admission.connection("127.0.0.1:1".parse().unwrap())),
        };
        let b = Budget::Client {
            connection: Some(admission.connection("127.0.0.1:2".parse().unwrap())),
        };
        let held = admission.charge(&a, 150).unwrap();
        assert_eq!(admission.client_bytes_in_flight(), 150);
        // Over the connection's budget: nothing taken from the node.
        assert!(matches!(
            admission.charge(&a, 100),
            Err(BrokerError::Overloaded(_))
        ));
        assert_eq!(admission.client_bytes_in_flight(), 150);
        // Another connection still gets what the node has left, and no more.
        let other = admission.charge(&b, 150).unwrap();
        let refused = admission.charge(&b, 1).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("this node holds its limit of 300"),
            "{refused}"
        );
        drop((held, other));
        assert_eq!(admission.client_bytes_in_flight(), 0);
        assert!(admission.charge(&Budget::Peer, 500).is_ok());
    }
}
