"""Fast path vs HTTP, side by side on one local cluster, in one run.

Workloads: a sequential read of a 256 MiB multi-chunk file (throughput) and 4 KiB random
reads (latency percentiles). Paths: the fast path (tcp sidecars), our client over HTTP on
the volume servers (same parallelism), a plain GET through the filer, and loopback TCP as
measured by iperf3 for the ceiling. Prints a table with ratios and writes JSON.

    .venv/bin/python benches/bench_fastpath.py [--size-mib 256] [--out bench-results/fastpath.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster, free_port

MIB = 1 << 20


def iperf3_loopback(seconds: int = 3) -> float | None:
    """Loopback TCP throughput in bytes/s, or None without iperf3."""
    if not shutil.which("iperf3"):
        return None
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                              "-J"], capture_output=True, text=True, timeout=seconds + 20)
        report = json.loads(out.stdout)
        return float(report["end"]["sum_received"]["bits_per_second"]) / 8
    except (subprocess.SubprocessError, ValueError, KeyError):
        return None
    finally:
        server.kill()
        server.wait()


def sequential(client: Client, path: str, size: int, block: int, rounds: int) -> float:
    """Best-of-``rounds`` bytes/s reading ``path`` front to back in ``block`` pieces."""
    buf = bytearray(block)
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        off = 0
        while off < size:
            n = client.readinto(path, buf, off)
            assert n > 0
            off += n
        best = max(best, size / (time.perf_counter() - t0))
    return best


def filer_get(url: str, size: int, rounds: int) -> float:
    best = 0.0
    with httpx.Client(timeout=120) as http:
        for _ in range(rounds):
            t0 = time.perf_counter()
            got = 0
            with http.stream("GET", url) as r:
                for piece in r.iter_raw(MIB):
                    got += len(piece)
            assert got == size
            best = max(best, size / (time.perf_counter() - t0))
    return best


def random_4k(client: Client, path: str, size: int, count: int) -> dict[str, float]:
    rng = random.Random(1)
    buf = bytearray(4096)
    lat = []
    for _ in range(count):
        off = rng.randrange(0, size - 4096) & ~4095
        t0 = time.perf_counter()
        client.readinto(path, buf, off)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
            "mean_us": statistics.fmean(lat) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--block-mib", type=int, default=16, help="sequential read size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--random-reads", type=int, default=3000)
    ap.add_argument("--out", default="bench-results/fastpath.json")
    a = ap.parse_args()
    size = a.size_mib * MIB
    results: dict[str, object] = {"size_mib": a.size_mib, "chunk_mib": a.chunk_mib,
                                  "cpus": os.cpu_count()}
    print(f"starting a local cluster and sidecars; writing a {a.size_mib} MiB file ...",
          flush=True)
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl:
        for vs in cl.volume_servers:
            cl.add_sidecar(vs)
        rng = random.Random(0)
        data = b"".join(rng.randbytes(16 * MIB) for _ in range(size // (16 * MIB)))
        data += rng.randbytes(size - len(data))
        cl.upload("/bench/seq.bin", data, max_mb=a.chunk_mib)
        del data
        fast = Client(cl.filer.grpc_address, sidecar=cl.sidecar_map(), transport="tcp")
        http = Client(cl.filer.grpc_address)
        path = "/bench/seq.bin"
        print("sequential ...", flush=True)
        seq = {
            "fast_tcp": sequential(fast, path, size, a.block_mib * MIB, a.rounds),
            "http_volume": sequential(http, path, size, a.block_mib * MIB, a.rounds),
            "http_filer": filer_get(f"{cl.filer.url}{path}", size, a.rounds),
        }
        loop = iperf3_loopback()
        print("4 KiB random ...", flush=True)
        rnd = {"fast_tcp": random_4k(fast, path, size, a.random_reads),
               "http_volume": random_4k(http, path, size, a.random_reads)}
        results["sequential_bytes_per_s"] = seq
        results["iperf3_loopback_bytes_per_s"] = loop
        results["random_4k"] = rnd
        results["fast_stats"] = {k: v for k, v in fast.stats().items()
                                 if k in ("fast", "http", "fallbacks")}
        fast.close()
        http.close()

    print(f"\nsequential read, {a.size_mib} MiB, {a.block_mib} MiB reads (best of {a.rounds})")
    for name, v in seq.items():
        print(f"  {name:12s} {v / 1e6:9.1f} MB/s   fast/this = {seq['fast_tcp'] / v:5.2f}x")
    if loop:
        print(f"  {'iperf3 loop':12s} {loop / 1e6:9.1f} MB/s   fast/this = "
              f"{seq['fast_tcp'] / loop:5.2f}")
    print("\n4 KiB random reads (one thread)")
    for name, r in rnd.items():
        print(f"  {name:12s} p50 {r['p50_us']:8.1f} us   p99 {r['p99_us']:8.1f} us   "
              f"p50 ratio this/fast = {r['p50_us'] / rnd['fast_tcp']['p50_us']:5.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
