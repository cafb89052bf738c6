//! Knowing when a database's file is closed.
//!
//! A [`LogDb`](crate::LogDb) is shared: raft's tasks, a node's background tasks and the
//! committer thread each hold a handle, and the file stays open (and locked: a second open
//! fails with "Database already open") until the last of them lets go. Some of those holders
//! end on their own shortly after a shutdown (openraft's state machine worker outlives the raft
//! core it is joined to), so a caller that reopens the file, or lets another process do so,
//! waits for [`Closed`] rather than for the shutdown call to return.

use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::Database;

/// Tells when a database's file was closed: every handle to it dropped.
#[derive(Clone, Debug, Default)]
pub struct Closed(Arc<(Mutex<bool>, Condvar)>);

impl Closed {
    /// Blocks until the file is closed, or for `timeout` at most; returns whether it is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (closed, changed) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut guard = closed.lock().unwrap_or_else(PoisonError::into_inner);
        while !*guard {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn close(&self) {
        let (closed, changed) = &*self.0;
        *closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }
}

/// A redb database that says when it is dropped (after the database: fields drop in order).
pub(crate) struct OpenDatabase {
    database: Database,
    closed: ClosedOnDrop,
}

struct ClosedOnDrop(Closed);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl OpenDatabase {
    pub(crate) fn new(database: Database) -> Self {
        Self {
            database,
            closed: ClosedOnDrop(Closed::default()),
        }
    }

    /// Tells when this database is dropped.
    pub(crate) fn closed(&self) -> Closed {
        self.closed.0.clone()
    }
}

impl Deref for OpenDatabase {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.database
    }
}
