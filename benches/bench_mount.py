"""`seaweed-rdma mount` vs `weed mount` (same wheel, same cluster, same file), with fio psync
from cold caches: sequential 1 MiB reads and 4 KiB random reads (4 jobs). Prints ratios and
writes JSON. Needs root, /dev/fuse and fio.

    .venv/bin/python benches/bench_mount.py [--size-mib 256] [--random-secs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seaweed_rdma.cluster import LocalCluster, find_weed

MIB = 1 << 20


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not mount")
        time.sleep(0.1)


def unmount(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False,
                   stderr=subprocess.DEVNULL)


def fio(path: Path, rw: str, bs: str, jobs: int, secs: int | None, size: int) -> dict:
    args = ["fio", "--name=b", f"--filename={path}", "--ioengine=psync", f"--rw={rw}",
            f"--bs={bs}", f"--numjobs={jobs}", "--group_reporting", "--readonly",
            "--output-format=json", f"--size={size}", "--invalidate=1"]
    if secs:
        args += ["--time_based", f"--runtime={secs}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    job = json.loads(out.stdout)["jobs"][0]["read"]
    return {"bw_bytes": job["bw_bytes"], "iops": job["iops"],
            "lat_p50_us": job["clat_ns"]["percentile"].get("50.000000", 0) / 1000,
            "lat_p99_us": job["clat_ns"]["percentile"].get("99.000000", 0) / 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--random-secs", type=int, default=15)
    ap.add_argument("--out", default="bench-results/mount.json")
    a = ap.parse_args()
    if not shutil.which("fio"):
        print("fio not found (apt-get install fio)", file=sys.stderr)
        return 1
    size = a.size_mib * MIB
    results: dict[str, dict] = {}
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl, \
            tempfile.TemporaryDirectory() as tmp:
        sc = cl.add_sidecar(cl.volume_servers)
        rng = random.Random(0)
        data = b"".join(rng.randbytes(16 * MIB) for _ in range(a.size_mib // 16))
        cl.upload("/bench/file.bin", data, max_mb=a.chunk_mib)
        del data
        mounts = {
            "seaweed-rdma": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                             f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                             f"-rdma.sidecar={sc.address}", "-cacheMetaTtlSec=60"],
            "weed mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"],
        }
        for name, argv in mounts.items():
            mnt = Path(tmp) / name.replace(" ", "_")
            mnt.mkdir()
            log = open(Path(tmp) / f"{name.replace(' ', '_')}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen([*argv, f"-dir={mnt}"], stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_mounted(mnt, proc, name)
                target = mnt / "bench" / "file.bin"
                target.stat()
                print(f"{name}: sequential ...", flush=True)
                drop_caches()
                seq = fio(target, "read", "1M", 1, None, size)
                print(f"{name}: 4 KiB random, 4 jobs, {a.random_secs}s ...", flush=True)
                drop_caches()
                rnd = fio(target, "randread", "4k", 4, a.random_secs, size)
                results[name] = {"seq_1m": seq, "rand_4k": rnd}
            finally:
                unmount(mnt, proc)
                log.close()
    ours, peer = results["seaweed-rdma"], results["weed mount"]
    print(f"\n{'':14s} {'seq 1M MB/s':>12s} {'rand 4K IOPS':>13s} {'4K p50 us':>10s}")
    for name, r in results.items():
        print(f"{name:14s} {r['seq_1m']['bw_bytes'] / 1e6:12.1f} {r['rand_4k']['iops']:13.0f} "
              f"{r['rand_4k']['lat_p50_us']:10.1f}")
    print(f"{'ratio':14s} {ours['seq_1m']['bw_bytes'] / peer['seq_1m']['bw_bytes']:11.2f}x "
          f"{ours['rand_4k']['iops'] / peer['rand_4k']['iops']:12.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
