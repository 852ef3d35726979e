"""`seaweed-rdma mount` vs `weed mount` (same wheel, same cluster, same file), with fio psync
from cold caches: sequential 1 MiB reads, and 4 KiB random reads (4 jobs) both buffered and
with O_DIRECT (so the page cache cannot serve them). The two mounts run alternately,
``--rounds`` times each; min and median of each, and the ratio of medians, are printed and
written as JSON. A mount that rejects O_DIRECT is reported as such, not as a number.
Needs root, /dev/fuse and fio.

    .venv/bin/python benches/bench_mount.py [--size-mib 256] [--random-secs 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
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


class Rejected(Exception):
    """fio could not run the job (e.g. the mount refused O_DIRECT)."""


def fio(path: Path, rw: str, bs: str, jobs: int, secs: int | None, size: int,
        direct: bool = False) -> dict:
    args = ["fio", "--name=b", f"--filename={path}", "--ioengine=psync", f"--rw={rw}",
            f"--bs={bs}", f"--numjobs={jobs}", "--group_reporting", "--readonly",
            "--output-format=json", f"--size={size}", "--invalidate=1",
            f"--direct={int(direct)}"]
    if secs:
        args += ["--time_based", f"--runtime={secs}"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise Rejected((out.stderr or out.stdout).strip().splitlines()[-1:] or ["fio failed"])
    job = json.loads(out.stdout)["jobs"][0]["read"]
    return {"bw_bytes": job["bw_bytes"], "iops": job["iops"],
            "lat_p50_us": job["clat_ns"]["percentile"].get("50.000000", 0) / 1000,
            "lat_p99_us": job["clat_ns"]["percentile"].get("99.000000", 0) / 1000}


# name: (fio rw, block size, jobs, time-based, O_DIRECT)
READ_TESTS = {
    "seq_1m": ("read", "1M", 1, False, False),
    "rand_4k": ("randread", "4k", 4, True, False),
    "rand_4k_direct": ("randread", "4k", 4, True, True),
}


def read_round(target: Path, size: int, secs: int) -> dict[str, dict]:
    """One run of every read test on one mount, each from cold caches."""
    out: dict[str, dict] = {}
    for test, (rw, bs, jobs, timed, direct) in READ_TESTS.items():
        drop_caches()
        try:
            out[test] = fio(target, rw, bs, jobs, secs if timed else None, size, direct=direct)
        except Rejected as e:
            out[test] = {"rejected": str(e)}
    return out


def metric(test: str) -> str:
    return "bw_bytes" if test.startswith("seq") else "iops"


def summarize(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Min and median per test over the rounds (or why the mount could not run it)."""
    out: dict[str, dict] = {}
    for test in READ_TESTS:
        got = [r[test] for r in runs]
        rejected = [g["rejected"] for g in got if "rejected" in g]
        if rejected:
            out[test] = {"rejected": rejected[0]}
            continue
        values = sorted(g[metric(test)] for g in got)
        out[test] = {"min": values[0], "median": statistics.median(values), "runs": got}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--random-secs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-results/mount.json")
    a = ap.parse_args()
    if not shutil.which("fio"):
        print("fio not found (apt-get install fio)", file=sys.stderr)
        return 1
    size = a.size_mib * MIB
    runs: dict[str, list[dict[str, dict]]] = {}
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
        procs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
        logs = []
        try:
            for name, argv in mounts.items():
                mnt = Path(tmp) / name.replace(" ", "_")
                mnt.mkdir()
                log = open(Path(tmp) / f"{name.replace(' ', '_')}.log", "wb")  # noqa: SIM115
                logs.append(log)
                proc = subprocess.Popen([*argv, f"-dir={mnt}"], stdout=log,
                                        stderr=subprocess.STDOUT)
                procs[name] = (mnt, proc)
                wait_mounted(mnt, proc, name)
                (mnt / "bench" / "file.bin").stat()
            # Alternate the mounts round by round, so both see the same background noise.
            for r in range(a.rounds):
                for name, (mnt, _) in procs.items():
                    print(f"round {r + 1}/{a.rounds}: {name} ...", flush=True)
                    runs.setdefault(name, []).append(
                        read_round(mnt / "bench" / "file.bin", size, a.random_secs))
        finally:
            for mnt, proc in procs.values():
                unmount(mnt, proc)
            for log in logs:
                log.close()
    results = {name: summarize(r) for name, r in runs.items()}
    ours, peer = results["seaweed-rdma"], results["weed mount"]
    print(f"\n{'test':16s} {'mount':14s} {'min':>12s} {'median':>12s}   unit")
    ratios: dict[str, float | None] = {}
    for test in READ_TESTS:
        unit = "MB/s" if metric(test) == "bw_bytes" else "IOPS"
        scale = 1e6 if unit == "MB/s" else 1.0
        for name, res in results.items():
            r = res[test]
            if "rejected" in r:
                print(f"{test:16s} {name:14s} rejected: {r['rejected']}")
            else:
                print(f"{test:16s} {name:14s} {r['min'] / scale:12.1f} "
                      f"{r['median'] / scale:12.1f}   {unit}")
        both = "median" in ours[test] and "median" in peer[test]
        ratios[test] = ours[test]["median"] / peer[test]["median"] if both else None
        shown = f"{ratios[test]:.2f}x" if ratios[test] is not None else "n/a"
        print(f"{test:16s} {'ratio':14s} {shown:>12s} (median, ours / weed mount)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "ratio_of_medians": ratios,
                               "rounds": a.rounds, "size_mib": a.size_mib}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
