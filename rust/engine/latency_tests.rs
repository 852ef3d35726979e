//! `engine_latency`: times the engine against the real sidecar serving a real cluster's
//! volume. Ignored by default (it starts SeaweedFS and takes seconds); run it with
//! `cargo test --release engine_latency -- --ignored --nocapture`.
//!
//! The default engine (small batches on the lane) and one with every batch on the async
//! path take turns call by call, so both see the same background noise.

use std::time::{Duration, Instant};

use super::e2e::{range, RealSidecar};
use super::*;
use crate::fid::FileId;
use crate::testutil::{Cluster, Rng, Upload};

const NEEDLE: usize = 4 << 20;
const SMALL: u32 = 4096;
const SMALL_READS: usize = 2000;
const WARM_UP: usize = 200;
const BIG: u32 = 1 << 20;
const BIG_TOTAL: usize = 64 << 20;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

/// Times one `read_into` of `ops`, checking that every op was delivered.
fn timed(engine: &Engine, buf: &mut [u8], ops: &[RangeOp]) -> Duration {
    let start = Instant::now();
    let out = engine.read_into(buf, ops);
    let took = start.elapsed();
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    took
}

/// p50 and p99 (µs) of single 4 KiB `read_into` calls, per engine, checking the bytes.
fn small_reads(engines: &[Engine], addr: &str, fid: FileId, data: &[u8]) -> Vec<(f64, f64)> {
    let mut buf = vec![0u8; SMALL as usize];
    let span = (NEEDLE - SMALL as usize) as u64;
    let mut took = vec![Vec::with_capacity(SMALL_READS); engines.len()];
    for i in 0..SMALL_READS + WARM_UP {
        let offset = (i as u64 * 7 * u64::from(SMALL)) % span;
        let op = range(addr, fid, offset, SMALL, 0);
        for (engine, times) in engines.iter().zip(&mut took) {
            buf.fill(0);
            let t = timed(engine, &mut buf, std::slice::from_ref(&op));
            assert_eq!(buf, data[offset as usize..offset as usize + SMALL as usize]);
            if i >= WARM_UP {
                times.push(t);
            }
        }
    }
    took.iter_mut()
        .map(|times| {
            times.sort();
            (percentile(times, 0.5), percentile(times, 0.99))
        })
        .collect()
}

/// MiB/s per engine reading [`BIG_TOTAL`] bytes as 1 MiB ops, `per_batch` ops per call.
fn big_reads(engines: &[Engine], addr: &str, fid: FileId, per_batch: usize) -> Vec<f64> {
    let mut buf = vec![0u8; per_batch * BIG as usize];
    let mut spent = vec![Duration::ZERO; engines.len()];
    for call in 0..BIG_TOTAL / (per_batch * BIG as usize) {
        let ops: Vec<RangeOp> = (0..per_batch)
            .map(|k| {
                let offset = ((call * per_batch + k) as u64 * u64::from(BIG)) % (NEEDLE as u64);
                range(addr, fid, offset, BIG, k * BIG as usize)
            })
            .collect();
        for (engine, spent) in engines.iter().zip(&mut spent) {
            *spent += timed(engine, &mut buf, &ops);
        }
    }
    spent.iter().map(|t| (BIG_TOTAL as f64 / f64::from(1 << 20)) / t.as_secs_f64()).collect()
}

#[test]
#[ignore = "starts SeaweedFS and the sidecar; run explicitly to measure"]
fn engine_latency() {
    let cluster = Cluster::start();
    let data = Rng::new(41).bytes(NEEDLE);
    let plain = Upload { name: "probe.bin", mime: None, gzip: false };
    let fid = cluster.put(None, &data, plain);
    let sidecar = RealSidecar::start(cluster.volume_dir(), &[]);
    let addr = sidecar.addr();
    let names = ["lane", "async"];
    let engines = [
        Engine::new(EngineConfig::default()).expect("engine"),
        Engine::new(EngineConfig::default()).expect("engine").without_lane(),
    ];
    for (name, (p50, p99)) in names.iter().zip(small_reads(&engines, &addr, fid, &data)) {
        println!("[{name}] read_into 4 KiB x {SMALL_READS}: p50 {p50:.1} us, p99 {p99:.1} us");
    }
    for per_batch in [1, 16] {
        let runs: Vec<Vec<f64>> =
            (0..3).map(|_| big_reads(&engines, &addr, fid, per_batch)).collect();
        for (e, name) in names.iter().enumerate() {
            let rates: Vec<String> = runs.iter().map(|r| format!("{:.0}", r[e])).collect();
            println!(
                "[{name}] 64 MiB as 1 MiB reads, {per_batch} per call: {} MiB/s",
                rates.join(" / ")
            );
        }
    }
    for (name, engine) in names.iter().zip(&engines) {
        let s = engine.stats();
        println!(
            "[{name}] batches {} (lane {}), failures {:?}",
            s.batches, s.lane_batches, s.failures_by_reason
        );
    }
}
