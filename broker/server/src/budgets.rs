//! What one node lets requests hold after their handler answered, each bounded, with overload
//! answered as the retriable `OVERLOADED`:
//! - acks=none batches handed to raft and not applied yet (`limits.max_unacknowledged_bytes`):
//!   a producer that does not wait for acknowledgements otherwise grows the raft queue, the
//!   log's in-memory overlay and the committer's queue without limit. Past the budget a request
//!   waits for room, as long as an acknowledged produce may wait for its quorum;
//! - open subscriptions (`limits.max_subscriptions`): each holds a task, a read buffer and
//!   maybe module instances for as long as its client keeps it open.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::error::BrokerError;

/// The node's budgets.
#[derive(Debug)]
pub(crate) struct Budgets {
    unacknowledged: Arc<Semaphore>,
    max_unacknowledged: usize,
    subscriptions: Arc<Semaphore>,
    max_subscriptions: usize,
}

impl Budgets {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            unacknowledged: Arc::new(Semaphore::new(limits.max_unacknowledged_bytes)),
            max_unacknowledged: limits.max_unacknowledged_bytes,
            subscriptions: Arc::new(Semaphore::new(limits.max_subscriptions as usize)),
            max_subscriptions: limits.max_subscriptions as usize,
        }
    }

    /// Room for an acks=none batch of `bytes`, held until raft applied it; waits up to `wait`
    /// for it.
    pub(crate) async fn unacknowledged(
        &self,
        bytes: usize,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, BrokerError> {
        let overloaded = || {
            BrokerError::Overloaded(format!(
                "this node holds its limit of {} bytes of acks=none batches not yet applied (limits.max_unacknowledged_bytes); retry later",
                self.max_unacknowledged
            ))
        };
        let permits = u32::try_from(bytes).map_err(|_| overloaded())?;
        match tokio::time::timeout(
            wait,
            self.unacknowledged.clone().acquire_many_owned(permits),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout is overload.
            _ => Err(overloaded()),
        }
    }

    /// A place for one more open subscription, held while it is open.
    pub(crate) fn subscription(&self) -> Result<OwnedSemaphorePermit, BrokerError> {
        self.subscriptions.clone().try_acquire_owned().map_err(|_| {
            BrokerError::Overloaded(format!(
                "this node has its limit of {} open subscriptions (limits.max_subscriptions); retry later, or fetch instead",
                self.max_subscriptions
            ))
        })
    }

    /// Bytes of acks=none batches not applied yet.
    pub(crate) fn unacknowledged_bytes(&self) -> usize {
        self.max_unacknowledged - self.unacknowledged.available_permits()
    }

    /// Open subscriptions.
    pub(crate) fn open_subscriptions(&self) -> usize {
        self.max_subscriptions - self.subscriptions.available_permits()
    }
}
