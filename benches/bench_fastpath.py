"""Fast path vs HTTP, side by side on one embedded cluster, in one run (the same code as
`seaweed-rdma bench`). Prints the table with ratios and writes JSON.

    .venv/bin/python benches/bench_fastpath.py [--size-mib 256] [--out bench-results/fastpath.json]
"""

from __future__ import annotations

import argparse

from seaweed_rdma.bench import BenchConfig, run_bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--random-reads", type=int, default=3000)
    ap.add_argument("--out", default="bench-results/fastpath.json")
    a = ap.parse_args()
    return run_bench(BenchConfig(size_mib=a.size_mib, chunk_mib=a.chunk_mib, rounds=a.rounds,
                                 random_reads=a.random_reads, out=a.out))


if __name__ == "__main__":
    raise SystemExit(main())
