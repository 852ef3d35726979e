"""Worker processes reading many small files, DataLoader's way, on one embedded cluster:

- ``inherited``: the parent makes a Client, uses it, and forks the workers, which read with
  the inherited Client (it rebuilds its connections on its first call in each child);
- ``own``: forked workers that each build a Client of their own first (the usual advice
  before this was safe);
- ``spawn``: spawned workers sent the parent's Client pickled (configuration only).

Each round forks (or spawns) fresh workers; every file's MD5 is checked. Prints files/s per
worker (the median over workers and rounds, from the worker's first call, so the rebuild
or the construction is inside the figure), the wrong-file count, and the ratio
inherited / own, and writes JSON.

    .venv/bin/python benches/workers.py [--files 600] [--rounds 10] [--workers 4]
        [--out bench-results/workers.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

SIZE = 64 * 1024
INHERITED: Client | None = None


def _read(client: Client, digests: dict[str, str]) -> tuple[int, int]:
    wrong = sum(hashlib.md5(client.read(p)).hexdigest() != want for p, want in digests.items())
    return wrong, client.stats()["fast"]["bytes"]


def inherited(digests: dict[str, str]) -> dict[str, Any]:
    assert INHERITED is not None
    t0 = time.perf_counter()
    wrong, fast = _read(INHERITED, digests)
    return {"secs": time.perf_counter() - t0, "wrong": wrong, "fast_bytes": fast}


def own(args: tuple[dict[str, Any], dict[str, str]]) -> dict[str, Any]:
    kwargs, digests = args
    t0 = time.perf_counter()
    with Client(**kwargs) as c:
        wrong, fast = _read(c, digests)
    return {"secs": time.perf_counter() - t0, "wrong": wrong, "fast_bytes": fast}


def pickled(args: tuple[Client, dict[str, str]]) -> dict[str, Any]:
    client, digests = args
    t0 = time.perf_counter()
    with client:
        wrong, fast = _read(client, digests)
    return {"secs": time.perf_counter() - t0, "wrong": wrong, "fast_bytes": fast}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", default="bench-results/workers.json")
    a = ap.parse_args()
    global INHERITED
    with LocalCluster(volumes=2) as cl:
        cl.start()
        for vs in cl.volume_servers:
            cl.add_sidecar(vs)
        rng = random.Random(1)
        blobs = {f"/bench/workers/f{i:05d}.bin": rng.randbytes(SIZE) for i in range(a.files)}
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda kv: cl.upload(kv[0], kv[1]), blobs.items()))
        digests = {p: hashlib.md5(b).hexdigest() for p, b in blobs.items()}
        paths = sorted(digests)
        shares = [{p: digests[p] for p in paths[i::a.workers]} for i in range(a.workers)]
        kwargs = {"filer": cl.filer.grpc_address, "sidecar": cl.sidecar_map(),
                  "transport": "tcp"}
        results: dict[str, list[dict[str, Any]]] = {"inherited": [], "own": [], "spawn": []}
        with Client(**kwargs) as parent:
            parent.read(paths[0])
            INHERITED = parent
            fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
            for r in range(a.rounds):
                # Alternate which goes first, so neither always meets a warmer cache.
                order = ["inherited", "own"] if r % 2 == 0 else ["own", "inherited"]
                for mode in order:
                    with fork.Pool(a.workers) as pool:
                        if mode == "inherited":
                            results[mode] += pool.map(inherited, shares)
                        else:
                            results[mode] += pool.map(own, [(kwargs, s) for s in shares])
            with spawn.Pool(a.workers) as pool:
                results["spawn"] += pool.map(pickled, [(parent, s) for s in shares])
    summary: dict[str, Any] = {"files": a.files, "rounds": a.rounds, "workers": a.workers,
                               "file_bytes": SIZE}
    for mode, rows in results.items():
        rates = [len(shares[0]) / row["secs"] for row in rows]
        summary[mode] = {"files_per_s_median": statistics.median(rates),
                         "files_per_s_min": min(rates), "files_per_s_max": max(rates),
                         "wrong": sum(row["wrong"] for row in rows),
                         "workers_without_fast_bytes": sum(row["fast_bytes"] == 0
                                                           for row in rows),
                         "files_read": len(rows) * len(shares[0])}
    summary["ratio_inherited_over_own"] = (summary["inherited"]["files_per_s_median"]
                                           / summary["own"]["files_per_s_median"])
    for mode in results:
        s = summary[mode]
        print(f"{mode:10s} {s['files_per_s_median']:8.0f} files/s per worker "
              f"(min {s['files_per_s_min']:.0f}, max {s['files_per_s_max']:.0f}); "
              f"{s['files_read']} files read, {s['wrong']} wrong, "
              f"{s['workers_without_fast_bytes']} workers with no fast-path bytes")
    print(f"inherited / own: {summary['ratio_inherited_over_own']:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    wrong = sum(summary[m]["wrong"] for m in results)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
