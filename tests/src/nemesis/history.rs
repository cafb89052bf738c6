//! The history of a nemesis run: every append the workload invoked with its outcome, every
//! record its readers saw, every group offset commit and committed-offset query, and every
//! fault the nemesis injected, in order.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How an append ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset: it must be there, once.
    Ok {
        /// The acknowledged offset.
        offset: u64,
    },
    /// The client gave up with an error: it may or may not be stored (at most once).
    Failed,
    /// Still unanswered when the run ended: it may or may not be stored (at most once).
    Unknown,
}

/// One record a writer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The writer (one idempotent producer each).
    pub writer: u32,
    /// Its place in the writer's sends to any partition, from 0.
    pub seq: u64,
    /// The partition.
    pub partition: u32,
    /// The value, unique in the run.
    pub value: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// One record a reader saw while the run went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The partition.
    pub partition: u32,
    /// The offset it was served at.
    pub offset: u64,
    /// Its value.
    pub value: Bytes,
}

/// One partition's offset in one commit of the workload's group consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The partition.
    pub partition: u32,
    /// The committed offset (the next one to consume).
    pub offset: u64,
    /// Whether the commit was acknowledged; if not, it may or may not have taken effect.
    pub acknowledged: bool,
    /// When its answer (or the client's giving up) came, since the start of the run.
    pub completed: Duration,
}

/// The group's committed offsets as one query returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedView {
    /// When the query was sent, since the start of the run.
    pub invoked: Duration,
    /// Partition → committed offset; a partition without one is absent.
    pub offsets: BTreeMap<u32, u64>,
}

/// What happened, as it happened, shared by the workload's tasks and the nemesis.
#[derive(Debug)]
pub struct History {
    started: Instant,
    appends: Mutex<Vec<Append>>,
    reads: Mutex<Vec<Read>>,
    commits: Mutex<Vec<Commit>>,
    views: Mutex<Vec<CommittedView>>,
    events: Mutex<Vec<(Duration, String)>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            appends: Mutex::default(),
            reads: Mutex::default(),
            commits: Mutex::default(),
            views: Mutex::default(),
            events: Mutex::default(),
        }
    }

    /// Records a finished (or abandoned) append.
    pub fn append(&self, append: Append) {
        lock(&self.appends).push(append);
    }

    /// Records records a reader saw.
    pub fn read(&self, reads: impl IntoIterator<Item = Read>) {
        lock(&self.reads).extend(reads);
    }

    /// Records the partitions' offsets of one commit.
    pub fn commit(&self, commits: impl IntoIterator<Item = Commit>) {
        lock(&self.commits).extend(commits);
    }

    /// Records what a committed-offset query returned.
    pub fn committed_view(&self, view: CommittedView) {
        lock(&self.views).push(view);
    }

    /// The time since the start of the run, to stamp operations with.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records a fault or another event of the run, timestamped.
    pub fn event(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(target: "nemesis", "{what}");
        lock(&self.events).push((self.started.elapsed(), what));
    }

    /// The appends so far.
    pub fn appends(&self) -> Vec<Append> {
        lock(&self.appends).clone()
    }

    /// The reads so far.
    pub fn reads(&self) -> Vec<Read> {
        lock(&self.reads).clone()
    }

    /// The commits so far.
    pub fn commits(&self) -> Vec<Commit> {
        lock(&self.commits).clone()
    }

    /// The committed-offset queries answered so far.
    pub fn committed_views(&self) -> Vec<CommittedView> {
        lock(&self.views).clone()
    }

    /// The events so far, with their time since the start.
    pub fn events(&self) -> Vec<(Duration, String)> {
        lock(&self.events).clone()
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
