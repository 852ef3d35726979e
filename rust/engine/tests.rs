//! Engine tests against the in-test protocol server ([`super::test_server`]).

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::test_server::{Mode, Stored, TestServer};
use super::*;
use crate::proto::Status;

pub(crate) const SENTINEL: u8 = 0xee;
pub(crate) const COOKIE: u32 = 0x1234_5678;

/// Needle `key` of volume 1 holds `len` bytes that differ per key and position.
pub(crate) fn pattern(key: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 * 31 + key * 7) as u8).collect()
}

pub(crate) fn needles(keys: std::ops::Range<u64>, len: usize) -> HashMap<(u32, u64), Stored> {
    keys.map(|k| ((1, k), Stored::new(COOKIE, pattern(k, len)))).collect()
}

pub(crate) fn cfg(conns: usize) -> EngineConfig {
    EngineConfig {
        timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        max_inflight: 128,
        conns_per_sidecar: conns,
        backoff_min: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        // The fake sidecar speaks tcp only (the verbs exchange is tested in `verbs/`).
        transport: Transport::Tcp,
        ..EngineConfig::default()
    }
}

pub(crate) fn engine(conns: usize) -> Engine {
    Engine::new(cfg(conns)).expect("engine")
}

pub(crate) fn op(server: &str, key: u64, offset: u64, len: u32, buf_offset: usize) -> RangeOp {
    RangeOp {
        sidecar: server.to_owned(),
        volume: 1,
        key,
        cookie: COOKIE,
        offset,
        len,
        buf_offset,
        jwt: String::new(),
    }
}

pub(crate) fn whole(server: &str, key: u64) -> WholeOp {
    WholeOp { sidecar: server.to_owned(), volume: 1, key, cookie: COOKIE, jwt: String::new() }
}

/// A loopback port nothing listens on (bound, then released).
pub(crate) fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

pub(crate) fn health_of(engine: &Engine, addr: &str) -> SidecarHealth {
    engine.health().into_iter().find(|h| h.addr == addr).expect("sidecar known")
}

#[test]
fn pipelined_reads_answered_in_reverse_land_at_their_offsets() {
    let server = TestServer::start(needles(0..16, 5000), Mode::Reverse(16));
    let engine = engine(1);
    let mut buf = vec![SENTINEL; 16 * 1000 + 100];
    // Each op leaves a 100-byte gap before the next, which must stay untouched.
    let ops: Vec<RangeOp> =
        (0..16u64).map(|k| op(&server.addr, k, k * 10, 900, k as usize * 1000 + 100)).collect();
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    for (k, o) in ops.iter().enumerate() {
        let want = &pattern(k as u64, 5000)[k * 10..k * 10 + 900];
        assert_eq!(&buf[o.buf_offset..o.buf_offset + 900], want, "op {k}");
        assert!(buf[o.buf_offset - 100..o.buf_offset].iter().all(|&b| b == SENTINEL));
    }
    let stats = engine.stats();
    assert_eq!((stats.reads, stats.bytes, stats.connects), (16, 16 * 900, 1));
}

#[test]
fn more_ops_than_the_granted_inflight_limit_all_arrive() {
    let server =
        TestServer::start_on("127.0.0.1:0", needles(0..50, 4096), Mode::Normal, 1 << 20, 4);
    let engine = engine(2);
    let ops: Vec<RangeOp> =
        (0..400u64).map(|i| op(&server.addr, i % 50, i % 7, 512, i as usize * 512)).collect();
    let mut buf = vec![0u8; 400 * 512];
    let out = engine.read_into(&mut buf, &ops);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    for (i, o) in ops.iter().enumerate() {
        let want = &pattern(o.key, 4096)[o.offset as usize..o.offset as usize + 512];
        assert_eq!(&buf[i * 512..(i + 1) * 512], want, "op {i}");
    }
    assert_eq!(server.accepted(), 2, "ops spread over both connections");
}

#[test]
fn concurrent_batches_share_one_engine() {
    let server = TestServer::start(needles(0..8, 2048), Mode::Normal);
    let engine = engine(2);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, addr) = (&engine, &server.addr);
            s.spawn(move || {
                for round in 0..20u64 {
                    let key = (t + round) % 8;
                    let mut buf = vec![0u8; 1024];
                    let out = engine.read_into(&mut buf, &[op(addr, key, 100, 1024, 0)]);
                    assert_eq!(out, vec![Ok(())]);
                    assert_eq!(buf, pattern(key, 2048)[100..1124]);
                }
            });
        }
    });
    assert_eq!(engine.stats().reads, 80);
}

#[test]
fn out_of_bounds_and_overlapping_destinations_are_bad_ops() {
    let server = TestServer::start(needles(0..4, 1000), Mode::Normal);
    let engine = engine(2);
    let mut buf = vec![SENTINEL; 1000];
    let a = &server.addr;
    let ops = vec![
        op(a, 0, 0, 100, 0),          // fine
        op(a, 1, 0, 100, 950),        // past the end
        op(a, 1, 0, 100, usize::MAX), // offset + len overflows
        op(a, 2, 0, 100, 200),        // overlaps the next
        op(a, 3, 0, 100, 250),
        op(a, 3, 0, 100, 350), // adjacent to the previous: its own range is fine
        op(a, 2, 0, 0, 1000),  // empty, at the very end: fine
    ];
    let out = engine.read_into(&mut buf, &ops);
    let bad: Vec<bool> = out.iter().map(|r| matches!(r, Err(Failure::BadOp(_)))).collect();
    assert_eq!(bad, [false, true, true, true, true, false, false], "{out:?}");
    assert!(out[0].is_ok() && out[5].is_ok() && out[6].is_ok(), "{out:?}");
    assert!(buf[200..300].iter().all(|&b| b == SENTINEL), "refused ops write nothing");
    assert_eq!(buf[350..450], pattern(3, 1000)[..100]);
}

#[test]
fn reads_above_the_granted_max_read_are_bad_ops() {
    let server = TestServer::start_on("127.0.0.1:0", needles(0..1, 8192), Mode::Normal, 1024, 8);
    let engine = engine(1);
    let mut buf = vec![0u8; 4096];
    let out = engine.read_into(
        &mut buf,
        &[op(&server.addr, 0, 0, 2048, 0), op(&server.addr, 0, 0, 1024, 2048)],
    );
    assert!(matches!(out[0], Err(Failure::BadOp(_))), "{out:?}");
    assert_eq!(out[1], Ok(()));
}

#[test]
fn needle_statuses_map_to_failures_without_hurting_health() {
    let mut map = needles(0..2, 100);
    map.get_mut(&(1, 1)).expect("needle 1").deleted = true;
    let server = TestServer::start(map, Mode::Normal);
    let engine = engine(1);
    let mut buf = vec![0u8; 400];
    let mut wrong_cookie = op(&server.addr, 0, 0, 10, 300);
    wrong_cookie.cookie ^= 1;
    let ops = [op(&server.addr, 9, 0, 10, 0), op(&server.addr, 1, 0, 10, 100), wrong_cookie];
    for _ in 0..4 {
        let out = engine.read_into(&mut buf, &ops);
        assert_eq!(
            out,
            vec![
                Err(Failure::Status(Status::NotFound)),
                Err(Failure::Status(Status::Deleted)),
                Err(Failure::Status(Status::NotFound)),
            ]
        );
    }
    assert!(health_of(&engine, &server.addr).up);
    assert_eq!(engine.stats().failures_by_reason.get("not_found"), Some(&8));
}

#[test]
fn short_ranges_and_compressed_needles() {
    let mut map = needles(0..1, 100);
    let mut packed = Stored::new(COOKIE, pattern(5, 64));
    packed.flags = 0x01;
    map.insert((1, 5), packed);
    let server = TestServer::start(map, Mode::Normal);
    let engine = engine(1);
    let mut buf = vec![SENTINEL; 300];
    let out = engine
        .read_into(&mut buf, &[op(&server.addr, 0, 60, 100, 0), op(&server.addr, 5, 0, 32, 200)]);
    assert_eq!(out[0], Err(Failure::Short { got: 40, want: 100 }));
    assert_eq!(buf[..40], pattern(0, 100)[60..]);
    assert_eq!(out[1], Err(Failure::Compressed));
    assert!(buf[200..232].iter().all(|&b| b == SENTINEL), "compressed bytes are not delivered");
    assert!(health_of(&engine, &server.addr).up);
}

#[test]
fn whole_reads_carry_crc_and_flags() {
    let mut map = needles(0..1, 3000);
    let data = pattern(2, 777);
    let crc = crc32c::crc32c(&data);
    let mut legacy = Stored::new(COOKIE, data.clone());
    legacy.crc = crc.rotate_right(15).wrapping_add(0xa282_ead8);
    legacy.flags = 0x01;
    map.insert((1, 2), legacy);
    let mut corrupt = Stored::new(COOKIE, data);
    corrupt.crc = crc ^ 0xff;
    map.insert((1, 3), corrupt);
    let server = TestServer::start(map, Mode::Normal);
    let engine = engine(2);
    let a = &server.addr;
    let out = engine.read_whole(&[whole(a, 0), whole(a, 2), whole(a, 3), whole(a, 4)]);
    let first = out[0].as_ref().expect("needle 0");
    assert_eq!((first.data.clone(), first.needle_flags), (pattern(0, 3000), 0));
    assert!(first.verify());
    let second = out[1].as_ref().expect("needle 2");
    assert!(second.verify(), "legacy CRC form accepted");
    assert_eq!(second.needle_flags, 0x01, "compressed needles are fine whole");
    assert!(!out[2].as_ref().expect("needle 3").verify());
    assert_eq!(out[3], Err(Failure::Status(Status::NotFound)));
    assert_eq!(engine.stats().whole_reads, 3);
}

#[test]
fn a_stalled_answer_times_out_and_its_late_payload_is_discarded() {
    let late = Duration::from_millis(700);
    let server = TestServer::start(needles(0..1, 4096), Mode::StallLate(late));
    // The async path keeps the connection (the lane drops it: see lane_tests).
    let engine = Engine::new(EngineConfig { timeout: Duration::from_millis(250), ..cfg(1) })
        .expect("engine")
        .without_lane();
    let mut buf = vec![SENTINEL; 4096];
    let start = Instant::now();
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]);
    let took = start.elapsed();
    assert_eq!(out, vec![Err(Failure::Timeout)]);
    assert!(took >= Duration::from_millis(250) && took < late, "{took:?}");
    std::thread::sleep(late + Duration::from_millis(300)); // the answer has come by now
    assert!(buf.iter().all(|&b| b == SENTINEL), "nothing written after read_into returned");
    assert!(!health_of(&engine, &server.addr).up, "a timeout marks the sidecar down");
    // The late answer was read into scratch space; the connection is still good.
    server.set_mode(Mode::Normal);
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]);
    assert_eq!(out, vec![Ok(())]);
    assert_eq!(buf, pattern(0, 4096));
    assert_eq!((server.accepted(), engine.stats().aborted), (1, 0));
}

#[test]
fn a_timeout_in_the_middle_of_a_payload_kills_the_connection_first() {
    let server =
        TestServer::start(needles(0..1, 200_000), Mode::StallMid(Duration::from_millis(700)));
    // The async path, whose reader task must be killed before `read_into` returns.
    let engine = Engine::new(EngineConfig { timeout: Duration::from_millis(300), ..cfg(1) })
        .expect("engine")
        .without_lane();
    let mut buf = vec![SENTINEL; 200_000];
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 200_000, 0)]);
    assert_eq!(out, vec![Err(Failure::Timeout)]);
    let at_return = buf.clone();
    assert_eq!(at_return[..1000], pattern(0, 200_000)[..1000], "the first half had arrived");
    std::thread::sleep(Duration::from_millis(900));
    assert!(buf == at_return, "the rest of the payload never reached the buffer");
    // After the back-off the next batch reconnects and reads normally.
    server.set_mode(Mode::Normal);
    std::thread::sleep(cfg(1).backoff_min);
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 200_000, 0)]);
    assert_eq!(out, vec![Ok(())]);
    assert_eq!(buf, pattern(0, 200_000));
    assert_eq!((server.accepted(), engine.stats().aborted), (2, 1));
}

#[test]
fn busy_and_internal_answers_are_strikes_not_instant_down() {
    let server = TestServer::start(needles(0..1, 100), Mode::Refuse(Status::Busy));
    let engine = engine(1);
    let mut buf = vec![0u8; 100];
    for round in 1..=3 {
        let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 100, 0)]);
        assert_eq!(out, vec![Err(Failure::Status(Status::Busy))]);
        assert_eq!(health_of(&engine, &server.addr).up, round < 3, "round {round}");
    }
    // A success in between clears the strikes.
    std::thread::sleep(cfg(1).backoff_min);
    let internal = vec![Err(Failure::Status(Status::Internal))];
    server.set_mode(Mode::Refuse(Status::Internal));
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 100, 0)]), internal);
    server.set_mode(Mode::Normal);
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 100, 0)]), vec![Ok(())]);
    server.set_mode(Mode::Refuse(Status::Internal));
    for _ in 0..2 {
        assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 100, 0)]), internal);
    }
    assert_eq!(engine.stats().failures_by_reason.get("internal"), Some(&3));
    assert!(health_of(&engine, &server.addr).up, "two strikes after a success");
}

#[test]
fn a_connection_closed_mid_payload_fails_and_the_next_batch_reconnects() {
    let server = TestServer::start(needles(0..1, 10_000), Mode::CloseMid);
    let engine = engine(1);
    let mut buf = vec![0u8; 10_000];
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 10_000, 0)]);
    assert!(matches!(out[0], Err(Failure::Lost(_))), "{out:?}");
    assert!(health_of(&engine, &server.addr).up, "one dropped connection is only a strike");
    server.set_mode(Mode::Normal);
    let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 10_000, 0)]);
    assert_eq!(out, vec![Ok(())]);
    assert_eq!(buf, pattern(0, 10_000));
    assert_eq!((server.accepted(), engine.stats().reconnects), (2, 1));
}

#[test]
fn a_dead_sidecar_is_down_for_its_backoff_then_probed_back_up() {
    let addr = free_addr();
    let engine = engine(2);
    let mut buf = vec![0u8; 64];
    let out = engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0)]);
    assert!(matches!(out[0], Err(Failure::Connect(_))), "{out:?}");
    let h = health_of(&engine, &addr);
    assert!(!h.up && h.failures == 1 && h.retry_in.is_some_and(|d| d > Duration::ZERO), "{h:?}");
    // While down: no connect attempt, immediate failure.
    let server = TestServer::start_on(&addr, needles(0..1, 64), Mode::Normal, 1 << 20, 8);
    let out = engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0)]);
    assert_eq!(out, vec![Err(Failure::Down)]);
    assert_eq!(server.accepted(), 0, "no connect attempt while down");
    // After the back-off the next batch is the probe.
    std::thread::sleep(cfg(2).backoff_min + Duration::from_millis(50));
    let out = engine.read_into(&mut buf, &[op(&addr, 0, 0, 64, 0)]);
    assert_eq!(out, vec![Ok(())]);
    let h = health_of(&engine, &addr);
    assert!(h.up && h.failures == 0 && h.retry_in.is_none() && h.server_id == Some(7), "{h:?}");
    assert_eq!(engine.stats().marked_down, 1);
}

#[test]
fn the_backoff_doubles_up_to_its_maximum() {
    let addr = free_addr();
    let engine = Engine::new(EngineConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        ..cfg(1)
    })
    .expect("engine");
    let mut last = Duration::ZERO;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(60));
        let out = engine.read_into(&mut [0u8; 8], &[op(&addr, 0, 0, 8, 0)]);
        assert!(matches!(out[0], Err(Failure::Connect(_))), "{out:?}");
        last = health_of(&engine, &addr).retry_in.expect("down");
    }
    // 20, 40, then capped at 50 ms: more than the first step, never more than the cap.
    assert!(last > Duration::from_millis(20) && last <= Duration::from_millis(50), "{last:?}");
    assert_eq!(health_of(&engine, &addr).failures, 4);
}

#[test]
fn garbage_from_a_sidecar_is_a_protocol_failure() {
    for mode in [Mode::Garbage, Mode::GarbageHandshake] {
        let server = TestServer::start(needles(0..1, 100), mode);
        let engine = engine(1);
        let mut buf = vec![0u8; 100];
        let out = engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 100, 0)]);
        assert!(matches!(out[0], Err(Failure::Protocol(_))), "{mode:?}: {out:?}");
        assert!(!health_of(&engine, &server.addr).up, "{mode:?}");
        assert_eq!(engine.stats().failures_by_reason.get("protocol"), Some(&1));
    }
}

#[test]
fn ping_measures_a_round_trip_and_reports_dead_sidecars() {
    let server = TestServer::start(needles(0..1, 10), Mode::Normal);
    let engine = engine(1);
    let rtt = engine.ping(&server.addr).expect("pong");
    assert!(rtt < Duration::from_secs(1));
    assert!(matches!(engine.ping(&free_addr()), Err(Failure::Connect(_))));
    assert_eq!(engine.health().len(), 2);
}

#[test]
fn bad_configurations_are_refused() {
    for bad in [
        EngineConfig { timeout: Duration::ZERO, ..cfg(1) },
        EngineConfig { max_inflight: 0, ..cfg(1) },
        EngineConfig { conns_per_sidecar: 0, ..cfg(1) },
        EngineConfig { backoff_min: Duration::from_secs(9), ..cfg(1) },
    ] {
        assert!(matches!(Engine::new(bad), Err(crate::Error::Config(_))), "{bad:?}");
    }
}

#[test]
fn failure_reasons_are_short() {
    assert_eq!(Failure::Down.to_string(), "sidecar down");
    assert_eq!(Failure::Timeout.to_string(), "timeout");
    assert_eq!(Failure::Status(Status::Deleted).to_string(), "deleted");
    assert_eq!(Failure::Short { got: 1, want: 2 }.reason(), "short");
}

/// The fault a forked process causes on a shared connection: an answer under this
/// request's id that is for another READ. Its bytes must reach nobody, on every path.
#[test]
fn a_crossed_answer_is_caught_on_every_path_and_its_bytes_are_not_used() {
    let server = TestServer::start(needles(0..4, 8192), Mode::Crossed);
    for (name, engine) in [("lane", engine(1)), ("async", engine(1).without_lane())] {
        let mut buf = vec![SENTINEL; 2 * 4096];
        let ops = [op(&server.addr, 0, 0, 4096, 0), op(&server.addr, 1, 0, 4096, 4096)];
        let out = engine.read_into(&mut buf, &ops);
        assert!(out.iter().all(|r| r.is_err()), "{name}: {out:?}");
        assert!(out.iter().any(|r| matches!(r, Err(Failure::Crossed(_)))), "{name}: {out:?}");
        // Key 1's bytes (what key 0's answer carried) must not be in key 0's place.
        assert_ne!(&buf[..4096], &pattern(1, 8192)[..4096], "{name}: crossed bytes used");
        assert!(buf.iter().all(|&b| b == SENTINEL), "{name}: nothing written");
        let whole = engine.read_whole(&[whole(&server.addr, 2)]);
        assert!(matches!(whole[0], Err(Failure::Crossed(_))), "{name}: {whole:?}");
        assert!(
            engine.stats().failures_by_reason.get("crossed").copied().unwrap_or(0) >= 2,
            "{name}"
        );
        // A crossed answer says nothing against the sidecar: it stays up.
        assert!(health_of(&engine, &server.addr).up, "{name}");
    }
    server.set_mode(Mode::Normal);
    let engine = engine(1);
    let mut buf = vec![0u8; 4096];
    assert_eq!(engine.read_into(&mut buf, &[op(&server.addr, 0, 0, 4096, 0)]), vec![Ok(())]);
    assert_eq!(buf, pattern(0, 8192)[..4096]);
}
