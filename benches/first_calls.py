"""First calls in a fresh process (issue 26): a whole-file ``read()`` timed as call 1, 2
and 3, each in several fresh processes, beside a filer GET of the same file from the same
process in the same run (taken right after each read() call, so both see the same host).
Prints per call: the median read() time, the filer GET's, and the ratio (goal: >= 3x on
every one of the first three calls), plus ``readinto`` into a ready buffer for reference.

``--breakdown`` adds, in as many more fresh processes, call 1 and call 2 taken apart into
the steps ``read()`` makes (each timed alone, in order): the metadata (the filer's entry,
with the metadata stream started), the plan, the volume locations (master requests), the
sidecar connections (an engine ping each, then a batch of 16 small ops, which opens the
async connections), the destination, and the read itself into it; with the master
requests and the minor page faults each step made.

    .venv/bin/python benches/first_calls.py [--size-mib 64] [--processes 5] [--transport tcp]
        [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from seaweed_rdma.cluster import LocalCluster

CHILD = r"""
import json, sys, time
import httpx
from seaweed_rdma import Client
filer, grpc, sidecars, transport, path, size = sys.argv[1:7]
size = int(size)
out = {"read": [], "get": [], "readinto": []}
t0 = time.perf_counter()
c = Client(grpc, sidecar=json.loads(sidecars), transport=transport)
out["client_s"] = time.perf_counter() - t0
http = httpx.Client(timeout=120)
for _ in range(3):
    t = time.perf_counter(); data = c.read(path); out["read"].append(time.perf_counter() - t)
    assert len(data) == size
    del data
    t = time.perf_counter(); r = http.get(f"http://{filer}{path}")
    out["get"].append(time.perf_counter() - t)
    assert len(r.content) == size
    del r
buf = bytearray(size)
for _ in range(3):
    t = time.perf_counter(); n = c.readinto(path, buf)
    out["readinto"].append(time.perf_counter() - t)
    assert n == size
out["stats"] = {k: c.stats()["engine"][k] for k in ("connects", "open_conns", "pinned_bytes")}
c.close()
print(json.dumps(out))
"""


# Call 1 and call 2 of a fresh process, step by step (what ``Client.read`` does, in order).
BREAKDOWN = r"""
import json, resource, sys, time
from seaweed_rdma import Client
from seaweed_rdma._core import RangeOp, parse_fid, writable_bytes
filer, grpc, sidecars, transport, path, size = sys.argv[1:7]
c = Client(grpc, sidecar=json.loads(sidecars), transport=transport)
master_gets = [0]
def counted(request):
    if str(request.url).startswith(c.master.base):
        master_gets[0] += 1
c.master._http.event_hooks["request"].append(counted)
fast = c.reader.fast
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = []
for call in range(2):
    steps = {}
    def step(name, fn):
        f0, m0, t = faults(), master_gets[0], time.perf_counter()
        got = fn()
        steps[name] = {"ms": (time.perf_counter() - t) * 1e3, "faults": faults() - f0,
                       "master": master_gets[0] - m0}
        return got
    step("metadata (filer entry)", lambda: c.entry(path))
    view = step("plan", lambda: c.view(path))
    def locate():
        c.master.prefetch({ch.volume_id for ch in view.chunks})
        return {t for ch in view.chunks for t in fast.targets(ch)}
    sidecars = step("volume locations", locate)
    step("connections (ping)", lambda: [fast.engine.ping(t) for t in sorted(sidecars)])
    # A batch of more than 8 small ops takes the async path: its connections open here.
    first = view.chunks[0]
    vid, key, cookie = parse_fid(first.file_id)
    small = memoryview(bytearray(16 << 12))
    ops = [RangeOp(t, vid, key, cookie, i << 12, 1 << 12, i << 12, "")
           for t in fast.targets(first)[:1] for i in range(16)]
    step("async connections", lambda: fast.engine.read_into(small, ops))
    data, dest = step("destination", lambda: writable_bytes(view.size))
    step("read into it", lambda: c.reader.readinto(view, dest, 0))
    dest.release()
    del data, dest
    out.append(steps)
c.close()
print(json.dumps(out))
"""


def breakdown(runs: list[list[dict]]) -> None:
    """Prints the medians of each step of calls 1 and 2."""
    print("call 1 and call 2 step by step (medians over processes; faults and master "
          "requests as counted)")
    print(f"{'step':<26} {'call 1 ms':>10} {'faults':>7} {'master':>7} "
          f"{'call 2 ms':>10} {'faults':>7}")
    total = [0.0, 0.0]
    for name in runs[0][0]:
        cells = []
        for call in range(2):
            rows = [r[call][name] for r in runs]
            ms = statistics.median(x["ms"] for x in rows)
            total[call] += ms
            cells.append((ms, statistics.median(x["faults"] for x in rows),
                          statistics.median(x["master"] for x in rows)))
        print(f"{name:<26} {cells[0][0]:>10.1f} {cells[0][1]:>7.0f} {cells[0][2]:>7.0f} "
              f"{cells[1][0]:>10.1f} {cells[1][1]:>7.0f}")
    print(f"{'sum of medians':<26} {total[0]:>10.1f} {'':>7} {'':>7} {total[1]:>10.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time calls 1 and 2 step by step in fresh processes")
    a = ap.parse_args()
    size = a.size_mib << 20
    with LocalCluster(volumes=1) as cluster:
        cluster.add_sidecar(cluster.volume_servers[0])
        path = "/bench/first_calls.bin"
        data = bytes(range(256)) * (size // 256)
        cluster.upload(path, data, max_mb=a.chunk_mib)
        runs: list[dict] = []
        steps: list[list[dict]] = []
        args = [cluster.filer.address, cluster.filer.grpc_address,
                json.dumps(cluster.sidecar_map()), a.transport, path, str(size)]
        # The sidecar's first reads of the new volume files are not a client's first call.
        warm = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True,
                              text=True, timeout=300)
        if warm.returncode != 0:
            print(warm.stderr[-3000:], file=sys.stderr)
            return 1
        for _ in range(a.processes):
            # Alternating, so both kinds of process see the same host.
            for code, into in ((CHILD, runs), (BREAKDOWN, steps if a.breakdown else None)):
                if into is None:
                    continue
                done = subprocess.run([sys.executable, "-c", code, *args],
                                      capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                into.append(json.loads(done.stdout.strip().splitlines()[-1]))
                time.sleep(0.2)
    mib = size / (1 << 20)
    print(f"{a.size_mib} MiB file in {a.chunk_mib} MiB chunks, {a.processes} fresh processes, "
          f"transport={a.transport}; medians")
    print(f"{'call':>6} {'read() ms':>10} {'MB/s':>8} {'filer GET ms':>13} {'ratio':>6} "
          f"{'min ratio':>10}")
    worst = float("inf")
    for call in range(3):
        reads = [r["read"][call] for r in runs]
        gets = [r["get"][call] for r in runs]
        ratios = [g / t for g, t in zip(gets, reads, strict=True)]
        med_r, med_g = statistics.median(reads), statistics.median(gets)
        worst = min(worst, min(ratios))
        print(f"{call + 1:>6} {med_r * 1e3:>10.1f} {mib * 1.048576 / med_r:>8.0f} "
              f"{med_g * 1e3:>13.1f} {med_g / med_r:>6.2f} {min(ratios):>10.2f}")
    into = statistics.median(x for r in runs for x in r["readinto"])
    print(f"readinto (ready buffer), median of calls 1-3: {into * 1e3:.1f} ms, "
          f"{mib * 1.048576 / into:.0f} MB/s")
    print(f"Client() construction: {statistics.median(r['client_s'] for r in runs) * 1e3:.1f} ms")
    print(f"worst ratio over the first three calls: {worst:.2f} (goal >= 3)")
    print(f"engine: {runs[-1]['stats']}")
    if steps:
        breakdown(steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
