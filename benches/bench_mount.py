"""`seaweed-rdma mount` vs `weed mount` (same wheel, same cluster, same file), with fio psync
from cold caches: sequential 1 MiB reads, and 4 KiB random reads (4 jobs) both buffered and
with O_DIRECT (so the page cache cannot serve them). The two mounts run alternately,
``--rounds`` times each; min and median of each, and the ratio of medians, are printed and
written as JSON. A mount that rejects O_DIRECT is reported as such, not as a number.
``--null`` adds a third mount to the read tests, ``benches/fuse_null.py``: pyfuse3 with a
read handler that does no work, the ceiling of any pyfuse3 mount on this machine.
Each round also reads a plain file of the same size on the volume servers' disk with the
same sequential fio job from cold caches ("disk alone"): what the disk gives one reader
with no mount in the way, printed against `weed mount` as the sequential ratio a mount
could reach if it lost nothing to the disk.
Writes, the same way: fio psync sequential 1 MiB writes of ``--write-mib`` with a final
fsync, and ``--small-files`` files of 4 KiB each created, written and closed one after
another (files per second). Needs root, /dev/fuse and fio.

    .venv/bin/python benches/bench_mount.py [--size-mib 256] [--random-secs 15] [--rounds 3]
        [--write-mib 128] [--small-files 500] [--only all|reads|writes] [--null]
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
from typing import IO

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


def start_mount(name: str, argv: list[str], tmp: str, logs: list[IO[bytes]]
                ) -> tuple[Path, subprocess.Popen[bytes]]:
    """Mounts ``argv`` on a fresh directory under ``tmp`` (its output to a log file, kept
    in ``logs`` for the caller to close) and waits until the bench file is visible."""
    mnt = Path(tmp) / name.replace(" ", "_")
    mnt.mkdir()
    log = open(Path(tmp) / f"{mnt.name}.log", "wb")  # noqa: SIM115
    logs.append(log)
    proc = subprocess.Popen([*argv, f"-dir={mnt}"], stdout=log, stderr=subprocess.STDOUT)
    wait_mounted(mnt, proc, name)
    (mnt / "bench" / "file.bin").stat()
    return mnt, proc


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


def disk_alone(path: Path, size: int) -> float:
    """Sequential 1 MiB reads of a plain file on the volume servers' disk, from cold caches
    (bytes per second): what the disk gives one reader with no mount in the way."""
    drop_caches()
    return float(fio(path, "read", "1m", 1, None, size)["bw_bytes"])


def fio_write(path: Path, size: int) -> dict:
    """fio sequential 1 MiB writes of ``size`` bytes, with an fsync at the end."""
    args = ["fio", "--name=w", f"--filename={path}", "--ioengine=psync", "--rw=write",
            "--bs=1M", "--numjobs=1", f"--size={size}", "--end_fsync=1",
            "--output-format=json"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise Rejected((out.stderr or out.stdout).strip().splitlines()[-1:] or ["fio failed"])
    job = json.loads(out.stdout)["jobs"][0]["write"]
    return {"bw_bytes": job["bw_bytes"]}


def small_files(target: Path, count: int) -> dict:
    """Creates ``count`` 4 KiB files one by one (open, write, close); files per second."""
    target.mkdir(parents=True, exist_ok=True)
    block = random.Random(1).randbytes(4096)
    t0 = time.perf_counter()
    for i in range(count):
        fd = os.open(target / f"f{i:06d}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, block)
        finally:
            os.close(fd)
    return {"files_per_s": count / (time.perf_counter() - t0)}


# name: what is measured
WRITE_TESTS = {"seq_write_1m": "bw_bytes", "small_files_4k": "files_per_s"}


def write_round(base: Path, tag: str, size: int, count: int) -> dict[str, dict]:
    """One run of every write test on one mount, into fresh names."""
    out: dict[str, dict] = {}
    drop_caches()
    try:
        out["seq_write_1m"] = fio_write(base / f"w-{tag}.bin", size)
    except Rejected as e:
        out["seq_write_1m"] = {"rejected": str(e)}
    out["small_files_4k"] = small_files(base / f"small-{tag}", count)
    return out


def summarize_writes(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Min and median per write test over the rounds."""
    out: dict[str, dict] = {}
    for test, key in WRITE_TESTS.items():
        got = [r[test] for r in runs]
        rejected = [g["rejected"] for g in got if "rejected" in g]
        if rejected:
            out[test] = {"rejected": rejected[0]}
            continue
        values = sorted(g[key] for g in got)
        out[test] = {"min": values[0], "median": statistics.median(values), "runs": got}
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


NULL = "pyfuse3 null"
UNITS = {"bw_bytes": ("MB/s", 1e6), "iops": ("IOPS", 1.0), "files_per_s": ("files/s", 1.0)}


def print_table(results: dict[str, dict], tests: dict[str, str]) -> dict[str, float | None]:
    """Prints min and median per test and mount (``tests``: test -> metric), and returns the
    ratio of medians, ours / weed mount (None where a mount could not run the test)."""
    ratios: dict[str, float | None] = {}
    for test, key in tests.items():
        unit, scale = UNITS[key]
        for name, res in results.items():
            r = res[test]
            if "rejected" in r:
                print(f"{test:16s} {name:14s} rejected: {r['rejected']}")
            else:
                print(f"{test:16s} {name:14s} {r['min'] / scale:12.1f} "
                      f"{r['median'] / scale:12.1f}   {unit}")
        ratios[test] = ratio(results["seaweed-rdma"][test], results["weed mount"][test])
        shown = f"{ratios[test]:.2f}x" if ratios[test] is not None else "n/a"
        print(f"{test:16s} {'ratio':14s} {shown:>12s} (median, ours / weed mount)")
        if NULL in results:
            ceiling = ratio(results[NULL][test], results["weed mount"][test])
            ratios[f"{test}_null"] = ceiling
            shown = f"{ceiling:.2f}x" if ceiling is not None else "n/a"
            print(f"{test:16s} {'ceiling':14s} {shown:>12s} (median, {NULL} / weed mount)")
    return ratios


def ratio(a: dict, b: dict) -> float | None:
    """Ratio of medians, None where either mount could not run the test."""
    return a["median"] / b["median"] if "median" in a and "median" in b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--random-secs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-mib", type=int, default=128)
    ap.add_argument("--small-files", type=int, default=500)
    ap.add_argument("--only", choices=["all", "reads", "writes"], default="all")
    ap.add_argument("--null", action="store_true",
                    help="also read through benches/fuse_null.py (pyfuse3, no work)")
    ap.add_argument("--out", default="bench-results/mount.json")
    a = ap.parse_args()
    if not shutil.which("fio"):
        print("fio not found (apt-get install fio)", file=sys.stderr)
        return 1
    size = a.size_mib * MIB
    runs: dict[str, list[dict[str, dict]]] = {}
    wruns: dict[str, list[dict[str, dict]]] = {}
    with LocalCluster(volumes=2, volume_size_limit_mb=1024) as cl, \
            tempfile.TemporaryDirectory() as tmp:
        sc = cl.add_sidecar(cl.volume_servers)
        rng = random.Random(0)
        data = b"".join(rng.randbytes(16 * MIB) for _ in range(a.size_mib // 16))
        cl.upload("/bench/file.bin", data, max_mb=a.chunk_mib)
        disk_file = cl.volume_servers[0].dir / "disk-alone.bin"
        if a.only in ("all", "reads"):
            disk_file.write_bytes(data)
        del data
        disk: list[float] = []
        mounts = {
            "seaweed-rdma": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                             f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                             f"-rdma.sidecar={sc.address}", "-cacheMetaTtlSec=60"],
            "weed mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"],
        }
        if a.null:
            mounts[NULL] = [sys.executable, str(Path(__file__).with_name("fuse_null.py")),
                            f"--size-mib={a.size_mib}"]
        procs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
        logs: list[IO[bytes]] = []
        try:
            for name, argv in mounts.items():
                procs[name] = start_mount(name, argv, tmp, logs)
            # Alternate the mounts round by round, so both see the same background noise.
            for r in range(a.rounds):
                if a.only in ("all", "reads"):
                    disk.append(disk_alone(disk_file, size))
                for name, (mnt, _) in procs.items():
                    print(f"round {r + 1}/{a.rounds}: {name} ...", flush=True)
                    if a.only in ("all", "reads"):
                        runs.setdefault(name, []).append(
                            read_round(mnt / "bench" / "file.bin", size, a.random_secs))
                    if a.only in ("all", "writes") and name != NULL:
                        tag = f"{name.replace(' ', '_')}-{r}"
                        wruns.setdefault(name, []).append(
                            write_round(mnt / "bench", tag, a.write_mib * MIB, a.small_files))
        finally:
            for mnt, proc in procs.values():
                unmount(mnt, proc)
            for log in logs:
                log.close()
    results = {name: summarize(r) for name, r in runs.items()}
    wresults = {name: summarize_writes(r) for name, r in wruns.items()}
    print(f"\n{'test':16s} {'mount':14s} {'min':>12s} {'median':>12s}   unit")
    ratios: dict[str, float | None] = {}
    if wresults:
        ratios |= print_table(wresults, WRITE_TESTS)
    if results:
        ratios |= print_table(results, {t: metric(t) for t in READ_TESTS})
        weed = results["weed mount"]["seq_1m"].get("median")
        disk_median = statistics.median(disk)
        print(f"{'seq_1m':16s} {'disk alone':14s} {min(disk) / 1e6:12.1f} "
              f"{disk_median / 1e6:12.1f}   MB/s")
        if weed:
            ratios["seq_1m_disk"] = disk_median / weed
            print(f"{'seq_1m':16s} {'disk ceiling':14s} {disk_median / weed:11.2f}x "
                  "(median, disk alone / weed mount)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "write_results": wresults,
                               "disk_alone_bw_bytes": disk,
                               "ratio_of_medians": ratios, "rounds": a.rounds,
                               "size_mib": a.size_mib, "write_mib": a.write_mib,
                               "small_files": a.small_files}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
