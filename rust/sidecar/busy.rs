//! Busy polling of a protocol connection between requests (`--busy-poll-us`).
//!
//! A client reading small ranges one after another sends its next READ a few microseconds
//! after it got the last answer. If the connection's reader is asleep in the reactor by
//! then, the request costs a wake-up of an idle CPU, which on a virtual machine can take
//! longer than serving the read. So after each answer the reader keeps trying the socket
//! for a while, letting the thread's other tasks (the READs it started, the writer) run in
//! between, and only then sleeps.
//!
//! The window is counted from the last answer the writer flushed, not from when the reader
//! started waiting: the reader starts waiting as soon as it has dispatched a READ, before
//! that READ is even served, and a window that began then would mostly be spent on the
//! sidecar's own work.
//!
//! A connection whose windows mostly pass with nothing to read stops spinning, bar one
//! wait in so many, until they pay again (`spin.rs`): on a host with more runnable threads
//! than CPUs the spin only takes the CPU the client needs to send its next request.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedReadHalf;

use crate::spin::SpinGauge;

/// One connection's busy-poll window.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    spin: Duration,
    base: Instant,
    /// When the writer last flushed answers, in nanoseconds after `base`.
    answered: AtomicU64,
    /// Whether this connection's windows have been paying.
    gauge: SpinGauge,
}

impl BusyPoll {
    pub(crate) fn new(spin: Duration) -> BusyPoll {
        BusyPoll {
            spin,
            base: Instant::now(),
            answered: AtomicU64::new(0),
            gauge: SpinGauge::default(),
        }
    }

    /// The writer has just put answers on the wire.
    pub(crate) fn answered(&self) {
        let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answered.store(at, Ordering::Relaxed);
    }

    /// Until when a reader that started waiting at `started` keeps trying: `spin` after
    /// the later of that and the last answer.
    pub(crate) fn until(&self, started: Instant) -> Instant {
        let answered = self.base + Duration::from_nanos(self.answered.load(Ordering::Relaxed));
        started.max(answered) + self.spin
    }

    /// The client's next bytes in `buf` if they come within the window; `None` once it has
    /// passed with nothing to read (the caller then sleeps in the reactor), at once when
    /// busy polling is off.
    pub(crate) async fn read(
        &self,
        rd: &OwnedReadHalf,
        buf: &mut [u8],
    ) -> Option<io::Result<usize>> {
        if self.spin.is_zero() || !self.gauge.should_spin() {
            return None;
        }
        let started = Instant::now();
        loop {
            match rd.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                read => {
                    self.gauge.record(true);
                    return Some(read);
                }
            }
            if Instant::now() >= self.until(started) {
                self.gauge.record(false);
                return None;
            }
            // Lets whatever else this CPU has to run go first (a host with more busy
            // threads than CPUs must not lose a core to the wait), then this thread's other
            // tasks and the reactor, before the next try.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn the_window_runs_from_the_later_of_waiting_and_the_last_answer() {
        let busy = BusyPoll::new(Duration::from_micros(50));
        let started = Instant::now();
        assert_eq!(busy.until(started), started + Duration::from_micros(50));
        std::thread::sleep(Duration::from_millis(2));
        busy.answered();
        let until = busy.until(started);
        assert!(until >= started + Duration::from_millis(2) + Duration::from_micros(50));
        assert!(until <= Instant::now() + Duration::from_micros(50));
    }

    async fn pair() -> (OwnedReadHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server.into_split().0, client)
    }

    #[tokio::test]
    async fn bytes_within_the_window_are_read_and_an_idle_socket_gives_up() {
        let (rd, mut client) = pair().await;
        let busy = BusyPoll::new(Duration::from_millis(200));
        let mut buf = [0u8; 4];
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"ping").await.expect("write");
            client
        });
        let got = busy.read(&rd, &mut buf).await.expect("within the window").expect("read");
        assert_eq!(&buf[..got], &b"ping"[..got]);
        let _client = writer.await.expect("writer");

        let short = BusyPoll::new(Duration::from_millis(5));
        let t0 = Instant::now();
        assert!(short.read(&rd, &mut buf).await.is_none(), "nothing was sent");
        assert!(t0.elapsed() >= Duration::from_millis(5));
        assert!(BusyPoll::new(Duration::ZERO).read(&rd, &mut buf).await.is_none());
    }

    #[tokio::test]
    async fn a_connection_whose_windows_pass_empty_stops_spinning() {
        let (rd, _client) = pair().await;
        let busy = BusyPoll::new(Duration::from_millis(2));
        let mut buf = [0u8; 4];
        let misses = crate::spin::FLOOR.unsigned_abs() as usize; // from a new score of 0
        for _ in 0..misses {
            let t0 = Instant::now();
            assert!(busy.read(&rd, &mut buf).await.is_none());
            assert!(t0.elapsed() >= Duration::from_millis(2), "still spinning");
        }
        // Now the windows are skipped: the next waits give up at once.
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(busy.read(&rd, &mut buf).await.is_none());
        }
        assert!(t0.elapsed() < Duration::from_millis(2), "{:?}", t0.elapsed());
    }
}
