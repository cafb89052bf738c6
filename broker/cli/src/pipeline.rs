//! A bounded window of produce requests in flight, for `weir bench produce`, which measures
//! single requests (`weir produce` uses weir-client's `Producer`). A request carries records
//! (the broker encodes them into a batch) or one record batch the caller encoded.
//!
//! Each request runs as its own task, so it makes progress while the caller waits for input or
//! for a scheduled send time, and it notes the instant it completed, so a caller that collects
//! completions late still measures latency exactly. Completions come back in any order.
//!
//! A request that fails for a passing reason (leader election, broker restart) is retried for up
//! to [`DELIVERY_TIMEOUT`], like Kafka's `delivery.timeout.ms`; its latency includes the retries.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::task::JoinHandle;
use weir_client::{Acks, Client, ClientError, ProduceOutcome, ProducerRecord};

use crate::retry::with_retries;

/// How long a request is retried after retriable errors before its failure is reported: longer
/// than a few election timeouts, within which writes resume after a leader is lost.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A finished produce request.
#[derive(Debug)]
pub struct Completion<T> {
    /// What the caller attached to the request when sending it.
    pub tag: T,
    /// When the broker's answer arrived.
    pub completed_at: Instant,
    /// The broker's answer.
    pub result: Result<ProduceOutcome, ClientError>,
}

/// Up to `max_in_flight` produce requests to one topic, each tagged with a caller value `T`.
///
/// Requests in flight together may be stored in either order; a caller that needs order keeps
/// `max_in_flight` at 1.
pub struct ProducePipeline<T> {
    client: Client,
    topic: String,
    acks: Acks,
    max_in_flight: usize,
    in_flight: FuturesUnordered<JoinHandle<Completion<T>>>,
}

impl<T: Send + 'static> ProducePipeline<T> {
    /// A pipeline to `topic` with at most `max_in_flight` (at least 1) requests at once.
    pub fn new(client: Client, topic: impl Into<String>, acks: Acks, max_in_flight: usize) -> Self {
        Self {
            client,
            topic: topic.into(),
            acks,
            max_in_flight: max_in_flight.max(1),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Whether another request may be sent now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.max_in_flight
    }

    /// Sends `records` to `partition` (or the broker's choice) as one request. The caller checks
    /// [`has_room`](Self::has_room) first; sending into a full window only exceeds the bound.
    pub fn send(&mut self, partition: Option<u32>, records: Vec<ProducerRecord>, tag: T) {
        let (client, topic, acks) = (self.client.clone(), self.topic.clone(), self.acks);
        self.spawn(tag, move || {
            let (client, topic, records) = (client.clone(), topic.clone(), records.clone());
            async move { client.produce(topic, partition, records, acks).await }
        });
    }

    /// Sends `batch`, a record batch the caller encoded, to `partition` as one request
    /// ([`Client::produce_batch`]); otherwise as [`send`](Self::send).
    pub fn send_batch(&mut self, partition: u32, batch: Bytes, tag: T) {
        let (client, topic, acks) = (self.client.clone(), self.topic.clone(), self.acks);
        self.spawn(tag, move || {
            let (client, topic, batch) = (client.clone(), topic.clone(), batch.clone());
            async move { client.produce_batch(topic, partition, batch, acks).await }
        });
    }

    /// Runs `attempt` as a task, retried until [`DELIVERY_TIMEOUT`], into the window.
    fn spawn<F, Fut>(&mut self, tag: T, attempt: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<ProduceOutcome, ClientError>> + Send,
    {
        debug_assert!(self.has_room(), "the caller keeps the window bounded");
        self.in_flight.push(tokio::spawn(async move {
            let deadline = Instant::now() + DELIVERY_TIMEOUT;
            let result = with_retries(Some(deadline), attempt).await;
            Completion {
                tag,
                completed_at: Instant::now(),
                result,
            }
        }));
    }

    /// The next request to finish, in any order; `None` when none is in flight.
    ///
    /// Cancel safety: cancel-safe, so it can be a `select!` branch; a completion is never lost.
    pub async fn next_completion(&mut self) -> anyhow::Result<Option<Completion<T>>> {
        match self.in_flight.next().await {
            None => Ok(None),
            Some(joined) => joined.map(Some).context("a produce task failed"),
        }
    }
}
