//! Planner benchmarks: building plans for very large chunk lists, and answering reads.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use seaweed_rdma::plan::{ChunkSpec, Plan};

const CHUNKS: u64 = 100_000;
const MIB: u64 = 1 << 20;

/// SplitMix64: deterministic, so every run benches the same chunk list.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A 100 GiB file written in order, 1 MiB per chunk.
fn sequential() -> Vec<ChunkSpec> {
    (0..CHUNKS)
        .map(|i| ChunkSpec { offset: i * MIB, size: MIB, modified_ts_ns: i as i64, whole: false })
        .collect()
}

/// Random writes of 4 KiB to 2 MiB anywhere in a 10 GiB file, so that most chunks
/// overlap several others.
fn overlapping() -> Vec<ChunkSpec> {
    let mut rng = SplitMix(0x5eed);
    let span = 10 * 1024 * MIB;
    (0..CHUNKS)
        .map(|_| ChunkSpec {
            offset: rng.below(span),
            size: 4096 + rng.below(2 * MIB),
            modified_ts_ns: rng.below(1 << 40) as i64,
            whole: rng.below(4) == 0,
        })
        .collect()
}

/// Every chunk overlaps every other: each one nests inside the previous one, with random
/// timestamps, so the sweep holds up to all 100k chunks at once.
fn nested() -> Vec<ChunkSpec> {
    let mut rng = SplitMix(0x0e57);
    (0..CHUNKS)
        .map(|i| ChunkSpec {
            offset: i * 4096,
            size: (2 * (CHUNKS - i) + 1) * 4096,
            modified_ts_ns: rng.below(1 << 40) as i64,
            whole: false,
        })
        .collect()
}

fn build(chunks: &[ChunkSpec]) -> Plan {
    match Plan::new(chunks.to_vec(), 0) {
        Ok(p) => p,
        Err(e) => panic!("bench input rejected: {e}"),
    }
}

fn bench_new(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan_new");
    for (name, chunks) in [
        ("sequential_100k_1mib", sequential()),
        ("overlapping_100k", overlapping()),
        ("nested_100k", nested()),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(|| chunks.clone(), |v| Plan::new(v, 0), BatchSize::LargeInput)
        });
    }
    g.finish();
}

fn bench_extents(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan_extents");
    for (name, plan) in
        [("sequential_100k", build(&sequential())), ("overlapping_100k", build(&overlapping()))]
    {
        // Read in the middle of the file, off any chunk boundary, so the binary search does
        // real work.
        let mid = plan.file_size() / 2 + 12345;
        eprintln!(
            "{name}: {} intervals; a 64 MiB read gives {} extents",
            plan.intervals().len(),
            plan.extents(mid, 64 * MIB).len()
        );
        g.bench_function(format!("{name}/4kib"), |b| {
            b.iter(|| plan.extents(black_box(mid), black_box(4096)))
        });
        g.bench_function(format!("{name}/64mib"), |b| {
            b.iter(|| plan.extents(black_box(mid), black_box(64 * MIB)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_new, bench_extents);
criterion_main!(benches);
