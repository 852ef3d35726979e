//! Tests of submitted batches ([`super::ticket`]) against the in-test protocol server
//! ([`super::test_server`]): the eventfd, the results, and who owns the buffer when.

use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::test_server::{Mode, TestServer};
use super::tests::{cfg, engine, needles, op, pattern, whole, SENTINEL};
use super::*;

/// Which of `fds` are readable, after waiting up to `timeout` for the first one.
fn poll(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    let mut set: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = libc::c_int::try_from(timeout.as_millis()).expect("timeout fits");
    // SAFETY: `set` is a live array of `set.len()` pollfd structs for the call's duration.
    let n = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, ms) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    set.iter().map(|p| p.revents & libc::POLLIN != 0).collect()
}

/// Reads (and so resets) an eventfd's counter.
fn drain(fd: RawFd) -> u64 {
    let mut count = 0u64;
    // SAFETY: reads at most 8 bytes into a live, writable `u64`.
    let n = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
    assert_eq!(n, 8, "read eventfd: {}", std::io::Error::last_os_error());
    count
}

/// Waits for the ticket's eventfd alone, as an event loop would.
fn await_ticket<T, B>(ticket: &Ticket<T, B>, timeout: Duration) -> bool {
    poll(&[ticket.fileno()], timeout)[0]
}

#[test]
fn completion_signals_the_eventfd_and_results_match_the_blocking_path() {
    let server = TestServer::start(needles(0..16, 5000), Mode::Normal);
    let a = &server.addr;
    let one = vec![op(a, 3, 17, 4096, 8)];
    let many: Vec<RangeOp> =
        (0..16u64).map(|k| op(a, k, k * 3, 900, k as usize * 1000 + 50)).collect();
    let mut failing = many[..4].to_vec();
    failing[1].key = 99; // not found
    failing[2].buf_offset = 3500; // overlaps op 3
    for (lane, engine) in [(true, engine(2)), (false, engine(2).without_lane())] {
        for ops in [&one, &many, &failing] {
            let mut want = vec![SENTINEL; 16 * 1000 + 100];
            let blocking = engine.read_into(&mut want, ops);
            let ticket = engine.submit_read_into(vec![SENTINEL; want.len()], ops.clone());
            let ticket = ticket.expect("ticket");
            assert!(await_ticket(&ticket, Duration::from_secs(2)), "eventfd signalled");
            assert!(ticket.done());
            assert_eq!(drain(ticket.fileno()), 1, "signalled once");
            // Results do not depend on the eventfd's counter.
            assert_eq!(ticket.results(), Some(blocking.as_slice()), "lane {lane}");
            assert!(ticket.wait(Duration::ZERO));
            assert!(ticket.take_buffer().expect("buffer back") == want, "byte-exact");
            assert!(ticket.take_buffer().is_none(), "given back once");
        }
        let wholes = [whole(a, 0), whole(a, 7), whole(a, 99)];
        let ticket = engine.submit_read_whole(wholes.to_vec()).expect("ticket");
        assert!(await_ticket(&ticket, Duration::from_secs(2)));
        assert_eq!(ticket.results(), Some(engine.read_whole(&wholes).as_slice()));
        assert_eq!(
            ticket.results().and_then(|r| r[1].clone().ok()).map(|n| n.data),
            Some(pattern(7, 5000))
        );
    }
}

#[test]
fn a_ticket_is_not_done_until_its_batch_is() {
    let late = Duration::from_millis(300);
    let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(late));
    let engine = engine(1);
    let start = Instant::now();
    let ticket = engine.submit_read_into(vec![0u8; 4096], vec![op(&server.addr, 0, 0, 4096, 0)]);
    let ticket = ticket.expect("ticket");
    assert!(start.elapsed() < late / 2, "submitting does not wait for the answer");
    assert!(!ticket.done() && ticket.results().is_none() && ticket.take_buffer().is_none());
    assert!(!await_ticket(&ticket, Duration::from_millis(50)));
    assert!(!ticket.wait(Duration::from_millis(10)));
    assert!(ticket.wait(Duration::from_secs(2)));
    assert!(start.elapsed() >= late);
    assert_eq!(ticket.results(), Some(&[Ok(())][..]));
    assert_eq!(ticket.take_buffer(), Some(pattern(0, 4096)));
}

#[test]
fn a_stalled_server_times_out_at_the_deadline_and_the_buffer_stays_untouched() {
    let late = Duration::from_millis(700);
    let timeout = Duration::from_millis(250);
    for lane in [true, false] {
        let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(late));
        let engine = Engine::new(EngineConfig { timeout, ..cfg(1) }).expect("engine");
        let engine = if lane { engine } else { engine.without_lane() };
        let start = Instant::now();
        let ops = vec![op(&server.addr, 0, 0, 4096, 0)];
        let ticket = engine.submit_read_into(vec![SENTINEL; 4096], ops).expect("ticket");
        assert!(await_ticket(&ticket, Duration::from_secs(2)));
        let took = start.elapsed();
        assert!(took >= timeout && took < late, "lane {lane}: {took:?}");
        assert_eq!(ticket.results(), Some(&[Err(Failure::Timeout)][..]), "lane {lane}");
        let buf = ticket.take_buffer().expect("buffer back");
        std::thread::sleep(late + Duration::from_millis(300)); // the answer has come by now
        assert!(buf.iter().all(|&b| b == SENTINEL), "lane {lane}: written after the deadline");
    }
}

#[test]
fn a_timeout_mid_payload_stops_all_writes_before_the_ticket_is_done() {
    let server =
        TestServer::start(needles(0..1, 200_000), Mode::StallMid(Duration::from_millis(700)));
    for lane in [true, false] {
        let engine = Engine::new(EngineConfig { timeout: Duration::from_millis(300), ..cfg(1) })
            .expect("engine");
        let engine = if lane { engine } else { engine.without_lane() };
        let ops = vec![op(&server.addr, 0, 0, 200_000, 0)];
        let ticket = engine.submit_read_into(vec![SENTINEL; 200_000], ops).expect("ticket");
        assert!(await_ticket(&ticket, Duration::from_secs(2)));
        assert_eq!(ticket.results(), Some(&[Err(Failure::Timeout)][..]), "lane {lane}");
        let buf = ticket.take_buffer().expect("buffer back");
        let at_done = buf.clone();
        assert_eq!(at_done[..1000], pattern(0, 200_000)[..1000], "the first half had arrived");
        std::thread::sleep(Duration::from_millis(900));
        assert!(buf == at_done, "lane {lane}: the rest never reached the buffer");
    }
}

/// A destination that reports its bytes when the batch drops it.
struct Watched {
    data: Vec<u8>,
    dropped: mpsc::Sender<(Instant, Vec<u8>)>,
}

impl DestBuffer for Watched {
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.dropped.send((Instant::now(), std::mem::take(&mut self.data)));
    }
}

#[test]
fn a_ticket_dropped_early_leaves_the_buffer_to_its_batch() {
    let late = Duration::from_millis(200);
    let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(late));
    for lane in [true, false] {
        let engine = if lane { engine(1) } else { engine(1).without_lane() };
        let (tx, rx) = mpsc::channel();
        let dest = Watched { data: vec![SENTINEL; 4096], dropped: tx };
        let start = Instant::now();
        let ticket = engine.submit_read_into(dest, vec![op(&server.addr, 0, 0, 4096, 0)]);
        drop(ticket.expect("ticket"));
        let (when, data) = rx.recv_timeout(Duration::from_secs(3)).expect("the batch ended");
        assert!(when - start >= late, "lane {lane}: the buffer lived until the answer came");
        assert_eq!(data, pattern(0, 4096), "lane {lane}: and the batch completed into it");
        assert_eq!(engine.stats().reads, 1);
    }
}

#[test]
fn an_engine_dropped_mid_batch_lets_its_tickets_finish() {
    let server =
        TestServer::start(needles(0..1, 4096), Mode::StallLate(Duration::from_millis(200)));
    let engine = engine(1);
    let ops = vec![op(&server.addr, 0, 0, 4096, 0)];
    let ticket = engine.submit_read_into(vec![0u8; 4096], ops).expect("ticket");
    let start = Instant::now();
    drop(engine);
    assert!(start.elapsed() < Duration::from_millis(100), "dropping the engine did not wait");
    assert!(await_ticket(&ticket, Duration::from_secs(3)));
    assert_eq!(ticket.results(), Some(&[Ok(())][..]));
    assert_eq!(ticket.take_buffer(), Some(pattern(0, 4096)));
}

#[test]
fn many_tickets_in_parallel_all_complete() {
    let server = TestServer::start(needles(0..16, 8192), Mode::Normal);
    let engine = engine(2);
    let a = &server.addr;
    let mut ranged = Vec::new();
    let mut wholes = Vec::new();
    for t in 0..64u64 {
        // Small batches take the lane (while it has connections to spare), larger ones and
        // the overflow the async path.
        let n = if t % 3 == 0 { 12 } else { 1 + t % 4 };
        let ops: Vec<RangeOp> =
            (0..n).map(|i| op(a, (t + i) % 16, t * 5 + i, 1000, i as usize * 1024)).collect();
        let ticket = engine.submit_read_into(vec![SENTINEL; n as usize * 1024], ops.clone());
        ranged.push((ops, ticket.expect("ticket")));
        if t % 8 == 0 {
            wholes.push(engine.submit_read_whole(vec![whole(a, t % 16)]).expect("ticket"));
        }
    }
    let mut fds: Vec<RawFd> = ranged.iter().map(|(_, t)| t.fileno()).collect();
    fds.extend(wholes.iter().map(Ticket::fileno));
    let start = Instant::now();
    while !poll(&fds, Duration::from_secs(1)).iter().all(|&ready| ready) {
        assert!(start.elapsed() < Duration::from_secs(5), "some tickets never completed");
    }
    for (ops, ticket) in &ranged {
        assert!(
            ticket.results().is_some_and(|r| r.iter().all(std::result::Result::is_ok)),
            "{ops:?}"
        );
        let buf = ticket.take_buffer().expect("buffer back");
        for o in ops {
            let want = &pattern(o.key, 8192)[o.offset as usize..o.offset as usize + 1000];
            assert_eq!(&buf[o.buf_offset..o.buf_offset + 1000], want);
        }
    }
    for ticket in &wholes {
        assert!(ticket.results().is_some_and(|r| r[0].as_ref().is_ok_and(WholeNeedle::verify)));
    }
    let stats = engine.stats();
    assert!(stats.lane_batches > 0 && stats.lane_batches < stats.batches, "{stats:?}");
}

#[test]
fn the_last_hold_on_a_runtime_can_go_on_one_of_its_own_threads() {
    let current = runtime::Current::new(Duration::ZERO, Default::default()).expect("runtime");
    let generation = current.get().expect("generation");
    drop(current);
    let rt = generation.rt.handle().clone();
    let lease = Lease::new(generation);
    let (tx, rx) = mpsc::channel();
    // Dropping the runtime right there would wait for this very thread to end.
    rt.spawn_blocking(move || {
        drop(lease);
        let _ = tx.send(());
    });
    assert!(rx.recv_timeout(Duration::from_secs(3)).is_ok(), "the lease's drop returned");
}
