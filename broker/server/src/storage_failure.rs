//! A log database whose commit failed stops the broker.
//!
//! After a failed fsync the kernel may have dropped the pages it could not write, so the file
//! no longer holds what the database believes it wrote; the database refuses every later write
//! (`weir_storage::OnFailure`), which stops every raft group on it. Serving on would leave a
//! node that answers but never acknowledges, and whose replicas flood their peers with
//! refusals. As PostgreSQL and Redpanda do, the broker stops instead, so that a supervisor
//! restarts it from what is durable, and its replicas catch up from the others.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use weir_storage::OnFailure;

use crate::error::error_chain;

/// Raised by the first failed commit of any of the node's databases.
#[derive(Debug, Clone, Default)]
pub(crate) struct StorageFailure {
    raised: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl StorageFailure {
    /// The hook for the database `name`.
    pub(crate) fn hook(&self, name: &'static str) -> OnFailure {
        let failure = self.clone();
        OnFailure::new(move |error| {
            let reason = error_chain(error);
            failure
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| format!("the {name} database: {reason}"));
            failure.raised.cancel();
        })
    }

    /// Waits until a database failed; returns which and why.
    pub(crate) async fn wait(&self) -> String {
        self.raised.cancelled().await;
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}
