//! Retrying requests that failed for a passing reason (a leader election, a broker restart, a
//! dropped connection), as [`ClientError::is_retriable`] says, with exponential backoff.
//!
//! This sits above the client's own routing: the client already follows `NOT_LEADER` answers
//! that name the leader (a few hops per call), so a `NOT_LEADER` or an unreachable leader that
//! reaches this loop means leadership is unknown or moving, which only time settles. Each retry
//! goes where the client's leader cache then points: the last leader named, or the bootstrap
//! broker once a leader proved stale or unreachable.
//!
//! A retried produce whose first attempt was stored but not acknowledged (connection lost, time
//! out) is stored twice: the console tools deliver at least once, like Kafka's producer without
//! idempotence.

use std::time::{Duration, Instant};

use weir_client::ClientError;

/// First pause after a retriable error; each further pause doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Calls `attempt` until it succeeds, fails with an error that is not retriable, or the next
/// attempt would start after `deadline` (`None`: no deadline); then returns its last result.
pub async fn with_retries<T, F, Fut>(
    deadline: Option<Instant>,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Err(err)
                if err.is_retriable() && deadline.is_none_or(|d| Instant::now() + backoff < d) =>
            {
                tracing::warn!(error = %err, "request failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn unavailable() -> ClientError {
        tonic::Status::unavailable("leader election").into()
    }

    fn unknown_topic() -> ClientError {
        weir_proto::error::status_with_reason(tonic::Code::NotFound, "t", "UNKNOWN_TOPIC", [])
            .into()
    }

    #[tokio::test]
    async fn retriable_errors_are_retried_until_success() {
        let attempts = Cell::new(0);
        let result = with_retries(None, || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.ok(), Some(3));
    }

    #[tokio::test]
    async fn other_errors_and_expired_deadlines_end_at_once() {
        let attempts = Cell::new(0);
        let result: Result<(), _> = with_retries(None, || {
            attempts.set(attempts.get() + 1);
            async { Err(unknown_topic()) }
        })
        .await;
        assert_eq!(
            result
                .err()
                .and_then(|e| e.reason().map(str::to_owned))
                .as_deref(),
            Some("UNKNOWN_TOPIC")
        );
        assert_eq!(attempts.get(), 1);

        attempts.set(0);
        let result: Result<(), _> = with_retries(Some(Instant::now()), || {
            attempts.set(attempts.get() + 1);
            async { Err(unavailable()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(attempts.get(), 1, "no retry starts after the deadline");
    }
}
