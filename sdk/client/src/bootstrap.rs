//! [`BrokerChannel`]: a connection to one broker, or to the first live one of several bootstrap
//! brokers (Kafka's `bootstrap.servers`). Cluster-wide requests (metadata, administration,
//! groups, and partition requests whose leader is not known yet) go to the current bootstrap
//! broker; a transport failure there (refused, unreachable, cut off) moves the client on to the
//! next, so the request after it goes elsewhere and a client outlives any one broker. The failed
//! request itself fails, as any transport failure does, for its caller to retry: it may have
//! reached the broker.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;
use tower_service::Service;

/// A channel to one broker, or to the current one of a list (see the module documentation).
#[derive(Debug, Clone)]
pub struct BrokerChannel {
    channels: Arc<[Channel]>,
    /// Index of the broker requests go to, shared by every clone.
    current: Arc<AtomicUsize>,
    /// The channel `poll_ready` readied (and its index), which `call` must use.
    readied: Option<(usize, Channel)>,
}

impl BrokerChannel {
    /// A channel to one broker.
    pub(crate) fn single(channel: Channel) -> Self {
        Self::first_of(vec![channel], 0)
    }

    /// A channel to the brokers of `channels` (not empty), starting with `start`.
    pub(crate) fn first_of(channels: Vec<Channel>, start: usize) -> Self {
        debug_assert!(!channels.is_empty(), "a channel to no broker");
        Self {
            current: Arc::new(AtomicUsize::new(start)),
            channels: channels.into(),
            readied: None,
        }
    }

    /// Which of the brokers requests go to now.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    fn channel(&self, index: usize) -> Channel {
        self.channels[index % self.channels.len()].clone()
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tonic::transport::Error>> + Send>>;

impl Service<http::Request<Body>> for BrokerChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let (_, channel) = self.readied.get_or_insert_with(|| {
            let index = self.current.load(Ordering::Acquire);
            (index, self.channels[index % self.channels.len()].clone())
        });
        channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // `poll_ready` comes first (tower's contract, which tonic keeps); should a caller skip
        // it, the current channel takes the call and its own buffer reports the misuse.
        let (index, mut channel) = self.readied.take().unwrap_or_else(|| {
            let index = self.current();
            (index, self.channel(index))
        });
        let response = channel.call(request);
        let (current, count) = (self.current.clone(), self.channels.len());
        Box::pin(async move {
            let result = response.await;
            if result.is_err() && count > 1 {
                // Once per failure of this broker, however many requests in flight saw it.
                let _ = current.compare_exchange(
                    index,
                    (index + 1) % count,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            result
        })
    }
}
