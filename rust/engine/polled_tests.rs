//! Tests of polled batches ([`super::Polled`]) against the in-test protocol server.

use std::time::{Duration, Instant};

use super::super::test_server::{Mode, TestServer};
use super::super::tests::{engine, needles, op, pattern, SENTINEL};
use super::*;
use crate::engine::EngineConfig;
use crate::proto::Status;

/// Polls until the outcomes are in, sleeping briefly between polls as a loop waiting on
/// the socket would.
fn drive<B: DestBuffer>(p: &mut Polled<B>) -> Vec<Result<(), Failure>> {
    loop {
        if let Some(out) = p.poll() {
            return out;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// An engine whose lane connection to `server` exists (a polled batch never connects).
fn warmed(server: &TestServer) -> Engine {
    let engine = engine(1);
    let mut buf = vec![0u8; 16];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 16, 0)]), vec![Ok(())]);
    engine
}

#[test]
fn answers_land_at_their_offsets_and_the_connection_is_kept() {
    let server = TestServer::start(needles(0..4, 5000), Mode::Normal);
    let engine = warmed(&server);
    server.set_mode(Mode::Reverse(3));
    for round in 0..3u64 {
        let ops: Vec<RangeOp> =
            (0..3u64).map(|k| op(&server.addr, k, k + round, 4000, k as usize * 4096)).collect();
        let mut p = engine.start_polled(vec![SENTINEL; 3 * 4096], ops.clone()).expect("starts");
        assert!(p.fd() >= 0);
        assert_eq!(drive(&mut p), vec![Ok(()); 3]);
        assert!(p.poll().is_none(), "outcomes are given once");
        let buf = &p.dest;
        for (k, o) in ops.iter().enumerate() {
            let from = o.offset as usize;
            assert_eq!(
                &buf[o.buf_offset..o.buf_offset + 4000],
                &pattern(k as u64, 5000)[from..from + 4000]
            );
            assert!(buf[o.buf_offset + 4000..o.buf_offset + 4096].iter().all(|&b| b == SENTINEL));
        }
    }
    let stats = engine.stats();
    assert_eq!((stats.connects, server.accepted()), (1, 1), "one connection throughout");
}

#[test]
fn batches_it_does_not_take_give_the_buffer_back() {
    let server = TestServer::start(needles(0..2, 1 << 17), Mode::Normal);
    let cold = engine(1);
    // No lane connection yet: a polled batch never connects.
    assert!(cold.start_polled(vec![0u8; 4096], vec![op(&server.addr, 0, 0, 4096, 0)]).is_err());
    let engine = warmed(&server);
    let big = vec![op(&server.addr, 0, 0, (POLLED_MAX_BYTES + 1) as u32, 0)];
    assert!(engine.start_polled(vec![0u8; 1 << 17], big).is_err(), "too large");
    let outside = vec![op(&server.addr, 0, 0, 4096, 1)];
    assert!(engine.start_polled(vec![0u8; 4096], outside).is_err(), "outside the buffer");
    let other = TestServer::start(needles(0..1, 4096), Mode::Normal);
    let two = vec![op(&server.addr, 0, 0, 100, 0), op(&other.addr, 0, 0, 100, 100)];
    assert!(engine.start_polled(vec![0u8; 4096], two).is_err(), "two sidecars");
    // While one polled batch holds the only idle connection, a second finds none.
    let first = engine.start_polled(vec![0u8; 100], vec![op(&server.addr, 1, 0, 100, 0)]);
    let mut first = first.expect("starts");
    assert!(engine.start_polled(vec![0u8; 100], vec![op(&server.addr, 1, 0, 100, 0)]).is_err());
    assert_eq!(drive(&mut first), vec![Ok(())]);
}

#[test]
fn refusals_are_outcomes_and_the_connection_stays() {
    let server = TestServer::start(needles(0..1, 4096), Mode::Normal);
    let engine = warmed(&server);
    server.set_mode(Mode::Refuse(Status::NotFound));
    let mut p = engine
        .start_polled(vec![0u8; 4096], vec![op(&server.addr, 0, 0, 4096, 0)])
        .expect("starts");
    assert_eq!(drive(&mut p), vec![Err(Failure::Status(Status::NotFound))]);
    server.set_mode(Mode::Normal);
    let mut p =
        engine.start_polled(vec![0u8; 4096], vec![op(&server.addr, 0, 0, 4096, 0)]).expect("kept");
    assert_eq!(drive(&mut p), vec![Ok(())]);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn garbage_or_a_closed_connection_fails_the_batch_and_the_next_read_reconnects() {
    for mode in [Mode::Garbage, Mode::CloseMid] {
        let server = TestServer::start(needles(0..1, 8192), Mode::Normal);
        let engine = warmed(&server);
        server.set_mode(mode);
        let start = engine.start_polled(vec![0u8; 8192], vec![op(&server.addr, 0, 0, 8192, 0)]);
        let mut p = start.expect("starts");
        let out = drive(&mut p);
        assert!(matches!(out[0], Err(Failure::Protocol(_) | Failure::Lost(_))), "{out:?}");
        server.set_mode(Mode::Normal);
        std::thread::sleep(super::super::tests::cfg(1).backoff_min + Duration::from_millis(50));
        let mut buf = vec![0u8; 8192];
        assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 8192, 0)]), vec![Ok(())]);
        assert_eq!(buf, pattern(0, 8192));
        assert_eq!(server.accepted(), 2, "the broken connection was not reused");
    }
}

#[test]
fn a_silent_sidecar_times_out_and_a_dropped_batch_drops_its_connection() {
    let server = TestServer::start(needles(0..1, 4096), Mode::Normal);
    let engine = Engine::new(EngineConfig {
        timeout: Duration::from_millis(200),
        ..super::super::tests::cfg(1)
    })
    .expect("engine");
    let mut buf = vec![0u8; 16];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 16, 0)]), vec![Ok(())]);
    server.set_mode(Mode::StallLate(Duration::from_millis(1500)));
    let mut p = engine
        .start_polled(vec![SENTINEL; 4096], vec![op(&server.addr, 0, 0, 4096, 0)])
        .expect("starts");
    let t0 = Instant::now();
    assert_eq!(drive(&mut p), vec![Err(Failure::Timeout)]);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert!(p.dest.iter().all(|&b| b == SENTINEL), "nothing written");
    drop(p);
    // A batch dropped before its answer: nothing more is written, its connection goes.
    server.set_mode(Mode::Normal);
    std::thread::sleep(super::super::tests::cfg(1).backoff_min + Duration::from_millis(50));
    let mut buf = vec![0u8; 16];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 16, 0)]), vec![Ok(())]);
    server.set_mode(Mode::StallLate(Duration::from_millis(300)));
    let p = engine
        .start_polled(vec![SENTINEL; 4096], vec![op(&server.addr, 0, 0, 4096, 0)])
        .expect("starts");
    drop(p);
    server.set_mode(Mode::Normal);
    let mut buf = vec![0u8; 4096];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]), vec![Ok(())]);
    assert_eq!(buf, pattern(0, 4096));
    assert_eq!(server.accepted(), 3);
}

#[test]
fn a_crossed_answer_fails_the_batch_and_writes_nothing() {
    let server = TestServer::start(needles(0..3, 8192), Mode::Normal);
    let engine = warmed(&server);
    server.set_mode(Mode::Crossed);
    let start = engine.start_polled(vec![SENTINEL; 4096], vec![op(&server.addr, 0, 0, 4096, 0)]);
    let mut p = start.expect("starts");
    let out = drive(&mut p);
    assert!(matches!(out[0], Err(Failure::Crossed(_))), "{out:?}");
    assert!(p.dest.iter().all(|&b| b == SENTINEL), "the other needle's bytes were not used");
}
