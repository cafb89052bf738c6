//! Noticing when the node's async runtime stops running tasks.
//!
//! Every request, raft message and heartbeat of a node runs on its tokio runtime. When all of
//! its worker threads are held (a task that blocks, a long computation that never awaits), the
//! node answers nothing, and from outside that looks like a dead or cut-off node. A watchdog
//! thread outside the runtime tells the two apart, as Redpanda's reactor stall detector does
//! (without its backtraces): a task on the runtime marks the time every [`TICK`]; once the mark
//! is [`STALL`] old the watchdog warns, once per stall, and again when the runtime runs tasks
//! after it, with how long it stood; stalls are counted for the metrics
//! (`weir_runtime_stalls_total`). The warning says what each thread of the process is doing
//! ([`threads`]), which tells a blocked runtime from a spinning one and where it waits.
//!
//! A process stopped as a whole (SIGSTOP, a suspended machine) stops the watchdog too: time the
//! watchdog itself did not run is not counted as a stall.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

mod threads;

/// How often the runtime's task marks the time.
const TICK: Duration = Duration::from_millis(100);
/// How often the watchdog looks at the mark.
const CHECK: Duration = Duration::from_millis(250);
/// How old the mark may grow before the runtime counts as stalled.
const STALL: Duration = Duration::from_secs(3);

/// What the ticking task and the watchdog share.
struct Shared {
    /// When the ticking task last ran, in milliseconds since `start`.
    mark_ms: AtomicU64,
    start: Instant,
    stalls: Counter,
}

/// Watches the current runtime while it lives; the watch ends when this is dropped (the
/// watchdog and the ticking task hold what it holds weakly) or when the runtime shuts down.
pub(crate) struct StallWatch {
    _shared: Arc<Shared>,
}

impl StallWatch {
    /// Starts the ticking task on the current runtime and the watchdog thread; stalls are
    /// counted in `stalls`.
    pub(crate) fn start(stalls: Counter) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            mark_ms: AtomicU64::new(0),
            start: Instant::now(),
            stalls,
        });
        let runtime_gone = Arc::new(AtomicBool::new(false));
        let watched = Arc::downgrade(&shared);
        let stop = runtime_gone.clone();
        // The watchdog logs in the caller's span (the broker's, naming the node).
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("weir-stall-watch".into())
            .spawn(move || span.in_scope(|| watch(&watched, &stop)))?;
        let ticking = Arc::downgrade(&shared);
        let on_drop = StopOnDrop(runtime_gone);
        tokio::spawn(async move {
            let _on_drop = on_drop;
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(shared) = ticking.upgrade() else {
                    return;
                };
                shared.mark_ms.store(shared.elapsed_ms(), Ordering::Relaxed);
            }
        });
        Ok(Self { _shared: shared })
    }
}

/// Stops the watch when the ticking task is dropped without ending (its runtime shut down).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The watchdog thread's loop, until the watch stops.
fn watch(shared: &Weak<Shared>, runtime_gone: &AtomicBool) {
    let mut detector = Detector::default();
    loop {
        let before = Instant::now();
        std::thread::sleep(CHECK);
        if runtime_gone.load(Ordering::Relaxed) {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now_ms = shared.elapsed_ms();
        let slept = before.elapsed();
        let mark_ms = shared.mark_ms.load(Ordering::Relaxed);
        match detector.observe(now_ms, mark_ms, slept) {
            Some(Event::Stalled) => {
                shared.stalls.inc();
                tracing::warn!(
                    stalled_ms = now_ms.saturating_sub(mark_ms),
                    threads = %threads::summary(),
                    "the async runtime has run no task for {}s: its worker threads are held \
                     (a task blocking or computing without awaiting); the node answers nothing \
                     meanwhile",
                    STALL.as_secs()
                );
            }
            Some(Event::Resumed { stalled_ms }) => {
                tracing::warn!(
                    stalled_ms,
                    "the async runtime runs tasks again after a stall"
                );
            }
            None => {}
        }
    }
}

/// What the watchdog concluded from one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The runtime has run no task for [`STALL`].
    Stalled,
    /// It runs tasks again, after standing for `stalled_ms` at least.
    Resumed { stalled_ms: u64 },
}

/// The watchdog's reasoning, apart from its clock so that it can be tested.
#[derive(Debug, Default)]
struct Detector {
    /// While a stall lasts: the mark it started from.
    stalled_since_ms: Option<u64>,
    /// Marks before this are not held against the runtime: the watchdog itself was not running
    /// then (the whole process was stopped), so the ticking task had no chance either.
    excused_until_ms: u64,
}

impl Detector {
    /// One look: at `now_ms` the mark is `mark_ms`, and the watchdog slept `slept` since the
    /// last look.
    fn observe(&mut self, now_ms: u64, mark_ms: u64, slept: Duration) -> Option<Event> {
        if slept > CHECK + STALL / 2 && self.stalled_since_ms.is_none() {
            // The watchdog did not run for a long while: nothing in this process did. Give the
            // runtime a full STALL from now to show it runs.
            self.excused_until_ms = now_ms;
            return None;
        }
        let since_ms = mark_ms.max(self.excused_until_ms);
        let stall_ms = u64::try_from(STALL.as_millis()).unwrap_or(u64::MAX);
        match self.stalled_since_ms {
            None if now_ms.saturating_sub(since_ms) >= stall_ms => {
                self.stalled_since_ms = Some(since_ms);
                Some(Event::Stalled)
            }
            Some(since) if mark_ms > since => {
                self.stalled_since_ms = None;
                Some(Event::Resumed {
                    stalled_ms: mark_ms - since,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1;

    #[test]
    fn a_runtime_that_ticks_never_stalls() {
        let mut d = Detector::default();
        for now in (0..60_000 * MS).step_by(250) {
            assert_eq!(d.observe(now, now.saturating_sub(100), CHECK), None);
        }
    }

    #[test]
    fn a_stall_is_reported_once_and_its_end_with_its_length() {
        let mut d = Detector::default();
        assert_eq!(d.observe(1_000, 1_000, CHECK), None);
        // The mark stays at 1 000 ms.
        assert_eq!(d.observe(3_900, 1_000, CHECK), None);
        assert_eq!(d.observe(4_000, 1_000, CHECK), Some(Event::Stalled));
        for now in (4_250..20_000).step_by(250) {
            assert_eq!(d.observe(now, 1_000, CHECK), None, "at {now} ms");
        }
        assert_eq!(
            d.observe(20_250, 20_200, CHECK),
            Some(Event::Resumed { stalled_ms: 19_200 })
        );
        assert_eq!(d.observe(20_500, 20_400, CHECK), None);
        // A second stall is a new one.
        assert_eq!(d.observe(23_400, 20_400, CHECK), Some(Event::Stalled));
    }

    #[test]
    fn a_process_stopped_as_a_whole_is_not_a_stall() {
        let mut d = Detector::default();
        assert_eq!(d.observe(1_000, 900, CHECK), None);
        // SIGSTOP for 30 s: the watchdog slept 30 s, the mark is 30 s old.
        assert_eq!(d.observe(31_000, 900, Duration::from_secs(30)), None);
        // After SIGCONT the runtime gets a whole STALL to tick again before it counts.
        assert_eq!(d.observe(31_250, 900, CHECK), None);
        assert_eq!(d.observe(33_900, 900, CHECK), None);
        assert_eq!(d.observe(34_000, 900, CHECK), Some(Event::Stalled));
        // Once it ticks, it is fine.
        let mut d = Detector::default();
        assert_eq!(d.observe(31_000, 900, Duration::from_secs(30)), None);
        assert_eq!(d.observe(31_250, 31_200, CHECK), None);
        assert_eq!(d.observe(40_000, 39_900, CHECK), None);
    }
}
