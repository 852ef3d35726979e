//! One blocking connection of the lane ([`super::lane`]): connect and handshake (with the
//! queue-pair exchange when it offers verbs), and reads and writes that each wait at most
//! until the batch's deadline.
//!
//! Every blocking call is preceded by setting the socket's timeout to the time left, so no
//! call can outlive the deadline (give or take the kernel's timer rounding). A timed-out
//! call shows as `WouldBlock` (Linux) or `TimedOut`; both mean "deadline passed" here.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::READ_BUFFER;
use super::frames;
use super::stats::Stats;
use super::types::Failure;
use super::verbs::lane::LaneLink;
use super::verbs::Host;
use crate::proto::{self, HelloAck};
use crate::spin::SpinGauge;

/// Time left until `deadline`, or `TimedOut` once it has passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(ErrorKind::TimedOut.into()),
    }
}

/// Whether an I/O error only says that the deadline passed.
pub(super) fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// How a call waits for its socket: first by retrying for up to `spin` (an answer due in
/// microseconds then costs no sleep and no wake-up), then in `poll` until the deadline.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    deadline: Instant,
    spin_until: Option<Instant>,
    spin: Duration,
    /// Whether this waiter spun at all, and whether it then had to sleep in `poll`.
    spun: bool,
    polled: bool,
}

impl Waiter {
    fn new(deadline: Instant, spin: Duration) -> Waiter {
        Waiter { deadline, spin_until: None, spin, spun: false, polled: false }
    }

    /// Whether the spin paid (`Some(true)`: the socket turned ready while spinning), did
    /// not (`Some(false)`: it slept in `poll` after all), or there was no spin (`None`).
    fn spin_paid(&self) -> Option<bool> {
        self.spun.then_some(!self.polled)
    }

    /// Returns once `stream` may be ready for `events` (or spinning says "try again").
    fn wait(&mut self, stream: &TcpStream, events: libc::c_short) -> io::Result<()> {
        let now = Instant::now();
        let spin_until = *self.spin_until.get_or_insert(now + self.spin);
        if now < spin_until {
            // Whatever else this CPU has to run goes first: a host with more busy threads
            // than CPUs must not lose a core to the wait.
            self.spun = true;
            std::thread::yield_now();
            return Ok(());
        }
        self.polled = true;
        let left = left(self.deadline)?;
        let ms = libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events, revents: 0 };
        // SAFETY: `fd` is a valid pollfd for the duration of the call, and nfds is 1.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// One `read` into `dst`, waiting at most until `deadline`; end of stream is an error.
fn read_some(stream: &mut TcpStream, dst: &mut [u8], waiter: &mut Waiter) -> io::Result<usize> {
    loop {
        match stream.read(dst) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => waiter.wait(stream, libc::POLLIN)?,
            Err(e) => return Err(e),
        }
    }
}

/// Fills `dst` from the socket, reading no further.
fn read_all(stream: &mut TcpStream, dst: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut waiter = Waiter::new(deadline, Duration::ZERO);
    let mut got = 0;
    while got < dst.len() {
        got += read_some(stream, &mut dst[got..], &mut waiter)?;
    }
    Ok(())
}

/// Writes all of `bytes`, waiting at most until `deadline`.
fn write_all(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut waiter = Waiter::new(deadline, Duration::ZERO);
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => waiter.wait(stream, libc::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A handshaken blocking connection with a small read buffer.
///
/// The buffer lets one `read` take several small answers (or a header with its payload);
/// a remainder at least as large as the buffer is read straight into its destination.
#[derive(Debug)]
pub(super) struct LaneConn {
    /// The queue pair, pool and matching state of a verbs connection. Whatever the order
    /// against the socket, [`LaneLink`] destroys its queue pair before its slots go back.
    pub(super) verbs: Option<LaneLink>,
    stream: TcpStream,
    /// What the sidecar granted.
    pub(super) ack: HelloAck,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    next_id: u32,
    /// How long a wait for the sidecar spins before it sleeps in `poll`; set per batch.
    pub(super) spin: Duration,
    /// Whether this connection's spins have been paying (`spin.rs`): waits do not spin
    /// while they mostly have not.
    gauge: SpinGauge,
}

/// What a new lane connection offers besides tcp.
#[derive(Debug)]
pub(super) struct Offer<'a> {
    /// The process's verbs state, to prepare a queue pair and pool with.
    pub(super) host: &'a Arc<Host>,
    /// Whether tcp is offered too (not when the engine was told to use verbs).
    pub(super) tcp_ok: bool,
    /// Where the connection counts its verbs bytes.
    pub(super) stats: &'a Arc<Stats>,
}

impl LaneConn {
    /// Connects to the first of `addrs` that answers, asks for `want_inflight` requests in
    /// flight, and checks the grant; all before `deadline`. With `verbs`, the HELLO also
    /// offers verbs with a fresh queue pair and pool, and the sidecar chooses, as on an
    /// async connection ([`super::conn::Conn::connect`]).
    pub(super) fn connect(
        addrs: &[SocketAddr],
        want_inflight: u32,
        deadline: Instant,
        verbs: Option<Offer<'_>>,
    ) -> Result<LaneConn, Failure> {
        let fail = |what: &str, e: io::Error| Failure::Connect(format!("{what}: {e}"));
        let prepared = verbs.as_ref().map(|o| o.host.prepare(want_inflight)).transpose()?;
        let mut last = io::Error::new(ErrorKind::NotFound, "address resolved to nothing");
        let mut stream = None;
        for addr in addrs {
            match left(deadline).and_then(|d| TcpStream::connect_timeout(addr, d)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or_else(|| Failure::Connect(last.to_string()))?;
        // Requests are small and latency-bound; never let Nagle hold them back.
        stream.set_nodelay(true).map_err(|e| fail("TCP_NODELAY", e))?;
        // Every wait is a spin and then `poll` with the time left (see `Waiter`).
        stream.set_nonblocking(true).map_err(|e| fail("O_NONBLOCK", e))?;
        let tcp_ok = verbs.as_ref().map_or(true, |o| o.tcp_ok);
        let offered = frames::offer(prepared.is_some(), tcp_ok);
        let mut hello = frames::hello(want_inflight, offered).to_vec();
        if let Some(prepared) = &prepared {
            hello.extend_from_slice(&prepared.exchange());
        }
        write_all(&mut stream, &hello, deadline).map_err(|e| fail("HELLO", e))?;
        let mut raw = [0u8; proto::HELLO_ACK_LEN];
        // Exactly the ack (and the endpoint after a verbs ack): nothing else is sent until
        // a request is.
        read_all(&mut stream, &mut raw, deadline).map_err(|e| frames::ack_failure(offered, &e))?;
        let ack = frames::accept_ack(&raw, offered)?;
        // After a tcp ack nothing follows, and dropping `prepared` destroys the queue pair.
        let link = match (prepared, verbs) {
            (Some(prepared), Some(offer)) if ack.transport == proto::TRANSPORT_VERBS => {
                let mut theirs = [0u8; crate::verbs::exchange::ENDPOINT_LEN];
                read_all(&mut stream, &mut theirs, deadline)
                    .map_err(|e| fail("VERBS_ENDPOINT", e))?;
                let recvs = frames::window(&ack, want_inflight) as u32;
                Some(LaneLink::new(prepared.connect(&theirs, recvs, offer.stats.clone())?))
            }
            _ => None,
        };
        let buf = vec![0u8; READ_BUFFER].into_boxed_slice();
        Ok(LaneConn {
            verbs: link,
            stream,
            ack,
            buf,
            pos: 0,
            end: 0,
            next_id: 0,
            spin: Duration::ZERO,
            gauge: SpinGauge::default(),
        })
    }

    /// `"verbs"` or `"tcp"`, as the sidecar chose.
    pub(super) fn transport(&self) -> &'static str {
        if self.verbs.is_some() {
            "verbs"
        } else {
            "tcp"
        }
    }

    /// A fresh request id (a clean connection owes no answers, so any id is free).
    pub(super) fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends `bytes` (whole request frames).
    pub(super) fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        write_all(&mut self.stream, bytes, deadline)
    }

    /// Fills `dst` from the buffer and then the socket.
    pub(super) fn read_exact(&mut self, dst: &mut [u8], deadline: Instant) -> io::Result<()> {
        let mut got = self.take_buffered(dst);
        let mut waiter = Waiter::new(deadline, self.spin_now());
        while got < dst.len() {
            if dst.len() - got >= self.buf.len() {
                got += read_some(&mut self.stream, &mut dst[got..], &mut waiter)?;
            } else {
                self.refill(&mut waiter)?;
                got += self.take_buffered(&mut dst[got..]);
            }
        }
        self.learn(&waiter);
        Ok(())
    }

    /// The spin for the next wait: the batch's, unless this connection's spins have mostly
    /// not been paying lately.
    fn spin_now(&self) -> Duration {
        if self.spin.is_zero() || self.gauge.should_spin() {
            self.spin
        } else {
            Duration::ZERO
        }
    }

    /// Records whether a finished wait's spin paid.
    fn learn(&self, waiter: &Waiter) {
        if let Some(paid) = waiter.spin_paid() {
            self.gauge.record(paid);
        }
    }

    /// Reads and drops `n` bytes.
    pub(super) fn skip(&mut self, mut n: usize, deadline: Instant) -> io::Result<()> {
        let mut waiter = Waiter::new(deadline, self.spin_now());
        loop {
            let buffered = (self.end - self.pos).min(n);
            self.pos += buffered;
            n -= buffered;
            if n == 0 {
                self.learn(&waiter);
                return Ok(());
            }
            self.refill(&mut waiter)?;
        }
    }

    /// Whether the connection can take a new batch: nothing unread is buffered, and the
    /// socket (non-blocking) holds no data and no end of stream (the sidecar closes idle
    /// connections). One system call, a small price next to a failed batch.
    pub(super) fn reusable(&self) -> bool {
        if self.verbs.as_ref().is_some_and(|v| !v.is_idle()) {
            return false;
        }
        self.pos == self.end
            && matches!(self.stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    /// Writes all of `bytes` if the socket takes them at once (a few small requests on a
    /// connection with nothing unsent always fit); `Ok(false)` when it took only part,
    /// which leaves the stream mid-frame: the connection must then be dropped.
    pub(super) fn try_send(&mut self, mut bytes: &[u8]) -> io::Result<bool> {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Appends to `out` what has arrived (buffered first), without waiting; the end of the
    /// stream is an error.
    pub(super) fn read_available(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(&self.buf[self.pos..self.end]);
        self.pos = self.end;
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => out.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket, for an event loop to wait on.
    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }

    fn take_buffered(&mut self, dst: &mut [u8]) -> usize {
        let n = (self.end - self.pos).min(dst.len());
        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        n
    }

    /// Reads what the socket has (at least one byte) into the emptied buffer.
    fn refill(&mut self, waiter: &mut Waiter) -> io::Result<()> {
        debug_assert_eq!(self.pos, self.end, "refill with unread bytes");
        self.end = read_some(&mut self.stream, &mut self.buf, waiter)?;
        self.pos = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A connected pair: our non-blocking end and the peer's.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("non-blocking");
        (ours, peer)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn a_wait_tells_whether_its_spin_paid() {
        let (mut ours, mut peer) = pair();
        let mut byte = [0u8; 1];

        // Bytes already there: no wait at all, nothing to learn.
        peer.write_all(b"a").expect("write");
        let mut waiter = Waiter::new(deadline(), Duration::from_secs(5));
        while let Err(e) = ours.read(&mut byte) {
            assert_eq!(e.kind(), ErrorKind::WouldBlock);
            waiter.wait(&ours, libc::POLLIN).expect("wait");
        }
        // (On a slow host the byte may need a few spins to land: then the spin paid.)
        assert_ne!(waiter.spin_paid(), Some(false));

        // Bytes that come while it spins (the window is 5 s): the spin paid.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"b").expect("write");
            peer
        });
        let mut waiter = Waiter::new(deadline(), Duration::from_secs(5));
        assert_eq!(read_some(&mut ours, &mut byte, &mut waiter).expect("read"), 1);
        assert_eq!((byte[0], waiter.spin_paid()), (b'b', Some(true)));
        let mut peer = writer.join().expect("writer");

        // Bytes that come after a short window: it spun, then slept in poll.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(b"c").expect("write");
            peer
        });
        let mut waiter = Waiter::new(deadline(), Duration::from_micros(100));
        assert_eq!(read_some(&mut ours, &mut byte, &mut waiter).expect("read"), 1);
        assert_eq!((byte[0], waiter.spin_paid()), (b'c', Some(false)));
        let _peer = writer.join().expect("writer");

        // No spin asked: nothing to learn either way.
        let waiter = Waiter::new(deadline(), Duration::ZERO);
        assert_eq!(waiter.spin_paid(), None);
    }
}
