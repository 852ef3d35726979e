"""POSIX conformance of the mount beside weed mount: pjdfstest on both, same cluster, same flags.

Starts a throwaway cluster, ``weed mount`` and ``seaweed-rdma mount`` on it (each in its own
filer directory), runs the chosen pjdfstest directories inside both at once, and fails when
this mount fails a subtest that weed mount passes. Prints the failed subtests of each and
the totals. Called by ci/conformance.sh (which builds the suite first).

    python ci/conformance.py --build DIR [--dirs chmod,link,...] [--timeout-s N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seaweed_rdma.cluster import LocalCluster, find_weed

# The shared script's directories (all of them finish in a few minutes on both mounts).
DEFAULT_DIRS = ("chmod", "chown", "link", "mkdir", "open", "rename", "rmdir", "symlink",
                "truncate", "unlink", "ftruncate", "utimensat", "posix_fallocate",
                "granular", "mknod", "mkfifo", "chflags")
NOT_OK = re.compile(r"^not ok (\d+)")


def run_file(test: Path, where: Path, timeout_s: float) -> tuple[int, set[int]]:
    """Runs one .t file inside ``where``; returns (planned subtests, failed subtest numbers).
    A file that does not finish counts every planned subtest it did not pass."""
    try:
        out = subprocess.run(["prove", "-v", str(test)], cwd=where, capture_output=True,
                             text=True, timeout=timeout_s).stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += "\n# timed out\n"
    plan = 0
    passed: set[int] = set()
    failed: set[int] = set()
    for line in out.splitlines():
        m = re.match(r"^1\.\.(\d+)", line)
        if m and not plan:
            plan = int(m.group(1))
        m = re.match(r"^ok (\d+)", line)
        if m:
            passed.add(int(m.group(1)))
        m = NOT_OK.match(line)
        if m:
            (passed if "# TODO" in line else failed).add(int(m.group(1)))
    failed |= {n for n in range(1, plan + 1) if n not in passed}
    return plan, failed


def run_suite(build: Path, where: Path, dirs: list[str], timeout_s: float
              ) -> dict[str, tuple[int, set[int]]]:
    out: dict[str, tuple[int, set[int]]] = {}
    for d in dirs:
        for t in sorted((build / "tests" / d).glob("*.t")):
            out[f"{d}/{t.name}"] = run_file(t, where, timeout_s)
    return out


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not os.path.ismount(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mount at {path} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], path: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, type=Path, help="the built pjdfstest tree")
    ap.add_argument("--dirs", default=",".join(DEFAULT_DIRS))
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per .t file")
    ap.add_argument("--flags", default="", help="extra flags for both mounts")
    ap.add_argument("--fast", action="store_true",
                    help="our mount with the fast path (a sidecar beside the volume server), "
                         "so the native read loop answers what it can")
    ap.add_argument("--in", dest="inside", type=Path,
                    help="only run the suite inside this directory (a mount made by hand)")
    args = ap.parse_args()
    dirs = [d for d in args.dirs.split(",") if d]
    if args.inside is not None:
        results = run_suite(args.build, args.inside, dirs, args.timeout_s)
        for name, (plan, bad) in sorted(results.items()):
            if bad:
                print(f"== {name}: {len(bad)} of {plan} failed {sorted(bad)[:30]}")
        print(f"pjdfstest ({','.join(dirs)}): "
              f"{sum(p for p, _ in results.values())} subtests, "
              f"{sum(len(b) for _, b in results.values())} failed")
        return 0
    extra = args.flags.split()
    work = Path(tempfile.mkdtemp(prefix="conformance-"))
    started = time.monotonic()
    with LocalCluster(volumes=1) as cluster:
        filer = cluster.filer.grpc_address
        for sub in ("weed", "ours"):
            subprocess.run(["mkdir", "-p", str(work / sub)], check=True)
        cluster.upload("/conformance/weed/.keep", b"")
        cluster.upload("/conformance/ours/.keep", b"")
        procs = []
        retried: list[str] = []
        ours_cmd = [sys.executable, "-m", "seaweed_rdma.cli", "mount"]
        if args.fast:
            sidecar = cluster.add_sidecar(cluster.volume_servers[0])
            ours_cmd += ["-rdma.enabled", f"-rdma.sidecar={sidecar.address}"]
        try:
            for name, cmd in (("weed", [find_weed(), "mount"]), ("ours", ours_cmd)):
                mnt, log = work / name, work / f"{name}.log"
                with open(log, "wb") as f:
                    p = subprocess.Popen([*cmd, f"-filer={filer}", f"-dir={mnt}",
                                          f"-filer.path=/conformance/{name}", *extra],
                                         stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
                procs.append((p, mnt))
                wait_mounted(mnt, p, log)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                weed_f = pool.submit(run_suite, args.build, work / "weed", dirs, args.timeout_s)
                ours_f = pool.submit(run_suite, args.build, work / "ours", dirs, args.timeout_s)
                weed, ours = weed_f.result(), ours_f.result()
            # A file that fails here what passes on weed mount runs once more, alone: the
            # two suites share 2 cores, and a real fault fails twice. Both results print.
            for name in sorted(ours):
                wbad = weed.get(name, (0, set()))[1]
                if ours[name][1] - wbad:
                    d, t = name.split("/", 1)
                    again = run_file(args.build / "tests" / d / t, work / "ours",
                                     args.timeout_s)
                    print(f"RETRY {name}: failed {sorted(ours[name][1] - wbad)[:20]} with "
                          f"weed mount's run beside it; alone: {sorted(again[1] - wbad)[:20]}")
                    retried.append(name)
                    ours[name] = again
        finally:
            for p, mnt in procs:
                stop(p, mnt)
    total = sum(plan for plan, _ in ours.values())
    worse: list[str] = []
    for name in sorted(ours):
        plan, bad = ours[name]
        wbad = weed.get(name, (0, set()))[1]
        if bad or wbad:
            print(f"== {name}: ours {len(bad)} of {plan} failed {sorted(bad)[:20]}; "
                  f"weed mount {len(wbad)} {sorted(wbad)[:20]}")
        worse += [f"{name} #{n}" for n in sorted(bad - wbad)]
    n_ours = sum(len(b) for _, b in ours.values())
    n_weed = sum(len(b) for _, b in weed.values())
    print(f"pjdfstest ({','.join(dirs)}): {total} subtests; failed: ours {n_ours}, "
          f"weed mount {n_weed}; {time.monotonic() - started:.0f} s"
          + (f"; files run twice: {', '.join(retried)}" if retried else ""))
    if worse:
        print(f"FAIL: {len(worse)} subtests fail on this mount and pass on weed mount: "
              f"{', '.join(worse[:50])}")
        return 1
    print("ok: no subtest fails here that passes on weed mount")
    return 0


if __name__ == "__main__":
    sys.exit(main())
