//! What one async connection's batches, writer task and reader task share: the table of
//! pending requests (`pending.rs`), the verbs queue pair of a verbs connection, and the
//! signal that the reader task is gone.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::task::AbortHandle;

use super::pending::Table;
use super::verbs::Link;

/// State the connection's tasks and its batches share.
#[derive(Debug, Default)]
pub(super) struct ConnState {
    /// The queue pair of a verbs connection. Declared before `table` so it is destroyed
    /// first: the slots the table holds are freed only once nothing can write into them.
    link: Option<Link>,
    table: Mutex<Table>,
    /// True once the reader task has ended (its future dropped): from then on nothing
    /// writes into any destination this connection was given.
    gone: Mutex<bool>,
    gone_cv: Condvar,
    /// The writer task, stopped with the reader so a dead connection's socket closes now
    /// rather than when the pool next replaces it.
    writer: OnceLock<AbortHandle>,
}

impl ConnState {
    /// State for a new connection (with its queue pair, on verbs).
    pub(super) fn new(link: Option<Link>) -> ConnState {
        ConnState { link, ..ConnState::default() }
    }

    /// The verbs half, on a verbs connection.
    pub(super) fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// The table, even if a panic poisoned the lock: every transition of it is a single
    /// map operation, so it is never left half-done.
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers the writer task, to stop it with the reader.
    pub(super) fn set_writer(&self, writer: AbortHandle) {
        let _ = self.writer.set(writer);
    }

    /// Called as the reader task's future is dropped: fails every pending entry, refuses
    /// new ones, and wakes whoever waits in [`wait_gone`](Self::wait_gone).
    pub(super) fn reader_gone(&self) {
        self.table().fail_all();
        if let Some(writer) = self.writer.get() {
            writer.abort();
        }
        *self.gone.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.gone_cv.notify_all();
    }

    /// Blocks until the reader task is gone. No deadline on purpose: returning earlier
    /// could let the reader write into a buffer the caller already got back.
    pub(super) fn wait_gone(&self) {
        let mut gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
        while !*gone {
            gone = self.gone_cv.wait(gone).unwrap_or_else(PoisonError::into_inner);
        }
    }
}
