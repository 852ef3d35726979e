//! A write deadline for sockets whose peer may stop reading.
//!
//! A client that sends requests and never reads the answers fills its receive window and
//! then the sidecar's send buffer; after that every write waits, and each answer still to
//! be written keeps its staging slabs. [`WriteDeadline`] turns such a wait into an error
//! once the peer has taken no bytes at all for the limit, so the connection is closed and
//! what it held is released. The clock runs only while a write is blocked and restarts on
//! every write that makes progress: a slow reader that keeps taking bytes is never cut off,
//! a stalled one is, whatever the size of the answer being written.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error a [`WriteDeadline`] ends a write with (inside an [`io::Error`] of kind
/// `TimedOut`; [`is_stall`] finds it).
#[derive(Debug)]
pub(crate) struct Stalled(pub(crate) Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the peer took no bytes for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

/// Whether `e` is a [`WriteDeadline`] giving up.
pub(crate) fn is_stall(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stalled>())
}

/// Whether `e` or anything in its chain of sources is a [`WriteDeadline`] giving up (for
/// errors that wrap the socket's, such as hyper's).
pub(crate) fn caused_by_stall(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<io::Error>().is_some_and(is_stall) || err.is::<Stalled>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// `T` with writes that fail once none has made progress for `limit` (reads pass through).
pub(crate) struct WriteDeadline<T> {
    inner: T,
    limit: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` runs, i.e. a write is blocked since the last progress.
    armed: bool,
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`; `limit` `None` never gives up. Call within a tokio runtime.
    pub(crate) fn new(inner: T, limit: Option<Duration>) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
        }
    }

    /// Passes a write's outcome on; for a blocked one, starts the clock (if it is not
    /// running yet) and fails it with [`Stalled`] once the clock has run out.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let Some(limit) = self.limit else { return Poll::Pending };
        if !self.armed {
            self.timer.as_mut().reset(Instant::now() + limit);
            self.armed = true;
        }
        // Polling the timer registers this task's waker, so it runs again at the deadline
        // even when the socket never becomes writable.
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, Stalled(limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn a_peer_that_stops_reading_times_out_a_slow_one_does_not() {
        rt().block_on(async {
            // A pipe that holds 1 KiB stands in for a socket whose peer does not read.
            let (near, mut far) = tokio::io::duplex(1024);
            let limit = Duration::from_millis(200);
            let mut out = WriteDeadline::new(near, Some(limit));
            let started = std::time::Instant::now();
            let err = out.write_all(&[7u8; 4096]).await.expect_err("nobody reads");
            assert!(is_stall(&err), "{err}");
            assert!(caused_by_stall(&err));
            assert!(started.elapsed() >= limit);

            // A reader that takes 256 bytes every 100 ms keeps the writer going, though
            // the whole write takes several limits.
            let (near, mut far2) = tokio::io::duplex(256);
            let mut out = WriteDeadline::new(near, Some(limit));
            let reader = tokio::spawn(async move {
                let mut got = 0;
                let mut buf = [0u8; 256];
                while got < 4096 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    got += far2.read(&mut buf).await.expect("read");
                }
                got
            });
            out.write_all(&[7u8; 4096]).await.expect("progress restarts the clock");
            assert_eq!(reader.await.expect("reader"), 4096);
            let mut buf = [0u8; 16];
            assert_eq!(far.read(&mut buf).await.expect("read"), 16, "bytes written earlier");
            let other = io::Error::other("x");
            assert!(!is_stall(&other) && !caused_by_stall(&other));
        });
    }
}
