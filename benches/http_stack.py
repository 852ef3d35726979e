"""The HTTP stack a fresh process pays for, tree against tree (each a ``PYTHONPATH``, e.g.
``git archive`` of another commit with the same ``_core``), rounds alternating between the
trees on one held cluster:

- ``cold``: ``from seaweed_rdma import Client`` (imports), then ``Client(filer)`` without
  ``master=`` (master discovery) and a first 16 KiB ``read`` over HTTP;
- ``discover``: master discovery alone after the imports, over h2c (``h2`` imported inside
  the call) and over grpc (grpc imported inside the call);
- ``small``: 300 files of 16 KiB, ``Client(meta_ttl=0, transport="http")`` so every call
  asks the filer: ``entry`` lookups/s and ``read`` files/s, best of 3 passes each.

Prints every round and the medians, writes JSON.

    .venv/bin/python benches/http_stack.py --tree before=/tmp/before/python \\
        --tree after=python [--rounds 5] [--out bench-results/http_stack.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from seaweed_rdma.cluster import LocalCluster

FILES = 300

COLD = r"""
import sys, time
t0 = time.perf_counter()
from seaweed_rdma import Client
t1 = time.perf_counter()
c = Client(sys.argv[1], transport="http")
assert len(c.read("/small/f0")) == 16 << 10
t2 = time.perf_counter()
c.close()
print(f"{(t1 - t0) * 1000:.2f} {(t2 - t1) * 1000:.2f}")
"""

DISCOVER = r"""
import sys, time
from seaweed_rdma import discovery
way, filer = sys.argv[1], sys.argv[2]
target = discovery.filer_grpc_address(filer)
t0 = time.perf_counter()
if way == "h2c" and not hasattr(discovery, "_masters_h2c"):
    sys.exit(0)  # a tree from before h2c: nothing to time
if way == "h2c":
    masters = discovery._masters_h2c(target, 5.0)
elif hasattr(discovery, "_masters_grpc"):
    masters = discovery._masters_grpc(filer, target, 5.0)
else:  # a tree from before h2c: discovery is grpc alone
    masters = [discovery.discover_master(filer, 5.0)]
assert masters, masters
print(f"{(time.perf_counter() - t0) * 1000:.2f}")
"""

SMALL = r"""
import sys, time
from seaweed_rdma import Client
filer, master, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Client(filer, master=master, transport="http", meta_ttl=0)
paths = [f"/small/f{i}" for i in range(n)]
entry = read = 0.0
for _ in range(3):
    t = time.perf_counter()
    for p in paths:
        c.entry(p)
    entry = max(entry, n / (time.perf_counter() - t))
    t = time.perf_counter()
    for p in paths:
        c.read(p)
    read = max(read, n / (time.perf_counter() - t))
c.close()
print(f"{entry:.1f} {read:.1f}")
"""


def child(tree: str, code: str, *args: str) -> list[float]:
    """Runs ``code`` in a fresh interpreter with ``tree`` first on its path."""
    env = dict(os.environ, PYTHONPATH=tree)
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env=env, timeout=120)
    if r.returncode:
        raise SystemExit(f"{tree}: {r.stderr[-2000:]}")
    return [float(x) for x in r.stdout.split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=PYTHONPATH")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench-results/http_stack.json")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    trees = {name: str(Path(path).resolve()) for name, path in trees.items()}
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in trees}
    with LocalCluster(volumes=1) as cl:
        for i in range(FILES):
            cl.upload(f"/small/f{i}", os.urandom(16 << 10))
        filer, master = cl.filer.grpc_address, cl.master.address
        for _ in range(args.rounds):
            for name, tree in trees.items():
                got = rows[name]
                imports, first = child(tree, COLD, filer)
                got.setdefault("cold_import_ms", []).append(imports)
                got.setdefault("cold_client_and_read_ms", []).append(first)
                got.setdefault("cold_total_ms", []).append(imports + first)
                for way in ("h2c", "grpc"):
                    ms = child(tree, DISCOVER, way, filer)
                    if ms:
                        got.setdefault(f"discover_{way}_ms", []).extend(ms)
                entry, read = child(tree, SMALL, cl.filer.address, master, str(FILES))
                got.setdefault("small_entry_per_s", []).append(entry)
                got.setdefault("small_read_per_s", []).append(read)
    out = {name: {k: {"rounds": v, "median": statistics.median(v)} for k, v in got.items()}
           for name, got in rows.items()}
    for key in dict.fromkeys(k for got in rows.values() for k in got):
        print(key)
        for name in trees:
            if key not in out[name]:
                continue
            r = out[name][key]
            print(f"  {name:>10}  median {r['median']:9.1f}   rounds "
                  + " ".join(f"{x:.1f}" for x in r["rounds"]))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
