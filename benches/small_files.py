"""Many small files, read whole, the way training sets are read, on one embedded cluster:
a filer GET per file (httpx), ``Client.read`` per file, ``Client.read_many``, our mount and
``weed mount`` (same wheel, same cluster), each at 1 and 16 readers, over a cold epoch
(a new client or a fresh mount, page cache dropped) and a warm one (the same again).
Every file is checked. Prints files/s and each path's ratio to the filer GET of the same
size, readers and epoch, and writes JSON.

    .venv/bin/python benches/small_files.py [--files 1000] [--sizes 4096,65536,1048576]
        [--big-files 200] [--no-mounts] [--out bench-results/small-files.json]

``--big-files`` is the file count for sizes of 1 MiB and more (a 2-core VM has no room
for 10,000 of them in a run of minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

import bench_mount
from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster, find_weed


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    # Not root: the page cache stays, and "cold" is warmer than it says.
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def mount(name: str, argv: list[str], tmp: Path, probe: str) -> tuple[Path, Any, Any]:
    mnt = tmp / name
    mnt.mkdir()
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed by unmount)
    proc = subprocess.Popen([*argv, f"-dir={mnt}"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not mount: {(tmp / f'{name}.log').read_text()}")
        time.sleep(0.1)
    while not (mnt / probe.lstrip("/")).exists():
        time.sleep(0.1)
    return mnt, proc, log


def unmount(mnt: Path, proc: Any, log: Any) -> None:
    bench_mount.unmount(mnt, proc)
    log.close()


def run_readers(paths: list[str], readers: int, read_one: Callable[[str], bytes],
                want: dict[str, bytes]) -> float:
    """Files/s reading every path once with ``readers`` threads; checks every file."""
    shares = [paths[i::readers] for i in range(readers)]

    def go(share: list[str]) -> None:
        for p in share:
            if read_one(p) != want[p]:
                raise AssertionError(f"wrong bytes for {p}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        list(pool.map(go, shares))
    return len(paths) / (time.perf_counter() - t0)


def run_many(c: Client, paths: list[str], readers: int, want: dict[str, bytes]) -> float:
    """Files/s with ``read_many`` in batches of 256, from ``readers`` threads."""
    batches = [paths[i:i + 256] for i in range(0, len(paths), 256)]

    def go(batch: list[str]) -> None:
        for p, got in zip(batch, c.read_many(batch, on_error="raise"), strict=True):
            if got != want[p]:
                raise AssertionError(f"wrong bytes for {p}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        list(pool.map(go, batches))
    return len(paths) / (time.perf_counter() - t0)


def bench_size(cl: LocalCluster, size: int, count: int, mounts: dict[str, list[str]],
               tmp: Path) -> dict[str, Any]:
    rng = random.Random(size)
    base = f"/bench/small-{size}"
    want = {f"{base}/f{i:05d}.bin": rng.randbytes(size) for i in range(count)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: cl.upload(*kv), want.items()))
    time.sleep(2.5)  # past the metadata stream's replay window
    paths = sorted(want)
    kwargs = {"sidecar": cl.sidecar_map(), "transport": "tcp"}
    out: dict[str, Any] = {}
    for readers in (1, 16):
        row: dict[str, float] = {}
        http = httpx.Client(limits=httpx.Limits(max_connections=32))
        for epoch in ("cold", "warm"):
            if epoch == "cold":
                drop_caches()
            row[f"filer_get_{epoch}"] = run_readers(
                paths, readers, lambda p, h=http: h.get(cl.filer.url + p).content, want)
        http.close()
        with Client(cl.filer.grpc_address, **kwargs) as c:  # type: ignore[arg-type]
            for epoch in ("cold", "warm"):
                row[f"client_read_{epoch}"] = run_readers(paths, readers, c.read, want)
        with Client(cl.filer.grpc_address, **kwargs) as c:  # type: ignore[arg-type]
            for epoch in ("cold", "warm"):
                row[f"read_many_{epoch}"] = run_many(c, paths, readers, want)
        for name, argv in mounts.items():
            drop_caches()
            mnt, proc, log = mount(name, argv, Path(tempfile.mkdtemp(dir=tmp)), paths[0])
            try:
                for epoch in ("cold", "warm"):
                    row[f"{name}_{epoch}"] = run_readers(
                        paths, readers, lambda p, m=mnt: (m / p.lstrip("/")).read_bytes(),
                        want)
            finally:
                unmount(mnt, proc, log)
        out[f"{readers}_readers"] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--big-files", type=int, default=200)
    ap.add_argument("--sizes", default="4096,65536,1048576")
    ap.add_argument("--no-mounts", action="store_true")
    ap.add_argument("--out", default="bench-results/small-files.json")
    a = ap.parse_args()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "sizes": {}}
    sizes = [int(s) for s in a.sizes.split(",")]
    total = sum(s * (a.big_files if s >= 1 << 20 else a.files) for s in sizes)
    # One volume server and its sidecar: the mount's -rdma.sidecar names one address. Its
    # 30 volume slots must hold every file (10,000 x 1 MiB does not fit 64 MiB volumes).
    limit_mb = max(64, -(-total // (20 << 20)))
    with LocalCluster(volumes=1, volume_size_limit_mb=limit_mb) as cl, \
            tempfile.TemporaryDirectory() as tmp:
        cl.start()
        cl.add_sidecar(cl.volume_servers[0])
        mounts = {} if a.no_mounts else {
            "ours": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                     f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                     f"-rdma.sidecar={cl.sidecars[0].address}", "-cacheMetaTtlSec=60"],
            "weed_mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"],
        }
        for size in sizes:
            count = a.big_files if size >= 1 << 20 else a.files
            res = bench_size(cl, size, count, mounts, Path(tmp))
            results["sizes"][str(size)] = {"files": count, **res}
            for readers, row in res.items():
                print(f"\n{count} files of {size} B, {readers.replace('_', ' ')} (files/s; "
                      "x = over filer GET of the same epoch)")
                for key, v in row.items():
                    epoch = key.rsplit("_", 1)[1]
                    base = row[f"filer_get_{epoch}"]
                    print(f"  {key:22s} {v:9.0f}  {v / base:5.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
