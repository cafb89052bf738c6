//! The audit trail of refusals: authentication failures, authorization denials and refused
//! peer requests are logged (principal, RPC, resource) at most [`LINES_PER_WINDOW`] times per
//! [`WINDOW`] each, the rest counted as suppressed, and every one is counted in metrics.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Length of a rate-limiting window.
const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind logged per window.
const LINES_PER_WINDOW: u32 = 10;

/// Labels of authentication failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) reason: String,
}

/// Labels of authorization denials.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DenialLabels {
    pub(crate) rpc: String,
    pub(crate) operation: String,
    pub(crate) resource_type: String,
}

/// Counters and log limits of refusals.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    pub(crate) authentication_failures: Family<FailureLabels, Counter>,
    pub(crate) authorization_denials: Family<DenialLabels, Counter>,
    pub(crate) peer_refusals: Counter,
    failures_log: LogLimit,
    denials_log: LogLimit,
    peers_log: LogLimit,
}

impl Audit {
    /// Records an authentication failure.
    pub(crate) fn authentication_failed(
        &self,
        rpc: &str,
        reason: &str,
        user: Option<&str>,
        client: &str,
    ) {
        self.authentication_failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .inc();
        if let Some(suppressed) = self.failures_log.admit() {
            tracing::warn!(
                rpc,
                reason,
                user,
                client,
                suppressed,
                "authentication failed"
            );
        }
    }

    /// Records a request refused for a missing permission.
    pub(crate) fn denied(
        &self,
        rpc: &str,
        principal: &str,
        operation: &str,
        resource_type: &str,
        resource: &str,
        client: &str,
    ) {
        self.authorization_denials
            .get_or_create(&DenialLabels {
                rpc: rpc.to_owned(),
                operation: operation.to_owned(),
                resource_type: resource_type.to_owned(),
            })
            .inc();
        if let Some(suppressed) = self.denials_log.admit() {
            tracing::warn!(
                rpc,
                principal,
                operation,
                resource,
                client,
                suppressed,
                "request denied"
            );
        }
    }

    /// Records a peer-service request from a caller that is not a node.
    pub(crate) fn peer_refused(&self, path: &str, principal: &str, client: &str) {
        self.peer_refusals.inc();
        if let Some(suppressed) = self.peers_log.admit() {
            tracing::warn!(
                rpc = path,
                principal,
                client,
                suppressed,
                "peer request from a caller that is not a node refused"
            );
        }
    }
}

/// Admits [`LINES_PER_WINDOW`] log lines per [`WINDOW`].
#[derive(Debug, Default)]
struct LogLimit {
    state: Mutex<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(lines suppressed since the last one logged)` when this line may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            state.window_start = Some(now);
            state.logged = 0;
        }
        if state.logged < LINES_PER_WINDOW {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_ten_lines_per_window_and_counts_the_rest() {
        let limit = LogLimit::default();
        let admitted = (0..100).filter(|_| limit.admit().is_some()).count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert_eq!(limit.state.lock().unwrap().suppressed, 90);
    }
}
