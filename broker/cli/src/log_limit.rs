//! Keeps dependencies' warnings from flooding the log.
//!
//! openraft warns once per failed RPC, and a node runs a raft group per partition: a dead or
//! restarting peer made every group warn on every heartbeat and election attempt, thousands of
//! lines a minute saying the same thing. [`RepeatLimit`] lets through at most one event per call
//! site per window from the targets it limits, at WARN and below (errors always pass), and
//! counts the rest in `weir_log_events_suppressed_total`. Weir's own events are never limited:
//! they are written not to repeat.
//!
//! The limit runs after the level filter ([`with_levels`]), never beside it: a filter that
//! enables every call site makes the registry build every span and evaluate every event of
//! openraft's debug and trace call sites, which with a raft core per partition cost most of an
//! idle node's CPU (2026-12-05: 55–77% of a core with 1,000 idle partitions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;

use tracing::callsite::Identifier;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter};

/// `levels`, then the repeat limit on openraft's events (one per call site per 10 s).
pub fn with_levels<S>(levels: EnvFilter) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    levels.and(RepeatLimit::new(&["openraft"], Duration::from_secs(10)))
}

/// At most one event per call site per window, for events of the limited targets.
pub struct RepeatLimit {
    targets: &'static [&'static str],
    window: Duration,
    /// When each call site last let an event through (shared with clones).
    last: Arc<Mutex<HashMap<Identifier, Instant>>>,
}

impl RepeatLimit {
    /// Limits events whose target starts with one of `targets` to one per call site per
    /// `window`.
    pub fn new(targets: &'static [&'static str], window: Duration) -> Self {
        Self {
            targets,
            window,
            last: Arc::default(),
        }
    }

    /// The call sites whose events this limit has seen.
    #[cfg(test)]
    fn sites_seen(&self) -> usize {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn limited(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() != Level::ERROR
            && self
                .targets
                .iter()
                .any(|t| metadata.target().starts_with(t))
    }

    fn allow(&self, event: &Event<'_>) -> bool {
        let metadata = event.metadata();
        if !self.limited(metadata) {
            return true;
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let site = metadata.callsite();
        match last.get(&site) {
            Some(at) if now.duration_since(*at) < self.window => {
                weir_server::SUPPRESSED_LOG_EVENTS.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => {
                last.insert(site, now);
                true
            }
        }
    }
}

impl<S> Filter<S> for RepeatLimit {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        self.allow(event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, event: &Event<'_>, _cx: tracing_subscriber::layer::Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(event.metadata().target().to_owned());
        }
    }

    #[test]
    fn events_the_levels_drop_never_reach_the_limit() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let limit = RepeatLimit::new(&["openraft"], Duration::from_secs(3600));
        let sites = RepeatLimit {
            last: limit.last.clone(),
            ..RepeatLimit::new(&[], Duration::ZERO)
        };
        let levels = EnvFilter::new("info,openraft=warn");
        let subscriber =
            tracing_subscriber::registry().with(Count(seen.clone()).with_filter(levels.and(limit)));
        tracing::subscriber::with_default(subscriber, || {
            for tick in 0..100 {
                tracing::debug_span!(target: "openraft::core", "tick", tick).in_scope(|| {
                    tracing::debug!(target: "openraft::core", tick, "ticked");
                });
            }
            tracing::warn!(target: "openraft::core", "shown");
        });
        assert_eq!(*seen.lock().unwrap(), vec!["openraft::core".to_owned()]);
        // Only the warning's call site was looked at.
        assert_eq!(sites.sites_seen(), 1);
    }

    #[test]
    fn a_dependency_repeating_itself_is_let_through_once_per_window() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let limit = RepeatLimit::new(&["openraft"], Duration::from_secs(3600));
        let subscriber =
            tracing_subscriber::registry().with(Count(seen.clone()).with_filter(limit));
        let before = weir_server::SUPPRESSED_LOG_EVENTS.load(Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            for group in 0..100 {
                tracing::warn!(target: "openraft::core", group, "peer unreachable");
            }
            tracing::warn!(target: "openraft::core", "another call site");
            tracing::error!(target: "openraft::core", "errors always pass");
            tracing::error!(target: "openraft::core", "errors always pass");
            for _ in 0..3 {
                tracing::warn!(target: "weir_server::node", "weir's own, never limited");
            }
        });
        let seen = seen.lock().unwrap();
        let openraft = seen.iter().filter(|t| t.starts_with("openraft")).count();
        assert_eq!(openraft, 4, "{seen:?}");
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert!(weir_server::SUPPRESSED_LOG_EVENTS.load(Ordering::Relaxed) - before >= 99);
    }
}
