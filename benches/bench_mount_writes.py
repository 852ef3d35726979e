"""Writes through seaweed-rdma mount beside weed mount on one throwaway cluster (issue 24).

Both mounts get the same flags and their own filer directory; every test runs on both,
alternately, ``--rounds`` times, and the median of each is printed with the ratio
ours / weed mount (higher is better for every row):

- seq_write: one file of ``--seq-mib`` MiB written in 1 MiB blocks, then fsync (MB/s)
- create_64k_1 / create_64k_16: open(O_CREAT)+write 64 KiB+close, by 1 and 16 threads
  (files/s)
- tar_extract: ``tar -x`` of ``--tar-files`` small files (files/s)
- rsync: ``rsync -a`` of the same files from a local folder (files/s): each goes to a
  temporary name, gets its times and mode by path after its close, and is renamed
- sqlite_wal: inserts into a WAL-mode database, one transaction per 20 rows (rows/s)
- metadata: create-empty, stat, rename, unlink cycles of ``--meta-files`` names (ops/s)

    python benches/bench_mount_writes.py [--rounds 3] [--seq-mib 256]
        [--out bench-results/mount-writes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seaweed_rdma.cluster import LocalCluster, find_weed

FLAGS = ["-chunkSizeLimitMB=2", "-cacheCapacityMB=128"]


def seq_write(d: Path, mib: int) -> float:
    block = os.urandom(1 << 20)
    t = time.perf_counter()
    fd = os.open(d / "seq.bin", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return mib * (1 << 20) / 1e6 / (time.perf_counter() - t)


def create_files(d: Path, threads: int, per_thread: int) -> float:
    block = os.urandom(64 << 10)

    def work(k: int) -> None:
        for i in range(per_thread):
            fd = os.open(d / f"t{k}-{i}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                os.write(fd, block)
            finally:
                os.close(fd)

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return threads * per_thread / (time.perf_counter() - t)


def tar_extract(d: Path, ball: Path, files: int) -> float:
    t = time.perf_counter()
    subprocess.run(["tar", "-xf", str(ball), "-C", str(d)], check=True)
    return files / (time.perf_counter() - t)


def rsync_copy(d: Path, src: Path, files: int) -> float:
    t = time.perf_counter()
    subprocess.run(["rsync", "-a", f"{src}/", f"{d}/"], check=True)
    return files / (time.perf_counter() - t)


def sqlite_wal(d: Path, rows: int) -> float:
    db = sqlite3.connect(d / "t.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t (i integer primary key, v blob)")
    rng = random.Random(1)
    t = time.perf_counter()
    for start in range(0, rows, 20):
        with db:
            db.executemany("insert into t values (?, ?)",
                           [(i, rng.randbytes(200)) for i in range(start, start + 20)])
    db.close()
    return rows / (time.perf_counter() - t)


def metadata(d: Path, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        p = d / f"m{i}"
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        os.stat(p)
        os.rename(p, d / f"r{i}")
        os.unlink(d / f"r{i}")
    return 4 * n / (time.perf_counter() - t)


def make_tar(where: Path, files: int) -> Path:
    rng = random.Random(2)
    src = where / "src"
    for i in range(files):
        sub = src / f"d{i % 20}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(rng.randbytes(rng.choice((100, 2000, 9000))))
    ball = where / "t.tar"
    with tarfile.open(ball, "w") as t:
        t.add(src, arcname="src")
    return ball


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=300, help="64 KiB files per round (1 writer)")
    ap.add_argument("--tar-files", type=int, default=2000)
    ap.add_argument("--sqlite-rows", type=int, default=2000)
    ap.add_argument("--meta-files", type=int, default=300)
    ap.add_argument("--out", default="bench-results/mount-writes.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    ball = make_tar(work, args.tar_files)
    tests: dict[str, Callable[[Path], float]] = {
        "seq_write MB/s": lambda d: seq_write(d, args.seq_mib),
        "create_64k_1 files/s": lambda d: create_files(d, 1, args.files),
        "create_64k_16 files/s": lambda d: create_files(d, 16, max(1, args.files // 16)),
        "tar_extract files/s": lambda d: tar_extract(d, ball, args.tar_files),
        "rsync files/s": lambda d: rsync_copy(d, work / "src", args.tar_files),
        "sqlite_wal rows/s": lambda d: sqlite_wal(d, args.sqlite_rows),
        "metadata ops/s": lambda d: metadata(d, args.meta_files),
    }
    results: dict[str, dict[str, list[float]]] = {t: {"ours": [], "weed": []} for t in tests}
    # Room for every round's bytes (the default 64 MiB volumes ran out on the third).
    with LocalCluster(volumes=2, volume_size_limit_mb=512) as cluster:
        filer = cluster.filer.grpc_address
        procs = []
        try:
            for name, cmd in (("weed", [find_weed(), "mount"]),
                              ("ours", [sys.executable, "-m", "seaweed_rdma.cli", "mount"])):
                cluster.upload(f"/bench/{name}/.keep", b"")
                mnt = work / name
                mnt.mkdir()
                log = open(work / f"{name}.log", "wb")  # noqa: SIM115 (closed at exit)
                p = subprocess.Popen([*cmd, f"-filer={filer}", f"-dir={mnt}",
                                      f"-filer.path=/bench/{name}", *FLAGS], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                procs.append((p, mnt))
                deadline = time.monotonic() + 60
                while not os.path.ismount(mnt):
                    if p.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{name} mount did not come up")
                    time.sleep(0.1)
            for r in range(args.rounds):
                for test, fn in tests.items():
                    for name in (("weed", "ours") if r % 2 == 0 else ("ours", "weed")):
                        d = work / name / f"r{r}-{test.split()[0]}"
                        d.mkdir()
                        results[test][name].append(fn(d))
        finally:
            for p, mnt in procs:
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    print(f"{'test':24s} {'weed mount':>12s} {'ours':>12s} {'ratio':>7s}  (medians of "
          f"{args.rounds})")
    summary = {}
    for test, by in results.items():
        w, o = statistics.median(by["weed"]), statistics.median(by["ours"])
        print(f"{test:24s} {w:12.1f} {o:12.1f} {o / w:6.2f}x")
        summary[test] = {"weed": by["weed"], "ours": by["ours"], "ratio": o / w}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "load": os.getloadavg(),
                               "results": summary}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
