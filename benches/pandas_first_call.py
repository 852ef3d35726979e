"""pandas reading a parquet file, as a notebook's first cell does, on one embedded cluster:
each way in a fresh process (imports done before the clock starts, so only the call and
whatever it sets up are timed), first call and best of three more:

- ``http``: a filer GET of the whole file, then ``pd.read_parquet`` of the bytes;
- ``seaweedfs``: ``pd.read_parquet("seaweedfs://...")`` over the fast path;
- ``ours`` / ``weed_mount``: ``pd.read_parquet`` of the file through each mount (page
  cache dropped first; each mount freshly started).

Prints seconds and ratios (http / way: above 1 is faster than HTTP) and writes JSON.

    .venv/bin/python benches/pandas_first_call.py [--rows 2000000] [--no-mounts]
        [--out bench-results/pandas.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from seaweed_rdma.cluster import LocalCluster, find_weed
from small_files import drop_caches, mount, unmount

CHILD = textwrap.dedent("""
    import io, json, sys, time
    import httpx, pandas as pd, fsspec, seaweed_rdma.fsspec  # imports are not timed
    way, target, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    def once():
        if way == "http":
            return pd.read_parquet(io.BytesIO(httpx.get(target, timeout=60).content))
        if way == "seaweedfs":
            return pd.read_parquet(target, storage_options=opts)
        return pd.read_parquet(target)

    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        df = once()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first": times[0], "best_of_rest": min(times[1:]), "rows": len(df)}))
""")


def run(way: str, target: str, opts: dict[str, Any]) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", CHILD, way, target, json.dumps(opts)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{way}: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--no-mounts", action="store_true")
    ap.add_argument("--out", default="bench-results/pandas.json")
    a = ap.parse_args()
    import pandas as pd

    out: dict[str, Any] = {}
    with LocalCluster(volumes=1) as cl, tempfile.TemporaryDirectory() as tmp:
        cl.start()
        sc = cl.add_sidecar(cl.volume_servers[0])
        df = pd.DataFrame({"id": range(a.rows), "k": [i % 97 for i in range(a.rows)],
                           "v": [i * 0.25 for i in range(a.rows)]})
        local = Path(tmp) / "t.parquet"
        df.to_parquet(local, row_group_size=250_000)
        cl.upload("/bench/pd/t.parquet", local.read_bytes(), max_mb=4)
        out["file_bytes"] = local.stat().st_size
        opts = {"sidecar": cl.sidecar_map(), "transport": "tcp"}
        drop_caches()
        out["http"] = run("http", f"{cl.filer.url}/bench/pd/t.parquet", {})
        drop_caches()
        out["seaweedfs"] = run("seaweedfs",
                               f"seaweedfs://{cl.filer.grpc_address}/bench/pd/t.parquet", opts)
        if not a.no_mounts:
            argvs = {
                "ours": [sys.executable, "-m", "seaweed_rdma.cli", "mount",
                         f"-filer={cl.filer.grpc_address}", "-rdma.enabled",
                         f"-rdma.sidecar={sc.address}"],
                "weed_mount": [find_weed(), "mount", f"-filer={cl.filer.grpc_address}"],
            }
            for name, argv in argvs.items():
                drop_caches()
                where = Path(tempfile.mkdtemp(dir=tmp))
                mnt, proc, log = mount(name, argv, where, "/bench/pd/t.parquet")
                try:
                    out[name] = run(name, str(mnt / "bench/pd/t.parquet"), {})
                finally:
                    unmount(mnt, proc, log)
    base = out["http"]
    print(f"parquet file of {out['file_bytes'] / 1e6:.1f} MB, {a.rows} rows")
    for way in ("http", "seaweedfs", "ours", "weed_mount"):
        if way in out:
            r = out[way]
            print(f"  {way:10s} first {r['first']:6.3f} s ({base['first'] / r['first']:4.2f}x)"
                  f"   repeated {r['best_of_rest']:6.3f} s "
                  f"({base['best_of_rest'] / r['best_of_rest']:4.2f}x)")
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
