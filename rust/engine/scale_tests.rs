//! Connections over time and across many sidecars: the reaper closes idle ones, and
//! `max_conns` is held by closing the least recently used idle one (issue 26).

use std::time::Duration;

use super::test_server::{Mode, TestServer};
use super::tests::{cfg, needles, op, pattern, SENTINEL};
use super::*;

fn read_one(engine: &Engine, server: &TestServer, key: u64) {
    let mut buf = vec![SENTINEL; 100];
    let out = engine.read_into(&mut buf, &[op(&server.addr, key, 0, 100, 0)]);
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(buf, pattern(key, 1000)[..100]);
}

/// Waits up to 2 s for `done`.
fn eventually(engine: &Engine, done: impl Fn(&EngineStats) -> bool) -> EngineStats {
    for _ in 0..200 {
        let stats = engine.stats();
        if done(&stats) {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.stats()
}

#[test]
fn idle_connections_are_reaped_and_come_back_on_use() {
    let server = TestServer::start(needles(0..4, 1000), Mode::Normal);
    let idle_timeout = Duration::from_millis(100);
    let lane = Engine::new(EngineConfig { idle_timeout, ..cfg(2) }).expect("engine");
    let slow = Engine::new(EngineConfig { idle_timeout, ..cfg(2) }).expect("engine").without_lane();
    for engine in [&lane, &slow] {
        read_one(engine, &server, 1);
        assert!(engine.stats().open_conns >= 1, "{:?}", engine.stats());
        let after = eventually(engine, |s| s.open_conns == 0);
        assert_eq!(after.open_conns, 0, "{after:?}");
        assert!(after.reaped >= 1, "{after:?}");
        // The next read connects again.
        read_one(engine, &server, 2);
        assert_eq!(engine.stats().connects, after.connects + 1);
    }
}

#[test]
fn a_busy_connection_is_not_reaped() {
    let server =
        TestServer::start(needles(0..4, 1000), Mode::StallLate(Duration::from_millis(400)));
    let engine = Engine::new(EngineConfig { idle_timeout: Duration::from_millis(50), ..cfg(1) })
        .expect("engine")
        .without_lane();
    // The answer takes 400 ms, eight reaper periods: the connection owes it all along.
    read_one(&engine, &server, 3);
    assert_eq!(engine.stats().connects, 1);
}

#[test]
fn past_max_conns_the_least_recently_used_idle_connection_is_closed() {
    let servers: Vec<TestServer> =
        (0..8).map(|_| TestServer::start(needles(0..4, 1000), Mode::Normal)).collect();
    let engine = Engine::new(EngineConfig { max_conns: 4, ..cfg(1) }).expect("engine");
    for round in 0..2 {
        for server in &servers {
            read_one(&engine, server, 1);
            let stats = engine.stats();
            assert!(stats.open_conns <= 4, "round {round}: {stats:?}");
        }
    }
    let stats = engine.stats();
    assert_eq!(stats.sidecars, 8);
    assert_eq!(stats.over_cap, 0, "{stats:?}");
    // Each read after the fourth found the cap reached and closed the oldest.
    assert_eq!(stats.evicted, 12, "{stats:?}");
    assert_eq!(stats.connects, 16, "{stats:?}");
}

#[test]
fn zero_idle_timeout_keeps_connections() {
    let server = TestServer::start(needles(0..4, 1000), Mode::Normal);
    let engine =
        Engine::new(EngineConfig { idle_timeout: Duration::ZERO, ..cfg(1) }).expect("engine");
    read_one(&engine, &server, 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(engine.stats().open_conns, 1);
    assert_eq!(engine.stats().reaped, 0);
}

#[test]
fn the_cap_holds_on_the_async_path_too() {
    let servers: Vec<TestServer> =
        (0..6).map(|_| TestServer::start(needles(0..4, 1000), Mode::Normal)).collect();
    // Two async connections per sidecar: a cap of 4 holds two sidecars' worth.
    let engine =
        Engine::new(EngineConfig { max_conns: 4, ..cfg(2) }).expect("engine").without_lane();
    for server in &servers {
        let mut buf = vec![SENTINEL; 200];
        let ops = [op(&server.addr, 1, 0, 100, 0), op(&server.addr, 2, 0, 100, 100)];
        let out = engine.read_into(&mut buf, &ops);
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        assert_eq!(buf[..100], pattern(1, 1000)[..100]);
        let stats = engine.stats();
        assert!(stats.open_conns <= 4, "{stats:?}");
    }
    let stats = engine.stats();
    assert_eq!(stats.connects, 12, "{stats:?}");
    assert_eq!(stats.evicted, 8, "{stats:?}");
    assert_eq!(stats.over_cap, 0, "{stats:?}");
}

#[test]
fn engines_dropped_while_their_reaper_runs_go_quietly() {
    let server = TestServer::start(needles(0..4, 1000), Mode::Normal);
    // A reaper that ticks every 10 ms, and engines dropped at every point of its tick.
    for _ in 0..50 {
        let engine =
            Engine::new(EngineConfig { idle_timeout: Duration::from_millis(20), ..cfg(1) })
                .expect("engine");
        read_one(&engine, &server, 1);
        std::thread::sleep(Duration::from_millis(3));
        drop(engine);
    }
}
