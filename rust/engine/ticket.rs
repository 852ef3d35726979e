//! Submitted batches: [`Engine::submit_read_into`](super::Engine::submit_read_into) and
//! [`Engine::submit_read_whole`](super::Engine::submit_read_whole) return a [`Ticket`] at
//! once and run the batch on one of the engine runtime's blocking threads.
//!
//! An event loop (trio, asyncio) cannot afford to block on a read, nor to hop through one of
//! its own worker threads per read (in Python that hop costs far more than the read). So
//! each ticket carries an eventfd that the batch's thread signals when the results are in:
//! the loop waits for it to turn readable like any socket, then takes the results without
//! blocking.
//!
//! # Who owns the destination
//! The batch writes into the destination after the submitting call has returned, so it
//! cannot borrow it: the caller moves it in (anything that is a [`DestBuffer`]), the batch
//! owns it while it runs, and on completion puts it in the ticket, where
//! [`Ticket::take_buffer`] gives it back. A ticket dropped early changes nothing for the
//! batch: it still owns the destination, and drops it when it finishes. So no write can
//! reach memory the caller freed or got back, whatever order things happen in.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::types::Failure;

/// Memory a submitted ranged batch fills ([`Engine::submit_read_into`](super::Engine::submit_read_into)).
///
/// The batch owns the value until it completes, and writes only through the slice that
/// [`bytes`](Self::bytes) returns while it holds the value mutably borrowed.
pub trait DestBuffer: Send + 'static {
    /// The bytes to fill; `RangeOp::buf_offset` counts from the start of this slice.
    fn bytes(&mut self) -> &mut [u8];
}

impl DestBuffer for Vec<u8> {
    fn bytes(&mut self) -> &mut [u8] {
        self
    }
}

impl DestBuffer for Box<[u8]> {
    fn bytes(&mut self) -> &mut [u8] {
        self
    }
}

/// The handle on a submitted batch: per-op results of type `Result<T, Failure>` once it has
/// finished, and (for ranged batches) the destination `B` back.
///
/// Dropping a ticket early does not stop the batch; it runs to its deadline as usual and
/// then drops the destination itself.
#[derive(Debug)]
pub struct Ticket<T, B = ()> {
    shared: Arc<TicketState<T, B>>,
}

/// What a ticket and its batch share.
#[derive(Debug)]
struct TicketState<T, B> {
    results: OnceLock<Vec<Result<T, Failure>>>,
    /// The destination, once the batch has finished with it (until taken back).
    buffer: Mutex<Option<B>>,
    /// Set (with `finished` notified) once `results` is.
    done: Mutex<bool>,
    finished: Condvar,
    /// Signalled once, after `results` is set. It lives as long as the last of the ticket
    /// and its batch, so the batch's write can never reach a descriptor number that was
    /// closed and reused in between.
    event: OwnedFd,
    deadline: Instant,
}

/// A poisoned lock only means a panic elsewhere while it was held; every value guarded here
/// is valid at every moment (a flag, an `Option` swapped whole).
fn lock<V>(m: &Mutex<V>) -> MutexGuard<'_, V> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T, B> Ticket<T, B> {
    /// The eventfd that turns readable once the results are in (it stays readable unless
    /// someone reads it; the results do not depend on that). Valid while the ticket lives.
    pub fn fileno(&self) -> RawFd {
        self.shared.event.as_raw_fd()
    }

    /// Whether the batch has finished.
    pub fn done(&self) -> bool {
        self.shared.results.get().is_some()
    }

    /// One result per op, in order, once the batch has finished; `None` before. Never
    /// blocks.
    pub fn results(&self) -> Option<&[Result<T, Failure>]> {
        self.shared.results.get().map(Vec::as_slice)
    }

    /// Blocks until the batch has finished or `timeout` has passed; whether it finished.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Blocks until the batch has finished or `until` (`None`: no limit) has passed.
    pub(crate) fn wait_until(&self, until: Option<Instant>) -> bool {
        let mut done = lock(&self.shared.done);
        while !*done {
            match until.map(|t| t.saturating_duration_since(Instant::now())) {
                Some(left) if left.is_zero() => return false,
                Some(left) => {
                    let waited = self.shared.finished.wait_timeout(done, left);
                    done = waited.map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
                }
                None => {
                    let waited = self.shared.finished.wait(done);
                    done = waited.unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        true
    }

    /// The batch's deadline: it finishes at about this moment at the latest (later only if
    /// the runtime's blocking threads are all busy with batches that are about to time out).
    pub fn deadline(&self) -> Instant {
        self.shared.deadline
    }

    /// The destination back, once the batch has finished (`None` before, after it was taken,
    /// for batches without one, and if the batch panicked).
    pub fn take_buffer(&self) -> Option<B> {
        if !self.done() {
            return None;
        }
        lock(&self.shared.buffer).take()
    }
}

/// The batch's side of a ticket: finishes it exactly once, with failures if the batch is
/// dropped unfinished (a panic, or a runtime that shut down before running it), so a waiter
/// is never left waiting for good.
#[derive(Debug)]
pub(super) struct Completer<T, B> {
    shared: Option<Arc<TicketState<T, B>>>,
    ops: usize,
}

/// A ticket for a batch of `ops` ops giving up at `deadline`, and its completer.
///
/// # Errors
/// The eventfd could not be created (out of file descriptors, ...).
pub(super) fn pair<T, B>(
    ops: usize,
    deadline: Instant,
) -> io::Result<(Ticket<T, B>, Completer<T, B>)> {
    let shared = Arc::new(TicketState {
        results: OnceLock::new(),
        buffer: Mutex::new(None),
        done: Mutex::new(false),
        finished: Condvar::new(),
        event: eventfd()?,
        deadline,
    });
    Ok((Ticket { shared: shared.clone() }, Completer { shared: Some(shared), ops }))
}

impl<T, B> Completer<T, B> {
    /// Hands the destination and the results to the ticket, then wakes its waiters.
    pub(super) fn finish(mut self, results: Vec<Result<T, Failure>>, buffer: Option<B>) {
        self.complete(results, buffer);
    }

    fn complete(&mut self, results: Vec<Result<T, Failure>>, buffer: Option<B>) {
        let Some(shared) = self.shared.take() else { return };
        // The buffer first: whoever sees the ticket done finds it there.
        *lock(&shared.buffer) = buffer;
        let _ = shared.results.set(results); // only ever set here, once
        *lock(&shared.done) = true;
        shared.finished.notify_all();
        signal(&shared.event);
    }
}

impl<T, B> Drop for Completer<T, B> {
    fn drop(&mut self) {
        if self.shared.is_none() {
            return; // finished normally
        }
        let why = Failure::Lost("the engine dropped the batch before it finished".into());
        let results = (0..self.ops).map(|_| Err(why.clone())).collect();
        self.complete(results, None);
    }
}

/// A fresh non-blocking, close-on-exec eventfd with its counter at zero.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: `eventfd` takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it; `OwnedFd` closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to the eventfd's counter, making it readable.
pub(crate) fn signal(event: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of a live `u64` to a descriptor that `event` keeps open.
    // It cannot block (non-blocking fd) and cannot fail but by overflowing the counter,
    // which a single write per ticket never does; a failure would leave only the fd silent,
    // the results and `wait` still work.
    let _ = unsafe { libc::write(event.as_raw_fd(), (&one as *const u64).cast(), 8) };
}
