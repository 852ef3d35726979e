//! Tests of the lane ([`super::lane`]): small single-sidecar batches on the calling thread,
//! against the in-test protocol server ([`super::test_server`]).

use std::time::{Duration, Instant};

use super::lane::{self, LANE_MAX_LEN, LANE_MAX_OPS};
use super::test_server::{Mode, Stored, TestServer};
use super::tests::{cfg, engine, free_addr, health_of, needles, op, pattern, COOKIE, SENTINEL};
use super::*;
use crate::proto::Status;

#[test]
fn only_small_batches_for_one_sidecar_take_the_lane() {
    let small = |n: usize| (0..n).map(|_| ("a:1", 4096)).collect::<Vec<_>>();
    assert_eq!(lane::target(small(1).into_iter()), Some("a:1"));
    assert_eq!(lane::target(small(LANE_MAX_OPS).into_iter()), Some("a:1"));
    assert_eq!(lane::target(small(LANE_MAX_OPS + 1).into_iter()), None);
    assert_eq!(lane::target(small(0).into_iter()), None);
    assert_eq!(lane::target([("a:1", 1), ("b:1", 1)].into_iter()), None);
    assert_eq!(lane::target([("a:1", LANE_MAX_LEN)].into_iter()), Some("a:1"));
    assert_eq!(lane::target([("a:1", 1), ("a:1", LANE_MAX_LEN + 1)].into_iter()), None);

    let server = TestServer::start(needles(0..16, 100), Mode::Normal);
    let engine = engine(2);
    let mut buf = vec![0u8; 16 * 100];
    let many: Vec<RangeOp> =
        (0..9u64).map(|k| op(&server.addr, k, 0, 100, k as usize * 100)).collect();
    assert!(engine.read_into(&mut buf, &many).iter().all(std::result::Result::is_ok));
    assert_eq!(engine.stats().lane_batches, 0, "nine ops go the async way");
    assert!(engine.read_into(&mut buf, &many[..8]).iter().all(std::result::Result::is_ok));
    assert_eq!(engine.read_whole(&[super::tests::whole(&server.addr, 3)]).len(), 1);
    let stats = engine.stats();
    assert_eq!((stats.batches, stats.lane_batches, stats.reads), (3, 2, 18));
}

#[test]
fn answers_out_of_order_land_at_their_offsets_and_the_connection_is_reused() {
    let server = TestServer::start(needles(0..4, 5000), Mode::Reverse(4));
    let engine = engine(2);
    for round in 0..3u64 {
        let mut buf = vec![SENTINEL; 4 * 1000 + 100];
        let ops: Vec<RangeOp> = (0..4u64)
            .map(|k| op(&server.addr, k, k * 10 + round, 900, k as usize * 1000 + 100))
            .collect();
        let out = engine.read_into(&mut buf, &ops);
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        for (k, o) in ops.iter().enumerate() {
            let from = o.offset as usize;
            assert_eq!(
                &buf[o.buf_offset..o.buf_offset + 900],
                &pattern(k as u64, 5000)[from..from + 900]
            );
            assert!(buf[o.buf_offset - 100..o.buf_offset].iter().all(|&b| b == SENTINEL));
        }
    }
    let stats = engine.stats();
    assert_eq!((stats.lane_batches, stats.connects, server.accepted()), (3, 1, 1));
}

#[test]
fn more_ops_than_the_granted_window_are_sent_as_answers_come() {
    let server = TestServer::start_on("127.0.0.1:0", needles(0..6, 512), Mode::Normal, 1 << 20, 2);
    let engine = engine(1);
    let mut buf = vec![0u8; 6 * 512];
    let ops: Vec<RangeOp> =
        (0..6u64).map(|k| op(&server.addr, k, 0, 512, k as usize * 512)).collect();
    assert!(engine.read_into(&mut buf, &ops).iter().all(std::result::Result::is_ok));
    for k in 0..6 {
        assert_eq!(buf[k * 512..(k + 1) * 512], pattern(k as u64, 512)[..]);
    }
    assert_eq!(engine.stats().lane_batches, 1);
}

#[test]
fn a_timeout_drops_the_connection_and_the_next_batch_uses_a_new_one() {
    let late = Duration::from_millis(1500);
    let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(late));
    let engine = Engine::new(EngineConfig { timeout: Duration::from_millis(250), ..cfg(1) })
        .expect("engine");
    let mut buf = vec![SENTINEL; 4096];
    let start = Instant::now();
    let read = |buf: &mut [u8]| engine.read_into(buf, &[op(&server.addr, 0, 0, 4096, 0)]);
    let out = read(&mut buf);
    let took = start.elapsed();
    assert_eq!(out, vec![Err(Failure::Timeout)]);
    assert!(took >= Duration::from_millis(250) && took < late, "{took:?}");
    assert!(!health_of(&engine, &server.addr).up, "a timeout marks the sidecar down");
    // After the back-off, but before the late answer: the old connection still owes it, so
    // the next batch must not use it.
    server.set_mode(Mode::Normal);
    std::thread::sleep(cfg(1).backoff_min + Duration::from_millis(50));
    assert_eq!(read(&mut buf), vec![Ok(())]);
    assert_eq!(buf, pattern(0, 4096));
    assert_eq!(server.accepted(), 2);
    // Once the late answer has gone to the closed socket, the new connection still serves.
    std::thread::sleep(late.saturating_sub(start.elapsed()) + Duration::from_millis(100));
    buf.fill(SENTINEL);
    assert_eq!(read(&mut buf), vec![Ok(())]);
    assert_eq!(buf, pattern(0, 4096));
    let stats = engine.stats();
    assert_eq!((server.accepted(), stats.lane_batches, stats.aborted), (2, 3, 0));
}

#[test]
fn a_timeout_inside_a_payload_leaves_the_first_part_and_counts_an_abort() {
    let server =
        TestServer::start(needles(0..1, 200_000), Mode::StallMid(Duration::from_millis(700)));
    let engine = Engine::new(EngineConfig { timeout: Duration::from_millis(300), ..cfg(1) })
        .expect("engine");
    let mut buf = vec![SENTINEL; 200_000];
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 200_000, 0)]);
    assert_eq!(out, vec![Err(Failure::Timeout)]);
    assert_eq!(buf[..1000], pattern(0, 200_000)[..1000], "the first half had arrived");
    assert_eq!(engine.stats().aborted, 1);
    server.set_mode(Mode::Normal);
    std::thread::sleep(cfg(1).backoff_min + Duration::from_millis(50));
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 200_000, 0)]);
    assert_eq!(out, vec![Ok(())]);
    assert_eq!(buf, pattern(0, 200_000));
    assert_eq!(server.accepted(), 2);
}

#[test]
fn a_dead_sidecar_fails_to_connect_then_is_down_without_a_connect_attempt() {
    let addr = free_addr();
    let engine = engine(1);
    let mut buf = vec![0u8; 64];
    let out = engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0), op(&addr, 1, 0, 0, 64)]);
    assert!(out.iter().all(|r| matches!(r, Err(Failure::Connect(_)))), "{out:?}");
    assert!(!health_of(&engine, &addr).up);
    let server = TestServer::start_on(&addr, needles(0..1, 64), Mode::Normal, 1 << 20, 8);
    let out = engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0)]);
    assert_eq!(out, vec![Err(Failure::Down)]);
    assert_eq!(server.accepted(), 0, "no connect attempt while down");
    std::thread::sleep(cfg(1).backoff_min + Duration::from_millis(50));
    assert_eq!(engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0)]), vec![Ok(())]);
    let h = health_of(&engine, &addr);
    assert!(h.up && h.server_id == Some(7), "{h:?}");
    let stats = engine.stats();
    assert_eq!((stats.lane_batches, stats.marked_down, stats.connects), (3, 1, 1));
}

#[test]
fn a_wrong_cookie_is_not_found_and_keeps_the_connection() {
    let mut map = needles(0..1, 100);
    map.insert((1, 1), Stored::new(COOKIE ^ 1, pattern(1, 100)));
    let server = TestServer::start(map, Mode::Normal);
    let engine = engine(1);
    let mut buf = vec![SENTINEL; 200];
    for _ in 0..3 {
        let ops = [op(&server.addr, 1, 0, 100, 0), op(&server.addr, 0, 0, 100, 100)];
        let out = engine.read_into(&mut buf, &ops);
        assert_eq!(out, vec![Err(Failure::Status(Status::NotFound)), Ok(())]);
        assert!(buf[..100].iter().all(|&b| b == SENTINEL), "a refused op writes nothing");
    }
    assert!(health_of(&engine, &server.addr).up);
    assert_eq!((server.accepted(), engine.stats().lane_batches), (1, 3));
}

#[test]
fn a_sidecar_closing_mid_payload_fails_the_batch_and_the_next_reconnects() {
    let server = TestServer::start(needles(0..3, 10_000), Mode::CloseMid);
    let engine = engine(1);
    let mut buf = vec![0u8; 30_000];
    let ops: Vec<RangeOp> =
        (0..3u64).map(|k| op(&server.addr, k, 0, 10_000, k as usize * 10_000)).collect();
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(|r| matches!(r, Err(Failure::Lost(_)))), "{out:?}");
    assert!(health_of(&engine, &server.addr).up, "a dropped connection is only a strike");
    server.set_mode(Mode::Normal);
    assert!(engine.read_into(&mut buf, &ops).iter().all(std::result::Result::is_ok));
    assert_eq!(buf[10_000..20_000], pattern(1, 10_000)[..]);
    assert_eq!((server.accepted(), engine.stats().reconnects), (2, 1));
}

#[test]
fn an_idle_connection_the_sidecar_closed_is_replaced_before_use() {
    let first = TestServer::start(needles(0..1, 100), Mode::Normal);
    let addr = first.addr.clone();
    let engine = engine(1);
    let mut buf = vec![0u8; 100];
    assert_eq!(engine.read_into(&mut buf, &[op(&addr, 0, 0, 100, 0)]), vec![Ok(())]);
    drop(first); // closes the idle lane connection from the sidecar's side
    let second = TestServer::start_on(&addr, needles(0..1, 100), Mode::Normal, 1 << 20, 8);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(engine.read_into(&mut buf, &[op(&addr, 0, 0, 100, 0)]), vec![Ok(())]);
    assert_eq!((second.accepted(), engine.stats().reconnects), (1, 1));
    assert!(engine.stats().failures_by_reason.is_empty());
}

#[test]
fn threads_beyond_the_lane_connections_take_the_async_path() {
    let server =
        TestServer::start(needles(0..1, 4096), Mode::StallLate(Duration::from_millis(300)));
    let engine = engine(1);
    let threads = 12;
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (engine, barrier, addr) = (&engine, &barrier, &server.addr);
            s.spawn(move || {
                let mut buf = vec![0u8; 4096];
                barrier.wait();
                assert_eq!(engine.read_into(&mut buf, &[op(addr, 0, 0, 4096, 0)]), vec![Ok(())]);
                assert_eq!(buf, pattern(0, 4096));
            });
        }
    });
    // Eight lane connections, busy at once; the other four batches shared the async one.
    let stats = engine.stats();
    assert_eq!((stats.lane_batches, server.accepted()), (8, 9));
    let mut buf = vec![0u8; 4096];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]), vec![Ok(())]);
    assert_eq!((engine.stats().lane_batches, server.accepted()), (9, 9), "an idle one is reused");
}

#[test]
fn answers_after_the_busy_poll_window_and_without_one_arrive_whole() {
    // An answer within the window is picked up by spinning; a later one (here 30 ms, with
    // a 50 µs window), or any answer with busy polling off, by sleeping in `poll`. Both
    // end up whole, on one kept connection.
    for busy_poll in [Duration::ZERO, Duration::from_micros(50)] {
        let server = TestServer::start(needles(0..1, 4096), Mode::Normal);
        let engine = Engine::new(EngineConfig { busy_poll, ..cfg(1) }).expect("engine");
        let mut buf = vec![SENTINEL; 4096];
        let read = |buf: &mut [u8]| engine.read_into(buf, &[op(&server.addr, 0, 0, 4096, 0)]);
        assert_eq!(read(&mut buf), vec![Ok(())]);
        assert_eq!(buf, pattern(0, 4096));
        server.set_mode(Mode::StallLate(Duration::from_millis(30)));
        buf.fill(SENTINEL);
        let start = Instant::now();
        assert_eq!(read(&mut buf), vec![Ok(())]);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(buf, pattern(0, 4096));
        let stats = engine.stats();
        assert_eq!((stats.lane_batches, server.accepted()), (2, 1), "{busy_poll:?}");
    }
}

#[test]
fn answers_keep_arriving_whole_once_spinning_stops_paying() {
    // Every answer comes 5 ms late, past a 1 ms window: after a few such waits the
    // connection stops spinning (`spin.rs`), bar a probe now and then; reads go on, whole,
    // on the one connection.
    let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(Duration::from_millis(5)));
    let busy_poll = Duration::from_millis(1);
    let engine = Engine::new(EngineConfig { busy_poll, ..cfg(1) }).expect("engine");
    let mut buf = vec![SENTINEL; 4096];
    for _ in 0..12 {
        buf.fill(SENTINEL);
        let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]);
        assert_eq!(out, vec![Ok(())]);
        assert_eq!(buf, pattern(0, 4096));
    }
    assert_eq!((engine.stats().lane_batches, server.accepted()), (12, 1));
}

fn ranged(dst: &mut [u8]) -> lane::LaneOp<'_> {
    let req = crate::proto::ReadRequest { length: dst.len() as u32, ..Default::default() };
    lane::LaneOp { req, target: lane::Target::Range(dst) }
}

#[test]
fn only_small_ranged_batches_spin() {
    let spin = Duration::from_micros(50);
    let mut small = vec![0u8; lane::SPIN_MAX_BYTES as usize];
    assert_eq!(lane::spin_for(&[ranged(&mut small)], spin), spin, "64 KiB in all spins");
    let (mut a, mut b) = (vec![0u8; 40_000], vec![0u8; 40_000]);
    let two = [ranged(&mut a), ranged(&mut b)];
    assert_eq!(lane::spin_for(&two, spin), Duration::ZERO, "80 KB in all does not");
    let whole =
        [lane::LaneOp { req: crate::proto::ReadRequest::default(), target: lane::Target::Whole }];
    assert_eq!(lane::spin_for(&whole, spin), Duration::ZERO, "whole needles do not");
}
