"""Soak: many reader threads doing random ranged reads for a long time, through the Client
and through the mount at once, against a real cluster with sidecars. Every byte is compared.
Every ``--sample-secs`` it samples the RSS and open fds of the sidecars, the mount and this
process (the client), and at the end prints throughput, p50/p99 and the first and last
samples, which should be flat. Writes JSON.

    .venv/bin/python benches/soak.py [--minutes 10] [--threads 64] [--out bench-results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from seaweed_rdma import Client
from seaweed_rdma.cluster import LocalCluster

MIB = 1 << 20
RESERVOIR = 20_000


def proc_usage(pid: int) -> dict[str, int]:
    """RSS (bytes) and open fds of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {"rss": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


class Readers:
    """Reader threads over one ``read(path, off, size) -> bytes`` function."""

    def __init__(self, name: str, read: Any, files: dict[str, bytes], threads: int) -> None:
        self.name = name
        self.read = read
        self.files = files
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # A bounded reservoir, so the soak's own bookkeeping does not show as client growth.
        self.lat: list[float] = []
        self.seen = 0
        self.rng = random.Random(name)
        self.bytes = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []
        self.pool = [threading.Thread(target=self.run, args=(seed,), daemon=True)
                     for seed in range(threads)]

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        paths = sorted(self.files)
        while not self.stop.is_set():
            path = rng.choice(paths)
            data = self.files[path]
            size = rng.choice((4096, 65536, 1 << 20))
            off = rng.randrange(0, len(data))
            t0 = time.perf_counter()
            try:
                got = self.read(path, off, size)
            except Exception as e:  # counted and reported; a soak keeps going
                with self.lock:
                    self.errors.append(repr(e)[:200])
                continue
            dt = time.perf_counter() - t0
            with self.lock:
                self.seen += 1
                if len(self.lat) < RESERVOIR:
                    self.lat.append(dt)
                else:
                    at = self.rng.randrange(self.seen)
                    if at < RESERVOIR:
                        self.lat[at] = dt
                self.bytes += len(got)
                if got != data[off:off + size]:
                    self.wrong.append(f"{path} at {off}+{size}")

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.lat)
        n = len(lat)
        pick = (lambda q: round(lat[min(n - 1, int(q * n))] * 1e6, 1)) if n else (lambda q: 0)
        return {"reads": self.seen, "MB_per_s": round(self.bytes / seconds / 1e6, 1),
                "p50_us": pick(0.5), "p99_us": pick(0.99), "wrong": len(self.wrong),
                "errors": len(self.errors), "first_errors": self.errors[:5]}


def mount_read(mnt: Path) -> Any:
    def read(path: str, off: int, size: int) -> bytes:
        fd = os.open(mnt / path.lstrip("/"), os.O_RDONLY)
        try:
            return os.pread(fd, size, off)
        finally:
            os.close(fd)
    return read


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=64, help="per path (client, mount)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--file-mib", type=int, default=32)
    ap.add_argument("--sample-secs", type=float, default=10.0)
    ap.add_argument("--warmup-secs", type=float, default=30.0,
                    help="samples before this are not compared (pools and caches filling)")
    ap.add_argument("--out", default="bench-results/soak.json")
    args = ap.parse_args()

    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl:
        sidecars = [cl.add_sidecar(vs) for vs in cl.volume_servers]
        rng = random.Random(7)
        files = {}
        for i in range(args.files):
            data = rng.randbytes(args.file_mib * MIB)
            cl.upload(f"/soak/f{i}.bin", data, max_mb=4)
            files[f"/soak/f{i}.bin"] = data
        mnt = Path(cl.base_dir or "/tmp") / "soak-mnt"
        mnt.mkdir()
        port = sidecars[0].address.rsplit(":", 1)[1]
        spec = f":{port}" if all(s.address.endswith(f":{port}") for s in sidecars) else \
            sidecars[0].address
        mount = subprocess.Popen(
            [sys.executable, "-m", "seaweed_rdma.cli", "mount", f"-filer={cl.filer.grpc_address}",
             f"-dir={mnt}", "-rdma.enabled", f"-rdma.sidecar={spec}", "-cacheCapacityMB=64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if spec != f":{port}":
            print("note: sidecars on different ports; the mount uses one for all volumes")
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if mount.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mount did not come up")
            time.sleep(0.1)
        client = Client(cl.filer.grpc_address, sidecar=cl.sidecar_map(), transport="tcp")
        groups = [Readers("client", client.read, files, args.threads),
                  Readers("mount", mount_read(mnt), files, args.threads)]
        procs = {"client": os.getpid(), "mount": mount.pid,
                 **{f"sidecar{i}": s.proc.pid for i, s in enumerate(sidecars)}}
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        try:
            for g in groups:
                for t in g.pool:
                    t.start()
            end = t0 + args.minutes * 60
            while True:
                samples.append({"t": round(time.monotonic() - t0, 1),
                                **{name: proc_usage(pid) for name, pid in procs.items()}})
                print(json.dumps(samples[-1]), flush=True)
                if time.monotonic() >= end:
                    break
                time.sleep(min(args.sample_secs, max(0.0, end - time.monotonic())))
        finally:
            for g in groups:
                g.stop.set()
            for g in groups:
                for t in g.pool:
                    t.join(30)
            elapsed = time.monotonic() - t0
            stats = client.stats()
            client.close()
            mount.send_signal(signal.SIGTERM)
            mount.wait(15)
        res = {"minutes": args.minutes, "threads_per_path": args.threads,
               **{g.name: g.summary(elapsed) for g in groups},
               "client_stats": {k: stats[k] for k in ("fast", "http", "fallbacks")},
               "samples": samples, "last": samples[-1],
               "first": next((x for x in samples if x["t"] >= args.warmup_secs), samples[-1])}
    for g in groups:
        s = res[g.name]
        print(f"{g.name:7s} {s['reads']:8d} reads {s['MB_per_s']:8.1f} MB/s p50 {s['p50_us']} us "
              f"p99 {s['p99_us']} us wrong {s['wrong']} errors {s['errors']}")
    print(f"from t={res['first']['t']}s to t={res['last']['t']}s:")
    for name in procs:
        a, b = res["first"][name], res["last"][name]
        print(f"{name:9s} rss {a['rss'] / MIB:7.1f} -> {b['rss'] / MIB:7.1f} MiB  "
              f"fds {a['fds']} -> {b['fds']}  threads {a['threads']} -> {b['threads']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 1 if any(res[g.name]["wrong"] for g in groups) else 0


if __name__ == "__main__":
    raise SystemExit(main())
